"""The board both leaderboard benchmarks read (leaderboard_page.py, leaderboard_scale.py): one
owner, one public task with two metrics, `vendors` vendor organizations and `entries` scored
submissions spread over them, past their release time, upload times spread over the last month.
LeaderboardEntry rows are written directly (the pooling that produces them is measured elsewhere).
Call it after django.setup()."""

from __future__ import annotations

from datetime import timedelta


def build_board(*, entries: int, vendors: int, show_per_site: bool = False, refresh: bool = False):
    """The task. `show_per_site`: the task shows per-site values and each entry has two sites'.
    `refresh`: store the standings as a score arriving would (where the tree has them); without it
    the first read stores them."""
    import random

    from django.contrib.auth import get_user_model
    from django.db import transaction
    from django.utils import timezone

    from marketplace.accounts.services import organization_create
    from marketplace.catalog.services import task_create, task_open
    from marketplace.leaderboard.models import LeaderboardEntry
    from marketplace.submissions.models import Submission

    user = get_user_model().objects.create_user(username="olivia", password=None)
    owner = organization_create(name="St. Mercy Hospitals", kind="data_owner", creator=user)
    spec = {"title": "Sepsis onset", "description": "Benchmark board.", "task_type": "binary_classification",
            "input_spec": {"n_features": 30, "dtype": "float32", "n_classes": 2},
            "metrics": [{"name": "roc_auc", "decimals": 4}, {"name": "log_loss", "decimals": 3}],
            "primary_metric": "roc_auc", "min_test_rows": 10, "show_per_site": show_per_site}  # fmt: skip
    task = task_open(task=task_create(organization=owner, actor=user, spec=spec), actor=user)
    orgs = []
    for i in range(vendors):
        member = get_user_model().objects.create_user(username=f"vendor{i}", password=None)
        orgs.append(organization_create(name=f"Vendor organization {i:04d}", kind="vendor", creator=member))
    rng = random.Random(0)
    start = timezone.now() - timedelta(days=30)
    step = timedelta(days=29) / max(entries, 1)
    sites = [{"site": "north", "n_rows": 200}, {"site": "south", "n_rows": 200}] if show_per_site else []
    with transaction.atomic():
        Submission.objects.bulk_create(
            Submission(vendor=orgs[i % vendors], task=task, name=f"gradient-boosted-trees-{i:05d}",
                       artifact="artifacts/x/artifact", artifact_format="sklearn", original_filename="model.joblib",
                       size=2200 + i, sha256=f"{i:064x}", status="scored",
                       results_visible_at=start + step * i + timedelta(minutes=10))
            for i in range(entries)
        )  # fmt: skip
        saved = list(Submission.objects.filter(task=task).order_by("id"))
        for i, submission in enumerate(saved):  # upload times spread over the month (auto_now_add)
            submission.created_at = start + step * i
        Submission.objects.bulk_update(saved, ["created_at"], batch_size=1000)
        LeaderboardEntry.objects.bulk_create(
            LeaderboardEntry(task=task, submission=s, n_rows=400, n_sites=2,
                             metrics={"roc_auc": min(1.0, 0.7 + 0.2 * i / entries + rng.gauss(0, 0.02)),
                                      "log_loss": max(0.0, 0.5 - 0.2 * i / entries + rng.gauss(0, 0.02))},
                             per_site=[{**site, "metrics": {"roc_auc": 0.8, "log_loss": 0.4}} for site in sites])
            for i, s in enumerate(saved)
        )  # fmt: skip
    if refresh:
        try:  # older trees (BEFORE figures) have no stored standings
            from marketplace.leaderboard.standings import standings_refresh
        except ImportError:
            pass
        else:
            standings_refresh(task_id=task.id)
    return task
