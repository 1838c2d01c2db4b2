"""The byte-exact form of a released body, shared with the site agent (evaluator/client.py).

A site's ledger entry hashes the canonical JSON of the body it posts, without the `ledger`
receipt itself; the hub recomputes it so a record that does not match what the site logged is
refused.
"""

import hashlib
import json
from typing import Any


def canonical_json(body: dict[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def receipt_of(body: dict[str, Any]) -> tuple[str, int]:
    payload = canonical_json({k: v for k, v in body.items() if k != "ledger"})
    return hashlib.sha256(payload).hexdigest(), len(payload)
