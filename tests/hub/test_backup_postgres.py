"""Back up a PostgreSQL hub as docs/running-a-hub.md says -- `pg_dump --format=custom`, then
`pg_restore --no-owner` into a new, empty database -- and find every row of every table (count
and an md5 over the rows' text) and every sequence's position. Runs the real client programs on
a hub seeded through the API: a task, a submission with its artifact, claimed jobs, released
results, privacy charges, egress and audit rows. Production mode only (.ci/test's PostgreSQL
pass); a few seconds."""

import shutil
import subprocess
import uuid

import psycopg
import pytest
from django.conf import settings
from django.db import connection

from marketplace.jobs.models import Job
from marketplace.submissions.models import Submission
from tests.conftest import make_task, register_shard
from tests.hub.helpers import claim, post_result, submit

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(connection.vendor != "postgresql",
                       reason="pg_dump/pg_restore back up a PostgreSQL hub; DATABASE_URL is not PostgreSQL"),  # fmt: skip
    pytest.mark.skipif(shutil.which("pg_dump") is None or shutil.which("pg_restore") is None,
                       reason="PostgreSQL's client programs (pg_dump, pg_restore) are not installed"),  # fmt: skip
]


def _url(name: str) -> str:
    db = settings.DATABASES["default"]
    return f"postgresql://{db['USER']}:{db['PASSWORD']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{name}"


def _snapshot(url: str) -> dict[str, tuple]:
    """Every table of the public schema: (row count, md5 of its rows in a fixed order); every
    sequence: its position (so that a restored hub does not reuse ids)."""
    with psycopg.connect(url, autocommit=True) as db:
        tables = [r[0] for r in db.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename")]  # fmt: skip
        found: dict[str, tuple] = {}
        for table in tables:
            found[table] = db.execute(
                f'SELECT count(*), md5(coalesce(string_agg(t::text, \',\' ORDER BY t::text), \'\')) FROM "{table}" t'  # noqa: S608
            ).fetchone()
        for name, position in db.execute(
            "SELECT sequencename, last_value FROM pg_sequences WHERE schemaname = 'public'"
        ):
            found[f"sequence {name}"] = (position,)
    return found


@pytest.mark.django_db(transaction=True)  # committed rows, visible to pg_dump's own connection
def test_pg_dump_and_pg_restore_bring_back_every_row_of_every_table(owner, vendor, site, tmp_path):
    task = make_task(owner, release_delay_seconds=0, quota_per_day=50)
    register_shard(site, task)
    scored, in_flight = submit(vendor, task, name="scored"), submit(vendor, task, name="in-flight")
    for _ in range(2):
        job = claim(site)
        assert job is not None
        if job["submission"]["id"] == scored.id:
            assert post_result(site, job["id"], correct=0.9).status_code == 200
    assert Submission.objects.get(id=scored.id).status == "scored"
    assert Job.objects.filter(submission=in_flight, status="running").exists()  # a lease in flight

    source = settings.DATABASES["default"]["NAME"]
    before = _snapshot(_url(source))
    populated = {name for name, (count, *_) in before.items() if not name.startswith("sequence") and count}
    for table in ("catalog_task", "submissions_submission", "jobs_job", "jobs_result",
                  "budgets_privacycharge", "egress_egressrecord", "audit_auditevent", "sites_site"):  # fmt: skip
        assert table in populated, f"the seed left {table} empty: {sorted(populated)}"

    dump = tmp_path / "hub.dump"
    # Exactly the documented commands (docs/running-a-hub.md, "Backups").
    subprocess.run(["pg_dump", "--format=custom", "--file", str(dump), _url(source)],
                   check=True, timeout=300)  # fmt: skip
    target = f"vb_restore_{uuid.uuid4().hex[:12]}"
    with connection.cursor() as cursor:  # autocommit in a transaction=True test
        cursor.execute(f'CREATE DATABASE "{target}"')
    try:
        subprocess.run(["pg_restore", "--no-owner", "--exit-on-error", "--dbname", _url(target), str(dump)],
                       check=True, timeout=300)  # fmt: skip
        after = _snapshot(_url(target))
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{target}" WITH (FORCE)')

    assert sorted(after) == sorted(before)
    for name in sorted(before):
        assert after[name] == before[name], f"{name} differs after the restore"
