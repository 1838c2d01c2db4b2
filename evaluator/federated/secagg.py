"""Secure aggregation with double masking (Bonawitz et al., CCS 2017), honest-but-curious server.

The hub only ever sees masked vectors ``y_u`` and, after the masking round, Shamir shares that
let it remove the masks of the *sum*; no single site's input is visible to it.

Rounds (site ``u``, server ``S``; ``U1 ⊇ U2 ⊇ U3`` are the sites still in at each step):

0. advertise: ``u`` generates two X25519 key pairs for this round only -- ``s`` (mask agreement)
   and ``c`` (share encryption) -- and sends both public keys. ``S`` broadcasts the roster U1.
1. share keys: ``u`` draws a self-mask seed ``b_u`` and Shamir-shares ``b_u`` and ``s_u^SK``
   t-of-|U1| among U1 (x-coordinate = the recipient's site id, itself included). Each recipient
   ``v``'s pair of shares is encrypted with AES-256-GCM under ``HKDF(X25519(c_u, c_v))``, with
   associated data binding (protocol, round, sender, recipient). ``S`` routes them; U2 = senders.
2. masked input: ``y_u = x_u + PRG(b_u) + sum_{v in U2, v > u} PRG(s_uv) - sum_{v in U2, v < u}
   PRG(s_uv)  (mod 2**32)``, ``s_uv = HKDF(X25519(s_u, s_v))``. U3 = sites whose ``y_u`` arrived.
3. unmask: ``S`` announces survivors U3 and dropped U2 minus U3. Each responding survivor reveals,
   for every v in U2, its share of ``b_v`` if v survived and its share of ``s_v^SK`` if v dropped --
   never both for one site, and only one answer per round (a second, different request is refused,
   so a lying server cannot collect both kinds from the same site). ``S`` needs >= t answers: it
   rebuilds ``b_u`` (u in U3) and ``s_d^SK`` (d dropped), removes the self masks and the dropped
   sites' pairwise masks, and gets ``sum_{u in U3} x_u (mod 2**32)``.

Choices:

- PRG: AES-256-CTR keystream from ``cryptography`` (key = 32-byte seed, all-zero initial counter
  block), read as little-endian uint32. It is a standard, cryptographically secure PRG whose
  output is fixed by the AES spec, so sites and hub on any machine or library version expand a
  seed identically. NumPy's ``Generator(PCG64)`` is neither: PCG64 is not a cryptographic PRG
  and NumPy does not promise ``Generator`` streams stay the same across versions. Every seed is
  derived with a round-specific HKDF ``info``, so a (key, counter) pair is never reused.
- Modulus ``R = 2**32``: vectors are ``uint32`` and numpy's wrapping arithmetic is exactly mod R.
  Inputs must be non-negative integers whose sum over all sites cannot wrap: use
  ``updates.quantize_stochastic`` with ``bits <= updates.max_bits_for_sites(n)``.
- Shamir over the Mersenne prime ``2**521 - 1`` (> 2**256, so any 32-byte secret is a field
  element); coefficients from ``secrets``; reconstruction by Lagrange interpolation at 0, with
  every extra share checked to lie on the same polynomial.
- Threshold: ``n >= 3`` (with 2 sites the sum reveals the other site's input) and
  ``n // 2 < t <= n``. A majority threshold means two disjoint groups of t sites cannot exist, so
  together with the one-answer-per-site rule no server can rebuild both ``b_u`` and ``s_u^SK``.
- Keys are generated per round inside ``SecAggClient``: reconstructing a dropped site's ``s^SK``
  must not unmask that site in any other round.

Not covered (the paper's active-adversary additions): signatures on messages via a PKI and the
consistency-check round. Sites here trust the roster the hub relays.
"""

from __future__ import annotations

import secrets
import struct
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = [
    "InvalidTag",
    "MODULUS",
    "PRIME",
    "AdvertisedKeys",
    "EncryptedShares",
    "RoundParams",
    "SecAggClient",
    "SecAggError",
    "SecAggServer",
    "SiteKeys",
    "UnmaskRequest",
    "UnmaskResponse",
    "combine_shares",
    "prg_uint32",
    "server_unmask",
    "split_secret",
]

MODULUS = 1 << 32
PRIME = (1 << 521) - 1
_PROTOCOL = b"vaultbench-secagg-v1"
_SEED_BYTES = 32
_SHARE_BYTES = 66  # ceil(521 / 8)
_MAX_SITE_ID = (1 << 32) - 1


class SecAggError(ValueError):
    """A protocol rule was broken: bad parameters, too few sites, or a request a site refuses."""


# --------------------------------------------------------------------------- primitives


def prg_uint32(seed: bytes, length: int) -> np.ndarray:
    """Expand a 32-byte seed into ``length`` uint32 values: AES-256-CTR keystream, little endian."""
    if len(seed) != _SEED_BYTES:
        raise SecAggError("PRG seed must be 32 bytes")
    encryptor = Cipher(algorithms.AES(seed), modes.CTR(b"\x00" * 16)).encryptor()
    stream = encryptor.update(b"\x00" * (4 * length)) + encryptor.finalize()
    return np.frombuffer(stream, dtype="<u4").astype(np.uint32)


def _hkdf(secret: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(secret)


def _info(purpose: bytes, round_id: str, *ids: int) -> bytes:
    rid = round_id.encode("utf-8")
    return b"|".join(
        [_PROTOCOL, purpose, struct.pack(">I", len(rid)) + rid, *(struct.pack(">I", i) for i in ids)]
    )


def _pairwise_seed(private: X25519PrivateKey, peer_public: bytes, round_id: str, u: int, v: int) -> bytes:
    shared = private.exchange(X25519PublicKey.from_public_bytes(peer_public))
    return _hkdf(shared, _info(b"pairwise-mask", round_id, min(u, v), max(u, v)))


def _self_mask(seed: bytes, round_id: str, site_id: int, length: int) -> np.ndarray:
    return prg_uint32(_hkdf(seed, _info(b"self-mask", round_id, site_id)), length)


def _raw_public(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _raw_private(key: X25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )


# --------------------------------------------------------------------------- Shamir secret sharing


def split_secret(secret: bytes, threshold: int, xs: Iterable[int]) -> dict[int, int]:
    """Shamir t-of-n shares of a 32-byte secret over GF(2**521 - 1): ``{x: f(x)}`` with ``f(0)`` the
    secret and the other ``t - 1`` coefficients uniform from ``secrets``."""
    xs = list(xs)
    if len(secret) != _SEED_BYTES:
        raise SecAggError("secret must be 32 bytes")
    if len(set(xs)) != len(xs) or any(not 0 < x < PRIME for x in xs):
        raise SecAggError("share x-coordinates must be distinct and non-zero")
    if not 1 <= threshold <= len(xs):
        raise SecAggError(f"threshold {threshold} impossible with {len(xs)} shares")
    coefficients = [int.from_bytes(secret, "big")] + [secrets.randbelow(PRIME) for _ in range(threshold - 1)]
    return {x: _evaluate(coefficients, x) for x in xs}


def _evaluate(coefficients: Sequence[int], x: int) -> int:
    y = 0
    for c in reversed(coefficients):
        y = (y * x + c) % PRIME
    return y


def _interpolate(points: Sequence[tuple[int, int]], at: int) -> int:
    total = 0
    for i, (xi, yi) in enumerate(points):
        num, den = 1, 1
        for j, (xj, _) in enumerate(points):
            if j != i:
                num = num * (at - xj) % PRIME
                den = den * (xi - xj) % PRIME
        total = (total + yi * num * pow(den, -1, PRIME)) % PRIME
    return total


def combine_shares(shares: Mapping[int, int], threshold: int) -> bytes:
    """Rebuild the 32-byte secret from at least ``threshold`` shares ``{x: y}``.

    Uses the first ``threshold`` shares (by x) and checks that every extra share lies on the same
    polynomial, so a corrupted or inconsistent share is detected rather than silently used.
    """
    if len(shares) < threshold:
        raise SecAggError(f"need {threshold} shares to reconstruct, got {len(shares)}")
    points = sorted((int(x), int(y)) for x, y in shares.items())
    basis = points[:threshold]
    for x, y in points[threshold:]:
        if _interpolate(basis, x) != y:
            raise SecAggError("inconsistent Shamir shares")
    secret = _interpolate(basis, 0)
    if secret >= 1 << (8 * _SEED_BYTES):
        raise SecAggError("reconstructed value is not a 32-byte secret")
    return secret.to_bytes(_SEED_BYTES, "big")


# --------------------------------------------------------------------------- messages


@dataclass(frozen=True)
class RoundParams:
    """Public parameters of one secure-aggregation round, the same for every site and the hub."""

    round_id: str
    threshold: int
    vector_length: int

    def __post_init__(self) -> None:
        if not self.round_id:
            raise SecAggError("round_id must be non-empty (it binds keys and ciphertexts to the round)")
        if self.threshold < 2:
            raise SecAggError(f"threshold must be >= 2, got {self.threshold}")
        if self.vector_length < 1:
            raise SecAggError("vector_length must be >= 1")

    def check_sites(self, n_sites: int) -> None:
        """Refuse a roster the threshold cannot protect."""
        if n_sites < 3:
            raise SecAggError(
                f"secure aggregation needs at least 3 sites, got {n_sites}: with 2 sites the aggregate "
                "minus one site's own update reveals the other site's update"
            )
        if self.threshold > n_sites:
            raise SecAggError(f"threshold {self.threshold} > {n_sites} sites: nothing could be unmasked")
        if self.threshold <= n_sites // 2:
            raise SecAggError(
                f"threshold {self.threshold} must be a majority of {n_sites} sites (> {n_sites // 2}), "
                "otherwise two disjoint groups could reveal both secrets of one site"
            )


def default_threshold(n_sites: int) -> int:
    """The smallest majority: ``n // 2 + 1`` (2 of 3, 3 of 5)."""
    return n_sites // 2 + 1


@dataclass(frozen=True)
class AdvertisedKeys:
    site_id: int
    mask_public: bytes  # X25519 public key for pairwise mask agreement (s)
    enc_public: bytes  # X25519 public key for share encryption (c)


@dataclass(frozen=True)
class EncryptedShares:
    """Site ``sender``'s shares of (s_sender^SK, b_sender) for ``recipient``, AES-GCM encrypted."""

    sender: int
    recipient: int
    nonce: bytes
    ciphertext: bytes


@dataclass(frozen=True)
class UnmaskRequest:
    survivors: frozenset[int]  # U3: sent their masked input
    dropped: frozenset[int]  # U2 minus U3: shared keys, then never sent a masked input


@dataclass(frozen=True)
class UnmaskResponse:
    sender: int
    self_mask_shares: dict[int, int] = field(default_factory=dict)  # survivor v -> share of b_v
    mask_key_shares: dict[int, int] = field(default_factory=dict)  # dropped v -> share of s_v^SK

    def __post_init__(self) -> None:
        both = set(self.self_mask_shares) & set(self.mask_key_shares)
        if both:
            raise SecAggError(f"a response may not carry both shares for sites {sorted(both)}")


@dataclass
class SiteKeys:
    """The two X25519 key pairs of one site for one round."""

    mask_key: X25519PrivateKey
    enc_key: X25519PrivateKey

    @classmethod
    def generate(cls) -> SiteKeys:
        return cls(X25519PrivateKey.generate(), X25519PrivateKey.generate())

    def advertise(self, site_id: int) -> AdvertisedKeys:
        return AdvertisedKeys(site_id, _raw_public(self.mask_key), _raw_public(self.enc_key))


def _check_roster(roster: Sequence[AdvertisedKeys], params: RoundParams) -> dict[int, AdvertisedKeys]:
    by_id = {}
    for keys in roster:
        if not 0 < keys.site_id <= _MAX_SITE_ID:
            raise SecAggError(f"site ids must be in [1, 2**32 - 1], got {keys.site_id}")
        if keys.site_id in by_id:
            raise SecAggError(f"site {keys.site_id} appears twice in the roster")
        by_id[keys.site_id] = keys
    params.check_sites(len(by_id))
    publics = [k.mask_public for k in roster] + [k.enc_public for k in roster]
    if len(set(publics)) != len(publics):
        raise SecAggError("public keys in the roster are not all distinct")
    return by_id


def _aad(round_id: str, sender: int, recipient: int) -> bytes:
    return _info(b"share-bundle", round_id, sender, recipient)


def _bundle_key(private: X25519PrivateKey, peer_public: bytes, round_id: str, u: int, v: int) -> bytes:
    shared = private.exchange(X25519PublicKey.from_public_bytes(peer_public))
    return _hkdf(shared, _info(b"share-encryption", round_id, min(u, v), max(u, v)))


# --------------------------------------------------------------------------- site side


class SecAggClient:
    """One site's state for one round. Create a new one every round (fresh keys)."""

    def __init__(self, site_id: int, params: RoundParams) -> None:
        if not 0 < site_id <= _MAX_SITE_ID:
            raise SecAggError(f"site ids must be in [1, 2**32 - 1], got {site_id}")
        self.site_id = site_id
        self.params = params
        self._keys = SiteKeys.generate()
        self._roster: dict[int, AdvertisedKeys] | None = None
        self._self_seed: bytes | None = None
        self._held: dict[int, tuple[int, int]] | None = None  # sender -> (share of s^SK, share of b)
        self._answered: UnmaskRequest | None = None

    def advertise(self) -> AdvertisedKeys:
        return self._keys.advertise(self.site_id)

    def share_keys(self, roster: Sequence[AdvertisedKeys]) -> list[EncryptedShares]:
        """Round 1: Shamir-share ``b_u`` and ``s_u^SK`` among the roster, one ciphertext each."""
        if self._roster is not None:
            raise SecAggError("keys were already shared this round")
        by_id = _check_roster(roster, self.params)
        if by_id.get(self.site_id) != self.advertise():
            raise SecAggError("the roster does not carry this site's own keys")
        self._roster = by_id
        self._self_seed = secrets.token_bytes(_SEED_BYTES)
        t, ids = self.params.threshold, sorted(by_id)
        s_shares = split_secret(_raw_private(self._keys.mask_key), t, ids)
        b_shares = split_secret(self._self_seed, t, ids)
        out = []
        for v in ids:
            plaintext = struct.pack(">II", self.site_id, v) + b"".join(
                y.to_bytes(_SHARE_BYTES, "big") for y in (s_shares[v], b_shares[v])
            )
            key = _bundle_key(self._keys.enc_key, by_id[v].enc_public, self.params.round_id, self.site_id, v)
            nonce = secrets.token_bytes(12)
            ciphertext = AESGCM(key).encrypt(nonce, plaintext, _aad(self.params.round_id, self.site_id, v))
            out.append(EncryptedShares(self.site_id, v, nonce, ciphertext))
        return out

    def _decrypt(self, bundle: EncryptedShares) -> tuple[int, int]:
        assert self._roster is not None
        sender = self._roster[bundle.sender]
        key = _bundle_key(
            self._keys.enc_key, sender.enc_public, self.params.round_id, self.site_id, bundle.sender
        )
        aad = _aad(self.params.round_id, bundle.sender, self.site_id)
        plaintext = AESGCM(key).decrypt(bundle.nonce, bundle.ciphertext, aad)  # raises InvalidTag
        header = struct.pack(">II", bundle.sender, self.site_id)
        if len(plaintext) != 8 + 2 * _SHARE_BYTES or plaintext[:8] != header:
            raise SecAggError(f"share bundle from site {bundle.sender} is malformed")
        s_share = int.from_bytes(plaintext[8 : 8 + _SHARE_BYTES], "big")
        b_share = int.from_bytes(plaintext[8 + _SHARE_BYTES :], "big")
        return s_share, b_share

    def masked_input(self, x: np.ndarray, received: Sequence[EncryptedShares]) -> np.ndarray:
        """Round 2: decrypt the shares addressed to this site (U2 = their senders) and return
        ``y_u = x_u + PRG(b_u) + sum_{v>u} PRG(s_uv) - sum_{v<u} PRG(s_uv) (mod 2**32)``.

        Every ciphertext is authenticated here, before anything derived from ``x`` leaves the site:
        a tampered share raises ``cryptography.exceptions.InvalidTag``.
        """
        if self._roster is None or self._self_seed is None:
            raise SecAggError("share_keys must come before masked_input")
        if self._held is not None:
            raise SecAggError("a masked input was already produced this round")
        x = np.asarray(x)
        if x.shape != (self.params.vector_length,) or x.dtype != np.uint32:
            raise SecAggError(f"input must be uint32 of shape ({self.params.vector_length},)")
        held: dict[int, tuple[int, int]] = {}
        for bundle in received:
            if bundle.recipient != self.site_id or bundle.sender not in self._roster:
                raise SecAggError(f"share bundle {bundle.sender}->{bundle.recipient} is not for this site")
            if bundle.sender in held:
                raise SecAggError(f"two share bundles from site {bundle.sender}")
            held[bundle.sender] = self._decrypt(bundle)
        if self.site_id not in held:
            raise SecAggError("this site's own share bundle is missing")
        if len(held) < self.params.threshold:
            raise SecAggError(f"only {len(held)} sites shared keys; threshold is {self.params.threshold}")
        self._held = held
        n = self.params.vector_length
        y = x + _self_mask(self._self_seed, self.params.round_id, self.site_id, n)
        for v in held:
            if v == self.site_id:
                continue
            seed = _pairwise_seed(
                self._keys.mask_key, self._roster[v].mask_public, self.params.round_id, self.site_id, v
            )
            if v > self.site_id:
                y += prg_uint32(seed, n)
            else:
                y -= prg_uint32(seed, n)
        return y

    def unmask_shares(self, request: UnmaskRequest) -> UnmaskResponse:
        """Round 3: reveal the b-share of each survivor and the s-share of each dropped site.

        Refused: a site named both survived and dropped, sites that did not share keys, a roster
        that misses a sharer, fewer than t survivors, this site listed as dropped, and any second
        request that differs from the first (a server must not collect both kinds for one site).
        """
        if self._held is None:
            raise SecAggError("this site sent no masked input this round; it does not unmask")
        if self._answered is not None and self._answered != request:
            raise SecAggError("already answered a different unmask request this round; refusing")
        both = request.survivors & request.dropped
        if both:
            raise SecAggError(f"refusing to reveal both shares for sites {sorted(both)}")
        sharers = set(self._held)
        if (request.survivors | request.dropped) != sharers:
            raise SecAggError("survivors and dropped sites must partition the sites that shared keys")
        if self.site_id not in request.survivors:
            raise SecAggError("this site is listed as dropped; a dropped site does not answer")
        if len(request.survivors) < self.params.threshold:
            raise SecAggError(
                f"only {len(request.survivors)} survivors; threshold is {self.params.threshold}: refusing to unmask"
            )
        self._answered = request
        return UnmaskResponse(
            sender=self.site_id,
            self_mask_shares={v: self._held[v][1] for v in sorted(request.survivors)},
            mask_key_shares={v: self._held[v][0] for v in sorted(request.dropped)},
        )


# --------------------------------------------------------------------------- hub side


def server_unmask(
    params: RoundParams,
    roster: Sequence[AdvertisedKeys],
    masked_inputs: Mapping[int, np.ndarray],
    dropped: Collection[int],
    responses: Iterable[UnmaskResponse],
) -> np.ndarray:
    """Sum of the survivors' inputs mod 2**32 from their masked vectors and >= t unmask answers.

    ``masked_inputs``: ``{u: y_u}`` for the survivors U3; ``dropped``: sites that shared keys but
    sent no masked input. Only answers from survivors count; fewer than t is refused.
    """
    by_id = _check_roster(roster, params)
    survivors = set(masked_inputs)
    dropped = set(dropped)
    if survivors & dropped or not (survivors | dropped) <= set(by_id):
        raise SecAggError("survivors and dropped sites must be disjoint sites of the roster")
    if len(survivors) < params.threshold:
        raise SecAggError(f"only {len(survivors)} survivors; threshold is {params.threshold}: cannot unmask")
    answers: dict[int, UnmaskResponse] = {}
    for response in responses:
        if response.sender in survivors:
            answers.setdefault(response.sender, response)
    if len(answers) < params.threshold:
        raise SecAggError(f"only {len(answers)} unmask answers; threshold is {params.threshold}")

    n = params.vector_length
    total = np.zeros(n, dtype=np.uint32)
    for u in sorted(survivors):
        y = np.asarray(masked_inputs[u])
        if y.shape != (n,) or y.dtype != np.uint32:
            raise SecAggError(f"masked input of site {u} must be uint32 of shape ({n},)")
        total += y
    for u in sorted(survivors):
        shares = {w: a.self_mask_shares[u] for w, a in answers.items() if u in a.self_mask_shares}
        b_u = combine_shares(shares, params.threshold)
        total -= _self_mask(b_u, params.round_id, u, n)
    for d in sorted(dropped):
        shares = {w: a.mask_key_shares[d] for w, a in answers.items() if d in a.mask_key_shares}
        s_d = X25519PrivateKey.from_private_bytes(combine_shares(shares, params.threshold))
        if _raw_public(s_d) != by_id[d].mask_public:
            raise SecAggError(f"reconstructed mask key of site {d} does not match its public key")
        for u in sorted(survivors):
            mask = prg_uint32(_pairwise_seed(s_d, by_id[u].mask_public, params.round_id, d, u), n)
            # y_u carries +PRG(s_ud) when d > u and -PRG(s_ud) when d < u; undo it.
            if d > u:
                total -= mask
            else:
                total += mask
    return total


class SecAggServer:
    """The hub's bookkeeping for one round: routes messages, tracks U1/U2/U3, then unmasks.

    It holds only public keys, ciphertexts it cannot read, masked vectors and revealed shares.
    """

    def __init__(self, params: RoundParams) -> None:
        self.params = params
        self._keys: dict[int, AdvertisedKeys] = {}
        self._roster: tuple[AdvertisedKeys, ...] | None = None
        self._bundles: dict[int, list[EncryptedShares]] = {}
        self._sharers: frozenset[int] | None = None
        self._masked: dict[int, np.ndarray] = {}
        self._request: UnmaskRequest | None = None
        self._responses: dict[int, UnmaskResponse] = {}

    def receive_keys(self, keys: AdvertisedKeys) -> None:
        if self._roster is not None:
            raise SecAggError("the roster is closed")
        if keys.site_id in self._keys:
            raise SecAggError(f"site {keys.site_id} already advertised keys")
        self._keys[keys.site_id] = keys

    def roster(self) -> tuple[AdvertisedKeys, ...]:
        """Close round 0 (U1) and return the roster to broadcast."""
        if self._roster is None:
            roster = tuple(self._keys[i] for i in sorted(self._keys))
            _check_roster(roster, self.params)
            self._roster = roster
        return self._roster

    def receive_shares(self, sender: int, bundles: Sequence[EncryptedShares]) -> None:
        roster = {k.site_id for k in self.roster()}
        if self._sharers is not None:
            raise SecAggError("the share round is closed")
        if sender not in roster or sender in self._bundles:
            raise SecAggError(f"unexpected share bundles from site {sender}")
        if sorted(b.recipient for b in bundles) != sorted(roster) or any(b.sender != sender for b in bundles):
            raise SecAggError(f"site {sender} must send exactly one bundle to every site of the roster")
        self._bundles[sender] = list(bundles)

    def close_sharing(self) -> frozenset[int]:
        """Close round 1 (U2 = sites whose bundles arrived)."""
        if self._sharers is None:
            if len(self._bundles) < self.params.threshold:
                raise SecAggError(
                    f"only {len(self._bundles)} sites shared keys; threshold is {self.params.threshold}"
                )
            self._sharers = frozenset(self._bundles)
        return self._sharers

    def bundles_for(self, recipient: int) -> list[EncryptedShares]:
        """What to forward to ``recipient``: one bundle from each site of U2."""
        sharers = self.close_sharing()
        if recipient not in sharers:
            raise SecAggError(f"site {recipient} did not share keys this round")
        return [b for s in sorted(sharers) for b in self._bundles[s] if b.recipient == recipient]

    def receive_masked_input(self, sender: int, y: np.ndarray) -> None:
        if self._sharers is None or sender not in self._sharers or self._request is not None:
            raise SecAggError(f"unexpected masked input from site {sender}")
        if sender in self._masked:
            raise SecAggError(f"site {sender} already sent a masked input")
        y = np.asarray(y)
        if y.shape != (self.params.vector_length,) or y.dtype != np.uint32:
            raise SecAggError(f"masked input must be uint32 of shape ({self.params.vector_length},)")
        self._masked[sender] = y

    def unmask_request(self) -> UnmaskRequest:
        """Close round 2 (U3 = sites whose masked input arrived); the same request goes to all."""
        if self._request is None:
            sharers = self.close_sharing()
            if len(self._masked) < self.params.threshold:
                raise SecAggError(
                    f"only {len(self._masked)} masked inputs; threshold is {self.params.threshold}"
                )
            survivors = frozenset(self._masked)
            self._request = UnmaskRequest(survivors=survivors, dropped=sharers - survivors)
        return self._request

    def receive_unmask_response(self, response: UnmaskResponse) -> None:
        request = self.unmask_request()
        if response.sender not in request.survivors or response.sender in self._responses:
            raise SecAggError(f"unexpected unmask answer from site {response.sender}")
        self._responses[response.sender] = response

    def aggregate(self) -> np.ndarray:
        """``sum_{u in U3} x_u mod 2**32``; needs >= t unmask answers."""
        request = self.unmask_request()
        return server_unmask(
            self.params, self.roster(), self._masked, request.dropped, self._responses.values()
        )

    @property
    def survivors(self) -> frozenset[int]:
        return self.unmask_request().survivors
