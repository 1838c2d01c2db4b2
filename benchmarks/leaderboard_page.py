"""Page weight and server time of a task page whose leaderboard has 1,000 entries (issue 11:
goal under 100 KB transferred and under 100 ms server time), and of the leaderboard API.

    python benchmarks/leaderboard_page.py [--entries 1000] [--vendors 250] [--repeats 15] [--json out.json]

Sets up a hub database in a temporary folder (SQLite, migrated), one owner, one public task with
two metrics, `--vendors` vendor organizations and `--entries` scored submissions spread over them
(LeaderboardEntry rows written directly: the pooling that produces them is measured elsewhere),
all past their release time. Requests go through Django's test client in this process: "server
time" is the time from request to complete response in the full middleware stack (no network),
median of `--repeats` after two warm-ups, as wall time and as this process's CPU time (the
machine may be shared: the load average is printed). "Transferred" is the body as sent, and gzip-compressed
(level 6, what a compressing proxy or middleware sends); DOM elements are the start tags.

Measured: the task page as a visitor (default view: best per vendor, first page), with ?view=all,
the live poll of the board when nothing changed (?since=<version>: 204) and when it changed,
and the API (first page; If-None-Match on an unchanged board: 304). Works against older commits
too (what they lack answers as they did), for the BEFORE figures.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from html.parser import HTMLParser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from leaderboard_board import build_board  # noqa: E402


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.count = 0

    def handle_starttag(self, tag, attrs):
        self.count += 1

    def handle_startendtag(self, tag, attrs):
        self.count += 1


def dom_elements(html: str) -> int:
    parser = _Tags()
    parser.feed(html)
    return parser.count


def setup_django(tmp: Path) -> None:
    os.environ["DATABASE_URL"] = f"sqlite:///{tmp / 'hub.sqlite3'}"
    os.environ["VAULTBENCH_VAR_DIR"] = str(tmp / "var")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "marketplace.settings")
    import logging

    import django

    django.setup()
    logging.disable(logging.INFO)  # one access-log line per request would drown the figures
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def measure(client, url: str, *, repeats: int, headers: dict | None = None) -> dict:
    headers = headers or {}
    for _ in range(2):
        response = client.get(url, **headers)
    times, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        response = client.get(url, **headers)
        times.append((time.perf_counter() - t0) * 1000)
        cpu.append((time.process_time() - c0) * 1000)
    body = b"".join(response.streaming_content) if response.streaming else response.content
    text = body.decode(errors="replace")
    return {"url": url, "status": response.status_code, "server_ms": round(statistics.median(times), 1),
            "cpu_ms": round(statistics.median(cpu), 1),
            "bytes": len(body), "gzip_bytes": len(gzip.compress(body, 6)) if body else 0,
            "dom_elements": dom_elements(text) if "html" in response.get("Content-Type", "") else None,
            "rows": text.count("<tr data-row=") or text.count("<tr") if "html" in response.get("Content-Type", "") else None,
            "etag": response.get("ETag"), "_text": text}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1000)
    parser.add_argument("--vendors", type=int, default=250)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vb-board-") as tmp:
        setup_django(Path(tmp))
        from django.test import Client
        from django.test.utils import setup_test_environment

        setup_test_environment()
        task = build_board(entries=args.entries, vendors=args.vendors)
        client = Client()
        results = {}
        results["task_page"] = measure(client, f"/tasks/{task.id}/", repeats=args.repeats)
        results["task_page_all"] = measure(client, f"/tasks/{task.id}/?view=all", repeats=args.repeats)
        version = re.search(r'data-version="([^"]+)"', results["task_page"]["_text"])
        since = f"?since={version.group(1)}" if version else ""
        results["poll_unchanged"] = measure(client, f"/tasks/{task.id}/leaderboard/{since}", repeats=args.repeats)
        results["poll_changed"] = measure(client, f"/tasks/{task.id}/leaderboard/?since=stale", repeats=args.repeats)
        api = f"/api/v1/tasks/{task.id}/leaderboard"
        results["api_first_page"] = measure(client, api, repeats=args.repeats)
        results["api_all_view"] = measure(client, api + "?view=all", repeats=args.repeats)
        etag = results["api_first_page"]["etag"]
        results["api_unchanged"] = measure(client, api, repeats=args.repeats,
                                           headers={"HTTP_IF_NONE_MATCH": etag} if etag else {})  # fmt: skip
        for figures in results.values():
            figures.pop("_text")
        report = {"entries": args.entries, "vendors": args.vendors, "repeats": args.repeats,
                  "python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
                  "load": [round(x, 2) for x in os.getloadavg()],
                  "results": results}  # fmt: skip
        print(f"{args.entries} entries from {args.vendors} vendors; median of {args.repeats} requests")
        print(f"load average before: {report['load']}")
        print(f"{'request':<16}{'status':>7}{'server ms':>11}{'cpu ms':>8}{'bytes':>10}{'gzip':>9}{'elements':>10}")
        for name, f in results.items():
            print(f"{name:<16}{f['status']:>7}{f['server_ms']:>11}{f['cpu_ms']:>8}{f['bytes']:>10}{f['gzip_bytes']:>9}"
                  f"{f['dom_elements'] if f['dom_elements'] is not None else '-':>10}")  # fmt: skip
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
