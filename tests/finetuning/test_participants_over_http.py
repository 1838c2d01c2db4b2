"""Three real site participants (evaluator.federated.site) against a live hub over HTTP, with
secure aggregation: round 0 goes through keys, shares, masked and unmask; every later round
opens at ``masked`` (its keys and shares came with the previous round's posts) and costs each
site two posts. The sandboxes are the participant tests' fake softmax regression."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from evaluator.client import HubClient
from evaluator.datasets import load_train_data, register_task_data
from evaluator.federated.site import ReleaseContext, SiteParticipant, parse_run
from evaluator.ledger import Ledger
from marketplace.finetuning.models import FineTuningRun, RoundRecord
from tests.federated.test_site_participant import FakeSession
from tests.finetuning.conftest import make_parent, request_run, sites_for

ROUNDS = 4


class RecordingClient(HubClient):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.posts: list[tuple[int, str]] = []

    def post_round(self, run_id, round_number, step, body, **kwargs):
        self.posts.append((int(round_number), step))
        return super().post_round(run_id, round_number, step, body, **kwargs)


def _site_data(tmp_path, site: int):
    rng = np.random.default_rng(site)
    x = rng.normal(size=(60 + 20 * site, 4)).astype(np.float32)
    y = np.argmax(x[:, :3], axis=1)
    np.save(tmp_path / f"x{site}.npy", x)
    np.save(tmp_path / f"y{site}.npy", y)
    data_dir = tmp_path / f"site{site}"
    register_task_data(
        data_dir=data_dir, task_id="7", features_path=tmp_path / f"x{site}.npy", labels_path=tmp_path / f"y{site}.npy",
        input_spec={"n_features": 4, "n_classes": 3}, task_type="multiclass_classification", split="train",
    )  # fmt: skip
    return data_dir, load_train_data(data_dir=data_dir, task_id="7")


@pytest.mark.django_db(transaction=True)
def test_rounds_after_the_first_are_two_posts_per_site(owner, vendor, fl_task, live_server, tmp_path):
    fl_task.fl_privacy_unit, fl_task.fl_epsilon_cap, fl_task.fl_secure_aggregation = "none", None, True
    fl_task.fl_noise_multiplier, fl_task.fl_clip_norm = 0.0, 10.0
    fl_task.save()
    parent = make_parent(vendor, fl_task)
    sites = sites_for(owner, fl_task, 3)
    response = request_run(vendor, parent, rounds=ROUNDS, learning_rate=0.5, batch_size=64)
    assert response.status_code == 201, response.content
    run_id = response.json()["id"]
    assert owner.client.post(f"/api/v1/finetuning-runs/{run_id}/approve").status_code == 200

    participants, clients = [], []
    for i, site in enumerate(sites, start=1):
        job = site.claim()
        data_dir, data = _site_data(tmp_path, i)
        client = RecordingClient(live_server.url, site.handle.token, agent_id=site.agent_id, max_attempts=2)
        clients.append(client)
        participants.append(SiteParticipant(
            client=client, spec=parse_run(job["run"]), session=FakeSession(data), data=data,
            ledger=Ledger(data_dir / "ledger.jsonl"), context=ReleaseContext(job["id"], parent.id, "7", 3),
            poll_seconds=0.05, long_poll_seconds=2.0,
        ))  # fmt: skip
    results: list[str] = []
    threads = [threading.Thread(target=lambda p=p: results.append(p.run())) for p in participants]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert results == ["completed"] * 3

    run = FineTuningRun.objects.get(id=run_id)
    assert run.rounds_completed == ROUNDS
    assert RoundRecord.objects.filter(run=run, status="aggregated").count() == ROUNDS
    expected = [(0, "keys"), (0, "shares"), (0, "masked"), (0, "unmask")]
    for r in range(1, ROUNDS):
        expected += [(r, "masked"), (r, "unmask")]
    for client in clients:
        assert client.posts == expected
    moved = np.frombuffer(run.offset.open("rb").read()[-48:], dtype="<f4")
    assert np.any(moved != 0)  # the model moved: the rounds aggregated real updates
