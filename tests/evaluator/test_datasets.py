import stat

import numpy as np
import pandas as pd
import pytest

from evaluator.datasets import (
    DataUnavailable,
    InvalidData,
    fingerprint,
    load_task_data,
    register_task_data,
)

RNG = np.random.default_rng(1)
SPEC = {"n_features": 4, "dtype": "float32", "n_classes": 2}


def _arrays(n=50, k=4, n_classes=2):
    x = RNG.normal(size=(n, k))
    y = np.arange(n) % n_classes
    return x, y


def _register(tmp_path, features, labels, spec=SPEC, task_type="binary_classification", task="3"):
    return register_task_data(
        data_dir=tmp_path / "data",
        task_id=task,
        features_path=features,
        labels_path=labels,
        input_spec=spec,
        task_type=task_type,
    )


def test_npy_files_are_stored_as_float32_features_and_separate_labels(tmp_path):
    x, y = _arrays()
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    meta = _register(tmp_path, tmp_path / "x.npy", tmp_path / "y.npy")
    assert meta["row_count"] == 50
    assert meta["split_sizes"] == {"test": 50}
    root = tmp_path / "data" / "tasks" / "3"
    features = np.load(root / "features" / "features.npy")
    labels = np.load(root / "labels" / "labels.npy")
    assert features.dtype == np.float32 and features.shape == (50, 4)
    assert np.array_equal(labels, y)
    # the features folder holds the features and nothing else: it is what a sandbox sees
    assert [p.name for p in (root / "features").iterdir()] == ["features.npy"]
    assert meta["fingerprint"] == fingerprint(features, labels)


def test_folder_permissions_let_the_sandbox_read_features_but_not_labels(tmp_path):
    x, y = _arrays()
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    _register(tmp_path, tmp_path / "x.npy", tmp_path / "y.npy")
    root = tmp_path / "data" / "tasks" / "3"
    assert stat.S_IMODE((root / "features" / "features.npy").stat().st_mode) & 0o004
    assert stat.S_IMODE((root / "labels").stat().st_mode) & 0o077 == 0
    assert stat.S_IMODE((root / "labels" / "labels.npy").stat().st_mode) & 0o077 == 0


def test_csv_with_and_without_header_gives_the_same_fingerprint_as_npy(tmp_path):
    x, y = _arrays()
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    pd.DataFrame(x, columns=list("abcd")).to_csv(tmp_path / "x.csv", index=False)
    pd.DataFrame({"label": y}).to_csv(tmp_path / "y.csv", index=False)
    np.savetxt(tmp_path / "x_noheader.csv", x, delimiter=",", fmt="%.17g")
    np.savetxt(tmp_path / "y_noheader.csv", y, delimiter=",", fmt="%d")
    a = _register(tmp_path, tmp_path / "x.npy", tmp_path / "y.npy", task="a")
    b = _register(tmp_path, tmp_path / "x.csv", tmp_path / "y.csv", task="b")
    c = _register(tmp_path, tmp_path / "x_noheader.csv", tmp_path / "y_noheader.csv", task="c")
    assert a["fingerprint"] == b["fingerprint"] == c["fingerprint"]


def test_parquet_files_are_read(tmp_path):
    x, y = _arrays(n=30, k=4, n_classes=3)
    pd.DataFrame(x, columns=[f"f{i}" for i in range(4)]).to_parquet(tmp_path / "x.parquet")
    pd.DataFrame({"y": y}).to_parquet(tmp_path / "y.parquet")
    meta = _register(
        tmp_path,
        tmp_path / "x.parquet",
        tmp_path / "y.parquet",
        spec={"n_features": 4, "n_classes": 3},
        task_type="multiclass_classification",
    )
    assert meta["row_count"] == 30 and meta["n_classes"] == 3


def test_regression_labels_are_stored_as_floats(tmp_path):
    x = RNG.normal(size=(20, 4))
    y = RNG.normal(size=20)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    _register(
        tmp_path,
        tmp_path / "x.npy",
        tmp_path / "y.npy",
        spec={"n_features": 4},
        task_type="regression",
    )
    data = load_task_data(data_dir=tmp_path / "data", task_id="3")
    assert data.labels.dtype == np.float64 and np.allclose(data.labels, y)
    assert data.n_classes is None


def test_task_type_may_come_from_the_input_spec(tmp_path):
    x, y = _arrays()
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    meta = _register(
        tmp_path,
        tmp_path / "x.npy",
        tmp_path / "y.npy",
        spec={**SPEC, "task_type": "binary_classification"},
        task_type=None,
    )
    assert meta["task_type"] == "binary_classification"


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda x, y: (x[:, :3], y), "columns"),
        (lambda x, y: (x, y[:-1]), "labels for"),
        (lambda x, y: (np.where(np.arange(x.size).reshape(x.shape) == 5, np.nan, x), y), "NaN"),
        (
            lambda x, y: (np.where(np.arange(x.size).reshape(x.shape) == 5, np.inf, x), y),
            "infinite",
        ),
        (lambda x, y: (x * 1e39, y), "overflow"),
        (lambda x, y: (x, y + 1), "class indices"),
        (lambda x, y: (x, y + 0.5), "integer"),
        (lambda x, y: (x, np.zeros_like(y)), "single class"),
        (lambda x, y: (x[:0], y[:0]), "no rows"),
    ],
)
def test_data_that_does_not_match_the_spec_is_refused_with_a_clear_message(
    tmp_path, mutate, message
):
    x, y = mutate(*_arrays())
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    with pytest.raises(InvalidData, match=message):
        _register(tmp_path, tmp_path / "x.npy", tmp_path / "y.npy")
    assert not (tmp_path / "data" / "tasks" / "3" / "meta.json").exists()


def test_non_numeric_csv_columns_are_refused(tmp_path):
    x, y = _arrays()
    df = pd.DataFrame(x, columns=list("abcd"))
    df["d"] = ["text"] * len(df)
    df.to_csv(tmp_path / "x.csv", index=False)
    np.save(tmp_path / "y.npy", y)
    with pytest.raises(InvalidData, match="non-numeric"):
        _register(tmp_path, tmp_path / "x.csv", tmp_path / "y.npy")


def test_pickled_npy_is_refused(tmp_path):
    np.save(tmp_path / "x.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.save(tmp_path / "y.npy", np.array([0]))
    with pytest.raises(InvalidData):
        _register(tmp_path, tmp_path / "x.npy", tmp_path / "y.npy")


def test_unsupported_file_type_and_bad_task_ids_are_refused(tmp_path):
    (tmp_path / "x.xlsx").write_bytes(b"nope")
    np.save(tmp_path / "y.npy", np.array([0, 1]))
    with pytest.raises(InvalidData, match="unsupported"):
        _register(tmp_path, tmp_path / "x.xlsx", tmp_path / "y.npy")
    x, y = _arrays()
    np.save(tmp_path / "x.npy", x)
    with pytest.raises(InvalidData, match="task id"):
        _register(tmp_path, tmp_path / "x.npy", tmp_path / "y.npy", task="../escape")


def test_multiclass_needs_n_classes(tmp_path):
    x, y = _arrays()
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    with pytest.raises(InvalidData, match="n_classes"):
        _register(
            tmp_path,
            tmp_path / "x.npy",
            tmp_path / "y.npy",
            spec={"n_features": 4},
            task_type="multiclass_classification",
        )


def test_load_returns_the_features_file_and_labels(tmp_path):
    x, y = _arrays()
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    meta = _register(tmp_path, tmp_path / "x.npy", tmp_path / "y.npy")
    data = load_task_data(data_dir=tmp_path / "data", task_id=3)
    assert data.row_count == 50 and data.fingerprint == meta["fingerprint"]
    assert data.features_path == data.features_dir / "features.npy"
    assert "labels" not in str(data.features_dir)
    assert np.array_equal(data.labels, y)


def test_load_detects_altered_data(tmp_path):
    x, y = _arrays()
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    _register(tmp_path, tmp_path / "x.npy", tmp_path / "y.npy")
    labels_path = tmp_path / "data" / "tasks" / "3" / "labels" / "labels.npy"
    np.save(labels_path, 1 - y)
    with pytest.raises(DataUnavailable):
        load_task_data(data_dir=tmp_path / "data", task_id="3")


def test_load_of_an_unknown_task_is_data_unavailable(tmp_path):
    with pytest.raises(DataUnavailable) as exc:
        load_task_data(data_dir=tmp_path, task_id="99")
    assert exc.value.reason == "data_unavailable"


def test_re_registering_replaces_the_data(tmp_path):
    x, y = _arrays()
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    first = _register(tmp_path, tmp_path / "x.npy", tmp_path / "y.npy")
    np.save(tmp_path / "x.npy", x[:20])
    np.save(tmp_path / "y.npy", y[:20])
    second = _register(tmp_path, tmp_path / "x.npy", tmp_path / "y.npy")
    assert second["row_count"] == 20 and second["fingerprint"] != first["fingerprint"]
    assert load_task_data(data_dir=tmp_path / "data", task_id="3").row_count == 20
