from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import BaseUserManager
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import transaction
from django.urls import reverse
from django.utils import timezone
from django.utils.text import slugify

from marketplace.accounts.models import (
    Invitation,
    InvitationStatus,
    MemberRole,
    Membership,
    Organization,
    OrganizationKind,
    PersonalToken,
)
from marketplace.audit.services import audit_record
from marketplace.core.errors import Conflict, DomainError, NotFound
from marketplace.core.tokens import INVITATION_PREFIX, PERSONAL_PREFIX, token_generate, token_hash
from marketplace.notifications.services import email_enqueue

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


def email_normalize(email: str) -> str:
    """A valid address, its domain lower-cased; raises DomainError(code="invalid_email")."""
    email = BaseUserManager.normalize_email((email or "").strip())
    try:
        validate_email(email)
    except ValidationError as exc:
        raise DomainError("Enter a valid e-mail address.", code="invalid_email") from exc
    return email


def _email_in_use(email: str, *, exclude_user_id: int | None = None) -> bool:
    return User.objects.filter(email__iexact=email).exclude(id=exclude_user_id).exists()


@transaction.atomic
def account_sign_up(
    *,
    username: str,
    password: str,
    email: str,
    organization_name: str = "",
    kind: str = "",
    invitation_key: str = "",
) -> User:
    """A person signs up with an e-mail address (password resets go there); with an organization
    name they also create it (and become its admin); with an invitation's secret they accept it.
    Without either they join an organization later by accepting an invitation.
    """
    email = email_normalize(email)
    if User.objects.filter(username__iexact=username).exists():
        raise Conflict("This username is taken.", code="username_taken")
    if _email_in_use(email):
        raise Conflict("An account with this e-mail address exists: log in or reset its password.", code="email_taken")
    if organization_name and kind not in OrganizationKind.values:
        raise DomainError("Say whether the organization is a data owner or a vendor.", code="kind_required")
    invitation = invitation_by_key(invitation_key, for_update=True) if invitation_key else None
    user = User.objects.create_user(username=username, password=password, email=email)
    audit_record(action="account.signed_up", obj=user, actor_user=user)
    if organization_name:
        organization_create(name=organization_name, kind=kind, creator=user)
    if invitation is not None:
        invitation_accept(invitation=invitation, user=user)
    return user


@transaction.atomic
def account_email_set(*, user, email: str) -> None:
    email = email_normalize(email)
    if _email_in_use(email, exclude_user_id=user.id):
        raise Conflict("Another account uses this e-mail address.", code="email_taken")
    old = user.email
    user.email = email
    user.save(update_fields=["email"])
    audit_record(action="account.email_changed", obj=user, actor_user=user)
    if old and old.lower() != email.lower():  # the old mailbox learns of it: a hijack is noticed
        email_enqueue(
            to=[old], subject="Your Vaultbench e-mail address changed",
            body=f"The e-mail address of the Vaultbench account {user.username} is now {email}.\n"
            "If you did not do this, reset your password at once.",
        )  # fmt: skip


# --- invitations: nobody joins an organization without saying yes ----------------------------

def _invitation_days() -> int:
    return int(getattr(settings, "VAULTBENCH_INVITATION_DAYS", 14))


def _absolute(path: str) -> str:
    return settings.VAULTBENCH_PUBLIC_URL.rstrip("/") + path


def invitation_is_open(invitation: Invitation) -> bool:
    return invitation.status == InvitationStatus.PENDING and invitation.expires_at > timezone.now()


def invitation_by_key(raw: str, *, for_update: bool = False) -> Invitation:
    """The invitation whose one-time secret this is (mailed to the address invited)."""
    rows = Invitation.objects.select_related("organization", "invitee")
    if for_update:
        rows = rows.select_for_update(of=("self",))  # invitee is a nullable join: lock the invitation only
    invitation = rows.filter(key_hash=token_hash(raw or "")).first()
    if invitation is None:
        raise NotFound("Invitation not found.")
    return invitation


@transaction.atomic
def invitation_create(
    *, organization: Organization, actor, role: str, username: str = "", email: str = ""
) -> tuple[Invitation, str]:
    """An admin invites a person by username or by e-mail address. Returns the invitation and its
    one-time secret (mailed; returned once to the admin for automated set-ups)."""
    if bool(username) == bool(email):
        raise DomainError("Invite either a username or an e-mail address.", code="invitee_required")
    if role not in MemberRole.values:
        raise DomainError("Unknown role.", code="invalid_role")
    invitee = None
    if username:
        invitee = User.objects.filter(username=username, is_active=True).first()
        if invitee is None:
            raise NotFound("No such user.")
        address = invitee.email
        already = Membership.objects.filter(organization=organization, user=invitee).exists()
    else:
        address = email_normalize(email)
        already = Membership.objects.filter(organization=organization, user__email__iexact=address).exists()
    if already:
        raise Conflict("This person is already a member; change their role on the member list.", code="already_member")
    pending = Invitation.objects.filter(
        organization=organization, status=InvitationStatus.PENDING, expires_at__gt=timezone.now()
    )
    if (pending.filter(invitee=invitee) if invitee else pending.filter(email__iexact=address)).exists():
        raise Conflict("This person already has an open invitation.", code="already_invited")
    raw = token_generate(INVITATION_PREFIX)
    invitation = Invitation.objects.create(
        organization=organization, invitee=invitee, email="" if invitee else address, role=role,
        key_hash=token_hash(raw), invited_by=actor, expires_at=timezone.now() + timedelta(days=_invitation_days()),
    )  # fmt: skip
    audit_record(
        action="invitation.created", obj=organization, actor_user=actor,
        data={"invitation": invitation.id, "user": username, "email": "" if invitee else address, "role": role},
    )  # fmt: skip
    if address:
        link = _absolute(reverse("portal:account") if invitee else reverse("portal:invitation", args=[raw]))
        email_enqueue(
            to=[address], subject=f"{actor.username} invites you to {organization.name} on Vaultbench",
            body=f"{actor.username} invites you to join {organization.name} ({organization.get_kind_display()}) "
            f"as {MemberRole(role).label.lower()}.\n\nAccept or decline: {link}\n\n"
            f"The invitation expires on {invitation.expires_at:%Y-%m-%d}. Nothing changes unless you accept.",
        )  # fmt: skip
    return invitation, raw


def _check_answerable(invitation: Invitation, user) -> None:
    if invitation.invitee_id is not None and invitation.invitee_id != user.id:
        raise NotFound("Invitation not found.")  # someone else's: answered like a missing one
    if not invitation_is_open(invitation):
        state = "has expired" if invitation.status == InvitationStatus.PENDING else f"was {invitation.status}"
        raise Conflict(f"This invitation {state}.", code="invitation_closed")


@transaction.atomic
def invitation_accept(*, invitation: Invitation, user) -> Membership:
    invitation = Invitation.objects.select_for_update().select_related("organization").get(id=invitation.id)
    _check_answerable(invitation, user)
    if Membership.objects.filter(organization=invitation.organization, user=user).exists():
        raise Conflict("You are already a member of this organization.", code="already_member")
    now = timezone.now()
    membership = Membership.objects.create(
        user=user, organization=invitation.organization, role=invitation.role,
        role_set_by=invitation.invited_by, role_set_at=now,
    )  # fmt: skip
    invitation.status, invitation.answered_at, invitation.answered_by = InvitationStatus.ACCEPTED, now, user
    invitation.save(update_fields=["status", "answered_at", "answered_by"])
    audit_record(
        action="invitation.accepted", obj=invitation.organization, actor_user=user,
        data={"invitation": invitation.id, "user": user.username, "role": invitation.role},
    )  # fmt: skip
    return membership


@transaction.atomic
def invitation_decline(*, invitation: Invitation, user) -> Invitation:
    invitation = Invitation.objects.select_for_update().select_related("organization").get(id=invitation.id)
    _check_answerable(invitation, user)
    invitation.status, invitation.answered_at, invitation.answered_by = InvitationStatus.DECLINED, timezone.now(), user
    invitation.save(update_fields=["status", "answered_at", "answered_by"])
    audit_record(
        action="invitation.declined", obj=invitation.organization, actor_user=user,
        data={"invitation": invitation.id, "user": user.username},
    )  # fmt: skip
    return invitation


@transaction.atomic
def invitation_revoke(*, invitation: Invitation, actor) -> Invitation:
    invitation = Invitation.objects.select_for_update().get(id=invitation.id)
    if invitation.status != InvitationStatus.PENDING:
        raise Conflict(f"This invitation was already {invitation.status}.", code="invitation_closed")
    invitation.status, invitation.answered_at, invitation.answered_by = InvitationStatus.REVOKED, timezone.now(), actor
    invitation.save(update_fields=["status", "answered_at", "answered_by"])
    audit_record(action="invitation.revoked", obj=invitation.organization, actor_user=actor, data={"invitation": invitation.id})
    return invitation


# --- memberships: roles change only by an admin's explicit action; members may leave ------------

def _admin_count(organization: Organization) -> int:
    return Membership.objects.filter(organization=organization, role=MemberRole.ADMIN).count()


@transaction.atomic
def membership_set_role(*, organization: Organization, username: str, role: str, actor) -> Membership:
    """An admin changes a member's role; the member is told by e-mail and sees who did it and when."""
    if role not in MemberRole.values:
        raise DomainError("Unknown role.", code="invalid_role")
    # Lock the organization's memberships: two admins demoting each other cannot leave it with none.
    list(Membership.objects.select_for_update().filter(organization=organization).values_list("id", flat=True))
    membership = Membership.objects.select_related("user").filter(organization=organization, user__username=username).first()
    if membership is None:
        raise NotFound("No such member.")
    if membership.role == role:
        return membership
    if membership.role == MemberRole.ADMIN and _admin_count(organization) == 1:
        raise Conflict("An organization needs an admin: make another member an admin first.", code="last_admin")
    old, now = membership.role, timezone.now()
    membership.role, membership.role_set_by, membership.role_set_at = role, actor, now
    membership.save(update_fields=["role", "role_set_by", "role_set_at"])
    audit_record(
        action="membership.role_changed", obj=organization, actor_user=actor,
        data={"user": username, "from": old, "to": role},
    )  # fmt: skip
    if membership.user.email and membership.user_id != actor.id:
        email_enqueue(
            to=[membership.user.email], subject=f"Your role in {organization.name} changed",
            body=f"{actor.username} changed your role in {organization.name} from {MemberRole(old).label.lower()} "
            f"to {MemberRole(role).label.lower()} on {now:%Y-%m-%d %H:%M} UTC.\n{_absolute(reverse('portal:account'))}",
        )  # fmt: skip
    return membership


@transaction.atomic
def membership_leave(*, organization: Organization, user) -> None:
    list(Membership.objects.select_for_update().filter(organization=organization).values_list("id", flat=True))
    membership = Membership.objects.filter(organization=organization, user=user).first()
    if membership is None:
        raise NotFound("Organization not found.")
    if membership.role == MemberRole.ADMIN and _admin_count(organization) == 1:
        raise Conflict(
            "You are its only admin: make another member an admin first (its tasks, sites and submissions "
            "need someone to govern them).",
            code="last_admin",
        )
    membership.delete()
    audit_record(action="membership.left", obj=organization, actor_user=user, data={"user": user.username})
