"""Pages anyone may see: the task list and a task with its leaderboard."""

from django.core.paginator import Paginator
from django.shortcuts import render

from marketplace.accounts.models import OrganizationKind
from marketplace.accounts.selectors import organizations_of
from marketplace.catalog.access import access_task_by_id
from marketplace.catalog.filters import TaskFilter
from marketplace.catalog.models import LeaderboardMode, TaskStatus
from marketplace.catalog.selectors import (
    access_state,
    leaderboard_visible,
    task_is_owned_by,
    task_list_visible_to,
    vendor_may_submit,
)
from marketplace.egress.selectors import leakage_by_vendor
from marketplace.leaderboard.selectors import (
    PRIVATE,
    ladder_improved_of,
    leaderboard_best_over_time,
    leaderboard_rows,
)
from marketplace.portal.charts import best_score_chart
from marketplace.portal.views._common import funnelled
from marketplace.submissions.selectors import quota_usage


def home(request):
    tasks = TaskFilter(
        request.GET, queryset=task_list_visible_to(user=request.user).order_by("-created_at", "-id")
    )
    page = Paginator(tasks.qs, 25).get_page(request.GET.get("page"))
    return render(request, "portal/home.html", {"filter": tasks, "page": page})


def _leaderboard_context(request, task) -> dict:
    metrics = task.metric_specs
    names = [m["name"] for m in metrics]
    sort = request.GET.get("sort")
    sort = sort if sort in names else task.primary_metric
    visible = leaderboard_visible(task=task, user=request.user)
    context = {"task": task, "metrics": metrics, "sort": sort, "rows": None, "chart": None}
    if visible:
        context["rows"] = leaderboard_rows(task=task, sort_by=sort)
        if task.leaderboard_mode == LeaderboardMode.LADDER:
            # Whether a submission moved its vendor's best is part of the Ladder's released transcript.
            improved = ladder_improved_of(submission_ids=[row["submission_id"] for row in context["rows"]])
            context["rows"] = [
                {**row, "no_improvement": improved.get(row["submission_id"]) is False}
                for row in context["rows"]
            ]
        decimals = next(m["decimals"] for m in metrics if m["name"] == sort)
        context["chart"] = best_score_chart(
            leaderboard_best_over_time(task=task, metric=sort), decimals=decimals
        )
        context["chart_metric"] = next(m for m in metrics if m["name"] == sort)
    return context


@funnelled
def task_detail(request, task_id: int):
    task = access_task_by_id(request.user, task_id)
    context = _leaderboard_context(request, task)
    context["is_owner"] = task_is_owned_by(task=task, user=request.user)
    # The private (final) board exists only once the task has closed, and only with a private split.
    context["final_rows"] = (
        leaderboard_rows(task=task, sort_by=context["sort"], split=PRIVATE)
        if context["rows"] is not None and task.status == TaskStatus.CLOSED and task.public_split_fraction < 1
        else None
    )
    vendors = list(organizations_of(user=request.user).filter(kind=OrganizationKind.VENDOR))
    context["vendor_states"] = [
        {
            "vendor": vendor,
            "access": access_state(task=task, vendor=vendor),
            "may_submit": vendor_may_submit(task=task, vendor=vendor),
            "quota": quota_usage(task=task, vendor_id=vendor.id),
            "leakage": _leakage_of(task, vendor),
        }
        for vendor in vendors
    ]
    return render(request, "portal/task_detail.html", context)


def _leakage_of(task, vendor) -> dict:
    """What this vendor has learned from the task so far, as the owner's ledger counts it."""
    rows = leakage_by_vendor(task_id=task.id, vendor_ids=[vendor.id])
    row = rows[0] if rows else {"releases": 0, "cost_bits": None, "epsilon": None}
    return {**row, "cap_bits": task.leakage_cap_bits}


@funnelled
def task_leaderboard(request, task_id: int):
    """The leaderboard and chart alone, for htmx polling on the task page."""
    task = access_task_by_id(request.user, task_id)
    return render(request, "portal/_leaderboard.html", _leaderboard_context(request, task))
