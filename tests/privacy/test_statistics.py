"""Sufficient statistics: exact statistics give scikit-learn's metric of the clipped or binned
inputs, pooling is independent of how rows are spread over sites, and the noise matches rho."""

import math

import numpy as np
import pytest
from sklearn import metrics as skm

from evaluator.privacy import statistics as st
from evaluator.privacy.mechanism import gaussian_release, noise_scales
from evaluator.privacy.statistics import ReleaseSpec, StatisticsError

CLASSIFICATION_METRICS = ("accuracy", "balanced_accuracy", "f1", "log_loss", "roc_auc")
REGRESSION_METRICS = ("mean_squared_error", "mean_absolute_error", "r2")


def _classification(n, k, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, size=n)
    logits = rng.normal(size=(n, k)) + 2.0 * np.eye(k)[y] * rng.uniform(0, 1, size=(n, 1))
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y, proba


def _reference(name, y, proba, k):
    """scikit-learn on the clipped/binned inputs the statistics are defined on."""
    pred = np.argmax(proba, axis=1)
    labels = list(range(k))
    if name == "accuracy":
        return skm.accuracy_score(y, pred)
    if name == "balanced_accuracy":
        return skm.balanced_accuracy_score(y, pred)
    if name == "f1":
        return skm.f1_score(y, pred, labels=labels, average="binary" if k == 2 else "macro", zero_division=0)
    if name == "log_loss":
        picked = np.maximum(proba[np.arange(len(y)), y], st.LOG_LOSS_FLOOR)
        return float(np.mean(-np.log(picked)))
    binned = st._bins(proba)
    if k == 2:
        return skm.roc_auc_score(y, binned[:, 1])
    return float(np.mean([skm.roc_auc_score(y == c, binned[:, c]) for c in range(k)]))


@pytest.mark.parametrize("k", [2, 4])
@pytest.mark.parametrize("name", CLASSIFICATION_METRICS)
def test_exact_statistics_give_the_sklearn_metric(name, k):
    y, proba = _classification(400, k)
    spec = ReleaseSpec.for_task(
        task_type="binary_classification" if k == 2 else "multiclass_classification",
        metric_names=[name],
        input_spec={"n_classes": k},
    )
    stats = st.sufficient_statistics(spec, y, proba)
    got = st.metrics_from_statistics(spec, stats, len(y))[name]
    assert got == pytest.approx(_reference(name, y, proba, k), abs=1e-12)


def test_unclipped_log_loss_and_auc_are_close_to_sklearn_exact():
    y, proba = _classification(2000, 2, seed=3)
    spec = ReleaseSpec.for_task(
        task_type="binary_classification", metric_names=["log_loss", "roc_auc"], input_spec={}
    )
    got = st.metrics_from_statistics(spec, st.sufficient_statistics(spec, y, proba), len(y))
    assert got["log_loss"] == pytest.approx(skm.log_loss(y, proba), abs=0.02)
    assert got["roc_auc"] == pytest.approx(skm.roc_auc_score(y, proba[:, 1]), abs=0.01)


@pytest.mark.parametrize("name", REGRESSION_METRICS)
def test_regression_statistics_give_the_sklearn_metric_of_clipped_values(name):
    rng = np.random.default_rng(1)
    y = rng.uniform(0, 10, size=300)
    pred = y + rng.normal(0, 1.5, size=300)
    spec = ReleaseSpec.for_task(
        task_type="regression", metric_names=[name], input_spec={"target_range": [0, 10]}
    )
    got = st.metrics_from_statistics(spec, st.sufficient_statistics(spec, y, pred), len(y))[name]
    reference = {"mean_squared_error": skm.mean_squared_error, "mean_absolute_error": skm.mean_absolute_error,
                 "r2": skm.r2_score}[name](y, pred)  # fmt: skip
    assert got == pytest.approx(reference, rel=1e-9)


def test_pooled_metrics_do_not_depend_on_how_rows_are_spread_over_sites():
    """The issue's measurement: macro-F1 on label-skewed sites averaged per site != pooled."""
    y, proba = _classification(1000, 10, seed=7)
    spec = ReleaseSpec.for_task(
        task_type="multiclass_classification",
        metric_names=list(CLASSIFICATION_METRICS),
        input_spec={"n_classes": 10},
    )
    central = st.metrics_from_statistics(spec, st.sufficient_statistics(spec, y, proba), len(y))
    order = np.argsort(y, kind="stable")  # label-skewed: each site holds a few classes only
    sites = np.array_split(order, 4)
    pooled = st.pool(spec, [st.sufficient_statistics(spec, y[rows], proba[rows]) for rows in sites])
    assert st.metrics_from_statistics(spec, pooled, len(y)) == pytest.approx(central, abs=1e-12)


def test_a_metric_undefined_at_one_site_is_defined_on_the_pool():
    y = np.array([0, 0, 0, 1, 1, 0])
    proba = np.column_stack([1 - np.linspace(0.1, 0.9, 6), np.linspace(0.1, 0.9, 6)])
    spec = ReleaseSpec.for_task(task_type="binary_classification", metric_names=["roc_auc"], input_spec={})
    one_class_site = st.sufficient_statistics(spec, y[:3], proba[:3])
    assert st.metrics_from_statistics(spec, one_class_site, 3) == {}
    pooled = st.pool(spec, [one_class_site, st.sufficient_statistics(spec, y[3:], proba[3:])])
    assert "roc_auc" in st.metrics_from_statistics(spec, pooled, 6)


def test_changing_one_row_moves_each_block_by_at_most_its_sensitivity():
    rng = np.random.default_rng(5)
    for k, task_type in ((2, "binary_classification"), (5, "multiclass_classification")):
        spec = ReleaseSpec.for_task(
            task_type=task_type, metric_names=list(CLASSIFICATION_METRICS), input_spec={"n_classes": k}
        )
        for _ in range(200):
            y, proba = _classification(30, k, seed=int(rng.integers(1 << 30)))
            y2, proba2 = y.copy(), proba.copy()
            y2[0] = rng.integers(0, k)
            proba2[0] = rng.dirichlet(np.full(k, 0.2))
            a, b = st.sufficient_statistics(spec, y, proba), st.sufficient_statistics(spec, y2, proba2)
            for block in spec.blocks:
                assert np.linalg.norm(a[block] - b[block]) <= spec.sensitivity(block) + 1e-9
    spec = ReleaseSpec.for_task(
        task_type="regression", metric_names=list(REGRESSION_METRICS), input_spec={"target_range": [-2, 3]}
    )
    for _ in range(200):
        y, pred = rng.uniform(-5, 6, size=20), rng.normal(0, 10, size=20)
        y2, pred2 = y.copy(), pred.copy()
        y2[0], pred2[0] = rng.uniform(-5, 6), rng.normal(0, 100)
        a, b = st.sufficient_statistics(spec, y, pred), st.sufficient_statistics(spec, y2, pred2)
        for block in spec.blocks:
            assert abs(a[block][0] - b[block][0]) <= spec.sensitivity(block) + 1e-9


def test_noise_scale_matches_rho_and_sensitivity():
    spec = ReleaseSpec.for_task(
        task_type="binary_classification", metric_names=["accuracy", "log_loss"], input_spec={}
    )
    rho = 0.05
    scales = noise_scales(spec, rho)
    # Two blocks (correct count, log-loss sum): scaled sensitivity sqrt(2); rho = 2 / (2 s^2).
    assert scales["correct"] == pytest.approx(1 * math.sqrt(2) / math.sqrt(2 * rho))
    assert scales["log_loss_sum"] == pytest.approx(st.LOG_LOSS_CLIP * math.sqrt(2) / math.sqrt(2 * rho))
    y, proba = _classification(100, 2)
    exact = st.sufficient_statistics(spec, y, proba)
    draws = np.array([gaussian_release(spec, exact, rho=rho)["log_loss_sum"][0] for _ in range(4000)])
    assert np.mean(draws) == pytest.approx(
        exact["log_loss_sum"][0], abs=4 * scales["log_loss_sum"] / math.sqrt(4000)
    )
    assert np.std(draws) == pytest.approx(scales["log_loss_sum"], rel=0.05)


def test_released_statistics_are_checked_against_the_spec():
    spec = ReleaseSpec.for_task(task_type="binary_classification", metric_names=["f1"], input_spec={})
    good = {"confusion": [[1.0, 2.0], [3.0, 4.0]]}
    assert st.check_statistics(spec, good)["confusion"].shape == (2, 2)
    for bad in ({}, {"confusion": [[1, 2]]}, {"confusion": [[1, 2], [3, float("nan")]]},
                {"confusion": "x"}, {"confusion": [[1, 2], [3, 4]], "extra": [1]}, []):  # fmt: skip
        with pytest.raises(StatisticsError):
            st.check_statistics(spec, bad)


def test_accuracy_alone_releases_one_count_and_shares_the_confusion_matrix_otherwise():
    alone = ReleaseSpec.for_task(task_type="binary_classification", metric_names=["accuracy"], input_spec={})
    assert alone.blocks == ("correct",) and alone.sensitivity("correct") == 1.0
    shared = ReleaseSpec.for_task(
        task_type="binary_classification", metric_names=["accuracy", "f1"], input_spec={}
    )
    assert shared.blocks == ("confusion",)


def test_a_regression_task_needs_a_target_range():
    with pytest.raises(StatisticsError, match="target_range"):
        ReleaseSpec.for_task(task_type="regression", metric_names=["r2"], input_spec={})


def test_implausible_statistics_are_refused():
    spec = ReleaseSpec.for_task(
        task_type="binary_classification", metric_names=["f1", "roc_auc"], input_spec={}
    )
    y, proba = _classification(50, 2)
    noise = noise_scales(spec, 0.02)
    for _ in range(50):  # honest releases always pass
        released = st.check_statistics(
            spec, gaussian_release(spec, st.sufficient_statistics(spec, y, proba), rho=0.02)
        )
        st.check_plausible(spec, released, n_rows=50, noise=noise)
    forged = st.check_statistics(
        spec, {"confusion": [[1e300, 0], [0, 0]], "score_histogram": [[0] * 10, [0] * 10]}
    )
    with pytest.raises(StatisticsError, match="outside"):
        st.check_plausible(spec, forged, n_rows=50, noise=noise)
    too_many_rows = st.sufficient_statistics(spec, np.zeros(5000, dtype=int), np.tile([0.9, 0.1], (5000, 1)))
    with pytest.raises(StatisticsError, match="outside"):
        st.check_plausible(spec, too_many_rows, n_rows=50, noise=noise)


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as hs  # noqa: E402


@settings(max_examples=60, deadline=None)
@given(
    k=hs.integers(2, 6),
    n=hs.integers(2, 120),
    n_sites=hs.integers(1, 5),
    seed=hs.integers(0, 2**31 - 1),
)
def test_property_pooling_any_partition_equals_the_centralized_statistics(k, n, n_sites, seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, size=n)
    proba = rng.dirichlet(np.full(k, 0.5), size=n)
    task_type = "binary_classification" if k == 2 else "multiclass_classification"
    spec = ReleaseSpec.for_task(
        task_type=task_type, metric_names=list(CLASSIFICATION_METRICS), input_spec={"n_classes": k}
    )
    cuts = np.sort(rng.integers(0, n + 1, size=n_sites - 1))
    parts = [p for p in np.split(rng.permutation(n), cuts)]
    pooled = st.pool(spec, [st.sufficient_statistics(spec, y[p], proba[p]) for p in parts])
    central = st.sufficient_statistics(spec, y, proba)
    for block in spec.blocks:
        np.testing.assert_allclose(pooled[block], central[block], rtol=1e-12, atol=1e-9)
    assert st.metrics_from_statistics(spec, pooled, n) == pytest.approx(
        st.metrics_from_statistics(spec, central, n)
    )


@pytest.mark.parametrize("k", [2, 3])
def test_the_fast_class_and_bin_paths_equal_argmax_and_the_plain_binning(k):
    """Ties (0.5/0.5, equal maxima) go to the first class as argmax does; exact bin edges and 1.0
    land in the same bins as truncate-then-clip."""
    y, proba = _classification(5000, k, seed=3)
    proba[:50] = 1.0 / k  # exact ties
    edges = np.arange(st.SCORE_BINS + 1) / st.SCORE_BINS
    proba[50 : 50 + len(edges), 0] = edges
    assert np.array_equal(st._predicted_classes(proba), np.argmax(proba, axis=1))
    for c in range(k):
        plain = np.minimum((np.clip(proba[:, c], 0.0, 1.0) * st.SCORE_BINS).astype(np.int64), st.SCORE_BINS - 1)
        assert np.array_equal(st._bins(proba[:, c]), plain)


@pytest.mark.parametrize("k", [2, 4])
def test_statistics_in_chunks_are_the_statistics_of_all_rows_at_once(monkeypatch, k):
    """Chunks of rows (cache-sized) add up to what one pass over all rows gives: counts exactly,
    the log-loss sum to the last bits of its summation order."""
    rng = np.random.default_rng(7)
    n = 3 * st.ROWS_PER_CHUNK + 123  # a ragged last chunk
    proba = rng.dirichlet(np.ones(k), size=n)
    y = rng.integers(0, k, size=n)
    task = "binary_classification" if k == 2 else "multiclass_classification"
    spec = st.ReleaseSpec(task, ("accuracy", "log_loss", "roc_auc") if k == 2 else ("accuracy", "log_loss"), n_classes=k)
    chunked = st.sufficient_statistics(spec, y, proba)
    monkeypatch.setattr(st, "ROWS_PER_CHUNK", 10 * n)
    whole = st.sufficient_statistics(spec, y, proba)
    assert set(chunked) == set(whole) and "log_loss_sum" in whole
    for block in whole:
        if block == "log_loss_sum":
            assert chunked[block] == pytest.approx(whole[block], rel=1e-12)
        else:
            assert np.array_equal(chunked[block], whole[block]), block


def test_statistics_refuse_more_predictions_than_labels_whatever_the_chunks():
    spec = st.ReleaseSpec("binary_classification", ("accuracy",), n_classes=2)
    n = st.ROWS_PER_CHUNK + 5
    with pytest.raises(st.StatisticsError, match=rf"expected probabilities of shape \({n}, 2\)"):
        st.sufficient_statistics(spec, np.zeros(n, dtype=int), np.full((n + 1, 2), 0.5))
