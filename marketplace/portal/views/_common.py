"""What every page shares: domain errors become 404/403 pages, role gates, htmx partials."""

from functools import wraps

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.shortcuts import redirect
from django.utils.http import url_has_allowed_host_and_scheme

from marketplace.accounts.models import OrganizationKind
from marketplace.accounts.selectors import organizations_of
from marketplace.core.errors import Forbidden, NotFound


def funnelled(view):
    """Missing or not-yours objects (NotFound) answer 404; a wrong role (Forbidden) answers 403."""

    @wraps(view)
    def wrapper(request, *args, **kwargs):
        try:
            return view(request, *args, **kwargs)
        except NotFound as exc:
            raise Http404(exc.message) from exc
        except Forbidden as exc:
            raise PermissionDenied(exc.message) from exc

    return wrapper


def role_required(kind: str):
    """Pages of one side of the marketplace: logged in, and a member of an organization of `kind`."""

    def decorator(view):
        @wraps(view)
        def wrapper(request, *args, **kwargs):
            if not organizations_of(user=request.user).filter(kind=kind).exists():
                label = OrganizationKind(kind).label.lower()
                raise Forbidden(f"This page is for members of a {label} organization.")
            return view(request, *args, **kwargs)

        return login_required(funnelled(wrapper))

    return decorator


owner_required = role_required(OrganizationKind.DATA_OWNER)
vendor_required = role_required(OrganizationKind.VENDOR)


def person_required(view):
    return login_required(funnelled(view))


def domain_error_to_form(form, exc) -> None:
    """Shows a service's DomainError on the form: on the field it names, or above the form."""
    details = exc.details if isinstance(exc.details, dict) else {}
    placed = False
    for field, messages in details.items():
        target = FIELD_ALIASES.get(field, field)
        if field == "input_spec" and "target_range" in str(messages):
            target = "target_min"
        if target in form.fields:
            for message in messages if isinstance(messages, list) else [messages]:
                form.add_error(target, str(message))
            placed = True
    if not placed:
        form.add_error(None, exc.message)


# Spec keys of the services -> the portal form's field that edits them.
FIELD_ALIASES = {
    "input_spec": "n_features",
    "metrics": "primary_metric",
    "resource_limits": "memory_mb",
    "strategy_params.proximal_mu": "proximal_mu",
}


def redirect_back(request, default: str, *args, **kwargs):
    """To the page a form came from (its `next` field, this site's paths only), else `default`."""
    target = request.POST.get("next") or request.GET.get("next")
    if target and url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}) and target.startswith("/"):
        return redirect(target)
    return redirect(default, *args, **kwargs)
