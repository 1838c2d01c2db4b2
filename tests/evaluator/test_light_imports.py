"""The runner's lighter imports (evaluator/runner/light_imports.py) without an engine: a deferred
module runs its body on first use and only then; the docstring hooks act on the pinned scipy
and change no computation. Whole-interpreter checks run in a fresh ``python`` each, since the
finder acts on first imports only."""

from __future__ import annotations

import importlib.machinery
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from evaluator.runner import light_imports
from evaluator.runner.light_imports import LightImportFinder

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def probe_module(tmp_path, monkeypatch):
    """A module ``vb_light_probe`` whose body counts its runs in ``RUNS``."""
    (tmp_path / "vb_light_probe.py").write_text(
        "import builtins\nbuiltins.VB_LIGHT_RUNS = getattr(builtins, 'VB_LIGHT_RUNS', 0) + 1\nVALUE = 42\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    finder = LightImportFinder(["vb_light_probe"], {})
    sys.meta_path.insert(0, finder)
    import builtins

    builtins.VB_LIGHT_RUNS = 0  # type: ignore[attr-defined]
    yield builtins
    sys.meta_path.remove(finder)
    sys.modules.pop("vb_light_probe", None)
    del builtins.VB_LIGHT_RUNS  # type: ignore[attr-defined]


def test_a_deferred_module_runs_its_body_on_first_use_only(probe_module):
    import vb_light_probe  # type: ignore[import-not-found]

    assert probe_module.VB_LIGHT_RUNS == 0
    assert light_imports.deferred_now() == ["vb_light_probe"]
    import vb_light_probe as again  # type: ignore[import-not-found]  # noqa: F401 - a second import statement

    assert probe_module.VB_LIGHT_RUNS == 0, "the import system's __spec__ check must not run the body"
    assert vb_light_probe.VALUE == 42
    assert probe_module.VB_LIGHT_RUNS == 1
    assert vb_light_probe.VALUE == 42
    assert probe_module.VB_LIGHT_RUNS == 1
    assert type(vb_light_probe).__name__ == "module"
    assert light_imports.deferred_now() == []


def test_a_from_import_runs_a_deferred_module(probe_module):
    from vb_light_probe import VALUE  # type: ignore[import-not-found]

    assert VALUE == 42
    assert probe_module.VB_LIGHT_RUNS == 1


def test_assigning_to_a_deferred_module_runs_it_first(probe_module):
    import vb_light_probe  # type: ignore[import-not-found]

    vb_light_probe.VALUE = 7
    assert probe_module.VB_LIGHT_RUNS == 1
    assert vb_light_probe.VALUE == 7, "the assignment comes after the body, as with an eager import"


def test_only_modules_run_from_files_are_changed():
    finder = LightImportFinder(["itertools"], {})
    spec = finder.find_spec("itertools", None)
    assert spec is not None
    assert spec.loader is importlib.machinery.BuiltinImporter, "a built-in module keeps its own loader"
    assert finder.find_spec("json", None) is None, "a name the finder does not know is left to the others"


def test_the_hooks_are_written_for_the_scipy_the_image_pins():
    pins = (REPO / "sandbox_images" / "requirements-runner.txt").read_text().split()
    assert f"scipy=={light_imports.SCIPY_VERSION}" in pins


def _fresh_python(code: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


# The same computations with and without the hooks: scipy functions whose docstrings the hooks
# leave alone (xp_capabilities, axis_nan_policy, distributions old and new) and a scikit-learn
# pipeline that uses them.
COMPUTE = """
    import json, sys
    if LIGHT:
        from evaluator.runner import light_imports
        light_imports.install()
    import numpy as np
    import scipy.stats as st, scipy.special as sp
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import QuantileTransformer, SplineTransformer
    from sklearn.linear_model import LogisticRegression
    rng = np.random.default_rng(3)
    x = rng.normal(size=(200, 4))
    y = (x[:, 0] + x[:, 1] ** 2 > 1).astype(int)
    model = make_pipeline(QuantileTransformer(n_quantiles=50, output_distribution="normal"),
                          SplineTransformer(), LogisticRegression()).fit(x, y)
    values = {
        "norm": st.norm.cdf(x[:, 0]).tolist(), "gamma": st.gamma(2.5).ppf([0.1, 0.5, 0.9]).tolist(),
        "ttest": float(st.ttest_ind(x[:, 0], x[:, 1]).pvalue), "gmean": float(st.gmean(np.abs(x[:, 2]) + 1)),
        "rankdata": st.rankdata(x[:, 3]).tolist(), "expit": sp.expit(x[:, 1]).tolist(),
        "normal": float(st.Normal(mu=1.0, sigma=2.0).cdf(0.5)), "model": model.predict_proba(x).tolist(),
    }
    import scipy._lib._docscrape as ds
    hooked = ds.FunctionDoc.__name__ == "_KeptDoc"
    print(json.dumps({"values": values, "hooked": hooked, "doc": st.ttest_ind.__doc__ is not None}))
"""


@pytest.mark.slow
def test_the_hooks_change_docstrings_not_results():
    eager = _fresh_python("LIGHT = False\n" + textwrap.dedent(COMPUTE))
    light = _fresh_python("LIGHT = True\n" + textwrap.dedent(COMPUTE))
    assert not eager["hooked"] and light["hooked"], "the hooks acted in the light interpreter only"
    assert light["values"] == eager["values"]
    assert light["doc"], "docstrings are kept as written, not removed"


@pytest.mark.slow
def test_the_deferred_modules_stay_unrun_through_a_scikit_learn_prediction():
    result = _fresh_python("""
        import json
        from evaluator.runner import light_imports
        light_imports.install()
        import joblib, numpy as np
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
        from sklearn.linear_model import LogisticRegression
        x = np.random.default_rng(0).normal(size=(50, 3))
        make_pipeline(StandardScaler(), LogisticRegression()).fit(x, x[:, 0] > 0).predict_proba(x)
        print(json.dumps(light_imports.deferred_now()))
    """)
    assert set(result) <= set(light_imports.DEFERRED)
    assert {"numpy.testing", "asyncio"} <= set(result), "what the deferral is for"
