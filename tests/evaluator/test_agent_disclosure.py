"""The disclosure policy as the site agent enforces it (unit level, fake hub and sandbox):
public/private split, Ladder, release approval, leakage cap. End-to-end versions run against the
real hub in tests/e2e."""

import json

import numpy as np
from sklearn import metrics as skm

from evaluator.__main__ import main as cli
from evaluator.ladder import release_cost_bits
from evaluator.ledger import Ledger
from evaluator.splits import public_private_split
from evaluator.state import AgentState
from tests.evaluator.test_agent_loop import LABELS, N_ROWS, P1, FakeSandbox, make_agent

SEED = 11


def _scores(rows, predictions=P1):
    p = np.asarray(predictions, dtype=np.float32).astype(np.float64)[rows]
    return {
        "roc_auc": round(skm.roc_auc_score(LABELS[rows], p), 4),
        "accuracy": round(skm.accuracy_score(LABELS[rows], (p > 0.5).astype(int)), 2),
    }


def test_public_scores_leave_now_and_private_scores_only_when_the_task_closes(hub, data_dir):
    hub.add_job(public_split_fraction=0.5, split_seed=SEED)
    agent = make_agent(hub, data_dir, FakeSandbox())
    agent.run_once()
    public, private = public_private_split(N_ROWS, public_fraction=0.5, seed=SEED)
    [(_, raw)] = hub.results
    body = json.loads(raw)
    assert body["metrics"] == _scores(public) and body["n_rows"] == len(public)
    assert hub.private_results == []  # sealed at the site
    assert AgentState(data_dir / "agent-state.json").sealed(12)["metrics"] == _scores(private)

    hub.pending_work = {"releases": [], "reveals": [12]}  # the hub says: the task has closed
    agent.run_once()
    [(job_id, raw)] = hub.private_results
    revealed = json.loads(raw)
    assert job_id == 12 and revealed["metrics"] == _scores(private) and revealed["n_rows"] == len(private)
    entries = Ledger(data_dir / "ledger.jsonl").read_entries()
    assert [e.kind for e in entries] == ["metrics", "metrics"]
    assert entries[1].sha256 == revealed["ledger"]["sha256"]
    assert AgentState(data_dir / "agent-state.json").sealed(12) is None
    agent.run_once()
    assert len(hub.private_results) == 1  # revealed once


def test_ladder_releases_a_new_score_only_when_it_beats_the_best(hub, data_dir):
    good = np.where(LABELS == 1, 0.9, 0.1)
    slightly_worse = np.where(LABELS == 1, 0.85, 0.15)
    for job_id in (21, 22):
        hub.add_job(job_id, leaderboard_mode="ladder")
    hub.jobs[0]["submission"]["vendor_id"] = hub.jobs[1]["submission"]["vendor_id"] = 5
    make_agent(hub, data_dir, FakeSandbox(predictions=good)).run_once()
    make_agent(hub, data_dir, FakeSandbox(predictions=slightly_worse)).run_once()
    first, second = (json.loads(raw) for _, raw in hub.results)
    everything = np.arange(N_ROWS)
    assert first["ladder_improved"] is True and first["metrics"] == _scores(everything, good)
    # No improvement: the vendor is shown its previous best again, and learns one bit.
    assert second["ladder_improved"] is False and second["metrics"] == first["metrics"]
    assert second["ledger"]["cost_bits"] == 1.0
    assert first["ledger"]["cost_bits"] == release_cost_bits([4, 2], ladder=True, improved=True)


def test_held_result_leaves_only_after_the_owners_decision_on_the_hub(hub, data_dir):
    hub.add_job(requires_release_approval=True)
    agent = make_agent(hub, data_dir, FakeSandbox())
    agent.run_once()
    assert hub.held == [12] and hub.results == [] and Ledger(data_dir / "ledger.jsonl").read_entries() == []
    agent.run_once()  # no decision yet
    assert hub.results == []
    hub.pending_work = {"releases": [{"job_id": 12, "decision": "approved"}], "reveals": []}
    agent.run_once()
    [(job_id, raw)] = hub.results
    assert job_id == 12 and json.loads(raw)["metrics"] == _scores(np.arange(N_ROWS))
    assert len(Ledger(data_dir / "ledger.jsonl").read_entries()) == 1


def test_site_operator_refuses_a_held_result_from_the_cli(hub, data_dir, tmp_path, capsys):
    hub.add_job(requires_release_approval=True)
    agent = make_agent(hub, data_dir, FakeSandbox())
    agent.run_once()
    config = tmp_path / "site.toml"
    config.write_text(f'data_dir = "{data_dir}"\n')
    assert cli(["releases", "list", "--config", str(config)]) == 0
    assert '"job": "12"' in capsys.readouterr().out
    assert cli(["releases", "refuse", "12", "--config", str(config)]) == 0
    agent.run_once()
    assert hub.results == []
    [(job_id, raw)] = hub.failures
    assert json.loads(raw)["reason"] == "withheld"
    assert cli(["releases", "approve", "99", "--config", str(config)]) == 2


def test_site_refuses_jobs_once_the_vendor_reached_the_leakage_cap(hub, data_dir):
    cap = release_cost_bits([4, 2], ladder=False, improved=True) * 1.5  # one release fits, two don't
    for job_id in (31, 32, 33):
        hub.add_job(job_id, leakage_cap_bits=cap)
    sandbox = FakeSandbox()
    agent = make_agent(hub, data_dir, sandbox)
    for _ in range(3):
        agent.run_once()
    assert [job_id for job_id, _ in hub.results] == [31, 32]
    [(job_id, raw)] = hub.failures
    assert job_id == 33 and json.loads(raw)["reason"] == "policy_violation"
    assert len(sandbox.calls) == 2  # refused before the model ever ran
