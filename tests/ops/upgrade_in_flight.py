"""Driver for test_upgrade_in_flight.py, run in its own process on an embedded (SQLite) hub in
VAULTBENCH_VAR_DIR: jobs claimed by agents, the schema taken back to the previous release's
migrations (the in-flight rows now look as that release stored them: no attempt token), `migrate`
to the latest, then the agents' result posts (without an attempt token: the previous release
gave none) complete the claimed jobs, a job still queued is claimed under the new schema and
posts with its new token, and every submission scores.
Prints one JSON line of findings for the test to judge."""

import json
import os
import sys

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "marketplace.settings")
django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.db.migrations.executor import MigrationExecutor  # noqa: E402

# The migration leaves of the previous release (the hub as deployed before this session's
# migrations: commit b82731f); every app not named is at its latest there too.
PREVIOUS_RELEASE = {
    "accounts": "0001_initial",
    "catalog": "0005_release_delay_past_the_timeout",
    "finetuning": "0001_initial",
    "jobs": "0004_result_statistics",
    "leaderboard": "0003_leaderboardentry_reveal_approved",  # before the stored standings
    "notifications": None,  # the app did not exist
    "sites": "0001_initial",
    "submissions": "0005_backfill_results_visible_at",
}


def _columns(table: str) -> set[str]:
    with connection.cursor() as cursor:
        return {c.name for c in connection.introspection.get_table_description(cursor, table)}


def _migrate_to(targets: list[tuple[str, str | None]]) -> None:
    executor = MigrationExecutor(connection)
    executor.migrate(targets)
    connection.close()


def main() -> None:
    from marketplace.jobs.models import Job, Result
    from marketplace.submissions.models import Submission
    from tests.conftest import _persona, make_site, make_task, register_shard
    from tests.hub.helpers import claim, post_result, submit

    call_command("migrate", verbosity=0)
    owner, vendor = _persona("olivia", "St. Mercy Hospitals", "data_owner"), _persona("victor", "Acme", "vendor")
    site = make_site(owner, "site-a")
    task = make_task(owner, release_delay_seconds=0, quota_per_day=50)
    register_shard(site, task)
    submissions = [submit(vendor, task, name=name) for name in ("claimed-1", "claimed-2", "queued")]
    claims = {agent: claim(site, agent_id=agent)["id"] for agent in ("agent-1", "agent-2")}
    in_flight_before = sorted(Job.objects.filter(status="running").values_list("id", flat=True))

    # Back to the previous release's schema, as the hub stood when the agents claimed.
    graph = MigrationExecutor(connection).loader.graph
    previous = [(app, PREVIOUS_RELEASE.get(app, name)) for app, name in graph.leaf_nodes()]
    _migrate_to(previous)
    old_job_columns = _columns("jobs_job")
    with connection.cursor() as cursor:
        cursor.execute("SELECT app, max(name) FROM django_migrations GROUP BY app")
        applied_old = dict(cursor.fetchall())
    with connection.cursor() as cursor:
        cursor.execute("SELECT id FROM jobs_job WHERE status = 'running' ORDER BY id")
        in_flight_old_schema = [row[0] for row in cursor.fetchall()]

    # The upgrade: `migrate` to the latest while those jobs are out at the site.
    call_command("migrate", verbosity=0)
    pending = MigrationExecutor(connection).migration_plan(MigrationExecutor(connection).loader.graph.leaf_nodes())

    posts = [post_result(site, job_id, agent_id=agent, correct=0.8) for agent, job_id in claims.items()]
    fresh = claim(site, agent_id="agent-3")
    posts.append(post_result(site, fresh["id"], agent_id="agent-3", correct=0.9, attempt=fresh["attempt_token"]))
    print(json.dumps({
        "claims": claims,
        "in_flight_before": in_flight_before,
        "in_flight_old_schema": in_flight_old_schema,
        "applied_old": applied_old,
        "old_schema_has_attempt_token": "attempt_token" in old_job_columns,
        "pending_after_migrate": len(pending),
        "fresh_claim": {"id": fresh["id"], "token": fresh["attempt_token"]},
        "posts": [p.status_code for p in posts],
        "post_bodies": [p.content.decode()[:300] for p in posts],
        "submissions": {s.name: Submission.objects.get(id=s.id).status for s in submissions},
        "jobs": sorted(Job.objects.values_list("status", flat=True)),
        "results": Result.objects.count(),
    }))


if __name__ == "__main__":
    sys.exit(main())
