from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from marketplace.catalog.access import access_task_for_leaderboard
from marketplace.leaderboard.selectors import leaderboard_rows


class LeaderboardRowOutput(serializers.Serializer):
    rank = serializers.IntegerField()
    submission_id = serializers.IntegerField()
    vendor = serializers.CharField()
    model_name = serializers.CharField()
    artifact_format = serializers.CharField()
    model_size = serializers.IntegerField()
    is_baseline = serializers.BooleanField()
    submitted_at = serializers.DateTimeField()
    metrics = serializers.DictField(child=serializers.FloatField())
    per_site = serializers.ListField(child=serializers.DictField(), allow_null=True)
    n_rows = serializers.IntegerField()
    n_sites = serializers.IntegerField()


class LeaderboardOutput(serializers.Serializer):
    task_id = serializers.IntegerField()
    primary_metric = serializers.CharField()
    sort = serializers.CharField()
    rows = LeaderboardRowOutput(many=True)


class LeaderboardApi(APIView):
    """Public for public tasks; for invite-only tasks, the owner and approved vendors."""

    @extend_schema(
        parameters=[OpenApiParameter("sort", str, description="Metric to rank by (default: primary)")],
        responses=LeaderboardOutput,
        tags=["leaderboard"],
    )
    def get(self, request, task_id: int):
        task = access_task_for_leaderboard(request.user, task_id)
        sort = request.query_params.get("sort") or task.primary_metric
        if sort not in {m["name"] for m in task.metrics}:
            sort = task.primary_metric
        rows = leaderboard_rows(task=task, sort_by=sort)
        return Response(
            LeaderboardOutput({"task_id": task.id, "primary_metric": task.primary_metric, "sort": sort, "rows": rows}).data
        )
