"""Permission funnels for organizations: fetch and authorize in one call.

Missing and "not yours" both raise NotFound so nobody can probe for other organizations.
"""

from marketplace.accounts.models import Invitation, Organization, OrganizationKind
from marketplace.accounts.selectors import is_org_admin, organizations_of
from marketplace.core.errors import DomainError, Forbidden, NotFound


def access_organization_by_id(user, organization_id: int, *, require_admin: bool = False) -> Organization:
    organization = organizations_of(user=user).filter(id=organization_id).first()
    if organization is None:
        raise NotFound("Organization not found.")
    if require_admin and not is_org_admin(user=user, organization=organization):
        raise Forbidden("Only an admin of the organization may do this.")
    return organization


def access_acting_organization(user, *, kind: str, organization_id: int | None = None) -> Organization:
    """The organization of `kind` a person acts for: the one named, or their only one of that kind."""
    if not getattr(user, "is_authenticated", False):
        raise Forbidden("Log in first.")
    candidates = organizations_of(user=user).filter(kind=kind)
    if organization_id is not None:
        organization = candidates.filter(id=organization_id).first()
        if organization is None:
            raise NotFound("Organization not found.")
        return organization
    found = list(candidates.order_by("name")[:20])
    label = OrganizationKind(kind).label.lower()
    if not found:
        raise Forbidden(f"You are not a member of any {label} organization.", code="wrong_role")
    if len(found) > 1:
        # Joining a second organization is a choice now (an accepted invitation); say which ones
        # there are and how to pick, in the API and in the CLI that prints this message.
        listed = ", ".join(f"{o.name} (id {o.id})" for o in found)
        raise DomainError(
            f"You belong to several {label} organizations: {listed}. Say which one with 'organization' "
            f"(the CLI: --organization ID).",
            code="organization_required",
            details={"organizations": [{"id": o.id, "name": o.name, "slug": o.slug} for o in found]},
        )
    return found[0]


def access_invitation_for_invitee(user, invitation_id: int) -> Invitation:
    """An invitation addressed to this person by username (another person's answers 404)."""
    invitation = Invitation.objects.select_related("organization", "invited_by").filter(
        id=invitation_id, invitee=user
    ).first()
    if invitation is None:
        raise NotFound("Invitation not found.")
    return invitation


def access_invitation_of_organization(user, organization_id: int, invitation_id: int) -> Invitation:
    """An invitation of an organization this person administers."""
    organization = access_organization_by_id(user, organization_id, require_admin=True)
    invitation = Invitation.objects.filter(id=invitation_id, organization=organization).first()
    if invitation is None:
        raise NotFound("Invitation not found.")
    return invitation
