"""The agent loop at unit level: a small fake hub (a real HTTP server on 127.0.0.1) and a fake
sandbox runner callable. The fake hub mimics docs/site-agent-api.md just enough for these
tests; the real hub and the real sandbox are tested end-to-end elsewhere."""

import hashlib
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from evaluator.agent import Agent, attempt_key
from evaluator.client import HubClient, canonical_json
from evaluator.config import AgentConfig, LimitCaps, RetryPolicy
from evaluator.datasets import register_task_data
from evaluator.ledger import Ledger
from evaluator.privacy.mechanism import noise_scales
from evaluator.privacy.statistics import (
    PLAUSIBLE_STDS,
    ReleaseSpec,
    check_plausible,
    check_statistics,
    sufficient_statistics,
)
from evaluator.privacy.zcdp import rho_for_epsilon
from evaluator.runner_check import CANARY_PREFIX
from evaluator.sandbox import SandboxCrashed, SandboxRun, SandboxTimeout, SandboxUnavailable
from evaluator.site_budget import SiteBudget
from evaluator.state import AgentState

TOKEN = "vbs_agent_test_token"
MODEL_BYTES = b"fake onnx model bytes"
N_ROWS = 40
VENDOR = 5
PRIVACY = {"epsilon_per_release": 1.0, "delta": 1e-6, "vendor_epsilon": 10.0, "task_epsilon": 20.0}
RHO = rho_for_epsilon(1.0, 1e-6)
SPEC = ReleaseSpec(task_type="binary_classification", metric_names=("roc_auc", "accuracy"), n_classes=2)


class FakeHub:
    """Queue of jobs, artifacts per job, and a record of everything posted."""

    def __init__(self):
        self.jobs = []
        self.artifacts = {}
        self.results = []  # (job_id, raw body bytes)
        self.failures = []
        self.lease_calls = []
        self.lease_lost = set()
        self.heartbeats = []
        self.pending_work = {"releases": [], "reveals": []}
        self.held = []
        self.private_results = []
        self.down_requests = 0  # the next N requests get their connection dropped
        self.fail_posts_with = []  # statuses for the next result/failure posts
        self.lock = threading.Lock()
        self.posted = threading.Event()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _serve(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with hub.lock:
                    if hub.down_requests > 0:
                        hub.down_requests -= 1
                        self.close_connection = True
                        self.connection.close()  # the hub is "down": no answer at all
                        return
                assert self.headers["Authorization"] == f"Bearer {TOKEN}"
                parts = self.path.removeprefix("/api/v1/agent/").split("/")
                if parts == ["heartbeat"]:
                    hub.heartbeats.append(json.loads(body))
                    return self._send(200, {"site": {"id": 1, "name": "s"}, "server_time": "t"})
                if parts == ["pending"]:
                    return self._send(200, hub.pending_work)
                if parts[0].startswith("receipts"):
                    return self._send(200, {"receipts": hub.receipts(), "next_after": None})
                if parts == ["jobs", "claim"]:
                    with hub.lock:
                        job = hub.jobs.pop(0) if hub.jobs else None
                    return self._send(204) if job is None else self._send(200, {"job": job})
                job_id = int(parts[1])
                if parts[2] == "lease":
                    hub.lease_calls.append(job_id)
                    if job_id in hub.lease_lost:
                        return self._send(409, {"error": {"code": "lease_lost", "message": ""}})
                    return self._send(200, {"lease_expires_at": "2026-11-22T19:00:00Z"})
                if parts[2] == "artifact":
                    return self._send(200, hub.artifacts[job_id], json_body=False)
                if parts[2] == "hold":
                    hub.held.append(job_id)
                    return self._send(200, {"id": job_id, "status": "held", "failure_reason": ""})
                if parts[2] == "private-result":
                    hub.private_results.append((job_id, body))
                    return self._send(200, {"job": {"id": job_id}})
                if parts[2] in ("result", "failure"):
                    with hub.lock:
                        status = hub.fail_posts_with.pop(0) if hub.fail_posts_with else 200
                    if status != 200:
                        return self._send(status, {"error": {"code": "x", "message": ""}})
                    (hub.results if parts[2] == "result" else hub.failures).append((job_id, body))
                    hub.posted.set()
                    return self._send(200, {"job": {"id": job_id}})
                self._send(404, {"error": {"code": "not_found", "message": ""}})

            def _send(self, status, body=None, json_body=True):
                data = b"" if body is None else (json.dumps(body).encode() if json_body else body)
                self.send_response(status)
                if status != 204:
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if data:
                    self.wfile.write(data)

            do_GET = do_POST = _serve

        class QuietServer(ThreadingHTTPServer):
            def handle_error(self, request, client_address):
                pass

        self.server = QuietServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        ).start()

    def receipts(self):
        """The hub's mirror of the site's ledger: one receipt per recorded post."""
        out = []
        for kind, posts in (("metrics", self.results), ("failure", self.failures)):
            for job_id, raw in posts:
                receipt = json.loads(raw)["ledger"]
                out.append({"id": len(out) + 1, "job_id": job_id, "kind": kind, "sha256": receipt["sha256"],
                            "bytes": receipt["bytes"], "task_id": 3, "vendor_id": VENDOR, "rho": receipt.get("rho"),
                            "epsilon": receipt.get("epsilon"), "delta": receipt.get("delta")})  # fmt: skip
        return out

    def add_job(self, job_id=12, *, artifact=MODEL_BYTES, sha256=None, attempt=1, **overrides):
        job = {
            "id": job_id,
            "kind": "evaluate",
            "attempt": attempt,
            "attempt_token": uuid.uuid4().hex,
            "lease_expires_at": "2026-11-22T19:00:00Z",
            "lease_seconds": 60,
            "submission": {
                "id": 7,
                "vendor_id": VENDOR,
                "format": "onnx",
                "sha256": sha256 or hashlib.sha256(artifact).hexdigest(),
                "size": len(artifact),
                "filename": "model.onnx",
            },
            "task": {
                "id": 3,
                "slug": "breast-cancer",
                "task_type": "binary_classification",
                "input_spec": {"n_features": 5, "dtype": "float32", "n_classes": 2},
                "metrics": [
                    {"name": "roc_auc", "direction": "higher", "decimals": 4},
                    {"name": "accuracy", "direction": "higher", "decimals": 2},
                ],
                "primary_metric": "roc_auc",
                "privacy": dict(PRIVACY),
                "resource_limits": {
                    "memory_mb": 1024,
                    "cpus": 1.0,
                    "timeout_seconds": 300,
                    "max_output_mb": 64,
                },
            },
        }
        for key, value in overrides.items():
            job["task"][key] = value
        self.artifacts[job_id] = artifact
        self.jobs.append(job)
        return job


@pytest.fixture
def hub():
    fake = FakeHub()
    yield fake
    fake.server.shutdown()
    fake.server.server_close()


RNG = np.random.default_rng(3)
LABELS = np.arange(N_ROWS) % 2
P1 = np.clip(0.55 * LABELS + 0.5 * RNG.random(N_ROWS) - 0.05, 0, 1)


@pytest.fixture
def data_dir(tmp_path):
    root = tmp_path / "site"
    np.save(tmp_path / "x.npy", RNG.normal(size=(N_ROWS, 5)))
    np.save(tmp_path / "y.npy", LABELS)
    register_task_data(
        data_dir=root,
        task_id=3,
        features_path=tmp_path / "x.npy",
        labels_path=tmp_path / "y.npy",
        input_spec={"n_features": 5, "n_classes": 2},
        task_type="binary_classification",
    )
    return root


def make_config(hub, data_dir, **overrides):
    values = dict(
        hub_url=hub.url,
        site_token=TOKEN,
        data_dir=data_dir,
        work_dir=data_dir / "work",
        image="vaultbench-runner:test",
        poll_interval_seconds=0.01,
        lease_renew_interval_seconds=0.05,
        limits=LimitCaps(max_memory_mb=2048, max_cpus=2.0, max_timeout_seconds=600),
        retry=RetryPolicy(max_attempts=2, backoff_base_seconds=0.01, backoff_max_seconds=0.05),
    )
    values.update(overrides)
    return AgentConfig(**values)


class FakeSandbox:
    """Stands in for evaluator.sandbox.run_prediction: records its call, writes predictions."""

    def __init__(self, predictions=P1, *, raises=None, before=None, broken_runner=False):
        self.predictions = predictions
        self.raises = raises
        self.before = before
        self.broken_runner = broken_runner  # the site's runner fails a known-good model too
        self.calls = []
        self.canary_calls = 0

    def __call__(self, **kwargs):
        if CANARY_PREFIX in str(kwargs["model_path"]):  # the agent's runner self-test
            self.canary_calls += 1
            if self.broken_runner:
                raise SandboxCrashed("the runner exited with 1")
            out = Path(kwargs["work_dir"]) / "out"
            out.mkdir()
            rows = np.load(kwargs["features_path"]).shape[0]
            np.save(out / "predictions.npy", np.full((rows, 2), 0.5, dtype=np.float32))
            return SandboxRun(predictions_path=out / "predictions.npy", exit_code=0, logs="", duration_seconds=0.1)
        self.calls.append(kwargs)
        self.model_bytes = Path(kwargs["model_path"]).read_bytes()  # the work dir goes later
        if self.before:
            self.before()
        if self.raises:
            raise self.raises
        out = Path(kwargs["work_dir"]) / "out"
        out.mkdir()
        np.save(out / "predictions.npy", np.asarray(self.predictions, dtype=np.float32))
        return SandboxRun(
            predictions_path=out / "predictions.npy", exit_code=0, logs="ok", duration_seconds=0.1
        )


def make_agent(hub, data_dir, sandbox, *, agent_id="agent-1", **config_overrides):
    config = make_config(hub, data_dir, **config_overrides)
    client = HubClient.from_config(config, agent_id=agent_id, sleep=lambda s: time.sleep(0.001))
    return Agent(config, client, sandbox_runner=sandbox)


def exact_statistics(predictions=P1, rows=None, spec=SPEC):
    """The noise-free statistics of ``predictions`` (P(class 1), as the sandbox writes them)."""
    p1 = np.asarray(predictions, dtype=np.float32).astype(np.float64)
    rows = np.arange(N_ROWS) if rows is None else rows
    return sufficient_statistics(spec, LABELS[rows], np.stack([1 - p1, p1], axis=1)[rows])


def assert_noised_release_of(statistics, exact, *, n_rows, spec=SPEC, rho=RHO):
    """``statistics`` is a release of ``exact``: the spec's blocks and shapes, each value within
    PLAUSIBLE_STDS noise stds of the exact one, and noised (not the exact values)."""
    parsed = check_statistics(spec, statistics)
    noise = noise_scales(spec, rho)
    check_plausible(spec, parsed, n_rows=n_rows, noise=noise)
    for block, value in parsed.items():
        assert np.all(np.abs(value - exact[block]) <= PLAUSIBLE_STDS * noise[block]), block
    assert any(not np.array_equal(parsed[b], exact[b]) for b in spec.blocks)


def budget(data_dir):
    return SiteBudget(data_dir / "site-budget.json")


# --- tests -------------------------------------------------------------------------------------


def test_success_posts_noised_statistics_and_writes_one_ledger_entry_with_their_cost(hub, data_dir):
    hub.add_job()
    sandbox = FakeSandbox()
    agent = make_agent(hub, data_dir, sandbox)
    assert agent.run_once() is True

    [(job_id, raw)] = hub.results
    body = json.loads(raw)
    assert job_id == 12 and hub.failures == []
    # no metric value; the attempt is the claim's token
    assert set(body) == {"agent_id", "n_rows", "statistics", "privacy", "ledger", "attempt", "runner"}
    assert body["n_rows"] == N_ROWS and body["agent_id"] == "agent-1"
    assert body["privacy"] == {"mechanism": "gaussian", "rho": RHO, "epsilon": 1.0, "delta": 1e-6}
    assert_noised_release_of(body["statistics"], exact_statistics(), n_rows=N_ROWS)

    [entry] = Ledger(data_dir / "ledger.jsonl").read_entries()
    assert (entry.job_id, entry.submission_id, entry.task_id, entry.vendor_id) == (12, 7, 3, VENDOR)
    assert (entry.kind, entry.split, entry.rho, entry.epsilon, entry.delta) == ("metrics", "public", RHO, 1.0, 1e-6)
    # the hash sent to the hub is the ledger entry's, over the exact bytes that left
    released = canonical_json({k: v for k, v in body.items() if k != "ledger"})
    assert body["ledger"] == {"sha256": entry.sha256, "bytes": entry.bytes, "rho": RHO, "epsilon": 1.0, "delta": 1e-6}
    assert entry.sha256 == hashlib.sha256(released).hexdigest()
    assert entry.payload.encode() == released
    # the site's budget holds the release as spent, nothing reserved
    usage = budget(data_dir).usage(task_id=3, vendor_id=VENDOR, split="public")
    assert (usage.spent, usage.reserved) == (pytest.approx(RHO), 0.0)


def test_two_releases_of_the_same_model_draw_fresh_noise(hub, data_dir):
    hub.add_job(12)
    hub.add_job(13)
    agent = make_agent(hub, data_dir, FakeSandbox())
    agent.run_once()
    agent.run_once()
    first, second = (json.loads(raw)["statistics"] for _, raw in hub.results)
    assert first != second


def test_the_sandbox_gets_the_features_file_and_never_the_labels(hub, data_dir):
    hub.add_job()
    stored = data_dir / "tasks" / "3" / "features" / "features.npy"
    seen = {}
    sandbox = FakeSandbox(before=lambda: seen.update(bytes=Path(sandbox.calls[0]["features_path"]).read_bytes()))
    make_agent(hub, data_dir, sandbox).run_once()
    [call] = sandbox.calls
    # a private copy in the job's folder, checked against the fingerprint: the bytes it verified
    assert call["features_path"].name == "features.npy" and call["features_path"].parent.name == "pinned"
    assert str(call["features_path"]).startswith(str(data_dir / "work"))
    assert seen["bytes"] == stored.read_bytes()
    assert "labels" not in json.dumps({k: str(v) for k, v in call.items()})
    assert call["image"] == "vaultbench-runner:test"
    assert call["model_format"] == "onnx"
    assert sandbox.model_bytes == MODEL_BYTES
    limits = call["limits"]
    assert (limits.memory_mb, limits.cpus, limits.timeout_seconds, limits.max_output_mb) == (
        1024,
        1.0,
        300,
        64,
    )


def test_the_per_job_work_dir_is_removed(hub, data_dir):
    hub.add_job()
    make_agent(hub, data_dir, FakeSandbox()).run_once()
    assert list((data_dir / "work").iterdir()) == []


def test_heartbeat_reports_capabilities(hub, data_dir):
    make_agent(hub, data_dir, FakeSandbox()).run_once()
    [beat] = hub.heartbeats
    assert beat["agent_id"] == "agent-1"
    assert "onnx" in beat["capabilities"]["formats"]
    assert beat["capabilities"]["limits"]["memory_mb"] == 2048


def test_no_job_queued_returns_false(hub, data_dir):
    assert make_agent(hub, data_dir, FakeSandbox()).run_once() is False


UNIFORM = np.full(N_ROWS, 0.5)  # the fallback of a binary task: P(class 1) = 1/2 for every row


@pytest.mark.parametrize(
    "sandbox, reason",
    [
        (FakeSandbox(raises=SandboxTimeout("no exit", logs="secret")), "timeout"),
        (FakeSandbox(raises=SandboxCrashed("exit 3", logs="secret")), "crashed"),
        (FakeSandbox(predictions=P1[:-3]), "invalid_output"),  # wrong shape
        (FakeSandbox(predictions=np.full(N_ROWS, 7.0)), "invalid_output"),  # not probabilities
        (FakeSandbox(raises=RuntimeError("bug in trusted code /secret/path")), "internal_error"),
    ],
)
def test_a_model_failing_after_it_saw_data_releases_the_fallback_statistics_not_a_reason(
    hub, data_dir, sandbox, reason
):
    hub.add_job()
    agent = make_agent(hub, data_dir, sandbox)
    agent.run_once()
    assert hub.failures == []  # the reason would be a channel the model picks
    [(job_id, raw)] = hub.results
    posted = json.loads(raw)
    assert set(posted) == {"agent_id", "n_rows", "statistics", "privacy", "ledger", "attempt", "runner"}
    assert_noised_release_of(posted["statistics"], exact_statistics(UNIFORM), n_rows=N_ROWS)
    assert b"secret" not in raw and reason.encode() not in raw
    [entry] = Ledger(data_dir / "ledger.jsonl").read_entries()
    # The true reason is the owner's: in the ledger's note, outside the bytes that left.
    assert entry.kind == "metrics" and entry.rho == RHO and reason in entry.note
    assert entry.payload.encode() == canonical_json({k: v for k, v in posted.items() if k != "ledger"})
    assert budget(data_dir).usage(task_id=3, vendor_id=VENDOR, split="public").spent == pytest.approx(RHO)


def test_an_engine_failure_before_the_model_runs_posts_a_failure_and_refunds_the_budget(hub, data_dir):
    hub.add_job()
    agent = make_agent(hub, data_dir, FakeSandbox(raises=SandboxUnavailable("image missing")))
    agent.run_once()
    assert hub.results == []
    [(job_id, raw)] = hub.failures
    posted = json.loads(raw)
    assert {k: v for k, v in posted.items() if k not in ("ledger", "attempt")} == {"agent_id": "agent-1", "reason": "internal_error"}
    [entry] = Ledger(data_dir / "ledger.jsonl").read_entries()
    assert entry.kind == "failure" and posted["ledger"] == {"sha256": entry.sha256, "bytes": entry.bytes}
    # The ledger holds exactly the bytes that left, without the receipt itself.
    assert json.loads(entry.payload) == {k: v for k, v in posted.items() if k != "ledger"}
    assert entry.rho is None
    usage = budget(data_dir).usage(task_id=3, vendor_id=VENDOR, split="public")
    assert (usage.spent, usage.reserved) == (0.0, 0.0)


def test_a_sha_mismatch_posts_artifact_mismatch_never_runs_the_sandbox_and_spends_nothing(hub, data_dir):
    hub.add_job(sha256="0" * 64)
    sandbox = FakeSandbox()
    make_agent(hub, data_dir, sandbox).run_once()
    assert sandbox.calls == []
    assert [json.loads(raw)["reason"] for _, raw in hub.failures] == ["artifact_mismatch"]
    assert budget(data_dir).usage(task_id=3, split="public").total == 0.0


def test_more_bytes_than_declared_is_an_artifact_mismatch(hub, data_dir):
    job = hub.add_job()
    hub.artifacts[12] = MODEL_BYTES + b"extra"
    assert job["submission"]["size"] == len(MODEL_BYTES)
    make_agent(hub, data_dir, FakeSandbox()).run_once()
    assert [json.loads(raw)["reason"] for _, raw in hub.failures] == ["artifact_mismatch"]


def test_limits_above_the_sites_caps_post_policy_violation_without_download(hub, data_dir):
    hub.add_job(resource_limits={"memory_mb": 10**6, "cpus": 1, "timeout_seconds": 60})
    sandbox = FakeSandbox()
    make_agent(hub, data_dir, sandbox).run_once()
    assert sandbox.calls == []
    assert [json.loads(raw)["reason"] for _, raw in hub.failures] == ["policy_violation"]


def test_clamp_mode_runs_with_the_sites_caps(hub, data_dir):
    hub.add_job(resource_limits={"memory_mb": 10**6, "cpus": 64, "timeout_seconds": 10**6})
    sandbox = FakeSandbox()
    caps = LimitCaps(max_memory_mb=512, max_cpus=0.5, max_timeout_seconds=30, on_excess="clamp")
    make_agent(hub, data_dir, sandbox, limits=caps).run_once()
    limits = sandbox.calls[0]["limits"]
    assert (limits.memory_mb, limits.cpus, limits.timeout_seconds) == (512, 0.5, 30)
    assert len(hub.results) == 1


@pytest.mark.parametrize(
    "privacy",
    [
        None,  # a hub that sends no terms gets nothing
        {**PRIVACY, "epsilon_per_release": 5.0},  # more than the site's max_epsilon_per_release
        {**PRIVACY, "delta": 2.0},
    ],
)
def test_a_job_without_acceptable_privacy_terms_is_refused_before_download(hub, data_dir, privacy):
    job = hub.add_job()
    job["task"]["privacy"] = privacy
    sandbox = FakeSandbox()
    make_agent(hub, data_dir, sandbox).run_once()
    assert sandbox.calls == [] and hub.results == []
    assert [json.loads(raw)["reason"] for _, raw in hub.failures] == ["policy_violation"]


def test_a_regression_task_releases_clipped_error_sums_around_its_target_range(hub, data_dir, tmp_path):
    np.save(tmp_path / "xr.npy", RNG.normal(size=(N_ROWS, 5)))
    targets = np.linspace(0.0, 10.0, N_ROWS)
    np.save(tmp_path / "yr.npy", targets)
    register_task_data(data_dir=data_dir, task_id=4, features_path=tmp_path / "xr.npy",
                       labels_path=tmp_path / "yr.npy", input_spec={"n_features": 5}, task_type="regression")  # fmt: skip
    job = hub.add_job(task_type="regression", metrics=[{"name": "mean_absolute_error"}, {"name": "r2"}],
                      input_spec={"n_features": 5, "target_range": [0.0, 10.0]})  # fmt: skip
    job["task"]["id"] = 4
    predictions = targets + 1.0
    make_agent(hub, data_dir, FakeSandbox(predictions=predictions)).run_once()
    [(_, raw)] = hub.results
    spec = ReleaseSpec(task_type="regression", metric_names=("mean_absolute_error", "r2"), target_range=(0.0, 10.0))
    exact = sufficient_statistics(spec, targets, predictions)
    assert_noised_release_of(json.loads(raw)["statistics"], exact, n_rows=N_ROWS, spec=spec)


def test_a_task_without_data_on_this_site_posts_data_unavailable(hub, data_dir):
    job = hub.add_job()
    job["task"]["id"] = 99
    make_agent(hub, data_dir, FakeSandbox()).run_once()
    assert [json.loads(raw)["reason"] for _, raw in hub.failures] == ["data_unavailable"]


def test_an_unexpected_error_before_the_model_runs_posts_internal_error_and_the_agent_keeps_serving(
    hub, data_dir
):
    hub.add_job(12)
    hub.add_job(13)
    calls = []

    def flaky_verify(path, sha256):
        calls.append(path)
        if len(calls) == 1:
            raise RuntimeError("bug in trusted code /secret/path")

    config = make_config(hub, data_dir)
    client = HubClient.from_config(config, agent_id="agent-1", sleep=lambda s: time.sleep(0.001))
    agent = Agent(config, client, sandbox_runner=FakeSandbox(), verify_sha256=flaky_verify,
                  prepare_model=lambda artifact, model_format, dest: artifact)  # fmt: skip
    agent.run_once()
    agent.run_once()
    assert [(j, json.loads(raw)["reason"]) for j, raw in hub.failures] == [(12, "internal_error")]
    assert [j for j, _ in hub.results] == [13]
    assert b"secret" not in hub.failures[0][1]


def test_lease_lost_means_nothing_is_posted(hub, data_dir):
    hub.add_job()
    hub.lease_lost.add(12)

    def wait_for_renewal():
        deadline = time.monotonic() + 5
        while not hub.lease_calls and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.05)

    make_agent(hub, data_dir, FakeSandbox(before=wait_for_renewal)).run_once()
    assert hub.lease_calls == [12]  # renewal stopped at the first 409
    assert hub.results == [] and hub.failures == []
    assert Ledger(data_dir / "ledger.jsonl").read_entries() == []


def test_the_lease_is_renewed_while_the_sandbox_runs(hub, data_dir):
    hub.add_job()
    make_agent(hub, data_dir, FakeSandbox(before=lambda: time.sleep(0.3))).run_once()
    assert len(hub.lease_calls) >= 3
    assert len(hub.results) == 1


def test_hub_down_for_a_while_then_up(hub, data_dir):
    hub.add_job()
    hub.down_requests = 7  # heartbeats and claims fail at the connection level for a while
    agent = make_agent(hub, data_dir, FakeSandbox())
    thread = threading.Thread(target=agent.run_forever, daemon=True)
    thread.start()
    try:
        assert hub.posted.wait(10), "the agent never posted once the hub came back"
    finally:
        agent.stop()
        thread.join(5)
    assert not thread.is_alive()
    assert len(hub.results) == 1 and hub.failures == []
    assert hub.down_requests == 0


def test_a_post_that_cannot_reach_the_hub_is_re_sent_unchanged_after_a_restart(hub, data_dir):
    hub.add_job()
    hub.fail_posts_with = [503, 503]  # both attempts of the first post fail
    agent = make_agent(hub, data_dir, FakeSandbox())
    from evaluator.client import HubUnreachable

    with pytest.raises(HubUnreachable):
        agent.run_once()
    assert hub.results == []
    assert [item["job_id"] for item in AgentState(data_dir / "agent-state.json").pending().values()] == [12]

    restarted = make_agent(hub, data_dir, FakeSandbox())
    assert restarted.run_once() is False  # flushes the pending post, then finds no job
    [(job_id, raw)] = hub.results
    assert job_id == 12
    assert json.loads(raw)["agent_id"] == "agent-1"
    # one ledger entry for one released value, whose hash the posted body carries
    [entry] = Ledger(data_dir / "ledger.jsonl").read_entries()
    assert json.loads(raw)["ledger"]["sha256"] == entry.sha256
    assert AgentState(data_dir / "agent-state.json").pending() == {}
    restarted.run_once()
    assert len(hub.results) == 1  # never posted twice


def test_an_attempt_already_posted_is_not_posted_again(hub, data_dir):
    job = hub.add_job()
    AgentState(data_dir / "agent-state.json").mark_posted(attempt_key(job))
    sandbox = FakeSandbox()
    make_agent(hub, data_dir, sandbox).run_once()
    assert sandbox.calls == [] and hub.results == [] and hub.failures == []


def test_the_agent_takes_its_own_requeued_job_again_as_a_new_attempt(hub, data_dir):
    """A retryable failure requeues the job; at a one-agent site the same agent must be able to
    retry it (it used to refuse it as already posted and let the lease run out)."""
    first = hub.add_job(attempt=1)
    agent = make_agent(hub, data_dir, FakeSandbox(raises=SandboxUnavailable("the engine is away")))
    agent.run_once()
    [(_, raw)] = hub.failures
    failure = json.loads(raw)
    assert (failure["reason"], failure["attempt"]) == ("internal_error", first["attempt_token"])
    second = hub.add_job(attempt=2)  # the hub requeued it: same job id, a new attempt token
    agent._sandbox_runner = FakeSandbox()
    assert agent.run_once() is True
    [(job_id, raw)] = hub.results
    assert job_id == 12 and json.loads(raw)["attempt"] == second["attempt_token"]
    posted = AgentState(data_dir / "agent-state.json")
    assert posted.is_posted(attempt_key(first)) and posted.is_posted(attempt_key(second))


def test_job_ids_a_restored_hub_hands_out_again_are_new_work(hub, data_dir):
    hub.add_job(12)
    agent = make_agent(hub, data_dir, FakeSandbox())
    agent.run_once()
    hub.add_job(12)  # the hub was restored from a backup: job 12 again, another claim
    agent.run_once()
    assert [job_id for job_id, _ in hub.results] == [12, 12]


def test_a_409_on_the_result_drops_it_quietly(hub, data_dir):
    hub.add_job()
    hub.fail_posts_with = [409]
    agent = make_agent(hub, data_dir, FakeSandbox())
    agent.run_once()
    assert hub.results == []
    assert AgentState(data_dir / "agent-state.json").pending() == {}


def test_data_changed_under_a_running_job_is_not_what_the_sandbox_reads(hub, data_dir):
    """The sandbox reads the copy the agent verified: a change of the site's file after the check
    (in place, same inode) does not reach it, and the release is of the checked data."""
    hub.add_job()
    stored = data_dir / "tasks" / "3" / "features" / "features.npy"
    original = stored.read_bytes()
    seen = {}

    def change_the_site_file():
        with open(stored, "r+b") as fh:  # in place: a hard link would follow it
            fh.seek(len(original) - 64)
            fh.write(b"\x7f" * 64)
        seen["bytes"] = Path(sandbox.calls[0]["features_path"]).read_bytes()

    sandbox = FakeSandbox(before=change_the_site_file)
    make_agent(hub, data_dir, sandbox).run_once()
    assert seen["bytes"] == original and len(hub.results) == 1
    assert json.loads(hub.results[0][1])["runner"]["data"] == json.loads(
        (data_dir / "tasks" / "3" / "meta.json").read_text())["fingerprint"]  # fmt: skip
    # the next job finds the changed file: the site's fault, retryable, never the vendor's
    hub.add_job(13)
    make_agent(hub, data_dir, FakeSandbox()).run_once()
    [(job_id, raw)] = hub.failures
    assert (job_id, json.loads(raw)["reason"]) == (13, "data_unavailable")


def test_a_removed_data_file_is_the_sites_failure(hub, data_dir):
    hub.add_job()
    (data_dir / "tasks" / "3" / "features" / "features.npy").unlink()
    sandbox = FakeSandbox()
    make_agent(hub, data_dir, sandbox).run_once()
    assert sandbox.calls == [] and json.loads(hub.failures[0][1])["reason"] == "data_unavailable"


def test_a_broken_runner_image_is_the_sites_failure_not_the_vendors(hub, data_dir):
    """The model 'crashes', and so does the runner's self-test with a known-good model: the job
    fails as internal_error (retryable) instead of releasing the fallback as the vendor's."""
    hub.add_job()
    sandbox = FakeSandbox(raises=SandboxCrashed("the runner exited with 1"), broken_runner=True)
    make_agent(hub, data_dir, sandbox).run_once()
    assert hub.results == [] and sandbox.canary_calls == 1
    [(_, raw)] = hub.failures
    assert json.loads(raw)["reason"] == "internal_error"
    assert budget(data_dir).usage(task_id=3, vendor_id=VENDOR, split="public").spent == 0.0


def test_a_crash_with_a_sound_runner_is_the_models_and_releases_the_fallback(hub, data_dir):
    hub.add_job()
    sandbox = FakeSandbox(raises=SandboxCrashed("the runner exited with 1"))
    make_agent(hub, data_dir, sandbox).run_once()
    assert sandbox.canary_calls == 1 and hub.failures == [] and len(hub.results) == 1


def test_the_runner_image_is_pinned_by_id_for_the_job_and_recorded(hub, data_dir):
    hub.add_job()
    sandbox = FakeSandbox()
    config = make_config(hub, data_dir)
    client = HubClient.from_config(config, agent_id="agent-1", sleep=lambda s: None)
    agent = Agent(config, client, sandbox_runner=sandbox, resolve_image=lambda tag: "sha256:" + "e" * 64)
    agent.run_once()
    assert sandbox.calls[0]["image"] == "sha256:" + "e" * 64
    assert json.loads(hub.results[0][1])["runner"]["image"] == "sha256:" + "e" * 64


def test_a_runner_image_removed_before_the_job_is_the_sites_failure(hub, data_dir):
    hub.add_job()

    def gone(tag):
        raise SandboxUnavailable(f"sandbox image {tag!r} is not present")

    config = make_config(hub, data_dir)
    client = HubClient.from_config(config, agent_id="agent-1", sleep=lambda s: None)
    Agent(config, client, sandbox_runner=FakeSandbox(), resolve_image=gone).run_once()
    assert json.loads(hub.failures[0][1])["reason"] == "internal_error" and hub.results == []


@pytest.mark.parametrize(
    ("fine_tuning_allowed", "pool_size", "warmed"), [(True, 1, True), (False, 1, False), (True, 0, False)]
)
def test_a_scored_job_on_a_fine_tunable_task_warms_a_training_sandbox(
    hub, data_dir, fine_tuning_allowed, pool_size, warmed
):
    hub.add_job(fine_tuning_allowed=fine_tuning_allowed)
    agent = make_agent(hub, data_dir, FakeSandbox(), pool_size=pool_size)
    calls = []
    agent.warm_training_sandbox = lambda fmt, limits: calls.append((fmt, limits.memory_mb))  # type: ignore[method-assign]
    agent.run_once()
    assert len(hub.results) == 1  # warmed after the result was posted, never instead of it
    assert calls == ([("onnx", 1024)] if warmed else [])


@pytest.mark.parametrize("error", [SandboxUnavailable("engine down"), SandboxCrashed("the runner exited with 1")])
def test_a_job_that_did_not_score_warms_nothing(hub, data_dir, error):
    hub.add_job(fine_tuning_allowed=True)  # a crash is released as the fallback prediction: no run follows it
    agent = make_agent(hub, data_dir, FakeSandbox(raises=error))
    calls = []
    agent.warm_training_sandbox = lambda fmt, limits: calls.append(fmt)  # type: ignore[method-assign]
    agent.run_once()
    assert calls == []
