import hashlib
import json
import os
import stat
import threading

import numpy as np
import pandas as pd
import pytest

from evaluator.datasets import (
    DataUnavailable,
    InvalidData,
    fingerprint,
    load_task_data,
    load_train_data,
    register_task_data,
    site_key,
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
    assert meta["fingerprint"] == fingerprint(features, labels, key=site_key(tmp_path / "data"))


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


# --- the fingerprint is keyed with the site's own secret --------------------------------------


def _unkeyed(features, labels):
    h = hashlib.sha256()
    for name, arr in (("features", features), ("labels", labels)):
        arr = np.ascontiguousarray(arr)
        h.update(f"{name}:{arr.dtype.str}:{list(arr.shape)}\n".encode())
        h.update(arr.data)
    return h.hexdigest()


def test_fingerprint_is_keyed_so_the_same_rows_at_two_sites_do_not_match(tmp_path):
    x, y = _arrays()
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    site_a = _register(tmp_path / "a", tmp_path / "x.npy", tmp_path / "y.npy")
    site_b = _register(tmp_path / "b", tmp_path / "x.npy", tmp_path / "y.npy")
    assert site_a["fingerprint"] != site_b["fingerprint"]
    # nobody holding the public rows can recompute it without the site's key
    stored = np.load(tmp_path / "a" / "data" / "tasks" / "3" / "features" / "features.npy")
    assert site_a["fingerprint"] != _unkeyed(stored, y)
    # the hub's format: 64 lower-case hex digits
    assert len(site_a["fingerprint"]) == 64 and set(site_a["fingerprint"]) <= set("0123456789abcdef")
    assert site_a["fingerprint_scheme"] == "hmac-sha256"


def test_fingerprint_still_changes_when_the_data_changes_under_one_key(tmp_path):
    key = site_key(tmp_path)
    x, y = _arrays()
    features = x.astype(np.float32)
    assert fingerprint(features, y, key=key) == fingerprint(features.copy(), y.copy(), key=key)
    changed = features.copy()
    changed[0, 0] += 1
    assert fingerprint(changed, y, key=key) != fingerprint(features, y, key=key)
    with pytest.raises(ValueError):
        fingerprint(features, y, key=b"short")


def test_site_key_is_made_once_private_and_stable(tmp_path):
    data_dir = tmp_path / "data"
    key = site_key(data_dir)
    path = data_dir / "fingerprint.key"
    assert len(key) == 32 and path.read_bytes() == key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert site_key(data_dir) == key
    assert [p.name for p in data_dir.iterdir()] == ["fingerprint.key"]  # no temporary left behind
    path.chmod(0o644)  # e.g. restored from a backup
    assert site_key(data_dir) == key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_agents_starting_at_once_agree_on_one_key(tmp_path):
    keys, barrier = [], threading.Barrier(8)

    def make():
        barrier.wait()
        keys.append(site_key(tmp_path))

    threads = [threading.Thread(target=make) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(keys)) == 1 and len(keys) == 8


def test_a_symlinked_or_malformed_key_is_refused(tmp_path):
    (tmp_path / "elsewhere").write_bytes(os.urandom(32))
    (tmp_path / "fingerprint.key").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(DataUnavailable):
        site_key(tmp_path)
    (tmp_path / "fingerprint.key").unlink()
    (tmp_path / "fingerprint.key").write_bytes(b"too short")
    with pytest.raises(DataUnavailable):
        site_key(tmp_path)


def test_a_lost_key_makes_stored_data_unavailable_not_silently_rekeyed(tmp_path):
    x, y = _arrays()
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    _register(tmp_path, tmp_path / "x.npy", tmp_path / "y.npy")
    (tmp_path / "data" / "fingerprint.key").unlink()
    with pytest.raises(DataUnavailable):
        load_task_data(data_dir=tmp_path / "data", task_id="3")
    assert not (tmp_path / "data" / "fingerprint.key").exists()


def test_shards_stored_before_the_key_are_still_verified_with_the_old_hash(tmp_path):
    x, y = _arrays()
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    _register(tmp_path, tmp_path / "x.npy", tmp_path / "y.npy")
    root = tmp_path / "data" / "tasks" / "3"
    meta = json.loads((root / "meta.json").read_text())
    features = np.load(root / "features" / "features.npy")
    del meta["fingerprint_scheme"]
    meta["fingerprint"] = _unkeyed(features, y)  # what an older agent stored
    (root / "meta.json").write_text(json.dumps(meta))
    assert load_task_data(data_dir=tmp_path / "data", task_id="3").fingerprint == meta["fingerprint"]
    np.save(root / "labels" / "labels.npy", 1 - y)
    with pytest.raises(DataUnavailable):
        load_task_data(data_dir=tmp_path / "data", task_id="3")


def test_the_train_split_is_verified_with_the_site_key(tmp_path):
    x, y = _arrays()
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    meta = register_task_data(
        data_dir=tmp_path / "data", task_id="3", features_path=tmp_path / "x.npy",
        labels_path=tmp_path / "y.npy", input_spec=SPEC, task_type="binary_classification", split="train",
    )  # fmt: skip
    assert load_train_data(data_dir=tmp_path / "data", task_id="3").fingerprint == meta["fingerprint"]
    np.save(tmp_path / "data" / "tasks" / "3" / "train" / "labels" / "labels.npy", 1 - y)
    with pytest.raises(DataUnavailable):
        load_train_data(data_dir=tmp_path / "data", task_id="3")
