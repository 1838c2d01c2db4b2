"""The owner's approval queue at scale: filters (task, vendor, site), pagination, and bulk
approve/reject/release/withhold on the selected rows or on everything that matches the filter."""

from django.contrib import messages
from django.core.paginator import Paginator
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from marketplace.accounts.models import Organization, OrganizationKind
from marketplace.catalog.selectors import access_requests_pending_for, task_list_owned_by
from marketplace.core.errors import DomainError
from marketplace.jobs.selectors import jobs_awaiting_approval_for, jobs_held_for_release_for
from marketplace.portal.forms import QueueFilterForm
from marketplace.portal.views._common import owner_required
from marketplace.portal.views.finetuning import runs_awaiting_approval_for
from marketplace.sites.selectors import site_list_visible_to
from marketplace.submissions.services import REJECTION_REASON_MAX, jobs_release_bulk, jobs_review_bulk

PAGE_SIZE = 50


def _filter_form(request, data):
    user = request.user
    awaiting, held = jobs_awaiting_approval_for(user=user), jobs_held_for_release_for(user=user)
    vendor_ids = {*awaiting.values_list("submission__vendor_id", flat=True), *held.values_list("submission__vendor_id", flat=True)}
    return QueueFilterForm(
        data,
        tasks=task_list_owned_by(user=user).order_by("title"),
        vendors=Organization.objects.filter(id__in=vendor_ids).order_by("name"),
        sites=site_list_visible_to(user=user).filter(organization__kind=OrganizationKind.DATA_OWNER).order_by("name"),
    )


def _query(form) -> str:
    """The filter as a query string, to come back to the same view after a bulk action."""
    if not form.is_bound or not form.is_valid():
        return ""
    from urllib.parse import urlencode

    return urlencode({k: v for k, v in form.cleaned_data.items() if v})


@owner_required
def approvals(request):
    form = _filter_form(request, request.GET or None)
    if form.is_bound and not form.is_valid():
        filters, bad = {}, True  # an unknown task/vendor/site matches nothing, never everything
    else:
        filters, bad = form.job_filter() if form.is_bound else {}, False
    jobs = jobs_awaiting_approval_for(user=request.user).filter(**filters)
    held = jobs_held_for_release_for(user=request.user).filter(**filters)
    if bad:
        jobs, held = jobs.none(), held.none()
    undecided = held.filter(release_decision="")
    query = _query(form)
    return render(
        request, "portal/approvals.html",
        {"form": form, "query": query, "filtered": bool(filters),
         "access_requests": Paginator(access_requests_pending_for(user=request.user), PAGE_SIZE).get_page(request.GET.get("access_page")),
         "jobs": Paginator(jobs, PAGE_SIZE).get_page(request.GET.get("jobs_page")),
         "jobs_count": jobs.count(),
         "held": Paginator(held, PAGE_SIZE).get_page(request.GET.get("held_page")),
         "undecided_count": undecided.count(),
         "runs": runs_awaiting_approval_for(request.user), "reason_max": REJECTION_REASON_MAX},
    )  # fmt: skip


def _action(request, verbs: tuple[str, str]) -> tuple[str | None, bool]:
    """("approve", False) for action=approve, ("approve", True) for action=approve-matching."""
    verb, _, scope = (request.POST.get("action") or "").partition("-")
    if verb not in verbs or scope not in ("", "matching"):
        return None, False
    return verb, scope == "matching"


def _selected(request, queryset, *, matching: bool):
    """The jobs a bulk form names: its ticked rows, or (matching) all that match its filter.
    None when the form names none or its filter is not the owner's (nothing is done then)."""
    form = _filter_form(request, request.POST)
    if not form.is_valid():
        return None, form
    queryset = queryset.filter(**form.job_filter())
    if matching:
        return list(queryset), form
    ids = [int(v) for v in request.POST.getlist("job") if v.isdigit()]
    return (list(queryset.filter(id__in=ids)) if ids else None), form


def _back(form):
    query = _query(form)
    return redirect(reverse("portal:approvals") + (f"?{query}" if query else ""))


def _report(request, result: dict, verb: str) -> None:
    skipped = f"; {result['skipped']} had already been decided" if result["skipped"] else ""
    messages.success(request, f"{result['done']} job{'s' if result['done'] != 1 else ''} {verb}{skipped}.")


@require_POST
@owner_required
def jobs_bulk(request):
    action, matching = _action(request, ("approve", "reject"))
    if action is None:
        messages.error(request, "Choose approve or reject.")
        return redirect("portal:approvals")
    jobs, form = _selected(request, jobs_awaiting_approval_for(user=request.user), matching=matching)
    if jobs is None:
        messages.error(request, "Select at least one job, or act on all that match the filter.")
        return _back(form)
    try:
        result = jobs_review_bulk(jobs=jobs, approve=action == "approve", actor=request.user,
                                  reason=request.POST.get("reason", ""))  # fmt: skip
    except DomainError as exc:
        messages.error(request, exc.message)
    else:
        _report(request, result, "approved" if action == "approve" else "rejected")
    return _back(form)


@require_POST
@owner_required
def results_bulk(request):
    action, matching = _action(request, ("release", "withhold"))
    if action is None:
        messages.error(request, "Choose release or withhold.")
        return redirect("portal:approvals")
    held = jobs_held_for_release_for(user=request.user).filter(release_decision="")
    jobs, form = _selected(request, held, matching=matching)
    if jobs is None:
        messages.error(request, "Select at least one result, or act on all that match the filter.")
        return _back(form)
    result = jobs_release_bulk(jobs=jobs, approve=action == "release", actor=request.user)
    _report(request, result, "released (each site sends its result at its next poll)" if action == "release" else "withheld")
    return _back(form)
