"""The site operator's commands that ask the hub and the machine: ``register-data`` (the task's
schema comes from the hub, the data is checked against it before anything is stored), ``init``
(a commented config), ``status`` and ``doctor``. Configuration keys: docs/site-operator.md."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evaluator.config import AgentConfig, ConfigError, load_config

CONFIG_TEMPLATE = """\
# Vaultbench site agent configuration (every key: docs/site-operator.md).
# VAULTBENCH_* environment variables override the values here.

# The hub this site works for. Plain http is accepted only to this machine (loopback).
hub_url = "{hub_url}"

# The site token (vbs_...) from the hub's site page, in a file only the agent's user can read
# (or site_token = "vbs_..." here; VAULTBENCH_SITE_TOKEN overrides both).
site_token_file = "{token_file}"

# The site's private data, ledger, budget and state (keep it on a disk that is backed up).
data_dir = "{data_dir}"
# work_dir = "{data_dir}/work"       # scratch space for sandbox runs (default: <data_dir>/work)

# The runner image (default: built or found by sandbox_images/build.py). Pin it in production:
# image = "vaultbench-runner:0123456789abcdef"

poll_interval_seconds = 10            # how often an idle agent asks the hub for work
# lease_renew_interval_seconds = 20   # default: a third of the job's lease
# batch_size = 4096                   # rows per prediction batch inside the sandbox
# allow_insecure_http = false         # true only on a closed test network
# pool_size = 1                       # warm sandboxes per (image, format, limits), one job each; 0: off
# pool_memory_mb = 4096               # bound on the idle pool's summed memory limits
# compile_models = true               # numpy-only form of linear scikit-learn models for their later jobs

[limits]               # this site's maximums: a job can never loosen them
max_memory_mb = 4096
max_cpus = 2.0
max_timeout_seconds = 1800
max_output_mb = 256
max_artifact_mb = 1024
on_excess = "refuse"   # or "clamp": lower a job's request to the cap instead of refusing it
max_epsilon_per_release = 2.0
max_vendor_epsilon = 20.0
max_task_epsilon = 50.0

[retry]                # calls to the hub
max_attempts = 5
backoff_base_seconds = 0.5
backoff_max_seconds = 30
request_timeout_seconds = 30
"""


# --- init ----------------------------------------------------------------------------------


def cmd_init(args: argparse.Namespace) -> int:
    path = Path(args.path)
    if path.exists() and not args.force:
        print(f"{path} exists; pass --force to overwrite it", file=sys.stderr)
        return 2
    data_dir = Path(args.data_dir).expanduser().resolve()
    token_file = Path(args.token_file).expanduser().resolve() if args.token_file else data_dir / "site-token"
    text = CONFIG_TEMPLATE.format(hub_url=args.hub_url, token_file=token_file, data_dir=data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    try:
        # Checked as the agent will read it, but before the token file exists.
        load_config(path, env={"VAULTBENCH_SITE_TOKEN": "vbs_placeholder"})
    except ConfigError as exc:
        path.unlink()
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {path}; next: put the site token in {token_file} (chmod 600), then "
          f"`vaultbench-site doctor --config {path}`")  # fmt: skip
    return 0


# --- register-data -------------------------------------------------------------------------


def _hub_task(config: AgentConfig, task_id: str) -> dict[str, Any]:
    from evaluator.client import HubClient

    client = HubClient.from_config(config)
    return client._json("GET", f"/tasks/{task_id}", None)


def _check_flags(args: argparse.Namespace, spec: dict[str, Any]) -> str | None:
    """Flags an operator still passes must agree with the hub: the hub's schema decides."""
    given = {"n_features": args.n_features, "task_type": args.task_type, "n_classes": args.n_classes}
    if args.input_spec:
        try:
            given.update({k: v for k, v in json.loads(args.input_spec).items() if k in given})
        except (json.JSONDecodeError, AttributeError):
            return "--input-spec is not a valid JSON object"
    for key, value in given.items():
        if value is not None and spec.get(key) is not None and value != spec[key]:
            return f"--{key.replace('_', '-')} {value} disagrees with the hub's task ({key} = {spec[key]})"
    return None


def register_data(args: argparse.Namespace, offline_spec: Callable[[argparse.Namespace], dict[str, Any]]) -> int:
    from evaluator import datasets
    from evaluator.client import HubError, HubRejected, HubUnreachable

    config = load_config(args.config, require_hub=not args.offline)
    task_id = args.task
    try:
        datasets.task_dir(config.data_dir, task_id)
    except datasets.DatasetError as exc:
        print(f"invalid task id: {exc}", file=sys.stderr)
        return 2
    min_rows = 1
    if args.offline:
        spec = offline_spec(args)
    else:
        try:
            task = _hub_task(config, task_id)
        except HubRejected as exc:
            what = "no such task for this site" if exc.status == 404 else str(exc)
            print(f"the hub refused task {task_id}: {what}; nothing stored", file=sys.stderr)
            return 2
        except (HubUnreachable, HubError) as exc:
            print(f"cannot ask the hub for task {task_id}'s schema: {exc}; nothing stored", file=sys.stderr)
            return 3
        spec = {**task["input_spec"], "task_type": task["task_type"]}
        min_rows = int(task.get("min_test_rows") or 1)
        disagreement = _check_flags(args, spec)
        if disagreement:
            print(f"invalid arguments: {disagreement}; nothing stored", file=sys.stderr)
            return 2
    # Everything is checked before anything is written.
    try:
        task_type, n_features, n_classes = datasets._spec(spec, None)
        features = datasets._validate_features(datasets.read_table(Path(args.features)), n_features)
        datasets._validate_labels(datasets.read_table(Path(args.labels)), n_rows=features.shape[0],
                                  task_type=task_type, n_classes=n_classes)  # fmt: skip
        need = datasets.MIN_TRAIN_ROWS if args.split == "train" else min_rows
        if features.shape[0] < need:
            raise datasets.InvalidData(f"{features.shape[0]} rows; the {args.split} split needs at least {need}")
    except datasets.DatasetError as exc:
        print(f"invalid data: {exc}; nothing stored", file=sys.stderr)
        return 2
    try:
        meta = datasets.register_task_data(
            data_dir=config.data_dir, task_id=task_id, features_path=args.features,
            labels_path=args.labels, input_spec=spec, split=args.split,
        )  # fmt: skip
    except datasets.DatasetError as exc:
        print(f"invalid data: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(meta, indent=2))
    if args.offline or args.no_report:
        return 0
    if args.split == "train":
        # The hub sends train jobs to the sites holding the task's (test) shard; the train split's
        # size stays at the site (the hub's shard endpoint describes the evaluation split).
        print("train split stored at the site; nothing reported to the hub", file=sys.stderr)
        return 0
    from evaluator.client import HubClient

    try:
        HubClient.from_config(config).register_shard(
            task_id=int(task_id) if task_id.isdigit() else task_id, row_count=meta["row_count"],
            fingerprint=meta["fingerprint"], split_sizes=meta["split_sizes"],
        )  # fmt: skip
    except HubError as exc:
        print(f"stored locally, but the hub did not accept the shard: {exc}", file=sys.stderr)
        return 3
    print("shard reported to the hub", file=sys.stderr)
    return 0


# --- status and doctor ---------------------------------------------------------------------


# Reported by doctor, but not failures: before its first start an agent has neither.
WARNINGS_ONLY = {"agent", "shards"}


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""


def _agent_processes() -> list[int]:
    """Local processes running the agent (``evaluator run`` / ``vaultbench-site run``)."""
    pids = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        words = [a.decode(errors="replace") for a in argv if a]
        is_agent = any(w.endswith("vaultbench-site") for w in words) or "evaluator" in words
        if is_agent and "run" in words and int(entry.name) != os.getpid():
            pids.append(int(entry.name))
    return sorted(pids)


def _check_engine() -> tuple[Check, Any]:
    try:
        import docker

        client = docker.from_env(timeout=10)
        version = client.version().get("Version", "?")
        return Check("engine", True, f"Docker {version} at {client.api.base_url}"), client
    except Exception as exc:
        return Check("engine", False, f"no Docker engine: {exc}",
                     "start dockerd (or set DOCKER_HOST) and give the agent's user access to it"), None  # fmt: skip


def _check_image(config: AgentConfig, client: Any) -> Check:
    ref = config.image
    if ref is None:
        from sandbox_images.build import RUNNER_REF_FILE

        ref = RUNNER_REF_FILE.read_text().strip() if RUNNER_REF_FILE.is_file() else None
    if ref is None:
        return Check("image", False, "no runner image configured or built",
                     "run `python -m sandbox_images.build` and set image = the reference it prints")  # fmt: skip
    if client is None:
        return Check("image", False, f"{ref} (cannot check without the engine)", "fix the engine first")
    try:
        image = client.images.get(ref)
    except Exception:
        return Check("image", False, f"{ref} is not in the engine",
                     "run `python -m sandbox_images.build` (offline: load the saved image)")  # fmt: skip
    return Check("image", True, f"{ref} ({image.id[:19]})")


def _check_hub(config: AgentConfig) -> Check:
    if not config.hub_url:
        return Check("hub", False, "no hub_url", "set hub_url (or VAULTBENCH_HUB_URL)")
    from evaluator.client import HubClient, HubError, HubRejected

    try:
        client = HubClient(config.hub_url, config.site_token, timeout=10, max_attempts=1)
        client._json("GET", "/pending", None)
    except HubRejected as exc:
        fix = "the site token was refused: make a new one on the hub's site page" if exc.status in (401, 403) else ""
        return Check("hub", False, f"{config.hub_url}: {exc}", fix)
    except HubError as exc:
        return Check("hub", False, f"{config.hub_url} unreachable: {exc}",
                     "check the address, DNS, the proxy and the hub's /healthz")  # fmt: skip
    return Check("hub", True, f"{config.hub_url} reachable, site token accepted")


def _shards(config: AgentConfig) -> list[dict[str, Any]]:
    shards = []
    for meta_path in sorted((config.data_dir / "tasks").glob("*/meta.json")):
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError):
            meta = {"task_id": meta_path.parent.name, "error": "unreadable meta.json"}
        train = meta_path.parent / "train" / "meta.json"
        shards.append({"task": meta.get("task_id"), "rows": meta.get("row_count"),
                       "task_type": meta.get("task_type"), "train_split": train.is_file()})  # fmt: skip
    return shards


def _check_ledger(config: AgentConfig) -> Check:
    from evaluator.ledger import Ledger, LedgerError

    if not config.ledger_path.exists():
        return Check("ledger", True, f"{config.ledger_path}: empty (no release yet)")
    try:
        entries = list(Ledger(config.ledger_path).iter_entries(verify=True))
    except LedgerError as exc:
        return Check("ledger", False, f"{config.ledger_path}: {exc}",
                     "restore the ledger from the last backup (docs/running-a-hub.md); never edit it by hand")  # fmt: skip
    return Check("ledger", True, f"{config.ledger_path}: {len(entries)} entries, hash chain verified")


def _checks(config: AgentConfig) -> tuple[list[Check], list[dict[str, Any]]]:
    checks = []
    data_ok = config.data_dir.is_dir() and os.access(config.data_dir, os.W_OK)
    checks.append(Check("data_dir", data_ok, str(config.data_dir),
                        "" if data_ok else f"mkdir -p {config.data_dir} and make it writable by the agent's user only"))  # fmt: skip
    pids = _agent_processes()
    checks.append(Check("agent", bool(pids), f"running (pid {', '.join(map(str, pids))})" if pids else "not running",
                        "start it: `vaultbench-site run --config ...` (or its systemd unit / container)"))  # fmt: skip
    engine, client = _check_engine()
    checks += [engine, _check_image(config, client), _check_hub(config), _check_ledger(config)]
    shards = _shards(config) if config.data_dir.is_dir() else []
    checks.append(Check("shards", bool(shards), f"{len(shards)} task(s) with data",
                        "register a task's data: `vaultbench-site register-data --task ID ...`"))  # fmt: skip
    return checks, shards


def cmd_status(args: argparse.Namespace) -> int:
    config = load_config(args.config, require_hub=False)
    checks, shards = _checks(config)
    if args.json:
        print(json.dumps({"checks": [c.__dict__ for c in checks], "shards": shards}, indent=2))
        return 0
    for check in checks:
        print(f"{check.name:>9}: {check.detail}")
    for shard in shards:
        train = ", train split" if shard["train_split"] else ""
        print(f"           task {shard['task']}: {shard['rows']} rows ({shard['task_type']}{train})")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    """Every check; for each that fails, what is wrong and how to fix it. Exit 1 if any fails."""
    try:
        config = load_config(args.config, require_hub=True)
    except ConfigError as exc:
        print(f"✗ config: {exc}\n  fix: edit {args.config or 'the config'} (keys: docs/site-operator.md)")
        return 1
    checks, _ = _checks(config)
    problems = 0
    for check in checks:
        warning = check.name in WARNINGS_ONLY
        mark = "✓" if check.ok else ("!" if warning else "✗")
        print(f"{mark} {check.name}: {check.detail}")
        if not check.ok:
            print(f"  fix: {check.fix}")
            problems += not warning
    print("no problems found" if not problems else f"{problems} problem(s) found")
    return 1 if problems else 0
