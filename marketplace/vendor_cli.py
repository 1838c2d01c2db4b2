"""The vendor's command line: upload models and follow them, over the hub's REST API.

    python -m marketplace.vendor_cli tasks
    python -m marketplace.vendor_cli submit --task 3 --format sklearn --name "LogReg v2" model.joblib
    python -m marketplace.vendor_cli status 17
    python -m marketplace.vendor_cli leaderboard 3 [--sort accuracy]
    python -m marketplace.vendor_cli nominate 17

Configuration: `--hub` / VAULTBENCH_HUB_URL and a personal API token in VAULTBENCH_TOKEN (create
one on your account page). Needs only `requests`; it does not load Django.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import requests

FORMATS = ["torchscript", "sklearn", "onnx", "python_package"]
FINAL_STATUSES = {"scored", "failed", "rejected"}


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


def cmd_tasks(hub: Hub, args: argparse.Namespace) -> None:
    for task in hub.call("GET", "/tasks", params={"status": "open"})["results"]:
        print(f"{task['id']:>5}  {task['title']}  ({task['task_type']}, {task['visibility']})")


def cmd_submit(hub: Hub, args: argparse.Namespace) -> None:
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
        _wait(hub, submission["id"], args.timeout)


def _wait(hub: Hub, submission_id: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        submission = hub.call("GET", f"/submissions/{submission_id}")
        if submission["status"] in FINAL_STATUSES or time.monotonic() > deadline:
            break
        time.sleep(3)
    _print_status(submission)


def _print_status(submission: dict) -> None:
    reason = f" ({submission['status_reason']})" if submission.get("status_reason") else ""
    print(f"#{submission['id']} {submission['name']}: {submission['status']}{reason}")
    for job in submission.get("jobs", []):
        failure = f" — {job['failure_reason']}" if job["failure_reason"] else ""
        print(f"  site {job['site']}: {job['status']}{failure}")


def cmd_status(hub: Hub, args: argparse.Namespace) -> None:
    _print_status(hub.call("GET", f"/submissions/{args.submission}"))


def cmd_leaderboard(hub: Hub, args: argparse.Namespace) -> None:
    params = {"sort": args.sort} if args.sort else {}
    board = hub.call("GET", f"/tasks/{args.task}/leaderboard", params=params)
    for row in board["rows"]:
        values = "  ".join(f"{k}={v}" for k, v in row["metrics"].items())
        print(f"{row['rank']:>3}. {row['vendor']} / {row['model_name']} ({row['artifact_format']})  {values}")


def cmd_nominate(hub: Hub, args: argparse.Namespace) -> None:
    submission = hub.call("POST", f"/submissions/{args.submission}/nominate")
    print(f"#{submission['id']} is now a final submission")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m marketplace.vendor_cli", description="Vaultbench for vendors")
    parser.add_argument("--hub", default=os.environ.get("VAULTBENCH_HUB_URL", "http://127.0.0.1:8000"))
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("tasks", help="open tasks you may see")
    submit = sub.add_parser("submit", help="upload a model")
    submit.add_argument("artifact")
    submit.add_argument("--task", type=int, required=True)
    submit.add_argument("--format", choices=FORMATS, required=True)
    submit.add_argument("--name", required=True)
    submit.add_argument("--description", default="")
    submit.add_argument("--wait", action="store_true", help="wait until every site has reported")
    submit.add_argument("--timeout", type=float, default=1800)
    status = sub.add_parser("status", help="a submission's status at each site")
    status.add_argument("submission", type=int)
    board = sub.add_parser("leaderboard", help="a task's leaderboard")
    board.add_argument("task", type=int)
    board.add_argument("--sort")
    nominate = sub.add_parser("nominate", help="pick a final submission for the private leaderboard")
    nominate.add_argument("submission", type=int)
    return parser


COMMANDS = {"tasks": cmd_tasks, "submit": cmd_submit, "status": cmd_status, "leaderboard": cmd_leaderboard,
            "nominate": cmd_nominate}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        COMMANDS[args.command](Hub(args.hub, os.environ.get("VAULTBENCH_TOKEN", "")), args)
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except requests.RequestException as exc:
        print(f"error: cannot reach the hub at {args.hub}: {exc}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
