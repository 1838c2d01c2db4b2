"""Schemathesis over the hub's OpenAPI schema, once per role, against a real hub: no 5xx.

A throw-away hub (SQLite in a temporary folder, gunicorn on a free loopback port) is seeded with
the demo's owner, sites and vendors; schemathesis then generates requests for every operation,
from the schema's examples and by fuzzing, as a visitor, a vendor, the data owner and a site
agent, and fails on any server error. Bounded (``--max-examples``) so CI stays short.

    python .ci/api_fuzz.py [--max-examples 15] [--seed 1]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
ROLES = ("visitor", "vendor", "owner", "site")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _manage(env: dict, *args: str) -> str:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, check=True, capture_output=True, text=True
    ).stdout


def _tokens(env: dict, var_dir: Path) -> dict[str, str | None]:
    _manage(env, "migrate", "-v", "0")
    _manage(env, "demo_seed", "--out", str(var_dir / "seed.json"))
    seed = json.loads((var_dir / "seed.json").read_text())
    owner = _manage(
        env,
        "shell",
        "-c",
        "from django.contrib.auth import get_user_model\n"
        "from marketplace.accounts.services import personal_token_create\n"
        f"user = get_user_model().objects.get(username={seed['owner']!r})\n"
        "print(personal_token_create(user=user, name='api fuzz')[1])",
    )
    return {
        "visitor": None,
        "vendor": seed["vendors"][0]["token"],
        "owner": owner.strip().splitlines()[-1],
        "site": seed["sites"][0]["token"],
    }


def _wait_for(url: str, deadline_seconds: float = 60) -> bytes:
    deadline = time.monotonic() + deadline_seconds
    while True:
        try:
            response = requests.get(url, timeout=5)
            response.raise_for_status()
            return response.content
        except requests.RequestException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-examples", type=int, default=15)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    var_dir = Path(tempfile.mkdtemp(prefix="vb-api-fuzz-"))
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CELERY_BROKER_URL")}
    env["VAULTBENCH_VAR_DIR"] = str(var_dir)
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    hub = None
    try:
        tokens = _tokens(env, var_dir)
        hub = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "marketplace.wsgi", "--bind", f"127.0.0.1:{port}", "--workers", "2"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=(var_dir / "hub.log").open("w"),
        )  # fmt: skip
        schema = var_dir / "schema.json"
        schema.write_bytes(_wait_for(f"{base}/api/schema/?format=json"))  # site tokens may not read it
        failed = []
        for role in ROLES:
            command = [
                str(Path(sys.executable).with_name("st")), "run", str(schema), "--url", base,
                "--checks", "not_a_server_error", "--phases", "examples,fuzzing",
                "--max-examples", str(args.max_examples), "--seed", str(args.seed), "--workers", "1",
            ]  # fmt: skip
            # One worker: with two threads Hypothesis' ast.parse of a lambda's source tripped
            # CPython 3.11's "AST constructor recursion depth mismatch" (a fuzzer crash, no request
            # sent). It runs beside the test suite, so the longer run costs no CI time.
            if tokens[role]:
                command += ["-H", f"Authorization: Bearer {tokens[role]}"]
            print(f"== api fuzz as {role}", flush=True)
            result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
            summary = [line for line in result.stdout.splitlines() if "passed" in line or "failed" in line]
            print("\n".join(summary[-4:]) or result.stdout[-2000:], flush=True)
            if result.returncode != 0:
                print(result.stdout[-6000:], flush=True)
                failed.append(role)
        if failed:
            print(f"api fuzz: server errors or crashes as {', '.join(failed)}; hub log: {var_dir / 'hub.log'}")
            return 1
        print("api fuzz: no server error for any role")
        return 0
    finally:
        if hub is not None:
            hub.terminate()
            hub.wait(timeout=30)


if __name__ == "__main__":
    sys.exit(main())
