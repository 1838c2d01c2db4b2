"""The site participant (evaluator.federated.site) against a fake hub, phase by phase.

Three sites with fake training sandboxes (a numpy softmax model) and a fake hub that runs the
real ``SecAggServer``: the hub gets exactly the sum of the clipped updates, every masked or
plain update is in the ledger BEFORE it is posted with a matching receipt, epsilon is accounted,
a retried round starts over, and a layout that differs from the hub's stops the site.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save

from evaluator.client import canonical_json
from evaluator.datasets import load_train_data, register_task_data
from evaluator.federated import wire
from evaluator.federated.secagg import RoundParams, SecAggServer
from evaluator.federated.site import ReleaseContext, SiteParticipant, SiteRunError, parse_run
from evaluator.federated.updates import dequantize, flatten, quantization_range
from evaluator.ledger import Ledger

N_SITES = 3
RUN = {
    "id": 4, "participant": 1, "n_participants": N_SITES, "rounds": 2, "local_epochs": 1, "batch_size": 32,
    "learning_rate": 0.5, "strategy": "fedavg", "proximal_mu": 0.0, "secure_aggregation": True,
    "threshold": 2, "clip_norm": 1.0, "noise_multiplier": 0.0, "dp_delta": 1e-5, "epsilon_cap": None,
    "quantization_bits": 20, "round_timeout_seconds": 120,
}  # fmt: skip


@dataclass
class FakeRound:
    weights: dict
    val_predictions: np.ndarray
    train_predictions: np.ndarray
    train_loss: float
    n_examples: int
    duration_seconds: float = 0.01


def _softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class FakeSession:
    """A softmax regression 'sandbox': w = {"b": (3,), "w": (4, 3)}."""

    def __init__(self, data, layout_extra=False):
        self.x = data.features[data.fit_rows]
        self.y = data.labels[data.fit_rows]
        self.xv = data.features[data.validation_rows]
        self.extra = layout_extra
        self.closed = False
        self.rounds = 0

    def start(self):
        w = {"b": np.zeros(3, np.float32), "w": np.zeros((4, 3), np.float32)}
        if self.extra:
            w["z"] = np.zeros(1, np.float32)
        self.w0 = w
        return w

    def run_round(self, offset, config):
        self.rounds += 1
        w = {n: self.w0[n] + offset[n] for n in self.w0}
        val = _softmax(self.xv @ w["w"] + w["b"])
        for _ in range(config["local_epochs"] * 5):
            p = _softmax(self.x @ w["w"] + w["b"])
            g = p - np.eye(3)[self.y]
            w["w"] = (w["w"] - config["learning_rate"] * self.x.T @ g / len(self.y)).astype(np.float32)
            w["b"] = (w["b"] - config["learning_rate"] * g.mean(axis=0)).astype(np.float32)
        train = _softmax(self.x @ w["w"] + w["b"])
        return FakeRound(w, val, train, 123.0, len(self.y))

    def close(self):
        self.closed = True


class FakeHub:
    """Just enough of the hub's run state machine for three sites."""

    def __init__(self, run, n_sites=N_SITES):
        self.run = run
        self.n = n_sites
        self.round = 0
        self.phase = "layout"
        self.status = "running"
        self.attempt = 0
        self.layout = None
        self.layouts = {}
        self.offset = None
        self.posts = []  # (site, step, body)
        self.server = None
        self.ledgers = {}
        self.sums = []

    def client(self, site):
        return FakeClient(self, site)

    def state(self, site):
        state = {"status": self.status, "round": self.round, "phase": self.phase, "round_config": {},
                 "layout": self.layout, "roster": [], "bundles": [], "unmask_request": None, "attempt": self.attempt}  # fmt: skip
        if self.phase == "shares":
            state["roster"] = [wire.keys_to_json(k) for k in self.server.roster()]
        if self.phase == "masked":
            state["bundles"] = [wire.bundle_to_json(b) for b in self.server.bundles_for(site)]
        if self.phase == "unmask":
            state["unmask_request"] = wire.unmask_request_to_json(self.server.unmask_request())
        return state

    def _posted(self, step):
        return {s for s, st, b in self.posts if st == step and b["_at"] == (self.round, self.attempt)}

    def receive(self, site, step, body):
        # the site's ledger entry must already hold exactly this body (minus its receipt)
        if step in ("masked", "update"):
            payload = canonical_json({k: v for k, v in body.items() if k != "ledger"})
            entries = self.ledgers[site].read_entries()
            assert entries[-1].sha256 == hashlib.sha256(payload).hexdigest() == body["ledger"]["sha256"]
            assert body["ledger"]["bytes"] == len(payload)
        body = {**body, "_at": (self.round, self.attempt)}
        self.posts.append((site, step, body))
        size = sum(int(np.prod(s)) for _, s, _ in self.layout) if self.layout else 0
        if step == "keys":
            self.server.receive_keys(wire.keys_from_json({**body["keys"], "participant": site}))
        elif step == "shares":
            self.server.receive_shares(site, wire.bundles_from_json(body["bundles"]))
        elif step == "masked":
            self.server.receive_masked_input(site, wire.vector_from_b64(body["vector"], "<u4", size))
        elif step == "unmask":
            self.server.receive_unmask_response(wire.unmask_response_from_json(body["response"]))

    def advance(self):
        posted = self._posted
        if self.phase == "layout" and len(self.layouts) == self.n:
            self.layout = next(iter(self.layouts.values()))
            self._open_round()
        elif self.phase == "keys" and len(posted("keys")) == self.n:
            self.phase = "shares"
        elif self.phase == "shares" and len(posted("shares")) == self.n:
            self.phase = "masked"
        elif self.phase == "masked" and len(posted("masked")) == self.n:
            self.phase = "unmask"
        elif self.phase == "unmask" and len(posted("unmask")) >= 2:
            total = self.server.aggregate()
            q = quantization_range(self.run["clip_norm"], 0.0)
            self.sums.append(dequantize(total, clip_norm=q, bits=self.run["quantization_bits"], n_summed=self.n))
            self.round += 1
            if self.round == self.run["rounds"]:
                self.status = "completed"
            else:
                self._open_round()
        elif self.phase == "update" and len(posted("update")) == self.n:
            self.sums.append(sum(wire.vector_from_b64(b["vector"], "<f4", self.size) for _, st, b in self.posts
                                 if st == "update" and b["_at"] == (self.round, self.attempt)))  # fmt: skip
            self.round += 1
            self.status = "completed" if self.round == self.run["rounds"] else "running"
            self._open_round()

    @property
    def size(self):
        return sum(int(np.prod(s)) for _, s, _ in self.layout)

    def _open_round(self):
        self.phase = "keys" if self.run["secure_aggregation"] else "update"
        rid = wire.round_id(self.run["id"], self.round)
        self.server = SecAggServer(RoundParams(rid, self.run["threshold"], self.size))
        self.offset = {n: np.full(s, 0.01 * self.round, np.float32) for n, s, _ in self.layout}


class FakeClient:
    def __init__(self, hub, site):
        self.hub, self.site, self.agent_id = hub, site, f"agent-{site}"

    def run_state(self, run_id, since=None, wait=0.0):
        return self.hub.state(self.site)

    def post_layout(self, run_id, layout, n_examples=None):
        self.hub.layouts[self.site] = layout
        return {}

    def download_round_offset(self, run_id, number, dest, *, max_bytes):
        assert number == self.hub.round
        data = save(self.hub.offset)
        assert len(data) <= max_bytes
        Path(dest).write_bytes(data)
        return Path(dest)

    def post_round(self, run_id, number, step, body, *, wait=0.0):
        assert number == self.hub.round
        json.dumps(body, allow_nan=False)  # what a real client sends must be plain JSON
        self.hub.receive(self.site, step, body)
        return {}


@pytest.fixture
def shards(tmp_path):
    rng = np.random.default_rng(0)
    out = []
    for site in range(1, N_SITES + 1):
        x = rng.normal(size=(100, 4)).astype(np.float32)
        y = np.argmax(x[:, :3], axis=1)
        np.save(tmp_path / f"x{site}.npy", x)
        np.save(tmp_path / f"y{site}.npy", y)
        data_dir = tmp_path / f"site{site}"
        register_task_data(
            data_dir=data_dir, task_id="7", features_path=tmp_path / f"x{site}.npy",
            labels_path=tmp_path / f"y{site}.npy", input_spec={"n_features": 4, "n_classes": 3},
            task_type="multiclass_classification", split="train",
        )  # fmt: skip
        out.append((data_dir, load_train_data(data_dir=data_dir, task_id="7")))
    return out


def _participants(hub, shards, run=RUN, **kwargs):
    parts = []
    for site, (data_dir, data) in enumerate(shards, start=1):
        ledger = Ledger(data_dir / "ledger.jsonl")
        hub.ledgers[site] = ledger
        parts.append(
            SiteParticipant(
                client=hub.client(site), spec=parse_run({**run, "participant": site}),
                session=kwargs.pop("session", None) or FakeSession(data), data=data, ledger=ledger,
                context=ReleaseContext(job_id=100 + site, submission_id=9, task_id="7", vendor_id=3),
                poll_seconds=0, sleep=lambda s: None, rng=np.random.default_rng(site),
            )  # fmt: skip
        )
    return parts


def _drive(hub, parts, max_steps=200, before_advance=None, until=None):
    for _ in range(max_steps):
        if hub.status != "running" or (until and until()):
            return
        for p in parts:
            p.step(hub.state(p.spec.participant))
        if before_advance:
            before_advance()
        hub.advance()
    raise AssertionError(f"stuck in {hub.phase}")


def test_secure_aggregation_round_gives_the_hub_exactly_the_sum_of_clipped_updates(shards):
    hub = FakeHub(RUN)
    parts = _participants(hub, shards)
    _drive(hub, parts)
    assert hub.status == "completed" and len(hub.sums) == 2
    assert hub.layout == [["b", [3], "<f4"], ["w", [4, 3], "<f4"]]
    # the expected sum: each site's (clipped) update from w0 + D_0 = 0
    expected = 0
    for _, data in shards:
        session = FakeSession(data)
        w0 = session.start()
        new = session.run_round({n: np.zeros_like(v) for n, v in w0.items()}, {"local_epochs": 1, "learning_rate": 0.5}).weights
        delta, _ = flatten({n: new[n] - w0[n] for n in w0})
        delta = delta * min(1.0, 1.0 / np.linalg.norm(delta))
        expected = expected + delta
    np.testing.assert_allclose(hub.sums[0], expected, atol=N_SITES * 2.0 / (2**20 - 1) + 1e-6)
    steps = [st for s, st, _ in hub.posts if s == 1]
    assert steps == ["keys", "shares", "masked", "unmask"] * 2


def test_every_masked_post_is_in_the_ledger_with_its_receipt_and_metrics(shards):
    hub = FakeHub(RUN)
    _drive(hub, _participants(hub, shards))
    for site, (data_dir, _data) in enumerate(shards, start=1):
        entries = Ledger(data_dir / "ledger.jsonl").read_entries()
        assert [e.kind for e in entries] == ["update", "update"]
        assert all(e.job_id == 100 + site and e.vendor_id == 3 and e.task_id == "7" for e in entries)
        assert entries[0].epsilon == float("inf")  # no noise: no DP guarantee, and the ledger says so
        payload = json.loads(entries[0].payload)
        assert set(payload) == {"agent_id", "vector", "train_loss", "n_examples", "validation", "n_validation", "epsilon"}
        assert payload["n_examples"] == 80 and payload["n_validation"] == 20
        assert set(payload["validation"]) == {"accuracy", "log_loss"}
        assert payload["train_loss"] != 123.0  # the sandbox's own claim never leaves
    masked = [b for _, st, b in hub.posts if st == "masked"]
    assert all(b["epsilon"] is None for b in masked)
    # round 1 starts from w0 + D_1 and validates it: better than the all-zero start
    r0, r1 = [json.loads(e.payload)["validation"]["log_loss"] for e in Ledger(shards[0][0] / "ledger.jsonl").read_entries()]
    assert r0 == pytest.approx(np.log(3), abs=1e-3)


def test_plain_updates_without_secure_aggregation_are_clipped_and_noised(shards):
    run = {**RUN, "secure_aggregation": False, "noise_multiplier": 1.0, "rounds": 1}
    hub = FakeHub(run)
    _drive(hub, _participants(hub, shards, run=run))
    updates = [b for _, st, b in hub.posts if st == "update"]
    assert len(updates) == 3
    # accounted at z / sqrt(m): the hub sees each site's own update
    from evaluator.federated.accounting import epsilon_after

    eps = epsilon_after(1, 1.0 / np.sqrt(3), 1.0, 1e-5)
    assert updates[0]["epsilon"] == pytest.approx(eps)
    entries = Ledger(shards[0][0] / "ledger.jsonl").read_entries()
    assert entries[0].epsilon == pytest.approx(eps)


def test_a_round_past_the_epsilon_cap_is_not_posted(shards):
    from evaluator.federated.accounting import epsilon_after

    z = 2.0
    one = epsilon_after(1, z * np.sqrt(2 / 3), 1.0, 1e-5)
    run = {**RUN, "noise_multiplier": z, "epsilon_cap": one * 1.01}
    hub = FakeHub(run)
    parts = _participants(hub, shards, run=run)
    with pytest.raises(AssertionError, match="stuck in masked"):  # round 1 would pass the cap
        _drive(hub, parts, max_steps=30)
    assert hub.round == 1 and hub.phase == "masked"
    assert len(Ledger(shards[0][0] / "ledger.jsonl").read_entries()) == 1


def test_the_budget_survives_an_agent_restart(shards):
    run = {**RUN, "noise_multiplier": 2.0}
    hub = FakeHub(run)
    _drive(hub, _participants(hub, shards, run=run))
    again = _participants(FakeHub(run), shards, run=run)[0]
    assert again.privacy.rounds == 2


def test_a_retried_round_starts_over_with_fresh_keys(shards):
    hub = FakeHub(RUN)
    parts = _participants(hub, shards)
    _drive(hub, parts, until=lambda: hub.phase == "shares")
    first_keys = [b["keys"] for _, st, b in hub.posts if st == "keys"]
    # the hub fails the round and retries it (same round number, next attempt)
    hub.attempt += 1
    hub._open_round()
    _drive(hub, parts)
    keys = [b["keys"] for _, st, b in hub.posts if st == "keys"]
    assert len(keys) == 3 * 3 and not set(map(str, first_keys)) & set(map(str, keys[3:]))
    assert hub.status == "completed"


def test_a_layout_that_differs_from_the_hubs_stops_the_site(shards):
    hub = FakeHub(RUN)
    parts = _participants(hub, shards)
    odd = SiteParticipant(
        client=hub.client(1), spec=parse_run(RUN), session=FakeSession(shards[0][1], layout_extra=True),
        data=shards[0][1], ledger=Ledger(shards[0][0] / "other.jsonl"),
        context=ReleaseContext(1, 1, "7", 1), poll_seconds=0, sleep=lambda s: None,
    )  # fmt: skip
    _drive(hub, parts, until=lambda: hub.phase == "keys")
    with pytest.raises(SiteRunError) as info:
        odd.step(hub.state(1))
    assert info.value.reason == "invalid_artifact"


def test_run_loop_returns_the_final_status_and_leaves_when_told(shards):
    hub = FakeHub(RUN)
    hub.status = "stopped"
    part = _participants(hub, shards)[0]
    assert part.run() == "stopped"
    hub.status = "running"
    part.should_stop = lambda: True
    assert part.run() == "abandoned"


@pytest.mark.parametrize(
    "change",
    [
        {"n_participants": 2},  # secure aggregation needs 3 sites
        {"threshold": 1},  # not a majority
        {"quantization_bits": 31},  # would wrap the sum of 3
        {"participant": 4},
        {"clip_norm": 0},
        {"learning_rate": float("nan")},
        {"local_epochs": 10_000},
    ],
)
def test_the_site_refuses_unsafe_run_settings(change):
    with pytest.raises(SiteRunError) as info:
        parse_run({**RUN, **change})
    assert info.value.reason == "policy_violation"


def test_a_run_without_secure_aggregation_takes_defaults_for_its_null_settings():
    # The hub sends null for settings that only secure aggregation uses.
    spec = parse_run({**RUN, "secure_aggregation": False, "threshold": None, "quantization_bits": None})
    assert spec.secure_aggregation is False and spec.threshold == RUN["n_participants"] // 2 + 1
    with pytest.raises(SiteRunError):
        parse_run({**RUN, "learning_rate": None})  # a required setting stays required


def _one_participant(shards, run, **kwargs):
    data_dir, data = shards[0]
    return SiteParticipant(
        client=FakeHub(run).client(1), spec=parse_run(run), session=FakeSession(data), data=data,
        ledger=Ledger(data_dir / "one.jsonl"), context=ReleaseContext(1, 1, "7", 1), poll_seconds=0,
        sleep=lambda s: None, **kwargs,
    )  # fmt: skip


def test_without_the_holdout_every_row_trains_and_no_validation_metric_leaves(shards, tmp_path):
    data = shards[0][1]
    work = tmp_path / "work"
    work.mkdir()
    data.write_sandbox_inputs(work)  # what the agent wrote, with the holdout
    assert np.load(work / "train-features.npy").shape[0] == 80
    part = _one_participant(shards, {**RUN, "validation_holdout": False}, work_dir=work)
    part._ensure_started()
    assert len(part.data.fit_rows) == 100 and len(part.data.validation_rows) == 0
    assert np.load(work / "train-features.npy").shape[0] == 100 and np.load(work / "val-features.npy").shape[0] == 0
    session = FakeSession(part.data)
    w0 = session.start()
    result = session.run_round({n: np.zeros_like(v) for n, v in w0.items()}, {"local_epochs": 1, "learning_rate": 0.5})
    report = part._round_metrics(result)
    assert report["validation"] == {} and report["n_validation"] == 0 and report["n_examples"] == 100


def test_the_holdout_stays_by_default(shards):
    part = _one_participant(shards, RUN)
    part._ensure_started()
    assert len(part.data.fit_rows) == 80 and len(part.data.validation_rows) == 20


def test_example_weight_is_the_sites_rows_over_the_hubs_cap(shards):
    part = _one_participant(shards, {**RUN, "example_weighting": True})
    assert part._example_weight({"round_config": {"example_cap": 160}}) == pytest.approx(80 / 160)
    assert part._example_weight({"round_config": {"example_cap": 40}}) == 1.0  # never above 1: stays within C
    assert part._example_weight({"round_config": {}}) == 1.0
    with pytest.raises(SiteRunError):
        part._example_weight({"round_config": {"example_cap": 0}})
    assert _one_participant(shards, RUN)._example_weight({"round_config": {"example_cap": 160}}) == 1.0
