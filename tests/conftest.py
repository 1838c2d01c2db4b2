"""Personas shared by the whole suite: a data owner, vendors, an outsider, a visitor, sites."""

import io
import os
import pickle
from dataclasses import dataclass

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient


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


@pytest.fixture(autouse=True)
def _isolated_media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.CELERY_TASK_ALWAYS_EAGER = True
    from marketplace.celery import app

    app.conf.task_always_eager = True


@dataclass
class Persona:
    user: object
    organization: object | None
    client: APIClient


def _persona(username: str, org_name: str | None, kind: str | None) -> Persona:
    from marketplace.accounts.services import organization_create

    user = get_user_model().objects.create_user(username=username, password="correct-horse-battery")
    organization = organization_create(name=org_name, kind=kind, creator=user) if org_name else None
    client = APIClient()
    client.force_authenticate(user)
    return Persona(user=user, organization=organization, client=client)


@pytest.fixture
def owner(db) -> Persona:
    return _persona("olivia", "St. Mercy Hospitals", "data_owner")


@pytest.fixture
def other_owner(db) -> Persona:
    return _persona("oscar", "Northbank", "data_owner")


@pytest.fixture
def vendor(db) -> Persona:
    return _persona("victor", "Acme Models", "vendor")


@pytest.fixture
def second_vendor(db) -> Persona:
    return _persona("vera", "Globex AI", "vendor")


@pytest.fixture
def outsider(db) -> Persona:
    return _persona("otto", None, None)


@pytest.fixture
def visitor(db) -> APIClient:
    return APIClient()


@dataclass
class SiteHandle:
    site: object
    token: str
    client: APIClient


def make_site(owner: Persona, name: str) -> SiteHandle:
    from marketplace.sites.services import site_create

    site, token = site_create(organization=owner.organization, name=name, actor=owner.user)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return SiteHandle(site=site, token=token, client=client)


@pytest.fixture
def site(owner) -> SiteHandle:
    return make_site(owner, "site-a")


TASK_SPEC = {
    "title": "Breast cancer screening",
    "description": "Malignant or benign, from 30 features.",
    "task_type": "binary_classification",
    "input_spec": {"n_features": 30, "dtype": "float32", "n_classes": 2},
    "metrics": [{"name": "roc_auc", "decimals": 4}, {"name": "accuracy", "decimals": 3}],
    "primary_metric": "roc_auc",
    "min_test_rows": 10,
}


def make_task(owner: Persona, **overrides):
    from marketplace.catalog.services import task_create, task_open

    task = task_create(organization=owner.organization, actor=owner.user, spec={**TASK_SPEC, **overrides})
    return task_open(task=task, actor=owner.user)


def register_shard(site: SiteHandle, task, rows: int = 100):
    from marketplace.catalog.services import shard_register

    return shard_register(site=site.site, task_id=task.id, row_count=rows, fingerprint="a" * 64, split_sizes={"test": rows})[0]


@pytest.fixture
def open_task(owner, site):
    task = make_task(owner)
    register_shard(site, task)
    return task


def sklearn_like_artifact() -> io.BytesIO:
    """Bytes in joblib's format (a protocol-4 pickle of plain data; never loaded by the hub)."""
    buffer = io.BytesIO(pickle.dumps({"weights": [1, 2, 3]}, protocol=4))
    buffer.name = "model.joblib"
    return buffer


def upload(persona: Persona, task, *, data: bytes | None = None, fmt: str = "sklearn", name: str = "m1"):
    artifact = io.BytesIO(data) if data is not None else sklearn_like_artifact()
    artifact.name = "model.bin"
    return persona.client.post(
        "/api/v1/submissions",
        {"task": task.id, "name": name, "artifact_format": fmt, "artifact": artifact},
        format="multipart",
    )


CI = os.environ.get("CI") == "true"
