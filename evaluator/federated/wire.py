"""JSON encoding of the federated messages exchanged between sites and the hub.

Pure functions shared by both sides (the hub may import this module; it needs no Django and no
torch). Bytes travel as standard base64 with padding; Shamir shares (integers below 2**521) as
decimal strings; site (participant) numbers as JSON integers, and as decimal strings where they
are object keys. Vectors are little-endian: ``uint32`` for masked inputs, ``float32`` for plain updates.

- keys:      ``{"participant": u, "mask_public": b64, "enc_public": b64}`` (the hub's roster entry;
  a site posts only the two keys, its number comes from its job)
- bundle:    ``{"sender": u, "recipient": v, "nonce": b64, "ciphertext": b64}``
- request:   ``{"survivors": [u, ...], "dropped": [v, ...]}``
- response:  ``{"sender": u, "self_mask_shares": {"v": "decimal"}, "mask_key_shares": {...}}``
- round id:  the hub's ``round_config["secagg_round_id"]`` (one per attempt of a round); both
  sides must use the same string: it binds keys and ciphertexts to the round.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from evaluator.federated.secagg import AdvertisedKeys, EncryptedShares, UnmaskRequest, UnmaskResponse

MAX_VECTOR_BYTES = 512 * 1024 * 1024


class WireError(ValueError):
    """A message does not have the expected shape."""


def b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def b64decode(text: Any, *, max_bytes: int = MAX_VECTOR_BYTES) -> bytes:
    if not isinstance(text, str) or len(text) > (max_bytes * 4) // 3 + 4:
        raise WireError("expected a base64 string of bounded size")
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise WireError(f"not base64: {exc}") from None


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise WireError(f"{what} must be an integer")
    return value


def round_id(run_id: int | str, round_number: int, round_config: Mapping[str, Any] | None = None) -> str:
    config = round_config or {}
    custom = config.get("secagg_round_id") or config.get("round_id")
    if isinstance(custom, str) and custom:
        return custom
    return f"run-{run_id}-round-{int(round_number)}"


# --- keys and roster ------------------------------------------------------------------------


def keys_to_json(keys: AdvertisedKeys) -> dict[str, Any]:
    return {
        "participant": keys.site_id,
        "mask_public": b64encode(keys.mask_public),
        "enc_public": b64encode(keys.enc_public),
    }


def keys_from_json(data: Any) -> AdvertisedKeys:
    if not isinstance(data, Mapping):
        raise WireError("keys must be an object")
    return AdvertisedKeys(
        site_id=_int(data.get("participant", data.get("site")), "participant"),
        mask_public=b64decode(data.get("mask_public"), max_bytes=64),
        enc_public=b64decode(data.get("enc_public"), max_bytes=64),
    )


def roster_from_json(data: Any) -> list[AdvertisedKeys]:
    if not isinstance(data, list):
        raise WireError("roster must be a list")
    return [keys_from_json(item) for item in data]


# --- share bundles ----------------------------------------------------------------------------


def bundle_to_json(bundle: EncryptedShares) -> dict[str, Any]:
    return {
        "sender": bundle.sender,
        "recipient": bundle.recipient,
        "nonce": b64encode(bundle.nonce),
        "ciphertext": b64encode(bundle.ciphertext),
    }


def bundle_from_json(data: Any) -> EncryptedShares:
    if not isinstance(data, Mapping):
        raise WireError("a share bundle must be an object")
    return EncryptedShares(
        sender=_int(data.get("sender"), "sender"),
        recipient=_int(data.get("recipient"), "recipient"),
        nonce=b64decode(data.get("nonce"), max_bytes=64),
        ciphertext=b64decode(data.get("ciphertext"), max_bytes=4096),
    )


def bundles_from_json(data: Any) -> list[EncryptedShares]:
    if not isinstance(data, list):
        raise WireError("bundles must be a list")
    return [bundle_from_json(item) for item in data]


# --- unmasking --------------------------------------------------------------------------------


def unmask_request_to_json(request: UnmaskRequest) -> dict[str, Any]:
    return {"survivors": sorted(request.survivors), "dropped": sorted(request.dropped)}


def unmask_request_from_json(data: Any) -> UnmaskRequest:
    if not isinstance(data, Mapping):
        raise WireError("unmask_request must be an object")
    survivors, dropped = data.get("survivors"), data.get("dropped", [])
    if not isinstance(survivors, list) or not isinstance(dropped, list):
        raise WireError("survivors and dropped must be lists")
    return UnmaskRequest(
        survivors=frozenset(_int(v, "survivor") for v in survivors),
        dropped=frozenset(_int(v, "dropped") for v in dropped),
    )


def _shares_to_json(shares: Mapping[int, int]) -> dict[str, str]:
    return {str(site): str(value) for site, value in sorted(shares.items())}


def _shares_from_json(data: Any) -> dict[int, int]:
    if not isinstance(data, Mapping):
        raise WireError("shares must be an object")
    out = {}
    for key, value in data.items():
        if not isinstance(key, str) or not key.isdigit() or not isinstance(value, str) or len(value) > 200:
            raise WireError("shares must map site ids to decimal strings")
        if not value.isdigit():
            raise WireError("a share is not a decimal integer")
        out[int(key)] = int(value)
    return out


def unmask_response_to_json(response: UnmaskResponse) -> dict[str, Any]:
    return {
        "sender": response.sender,
        "self_mask_shares": _shares_to_json(response.self_mask_shares),
        "mask_key_shares": _shares_to_json(response.mask_key_shares),
    }


def unmask_response_from_json(data: Any) -> UnmaskResponse:
    if not isinstance(data, Mapping):
        raise WireError("an unmask response must be an object")
    return UnmaskResponse(
        sender=_int(data.get("sender"), "sender"),
        self_mask_shares=_shares_from_json(data.get("self_mask_shares", {})),
        mask_key_shares=_shares_from_json(data.get("mask_key_shares", {})),
    )


# --- vectors ----------------------------------------------------------------------------------


def vector_to_b64(vector: np.ndarray, dtype: str) -> str:
    """``dtype``: ``"<u4"`` (masked, secure aggregation) or ``"<f4"`` (plain update)."""
    if dtype not in ("<u4", "<f4"):
        raise WireError("vectors are <u4 or <f4")
    return b64encode(np.ascontiguousarray(vector, dtype=np.dtype(dtype)).tobytes())


def vector_from_b64(text: Any, dtype: str, length: int) -> np.ndarray:
    if dtype not in ("<u4", "<f4"):
        raise WireError("vectors are <u4 or <f4")
    raw = b64decode(text, max_bytes=4 * length)
    if len(raw) != 4 * length:
        raise WireError(f"vector has {len(raw)} bytes, expected {4 * length}")
    array = np.frombuffer(raw, dtype=np.dtype(dtype)).astype(np.dtype(dtype).newbyteorder("="))
    if dtype == "<f4" and not np.all(np.isfinite(array)):
        raise WireError("vector has non-finite values")
    return array


def encode_all(items: Iterable[Any], encoder) -> list[dict[str, Any]]:
    return [encoder(item) for item in items]
