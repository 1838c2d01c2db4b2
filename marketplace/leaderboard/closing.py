"""Closing a task: which private scores are revealed, and their budget (docs/disclosure.md).

Only the finals are revealed: each vendor's nominated submissions, or, when it nominated none,
its best ``task.final_submissions`` public entries by the primary metric. Each reveal costs one
release on the private split, from the vendor's and the task's private budgets; those that do
not fit are not revealed (and listed to the owner). The owner confirming the close is the
release approval of exactly the reveals in the plan.
"""

from __future__ import annotations

from collections import defaultdict

from django.db import transaction

from marketplace.budgets.costs import release_cost, task_caps
from marketplace.budgets.models import Split
from marketplace.budgets.selectors import budget_spent
from marketplace.budgets.services import BudgetExhausted, budget_reserve
from marketplace.catalog.metric_catalog import HIGHER, metric_direction
from marketplace.catalog.models import Task
from marketplace.leaderboard.models import LeaderboardEntry
from marketplace.leaderboard.standings import standings_refresh


def _sort_key(task: Task, entry: LeaderboardEntry) -> tuple:
    value = entry.metrics.get(task.primary_metric)
    if value is None:
        return (1, 0.0, entry.submission.created_at, entry.submission_id)
    signed = -value if metric_direction(task.primary_metric) == HIGHER else value
    return (0, signed, entry.submission.created_at, entry.submission_id)


def _finals(task: Task) -> dict[int, list[LeaderboardEntry]]:
    """Per vendor, its finals, best first."""
    entries = LeaderboardEntry.objects.filter(task=task, submission__status="scored").select_related(
        "submission__vendor"
    )
    by_vendor: dict[int, list[LeaderboardEntry]] = defaultdict(list)
    for entry in entries:
        by_vendor[entry.submission.vendor_id].append(entry)
    finals = {}
    for vendor_id, vendor_entries in by_vendor.items():
        vendor_entries.sort(key=lambda e: _sort_key(task, e))
        nominated = [e for e in vendor_entries if e.submission.is_final]
        finals[vendor_id] = (nominated or vendor_entries)[: task.final_submissions]
    return finals


def _row(task: Task, entry: LeaderboardEntry) -> dict:
    submission = entry.submission
    return {
        "submission_id": submission.id,
        "submission": submission.name,
        "vendor_id": submission.vendor_id,
        "vendor": submission.vendor.name,
        "nominated": submission.is_final,
        "primary_metric": task.primary_metric,
        "public_value": entry.metrics.get(task.primary_metric),
    }


def close_plan(task: Task) -> dict:
    """What closing ``task`` now would reveal, and what would not fit the private budgets.

    The reveals are ordered round-robin over vendors (each vendor's best first), so that when the
    task's total budget runs short, every vendor gets its best final revealed before anyone's second.
    """
    rho, epsilon, delta = release_cost(task)
    base = {
        "epsilon_per_reveal": epsilon,
        "delta": delta,
        "has_private_split": task.public_split_fraction < 1.0,
    }
    if not base["has_private_split"]:
        return {**base, "reveal": [], "not_revealed": []}
    vendor_cap, task_cap = task_caps(task)
    task_spent = budget_spent(task=task, vendor_id=None, split=Split.PRIVATE)
    finals = _finals(task)
    vendor_spent = {v: budget_spent(task=task, vendor_id=v, split=Split.PRIVATE) for v in finals}
    reveal, not_revealed = [], []
    rounds = max((len(entries) for entries in finals.values()), default=0)
    for i in range(rounds):
        layer = [entries[i] for entries in finals.values() if len(entries) > i]
        layer.sort(key=lambda e: _sort_key(task, e))
        for entry in layer:
            vendor_id = entry.submission.vendor_id
            if entry.reveal_approved:
                continue  # already approved (and paid) at an earlier close
            fits_vendor = vendor_spent[vendor_id] <= vendor_cap - rho
            fits_task = task_spent <= task_cap - rho
            if fits_vendor and fits_task:
                vendor_spent[vendor_id] += rho
                task_spent += rho
                reveal.append(_row(task, entry))
            else:
                scope = "vendor" if not fits_vendor else "task"
                not_revealed.append({**_row(task, entry), "reason": "budget_exhausted", "scope": scope})
    return {**base, "reveal": reveal, "not_revealed": not_revealed}


def close_reveals_approve(*, task: Task, plan: dict) -> tuple[list[int], list[int]]:
    """Reserves the private budget of each planned reveal and approves it. Returns (approved,
    refused) submission ids; one that no longer fits (a budget moved since the plan) is refused."""
    approved, refused = [], []
    for row in plan["reveal"]:
        entry = LeaderboardEntry.objects.select_related("submission").get(submission_id=row["submission_id"])
        try:
            with transaction.atomic():
                budget_reserve(
                    task=task,
                    vendor_id=entry.submission.vendor_id,
                    split=Split.PRIVATE,
                    submission=entry.submission,
                )
        except BudgetExhausted:
            refused.append(entry.submission_id)
            continue
        entry.reveal_approved = True
        entry.save(update_fields=["reveal_approved", "updated_at"])
        approved.append(entry.submission_id)
    if approved:
        standings_refresh(task_id=task.id)
    return approved, refused
