"""Privacy budgets of a task's rows, reserved atomically (docs/disclosure.md).

A release costs rho = rho_for_epsilon(dp_epsilon_per_release, dp_delta) on one split. It is
paid from two budgets at once: the vendor organization's on the task, and the task's total over
all vendors (so new organizations cannot reset what the rows lose). Each is taken with one
conditional UPDATE (`rho_spent <= cap - rho`), so concurrent reservations never pass a cap on
SQLite or PostgreSQL. Callers run these inside their own transaction: a refusal raised there
rolls back whatever was reserved before it.
"""

from __future__ import annotations

from django.db import IntegrityError, transaction
from django.db.models import F

from evaluator.privacy.zcdp import epsilon_for_rho
from marketplace.audit.services import audit_record
from marketplace.budgets.costs import release_cost, task_caps
from marketplace.budgets.models import PrivacyBudget, PrivacyCharge, Split
from marketplace.catalog.models import Task
from marketplace.core.errors import DomainError


class BudgetExhausted(DomainError):
    status_code = 409
    code = "budget_exhausted"


def _budget(task: Task, vendor_id: int | None, split: str) -> PrivacyBudget:
    try:
        with transaction.atomic():
            return PrivacyBudget.objects.get_or_create(task=task, vendor_id=vendor_id, split=split)[0]
    except IntegrityError:  # created by a concurrent reservation
        return PrivacyBudget.objects.get(task=task, vendor_id=vendor_id, split=split)


def _take(budget: PrivacyBudget, rho: float, cap: float) -> bool:
    return (
        PrivacyBudget.objects.filter(id=budget.id, rho_spent__lte=cap - rho).update(
            rho_spent=F("rho_spent") + rho
        )
        == 1
    )


def _give_back(task: Task, vendor_id: int | None, split: str, rho: float) -> None:
    PrivacyBudget.objects.filter(task=task, vendor_id=vendor_id, split=split).update(
        rho_spent=F("rho_spent") - rho
    )
    # Float sums may leave -1e-17 behind: a budget never goes below zero.
    PrivacyBudget.objects.filter(task=task, vendor_id=vendor_id, split=split, rho_spent__lt=0).update(
        rho_spent=0.0
    )


def budget_reserve(
    *, task: Task, vendor_id: int, split: str = Split.PUBLIC, submission=None
) -> PrivacyCharge:
    """Reserves one release on ``split`` from the vendor's and the task's budgets, or raises
    BudgetExhausted. Returns the charge: saved when ``submission`` is given, else for the caller
    to attach to the submission it is about to save and save it.

    Must run inside the caller's transaction (the upload's, or the close's): a refusal or a later
    error there rolls the reservation back.
    """
    rho, epsilon, delta = release_cost(task)
    vendor_cap, task_cap = task_caps(task)
    if not _take(_budget(task, vendor_id, split), rho, vendor_cap):
        raise BudgetExhausted(
            f"Your organization's privacy budget on this task's {split} split is spent "
            f"(epsilon {task.dp_vendor_epsilon:g} at delta {task.dp_delta:g}): no further release fits.",
            details={"split": split, "scope": "vendor"},
        )
    if not _take(_budget(task, None, split), rho, task_cap):
        raise BudgetExhausted(
            f"The task's total privacy budget on its {split} split is spent "
            f"(epsilon {task.dp_task_epsilon:g} at delta {task.dp_delta:g}): no further release fits.",
            details={"split": split, "scope": "task"},
        )
    charge = PrivacyCharge(
        task=task,
        vendor_id=vendor_id,
        submission=submission,
        split=split,
        rho=rho,
        epsilon=epsilon,
        delta=delta,
    )
    if submission is not None:
        charge.save()
    return charge


def budget_refund(*, submission, split: str = Split.PUBLIC, reason: str = "") -> bool:
    """Gives back a reservation of which nothing was released. At most once; True if it did."""
    charge = PrivacyCharge.objects.filter(submission=submission, split=split, refunded=False).first()
    if (
        charge is None
        or PrivacyCharge.objects.filter(id=charge.id, refunded=False).update(refunded=True) != 1
    ):
        return False
    task = charge.task
    _give_back(task, charge.vendor_id, split, charge.rho)
    _give_back(task, None, split, charge.rho)
    audit_record(
        action="budget.refunded",
        obj=submission,
        data={"split": split, "rho": charge.rho, "epsilon": charge.epsilon, "reason": reason},
    )
    return True


def budget_epsilon(rho: float, delta: float) -> float:
    """What a total of rho is shown as (composition: the rhos add up, converted once)."""
    return epsilon_for_rho(max(rho, 0.0), delta)
