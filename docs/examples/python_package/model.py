"""A `python_package` model: logistic regression in pure numpy, weights in weights.safetensors.

The runner imports this file from the unpacked archive (a read-only folder) and calls
    model = load(model_dir)                 # once
    probabilities = predict(model, features)  # per batch; features: float32 (n_rows, 30)
predict must return class probabilities of shape (n_rows, 2) and treat rows independently.
"""

from pathlib import Path

import numpy as np
from safetensors.numpy import load_file


def load(model_dir):
    return load_file(str(Path(model_dir) / "weights.safetensors"))


def predict(model, features):
    standardized = (features - model["mean"]) / model["scale"]
    z = standardized @ model["coef"] + model["intercept"]
    p1 = 0.5 * (1.0 + np.tanh(0.5 * z))  # the logistic sigmoid, without overflow
    return np.stack([1.0 - p1, p1], axis=1).astype(np.float32)
