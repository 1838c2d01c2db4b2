"""Data-owner pages: tasks and their policy, sites, the approval queue and the egress ledger."""

from django.conf import settings
from django.contrib import messages
from django.core.paginator import Paginator
from django.db import transaction
from django.db.models import Count, Sum
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from evaluator.privacy.zcdp import ACCOUNTANT, epsilon_for_rho
from marketplace.accounts.access import access_acting_organization, access_organization_by_id
from marketplace.accounts.models import Organization, OrganizationKind
from marketplace.accounts.selectors import organizations_of
from marketplace.catalog.access import access_task_for_owner
from marketplace.catalog.models import TaskStatus
from marketplace.catalog.selectors import (
    access_events_for_task,
    access_requests_pending_for,
    shards_of_site,
    shards_of_task,
    task_list_owned_by,
)
from marketplace.catalog.services import (
    STRUCTURAL_FIELDS,
    task_access_decide,
    task_close,
    task_close_plan,
    task_create,
    task_open,
    task_sample_set,
    task_update,
)
from marketplace.core.errors import DomainError
from marketplace.egress.apis import egress_csv_response
from marketplace.egress.filters import EgressFilter
from marketplace.egress.models import EgressKind, EgressRecord
from marketplace.egress.selectors import egress_records_visible_to
from marketplace.jobs.access import access_job_for_owner
from marketplace.jobs.selectors import jobs_awaiting_approval_for, jobs_held_for_release_for
from marketplace.jobs.services import job_release_decide
from marketplace.leaderboard.selectors import task_close_summary
from marketplace.portal.forms import LedgerFilterForm, SiteCreateForm, TaskForm
from marketplace.portal.views._common import domain_error_to_form, owner_required, redirect_back
from marketplace.portal.views.finetuning import runs_awaiting_approval_for
from marketplace.sites.access import access_site_by_id
from marketplace.sites.selectors import site_list_visible_to
from marketplace.sites.services import site_create
from marketplace.submissions.services import job_review


def _owner_organizations(user):
    return list(organizations_of(user=user).filter(kind=OrganizationKind.DATA_OWNER).order_by("name"))


def _owner_sites(user):
    return (
        site_list_visible_to(user=user)
        .filter(organization__kind=OrganizationKind.DATA_OWNER)
        .order_by("name")
    )


@owner_required
def dashboard(request):
    return render(
        request,
        "portal/manage.html",
        {
            "tasks": Paginator(task_list_owned_by(user=request.user).order_by("-created_at", "-id"), 25).get_page(
                request.GET.get("page")
            ),
            "sites": _owner_sites(request.user),
            "pending_access": access_requests_pending_for(user=request.user).count(),
            "pending_jobs": jobs_awaiting_approval_for(user=request.user).count()
            + jobs_held_for_release_for(user=request.user).filter(release_decision="").count()
            + runs_awaiting_approval_for(request.user).count(),
        },
    )


# --- tasks -----------------------------------------------------------------------------------


@owner_required
def task_new(request):
    organizations = _owner_organizations(request.user)
    form = TaskForm(request.POST or None, request.FILES or None, organizations=organizations,
                    initial={"visibility": "public", "n_classes": 2})  # fmt: skip
    if request.method == "POST" and form.is_valid():
        try:
            organization = access_acting_organization(
                request.user,
                kind=OrganizationKind.DATA_OWNER,
                organization_id=form.cleaned_data.get("organization"),
            )
            with transaction.atomic():
                task = task_create(organization=organization, actor=request.user, spec=form.spec())
                if form.cleaned_data.get("sample"):
                    task_sample_set(task=task, actor=request.user, sample=form.cleaned_data["sample"],
                                    max_bytes=settings.VAULTBENCH_MAX_SAMPLE_BYTES)  # fmt: skip
        except DomainError as exc:
            domain_error_to_form(form, exc)
        else:
            messages.success(
                request, f"Task {task.title} saved as a draft. Open it when its sites are ready."
            )
            return redirect("portal:manage-task", task_id=task.id)
    return render(
        request, "portal/task_form.html", {"form": form, "task": None}, status=400 if form.errors else 200
    )


@owner_required
def task_edit(request, task_id: int):
    task = access_task_for_owner(request.user, task_id)
    frozen = STRUCTURAL_FIELDS if task.status != TaskStatus.DRAFT else frozenset()
    form = TaskForm(
        request.POST or None, request.FILES or None, initial=TaskForm.initial_from(task), frozen=frozen
    )
    del form.fields["organization"]
    if request.method == "POST" and form.is_valid():
        try:
            with transaction.atomic():
                task = access_task_for_owner(request.user, task_id, for_update=True)
                spec = form.spec()
                for field in frozen:
                    spec.pop(field, None)
                task_update(task=task, actor=request.user, changes=spec)
                if form.cleaned_data.get("sample"):
                    task_sample_set(task=task, actor=request.user, sample=form.cleaned_data["sample"],
                                    max_bytes=settings.VAULTBENCH_MAX_SAMPLE_BYTES)  # fmt: skip
        except DomainError as exc:
            domain_error_to_form(form, exc)
        else:
            messages.success(request, "Task saved.")
            return redirect("portal:manage-task", task_id=task.id)
    return render(
        request, "portal/task_form.html", {"form": form, "task": task}, status=400 if form.errors else 200
    )


@owner_required
def task_manage(request, task_id: int):
    task = access_task_for_owner(request.user, task_id)
    return render(
        request,
        "portal/manage_task.html",
        {"task": task, "shards": shards_of_task(task=task), "events": access_events_for_task(task=task)[:50]},
    )


@require_POST
@owner_required
def task_state(request, task_id: int, action: str):
    """Opens the task (closing goes through task_close_confirm)."""
    with transaction.atomic():
        task = access_task_for_owner(request.user, task_id, for_update=True)
        try:
            task_open(task=task, actor=request.user)
        except DomainError as exc:
            messages.error(request, exc.message)
        else:
            messages.success(request, "Task opened.")
    return redirect("portal:manage-task", task_id=task_id)


def _reveal_ids(plan: dict) -> list[int]:
    return sorted(row["submission_id"] for row in plan["reveal"])


@owner_required
def task_close_confirm(request, task_id: int):
    """Closing, in two steps: the page lists the private scores the close will reveal (the finals
    that fit the private budgets) and those it will not; confirming it approves exactly those
    reveals. If the plan changed in between (a new score, a nomination), the page shows it again."""
    task = access_task_for_owner(request.user, task_id)
    if request.method == "POST":
        shown = sorted(int(v) for v in request.POST.getlist("reveal") if v.isdigit())
        with transaction.atomic():
            task = access_task_for_owner(request.user, task_id, for_update=True)
            plan = task_close_plan(task=task)
            if shown == _reveal_ids(plan):
                try:
                    task_close(task=task, actor=request.user)
                except DomainError as exc:
                    messages.error(request, exc.message)
                else:
                    messages.success(
                        request, f"Task closed. Private scores to reveal: {len(plan['reveal'])}."
                    )
                return redirect("portal:manage-task", task_id=task_id)
        messages.error(request, "What the close would reveal has changed since you opened this page: review it again.")
    plan = task_close_plan(task=task)
    return render(request, "portal/task_close.html", {"task": task, "plan": plan, "reveal_ids": _reveal_ids(plan),
                                                      "summary": task_close_summary(task=task)})  # fmt: skip


# --- sites -----------------------------------------------------------------------------------


@owner_required
def sites(request):
    organizations = _owner_organizations(request.user)
    form = SiteCreateForm(request.POST or None, organizations=organizations)
    created = None
    if request.method == "POST" and form.is_valid():
        try:
            organization_id = form.cleaned_data.get("organization") or organizations[0].id
            organization = access_organization_by_id(request.user, organization_id, require_admin=True)
            site, raw = site_create(
                organization=organization, name=form.cleaned_data["name"], actor=request.user
            )
        except DomainError as exc:
            domain_error_to_form(form, exc)
        else:
            # The site agent's secret is rendered in this one answer only.
            created = {"site": site, "raw": raw}
            form = SiteCreateForm(organizations=organizations)
    return render(
        request, "portal/sites.html",
        {"sites": _owner_sites(request.user), "form": form, "created": created,
         "organizations": organizations, "hub_url": request.build_absolute_uri("/").rstrip("/")},
    )  # fmt: skip


@owner_required
def sites_status(request):
    """The sites table alone, for htmx polling of heartbeats."""
    return render(request, "portal/_sites_table.html", {"sites": _owner_sites(request.user)})


@owner_required
def site_detail(request, site_id: int):
    site = access_site_by_id(request.user, site_id)
    return render(request, "portal/site_detail.html", {"site": site, "shards": shards_of_site(site=site)})


# --- approvals -------------------------------------------------------------------------------


@require_POST
@owner_required
def access_decide(request, task_id: int, vendor_id: int, decision: str):
    task = access_task_for_owner(request.user, task_id)
    try:
        event = task_access_decide(task=task, vendor_id=vendor_id, approve=decision == "approve", actor=request.user,
                                   note=request.POST.get("note", ""))  # fmt: skip
    except DomainError as exc:
        if exc.status_code == 404:
            raise
        messages.error(request, exc.message)
    else:
        messages.success(request, f"{event.vendor.name}: access {event.kind} for {task.title}.")
    return redirect("portal:approvals")


@require_POST
@owner_required
def job_decision(request, job_id: int, decision: str):
    job = access_job_for_owner(request.user, job_id)
    try:
        job = job_review(job=job, approve=decision == "approve", actor=request.user, reason=request.POST.get("reason", ""))
    except DomainError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Job {job.id} {'approved' if decision == 'approve' else 'rejected'}.")
    return redirect_back(request, "portal:approvals")


@require_POST
@owner_required
def result_release(request, job_id: int, decision: str):
    """Releases (or withholds) a result a site holds; the site acts at its next poll. The values
    never come through the hub until released."""
    job = access_job_for_owner(request.user, job_id)
    try:
        job = job_release_decide(job=job, approve=decision == "release", actor=request.user)
    except DomainError as exc:
        messages.error(request, exc.message)
    else:
        done = "released; the site sends it at its next poll" if decision == "release" else "withheld"
        messages.success(request, f"Result of job {job.id} {done}.")
    return redirect_back(request, "portal:approvals")


# --- egress ledger ---------------------------------------------------------------------------


def _ledger(request):
    records = egress_records_visible_to(user=request.user)
    vendor_ids = records.values_list("vendor_id", flat=True).distinct()
    form = LedgerFilterForm(
        request.GET or None,
        sites=_owner_sites(request.user),
        tasks=task_list_owned_by(user=request.user).order_by("title"),
        vendors=Organization.objects.filter(id__in=vendor_ids).order_by("name"),
    )
    if form.is_bound and not form.is_valid():
        return form, records.none()  # a site, task or vendor that is not the owner's matches nothing
    return form, EgressFilter(form.filter_params(), queryset=records).qs


@owner_required
def ledger(request):
    form, records = _ledger(request)
    page = Paginator(records.order_by("-id"), 50).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    return render(
        request, "portal/ledger.html",
        {"form": form, "page": page, "query": query.urlencode(), "accountant": ACCOUNTANT,
         **_leakage_context(request, form)},
    )  # fmt: skip


def _leakage_context(request, form) -> dict:
    """Per-vendor privacy loss on the task chosen in the filter (all its sites, all time): the
    rhos of its releases composed (summed) per site and split, converted once to epsilon at the
    task's delta. Sites hold disjoint rows, so a vendor's guarantee is that of its worst site."""
    task_id = form.cleaned_data.get("task") if form.is_bound and form.is_valid() else None
    if task_id is None:
        return {"leakage_task": None, "leakage": []}
    task = access_task_for_owner(request.user, task_id)
    per_site = (
        EgressRecord.objects.filter(task=task, kind__in=[EgressKind.METRICS, EgressKind.REVEAL])
        .values("vendor_id", "vendor__name", "site_id", "kind")
        .annotate(releases=Count("id"), bytes=Sum("bytes"), rho=Sum("rho"))
    )
    vendors: dict[int, dict] = {}
    for row in per_site:
        vendor = vendors.setdefault(
            row["vendor_id"],
            {"vendor_id": row["vendor_id"], "vendor__name": row["vendor__name"], "releases": 0, "bytes": 0,
             "rho": {EgressKind.METRICS: 0.0, EgressKind.REVEAL: 0.0}},
        )  # fmt: skip
        vendor["releases"] += row["releases"]
        vendor["bytes"] += row["bytes"] or 0
        vendor["rho"][row["kind"]] = max(vendor["rho"][row["kind"]], row["rho"] or 0.0)
    rows = []
    for vendor in sorted(vendors.values(), key=lambda v: v["vendor__name"]):
        public, private = vendor.pop("rho").values()
        rows.append({
            **vendor,
            "epsilon_public": epsilon_for_rho(public, task.dp_delta),
            "epsilon_private": epsilon_for_rho(private, task.dp_delta),
        })  # fmt: skip
    return {"leakage_task": task, "leakage": rows}


@owner_required
def ledger_csv(request):
    _, records = _ledger(request)
    return egress_csv_response(records.order_by("id"))
