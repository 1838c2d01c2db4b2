"""Vendor pages: ask for access, upload a model, follow 'my submissions' live."""

import json

from django.contrib import messages
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST
from django_htmx.http import HttpResponseClientRedirect

from marketplace.accounts.access import access_acting_organization
from marketplace.accounts.models import OrganizationKind
from marketplace.accounts.selectors import organizations_of
from marketplace.catalog.access import access_task_by_id, access_task_for_vendor
from marketplace.catalog.services import task_access_request
from marketplace.core.errors import DomainError
from marketplace.finetuning.services import TRAINABLE_FORMATS
from marketplace.portal.forms import FORMAT_EXTENSIONS, AccessRequestForm, SubmissionForm
from marketplace.portal.views._common import domain_error_to_form, redirect_back, vendor_required
from marketplace.submissions.access import access_submission_artifact
from marketplace.submissions.selectors import (
    finals_chosen,
    quota_usage,
    rules_accepted,
    submission_list_of_vendor_user,
)
from marketplace.submissions.services import rules_accept, submission_create, submission_nominate
from marketplace.submissions.visibility import (
    PENDING,
    check_nominable,
    privacy_budget_of,
    submission_view_for,
    submission_views_for,
)


def _vendor_organizations(user):
    return list(organizations_of(user=user).filter(kind=OrganizationKind.VENDOR).order_by("name"))


@require_POST
@vendor_required
def access_request(request, task_id: int):
    form = AccessRequestForm(request.POST)
    organization_id = request.POST.get("organization")
    vendor = access_acting_organization(
        request.user,
        kind=OrganizationKind.VENDOR,
        organization_id=int(organization_id) if organization_id else None,
    )
    task = access_task_by_id(request.user, task_id)
    note = form.cleaned_data["note"] if form.is_valid() else ""
    try:
        task_access_request(task=task, vendor=vendor, actor=request.user, note=note)
    except DomainError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Access requested for {vendor.name}; the data owner will decide.")
    return redirect("portal:task", task_id=task.id)


@vendor_required
def submission_new(request, task_id: int):
    organizations = _vendor_organizations(request.user)
    chosen = request.POST.get("organization") or (organizations[0].id if organizations else None)
    # The funnel refuses tasks the vendor may not submit to (invite-only and not approved).
    task, vendor = access_task_for_vendor(
        request.user, task_id, organization_id=int(chosen) if chosen else None
    )
    form = SubmissionForm(request.POST or None, request.FILES or None, organizations=organizations)
    needs_rules = not rules_accepted(task=task, vendor_id=vendor.id)
    if request.method == "POST" and needs_rules and request.POST.get("accept_rules") != "on":
        form.is_valid()
        form.add_error(None, "Accept the task's rules to upload.")
    elif request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            if needs_rules:
                rules_accept(task=task, vendor=vendor, actor=request.user)
            submission = submission_create(
                vendor=vendor, task=task, actor=request.user, name=data["name"], description=data["description"],
                artifact_format=data["artifact_format"], artifact=data["artifact"],
            )  # fmt: skip
        except DomainError as exc:
            domain_error_to_form(form, exc)
        else:
            messages.success(request, f"{submission.name} uploaded; the sites will evaluate it.")
            target = reverse("portal:submissions")
            return HttpResponseClientRedirect(target) if request.htmx else redirect(target)
    quotas = [
        {"vendor": v, **quota_usage(task=task, vendor_id=v.id), "privacy": privacy_budget_of(task=task, vendor_id=v.id)}
        for v in organizations
    ]
    context = {
        "task": task,
        "form": form,
        "needs_rules": needs_rules,
        "quotas": quotas,
        "format_extensions": json.dumps(FORMAT_EXTENSIONS),
    }
    template = "portal/_submission_form.html" if request.htmx else "portal/submission_new.html"
    return render(request, template, context, status=400 if form.errors and not request.htmx else 200)


def _fixed(task, metrics: dict | None) -> list[tuple[str, str]]:
    """Metric values written with exactly the task's decimals (0.9 with 4 -> 0.9000)."""
    decimals = {m["name"]: m["decimals"] for m in task.metrics}
    return [(name, f"{value:.{decimals[name]}f}") for name, value in (metrics or {}).items()]


def _submissions_context(user) -> dict:
    """'My submissions', each as submission_view_for shows it: "pending until ~<release time>"
    while the sites work, no per-site progress, then the outcome."""
    submissions = list(submission_list_of_vendor_user(user=user).select_related("leaderboard_entry")[:100])
    now = timezone.now()
    views = submission_views_for(user=user, submissions=submissions, now=now)
    seen, quotas = set(), []
    for submission in submissions:
        key = (submission.task_id, submission.vendor_id)
        if key not in seen:
            seen.add(key)
            quotas.append({"task": submission.task, "vendor": submission.vendor,
                           **quota_usage(task=submission.task, vendor_id=submission.vendor_id),
                           "privacy": privacy_budget_of(task=submission.task, vendor_id=submission.vendor_id),
                           "finals": finals_chosen(task_id=submission.task_id, vendor_id=submission.vendor_id)})  # fmt: skip
    names = {s.id: s.name for s in submissions}
    rows = []
    for submission, view in zip(submissions, views, strict=True):
        rows.append({
            **view, "submission": submission, "task": submission.task,
            "vendor_name": submission.vendor.name,
            "format_display": submission.get_artifact_format_display(),
            "parent_name": names.get(submission.parent_id),
            "no_improvement": view["ladder_improved"] is False,
            "scores": _fixed(submission.task, view["metrics"]),
            # Only offers the button; run_request checks every rule again.
            "can_fine_tune": view["status"] == "scored" and submission.artifact_format in TRAINABLE_FORMATS
            and not submission.is_fine_tuned and submission.task.fine_tuning_allowed,
        })  # fmt: skip
    live = any(row["status"] == PENDING for row in rows)
    return {"submissions": rows, "quotas": quotas, "live": live,
            "show_per_site": any(row["per_site"] for row in rows)}  # fmt: skip


@vendor_required
def submissions(request):
    return render(request, "portal/submissions.html", _submissions_context(request.user))


@vendor_required
def submissions_status(request):
    """The live part of 'my submissions', polled by htmx while anything is still moving."""
    return render(request, "portal/_submissions_table.html", _submissions_context(request.user))


@require_POST
@vendor_required
def submission_nomination(request, submission_id: int, action: str):
    """Picks (or unpicks) a final submission for the private leaderboard, as the API does."""
    submission = access_submission_artifact(request.user, submission_id)  # the vendor's own only
    try:
        if action == "nominate":
            check_nominable(submission_view_for(user=request.user, submission=submission))
        submission = submission_nominate(
            submission=submission, final=action == "nominate", actor=request.user
        )
    except DomainError as exc:
        messages.error(request, exc.message)
    else:
        chosen = finals_chosen(task_id=submission.task_id, vendor_id=submission.vendor_id)
        verb = "nominated as final" if submission.is_final else "no longer final"
        messages.success(
            request, f"{submission.name} {verb} ({chosen} of {submission.task.final_submissions} chosen)."
        )
    return redirect_back(request, "portal:submissions")
