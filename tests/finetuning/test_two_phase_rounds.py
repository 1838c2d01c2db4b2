"""Two phases per round under secure aggregation (docs/federated-protocol.md, "Two phases per
round"): round r+1's fresh keys travel with round r's masked post, its encrypted shares with round
r's unmask post, and round r+1 opens at ``masked``. Real API, real secure-aggregation client."""

from __future__ import annotations

import base64

import numpy as np

from evaluator.federated.secagg import AdvertisedKeys, RoundParams, SecAggClient
from evaluator.federated.updates import dequantize, quantization_error_bound
from marketplace.egress.receipts import receipt_of
from marketplace.finetuning.models import FineTuningRun
from tests.finetuning.conftest import _b64, make_parent, sites_for, start_run, updates_for


def _next_keys(site, state) -> dict:
    cfg = state["round_config"]
    params = RoundParams(cfg["next_secagg_round_id"], cfg["threshold"], cfg["vector_length"])
    site.next_client = SecAggClient(state["participant"], params)
    keys = site.next_client.advertise()
    return {"mask_public": _b64(keys.mask_public), "enc_public": _b64(keys.enc_public)}


def _masked_with_next_keys(site, run_id, update, seed):
    """The conftest's masked post, with next_keys in the released body (and its receipt)."""
    state = site.state(run_id)
    original = site.release_body

    def body_with_keys(vector, **metrics):
        body = original(vector, **metrics)
        body.pop("ledger")
        body["next_keys"] = _next_keys(site, state)
        sha256, size = receipt_of(body)
        return {**body, "ledger": {"sha256": sha256, "bytes": size}}

    site.release_body = body_with_keys
    try:
        response = site.post_masked(run_id, update, seed=seed)
    finally:
        site.release_body = original
    assert response.status_code == 200, response.content
    return response


def _unmask_with_next_shares(site, run_id):
    state = site.state(run_id)
    roster = [AdvertisedKeys(r["participant"], base64.b64decode(r["mask_public"]), base64.b64decode(r["enc_public"]))
              for r in state["next_roster"]]  # fmt: skip
    bundles = [{"recipient": b.recipient, "nonce": _b64(b.nonce), "ciphertext": _b64(b.ciphertext)}
               for b in site.next_client.share_keys(roster)]  # fmt: skip
    request = state["unmask_request"]
    from evaluator.federated.secagg import UnmaskRequest

    answer = site.client_state.unmask_shares(UnmaskRequest(frozenset(request["survivors"]), frozenset(request["dropped"])))
    body = {"self_mask_shares": {str(k): str(v) for k, v in answer.self_mask_shares.items()},
            "mask_key_shares": {str(k): str(v) for k, v in answer.mask_key_shares.items()}}  # fmt: skip
    return site.post(f"{run_id}/rounds/{state['round']}/unmask", {"response": body, "next_shares": bundles})


def test_the_next_round_opens_at_masked_and_aggregates_with_keys_and_shares_sent_ahead(owner, vendor, fl_task):
    parent = make_parent(vendor, fl_task)
    sites = sites_for(owner, fl_task, 3)
    run_id = start_run(owner, vendor, parent, sites, rounds=3)
    for site in sites:  # round 0: keys and shares in their own phases
        site.post_keys(run_id)
    for site in sites:
        site.post_shares(run_id)
    updates = updates_for(3, seed=0)
    for i, site in enumerate(sites):
        _masked_with_next_keys(site, run_id, updates[i], 100 + i)
    assert all(entry["participant"] in (1, 2, 3) for entry in sites[0].state(run_id)["next_roster"])
    answers = [_unmask_with_next_shares(site, run_id) for site in sites]
    state = answers[-1].json()["state"]
    assert (state["round"], state["phase"]) == (1, "masked")  # keys and shares of round 1 came ahead
    assert {b["sender"] for b in state["bundles"]} == {1, 2, 3} and state["offset"]["round"] == 1
    run = FineTuningRun.objects.get(id=run_id)
    assert run.rounds_completed == 1

    # Round 1 with the keys and shares sent ahead: its sum is the sum of the updates.
    cfg = sites[0].state(run_id)["round_config"]
    for site in sites:
        site.client_state = site.next_client
    updates = updates_for(3, seed=1)
    for i, site in enumerate(sites):
        assert site.post_masked(run_id, updates[i], seed=200 + i).status_code == 200
    offset_before = run.offset.open("rb").read()
    for site in sites:
        site.post_unmask(run_id)
    run.refresh_from_db()
    assert run.rounds_completed == 2 and run.current_round == 2 and run.phase == "keys"  # nothing sent ahead
    quantized_sum = sum(s.quantized.astype(np.int64) for s in sites)
    exact = dequantize(quantized_sum, clip_norm=cfg["quantization_range"], bits=cfg["quantization_bits"], n_summed=3)
    bound = quantization_error_bound(clip_norm=cfg["quantization_range"], bits=cfg["quantization_bits"], n_summed=3)
    assert np.max(np.abs(exact - np.sum(updates, axis=0))) <= bound
    assert run.offset.open("rb").read() != offset_before


def test_next_shares_without_a_complete_next_roster_are_ignored_and_the_unmask_answer_stands(owner, vendor, fl_task):
    parent = make_parent(vendor, fl_task)
    sites = sites_for(owner, fl_task, 3)
    run_id = start_run(owner, vendor, parent, sites, rounds=3)
    for site in sites:
        site.post_keys(run_id)
    for site in sites:
        site.post_shares(run_id)
    updates = updates_for(3, seed=0)
    _masked_with_next_keys(sites[0], run_id, updates[0], 100)
    _masked_with_next_keys(sites[1], run_id, updates[1], 101)
    assert sites[2].post_masked(run_id, updates[2], seed=102).status_code == 200  # no keys ahead
    state = sites[0].state(run_id)
    assert state["phase"] == "unmask" and "next_roster" not in state
    bogus = [{"recipient": n, "nonce": _b64(b"\0" * 24), "ciphertext": _b64(b"\0" * 100)} for n in (1, 2, 3)]
    request = state["unmask_request"]
    from evaluator.federated.secagg import UnmaskRequest

    answer = sites[0].client_state.unmask_shares(UnmaskRequest(frozenset(request["survivors"]), frozenset(request["dropped"])))
    body = {"response": {"self_mask_shares": {str(k): str(v) for k, v in answer.self_mask_shares.items()},
                         "mask_key_shares": {}}, "next_shares": bogus}  # fmt: skip
    sites[0].post(f"{run_id}/rounds/0/unmask", body)
    for site in sites[1:]:
        site.post_unmask(run_id)
    run = FineTuningRun.objects.get(id=run_id)
    assert run.rounds_completed == 1 and run.current_round == 1
    assert run.phase == "keys"  # site 3 advertised nothing ahead: round 1 starts with its keys phase
    from marketplace.finetuning.models import ProtocolMessage

    assert not ProtocolMessage.objects.filter(run=run, round=1, kind="shares").exists()


def test_next_keys_are_refused_in_the_last_round(owner, vendor, fl_task):
    parent = make_parent(vendor, fl_task)
    sites = sites_for(owner, fl_task, 3)
    run_id = start_run(owner, vendor, parent, sites, rounds=1)
    for site in sites:
        site.post_keys(run_id)
    for site in sites:
        site.post_shares(run_id)
    state = sites[0].state(run_id)
    assert state["round_config"]["next_secagg_round_id"] is None
    state["round_config"]["next_secagg_round_id"] = "vaultbench-run-x-round-1-attempt-0"
    original = sites[0].state
    sites[0].state = lambda run_id: state
    try:
        import pytest

        with pytest.raises(AssertionError, match="next_keys only travel"):
            _masked_with_next_keys(sites[0], run_id, updates_for(1)[0], 1)
    finally:
        sites[0].state = original
