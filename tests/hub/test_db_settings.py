"""Persistent database connections on PostgreSQL (checked before reuse), none on SQLite."""

import json
import os
import subprocess
import sys

PROBE = (
    "import django, json, os; os.environ['DJANGO_SETTINGS_MODULE'] = 'marketplace.settings'; "
    "from django.conf import settings; d = settings.DATABASES['default']; "
    "print(json.dumps([d['CONN_MAX_AGE'], d.get('CONN_HEALTH_CHECKS', False)]))"
)


def settings_for(url: str, **extra: str) -> list:
    env = {**os.environ, "DATABASE_URL": url, **extra}
    env.pop("DATABASE_CONN_MAX_AGE", None) if "DATABASE_CONN_MAX_AGE" not in extra else None
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=60, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_postgresql_keeps_connections_and_checks_them_before_reuse():
    assert settings_for("postgres://u:p@127.0.0.1:5432/x") == [60, True]
    assert settings_for("postgres://u:p@127.0.0.1:5432/x", DATABASE_CONN_MAX_AGE="0") == [0, True]


def test_sqlite_opens_one_connection_per_request():
    assert settings_for("sqlite:////tmp/x.sqlite3") == [0, False]
