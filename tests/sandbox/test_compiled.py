"""Compiled scikit-learn models against the real engine: the first job of an artifact converts
it in its sandbox, the host keeps the checked form, the next job runs it in a fresh container
that never imports scikit-learn, with the same predictions; a hostile conversion output is
refused without touching the job."""

from __future__ import annotations

import os
import pickle
import textwrap
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
from evaluator.sandbox_pool import WarmPool
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


def test_the_compiled_runner_never_imports_sklearn(site):
    """The numpy-only path, probed from inside: a compiled form's container has no scikit-learn
    module loaded when it predicts (the CPU saving is exactly that import)."""
    _, model = example_model(site)
    with WarmPool(work_root=site.work_dir, size=0, memory_mb=4096, compile_models=True) as pool:
        job(site, pool, model)
        folder = next(pool.compiled.root.iterdir())
        probe = site.work_dir / "probe"
        probe.mkdir()
        prepared = sandbox.prepare_prediction(
            image_id=sandbox.resolve_image(site.client, site.image), model_path=folder, model_format="compiled",
            features_path=site.features_path, work_dir=probe, limits=DEFAULT_LIMITS,
        )  # fmt: skip
    config = dict(prepared.config)  # the runner's own main, then a look at what it imported
    config["entrypoint"] = ["python3", "-c", textwrap.dedent("""
        import sys
        import runner.cli
        code = runner.cli.main()
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("sklearn", "scipy", "joblib", "torch"))
        print("LOADED", loaded, file=sys.stderr)
        sys.exit(code)
    """)]  # fmt: skip
    run = sandbox.execute(replace(prepared, config=config), limits=DEFAULT_LIMITS, client=site.client)
    assert "LOADED []" in run.logs
    assert run.predictions_path.is_file()


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

