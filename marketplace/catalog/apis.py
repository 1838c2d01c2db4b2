from django.conf import settings
from django.http import FileResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import generics, serializers, status
from rest_framework.parsers import MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from marketplace.accounts.access import access_acting_organization
from marketplace.accounts.models import OrganizationKind
from marketplace.catalog.access import access_task_by_id, access_task_for_owner
from marketplace.catalog.filters import TaskFilter
from marketplace.catalog.models import AccessEvent, DataShard, LeaderboardMode, Task, TaskType, Visibility
from marketplace.catalog.selectors import access_events_for_task, task_list_visible_to
from marketplace.catalog.services import (
    task_access_decide,
    task_access_request,
    task_close,
    task_close_plan,
    task_create,
    task_open,
    task_sample_set,
    task_update,
)
from marketplace.core.apis import IsPerson
from marketplace.core.errors import NotFound
from marketplace.core.uploads import CappedUploadMixin

MAX_COUNT = 2**31 - 1  # PositiveIntegerField columns: 32 bits on PostgreSQL, the same bound on SQLite

class MetricSpecOutput(serializers.Serializer):
    name = serializers.CharField()
    direction = serializers.ChoiceField(choices=["higher", "lower"])
    decimals = serializers.IntegerField()


class TaskOutput(serializers.ModelSerializer):
    organization = serializers.CharField(source="organization.name")
    metrics = MetricSpecOutput(source="metric_specs", many=True)
    site_count = serializers.IntegerField(read_only=True)
    total_rows = serializers.IntegerField(read_only=True, allow_null=True)
    has_sample = serializers.SerializerMethodField()

    class Meta:
        model = Task
        fields = [
            "id", "slug", "title", "description", "rules", "organization", "task_type", "input_spec", "metrics",
            "primary_metric", "visibility", "status", "opens_at", "closes_at", "quota_per_day", "quota_total",
            "resource_limits", "show_per_site", "min_test_rows", "public_split_fraction", "leaderboard_mode",
            "requires_job_approval", "requires_release_approval", "failed_jobs_consume_quota",
            "dp_epsilon_per_release", "dp_delta", "dp_vendor_epsilon", "dp_task_epsilon", "release_delay_seconds",
            "ladder_threshold",
            "final_submissions", "fine_tuning_allowed", "fl_privacy_unit", "fl_example_clip_norm", "fl_clip_norm",
            "fl_noise_multiplier", "fl_dp_delta",
            "fl_epsilon_cap", "fl_secure_aggregation", "fl_robust_rule", "fl_quantization_bits", "site_count", "total_rows", "has_sample",
            "created_at", "updated_at",
        ]  # fmt: skip

    def get_has_sample(self, task: Task) -> bool:
        return bool(task.sample_file)


class MetricInput(serializers.Serializer):
    name = serializers.CharField()
    decimals = serializers.IntegerField(default=4)


class TaskInput(serializers.Serializer):
    """Parses only; the rules live in catalog/specs.py and catalog/services.py."""

    title = serializers.CharField(max_length=200)
    description = serializers.CharField(required=False, allow_blank=True)
    rules = serializers.CharField(required=False, allow_blank=True, max_length=20000,
                                  help_text="Vendors accept them before their first upload")  # fmt: skip
    task_type = serializers.ChoiceField(choices=TaskType.choices)
    input_spec = serializers.JSONField()
    metrics = MetricInput(many=True)
    primary_metric = serializers.CharField()
    visibility = serializers.ChoiceField(choices=Visibility.choices, required=False)
    opens_at = serializers.DateTimeField(required=False, allow_null=True)
    closes_at = serializers.DateTimeField(required=False, allow_null=True)
    quota_per_day = serializers.IntegerField(required=False, min_value=1, max_value=MAX_COUNT)
    quota_total = serializers.IntegerField(required=False, allow_null=True, min_value=1, max_value=MAX_COUNT)
    resource_limits = serializers.JSONField(required=False)
    show_per_site = serializers.BooleanField(required=False)
    min_test_rows = serializers.IntegerField(required=False, min_value=1, max_value=MAX_COUNT)
    public_split_fraction = serializers.FloatField(required=False)
    leaderboard_mode = serializers.ChoiceField(choices=LeaderboardMode.choices, required=False)
    requires_job_approval = serializers.BooleanField(required=False)
    requires_release_approval = serializers.BooleanField(required=False)
    failed_jobs_consume_quota = serializers.BooleanField(required=False)
    dp_epsilon_per_release = serializers.FloatField(required=False)
    dp_delta = serializers.FloatField(required=False)
    dp_vendor_epsilon = serializers.FloatField(required=False)
    dp_task_epsilon = serializers.FloatField(required=False)
    release_delay_seconds = serializers.IntegerField(required=False, min_value=0, max_value=MAX_COUNT)
    ladder_threshold = serializers.FloatField(required=False)
    final_submissions = serializers.IntegerField(required=False, min_value=1, max_value=20)
    fine_tuning_allowed = serializers.BooleanField(required=False)
    fl_privacy_unit = serializers.ChoiceField(choices=["record", "site", "none"], required=False)
    fl_example_clip_norm = serializers.FloatField(required=False)
    fl_clip_norm = serializers.FloatField(required=False)
    fl_noise_multiplier = serializers.FloatField(required=False, allow_null=True)  # empty: calibrated to the cap
    fl_dp_delta = serializers.FloatField(required=False)
    fl_epsilon_cap = serializers.FloatField(required=False, allow_null=True)
    fl_secure_aggregation = serializers.BooleanField(required=False)
    fl_robust_rule = serializers.ChoiceField(choices=["mean", "median", "trimmed_mean", "norm_bound"], required=False)
    fl_quantization_bits = serializers.IntegerField(required=False, min_value=8, max_value=30)
    organization = serializers.IntegerField(required=False, write_only=True)


class TaskListCreateApi(generics.ListAPIView):
    serializer_class = TaskOutput
    filterset_class = TaskFilter

    def get_queryset(self):
        return task_list_visible_to(user=self.request.user).order_by("-created_at", "-id")

    def get_permissions(self):
        return [IsPerson()] if self.request.method == "POST" else super().get_permissions()

    @extend_schema(request=TaskInput, responses={201: TaskOutput}, tags=["tasks"])
    def post(self, request):
        data = TaskInput(data=request.data)
        data.is_valid(raise_exception=True)
        spec = dict(data.validated_data)
        organization = access_acting_organization(
            request.user, kind=OrganizationKind.DATA_OWNER, organization_id=spec.pop("organization", None)
        )
        task = task_create(organization=organization, actor=request.user, spec=spec)
        return Response(TaskOutput(access_task_by_id(request.user, task.id)).data, status=status.HTTP_201_CREATED)


class TaskDetailApi(APIView):
    @extend_schema(responses=TaskOutput, tags=["tasks"])
    def get(self, request, task_id: int):
        return Response(TaskOutput(access_task_by_id(request.user, task_id)).data)

    @extend_schema(request=TaskInput(partial=True), responses=TaskOutput, tags=["tasks"])
    def patch(self, request, task_id: int):
        task = access_task_for_owner(request.user, task_id)
        data = TaskInput(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        changes = dict(data.validated_data)
        changes.pop("organization", None)
        task_update(task=task, actor=request.user, changes=changes)
        return Response(TaskOutput(access_task_by_id(request.user, task_id)).data)


class TaskOpenApi(APIView):
    permission_classes = [IsPerson]

    @extend_schema(request=None, responses=TaskOutput, tags=["tasks"])
    def post(self, request, task_id: int):
        task_open(task=access_task_for_owner(request.user, task_id), actor=request.user)
        return Response(TaskOutput(access_task_by_id(request.user, task_id)).data)


class TaskCloseInput(serializers.Serializer):
    reveal = serializers.ListField(
        child=serializers.IntegerField(), required=False,
        help_text="The submission ids of the close plan the owner confirms (GET close-plan); "
        "if the plan has changed since, the close is refused with plan_changed",
    )  # fmt: skip


class TaskCloseApi(APIView):
    """Closing approves the reveals of the close plan (the finals that fit the private budgets)."""

    permission_classes = [IsPerson]

    @extend_schema(request=TaskCloseInput, responses=TaskOutput, tags=["tasks"])
    def post(self, request, task_id: int):
        task = access_task_for_owner(request.user, task_id)
        data = TaskCloseInput(data=request.data)
        data.is_valid(raise_exception=True)
        task_close(task=task, actor=request.user, confirmed_reveals=data.validated_data.get("reveal"))
        return Response(TaskOutput(access_task_by_id(request.user, task_id)).data)


class ClosePlanEntryOutput(serializers.Serializer):
    submission_id = serializers.IntegerField()
    submission = serializers.CharField()
    vendor_id = serializers.IntegerField()
    vendor = serializers.CharField()
    nominated = serializers.BooleanField()
    primary_metric = serializers.CharField()
    public_value = serializers.FloatField(allow_null=True)


class ClosePlanSkippedOutput(ClosePlanEntryOutput):
    reason = serializers.CharField()
    scope = serializers.ChoiceField(choices=["vendor", "task"])


class ClosePlanOutput(serializers.Serializer):
    has_private_split = serializers.BooleanField()
    epsilon_per_reveal = serializers.FloatField()
    delta = serializers.FloatField()
    reveal = ClosePlanEntryOutput(many=True)
    not_revealed = ClosePlanSkippedOutput(many=True)


class TaskClosePlanApi(APIView):
    """The owner's summary before closing: the finals whose private scores closing would reveal."""

    permission_classes = [IsPerson]

    @extend_schema(responses=ClosePlanOutput, tags=["tasks"])
    def get(self, request, task_id: int):
        task = access_task_for_owner(request.user, task_id)
        return Response(ClosePlanOutput(task_close_plan(task=task)).data)


class TaskSampleInput(serializers.Serializer):
    file = serializers.FileField()


class TaskSampleApi(CappedUploadMixin, APIView):
    parser_classes = [MultiPartParser]

    def upload_limit(self) -> int:
        return settings.VAULTBENCH_MAX_SAMPLE_BYTES

    @extend_schema(responses={(200, "application/octet-stream"): OpenApiTypes.BINARY}, tags=["tasks"])
    def get(self, request, task_id: int):
        task = access_task_by_id(request.user, task_id)
        if not task.sample_file:
            raise NotFound("This task has no public sample.")
        return FileResponse(task.sample_file.open("rb"), as_attachment=True, filename=f"{task.slug}-sample")

    @extend_schema(request={"multipart/form-data": TaskSampleInput}, responses=TaskOutput, tags=["tasks"])
    def put(self, request, task_id: int):
        task = access_task_for_owner(request.user, task_id)
        data = TaskSampleInput(data=request.data)
        data.is_valid(raise_exception=True)
        task_sample_set(
            task=task, actor=request.user, sample=data.validated_data["file"],
            max_bytes=settings.VAULTBENCH_MAX_SAMPLE_BYTES,
        )  # fmt: skip
        return Response(TaskOutput(access_task_by_id(request.user, task_id)).data)


class TaskShardOutput(serializers.ModelSerializer):
    site = serializers.CharField(source="site.name")

    class Meta:
        model = DataShard
        fields = ["id", "site", "row_count", "fingerprint", "split_sizes", "registered_at", "updated_at"]


class TaskShardListApi(generics.ListAPIView):
    """The owner's view of which sites hold data for the task."""

    permission_classes = [IsPerson]
    serializer_class = TaskShardOutput
    queryset = DataShard.objects.none()  # for the schema; real rows come from get_queryset

    def get_queryset(self):
        task = access_task_for_owner(self.request.user, self.kwargs["task_id"])
        return DataShard.objects.filter(task=task).select_related("site").order_by("site__name")


class AccessEventOutput(serializers.ModelSerializer):
    vendor_id = serializers.IntegerField()
    vendor = serializers.CharField(source="vendor.name")
    actor = serializers.CharField(source="actor.username", allow_null=True)

    class Meta:
        model = AccessEvent
        fields = ["id", "vendor_id", "vendor", "kind", "actor", "note", "created_at"]


class AccessRequestInput(serializers.Serializer):
    note = serializers.CharField(max_length=500, required=False, allow_blank=True)
    organization = serializers.IntegerField(required=False)


class AccessRequestListCreateApi(generics.ListAPIView):
    """Owners read the access log of their task; vendors ask for access to an invite-only task."""

    permission_classes = [IsPerson]
    serializer_class = AccessEventOutput
    queryset = AccessEvent.objects.none()  # for the schema; real rows come from get_queryset


    def get_queryset(self):
        task = access_task_for_owner(self.request.user, self.kwargs["task_id"])
        return access_events_for_task(task=task)

    @extend_schema(request=AccessRequestInput, responses={201: AccessEventOutput}, tags=["tasks"])
    def post(self, request, task_id: int):
        data = AccessRequestInput(data=request.data)
        data.is_valid(raise_exception=True)
        vendor = access_acting_organization(
            request.user, kind=OrganizationKind.VENDOR, organization_id=data.validated_data.get("organization")
        )
        task = access_task_by_id(request.user, task_id)
        event = task_access_request(
            task=task, vendor=vendor, actor=request.user, note=data.validated_data.get("note", "")
        )
        return Response(AccessEventOutput(event).data, status=status.HTTP_201_CREATED)


class AccessDecisionInput(serializers.Serializer):
    note = serializers.CharField(max_length=500, required=False, allow_blank=True)


class AccessDecisionApi(APIView):
    permission_classes = [IsPerson]
    approve = True


    @extend_schema(request=AccessDecisionInput, responses=AccessEventOutput, tags=["tasks"])
    def post(self, request, task_id: int, vendor_id: int):
        task = access_task_for_owner(request.user, task_id)
        data = AccessDecisionInput(data=request.data)
        data.is_valid(raise_exception=True)
        event = task_access_decide(
            task=task, vendor_id=vendor_id, approve=self.approve, actor=request.user,
            note=data.validated_data.get("note", ""),
        )  # fmt: skip
        return Response(AccessEventOutput(event).data)


class AccessApproveApi(AccessDecisionApi):
    approve = True


class AccessRejectApi(AccessDecisionApi):
    approve = False


