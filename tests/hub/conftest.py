"""Hub-suite fixtures on top of the shared personas in tests/conftest.py."""

import pytest


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix, tmp_path_factory):
    """On SQLite, test in a file rather than in shared-cache memory: concurrency tests open one
    connection per thread, and an in-memory shared cache answers "table is locked" at once
    instead of waiting like the embedded hub's file database does."""
    from django.conf import settings

    database = settings.DATABASES["default"]
    if database["ENGINE"] == "django.db.backends.sqlite3":
        database.setdefault("TEST", {})["NAME"] = str(tmp_path_factory.mktemp("hub-db") / "test.sqlite3")


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    # Personas are created with passwords in every test; the production hasher is slow on purpose.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
