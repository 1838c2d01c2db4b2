"""The site agent's loop: claim a job, evaluate it in a sandbox, release only what policy allows.

One job, in order: check the job spec against the site's own policy (format, task type, metric
names, resource caps, artifact size, privacy terms) → reserve the release's privacy cost in the
site's budget (``evaluator.site_budget``) → download the artifact into a private per-job work
dir → verify its sha256 → prepare the model → run the sandbox on the features file only (labels
stay on the host) → validate predictions → compute the sufficient statistics of the public
split here, against the labels → add Gaussian noise for the release's rho → ledger → post.
The private split's statistics are sealed, exact, in the state file; when the hub lists the job
for a reveal (the task closed) the site reserves the private split's cost, draws fresh noise and
posts them. A background thread renews the lease every ``lease_seconds / 3`` (or the configured
interval); if the lease is lost nothing is posted.

What the vendor may observe is a release (docs/disclosure.md). A failure *before* the model sees
data (policy, artifact, the site's own data or engine trouble) carries no data: it leaves as one
coarse reason and its reservation is refunded. A failure *after* (crash, timeout, out of memory,
bad output, anything unexpected) would be a channel the model picks, so the site releases the
statistics of a fixed fallback prediction instead, priced like any release; the true reason is
logged and noted in the ledger, for the owner only. Unexpected errors before the model runs
become ``internal_error`` and the agent keeps serving.

Idempotency: every body the agent posts is first recorded as *pending* in a small state file
(``data_dir/agent-state.json``), then marked *posted* on the hub's 200. A post that cannot
reach the hub stays pending and is retried, with the same bytes, before the next claim, also
after a restart. What is remembered as posted is the *attempt* (the job id and the claim's
random ``attempt_token``), not the job: a job the hub requeued (a retryable failure, an expired
lease) is a new attempt this agent takes like any other, and the job ids a hub restored from a
backup hands out again are new attempts too. Posts carry the token as ``attempt``; the hub
refuses a superseded attempt's post (409), which ends that attempt here.

Failure reasons are final (the vendor's artifact or model, the site's policy, the owner's
decision: a second attempt would end the same way) or retryable (the site's own trouble: its
engine, runner image, disk or data). ``RETRYABLE_REASONS`` must equal the hub's.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import random
import shutil
import tempfile
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from evaluator import datasets, disclosure, metrics, site_health, splits
from evaluator.artifacts import ArtifactError
from evaluator.client import (
    ArtifactTooLarge,
    HubClient,
    HubRejected,
    HubUnreachable,
    LeaseLost,
    canonical_json,
)
from evaluator.config import AgentConfig, LimitsRefused, effective_limits
from evaluator.disclosure import ReleaseTerms
from evaluator.failpoints import failpoint
from evaluator.jsonlog import log_context
from evaluator.lease import LeaseKeeper
from evaluator.ledger import Ledger
from evaluator.privacy.mechanism import gaussian_release
from evaluator.privacy.statistics import CLASSIFICATION, sufficient_statistics
from evaluator.sandbox import MODEL_FORMATS, Limits, SandboxError, SandboxRun, SandboxUnavailable
from evaluator.site_budget import BudgetRefused, SiteBudget
from evaluator.state import AgentState
from evaluator.workdirs import claim_work_dir, sweep_orphans

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
        "withheld",
    }
)
# Site-side trouble, not the model's doing: the hub requeues these while attempts remain.
RETRYABLE_REASONS = frozenset({"internal_error", "data_unavailable"})
FINAL_REASONS = FAILURE_REASONS - RETRYABLE_REASONS
SUPPORTED_KINDS = frozenset({"evaluate", "train"})
DETAIL_CHARS = 2000  # owner-facing log truncation
LOG_TAIL_CHARS = 4000
NOTE_CHARS = 500  # owner-facing ledger note truncation


class JobFailure(Exception):
    """A job ends with a coarse failure reason (raised inside the agent)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        assert reason in FAILURE_REASONS
        super().__init__(detail or reason)
        self.reason = reason


@dataclass(frozen=True)
class Outcome:
    """What one evaluation job releases: ``metrics`` (noised statistics, with their terms) or a
    ``failure`` (a coarse reason). ``note`` stays at the site."""

    kind: str
    body: dict[str, Any]
    terms: ReleaseTerms | None = None
    note: str = ""


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
        training_session: Callable[..., Any] | None = None,
        resolve_image: Callable[[str], str] | None = None,
    ) -> None:
        self.config = config
        self.client = client
        self._sandbox_runner = sandbox_runner
        self._pool: Any = None  # evaluator.sandbox_pool.WarmPool while the agent serves
        self._shards: Any = None  # evaluator.shard_cache.ShardCache while the agent serves
        # The runner image's id for a tag (pinned per job); with an injected sandbox (tests), the tag.
        self._resolve_image = resolve_image or (None if sandbox_runner is None else (lambda tag: tag))
        self._verify_sha256 = verify_sha256
        self._prepare_model = prepare_model
        self._load_predictions = load_predictions
        self._training_session = training_session
        self.run_poll_seconds = 0.5
        self._image: str | None = config.image
        self.ledger = Ledger(config.ledger_path)
        self.state = AgentState(config.state_path)
        self.budget = SiteBudget(config.budget_path)
        self._stop = threading.Event()
        self._rng = rng or random.Random()
        self.quiet = site_health.QuietLog()  # repeating warnings: once every few minutes

    # -- collaborators, resolved lazily so tests can inject fakes --------------------------------

    def _sandbox(self) -> SandboxRunner:
        if self._pool is not None:
            return self._pool.run_prediction  # a warm container, or a cold run when none is pooled
        if self._sandbox_runner is None:
            from evaluator.sandbox_runtime import run_prediction_with

            self._sandbox_runner = run_prediction_with(self.config.sandbox_runtime)
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

    def image_id(self) -> str:
        """The runner image, pinned by id for one job: a tag moved or removed meanwhile changes
        nothing of what this job runs (a removed image fails as the site's fault)."""
        if self._resolve_image is None:
            from evaluator.sandbox import get_client, resolve_image

            engine: list[Any] = []  # one client for the agent's life, made at first use

            def resolve(tag: str) -> str:
                if not engine:
                    engine.append(get_client())
                return resolve_image(engine[0], tag)

            self._resolve_image = resolve
        return self._resolve_image(self.image())

    def image(self) -> str:
        if self._image is None:
            from sandbox_images.build import ensure_runner_image

            self._image = ensure_runner_image()
        return self._image

    def capabilities(self) -> dict[str, Any]:
        caps = self.config.limits
        return {
            "kinds": sorted(SUPPORTED_KINDS),
            "sandbox_runtime": self.config.sandbox_runtime,
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
            "privacy": {
                "max_epsilon_per_release": caps.max_epsilon_per_release,
                "max_vendor_epsilon": caps.max_vendor_epsilon,
                "max_task_epsilon": caps.max_task_epsilon,
            },
        }

    # -- the warm pool ------------------------------------------------------------------------

    def start_pool(self) -> Any:
        """Start the fast paths: the verified-shard cache and the warm pool of sandboxes
        (``pool_size`` > 0, the real engine only: an injected sandbox runner is kept). Pooled
        containers are started per (image, format, limits) once a job of that kind has run.
        ``run_forever`` starts and closes both; others call ``close_pool``."""
        if self._shards is None:
            from evaluator.shard_cache import ShardCache

            self._shards = ShardCache(data_dir=self.config.data_dir, work_root=self.config.work_dir)
        if self._pool is None and self._sandbox_runner is None and self.config.pool_size > 0:
            from evaluator.sandbox_pool import WarmPool

            self._pool = WarmPool(
                work_root=self.config.work_dir, size=self.config.pool_size,
                memory_mb=self.config.pool_memory_mb, runtime=self.config.sandbox_runtime,
                compile_models=self.config.compile_models,
            )  # fmt: skip
        return self._pool

    def close_pool(self) -> None:
        self.close_training_pool()
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()
        shards, self._shards = self._shards, None
        if shards is not None:
            shards.close()

    # -- the loop -----------------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()

    def run_forever(self) -> None:
        """Serve until ``stop()``; never exits on hub or job errors."""
        log.info("agent %s serving %s", self.client.agent_id, self.config.hub_url)
        try:  # build or find the runner image before holding any lease
            log.info("sandbox image: %s", self.image())
        except Exception:
            log.exception("the sandbox image is not ready; retrying at the first job")
        if self.config.sandbox_runtime != "runc" and self._resolve_image is None:
            try:
                from evaluator.sandbox_runtime import engine_runtimes

                if self.config.sandbox_runtime not in engine_runtimes():
                    log.error("sandbox_runtime %r is not known to the engine: every job will fail as the "
                              "site's fault until it is (evaluator/sandbox_runtime.py)", self.config.sandbox_runtime)
            except Exception as exc:
                log.warning("could not ask the engine for its runtimes: %s", exc)
        try:
            sweep_orphans(self.config.work_dir)
        except Exception:
            log.exception("could not clean up after a dead agent; continuing")
        self.reconcile_ledger()
        try:
            self.start_pool()
        except Exception:
            log.exception("could not start the warm sandbox pool; every job starts its sandbox cold")
        try:
            self._serve()
        finally:
            self.close_pool()

    def _serve(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                worked = self.run_once()
            except HubUnreachable as exc:
                failures += 1
                delay = self._backoff(failures)
                self.quiet.warning("hub", f"hub unreachable ({exc}); retrying with backoff")
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
            if failures:
                self.quiet.clear("hub", "the hub answers again")
            failures = 0
            if not worked:
                self._stop.wait(self.config.poll_interval_seconds)

    def reconcile_ledger(self) -> None:
        """The site's ledger against the hub's receipts, repairing (evaluator/ledger_reconcile.py):
        entries a dead agent left unsettled are confirmed or voided, releases a restored ledger
        lost are rebuilt from the hub's. Never fatal: the next start tries again."""
        from evaluator.ledger_reconcile import reconcile_with_hub

        try:
            report = reconcile_with_hub(config=self.config, client=self.client, repair=True)
        except Exception as exc:  # the hub away, an older hub without receipts
            log.warning("ledger not reconciled with the hub (%s); next try at the next start", exc)
            return
        if report.agrees:
            log.info("ledger agrees with the hub's receipts (%d entries)", report.site_entries)
        else:
            log.warning(
                "ledger reconciled with the hub: %d confirmed, %d voided, %d recovered, %d missing at the hub",
                len(report.confirmed), len(report.voided), len(report.missing_at_site), len(report.missing_at_hub),
            )  # fmt: skip

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
        health = site_health.check(self.config)
        self.client.heartbeat(self.capabilities(), health=health.to_json())
        self.apply_pending_work()
        if not health.ok:  # no claim it cannot finish; the owner sees why on the site's page
            self.quiet.warning("health", f"cannot work: {health.status.replace('_', ' ')}: {health.detail}; "
                                         "claiming nothing until it clears", topic=health.status)  # fmt: skip
            return False
        self.quiet.clear("health", "the agent can work again; claiming")
        job = self.client.claim()
        if job is None:
            return False
        with log_context(job=job.get("id"), task=(job.get("task") or {}).get("id")):  # JSON logs carry them
            self.process(job)
        return True

    def flush_pending(self) -> None:
        for key, item in self.state.pending().items():
            log.info("job %s: re-posting the pending %s", key, item["kind"])
            self._post(key, item.get("job_id", key), item["kind"], item["body"])

    def apply_pending_work(self) -> None:
        """Releases held results the owner decided on (hub or site CLI) and private statistics
        of the jobs the hub lists for a reveal (the finals of a closed task; the owner's close
        confirmation is their release approval). Both wait at the site until then: the site, not
        the hub, holds them. A job the hub does not list is never revealed."""
        work = self.client.pending_work()
        decisions = {str(d["job_id"]): d["decision"] for d in work.get("releases", [])}
        for job_id, listed in self.state.held().items():
            decision = listed.get("local_decision") or decisions.get(job_id)
            if decision not in ("approved", "refused"):
                continue
            if self.state.is_posted(attempt_key(listed.get("job") or {"id": job_id})):  # posted, not unheld
                self.state.unhold(job_id)
                continue
            held = self.state.claim("held", job_id, owner=self.client.agent_id)
            if held is None:  # another agent of the site is releasing it
                continue
            if decision == "approved" and "terms" in held:
                terms = ReleaseTerms.from_json(held["terms"])
                self._release(held["job"], "metrics", held["body"], terms=terms, split="public", note=held.get("note", ""))
            else:  # refused, or held by an older agent whose body this hub no longer takes
                if decision == "approved":
                    log.warning("job %s: the held result predates noised releases; withholding it", job_id)
                self.budget.refund(job_id=job_id, split="public")
                self._release(held["job"], "failure", {"agent_id": self.client.agent_id, "reason": "withheld"})
            self.state.unhold(job_id)
            log.info("job %s: held result %s", job_id, decision)
        for job_id in work.get("reveals", []):
            self._reveal(job_id)

    def _reveal(self, job_id: int | str) -> None:
        """Release one job's sealed private statistics: reserve the private split's cost, draw
        fresh noise, ledger, post to private-result."""
        key = _private_key(job_id)
        if self.state.is_posted(key):
            self.state.unseal(job_id)  # posted, then stopped before unsealing
            return
        if self.state.sealed(job_id) is None:
            # The hub lists it until the task's reveals end: say so once, not at every poll.
            if self.state.decline(job_id):
                log.warning("job %s: the hub asks for a reveal but this site kept no private statistics for it", job_id)
            return
        sealed = self.state.claim("sealed", job_id, owner=self.client.agent_id)
        if sealed is None:  # another agent of the site is revealing it
            return
        if "terms" not in sealed:
            log.warning("job %s: the sealed private scores predate noised releases; not revealing them", job_id)
            self.state.unseal(job_id)
            return
        terms = ReleaseTerms.from_json(sealed["terms"])
        ref = sealed["job"]
        try:
            self._reserve(ref, terms, "private")
        except JobFailure as exc:
            log.warning("job %s: private statistics not revealed: %s", job_id, exc)
            self.state.unseal(job_id)
            return
        exact = {block: np.asarray(value, dtype=np.float64) for block, value in sealed["statistics"].items()}
        body = {
            "agent_id": self.client.agent_id,
            "n_rows": int(sealed["n_rows"]),
            "statistics": gaussian_release(terms.spec, exact, rho=terms.rho),
            "privacy": terms.privacy(),
        }
        self._release(ref, "private", body, terms=terms, split="private")
        self.state.unseal(job_id)

    # -- one job ------------------------------------------------------------------------------

    def process(self, job: Mapping[str, Any]) -> None:
        job_id = job["id"]
        if self.state.is_posted(attempt_key(job)):
            log.warning("job %s: this attempt was already posted; not posting again", job_id)
            return
        interval = self.config.lease_renew_interval_seconds or _lease_seconds(job) / 3
        # The warm pool starts the next sandbox once this evaluation is over (result posted), not
        # beside it. A training run (long, no pooled sandbox) does not hold the pool back.
        evaluating = self._pool is not None and job.get("kind") != "train"
        quiet = self._pool.job_running() if evaluating else contextlib.nullcontext()
        with LeaseKeeper(self.client, job_id, interval) as keeper, quiet:
            if job.get("kind") == "train":
                self._train(job, keeper)
                return
            try:
                outcome = self._evaluate(job)
            except LeaseLost:
                log.warning("job %s: lease lost; abandoning it", job_id)
                return
            except HubRejected as exc:
                log.warning("job %s: hub refused a job call (%s); abandoning it", job_id, exc)
                return
            if keeper.lost.is_set():
                # The reservation stays: a retry of this job here reuses it.
                log.warning("job %s: lease lost while working; nothing posted", job_id)
                return
            if outcome.kind == "metrics" and job["task"].get("requires_release_approval"):
                assert outcome.terms is not None
                self.state.hold(
                    job_id,
                    {"job": _job_ref(job), "body": outcome.body, "terms": outcome.terms.to_json(), "note": outcome.note},
                )
                self.client.hold(job_id)
                log.info("job %s: result held at the site for the owner's release decision", job_id)
                return
            self._release(job, outcome.kind, outcome.body, terms=outcome.terms, split="public", note=outcome.note)
        if outcome.kind == "metrics" and not outcome.note:  # scored, not a fallback; after the post
            self._warm_training_for(job)

    def _warm_training_for(self, job: Mapping[str, Any]) -> None:
        """A scored submission on a task that allows fine-tuning: a run of it may follow, so a
        training sandbox of its kind is started ahead (approve -> round 0 then skips the start)."""
        if not job["task"].get("fine_tuning_allowed") or self.config.pool_size <= 0:
            return
        try:
            spec = check_job(job, self.config)
        except Exception:  # the job was checked before it ran; nothing to warm if that changed
            return
        self.warm_training_sandbox(spec["format"], spec["limits"])

    # -- federated fine-tuning ------------------------------------------------------------------

    def _train(self, job: Mapping[str, Any], keeper: LeaseKeeper) -> None:
        """Take part in a fine-tuning run for as long as it runs; the lease is kept meanwhile.
        Only a local failure is posted (coarse reason); a finished run needs no post."""
        job_id = job["id"]
        work, work_lock = None, None
        try:
            self.config.work_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            work = Path(tempfile.mkdtemp(prefix=f"run-{_safe(job_id)}-", dir=self.config.work_dir))
            work_lock = claim_work_dir(work)
            status = self._train_in(job, work, should_stop=lambda: keeper.lost.is_set() or self._stop.is_set())
            log.info("job %s: fine-tuning run ended: %s", job_id, status)
            return
        except (LeaseLost, HubRejected) as exc:
            log.warning("job %s: leaving the fine-tuning run (%s)", job_id, exc)
            return
        except HubUnreachable:
            raise
        except Exception as exc:
            reason = getattr(exc, "reason", None)
            from evaluator.federated.site import SiteRunError

            if reason not in FAILURE_REASONS or not isinstance(exc, (*FAILURE_TYPES, SiteRunError)):
                reason = "internal_error"
                log.exception("job %s: unexpected error in the fine-tuning run", job_id)
            else:
                log.warning("job %s: fine-tuning failed (%s): %s", job_id, reason, str(exc)[:DETAIL_CHARS])
            logs = getattr(exc, "logs", "")
            if logs:
                log.info("job %s sandbox log tail:\n%s", job_id, str(logs)[-LOG_TAIL_CHARS:])
        finally:
            if work is not None:
                shutil.rmtree(work, ignore_errors=True)
            if work_lock is not None:
                os.close(work_lock)
        if not keeper.lost.is_set():
            self._release(job, "failure", {"agent_id": self.client.agent_id, "reason": reason})

    def _train_in(self, job: Mapping[str, Any], work: Path, *, should_stop: Callable[[], bool]) -> str:
        from evaluator.federated.site import ReleaseContext, SiteParticipant, parse_run
        from evaluator.sandbox import TRAINABLE_FORMATS

        spec = check_job(job, self.config)
        if spec["format"] not in TRAINABLE_FORMATS:
            raise JobFailure("policy_violation", f"format {spec['format']} cannot be fine-tuned")
        run = parse_run(job.get("run"))
        task = job["task"]
        data = datasets.load_train_data(data_dir=self.config.data_dir, task_id=task["id"])
        if data.task_type != spec["task_type"] or data.n_features != spec["n_features"]:
            raise JobFailure("data_unavailable", "the stored train split does not match the task's spec")
        artifact = work / "artifact"
        try:
            self.client.download_artifact(job["id"], artifact, max_bytes=spec["max_artifact_bytes"])
        except ArtifactTooLarge as exc:
            raise JobFailure("artifact_mismatch", str(exc)) from None
        verify_sha256, prepare_model = self._artifacts()
        verify_sha256(artifact, spec["sha256"])
        model_path = Path(prepare_model(artifact, model_format=spec["format"], dest=work / "model"))
        inputs = data.write_sandbox_inputs(work)
        factory, warm = self._training_session, {}
        if factory is None:
            from evaluator.training_sandbox import TrainingSession

            factory, warm = TrainingSession, {"pool": self._training_pool()}
        session = factory(
            image=self.image(),
            model_path=model_path,
            model_format=spec["format"],
            train_features_path=inputs[0],
            train_labels_path=inputs[1],
            val_features_path=inputs[2],
            work_dir=work,
            limits=spec["limits"],
            **warm,
        )
        submission = job["submission"]
        try:
            participant = SiteParticipant(
                client=self.client,
                spec=run,
                session=session,
                data=data,
                ledger=self.ledger,
                context=ReleaseContext(job["id"], submission.get("id"), task.get("id"), submission.get("vendor_id")),
                should_stop=should_stop,
                poll_seconds=self.run_poll_seconds,
                work_dir=work,
            )
            return participant.run()
        finally:
            session.close()

    # -- warm training sandboxes (evaluator/training_pool.py) ------------------------------------

    _train_pool: Any = None  # the TrainingPool, made at the first use

    def _training_pool(self) -> Any:
        """Pre-started training sandboxes (``pool_size`` > 0): one per (image, format, limits)
        a run of which this agent has run or warmed (``warm_training_sandbox``). Like the cold
        training session it runs under runc. None when the pool is off or cannot start."""
        if self._train_pool is None and self.config.pool_size > 0:
            from evaluator.training_pool import TrainingPool

            try:
                self._train_pool = TrainingPool(
                    work_root=self.config.work_dir, size=1, memory_mb=self.config.pool_memory_mb, runtime="runc"
                )
            except Exception:
                log.exception("could not start the warm training pool; training sandboxes start cold")
        return self._train_pool

    def warm_training_sandbox(self, model_format: str, limits: Any) -> None:
        """Start a training sandbox ahead for runs of ``model_format`` under ``limits`` (e.g.
        after evaluating a fine-tunable submission: a run of it may follow). Never fatal."""
        from evaluator.sandbox import TRAINABLE_FORMATS
        from evaluator.sandbox_pool import PoolKey

        if model_format not in TRAINABLE_FORMATS or self._training_session is not None:
            return
        try:
            pool = self._training_pool()
            if pool is not None:
                pool.want(PoolKey(self.image_id(), model_format, limits, pool.runtime))
        except Exception as exc:
            log.warning("could not warm a training sandbox: %s", exc)

    def close_training_pool(self) -> None:
        pool, self._train_pool = self._train_pool, None
        if pool is not None:
            pool.close()

    def _evaluate(self, job: Mapping[str, Any]) -> Outcome:
        """What to release for one evaluation job (see the module docstring)."""
        job_id = job["id"]
        work, work_lock = None, None
        reserved = False
        try:
            self.config.work_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            work = Path(tempfile.mkdtemp(prefix=f"job-{_safe(job_id)}-", dir=self.config.work_dir))
            work_lock = claim_work_dir(work)
            spec = check_job(job, self.config)
            self._reserve(job, spec["terms"], "public")  # before the model can see anything
            reserved = True
            body, note = self._evaluate_in(job, spec, work)
            return Outcome("metrics", body, spec["terms"], note)
        except (LeaseLost, HubRejected, HubUnreachable):
            raise  # the reservation stays: a retry of this job here reuses it
        except Exception as exc:
            reason = _failure_reason(exc)
            if reason == "internal_error":
                log.exception("job %s: unexpected error", job_id)
            else:
                log.warning("job %s failed (%s): %s", job_id, reason, str(exc)[:DETAIL_CHARS])
            logs = getattr(exc, "logs", "")
            if logs:
                log.info("job %s sandbox log tail:\n%s", job_id, str(logs)[-LOG_TAIL_CHARS:])
            if reserved:  # a failure carries no data: nothing of the budget was spent
                self.budget.refund(job_id=job_id, split="public")
            return Outcome("failure", {"agent_id": self.client.agent_id, "reason": reason})
        finally:
            if work is not None:
                shutil.rmtree(work, ignore_errors=True)
            if work_lock is not None:
                os.close(work_lock)

    def _reserve(self, job: Mapping[str, Any], terms: ReleaseTerms, split: str) -> None:
        """Reserve one release of ``terms.rho`` on the site's budget; ``policy_violation`` if it
        would pass a cap. A retried job reuses its reservation."""
        try:
            self.budget.reserve(
                job_id=job["id"],
                task_id=job["task"]["id"],
                vendor_id=job["submission"].get("vendor_id"),
                split=split,
                rho=terms.rho,
                vendor_cap_rho=terms.vendor_cap_rho,
                task_cap_rho=terms.task_cap_rho,
            )
        except BudgetRefused as exc:
            raise JobFailure("policy_violation", str(exc)) from None

    def _evaluate_in(self, job: Mapping[str, Any], spec: Mapping[str, Any], work: Path) -> tuple[dict[str, Any], str]:
        """The public release's body and the owner's note; seals the private statistics."""
        task = job["task"]
        terms: ReleaseTerms = spec["terms"]
        # The data is copied into the job's folder and checked there: the sandbox reads that copy.
        if self._shards is not None:  # verified once per shard load, shared by the jobs that follow
            data = self._shards.load(task["id"])
        else:
            data = datasets.load_task_data(data_dir=self.config.data_dir, task_id=task["id"], pin_dir=work / "pinned")
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
        offset_kwargs: dict[str, Any] = {}
        if spec["weights_offset_sha256"] is not None:  # a fine-tuned entry: parent + offset D
            offset_path = work / "weights_offset.safetensors"
            try:
                self.client.download_weights_offset(job["id"], offset_path, max_bytes=spec["max_artifact_bytes"] * 4 + MiB)
            except ArtifactTooLarge as exc:
                raise JobFailure("artifact_mismatch", str(exc)) from None
            verify_sha256(offset_path, spec["weights_offset_sha256"])
            offset_path.chmod(0o644)
            offset_kwargs["weights_offset_path"] = offset_path

        image_id = self.image_id()
        predictions, note = self._predict(job, spec, work, data, Path(model_path), offset_kwargs, image_id)
        public_rows, private_rows = _split(
            data.row_count, float(task.get("public_split_fraction", 1.0)), int(task.get("split_seed", 0))
        )
        exact = sufficient_statistics(terms.spec, data.labels[public_rows], predictions[public_rows])
        body: dict[str, Any] = {
            "agent_id": self.client.agent_id,
            "n_rows": data.row_count - len(private_rows),
            "statistics": gaussian_release(terms.spec, exact, rho=terms.rho),
            "privacy": terms.privacy(),
            # What this job ran with: the runner image's id and the keyed fingerprint of the data
            # it verified (the hub records both with the result).
            "runner": {"image": image_id, "data": data.fingerprint},
        }
        if len(private_rows):
            # Computed now, on the same run; noised and released only if the hub lists the job
            # for a reveal when the task closes.
            private = sufficient_statistics(terms.spec, data.labels[private_rows], predictions[private_rows])
            self.state.seal(
                job["id"],
                {"job": _job_ref(job), "statistics": {b: v.tolist() for b, v in private.items()},
                 "n_rows": len(private_rows), "terms": terms.to_json()},
            )  # fmt: skip
        return body, note

    def _predict(
        self,
        job: Mapping[str, Any],
        spec: Mapping[str, Any],
        work: Path,
        data: Any,
        model_path: Path,
        offset_kwargs: Mapping[str, Any],
        image_id: str,
    ) -> tuple[np.ndarray, str]:
        """The model's predictions on every row of the shard, checked, with an empty note; or,
        when anything goes wrong once the model may have seen the data, the fallback prediction
        and the true reason (for the owner's ledger only)."""
        terms: ReleaseTerms = spec["terms"]
        limits = spec["limits"]
        try:
            run = self._sandbox()(
                image=image_id,
                model_path=model_path,
                model_format=spec["format"],
                features_path=data.features_path,  # the features file only; labels stay here
                work_dir=work,
                limits=limits,
                batch_size=self.config.batch_size,
                **offset_kwargs,
            )
            log.info("job %s: sandbox exit %s in %.1fs", job["id"], run.exit_code, run.duration_seconds)
            raw = self._predictions_loader()(
                Path(run.predictions_path).parent,
                n_rows=data.row_count,
                task_type=spec["task_type"],
                n_classes=data.n_classes,
                max_bytes=limits.max_output_mb * MiB,
            )
            if terms.spec.task_type in CLASSIFICATION:
                k = terms.spec.n_classes or 2
                return metrics.class_probabilities(raw, n_rows=data.row_count, n_classes=k), ""
            return metrics.regression_values(raw, n_rows=data.row_count), ""
        except SandboxUnavailable:
            raise  # the engine or the image: the site's own trouble, not the model's doing
        except Exception as exc:
            reason = _failure_reason(exc)
            if reason != "internal_error" and not self._runner_sound(spec, work, data, image_id):
                # The site's own runner fails a known-good model too: not the vendor's doing.
                raise SandboxUnavailable(f"the runner image {image_id} is broken (the model failed: {reason})") from exc
            if reason == "internal_error":
                log.exception("job %s: unexpected error once the model ran; releasing the fallback", job["id"])
            else:
                log.warning(
                    "job %s: the model failed (%s): %s; releasing the fallback statistics",
                    job["id"], reason, str(exc)[:DETAIL_CHARS],
                )  # fmt: skip
            logs = getattr(exc, "logs", "")
            if logs:
                log.info("job %s sandbox log tail:\n%s", job["id"], str(logs)[-LOG_TAIL_CHARS:])
            note = f"fallback released; the model failed: {reason}: {exc}"[:NOTE_CHARS]
            return disclosure.fallback_predictions(terms.spec, data.row_count), note

    def _runner_sound(self, spec: Mapping[str, Any], work: Path, data: Any, image_id: str) -> bool:
        from evaluator.runner_check import runner_is_sound

        return runner_is_sound(
            sandbox_runner=self._sandbox(), load_predictions=self._predictions_loader(), image=image_id,
            work_dir=work, n_features=data.n_features, task_type=spec["task_type"], n_classes=data.n_classes,
            limits=spec["limits"],
        )  # fmt: skip

    def _release(
        self,
        job: Mapping[str, Any],
        kind: str,
        body: dict[str, Any],
        *,
        terms: ReleaseTerms | None = None,
        split: str | None = None,
        note: str = "",
    ) -> None:
        """Budget, ledger, pending state, then the post. `kind`: metrics, private or failure.

        A release of statistics commits its reservation first (never less spent than may have
        left), then writes its ledger entry with the release's rho, epsilon and delta."""
        token = job.get("attempt_token")
        attempt = token if kind != "private" and isinstance(token, str) and token else None
        if attempt is not None:
            body = {**body, "attempt": attempt}  # which attempt this is: the hub refuses a superseded one
        payload = canonical_json(body)
        task = job.get("task") or {}
        submission = job.get("submission") or {}
        common = {
            "job_id": job["id"],
            "submission_id": submission.get("id"),
            "task_id": task.get("id"),
            "vendor_id": submission.get("vendor_id"),
            "payload": payload,
            "note": note,
            "attempt": attempt,
            "state": "prepared",  # write-ahead: released just before the post, confirmed on its 200
        }
        if kind == "failure":
            entry = self.ledger.append(kind="failure", **common)
            receipt: dict[str, Any] = {"sha256": entry.sha256, "bytes": entry.bytes}
        else:
            assert terms is not None and split in ("public", "private")
            split = "private" if kind == "private" else split
            self.budget.commit(
                job_id=job["id"], split=split, task_id=task.get("id"), vendor_id=submission.get("vendor_id"), rho=terms.rho
            )
            entry = self.ledger.append(
                kind="metrics", rho=terms.rho, epsilon=terms.epsilon, delta=terms.delta, split=split, **common
            )
            receipt = {
                "sha256": entry.sha256, "bytes": entry.bytes,
                "rho": terms.rho, "epsilon": terms.epsilon, "delta": terms.delta,
            }  # fmt: skip
        failpoint("ledger_prepared")
        body = {**body, "ledger": receipt}
        key = _private_key(job["id"]) if kind == "private" else attempt_key(job)
        self.state.add_pending(key, kind, body, job_id=job["id"])
        failpoint("pending_written")
        self._post(key, job["id"], kind, body)

    def _post(self, key: str, job_id: int | str, kind: str, body: Mapping[str, Any]) -> None:
        post = {
            "metrics": self.client.post_result,
            "private": self.client.post_private_result,
            "failure": self.client.post_failure,
        }[kind]
        receipt = body.get("ledger") or {}
        entry = (str(job_id), str(body.get("attempt") or ""), str(receipt.get("sha256", "")))
        self.ledger.mark(entry, "released")
        try:
            post(job_id, body)
        except LeaseLost as exc:
            log.warning("job %s: the hub says this attempt no longer counts (%s); %s not recorded", job_id, exc, kind)
            self.ledger.mark(entry, "voided", why=f"hub: {exc}")
            self.state.drop_pending(key)
            return
        except HubRejected as exc:
            log.error("job %s: the hub refused the %s: %s", job_id, kind, exc)
            self.ledger.mark(entry, "voided", why=f"hub: {exc}")
            self.state.drop_pending(key)
            return
        # HubUnreachable propagates: the body stays pending and is re-posted, unchanged.
        failpoint("posted")
        self.ledger.mark(entry, "confirmed")
        self.state.mark_posted(key)
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


@functools.lru_cache(maxsize=16)
def _split(n_rows: int, public_fraction: float, seed: int) -> tuple[Any, np.ndarray]:
    """``splits.public_private_split``, computed once per shard (a permutation and two sorts:
    0.1 s at 1M rows). All rows public (the default): a slice, so no copy is indexed out."""
    if public_fraction >= 1.0:
        return slice(None), np.empty(0, dtype=np.int64)
    public, private = splits.public_private_split(n_rows, public_fraction=public_fraction, seed=seed)
    public.flags.writeable = private.flags.writeable = False  # shared by the jobs that follow
    return public, private


def _failure_reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    if reason not in FAILURE_REASONS or not isinstance(exc, FAILURE_TYPES):
        return "internal_error"
    return str(reason)


def attempt_key(job: Mapping[str, Any]) -> str:
    """What the agent remembers a public post by: the job and the claim's attempt token (the
    attempt number where a hub sends no token)."""
    token = job.get("attempt_token")
    if isinstance(token, str) and token:
        return f"{job['id']}@{token}"
    return f"{job['id']}#{job.get('attempt', 0)}"


def _private_key(job_id: int | str) -> str:
    """The state key of a job's private reveal (its public result is keyed by the job id)."""
    return f"{job_id}/private"


def _job_ref(job: Mapping[str, Any]) -> dict[str, Any]:
    """What a later release of this job needs from its spec (kept in the site's state file)."""
    return {
        "id": job["id"],
        "attempt": job.get("attempt"),
        "attempt_token": job.get("attempt_token"),
        "task": {"id": job["task"]["id"]},
        "submission": {"id": job["submission"].get("id"), "vendor_id": job["submission"].get("vendor_id")},
    }


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
    the site's size cap, and the privacy terms must be present and within the site's caps
    (``disclosure.release_terms``; a regression task needs its ``target_range``).
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
    metrics.check_metric_names(task_type, disclosure.metric_names(task.get("metrics") or []))
    terms = disclosure.release_terms(task, caps=config.limits)
    if terms.spec.n_classes is not None and n_classes is not None and terms.spec.n_classes != n_classes:
        raise refuse("the release's class count does not match the task's")
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
    offset = submission.get("weights_offset")  # the hub's {"sha256", "size"} for a fine-tuned entry
    offset_sha = offset.get("sha256") if isinstance(offset, Mapping) else submission.get("weights_offset_sha256")
    if offset is not None and not isinstance(offset, Mapping):
        raise refuse("weights_offset must be an object")
    if offset_sha is not None:
        if not isinstance(offset_sha, str) or len(offset_sha) != 64 or any(
            c not in "0123456789abcdef" for c in offset_sha.lower()
        ):
            raise refuse("weights_offset_sha256 is malformed")
        if fmt not in ("torchscript", "python_package"):
            raise refuse(f"a weights offset cannot apply to {fmt}")
        offset_sha = offset_sha.lower()
    return {
        "format": fmt,
        "sha256": sha.lower(),
        "weights_offset_sha256": offset_sha,
        "task_type": task_type,
        "n_features": n_features,
        "n_classes": n_classes,
        "terms": terms,
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
