from django.db.models import QuerySet

from marketplace.accounts.models import MemberRole, Membership, Organization, PersonalToken


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
