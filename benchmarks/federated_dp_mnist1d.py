"""Record-level DP-SGD federated fine-tuning on MNIST-1D: accuracy against epsilon.

    python benchmarks/federated_dp_mnist1d.py [--rounds 50] [--epsilons 1 2 4 8] [--lr 0.3 1 3 3] [--json out.json]

Data and sites as ``federated_mnist1d.py``: MNIST-1D (``mnist1d.data.make_dataset(
get_dataset_args())``, offline), 4 label-skewed sites (label groups {0,1,2}, {3,4,5}, {6,7},
{8,9}, 85 % of each label at its home site), each training on its rows minus the seeded 20 %
validation holdout; accuracy on the 1,000 test rows.

Parent: ``CNN1D`` of docs/examples/make_mnist1d_torchscript.py built as that script does (seed 0,
Adam lr 3e-3) on ``--parent-rows`` public rows for ``--parent-steps`` steps (defaults 1,000 and
60: test accuracy 0.397, close to the issue's 0.424 parent; the script's own 400/60 gives 0.288).

``--recipe fedsgd`` (default, session 5): every round each site takes ONE full-batch step of the
runner's own DP-SGD loop (``evaluator.runner.dpsgd.dp_sgd`` at q = 1: per-example clipping to C,
Gaussian noise on the sum, divided by the site's rows), weighs its delta by n_k / cap as the agent
does under example weighting, and the hub divides the sum by sum(n_k) / cap and applies FedAvg
with server momentum (``--server-momentum`` 0.9; the hub's own strategy code). Under secure
aggregation each site adds only its share sigma / sqrt(t) (``evaluator.privacy.distributed``,
t = 3 of 4, the hub's default threshold); without it every site adds sigma (local DP).
``--recipe local`` (session 4): ``local_epochs * ceil(1/q)`` Poisson-sampled steps per round at
the expected batch ``--batch-size`` of the smallest site, noise sigma at every site, FedAvg.

With per-example gradients from ``torch.func`` on the ``nn.Module`` -- the sandbox computes the
same weights by microbatches of one on the TorchScript module
(tests/federated/test_dpsgd.py::test_the_torchscript_path_gives_the_same_weights_as_torch_func).
The agent's side is the real ``prepare_site_update`` (whole-update bound ``--update-clip``, never
binding at 100; 20-bit stochastic quantization with secure aggregation); the hub's is the real
``dequantize`` + FedAvg. sigma is the smallest whose record-level epsilon after ``--rounds``
rounds is at most the target at delta 1e-5 (``evaluator.privacy.calibration.noise_multiplier_for``:
the accountant the sites and the hub use -- exact Gaussian DP for q = 1, RDP otherwise).

Non-private reference: the same federated loop with plain minibatch SGD (the runner's
non-DP path, batch 32, lr 0.2, as federated_mnist1d.py), and no clipping.

Side by side (``--only``): ``vaultbench`` (the path above, no secure aggregation), ``secagg``
(with secure aggregation's quantization, and distributed noise in the fedsgd recipe),
``plain-loop`` / ``plain-loop-distributed`` (the same federated DP-SGD written with none of
Vaultbench's code, with the noise of the column before). Every run also reports its exponential
moving average of the global model over the rounds (``--ema``) and the largest site update norm
before the agent's bound. ``--trainable`` trains and releases only some parameters, as a vendor
declares by saving the others with ``requires_grad=False``. ``--lr`` takes one value or one per
epsilon (lower epsilon needs a lower lr; see BENCHMARKS.md for the grid).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "docs" / "examples"))

N_SITES = 4
THRESHOLD = N_SITES // 2 + 1  # the secure aggregation threshold the hub sets by default
DELTA = 1e-5


def build_parent(rows: int = 1000, steps: int = 60):
    """``CNN1D`` trained as docs/examples/make_mnist1d_torchscript.py does, on ``rows`` public rows
    (the seed-0 draw of MNIST-1D: other rows than the sites')."""
    import torch
    from make_mnist1d_torchscript import CNN1D, load_mnist1d

    torch.manual_seed(0)
    data = load_mnist1d()
    x = torch.from_numpy(np.asarray(data["x"][:rows], dtype=np.float32))
    y = torch.from_numpy(np.asarray(data["y"][:rows], dtype=np.int64))
    model = CNN1D(float(x.mean()), float(x.std()))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(steps):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model.logits(x), y).backward()
        optimizer.step()
    model.eval()
    return model


def sites():
    from federated_common import fit_rows
    from federated_mnist1d import build_data

    _, _, x_test, y_test, sites_all = build_data()
    train = [(sx[fit_rows(len(sy))], sy[fit_rows(len(sy))]) for sx, sy in sites_all]
    return train, (x_test, y_test)


def accuracy(model, names, flat, x, y) -> float:
    import torch

    with torch.no_grad():
        at = 0
        for name in names:
            p = dict(model.named_parameters())[name]
            p.copy_(torch.from_numpy(flat[at : at + p.numel()].reshape(p.shape)).float())
            at += p.numel()
        return float((model(torch.from_numpy(x)).argmax(1).numpy() == y).mean())


def run(
    model,
    train,
    test,
    *,
    rounds,
    dp,
    lr,
    batch,
    local_epochs,
    update_clip,
    secure,
    seed=0,
    server_lr=1.0,
    strategy="fedavg",
    eta=0.01,
    trainable=None,
    ema=0.9,
    fedsgd=False,
    server_momentum=0.0,
):
    """One federated run; returns two test-accuracy curves (after each round): of the global model,
    and of its exponential moving average ``a <- ema a + (1 - ema) w`` over the rounds (a
    post-processing of the released models: no privacy cost; not what the hub does today); and
    the largest norm of a site's update before the agent's update bound; the epsilon in the
    site's own ledger after the rounds (what every site and the hub show); and the final global
    weights (name -> float32 array; tests/e2e/test_dp_recipe_e2e.py compares them with the hub's).

    The number of sites is ``len(train)`` and the secure aggregation threshold the hub's default
    for it (t = 3 of 4 in the benchmark)."""
    import torch

    from evaluator.federated.client_update import prepare_site_update
    from evaluator.federated.secagg import default_threshold
    from evaluator.federated.strategies import mean_update
    from evaluator.federated.updates import dequantize, quantization_range
    from evaluator.runner.dpsgd import VmapGrads, dp_sgd

    names = sorted(
        n for n, _ in model.named_parameters() if trainable is None or n.startswith(tuple(trainable))
    )
    owned = dict(model.named_parameters())
    w = np.concatenate([owned[n].detach().numpy().reshape(-1).astype(np.float64) for n in names])
    shapes = {n: tuple(owned[n].shape) for n in names}

    def as_dict(flat):
        out, at = {}, 0
        for n in names:
            size = int(np.prod(shapes[n]))
            out[n] = flat[at : at + size].reshape(shapes[n]).astype(np.float32)
            at += size
        return out

    from evaluator.federated.strategies import get_strategy

    server_params = {"eta": eta} if strategy == "fedadam" else {"server_learning_rate": server_lr}
    if strategy == "fedavg" and server_momentum:
        server_params["server_momentum"] = server_momentum
    server = get_strategy(strategy, learning_rate=lr, local_epochs=local_epochs, **server_params)
    grads = VmapGrads(model, names)
    rng = np.random.default_rng(seed)
    n_sites = len(train)
    curve, ema_curve = [], []
    average = w.copy()
    update_norms: list[float] = []  # what an update bound must not cut (distributed noise needs it linear)
    min_rows = min(len(y) for _, y in train)
    # FedSGD rounds: every site weighs its delta by n_k / cap as the agent does under example
    # weighting, the hub divides the sum by sum(n_k) / cap: the aggregate is
    # -lr (sum of all sites' clipped gradients + all sites' noise) / sum(n_k), one denominator.
    cap = max(len(y) for _, y in train)
    weights = [len(y) / cap if fedsgd else 1.0 for _, y in train]
    config = site_ledger = None
    q = 1.0 if fedsgd else batch / min_rows
    if dp is not None and not dp["sigma"]:  # the noise-free reference (tests): nothing to account
        from evaluator.federated.accounting import steps_per_round
        from evaluator.runner.dpsgd import DPConfig

        config = DPConfig(example_clip_norm=dp["clip"], noise_multiplier=0.0, sample_rate=q,
                          steps=steps_per_round(local_epochs, q))  # fmt: skip
    elif dp is not None:
        # the run as the hub sends it; the site agent's own parse_run / _round_config turn it into
        # the runner's DP settings: under secure aggregation with FedSGD rounds each site adds only
        # sigma / sqrt(t) (distributed noise), and the site's ledger charges sigma
        spec, config = site_runner_dp(dp, q=q, local_epochs=local_epochs, lr=lr, secure=secure,
                                      distributed=fedsgd and secure, n_sites=n_sites,
                                      threshold=default_threshold(n_sites), rounds=rounds,
                                      delta=dp.get("delta", DELTA))  # fmt: skip
        site_ledger = spec.new_privacy_ledger(0)
    for _ in range(rounds):
        old = as_dict(w)
        vectors = []
        for (x, y), weight in zip(train, weights, strict=True):
            if config is not None:
                new = dp_sgd(grads, {n: torch.from_numpy(v) for n, v in old.items()}, names, x, y, config=config,
                             learning_rate=lr, batch_size=q * len(y), rng=rng)  # fmt: skip
                new = {n: (old[n] + weight * (t.numpy() - old[n])).astype(np.float32) for n, t in new.items()}
            else:
                new = plain_sgd(model, names, old, x, y, lr=lr, batch=batch, epochs=local_epochs, rng=rng)
            vector, report = prepare_site_update(
                old_weights=old, new_weights=new, clip_norm=update_clip, noise_multiplier=0.0,
                n_sites=n_sites, rng=rng, quantization_bits=20 if secure else None,
            )  # fmt: skip
            vectors.append(vector)
            update_norms.append(report.norm_before_clip)
        if secure:
            total = np.sum(np.stack(vectors).astype(np.uint64), axis=0) % np.uint64(2**32)
            summed = dequantize(total.astype(np.uint32), clip_norm=quantization_range(update_clip, 0.0), bits=20,
                                n_summed=n_sites)  # fmt: skip
        else:
            summed = np.sum(np.stack(vectors), axis=0)
        divisor = sum(weights) if fedsgd else n_sites  # the hub's example-weighted mean
        w = server.aggregate(w, mean_update(summed, 1) / divisor, n_sites)  # the hub's own strategy code
        w = w.astype(np.float32).astype(np.float64)  # the hub stores D as float32
        if site_ledger is not None:
            site_ledger.record_round()
        curve.append(accuracy(model, names, w, *test))
        average = ema * average + (1 - ema) * w
        ema_curve.append(accuracy(model, names, average, *test))
    epsilon = site_ledger.epsilon if site_ledger is not None else None
    return curve, ema_curve, max(update_norms), epsilon, as_dict(w)


def site_runner_dp(dp, *, q, local_epochs, lr, secure, distributed, n_sites=N_SITES, threshold=THRESHOLD, rounds=50,
                   delta=DELTA):  # fmt: skip
    """The runner's ``DPConfig`` as the site agent derives it from the hub's run (its ``parse_run``
    checks and its ``_round_config``), and the parsed spec (whose ledger the site keeps)."""
    from types import SimpleNamespace

    from evaluator.federated.accounting import steps_per_round
    from evaluator.federated.site import SiteParticipant, parse_run
    from evaluator.runner.dpsgd import DPConfig

    run = {"id": 1, "participant": 1, "n_participants": n_sites, "rounds": rounds, "local_epochs": local_epochs,
           "batch_size": 32, "learning_rate": lr, "secure_aggregation": secure,
           "threshold": threshold if secure else None, "clip_norm": 100.0, "noise_multiplier": 0.0,
           "dp_delta": delta, "privacy_unit": "record", "quantization_bits": 20 if secure else None,
           "dp": {"example_clip_norm": dp["clip"], "noise_multiplier": dp["sigma"], "sample_rate": q,
                  "steps": steps_per_round(local_epochs, q), "distributed": distributed}}  # fmt: skip
    spec = parse_run(run)
    return spec, DPConfig.parse(SiteParticipant._round_config(SimpleNamespace(spec=spec), None)["dp"])


def plain_sgd(model, names, old, x, y, *, lr, batch, epochs, rng):
    import torch

    from evaluator.runner.dpsgd import nll_from_logits

    owned = dict(model.named_parameters())
    with torch.no_grad():
        for n in names:
            owned[n].copy_(torch.from_numpy(old[n]))
    params = [owned[n] for n in names]
    opt = torch.optim.SGD(params, lr=lr)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(epochs):
        order = torch.from_numpy(rng.permutation(len(x)))
        for start in range(0, len(order), batch):
            idx = order[start : start + batch]
            opt.zero_grad()
            nll_from_logits(model.logits(xt[idx]), yt[idx]).backward()
            opt.step()
    return {n: owned[n].detach().numpy().copy() for n in names}


def plain_loop(
    model, train, test, *, rounds, sigma, clip, lr, q, local_epochs, trainable=None, ema=0.9, seed=0
):
    """The same federated DP-SGD written plainly, with none of Vaultbench's code: per-example
    gradients with ``torch.func``, Poisson batches, clip, Gaussian noise, a local SGD step; the
    server averages the sites' deltas (no update clip, no quantization, no masks). Returns the
    same two curves as ``run``."""
    import torch
    from torch.func import functional_call, grad, vmap

    names = sorted(
        n for n, _ in model.named_parameters() if trainable is None or n.startswith(tuple(trainable))
    )
    w = {n: p.detach().clone() for n, p in model.named_parameters() if n in names}
    average = {n: v.clone() for n, v in w.items()}
    gen = torch.Generator().manual_seed(seed)

    class Logits(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.m = inner

        def forward(self, x):
            return self.m.logits(x)

    wrapped = Logits(model)

    def loss(params, x, y):
        return torch.nn.functional.cross_entropy(
            functional_call(wrapped, params, (x.unsqueeze(0),)), y.unsqueeze(0)
        )

    per_example = vmap(grad(loss), in_dims=(None, 0, 0))
    steps = local_epochs * int(np.ceil(1 / q - 1e-9))
    curve, ema_curve = [], []
    for _ in range(rounds):
        deltas = []
        for x, y in train:
            xt, yt = torch.from_numpy(x), torch.from_numpy(y)
            local = {n: v.clone() for n, v in w.items()}
            for _ in range(steps):
                idx = torch.nonzero(torch.rand(len(y), generator=gen) < q).flatten()
                g = per_example({"m." + n: v for n, v in local.items()}, xt[idx], yt[idx])
                flat = torch.cat([g["m." + n].reshape(len(idx), -1) for n in names], 1)
                flat = flat * torch.clamp(clip / (flat.norm(dim=1, keepdim=True) + 1e-12), max=1.0)
                noisy = (flat.sum(0) + sigma * clip * torch.randn(flat.shape[1], generator=gen)) / (
                    q * len(y)
                )
                at = 0
                for n in names:
                    k = local[n].numel()
                    local[n] = local[n] - lr * noisy[at : at + k].reshape(local[n].shape)
                    at += k
            deltas.append({n: local[n] - w[n] for n in names})
        w = {n: w[n] + sum(d[n] for d in deltas) / len(deltas) for n in names}
        average = {n: ema * average[n] + (1 - ema) * w[n] for n in names}
        for target, out in ((w, curve), (average, ema_curve)):
            flat = np.concatenate([target[n].numpy().reshape(-1).astype(np.float64) for n in names])
            out.append(accuracy(model, names, flat, *test))
    return curve, ema_curve


def plain_fedsgd(
    model, train, test, *, rounds, sigma, clip, lr, server_momentum, distributed, ema=0.9, seed=0
):
    """FedSGD written plainly, with none of Vaultbench's code: every round each site sums its rows'
    clipped per-example gradients (``torch.func``) at the global model and adds Gaussian noise
    (``sigma C / sqrt(t)``, t the secure aggregation threshold, when ``distributed``, else ``sigma C``); the server divides the sum
    by all sites' rows and takes one heavy-ball step (torch's SGD with momentum)."""
    import torch
    from torch.func import functional_call, grad, vmap

    names = sorted(n for n, _ in model.named_parameters())
    params = [torch.nn.Parameter(dict(model.named_parameters())[n].detach().clone()) for n in names]
    optimizer = torch.optim.SGD(params, lr=lr, momentum=server_momentum)
    average = [p.detach().clone() for p in params]
    gen = torch.Generator().manual_seed(seed)

    class Logits(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.m = inner

        def forward(self, x):
            return self.m.logits(x)

    wrapped = Logits(model)

    def loss(p, x, y):
        return torch.nn.functional.cross_entropy(
            functional_call(wrapped, p, (x.unsqueeze(0),)), y.unsqueeze(0)
        )

    per_example = vmap(grad(loss), in_dims=(None, 0, 0))
    site_sigma = sigma / np.sqrt(THRESHOLD) if distributed else sigma
    rows = sum(len(y) for _, y in train)
    curve, ema_curve = [], []
    for _ in range(rounds):
        current = {"m." + n: p.detach() for n, p in zip(names, params, strict=True)}
        total = 0
        for x, y in train:
            g = per_example(current, torch.from_numpy(x), torch.from_numpy(y))
            flat = torch.cat([g["m." + n].reshape(len(y), -1) for n in names], 1)
            flat = flat * torch.clamp(clip / (flat.norm(dim=1, keepdim=True) + 1e-12), max=1.0)
            total = total + flat.sum(0) + site_sigma * clip * torch.randn(flat.shape[1], generator=gen)
        optimizer.zero_grad()
        at = 0
        for p in params:
            p.grad = (total[at : at + p.numel()] / rows).reshape(p.shape).float()
            at += p.numel()
        optimizer.step()
        for a, p in zip(average, params, strict=True):
            a.mul_(ema).add_((1 - ema) * p.detach())
        for target, out in ((params, curve), (average, ema_curve)):
            flat = np.concatenate([t.detach().numpy().reshape(-1).astype(np.float64) for t in target])
            out.append(accuracy(model, names, flat, *test))
    return curve, ema_curve


def main() -> None:
    import torch

    from evaluator.privacy.calibration import noise_multiplier_for

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--epsilons", type=float, nargs="+", default=[1.0, 2.0, 4.0, 8.0])
    parser.add_argument("--recipe", choices=["fedsgd", "local"], default="fedsgd",
                        help="fedsgd: one full-batch DP step per site per round, server momentum, distributed "
                             "noise under secure aggregation; local: Poisson-sampled local DP-SGD steps (session 4)")  # fmt: skip
    parser.add_argument("--lr", type=float, nargs="+", default=None,
                        help="site lr: one value, or one per epsilon (default: fedsgd 3, local 5)")  # fmt: skip
    parser.add_argument("--server-momentum", type=float, default=None, help="default: fedsgd 0.9, local 0")
    parser.add_argument(
        "--batch-size", type=int, default=512, help="local: expected batch of the smallest site"
    )
    parser.add_argument("--local-epochs", type=int, default=1)
    parser.add_argument("--clip", type=float, default=1.0, help="per-example clip C")
    parser.add_argument("--update-clip", type=float, default=100.0, help="the agent's whole-update bound")
    parser.add_argument("--server-lr", type=float, default=1.0, help="FedAvg's server_learning_rate")
    parser.add_argument("--strategy", choices=["fedavg", "fedadam"], default="fedavg")
    parser.add_argument("--eta", type=float, default=0.01, help="FedAdam's server step")
    parser.add_argument(
        "--ema", type=float, default=0.9, help="decay of the reported moving average of the models"
    )
    parser.add_argument("--trainable", nargs="+", default=None,
                        help="train (and release) only parameters with these name prefixes, as a vendor "
                             "declares by saving the others with requires_grad=False")  # fmt: skip
    parser.add_argument("--parent-rows", type=int, default=1000)
    parser.add_argument("--parent-steps", type=int, default=60)
    variants = ["vaultbench", "secagg", "plain-loop", "plain-loop-distributed"]
    parser.add_argument("--only", nargs="+", choices=["non-private", *variants], default=["non-private", *variants],
                        help="plain-loop-distributed: the plain FedSGD loop with sigma / sqrt(t) per site "
                             "(what secagg does); fedsgd recipe only")  # fmt: skip
    parser.add_argument(
        "--seed", type=int, default=0, help="seeds batches, noise and quantization of every run"
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    fedsgd = args.recipe == "fedsgd"
    lrs = args.lr or [3.0 if fedsgd else 5.0]
    if len(lrs) not in (1, len(args.epsilons)):
        parser.error("--lr takes one value or one per epsilon")
    lr_of = dict(zip(args.epsilons, lrs * len(args.epsilons) if len(lrs) == 1 else lrs, strict=True))
    args.lr = lrs[0]
    if args.server_momentum is None:
        args.server_momentum = 0.9 if fedsgd else 0.0
    if fedsgd:
        args.batch_size, args.local_epochs = min(len(y) for _, y in sites()[0]), 1  # full batch, one step
    torch.set_num_threads(1)
    train, test = sites()
    model = build_parent(args.parent_rows, args.parent_steps)
    if args.trainable:
        for name, p in model.named_parameters():
            p.requires_grad_(name.startswith(tuple(args.trainable)))
    names = sorted(n for n, _ in model.named_parameters())
    flat0 = np.concatenate([dict(model.named_parameters())[n].detach().numpy().reshape(-1) for n in names])
    parent_acc = accuracy(model, names, flat0.astype(np.float64), *test)
    parent_state = {k: v.clone() for k, v in model.state_dict().items()}  # every run starts from the parent
    q = args.batch_size / min(len(y) for _, y in train)
    results: dict = {"config": {**vars(args), "json": None, "sample_rate": q, "site_rows": [len(y) for _, y in train],
                                "parent_accuracy": parent_acc}, "runs": []}  # fmt: skip
    print(f"parent {parent_acc:.3f}; rows {results['config']['site_rows']}; q {q:.4f}", file=sys.stderr)

    def record(name, eps, sigma, curves, started, lr=None):
        curve, ema_curve = curves[:2]
        results["runs"].append({"name": name, "epsilon": eps, "sigma": sigma, "lr": lr, "final": curve[-1], "best": max(curve),
                                "final_ema": ema_curve[-1], "curve": curve, "ema_curve": ema_curve,
                                "max_update_norm": curves[2] if len(curves) > 2 else None,
                                "site_ledger_epsilon": curves[3] if len(curves) > 3 else None,
                                "seconds": time.perf_counter() - started})  # fmt: skip
        site_eps = results["runs"][-1]["site_ledger_epsilon"]
        print(f"{name} (sigma {sigma:.3f}): final {curve[-1]:.3f}, best {max(curve):.3f}, "
              f"final of the moving average {ema_curve[-1]:.3f}"
              + (f", site ledger epsilon {site_eps:.3f}" if site_eps is not None else ""), file=sys.stderr)  # fmt: skip

    common = {
        "rounds": args.rounds,
        "local_epochs": args.local_epochs,
        "trainable": args.trainable,
        "ema": args.ema,
        "seed": args.seed,
    }
    if "non-private" in args.only:
        started = time.perf_counter()
        model.load_state_dict(parent_state)
        curves = run(model, train, test, dp=None, lr=0.2, batch=32, update_clip=1e6, secure=False, **common)
        record("non-private", None, 0.0, curves, started)
    for eps in args.epsilons:
        sigma = noise_multiplier_for(epsilon=eps, rounds=args.rounds, sample_rate=q, local_epochs=args.local_epochs,
                                     delta=DELTA)  # fmt: skip
        for variant in variants:
            if variant not in args.only or (variant == "plain-loop-distributed" and not fedsgd):
                continue
            started = time.perf_counter()
            model.load_state_dict(parent_state)
            if variant.startswith("plain-loop") and fedsgd:
                curves = plain_fedsgd(model, train, test, rounds=args.rounds, sigma=sigma, clip=args.clip, lr=lr_of[eps],
                                      server_momentum=args.server_momentum, distributed=variant.endswith("distributed"),
                                      ema=args.ema, seed=args.seed)  # fmt: skip
            elif variant == "plain-loop":
                curves = plain_loop(
                    model, train, test, sigma=sigma, clip=args.clip, lr=lr_of[eps], q=q, **common
                )
            else:
                curves = run(model, train, test, dp={"clip": args.clip, "sigma": sigma}, lr=lr_of[eps],
                             batch=args.batch_size, update_clip=args.update_clip, secure=variant == "secagg",
                             server_lr=args.server_lr, strategy=args.strategy, eta=args.eta, fedsgd=fedsgd,
                             server_momentum=args.server_momentum, **common)  # fmt: skip
            record(f"eps {eps:g} {variant}", eps, sigma, curves, started, lr_of[eps])
    table = {r["name"]: [round(r["final"], 4), round(r["final_ema"], 4)] for r in results["runs"]}
    print(json.dumps({"final [model, moving average]": table}, indent=1))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
