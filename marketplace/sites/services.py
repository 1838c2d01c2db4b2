from django.db import transaction
from django.utils import timezone

from marketplace.accounts.models import Organization
from marketplace.audit.services import audit_record
from marketplace.core.errors import Conflict, Forbidden, NotFound
from marketplace.core.tokens import SITE_PREFIX, token_generate, token_hash
from marketplace.sites.models import Site, SiteToken


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


def site_heartbeat(*, site: Site, agent_id: str, capabilities: dict) -> Site:
    # Heartbeats are frequent liveness signals, not state changes: no audit row.
    site.last_heartbeat_at = timezone.now()
    site.last_agent_id = agent_id[:64]
    site.capabilities = capabilities
    site.save(update_fields=["last_heartbeat_at", "last_agent_id", "capabilities"])
    return site
