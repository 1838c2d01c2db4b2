"""The AFTER experiments of the attack replay (docs/disclosure.md), against a live deployment.

Shared by ``benchmarks/attack_replay.py`` (the full run) and ``tests/attacks`` (a short run):
``plan`` says which sites and tasks a run needs; ``Replay`` uploads the hostile models as the
vendor, records what the vendor observes, and measures each channel.

- **Constant channels** (``constant_*``): the same model bytes run on two data sets that differ
  only in the secret the model reads (variant A: every site's secret 0; B: 1, or codes 1-3).
  The failure model crashes / answers NaN / runs out of memory as its code says; the timing
  model sleeps 0 or 3 steps; the per-site carrier puts a 12-bit secret of each site's row into
  that site's log loss (per-site values hidden). ``transcript.Poller`` records every vendor
  endpoint for both variants; identical transcripts (DP values aside) = 0 bits.
- **Metric channel** (``metric_*``): K submissions that each move the released count of correct
  rows by one row's private bit; each release decoded alone, and all K averaged, against the DP
  bounds (``bounds``). The decoder is the DP adversary: it knows every other row.
- **Budgets** (``budget_*``): two agents at one site whose own cap admits 3 releases while the
  hub admits 8; the hub's cap of 3 with 8 uploads; self-service organizations against the task's
  total. Counted in the sites' ledgers and on the hub; refusals checked at upload.
- **Ladder** (``ladder_*``): a vendor that knows half the rows' labels probes the other half
  with random guesses, predicting more known rows right each time so that each job "improves";
  labels recovered with and without the Ladder, same budget, same rows, same model bytes.
- **Residual** (``residual_*``, the full run only): a model that sleeps past the padded release
  time moves its release to the next multiple (documented, unpriced).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from attacks import models
from attacks.bounds import Budget, normal_cdf, wilson
from attacks.live import (
    Deployment,
    Shard,
    SitePlan,
    TaskPlan,
    epsilon_admitting,
    hub_jobs,
    hub_quota_used,
    hub_releases,
    hub_submissions,
    site_releases,
)
from attacks.transcript import Poller, Tracked, change_times, compare
from attacks.vendor_view import Upload, VendorApi

SITES = ["site-a", "site-b", "site-c"]
BUDGET_SITE = "site-d"  # two agents; its own caps admit Settings.budget_cap releases per task
ROWS_PER_SITE = 40
DATA_SEED = 20240901
EPSILON, DELTA = 1.0, 1e-6  # the hub's defaults per release

PLANT_ROW = 0  # the row whose features carry the constant channels' secrets
FAIL_COLS, TIME_COLS, CARRIER_COL = (5, 6), (7, 8), 0
FAIL_MEMORY_MB, HOG_MB = 256, 600
FAIL_CODES_B = (1, 2, 3)  # variant B at site-a, -b, -c: crash, NaN output, out of memory
TIME_CODE_B = 3  # variant B sleeps 3 steps at every site
METRIC_ROW, METRIC_COL = 3, 0  # the metric channel's target row and its secret feature
ACCURACY = [{"name": "accuracy", "decimals": 6}]
LADDER_SEED = 7
CONSTANT_CHANNELS = ("failure", "timing", "per-site")
# Streams of the vendor's transcript that move with the sites' true progress on this hub, before
# the release time (see AFTER.md): the submission list filtered on the true status, and the
# leakage view counting the sites' ledger records as they arrive. Reported, not asserted on.
# Streams that followed the sites' true progress, compared apart while they did: the list filtered
# on the true status and the leakage view's release count (fixed on the hub; see AFTER.md).
KNOWN_LEAKS: frozenset[str] = frozenset()


# --- data ----------------------------------------------------------------------------------


def site_shards() -> tuple[dict[str, Shard], models.VendorKnowledge]:
    """40 rows of scikit-learn's breast-cancer data per site (a, b, c and the budget site);
    what the vendor knows: the rows no site holds, as its own data."""
    from sklearn.datasets import load_breast_cancer

    features, labels = load_breast_cancer(return_X_y=True)
    features = features.astype(np.float32)
    order = np.random.default_rng(DATA_SEED).permutation(len(labels))
    shards = {}
    for i, name in enumerate([*SITES, BUDGET_SITE]):
        rows = order[i * ROWS_PER_SITE : (i + 1) * ROWS_PER_SITE]
        shards[name] = (features[rows], labels[rows].astype(np.int64))
    own = order[(len(SITES) + 1) * ROWS_PER_SITE :]
    return shards, models.VendorKnowledge(features[own], labels[own])


def _set_code(x: np.ndarray, cols: tuple[int, int], code: int, knowledge: models.VendorKnowledge) -> None:
    """Plant a 2-bit code: each column above (bit 1) or below (bit 0) its public median."""
    for col, bit in zip(cols, ((code >> 1) & 1, code & 1), strict=True):
        x[col] = np.quantile(knowledge.features[:, col], 0.9 if bit else 0.1)


def planted_shards(shards: Mapping[str, Shard], knowledge: models.VendorKnowledge, variant: str,
                   sites: list[str]) -> dict[str, Shard]:  # fmt: skip
    """The sites' rows with the constant channels' secrets planted in row PLANT_ROW."""
    out = {}
    for i, site in enumerate(sites):
        features, labels = shards[site]
        features = features.copy()
        row = features[PLANT_ROW]
        _set_code(row, FAIL_COLS, 0 if variant == "A" else FAIL_CODES_B[i % 3], knowledge)
        _set_code(row, TIME_COLS, 0 if variant == "A" else TIME_CODE_B, knowledge)
        row[CARRIER_COL] = np.quantile(knowledge.features[:, CARRIER_COL], 0.2 if variant == "A" else 0.8)
        out[site] = (features, labels)
    return out


# --- the plan ------------------------------------------------------------------------------


@dataclass
class Settings:
    delay: int = 20  # release_delay_seconds of every task
    poll: float = 1.0  # the transcript's poll interval
    timing_step: float = 2.0  # seconds per sleep step of the timing model
    metric_releases: int = 0  # K: the metric task's vendor budget in releases (0: the hub's defaults)
    ladder_releases: int = 20  # the Ladder tasks' vendor budget, in releases
    budget_uploads: int = 8
    budget_cap: int = 3  # the hub's cap (budget-hub) and the budget site's own cap
    orgs_vendor: int = 2  # budget-orgs: releases per vendor organization
    orgs_total: int = 3  # budget-orgs: releases in total (N)
    extra_orgs: int = 2
    metric: bool = True
    ladder: bool = True
    residual: bool = True
    wait: float = 300.0  # the longest wait for any one outcome


def plan(settings: Settings, shards: Mapping[str, Shard], knowledge: models.VendorKnowledge):
    """(site plans, task plans) of a run."""
    site_cap = epsilon_admitting(settings.budget_cap, epsilon=EPSILON, delta=DELTA)
    site_plans = [SitePlan(s) for s in SITES]
    site_plans.append(
        SitePlan(
            BUDGET_SITE,
            agents=2,
            limits={
                "max_epsilon_per_release": EPSILON,
                "max_vendor_epsilon": site_cap,
                "max_task_epsilon": site_cap,
            },
        )
    )
    limits = {"memory_mb": FAIL_MEMORY_MB, "cpus": 1.0, "timeout_seconds": 60, "max_output_mb": 8}
    tasks = [TaskPlan("warmup", [*SITES, BUDGET_SITE], {"title": "Replay warm-up"})]
    for channel in CONSTANT_CHANNELS:
        for variant in ("A", "B"):
            spec = {"title": f"Replay constant channel: {channel}", "resource_limits": limits}
            tasks.append(
                TaskPlan(
                    f"{channel}-{variant}", SITES, spec, planted_shards(shards, knowledge, variant, SITES)
                )
            )
    tasks += [
        TaskPlan("budget-hub", [BUDGET_SITE], {"budget_releases": settings.budget_cap}),
        TaskPlan("budget-site", [BUDGET_SITE], {"budget_releases": settings.budget_uploads + 2}),
        TaskPlan(
            "budget-orgs",
            [BUDGET_SITE],
            {"budget_releases": settings.orgs_vendor, "task_releases": settings.orgs_total},
        ),
    ]
    accuracy = {"metrics": ACCURACY, "primary_metric": "accuracy"}
    if settings.metric:
        k = settings.metric_releases
        budget = {"budget_releases": k, "task_releases": k} if k else {}  # else epsilon 10 / 20 per task
        tasks.append(TaskPlan("metric", ["site-a"], {**accuracy, **budget}))
    if settings.ladder:
        k = settings.ladder_releases
        same = {**accuracy, "budget_releases": k, "task_releases": k}
        tasks.append(TaskPlan("ladder", ["site-b"], {**same, "leaderboard_mode": "ladder"}))
        tasks.append(TaskPlan("plain", ["site-c"], same, {"site-c": shards["site-b"]}))  # the same rows
    if settings.residual:
        residual = {"title": "Replay residual timing"}
        for variant in ("A", "B"):
            features, labels = shards[BUDGET_SITE]
            features = features.copy()
            _set_code(features[PLANT_ROW], TIME_COLS, 0 if variant == "A" else 1, knowledge)
            tasks.append(
                TaskPlan(f"residual-{variant}", [BUDGET_SITE], residual, {BUDGET_SITE: (features, labels)})
            )
    return site_plans, tasks


# --- the replay ----------------------------------------------------------------------------


def _leak_timeline(transcript: Mapping[str, list]) -> dict[str, list[tuple[float, Any]]]:
    """What the known-leak streams showed and from when: presence in each status-filtered list,
    the leakage view's count of releases."""
    import json

    out = {}
    for stream in sorted(KNOWN_LEAKS):
        points = []
        for seen in transcript.get(stream, []):
            body = json.loads(seen.body)["body"]
            if isinstance(body, list):
                value: Any = [row.get("releases") for row in body]
            else:
                value = "listed" if body else "absent"
            points.append((seen.first, value))
        out[stream] = points
    return out


def _seconds(later, earlier) -> float | None:
    return None if later is None or earlier is None else round((later - earlier).total_seconds(), 3)


class Replay:
    def __init__(self, deployment: Deployment, shards, knowledge, settings: Settings, work: Path) -> None:
        self.d = deployment
        self.api = VendorApi(deployment.url, deployment.vendor_token)
        self.shards, self.knowledge, self.settings, self.work = shards, knowledge, settings, work
        self.organization = self.api.my_vendor_organizations()[0]
        self.log: list[str] = []
        self.poller: Poller | None = None
        self.watched: dict[str, Upload] = {}

    def note(self, message: str) -> None:
        import sys

        self.log.append(message)
        print(message, file=sys.stderr, flush=True)

    def upload(self, task: str, artifact: Path, name: str, organization: int | None = None) -> Upload:
        return self.api.upload(self.d.task_ids[task], artifact, name=name,
                               organization=organization or self.organization)  # fmt: skip

    def wait_jobs_done(self, submission_ids: list[int], timeout: float | None = None) -> None:
        """Until every job of these submissions has ended at its site (the hub's record)."""
        deadline = time.monotonic() + (timeout or self.settings.wait)
        while time.monotonic() < deadline:
            jobs = hub_jobs(submission_ids)
            if all(
                js and all(j["status"] in ("succeeded", "failed", "rejected") for j in js)
                for js in jobs.values()
            ):
                return
            time.sleep(0.5)
        raise TimeoutError(
            f"jobs of {submission_ids} still running after {timeout or self.settings.wait:.0f}s"
        )

    def wait_visible(self, submission_ids: list[int]) -> dict[int, dict]:
        """The vendor's views once each submission is out of "pending" (or the wait is over)."""
        return self.api.wait_visible(submission_ids, timeout=self.settings.wait + self.settings.delay)

    def warm_up(self) -> None:
        """One job at every site first: the first sandbox after an agent starts is slow (image
        and page cache), and would be counted against the first pair's release time."""
        path = self._budget_model(999)
        up = self.upload("warmup", path, "warm-up")
        self.wait_jobs_done([up.id])

    def watch(self, uploads: Mapping[str, Upload], channel: str) -> None:
        """Adds the accepted ``uploads`` (by task key) to the transcript: streams labelled by
        task, submission ids read as the channel's name (the same model on every task)."""
        from attacks.transcript import _parse_time

        accepted = {task: up for task, up in uploads.items() if up.accepted}
        jobs = hub_jobs([up.id for up in accepted.values()])
        for task, up in accepted.items():
            task_id = self.d.task_ids[task]
            slug = (self.api.get_json(f"/api/v1/tasks/{task_id}") or {}).get("slug", "")
            self.poller.add(Tracked(label=task, symbol=channel, submission_id=up.id, task_id=task_id,
                                    created_at=_parse_time(up.created_at),
                                    job_ids=sorted((j["site"], j["id"]) for j in jobs[up.id])),
                            task_slug=slug)  # fmt: skip
            self.watched[task] = up

    def start_poller(self) -> Poller:
        self.poller = Poller(self.d.url, self.d.vendor_token, interval=self.settings.poll,
                             deadline=8 * self.settings.delay + 2 * self.settings.wait).start()  # fmt: skip
        return self.poller

    def pair_result(self, channel: str, task_a: str, task_b: str) -> dict[str, Any]:
        """One channel's verdict, A against B: over every stream but the known leaks (the
        verdict), and over the known leaks alone; and each variant's truth (the owner's view:
        outcome per site, job run times, when the submission really ended, when it became
        visible)."""
        p = self.poller
        a, b = p.transcript(task_a), p.transcript(task_b)
        verdict = compare(a, b, ignore=KNOWN_LEAKS)
        leaks = compare(
            {k: v for k, v in a.items() if k in KNOWN_LEAKS}, {k: v for k, v in b.items() if k in KNOWN_LEAKS}
        )
        ids = {v: self.watched[t].id for v, t in (("A", task_a), ("B", task_b)) if t in self.watched}
        truth = hub_submissions(list(ids.values()))
        jobs = hub_jobs(list(ids.values()))
        return {
            "identical": verdict["identical"], "differences": verdict["differences"],
            "differing_streams": verdict["differing_streams"], "streams": verdict["streams"],
            "known_leaks_identical": leaks["identical"], "known_leak_differences": leaks["differences"],
            "known_leak_timeline": {v: _leak_timeline(t) for v, t in (("A", a), ("B", b))},
            "transcript_A": verdict["changes"],
            "transcript_B": compare(b, b)["changes"],
            "change_times_s": {v: change_times(t, interval=self.settings.poll) for v, t in (("A", a), ("B", b))},
            "truth": {
                v: {"outcomes": sorted((j["site"], j["status"], j["reason"] or "") for j in jobs.get(i, [])),
                    "job_seconds": sorted((j["site"], _seconds(j["finished_at"], j["started_at"])) for j in jobs.get(i, [])),
                    "final_after_s": _seconds(truth[i]["updated_at"], truth[i]["created_at"]),
                    "visible_after_s": _seconds(truth[i]["results_visible_at"], truth[i]["created_at"])}
                for v, i in ids.items()
            },
        }  # fmt: skip

    # constant channels -------------------------------------------------------------------------

    def constant_models(self) -> dict[str, Path]:
        median = self.knowledge.median
        work = self.work / "constant"
        return {
            "failure": models.failure_model(work / "failure.zip", row=PLANT_ROW, cols=FAIL_COLS,
                                            thresholds=[median(c) for c in FAIL_COLS], hog_mb=HOG_MB),
            "timing": models.timing_model(work / "timing.zip", row=PLANT_ROW, cols=TIME_COLS,
                                          thresholds=[median(c) for c in TIME_COLS],
                                          step_seconds=self.settings.timing_step),
            "per-site": models.metric_carrier_model(work / "per-site.zip", knowledge=self.knowledge,
                                                    secret_col=CARRIER_COL, bits=12, row=PLANT_ROW),
        }  # fmt: skip

    def constant_run(self) -> None:
        """Each model (the same bytes) to its A and B tasks back to back, under the transcript;
        the next pair once this pair's jobs are done, so that no pair queues behind another."""
        for channel, path in self.constant_models().items():
            uploads = {
                f"{channel}-{v}": self.upload(f"{channel}-{v}", path, f"replay {channel}") for v in ("A", "B")
            }
            self.watch(uploads, channel)
            self.wait_jobs_done([u.id for u in uploads.values() if u.accepted])
            self.note(
                f"constant channel {channel}: {sum(u.accepted for u in uploads.values())}/2 accepted, jobs done"
            )

    def constant_result(self) -> dict[str, Any]:
        self.poller.join()
        out: dict[str, Any] = {ch: self.pair_result(ch, f"{ch}-A", f"{ch}-B") for ch in CONSTANT_CHANNELS}
        out["polls"] = self.poller.polls
        out["mean_round_s"] = round(self.poller.mean_round, 3)
        out["poll_errors"] = self.poller.errors[:5]
        return out

    # residual: a run past the padded release time ---------------------------------------------------

    def residual_start(self) -> None:
        """The timing model with a step just past the release delay, at the budget site: variant
        B (code 1) sleeps one step and ends after the first release time; A does not sleep."""
        median = self.knowledge.median
        step = float(self.settings.delay + 5)
        path = models.timing_model(self.work / "residual" / "timing.zip", row=PLANT_ROW, cols=TIME_COLS,
                                   thresholds=[median(c) for c in TIME_COLS], step_seconds=step)  # fmt: skip
        uploads = {f"residual-{v}": self.upload(f"residual-{v}", path, "replay timing") for v in ("A", "B")}
        self.watch(uploads, "timing")

    def residual_result(self) -> dict[str, Any]:
        result = self.pair_result("residual", "residual-A", "residual-B")
        timeout = 60
        result["documented_bound_bits"] = round(math.log2(timeout / self.settings.delay + 1), 2)
        return result

    # metric channel --------------------------------------------------------------------------------

    def metric_start(self) -> dict[str, Any]:
        """K submissions of one model: every row predicted with probability 1 (class by row
        parity), except METRIC_ROW, whose class is its private bit (feature METRIC_COL above its
        public median). Then one more upload, past the budget."""
        features, labels = self.shards["site-a"]
        threshold = self.knowledge.median(METRIC_COL)
        n = len(labels)
        classes = [i % 2 for i in range(n)]
        path = models.classes_model(self.work / "metric" / "row-bit.zip", classes=classes,
                                    target=(METRIC_ROW, METRIC_COL, threshold))  # fmt: skip
        # As many as the vendor's budget admits: what the hub says before any upload.
        quota = self.api.get_json(f"/api/v1/tasks/{self.d.task_ids['metric']}/quota") or {}
        k = int((quota.get("privacy") or {}).get("submissions_left") or 0)
        uploads = [self.upload("metric", path, f"row-bit {j}") for j in range(k)]
        extra = self.upload("metric", path, "row-bit past the budget")
        bit = int(features[METRIC_ROW, METRIC_COL] > threshold)
        others = int(sum(int(labels[i] == classes[i]) for i in range(n) if i != METRIC_ROW))
        self.note(f"metric channel: {sum(u.accepted for u in uploads)}/{k} uploads accepted; "
                  f"one more: HTTP {extra.status} {extra.code}")  # fmt: skip
        return {"uploads": uploads, "extra": extra, "bit": bit, "label": int(labels[METRIC_ROW]),
                "vendor_epsilon": (quota.get("privacy") or {}).get("vendor_epsilon"),
                "others_correct": others, "n_rows": n}  # fmt: skip

    def metric_result(self, run: Mapping[str, Any]) -> dict[str, Any]:
        """Each release decoded alone (the count of correct rows minus the others' known count:
        above 1/2, the target row was right, so its bit equals its label), then all averaged."""
        ids = [u.id for u in run["uploads"] if u.accepted]
        self.wait_visible(ids)
        rows = self.api.leaderboard_rows(self.d.task_ids["metric"])
        truth_right = int(run["bit"] == run["label"])
        residuals, decoded = [], []
        for sid in ids:
            view = self.api.submission(sid) or {}
            value = (view.get("metrics") or {}).get("accuracy")
            if value is None:
                decoded.append(None)
                continue
            n = int((rows.get(sid) or {}).get("n_rows") or run["n_rows"])
            r = float(value) * n - run["others_correct"]
            residuals.append(r)
            decoded.append(run["label"] if r > 0.5 else 1 - run["label"])
        correct = sum(1.0 if d == run["bit"] else 0.5 if d is None else 0.0 for d in decoded)
        k = len(ids)
        mean = float(np.mean(residuals)) if residuals else None
        averaged = None if mean is None else (run["label"] if mean > 0.5 else 1 - run["label"])
        one, whole = Budget.of(1, epsilon=EPSILON, delta=DELTA), Budget.of(k, epsilon=EPSILON, delta=DELTA)
        sigma = 1.0 / math.sqrt(2 * one.rho)  # the count's noise: sensitivity 1, one block
        errors = [r - truth_right for r in residuals]
        releases = hub_releases(self.d.task_ids["metric"])
        site = site_releases(self.d.sites["site-a"], self.d.task_ids["metric"])
        return {
            "releases": k, "visible": len(residuals), "secret_bit": run["bit"], "label": run["label"],
            "vendor_epsilon": run["vendor_epsilon"],
            # What the average of k releases gets right, given the noise measured here.
            "averaged_expected": (normal_cdf(math.sqrt(len(errors)) * 0.5 / float(np.std(errors, ddof=1)))
                                  if len(errors) > 1 else None),
            "per_release_correct": correct, "per_release_accuracy": correct / k if k else None,
            "per_release_ci95": wilson(correct, k),
            "bound_one_release": one.epsilon_bound, "gaussian_one_release": one.gaussian_bound,
            "averaged_decoded": averaged, "averaged_correct": averaged == run["bit"] if averaged is not None else None,
            "averaged_residual": mean,
            # How far the average landed from the threshold, in standard errors, toward the truth.
            "averaged_margin_se": ((mean - 0.5) * (1 if truth_right else -1) / (sigma / math.sqrt(len(residuals)))
                                   if residuals else None),
            "truth_count": truth_right,
            "composed_epsilon": whole.epsilon, "bound_composed": whole.epsilon_bound,
            "gaussian_composed": whole.gaussian_bound,
            "noise_sigma_theory": sigma, "noise_sigma_measured": float(np.std(errors, ddof=1)) if len(errors) > 1 else None,
            "residuals": [round(r, 3) for r in residuals],
            "extra_upload": {"status": run["extra"].status, "code": run["extra"].code},
            "hub": releases, "site": site,
        }  # fmt: skip

    # Ladder ----------------------------------------------------------------------------------------

    def ladder_design(self) -> dict[str, Any]:
        """Rows of site-b: a random half known (labels), the other half probed. Job j predicts
        the first m_j known rows right and the rest of them wrong (m_j grows: every job looks
        better), and random guesses on the probed rows."""
        _, labels = self.shards["site-b"]
        n, jobs = len(labels), self.settings.ladder_releases
        rng = np.random.default_rng(LADDER_SEED)
        probed = np.sort(rng.choice(n, size=n // 2, replace=False))
        known = np.array([i for i in range(n) if i not in set(probed.tolist())])
        guesses = rng.integers(0, 2, size=(jobs, len(probed)))
        schedule = [round((j + 1) * len(known) / jobs) for j in range(jobs)]
        return {"labels": labels, "probed": probed, "known": known, "guesses": guesses, "schedule": schedule}

    def ladder_start(self) -> dict[str, Any]:
        design = self.ladder_design()
        labels, probed, known = design["labels"], design["probed"], design["known"]
        uploads: dict[str, list[Upload]] = {"ladder": [], "plain": []}
        for j, (m, guess) in enumerate(zip(design["schedule"], design["guesses"], strict=True)):
            classes = np.zeros(len(labels), dtype=int)
            classes[probed] = guess
            right = known[:m]
            wrong = known[m:]
            classes[right] = labels[right]
            classes[wrong] = 1 - labels[wrong]
            path = models.classes_model(self.work / "ladder" / f"probe-{j}.zip", classes=classes.tolist())
            for task in uploads:  # the same bytes on both tasks, alternating
                uploads[task].append(self.upload(task, path, f"probe {j}"))
        self.note(
            "ladder: "
            + ", ".join(f"{t} {sum(u.accepted for u in us)}/{len(us)} accepted" for t, us in uploads.items())
        )
        return {"design": design, "uploads": uploads}

    @staticmethod
    def ladder_decode(design: Mapping[str, Any], counts: list[float | None]) -> np.ndarray:
        """Labels of the probed rows from the counts of correct probed rows each visible
        release implies (None: not shown): correlate each row's guesses with the counts."""
        guesses = design["guesses"]
        half = len(design["probed"]) / 2
        score = np.zeros(len(design["probed"]))
        for guess, count in zip(guesses, counts, strict=True):
            if count is not None:
                score += (count - half) * (2 * guess - 1)
        return np.where(score > 0, 1, np.where(score < 0, 0, -1))  # -1: no evidence either way

    def ladder_result(self, run: Mapping[str, Any]) -> dict[str, Any]:
        design = run["design"]
        labels, probed = design["labels"], design["probed"]
        truth = labels[probed]
        out: dict[str, Any] = {"probed_rows": len(probed), "known_rows": len(design["known"]),
                               "chance": len(probed) / 2}  # fmt: skip
        for task, ups in run["uploads"].items():
            ids = [u.id for u in ups]
            self.wait_visible([i for i in ids if i])
            counts: list[float | None] = []
            shown = 0
            for sid, m in zip(ids, design["schedule"], strict=True):
                view = (self.api.submission(sid) if sid else None) or {}
                value = (view.get("metrics") or {}).get("accuracy")
                if value is None:
                    counts.append(None)
                    continue
                shown += 1
                counts.append(float(value) * len(labels) - m)  # minus the known rows it got right
            decoded = self.ladder_decode(design, counts)
            correct = float(np.sum(decoded == truth) + 0.5 * np.sum(decoded == -1))
            budget = Budget.of(sum(1 for i in ids if i), epsilon=EPSILON, delta=DELTA)
            out[task] = {"submissions": sum(1 for i in ids if i), "values_shown": shown, "recovered": correct,
                         "per_row_bound": budget.epsilon_bound, "per_row_gaussian": budget.gaussian_bound,
                         "composed_epsilon": budget.epsilon,
                         "expected": self.ladder_expectation(design, ladder=task == "ladder"),
                         "expected_without_noise": self.ladder_expectation(design, ladder=task == "ladder", noise=False)}  # fmt: skip
        return out

    def ladder_expectation(
        self, design: Mapping[str, Any], *, ladder: bool, noise: bool = True, reps: int = 2000
    ) -> dict[str, float]:
        """The attack's expectation against the mechanism, by simulation: fresh random guesses
        each time (the attacker's randomness; one draw of them can be luckier than the bound,
        their average cannot), the count plus Gaussian noise of the release's sigma, clamped,
        the hub's Ladder on the noised accuracy. Mean and sd of the labels recovered.
        ``noise=False``: exact counts (what rounding-only releases gave)."""
        labels, probed = design["labels"], design["probed"]
        n, jobs = len(labels), len(design["schedule"])
        sigma = 1.0 / math.sqrt(2 * Budget.of(1, epsilon=EPSILON, delta=DELTA).rho) if noise else 0.0
        threshold = 0.01  # the hub's default ladder_threshold
        rng = np.random.default_rng(11)
        truth = labels[probed]
        got = []
        for _ in range(reps):
            guesses = rng.integers(0, 2, size=(jobs, len(probed)))
            best, counts = None, []
            for g, m in zip(guesses, design["schedule"], strict=True):
                c = int(np.sum(g == truth)) + m
                acc = min(max((c + rng.normal(0, sigma)) / n if sigma else c / n, 0.0), 1.0)
                improved = best is None or acc >= best + threshold
                if improved:
                    best = acc
                counts.append(acc * n - m if (improved or not ladder) else None)
            decoded = self.ladder_decode({**design, "guesses": guesses}, counts)
            got.append(float(np.sum(decoded == truth) + 0.5 * np.sum(decoded == -1)))
        return {"mean": float(np.mean(got)), "sd": float(np.std(got))}

    # budgets ---------------------------------------------------------------------------------------

    def _budget_model(self, j: int) -> Path:
        rng = np.random.default_rng(100 + j)
        return models.classes_model(
            self.work / "budget" / f"m-{j}.zip", classes=rng.integers(0, 2, ROWS_PER_SITE).tolist()
        )

    def budget_start(self, task: str) -> list[Upload]:
        """``budget_uploads`` uploads to a task of the budget site, one after the other."""
        ups = [
            self.upload(task, self._budget_model(j), f"{task} {j}")
            for j in range(self.settings.budget_uploads)
        ]
        self.note(f"{task}: {sum(u.accepted for u in ups)}/{len(ups)} uploads accepted; refusals: "
                  f"{sorted({(u.status, u.code) for u in ups if not u.accepted})}")  # fmt: skip
        return ups

    def budget_result(self, task: str, ups: list[Upload], cap: int) -> dict[str, Any]:
        ids = [u.id for u in ups if u.accepted]
        self.wait_jobs_done(ids)
        self.wait_visible(ids)
        hub = hub_releases(self.d.task_ids[task])
        site = site_releases(self.d.sites[BUDGET_SITE], self.d.task_ids[task])
        views = [self.api.submission(i) or {} for i in ids]
        return {
            "uploads": len(ups), "accepted": len(ids), "cap": cap,
            "refused": [(u.status, u.code) for u in ups if not u.accepted],
            "site_releases": site["releases"], "site_failures": site["failures"],
            "site_budget_releases": site["budget_releases"],
            "hub_results": hub["results"], "hub_scored": hub["scored"], "hub_charges": hub["charges"],
            "vendor_sees": sorted(v.get("status") for v in views),
            "within_cap": max(site["releases"], hub["results"], hub["charges"]) <= cap,
        }  # fmt: skip

    def orgs_run(self) -> dict[str, Any]:
        """The vendor's own organization, then self-service ones, upload to a task whose budgets
        admit ``orgs_vendor`` releases per organization and ``orgs_total`` in all. Each refusal
        must come at upload, as budget_exhausted, with the organization's quota untouched."""
        task = "budget-orgs"
        task_id = self.d.task_ids[task]
        orgs = [self.organization] + [self.api.create_organization(f"Mallory Models {k + 2}")
                                      for k in range(self.settings.extra_orgs)]  # fmt: skip
        attempts = []
        j = 0
        for org in orgs:
            for _ in range(self.settings.orgs_vendor + 1):
                before = hub_quota_used(task_id, org) if org else None
                up = self.upload(task, self._budget_model(50 + j), f"org {org} {j}", organization=org)
                after = hub_quota_used(task_id, org) if org else None
                j += 1
                attempts.append({"org": org, "status": up.status, "code": up.code, "id": up.id,
                                 "scope": ((up.body or {}).get("error", {}).get("details") or {}).get("scope")
                                 if isinstance(up.body, dict) else None,
                                 "quota_before": before, "quota_after": after})  # fmt: skip
        quota_status, quota_body = self.api.get(f"/api/v1/tasks/{task_id}/quota")
        ids = [a["id"] for a in attempts if a["id"]]
        self.wait_jobs_done(ids)
        self.wait_visible(ids)
        hub = hub_releases(task_id)
        site = site_releases(self.d.sites[BUDGET_SITE], task_id)
        refused = [a for a in attempts if a["id"] is None]
        return {
            "orgs_created": sum(1 for o in orgs[1:] if o), "vendor_cap": self.settings.orgs_vendor,
            "task_cap": self.settings.orgs_total, "attempts": attempts, "accepted": len(ids),
            "refused_budget_exhausted": sum(1 for a in refused if a["status"] == 409 and a["code"] == "budget_exhausted"),
            "refused": len(refused),
            "refusals_left_quota_untouched": all(a["quota_before"] == a["quota_after"] for a in refused),
            "site_releases": site["releases"], "hub_results": hub["results"], "hub_charges": hub["charges"],
            "hub_charges_by_vendor": hub["charges_by_vendor"],
            "within_cap": max(site["releases"], hub["results"], hub["charges"]) <= self.settings.orgs_total,
            "quota_api_for_several_orgs": {"status": quota_status,
                                           "code": (quota_body.get("error") or {}).get("code") if isinstance(quota_body, dict) else None},
        }  # fmt: skip
