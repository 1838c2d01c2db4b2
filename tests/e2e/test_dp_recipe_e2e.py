"""The product path is the benchmark's path: the default record-level recipe through a live hub,
three real agents and real training sandboxes gives what ``benchmarks/federated_dp_mnist1d.py``
computes in-process (issue 10).

Three sites hold 100 MNIST-1D train rows each (80 fit rows after the seeded holdout); the parent
is the benchmark's ``CNN1D`` (TorchScript, 4,090 parameters). The vendor leaves every training
field empty, so the hub applies its defaults: batch = the smallest site's fit rows (q = 1, one
full-batch DP-SGD step per round), lr min(3, 270 / sigma_sum^2), FedAvg server momentum 0.9,
example weighting, secure aggregation with 20-bit quantization, distributed noise (each site
sigma / sqrt(t), t = 2 of 3).

- ``test_noise_free_parts_match_the_in_process_path``: sigma set to 0.01 by the owner (no cap),
  so the DP-SGD path runs (per-example clipping in the sandbox's microbatches of one, the agent's
  weighting and quantization, the hub's dequantize and FedAvgM) with little noise: the released
  offset after 3 rounds equals the benchmark's noise-free ``run`` (torch.func per-example
  gradients on the ``nn.Module``) up to exactly the noise the sites promise (its mean square
  within +-20 %, nothing along the update).
- ``test_default_noise_and_one_epsilon``: sigma as the hub calibrates it for the cap 8 and the 3
  planned rounds (the product default). The sites' noise is OS-seeded inside the runner and cannot be
  aligned, so each round's aggregate is checked against the benchmark's noise-free aggregate from
  the same global model (the D_r each agent downloaded): the residual is Gaussian noise of exactly
  the variance the recipe promises, lr sigma sqrt(n / t) C / sum(n_k) per coordinate (4,090 of
  them: its mean square within +-20 % of it, about 9 standard errors), and carries no component along the
  update. The epsilon every site ledger holds equals the hub's run and the benchmark's site
  ledger, and the GDP accountant is named on both sides.
"""

from __future__ import annotations

import hashlib
import io
import math
import sys
import threading

import numpy as np
import pytest

from tests.e2e.conftest import REPO, e2e_task, wait_for_run_completed

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

sys.path.insert(0, str(REPO / "benchmarks"))

ROUNDS = 3
SITE_ROWS = 100
N_SITES = 3
# Small against the update (the sum's noise is ~3 % of |D_3|) yet large against the 20-bit rounding
# (~25x its variance), so the difference of the two paths is the promised noise and is checked as such.
SIGMA_TINY = 0.01


def _parent():
    """The benchmark's CNN1D parent (a short fit: its accuracy does not matter here)."""
    import torch
    from federated_dp_mnist1d import build_parent

    model = build_parent(rows=300, steps=5)
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(model), buffer)
    return model, buffer.getvalue()


def _submission(vendor, task, data: bytes):
    from django.core.files.base import ContentFile
    from django.utils import timezone

    from marketplace.submissions.models import Submission, SubmissionStatus

    submission = Submission(
        vendor=vendor.organization, task=task, created_by=vendor.user, name="cnn1d", artifact_format="torchscript",
        original_filename="model.pt", size=len(data), sha256=hashlib.sha256(data).hexdigest(),
        status=SubmissionStatus.SCORED, results_visible_at=timezone.now(),
    )  # fmt: skip
    submission.artifact.save("artifact", ContentFile(data), save=False)
    submission.save()
    return submission


def _sites(task, make_site_dir, agents):
    """Three sites with 100 label-skewed MNIST-1D train rows each (and a few test rows)."""
    from mnist1d.data import get_dataset_args, make_dataset

    from evaluator.client import HubClient
    from evaluator.datasets import load_train_data, register_task_data

    data = make_dataset(get_dataset_args())
    x, y = data["x"].astype(np.float32), data["y"].astype(np.int64)
    spec = {"n_features": 40, "n_classes": 10, "task_type": "multiclass_classification"}
    site_dirs, train = [], []
    for i, labels in enumerate(([0, 1, 2, 3], [4, 5, 6], [7, 8, 9])):
        site_dir = make_site_dir(f"dp-site-{i}")
        rows = np.flatnonzero(np.isin(y, labels))
        incoming = site_dir.root / "incoming"
        incoming.mkdir(exist_ok=True)
        metas = {}
        for split, chosen in (("test", rows[SITE_ROWS : SITE_ROWS + 20]), ("train", rows[:SITE_ROWS])):
            np.save(incoming / f"{split}-x.npy", x[chosen])
            np.save(incoming / f"{split}-y.npy", y[chosen])
            metas[split] = register_task_data(
                data_dir=site_dir.data_dir, task_id=task.id, features_path=incoming / f"{split}-x.npy",
                labels_path=incoming / f"{split}-y.npy", input_spec=spec, split=split,
            )  # fmt: skip
        HubClient.from_config(site_dir.config()).register_shard(
            task_id=task.id, row_count=metas["test"]["row_count"], fingerprint=metas["test"]["fingerprint"],
            split_sizes={**metas["test"]["split_sizes"], **metas["train"]["split_sizes"]},
        )  # fmt: skip
        stored = load_train_data(data_dir=site_dir.data_dir, task_id=task.id)
        train.append((stored.features[stored.fit_rows], stored.labels[stored.fit_rows]))
        site_dirs.append(site_dir)
    for site_dir in site_dirs:
        agents(site_dir).agent.run_poll_seconds = 0.1
    return site_dirs, train


class OffsetRecorder:
    """Every ``D_r`` an agent's participant downloaded (or found inline), by round: the global
    models the hub served, observed at the real agents."""

    def __init__(self, monkeypatch) -> None:
        from evaluator.federated.site import SiteParticipant

        self.seen: dict[int, list[dict[str, np.ndarray]]] = {}
        self._lock = threading.Lock()
        original = SiteParticipant._download_offset

        def download(participant, number, state=None):
            offset = original(participant, number, state)
            with self._lock:
                self.seen.setdefault(int(number), []).append({k: v.copy() for k, v in offset.items()})
            return offset

        monkeypatch.setattr(SiteParticipant, "_download_offset", download)


def _run_to_completion(task, vendor, owner, parent):
    from marketplace.finetuning.models import FineTuningRun
    from marketplace.finetuning.services import run_approve, run_request

    run = run_request(parent=parent, actor=vendor.user, rounds=ROUNDS, round_timeout_seconds=120)
    run_approve(run=run, actor=owner.user)
    wait_for_run_completed(run, timeout=240)
    return FineTuningRun.objects.get(id=run.id)


def _final_offset(run) -> dict[str, np.ndarray]:
    from marketplace.finetuning.offsets import layout_of, offset_from_bytes

    layout = layout_of(run.layout)
    with run.offset.open("rb") as stored:
        flat = offset_from_bytes(stored.read(), layout)
    out, at = {}, 0
    for name, shape, _ in run.layout:
        size = int(np.prod(shape))
        out[name] = flat[at : at + size].reshape(shape)
        at += size
    return out


def _mnist1d_task(owner, title: str, **privacy):
    """An MNIST-1D classification task open to fine-tuning; ``privacy``: the owner's fl_* settings."""
    return e2e_task(
        owner, title=title, task_type="multiclass_classification",
        input_spec={"n_features": 40, "dtype": "float32", "n_classes": 10},
        metrics=[{"name": "accuracy", "decimals": 4}], primary_metric="accuracy", fine_tuning_allowed=True,
        release_delay_seconds=0, **privacy,
    )  # fmt: skip


def _check_defaults(run, *, distributed: bool) -> None:
    """The run carries the recipe (what the benchmark assumes)."""
    assert run.dp_sample_rate == 1.0 and run.dp_steps_per_round == 1 and run.local_epochs == 1
    assert run.strategy == "fedavg" and run.strategy_params.get("server_momentum") == 0.9
    assert run.example_weighting and run.secure_aggregation and run.threshold == 2 and run.quantization_bits == 20
    assert bool(run.dp_distributed) is distributed
    assert "learning_rate" in run.hub_defaults and "batch_size" in run.hub_defaults


def test_noise_free_parts_match_the_in_process_path(owner, vendor, make_site_dir, agents, monkeypatch):
    from federated_dp_mnist1d import run as in_process

    model, artifact = _parent()
    task = _mnist1d_task(owner, "MNIST-1D DP recipe", fl_privacy_unit="record", fl_secure_aggregation=True,
                         fl_noise_multiplier=SIGMA_TINY, fl_epsilon_cap=None)  # fmt: skip
    site_dirs, train = _sites(task, make_site_dir, agents)
    parent = _submission(vendor, task, artifact)
    run = _run_to_completion(task, vendor, owner, parent)
    _check_defaults(run, distributed=True)
    assert run.learning_rate == 3.0  # min(3, 270 / sigma_sum^2) at sigma ~ 0
    released = _final_offset(run)

    names = sorted(released)
    assert names == sorted(n for n, _ in model.named_parameters())
    start = {n: p.detach().numpy().copy() for n, p in model.named_parameters()}
    _, _, _, _, weights = in_process(
        model, train, (train[0][0][:1], train[0][1][:1]), rounds=ROUNDS,
        dp={"clip": float(run.example_clip_norm), "sigma": 0.0}, lr=float(run.learning_rate),
        batch=int(run.batch_size), local_epochs=1, update_clip=float(run.clip_norm), secure=True, fedsgd=True,
        server_momentum=0.9,
    )  # fmt: skip
    expected = np.concatenate([(weights[n] - start[n]).reshape(-1) for n in names]).astype(np.float64)
    got = np.concatenate([released[n].reshape(-1) for n in names]).astype(np.float64)
    # What is left is the sites' noise: per round lr sigma sqrt(n / t) C / sum(n_k) per coordinate,
    # entering D_3 with FedAvgM's weights 2.71, 1.9 and 1 (rounds 1, 2, 3). The 20-bit rounding
    # (a grid of 2 Q / 2^20, about 6e-6) is 1/25 of it.
    rows = sum(len(y) for _, y in train)
    noise_std = float(run.learning_rate) * SIGMA_TINY * math.sqrt(N_SITES / 2) / rows
    promised = noise_std**2 * (2.71**2 + 1.9**2 + 1)
    difference = got - expected
    ratio = float(np.mean(difference**2) / promised)
    along = float(difference @ expected / np.linalg.norm(expected)) / math.sqrt(promised)
    print(f"noise-free recipe, {ROUNDS} rounds through the sandboxes: |D| {np.linalg.norm(got):.4f} vs in-process "
          f"{np.linalg.norm(expected):.4f}; largest coordinate difference {np.max(np.abs(difference)):.2e}; "
          f"mean square difference / the noise's {ratio:.3f}; along the update {along:+.2f} std")  # fmt: skip
    assert np.linalg.norm(expected) > 0.3  # the comparison is not between two tiny vectors
    assert 0.8 < ratio < 1.25, ratio  # e.g. lr 3 % off would add (0.03 |D|)^2: ratio > 1.5
    assert abs(along) < 5, along
    assert np.max(np.abs(difference)) < 6 * math.sqrt(promised) + 1e-5
    for site_dir in site_dirs:
        assert len([e for e in site_dir.ledger_entries() if e.kind == "update"]) == ROUNDS


def test_default_noise_and_one_epsilon(owner, vendor, make_site_dir, agents, monkeypatch):
    import torch
    from federated_dp_mnist1d import run as in_process
    from federated_dp_mnist1d import site_runner_dp

    model, artifact = _parent()
    task = _mnist1d_task(owner, "MNIST-1D DP recipe, defaults")  # the task's fine-tuning defaults
    assert task.fl_privacy_unit == "record" and task.fl_noise_multiplier is None and task.fl_epsilon_cap == 8.0
    recorder = OffsetRecorder(monkeypatch)
    site_dirs, train = _sites(task, make_site_dir, agents)
    parent = _submission(vendor, task, artifact)
    run = _run_to_completion(task, vendor, owner, parent)
    _check_defaults(run, distributed=True)
    assert "noise_multiplier" in run.hub_defaults
    sigma, lr = float(run.noise_multiplier), float(run.learning_rate)

    # One epsilon: every site ledger, the hub's run and the benchmark's site ledger.
    spec, _ = site_runner_dp({"clip": 1.0, "sigma": sigma}, q=1.0, local_epochs=1, lr=lr, secure=True, distributed=True,
                             n_sites=N_SITES, threshold=2, rounds=ROUNDS, delta=float(run.dp_delta))  # fmt: skip
    bench_ledger = spec.new_privacy_ledger(0)
    for _ in range(ROUNDS):
        bench_ledger.record_round()
    assert bench_ledger.accountant == "gdp" and run.privacy_ledger["accountant"] == "gdp"
    assert bench_ledger.epsilon <= 8.0  # calibrated to the cap (or less, at the per-round floor)
    assert run.epsilon_spent == pytest.approx(bench_ledger.epsilon, rel=1e-9)
    api = vendor.client.get(f"/api/v1/finetuning-runs/{run.id}").json()["privacy"]
    assert api["epsilon_spent"] == pytest.approx(bench_ledger.epsilon, abs=1e-4)  # the API rounds to 4 places
    assert "exact Gaussian DP" in api["accountant"]
    for site_dir in site_dirs:  # each release priced before it left: the site's epsilon after that round
        updates = [e for e in site_dir.ledger_entries() if e.kind == "update"]
        assert len(updates) == ROUNDS
        assert updates[-1].epsilon == pytest.approx(bench_ledger.epsilon, rel=1e-9)
        assert all(a.epsilon < b.epsilon for a, b in zip(updates, updates[1:], strict=False))

    # Per round: the hub's aggregate minus the benchmark's noise-free aggregate from the same model.
    names = sorted(n for n, _ in model.named_parameters())
    start = {n: p.detach().numpy().astype(np.float64) for n, p in model.named_parameters()}
    served = {r: recorder.seen[r][0] for r in range(ROUNDS)}
    for r in range(ROUNDS):  # every agent was served the same D_r
        for other in recorder.seen[r][1:]:
            assert all(np.array_equal(other[n], served[r][n]) for n in names)
    offsets = [np.concatenate([served[r][n].reshape(-1) for n in names]).astype(np.float64) for r in range(ROUNDS)]
    offsets.append(np.concatenate([_final_offset(run)[n].reshape(-1) for n in names]).astype(np.float64))
    rows = sum(len(y) for _, y in train)
    sigma_sum = sigma * math.sqrt(N_SITES / 2)  # each site sigma / sqrt(t), t = 2
    noise_std = lr * sigma_sum * float(run.example_clip_norm) / rows
    previous_step = np.zeros_like(offsets[0])
    for r in range(ROUNDS):
        step = offsets[r + 1] - offsets[r]
        aggregate = step - 0.9 * previous_step  # FedAvgM: m_r = 0.9 m_{r-1} + mean update
        previous_step = step
        with_offset = {n: (start[n] + served[r][n]) for n in names}
        owned = dict(model.named_parameters())
        with torch.no_grad():
            for name, value in with_offset.items():
                owned[name].copy_(torch.from_numpy(value.astype(np.float32)))
        _, _, _, _, weights = in_process(
            model, train, (train[0][0][:1], train[0][1][:1]), rounds=1, dp={"clip": 1.0, "sigma": 0.0}, lr=lr,
            batch=int(run.batch_size), local_epochs=1, update_clip=float(run.clip_norm), secure=False, fedsgd=True,
            server_momentum=0.9,
        )  # fmt: skip
        clean = np.concatenate([(weights[n].astype(np.float64) - with_offset[n]).reshape(-1) for n in names])
        residual = aggregate - clean
        ratio = float(np.mean(residual**2) / noise_std**2)
        along = float(residual @ clean / np.linalg.norm(clean))
        print(f"round {r}: |clean| {np.linalg.norm(clean):.3f}, residual mean square / promised {ratio:.3f}, "
              f"along the update {along / noise_std:+.2f} std")  # fmt: skip
        assert 0.8 < ratio < 1.25, (r, ratio)
        assert abs(along) < 5 * noise_std, (r, along / noise_std)
