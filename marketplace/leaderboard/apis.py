import hashlib

from django.core.cache import cache
from django.http import HttpResponse
from django.utils.http import http_date, parse_http_date_safe
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from marketplace.catalog.access import access_task_for_leaderboard
from marketplace.catalog.models import TaskStatus
from marketplace.core.errors import Conflict, DomainError
from marketplace.core.pagination import StandardPagination
from marketplace.core.parsers import INT64_MAX
from marketplace.leaderboard.models import Audience
from marketplace.leaderboard.selectors import (
    BEST,
    PRIVATE,
    PUBLIC,
    TIE_RULE,
    VIEWS,
    leaderboard_entries,
    leaderboard_ranked,
    leaderboard_row,
)
from marketplace.leaderboard.standings import (
    RankedPage,
    audience_of,
    board_etag,
    board_tag,
    standing_of,
    visitor_standing,
)


class LeaderboardRowOutput(serializers.Serializer):
    rank = serializers.IntegerField()
    submission_id = serializers.IntegerField()
    vendor = serializers.CharField()
    model_name = serializers.CharField()
    artifact_format = serializers.CharField()
    model_size = serializers.IntegerField()
    is_baseline = serializers.BooleanField()
    is_final = serializers.BooleanField()
    is_fine_tuned = serializers.BooleanField()
    parent_submission_id = serializers.IntegerField(allow_null=True)
    parent_model_name = serializers.CharField(allow_null=True)
    submitted_at = serializers.DateTimeField()
    metrics = serializers.DictField(child=serializers.FloatField())
    per_site = serializers.ListField(
        child=serializers.DictField(), allow_null=True, help_text="The owner only, unless the task shows per-site values"
    )
    n_rows = serializers.IntegerField()
    n_sites = serializers.IntegerField()


class LeaderboardOutput(serializers.Serializer):
    """One page of the board (StandardPagination: count, next, previous, results) and the
    task-level fields."""

    count = serializers.IntegerField(help_text="Rows on the board (after view and search)")
    next = serializers.URLField(allow_null=True)
    previous = serializers.URLField(allow_null=True)
    results = LeaderboardRowOutput(many=True)
    task_id = serializers.IntegerField()
    primary_metric = serializers.CharField()
    sort = serializers.CharField()
    split = serializers.ChoiceField(choices=[PUBLIC, PRIVATE])
    view = serializers.ChoiceField(choices=list(VIEWS))
    search = serializers.CharField()
    leaderboard_mode = serializers.CharField()
    tie_rule = serializers.CharField()


class LeaderboardQuery(serializers.Serializer):
    sort = serializers.CharField(required=False, allow_blank=True, help_text="Metric to rank by (default: primary)")
    split = serializers.ChoiceField(choices=[PUBLIC, PRIVATE], required=False, default=PUBLIC)
    view = serializers.ChoiceField(choices=list(VIEWS), required=False, default=BEST,
                                   help_text="best: each vendor's best submission; all: every scored submission")  # fmt: skip
    search = serializers.CharField(required=False, allow_blank=True, default="", max_length=100,
                                   help_text="Vendor or model name contains (case-insensitive)")  # fmt: skip


def _etag(version: str, request) -> str:
    query = hashlib.sha256(request.META.get("QUERY_STRING", "").encode()).hexdigest()[:12]
    return f'"{version}-{query}"'


def _matches(if_none_match: str, etag: str) -> bool:
    tags = {t.strip().removeprefix("W/") for t in if_none_match.split(",")}
    return etag in tags or "*" in tags


def _not_modified_since(request, changed_at) -> bool:
    """If-Modified-Since (only without If-None-Match, as RFC 9110 says): the board's last change."""
    since = request.headers.get("If-Modified-Since")
    if not since or "If-None-Match" in request.headers or changed_at is None:
        return False
    parsed = parse_http_date_safe(since)
    return parsed is not None and int(changed_at.timestamp()) <= parsed


def _headers(etag: str, standing) -> dict[str, str]:
    headers = {"ETag": etag, "Cache-Control": "private, no-cache", "Vary": "Cookie, Authorization"}
    if standing.changed_at is not None:
        headers["Last-Modified"] = http_date(standing.changed_at.timestamp())
    return headers


def _cache_key(task_id: int, audience: str, etag: str, request) -> str:
    return f"leaderboard:api:{task_id}:{audience}:{etag}:{request.build_absolute_uri('/')}"


class LeaderboardApi(APIView):
    """Public for public tasks; for invite-only tasks, the owner and approved vendors. An entry
    appears to anyone but the owner at its release time (Submission.results_visible_at).

    The ranks are stored when scores arrive (leaderboard.standings): a page reads its own rows
    only. Answers carry an ETag and Last-Modified from the board's version: poll with
    If-None-Match (or If-Modified-Since) and an unchanged board answers 304 with no body. The JSON
    of a page is cached per board version, audience and query (VAULTBENCH_CACHE_URL)."""

    @extend_schema(
        parameters=[
            LeaderboardQuery,
            OpenApiParameter("page", int, description="Page number (50 rows a page)"),
            OpenApiParameter("page_size", int, description="Rows a page, at most 200"),
        ],
        responses={200: LeaderboardOutput, 304: None},
        tags=["leaderboard"],
    )
    def get(self, request, task_id: int):
        # A visitor's read of a page already answered at this version: one query, no task access
        # funnel, no ranking or rendering; anyone logged in (their audience may be the owner's),
        # a stale board, a page not cached yet or the browsable API take the full path below.
        # (An id past 64 bits takes the full path, whose lookup answers 404: the raw query would overflow.)
        visitor = not request.user.is_authenticated and request.accepted_renderer.format == "json"
        if visitor and 0 < task_id <= INT64_MAX:
            answer = self._visitor_answer(request, task_id)
            if answer is not None:
                return answer
        task = access_task_for_leaderboard(request.user, task_id)
        query = LeaderboardQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        values = query.validated_data
        names = [m["name"] for m in task.metrics]
        sort = values.get("sort") or task.primary_metric
        if sort not in names:
            raise DomainError(f"sort must be one of the task's metrics: {', '.join(names)}.", code="invalid_sort")
        split = values["split"]
        if split == PRIVATE and task.status != TaskStatus.CLOSED:
            raise Conflict("The private leaderboard is revealed when the task closes.", code="task_not_closed")
        audience = audience_of(task=task, user=request.user)
        row = getattr(self, "public_standing", None) if audience == Audience.PUBLIC else None
        standing = standing_of(task=task, audience=audience, row=row)
        etag = _etag(board_etag(standing, task), request)
        headers = _headers(etag, standing)
        if _matches(request.headers.get("If-None-Match", ""), etag) or _not_modified_since(request, standing.changed_at):
            return Response(status=304, headers=headers)
        as_json = getattr(request.accepted_renderer, "format", "json") == "json"
        key = _cache_key(task.id, audience, etag, request)
        body = cache.get(key) if as_json else None
        if body is None:
            data = self._page(request, task=task, audience=audience, standing=standing, sort=sort, split=split,
                              values=values)  # fmt: skip
            if not as_json:  # the browsable API
                return Response(data, headers=headers)
            body = JSONRenderer().render(data)
            cache.set(key, body)
        return HttpResponse(body, content_type="application/json", headers=headers)

    def _visitor_answer(self, request, task_id: int) -> HttpResponse | None:
        """The public audience's cached answer (or 304) for a visitor (not logged in), where visitor_standing finds
        the board fresh and readable by visitors. The cached body proves that this query string
        was valid at this version and settings (its key holds both): 304 or 200 only then, so an
        invalid query still gets its 400 from the full path."""
        standing = visitor_standing(task_id=task_id)
        if standing is None:
            return None
        self.public_standing = standing  # the full path (stale, or a page not cached yet) reuses it
        if not standing.fresh:
            return None
        etag = _etag(board_tag(standing, task_updated_at=standing.task_updated_at), request)
        key = _cache_key(task_id, Audience.PUBLIC, etag, request)
        headers = _headers(etag, standing)
        if _matches(request.headers.get("If-None-Match", ""), etag) or _not_modified_since(request, standing.changed_at):
            response = HttpResponse(status=304, headers=headers) if cache.has_key(key) else None
        else:
            body = cache.get(key)
            response = HttpResponse(body, content_type="application/json", headers=headers) if body else None
        return response

    def _page(self, request, *, task, audience: str, standing, sort: str, split: str, values: dict) -> dict:
        if split == PRIVATE:  # the finals revealed at close: a few rows, ranked as read
            ranked = leaderboard_ranked(task=task, user=request.user, sort_by=sort, split=split,
                                        view=values["view"], search=values["search"],
                                        entries=leaderboard_entries(task=task, user=request.user, split=PRIVATE))  # fmt: skip
        else:
            ranked = RankedPage(task=task, row=standing, view=values["view"], metric=sort, search=values["search"])
        paginator = StandardPagination()
        page = paginator.paginate_queryset(ranked, request, view=self)
        per_site = audience == Audience.OWNER or task.show_per_site
        rows = [leaderboard_row(entry, task=task, show_per_site=per_site, split=split) for entry in page]
        body = paginator.get_paginated_response(LeaderboardRowOutput(rows, many=True).data).data
        body.update(
            {"task_id": task.id, "primary_metric": task.primary_metric, "sort": sort, "split": split,
             "view": values["view"], "search": values["search"], "leaderboard_mode": task.leaderboard_mode,
             "tie_rule": TIE_RULE}
        )  # fmt: skip
        return body
