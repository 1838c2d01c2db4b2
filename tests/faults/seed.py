"""Seeds a fault-campaign hub (run with the world's environment): one data owner with N sites, one
open task without release delay, one vendor; writes their tokens to a JSON file.

    python -m tests.faults.seed OUT.json N_SITES
"""

import json
import os
import sys

import django


def main(out: str, n_sites: int) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "marketplace.settings")
    django.setup()
    from django.contrib.auth import get_user_model

    from marketplace.accounts.services import organization_create, personal_token_create
    from marketplace.catalog.services import task_create, task_open
    from marketplace.sites.services import site_create

    users = get_user_model().objects
    owner = users.create_user("faults-owner", password="faults-owner-password")
    hospital = organization_create(name="Fault Hospital", kind="data_owner", creator=owner)
    _, owner_token = personal_token_create(user=owner, name="faults")
    sites = []
    for i in range(n_sites):
        site, token = site_create(organization=hospital, name=f"site-{i}", actor=owner)
        sites.append({"id": site.id, "name": f"site-{i}", "token": token})
    task = task_create(
        organization=hospital,
        actor=owner,
        spec={
            "title": "Fault campaign", "description": "Synthetic rows.", "task_type": "binary_classification",
            "input_spec": {"n_features": 8, "dtype": "float32", "n_classes": 2},
            "metrics": [{"name": "accuracy", "decimals": 3}], "primary_metric": "accuracy",
            "dp_epsilon_per_release": 1.0, "dp_vendor_epsilon": 400.0, "dp_task_epsilon": 800.0,
            "release_delay_seconds": 0, "min_test_rows": 10, "quota_per_day": 1000,
            "resource_limits": {"memory_mb": 512, "cpus": 1.0, "timeout_seconds": 120, "max_output_mb": 16},
        },
    )  # fmt: skip
    task_open(task=task, actor=owner)
    vendor = users.create_user("faults-vendor", password="faults-vendor-password")
    organization_create(name="Fault Vendor", kind="vendor", creator=vendor)
    _, vendor_token = personal_token_create(user=vendor, name="faults")
    with open(out, "w") as fh:
        json.dump({"task_id": task.id, "sites": sites, "vendor_token": vendor_token, "owner_token": owner_token}, fh)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
