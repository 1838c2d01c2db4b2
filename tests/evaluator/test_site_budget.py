"""The site's own budget file: reservations per (job, split), caps per vendor and per task."""

import multiprocessing

import pytest

from evaluator.site_budget import BudgetRefused, SiteBudget

CAPS = {"vendor_cap_rho": 3.0, "task_cap_rho": 5.0}


def _reserve(budget, job, vendor=1, split="public", rho=1.0, task=3, **caps):
    return budget.reserve(job_id=job, task_id=task, vendor_id=vendor, split=split, rho=rho, **{**CAPS, **caps})


def test_a_vendor_cannot_reserve_past_its_cap_and_a_refusal_reserves_nothing(tmp_path):
    budget = SiteBudget(tmp_path / "b.json")
    for job in (1, 2, 3):
        assert _reserve(budget, job) is True
    with pytest.raises(BudgetRefused, match="vendor's public budget") as exc:
        _reserve(budget, 4)
    assert exc.value.reason == "policy_violation"
    assert budget.usage(task_id=3, vendor_id=1, split="public").reserved == 3.0


def test_the_tasks_total_binds_across_vendors(tmp_path):
    budget = SiteBudget(tmp_path / "b.json")
    for job, vendor in enumerate([1, 1, 1, 2, 2]):
        _reserve(budget, job, vendor=vendor)
    with pytest.raises(BudgetRefused, match="task's public budget"):
        _reserve(budget, 9, vendor=3)  # a new organization does not reset the task's total


def test_a_retried_job_reuses_its_reservation_and_a_committed_one_pays_again(tmp_path):
    budget = SiteBudget(tmp_path / "b.json")
    assert _reserve(budget, 7) is True
    assert _reserve(budget, 7) is False  # the same (job, split): nothing more charged
    assert budget.usage(task_id=3, split="public").total == 1.0
    assert budget.commit(job_id=7, split="public", task_id=3, vendor_id=1, rho=1.0) is True
    assert _reserve(budget, 7) is True  # released once already: another release costs again
    assert budget.usage(task_id=3, split="public").total == 2.0


def test_commit_spends_refund_gives_back(tmp_path):
    budget = SiteBudget(tmp_path / "b.json")
    _reserve(budget, 1)
    _reserve(budget, 2)
    budget.commit(job_id=1, split="public", task_id=3, vendor_id=1, rho=1.0)
    assert budget.refund(job_id=2, split="public") is True
    assert budget.refund(job_id=2, split="public") is False
    usage = budget.usage(task_id=3, vendor_id=1, split="public")
    assert (usage.spent, usage.reserved) == (1.0, 0.0)


def test_a_release_without_a_reservation_is_charged_anyway(tmp_path):
    budget = SiteBudget(tmp_path / "b.json")
    assert budget.commit(job_id=1, split="private", task_id=3, vendor_id=1, rho=0.5) is False
    assert budget.usage(task_id=3, vendor_id=1, split="private").spent == 0.5


def test_splits_are_budgeted_apart(tmp_path):
    budget = SiteBudget(tmp_path / "b.json")
    for job in (1, 2, 3):
        _reserve(budget, job, split="public")
        _reserve(budget, job, split="private")  # the same job's private reveal: its own budget
    assert budget.usage(task_id=3, split="private").total == 3.0
    with pytest.raises(ValueError):
        _reserve(budget, 4, split="train")


def _hammer(path, worker, results):
    budget = SiteBudget(path)
    won = 0
    for i in range(10):
        try:
            _reserve(budget, f"{worker}-{i}", vendor_cap_rho=7.0, task_cap_rho=100.0)
            won += 1
        except BudgetRefused:
            pass
    results.put(won)


def test_agents_in_separate_processes_never_pass_the_cap_together(tmp_path):
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    workers = [ctx.Process(target=_hammer, args=(tmp_path / "b.json", w, results)) for w in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(30)
    assert sum(results.get(timeout=5) for _ in workers) == 7
    assert SiteBudget(tmp_path / "b.json").usage(task_id=3, vendor_id=1, split="public").reserved == 7.0
