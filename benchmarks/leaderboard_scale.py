"""The leaderboard at 10,000 scored submissions on one task, read over real HTTP by 1, 10 and 100
concurrent clients (issue 13, part 4: goal p99 <= 50 ms for the API with 100 readers on PostgreSQL).

    python benchmarks/leaderboard_scale.py --db sqlite   [--entries 10000] [--clients 1,10,100]
    python benchmarks/leaderboard_scale.py --db postgres [--seconds 15] [--json out.json]

Builds a hub database (SQLite in a temporary folder, or a PostgreSQL database of its own named
`vb_bench_leaderboard`, created and dropped here, on the server `.ci/lib/services.sh` starts:
`eval "$(bash .ci/lib/services.sh 2>/dev/null)"` first), migrated, with one owner, one public task
with two metrics, `--vendors` vendors and `--entries` scored submissions past their release time
(rows written directly; scoring itself is measured elsewhere). Then starts gunicorn on 127.0.0.1
(a free port) as docs/running-a-hub.md runs it (`--workers 4`, sync workers), in production mode
(DEBUG off, collected static files; with --db postgres the cache is Redis, VAULTBENCH_CACHE_URL =
database 1 of CELERY_BROKER_URL's server, as in production; with sqlite each process's memory), and for each request kind and each client count runs that many
threads, each sending requests back to back (closed loop, no think time) for `--seconds`; the
figures are latency p50/p99 of the requests completed, throughput, and body bytes.

SQL queries per request are counted in this process on the same database (Django's test client and
CaptureQueriesContext, the same code path; the count does not depend on concurrency).

Request kinds: `healthz` (the probe the first middleware answers, no database: the fastest answer
this stack gives on the machine at that moment, the run's baseline), `api` (GET /api/v1/tasks/{id}/leaderboard, the first page of the default view),
`api_deep` (?view=all&page=100), `api_304` (the first page with If-None-Match: an unchanged board),
`page` (the portal's task page as a visitor) and `poll` (the task page's live poll of an
unchanged board). Works against older commits (copy this file into an exported tree and run it
there) for BEFORE figures: their gunicorn and code are that tree's.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import re
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BENCH_DB = "vb_bench_leaderboard"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def hub_env(db: str, tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    if db == "postgres":
        base = os.environ.get("DATABASE_URL", "")
        if not base.startswith("postgres"):
            sys.exit('--db postgres needs DATABASE_URL: eval "$(bash .ci/lib/services.sh 2>/dev/null)"')
        env["DATABASE_URL"] = base.rsplit("/", 1)[0] + "/" + BENCH_DB
        broker = os.environ.get("CELERY_BROKER_URL", "")
        if broker.startswith("redis://") and "VAULTBENCH_CACHE_URL" not in env:  # production: a shared cache
            env["VAULTBENCH_CACHE_URL"] = broker.rsplit("/", 1)[0] + "/1"
    else:
        env["DATABASE_URL"] = f"sqlite:///{tmp / 'hub.sqlite3'}"
        env.pop("CELERY_BROKER_URL", None)  # the embedded hub: no Redis, local-memory cache
        env.pop("VAULTBENCH_CACHE_URL", None)
    env.update({
        "VAULTBENCH_VAR_DIR": str(tmp / "var"), "VAULTBENCH_ENV": "production",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50), "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
        "DJANGO_SECURE_SSL_REDIRECT": "0", "LOG_LEVEL": "WARNING", "DJANGO_SETTINGS_MODULE": "marketplace.settings",
    })  # fmt: skip
    return env


def create_postgres_database(url: str, *, drop_only: bool = False) -> None:
    import psycopg

    admin = url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin.replace("postgresql://", "postgres://", 1), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")
        if not drop_only:
            conn.execute(f"CREATE DATABASE {BENCH_DB}")


def setup_django(env: dict[str, str]) -> None:
    os.environ.update(env)
    import logging

    import django

    django.setup()
    logging.disable(logging.WARNING)
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    call_command("collectstatic", verbosity=0, interactive=False)


def build_board(*, entries: int, vendors: int):
    """One public task, `vendors` vendors, `entries` scored submissions over the last 30 days."""
    import random

    from django.contrib.auth import get_user_model
    from django.db import transaction
    from django.utils import timezone

    from marketplace.accounts.services import organization_create
    from marketplace.catalog.services import task_create, task_open
    from marketplace.leaderboard.models import LeaderboardEntry
    from marketplace.submissions.models import Submission

    user = get_user_model().objects.create_user(username="olivia", password=None)
    owner = organization_create(name="St. Mercy Hospitals", kind="data_owner", creator=user)
    spec = {"title": "Sepsis onset", "description": "Benchmark board.", "task_type": "binary_classification",
            "input_spec": {"n_features": 30, "dtype": "float32", "n_classes": 2},
            "metrics": [{"name": "roc_auc", "decimals": 4}, {"name": "log_loss", "decimals": 3}],
            "primary_metric": "roc_auc", "min_test_rows": 10, "show_per_site": True}  # fmt: skip
    task = task_open(task=task_create(organization=owner, actor=user, spec=spec), actor=user)
    orgs = []
    for i in range(vendors):
        member = get_user_model().objects.create_user(username=f"vendor{i}", password=None)
        orgs.append(organization_create(name=f"Vendor organization {i:04d}", kind="vendor", creator=member))
    rng = random.Random(0)
    start = timezone.now() - timedelta(days=30)
    step = timedelta(days=29) / entries
    with transaction.atomic():
        saved = Submission.objects.bulk_create(
            Submission(vendor=orgs[i % vendors], task=task, name=f"gradient-boosted-trees-{i:05d}",
                       artifact="artifacts/x/artifact", artifact_format="sklearn", original_filename="model.joblib",
                       size=2200 + i, sha256=f"{i:064x}", status="scored",
                       results_visible_at=start + step * i + timedelta(minutes=10))
            for i in range(entries)
        )  # fmt: skip
        saved = list(Submission.objects.filter(task=task).order_by("id"))
        for i, submission in enumerate(saved):  # upload times spread over the month (auto_now_add)
            submission.created_at = start + step * i
        Submission.objects.bulk_update(saved, ["created_at"], batch_size=1000)
        sites = [{"site": "north", "n_rows": 200}, {"site": "south", "n_rows": 200}]
        LeaderboardEntry.objects.bulk_create(
            LeaderboardEntry(task=task, submission=s, n_rows=400, n_sites=2,
                             metrics={"roc_auc": min(1.0, 0.7 + 0.2 * i / entries + rng.gauss(0, 0.02)),
                                      "log_loss": max(0.0, 0.5 - 0.2 * i / entries + rng.gauss(0, 0.02))},
                             per_site=[{**site, "metrics": {"roc_auc": 0.8, "log_loss": 0.4}} for site in sites])
            for i, s in enumerate(saved)
        )  # fmt: skip
    try:  # the precomputed standings, where this tree has them (as a score arriving would)
        from marketplace.leaderboard.standings import standings_refresh
    except ImportError:
        pass
    else:
        standings_refresh(task_id=task.id)
    return task


def queries_per_request(urls: dict[str, tuple[str, dict]]) -> dict[str, dict]:
    """SQL queries and status of each request kind, in this process (twice: the first may fill a cache)."""
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    client = Client(HTTP_HOST="127.0.0.1")
    out = {}
    for name, (url, headers) in urls.items():
        counts = []
        for _ in range(2):
            with CaptureQueriesContext(connection) as ctx:
                response = client.get(url, **{f"HTTP_{k.upper().replace('-', '_')}": v for k, v in headers.items()})
            counts.append(len(ctx.captured_queries))
        out[name] = {"status": response.status_code, "queries_first": counts[0], "queries": counts[1]}
    return out


def start_gunicorn(env: dict[str, str], port: int, workers: int, log: Path) -> subprocess.Popen:
    gunicorn = Path(sys.executable).with_name("gunicorn")
    command = [str(gunicorn), "marketplace.wsgi", "--bind", f"127.0.0.1:{port}", "--workers", str(workers),
               "--timeout", "300"]  # fmt: skip
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            status, _, _ = fetch(port, "/healthz", {})
            if status == 200:
                return process
        except OSError:
            time.sleep(0.2)
    process.kill()
    sys.exit(f"gunicorn did not start; see {log}: {log.read_text()[-2000:]}")


def fetch(port: int, url: str, headers: dict, timeout: float = 300) -> tuple[int, int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", url, headers={"Host": "127.0.0.1", **headers})
        response = conn.getresponse()
        body = response.read()
        return response.status, len(body), dict(response.getheaders())
    finally:
        conn.close()


def load(port: int, url: str, headers: dict, *, clients: int, seconds: float, think: float = 0.0) -> dict:
    """`clients` threads sending requests back to back (or `think` seconds apart, the first at a
    random offset) until `seconds` have passed (each sends at least one): latency percentiles
    over every completed request, throughput, bytes."""
    import random
    latencies: list[float] = []
    sizes: list[int] = []
    statuses: dict[int, int] = {}
    errors: list[str] = []
    lock = threading.Lock()
    start_gate = threading.Barrier(clients + 1)
    stop_at = [0.0]

    def client() -> None:
        start_gate.wait()
        if think:
            time.sleep(random.uniform(0, think))
        while True:
            t0 = time.perf_counter()
            try:
                status, size, _ = fetch(port, url, headers)
            except OSError as exc:
                with lock:
                    errors.append(repr(exc))
                return
            elapsed = time.perf_counter() - t0
            with lock:
                latencies.append(elapsed * 1000)
                sizes.append(size)
                statuses[status] = statuses.get(status, 0) + 1
            if time.perf_counter() + think >= stop_at[0]:
                return
            time.sleep(think)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    t_start = time.perf_counter()
    stop_at[0] = t_start + seconds
    start_gate.wait()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - t_start
    latencies.sort()

    def pct(p: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))], 1) if latencies else 0.0

    return {"clients": clients, "requests": len(latencies), "p50_ms": pct(50), "p99_ms": pct(99),
            "max_ms": round(latencies[-1], 1) if latencies else 0.0, "rps": round(len(latencies) / wall, 1),
            "bytes": int(statistics.median(sizes)) if sizes else 0, "statuses": statuses,
            "errors": errors[:3]}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--entries", type=int, default=10000)
    parser.add_argument("--vendors", type=int, default=500)
    parser.add_argument("--clients", default="1,10,100")
    parser.add_argument("--kinds", default="healthz,api,api_deep,api_304,page,poll")
    parser.add_argument("--think", type=float, default=0.0,
                        help="seconds each client waits between requests (0: closed loop, back to back)")
    parser.add_argument("--seconds", type=float, default=10.0, help="per kind and client count")
    parser.add_argument("--workers", type=int, default=4, help="gunicorn --workers (docs/running-a-hub.md: 4)")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    levels = [int(c) for c in args.clients.split(",")]
    with tempfile.TemporaryDirectory(prefix="vb-lb-scale-") as tmp_name:
        tmp = Path(tmp_name)
        env = hub_env(args.db, tmp)
        if args.db == "postgres":
            create_postgres_database(env["DATABASE_URL"])
        gunicorn = None
        try:
            t0 = time.perf_counter()
            setup_django(env)
            task = build_board(entries=args.entries, vendors=args.vendors)
            build_s = time.perf_counter() - t0
            api = f"/api/v1/tasks/{task.id}/leaderboard"
            port = free_port()
            gunicorn = start_gunicorn(env, port, args.workers, tmp / "gunicorn.log")
            _, _, first = fetch(port, api, {})
            status, _, page_headers = fetch(port, f"/tasks/{task.id}/", {})
            page_html = _get_text(port, f"/tasks/{task.id}/")
            version = re.search(r'data-version="([^"]+)"', page_html)
            poll = f"/tasks/{task.id}/leaderboard/" + (f"?since={version.group(1)}" if version else "")
            etag = first.get("ETag") or first.get("Etag")
            urls = {
                "healthz": ("/healthz", {}),
                "api": (api, {}),
                "api_deep": (api + "?view=all&page=100", {}),
                "api_304": (api, {"If-None-Match": etag} if etag else {}),
                "page": (f"/tasks/{task.id}/", {}),
                "poll": (poll, {}),
            }
            urls = {k: v for k, v in urls.items() if k in args.kinds.split(",")}
            queries = queries_per_request(urls)
            for url, headers in urls.values():  # every worker warm (imports, templates, its cache)
                load(port, url, headers, clients=args.workers * 2, seconds=1.0)
            results: dict[str, list[dict]] = {}
            load_before = os.getloadavg()
            for name, (url, headers) in urls.items():
                results[name] = []
                for clients in levels:
                    figures = load(port, url, headers, clients=clients, seconds=args.seconds, think=args.think)
                    results[name].append(figures)
                    print(f"{name:<9} {clients:>4} clients  p50 {figures['p50_ms']:>9} ms  p99 {figures['p99_ms']:>9} ms"
                          f"  {figures['rps']:>7} req/s  {figures['bytes']:>8} B  {queries[name]['queries']:>3} queries"
                          f"  {figures['statuses']}", flush=True)  # fmt: skip
            report = {
                "db": args.db, "entries": args.entries, "vendors": args.vendors, "seconds": args.seconds,
                "think": args.think,
                "workers": args.workers, "build_s": round(build_s, 1), "python": platform.python_version(),
                "cpus": os.cpu_count(), "load_before": [round(x, 2) for x in load_before],
                "load_after": [round(x, 2) for x in os.getloadavg()],
                "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                         text=True).stdout.strip() or "(exported tree)",
                "queries": queries, "results": results,
            }  # fmt: skip
            print(json.dumps({k: report[k] for k in ("db", "entries", "workers", "cpus", "load_before", "load_after",
                                                     "build_s", "queries")}))  # fmt: skip
            if args.json:
                Path(args.json).write_text(json.dumps(report, indent=2))
        finally:
            if gunicorn is not None:
                gunicorn.terminate()
                gunicorn.wait(timeout=30)
            if args.db == "postgres":
                from django.db import connections

                connections.close_all()
                create_postgres_database(env["DATABASE_URL"], drop_only=True)
            shutil.rmtree(tmp / "var", ignore_errors=True)


def _get_text(port: int, url: str) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    try:
        conn.request("GET", url, headers={"Host": "127.0.0.1"})
        return conn.getresponse().read().decode(errors="replace")
    finally:
        conn.close()


if __name__ == "__main__":
    main()
