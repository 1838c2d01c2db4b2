"""Command line of the site agent.

    python -m evaluator init site.toml --hub-url URL --data-dir DIR     (vaultbench-site init ...)
    python -m evaluator status|doctor --config site.toml
    python -m evaluator run --config site.toml [--once]
    python -m evaluator register-data --config site.toml --task ID --features F --labels L \
        [--split test|train] [--no-report]          (the task's schema comes from the hub)
    python -m evaluator register-data --offline --config site.toml --task ID --features F --labels L \
        (--input-spec JSON | --n-features N --task-type T [--n-classes K])   (no hub: the flags decide)
    python -m evaluator ledger export --config site.toml [--csv out.csv]
    python -m evaluator budget --config site.toml
    python -m evaluator releases list|approve JOB|refuse JOB --config site.toml
    python -m evaluator dry-run --format F --model M --sample S --task-type T [--n-classes K] [--labels L]
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from collections.abc import Sequence
from typing import Any

from evaluator.config import ConfigError, load_config


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m evaluator", description="Vaultbench site agent")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument("--log-format", choices=["text", "json"],
                        help="json: one object per line with job/task/agent ids (default: VAULTBENCH_LOG_FORMAT or text)")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="claim and evaluate jobs")
    run.add_argument("--config", help="site TOML file (VAULTBENCH_* variables override it)")
    run.add_argument("--once", action="store_true", help="process at most one job, then exit")
    run.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on 127.0.0.1:PORT")

    init = sub.add_parser("init", help="write a commented site config")
    init.add_argument("path", nargs="?", default="site.toml")
    init.add_argument("--hub-url", required=True)
    init.add_argument("--data-dir", required=True)
    init.add_argument("--token-file", help="where the site token will be (default: <data-dir>/site-token)")
    init.add_argument("--force", action="store_true", help="overwrite an existing file")
    status = sub.add_parser("status", help="agent, engine, image, hub, shards and ledger at a glance")
    status.add_argument("--config")
    status.add_argument("--json", action="store_true")
    doctor = sub.add_parser("doctor", help="what is wrong and how to fix it (exit 1 if anything is)")
    doctor.add_argument("--config")

    reg = sub.add_parser("register-data", help="check a task's private data against the hub's schema, then store it")
    reg.add_argument("--config")
    reg.add_argument("--task", required=True, help="the hub's task id")
    reg.add_argument("--features", required=True, help=".npy, .csv or .parquet")
    reg.add_argument("--labels", required=True, help=".npy, .csv or .parquet (one column)")
    reg.add_argument("--offline", action="store_true",
                     help="do not ask the hub: the flags below give the schema; nothing is reported")
    reg.add_argument("--input-spec", help='JSON, e.g. {"n_features": 30, "n_classes": 2} (checked against the hub)')
    reg.add_argument("--n-features", type=int)
    reg.add_argument(
        "--task-type", choices=["binary_classification", "multiclass_classification", "regression"]
    )
    reg.add_argument("--n-classes", type=int)
    reg.add_argument(
        "--split",
        choices=["test", "train"],
        default="test",
        help="test: the evaluation shard (default); train: rows for federated fine-tuning (kept here)",
    )
    reg.add_argument("--no-report", action="store_true", help="store only; do not tell the hub")

    ledger = sub.add_parser("ledger", help="the site's egress ledger")
    ledger_sub = ledger.add_subparsers(dest="ledger_command", required=True)
    export = ledger_sub.add_parser("export", help="print or write the ledger")
    export.add_argument("--config")
    export.add_argument("--csv", help="write CSV to this file (default: JSON lines on stdout)")
    rec = ledger_sub.add_parser("reconcile", help="compare the ledger with the hub's receipts (evaluator/ledger_reconcile.py)")
    rec.add_argument("--config", required=True)
    rec.add_argument("--repair", action="store_true", help="confirm, void and recover entries as reported")

    budget = sub.add_parser("budget", help="privacy spent per (task, vendor, split), from the ledger")
    budget.add_argument("--config")

    dry = sub.add_parser("dry-run", help="a vendor's model on a task's public sample, sandboxed as at a site")
    dry.add_argument("--format", required=True, choices=["torchscript", "sklearn", "onnx", "python_package"])
    dry.add_argument("--model", required=True, help="the artifact file")
    dry.add_argument("--sample", required=True, help="the task's public sample (.npy, .csv or .parquet features)")
    dry.add_argument("--labels", help="labels for the sample, to print metrics")
    dry.add_argument(
        "--task-type", required=True, choices=["binary_classification", "multiclass_classification", "regression"]
    )
    dry.add_argument("--n-classes", type=int)
    dry.add_argument("--image", help="runner image (default: build or find it)")
    dry.add_argument("--memory-mb", type=int, default=1024)
    dry.add_argument("--cpus", type=float, default=1.0)
    dry.add_argument("--timeout-seconds", type=int, default=300)
    dry.add_argument("--max-output-mb", type=int, default=64)

    releases = sub.add_parser("releases", help="results held for the owner's release decision")
    releases_sub = releases.add_subparsers(dest="releases_command", required=True)
    listing = releases_sub.add_parser("list", help="show held results (values stay here)")
    listing.add_argument("--config")
    for verb in ("approve", "refuse"):
        decide = releases_sub.add_parser(verb, help=f"{verb} the release of a held result")
        decide.add_argument("job", help="the job id")
        decide.add_argument("--config")
    return parser


def _input_spec(args: argparse.Namespace) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if args.input_spec:
        try:
            spec = json.loads(args.input_spec)
        except json.JSONDecodeError as exc:
            raise SystemExit(f"--input-spec is not valid JSON: {exc}") from None
        if not isinstance(spec, dict):
            raise SystemExit("--input-spec must be a JSON object")
    if args.n_features is not None:
        spec["n_features"] = args.n_features
    if args.n_classes is not None:
        spec["n_classes"] = args.n_classes
    if args.task_type:
        spec["task_type"] = args.task_type
    if "n_features" not in spec or "task_type" not in spec:
        raise SystemExit("give --input-spec JSON or --n-features and --task-type")
    return spec


def _cmd_run(args: argparse.Namespace) -> int:
    from evaluator.agent import Agent
    from evaluator.client import HubClient, HubError
    from evaluator.jsonlog import bind

    config = load_config(args.config)
    agent = Agent(config, HubClient.from_config(config))
    bind(agent=agent.client.agent_id)
    if args.metrics_port:
        from evaluator.site_metrics import serve

        serve(config, args.metrics_port)

    def _stop(signum: int, frame: Any) -> None:
        logging.getLogger("evaluator").info("signal %s: finishing the current job, then exiting", signum)
        agent.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    if args.once:
        try:
            worked = agent.run_once()
        except HubError as exc:
            print(f"hub error: {exc}", file=sys.stderr)
            return 3
        print("processed one job" if worked else "no job queued")
        return 0
    agent.run_forever()
    return 0


def _cmd_register(args: argparse.Namespace) -> int:
    from evaluator.site_cli import register_data

    return register_data(args, _input_spec)


def _cmd_ledger_export(args: argparse.Namespace) -> int:
    from evaluator.ledger import Ledger, LedgerError

    config = load_config(args.config, require_hub=False)
    ledger = Ledger(config.ledger_path)
    try:
        if args.csv:
            n = ledger.export_csv(args.csv)
            print(f"{n} entries written to {args.csv}", file=sys.stderr)
        else:
            for entry in ledger.iter_entries():
                sys.stdout.write(entry.to_json_line().decode("ascii"))
    except LedgerError as exc:
        print(f"ledger error: {exc}", file=sys.stderr)
        return 2
    return 0


def _cmd_budget(args: argparse.Namespace) -> int:
    """One JSON line per (task, vendor, split): releases, summed rho and its epsilon (ledger),
    plus the rho reserved for jobs in flight (site budget file); then one line per (task,
    split) for all vendors together (``"vendor": "*"``)."""
    from evaluator.ledger import Ledger, LedgerError, Spent
    from evaluator.site_budget import SiteBudget

    config = load_config(args.config, require_hub=False)
    try:
        spent = Ledger(config.ledger_path).spent()
    except LedgerError as exc:
        print(f"ledger error: {exc}", file=sys.stderr)
        return 2
    reserved: dict[tuple[str, str, str], float] = {}
    for held in SiteBudget(config.budget_path).reservations().values():
        key = (held["task"], held["vendor"], held["split"])
        reserved[key] = reserved.get(key, 0.0) + float(held["rho"])
    totals: dict[tuple[str, str], Spent] = {}
    for (task, _vendor, split), row in spent.items():
        old = totals.get((task, split), Spent(0, 0.0, 1.0))
        totals[(task, split)] = Spent(old.releases + row.releases, old.rho + row.rho, min(old.delta, row.delta))
    rows = [(key, spent.get(key, Spent(0, 0.0, 1.0))) for key in sorted(set(spent) | set(reserved))]
    rows += [((task, "*", split), row) for (task, split), row in sorted(totals.items())]
    for (task, vendor, split), row in rows:
        in_flight = sum(r for (t, v, sp), r in reserved.items() if t == task and sp == split and vendor in ("*", v))
        print(json.dumps({
            "task": task, "vendor": vendor, "split": split, "releases": row.releases,
            "rho": row.rho, "epsilon": row.epsilon, "delta": row.delta if row.releases else None,
            "reserved_rho": in_flight,
        }))  # fmt: skip
    return 0


def _cmd_dry_run(args: argparse.Namespace) -> int:
    from evaluator.dry_run import cli

    return cli(args)


def _cmd_releases(args: argparse.Namespace) -> int:
    """The site operator's side of release approval: the agent releases at its next loop."""
    from evaluator.state import AgentState

    config = load_config(args.config, require_hub=False)
    state = AgentState(config.state_path)
    if args.releases_command == "list":
        for job_id, held in sorted(state.held().items()):
            decision = held.get("local_decision", "waiting")
            # The held statistics stay here: noised, but a release only once approved.
            epsilon = (held.get("terms") or {}).get("epsilon")
            print(json.dumps({"job": job_id, "epsilon": epsilon, "decision": decision}))
        return 0
    decision = "approved" if args.releases_command == "approve" else "refused"
    if not state.decide_held(args.job, decision):
        print(f"no held result for job {args.job}", file=sys.stderr)
        return 2
    print(f"job {args.job}: {decision}; the agent acts on it at its next loop")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from evaluator.jsonlog import configure

    try:
        configure(args.log_level, args.log_format)
    except ValueError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    try:
        if args.command == "run":
            return _cmd_run(args)
        if args.command in ("init", "status", "doctor"):
            from evaluator import site_cli

            return {"init": site_cli.cmd_init, "status": site_cli.cmd_status, "doctor": site_cli.cmd_doctor}[
                args.command
            ](args)
        if args.command == "register-data":
            return _cmd_register(args)
        if args.command == "releases":
            return _cmd_releases(args)
        if args.command == "dry-run":
            return _cmd_dry_run(args)
        if args.command == "budget":
            return _cmd_budget(args)
        if args.command == "ledger" and args.ledger_command == "reconcile":  # H2: tiny edit
            from evaluator.ledger_reconcile import main as reconcile_main

            return reconcile_main(["--config", args.config, *(["--repair"] if args.repair else [])])
        return _cmd_ledger_export(args)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2


def run() -> None:
    """The ``vaultbench-site`` console script."""
    sys.exit(main())


if __name__ == "__main__":
    run()
