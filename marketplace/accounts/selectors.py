from django.db.models import QuerySet
from django.utils import timezone

from marketplace.accounts.models import (
    Invitation,
    InvitationStatus,
    MemberRole,
    Membership,
    Organization,
    PersonalToken,
)


def organizations_of(*, user) -> QuerySet[Organization]:
    if not getattr(user, "is_authenticated", False):
        return Organization.objects.none()
    return Organization.objects.filter(memberships__user=user)


def organization_ids_of(*, user) -> set[int]:
    return set(organizations_of(user=user).values_list("id", flat=True))


def is_org_admin(*, user, organization: Organization) -> bool:
    return Membership.objects.filter(
        user=user, organization=organization, role=MemberRole.ADMIN
    ).exists()


def personal_tokens_of(*, user) -> QuerySet[PersonalToken]:
    return PersonalToken.objects.filter(user=user)


def members_of(*, organization: Organization) -> QuerySet[Membership]:
    return Membership.objects.filter(organization=organization).select_related("user").order_by("user__username")


def memberships_of(*, user) -> QuerySet[Membership]:
    return Membership.objects.filter(user=user).select_related("organization", "role_set_by").order_by("organization__name")


def invitations_open_for(*, user) -> QuerySet[Invitation]:
    """Open invitations addressed to this person by username."""
    return Invitation.objects.filter(
        invitee=user, status=InvitationStatus.PENDING, expires_at__gt=timezone.now()
    ).select_related("organization", "invited_by")


def invitations_of(*, organization: Organization) -> QuerySet[Invitation]:
    """The organization's invitations, newest first (its admins' view)."""
    return Invitation.objects.filter(organization=organization).select_related("invitee", "invited_by")
