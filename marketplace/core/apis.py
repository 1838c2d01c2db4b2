"""Small helpers shared by the thin API views."""

from rest_framework import permissions


class IsPerson(permissions.IsAuthenticated):
    """A logged-in person (session or personal token), not a site agent."""

    def has_permission(self, request, view):
        from marketplace.sites.authentication import SitePrincipal

        return super().has_permission(request, view) and not isinstance(request.user, SitePrincipal)
