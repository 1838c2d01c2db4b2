"""The leaderboard at 10,000 scored submissions on one task, read over real HTTP by 1, 10 and 100
concurrent clients (issue 13, part 4: goal p99 <= 50 ms for the API with 100 readers on PostgreSQL).

    python benchmarks/leaderboard_scale.py --db sqlite   [--entries 10000] [--clients 1,10,100]
    python benchmarks/leaderboard_scale.py --db postgres [--seconds 15] [--json out.json]
    python benchmarks/leaderboard_scale.py --db postgres --generators python,wrk --via hub,nginx

Builds a hub database (SQLite in a temporary folder, or a PostgreSQL database of its own named
`vb_bench_leaderboard`, created and dropped here, on the server `.ci/lib/services.sh` starts:
`eval "$(bash .ci/lib/services.sh 2>/dev/null)"` first), migrated, with the board of
leaderboard_board.py (`--vendors` vendors, `--entries` scored submissions past their release time,
per-site values shown; its standings stored as a score arriving would). Then starts gunicorn on
127.0.0.1 (a free port) as docs/running-a-hub.md runs it (`--workers 4 --threads 8`: the gthread
worker; `--threads 1` for sync workers), in production mode (DEBUG off, collected static files;
with --db postgres the cache is Redis, VAULTBENCH_CACHE_URL = database 1 of CELERY_BROKER_URL's
server, as in production; with sqlite each process's memory), and for each request kind, client
count and load generator runs that many clients, each sending requests back to back (closed loop,
no think time) for `--seconds`; the figures are latency p50/p99 of the requests completed,
throughput, and body bytes.

Load generators (`--generators`): `python` (threads in this process, `http.client`, a new
connection per request; it shares the machine's CPU with the server, which may make it the
bottleneck) and `wrk` (C, keep-alive connections, 2 threads; `apt-get install wrk` where missing).
`--via nginx` also runs every kind through nginx in front of gunicorn, with the project's locations
(deploy/nginx/vaultbench-hub-locations.conf: anonymous leaderboard reads micro-cached for 1 s;
`apt-get install nginx-light` where missing).

SQL queries per request are counted in this process on the same database (Django's test client and
CaptureQueriesContext, the same code path; the count does not depend on concurrency).

Request kinds: `healthz` (the probe the first middleware answers, no database: the fastest answer
this stack gives on the machine at that moment, the run's baseline), `api` (GET
/api/v1/tasks/{id}/leaderboard as a visitor, the first page of the default view), `api_deep`
(?view=all&page=100), `api_304` (the first page with If-None-Match: an unchanged board), `page`
(the portal's task page as a visitor) and `poll` (the task page's live poll of an unchanged board).
Works against older commits (copy this file and leaderboard_board.py into an exported tree and run
it there) for BEFORE figures: their gunicorn and code are that tree's.
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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from leaderboard_board import build_board  # noqa: E402

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


def scoring_cost(task, repeats: int) -> dict:
    """Seconds to store the ranks when one more score arrives, the full recompute
    (standings_refresh) and the insertion (standings_add) alternating, each on a new released
    entry of a new vendor's submission; medians."""
    import random

    from django.utils import timezone

    from marketplace.leaderboard.models import LeaderboardEntry
    from marketplace.leaderboard.standings import standings_refresh
    from marketplace.submissions.models import Submission

    try:
        from marketplace.leaderboard.standings_add import standings_add
    except ImportError:  # an older tree
        standings_add = None
    rng = random.Random(1)
    vendor = Submission.objects.filter(task=task).first().vendor
    times: dict[str, list[float]] = {"full_refresh_s": [], "insert_s": []}
    for i in range(repeats * 2):
        submission = Submission.objects.create(
            vendor=vendor, task=task, name=f"late-{i}", artifact="artifacts/x/artifact", artifact_format="sklearn",
            original_filename="model.joblib", size=1, sha256=f"{10**9 + i:064x}", status="scored",
            results_visible_at=timezone.now(),
        )  # fmt: skip
        entry = LeaderboardEntry.objects.create(task=task, submission=submission, n_rows=400, n_sites=2,
                                                metrics={"roc_auc": rng.uniform(0.7, 0.9), "log_loss": 0.4})  # fmt: skip
        full = i % 2 == 0 or standings_add is None
        t0 = time.perf_counter()
        if full:
            standings_refresh(task_id=task.id)
        else:
            assert standings_add(task_id=task.id, entry_id=entry.id), "the insertion fell back to a full refresh"
        times["full_refresh_s" if full else "insert_s"].append(time.perf_counter() - t0)
    return {k: round(statistics.median(v), 4) if v else None for k, v in times.items()}


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


def start_gunicorn(env: dict[str, str], port: int, workers: int, log: Path, threads: int = 1) -> subprocess.Popen:
    """gunicorn as docs/running-a-hub.md runs it; `threads` > 1 is the gthread worker (keeps
    connections alive), 1 the sync worker (one connection per request)."""
    gunicorn = Path(sys.executable).with_name("gunicorn")
    command = [str(gunicorn), "marketplace.wsgi", "--bind", f"127.0.0.1:{port}", "--workers", str(workers),
               "--threads", str(threads), "--timeout", "300"]  # fmt: skip
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    wait_for(port, process, log)
    return process


def wait_for(port: int, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            status, _, _ = fetch(port, "/healthz", {})
            if status == 200:
                return
        except OSError:
            time.sleep(0.2)
    process.kill()
    sys.exit(f"{process.args[0]} did not start; see {log}: {log.read_text()[-2000:]}")


def debian_tool(binary: str, package: str) -> str:
    """The path of `binary`, installing its Debian package first where it is missing (as root)."""
    found = shutil.which(binary)
    if found is None:
        print(f"installing {package} (apt-get) for {binary}", flush=True)
        subprocess.run(["apt-get", "install", "-y", "-q", package], check=True, env={**os.environ,
                       "DEBIAN_FRONTEND": "noninteractive"}, stdout=subprocess.DEVNULL)  # fmt: skip
        found = shutil.which(binary) or sys.exit(f"{package} installed no {binary}")
    return found


def start_nginx(tmp: Path, hub_port: int, port: int) -> subprocess.Popen:
    """nginx in front of the hub with the project's locations (deploy/nginx/vaultbench-hub-locations.conf:
    the anonymous leaderboard micro-cache), its cache zone as vaultbench-hub.conf declares it,
    plain HTTP on 127.0.0.1, files in `tmp`."""
    nginx = debian_tool("nginx", "nginx-light")
    folder = tmp / "nginx"
    for sub in ("cache", "temp"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    temp = " ".join(f"{kind}_temp_path {folder / 'temp' / kind};" for kind in ("client_body", "proxy", "fastcgi",
                                                                                "uwsgi", "scgi"))  # fmt: skip
    conf = folder / "nginx.conf"
    conf.write_text(f"""{"user root;" if os.geteuid() == 0 else ""}
worker_processes auto;
pid {folder / "nginx.pid"};
error_log {folder / "error.log"} warn;
daemon off;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    {temp}
    proxy_cache_path {folder / "cache"} levels=1:2 keys_zone=vaultbench_board:10m max_size=256m inactive=60s
                     use_temp_path=off;
    upstream vaultbench_hub {{ server 127.0.0.1:{hub_port}; keepalive 32; }}
    server {{
        listen 127.0.0.1:{port};
        include {ROOT / "deploy/nginx/vaultbench-hub-locations.conf"};
    }}
}}
""")
    log = folder / "nginx.log"
    process = subprocess.Popen([nginx, "-c", str(conf)], stdout=log.open("wb"), stderr=subprocess.STDOUT)
    wait_for(port, process, log)
    return process


def wrk_load(port: int, url: str, headers: dict, *, clients: int, seconds: float) -> dict:
    """The same closed loop from wrk (C, keep-alive connections, 2 threads at most): its latency
    percentiles and throughput; a generator that costs little CPU per request."""
    wrk = debian_tool("wrk", "wrk")
    command = [wrk, "-t", str(min(clients, 2)), "-c", str(clients), "-d", f"{seconds:g}s", "--latency",
               "--timeout", "60s", "-H", "Host: 127.0.0.1"]  # fmt: skip
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    out = subprocess.run([*command, f"http://127.0.0.1:{port}{url}"], capture_output=True, text=True, check=True).stdout

    def ms(text: str) -> float:
        value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
        return round(float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit], 2)

    percentiles = dict(re.findall(r"^\s*(50|99)(?:\.0+)?%\s+(\S+)\s*$", out, re.M))
    if set(percentiles) != {"50", "99"}:
        raise RuntimeError(f"unexpected wrk output: {out}")
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)$", out, re.M)
    return {"clients": clients, "requests": requests, "p50_ms": ms(percentiles["50"]), "p99_ms": ms(percentiles["99"]),
            "max_ms": ms(re.search(r"Latency\s+\S+\s+\S+\s+(\S+)", out).group(1)),
            "rps": round(float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)), 1),
            "non_2xx_3xx": int(bad.group(1)) if bad else 0, "errors": [errors.group(1)] if errors else []}  # fmt: skip


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
    parser.add_argument("--threads", type=int, default=8,
                        help="gunicorn --threads (docs/running-a-hub.md: 8, the gthread worker; 1: sync workers)")
    parser.add_argument("--generators", default="python",
                        help="load generators, comma-separated: python (threads, a connection per request), "
                             "wrk (C, keep-alive; apt-get installs it where missing)")
    parser.add_argument("--via", default="hub",
                        help="hub (gunicorn directly) and/or nginx (in front, deploy/nginx's locations: the "
                             "anonymous leaderboard micro-cache; apt-get installs nginx-light where missing)")
    parser.add_argument("--scoring", type=int, default=5,
                        help="scores added to measure storing the ranks (full recompute vs insertion), each")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    levels = [int(c) for c in args.clients.split(",")]
    with tempfile.TemporaryDirectory(prefix="vb-lb-scale-") as tmp_name:
        tmp = Path(tmp_name)
        env = hub_env(args.db, tmp)
        if args.db == "postgres":
            create_postgres_database(env["DATABASE_URL"])
        gunicorn = nginx = None
        try:
            t0 = time.perf_counter()
            setup_django(env)
            task = build_board(entries=args.entries, vendors=args.vendors, show_per_site=True, refresh=True)
            build_s = time.perf_counter() - t0
            scoring = scoring_cost(task, args.scoring) if args.scoring else {}
            print(f"storing the ranks per score at {args.entries} entries: {scoring}", flush=True)
            api = f"/api/v1/tasks/{task.id}/leaderboard"
            port = free_port()
            gunicorn = start_gunicorn(env, port, args.workers, tmp / "gunicorn.log", threads=args.threads)
            ports = {"hub": port}
            if "nginx" in args.via.split(","):
                ports["nginx"] = free_port()
                nginx = start_nginx(tmp, port, ports["nginx"])
            _, _, first = fetch(port, api, {})
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
            for target in ports.values():
                for url, headers in urls.values():  # every worker warm (imports, templates, its cache)
                    load(target, url, headers, clients=args.workers * 2, seconds=1.0)
            results: dict[str, list[dict]] = {}
            load_before = os.getloadavg()
            for via in args.via.split(","):
                for name, (url, headers) in urls.items():
                    for clients in levels:
                        for generator in args.generators.split(","):
                            if generator == "wrk":
                                figures = wrk_load(ports[via], url, headers, clients=clients, seconds=args.seconds)
                                _, size, _ = fetch(ports[via], url, headers)
                                figures["bytes"] = size
                            else:
                                figures = load(ports[via], url, headers, clients=clients, seconds=args.seconds,
                                               think=args.think)  # fmt: skip
                            figures.update({"via": via, "generator": generator})
                            results.setdefault(name, []).append(figures)
                            print(f"{via:<5} {generator:<6} {name:<9} {clients:>4} clients  p50 {figures['p50_ms']:>9} ms"
                                  f"  p99 {figures['p99_ms']:>9} ms  {figures['rps']:>8} req/s  {figures['bytes']:>8} B"
                                  f"  {queries[name]['queries']:>3} queries"
                                  f"  {figures.get('statuses') or figures.get('non_2xx_3xx')} {figures['errors'][:1]}",
                                  flush=True)  # fmt: skip
            report = {
                "db": args.db, "entries": args.entries, "vendors": args.vendors, "seconds": args.seconds,
                "think": args.think,
                "workers": args.workers, "threads": args.threads, "via": args.via, "generators": args.generators,
                "build_s": round(build_s, 1), "python": platform.python_version(),
                "cpus": os.cpu_count(), "load_before": [round(x, 2) for x in load_before],
                "load_after": [round(x, 2) for x in os.getloadavg()],
                "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                         text=True).stdout.strip() or "(exported tree)",
                "queries": queries, "scoring": scoring, "results": results,
            }  # fmt: skip
            print(json.dumps({k: report[k] for k in ("db", "entries", "workers", "threads", "cpus", "load_before", "load_after",
                                                     "build_s", "scoring", "queries")}))  # fmt: skip
            if args.json:
                Path(args.json).write_text(json.dumps(report, indent=2))
        finally:
            for process in (nginx, gunicorn):
                if process is not None:
                    process.terminate()
                    process.wait(timeout=30)
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
