import itertools
import math

import numpy as np
import pytest
from cryptography.exceptions import InvalidTag
from scipy import stats

from evaluator.federated.secagg import (
    MODULUS,
    EncryptedShares,
    RoundParams,
    SecAggClient,
    SecAggError,
    SecAggServer,
    UnmaskRequest,
    UnmaskResponse,
    combine_shares,
    default_threshold,
    prg_uint32,
    server_unmask,
    split_secret,
)
from evaluator.federated.updates import (
    dequantize,
    max_bits_for_sites,
    quantization_error_bound,
    quantize_stochastic,
)

DIM = 257


def _setup(n, t, *, dim=DIM, round_id="run-1/round-3", ids=None):
    params = RoundParams(round_id=round_id, threshold=t, vector_length=dim)
    ids = ids or list(range(1, n + 1))
    clients = {i: SecAggClient(i, params) for i in ids}
    server = SecAggServer(params)
    for c in clients.values():
        server.receive_keys(c.advertise())
    return params, clients, server


def _run(n, t, inputs, *, drop_before_share=(), drop_after_share=(), silent_in_unmask=()):
    """Full protocol through the server's bookkeeping; returns (sum mod R, survivors)."""
    params, clients, server = _setup(n, t, dim=len(next(iter(inputs.values()))))
    roster = server.roster()
    for i, c in clients.items():
        if i not in drop_before_share:
            server.receive_shares(i, c.share_keys(roster))
    server.close_sharing()
    for i, c in clients.items():
        if i in drop_before_share:
            continue
        y = c.masked_input(inputs[i], server.bundles_for(i))
        if i not in drop_after_share:  # dropped after masking: computed y, never sent it
            server.receive_masked_input(i, y)
    request = server.unmask_request()
    for i in sorted(request.survivors):
        if i not in silent_in_unmask:
            server.receive_unmask_response(clients[i].unmask_shares(request))
    return server.aggregate(), request.survivors


def _patterns(n, t):
    for k in range(0, n - t + 1):
        yield from itertools.combinations(range(1, n + 1), k)


@pytest.mark.parametrize(("n", "t"), [(3, 2), (5, 3)])
def test_masked_sum_equals_plain_sum_for_every_dropout_pattern_with_t_survivors(n, t):
    rng = np.random.default_rng(10)
    clip, bits = 1.0, max_bits_for_sites(n)
    floats = {i: rng.uniform(-clip, clip, size=DIM) for i in range(1, n + 1)}
    ints = {i: quantize_stochastic(x, clip_norm=clip, bits=bits, rng=rng, n_max=n) for i, x in floats.items()}
    patterns = list(_patterns(n, t))
    assert len(patterns) == (4 if n == 3 else 16)  # none dropped, or any 1 (n=3); any <= 2 of 5
    for dropped in patterns:
        total, survivors = _run(n, t, ints, drop_after_share=dropped)
        assert survivors == frozenset(range(1, n + 1)) - set(dropped)
        exact = sum(ints[i].astype(np.int64) for i in survivors)
        np.testing.assert_array_equal(total.astype(np.int64), exact % MODULUS)
        plain = sum(floats[i] for i in survivors)
        decoded = dequantize(total, clip_norm=clip, bits=bits, n_summed=len(survivors))
        bound = quantization_error_bound(clip_norm=clip, bits=bits, n_summed=len(survivors))
        assert np.abs(decoded - plain).max() <= bound


def test_sites_dropping_before_sharing_are_left_out_of_the_masks():
    rng = np.random.default_rng(11)
    ints = {i: rng.integers(0, 2**20, size=DIM, dtype=np.uint32) for i in range(1, 6)}
    total, survivors = _run(5, 3, ints, drop_before_share=(2,), drop_after_share=(4,))
    assert survivors == {1, 3, 5}
    np.testing.assert_array_equal(total, (ints[1] + ints[3] + ints[5]))


def test_t_answers_suffice_when_other_survivors_are_silent_in_unmasking():
    rng = np.random.default_rng(12)
    ints = {i: rng.integers(0, 2**20, size=DIM, dtype=np.uint32) for i in range(1, 6)}
    total, survivors = _run(5, 3, ints, drop_after_share=(5,), silent_in_unmask=(1,))
    assert survivors == {1, 2, 3, 4}
    np.testing.assert_array_equal(total, ints[1] + ints[2] + ints[3] + ints[4])


def test_fewer_than_t_unmask_answers_is_refused():
    rng = np.random.default_rng(13)
    ints = {i: rng.integers(0, 100, size=DIM, dtype=np.uint32) for i in range(1, 6)}
    with pytest.raises(SecAggError, match="threshold"):
        _run(5, 3, ints, silent_in_unmask=(1, 2, 3))


def test_fewer_than_t_survivors_is_refused_by_server_and_sites():
    params, clients, server = _setup(5, 3)
    roster = server.roster()
    for i, c in clients.items():
        server.receive_shares(i, c.share_keys(roster))
    ys = {
        i: c.masked_input(np.zeros(DIM, dtype=np.uint32), server.bundles_for(i)) for i, c in clients.items()
    }
    for i in (1, 2):
        server.receive_masked_input(i, ys[i])
    with pytest.raises(SecAggError, match="threshold"):
        server.unmask_request()
    # a site refuses an unmask request with fewer than t survivors
    request = UnmaskRequest(survivors=frozenset({1, 2}), dropped=frozenset({3, 4, 5}))
    with pytest.raises(SecAggError, match="refusing to unmask"):
        clients[1].unmask_shares(request)
    # and so does the pure server function
    with pytest.raises(SecAggError, match="threshold"):
        server_unmask(params, roster, {1: ys[1], 2: ys[2]}, {3, 4, 5}, [])


def _through_masking(n=5, t=3):
    params, clients, server = _setup(n, t)
    roster = server.roster()
    for i, c in clients.items():
        server.receive_shares(i, c.share_keys(roster))
    for i, c in clients.items():
        c.masked_input(np.zeros(DIM, dtype=np.uint32), server.bundles_for(i))
    return params, clients, server


def test_a_site_refuses_to_reveal_both_shares_of_one_peer():
    _, clients, _ = _through_masking()
    both = UnmaskRequest(survivors=frozenset({1, 2, 3, 4}), dropped=frozenset({4, 5}))
    with pytest.raises(SecAggError, match="both shares"):
        clients[1].unmask_shares(both)


def test_a_site_answers_only_one_unmask_request_per_round():
    _, clients, _ = _through_masking()
    first = UnmaskRequest(survivors=frozenset({1, 2, 3, 4}), dropped=frozenset({5}))
    answer = clients[1].unmask_shares(first)
    assert set(answer.self_mask_shares) == {1, 2, 3, 4} and set(answer.mask_key_shares) == {5}
    assert clients[1].unmask_shares(first) == answer  # a retry of the same request is fine
    # the server now claims 4 dropped, to get s_4 after having b_4: refused
    second = UnmaskRequest(survivors=frozenset({1, 2, 3}), dropped=frozenset({4, 5}))
    with pytest.raises(SecAggError, match="different unmask request"):
        clients[1].unmask_shares(second)


def test_a_response_carrying_both_shares_cannot_even_be_built():
    with pytest.raises(SecAggError, match="both shares"):
        UnmaskResponse(sender=1, self_mask_shares={2: 5}, mask_key_shares={2: 6})


def test_unmask_requests_that_miss_sharers_or_drop_the_asking_site_are_refused():
    _, clients, _ = _through_masking()
    with pytest.raises(SecAggError, match="partition"):
        clients[1].unmask_shares(UnmaskRequest(survivors=frozenset({1, 2, 3}), dropped=frozenset({4})))
    with pytest.raises(SecAggError, match="listed as dropped"):
        clients[1].unmask_shares(UnmaskRequest(survivors=frozenset({2, 3, 4}), dropped=frozenset({1, 5})))


@pytest.mark.parametrize("n", [1, 2])
def test_fewer_than_three_sites_are_refused(n):
    params = RoundParams("r", 2, 4)
    clients = {i: SecAggClient(i, params) for i in range(1, n + 1)}
    server = SecAggServer(params)
    for c in clients.values():
        server.receive_keys(c.advertise())
    with pytest.raises(SecAggError, match="at least 3 sites.*reveals the other site's update"):
        server.roster()
    with pytest.raises(SecAggError, match="at least 3 sites"):
        clients[1].share_keys([c.advertise() for c in clients.values()])


@pytest.mark.parametrize(("n", "t"), [(3, 1), (3, 0), (3, 4), (5, 2), (5, 6), (4, 2)])
def test_bad_thresholds_are_refused(n, t):
    with pytest.raises(SecAggError, match="threshold"):
        params = RoundParams("r", t, 4)
        params.check_sites(n)


def test_default_threshold_is_a_majority():
    assert [default_threshold(n) for n in (3, 4, 5, 10)] == [2, 3, 3, 6]
    for n in (3, 4, 5, 10):
        RoundParams("r", default_threshold(n), 1).check_sites(n)


def test_a_single_masked_vector_looks_uniform_and_does_not_track_the_input():
    n_coords = 200_000
    params, clients, server = _setup(3, 2, dim=n_coords)
    roster = server.roster()
    for i, c in clients.items():
        server.receive_shares(i, c.share_keys(roster))
    x = np.arange(n_coords, dtype=np.uint32) % 1024  # a very structured input
    y = clients[1].masked_input(x, server.bundles_for(1))
    assert np.mean(y != x) > 0.999
    assert abs(y.astype(np.float64).mean() - MODULUS / 2) < 5 * (MODULUS / math.sqrt(12)) / math.sqrt(
        n_coords
    )
    assert abs(np.corrcoef(x.astype(np.float64), y.astype(np.float64))[0, 1]) < 0.01
    # chi-square on the top byte and on the low byte (where x lives) against uniform
    for byte in (y >> 24, y & 0xFF):
        counts = np.bincount(byte.astype(np.int64), minlength=256)
        assert stats.chisquare(counts).pvalue > 1e-4


def test_tampering_with_an_encrypted_share_is_detected():
    params, clients, server = _setup(3, 2)
    roster = server.roster()
    for i, c in clients.items():
        server.receive_shares(i, c.share_keys(roster))
    bundles = server.bundles_for(1)
    original = bundles[1]
    flipped = bytearray(original.ciphertext)
    flipped[3] ^= 0x01
    tampered = [
        *bundles[:1],
        EncryptedShares(original.sender, original.recipient, original.nonce, bytes(flipped)),
        *bundles[2:],
    ]
    with pytest.raises(InvalidTag):
        clients[1].masked_input(np.zeros(DIM, dtype=np.uint32), tampered)


def test_a_share_bundle_replayed_to_another_recipient_or_round_fails_authentication():
    params, clients, server = _setup(3, 2)
    roster = server.roster()
    for i, c in clients.items():
        server.receive_shares(i, c.share_keys(roster))
    # bundle 3->2 relabelled as 3->1: wrong key and wrong associated data
    b = next(b for b in server.bundles_for(2) if b.sender == 3)
    forged = [x for x in server.bundles_for(1) if x.sender != 3] + [
        EncryptedShares(3, 1, b.nonce, b.ciphertext)
    ]
    with pytest.raises(InvalidTag):
        clients[1].masked_input(np.zeros(DIM, dtype=np.uint32), forged)


def test_prg_is_deterministic_and_pinned():
    seed = bytes(range(32))
    a = prg_uint32(seed, 1000)
    assert a.dtype == np.uint32 and np.array_equal(a, prg_uint32(seed, 1000))
    assert np.array_equal(prg_uint32(seed, 10), a[:10])
    # AES-256-CTR keystream of key 00..1f, zero counter block: pinned so any machine agrees
    assert prg_uint32(seed, 4).tolist() == [3053490418, 3500099882, 1788539817, 2155294429]
    assert not np.array_equal(prg_uint32(bytes(32), 1000), a)


def _aes_ctr_reference(seed, n_words):
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    enc = Cipher(algorithms.AES(seed), modes.ECB()).encryptor()
    blocks = b"".join(enc.update(i.to_bytes(16, "big")) for i in range(math.ceil(n_words / 4)))
    return np.frombuffer(blocks, dtype="<u4")[:n_words].tolist()


def test_prg_equals_aes_ecb_of_the_counter_blocks():
    seed = bytes(range(1, 33))
    assert prg_uint32(seed, 37).tolist() == _aes_ctr_reference(seed, 37)


def test_shamir_any_t_shares_rebuild_the_secret_and_fewer_do_not():
    secret = bytes(range(32))
    xs = [1, 2, 3, 4, 5]
    shares = split_secret(secret, 3, xs)
    for subset in itertools.combinations(xs, 3):
        assert combine_shares({x: shares[x] for x in subset}, 3) == secret
    assert combine_shares(shares, 3) == secret
    with pytest.raises(SecAggError, match="need 3 shares"):
        combine_shares({1: shares[1], 2: shares[2]}, 3)
    # two shares interpolated as if t were 2 give an unrelated field element (almost surely >= 2**256)
    with pytest.raises(SecAggError, match="not a 32-byte secret"):
        combine_shares({1: shares[1], 2: shares[2]}, 2)


def test_shamir_detects_an_inconsistent_extra_share():
    shares = split_secret(b"\xff" * 32, 2, [1, 2, 3])
    shares[3] = shares[3] + 1
    with pytest.raises(SecAggError, match="inconsistent"):
        combine_shares(shares, 2)


def test_shamir_uses_fresh_randomness():
    a = split_secret(bytes(32), 2, [1, 2, 3])
    b = split_secret(bytes(32), 2, [1, 2, 3])
    assert a != b


def test_protocol_order_is_enforced_on_the_site():
    params, clients, server = _setup(3, 2)
    with pytest.raises(SecAggError, match="share_keys must come before"):
        clients[1].masked_input(np.zeros(DIM, dtype=np.uint32), [])
    roster = server.roster()
    clients[1].share_keys(roster)
    with pytest.raises(SecAggError, match="already shared"):
        clients[1].share_keys(roster)
    with pytest.raises(SecAggError, match="no masked input"):
        clients[1].unmask_shares(UnmaskRequest(frozenset({1, 2, 3}), frozenset()))


def test_a_roster_without_the_sites_own_keys_is_refused():
    params, clients, server = _setup(4, 3)
    roster = list(server.roster())
    stranger = SecAggClient(9, params)
    with pytest.raises(SecAggError, match="own keys"):
        stranger.share_keys(roster[:3] + [SecAggClient(9, params).advertise()])


def test_inputs_must_be_uint32_of_the_round_length():
    params, clients, server = _setup(3, 2)
    roster = server.roster()
    for i, c in clients.items():
        server.receive_shares(i, c.share_keys(roster))
    with pytest.raises(SecAggError, match="uint32"):
        clients[1].masked_input(np.zeros(DIM, dtype=np.int64), server.bundles_for(1))
    with pytest.raises(SecAggError, match="uint32"):
        clients[1].masked_input(np.zeros(DIM + 1, dtype=np.uint32), server.bundles_for(1))


def test_secagg_and_quantization_agree_on_the_modulus():
    from evaluator.federated import updates

    assert MODULUS == updates.MODULUS == 2**32
