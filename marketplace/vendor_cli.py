"""The vendor's command line: upload models and follow them, over the hub's REST API.

    python -m marketplace.vendor_cli tasks
    python -m marketplace.vendor_cli quota --task 3
    python -m marketplace.vendor_cli submit --task 3 --format sklearn --name "LogReg v2" model.joblib [--wait]
    python -m marketplace.vendor_cli status 17
    python -m marketplace.vendor_cli leaderboard 3 [--sort accuracy]
    python -m marketplace.vendor_cli nominate 17

Configuration: `--hub` / VAULTBENCH_HUB_URL and a personal API token in VAULTBENCH_TOKEN (create
one on your account page). Needs only `requests`; it does not load Django.

Every upload spends privacy budget (`quota` shows what is left). A submission shows as "pending"
until its release time (upload + a multiple of the task's release delay), then "scored" with its
(differentially private) scores, or "failed" with no reason. `status` and `submit --wait` exit
with 1 for a failed or rejected submission.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import requests

FORMATS = ["torchscript", "sklearn", "onnx", "python_package"]
FINAL_STATUSES = {"scored", "failed", "rejected"}
FAILED_STATUSES = {"failed", "rejected"}


class CliError(Exception):
    pass


class Hub:
    def __init__(self, url: str, token: str) -> None:
        if not token:
            raise CliError("set VAULTBENCH_TOKEN to a personal API token (vbp_...)")
        self.url = url.rstrip("/")
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.session.request(method, f"{self.url}/api/v1{path}", timeout=300, **kwargs)
        if response.status_code >= 400:
            try:
                error = response.json()["error"]
                detail = f"{error['message']} ({error['code']})"
                if error.get("details"):
                    detail += f" {json.dumps(error['details'])}"
            except (ValueError, KeyError, TypeError):
                detail = response.text[:300]
            raise CliError(f"the hub refused: {response.status_code} {detail}")
        return response.json() if response.content else None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1024 * 1024), b""):
            digest.update(chunk)
    return digest.hexdigest()


def cmd_tasks(hub: Hub, args: argparse.Namespace) -> int:
    for task in hub.call("GET", "/tasks", params={"status": "open"})["results"]:
        print(f"{task['id']:>5}  {task['title']}  ({task['task_type']}, {task['visibility']})")
    return 0


def cmd_quota(hub: Hub, args: argparse.Namespace) -> int:
    quota = hub.call("GET", f"/tasks/{args.task}/quota")
    total = "unlimited" if quota["remaining_total"] is None else f"{quota['remaining_total']} of {quota['quota_total']}"
    print(f"submissions left today: {quota['remaining_today']} of {quota['quota_per_day']} (in total: {total})")
    privacy = quota["privacy"]
    print(
        f"privacy: epsilon {privacy['epsilon_per_release']:g} per submission at delta {privacy['delta']:g}; "
        f"spent {privacy['vendor_epsilon_spent']:.2f} of {privacy['vendor_epsilon']:g}, "
        f"{privacy['vendor_epsilon_remaining']:.2f} remaining (task: {privacy['task_epsilon_remaining']:.2f} left "
        f"for all vendors)"
    )
    print(f"uploads that fit the privacy budget: {privacy['submissions_left']}")
    print(f"mechanism: {privacy['mechanism']}; accountant: {privacy['accountant']}")
    return 0


def cmd_submit(hub: Hub, args: argparse.Namespace) -> int:
    path = Path(args.artifact)
    if not path.is_file():
        raise CliError(f"no such file: {path}")
    sha256 = _sha256(path)
    with path.open("rb") as handle:
        submission = hub.call(
            "POST",
            "/submissions",
            data={"task": args.task, "name": args.name, "artifact_format": args.format,
                  "description": args.description, "sha256": sha256},
            files={"artifact": (path.name, handle, "application/octet-stream")},
        )  # fmt: skip
    print(f"submitted #{submission['id']} ({submission['size']} bytes, sha256 {sha256[:12]}…)")
    if args.wait:
        return _wait(hub, submission["id"], args.timeout)
    return 0


def _wait(hub: Hub, submission_id: int, timeout: float) -> int:
    """Polls until the results are visible: the hub answers "pending" until the release time."""
    deadline = time.monotonic() + timeout
    while True:
        submission = hub.call("GET", f"/submissions/{submission_id}")
        if submission["status"] in FINAL_STATUSES:
            return _print_status(submission)
        if time.monotonic() > deadline:
            _print_status(submission)
            print(f"error: still {submission['status']} after {timeout:g} s", file=sys.stderr)
            return 4
        time.sleep(3)


def _release_time(submission: dict) -> str | None:
    """When a pending submission can next become visible: the next point of the release grid."""
    delay = submission.get("release_delay_seconds") or 0
    if delay <= 0:
        return None
    created = datetime.fromisoformat(submission["created_at"].replace("Z", "+00:00"))
    elapsed = max((datetime.now(UTC) - created).total_seconds(), 1.0)
    return (created + timedelta(seconds=math.ceil(elapsed / delay) * delay)).astimezone(UTC).strftime("%H:%M:%S UTC")


def _print_status(submission: dict) -> int:
    """Prints what the hub shows; 1 for a failed or rejected submission, else 0."""
    status = submission["status"]
    detail = ""
    if submission.get("status_reason"):
        detail = f" ({submission['status_reason']})"
    elif status == "pending" and _release_time(submission):
        detail = f" (results at {_release_time(submission)} at the earliest)"
    print(f"#{submission['id']} {submission['name']}: {status}{detail}")
    if submission.get("ladder_improved") is False:
        print("  no improvement on your best (Ladder): no new score released")
    for name, value in (submission.get("metrics") or {}).items():
        print(f"  {name} = {value}")
    for site in submission.get("per_site") or []:
        values = "  ".join(f"{k}={v}" for k, v in site["metrics"].items())
        print(f"  site {site['site']} ({site['n_rows']} rows): {values}")
    for job in submission.get("jobs") or []:  # the task's owner only
        failure = f" — {job['failure_reason']}" if job["failure_reason"] else ""
        print(f"  site {job['site']}: {job['status']}{failure}")
    return 1 if status in FAILED_STATUSES else 0


def cmd_status(hub: Hub, args: argparse.Namespace) -> int:
    return _print_status(hub.call("GET", f"/submissions/{args.submission}"))


def cmd_leaderboard(hub: Hub, args: argparse.Namespace) -> int:
    params = {"sort": args.sort} if args.sort else {}
    board = hub.call("GET", f"/tasks/{args.task}/leaderboard", params=params)
    for row in board["rows"]:
        values = "  ".join(f"{k}={v}" for k, v in row["metrics"].items())
        print(f"{row['rank']:>3}. {row['vendor']} / {row['model_name']} ({row['artifact_format']})  {values}")
        for site in row.get("per_site") or []:  # only where the task shows per-site values
            site_values = "  ".join(f"{k}={v}" for k, v in site["metrics"].items())
            print(f"       site {site['site']}: {site_values}")
    return 0


def cmd_nominate(hub: Hub, args: argparse.Namespace) -> int:
    submission = hub.call("POST", f"/submissions/{args.submission}/nominate")
    print(f"#{submission['id']} is now a final submission")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m marketplace.vendor_cli", description="Vaultbench for vendors")
    parser.add_argument("--hub", default=os.environ.get("VAULTBENCH_HUB_URL", "http://127.0.0.1:8000"))
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("tasks", help="open tasks you may see")
    quota = sub.add_parser("quota", help="submissions and privacy budget left on a task")
    quota.add_argument("--task", type=int, required=True)
    submit = sub.add_parser("submit", help="upload a model")
    submit.add_argument("artifact")
    submit.add_argument("--task", type=int, required=True)
    submit.add_argument("--format", choices=FORMATS, required=True)
    submit.add_argument("--name", required=True)
    submit.add_argument("--description", default="")
    submit.add_argument("--wait", action="store_true", help="wait until the results are visible")
    submit.add_argument("--timeout", type=float, default=1800)
    status = sub.add_parser("status", help="a submission's status and, once visible, its scores")
    status.add_argument("submission", type=int)
    board = sub.add_parser("leaderboard", help="a task's leaderboard")
    board.add_argument("task", type=int)
    board.add_argument("--sort")
    nominate = sub.add_parser("nominate", help="pick a final submission for the private leaderboard")
    nominate.add_argument("submission", type=int)
    return parser


COMMANDS = {"tasks": cmd_tasks, "quota": cmd_quota, "submit": cmd_submit, "status": cmd_status,
            "leaderboard": cmd_leaderboard, "nominate": cmd_nominate}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](Hub(args.hub, os.environ.get("VAULTBENCH_TOKEN", "")), args)
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except requests.RequestException as exc:
        print(f"error: cannot reach the hub at {args.hub}: {exc}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
