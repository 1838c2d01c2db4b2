"""Pages anyone may see: the task list and a task with its leaderboard."""

import csv
import hashlib
from types import SimpleNamespace
from urllib.parse import urlencode

from django.core.cache import cache
from django.core.paginator import Paginator
from django.http import Http404, HttpResponse, HttpResponseNotModified, JsonResponse
from django.shortcuts import render
from django.template.loader import render_to_string
from django.utils import timezone
from django.utils.safestring import mark_safe

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
from marketplace.leaderboard.models import Audience
from marketplace.leaderboard.selectors import (
    ALL,
    BEST,
    PRIVATE,
    TIE_RULE,
    VIEWS,
    leaderboard_best_over_time,
    leaderboard_row,
    leaderboard_rows,
)
from marketplace.leaderboard.standings import (
    RankedPage,
    audience_of,
    board_etag,
    board_tag,
    standing_of,
    visitor_standing,
)
from marketplace.portal.charts import best_score_chart
from marketplace.portal.onboarding import fine_tuning_policy, per_format, sample_name
from marketplace.portal.views._common import funnelled
from marketplace.submissions.selectors import quota_usage, rules_accepted
from marketplace.submissions.visibility import privacy_budget_of


def home(request):
    tasks = TaskFilter(
        request.GET, queryset=task_list_visible_to(user=request.user).order_by("-created_at", "-id")
    )
    page = Paginator(tasks.qs, 25).get_page(request.GET.get("page"))
    return render(request, "portal/home.html", {"filter": tasks, "page": page})


LEADERBOARD_PAGE = 50


def _board_params(request, task) -> dict:
    """sort, view, q, page of a leaderboard request; unknown values fall back to the defaults."""
    names = [m["name"] for m in task.metrics]
    sort = request.GET.get("sort")
    view = request.GET.get("view")
    return {
        "sort": sort if sort in names else task.primary_metric,
        "view": view if view in VIEWS else BEST,
        "q": (request.GET.get("q") or "").strip()[:100],
        "page": request.GET.get("page") or 1,
        "primary": task.primary_metric,
    }


def _query(params: dict, **changes) -> str:
    """The board's query string with `changes`, defaults left out (short, stable links)."""
    merged = {**params, **changes}
    defaults = {"sort": params.get("primary"), "view": BEST, "q": "", "page": 1}
    kept = {k: v for k, v in merged.items()
            if k in defaults and v is not None and str(v) != str(defaults[k])}  # fmt: skip
    return urlencode(kept)


def _leaderboard_context(request, task) -> dict:
    """What _leaderboard.html needs: for a visible board, one page of the stored ranks
    (leaderboard.standings) and the chart; `board_html` is the fragment rendered, cached per
    board version, audience and query (a page of an unchanged board is not rebuilt)."""
    metrics = task.metric_specs
    params = _board_params(request, task)
    sort = params["sort"]
    context = {"task": task, "metrics": metrics, "sort": sort, "rows": None, "chart": None, "board": params,
               "tie_rule": TIE_RULE}  # fmt: skip
    if not leaderboard_visible(task=task, user=request.user):
        context["board_html"] = render_to_string("portal/_leaderboard.html", context, request)
        return context
    audience = audience_of(task=task, user=request.user)
    standing = standing_of(task=task, audience=audience)
    context["version"] = board_etag(standing, task)
    key = f"leaderboard:fragment:{task.id}:{audience}:{context['version']}:{_query(params)}"
    cached = cache.get(key)
    if cached is None:
        ranked = RankedPage(task=task, row=standing, view=params["view"], metric=sort, search=params["q"])
        page = Paginator(ranked, LEADERBOARD_PAGE).get_page(params["page"])
        per_site = audience == Audience.OWNER or task.show_per_site
        context["page"] = page
        context["rows"] = [leaderboard_row(entry, task=task, show_per_site=per_site) for entry in page.object_list]
        context["show_per_site"] = any(row["per_site"] is not None for row in context["rows"])
        decimals = next(m["decimals"] for m in metrics if m["name"] == sort)
        entries = list(standing.entries.values()) if hasattr(standing, "entries") else None
        if entries is not None and audience == Audience.PUBLIC:
            now = timezone.now()
            entries = [e for e in entries if e["results_visible_at"] is not None and e["results_visible_at"] <= now]
        context["chart"] = best_score_chart(
            leaderboard_best_over_time(task=task, user=request.user, metric=sort, entries=entries),
            decimals=decimals, metric=sort,
        )
        context["chart_metric"] = next(m for m in metrics if m["name"] == sort)
        context["query"] = _query(params, page=None)
        context["query_without_sort"] = _query(params, page=None, sort=None)
        context["query_without_view"] = _query(params, page=None, view=None)
        context["poll_query"] = _query(params)
        cached = render_to_string("portal/_leaderboard.html", context, request)
        cache.set(key, cached)
    context["rows"] = context["rows"] or []  # visible (the final board's condition reads it)
    context["board_html"] = mark_safe(cached)  # noqa: S308 (our own template's output, escaped when rendered)
    return context


@funnelled
def task_detail(request, task_id: int):
    task = access_task_by_id(request.user, task_id)
    context = _leaderboard_context(request, task)
    context["is_owner"] = task_is_owned_by(task=task, user=request.user)
    # The private (final) board exists only once the task has closed, and only with a private split.
    context["final_rows"] = (
        leaderboard_rows(task=task, user=request.user, sort_by=context["sort"], split=PRIVATE, view=ALL)
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
            "rules_accepted": rules_accepted(task=task, vendor_id=vendor.id),
        }
        for vendor in vendors
    ]
    context["formats"] = per_format(task)
    context["sample_name"] = sample_name(task)
    context["fine_tuning"] = fine_tuning_policy(task)
    context["privacy"] = privacy_budget_of(task=task, vendor_id=None)
    return render(request, "portal/task_detail.html", context)


def _poll_etag(version: str, request, task) -> str:
    """The partial's ETag: the board's version and the query (`task`: its metrics and primary metric)."""
    return f'"{version}-{hashlib.sha256(_query(_board_params(request, task)).encode()).hexdigest()[:12]}"'


@funnelled
def task_leaderboard(request, task_id: int):
    """The leaderboard and chart alone, for htmx polling on the task page. Sends only what changed:
    a poll carrying the version it shows (?since=) answers 204 (htmx keeps the page) while the
    board is the same, and any client gets an ETag (If-None-Match: 304). A visitor's poll of a
    fresh, unchanged board is answered from one query (leaderboard.standings.visitor_standing)."""
    if not request.user.is_authenticated and "since" in request.GET:
        standing = visitor_standing(task_id=task_id)
        if standing is not None and standing.fresh:
            version = board_tag(standing, task_updated_at=standing.task_updated_at)
            if request.GET["since"] == version:
                board = SimpleNamespace(metrics=standing.task_metrics, primary_metric=standing.task_primary_metric)
                return HttpResponse(status=204, headers={"ETag": _poll_etag(version, request, board)})
    task = access_task_by_id(request.user, task_id)
    if not leaderboard_visible(task=task, user=request.user):
        return HttpResponse(_leaderboard_context(request, task)["board_html"])
    standing = standing_of(task=task, audience=audience_of(task=task, user=request.user))
    version = board_etag(standing, task)
    etag = _poll_etag(version, request, task)
    if request.GET.get("since") == version:
        return HttpResponse(status=204, headers={"ETag": etag})
    if etag in {t.strip().removeprefix("W/") for t in request.headers.get("If-None-Match", "").split(",")}:
        return HttpResponseNotModified(headers={"ETag": etag})
    response = HttpResponse(_leaderboard_context(request, task)["board_html"])
    response["ETag"] = etag
    response["Cache-Control"] = "private, no-cache"
    return response


@funnelled
def task_leaderboard_download(request, task_id: int, fmt: str):
    """The whole board as the person sees it (its view, sort and search), as CSV or JSON."""
    task = access_task_by_id(request.user, task_id)
    if not leaderboard_visible(task=task, user=request.user):
        raise Http404("No leaderboard to download.")
    params = _board_params(request, task)
    rows = leaderboard_rows(task=task, user=request.user, sort_by=params["sort"], view=params["view"], search=params["q"])
    names = [m["name"] for m in task.metrics]
    filename = f"task-{task.id}-leaderboard-{params['view']}"
    if fmt == "json":
        body = {"task_id": task.id, "title": task.title, "sort": params["sort"], "view": params["view"],
                "search": params["q"], "tie_rule": TIE_RULE, "count": len(rows), "results": rows}  # fmt: skip
        response = JsonResponse(body, json_dumps_params={"indent": 1})
        response["Content-Disposition"] = f'attachment; filename="{filename}.json"'
        return response
    response = HttpResponse(content_type="text/csv")
    response["Content-Disposition"] = f'attachment; filename="{filename}.csv"'
    writer = csv.writer(response)
    writer.writerow(["rank", "vendor", "model_name", "submission_id", "artifact_format", "is_baseline",
                     "is_fine_tuned", "submitted_at", "n_rows", "n_sites", *names])  # fmt: skip
    for row in rows:
        writer.writerow([row["rank"], _cell(row["vendor"]), _cell(row["model_name"]), row["submission_id"],
                         row["artifact_format"], row["is_baseline"], row["is_fine_tuned"],
                         row["submitted_at"].isoformat(), row["n_rows"], row["n_sites"],
                         *((row["metrics"] or {}).get(n, "") for n in names)])  # fmt: skip
    return response


def _cell(text: str) -> str:
    """A vendor-chosen name never starts a spreadsheet formula (CSV injection)."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def scoring(request):
    """How scores are computed (pooling, noise, ties): linked from every leaderboard."""
    return render(request, "portal/scoring.html")
