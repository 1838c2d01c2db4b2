"""Agent endpoints of a fine-tuning run (site token only). Contract: docs/federated-protocol.md.

A site sees only the runs it takes part in (404 otherwise); every post needs the lease of the
site's train job (``agent_id``).
"""

from django.http import FileResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.response import Response

from marketplace.finetuning.rounds import (
    Posted,
    run_offset_for_site,
    run_post_keys,
    run_post_layout,
    run_post_masked,
    run_post_shares,
    run_post_unmask,
    run_post_update,
    run_state_after_change,
    run_state_after_post,
    run_state_for_site,
)
from marketplace.finetuning.waiting import wait_for_change
from marketplace.jobs.agent_apis import AGENT_ID, AgentApi, LedgerReceiptInput


class RosterEntryOutput(serializers.Serializer):
    participant = serializers.IntegerField()
    mask_public = serializers.CharField()
    enc_public = serializers.CharField()


class BundleOutput(serializers.Serializer):
    sender = serializers.IntegerField()
    recipient = serializers.IntegerField()
    nonce = serializers.CharField()
    ciphertext = serializers.CharField()


class UnmaskRequestOutput(serializers.Serializer):
    survivors = serializers.ListField(child=serializers.IntegerField())
    dropped = serializers.ListField(child=serializers.IntegerField())


class RunStateOutput(serializers.Serializer):
    version = serializers.CharField(help_text="Changes when status, round, attempt or phase change")
    status = serializers.CharField()
    round = serializers.IntegerField()
    attempt = serializers.IntegerField()
    phase = serializers.CharField(allow_null=True)
    participant = serializers.IntegerField()
    done = serializers.BooleanField(help_text="This site already posted in the current phase")
    round_config = serializers.DictField(allow_null=True)
    layout = serializers.ListField(child=serializers.ListField(), allow_null=True)
    roster = RosterEntryOutput(many=True)
    bundles = BundleOutput(many=True)
    unmask_request = UnmaskRequestOutput(allow_null=True)
    offset = serializers.DictField(
        required=False, help_text="Phases keys/shares/masked/update, small models: {round, safetensors (base64)}: D_r inline"
    )
    next_roster = RosterEntryOutput(
        many=True, required=False,
        help_text="Phase unmask, secure aggregation: round r+1's roster once every site advertised its keys; "
        "the unmask post may carry the shares for it (next_shares)",
    )  # fmt: skip


class PostOutput(serializers.Serializer):
    created = serializers.BooleanField(help_text="False when this repeated an already recorded post")
    state = RunStateOutput()


class PostQuery(serializers.Serializer):
    wait = serializers.FloatField(
        required=False, default=0.0, min_value=0.0, max_value=60.0,
        help_text="When the post leaves this site done in the phase: hold the answer up to this long until "
        "the phase changes (as the state's long poll does), so the answer carries the next phase",
    )  # fmt: skip


def _answer(api: AgentApi, posted: Posted) -> Response:
    """The state after the post, from the run the post left behind (not read again). With
    ``?wait=`` a site that is now done in the phase gets the next phase's state in this answer
    instead of asking for it with a long poll (one request per site and phase fewer)."""
    query = PostQuery(data=api.request.query_params)
    wait = query.validated_data["wait"] if query.is_valid() else 0.0  # the post is in: never refuse its answer
    state = run_state_after_post(site=api.site, posted=posted)
    if wait > 0 and state["status"] == "running" and state["done"]:
        multithreaded = bool(api.request.META.get("wsgi.multithread", False))
        if wait_for_change(run_id=posted.run.id, since=state["version"], wait=wait, multithreaded=multithreaded):
            state = run_state_after_change(site=api.site, posted=posted)
    return Response({"created": posted.created, "state": state})


class RunStateQuery(serializers.Serializer):
    since = serializers.CharField(required=False, max_length=100, help_text="The version the site already has")
    wait = serializers.FloatField(required=False, default=0.0, min_value=0.0, max_value=60.0,
                                  help_text="Hold the answer up to this long while the version equals since")  # fmt: skip


class RunStateApi(AgentApi):
    """The run's state; with ``since`` and ``wait``, a long poll (``finetuning.waiting``)."""

    @extend_schema(parameters=[RunStateQuery], responses=RunStateOutput, tags=["agent"])
    def get(self, request, run_id: int):
        query = RunStateQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        state = run_state_for_site(site=self.site, run_id=run_id)
        since = query.validated_data.get("since")
        if since is not None and since == state["version"] and state["status"] == "running":
            multithreaded = bool(request.META.get("wsgi.multithread", False))
            if wait_for_change(run_id=run_id, since=since, wait=query.validated_data["wait"],
                               multithreaded=multithreaded):  # fmt: skip
                state = run_state_for_site(site=self.site, run_id=run_id)
        return Response(state)


class RunOffsetApi(AgentApi):
    """``D_r`` (safetensors, float32, the layout's names) for the round in progress."""

    @extend_schema(responses={(200, "application/octet-stream"): OpenApiTypes.BINARY}, tags=["agent"])
    def get(self, request, run_id: int, round_number: int):
        run = run_offset_for_site(site=self.site, run_id=run_id, round_number=round_number)
        return FileResponse(run.offset.open("rb"), content_type="application/octet-stream")


class LayoutInput(serializers.Serializer):
    agent_id = AGENT_ID
    layout = serializers.ListField(child=serializers.ListField(), max_length=100_000)
    n_examples = serializers.IntegerField(min_value=1, required=False, help_text="Rows this site trains on")


class RunLayoutApi(AgentApi):
    @extend_schema(request=LayoutInput, parameters=[PostQuery], responses=PostOutput, tags=["agent"])
    def post(self, request, run_id: int):
        data = LayoutInput(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        posted = run_post_layout(site=self.site, run_id=run_id, agent_id=values["agent_id"], layout=values["layout"],
                                  n_examples=values.get("n_examples"))  # fmt: skip
        return _answer(self, posted)


class PublicKeysInput(serializers.Serializer):
    mask_public = serializers.CharField(max_length=64)
    enc_public = serializers.CharField(max_length=64)


class KeysInput(serializers.Serializer):
    agent_id = AGENT_ID
    keys = PublicKeysInput()


class RunKeysApi(AgentApi):
    @extend_schema(request=KeysInput, parameters=[PostQuery], responses=PostOutput, tags=["agent"])
    def post(self, request, run_id: int, round_number: int):
        data = KeysInput(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        posted = run_post_keys(site=self.site, run_id=run_id, round_number=round_number,
                                agent_id=values["agent_id"], keys=dict(values["keys"]))  # fmt: skip
        return _answer(self, posted)


class BundleInput(serializers.Serializer):
    recipient = serializers.IntegerField()
    nonce = serializers.CharField(max_length=64)
    ciphertext = serializers.CharField(max_length=512)


class SharesInput(serializers.Serializer):
    agent_id = AGENT_ID
    bundles = BundleInput(many=True)


class RunSharesApi(AgentApi):
    @extend_schema(request=SharesInput, parameters=[PostQuery], responses=PostOutput, tags=["agent"])
    def post(self, request, run_id: int, round_number: int):
        data = SharesInput(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        posted = run_post_shares(site=self.site, run_id=run_id, round_number=round_number,
                                  agent_id=values["agent_id"], bundles=[dict(b) for b in values["bundles"]])  # fmt: skip
        return _answer(self, posted)


class ReleaseInput(serializers.Serializer):
    agent_id = AGENT_ID
    vector = serializers.CharField(help_text="base64: uint32 LE (masked) or float32 LE (update)")
    train_loss = serializers.FloatField(allow_null=True, required=False, default=None)
    n_examples = serializers.IntegerField(min_value=1)
    validation = serializers.DictField(child=serializers.FloatField(), required=False, default=dict)
    n_validation = serializers.IntegerField(min_value=0, required=False, default=0)
    epsilon = serializers.FloatField(allow_null=True, required=False, default=None)
    next_keys = PublicKeysInput(
        required=False, help_text="Masked posts: fresh keys for round r+1 (its next_secagg_round_id), used there once"
    )
    ledger = LedgerReceiptInput()


def _release(api: AgentApi, request, run_id: int, round_number: int, service) -> Response:
    data = ReleaseInput(data=request.data)
    data.is_valid(raise_exception=True)
    values = dict(data.validated_data)
    ledger = values.pop("ledger")
    agent_id, vector = values.pop("agent_id"), values.pop("vector")
    if "next_keys" in values:
        values["next_keys"] = dict(values["next_keys"])
    posted = service(
        site=api.site, run_id=run_id, round_number=round_number, agent_id=agent_id, vector=vector, values=values,
        released=dict(request.data), ledger_sha256=ledger["sha256"], ledger_bytes=ledger["bytes"],
    )  # fmt: skip
    return _answer(api, posted)


class RunMaskedApi(AgentApi):
    @extend_schema(request=ReleaseInput, parameters=[PostQuery], responses=PostOutput, tags=["agent"])
    def post(self, request, run_id: int, round_number: int):
        return _release(self, request, run_id, round_number, run_post_masked)


class RunUpdateApi(AgentApi):
    """Without secure aggregation: the clipped, noised float32 update."""

    @extend_schema(request=ReleaseInput, parameters=[PostQuery], responses=PostOutput, tags=["agent"])
    def post(self, request, run_id: int, round_number: int):
        return _release(self, request, run_id, round_number, run_post_update)


class UnmaskResponseInput(serializers.Serializer):
    self_mask_shares = serializers.DictField(child=serializers.CharField(max_length=200))
    mask_key_shares = serializers.DictField(
        child=serializers.CharField(max_length=200), required=False, default=dict
    )


class UnmaskInput(serializers.Serializer):
    agent_id = AGENT_ID
    response = UnmaskResponseInput()
    next_shares = BundleInput(
        many=True, required=False, help_text="Round r+1's encrypted shares for the state's next_roster"
    )


class RunUnmaskApi(AgentApi):
    @extend_schema(request=UnmaskInput, parameters=[PostQuery], responses=PostOutput, tags=["agent"])
    def post(self, request, run_id: int, round_number: int):
        data = UnmaskInput(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        next_shares = values.get("next_shares")
        posted = run_post_unmask(site=self.site, run_id=run_id, round_number=round_number,
                                  agent_id=values["agent_id"], response=dict(values["response"]),
                                  next_shares=None if next_shares is None else [dict(b) for b in next_shares])  # fmt: skip
        return _answer(self, posted)
