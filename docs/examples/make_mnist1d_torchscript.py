"""Build a fine-tunable `torchscript` submission for MNIST-1D: a small 1-D CNN.

    python docs/examples/make_mnist1d_torchscript.py model.pt [--seed 0] [--steps 60] [--rows 400]

MNIST-1D (Greydanus 2020, `pip install mnist1d`): 40 float features per row, 10 classes. The
data is generated offline with `mnist1d.data.make_dataset(mnist1d.data.get_dataset_args())`.
The module takes float32 (n_rows, 40) and returns class probabilities (softmax, 10 columns);
its standardization lives inside it as buffers, so only the convolution and linear weights are
trainable parameters -- exactly what federated fine-tuning updates (`named_parameters()`).
`--steps` and `--rows` keep the parent deliberately under-trained, so fine-tuning on the sites'
data has room to improve it.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from torch import nn


class CNN1D(nn.Module):
    def __init__(self, mean: float, scale: float, channels: int = 16, n_classes: int = 10):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("scale", torch.tensor(scale, dtype=torch.float32))
        self.conv1 = nn.Conv1d(1, channels, kernel_size=5, padding=2)
        self.conv2 = nn.Conv1d(channels, channels, kernel_size=3, padding=1, stride=2)
        self.head = nn.Linear(channels * 20, n_classes)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        h = ((x - self.mean) / self.scale).unsqueeze(1)
        h = torch.relu(self.conv1(h))
        h = torch.relu(self.conv2(h))
        return self.head(h.flatten(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.logits(x), dim=1)


def load_mnist1d(seed: int = 0) -> dict:
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.seed = seed
    return make_dataset(args)


def build(out: str, *, seed: int = 0, steps: int = 60, rows: int = 400) -> float:
    """Train the parent on ``rows`` public rows for ``steps`` steps; returns its test accuracy."""
    torch.manual_seed(seed)
    data = load_mnist1d()
    x = torch.from_numpy(np.asarray(data["x"][:rows], dtype=np.float32))
    y = torch.from_numpy(np.asarray(data["y"][:rows], dtype=np.int64))
    model = CNN1D(float(x.mean()), float(x.std()))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(steps):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model.logits(x), y).backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        x_test = torch.from_numpy(np.asarray(data["x_test"], dtype=np.float32))
        accuracy = float((model(x_test).argmax(1).numpy() == data["y_test"]).mean())
    torch.jit.save(torch.jit.script(model), out)
    return accuracy


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--rows", type=int, default=400)
    a = parser.parse_args()
    print(f"parent test accuracy: {build(a.out, seed=a.seed, steps=a.steps, rows=a.rows):.4f}")
