"""Jobs as people see them: coarse status only (no logs, no run times) to vendors."""

from drf_spectacular.utils import extend_schema
from rest_framework import generics, serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from marketplace.accounts.selectors import organization_ids_of
from marketplace.core.apis import IsPerson
from marketplace.jobs.access import access_job_by_id, access_job_for_owner
from marketplace.jobs.filters import JobFilter
from marketplace.jobs.models import Job
from marketplace.jobs.selectors import job_list_visible_to
from marketplace.jobs.services import job_decide, job_release_decide


class ResultOutput(serializers.Serializer):
    metrics = serializers.DictField(child=serializers.FloatField())
    n_rows = serializers.IntegerField()
    ledger_sha256 = serializers.CharField()


class JobOutput(serializers.ModelSerializer):
    submission_id = serializers.IntegerField()
    task_id = serializers.IntegerField(source="submission.task_id")
    site = serializers.CharField(source="site.name")
    result = serializers.SerializerMethodField()

    class Meta:
        model = Job
        fields = ["id", "kind", "submission_id", "task_id", "site", "status", "failure_reason", "created_at", "result"]

    @extend_schema(responses=ResultOutput(allow_null=True))
    def get_result(self, job: Job) -> dict | None:
        """Per-site values go to the task's owner, and to the vendor only if the task shows them."""
        owner_org_ids = self.context.get("org_ids", set())
        task = job.submission.task
        if not hasattr(job, "result"):
            return None
        if task.organization_id in owner_org_ids or task.show_per_site:
            return ResultOutput(job.result).data
        return None


class JobListApi(generics.ListAPIView):
    permission_classes = [IsPerson]
    serializer_class = JobOutput
    filterset_class = JobFilter

    def get_queryset(self):
        return job_list_visible_to(user=self.request.user).order_by("-id")

    def get_serializer_context(self):
        return {**super().get_serializer_context(), "org_ids": organization_ids_of(user=self.request.user)}


class JobDetailApi(APIView):
    permission_classes = [IsPerson]

    @extend_schema(responses=JobOutput, tags=["jobs"])
    def get(self, request, job_id: int):
        job = access_job_by_id(request.user, job_id)
        return Response(JobOutput(job, context={"org_ids": organization_ids_of(user=request.user)}).data)


class JobDecisionApi(APIView):
    permission_classes = [IsPerson]
    approve = True

    @extend_schema(request=None, responses=JobOutput, tags=["jobs"])
    def post(self, request, job_id: int):
        job = job_decide(job=access_job_for_owner(request.user, job_id), approve=self.approve, actor=request.user)
        job = access_job_by_id(request.user, job.id)
        return Response(JobOutput(job, context={"org_ids": organization_ids_of(user=request.user)}).data)


class JobApproveApi(JobDecisionApi):
    approve = True


class JobRejectApi(JobDecisionApi):
    approve = False


class JobReleaseDecisionApi(APIView):
    """The owner releases (or withholds) a result that a site holds for approval."""

    permission_classes = [IsPerson]
    approve = True

    @extend_schema(request=None, responses=JobOutput, tags=["jobs"])
    def post(self, request, job_id: int):
        job = job_release_decide(job=access_job_for_owner(request.user, job_id), approve=self.approve, actor=request.user)
        job = access_job_by_id(request.user, job.id)
        return Response(JobOutput(job, context={"org_ids": organization_ids_of(user=request.user)}).data)


class JobReleaseApi(JobReleaseDecisionApi):
    approve = True


class JobWithholdApi(JobReleaseDecisionApi):
    approve = False
