"""The training runner's start (in process, no engine): a pre-started runner imports its runtime,
says ``.ready`` and reads nothing before ``begin``; a cold one (``begin`` already there) starts at
once and never writes ``.ready``. Both then serve rounds the same way."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest
import torch
from safetensors.numpy import save
from torch import nn

from evaluator.runner.train import BEGIN_NAME, READY_NAME, serve_training


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.fc(x), dim=1)


def _wait(path, timeout=120.0):
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.005)


@pytest.fixture
def folders(tmp_path):
    job, out, requests = tmp_path / "job", tmp_path / "out", tmp_path / "job" / "requests"
    requests.mkdir(parents=True)
    out.mkdir()
    return job, requests, out


def _serve(job, requests, out, errors):
    try:
        serve_training(
            model_format="torchscript", model_path=job / "model.pt", train_features_path=job / "x.npy",
            train_labels_path=job / "y.npy", val_features_path=job / "v.npy", requests_dir=requests, output_dir=out,
        )  # fmt: skip
    except BaseException as exc:  # reported by the test
        errors.append(exc)


def _place_inputs(job):
    rng = np.random.default_rng(0)
    np.save(job / "x.npy", rng.normal(size=(20, 3)).astype(np.float32))
    np.save(job / "y.npy", rng.integers(0, 2, size=20))
    np.save(job / "v.npy", rng.normal(size=(5, 3)).astype(np.float32))
    torch.jit.save(torch.jit.script(Tiny()), str(job / "model.pt"))


def _one_round_then_stop(requests, out):
    _wait(out / "layout.json")
    layout = json.loads((out / "layout.json").read_text())["tensors"]
    offset = {name: np.zeros(shape, dtype=np.float32) for name, shape, _ in layout}
    (requests / "offset-0.safetensors").write_bytes(save(offset))
    request = {"seq": 0, "offset": "offset-0.safetensors", "local_epochs": 1, "batch_size": 8, "learning_rate": 0.1}
    (requests / "request-0.json").write_text(json.dumps(request))
    _wait(out / "result-0.json")
    (requests / "stop").write_text("")


def test_a_pre_started_runner_waits_for_begin_before_reading_anything(folders):
    job, requests, out = folders
    errors: list[BaseException] = []
    thread = threading.Thread(target=_serve, args=(job, requests, out, errors), daemon=True)
    thread.start()
    _wait(out / READY_NAME)  # imports done, and no input exists yet: nothing was read
    assert sorted(p.name for p in out.iterdir()) == [READY_NAME]
    _place_inputs(job)
    (requests / BEGIN_NAME).write_text("")
    _one_round_then_stop(requests, out)
    thread.join(60)
    assert not thread.is_alive() and not errors
    assert json.loads((out / "result-0.json").read_text())["n_examples"] == 20


def test_a_cold_runner_starts_at_once_and_writes_no_ready_marker(folders):
    job, requests, out = folders
    _place_inputs(job)
    (requests / BEGIN_NAME).write_text("")
    errors: list[BaseException] = []
    thread = threading.Thread(target=_serve, args=(job, requests, out, errors), daemon=True)
    thread.start()
    _one_round_then_stop(requests, out)
    thread.join(60)
    assert not thread.is_alive() and not errors
    assert not (out / READY_NAME).exists()


def test_plain_sgd_by_hand_equals_torch_optim_sgd():
    """The runner's plain step (p -= lr * grad) gives torch.optim.SGD's weights bit for bit."""
    from evaluator.runner.dpsgd import nll_from_probabilities
    from evaluator.runner.train import TorchScriptTrainer

    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(40, 3)).astype(np.float32), rng.integers(0, 2, size=40)
    torch.manual_seed(0)
    module = torch.jit.script(Tiny())
    import io
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.pt"
        torch.jit.save(module, str(path))
        trainer = TorchScriptTrainer(path)
        reference = torch.jit.load(io.BytesIO(path.read_bytes()))
    trainer.train(x, y, {"local_epochs": 2, "batch_size": 40, "learning_rate": 0.3, "seed": 0})
    params = [p for _, p in sorted(reference.named_parameters())]
    optimizer = torch.optim.SGD(params, lr=0.3)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y).long()
    order_rng = np.random.default_rng(0)  # the runner's shuffle for seed 0: the same summation order
    for _ in range(2):
        idx = torch.from_numpy(order_rng.permutation(40))
        loss = nll_from_probabilities(reference(xt[idx]), yt[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    for name, param in zip(sorted(trainer.names), params, strict=True):
        assert torch.equal(trainer.weights[name], param.detach()), name
