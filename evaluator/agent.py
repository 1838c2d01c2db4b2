"""The site agent's loop: claim a job, evaluate it in a sandbox, release only what policy allows.

One job, in order: check the job spec against the site's own policy (format, task type, metric
names, resource caps, artifact size) → download the artifact into a private per-job work dir →
verify its sha256 → prepare the model → run the sandbox on the features file only (labels stay
on the host) → validate predictions → compute metrics here, against the labels → apply the
disclosure policy → append the ledger entry → post. A background thread renews the lease every
``lease_seconds / 3`` (or the configured interval); if the lease is lost nothing is posted.

Failures leave the site as one coarse reason from a fixed list; details (messages, sandbox logs)
are logged locally, truncated, for the owner only. Unexpected errors become ``internal_error``
and the agent keeps serving.

Idempotency: every body the agent posts is first recorded as *pending* in a small state file
(``data_dir/agent-state.json``), then marked *posted* on the hub's 200. A post that cannot
reach the hub stays pending and is retried, with the same bytes, before the next claim, also
after a restart; a posted job id is never posted again.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import random
import shutil
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from evaluator import datasets, disclosure, metrics
from evaluator.artifacts import ArtifactError
from evaluator.client import (
    ArtifactTooLarge,
    HubClient,
    HubError,
    HubRejected,
    HubUnreachable,
    LeaseLost,
    canonical_json,
)
from evaluator.config import AgentConfig, LimitsRefused, effective_limits
from evaluator.ledger import Ledger
from evaluator.sandbox import MODEL_FORMATS, Limits, SandboxError, SandboxRun

log = logging.getLogger(__name__)

MiB = 1024 * 1024
FAILURE_REASONS = frozenset(
    {
        "timeout",
        "out_of_memory",
        "invalid_output",
        "crashed",
        "artifact_mismatch",
        "invalid_artifact",
        "data_unavailable",
        "policy_violation",
        "internal_error",
    }
)
SUPPORTED_KINDS = frozenset({"evaluate"})
DETAIL_CHARS = 2000  # owner-facing log truncation
LOG_TAIL_CHARS = 4000


class JobFailure(Exception):
    """A job ends with a coarse failure reason (raised inside the agent)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        assert reason in FAILURE_REASONS
        super().__init__(detail or reason)
        self.reason = reason


# --- local state: pending and posted bodies ---------------------------------------------------


class AgentState:
    """Posted job ids and pending bodies, shared safely by agents on one data dir (flock)."""

    def __init__(self, path: str | os.PathLike[str], *, keep_posted: int = 10_000) -> None:
        self.path = Path(path)
        self.keep_posted = keep_posted

    @contextlib.contextmanager
    def _locked(self, *, write: bool) -> Iterator[dict[str, Any]]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
            except FileNotFoundError:
                data = {}
            data.setdefault("posted", [])
            data.setdefault("pending", {})
            yield data
            if write:
                data["posted"] = data["posted"][-self.keep_posted :]
                fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".state-")
                with os.fdopen(fd, "w", encoding="utf-8") as fh:
                    json.dump(data, fh)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, self.path)
        finally:
            os.close(lock_fd)

    def is_posted(self, job_id: int | str) -> bool:
        with self._locked(write=False) as data:
            return str(job_id) in data["posted"]

    def pending(self) -> dict[str, dict[str, Any]]:
        with self._locked(write=False) as data:
            return dict(data["pending"])

    def add_pending(self, job_id: int | str, kind: str, body: Mapping[str, Any]) -> None:
        with self._locked(write=True) as data:
            data["pending"][str(job_id)] = {"kind": kind, "body": dict(body)}

    def mark_posted(self, job_id: int | str) -> None:
        with self._locked(write=True) as data:
            data["pending"].pop(str(job_id), None)
            if str(job_id) not in data["posted"]:
                data["posted"].append(str(job_id))

    def drop_pending(self, job_id: int | str) -> None:
        with self._locked(write=True) as data:
            data["pending"].pop(str(job_id), None)


# --- lease renewal ----------------------------------------------------------------------------


class LeaseKeeper:
    """Renews one job's lease in a background thread until stopped or the lease is lost."""

    def __init__(self, client: HubClient, job_id: int | str, interval: float) -> None:
        self.client = client
        self.job_id = job_id
        self.interval = max(0.05, interval)
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{job_id}", daemon=True)

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval + 5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.client.renew_lease(self.job_id)
            except LeaseLost:
                log.warning("job %s: lease lost; its result will not be posted", self.job_id)
                self.lost.set()
                return
            except HubError as exc:  # unreachable or refused: keep trying until the lease ends
                log.warning("job %s: lease renewal failed: %s", self.job_id, exc)
            except Exception:  # a renewal bug must not kill the job silently
                log.exception("job %s: lease renewal crashed", self.job_id)


# --- the agent --------------------------------------------------------------------------------

SandboxRunner = Callable[..., SandboxRun]


class Agent:
    def __init__(
        self,
        config: AgentConfig,
        client: HubClient,
        *,
        sandbox_runner: SandboxRunner | None = None,
        verify_sha256: Callable[..., Any] | None = None,
        prepare_model: Callable[..., Path] | None = None,
        load_predictions: Callable[..., Any] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.client = client
        self._sandbox_runner = sandbox_runner
        self._verify_sha256 = verify_sha256
        self._prepare_model = prepare_model
        self._load_predictions = load_predictions
        self._image: str | None = config.image
        self.ledger = Ledger(config.ledger_path)
        self.state = AgentState(config.state_path)
        self._stop = threading.Event()
        self._rng = rng or random.Random()

    # -- collaborators, resolved lazily so tests can inject fakes --------------------------------

    def _sandbox(self) -> SandboxRunner:
        if self._sandbox_runner is None:
            from evaluator.sandbox import run_prediction

            self._sandbox_runner = run_prediction
        return self._sandbox_runner

    def _artifacts(self) -> tuple[Callable[..., Any], Callable[..., Path]]:
        if self._verify_sha256 is None or self._prepare_model is None:
            from evaluator import artifacts

            self._verify_sha256 = self._verify_sha256 or artifacts.verify_sha256
            self._prepare_model = self._prepare_model or artifacts.prepare_model
        return self._verify_sha256, self._prepare_model

    def _predictions_loader(self) -> Callable[..., Any]:
        if self._load_predictions is None:
            from evaluator.outputs import load_predictions

            self._load_predictions = load_predictions
        return self._load_predictions

    def image(self) -> str:
        if self._image is None:
            from sandbox_images.build import ensure_runner_image

            self._image = ensure_runner_image()
        return self._image

    def capabilities(self) -> dict[str, Any]:
        caps = self.config.limits
        return {
            "kinds": sorted(SUPPORTED_KINDS),
            "formats": sorted(MODEL_FORMATS),
            "task_types": list(metrics.TASK_TYPES),
            "metrics": sorted(metrics.REGISTRY),
            "limits": {
                "memory_mb": caps.max_memory_mb,
                "cpus": caps.max_cpus,
                "timeout_seconds": caps.max_timeout_seconds,
                "max_output_mb": caps.max_output_mb,
                "artifact_mb": caps.max_artifact_mb,
            },
        }

    # -- the loop -----------------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()

    def run_forever(self) -> None:
        """Serve until ``stop()``; never exits on hub or job errors."""
        failures = 0
        log.info("agent %s serving %s", self.client.agent_id, self.config.hub_url)
        try:  # build or find the runner image before holding any lease
            log.info("sandbox image: %s", self.image())
        except Exception:
            log.exception("the sandbox image is not ready; retrying at the first job")
        while not self._stop.is_set():
            try:
                worked = self.run_once()
            except HubUnreachable as exc:
                failures += 1
                delay = self._backoff(failures)
                log.warning("hub unreachable (%s); next try in %.1fs", exc, delay)
                self._stop.wait(delay)
                continue
            except HubRejected as exc:  # e.g. a revoked token: keep trying, slowly
                failures += 1
                delay = max(self.config.poll_interval_seconds, self._backoff(failures))
                log.error("hub refused the agent (%s); next try in %.1fs", exc, delay)
                self._stop.wait(delay)
                continue
            except Exception:
                log.exception("unexpected error in the agent loop")
                self._stop.wait(self.config.poll_interval_seconds)
                continue
            failures = 0
            if not worked:
                self._stop.wait(self.config.poll_interval_seconds)

    def _backoff(self, failures: int) -> float:
        retry = self.config.retry
        ceiling = min(retry.backoff_max_seconds, retry.backoff_base_seconds * 2 ** (failures - 1))
        return ceiling / 2 + self._rng.uniform(0, ceiling / 2)

    def run_once(self) -> bool:
        """Flush pending posts, heartbeat, claim and process at most one job.

        Returns True when a job was processed, False when none was queued. Raises
        ``HubUnreachable`` (and other ``HubError``) when the hub cannot be talked to.
        """
        self.flush_pending()
        self.client.heartbeat(self.capabilities())
        job = self.client.claim()
        if job is None:
            return False
        self.process(job)
        return True

    def flush_pending(self) -> None:
        for job_id, item in self.state.pending().items():
            log.info("job %s: re-posting the pending %s", job_id, item["kind"])
            self._post(job_id, item["kind"], item["body"])

    # -- one job ------------------------------------------------------------------------------

    def process(self, job: Mapping[str, Any]) -> None:
        job_id = job["id"]
        if self.state.is_posted(job_id):
            log.warning("job %s: already posted; not posting again", job_id)
            return
        interval = self.config.lease_renew_interval_seconds or _lease_seconds(job) / 3
        with LeaseKeeper(self.client, job_id, interval) as keeper:
            try:
                kind, body = self._evaluate(job)
            except LeaseLost:
                log.warning("job %s: lease lost; abandoning it", job_id)
                return
            except HubRejected as exc:
                log.warning("job %s: hub refused a job call (%s); abandoning it", job_id, exc)
                return
            if keeper.lost.is_set():
                log.warning("job %s: lease lost while working; nothing posted", job_id)
                return
            self._release(job, kind, body)

    def _evaluate(self, job: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        """Returns the body to release: ("metrics", {...}) or ("failure", {...})."""
        job_id = job["id"]
        work = None
        try:
            self.config.work_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            work = Path(tempfile.mkdtemp(prefix=f"job-{_safe(job_id)}-", dir=self.config.work_dir))
            return "metrics", self._evaluate_in(job, work)
        except (LeaseLost, HubRejected, HubUnreachable):
            raise
        except Exception as exc:
            reason = getattr(exc, "reason", None)
            if reason not in FAILURE_REASONS or not isinstance(exc, FAILURE_TYPES):
                reason = "internal_error"
                log.exception("job %s: unexpected error", job_id)
            else:
                log.warning("job %s failed (%s): %s", job_id, reason, str(exc)[:DETAIL_CHARS])
            logs = getattr(exc, "logs", "")
            if logs:
                log.info("job %s sandbox log tail:\n%s", job_id, str(logs)[-LOG_TAIL_CHARS:])
            return "failure", {"agent_id": self.client.agent_id, "reason": reason}
        finally:
            if work is not None:
                shutil.rmtree(work, ignore_errors=True)

    def _evaluate_in(self, job: Mapping[str, Any], work: Path) -> dict[str, Any]:
        spec = check_job(job, self.config)
        task = job["task"]
        data = datasets.load_task_data(data_dir=self.config.data_dir, task_id=task["id"])
        if (
            data.task_type != spec["task_type"]
            or data.n_features != spec["n_features"]
            or (spec["n_classes"] is not None and data.n_classes != spec["n_classes"])
        ):
            raise JobFailure("data_unavailable", "the stored shard does not match the task's spec")

        artifact = work / "artifact"
        try:
            self.client.download_artifact(job["id"], artifact, max_bytes=spec["max_artifact_bytes"])
        except ArtifactTooLarge as exc:
            raise JobFailure("artifact_mismatch", str(exc)) from None
        verify_sha256, prepare_model = self._artifacts()
        verify_sha256(artifact, spec["sha256"])
        model_path = prepare_model(artifact, model_format=spec["format"], dest=work / "model")

        limits = spec["limits"]
        run = self._sandbox()(
            image=self.image(),
            model_path=Path(model_path),
            model_format=spec["format"],
            features_path=data.features_path,  # the features file only; labels stay here
            work_dir=work,
            limits=limits,
            batch_size=self.config.batch_size,
        )
        log.info("job %s: sandbox exit %s in %.1fs", job["id"], run.exit_code, run.duration_seconds)
        predictions = self._predictions_loader()(
            Path(run.predictions_path).parent,
            n_rows=data.row_count,
            task_type=spec["task_type"],
            n_classes=data.n_classes,
            max_bytes=limits.max_output_mb * MiB,
        )
        values = metrics.compute_metrics(
            spec["task_type"],
            spec["policy"].keys(),
            data.labels,
            predictions,
            n_classes=data.n_classes,
        )
        released = disclosure.disclose(values, spec["policy"])
        return {"agent_id": self.client.agent_id, "metrics": released, "n_rows": data.row_count}

    def _release(self, job: Mapping[str, Any], kind: str, body: dict[str, Any]) -> None:
        """Ledger first, then pending state, then the post."""
        payload = canonical_json(body)
        task = job.get("task") or {}
        submission = job.get("submission") or {}
        entry = self.ledger.append(
            job_id=job["id"],
            submission_id=submission.get("id"),
            task_id=task.get("id"),
            kind="metrics" if kind == "metrics" else "failure",
            payload=payload,
        )
        if kind == "metrics":
            body = {**body, "ledger": {"sha256": entry.sha256, "bytes": entry.bytes}}
        self.state.add_pending(job["id"], kind, body)
        self._post(job["id"], kind, body)

    def _post(self, job_id: int | str, kind: str, body: Mapping[str, Any]) -> None:
        post = self.client.post_result if kind == "metrics" else self.client.post_failure
        try:
            post(job_id, body)
        except LeaseLost:
            log.warning("job %s: the hub says another agent holds it; %s not recorded", job_id, kind)
            self.state.drop_pending(job_id)
            return
        except HubRejected as exc:
            log.error("job %s: the hub refused the %s: %s", job_id, kind, exc)
            self.state.drop_pending(job_id)
            return
        # HubUnreachable propagates: the body stays pending and is re-posted, unchanged.
        self.state.mark_posted(job_id)
        log.info("job %s: %s posted", job_id, kind)


# Exceptions whose ``reason`` may leave the site; any other exception is "internal_error".
FAILURE_TYPES: tuple[type[BaseException], ...] = (
    JobFailure,
    SandboxError,  # includes InvalidOutput raised by evaluator.outputs
    ArtifactError,  # ArtifactMismatch, InvalidArtifact
    LimitsRefused,
    datasets.DatasetError,
    metrics.MetricError,
    metrics.InvalidPredictions,
    disclosure.DisclosureError,
)


def _lease_seconds(job: Mapping[str, Any]) -> float:
    value = job.get("lease_seconds")
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    return 60.0


def _safe(job_id: Any) -> str:
    return "".join(c for c in str(job_id) if c.isalnum())[:32] or uuid.uuid4().hex[:8]


def check_job(job: Mapping[str, Any], config: AgentConfig) -> dict[str, Any]:
    """Check a job spec against the site's own policy; raise ``JobFailure("policy_violation")``.

    The hub is not trusted here: the kind, format, task type and metrics must be known, the
    resource limits are capped by the site (``config.effective_limits``), the artifact must fit
    the site's size cap, and decimals are capped by ``limits.max_decimals``.
    """

    def refuse(why: str) -> JobFailure:
        return JobFailure("policy_violation", why)

    if job.get("kind", "evaluate") not in SUPPORTED_KINDS:
        raise refuse(f"unsupported job kind {job.get('kind')!r}")
    task, submission = job.get("task"), job.get("submission")
    if not isinstance(task, Mapping) or not isinstance(submission, Mapping):
        raise refuse("job has no task or submission")
    fmt = submission.get("format")
    if fmt not in MODEL_FORMATS:
        raise refuse(f"unsupported format {fmt!r}")
    sha = submission.get("sha256")
    if not isinstance(sha, str) or len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha.lower()):
        raise refuse("submission sha256 is malformed")
    task_type = task.get("task_type")
    if task_type not in metrics.TASK_TYPES:
        raise refuse(f"unsupported task type {task_type!r}")
    input_spec = task.get("input_spec") or {}
    n_features = input_spec.get("n_features")
    n_classes = input_spec.get("n_classes")
    if task_type == "binary_classification":
        n_classes = 2
    elif task_type == "regression":
        n_classes = None
    policy = disclosure.metric_policy(task.get("metrics") or [], max_decimals=config.limits.max_decimals)
    metrics.check_metric_names(task_type, policy)
    limits_values = effective_limits(task.get("resource_limits"), config.limits)
    try:
        limits = Limits(**limits_values)
    except (TypeError, ValueError) as exc:
        raise refuse(f"resource limits: {exc}") from None
    cap = config.limits.max_artifact_mb * MiB
    size = submission.get("size")
    if isinstance(size, int) and not isinstance(size, bool) and size > 0:
        if size > cap:
            raise refuse(f"artifact of {size} bytes exceeds the site's cap of {cap}")
        max_bytes = size  # more bytes than declared is a mismatch; stop there
    else:
        max_bytes = cap
    return {
        "format": fmt,
        "sha256": sha.lower(),
        "task_type": task_type,
        "n_features": n_features,
        "n_classes": n_classes,
        "policy": policy,
        "limits": limits,
        "max_artifact_bytes": max_bytes,
    }


def run_agent(config: AgentConfig, *, once: bool = False) -> Agent:
    """Build the real client and agent from a config and serve (used by ``__main__``)."""
    client = HubClient.from_config(config)
    agent = Agent(config, client)
    if once:
        agent.run_once()
    else:
        agent.run_forever()
    return agent
