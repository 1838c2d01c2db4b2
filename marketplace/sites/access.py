from marketplace.accounts.selectors import is_org_admin
from marketplace.core.errors import Forbidden, NotFound
from marketplace.sites.models import Site
from marketplace.sites.selectors import site_list_visible_to


def access_site_by_id(user, site_id: int, *, require_admin: bool = False) -> Site:
    """A site of one of the person's organizations; anything else is NotFound."""
    site = site_list_visible_to(user=user).filter(id=site_id).first()
    if site is None:
        raise NotFound("Site not found.")
    if require_admin and not is_org_admin(user=user, organization=site.organization):
        raise Forbidden("Only an admin of the organization may manage its sites.")
    return site
