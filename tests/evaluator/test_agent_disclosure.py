"""The disclosure policy as the site agent enforces it (unit level, fake hub and sandbox):
public/private split, reveals the hub lists, release approval, the site's own budget. End-to-end
versions run against the real hub in tests/e2e."""

import json
import threading

import numpy as np
import pytest

from evaluator.__main__ import main as cli
from evaluator.ledger import Ledger
from evaluator.privacy.zcdp import epsilon_for_rho, rho_for_epsilon
from evaluator.splits import public_private_split
from evaluator.state import AgentState
from tests.evaluator.test_agent_loop import (
    N_ROWS,
    PRIVACY,
    RHO,
    VENDOR,
    FakeSandbox,
    assert_noised_release_of,
    budget,
    exact_statistics,
    make_agent,
)

SEED = 11


def _entries(data_dir):
    return Ledger(data_dir / "ledger.jsonl").read_entries()


def test_public_statistics_leave_now_and_private_ones_only_when_the_hub_lists_a_reveal(hub, data_dir):
    hub.add_job(public_split_fraction=0.5, split_seed=SEED)
    agent = make_agent(hub, data_dir, FakeSandbox())
    agent.run_once()
    public, private = public_private_split(N_ROWS, public_fraction=0.5, seed=SEED)
    [(_, raw)] = hub.results
    body = json.loads(raw)
    assert body["n_rows"] == len(public)
    assert_noised_release_of(body["statistics"], exact_statistics(rows=public), n_rows=len(public))
    assert hub.private_results == []  # sealed at the site, exact, until the task closes
    sealed = AgentState(data_dir / "agent-state.json").sealed(12)
    exact_private = exact_statistics(rows=private)
    assert {b: np.asarray(v) for b, v in sealed["statistics"].items()}.keys() == exact_private.keys()
    assert all(np.array_equal(sealed["statistics"][b], exact_private[b]) for b in exact_private)
    assert budget(data_dir).usage(task_id=3, split="private").total == 0.0

    hub.pending_work = {"releases": [], "reveals": [12]}  # the hub says: the task closed, 12 is a final
    agent.run_once()
    [(job_id, raw)] = hub.private_results
    revealed = json.loads(raw)
    assert job_id == 12 and revealed["n_rows"] == len(private)
    assert revealed["privacy"] == {"mechanism": "gaussian", "rho": RHO, "epsilon": 1.0, "delta": 1e-6}
    assert_noised_release_of(revealed["statistics"], exact_private, n_rows=len(private))
    entries = _entries(data_dir)
    assert [(e.kind, e.split) for e in entries] == [("metrics", "public"), ("metrics", "private")]
    assert entries[1].sha256 == revealed["ledger"]["sha256"] and entries[1].rho == RHO
    assert budget(data_dir).usage(task_id=3, vendor_id=VENDOR, split="private").spent == pytest.approx(RHO)
    assert AgentState(data_dir / "agent-state.json").sealed(12) is None
    agent.run_once()
    assert len(hub.private_results) == 1  # revealed once, though the hub still lists it


def test_a_job_the_hub_does_not_list_is_never_revealed(hub, data_dir):
    for job_id in (12, 13):
        hub.add_job(job_id, public_split_fraction=0.5, split_seed=SEED)
    agent = make_agent(hub, data_dir, FakeSandbox())
    agent.run_once()
    agent.run_once()
    hub.pending_work = {"releases": [], "reveals": [13, 99]}  # 12 is not a final; 99 is not ours
    agent.run_once()
    assert [job_id for job_id, _ in hub.private_results] == [13]
    assert AgentState(data_dir / "agent-state.json").sealed(12) is not None  # kept, never sent
    assert [e.job_id for e in _entries(data_dir) if e.split == "private"] == [13]


def test_a_reveal_the_site_cannot_make_is_logged_once_not_at_every_poll(hub, data_dir, caplog):
    agent = make_agent(hub, data_dir, FakeSandbox())
    hub.pending_work = {"releases": [], "reveals": [99]}  # a job this site kept nothing for
    with caplog.at_level("WARNING", logger="evaluator.agent"):
        for _ in range(5):
            agent.run_once()
    assert sum("kept no private statistics" in r.getMessage() for r in caplog.records) == 1
    assert hub.private_results == []


def test_a_reveal_that_would_pass_the_sites_private_budget_is_not_sent(hub, data_dir):
    hub.add_job(public_split_fraction=0.5, split_seed=SEED)
    agent = make_agent(hub, data_dir, FakeSandbox())
    agent.run_once()
    # Other reveals used this vendor's private budget up (the hub's 10, below the site's 20).
    full = rho_for_epsilon(PRIVACY["vendor_epsilon"], 1e-6)
    budget(data_dir).reserve(job_id=500, task_id=3, vendor_id=VENDOR, split="private", rho=full,
                             vendor_cap_rho=full, task_cap_rho=full)  # fmt: skip
    hub.pending_work = {"releases": [], "reveals": [12]}
    agent.run_once()
    assert hub.private_results == []
    assert [e.split for e in _entries(data_dir)] == ["public"]


def test_two_agents_of_a_site_reveal_a_job_once(hub, data_dir):
    hub.add_job(public_split_fraction=0.5, split_seed=SEED)
    make_agent(hub, data_dir, FakeSandbox()).run_once()
    hub.pending_work = {"releases": [], "reveals": [12]}
    agents = [make_agent(hub, data_dir, FakeSandbox(), agent_id=f"agent-{i}") for i in range(4)]
    start = threading.Barrier(len(agents))

    def reveal(agent):
        start.wait()
        agent.apply_pending_work()

    threads = [threading.Thread(target=reveal, args=(a,)) for a in agents]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(hub.private_results) == 1  # one draw of noise, one release
    assert [e.split for e in _entries(data_dir)] == ["public", "private"]
    assert budget(data_dir).usage(task_id=3, split="private").spent == pytest.approx(RHO)


def test_held_result_leaves_only_after_the_owners_decision_on_the_hub(hub, data_dir):
    hub.add_job(requires_release_approval=True)
    agent = make_agent(hub, data_dir, FakeSandbox())
    agent.run_once()
    assert hub.held == [12] and hub.results == [] and _entries(data_dir) == []
    assert budget(data_dir).usage(task_id=3, split="public").reserved == pytest.approx(RHO)  # held, priced
    agent.run_once()  # no decision yet
    assert hub.results == []
    hub.pending_work = {"releases": [{"job_id": 12, "decision": "approved"}], "reveals": []}
    agent.run_once()
    [(job_id, raw)] = hub.results
    body = json.loads(raw)
    assert job_id == 12 and set(body) == {"agent_id", "n_rows", "statistics", "privacy", "ledger", "attempt", "runner"}
    assert_noised_release_of(body["statistics"], exact_statistics(), n_rows=N_ROWS)
    [entry] = _entries(data_dir)
    assert entry.rho == RHO and body["ledger"]["sha256"] == entry.sha256
    usage = budget(data_dir).usage(task_id=3, split="public")
    assert (usage.spent, usage.reserved) == (pytest.approx(RHO), 0.0)


def test_site_operator_refuses_a_held_result_from_the_cli_and_the_budget_is_refunded(
    hub, data_dir, tmp_path, capsys
):
    hub.add_job(requires_release_approval=True)
    agent = make_agent(hub, data_dir, FakeSandbox())
    agent.run_once()
    config = tmp_path / "site.toml"
    config.write_text(f'data_dir = "{data_dir}"\n')
    assert cli(["releases", "list", "--config", str(config)]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["job"] == "12" and listed["decision"] == "waiting" and "statistics" not in listed
    assert cli(["releases", "refuse", "12", "--config", str(config)]) == 0
    agent.run_once()
    assert hub.results == []
    [(job_id, raw)] = hub.failures
    assert json.loads(raw)["reason"] == "withheld"
    assert budget(data_dir).usage(task_id=3, split="public").total == 0.0
    assert cli(["releases", "approve", "99", "--config", str(config)]) == 2


def _vendor_epsilon_for(releases: float) -> float:
    """A vendor budget (epsilon) that fits ``releases`` releases of RHO."""
    return epsilon_for_rho(releases * RHO, 1e-6)


def test_site_refuses_jobs_before_the_model_runs_once_the_vendors_budget_is_spent(hub, data_dir):
    privacy = {**PRIVACY, "vendor_epsilon": _vendor_epsilon_for(2.5)}  # two releases fit, three don't
    for job_id in (31, 32, 33):
        hub.add_job(job_id, privacy=privacy)
    sandbox = FakeSandbox()
    agent = make_agent(hub, data_dir, sandbox)
    for _ in range(3):
        agent.run_once()
    assert [job_id for job_id, _ in hub.results] == [31, 32]
    [(job_id, raw)] = hub.failures
    assert job_id == 33 and json.loads(raw)["reason"] == "policy_violation"
    assert len(sandbox.calls) == 2  # refused before the model ever ran


def test_the_sites_own_cap_binds_when_the_hub_asks_for_more(hub, data_dir):
    from evaluator.config import LimitCaps

    for job_id in (41, 42):
        hub.add_job(job_id, privacy={**PRIVACY, "vendor_epsilon": 1000.0, "task_epsilon": 1000.0})
    caps = LimitCaps(max_memory_mb=2048, max_cpus=2.0, max_timeout_seconds=600,
                     max_epsilon_per_release=1.0, max_vendor_epsilon=_vendor_epsilon_for(1.5))  # fmt: skip
    agent = make_agent(hub, data_dir, FakeSandbox(), limits=caps)
    agent.run_once()
    agent.run_once()
    assert [j for j, _ in hub.results] == [41]
    assert [(j, json.loads(raw)["reason"]) for j, raw in hub.failures] == [(42, "policy_violation")]


def test_two_agents_racing_on_one_site_never_pass_the_sites_cap(hub, data_dir):
    privacy = {**PRIVACY, "vendor_epsilon": _vendor_epsilon_for(3.5)}  # three releases fit
    for job_id in range(50, 58):
        hub.add_job(job_id, privacy=privacy)
    slow = FakeSandbox(before=lambda: threading.Event().wait(0.05))  # reservations overlap in time
    agents = [make_agent(hub, data_dir, slow), make_agent(hub, data_dir, slow)]
    errors = []

    def serve(agent):
        try:
            while agent.run_once():
                pass
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=serve, args=(a,)) for a in agents]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    # (An agent also re-posts what it finds pending in the shared state, maybe a body its peer is
    # posting right then: the same bytes, which the hub takes once. Count jobs, not posts.)
    assert len({j for j, _ in hub.results}) == 3 and len({j for j, _ in hub.failures}) == 5
    assert {json.loads(raw)["reason"] for _, raw in hub.failures} == {"policy_violation"}
    usage = budget(data_dir).usage(task_id=3, vendor_id=VENDOR, split="public")
    assert usage.reserved == 0.0 and usage.spent == pytest.approx(3 * RHO)
    assert sum(e.rho for e in _entries(data_dir) if e.rho) == pytest.approx(3 * RHO)


def test_a_retried_job_reuses_its_reservation(hub, data_dir):
    privacy = {**PRIVACY, "vendor_epsilon": _vendor_epsilon_for(1.5)}  # one release fits
    hub.add_job(60, privacy=privacy)
    # An agent reserved for job 60, then died before releasing; the hub hands the job out again.
    agent = make_agent(hub, data_dir, FakeSandbox())
    budget(data_dir).reserve(job_id=60, task_id=3, vendor_id=VENDOR, split="public", rho=RHO,
                             vendor_cap_rho=rho_for_epsilon(privacy["vendor_epsilon"], 1e-6), task_cap_rho=1.0)  # fmt: skip
    agent.run_once()
    assert [j for j, _ in hub.results] == [60] and hub.failures == []
    assert budget(data_dir).usage(task_id=3, split="public").spent == pytest.approx(RHO)
