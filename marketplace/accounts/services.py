from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone
from django.utils.text import slugify

from marketplace.accounts.models import MemberRole, Membership, Organization, OrganizationKind, PersonalToken
from marketplace.audit.services import audit_record
from marketplace.core.errors import Conflict, DomainError, NotFound
from marketplace.core.tokens import PERSONAL_PREFIX, token_generate, token_hash

User = get_user_model()


@transaction.atomic
def organization_create(*, name: str, kind: str, creator) -> Organization:
    slug = slugify(name)
    if not slug:
        raise DomainError("The organization needs a name with letters or digits.")
    if Organization.objects.filter(slug=slug).exists() or Organization.objects.filter(name=name).exists():
        raise Conflict("An organization with this name already exists.")
    organization = Organization.objects.create(name=name, slug=slug, kind=kind)
    Membership.objects.create(user=creator, organization=organization, role=MemberRole.ADMIN)
    audit_record(action="organization.created", obj=organization, actor_user=creator, data={"kind": kind})
    return organization


@transaction.atomic
def membership_add(*, organization: Organization, username: str, role: str, actor) -> Membership:
    user = User.objects.filter(username=username).first()
    if user is None:
        raise NotFound("No such user.")
    membership, created = Membership.objects.get_or_create(
        user=user, organization=organization, defaults={"role": role}
    )
    if not created and membership.role != role:
        membership.role = role
        membership.save(update_fields=["role"])
    audit_record(
        action="membership.set", obj=organization, actor_user=actor, data={"user": user.username, "role": role}
    )
    return membership


@transaction.atomic
def personal_token_create(*, user, name: str) -> tuple[PersonalToken, str]:
    """Returns the token row and the raw secret, which is shown once and never stored."""
    raw = token_generate(PERSONAL_PREFIX)
    token = PersonalToken.objects.create(
        user=user, name=name, key_hash=token_hash(raw), display_prefix=raw[:10]
    )
    audit_record(action="token.created", obj=token, actor_user=user)
    return token, raw


@transaction.atomic
def personal_token_revoke(*, user, token_id: int) -> PersonalToken:
    token = PersonalToken.objects.select_for_update().filter(user=user, id=token_id).first()
    if token is None:
        raise NotFound("Token not found.")
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
        audit_record(action="token.revoked", obj=token, actor_user=user)
    return token


@transaction.atomic
def account_sign_up(*, username: str, password: str, organization_name: str = "", kind: str = "") -> User:
    """A person signs up; with an organization name they also create it (and become its admin).

    Without one they can be added to an existing organization by its admin later.
    """
    if User.objects.filter(username__iexact=username).exists():
        raise Conflict("This username is taken.", code="username_taken")
    if organization_name and kind not in OrganizationKind.values:
        raise DomainError("Say whether the organization is a data owner or a vendor.", code="kind_required")
    user = User.objects.create_user(username=username, password=password)
    audit_record(action="account.signed_up", obj=user, actor_user=user)
    if organization_name:
        organization_create(name=organization_name, kind=kind, creator=user)
    return user
