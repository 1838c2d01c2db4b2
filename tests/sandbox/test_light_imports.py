"""The runner's lighter imports against the real engine: the runner image runs them (a model can
see the finder and the kept docstrings), and every scikit-learn estimator type below predicts
byte for byte what it predicts in the same container profile with the plain imports."""

from __future__ import annotations

import warnings

import joblib
import numpy as np
import pytest
from sklearn.decomposition import PCA
from sklearn.ensemble import (
    GradientBoostingClassifier,
    HistGradientBoostingClassifier,
    RandomForestClassifier,
)
from sklearn.linear_model import ElasticNet, Lasso, LinearRegression, LogisticRegression, Ridge
from sklearn.naive_bayes import GaussianNB
from sklearn.neighbors import KNeighborsClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import (
    MaxAbsScaler,
    MinMaxScaler,
    PowerTransformer,
    QuantileTransformer,
    SplineTransformer,
    StandardScaler,
)
from sklearn.svm import SVC
from sklearn.tree import DecisionTreeClassifier

pytestmark = [pytest.mark.docker, pytest.mark.slow]

# The runner's own CLI without `light_imports.install()` (what `python -m runner` ran before).
PLAIN_ENTRYPOINT = ["python3", "-c", "import sys; from runner.cli import main; sys.exit(main(sys.argv[1:]))"]


def estimators():
    """(name, estimator, labels kind): the examples' pipeline and the common estimator types."""
    return [
        ("scaler_logistic", make_pipeline(StandardScaler(), LogisticRegression()), "binary"),
        (
            "minmax_maxabs_logistic_3",
            make_pipeline(MinMaxScaler(), MaxAbsScaler(), LogisticRegression()),
            "multi",
        ),
        ("linear_regression", LinearRegression(), "real"),
        ("ridge", make_pipeline(StandardScaler(), Ridge()), "real"),
        ("lasso", Lasso(alpha=0.01), "real"),
        ("elastic_net", ElasticNet(alpha=0.01), "real"),
        ("decision_tree", DecisionTreeClassifier(random_state=0), "binary"),
        ("random_forest", RandomForestClassifier(n_estimators=5, random_state=0), "multi"),
        ("gradient_boosting", GradientBoostingClassifier(n_estimators=5, random_state=0), "binary"),
        ("hist_gradient_boosting", HistGradientBoostingClassifier(max_iter=5, random_state=0), "binary"),
        ("mlp", MLPClassifier(hidden_layer_sizes=(8,), max_iter=30, random_state=0), "binary"),
        ("knn", KNeighborsClassifier(n_neighbors=3), "binary"),
        ("svc", SVC(probability=True, random_state=0), "binary"),
        ("naive_bayes", GaussianNB(), "multi"),
        # scipy.stats / scipy.interpolate / scipy.optimize at prediction time:
        (
            "quantile_normal",
            make_pipeline(
                QuantileTransformer(n_quantiles=20, output_distribution="normal"), LogisticRegression()
            ),
            "binary",
        ),  # fmt: skip
        (
            "power_spline_pca",
            make_pipeline(PowerTransformer(), SplineTransformer(), PCA(n_components=3), Ridge()),
            "real",
        ),
    ]


def labels_for(features: np.ndarray, kind: str) -> np.ndarray:
    if kind == "binary":
        return (features[:, 0] > 0).astype(np.int64)
    if kind == "multi":
        return np.digitize(features[:, 1], [-0.5, 0.5]).astype(np.int64)
    return features @ np.arange(1, features.shape[1] + 1, dtype=np.float32) + 0.5 * features[:, 0] ** 2


def plain(config: dict) -> None:
    assert config["entrypoint"] == ["python3", "-m", "runner"]
    config["entrypoint"] = PLAIN_ENTRYPOINT


def test_every_estimator_type_predicts_the_same_bytes_with_light_imports(site):
    compared = []
    for name, estimator, kind in estimators():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence warnings of the tiny fits
            estimator.fit(site.features, labels_for(site.features, kind))
        artifact = site.root / f"{name}.joblib"
        joblib.dump(estimator, artifact)
        model = site.prepare(artifact, "sklearn")
        light = site.run(model, "sklearn")
        eager = site.run_modified(model, "sklearn", plain)
        assert light.exit_code == 0 and eager.exit_code == 0, (name, light.logs, eager.logs)
        light_bytes = light.predictions_path.read_bytes()
        assert light_bytes == eager.predictions_path.read_bytes(), f"{name}: predictions differ"
        assert len(np.load(light.predictions_path)) == len(site.features)
        compared.append(name)
    assert len(compared) == len(estimators())


def test_the_runner_image_runs_the_light_imports(site):
    # A model that reports what it sees: the finder in front, scipy's docstring parser replaced,
    # a deferred module not run, and scipy.stats computing as usual.
    model = site.package("""
        import sys
        import numpy as np

        def load(model_dir):
            import scipy.stats
            return scipy.stats

        def predict(stats, x):
            finder = type(sys.meta_path[0]).__name__ == "LightImportFinder"
            kept = sys.modules["scipy._lib._docscrape"].FunctionDoc.__name__ == "_KeptDoc"
            deferred = type(sys.modules.get("numpy.testing")).__name__ == "_Deferred"
            value = stats.norm.cdf(0.0)
            return np.tile([float(finder), float(kept), float(deferred), value], (len(x), 1))
    """)
    run = site.run(model, "python_package")
    assert run.exit_code == 0, run.logs
    seen = np.load(run.predictions_path)[0]
    assert seen.tolist() == [1.0, 1.0, 1.0, 0.5]
