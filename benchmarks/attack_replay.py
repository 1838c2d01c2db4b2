"""Attack replay: how many bits of private site data a hostile vendor gets back, per channel.

    python benchmarks/attack_replay.py [--jobs 4] [--out /tmp/attack-replay.json]

A live deployment (benchmarks/attacks/live.py): a real hub over HTTP, three sites with one real
agent each (``python -m evaluator run``), the real runner image. Each site holds 40 rows of
scikit-learn's breast-cancer data (30 features, binary labels). The replay plants nothing
artificial: it knows the site data, so it knows the secret each hostile model goes after, and
it counts how many of those bits the channel's decoder recovers from the vendor API alone
(benchmarks/attacks/vendor_view.py: the vendor's personal token, nothing else).

Hostile models are ordinary ``python_package`` submissions (benchmarks/attacks/models.py);
the sandbox never sees labels, so the secrets are feature-derived (plus the carrier row's label,
which the log loss gives away). Channels:

1. metric value: the target patient (known to the vendor by 3 quasi-identifying features) is
   the one row predicted away from 0.5; the aggregate log loss gives back 12 bits of its
   feature 0 and its label. ``--jobs`` submissions, one target each.
2. failure outcome: two bits of a row of each site's shard pick ok / crashed / invalid_output /
   out_of_memory; decoded from the per-site job status and reason (else the submission's).
3. timing: two bits of a row pick a sleep of 0-3 steps; decoded from the status transitions a
   vendor sees by polling (one calibration submission first, counted in the jobs).
4. per-site fields (``show_per_site`` false): each site's row j carries its own secret in that
   site's log loss; decoded only from per-site fields the vendor sees. A control task with
   ``show_per_site`` true shows what the decoder gets when they are visible.
5. budget reset: a one-site task with ``quota_total`` 3 and a budget of two releases; when
   the first vendor organization is spent, the same person creates new ones (``POST
   /organizations``), two releases each, and runs the channel-1 attack again, ``--jobs``
   submissions in all. Bits counted: the new organizations' only (beyond the first one's cap).

Figures per channel (benchmarks/attacks/scoring.py): bits planted, bits decoded correctly,
chance (the same decodes scored against the other items' secrets: a blind decoder scores the
same), net bits = 2 x (correct - max(chance, planted / 2)), submissions and site jobs used, net bits per site
job. Prints a markdown table and writes everything (per-item decodes included) as JSON to
``--out``.

After the disclosure rework: only ``attacks/vendor_view.py`` reads the API (a field that is
gone reads as None, and its channel nets ~0 bits); ``attacks/live.py::_task_spec`` maps the
budget onto whichever task fields the hub has; ``--task-override`` sets any other task field
(e.g. a short release delay) for every task, and ``--wait`` bounds each wait for an outcome.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from attacks import decoders, models  # noqa: E402
from attacks.codec import percentile_code  # noqa: E402
from attacks.live import TaskPlan, live_deployment  # noqa: E402
from attacks.scoring import Tally  # noqa: E402
from attacks.vendor_view import VendorApi, watch_transitions  # noqa: E402

SITES = ["site-a", "site-b", "site-c"]
ROWS_PER_SITE = 40
DATA_SEED = 20240901
METRIC = "log_loss"
SECRET_COL, BITS = 0, 12  # feature 0 (mean radius), as a 12-bit public percentile
KEY_COLS = (1, 2, 3)  # what the vendor knows of its target: texture, perimeter, area
# Two bits per site job, each "feature above its public median": pairs chosen nearly
# independent (|corr| < 0.01 between the two indicators on the full data set).
FAIL_COLS, TIME_COLS = (0, 19), (1, 4)
FAIL_MEMORY_MB, HOG_MB = 256, 600


# --- the private data and the secrets in it ----------------------------------------------------


def site_shards() -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], models.VendorKnowledge]:
    """Each site's rows, and what the vendor knows: the rows no site holds, as its own data."""
    from sklearn.datasets import load_breast_cancer

    features, labels = load_breast_cancer(return_X_y=True)
    features = features.astype(np.float32)
    order = np.random.default_rng(DATA_SEED).permutation(len(labels))
    shards = {}
    for i, name in enumerate(SITES):
        rows = order[i * ROWS_PER_SITE : (i + 1) * ROWS_PER_SITE]
        shards[name] = (features[rows], labels[rows].astype(np.int64))
    own = order[len(SITES) * ROWS_PER_SITE :]
    return shards, models.VendorKnowledge(features[own], labels[own])


def unique_targets(
    shards: dict[str, tuple[np.ndarray, np.ndarray]], sites: list[str], count: int, first_row: int
):
    """``count`` (site, row) pairs, round-robin over ``sites``, whose quasi-identifiers match no
    other row of any shard (so the model's carrier hits exactly the target)."""
    every = np.concatenate([shards[s][0][:, KEY_COLS] for s in shards])
    targets, row = [], first_row
    while len(targets) < count:
        for site in sites:
            key = shards[site][0][row, KEY_COLS]
            if np.all(every == key, axis=1).sum() == 1 and len(targets) < count:
                targets.append((site, row))
        row += 1
    return targets


def carrier_truth(shards, knowledge: models.VendorKnowledge, site: str, row: int) -> tuple[int, int]:
    features, labels = shards[site]
    return percentile_code(float(features[row, SECRET_COL]), knowledge.quantiles(SECRET_COL), BITS), int(
        labels[row]
    )


def code_truth(shards, knowledge: models.VendorKnowledge, site: str, row: int, cols) -> int:
    x = shards[site][0][row]
    return 2 * int(x[cols[0]] > knowledge.median(cols[0])) + int(x[cols[1]] > knowledge.median(cols[1]))


# --- channels -------------------------------------------------------------------------------


class Replay:
    def __init__(self, api: VendorApi, task_ids: dict[str, int], shards, knowledge, work: Path, args) -> None:
        self.api, self.task_ids, self.shards, self.knowledge = api, task_ids, shards, knowledge
        self.work, self.args = work, args
        self.decimals = api.task_decimals(task_ids["metric"]).get(METRIC, 4)
        # Named on every upload: once channel 5 has made a second vendor organization, the
        # hub asks which one acts.
        self.organization = api.my_vendor_organizations()[0]

    def upload(self, task: str, artifact: Path, name: str, organization: int | None = None) -> int | None:
        status, sid = self.api.upload(
            self.task_ids[task], artifact, name=name, organization=organization or self.organization
        )
        if sid is None:
            print(f"  upload {name} to {task}: HTTP {status}", file=sys.stderr)
        return sid

    # channel 1 ------------------------------------------------------------------------------

    def metric_submit(self) -> list[dict[str, Any]]:
        plan = []
        for j, (site, row) in enumerate(unique_targets(self.shards, SITES, self.args.jobs, first_row=20)):
            key = self.shards[site][0][row, KEY_COLS].tolist()
            path = models.metric_carrier_model(
                self.work / f"metric-{j}.zip",
                knowledge=self.knowledge,
                secret_col=SECRET_COL,
                bits=BITS,
                key_cols=KEY_COLS,
                key=key,
            )
            plan.append({"sid": self.upload("metric", path, f"metric-{j}"), "site": site, "row": row})
        return plan

    def metric_decode(self, plan, task: str = "metric", tally: Tally | None = None) -> Tally:
        tally = tally or Tally("1. metric value (aggregate log_loss)")
        for item in plan:
            truth, label = carrier_truth(self.shards, self.knowledge, item["site"], item["row"])
            view = self.api.vendor_view_of(item["sid"], task_id=self.task_ids[task]) if item["sid"] else None
            guess, guess_label = (
                decoders.decode_metric_carrier(
                    view, metric=METRIC, decimals=self.decimals, bits=BITS,
                    known_rows=ROWS_PER_SITE * self.sites_of(task), known_sites=self.sites_of(task),
                )
                if view is not None else (None, None)
            )  # fmt: skip
            tally.add(truth, guess, BITS)
            tally.add(label, guess_label, 1, kind="label")
            if item["sid"]:
                tally.submissions += 1
                tally.site_jobs += len(view.jobs) if view and view.jobs else self.sites_of(task)
            tally.details.append(
                {**item, "secret": truth, "label": label, "decoded": guess, "decoded_label": guess_label,
                 "released": (view.metrics or {}).get(METRIC) if view else None, "status": view.status if view else None}
            )  # fmt: skip
        return tally

    def sites_of(self, task: str) -> int:
        return 1 if task == "budget" else len(SITES)

    # channel 4 ------------------------------------------------------------------------------

    def per_site_submit(self, task: str, count: int, first_row: int) -> list[dict[str, Any]]:
        plan = []
        for j in range(count):
            row = first_row + j
            path = models.metric_carrier_model(
                self.work / f"{task}-{j}.zip",
                knowledge=self.knowledge,
                secret_col=SECRET_COL,
                bits=BITS,
                row=row,
            )
            plan.append({"sid": self.upload(task, path, f"{task}-{j}"), "row": row})
        return plan

    def per_site_decode(self, plan, task: str, name: str) -> Tally:
        tally = Tally(name)
        fields: set[str] = set()
        for item in plan:
            view = self.api.vendor_view_of(item["sid"], task_id=self.task_ids[task]) if item["sid"] else None
            decoded = (
                decoders.decode_per_site_carriers(view, sites=SITES, metric=METRIC, bits=BITS, default_rows=ROWS_PER_SITE)
                if view is not None else {s: (None, None) for s in SITES}
            )  # fmt: skip
            if view is not None:
                fields.update(view.visible_fields)
                tally.submissions += 1
                tally.site_jobs += len(view.jobs) or len(SITES)
            for site in SITES:
                truth, label = carrier_truth(self.shards, self.knowledge, site, item["row"])
                guess, guess_label = decoded[site]
                tally.add(truth, guess, BITS)
                tally.add(label, guess_label, 1, kind="label")
                tally.details.append({"sid": item["sid"], "site": site, "row": item["row"], "secret": truth,
                                      "label": label, "decoded": guess, "decoded_label": guess_label})  # fmt: skip
        tally.notes.append("per-site fields the vendor sees: " + (", ".join(sorted(fields)) or "none"))
        return tally

    # channel 2 ------------------------------------------------------------------------------

    def failure_submit(self) -> list[dict[str, Any]]:
        plan = []
        for j in range(self.args.jobs):
            row = 5 + j
            path = models.failure_model(
                self.work / f"failure-{j}.zip", row=row, cols=FAIL_COLS,
                thresholds=[self.knowledge.median(c) for c in FAIL_COLS], hog_mb=HOG_MB,
            )  # fmt: skip
            plan.append({"sid": self.upload("failure", path, f"failure-{j}"), "row": row})
        return plan

    def failure_decode(self, plan) -> Tally:
        tally = Tally("2. failure outcome (status/reason)")
        for item in plan:
            view = (
                self.api.vendor_view_of(item["sid"], task_id=self.task_ids["failure"])
                if item["sid"]
                else None
            )
            decoded = decoders.decode_failures(view, sites=SITES) if view else {s: None for s in SITES}
            if view is not None:
                tally.submissions += 1
                tally.site_jobs += len(view.jobs) or len(SITES)
            for site in SITES:
                truth = code_truth(self.shards, self.knowledge, site, item["row"], FAIL_COLS)
                tally.add(truth, decoded[site], 2)
                job = next((j for j in (view.jobs if view else []) if j.site == site), None)
                tally.details.append({"sid": item["sid"], "site": site, "row": item["row"], "secret": truth,
                                      "decoded": decoded[site], "seen": [job.status, job.reason] if job else
                                      [view.status if view else None, view.reason if view else None]})  # fmt: skip
        return tally

    # channel 3 ------------------------------------------------------------------------------

    def timing_run(self) -> Tally:
        """Sequential: one submission at a time, polled like a patient vendor would. The zero
        level of each site is the shortest run seen there (the calibration submission, which
        never sleeps, guarantees one)."""
        tally = Tally("3. timing (polled status transitions)")
        step, thresholds = self.args.timing_step, [self.knowledge.median(c) for c in TIME_COLS]
        runs = [(None, models.timing_model(self.work / "timing-cal.zip", row=0, cols=TIME_COLS,
                                           thresholds=thresholds, step_seconds=0.0))]  # fmt: skip
        for j in range(self.args.jobs):
            path = models.timing_model(
                self.work / f"timing-{j}.zip",
                row=15 + j,
                cols=TIME_COLS,
                thresholds=thresholds,
                step_seconds=step,
            )
            runs.append((15 + j, path))
        observed = []
        for row, path in runs:
            sid = self.upload("timing", path, "timing-calibration" if row is None else f"timing-{row}")
            durations: dict[str, float | None] = {s: None for s in SITES}
            if sid is not None:
                record = watch_transitions(self.api, sid, timeout=self.args.wait)
                durations = decoders.observed_durations(record, sites=SITES)
                tally.submissions += 1
                tally.site_jobs += len(SITES)
            observed.append((sid, row, durations))
        baseline = {
            site: min((d[site] for _, _, d in observed if d[site] is not None), default=None)
            for site in SITES
        }
        tally.notes.append(
            "zero level (s): "
            + ", ".join(f"{s}={v:.2f}" if v is not None else f"{s}=?" for s, v in baseline.items())
        )
        for sid, row, durations in observed:
            if row is None:
                continue
            decoded = decoders.decode_timing(durations, baseline, step=step)
            for site in SITES:
                truth = code_truth(self.shards, self.knowledge, site, row, TIME_COLS)
                tally.add(truth, decoded[site], 2)
                tally.details.append(
                    {"sid": sid, "site": site, "row": row, "secret": truth, "decoded": decoded[site],
                     "seconds": durations[site]}
                )  # fmt: skip
        return tally

    # channel 5 ------------------------------------------------------------------------------

    def budget_run(self) -> Tally:
        """The first organization until its budget is spent; then self-service organizations,
        each spending its own fresh budget, until ``--jobs`` releases beyond the first's cap."""
        tally = Tally("5. budget reset (new vendor orgs)")
        per_org = 2  # releases a fresh organization may get (the plan's budget_releases)
        extra_orgs = -(-self.args.jobs // per_org)
        targets = unique_targets({"site-a": self.shards["site-a"]}, ["site-a"], 4 + extra_orgs * per_org, 0)
        spent = []
        for j, (site, row) in enumerate(targets[:4]):  # quota_total 3: the 4th is refused at upload
            sid = self.upload(
                "budget", self._budget_model(j, site, row), f"budget-org1-{j}", self.organization
            )
            spent.append({"sid": sid, "site": site, "row": row})
        beyond, orgs = [], []
        for k in range(extra_orgs):
            org = self.api.create_organization(f"Mallory Models {k + 2}")
            orgs.append(org)
            for j, (site, row) in enumerate(targets[4 + k * per_org : 4 + (k + 1) * per_org]):
                name = f"budget-org{k + 2}-{j}"
                sid = (
                    self.upload("budget", self._budget_model(4 + k * per_org + j, site, row), name, org)
                    if org
                    else None
                )
                beyond.append({"sid": sid, "site": site, "row": row, "org": org})
        self.api.wait_until_done([p["sid"] for p in spent + beyond if p["sid"]], timeout=self.args.wait)
        first_views = [
            self.api.vendor_view_of(p["sid"], task_id=self.task_ids["budget"]) for p in spent if p["sid"]
        ]
        first_scored = sum(v.status == "scored" for v in first_views)
        self.metric_decode(beyond, task="budget", tally=tally)
        beyond_scored = sum(d.get("status") == "scored" for d in tally.details)
        tally.notes.append(
            f"org 1: {sum(p['sid'] is not None for p in spent)}/4 uploads accepted, {first_scored} scored "
            f"({', '.join(v.status + ('/' + v.reason if v.reason else '') for v in first_views)}); "
            f"{sum(o is not None for o in orgs)}/{len(orgs)} new orgs created (POST /organizations): "
            f"{sum(p['sid'] is not None for p in beyond)}/{len(beyond)} uploads accepted, "
            f"{beyond_scored} scored beyond org 1's cap"
        )
        tally.details.append(
            {"org1": spent, "org1_scored": first_scored, "new_orgs": orgs, "beyond_scored": beyond_scored}
        )
        return tally

    def _budget_model(self, j: int, site: str, row: int) -> Path:
        key = self.shards[site][0][row, KEY_COLS].tolist()
        return models.metric_carrier_model(
            self.work / f"budget-{j}.zip",
            knowledge=self.knowledge,
            secret_col=SECRET_COL,
            bits=BITS,
            key_cols=KEY_COLS,
            key=key,
        )


# --- report -----------------------------------------------------------------------------------


def table(tallies: list[Tally]) -> str:
    lines = [
        "| channel | planted bits | correct | chance | net bits | submissions | site jobs | net bits / site job |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for t in tallies:
        lines.append(
            f"| {t.channel} | {t.planted:g} | {t.correct:g} | {t.chance:.1f} | {t.net_bits:.1f} | "
            f"{t.submissions} | {t.site_jobs} | {t.per_job(t.net_bits):.2f} |"
        )
    notes = [f"- {t.channel}: {n}" for t in tallies for n in t.notes]
    legend = (
        "correct: decoded bits equal to the planted ones (an unreadable part counts half); chance: the same "
        "decodes scored against the other items' secrets; net bits = 2 x (correct - max(chance, planted/2))."
    )
    return "\n".join([*lines, "", legend, *notes])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=4, help="submissions per channel (default 4)")
    parser.add_argument("--out", type=Path, default=Path("attack-replay.json"), help="JSON results path")
    parser.add_argument("--timing-step", type=float, default=2.0, help="seconds per sleep step (channel 3)")
    parser.add_argument(
        "--wait", type=float, default=240.0, help="seconds to wait for a submission's outcome"
    )
    parser.add_argument(
        "--task-override", type=json.loads, default={},
        help='JSON merged into every task spec, e.g. \'{"release_delay_seconds": 5}\' (unknown fields dropped)',
    )  # fmt: skip
    parser.add_argument("--keep", action="store_true", help="keep the work folder (hub and agent logs)")
    args = parser.parse_args()

    started = time.monotonic()
    shards, knowledge = site_shards()
    plans = [
        TaskPlan("metric", SITES),
        TaskPlan("per_site", SITES),
        TaskPlan("per_site_control", SITES, {"show_per_site": True}),
        TaskPlan("failure", SITES, {"resource_limits": {**_limits(), "memory_mb": FAIL_MEMORY_MB}}),
        TaskPlan("timing", SITES),
        # A budget of two releases per vendor organization (see attacks.live._task_spec).
        TaskPlan("budget", ["site-a"], {"quota_total": 3, "budget_releases": 2}),
    ]
    root = Path(tempfile.mkdtemp(prefix="vb-attack-replay-"))
    print(f"work folder: {root}", file=sys.stderr)
    try:
        with live_deployment(
            root, shards=shards, plans=plans, task_override=args.task_override
        ) as deployment:
            print(
                f"hub {deployment.url} up, {len(deployment.agents)} agents ({time.monotonic() - started:.0f}s)",
                file=sys.stderr,
            )
            work = root / "artifacts"
            api = VendorApi(deployment.url, deployment.vendor_token)
            replay = Replay(api, deployment.task_ids, shards, knowledge, work, args)
            # Channels 1, 2, 4 and 5 run side by side; channel 3 alone afterwards (timing).
            metric = replay.metric_submit()
            per_site = replay.per_site_submit("per_site", args.jobs, first_row=0)
            control = replay.per_site_submit("per_site_control", 1, first_row=0)
            failure = replay.failure_submit()
            budget = replay.budget_run()
            api.wait_until_done(
                [p["sid"] for p in metric + per_site + control + failure if p["sid"]], timeout=args.wait
            )
            print(f"channels 1, 2, 4, 5 done ({time.monotonic() - started:.0f}s)", file=sys.stderr)
            tallies = [
                replay.metric_decode(metric),
                replay.failure_decode(failure),
                replay.timing_run(),
                replay.per_site_decode(per_site, "per_site", "4. per-site fields (show_per_site false)"),
                budget,
                replay.per_site_decode(
                    control, "per_site_control", "control: per-site fields (show_per_site true)"
                ),
            ]
        elapsed = time.monotonic() - started
        command = " ".join(["python", "benchmarks/attack_replay.py", *sys.argv[1:]])
        print(table(tallies))
        print(f"\n{command}  ({elapsed:.0f}s, {platform.node()}, {len(SITES)} sites x {ROWS_PER_SITE} rows)")
        args.out.write_text(
            json.dumps(
                {"command": command, "seconds": round(elapsed, 1), "jobs_per_channel": args.jobs,
                 "sites": SITES, "rows_per_site": ROWS_PER_SITE, "channels": [t.as_dict() for t in tallies]},
                indent=2, default=str,
            )
        )  # fmt: skip
    finally:
        if args.keep:
            print(f"kept: {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)


def _limits() -> dict[str, Any]:
    from attacks.live import BASE_SPEC

    return dict(BASE_SPEC["resource_limits"])


if __name__ == "__main__":
    main()
