import logging
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from marketplace.accounts.models import Organization
from marketplace.audit.services import audit_record
from marketplace.core.errors import Conflict, Forbidden, NotFound
from marketplace.core.tokens import SITE_PREFIX, token_generate, token_hash
from marketplace.sites.models import Site, SiteToken

logger = logging.getLogger(__name__)


def _site_token_issue(site: Site) -> tuple[SiteToken, str]:
    raw = token_generate(SITE_PREFIX)
    token = SiteToken.objects.create(site=site, key_hash=token_hash(raw), display_prefix=raw[:10])
    return token, raw


@transaction.atomic
def site_create(*, organization: Organization, name: str, actor) -> tuple[Site, str]:
    """Creates a site and its first token; the raw token is returned once and never stored."""
    if not organization.is_data_owner:
        raise Forbidden("Only data owner organizations run sites.", code="wrong_role")
    if Site.objects.filter(organization=organization, name=name).exists():
        raise Conflict("This organization already has a site with that name.")
    site = Site.objects.create(organization=organization, name=name)
    _, raw = _site_token_issue(site)
    audit_record(action="site.created", obj=site, actor_user=actor)
    return site, raw


@transaction.atomic
def site_token_rotate(*, site: Site, actor) -> tuple[SiteToken, str]:
    token, raw = _site_token_issue(site)
    audit_record(action="site.token_issued", obj=site, actor_user=actor, data={"token": token.id})
    return token, raw


@transaction.atomic
def site_token_revoke(*, site: Site, token_id: int, actor) -> SiteToken:
    token = SiteToken.objects.select_for_update().filter(site=site, id=token_id).first()
    if token is None:
        raise NotFound("Token not found.")
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
        audit_record(action="site.token_revoked", obj=site, actor_user=actor, data={"token": token.id})
    return token


def site_heartbeat(*, site: Site, agent_id: str, capabilities: dict, health: dict | None = None) -> Site:
    # Heartbeats are frequent liveness signals, not state changes: no audit row, except when the
    # agent's health changes (it cannot work, or can again).
    health = health or {}
    status = str(health.get("status") or "ok")[:32]
    detail = str(health.get("detail") or "")[:300]
    if status != (site.health_status or "ok"):
        audit_record(action="site.health", obj=site, data={"agent": agent_id[:64], "status": status, "detail": detail})
    site.last_heartbeat_at = timezone.now()
    site.last_agent_id = agent_id[:64]
    site.capabilities = capabilities
    site.health_status, site.health_detail = status, detail
    site.save(update_fields=["last_heartbeat_at", "last_agent_id", "capabilities", "health_status", "health_detail"])
    return site


STUCK_AFTER = timedelta(minutes=10)


def sites_flag_stuck(*, now=None, after: timedelta | None = None) -> dict[str, int]:
    """Flags sites where jobs have waited in the queue for ``after`` and no agent has claimed
    anything for as long (a dead agent, a full disk, a revoked token); clears the flag once they
    claim again or nothing waits. Audited both ways. Returns how many were flagged and cleared."""
    from marketplace.jobs.models import Job, JobStatus

    now = now or timezone.now()
    cutoff = now - (after or timedelta(minutes=getattr(settings, "VAULTBENCH_STUCK_SITE_MINUTES", 10)))
    waiting = set(
        Job.objects.filter(status=JobStatus.QUEUED, updated_at__lt=cutoff).values_list("site_id", flat=True)
    )
    flagged = cleared = 0
    for site in Site.objects.filter(id__in=waiting, stuck_since__isnull=True):
        if site.last_claim_at is not None and site.last_claim_at >= cutoff:
            continue
        Site.objects.filter(id=site.id).update(stuck_since=now)
        audit_record(action="site.stuck", obj=site, data={"health": site.health_status, "detail": site.health_detail})
        logger.warning("site %s is stuck: jobs wait and no agent claimed since %s", site.id, site.last_claim_at)
        flagged += 1
    for site in Site.objects.filter(stuck_since__isnull=False):
        recent_claim = site.last_claim_at is not None and site.last_claim_at > site.stuck_since
        if site.id not in waiting or recent_claim:
            Site.objects.filter(id=site.id).update(stuck_since=None)
            audit_record(action="site.unstuck", obj=site)
            cleared += 1
    return {"flagged": flagged, "cleared": cleared}
