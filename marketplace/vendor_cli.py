"""The vendor's command line (``vaultbench``, or ``python -m marketplace.vendor_cli``): upload
models and follow them over the hub's REST API, with the SDK in ``marketplace.client``.

    vaultbench tasks
    vaultbench quota --task 3
    vaultbench submit model.joblib --task 3 --format sklearn --name "LogReg v2" [--wait [--timeout S]]
    vaultbench status 17
    vaultbench leaderboard 3 [--sort accuracy] [--all]
    vaultbench nominate 17

Every command takes ``--json`` (one JSON document on stdout; progress and errors on stderr).
Configuration: ``--hub`` / VAULTBENCH_HUB_URL and a personal API token in VAULTBENCH_TOKEN
(create one on your account page). Needs only ``requests``; it does not load Django.

Every upload spends privacy budget (``quota`` shows what is left). A submission shows as
"pending" until its release time, then "scored" with its (differentially private) scores, or
"failed" with no reason.

Exit codes (``status`` and ``submit --wait``; the others use 0, 2 and 3):
    0  done; the submission is scored (or, without --wait, uploaded / still pending)
    1  the submission failed
    2  bad arguments, or the hub refused the request (its error code is printed)
    3  the hub cannot be reached
    4  ``--wait`` gave up: still pending after ``--timeout`` seconds
    5  the submission was rejected by the task's owner
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

from marketplace.client import (
    FORMATS,
    Client,
    ClientError,
    HubError,
    HubUnreachable,
    WaitTimeout,
)

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_TIMEOUT, EXIT_REJECTED = 0, 1, 2, 3, 4, 5
PROGRESS_EVERY_SECONDS = 30


def _emit(args: argparse.Namespace, document: Any, text: str) -> None:
    if args.json:
        print(json.dumps(document, indent=2, sort_keys=True))
    elif text:
        print(text)


def _exit_code(submission: dict) -> int:
    return {"failed": EXIT_FAILED, "rejected": EXIT_REJECTED}.get(submission["status"], EXIT_OK)


def _release_time(submission: dict) -> str | None:
    """When a pending submission can next become visible: the next point of the release grid."""
    delay = submission.get("release_delay_seconds") or 0
    if delay <= 0 or not submission.get("created_at"):
        return None
    created = datetime.fromisoformat(submission["created_at"].replace("Z", "+00:00"))
    elapsed = max((datetime.now(UTC) - created).total_seconds(), 1.0)
    return (created + timedelta(seconds=math.ceil(elapsed / delay) * delay)).astimezone(UTC).strftime("%H:%M:%S UTC")


def _status_line(submission: dict) -> str:
    status = submission["status"]
    detail = ""
    if submission.get("status_reason"):
        detail = f" ({submission['status_reason']})"
    elif status == "pending" and _release_time(submission):
        detail = f" (results at {_release_time(submission)} at the earliest)"
    return f"#{submission['id']} {submission['name']}: {status}{detail}"


def _format_submission(submission: dict) -> str:
    lines = [_status_line(submission)]
    if submission.get("ladder_improved") is False:
        lines.append("  no improvement on your best (Ladder): no new score released")
    for name, value in (submission.get("metrics") or {}).items():
        lines.append(f"  {name} = {value}")
    for site in submission.get("per_site") or []:
        values = "  ".join(f"{k}={v}" for k, v in site["metrics"].items())
        lines.append(f"  site {site['site']} ({site['n_rows']} rows): {values}")
    for job in submission.get("jobs") or []:  # the task's owner only
        failure = f" — {job['failure_reason']}" if job.get("failure_reason") else ""
        lines.append(f"  site {job['site']}: {job['status']}{failure}")
    return "\n".join(lines)


def cmd_tasks(client: Client, args: argparse.Namespace) -> int:
    tasks = client.tasks(status=None if args.all else "open")
    text = "\n".join(f"{t['id']:>5}  {t['title']}  ({t['task_type']}, {t['visibility']}, {t['status']})" for t in tasks)
    _emit(args, tasks, text or "no tasks")
    return EXIT_OK


def cmd_quota(client: Client, args: argparse.Namespace) -> int:
    quota = client.quota(args.task)
    total = "unlimited" if quota["remaining_total"] is None else f"{quota['remaining_total']} of {quota['quota_total']}"
    privacy = quota["privacy"]
    text = "\n".join([
        f"submissions left today: {quota['remaining_today']} of {quota['quota_per_day']} (in total: {total})",
        f"privacy: epsilon {privacy['epsilon_per_release']:g} per submission at delta {privacy['delta']:g}; "
        f"spent {privacy['vendor_epsilon_spent']:.2f} of {privacy['vendor_epsilon']:g}, "
        f"{privacy['vendor_epsilon_remaining']:.2f} remaining (task: {privacy['task_epsilon_remaining']:.2f} left "
        f"for all vendors)",
        f"uploads that fit the privacy budget: {privacy['submissions_left']}",
        f"mechanism: {privacy['mechanism']}; accountant: {privacy['accountant']}",
    ])  # fmt: skip
    _emit(args, quota, text)
    return EXIT_OK


def _progress_printer(args: argparse.Namespace):
    """Progress on stderr while waiting: at every change of status and every 30 s otherwise."""
    last: dict[str, Any] = {"status": None, "at": -math.inf}

    def report(submission: dict, elapsed: float) -> None:
        if submission["status"] == last["status"] and elapsed - last["at"] < PROGRESS_EVERY_SECONDS:
            return
        last.update(status=submission["status"], at=elapsed)
        print(f"[{elapsed:6.0f} s] {_status_line(submission)}", file=sys.stderr, flush=True)

    return report


def _wait(client: Client, args: argparse.Namespace, submission_id: int) -> int:
    try:
        final = client.wait(submission_id, timeout=args.timeout, poll_seconds=args.poll,
                            on_progress=_progress_printer(args))  # fmt: skip
    except WaitTimeout as exc:
        _emit(args, exc.submission, _format_submission(exc.submission))
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_TIMEOUT
    _emit(args, final, _format_submission(final))
    return _exit_code(final)


def cmd_submit(client: Client, args: argparse.Namespace) -> int:
    submission = client.submit(task=args.task, artifact=args.artifact, artifact_format=args.format,
                               name=args.name, description=args.description)  # fmt: skip
    message = f"submitted #{submission['id']} ({submission['size']} bytes, sha256 {submission.get('sha256', '')[:12]}…)"
    if args.wait:
        print(message, file=sys.stderr if args.json else sys.stdout, flush=True)
        return _wait(client, args, submission["id"])
    _emit(args, submission, message)
    return EXIT_OK


def cmd_status(client: Client, args: argparse.Namespace) -> int:
    submission = client.status(args.submission)
    _emit(args, submission, _format_submission(submission))
    return _exit_code(submission)


def cmd_wait(client: Client, args: argparse.Namespace) -> int:
    return _wait(client, args, args.submission)


def cmd_leaderboard(client: Client, args: argparse.Namespace) -> int:
    board = client.leaderboard(args.task, sort=args.sort, view="all" if args.all else None)
    lines = []
    for row in board["results"]:
        values = "  ".join(f"{k}={v}" for k, v in row["metrics"].items())
        lines.append(f"{row['rank']:>3}. {row['vendor']} / {row['model_name']} ({row['artifact_format']})  {values}")
        for site in row.get("per_site") or []:  # only where the task shows per-site values
            site_values = "  ".join(f"{k}={v}" for k, v in site["metrics"].items())
            lines.append(f"       site {site['site']}: {site_values}")
    _emit(args, board, "\n".join(lines) or "no entries yet")
    return EXIT_OK


def cmd_nominate(client: Client, args: argparse.Namespace) -> int:
    submission = client.nominate(args.submission)
    _emit(args, submission, f"#{submission['id']} is now a final submission")
    return EXIT_OK


def _positive(value: str) -> float:
    number = float(value)
    if not math.isfinite(number) or number < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative number of seconds, not {value}")
    return number


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vaultbench", description="Vaultbench for vendors",
        epilog="exit codes: 0 ok/scored, 1 failed, 2 bad arguments or refused by the hub, 3 hub unreachable, "
               "4 --wait timed out, 5 rejected",
    )  # fmt: skip
    parser.add_argument("--hub", default=os.environ.get("VAULTBENCH_HUB_URL", "http://127.0.0.1:8000"),
                        help="the hub's address (VAULTBENCH_HUB_URL)")  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON on stdout")
    sub = parser.add_subparsers(dest="command", required=True)
    tasks = sub.add_parser("tasks", parents=[common], help="open tasks you may see (every page)")
    tasks.add_argument("--all", action="store_true", help="every status, not only open tasks")
    quota = sub.add_parser("quota", parents=[common], help="submissions and privacy budget left on a task")
    quota.add_argument("--task", type=int, required=True)
    submit = sub.add_parser("submit", parents=[common], help="upload a model")
    submit.add_argument("artifact")
    submit.add_argument("--task", type=int, required=True)
    submit.add_argument("--format", choices=FORMATS, required=True)
    submit.add_argument("--name", required=True)
    submit.add_argument("--description", default="")
    submit.add_argument("--wait", action="store_true", help="wait until the results are visible, showing progress")
    for waiting in (submit, wait := sub.add_parser("wait", parents=[common], help="wait for a submission's results")):
        waiting.add_argument("--timeout", type=_positive, default=1800, help="seconds (default 1800)")
        waiting.add_argument("--poll", type=_positive, default=3, help="seconds between polls (default 3)")
    wait.add_argument("submission", type=int)
    status = sub.add_parser("status", parents=[common], help="a submission's status and, once visible, its scores")
    status.add_argument("submission", type=int)
    board = sub.add_parser("leaderboard", parents=[common], help="a task's leaderboard (every page)")
    board.add_argument("task", type=int)
    board.add_argument("--sort", help="one of the task's metrics (default: the primary metric)")
    board.add_argument("--all", action="store_true", help="every submission, not each vendor's best")
    nominate = sub.add_parser("nominate", parents=[common], help="pick a final submission for the private leaderboard")
    nominate.add_argument("submission", type=int)
    return parser


COMMANDS = {"tasks": cmd_tasks, "quota": cmd_quota, "submit": cmd_submit, "status": cmd_status, "wait": cmd_wait,
            "leaderboard": cmd_leaderboard, "nominate": cmd_nominate}  # fmt: skip


def _fail(args: argparse.Namespace, code: int, exc: ClientError) -> int:
    print(f"error: {exc}", file=sys.stderr)
    if args.json:
        error: dict[str, Any] = {"message": str(exc), "exit_code": code}
        if isinstance(exc, HubError):
            error.update(http_status=exc.status, code=exc.code, details=exc.details, message=exc.message)
        print(json.dumps({"error": error}, indent=2, sort_keys=True))
    return code


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        client = Client(args.hub, os.environ.get("VAULTBENCH_TOKEN", ""))
        return COMMANDS[args.command](client, args)
    except HubUnreachable as exc:
        return _fail(args, EXIT_UNREACHABLE, exc)
    except ClientError as exc:
        if "token is needed" in str(exc):
            exc = ClientError(f"{exc}: set VAULTBENCH_TOKEN")
        return _fail(args, EXIT_USAGE, exc)


def run() -> None:
    """The ``vaultbench`` console script."""
    sys.exit(main())


if __name__ == "__main__":
    run()
