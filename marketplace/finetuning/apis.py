"""Fine-tuning runs for vendors and data owners: thin views over services and selectors."""

import json
import tempfile
import zipfile
from pathlib import PurePosixPath

from django.db.models import Count
from django.http import FileResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import generics, serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from marketplace.core.apis import IsPerson
from marketplace.core.errors import Conflict
from marketplace.finetuning.access import (
    access_run_by_id,
    access_run_for_owner,
    access_run_for_vendor,
    access_submission_for_finetuning,
    is_run_owner,
)
from marketplace.finetuning.models import FineTuningRun, RunStatus, StrategyName
from marketplace.finetuning.selectors import run_list_visible_to, run_rounds
from marketplace.finetuning.services import run_approve, run_reject, run_request, run_stop


class RunInput(serializers.Serializer):
    """Parses only; the rules live in finetuning/services.py. Empty (null or left out) local_epochs,
    batch_size and learning_rate are the hub's defaults (finetuning/defaults.py; record-level: the
    FedSGD recipe), listed with their reasons in the run's ``hub_defaults``."""

    submission = serializers.IntegerField()
    rounds = serializers.IntegerField(min_value=1, max_value=1000)
    local_epochs = serializers.IntegerField(min_value=1, max_value=100, required=False, allow_null=True, default=None)
    batch_size = serializers.IntegerField(min_value=1, max_value=65536, required=False, allow_null=True, default=None)
    learning_rate = serializers.FloatField(required=False, allow_null=True, default=None)
    strategy = serializers.ChoiceField(choices=StrategyName.choices, default=StrategyName.FEDAVG)
    strategy_params = serializers.DictField(child=serializers.FloatField(), required=False, default=dict)
    min_sites = serializers.IntegerField(min_value=1, max_value=1000, default=1)
    round_timeout_seconds = serializers.IntegerField(min_value=10, max_value=86400, default=600)


class RunOutput(serializers.ModelSerializer):
    task_id = serializers.IntegerField()
    parent_id = serializers.IntegerField()
    vendor = serializers.CharField(source="vendor.name")
    result_id = serializers.IntegerField(allow_null=True)
    n_participants = serializers.IntegerField(source="n_sites", read_only=True)
    strategy_defaults = serializers.SerializerMethodField()

    class Meta:
        model = FineTuningRun
        fields = [
            "id", "task_id", "parent_id", "vendor", "status", "status_reason", "rounds", "local_epochs",
            "batch_size", "learning_rate", "strategy", "strategy_params", "strategy_defaults", "hub_defaults",
            "min_sites",
            "round_timeout_seconds", "privacy_unit", "example_clip_norm", "dp_sample_rate",
            "dp_steps_per_round", "clip_norm", "noise_multiplier", "dp_delta", "epsilon_cap", "secure_aggregation",
            "validation_holdout", "example_weighting", "robust_rule",
            "quantization_bits", "threshold", "n_participants", "current_round", "phase", "rounds_completed",
            "failed_rounds", "epsilon_spent", "result_id", "created_at", "approved_at", "finished_at",
        ]  # fmt: skip


    @extend_schema_field(OpenApiTypes.OBJECT)
    def get_strategy_defaults(self, run) -> dict:
        """The strategy's parameters with the values the hub uses when ``strategy_params`` leaves them out."""
        from marketplace.finetuning.services import STRATEGY_DEFAULTS

        return {**STRATEGY_DEFAULTS[StrategyName(run.strategy)], **run.strategy_params}


class RoundSiteOutput(serializers.Serializer):
    participant = serializers.IntegerField()
    site = serializers.CharField()
    train_loss = serializers.FloatField(allow_null=True)
    n_examples = serializers.IntegerField()
    validation = serializers.DictField(child=serializers.FloatField())
    n_validation = serializers.IntegerField()
    epsilon = serializers.FloatField(allow_null=True)


class RoundOutput(serializers.Serializer):
    round = serializers.IntegerField()
    attempt = serializers.IntegerField()
    status = serializers.CharField()
    failure_reason = serializers.CharField()
    n_contributors = serializers.IntegerField()
    train_loss = serializers.FloatField(allow_null=True)
    validation = serializers.DictField(child=serializers.FloatField())
    epsilon = serializers.FloatField(allow_null=True)
    started_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField()
    per_site = serializers.SerializerMethodField()

    @extend_schema_field(RoundSiteOutput(many=True, allow_null=True))
    def get_per_site(self, record) -> list[dict] | None:
        """Per-site curves: for the task's owner, and for the vendor only if the task shows per-site results."""
        if not self.context.get("show_per_site"):
            return None
        return RoundSiteOutput(record.per_site, many=True).data


class RunDetailOutput(RunOutput):
    rounds_detail = serializers.SerializerMethodField()
    privacy = serializers.SerializerMethodField()

    class Meta(RunOutput.Meta):
        fields = [*RunOutput.Meta.fields, "privacy", "rounds_detail"]

    @extend_schema_field(OpenApiTypes.OBJECT)
    def get_privacy(self, run) -> dict:
        """The guarantee: unit, accountant, composition, ε spent and planned per site (the same at every site)."""
        return run.privacy.as_dict()

    @extend_schema_field(RoundOutput(many=True))
    def get_rounds_detail(self, run) -> list[dict]:
        return RoundOutput(run_rounds(run=run), many=True, context=self.context).data


def _detail(request, run_id: int) -> Response:
    run = (
        run_list_visible_to(user=request.user)
        .annotate(n_sites=Count("participants"))
        .get(id=access_run_by_id(request.user, run_id).id)
    )
    show = is_run_owner(request.user, run) or run.task.show_per_site
    return Response(RunDetailOutput(run, context={"show_per_site": show}).data)


class RunListCreateApi(generics.ListAPIView):
    permission_classes = [IsPerson]
    serializer_class = RunOutput

    def get_queryset(self):
        return run_list_visible_to(user=self.request.user).annotate(n_sites=Count("participants"))

    @extend_schema(request=RunInput, responses={201: RunDetailOutput}, tags=["fine-tuning"])
    def post(self, request):
        data = RunInput(data=request.data)
        data.is_valid(raise_exception=True)
        values = dict(data.validated_data)
        parent = access_submission_for_finetuning(request.user, values.pop("submission"))
        run = run_request(parent=parent, actor=request.user, **values)
        response = _detail(request, run.id)
        response.status_code = status.HTTP_201_CREATED
        return response


class RunDetailApi(APIView):
    permission_classes = [IsPerson]

    @extend_schema(responses=RunDetailOutput, tags=["fine-tuning"])
    def get(self, request, run_id: int):
        return _detail(request, run_id)


class RunApproveInput(serializers.Serializer):
    validation_holdout = serializers.BooleanField(
        required=False, default=True,
        help_text="Each site holds out 20 % of its train rows for the validation curve (default); false: all rows train",
    )  # fmt: skip


class RunApproveApi(APIView):
    permission_classes = [IsPerson]

    @extend_schema(request=RunApproveInput, responses=RunDetailOutput, tags=["fine-tuning"])
    def post(self, request, run_id: int):
        data = RunApproveInput(data=request.data)
        data.is_valid(raise_exception=True)
        run_approve(run=access_run_for_owner(request.user, run_id), actor=request.user,
                    validation_holdout=data.validated_data["validation_holdout"])  # fmt: skip
        return _detail(request, run_id)


class RunRejectApi(APIView):
    permission_classes = [IsPerson]

    @extend_schema(request=None, responses=RunDetailOutput, tags=["fine-tuning"])
    def post(self, request, run_id: int):
        run_reject(run=access_run_for_owner(request.user, run_id), actor=request.user)
        return _detail(request, run_id)


class RunStopApi(APIView):
    """The vendor or the task's owner ends a run early."""

    permission_classes = [IsPerson]

    @extend_schema(request=None, responses=RunDetailOutput, tags=["fine-tuning"])
    def post(self, request, run_id: int):
        run_stop(run=access_run_by_id(request.user, run_id), actor=request.user)
        return _detail(request, run_id)


class RunModelApi(APIView):
    """The fine-tuned model: a zip of the parent's artifact and the final offset. Only the vendor
    gets it (owners never get vendor weights); no per-site update is ever part of it."""

    permission_classes = [IsPerson]

    @extend_schema(responses={(200, "application/zip"): OpenApiTypes.BINARY}, tags=["fine-tuning"])
    def get(self, request, run_id: int):
        run = access_run_for_vendor(request.user, run_id)
        if run.status != RunStatus.COMPLETED or run.result is None:
            raise Conflict("The run has no fine-tuned model (yet).", code="no_model")
        child = run.result
        name = PurePosixPath(child.original_filename.replace("\\", "/")).name or "artifact"
        manifest = {
            "run": run.id, "parent_submission": run.parent_id, "submission": child.id,
            "format": child.artifact_format, "artifact": name, "artifact_sha256": child.sha256,
            "weights_offset": "weights_offset.safetensors", "weights_offset_sha256": child.weights_offset_sha256,
        }  # fmt: skip
        spool = tempfile.SpooledTemporaryFile(max_size=16 * 1024 * 1024)
        with zipfile.ZipFile(spool, "w", zipfile.ZIP_DEFLATED) as archive:
            with child.artifact.open("rb") as source, archive.open(name, "w", force_zip64=True) as target:
                for chunk in iter(lambda: source.read(1024 * 1024), b""):
                    target.write(chunk)
            with child.weights_offset.open("rb") as source:
                archive.writestr("weights_offset.safetensors", source.read())
            archive.writestr("manifest.json", json.dumps(manifest, indent=2))
        spool.seek(0)
        return FileResponse(
            spool, as_attachment=True, filename=f"finetuned-run-{run.id}.zip", content_type="application/zip"
        )
