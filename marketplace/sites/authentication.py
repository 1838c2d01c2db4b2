"""Site agents authenticate with a per-site bearer token (vbs_...), never with a person's."""

from dataclasses import dataclass

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions, permissions

from evaluator.jsonlog import bind
from marketplace.accounts.authentication import bearer_token_from
from marketplace.core.tokens import SITE_PREFIX, token_hash, token_touch
from marketplace.sites.models import Site, SiteToken


@dataclass(frozen=True)
class SitePrincipal:
    """Stands in for request.user on agent endpoints: a site, not a person."""

    site: Site
    is_authenticated: bool = True
    is_anonymous: bool = False
    is_staff: bool = False


class SiteTokenAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request):
        raw = bearer_token_from(request)
        if raw is None:
            return None
        if not raw.startswith(SITE_PREFIX):
            raise exceptions.AuthenticationFailed("Agent endpoints need a site token.")
        token = (
            SiteToken.objects.select_related("site")
            .filter(key_hash=token_hash(raw), revoked_at__isnull=True)
            .first()
        )
        if token is None:
            raise exceptions.AuthenticationFailed("Invalid or revoked site token.")
        token_touch(token)
        bind(site=token.site_id)  # the request's log lines carry the site (reset by OpsMiddleware)
        return SitePrincipal(site=token.site), token

    def authenticate_header(self, request):
        return "Bearer"


class IsSiteAgent(permissions.BasePermission):
    def has_permission(self, request, view):
        return isinstance(request.user, SitePrincipal)


class SiteTokenScheme(OpenApiAuthenticationExtension):
    target_class = "marketplace.sites.authentication.SiteTokenAuthentication"
    name = "siteToken"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "description": "Site agent token (vbs_...)"}
