"""An upgrade with jobs in flight (docs/running-a-hub.md, "Upgrades"): an embedded hub at the
previous release's migrations with jobs claimed by agents and one still queued, `migrate` to the
latest, then the agents' posts complete every job and every submission scores. The driver
(tests/ops/upgrade_in_flight.py) runs in its own process on its own database; about 15 s."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.ops.upgrade_in_flight import PREVIOUS_RELEASE

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def test_jobs_claimed_before_migrate_complete_after_it_and_every_submission_scores(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CELERY_BROKER_URL")}
    env.update(VAULTBENCH_VAR_DIR=str(tmp_path / "var"), DJANGO_SETTINGS_MODULE="marketplace.settings",
               CELERY_TASK_ALWAYS_EAGER="1")  # fmt: skip
    run = subprocess.run([sys.executable, "-m", "tests.ops.upgrade_in_flight"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    assert run.returncode == 0, run.stderr[-4000:]
    found = json.loads(run.stdout.strip().splitlines()[-1])

    # The hub really stood at the previous release, with both claims still running.
    for app, name in PREVIOUS_RELEASE.items():
        assert found["applied_old"].get(app) == name, (app, found["applied_old"])
    assert found["old_schema_has_attempt_token"] is False
    assert found["in_flight_old_schema"] == found["in_flight_before"] == sorted(found["claims"].values())
    # After `migrate`: nothing pending; the old claims' posts (no attempt token) and a new claim's
    # post (with its token) all count; nothing lost.
    assert found["pending_after_migrate"] == 0
    assert found["posts"] == [200, 200, 200], found["post_bodies"]
    assert len(found["fresh_claim"]["token"]) == 32
    assert found["submissions"] == {"claimed-1": "scored", "claimed-2": "scored", "queued": "scored"}
    assert found["jobs"] == ["succeeded"] * 3
    assert found["results"] == 3
