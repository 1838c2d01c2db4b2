"""Bearer tokens: random secrets shown once, stored only as a sha256 hash."""

import hashlib
import secrets
from datetime import timedelta

from django.utils import timezone

PERSONAL_PREFIX = "vbp_"
SITE_PREFIX = "vbs_"
INVITATION_PREFIX = "vbi_"


def token_generate(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(32)


def token_hash(raw: str) -> str:
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


# "Last used" is shown to the token's owner to the minute; writing it on every request would be
# one database write per agent poll and per federated post.
LAST_USED_PRECISION = timedelta(seconds=60)


def token_touch(token) -> None:
    """Record that ``token`` (a PersonalToken or SiteToken just read) was used, at most once a minute."""
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at >= LAST_USED_PRECISION:
        type(token).objects.filter(id=token.id).update(last_used_at=now)
        token.last_used_at = now
