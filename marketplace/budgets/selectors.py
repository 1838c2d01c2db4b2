from __future__ import annotations

from evaluator.privacy.zcdp import epsilon_for_rho
from marketplace.budgets.costs import release_cost, releases_that_fit, task_caps
from marketplace.budgets.models import PrivacyBudget, Split
from marketplace.catalog.models import Task


def budget_spent(*, task: Task, vendor_id: int | None, split: str = Split.PUBLIC) -> float:
    """rho spent on ``split`` by one vendor organization (vendor_id=None: by all vendors)."""
    row = PrivacyBudget.objects.filter(task=task, vendor_id=vendor_id, split=split).values_list(
        "rho_spent", flat=True
    )
    return max(row.first() or 0.0, 0.0)


def budget_summary(*, task: Task, vendor_id: int | None, split: str = Split.PUBLIC) -> dict:
    """What a vendor sees before uploading (GET /tasks/{id}/quota, the task page, the CLI):
    epsilon figures are the spent rho converted at the task's delta."""
    rho, epsilon, delta = release_cost(task)
    vendor_cap, task_cap = task_caps(task)
    vendor_spent = budget_spent(task=task, vendor_id=vendor_id, split=split) if vendor_id is not None else 0.0
    task_spent = budget_spent(task=task, vendor_id=None, split=split)
    vendor_spent_eps = epsilon_for_rho(vendor_spent, delta)
    return {
        "epsilon_per_release": epsilon,
        "delta": delta,
        "vendor_epsilon": task.dp_vendor_epsilon,
        "vendor_epsilon_spent": vendor_spent_eps,
        # Remaining: the guarantee of what still fits under the cap (rhos add; epsilons do not).
        "vendor_epsilon_remaining": epsilon_for_rho(max(vendor_cap - vendor_spent, 0.0), delta),
        "task_epsilon": task.dp_task_epsilon,
        "task_epsilon_spent": epsilon_for_rho(task_spent, delta),
        "task_epsilon_remaining": epsilon_for_rho(max(task_cap - task_spent, 0.0), delta),
        "submissions_left": min(
            releases_that_fit(spent=vendor_spent, cap=vendor_cap, rho=rho),
            releases_that_fit(spent=task_spent, cap=task_cap, rho=rho),
        ),
    }


def budget_spent_by_vendor(*, task: Task, split: str = Split.PUBLIC) -> dict[int, float]:
    """The owner's view: rho spent per vendor organization on a split."""
    return dict(
        PrivacyBudget.objects.filter(task=task, split=split, vendor__isnull=False).values_list(
            "vendor_id", "rho_spent"
        )
    )
