"""Is the runner image sound? A known-good model, run the way a vendor's is.

When a vendor's model fails in the sandbox (crashed, timed out, bad output), the site first asks
whether its own runner image would fail the same way: it runs this canary, a tiny
``python_package`` model that predicts a constant, on a few rows of zeros (no site data), with
the same image id and limits. If the canary fails too, the fault is the site's (a broken or
replaced runner image) and the job ends as the site's retryable failure, not as the vendor's.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

CANARY_ROWS = 4
CANARY_PREFIX = "canary-"
_MODEL = '''
import numpy as np


def load(model_dir):
    return None


def predict(model, features):
    n = len(features)
    k = {k}
    if k == 0:
        return np.zeros(n, dtype=np.float32)
    return np.full((n, k), 1.0 / k, dtype=np.float32)
'''


def runner_is_sound(
    *,
    sandbox_runner: Callable[..., Any],
    load_predictions: Callable[..., Any],
    image: str,
    work_dir: Path,
    n_features: int,
    task_type: str,
    n_classes: int | None,
    limits: Any,
) -> bool:
    """True when the canary runs and its output validates. ``SandboxUnavailable`` (the engine)
    propagates: that is the site's trouble already."""
    from evaluator.sandbox import SandboxUnavailable

    classes = 0 if task_type == "regression" else int(n_classes or 2)
    folder = Path(tempfile.mkdtemp(prefix=CANARY_PREFIX, dir=work_dir))
    try:
        model = folder / "model"
        model.mkdir(mode=0o755)
        (model / "model.py").write_text(_MODEL.replace("{k}", str(classes)))
        (model / "model.py").chmod(0o644)
        folder.chmod(0o755)
        features = folder / "features.npy"
        np.save(features, np.zeros((CANARY_ROWS, max(1, n_features)), dtype=np.float32))
        features.chmod(0o644)
        run = sandbox_runner(
            image=image, model_path=model, model_format="python_package", features_path=features,
            work_dir=folder, limits=limits, batch_size=CANARY_ROWS,
        )  # fmt: skip
        load_predictions(
            Path(run.predictions_path).parent, n_rows=CANARY_ROWS, task_type=task_type,
            n_classes=n_classes, max_bytes=1 << 20,
        )  # fmt: skip
        return True
    except SandboxUnavailable:
        raise
    except Exception as exc:
        log.error("the runner image %s failed its self-test: %s", image, str(exc)[:500])
        return False
    finally:
        shutil.rmtree(folder, ignore_errors=True)
