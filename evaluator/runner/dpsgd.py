"""Record-level DP-SGD: the one training loop the runner uses when a round asks for it.

A round request with ``dp = {"example_clip_norm": C, "noise_multiplier": sigma,
"sample_rate": q, "steps": T}`` trains ``T`` steps; each step

1. samples a batch by **Poisson sampling**: every training row independently with probability
   ``q`` (the sampling the accountant assumes: RDP of the sampled Gaussian mechanism,
   Mironov et al. 2019, as in Opacus' ``RDPAccountant``);
2. computes one gradient **per example** with the current parameters, which the runner holds
   and writes into the model itself (the model never owns them);
3. clips each to L2 norm ``C`` and sums them;
4. adds Gaussian noise of std ``sigma * C`` to the sum and divides by the *expected* batch size
   ``q * n`` (not the batch's own size: the noisy sum is the mechanism, the division is
   post-processing with the site's row count ``n`` treated as public -- Opacus' convention; the
   site releases ``n_examples`` with every update anyway);
5. steps ``w <- w - lr * (noisy_mean + mu (w - w_start))`` (the FedProx term is data-independent).

So one step is the subsampled Gaussian mechanism with sensitivity ``C`` for adding or removing
one row, and the released weights are a post-processing of the T noisy sums.

Randomness (batches and noise) comes from a generator seeded with 256 bits from the OS inside
the runner; never from torch's global generator, which model code can reseed.

Per-example gradients:

- ``VmapGrads``: an ``nn.Module`` (in-process benchmarks and tests): ``torch.func``
  ``functional_call`` + ``vmap(grad(...))`` with the runner's parameters passed functionally.
- ``ScriptGrads``: a TorchScript module, which ``torch.func`` cannot wrap: microbatches of one.
  Before each step the runner writes its parameters into the module and takes a digest of the
  whole module (parameters, buffers and every attribute, via its serialization); after every
  example the digest must be unchanged, and the module's code may not use file access ops.
  Otherwise ``PolicyViolation``: the model tried to keep state across examples.

Loss: the model contract's ``forward`` returns probabilities. When the module has a ``logits``
method the loss is ``log_softmax(logits)`` (exact, non-zero gradient at saturation); otherwise
``-log(max(p_y, tiny))`` with ``tiny`` the smallest normal float32, whose gradient stays non-zero
until the probability underflows (a logit gap of about 87, against about 16 for the old
``clamp(p, 1e-7)``).
"""

from __future__ import annotations

import hashlib
import math
import secrets
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

MAX_STEPS = 1_000_000
#: op namespaces a trainable TorchScript module may use, and ops it may not even then
ALLOWED_NAMESPACES = frozenset({"aten", "prim"})
FORBIDDEN_OPS = frozenset({"aten::from_file", "aten::save"})


class PolicyViolation(Exception):
    """The model tried something that would void per-example clipping."""


@dataclass(frozen=True)
class DPConfig:
    example_clip_norm: float
    noise_multiplier: float
    sample_rate: float
    steps: int

    @classmethod
    def parse(cls, raw: Any) -> DPConfig:
        if not isinstance(raw, Mapping):
            raise ValueError("dp must be an object")
        try:
            config = cls(
                example_clip_norm=float(raw["example_clip_norm"]),
                noise_multiplier=float(raw["noise_multiplier"]),
                sample_rate=float(raw["sample_rate"]),
                steps=int(raw["steps"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"dp is malformed: {exc}") from None
        if not (math.isfinite(config.example_clip_norm) and config.example_clip_norm > 0):
            raise ValueError("dp.example_clip_norm must be > 0")
        if not (math.isfinite(config.noise_multiplier) and config.noise_multiplier >= 0):
            raise ValueError("dp.noise_multiplier must be >= 0")
        if not 0 < config.sample_rate <= 1:
            raise ValueError("dp.sample_rate must be in (0, 1]")
        if not 1 <= config.steps <= MAX_STEPS:
            raise ValueError("dp.steps out of range")
        return config


def secure_generator() -> np.random.Generator:
    return np.random.default_rng(secrets.randbits(256))


def poisson_batches(n: int, sample_rate: float, steps: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """``steps`` batches; each row is in each batch independently with probability ``sample_rate``."""
    for _ in range(steps):
        yield np.flatnonzero(rng.random(n) < sample_rate)


def clip_rows(per_example: Any, clip_norm: float) -> Any:
    """Each row (one example's flat gradient) scaled to L2 norm at most ``clip_norm``."""
    import torch

    norms = torch.linalg.vector_norm(per_example, dim=1)
    factor = torch.clamp(clip_norm / (norms + 1e-12), max=1.0)
    return per_example * factor[:, None]


def noisy_mean(per_example: Any, config: DPConfig, denominator: float, rng: np.random.Generator, size: int) -> Any:
    """(sum of clipped per-example gradients + N(0, (sigma C)^2 I)) / denominator."""
    import torch

    total = torch.zeros(size, dtype=torch.float64)
    if per_example is not None and per_example.shape[0]:
        total += clip_rows(per_example.to(torch.float64), config.example_clip_norm).sum(0)
    if config.noise_multiplier > 0:
        noise = rng.normal(0.0, config.noise_multiplier * config.example_clip_norm, size=size)
        total += torch.from_numpy(noise)
    return total / denominator


# --- loss -----------------------------------------------------------------------------------

_TINY = float(np.finfo(np.float32).tiny)


def nll_from_probabilities(probs: Any, target: Any) -> Any:
    import torch

    if isinstance(probs, (tuple, list)):
        probs = probs[0]
    return torch.nn.functional.nll_loss(torch.log(probs.clamp_min(_TINY)), target)


def nll_from_logits(logits: Any, target: Any) -> Any:
    import torch

    return torch.nn.functional.nll_loss(torch.log_softmax(logits, dim=-1), target)


# --- per-example gradients ------------------------------------------------------------------


class VmapGrads:
    """Per-example gradients of an ``nn.Module`` with ``torch.func`` (parameters passed in)."""

    def __init__(self, module: Any, names: list[str]) -> None:
        import torch
        from torch.func import functional_call, grad, vmap

        self.names = names
        uses_logits = callable(getattr(module, "logits", None))

        class _Logits(torch.nn.Module):
            def __init__(self, inner: Any) -> None:
                super().__init__()
                self.m = inner

            def forward(self, x: Any) -> Any:
                return self.m.logits(x)

        target = _Logits(module) if uses_logits else module
        prefix = "m." if uses_logits else ""
        loss_of = nll_from_logits if uses_logits else nll_from_probabilities

        def one(params: dict, x: Any, y: Any) -> Any:
            out = functional_call(target, {prefix + k: v for k, v in params.items()}, (x.unsqueeze(0),))
            return loss_of(out, y.unsqueeze(0))

        self._per_example = vmap(grad(one), in_dims=(None, 0, 0))

    def __call__(self, params: Mapping[str, Any], x: Any, y: Any) -> Any:
        import torch

        grads = self._per_example(dict(params), x, y)
        return torch.cat([grads[n].reshape(x.shape[0], -1) for n in self.names], dim=1)


def module_digest(module: Any) -> str:
    """SHA-256 of a TorchScript module's serialization: code, parameters, buffers, attributes."""
    return hashlib.sha256(module._c.save_to_buffer()).hexdigest()


def check_script_ops(module: Any, methods: tuple[str, ...] = ("forward", "logits")) -> None:
    """Refuse TorchScript code that can reach outside its inputs (e.g. read the data files)."""
    for name in methods:
        if not module._c._has_method(name):
            continue
        stack = [getattr(module, name).inlined_graph]
        while stack:
            block = stack.pop()
            for node in block.nodes():
                kind = node.kind()
                if kind in FORBIDDEN_OPS or kind.split("::")[0] not in ALLOWED_NAMESPACES:
                    raise PolicyViolation(f"the model's {name}() uses {kind}, which training does not allow")
                stack.extend(node.blocks())


class ScriptGrads:
    """Per-example gradients of a TorchScript module: microbatches of one, state checked.

    ``set_params`` writes the runner's parameters into the module and records the module's
    digest; every example must leave that digest unchanged.
    """

    def __init__(self, module: Any, names: list[str]) -> None:
        check_script_ops(module)
        self.module = module
        self.names = names
        self.uses_logits = bool(module._c._has_method("logits"))
        owned = dict(module.named_parameters())
        self._params = [owned[n] for n in names]
        self._digest: str | None = None

    def set_params(self, params: Mapping[str, Any]) -> None:
        import torch

        with torch.no_grad():
            for name, p in zip(self.names, self._params, strict=True):
                p.copy_(params[name])
        self._digest = module_digest(self.module)

    def _check(self, what: str) -> None:
        if module_digest(self.module) != self._digest:
            raise PolicyViolation(
                f"the model changed its own parameters, buffers or attributes during {what}; "
                "training needs a model without state across examples"
            )

    def __call__(self, params: Mapping[str, Any], x: Any, y: Any) -> Any:
        import torch

        self.set_params(params)
        rows = []
        for i in range(x.shape[0]):
            xi, yi = x[i : i + 1].clone(), y[i : i + 1].clone()
            if self.uses_logits:
                loss = nll_from_logits(self.module.logits(xi), yi)
            else:
                loss = nll_from_probabilities(self.module(xi), yi)
            grads = torch.autograd.grad(loss, self._params, allow_unused=True)
            self._check("an example's forward and backward pass")
            rows.append(
                torch.cat(
                    [
                        (g if g is not None else torch.zeros_like(p)).detach().reshape(-1)
                        for g, p in zip(grads, self._params, strict=True)
                    ]
                )
            )
        if not rows:
            return None
        return torch.stack(rows)


# --- the loop -------------------------------------------------------------------------------


def dp_sgd(
    per_example_grads: Callable[[Mapping[str, Any], Any, Any], Any],
    params: dict[str, Any],
    names: list[str],
    features: np.ndarray,
    labels: np.ndarray,
    *,
    config: DPConfig,
    learning_rate: float,
    batch_size: float,
    proximal_mu: float = 0.0,
    rng: np.random.Generator | None = None,
) -> dict[str, Any]:
    """``config.steps`` DP-SGD steps from ``params`` (name -> float32 tensor); returns the new ones.
    ``batch_size`` is the denominator of the noisy sum (the runner passes ``q * n``)."""
    import torch

    if not batch_size > 0:
        raise ValueError("batch_size must be > 0")
    rng = rng if rng is not None else secure_generator()
    n = int(features.shape[0])
    if n == 0:
        raise ValueError("no training rows")
    x_all = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
    y_all = torch.from_numpy(np.ascontiguousarray(labels)).long()
    shapes = [tuple(params[k].shape) for k in names]
    sizes = [int(np.prod(s)) for s in shapes]
    w = torch.cat([params[k].detach().reshape(-1).to(torch.float64) for k in names])
    anchor = w.clone()

    def unflatten(vector: Any) -> dict[str, Any]:
        out, at = {}, 0
        for name, shape, size in zip(names, shapes, sizes, strict=True):
            out[name] = vector[at : at + size].reshape(shape).to(torch.float32)
            at += size
        return out

    for batch in poisson_batches(n, config.sample_rate, config.steps, rng):
        current = unflatten(w)
        per_example = None
        if batch.size:
            idx = torch.from_numpy(batch)
            per_example = per_example_grads(current, x_all[idx], y_all[idx]).detach()
        step = noisy_mean(per_example, config, float(batch_size), rng, w.numel())
        if proximal_mu > 0:
            step = step + proximal_mu * (w - anchor)
        w = w - learning_rate * step
        if not torch.all(torch.isfinite(w)):
            raise FloatingPointError("training produced non-finite weights")
    return unflatten(w)
