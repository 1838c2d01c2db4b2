"""Shared by the example scripts: the demo task's data, its fixed split, and the artifact report.

The demo task is scikit-learn's breast-cancer data: 569 rows, 30 float features, binary labels.
The split is fixed for every example: a permutation drawn with numpy's default_rng(SPLIT_SEED);
its first TEST_ROWS rows are held out (the test rows), the other 455 are the training rows.
`--seed` changes only the model's own randomness, never the split.
"""

import argparse
import hashlib
from pathlib import Path

import numpy as np
from sklearn.datasets import load_breast_cancer

SPLIT_SEED = 0
TEST_ROWS = 114  # 20 % of 569


def load_split():
    """Return (X_train, y_train, X_test, y_test); float32 features, as the sandbox gives them."""
    features, labels = load_breast_cancer(return_X_y=True)
    features = features.astype(np.float32)
    order = np.random.default_rng(SPLIT_SEED).permutation(len(labels))
    test, train = order[:TEST_ROWS], order[TEST_ROWS:]
    return features[train], labels[train], features[test], labels[test]


def parse_args(description: str, suffixes: tuple[str, ...]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("out", type=Path, help=f"artifact path to write ({' or '.join(suffixes)})")
    parser.add_argument("--seed", type=int, default=0, help="seed of the model's randomness")
    args = parser.parse_args()
    if not args.out.name.endswith(suffixes):
        parser.error(f"the artifact name must end with {' or '.join(suffixes)}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    return args


def report(path: Path) -> None:
    """Print what the upload form asks for: the file, its size and its sha256."""
    data = path.read_bytes()
    print(f"artifact: {path}")
    print(f"size:     {len(data)} bytes")
    print(f"sha256:   {hashlib.sha256(data).hexdigest()}")
