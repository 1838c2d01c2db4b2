"""Compiled scikit-learn models against the real engine: the first job of an artifact converts
it in its sandbox, the host keeps the checked form, the next job runs it in a fresh container
that never imports scikit-learn, with the same predictions; a hostile conversion output is
refused without touching the job."""

from __future__ import annotations

import os
import pickle
import textwrap
import uuid
from dataclasses import replace

import joblib
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from evaluator import sandbox
from evaluator.outputs import load_predictions
from evaluator.runner.compiled import TOLERANCE
from evaluator.sandbox_pool import PoolKey, WarmPool
from tests.sandbox.conftest import DEFAULT_LIMITS, N_FEATURES

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def example_model(site):
    labels = np.load(site.labels_path)
    model = make_pipeline(StandardScaler(), LogisticRegression()).fit(site.features, labels)
    path = site.root / "model.joblib"
    joblib.dump(model, path)
    return model, site.prepare(path, "sklearn")


def recording(pool):
    """The formats the pool's runs used, in order (a spy on its one internal entry point)."""
    formats: list[str] = []
    run = pool._run

    def spy(key, **kwargs):
        formats.append(key.model_format)
        return run(key, **kwargs)

    pool._run = spy
    return formats


def job(site, pool, model):
    run = pool.run_prediction(
        image=site.image, model_path=model, model_format="sklearn", features_path=site.features_path,
        work_dir=site.work_dir, limits=DEFAULT_LIMITS, client=site.client,
    )  # fmt: skip
    out = run.predictions_path.parent
    assert os.listdir(out) == ["predictions.npy"], "the job's reader sees the predictions alone"
    return load_predictions(out, n_rows=len(site.features), task_type="binary_classification", n_classes=2,
                            max_bytes=DEFAULT_LIMITS.max_output_mb << 20)  # fmt: skip


@pytest.mark.parametrize("size", [0, 1], ids=["cold", "pooled"])
def test_the_second_job_runs_the_compiled_form_with_the_same_predictions(site, size):
    estimator, model = example_model(site)
    want = estimator.predict_proba(site.features)
    with WarmPool(work_root=site.work_dir, size=size, memory_mb=4096, compile_models=True) as pool:
        formats = recording(pool)
        first = job(site, pool, model)
        assert len(os.listdir(pool.compiled.root)) == 1, "the conversion was kept"
        if size:
            assert pool.wait_warm(180)
        second = job(site, pool, model)
        third = job(site, pool, model)
    assert formats == ["sklearn", "compiled", "compiled"]
    assert np.max(np.abs(first - want)) <= 1e-6
    assert np.max(np.abs(second - first)) <= TOLERANCE and np.array_equal(second, third)


def loaded_modules(site, model, model_format: str, *, compile_model: bool = False) -> str:
    """Runs the job's sandbox with the runner's own main, then a look at what it imported."""
    probe = site.work_dir / f"probe-{uuid.uuid4().hex[:8]}"
    probe.mkdir()
    prepared = sandbox.prepare_prediction(
        image_id=sandbox.resolve_image(site.client, site.image), model_path=model, model_format=model_format,
        features_path=site.features_path, work_dir=probe, limits=DEFAULT_LIMITS, compile_model=compile_model,
    )  # fmt: skip
    config = dict(prepared.config)
    config["entrypoint"] = ["python3", "-c", textwrap.dedent("""
        import sys
        import runner.cli
        code = runner.cli.main()
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("sklearn", "scipy", "joblib", "torch"))
        print("LOADED", loaded, file=sys.stderr)
        sys.exit(code)
    """)]  # fmt: skip
    run = sandbox.execute(replace(prepared, config=config), limits=DEFAULT_LIMITS, client=site.client)
    assert run.predictions_path.is_file()
    return run.logs


def test_the_compiled_runner_never_imports_sklearn(site):
    """The numpy-only path, probed from inside: a compiled form's container has no scikit-learn
    module loaded when it predicts (the CPU saving is exactly that import)."""
    _, model = example_model(site)
    with WarmPool(work_root=site.work_dir, size=0, memory_mb=4096, compile_models=True) as pool:
        job(site, pool, model)
        folder = next(pool.compiled.root.iterdir())
        assert "LOADED []" in loaded_modules(site, folder, "compiled")


def test_the_first_job_of_a_linear_model_never_imports_sklearn(site):
    """The plain reader in the real image: the example's pickle is read without scikit-learn,
    joblib's package or any pickle code, and the form is written for later jobs."""
    _, model = example_model(site)
    logs = loaded_modules(site, model, "sklearn", compile_model=True)
    assert "LOADED []" in logs and "read without scikit-learn" in logs
    assert "'sklearn'" in loaded_modules(site, model, "sklearn"), "positive control: the usual load imports it"


def test_a_pool_warmed_for_plain_reading_still_runs_any_sklearn_model_and_follows_the_last_job(site):
    """The pool warms the plain reader while the last scikit-learn model had a form: a tree then
    imports scikit-learn in its job (same predictions), and the next container warms scikit-learn."""
    from sklearn.ensemble import RandomForestClassifier

    labels = np.load(site.labels_path)
    tree = RandomForestClassifier(n_estimators=5, random_state=0).fit(site.features, labels)
    joblib.dump(tree, site.root / "tree.joblib")
    tree_model = site.prepare(site.root / "tree.joblib", "sklearn")
    _, linear_model = example_model(site)
    with WarmPool(work_root=site.work_dir, size=1, memory_mb=4096, compile_models=True) as pool:
        slot_command = lambda: pool._container_config(key=key, job_dir=site.work_dir, out_dir=site.work_dir)["command"]  # noqa: E731
        image_id = sandbox.resolve_image(site.client, site.image)
        key = PoolKey(image_id, "sklearn", DEFAULT_LIMITS, pool.runtime)
        assert "--plain-sklearn" in slot_command()
        job(site, pool, linear_model)  # warms the key
        assert pool.wait_warm(180)
        got = job(site, pool, tree_model)
        assert "--plain-sklearn" not in slot_command(), "the last model needed scikit-learn: warm it"
        other = LogisticRegression(C=0.5).fit(site.features, labels)  # another artifact: no form kept yet
        joblib.dump(other, site.root / "other.joblib")
        job(site, pool, site.prepare(site.root / "other.joblib", "sklearn"))
        assert "--plain-sklearn" in slot_command()
    assert np.array_equal(got, tree.predict_proba(site.features).astype(np.float32))


HOSTILE_CONVERSIONS = {
    "a symlink to the host's /etc": "os.symlink('/etc', '/out/compiled')",
    "an op that is not on the allow-list": (
        "os.mkdir('/out/compiled'); "
        "open('/out/compiled/spec.json', 'w').write(json.dumps({'version': 1, 'n_features': " + str(N_FEATURES) + ", "
        "'steps': [], 'head': {'op': 'exec', 'coef': 'c', 'intercept': 'i'}})); "
        "open('/out/compiled/weights.safetensors', 'wb').write(b'garbage')"
    ),
    "a file where the folder goes": "open('/out/compiled', 'w').write('x' * 100)",
}


@pytest.mark.parametrize("case", sorted(HOSTILE_CONVERSIONS))
def test_a_hostile_conversion_output_is_refused_and_the_job_goes_on(site, case):
    """The pickle's own code writes ``/out/compiled`` before the runner can: the host refuses it,
    removes it, keeps nothing, and reads the job's predictions as always."""
    estimator, _ = example_model(site)
    code = f"import os, json; {HOSTILE_CONVERSIONS[case]}"

    class Hostile:  # runs ``code`` while it unpickles, then is the real estimator
        def __reduce__(self):
            return (eval, (f"(exec({code!r}), __import__('pickle').loads({pickle.dumps(estimator)!r}))[1]",))

    path = site.root / "hostile.joblib"
    joblib.dump(Hostile(), path)
    model = site.prepare(path, "sklearn")
    with WarmPool(work_root=site.work_dir, size=0, memory_mb=4096, compile_models=True) as pool:
        formats = recording(pool)
        got = job(site, pool, model)
        again = job(site, pool, model)
        assert not pool.compiled.root.exists() or not os.listdir(pool.compiled.root)
    assert formats == ["sklearn", "sklearn"], "nothing was kept: every job loads the pickle"
    assert np.max(np.abs(got - estimator.predict_proba(site.features))) <= 1e-6
    assert np.array_equal(got, again)
    assert os.path.isdir("/etc") and os.listdir("/etc"), "the host's /etc is untouched"

