from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from marketplace.catalog.access import access_task_for_leaderboard
from marketplace.catalog.models import TaskStatus
from marketplace.core.errors import Conflict, DomainError
from marketplace.leaderboard.selectors import PRIVATE, PUBLIC, leaderboard_rows


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
    task_id = serializers.IntegerField()
    primary_metric = serializers.CharField()
    sort = serializers.CharField()
    split = serializers.ChoiceField(choices=[PUBLIC, PRIVATE])
    leaderboard_mode = serializers.CharField()
    rows = LeaderboardRowOutput(many=True)


class LeaderboardApi(APIView):
    """Public for public tasks; for invite-only tasks, the owner and approved vendors. An entry
    appears to anyone but the owner at its release time (Submission.results_visible_at)."""

    @extend_schema(
        parameters=[
            OpenApiParameter("sort", str, description="Metric to rank by (default: primary)"),
            OpenApiParameter("split", str, enum=[PUBLIC, PRIVATE], description="private: only once the task has closed"),
        ],
        responses=LeaderboardOutput,
        tags=["leaderboard"],
    )
    def get(self, request, task_id: int):
        task = access_task_for_leaderboard(request.user, task_id)
        sort = request.query_params.get("sort") or task.primary_metric
        if sort not in {m["name"] for m in task.metrics}:
            sort = task.primary_metric
        split = request.query_params.get("split", PUBLIC)
        if split not in (PUBLIC, PRIVATE):
            raise DomainError("split must be public or private.", code="invalid_split")
        if split == PRIVATE and task.status != TaskStatus.CLOSED:
            raise Conflict("The private leaderboard is revealed when the task closes.", code="task_not_closed")
        rows = leaderboard_rows(task=task, user=request.user, sort_by=sort, split=split)
        return Response(
            LeaderboardOutput(
                {"task_id": task.id, "primary_metric": task.primary_metric, "sort": sort, "split": split,
                 "leaderboard_mode": task.leaderboard_mode, "rows": rows}
            ).data
        )  # fmt: skip
