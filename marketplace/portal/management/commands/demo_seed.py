"""Seeds the demo hub: one data owner with three sites, one open task, two vendors.

Writes the secrets the demo's agents and vendor uploads need to a JSON file (mode 0600).
"""

import json
import os
from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management.base import BaseCommand
from django.db import transaction

from marketplace.accounts.services import organization_create, personal_token_create
from marketplace.catalog.services import task_create, task_open, task_sample_set
from marketplace.sites.services import site_create

DEMO_PASSWORD = "vaultbench-demo"  # noqa: S105 (a local demo account, printed for the user)
SITE_NAMES = ["north", "central", "south"]
VENDORS = [("acme", "Acme Models"), ("globex", "Globex AI")]


def _public_sample() -> SimpleUploadedFile:
    """Twenty synthetic rows in the task's schema for vendors' dry runs: public rows of the data
    set with a little noise, never any of the sites' rows."""
    import numpy as np
    from sklearn.datasets import load_breast_cancer

    features, _ = load_breast_cancer(return_X_y=True)
    # The sites hold the held-out rows of docs/examples/_common.py (the first 114 of this
    # permutation); the sample draws from the other, public training rows only.
    public_rows = np.random.default_rng(0).permutation(len(features))[114:]
    rng = np.random.default_rng(7)
    rows = features[rng.choice(public_rows, 20, replace=False)]
    rows = rows * rng.normal(1.0, 0.02, rows.shape)
    header = ",".join(f"feature_{i}" for i in range(rows.shape[1]))
    body = "\n".join(",".join(f"{v:.6g}" for v in row) for row in rows)
    return SimpleUploadedFile("sample.csv", f"{header}\n{body}\n".encode(), content_type="text/csv")


class Command(BaseCommand):
    help = "Create the demo's owner, sites, task and vendors; write their tokens to --out."

    def add_arguments(self, parser):
        parser.add_argument("--out", required=True, type=Path)

    @transaction.atomic
    def handle(self, *args, out: Path, **options):
        users = get_user_model().objects
        # E-mail addresses so password resets and notifications land in the demo's mail folder.
        admin = users.create_superuser("admin", email="admin@demo.example.org", password=DEMO_PASSWORD)
        owner = users.create_user("owner", email="owner@demo.example.org", password=DEMO_PASSWORD)
        hospital = organization_create(name="St. Mercy Hospitals", kind="data_owner", creator=owner)
        sites = []
        for name in SITE_NAMES:
            site, token = site_create(organization=hospital, name=name, actor=owner)
            sites.append({"id": site.id, "name": name, "token": token})
        task = task_create(
            organization=hospital,
            actor=owner,
            spec={
                "title": "Breast cancer screening",
                "description": (
                    "Predict whether a tumour is malignant from 30 features of a digitized "
                    "fine-needle aspirate (scikit-learn's Wisconsin breast-cancer data). "
                    "The test rows are split across three hospital sites and never leave them."
                ),
                "task_type": "binary_classification",
                "input_spec": {"n_features": 30, "dtype": "float32", "n_classes": 2},
                # Each listed metric shares the release's noise (docs/disclosure.md): two. The
                # 114 test rows are few: accuracy (one count) is the steadier primary metric.
                "metrics": [
                    {"name": "accuracy", "decimals": 3},
                    {"name": "roc_auc", "decimals": 3},
                ],
                "primary_metric": "accuracy",
                # An owner's choice for small shards: epsilon 2 per release (accuracy within
                # about 0.025 of the exact value, BENCHMARKS.md), 11 uploads per vendor and 38
                # in all; a short release grid so the demo's results show within seconds.
                "dp_epsilon_per_release": 2.0,
                "dp_vendor_epsilon": 8.0,
                "dp_task_epsilon": 16.0,
                "release_delay_seconds": 10,
                "min_test_rows": 30,
                "quota_per_day": 10,
                "resource_limits": {"memory_mb": 1024, "cpus": 1.0, "timeout_seconds": 120, "max_output_mb": 16},
            },
        )
        task_open(task=task, actor=owner)
        task_sample_set(task=task, actor=owner, sample=_public_sample(), max_bytes=1024 * 1024)
        vendors = []
        for username, org_name in VENDORS:
            user = users.create_user(username, email=f"{username}@demo.example.org", password=DEMO_PASSWORD)
            organization_create(name=org_name, kind="vendor", creator=user)
            _, token = personal_token_create(user=user, name="demo uploads")
            vendors.append({"username": username, "organization": org_name, "token": token})
        seed = {"task_id": task.id, "sites": sites, "vendors": vendors, "password": DEMO_PASSWORD,
                "admin": admin.username, "owner": owner.username}  # fmt: skip
        out.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(seed, handle, indent=2)
        self.stdout.write(f"seeded task {task.id}, {len(sites)} sites, {len(vendors)} vendors -> {out}")
