"""The attack replay against a live hub: pytest-django's live server, real agents, real sandboxes.

The replay's code lives in benchmarks/attacks (the full run: benchmarks/attack_replay.py); the
Docker fixtures are the end-to-end suite's (without a reachable engine these tests skip on a
laptop and fail in CI)."""

import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
if str(BENCHMARKS) not in sys.path:
    sys.path.insert(0, str(BENCHMARKS))

from tests.e2e.conftest import docker_client, runner_image  # noqa: E402, F401  (fixtures)
