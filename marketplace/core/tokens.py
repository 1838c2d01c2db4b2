"""Bearer tokens: random secrets shown once, stored only as a sha256 hash."""

import hashlib
import secrets

PERSONAL_PREFIX = "vbp_"
SITE_PREFIX = "vbs_"
INVITATION_PREFIX = "vbi_"


def token_generate(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(32)


def token_hash(raw: str) -> str:
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()
