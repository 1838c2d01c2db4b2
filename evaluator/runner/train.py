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

from .errors import EXIT_INPUT, EXIT_LOAD, EXIT_OUTPUT, EXIT_PREDICT, RunnerError
from .predict import read_features

POLL_SECONDS = 0.05
EXIT_TRAIN = 7  # training raised or produced unusable weights


# --- trainable models -------------------------------------------------------------------------


class TorchScriptTrainer:
    """A TorchScript module whose ``forward`` returns class probabilities (the model contract)."""

    def __init__(self, path: Path) -> None:
        import torch

        self.torch = torch
        self.module = torch.jit.load(str(path), map_location="cpu")
        self.params = {name: p for name, p in self.module.named_parameters() if p.requires_grad}
        if not self.params:
            raise TypeError("the TorchScript module has no trainable parameters")

    def get_weights(self) -> dict[str, np.ndarray]:
        return {n: p.detach().cpu().numpy().astype(np.float32, copy=True) for n, p in self.params.items()}

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        with self.torch.no_grad():
            for name, value in weights.items():
                self.params[name].copy_(self.torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32)))

    def predict(self, features: np.ndarray) -> np.ndarray:
        self.module.eval()
        with self.torch.inference_mode():
            out = self.module(self.torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32)))
        if isinstance(out, (tuple, list)):
            out = out[0]
        return out.detach().cpu().numpy()

    def train(self, features: np.ndarray, labels: np.ndarray, config: dict[str, Any]) -> float:
        torch = self.torch
        rng = np.random.default_rng(int(config.get("seed", 0)))
        torch.manual_seed(int(config.get("seed", 0)) % (2**31))
        params = list(self.params.values())
        anchor = [p.detach().clone() for p in params]
        mu = float(config.get("proximal_mu", 0.0))
        optimizer = torch.optim.SGD(params, lr=float(config["learning_rate"]))
        x_all = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
        y_all = torch.from_numpy(np.ascontiguousarray(labels)).long()
        batch_size = int(config["batch_size"])
        self.module.train()
        losses: list[float] = []
        for _ in range(int(config["local_epochs"])):
            order = torch.from_numpy(rng.permutation(len(x_all)))
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                probs = self.module(x_all[idx])
                if isinstance(probs, (tuple, list)):
                    probs = probs[0]
                loss = torch.nn.functional.nll_loss(torch.log(probs.clamp_min(1e-7)), y_all[idx])
                total = loss
                if mu > 0:
                    total = total + (mu / 2) * sum(((p - a) ** 2).sum() for p, a in zip(params, anchor, strict=True))
                optimizer.zero_grad()
                total.backward()
                optimizer.step()
                losses.append(float(loss.detach()))
        self.module.eval()
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


def serve_training(
    *,
    model_format: str,
    model_path: Path,
    train_features_path: Path,
    train_labels_path: Path,
    val_features_path: Path,
    requests_dir: Path,
    output_dir: Path,
    poll_seconds: float = POLL_SECONDS,
) -> None:
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
    while True:
        request_path = requests_dir / f"request-{seq}.json"
        if (requests_dir / "stop").exists():
            return
        if not request_path.exists():
            time.sleep(poll_seconds)
            continue
        try:
            request = json.loads(request_path.read_text(encoding="utf-8"))
            offset_name = str(request["offset"])
            if "/" in offset_name or offset_name.startswith("."):
                raise ValueError("bad offset name")
        except (OSError, ValueError, KeyError) as exc:
            raise RunnerError(EXIT_INPUT, f"bad round request: {type(exc).__name__}") from exc
        offset = read_offset(requests_dir / offset_name, layout)
        start = {n: w0[n] + offset[n] if n in offset else w0[n] for n in w0}
        try:
            trainer.set_weights(start)
            val_predictions = trainer.predict(val_features)
        except Exception as exc:
            raise RunnerError(EXIT_PREDICT, f"validation predict failed: {type(exc).__name__}: {exc}") from exc
        _write_atomic(output_dir, f"val-{seq}.npy", _npy_bytes(np.asarray(val_predictions)))
        try:
            loss = trainer.train(features, labels, request)
            new = trainer.get_weights()
        except Exception as exc:
            raise RunnerError(EXIT_TRAIN, f"training failed: {type(exc).__name__}: {exc}") from exc
        if _layout(new) != layout:
            raise RunnerError(EXIT_TRAIN, "training changed the parameter layout")
        try:  # the host computes the training loss from these, against the labels it holds
            train_predictions = trainer.predict(features)
        except Exception as exc:
            raise RunnerError(EXIT_PREDICT, f"training-rows predict failed: {type(exc).__name__}") from exc
        _write_atomic(output_dir, f"train-{seq}.npy", _npy_bytes(np.asarray(train_predictions)))
        _write_atomic(output_dir, f"weights-{seq}.safetensors", _safetensors_bytes(new))
        result = {"seq": seq, "train_loss": loss if np.isfinite(loss) else None, "n_examples": int(features.shape[0])}
        _write_atomic(output_dir, f"result-{seq}.json", json.dumps(result).encode())
        seq += 1
