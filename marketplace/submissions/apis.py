from django.conf import settings
from django.http import FileResponse
from django.utils import timezone
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
from marketplace.core.uploads import CappedUploadMixin
from marketplace.submissions.access import access_submission_artifact, access_submission_by_id
from marketplace.submissions.filters import SubmissionFilter
from marketplace.submissions.models import ArtifactFormat
from marketplace.submissions.selectors import quota_usage, rules_accepted, submission_list_visible_to
from marketplace.submissions.services import rules_accept, submission_create, submission_nominate
from marketplace.submissions.visibility import (
    check_nominable,
    privacy_budget_of,
    submission_view_for,
    submission_views_for,
)


class SubmissionJobOutput(serializers.Serializer):
    id = serializers.IntegerField()
    site = serializers.CharField(source="site.name")
    status = serializers.CharField()
    failure_reason = serializers.CharField()


class SiteValuesOutput(serializers.Serializer):
    site = serializers.CharField()
    n_rows = serializers.IntegerField()
    metrics = serializers.DictField(child=serializers.FloatField())


class SubmissionOutput(serializers.Serializer):
    """A submission as `submission_view_for` lets the person see it: to anyone but the task's owner,
    "pending" with nothing that moves until its results are visible (status_reason, updated_at,
    results_visible_at, metrics and per_site empty), then the outcome without a reason."""

    id = serializers.IntegerField()
    task_id = serializers.IntegerField()
    vendor = serializers.CharField()
    name = serializers.CharField()
    description = serializers.CharField()
    artifact_format = serializers.CharField()
    original_filename = serializers.CharField()
    size = serializers.IntegerField()
    sha256 = serializers.CharField()
    status = serializers.CharField(help_text="pending (non-owners, until the results are visible), scored, failed, rejected; the owner sees the true status")
    status_reason = serializers.CharField(help_text="The owner only (and the hub's own reason for a rejected upload)")
    is_baseline = serializers.BooleanField()
    is_final = serializers.BooleanField()
    is_fine_tuned = serializers.BooleanField()
    parent_id = serializers.IntegerField(allow_null=True)
    created_at = serializers.DateTimeField()
    release_delay_seconds = serializers.IntegerField(help_text="Results become visible at created_at + a multiple of this")
    results_visible_at = serializers.DateTimeField(allow_null=True)
    metrics = serializers.DictField(child=serializers.FloatField(), allow_null=True)
    ladder_improved = serializers.BooleanField(allow_null=True)
    per_site = SiteValuesOutput(many=True, allow_null=True)
    rejection_reason = serializers.CharField(
        help_text="The data owner's reason for rejecting a job of this submission; to the vendor with the outcome"
    )


class SubmissionDetailOutput(SubmissionOutput):
    jobs = SubmissionJobOutput(many=True, allow_null=True, help_text="The task's owner only")


def _detail_of(user, submission) -> dict:
    view = submission_view_for(user=user, submission=submission)
    jobs = list(submission.jobs.select_related("site").order_by("id")) if view["is_owner_view"] else None
    return {**view, "jobs": jobs}


class SubmissionInput(serializers.Serializer):
    task = serializers.IntegerField()
    name = serializers.CharField(max_length=120)
    description = serializers.CharField(required=False, allow_blank=True, default="")
    artifact_format = serializers.ChoiceField(choices=ArtifactFormat.choices)
    artifact = serializers.FileField(allow_empty_file=True)
    sha256 = serializers.RegexField(r"^[0-9a-fA-F]{64}$", required=False)
    organization = serializers.IntegerField(required=False)


class SubmissionListCreateApi(CappedUploadMixin, generics.ListAPIView):
    permission_classes = [IsPerson]
    serializer_class = SubmissionOutput
    filterset_class = SubmissionFilter
    parser_classes = [MultiPartParser]

    def upload_limit(self) -> int:
        return settings.VAULTBENCH_MAX_ARTIFACT_BYTES

    def get_queryset(self):
        return (
            submission_list_visible_to(user=self.request.user)
            .select_related("leaderboard_entry")
            .order_by("-created_at", "-id")
        )

    def list(self, request, *args, **kwargs):
        # One instant for the status filter and the views: a release time passing between the two
        # would list a submission under "pending" with its scores.
        request.seen_at = timezone.now()
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset()))
        views = submission_views_for(user=request.user, submissions=page, now=request.seen_at)
        return self.get_paginated_response(SubmissionOutput(views, many=True).data)

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
        view = submission_view_for(user=request.user, submission=submission)
        return Response(SubmissionOutput(view).data, status=status.HTTP_201_CREATED)


class SubmissionDetailApi(APIView):
    permission_classes = [IsPerson]

    @extend_schema(responses=SubmissionDetailOutput, tags=["submissions"])
    def get(self, request, submission_id: int):
        submission = access_submission_by_id(request.user, submission_id)
        return Response(SubmissionDetailOutput(_detail_of(request.user, submission)).data)


class SubmissionArtifactApi(APIView):
    permission_classes = [IsPerson]

    @extend_schema(responses={(200, "application/octet-stream"): OpenApiTypes.BINARY}, tags=["submissions"])
    def get(self, request, submission_id: int):
        submission = access_submission_artifact(request.user, submission_id)
        return FileResponse(
            submission.artifact.open("rb"), as_attachment=True, filename=submission.original_filename
        )


class PrivacyBudgetOutput(serializers.Serializer):
    """The vendor's privacy budget on the task's public split, as (epsilon, delta) at the task's
    delta: each upload costs epsilon_per_release, reserved at upload."""

    mechanism = serializers.CharField()
    accountant = serializers.CharField()
    epsilon_per_release = serializers.FloatField()
    delta = serializers.FloatField()
    vendor_epsilon = serializers.FloatField()
    vendor_epsilon_spent = serializers.FloatField()
    vendor_epsilon_remaining = serializers.FloatField()
    task_epsilon_remaining = serializers.FloatField()
    submissions_left = serializers.IntegerField(help_text="Releases that still fit both budgets")


class QuotaOutput(serializers.Serializer):
    quota_per_day = serializers.IntegerField()
    quota_total = serializers.IntegerField(allow_null=True)
    used_today = serializers.IntegerField()
    used_total = serializers.IntegerField()
    remaining_today = serializers.IntegerField()
    remaining_total = serializers.IntegerField(allow_null=True)
    privacy = PrivacyBudgetOutput()
    rules_accepted = serializers.BooleanField(help_text="False: accept the task's rules before uploading")


class QuotaQuery(serializers.Serializer):
    organization = serializers.IntegerField(
        required=False, min_value=1, max_value=2**63 - 1, help_text="Which of your vendor organizations"
    )


class TaskQuotaApi(APIView):
    permission_classes = [IsPerson]

    @extend_schema(parameters=[QuotaQuery], responses=QuotaOutput, tags=["submissions"])
    def get(self, request, task_id: int):
        query = QuotaQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        vendor = access_acting_organization(
            request.user, kind=OrganizationKind.VENDOR, organization_id=query.validated_data.get("organization")
        )
        task = access_task_by_id(request.user, task_id)
        usage = quota_usage(task=task, vendor_id=vendor.id)
        privacy = privacy_budget_of(task=task, vendor_id=vendor.id)
        return Response(
            QuotaOutput(
                {"quota_per_day": task.quota_per_day, "quota_total": task.quota_total, **usage, "privacy": privacy,
                 "rules_accepted": rules_accepted(task=task, vendor_id=vendor.id)}  # fmt: skip
            ).data
        )


class SubmissionNominateApi(APIView):
    """A vendor nominates (or unpicks) a final submission for the private leaderboard."""

    permission_classes = [IsPerson]
    final = True

    @extend_schema(request=None, responses=SubmissionOutput, tags=["submissions"])
    def post(self, request, submission_id: int):
        submission = access_submission_artifact(request.user, submission_id)  # the vendor's own only
        if self.final:
            check_nominable(submission_view_for(user=request.user, submission=submission))
        submission = submission_nominate(submission=submission, final=self.final, actor=request.user)
        return Response(SubmissionOutput(submission_view_for(user=request.user, submission=submission)).data)


class SubmissionUnnominateApi(SubmissionNominateApi):
    final = False


class RulesAcceptOutput(serializers.Serializer):
    task_id = serializers.IntegerField()
    vendor = serializers.CharField()
    rules_sha256 = serializers.CharField()
    accepted_at = serializers.DateTimeField()


class RulesAcceptApi(APIView):
    """A vendor accepts the task's rules (needed before its first upload to a task with rules)."""

    permission_classes = [IsPerson]

    @extend_schema(request=QuotaQuery, responses=RulesAcceptOutput, tags=["submissions"])
    def post(self, request, task_id: int):
        query = QuotaQuery(data=request.data)
        query.is_valid(raise_exception=True)
        vendor = access_acting_organization(
            request.user, kind=OrganizationKind.VENDOR, organization_id=query.validated_data.get("organization")
        )
        task = access_task_by_id(request.user, task_id)
        acceptance = rules_accept(task=task, vendor=vendor, actor=request.user)
        return Response(RulesAcceptOutput(
            {"task_id": task.id, "vendor": vendor.name, "rules_sha256": acceptance.rules_sha256,
             "accepted_at": acceptance.accepted_at}
        ).data)  # fmt: skip
