"""Permission funnels for organizations: fetch and authorize in one call.

Missing and "not yours" both raise NotFound so nobody can probe for other organizations.
"""

from marketplace.accounts.models import Organization, OrganizationKind
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
    found = list(candidates[:2])
    label = OrganizationKind(kind).label.lower()
    if not found:
        raise Forbidden(f"You are not a member of any {label} organization.", code="wrong_role")
    if len(found) > 1:
        raise DomainError(
            f"You belong to several {label} organizations: say which with 'organization'.",
            code="organization_required",
        )
    return found[0]
