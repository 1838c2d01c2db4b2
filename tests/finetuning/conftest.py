"""Hub-level federated fine-tuning: simulated sites drive the real agent API with the real
secure-aggregation client (evaluator/federated/secagg.py). No Docker here: the sites' "training"
is a given update vector."""

from __future__ import annotations

import base64
import hashlib
import io
import zipfile

import numpy as np
import pytest
from django.core.files.base import ContentFile
from django.utils import timezone

from evaluator.federated.secagg import (
    AdvertisedKeys,
    EncryptedShares,
    RoundParams,
    SecAggClient,
    UnmaskRequest,
)
from evaluator.federated.updates import quantize_stochastic
from marketplace.egress.receipts import receipt_of
from marketplace.submissions.models import Submission, SubmissionStatus
from tests.conftest import make_site, make_task, register_shard

LAYOUT = [["bias", [2], "<f4"], ["weight", [2, 5], "<f4"]]
DIM = 12


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def torchscript_bytes() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("model/data.pkl", b"\x80\x02}q\x00.")
        archive.writestr("model/version", b"3")
    return buffer.getvalue()


def make_parent(
    vendor, task, *, fmt: str = "torchscript", status: str = SubmissionStatus.SCORED, released: bool = True
) -> Submission:
    """A submission to fine-tune; a scored one is past its release time unless ``released=False``."""
    data = torchscript_bytes()
    submission = Submission(
        vendor=vendor.organization, task=task, created_by=vendor.user, name="base", artifact_format=fmt,
        original_filename="model.pt", size=len(data), sha256=hashlib.sha256(data).hexdigest(), status=status,
        results_visible_at=timezone.now() if status == SubmissionStatus.SCORED and released else None,
    )  # fmt: skip
    submission.artifact.save("artifact", ContentFile(data), save=False)
    submission.save()
    return submission


class SimSite:
    """One site's agent: claims its train job and answers each phase through the API."""

    def __init__(self, handle, agent_id: str = "agent-1"):
        self.handle, self.agent_id = handle, agent_id
        self.job: dict | None = None
        self.client_state: SecAggClient | None = None
        self.quantized: np.ndarray | None = None

    @property
    def api(self):
        return self.handle.client

    def claim(self) -> dict:
        response = self.api.post("/api/v1/agent/jobs/claim", {"agent_id": self.agent_id})
        assert response.status_code == 200, response.content
        self.job = response.json()["job"]
        return self.job

    def state(self, run_id: int) -> dict:
        response = self.api.get(f"/api/v1/agent/runs/{run_id}/state")
        assert response.status_code == 200, response.content
        return response.json()

    def post(self, path: str, body: dict, *, expect: int = 200):
        response = self.api.post(
            f"/api/v1/agent/runs/{path}", {"agent_id": self.agent_id, **body}, format="json"
        )
        assert response.status_code == expect, response.content
        return response

    def post_layout(self, run_id: int, layout=LAYOUT, **kw):
        return self.post(f"{run_id}/layout", {"layout": layout}, **kw)

    def post_keys(self, run_id: int):
        state = self.state(run_id)
        cfg = state["round_config"]
        params = RoundParams(cfg["secagg_round_id"], cfg["threshold"], cfg["vector_length"])
        self.client_state = SecAggClient(state["participant"], params)
        keys = self.client_state.advertise()
        return self.post(
            f"{run_id}/rounds/{state['round']}/keys",
            {"keys": {"mask_public": _b64(keys.mask_public), "enc_public": _b64(keys.enc_public)}},
        )

    def post_shares(self, run_id: int):
        state = self.state(run_id)
        roster = [
            AdvertisedKeys(
                r["participant"], base64.b64decode(r["mask_public"]), base64.b64decode(r["enc_public"])
            )
            for r in state["roster"]
        ]
        bundles = self.client_state.share_keys(roster)
        body = [
            {"recipient": b.recipient, "nonce": _b64(b.nonce), "ciphertext": _b64(b.ciphertext)}
            for b in bundles
        ]
        return self.post(f"{run_id}/rounds/{state['round']}/shares", {"bundles": body})

    def release_body(self, vector: bytes, *, loss: float = 0.5, n: int = 80, accuracy: float = 0.7) -> dict:
        body = {
            "agent_id": self.agent_id, "vector": _b64(vector), "train_loss": loss, "n_examples": n,
            "validation": {"accuracy": accuracy, "log_loss": loss + 0.1}, "n_validation": 20, "epsilon": None,
        }  # fmt: skip
        sha256, size = receipt_of(body)
        return {**body, "ledger": {"sha256": sha256, "bytes": size}}

    def post_masked(self, run_id: int, update: np.ndarray, *, seed: int = 0, **metrics):
        state = self.state(run_id)
        cfg = state["round_config"]
        rng = np.random.default_rng(seed)
        self.quantized = quantize_stochastic(
            update, clip_norm=cfg["quantization_range"], bits=cfg["quantization_bits"], rng=rng,
            n_max=cfg["n_participants"],
        )  # fmt: skip
        bundles = [
            EncryptedShares(
                b["sender"], b["recipient"], base64.b64decode(b["nonce"]), base64.b64decode(b["ciphertext"])
            )
            for b in state["bundles"]
        ]
        y = self.client_state.masked_input(self.quantized, bundles)
        body = self.release_body(y.astype("<u4").tobytes(), **metrics)
        return self.api.post(
            f"/api/v1/agent/runs/{run_id}/rounds/{state['round']}/masked", body, format="json"
        )

    def post_unmask(self, run_id: int):
        state = self.state(run_id)
        request = state["unmask_request"]
        answer = self.client_state.unmask_shares(
            UnmaskRequest(frozenset(request["survivors"]), frozenset(request["dropped"]))
        )
        body = {
            "self_mask_shares": {str(k): str(v) for k, v in answer.self_mask_shares.items()},
            "mask_key_shares": {str(k): str(v) for k, v in answer.mask_key_shares.items()},
        }
        return self.post(f"{run_id}/rounds/{state['round']}/unmask", {"response": body})

    def post_update(self, run_id: int, update: np.ndarray, **metrics):
        state = self.state(run_id)
        body = self.release_body(np.asarray(update, dtype="<f4").tobytes(), **metrics)
        return self.api.post(
            f"/api/v1/agent/runs/{run_id}/rounds/{state['round']}/update", body, format="json"
        )


@pytest.fixture
def fl_task(owner):
    return make_task(owner, fine_tuning_allowed=True)


def sites_for(owner, task, n: int, *, prefix: str = "site") -> list[SimSite]:
    out = []
    for i in range(n):
        handle = make_site(owner, f"{prefix}-{i + 1}")
        register_shard(handle, task)
        out.append(SimSite(handle))
    return out


def request_run(vendor, parent, **overrides):
    body = {
        "submission": parent.id,
        "rounds": 2,
        "learning_rate": 0.05,
        "round_timeout_seconds": 60,
        **overrides,
    }
    return vendor.client.post("/api/v1/finetuning-runs", body, format="json")


def start_run(owner, vendor, parent, sites: list[SimSite], **overrides) -> int:
    response = request_run(vendor, parent, **overrides)
    assert response.status_code == 201, response.content
    run_id = response.json()["id"]
    approved = owner.client.post(f"/api/v1/finetuning-runs/{run_id}/approve")
    assert approved.status_code == 200, approved.content
    for site in sites:
        job = site.claim()
        assert job["kind"] == "train" and job["run"]["id"] == run_id
    for site in sites:
        site.post_layout(run_id)
    return run_id


def updates_for(n: int, seed: int = 1, scale: float = 0.02) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.uniform(-scale, scale, size=DIM) for _ in range(n)]


def secagg_round(run_id: int, sites: list[SimSite], updates: list[np.ndarray], *, drop: set[int] = frozenset(),
                 silent_unmask: set[int] = frozenset(), timeout=None) -> None:  # fmt: skip
    """One round; sites with index in ``drop`` vanish after sharing keys, those in ``silent_unmask``
    send their masked input but never answer the unmask request. ``timeout`` advances a phase."""
    for site in sites:
        site.post_keys(run_id)
    for site in sites:
        site.post_shares(run_id)
    for i, site in enumerate(sites):
        if i not in drop:
            assert site.post_masked(run_id, updates[i], seed=100 + i).status_code == 200
    if drop:
        timeout()
    for i, site in enumerate(sites):
        if i not in drop and i not in silent_unmask:
            site.post_unmask(run_id)
    if silent_unmask:
        timeout()
