"""Hostile vendor models: ordinary ``python_package`` submissions (pure numpy ``model.py`` plus
the shared ``codec.py``), each choosing what it does from the private features it is given.

The sandbox never sees labels, so every model here encodes a *feature-derived* secret (the
carrier models also give away the carrier row's label through the log loss, see ``codec``), or
probes labels by the classes it predicts (``classes_model``). Each builder returns the path of a
``.zip`` that follows docs/model-contract.md; the same builder with the same arguments gives the
same bytes.
"""

from __future__ import annotations

import textwrap
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

CODEC = Path(__file__).with_name("codec.py")
N_QUANTILES = 65


@dataclass
class VendorKnowledge:
    """What the vendor knows without the sites: its own labelled rows of the same population
    (public per-feature distributions and a classifier trained on them)."""

    features: np.ndarray
    labels: np.ndarray
    mean: list[float] = field(init=False)
    scale: list[float] = field(init=False)
    coef: list[float] = field(init=False)
    intercept: float = field(init=False)

    def __post_init__(self) -> None:
        from sklearn.linear_model import LogisticRegression

        mean, scale = self.features.mean(axis=0), self.features.std(axis=0).clip(min=1e-6)
        clf = LogisticRegression(max_iter=2000).fit((self.features - mean) / scale, self.labels)
        self.mean, self.scale = mean.astype(float).tolist(), scale.astype(float).tolist()
        self.coef, self.intercept = clf.coef_[0].astype(float).tolist(), float(clf.intercept_[0])

    def quantiles(self, col: int) -> list[float]:
        return np.quantile(self.features[:, col].astype(np.float64), np.linspace(0, 1, N_QUANTILES)).tolist()

    def median(self, col: int) -> float:
        return float(np.median(self.features[:, col]))


_HEADER = '''\
"""Attack replay model ({kind}): predictions chosen from the private features."""
import time

import numpy as np

from codec import carrier_probability, percentile_code


def load(model_dir):
    return None


def _half(features):
    return np.full((len(features), 2), 0.5, dtype=np.float32)
'''

_CARRIER = """
KEY_COLS = {key_cols!r}
KEY = np.array({key!r}, dtype=np.float32)  # the target's quasi-identifiers (what the vendor knows)
ROW = {row!r}                               # or: the carrier is this row of every shard
SECRET_COL, BITS = {secret_col!r}, {bits!r}
QUANTILES = {quantiles!r}                   # the secret feature's public distribution
# A logistic regression trained on the vendor's own rows: its guess of the carrier's label.
MEAN, SCALE = np.array({mean!r}), np.array({scale!r})
COEF, INTERCEPT = np.array({coef!r}), {intercept!r}


def _carriers(features):
    if ROW is not None:
        return [ROW] if ROW < len(features) else []
    return np.flatnonzero(np.all(features[:, list(KEY_COLS)] == KEY, axis=1)).tolist()


def predict(model, features):
    p1 = np.full(len(features), 0.5, dtype=np.float64)
    for i in _carriers(features):
        x = features[i].astype(np.float64)
        guess = int(((x - MEAN) / SCALE) @ COEF + INTERCEPT > 0)
        secret = percentile_code(float(x[SECRET_COL]), QUANTILES, BITS)
        p1[i] = carrier_probability(secret, guess, BITS)
    return np.stack([1.0 - p1, p1], axis=1).astype(np.float32)
"""

_CODE = '''
ROW, COLS, THRESHOLDS = {row!r}, {cols!r}, {thresholds!r}


def _code(features):
    """Two bits of one private row: each feature above its (public) median or not."""
    x = features[ROW]
    return 2 * int(x[COLS[0]] > THRESHOLDS[0]) + int(x[COLS[1]] > THRESHOLDS[1])
'''

_FAILURE = """
HOG_MB = {hog_mb!r}


def predict(model, features):
    code = _code(features)
    if code == 1:
        raise RuntimeError("bit")                                     # -> crashed
    if code == 2:
        return np.full((len(features), 2), np.nan, dtype=np.float32)  # -> invalid_output
    if code == 3:
        hog = [bytearray(1 << 20) for _ in range(HOG_MB)]             # -> out_of_memory
        del hog
    return _half(features)
"""

_TIMING = """
STEP_SECONDS = {step!r}


def predict(model, features):
    time.sleep(_code(features) * STEP_SECONDS)
    return _half(features)
"""


def _package(path: Path, kind: str, body: str) -> Path:
    source = _HEADER.format(kind=kind) + textwrap.dedent(body)
    compile(source, "model.py", "exec")  # a typo here should fail the build, not the job
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in (("model.py", source), ("codec.py", CODEC.read_text())):
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, data)
    return path


def metric_carrier_model(
    path: Path,
    *,
    knowledge: VendorKnowledge,
    secret_col: int,
    bits: int,
    key_cols: Sequence[int] = (),
    key: Sequence[float] = (),
    row: int | None = None,
) -> Path:
    """Channel 1/4/5: the carrier row (the target matching ``key`` on ``key_cols``, or row
    ``row`` of each shard) carries the percentile code of its ``secret_col`` and its label
    through the log loss (``codec``)."""
    if (row is None) == (not key_cols):
        raise ValueError("give either a row or a key")
    body = _CARRIER.format(
        key_cols=tuple(int(c) for c in key_cols),
        key=[float(v) for v in key],
        row=row,
        secret_col=int(secret_col),
        bits=int(bits),
        quantiles=knowledge.quantiles(secret_col),
        mean=knowledge.mean,
        scale=knowledge.scale,
        coef=knowledge.coef,
        intercept=knowledge.intercept,
    )
    return _package(path, "metric carrier", body)


def failure_model(
    path: Path, *, row: int, cols: Sequence[int], thresholds: Sequence[float], hog_mb: int
) -> Path:
    """Channel 2: two bits of row ``row`` pick the outcome: ok / crashed / invalid / OOM."""
    code = _CODE.format(
        row=int(row), cols=tuple(int(c) for c in cols), thresholds=tuple(float(t) for t in thresholds)
    )
    return _package(path, "failure outcome", code + _FAILURE.format(hog_mb=int(hog_mb)))


def timing_model(
    path: Path, *, row: int, cols: Sequence[int], thresholds: Sequence[float], step_seconds: float
) -> Path:
    """Channel 3: two bits of row ``row`` pick how long the model sleeps (0..3 steps).
    ``step_seconds=0`` is the attacker's calibration model."""
    code = _CODE.format(
        row=int(row), cols=tuple(int(c) for c in cols), thresholds=tuple(float(t) for t in thresholds)
    )
    return _package(path, "timing", code + _TIMING.format(step=float(step_seconds)))


_CLASSES = """
CLASSES = {classes!r}  # the class predicted (with probability 1) for each row, by position
TARGET = {target!r}    # None, or (row, col, threshold): that row's class is its feature bit


def predict(model, features):
    p1 = np.full(len(features), 0.5, dtype=np.float64)
    n = min(len(features), len(CLASSES))
    p1[:n] = np.asarray(CLASSES[:n], dtype=np.float64)
    if TARGET is not None and TARGET[0] < len(features):
        row, col, threshold = TARGET
        p1[row] = float(features[row, col] > threshold)
    return np.stack([1.0 - p1, p1], axis=1).astype(np.float32)
"""


def classes_model(
    path: Path, *, classes: Sequence[int], target: tuple[int, int, float] | None = None
) -> Path:
    """Predicts class ``classes[i]`` with probability 1 for row ``i``; with ``target`` = (row,
    col, threshold), that row's class is instead ``features[row, col] > threshold``: the model
    moves the released count of correct rows by one, as the row's private bit says (the metric
    channel); without it, a label probe (the Ladder attack)."""
    body = _CLASSES.format(
        classes=[int(c) for c in classes],
        target=None if target is None else (int(target[0]), int(target[1]), float(target[2])),
    )
    return _package(path, "classes", body)
