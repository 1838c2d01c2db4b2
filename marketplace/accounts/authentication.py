"""Bearer-token authentication for people (REST, CLI). Site tokens are handled in sites/."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions

from marketplace.accounts.models import PersonalToken
from marketplace.core.tokens import PERSONAL_PREFIX, token_hash, token_touch


def bearer_token_from(request) -> str | None:
    header = authentication.get_authorization_header(request).decode("latin-1")
    scheme, _, raw = header.partition(" ")
    if scheme.lower() != "bearer" or not raw.strip():
        return None
    return raw.strip()


class PersonalTokenAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request):
        raw = bearer_token_from(request)
        if raw is None:
            return None
        if not raw.startswith(PERSONAL_PREFIX):
            # A site token (or anything else) must not pass here as an anonymous visitor.
            raise exceptions.AuthenticationFailed("People endpoints need a personal token.")
        token = (
            PersonalToken.objects.select_related("user")
            .filter(key_hash=token_hash(raw), revoked_at__isnull=True)
            .first()
        )
        if token is None or not token.user.is_active:
            raise exceptions.AuthenticationFailed("Invalid or revoked token.")
        token_touch(token)
        return token.user, token

    def authenticate_header(self, request):
        return "Bearer"


class PersonalTokenScheme(OpenApiAuthenticationExtension):
    target_class = "marketplace.accounts.authentication.PersonalTokenAuthentication"
    name = "personalToken"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "description": "Personal API token (vbp_...)"}
