"""Jobs are the owner's: a job's status and timing move with what the model does on the data, so
vendors see none (list empty, detail 404) and follow their submissions instead
(marketplace.submissions.visibility)."""

from drf_spectacular.utils import extend_schema
from rest_framework import generics, serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from marketplace.accounts.selectors import organization_ids_of
from marketplace.core.apis import IsPerson
from marketplace.jobs.access import access_job_for_owner
from marketplace.jobs.filters import JobFilter
from marketplace.jobs.models import Job
from marketplace.jobs.selectors import job_list_visible_to
from marketplace.jobs.services import job_decide, job_release_decide


class ResultOutput(serializers.Serializer):
    statistics = serializers.JSONField(help_text="The noised sufficient statistics the site released")
    metrics = serializers.DictField(child=serializers.FloatField(), help_text="Computed by the hub from them")
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
        """What the site released, and the metrics the hub computed from it (owners only see jobs)."""
        if not hasattr(job, "result"):
            return None
        return ResultOutput(job.result).data


class JobListApi(generics.ListAPIView):
    permission_classes = [IsPerson]
    serializer_class = JobOutput
    filterset_class = JobFilter

    def get_queryset(self):
        # Only jobs on the person's own tasks: a vendor's list is empty.
        owned = organization_ids_of(user=self.request.user)
        return job_list_visible_to(user=self.request.user).filter(submission__task__organization_id__in=owned).order_by("-id")


class JobDetailApi(APIView):
    permission_classes = [IsPerson]

    @extend_schema(responses=JobOutput, tags=["jobs"])
    def get(self, request, job_id: int):
        return Response(JobOutput(access_job_for_owner(request.user, job_id)).data)


class JobDecisionApi(APIView):
    permission_classes = [IsPerson]
    approve = True

    @extend_schema(request=None, responses=JobOutput, tags=["jobs"])
    def post(self, request, job_id: int):
        job = job_decide(job=access_job_for_owner(request.user, job_id), approve=self.approve, actor=request.user)
        return Response(JobOutput(access_job_for_owner(request.user, job.id)).data)


class JobApproveApi(JobDecisionApi):
    approve = True


class JobRejectInput(serializers.Serializer):
    reason = serializers.CharField(
        required=False, allow_blank=True, max_length=500,
        help_text="For the vendor: it reads it with the submission's outcome (the portal requires one)",
    )  # fmt: skip


class JobRejectApi(JobDecisionApi):
    approve = False

    @extend_schema(request=JobRejectInput, responses=JobOutput, tags=["jobs"])
    def post(self, request, job_id: int):
        data = JobRejectInput(data=request.data)
        data.is_valid(raise_exception=True)
        reason = data.validated_data.get("reason", "").strip()
        if not reason:
            return super().post(request, job_id)
        from marketplace.submissions.services import job_review

        job = job_review(job=access_job_for_owner(request.user, job_id), approve=False, actor=request.user, reason=reason)
        return Response(JobOutput(access_job_for_owner(request.user, job.id)).data)


class JobReleaseDecisionApi(APIView):
    """The owner releases (or withholds) a result that a site holds for approval."""

    permission_classes = [IsPerson]
    approve = True

    @extend_schema(request=None, responses=JobOutput, tags=["jobs"])
    def post(self, request, job_id: int):
        job = job_release_decide(job=access_job_for_owner(request.user, job_id), approve=self.approve, actor=request.user)
        return Response(JobOutput(access_job_for_owner(request.user, job.id)).data)


class JobReleaseApi(JobReleaseDecisionApi):
    approve = True


class JobWithholdApi(JobReleaseDecisionApi):
    approve = False
