"""Federated fine-tuning inside the sandbox: one long-lived process per (run, site).

``python -m runner train --format F --model M --train-features X --train-labels Y
--val-features V --requests /requests --output /out``

1. Loads the parent model, writes ``w0.safetensors`` (its trainable parameters, float32) and then
   ``layout.json`` (``{"tensors": [[name, shape, dtype], ...]}``, sorted by name): the host
   waits for ``layout.json``, so it is written last, by rename.
2. Serves round requests from the read-only ``/requests`` folder, in order ``seq = 0, 1, ...``:
   ``request-<seq>.json`` (``offset``, ``local_epochs``, ``batch_size``, ``learning_rate``,
   ``proximal_mu``, ``seed``) and the offset ``D`` it names (safetensors). Each request: set the
   weights to ``w0 + D``; predict the validation features with them (``val-<seq>.npy``); train
   ``local_epochs`` from them (cross-entropy; FedProx term ``mu/2 ||w - (w0 + D)||^2`` when
   ``mu > 0``); predict the training rows with the new weights (``train-<seq>.npy``, the host
   computes the training loss from them); write ``weights-<seq>.safetensors`` and, last, ``result-<seq>.json``
   (``train_loss``, ``n_examples``). ``stop`` in the requests folder ends the process.
0. Nothing is read before ``begin`` is in the requests folder. The host writes it before it
   starts a cold sandbox; a pre-started (warm) one finds none: it imports the format's runtime,
   writes ``/out/.ready`` and waits for ``begin``, which the host writes after it placed the
   run's inputs in the job folder (``evaluator/training_pool.py``). No vendor code runs before.
3. A request with ``dp`` (``example_clip_norm``, ``noise_multiplier``, ``sample_rate``,
   ``steps``) trains with record-level DP-SGD instead (``dpsgd``: Poisson sampling, per-example
   clipping, Gaussian noise; TorchScript only). A model that changes its own state during an
   example or a predict, or uses file ops, ends the process with ``EXIT_POLICY`` (8), which the
   site reports as ``policy_violation``.

The host computes every metric; nothing here is trusted (vendor code runs in this process).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .dpsgd import PolicyViolation, check_script_ops
from .errors import EXIT_INPUT, EXIT_LOAD, EXIT_OUTPUT, EXIT_PREDICT, RunnerError
from .loaders import warm_imports
from .predict import read_features

# Waiting for the next request: a ``stat`` every 1 ms growing to 5 ms (a round's request is
# answered within milliseconds), and to 50 ms once no request came for IDLE_AFTER_SECONDS.
POLL_SECONDS = (0.001, 0.005)
IDLE_POLL_SECONDS = 0.05
IDLE_AFTER_SECONDS = 10.0
BEGIN_NAME = "begin"  # in the requests folder: the inputs are in place
READY_NAME = ".ready"  # in the output folder: a pre-started runner has its runtime imported
# A pre-started runner whose agent died must not wait forever (the agent retires it long before).
BEGIN_TIMEOUT_SECONDS = 1800
EXIT_IDLE = 9  # as runner.pooled: no run came
EXIT_TRAIN = 7  # training raised or produced unusable weights
EXIT_POLICY = 8  # the model tried to keep state across examples or reach outside its inputs (dpsgd)


# --- trainable models -------------------------------------------------------------------------


class TorchScriptTrainer:
    """A TorchScript module whose ``forward`` returns class probabilities (the model contract).

    The runner holds the parameters (``self.weights``) and writes them into the module before
    each use. The module is reloaded from its pristine bytes before every round and its digest
    is checked around every predict, so nothing it stores (e.g. rows seen while predicting the
    training rows) survives into training. A round with ``dp`` trains with record-level DP-SGD
    (``dpsgd``); without it, plain minibatch SGD.
    """

    def __init__(self, path: Path) -> None:
        import torch

        self.torch = torch
        self.pristine = path.read_bytes()
        self.module = self._load()
        self.names = sorted(n for n, p in self.module.named_parameters() if p.requires_grad)
        if not self.names:
            raise TypeError("the TorchScript module has no trainable parameters")
        owned = dict(self.module.named_parameters())
        self.weights = {n: owned[n].detach().clone() for n in self.names}

    def _load(self) -> Any:
        import io

        return self.torch.jit.load(io.BytesIO(self.pristine), map_location="cpu")

    def _fresh(self) -> Any:
        """The module as uploaded, with the runner's parameters written in."""
        self.module = self._load()
        owned = dict(self.module.named_parameters())
        with self.torch.no_grad():
            for name in self.names:
                owned[name].copy_(self.weights[name])
        return self.module

    def get_weights(self) -> dict[str, np.ndarray]:
        return {n: self.weights[n].detach().cpu().numpy().astype(np.float32, copy=True) for n in self.names}

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        for name, value in weights.items():
            self.weights[name] = self.torch.from_numpy(np.array(value, dtype=np.float32))

    def predict(self, features: np.ndarray) -> np.ndarray:
        from .dpsgd import PolicyViolation, module_digest

        module = self._fresh()
        module.eval()
        before = module_digest(module)
        with self.torch.inference_mode():
            out = module(self.torch.from_numpy(np.array(features, dtype=np.float32)))
        if module_digest(module) != before:
            raise PolicyViolation("the model changed its own state while predicting")
        if isinstance(out, (tuple, list)):
            out = out[0]
        return out.detach().cpu().numpy()

    def train(self, features: np.ndarray, labels: np.ndarray, config: dict[str, Any]) -> float:
        if config.get("dp") is not None:
            return self._train_dp(features, labels, config)
        return self._train_plain(features, labels, config)

    def _train_dp(self, features: np.ndarray, labels: np.ndarray, config: dict[str, Any]) -> float:
        from .dpsgd import DPConfig, ScriptGrads, dp_sgd

        dp = DPConfig.parse(config["dp"])
        module = self._fresh()
        module.train()
        grads = ScriptGrads(module, self.names)
        self.weights = dp_sgd(
            grads, self.weights, self.names, features, labels, config=dp,
            learning_rate=float(config["learning_rate"]), batch_size=dp.sample_rate * len(features),
            proximal_mu=float(config.get("proximal_mu") or 0.0),
        )  # fmt: skip
        return float("nan")  # no loss claim: the host computes it (and, under DP, does not release it)

    def _train_plain(self, features: np.ndarray, labels: np.ndarray, config: dict[str, Any]) -> float:
        from .dpsgd import nll_from_logits, nll_from_probabilities

        torch = self.torch
        rng = np.random.default_rng(int(config.get("seed", 0)))
        module = self._fresh()
        owned = dict(module.named_parameters())
        params = [owned[n] for n in self.names]
        anchor = [p.detach().clone() for p in params]
        mu = float(config.get("proximal_mu", 0.0))
        # Plain SGD by hand: p -= lr * grad is torch.optim.SGD's step without momentum or weight
        # decay, and constructing an optimizer imports torch._dynamo (1-2 s in a fresh sandbox).
        learning_rate = float(config["learning_rate"])
        x_all = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
        y_all = torch.from_numpy(np.ascontiguousarray(labels)).long()
        batch_size = int(config["batch_size"])
        uses_logits = bool(module._c._has_method("logits"))
        module.train()
        losses: list[float] = []
        for _ in range(int(config["local_epochs"])):
            order = torch.from_numpy(rng.permutation(len(x_all)))
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                if uses_logits:
                    loss = nll_from_logits(module.logits(x_all[idx]), y_all[idx])
                else:
                    loss = nll_from_probabilities(module(x_all[idx]), y_all[idx])
                total = loss
                if mu > 0:
                    total = total + (mu / 2) * sum(((p - a) ** 2).sum() for p, a in zip(params, anchor, strict=True))
                for p in params:
                    p.grad = None
                total.backward()
                with torch.no_grad():
                    for p in params:
                        if p.grad is not None:
                            p.add_(p.grad, alpha=-learning_rate)
                losses.append(float(loss.detach()))
        module.eval()
        self.weights = {n: p.detach().clone() for n, p in zip(self.names, params, strict=True)}
        return float(np.mean(losses)) if losses else float("nan")


class PackageTrainer:
    """A python_package with ``train_round``, ``get_weights`` and ``set_weights`` in ``model.py``."""

    def __init__(self, model_dir: Path) -> None:
        from .loaders import import_model_module

        self.module = import_model_module(model_dir)
        for fn in ("load", "predict", "train_round", "get_weights", "set_weights"):
            if not callable(getattr(self.module, fn, None)):
                raise TypeError(f"model.py must define {fn}() to be fine-tuned")
        self.model = self.module.load(str(model_dir))

    def get_weights(self) -> dict[str, np.ndarray]:
        return {str(k): np.asarray(v, dtype=np.float32).copy() for k, v in self.module.get_weights(self.model).items()}

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        result = self.module.set_weights(self.model, {k: v.copy() for k, v in weights.items()})
        if result is not None:
            self.model = result

    def predict(self, features: np.ndarray) -> np.ndarray:
        return np.asarray(self.module.predict(self.model, features))

    def train(self, features: np.ndarray, labels: np.ndarray, config: dict[str, Any]) -> float:
        result = self.module.train_round(self.model, features, labels, dict(config))
        loss = float("nan")
        if isinstance(result, tuple):
            result, loss = result[0], float(result[1])
        if result is not None:
            self.model = result
        return loss


TRAINERS: dict[str, Callable[[Path], Any]] = {
    "torchscript": TorchScriptTrainer,
    "python_package": PackageTrainer,
}


# --- files ------------------------------------------------------------------------------------


def _write_atomic(folder: Path, name: str, data: bytes) -> None:
    """Write ``folder/.name.tmp`` then rename: the host never sees a half-written file."""
    tmp = folder / f".{name}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.rename(tmp, folder / name)
    except OSError as exc:
        raise RunnerError(EXIT_OUTPUT, f"cannot write {name}: {exc.strerror}") from exc


def _safetensors_bytes(weights: dict[str, np.ndarray]) -> bytes:
    from safetensors.numpy import save

    return save({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in weights.items()})


def _npy_bytes(array: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array, dtype=np.float32), allow_pickle=False)
    return buf.getvalue()


def read_offset(path: Path, layout: dict[str, tuple[tuple[int, ...], str]]) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    try:
        offset = load_file(str(path))
    except Exception as exc:
        raise RunnerError(EXIT_INPUT, f"cannot read the weights offset: {type(exc).__name__}") from exc
    if set(offset) - set(layout):
        raise RunnerError(EXIT_INPUT, "the weights offset names tensors the model does not have")
    for name, value in offset.items():
        if tuple(value.shape) != layout[name][0]:
            raise RunnerError(EXIT_INPUT, f"the offset of {name!r} has the wrong shape")
        if not np.all(np.isfinite(value)):
            raise RunnerError(EXIT_INPUT, "the weights offset has non-finite values")
    return offset


def _layout(weights: dict[str, np.ndarray]) -> dict[str, tuple[tuple[int, ...], str]]:
    return {n: (tuple(int(d) for d in w.shape), w.dtype.str) for n, w in weights.items()}


def _read_labels(path: Path, n_rows: int) -> np.ndarray:
    try:
        labels = np.load(str(path), allow_pickle=False)
    except Exception as exc:
        raise RunnerError(EXIT_INPUT, f"cannot read labels: {type(exc).__name__}") from exc
    if labels.ndim != 1 or labels.shape[0] != n_rows:
        raise RunnerError(EXIT_INPUT, "labels must be one value per training row")
    return labels


def load_trainer(model_format: str, model_path: Path) -> Any:
    factory = TRAINERS.get(model_format)
    if factory is None:
        raise RunnerError(EXIT_LOAD, f"format {model_format!r} cannot be fine-tuned")
    try:
        return factory(model_path)
    except Exception as exc:
        raise RunnerError(EXIT_LOAD, f"cannot load model for training: {type(exc).__name__}: {exc}") from exc


# --- the serve loop ---------------------------------------------------------------------------


def wait_for_begin(model_format: str, requests_dir: Path, output_dir: Path) -> None:
    """A pre-started sandbox: import the runtime now, say so, then wait for the run's inputs."""
    warm_imports(model_format)
    os.close(os.open(output_dir / READY_NAME, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    pause, longest = 0.001, 0.01
    give_up = time.monotonic() + BEGIN_TIMEOUT_SECONDS
    while not (requests_dir / BEGIN_NAME).exists():
        if time.monotonic() > give_up:
            raise RunnerError(EXIT_IDLE, "no run came; a pre-started training runner does not wait forever")
        time.sleep(pause)
        pause = min(longest, pause * 1.5)


def serve_training(
    *,
    model_format: str,
    model_path: Path,
    train_features_path: Path,
    train_labels_path: Path,
    val_features_path: Path,
    requests_dir: Path,
    output_dir: Path,
    poll_seconds: tuple[float, float] = POLL_SECONDS,
) -> None:
    if not (requests_dir / BEGIN_NAME).exists():
        wait_for_begin(model_format, requests_dir, output_dir)
    features = np.asarray(read_features(train_features_path), dtype=np.float32)
    labels = _read_labels(train_labels_path, features.shape[0])
    val_features = np.asarray(read_features(val_features_path), dtype=np.float32)
    trainer = load_trainer(model_format, model_path)
    w0 = trainer.get_weights()
    layout = _layout(w0)
    _write_atomic(output_dir, "w0.safetensors", _safetensors_bytes(w0))
    layout_json = {"tensors": [[n, list(layout[n][0]), layout[n][1]] for n in sorted(layout)]}
    _write_atomic(output_dir, "layout.json", json.dumps(layout_json).encode())

    seq = 0
    first, longest = poll_seconds
    pause, waiting_since = first, time.monotonic()
    while True:
        request_path = requests_dir / f"request-{seq}.json"
        if (requests_dir / "stop").exists():
            return
        if not request_path.exists():
            time.sleep(pause)
            idle = time.monotonic() - waiting_since > IDLE_AFTER_SECONDS
            pause = IDLE_POLL_SECONDS if idle else min(longest, pause * 1.5)
            continue
        pause = first
        try:
            request = json.loads(request_path.read_text(encoding="utf-8"))
            offset_name = str(request["offset"])
            if "/" in offset_name or offset_name.startswith("."):
                raise ValueError("bad offset name")
        except (OSError, ValueError, KeyError) as exc:
            raise RunnerError(EXIT_INPUT, f"bad round request: {type(exc).__name__}") from exc
        offset = read_offset(requests_dir / offset_name, layout)
        start = {n: w0[n] + offset[n] if n in offset else w0[n] for n in w0}
        if request.get("dp") is not None:
            if not isinstance(trainer, TorchScriptTrainer):
                raise RunnerError(EXIT_POLICY, "record-level DP-SGD needs a TorchScript model")
            try:  # before any of the model's code runs (the validation predict comes first)
                check_script_ops(trainer.module)
            except PolicyViolation as exc:
                raise RunnerError(EXIT_POLICY, f"policy violation: {exc}") from exc
        try:
            trainer.set_weights(start)
            val_predictions = trainer.predict(val_features)
        except PolicyViolation as exc:
            raise RunnerError(EXIT_POLICY, f"policy violation: {exc}") from exc
        except Exception as exc:
            raise RunnerError(EXIT_PREDICT, f"validation predict failed: {type(exc).__name__}: {exc}") from exc
        _write_atomic(output_dir, f"val-{seq}.npy", _npy_bytes(np.asarray(val_predictions)))
        try:
            loss = trainer.train(features, labels, request)
            new = trainer.get_weights()
        except PolicyViolation as exc:
            raise RunnerError(EXIT_POLICY, f"policy violation: {exc}") from exc
        except Exception as exc:
            raise RunnerError(EXIT_TRAIN, f"training failed: {type(exc).__name__}: {exc}") from exc
        if _layout(new) != layout:
            raise RunnerError(EXIT_TRAIN, "training changed the parameter layout")
        try:  # the host computes the training loss from these, against the labels it holds
            train_predictions = trainer.predict(features)
        except PolicyViolation as exc:
            raise RunnerError(EXIT_POLICY, f"policy violation: {exc}") from exc
        except Exception as exc:
            raise RunnerError(EXIT_PREDICT, f"training-rows predict failed: {type(exc).__name__}") from exc
        _write_atomic(output_dir, f"train-{seq}.npy", _npy_bytes(np.asarray(train_predictions)))
        _write_atomic(output_dir, f"weights-{seq}.safetensors", _safetensors_bytes(new))
        result = {"seq": seq, "train_loss": loss if np.isfinite(loss) else None, "n_examples": int(features.shape[0])}
        _write_atomic(output_dir, f"result-{seq}.json", json.dumps(result).encode())
        seq += 1
        waiting_since = time.monotonic()
