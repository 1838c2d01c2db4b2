from django.http import FileResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import generics, serializers, status
from rest_framework.parsers import MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from marketplace.accounts.access import access_acting_organization
from marketplace.accounts.models import OrganizationKind
from marketplace.catalog.access import access_task_by_id, access_task_for_vendor
from marketplace.core.apis import IsPerson
from marketplace.submissions.access import access_submission_artifact, access_submission_by_id
from marketplace.submissions.filters import SubmissionFilter
from marketplace.submissions.models import ArtifactFormat, Submission
from marketplace.submissions.selectors import quota_usage, submission_list_visible_to
from marketplace.submissions.services import submission_create, submission_nominate


class SubmissionJobOutput(serializers.Serializer):
    id = serializers.IntegerField()
    site = serializers.CharField(source="site.name")
    status = serializers.CharField()
    failure_reason = serializers.CharField()


class SubmissionOutput(serializers.ModelSerializer):
    vendor = serializers.CharField(source="vendor.name")
    task_id = serializers.IntegerField()
    parent_id = serializers.IntegerField(allow_null=True, read_only=True)

    class Meta:
        model = Submission
        fields = [
            "id", "task_id", "vendor", "name", "description", "artifact_format", "original_filename", "size",
            "sha256", "status", "status_reason", "is_baseline", "is_final", "is_fine_tuned", "parent_id",
            "created_at",
        ]  # fmt: skip


class SubmissionDetailOutput(SubmissionOutput):
    jobs = SubmissionJobOutput(many=True, read_only=True)

    class Meta(SubmissionOutput.Meta):
        fields = [*SubmissionOutput.Meta.fields, "jobs"]


class SubmissionInput(serializers.Serializer):
    task = serializers.IntegerField()
    name = serializers.CharField(max_length=120)
    description = serializers.CharField(required=False, allow_blank=True, default="")
    artifact_format = serializers.ChoiceField(choices=ArtifactFormat.choices)
    artifact = serializers.FileField(allow_empty_file=True)
    sha256 = serializers.RegexField(r"^[0-9a-fA-F]{64}$", required=False)
    organization = serializers.IntegerField(required=False)


class SubmissionListCreateApi(generics.ListAPIView):
    permission_classes = [IsPerson]
    serializer_class = SubmissionOutput
    filterset_class = SubmissionFilter
    parser_classes = [MultiPartParser]

    def get_queryset(self):
        return submission_list_visible_to(user=self.request.user).order_by("-created_at", "-id")

    @extend_schema(request={"multipart/form-data": SubmissionInput}, responses={201: SubmissionOutput}, tags=["submissions"])
    def post(self, request):
        data = SubmissionInput(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        task, vendor = access_task_for_vendor(request.user, values["task"], organization_id=values.get("organization"))
        submission = submission_create(
            vendor=vendor,
            task=task,
            actor=request.user,
            name=values["name"],
            description=values["description"],
            artifact_format=values["artifact_format"],
            artifact=values["artifact"],
            declared_sha256=values.get("sha256"),
        )
        return Response(SubmissionOutput(submission).data, status=status.HTTP_201_CREATED)


class SubmissionDetailApi(APIView):
    permission_classes = [IsPerson]

    @extend_schema(responses=SubmissionDetailOutput, tags=["submissions"])
    def get(self, request, submission_id: int):
        submission = access_submission_by_id(request.user, submission_id)
        return Response(SubmissionDetailOutput(submission).data)


class SubmissionArtifactApi(APIView):
    permission_classes = [IsPerson]

    @extend_schema(responses={(200, "application/octet-stream"): OpenApiTypes.BINARY}, tags=["submissions"])
    def get(self, request, submission_id: int):
        submission = access_submission_artifact(request.user, submission_id)
        return FileResponse(
            submission.artifact.open("rb"), as_attachment=True, filename=submission.original_filename
        )


class QuotaOutput(serializers.Serializer):
    quota_per_day = serializers.IntegerField()
    quota_total = serializers.IntegerField(allow_null=True)
    used_today = serializers.IntegerField()
    used_total = serializers.IntegerField()
    remaining_today = serializers.IntegerField()
    remaining_total = serializers.IntegerField(allow_null=True)


class TaskQuotaApi(APIView):
    permission_classes = [IsPerson]

    @extend_schema(responses=QuotaOutput, tags=["submissions"])
    def get(self, request, task_id: int):
        vendor = access_acting_organization(request.user, kind=OrganizationKind.VENDOR)
        task = access_task_by_id(request.user, task_id)
        usage = quota_usage(task=task, vendor_id=vendor.id)
        return Response(QuotaOutput({"quota_per_day": task.quota_per_day, "quota_total": task.quota_total, **usage}).data)


class SubmissionNominateApi(APIView):
    """A vendor nominates (or unpicks) a final submission for the private leaderboard."""

    permission_classes = [IsPerson]
    final = True

    @extend_schema(request=None, responses=SubmissionOutput, tags=["submissions"])
    def post(self, request, submission_id: int):
        submission = access_submission_artifact(request.user, submission_id)  # the vendor's own only
        submission = submission_nominate(submission=submission, final=self.final, actor=request.user)
        return Response(SubmissionOutput(submission).data)


class SubmissionUnnominateApi(SubmissionNominateApi):
    final = False
