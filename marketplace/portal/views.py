"""Server-rendered pages; they go through the same selectors and funnels as the API."""

from django.core.paginator import Paginator
from django.http import Http404
from django.shortcuts import render

from marketplace.catalog.access import access_task_by_id
from marketplace.catalog.filters import TaskFilter
from marketplace.catalog.selectors import leaderboard_visible, task_list_visible_to
from marketplace.core.errors import NotFound
from marketplace.leaderboard.selectors import leaderboard_rows


def home(request):
    tasks = TaskFilter(request.GET, queryset=task_list_visible_to(user=request.user).order_by("-created_at"))
    page = Paginator(tasks.qs, 25).get_page(request.GET.get("page"))
    return render(request, "portal/home.html", {"filter": tasks, "page": page})


def task_detail(request, task_id: int):
    try:
        task = access_task_by_id(request.user, task_id)
    except NotFound as exc:
        raise Http404(str(exc)) from exc
    sort = request.GET.get("sort")
    rows = leaderboard_rows(task=task, sort_by=sort) if leaderboard_visible(task=task, user=request.user) else None
    return render(
        request,
        "portal/task_detail.html",
        {"task": task, "rows": rows, "sort": sort if sort in {m["name"] for m in task.metrics} else task.primary_metric},
    )
