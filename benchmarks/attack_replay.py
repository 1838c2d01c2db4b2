"""Attack replay, AFTER the disclosure rework: what a hostile vendor still gets, channel by channel.

    python benchmarks/attack_replay.py --task-override '{"release_delay_seconds": 20}' --out /tmp/attack-replay.json

A live deployment (benchmarks/attacks/live.py): a real hub over HTTP (gunicorn, SQLite), four
sites with real agents (``python -m evaluator run``; two agents at the budget site), the real
runner image, 40 rows of scikit-learn's breast-cancer data per site. The vendor acts with its
personal token only. The experiments (benchmarks/attacks/suite.py):

(a) constant channels: the same model bytes on two data sets that differ only in the secret it
    reads; the vendor's full transcript of both (every endpoint it can poll, with the times the
    bodies changed); identical apart from the DP-noised values = 0 bits. Failure outcome
    (crash / NaN / out of memory as a row's bits say), timing (sleep 0 or 3 steps), per-site
    carriers (per-site values hidden); plus the documented residual: a run past the padded time.
(b) metric channel: K releases that each move the released count by one row's private bit;
    decoded one by one and averaged, against the DP bounds of one release and of the budget.
(c) budgets: two agents at one site (the site's own cap 3, the hub's 8; the hub's cap 3 with 8
    uploads); self-service organizations against the task's total; refusals at upload.
(d) Ladder: half the rows known, the other half probed; labels recovered with and without the
    Ladder under the same budget, against a simulation of the mechanism.

Prints the AFTER table (BEFORE figures from benchmarks/attacks/BEFORE.md and issue 9 side by
side) and writes everything as JSON to ``--out``. ``--task-override`` sets any task field on
every task; ``release_delay_seconds`` (default 20) should stay above the longest job.
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

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from attacks import suite  # noqa: E402
from attacks.live import live_deployment  # noqa: E402

# BEFORE figures: benchmarks/attacks/BEFORE.md (commit e22eabf, this replay's first version) and
# the figures quoted in issue 9 (Ladder, two agents).
BEFORE = {
    "metric": "every target decoded: 12-bit value + label, 4/4 (34.7 net bits in 4 submissions)",
    "failure": "24.0 net bits in 12 site jobs (2 per job: ok / crashed / invalid / OOM per site)",
    "timing": "21.5 net bits in 15 site jobs (polled queued/running/done per site)",
    "per-site": "0 bits of values (none shown) but jobs[] per site: channels 2 and 3 read it",
    "residual": "(no padding: every run time visible)",
    "two agents": "146 bits through a cap of 80 bits (two agents, nothing reserved)",
    "hub cap": "cap checked at the site only, after dispatch",
    "orgs": "44.0 net bits beyond org 1's cap (2 new orgs, 4 releases, all accepted)",
    "ladder": "38/38 labels in 7 jobs with the Ladder on",
}


def _yes(flag: bool | None) -> str:
    return "yes" if flag else "NO"


def table(result: dict[str, Any], settings: suite.Settings) -> str:
    rows = ["| channel | BEFORE | AFTER | AFTER figure |", "| --- | --- | --- | --- |"]
    const = result.get("constant") or {}
    what = {"failure": "failure outcome (crash/NaN/OOM vs ok)",
            "timing": f"timing (sleep {3 * settings.timing_step:g} s vs 0)",
            "per-site": "per-site fields (show_per_site false)"}  # fmt: skip
    for ch, label in what.items():
        r = const.get(ch)
        if not r:
            continue
        bits = (
            "0 bits" if r["identical"] else f">= 1 bit per submission ({', '.join(r['differing_streams'])})"
        )
        leaks = "same" if r["known_leaks_identical"] else "DIFFER"
        rows.append(
            f"| {label} | {BEFORE[ch]} | transcripts identical: {_yes(r['identical'])} ({r['streams']} streams; "
            f"the {len(suite.KNOWN_LEAKS)} known-leak streams: {leaks}) | {bits} |"
        )
    res = result.get("residual")
    if res:
        rows.append(
            f"| run past the padded time (documented residual) | {BEFORE['residual']} | identical: {_yes(res['identical'])} "
            f"(visible at +{res['truth']['A']['visible_after_s']:g} s vs +{res['truth']['B']['visible_after_s']:g} s) | "
            f"<= {res['documented_bound_bits']} bits per submission, unpriced |"
        )
    m = result.get("metric")
    if m:
        lo, hi = m["per_release_ci95"]
        rows.append(
            f"| metric value, one row's bit per release | {BEFORE['metric']} | {m['per_release_correct']:g}/{m['releases']} "
            f"releases decoded right ({m['per_release_accuracy']:.2f}, 95% CI {lo:.2f}-{hi:.2f}) | bound for one release "
            f"(eps {suite.EPSILON:g}): {m['bound_one_release']:.3f}; Gaussian optimum {m['gaussian_one_release']:.3f} |"
        )
        rows.append(
            f"| metric value, averaged over the whole vendor budget (eps {m['vendor_epsilon']:g}) | (same) | "
            f"{m['releases']} releases averaged: {'right' if m['averaged_correct'] else 'wrong'} "
            f"({m['averaged_margin_se']:+.2f} standard errors toward the truth; noise sd {m['noise_sigma_measured']:.2f} "
            f"measured, {m['noise_sigma_theory']:.2f} in theory: right with probability {m['averaged_expected']:.2f}) "
            f"| bound at eps "
            f"{m['composed_epsilon']:.2f}: {m['bound_composed']:.3f}; Gaussian optimum {m['gaussian_composed']:.3f} |"
        )
    b = result.get("budget")
    if b:
        s, h, o = b["site"], b["hub"], b["orgs"]
        rows.append(
            f"| budget: two agents, one site (site cap {s['cap']}, hub admits {s['accepted']}) | {BEFORE['two agents']} | "
            f"site ledger {s['site_releases']}, hub results {s['hub_results']}, charges kept {s['hub_charges']} | "
            f"within cap: {_yes(s['within_cap'])} |"
        )
        rows.append(
            f"| budget: hub cap {h['cap']}, {h['uploads']} uploads, two agents | {BEFORE['hub cap']} | {h['accepted']} accepted, "
            f"{len(h['refused'])} refused at upload ({', '.join(sorted({str(c) for _, c in h['refused']}))}); site ledger "
            f"{h['site_releases']}, hub results {h['hub_results']} | within cap: {_yes(h['within_cap'])} |"
        )
        rows.append(
            f"| budget: {o['orgs_created']} new organizations vs the task total N={o['task_cap']} | {BEFORE['orgs']} | "
            f"{o['accepted']} accepted of {len(o['attempts'])}; {o['refused_budget_exhausted']} refused 409 budget_exhausted, "
            f"quota untouched: {_yes(o['refusals_left_quota_untouched'])}; site ledger {o['site_releases']}, hub results "
            f"{o['hub_results']} | total <= N: {_yes(o['within_cap'])} |"
        )
    lad = result.get("ladder")
    if lad:
        for task in ("ladder", "plain"):
            r = lad[task]
            e, x = r["expected"], r["expected_without_noise"]
            rows.append(
                f"| adaptive probe, {'with' if task == 'ladder' else 'without'} the Ladder ({lad['probed_rows']} probed rows, "
                f"{r['submissions']} releases) | {BEFORE['ladder'] if task == 'ladder' else '-'} | {r['recovered']:g}/{lad['probed_rows']} "
                f"labels (chance {lad['chance']:g}); values shown {r['values_shown']}/{r['submissions']} | expected "
                f"{e['mean']:.1f} +- {e['sd']:.1f} (without noise {x['mean']:.1f}); per-row bound at eps "
                f"{r['composed_epsilon']:.2f}: {r['per_row_bound']:.3f}, Gaussian {r['per_row_gaussian']:.3f} |"
            )
    return "\n".join(rows)


def run(args: argparse.Namespace) -> dict[str, Any]:
    settings = suite.Settings(
        delay=int(args.task_override.get("release_delay_seconds", 20)),
        poll=args.poll, metric_releases=args.metric_releases, ladder_releases=args.ladder_releases,
        residual=not args.no_residual, wait=args.wait,
    )  # fmt: skip
    override = {"release_delay_seconds": settings.delay, **args.task_override}
    shards, knowledge = suite.site_shards()
    site_plans, plans = suite.plan(settings, shards, knowledge)
    root = Path(tempfile.mkdtemp(prefix="vb-attack-replay-"))
    started = time.monotonic()
    print(f"work folder: {root}", file=sys.stderr)
    result: dict[str, Any] = {}
    try:
        with live_deployment(
            root, shards=shards, site_plans=site_plans, plans=plans, task_override=override
        ) as dep:
            print(
                f"hub {dep.url} up, {len(dep.agents)} agents ({time.monotonic() - started:.0f}s)",
                file=sys.stderr,
            )
            replay = suite.Replay(dep, shards, knowledge, settings, root / "artifacts")
            replay.warm_up()
            replay.note(f"warm-up done ({time.monotonic() - started:.0f}s)")
            # Wave 1: the constant channels alone, pair after pair, so that nothing else queues
            # at their sites.
            replay.start_poller()
            replay.constant_run()
            replay.note(f"constant channels: jobs done ({time.monotonic() - started:.0f}s)")
            # Wave 2: everything else; the organizations last (the quota API answers differently
            # once the vendor has several, and the transcript polls it).
            if settings.residual:
                replay.residual_start()
            metric = replay.metric_start() if settings.metric else None
            ladder = replay.ladder_start() if settings.ladder else None
            budget_site = replay.budget_start("budget-site")
            budget_hub = replay.budget_start("budget-hub")
            result["constant"] = replay.constant_result()
            replay.note(f"transcripts done ({time.monotonic() - started:.0f}s)")
            orgs = replay.orgs_run()
            result["budget"] = {
                "site": replay.budget_result("budget-site", budget_site, settings.budget_cap),
                "hub": replay.budget_result("budget-hub", budget_hub, settings.budget_cap),
                "orgs": orgs,
            }
            replay.note(f"budgets done ({time.monotonic() - started:.0f}s)")
            if metric:
                result["metric"] = replay.metric_result(metric)
            if ladder:
                result["ladder"] = replay.ladder_result(ladder)
            if settings.residual:
                result["residual"] = replay.residual_result()
            result["log"] = replay.log
    finally:
        if args.keep:
            print(f"kept: {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)
    result["seconds"] = round(time.monotonic() - started, 1)
    result["settings"] = settings.__dict__
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("attack-replay.json"), help="JSON results path")
    parser.add_argument("--poll", type=float, default=1.0, help="the transcripts' poll interval (s)")
    parser.add_argument(
        "--metric-releases", type=int, default=0,
        help="K: the metric task's vendor budget in releases (default 0: the hub's defaults, epsilon 10)",
    )  # fmt: skip
    parser.add_argument(
        "--ladder-releases", type=int, default=20, help="the Ladder tasks' budget in releases"
    )
    parser.add_argument("--no-residual", action="store_true", help="skip the run past the padded time")
    parser.add_argument("--wait", type=float, default=300.0, help="the longest wait for one outcome (s)")
    parser.add_argument(
        "--task-override", type=json.loads, default={},
        help='JSON merged into every task spec, e.g. \'{"release_delay_seconds": 20}\'',
    )  # fmt: skip
    parser.add_argument("--keep", action="store_true", help="keep the work folder (hub and agent logs)")
    args = parser.parse_args()
    result = run(args)
    settings = suite.Settings(**result["settings"])
    command = " ".join(["python", "benchmarks/attack_replay.py", *sys.argv[1:]])
    print(table(result, settings))
    for name, r in [*(result.get("constant") or {}).items(), ("residual", result.get("residual"))]:
        if isinstance(r, dict) and (r.get("differences") or r.get("known_leak_differences")):
            print(f"\n{name}: differences")
            for line in r.get("differences", [])[:8] + r.get("known_leak_differences", [])[:8]:
                print(f"  - {line[:300]}")
    print(f"\n{command}  ({result['seconds']:.0f}s, {platform.node()})")
    result["command"] = command
    args.out.write_text(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
