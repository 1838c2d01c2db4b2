import numpy as np
import pytest

from evaluator.federated.client_update import prepare_site_update
from evaluator.federated.updates import dequantize, flatten, l2_norm, unflatten


def _weights(rng, scale=1.0):
    old = {"fc.weight": rng.normal(size=(8, 4)).astype(np.float32), "fc.bias": np.zeros(8, dtype=np.float32)}
    new = {k: (v + scale * rng.normal(size=v.shape)).astype(np.float32) for k, v in old.items()}
    return old, new


def test_without_noise_the_vector_is_the_clipped_delta():
    rng = np.random.default_rng(40)
    old, new = _weights(rng, scale=10.0)
    vector, report = prepare_site_update(
        old_weights=old, new_weights=new, clip_norm=1.0, noise_multiplier=0.0, n_sites=3, rng=rng
    )
    delta = flatten(new)[0] - flatten(old)[0]
    assert report.clipped and report.norm_before_clip == pytest.approx(l2_norm(delta))
    assert l2_norm(vector) <= 1.0 + 1e-6
    np.testing.assert_allclose(vector, delta / l2_norm(delta))
    assert report.noise_std == 0.0 and report.n_params == 40
    assert set(unflatten(vector, report.layout)) == {"fc.weight", "fc.bias"}


def test_a_small_update_is_not_clipped_and_noise_has_the_distributed_std():
    rng = np.random.default_rng(41)
    old, new = _weights(rng, scale=1e-3)
    vector, report = prepare_site_update(
        old_weights=old, new_weights=new, clip_norm=1.0, noise_multiplier=1.0, n_sites=4, rng=rng
    )
    assert not report.clipped
    assert report.noise_std == 0.5
    delta = flatten(new)[0] - flatten(old)[0]
    assert np.std(vector - delta) == pytest.approx(0.5, rel=0.3)


def test_quantized_updates_from_all_sites_decode_to_the_sum():
    rng = np.random.default_rng(42)
    n, bits, clip = 3, 20, 1.0
    sites = [_weights(rng, scale=0.01) for _ in range(n)]
    outs = [
        prepare_site_update(
            old_weights=o,
            new_weights=w,
            clip_norm=clip,
            noise_multiplier=0.0,
            n_sites=n,
            rng=rng,
            quantization_bits=bits,
        )
        for o, w in sites
    ]
    total = np.zeros(40, dtype=np.uint32)
    for vector, _ in outs:
        assert vector.dtype == np.uint32
        total += vector
    q_range = outs[0][1].quantization_range
    decoded = dequantize(total, clip_norm=q_range, bits=bits, n_summed=n)
    expected = sum(flatten(w)[0] - flatten(o)[0] for o, w in sites)
    assert np.abs(decoded - expected).max() <= n * 2 * q_range / (2**bits - 1)


def test_mismatched_or_non_finite_weights_are_refused():
    rng = np.random.default_rng(43)
    old, new = _weights(rng)
    kwargs = {"clip_norm": 1.0, "noise_multiplier": 0.0, "n_sites": 3, "rng": rng}
    with pytest.raises(ValueError, match="extra"):
        prepare_site_update(old_weights=old, new_weights={**new, "extra": np.zeros(1)}, **kwargs)
    with pytest.raises(ValueError, match="changed shape"):
        prepare_site_update(old_weights=old, new_weights={**new, "fc.bias": np.zeros(9)}, **kwargs)
    with pytest.raises(ValueError, match="non-finite"):
        prepare_site_update(
            old_weights=old, new_weights={**new, "fc.bias": np.full(8, np.nan, dtype=np.float32)}, **kwargs
        )


def test_too_many_bits_for_the_number_of_sites_is_refused():
    rng = np.random.default_rng(44)
    old, new = _weights(rng)
    with pytest.raises(ValueError, match="wrap"):
        prepare_site_update(
            old_weights=old,
            new_weights=new,
            clip_norm=1.0,
            noise_multiplier=0.0,
            n_sites=5,
            rng=rng,
            quantization_bits=30,
        )


def test_default_rng_is_os_seeded():
    old, new = _weights(np.random.default_rng(45))
    a, _ = prepare_site_update(
        old_weights=old, new_weights=new, clip_norm=1.0, noise_multiplier=1.0, n_sites=3
    )
    b, _ = prepare_site_update(
        old_weights=old, new_weights=new, clip_norm=1.0, noise_multiplier=1.0, n_sites=3
    )
    assert not np.array_equal(a, b)
