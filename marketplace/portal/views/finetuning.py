"""Federated fine-tuning pages: the vendor asks for and follows a run; the task's owner approves
it and follows it with the privacy accounting. Every object comes through the fine-tuning app's
funnels and every write through its services, exactly as for /api/v1/finetuning-runs."""

from django.contrib import messages
from django.db.models import Count
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from marketplace.accounts.models import OrganizationKind
from marketplace.accounts.selectors import organizations_of
from marketplace.core.errors import DomainError
from marketplace.finetuning.access import (
    access_run_for_owner,
    access_run_for_vendor,
    access_submission_for_finetuning,
)
from marketplace.finetuning.models import ACTIVE_STATUSES, RoundStatus, RunStatus
from marketplace.finetuning.selectors import run_list_visible_to, run_participants, run_rounds
from marketplace.finetuning.services import run_approve, run_reject, run_request, run_stop
from marketplace.portal.charts import round_curves_chart
from marketplace.portal.forms import FineTuneForm
from marketplace.portal.views._common import domain_error_to_form, owner_required, vendor_required
from marketplace.submissions.visibility import check_nominable, submission_view_for

WEIGHTED = "All sites (weighted)"


def _org_ids(user, kind: str) -> list[int]:
    return list(organizations_of(user=user).filter(kind=kind).values_list("id", flat=True))


def runs_of_vendor_user(user):
    return run_list_visible_to(user=user).filter(vendor_id__in=_org_ids(user, OrganizationKind.VENDOR))


def runs_of_owner_user(user):
    return run_list_visible_to(user=user).filter(
        task__organization_id__in=_org_ids(user, OrganizationKind.DATA_OWNER)
    )


def runs_awaiting_approval_for(user):
    return (
        runs_of_owner_user(user)
        .filter(status=RunStatus.REQUESTED)
        .annotate(n_data_sites=Count("task__shards", distinct=True))
    )


# --- what a run page shows -------------------------------------------------------------------


def _validation_metric(records) -> str | None:
    """Accuracy when the sites report it (classification), else the first validation metric."""
    names = [name for r in records for name in r.validation]
    return "accuracy" if "accuracy" in names else (sorted(names)[0] if names else None)


def _curves(records, sites: list[str], *, per_site: bool) -> dict:
    metric = _validation_metric(records)

    def series(weighted, of_site):
        out = [{"label": WEIGHTED, "values": [(r.round + 1, weighted(r)) for r in records]}]
        if per_site:
            for site in sites:
                by_round = {
                    r.round + 1: next((e for e in r.per_site if e.get("site") == site), None) for r in records
                }
                out.append(
                    {"label": site, "values": [(n, of_site(e) if e else None) for n, e in by_round.items()]}
                )
        return out

    return {
        "loss_chart": round_curves_chart(
            series(lambda r: r.train_loss, lambda e: e.get("train_loss")), decimals=4
        ),
        "validation_metric": metric,
        "validation_chart": round_curves_chart(
            series(lambda r: r.validation.get(metric), lambda e: (e.get("validation") or {}).get(metric)),
            decimals=4,
        )
        if metric
        else None,
    }


def _run_context(run, *, as_owner: bool) -> dict:
    """The live part of a run page. Per-site curves: always for the owner, for the vendor only
    when the task shows per-site breakdowns (as the API's ``per_site``)."""
    records = list(run_rounds(run=run))
    aggregated = [r for r in records if r.status == RoundStatus.AGGREGATED]
    per_site = as_owner or run.task.show_per_site
    participants = list(run_participants(run=run)) if as_owner else []
    sites = sorted({e.get("site") for r in records for e in r.per_site if e.get("site")})
    if as_owner:
        sites = [p.site.name for p in participants] + [
            s for s in sites if s not in {p.site.name for p in participants}
        ]
    epsilon_rows = [
        {
            "record": r,
            "sites": [
                next((e.get("epsilon") for e in r.per_site if e.get("site") == s), None) for s in sites
            ],
        }
        for r in records
    ]
    cap, spent = run.epsilon_cap, run.epsilon_spent
    return {
        "run": run,
        "as_owner": as_owner,
        "live": run.status in ACTIVE_STATUSES,
        "records": records,
        "per_site": per_site,
        "sites": sites,
        "participants": participants,
        "epsilon_rows": epsilon_rows,
        "epsilon_share": min(100.0, 100.0 * (spent or 0.0) / cap) if cap else None,
        "progress": min(100, round(100 * run.rounds_completed / run.rounds)) if run.rounds else 0,
        **_curves(aggregated, sites, per_site=per_site),
    }


# --- vendors ---------------------------------------------------------------------------------


@vendor_required
def finetune_new(request, submission_id: int):
    parent = access_submission_for_finetuning(request.user, submission_id)
    form = FineTuneForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            check_nominable(submission_view_for(user=request.user, submission=parent), action="fine-tuned")
            run = run_request(parent=parent, actor=request.user, **form.run_values())
        except DomainError as exc:
            domain_error_to_form(form, exc)
        else:
            messages.success(
                request, f"Fine-tuning run {run.id} requested; the task's owner decides whether it runs."
            )
            return redirect("portal:run", run_id=run.id)
    return render(
        request,
        "portal/finetune_new.html",
        {"parent": parent, "task": parent.task, "form": form},
        status=400 if form.errors else 200,
    )


@vendor_required
def runs(request):
    return render(
        request, "portal/runs.html", {"runs": runs_of_vendor_user(request.user)[:100], "as_owner": False}
    )


@vendor_required
def run_detail(request, run_id: int):
    run = access_run_for_vendor(request.user, run_id)
    return render(request, "portal/run.html", _run_context(run, as_owner=False))


@vendor_required
def run_status(request, run_id: int):
    """The live part of the run page, polled by htmx while the run is requested or running."""
    run = access_run_for_vendor(request.user, run_id)
    return render(request, "portal/_run_live.html", _run_context(run, as_owner=False))


def _stop(request, run) -> None:
    try:
        run_stop(run=run, actor=request.user)
    except DomainError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Run {run.id} stopped; no fine-tuned model is made.")


@require_POST
@vendor_required
def run_stop_vendor(request, run_id: int):
    run = access_run_for_vendor(request.user, run_id)
    _stop(request, run)
    return redirect("portal:run", run_id=run.id)


# --- data owners -----------------------------------------------------------------------------


@owner_required
def owner_runs(request):
    return render(
        request, "portal/runs.html", {"runs": runs_of_owner_user(request.user)[:100], "as_owner": True}
    )


@owner_required
def owner_run_detail(request, run_id: int):
    run = access_run_for_owner(request.user, run_id)
    return render(request, "portal/run.html", _run_context(run, as_owner=True))


@owner_required
def owner_run_status(request, run_id: int):
    run = access_run_for_owner(request.user, run_id)
    return render(request, "portal/_run_live.html", _run_context(run, as_owner=True))


@require_POST
@owner_required
def run_stop_owner(request, run_id: int):
    run = access_run_for_owner(request.user, run_id)
    _stop(request, run)
    return redirect("portal:manage-run", run_id=run.id)


@require_POST
@owner_required
def run_decision(request, run_id: int, decision: str):
    """Approving starts the run with the task's privacy policy as it is now (copied into the run).
    ``validation_holdout=off`` in the form: every train row trains (default: 20 % held out)."""
    run = access_run_for_owner(request.user, run_id)
    try:
        if decision == "approve":
            holdout = request.POST.get("validation_holdout", "on") != "off"
            run_approve(run=run, actor=request.user, validation_holdout=holdout)
        else:
            run_reject(run=run, actor=request.user)
    except DomainError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(
            request, f"Fine-tuning run {run.id} {'approved' if decision == 'approve' else 'rejected'}."
        )
    return redirect("portal:approvals")
