"""The exactly-once ledger: write-ahead states, idempotent appends, the agent settling each entry
with the hub's answer, and the reconcile against the hub's receipts (a dead agent's leftovers, a
restored site ledger, a restored hub)."""

import json
from datetime import UTC, datetime, timedelta

import pytest

from evaluator.client import canonical_json
from evaluator.ledger import Ledger
from evaluator.ledger_reconcile import reconcile
from evaluator.site_budget import SiteBudget
from evaluator.state import AgentState
from tests.evaluator.test_agent_loop import RHO, VENDOR, FakeSandbox, data_dir, hub, make_agent  # noqa: F401

TOKEN_A, TOKEN_B = "a" * 32, "b" * 32


def write(ledger, job_id=1, attempt=TOKEN_A, payload=b'{"x":1}', state="prepared", **kw):
    return ledger.append(job_id=job_id, submission_id=1, task_id=3, kind="metrics", payload=payload,
                         attempt=attempt, state=state, rho=kw.pop("rho", 0.5), split="public", vendor_id=VENDOR,
                         **kw)  # fmt: skip


def test_an_entry_moves_prepared_released_confirmed_and_only_forward(tmp_path):
    ledger = Ledger(tmp_path / "ledger.jsonl")
    entry = write(ledger)
    assert [e.state for e in ledger.read_entries()] == ["prepared"]
    assert ledger.mark(entry.key, "released") and ledger.mark(entry.key, "confirmed")
    assert not ledger.mark(entry.key, "voided")  # confirmed is final
    assert not ledger.mark(entry.key, "confirmed")  # a repeat changes nothing
    [read] = ledger.read_entries()
    assert read.state == "confirmed" and read.payload == '{"x":1}'
    lines = (tmp_path / "ledger.jsonl").read_text().splitlines()
    assert len(lines) == 3  # the entry and two state records: append-only


def test_the_same_job_attempt_and_bytes_are_written_once(tmp_path):
    ledger = Ledger(tmp_path / "ledger.jsonl")
    first = write(ledger)
    ledger.mark(first.key, "released")
    again = write(ledger)  # a retried write after a crash
    assert again.state == "released" and again.time == first.time
    write(ledger, attempt=TOKEN_B)  # another attempt is another entry
    assert len(ledger.read_entries()) == 2


def test_a_voided_entry_is_not_spent(tmp_path):
    ledger = Ledger(tmp_path / "ledger.jsonl")
    kept, dropped = write(ledger, job_id=1), write(ledger, job_id=2)
    ledger.mark(kept.key, "confirmed")
    ledger.mark(dropped.key, "voided", why="attempt_superseded")
    [(key, spent)] = ledger.spent().items()
    assert key == ("3", str(VENDOR), "public") and (spent.releases, spent.rho) == (1, 0.5)


def test_the_agent_settles_its_entry_with_the_hubs_answer(hub, data_dir):  # noqa: F811
    hub.add_job()
    make_agent(hub, data_dir, FakeSandbox()).run_once()
    [entry] = Ledger(data_dir / "ledger.jsonl").read_entries()
    assert entry.state == "confirmed" and entry.attempt == json.loads(hub.results[0][1])["attempt"]


def test_a_superseded_attempt_voids_its_entry(hub, data_dir):  # noqa: F811
    hub.add_job()
    hub.fail_posts_with = [409]
    make_agent(hub, data_dir, FakeSandbox()).run_once()
    [entry] = Ledger(data_dir / "ledger.jsonl").read_entries()
    assert entry.state == "voided" and Ledger(data_dir / "ledger.jsonl").spent() == {}


class Killed(BaseException):
    """Stands for SIGKILL at a chosen point: nothing after it runs."""


def test_an_agent_killed_between_its_ledger_write_and_its_post_leaves_nothing_counted(
    hub, data_dir, monkeypatch  # noqa: F811
):
    hub.add_job()
    agent = make_agent(hub, data_dir, FakeSandbox())

    def die(*args, **kwargs):
        raise Killed

    monkeypatch.setattr(agent.state, "add_pending", die)
    with pytest.raises(Killed):
        agent.run_once()
    [orphan] = Ledger(data_dir / "ledger.jsonl").read_entries()
    assert orphan.state == "prepared" and hub.results == []
    # The hub requeues the job (lease expired); a restarted agent reconciles, then redoes it.
    restarted = make_agent(hub, data_dir, FakeSandbox())
    report = reconcile(ledger=restarted.ledger, state=restarted.state, budget=None, receipts=hub.receipts(),
                       repair=True, grace_seconds=0)  # fmt: skip
    assert len(report.voided) == 1 and not report.missing_at_site
    hub.add_job(attempt=2)
    restarted.run_once()
    counted = [e for e in restarted.ledger.read_entries() if e.counts]
    assert [(e.job_id, e.sha256) for e in counted] == [(r["job_id"], r["sha256"]) for r in hub.receipts()]
    assert reconcile(ledger=restarted.ledger, state=restarted.state, budget=None, receipts=hub.receipts(),
                     repair=False, grace_seconds=0).agrees  # fmt: skip


def test_an_agent_killed_after_its_post_confirms_the_entry_from_the_hubs_receipts(hub, data_dir, monkeypatch):  # noqa: F811
    hub.add_job()
    agent = make_agent(hub, data_dir, FakeSandbox())

    def die(*args, **kwargs):
        raise Killed

    monkeypatch.setattr(agent.state, "mark_posted", die)  # the hub has it; the agent dies before settling
    with pytest.raises(Killed):
        agent.run_once()
    [entry] = agent.ledger.read_entries()
    assert entry.state == "confirmed" or entry.state == "released"
    restarted = make_agent(hub, data_dir, FakeSandbox())
    restarted.run_once()  # flushes the pending post: the hub answers it already holds it
    assert len({sha for _, sha in ((j, json.loads(r)["ledger"]["sha256"]) for j, r in hub.results)}) == 1
    [entry] = restarted.ledger.read_entries()
    assert entry.state == "confirmed" and AgentState(data_dir / "agent-state.json").pending() == {}


def receipt(job_id, sha, rho=0.5, kind="metrics"):
    return {"id": job_id, "job_id": job_id, "kind": kind, "sha256": sha, "bytes": 10, "task_id": 3,
            "vendor_id": VENDOR, "rho": rho, "epsilon": 1.0, "delta": 1e-6}  # fmt: skip


def test_a_restored_site_ledger_is_detected_and_cannot_lower_the_vendors_total(tmp_path):
    ledger, budget = Ledger(tmp_path / "ledger.jsonl"), SiteBudget(tmp_path / "budget.json")
    state = AgentState(tmp_path / "state.json")
    kept = write(ledger, job_id=1, payload=canonical_json({"n": 1}))
    ledger.mark(kept.key, "confirmed")
    # The hub holds three releases; the restored ledger (and budget file) know of one.
    receipts = [receipt(1, kept.sha256), receipt(2, "2" * 64), receipt(3, "3" * 64)]
    report = reconcile(ledger=ledger, state=state, budget=budget, receipts=receipts, repair=False)
    assert not report.agrees and len(report.missing_at_site) == 2
    assert ledger.spent()[("3", str(VENDOR), "public")].rho == pytest.approx(0.5)  # what it would claim
    report = reconcile(ledger=ledger, state=state, budget=budget, receipts=receipts, repair=True)
    spent = ledger.spent()[("3", str(VENDOR), "public")]
    assert (spent.releases, spent.rho) == (3, pytest.approx(1.5))  # the hub's total
    assert budget.usage(task_id=3, vendor_id=VENDOR, split="public").spent == pytest.approx(1.0)
    assert reconcile(ledger=ledger, state=state, budget=budget, receipts=receipts, repair=False).agrees
    assert all(e.recovered for e in ledger.read_entries()[1:])


def test_a_restored_hub_is_reported_not_repaired(tmp_path):
    ledger, state = Ledger(tmp_path / "ledger.jsonl"), AgentState(tmp_path / "state.json")
    entry = write(ledger)
    ledger.mark(entry.key, "confirmed")
    report = reconcile(ledger=ledger, state=state, budget=None, receipts=[], repair=True)
    assert report.missing_at_hub == [f"job 1 {entry.sha256[:12]}"]
    assert ledger.read_entries()[0].state == "confirmed"


def test_a_fresh_entry_is_never_voided_under_a_working_agent(tmp_path):
    ledger, state = Ledger(tmp_path / "ledger.jsonl"), AgentState(tmp_path / "state.json")
    write(ledger)
    report = reconcile(ledger=ledger, state=state, budget=None, receipts=[], repair=True)
    assert report.voided == [] and ledger.read_entries()[0].state == "prepared"
    later = datetime.now(UTC) + timedelta(minutes=5)
    report = reconcile(ledger=ledger, state=state, budget=None, receipts=[], repair=True, now=later)
    assert len(report.voided) == 1 and ledger.read_entries()[0].state == "voided"
