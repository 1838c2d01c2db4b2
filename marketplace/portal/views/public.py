"""Pages anyone may see: the task list and a task with its leaderboard."""

from django.core.paginator import Paginator
from django.shortcuts import render

from marketplace.accounts.models import OrganizationKind
from marketplace.accounts.selectors import organizations_of
from marketplace.catalog.access import access_task_by_id
from marketplace.catalog.filters import TaskFilter
from marketplace.catalog.models import TaskStatus
from marketplace.catalog.selectors import (
    access_state,
    leaderboard_visible,
    task_is_owned_by,
    task_list_visible_to,
    vendor_may_submit,
)
from marketplace.leaderboard.selectors import PRIVATE, leaderboard_best_over_time, leaderboard_rows
from marketplace.portal.charts import best_score_chart
from marketplace.portal.views._common import funnelled
from marketplace.submissions.selectors import quota_usage
from marketplace.submissions.visibility import privacy_budget_of


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
        context["rows"] = leaderboard_rows(task=task, user=request.user, sort_by=sort)
        context["show_per_site"] = any(row["per_site"] is not None for row in context["rows"])
        decimals = next(m["decimals"] for m in metrics if m["name"] == sort)
        context["chart"] = best_score_chart(
            leaderboard_best_over_time(task=task, user=request.user, metric=sort), decimals=decimals
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
        leaderboard_rows(task=task, user=request.user, sort_by=context["sort"], split=PRIVATE)
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
            "privacy": privacy_budget_of(task=task, vendor_id=vendor.id),
        }
        for vendor in vendors
    ]
    context["privacy"] = privacy_budget_of(task=task, vendor_id=None)
    return render(request, "portal/task_detail.html", context)


@funnelled
def task_leaderboard(request, task_id: int):
    """The leaderboard and chart alone, for htmx polling on the task page."""
    task = access_task_by_id(request.user, task_id)
    return render(request, "portal/_leaderboard.html", _leaderboard_context(request, task))


def scoring(request):
    """How scores are computed (pooling, noise, ties): linked from every leaderboard."""
    return render(request, "portal/scoring.html")
