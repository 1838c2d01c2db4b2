import csv

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import generics, serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from marketplace.accounts.selectors import organization_ids_of
from marketplace.catalog.access import access_task_by_id
from marketplace.core.apis import IsPerson
from marketplace.egress.filters import EgressFilter
from marketplace.egress.models import EgressRecord
from marketplace.egress.selectors import egress_records_visible_to, leakage_by_vendor

CSV_COLUMNS = ["created_at", "site", "task", "vendor", "job", "kind", "bytes", "sha256", "rho", "epsilon", "delta"]


class EgressRecordOutput(serializers.ModelSerializer):
    site = serializers.CharField(source="site.name")
    task = serializers.CharField(source="task.title")
    vendor = serializers.CharField(source="vendor.name")
    job = serializers.IntegerField(source="job_id", allow_null=True)

    class Meta:
        model = EgressRecord
        fields = ["id", *CSV_COLUMNS]


class EgressListApi(generics.ListAPIView):
    """The owner's egress ledger across its sites (filter by site, task, vendor, kind, time)."""

    permission_classes = [IsPerson]
    serializer_class = EgressRecordOutput
    filterset_class = EgressFilter
    queryset = EgressRecord.objects.none()  # for the schema; real rows come from get_queryset

    def get_queryset(self):
        return egress_records_visible_to(user=self.request.user).order_by("-id")


def egress_csv_response(records) -> HttpResponse:
    response = HttpResponse(content_type="text/csv")
    response["Content-Disposition"] = 'attachment; filename="egress-ledger.csv"'
    writer = csv.writer(response)
    writer.writerow(CSV_COLUMNS)
    for record in records:
        writer.writerow(
            [record.created_at.isoformat(), record.site.name, record.task.title, record.vendor.name, record.job_id,
             record.kind, record.bytes, record.sha256, record.rho, record.epsilon, record.delta]
        )  # fmt: skip
    return response


class EgressCsvApi(APIView):
    permission_classes = [IsPerson]

    @extend_schema(responses={(200, "text/csv"): OpenApiTypes.STR}, tags=["egress"])
    def get(self, request):
        records = EgressFilter(request.query_params, queryset=egress_records_visible_to(user=request.user))
        if not records.is_valid():
            raise serializers.ValidationError(records.errors)
        return egress_csv_response(records.qs.order_by("id"))


class LeakageOutput(serializers.Serializer):
    vendor_id = serializers.IntegerField()
    vendor = serializers.CharField(source="vendor__name")
    releases = serializers.IntegerField(
        help_text="The owner: priced releases mirrored from the sites' ledgers. A vendor: its reservations"
    )
    bytes = serializers.IntegerField(help_text="The owner only (0 for a vendor)")
    rho = serializers.FloatField(help_text="zCDP spent on the public split")
    epsilon = serializers.FloatField(help_text="Its (epsilon, delta) guarantee")
    private_rho = serializers.FloatField()
    private_epsilon = serializers.FloatField(help_text="Spent on the private split (reveals at close)")
    delta = serializers.FloatField()
    vendor_epsilon = serializers.FloatField(help_text="The cap per vendor organization and split")


class TaskLeakageApi(APIView):
    """Privacy spent per vendor on a task: the owner sees every vendor, a vendor only itself."""

    permission_classes = [IsPerson]

    @extend_schema(responses=LeakageOutput(many=True), tags=["egress"])
    def get(self, request, task_id: int):
        task = access_task_by_id(request.user, task_id)
        org_ids = organization_ids_of(user=request.user)
        owner = task.organization_id in org_ids
        rows = leakage_by_vendor(task=task, vendor_ids=None if owner else list(org_ids), site_records=owner)
        return Response(LeakageOutput(rows, many=True).data)
