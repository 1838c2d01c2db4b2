"""Fault campaign: hundreds of injected faults against a whole Vaultbench of real processes on
loopback (tests/faults/world.py: gunicorn + SQLite, a Celery worker on the filesystem broker, the
beat's sweeps, one real agent per site with real Docker sandboxes), the invariants checked after
every round.

    python benchmarks/fault_campaign.py --faults 100 --sites 2 --seed 1 [--out campaign.json]

Each round uploads a few submissions (one job per site each), injects a few faults drawn from the
families below at random moments while they run, restores the normal set-up, waits for the
world to settle and checks: every job and submission terminal within the deadline, one result
and one receipt per succeeded job (none for a failed one), each site's ledger equal to the hub's
receipts after the site's reconcile, no container or job folder left behind.

Families: an agent killed at each step of a release (failpoints: ledger written, pending written,
posted), an agent killed at a random moment (often mid-sandbox), the Celery worker killed, the
broker down, the hub (gunicorn) killed, a full disk at a site, the site's data changed in place
under running jobs, and agents whose clock is two hours off. Prints (and writes with --out)
the faults injected per family, the invariant violations, what the reconcilers repaired and the
jobs' outcomes.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evaluator.failpoints import POINTS  # noqa: E402
from tests.faults.world import World, wait_for  # noqa: E402

Fault = Callable[[World, random.Random], str]


def _site(world: World, rng: random.Random):
    return rng.choice(world.sites)


def agent_failpoint(world: World, rng: random.Random) -> str:
    site, point = _site(world, rng), rng.choice(POINTS)
    world.restart_agent(site, failpoints=point)
    return f"agent_failpoint:{point}"


def agent_kill(world: World, rng: random.Random) -> str:
    site = _site(world, rng)
    try:  # mid-sandbox when one runs soon, else wherever it is
        wait_for(lambda: world.running_containers(site), timeout=4, what="a sandbox")
    except TimeoutError:
        pass
    if site.agent is not None:
        site.agent.kill()
    time.sleep(rng.uniform(0, 2))
    world.start_agent(site)
    return "agent_kill"


def worker_kill(world: World, rng: random.Random) -> str:
    world.procs["worker"].kill()
    time.sleep(rng.uniform(1, 4))
    world.supervise()
    return "worker_kill"


def broker_down(world: World, rng: random.Random) -> str:
    with world.broker_down():
        time.sleep(rng.uniform(3, 6))
    return "broker_down"


def hub_kill(world: World, rng: random.Random) -> str:
    world.procs["web"].kill()
    time.sleep(rng.uniform(1, 4))
    world.supervise()
    return "hub_kill"


def disk_full(world: World, rng: random.Random) -> str:
    site = _site(world, rng)
    world.write_config(site, min_free_disk_mb=10**9)
    world.restart_agent(site)
    time.sleep(rng.uniform(3, 6))
    world.write_config(site)
    world.restart_agent(site)
    return "disk_full"


def data_changed(world: World, rng: random.Random) -> str:
    site = _site(world, rng)
    path = world.features_path(site)
    original = path.read_bytes()
    with open(path, "r+b") as fh:  # in place: the inode every hard link shares
        fh.seek(len(original) - 32)
        fh.write(np.full(8, rng.uniform(2, 9), dtype=np.float32).tobytes())
    time.sleep(rng.uniform(2, 5))
    path.write_bytes(original)
    return "data_changed"


def clock_skew(world: World, rng: random.Random) -> str:
    site = _site(world, rng)
    world.restart_agent(site, clock_offset=rng.choice(["+2h", "-2h", "+30s", "-30s"]))
    return "clock_skew"


FAMILIES: list[Fault] = [agent_failpoint, agent_kill, worker_kill, broker_down, hub_kill, disk_full, data_changed,
                         clock_skew]  # fmt: skip


def _normal(world: World) -> None:
    """Back to the normal set-up: every agent without failpoint or clock offset, all running."""
    for site in world.sites:
        argv = site.agent.argv if site.agent else []
        if not site.agent or not site.agent.alive() or "faketime" in argv or site.agent.env.get("VAULTBENCH_FAILPOINTS"):
            world.restart_agent(site)
    world.supervise()


def campaign(*, faults: int, sites: int, seed: int, per_round: int, uploads: int, root: Path, image: str) -> dict:
    rng = random.Random(seed)
    world = World(root=root, image=image, n_sites=sites).start()
    injected: Counter = Counter()
    violations: list[str] = []
    rounds = 0
    started = time.monotonic()
    try:
        while sum(injected.values()) < faults:
            rounds += 1
            for _ in range(uploads):
                world.upload(sleep=rng.choice([0.0, 0.0, 2.0]), name=f"r{rounds}")
            for _ in range(per_round):
                time.sleep(rng.uniform(0, 2))
                injected[rng.choice(FAMILIES)(world, rng)] += 1
            _normal(world)
            found = world.check(timeout=300)
            violations += [f"round {rounds}: {v}" for v in found]
            print(f"round {rounds}: {sum(injected.values())} faults so far, {len(found)} violation(s)", flush=True)
        jobs = world.jobs()
        outcomes = Counter(f"{status}/{reason}" if reason else status for _, status, reason, *_ in jobs)
        attempts = Counter(a for *_, a in jobs)
        at_start: Counter = Counter()  # what the agents' own reconcile repaired when they restarted
        for log in (root / "logs").glob("agent-*.log"):
            for match in re.finditer(r"ledger reconciled with the hub: (\d+) confirmed, (\d+) voided", log.read_text()):
                at_start.update(confirmed=int(match[1]), voided=int(match[2]))
        return {
            "command": f"python benchmarks/fault_campaign.py --faults {faults} --sites {sites} --seed {seed} "
                       f"--per-round {per_round} --uploads {uploads}",
            "rounds": rounds,
            "minutes": round((time.monotonic() - started) / 60, 1),
            "faults_injected": sum(injected.values()),
            "faults_by_family": dict(sorted(injected.items())),
            "invariant_violations": len(violations),
            "violations": violations[:50],
            "submissions": len(world.submissions),
            "jobs": len(jobs),
            "job_outcomes": dict(sorted(outcomes.items())),
            "attempts": {str(k): v for k, v in sorted(attempts.items())},
            "repaired": {
                "submissions_reconciled": world.audit_count("submission.reconciled"),
                "leases_expired_requeued": world.audit_count("job.lease_expired"),
                "jobs_requeued_after_a_site_failure": world.audit_count("job.requeued"),
                "posts_refused_as_superseded": world.audit_count("job.result_refused")
                + world.audit_count("job.failure_refused"),
                "ledger_entries_confirmed_at_agent_start": at_start["confirmed"],
                "ledger_entries_voided_at_agent_start": at_start["voided"],
                "ledger_entries_confirmed_by_the_check": world.ledger_repairs["confirmed"],
                "ledger_entries_voided_by_the_check": world.ledger_repairs["voided"],
                "sites_flagged_stuck": world.audit_count("site.stuck"),
            },
            "process_starts": {name: p.starts for name, p in world.procs.items()}
            | {s.name: s.agent.starts for s in world.sites if s.agent},
        }
    finally:
        world.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--faults", type=int, default=100)
    parser.add_argument("--sites", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--per-round", type=int, default=4, help="faults injected per round")
    parser.add_argument("--uploads", type=int, default=2, help="submissions per round")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    from sandbox_images.build import ensure_runner_image

    with tempfile.TemporaryDirectory(prefix="vb-campaign-") as tmp:
        report = campaign(
            faults=args.faults, sites=args.sites, seed=args.seed, per_round=args.per_round, uploads=args.uploads,
            root=Path(tmp), image=ensure_runner_image(),
        )  # fmt: skip
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0 if report["invariant_violations"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
