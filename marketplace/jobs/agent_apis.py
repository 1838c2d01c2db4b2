"""Endpoints for site agents (site token only). Contract: docs/site-agent-api.md."""

from django.conf import settings
from django.http import FileResponse
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from marketplace.catalog.selectors import task_for_site
from marketplace.catalog.services import shard_register
from marketplace.core.errors import NotFound
from marketplace.jobs.models import AGENT_REPORTABLE_REASONS, Job, JobKind
from marketplace.jobs.selectors import receipts_for_site
from marketplace.jobs.services import (
    job_claim,
    job_for_artifact_download,
    job_hold,
    job_record_failure,
    job_record_private_result,
    job_record_result,
    job_release_decisions_for_site,
    job_renew_lease,
    job_reveals_for_site,
)
from marketplace.sites.authentication import IsSiteAgent, SiteTokenAuthentication
from marketplace.sites.services import site_heartbeat

MAX_ROWS = 2**31 - 1  # DataShard.row_count is a PositiveIntegerField (32 bits on PostgreSQL)
AGENT_ID = serializers.RegexField(r"^[A-Za-z0-9_.:-]{1,64}$")


class AgentApi(APIView):
    authentication_classes = [SiteTokenAuthentication]
    permission_classes = [IsSiteAgent]

    @property
    def site(self):
        return self.request.user.site


class HealthInput(serializers.Serializer):
    status = serializers.RegexField(r"^[a-z_]{1,32}$", help_text='"ok", or why the agent cannot work (e.g. disk_full)')
    detail = serializers.CharField(max_length=300, required=False, allow_blank=True, default="")


class HeartbeatInput(serializers.Serializer):
    agent_id = AGENT_ID
    capabilities = serializers.DictField(required=False, default=dict)
    health = HealthInput(required=False)


class HeartbeatOutput(serializers.Serializer):
    site = serializers.DictField()
    server_time = serializers.DateTimeField()


class HeartbeatApi(AgentApi):
    @extend_schema(request=HeartbeatInput, responses=HeartbeatOutput, tags=["agent"])
    def post(self, request):
        data = HeartbeatInput(data=request.data)
        data.is_valid(raise_exception=True)
        site = site_heartbeat(site=self.site, **data.validated_data)
        return Response({"site": {"id": site.id, "name": site.name}, "server_time": timezone.now()})


class ShardInput(serializers.Serializer):
    task = serializers.IntegerField()
    row_count = serializers.IntegerField(min_value=0, max_value=MAX_ROWS)
    fingerprint = serializers.RegexField(r"^[0-9a-f]{64}$")
    split_sizes = serializers.DictField(
        child=serializers.IntegerField(min_value=0, max_value=MAX_ROWS), required=False, default=dict
    )


class ShardOutput(serializers.Serializer):
    task = serializers.IntegerField(source="task_id")
    site = serializers.IntegerField(source="site_id")
    row_count = serializers.IntegerField()
    fingerprint = serializers.CharField()
    split_sizes = serializers.DictField()


class ShardRegisterApi(AgentApi):
    @extend_schema(request=ShardInput, responses={200: ShardOutput, 201: ShardOutput}, tags=["agent"])
    def post(self, request):
        data = ShardInput(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        shard, created = shard_register(
            site=self.site, task_id=values["task"], row_count=values["row_count"],
            fingerprint=values["fingerprint"], split_sizes=values["split_sizes"],
        )  # fmt: skip
        return Response(ShardOutput(shard).data, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)


class SiteTaskSchemaOutput(serializers.Serializer):
    id = serializers.IntegerField()
    title = serializers.CharField()
    status = serializers.CharField()
    task_type = serializers.CharField()
    input_spec = serializers.DictField(help_text="n_features, n_classes, dtype: what register-data checks")
    min_test_rows = serializers.IntegerField()
    opens_at = serializers.DateTimeField(allow_null=True)
    closes_at = serializers.DateTimeField(allow_null=True)


class SiteTaskApi(AgentApi):
    """A task of the site's own organization: the schema its data must have (site CLI)."""

    @extend_schema(responses={200: SiteTaskSchemaOutput}, tags=["agent"])
    def get(self, request, task_id: int):
        task = task_for_site(site=self.site, task_id=task_id)
        if task is None:
            raise NotFound("Task not found.")
        return Response(SiteTaskSchemaOutput(task).data)


class WeightsOffsetOutput(serializers.Serializer):
    sha256 = serializers.CharField()
    size = serializers.IntegerField()


class AgentSubmissionOutput(serializers.Serializer):
    id = serializers.IntegerField()
    vendor_id = serializers.IntegerField(help_text="Opaque id: the site keys its privacy budget on it")
    format = serializers.CharField(source="artifact_format")
    sha256 = serializers.CharField()
    size = serializers.IntegerField()
    filename = serializers.CharField(source="original_filename")
    weights_offset = serializers.SerializerMethodField(
        help_text="A fine-tuned submission: fetch the offset from jobs/{id}/weights-offset and apply it on load"
    )

    @extend_schema_field(WeightsOffsetOutput(allow_null=True))
    def get_weights_offset(self, submission) -> dict | None:
        if not submission.weights_offset:
            return None
        return {"sha256": submission.weights_offset_sha256, "size": submission.weights_offset.size}


class AgentPrivacyOutput(serializers.Serializer):
    epsilon_per_release = serializers.FloatField()
    delta = serializers.FloatField()
    vendor_epsilon = serializers.FloatField()
    task_epsilon = serializers.FloatField()


class AgentTaskOutput(serializers.Serializer):
    id = serializers.IntegerField()
    slug = serializers.CharField()
    task_type = serializers.CharField()
    input_spec = serializers.DictField()
    metrics = serializers.ListField(child=serializers.DictField(), source="metric_specs")
    primary_metric = serializers.CharField()
    resource_limits = serializers.DictField()
    leaderboard_mode = serializers.CharField()
    public_split_fraction = serializers.FloatField()
    split_seed = serializers.IntegerField()
    requires_release_approval = serializers.BooleanField()
    fine_tuning_allowed = serializers.BooleanField(
        help_text="The owner lets vendors fine-tune on this task: a site may keep a training sandbox warm for it"
    )
    privacy = serializers.SerializerMethodField(help_text="The release's differential privacy (docs/disclosure.md)")

    @extend_schema_field(AgentPrivacyOutput)
    def get_privacy(self, task) -> dict:
        return {
            "epsilon_per_release": task.dp_epsilon_per_release,
            "delta": task.dp_delta,
            "vendor_epsilon": task.dp_vendor_epsilon,
            "task_epsilon": task.dp_task_epsilon,
        }


class AgentJobOutput(serializers.Serializer):
    id = serializers.IntegerField()
    kind = serializers.CharField()
    attempt = serializers.IntegerField(source="attempts")
    attempt_token = serializers.CharField(
        help_text="This claim's token: posts carry it as `attempt`, and the agent remembers (job, token) as posted"
    )
    lease_expires_at = serializers.DateTimeField()
    lease_seconds = serializers.SerializerMethodField()
    submission = AgentSubmissionOutput()
    task = AgentTaskOutput(source="submission.task")
    run = serializers.SerializerMethodField(help_text="For train jobs: the fine-tuning run (federated-protocol.md)")

    def get_lease_seconds(self, job: Job) -> int:
        return settings.VAULTBENCH_LEASE_SECONDS

    @extend_schema_field(OpenApiTypes.OBJECT)
    def get_run(self, job: Job) -> dict | None:
        if job.kind != JobKind.TRAIN:
            return None
        from marketplace.finetuning.selectors import run_payload_for_job

        return run_payload_for_job(job=job)


class ClaimInput(serializers.Serializer):
    agent_id = AGENT_ID


class ClaimOutput(serializers.Serializer):
    job = AgentJobOutput()


class JobClaimApi(AgentApi):
    @extend_schema(
        request=ClaimInput,
        responses={200: ClaimOutput, 204: OpenApiResponse(description="Nothing queued for this site.")},
        tags=["agent"],
    )
    def post(self, request):
        data = ClaimInput(data=request.data)
        data.is_valid(raise_exception=True)
        job = job_claim(site=self.site, agent_id=data.validated_data["agent_id"])
        if job is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        return Response({"job": AgentJobOutput(job).data})


class LeaseOutput(serializers.Serializer):
    lease_expires_at = serializers.DateTimeField()


class LeaseRenewApi(AgentApi):
    @extend_schema(request=ClaimInput, responses=LeaseOutput, tags=["agent"])
    def post(self, request, job_id: int):
        data = ClaimInput(data=request.data)
        data.is_valid(raise_exception=True)
        job = job_renew_lease(site=self.site, job_id=job_id, agent_id=data.validated_data["agent_id"])
        return Response({"lease_expires_at": job.lease_expires_at})


class ArtifactDownloadApi(AgentApi):
    @extend_schema(responses={(200, "application/octet-stream"): OpenApiTypes.BINARY}, tags=["agent"])
    def get(self, request, job_id: int):
        job = job_for_artifact_download(site=self.site, job_id=job_id)
        return FileResponse(job.submission.artifact.open("rb"), content_type="application/octet-stream")


class WeightsOffsetDownloadApi(AgentApi):
    """The offset a fine-tuned submission adds to its parent's weights (safetensors)."""

    @extend_schema(responses={(200, "application/octet-stream"): OpenApiTypes.BINARY}, tags=["agent"])
    def get(self, request, job_id: int):
        job = job_for_artifact_download(site=self.site, job_id=job_id)
        if not job.submission.weights_offset:
            raise NotFound("This submission has no weights offset.")
        return FileResponse(job.submission.weights_offset.open("rb"), content_type="application/octet-stream")


class LedgerReceiptInput(serializers.Serializer):
    sha256 = serializers.RegexField(r"^[0-9a-f]{64}$")
    bytes = serializers.IntegerField(min_value=0)


class ReleaseLedgerInput(LedgerReceiptInput):
    rho = serializers.FloatField()
    epsilon = serializers.FloatField()
    delta = serializers.FloatField()


class ReleasePrivacyInput(serializers.Serializer):
    mechanism = serializers.ChoiceField(choices=["gaussian"])
    rho = serializers.FloatField()
    epsilon = serializers.FloatField()
    delta = serializers.FloatField()


class ResultInput(serializers.Serializer):
    """For the schema only: the services check the body as posted (marketplace/jobs/releases.py)."""

    agent_id = AGENT_ID
    n_rows = serializers.IntegerField(help_text="Rows of this split at this site")
    statistics = serializers.DictField(help_text="Noised sufficient statistics: block -> nested list of numbers")
    privacy = ReleasePrivacyInput()
    ledger = ReleaseLedgerInput()


class AgentJobStateOutput(serializers.Serializer):
    id = serializers.IntegerField()
    status = serializers.CharField()
    failure_reason = serializers.CharField()


class JobStateOutput(serializers.Serializer):
    job = AgentJobStateOutput()
    created = serializers.BooleanField(help_text="False when this repeated an already recorded outcome.")


def _body(request) -> dict | None:
    """The post exactly as the site released it: its ledger receipt is checked against it."""
    return request.data if isinstance(request.data, dict) else None


class ResultApi(AgentApi):
    @extend_schema(request=ResultInput, responses=JobStateOutput, tags=["agent"])
    def post(self, request, job_id: int):
        job, created = job_record_result(site=self.site, job_id=job_id, body=_body(request))
        return Response({"job": AgentJobStateOutput(job).data, "created": created})


class PrivateResultApi(AgentApi):
    """Private-split statistics: the site sends them only for reveals the owner's close approved."""

    @extend_schema(request=ResultInput, responses=JobStateOutput, tags=["agent"])
    def post(self, request, job_id: int):
        job, created = job_record_private_result(site=self.site, job_id=job_id, body=_body(request))
        return Response({"job": AgentJobStateOutput(job).data, "created": created})


class HoldApi(AgentApi):
    """The site holds a computed result until the owner decides (task.requires_release_approval)."""

    @extend_schema(request=ClaimInput, responses=AgentJobStateOutput, tags=["agent"])
    def post(self, request, job_id: int):
        data = ClaimInput(data=request.data)
        data.is_valid(raise_exception=True)
        job = job_hold(site=self.site, job_id=job_id, agent_id=data.validated_data["agent_id"])
        return Response(AgentJobStateOutput(job).data)


class ReleaseDecisionOutput(serializers.Serializer):
    job_id = serializers.IntegerField()
    decision = serializers.ChoiceField(choices=["approved", "refused"])


class PendingWorkOutput(serializers.Serializer):
    releases = ReleaseDecisionOutput(many=True)
    reveals = serializers.ListField(child=serializers.IntegerField(), help_text="Jobs whose private scores may now leave")


class PendingWorkApi(AgentApi):
    """What the site should do besides claiming: release decisions made on the hub, and reveals."""

    @extend_schema(responses=PendingWorkOutput, tags=["agent"])
    def get(self, request):
        return Response(
            {"releases": job_release_decisions_for_site(site=self.site), "reveals": job_reveals_for_site(site=self.site)}
        )


class ReceiptOutput(serializers.Serializer):
    id = serializers.IntegerField()
    job_id = serializers.IntegerField(allow_null=True)
    kind = serializers.CharField()
    sha256 = serializers.CharField()
    bytes = serializers.IntegerField()
    task_id = serializers.IntegerField()
    vendor_id = serializers.IntegerField()
    rho = serializers.FloatField(allow_null=True)
    epsilon = serializers.FloatField(allow_null=True)
    delta = serializers.FloatField(allow_null=True)


class ReceiptsOutput(serializers.Serializer):
    receipts = ReceiptOutput(many=True)
    next_after = serializers.IntegerField(allow_null=True, help_text="Pass as ?after= for the next page")


class ReceiptsQuery(serializers.Serializer):
    after = serializers.IntegerField(min_value=0, max_value=2**63 - 1, required=False, default=0)
    limit = serializers.IntegerField(min_value=1, max_value=1000, required=False, default=500)


class ReceiptsApi(AgentApi):
    """The hub's mirror of this site's ledger: the site reconciles its own ledger against it."""

    @extend_schema(parameters=[ReceiptsQuery], responses=ReceiptsOutput, tags=["agent"])
    def get(self, request):
        query = ReceiptsQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        limit = query.validated_data["limit"]
        rows = receipts_for_site(site=self.site, after=query.validated_data["after"], limit=limit)
        next_after = rows[-1]["id"] if len(rows) == limit else None
        return Response({"receipts": ReceiptOutput(rows, many=True).data, "next_after": next_after})


class FailureInput(serializers.Serializer):
    agent_id = AGENT_ID
    attempt = serializers.RegexField(r"^[0-9a-f]{32}$", required=False)
    reason = serializers.ChoiceField(choices=AGENT_REPORTABLE_REASONS)
    ledger = LedgerReceiptInput(required=False)


class FailureApi(AgentApi):
    @extend_schema(request=FailureInput, responses=JobStateOutput, tags=["agent"])
    def post(self, request, job_id: int):
        data = FailureInput(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        ledger = values.get("ledger") or {}
        job, created = job_record_failure(
            site=self.site, job_id=job_id, agent_id=values["agent_id"], reason=values["reason"],
            released=dict(request.data), ledger_sha256=ledger.get("sha256"), ledger_bytes=ledger.get("bytes"),
        )  # fmt: skip
        return Response({"job": AgentJobStateOutput(job).data, "created": created})
