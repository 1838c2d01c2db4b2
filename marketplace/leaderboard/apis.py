import hashlib

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from marketplace.catalog.access import access_task_for_leaderboard
from marketplace.catalog.models import TaskStatus
from marketplace.core.errors import Conflict, DomainError
from marketplace.core.pagination import StandardPagination
from marketplace.leaderboard.selectors import (
    BEST,
    PRIVATE,
    PUBLIC,
    TIE_RULE,
    VIEWS,
    leaderboard_ranked,
    leaderboard_row,
    leaderboard_version,
    shows_per_site,
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


class LeaderboardApi(APIView):
    """Public for public tasks; for invite-only tasks, the owner and approved vendors. An entry
    appears to anyone but the owner at its release time (Submission.results_visible_at).

    Answers carry an ETag: poll with If-None-Match and an unchanged board answers 304 with no
    body (nothing is ranked or sent)."""

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
        etag = _etag(leaderboard_version(task=task, user=request.user), request)
        if _matches(request.headers.get("If-None-Match", ""), etag):
            return Response(status=304, headers={"ETag": etag, "Cache-Control": "no-cache"})
        ranked = leaderboard_ranked(task=task, user=request.user, sort_by=sort, split=split,
                                    view=values["view"], search=values["search"])  # fmt: skip
        paginator = StandardPagination()
        page = paginator.paginate_queryset(ranked, request, view=self)
        per_site = shows_per_site(task=task, user=request.user)
        rows = [leaderboard_row(entry, task=task, show_per_site=per_site, split=split) for entry in page]
        body = paginator.get_paginated_response(LeaderboardRowOutput(rows, many=True).data).data
        body.update(
            {"task_id": task.id, "primary_metric": task.primary_metric, "sort": sort, "split": split,
             "view": values["view"], "search": values["search"], "leaderboard_mode": task.leaderboard_mode,
             "tie_rule": TIE_RULE}
        )  # fmt: skip
        return Response(body, headers={"ETag": etag, "Cache-Control": "no-cache"})

