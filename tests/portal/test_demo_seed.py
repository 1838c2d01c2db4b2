"""The demo's seed: one owner with three sites, an open task with a public sample, two vendors."""

import json

from django.core.management import call_command

from marketplace.catalog.models import Task
from marketplace.core.tokens import token_hash
from marketplace.sites.models import SiteToken


def test_demo_seed_creates_what_the_demo_needs(db, tmp_path):
    out = tmp_path / "seed.json"
    call_command("demo_seed", out=out)
    seed = json.loads(out.read_text())
    task = Task.objects.get(id=seed["task_id"])
    assert task.status == "open" and task.sample_file
    lines = task.sample_file.open("rb").read().decode().splitlines()
    assert lines[0].startswith("feature_0,") and len(lines) == 21
    assert [s["name"] for s in seed["sites"]] == ["north", "central", "south"]
    assert all(SiteToken.objects.filter(key_hash=token_hash(s["token"])).exists() for s in seed["sites"])
    assert (out.stat().st_mode & 0o777) == 0o600  # the file holds secrets
