"""Back up and restore a SQLite hub as docs/running-a-hub.md says -- `manage.py dumpdata` into a
fresh, migrated database with `loaddata`, and SQLite's online backup -- and find every row of every
table, and every stored file. Runs the real management commands in subprocesses; about 30 s."""

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _manage(var_dir: Path, *argv: str) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CELERY_BROKER_URL")}
    env.update(VAULTBENCH_VAR_DIR=str(var_dir), DJANGO_SETTINGS_MODULE="marketplace.settings",
               CELERY_TASK_ALWAYS_EAGER="1")  # fmt: skip
    subprocess.run([sys.executable, "manage.py", *argv], cwd=ROOT, env=env, check=True, timeout=600,
                   stdout=subprocess.DEVNULL)  # fmt: skip


def _tables(path: Path) -> dict[str, list[tuple]]:
    with sqlite3.connect(path) as db:
        names = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'")]
        return {name: sorted(db.execute(f'SELECT * FROM "{name}"'), key=repr) for name in names}  # noqa: S608


def _file_fields(path: Path) -> list[str]:
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT sample_file FROM catalog_task WHERE sample_file != ''").fetchall()
    return [r[0] for r in rows]


def test_dumpdata_loaddata_and_the_online_backup_restore_every_row_and_file(tmp_path):
    live = tmp_path / "live"
    _manage(live, "migrate", "-v", "0")
    _manage(live, "demo_seed", "--out", str(tmp_path / "seed.json"))
    before = _tables(live / "hub.sqlite3")
    populated = {name for name, rows in before.items() if rows}
    assert {"auth_user", "accounts_organization", "catalog_task", "sites_site", "sites_sitetoken"} <= populated

    # 1. dumpdata -> loaddata into a fresh hub (any database engine; the documented portable path).
    dump = tmp_path / "hub.xml"  # XML keeps microseconds; JSON truncates them to milliseconds
    _manage(live, "dumpdata", "--format", "xml", "--natural-foreign", "--exclude", "contenttypes",
            "--exclude", "auth.permission",
            "--exclude", "sessions", "--output", str(dump))  # fmt: skip
    restored = tmp_path / "restored"
    _manage(restored, "migrate", "-v", "0")
    _manage(restored, "loaddata", str(dump))
    shutil.copytree(live / "media", restored / "media")  # uploaded files live beside the database
    after = _tables(restored / "hub.sqlite3")
    for name in sorted(populated - {"django_session", "django_migrations"}):
        assert after[name] == before[name], f"table {name} differs after the restore"
    applied = {name: sorted(row[1:3] for row in tables["django_migrations"]) for name, tables in
               (("before", before), ("after", after))}  # fmt: skip
    assert applied["after"] == applied["before"]  # the same migrations (applied at other times)
    for stored in _file_fields(restored / "hub.sqlite3"):
        assert (restored / "media" / stored).read_bytes() == (live / "media" / stored).read_bytes()

    # 2. SQLite's online backup (sqlite3 hub.sqlite3 ".backup copy.sqlite3"), taken while the hub runs.
    copy = tmp_path / "copy.sqlite3"
    with sqlite3.connect(live / "hub.sqlite3") as source, sqlite3.connect(copy) as target:
        source.backup(target)
    assert _tables(copy) == before
