"""Long polling of the run state over real HTTP, and FedAvg weighted by examples under secure
aggregation (docs/federated-protocol.md)."""

import base64
import threading
import time

import numpy as np
import pytest

from evaluator.client import HubClient
from evaluator.federated.secagg import RoundParams, SecAggClient
from evaluator.federated.updates import quantization_error_bound
from marketplace.finetuning.models import FineTuningRun
from marketplace.finetuning.offsets import layout_of, offset_from_bytes
from tests.finetuning.conftest import LAYOUT, make_parent, request_run, sites_for, updates_for


def _offset(run: FineTuningRun) -> np.ndarray:
    with run.offset.open("rb") as f:
        return offset_from_bytes(f.read(), layout_of(LAYOUT))


def _start(owner, vendor, parent, sites, *, n_examples=None, **overrides) -> int:
    response = request_run(vendor, parent, **overrides)
    assert response.status_code == 201, response.content
    run_id = response.json()["id"]
    approved = owner.client.post(f"/api/v1/finetuning-runs/{run_id}/approve", {"validation_holdout": False},
                                 format="json")  # fmt: skip
    assert approved.status_code == 200, approved.content
    assert approved.json()["validation_holdout"] is False and approved.json()["example_weighting"] is True
    for i, site in enumerate(sites):
        job = site.claim()
        assert job["run"]["validation_holdout"] is False and job["run"]["example_weighting"] is True
        body = {"layout": LAYOUT} if n_examples is None else {"layout": LAYOUT, "n_examples": n_examples[i]}
        site.post(f"{run_id}/layout", body)
    return run_id


@pytest.mark.django_db(transaction=True)
def test_a_held_state_request_answers_within_milliseconds_of_the_phase_change(owner, vendor, fl_task, live_server):
    parent = make_parent(vendor, fl_task)
    sites = sites_for(owner, fl_task, 3)
    run_id = _start(owner, vendor, parent, sites)
    client = HubClient(live_server.url, sites[0].handle.token, agent_id="agent-1", max_attempts=1)
    first = client.run_state(run_id)
    assert first["phase"] == "keys" and first["version"]

    # Nothing changes: the hub holds the request for the whole wait, then answers the same version.
    start = time.monotonic()
    same = client.run_state(run_id, since=first["version"], wait=1.0)
    assert same["version"] == first["version"] and time.monotonic() - start >= 0.9

    # A phase change while the request is held: the answer follows it at once.
    answer: dict = {}

    def poll():
        answer["state"] = client.run_state(run_id, since=first["version"], wait=20.0)
        answer["at"] = time.monotonic()

    thread = threading.Thread(target=poll)
    thread.start()
    time.sleep(0.5)
    for site in sites:
        site.post_keys(run_id)  # the last one opens "shares"
    changed_at = time.monotonic()
    thread.join(30)
    assert answer["state"]["phase"] == "shares" and answer["state"]["version"] != first["version"]
    assert answer["at"] - changed_at < 1.0  # 10 ms checks; generous for a loaded CI machine
    assert answer["state"]["roster"]


def test_a_single_threaded_server_answers_a_long_poll_at_once(owner, vendor, fl_task):
    """Django's test client says wsgi.multithread=False, like gunicorn's sync workers: holding the
    request would block the worker, so the hub answers immediately and the site polls."""
    parent = make_parent(vendor, fl_task)
    sites = sites_for(owner, fl_task, 3)
    run_id = _start(owner, vendor, parent, sites)
    version = sites[0].state(run_id)["version"]
    start = time.monotonic()
    response = sites[0].api.get(f"/api/v1/agent/runs/{run_id}/state", {"since": version, "wait": 10})
    assert response.status_code == 200 and response.json()["version"] == version
    assert time.monotonic() - start < 5


def test_secure_aggregation_weights_sites_by_their_examples(owner, vendor, fl_task):
    parent = make_parent(vendor, fl_task)
    sites = sites_for(owner, fl_task, 3)
    counts = [40, 80, 120]
    run_id = _start(owner, vendor, parent, sites, n_examples=counts, rounds=1)
    run = FineTuningRun.objects.get(id=run_id)
    assert run.example_cap == 120
    state = sites[0].state(run_id)
    cfg = state["round_config"]
    assert cfg["example_cap"] == 120
    # D_0 travels inside the state (small model): the same bytes as the offset endpoint.
    downloaded = b"".join(sites[0].api.get(f"/api/v1/agent/runs/{run_id}/rounds/0/offset").streaming_content)
    assert state["offset"]["round"] == 0 and base64.b64decode(state["offset"]["safetensors"]) == downloaded
    updates = updates_for(3, seed=5)
    for site in sites:
        site.post_keys(run_id)
    for site in sites:
        site.post_shares(run_id)
    for i, site in enumerate(sites):  # each site releases (n_k / cap) * update_k
        scaled = updates[i] * counts[i] / 120
        assert site.post_masked(run_id, scaled, seed=7 + i, n=counts[i]).status_code == 200
    for site in sites:
        site.post_unmask(run_id)
    run.refresh_from_db()
    assert run.status == "completed"
    weighted = np.average(np.stack(updates), axis=0, weights=counts)
    equal = np.mean(updates, axis=0)
    bound = quantization_error_bound(clip_norm=cfg["quantization_range"], bits=cfg["quantization_bits"], n_summed=3)
    final = _offset(run)
    assert np.max(np.abs(final - weighted)) <= bound / (sum(counts) / 120) + 1e-6
    assert np.max(np.abs(final - equal)) > 10 * bound  # not the equal-weight mean


def test_a_site_cannot_claim_more_examples_than_the_largest_site_of_round_0(owner, vendor, fl_task):
    parent = make_parent(vendor, fl_task)
    sites = sites_for(owner, fl_task, 3)
    run_id = _start(owner, vendor, parent, sites, n_examples=[40, 80, 120], rounds=1)
    for site in sites:
        site.post_keys(run_id)
    for site in sites:
        site.post_shares(run_id)
    response = sites[0].post_masked(run_id, updates_for(3)[0], n=121)
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_message"


def test_example_counts_in_the_layout_post_are_bounded(owner, vendor, fl_task):
    parent = make_parent(vendor, fl_task)
    sites = sites_for(owner, fl_task, 3)
    response = request_run(vendor, parent)
    run_id = response.json()["id"]
    owner.client.post(f"/api/v1/finetuning-runs/{run_id}/approve")
    sites[0].claim()
    sites[0].post(f"{run_id}/layout", {"layout": LAYOUT, "n_examples": 0}, expect=400)
    sites[0].post(f"{run_id}/layout", {"layout": LAYOUT, "n_examples": 2**63}, expect=400)


def _advertise_ahead(site, run_id: int, expect: int = 200):
    """The next round's fresh keys, posted during this round's masked/unmask phase."""
    state = site.state(run_id)
    cfg = state["round_config"]
    client = SecAggClient(state["participant"], RoundParams(cfg["next_secagg_round_id"], cfg["threshold"],
                                                            cfg["vector_length"]))  # fmt: skip
    keys = client.advertise()
    body = {"keys": {"mask_public": base64.b64encode(keys.mask_public).decode(),
                     "enc_public": base64.b64encode(keys.enc_public).decode()}}  # fmt: skip
    site.post(f"{run_id}/rounds/{state['round'] + 1}/keys", body, expect=expect)
    return client


def test_keys_advertised_during_a_round_open_the_next_one_at_shares(owner, vendor, fl_task):
    parent = make_parent(vendor, fl_task)
    sites = sites_for(owner, fl_task, 3)
    run_id = _start(owner, vendor, parent, sites, rounds=2)
    assert sites[0].state(run_id)["round_config"]["next_secagg_round_id"] == f"vaultbench-run-{run_id}-round-1-attempt-0"
    updates = updates_for(3, seed=2)
    for site in sites:
        site.post_keys(run_id)
    # Too early (keys phase of round 0) and too far ahead are refused.
    sites[0].post(f"{run_id}/rounds/1/keys", {"keys": {"mask_public": "A" * 44, "enc_public": "B" * 44}}, expect=409)
    for site in sites:
        site.post_shares(run_id)
    for i, site in enumerate(sites):
        assert site.post_masked(run_id, updates[i], seed=3 + i).status_code == 200
    ahead = [_advertise_ahead(site, run_id) for site in sites]
    _advertise_ahead(sites[0], run_id, expect=409)  # different keys for the same round: refused
    for site in sites:
        site.post_unmask(run_id)
    run = FineTuningRun.objects.get(id=run_id)
    assert (run.current_round, run.phase) == (1, "shares")  # no keys phase to wait for
    roster = sites[0].state(run_id)["roster"]
    assert [r["mask_public"] for r in roster] == [base64.b64encode(c.advertise().mask_public).decode() for c in ahead]
    # The round completes with those keys (the hub's unmask uses them).
    for site, client in zip(sites, ahead, strict=True):
        site.client_state = client
    for site in sites:
        site.post_shares(run_id)
    for i, site in enumerate(sites):
        assert site.post_masked(run_id, updates[i], seed=9 + i).status_code == 200
    for site in sites:
        site.post_unmask(run_id)
    run.refresh_from_db()
    assert run.status == "completed" and run.rounds_completed == 2
    assert sites[0].state(run_id)["round_config"] is None


def test_no_keys_ahead_for_the_last_round(owner, vendor, fl_task):
    parent = make_parent(vendor, fl_task)
    sites = sites_for(owner, fl_task, 3)
    run_id = _start(owner, vendor, parent, sites, rounds=1)
    assert sites[0].state(run_id)["round_config"]["next_secagg_round_id"] is None


def _keys_body(site, run_id: int) -> tuple[int, dict]:
    state = site.state(run_id)
    cfg = state["round_config"]
    site.client_state = SecAggClient(state["participant"], RoundParams(cfg["secagg_round_id"], cfg["threshold"],
                                                                       cfg["vector_length"]))  # fmt: skip
    keys = site.client_state.advertise()
    return state["round"], {"agent_id": site.agent_id, "keys": {"mask_public": base64.b64encode(keys.mask_public).decode(),
                                                                 "enc_public": base64.b64encode(keys.enc_public).decode()}}  # fmt: skip


@pytest.mark.django_db(transaction=True)
def test_a_held_post_answers_with_the_next_phase(owner, vendor, fl_task, live_server):
    """``POST ...?wait=``: a site done in the phase gets the next phase's state in the post's own
    answer once the last site posts (one request per site and phase fewer than post + long poll)."""
    parent = make_parent(vendor, fl_task)
    sites = sites_for(owner, fl_task, 3)
    run_id = _start(owner, vendor, parent, sites)
    client = HubClient(live_server.url, sites[0].handle.token, agent_id="agent-1", max_attempts=1)
    round_number, body = _keys_body(sites[0], run_id)
    answer: dict = {}

    def post():
        answer["body"] = client.post_round(run_id, round_number, "keys", body, wait=20.0)
        answer["at"] = time.monotonic()

    thread = threading.Thread(target=post)
    thread.start()
    time.sleep(0.5)
    assert "body" not in answer  # held: sites 2 and 3 have not posted
    for site in sites[1:]:
        site.post_keys(run_id)  # the last one opens "shares"
    changed_at = time.monotonic()
    thread.join(30)
    assert answer["body"]["created"] is True
    state = answer["body"]["state"]
    assert state["phase"] == "shares" and state["done"] is False and len(state["roster"]) == 3
    assert answer["at"] - changed_at < 1.0  # generous for a loaded CI machine


def test_a_single_threaded_server_answers_a_post_at_once(owner, vendor, fl_task):
    parent = make_parent(vendor, fl_task)
    sites = sites_for(owner, fl_task, 3)
    run_id = _start(owner, vendor, parent, sites)
    round_number, body = _keys_body(sites[0], run_id)
    start = time.monotonic()
    response = sites[0].api.post(f"/api/v1/agent/runs/{run_id}/rounds/{round_number}/keys?wait=10", body,
                                 format="json")  # fmt: skip
    assert response.status_code == 200 and response.json()["state"]["done"] is True
    assert response.json()["state"]["phase"] == "keys" and time.monotonic() - start < 5
