"""Build an `onnx` submission: a scikit-learn model converted with skl2onnx.

    python docs/examples/make_onnx_model.py model.onnx [--seed 0]

The runner opens onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"]), feeds
the graph's only input a float32 array (n_rows, 30) and reads the first output whose name
contains "prob" (here "probabilities"). zipmap=False makes that output a plain
(n_rows, 2) float tensor instead of a list of dicts.
"""

from _common import load_split, parse_args, report  # the helper next to this script
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.ensemble import GradientBoostingClassifier

args = parse_args("Train a scikit-learn model and save it as ONNX.", (".onnx",))
X_train, y_train, X_test, y_test = load_split()

model = GradientBoostingClassifier(n_estimators=100, max_depth=3, random_state=args.seed)
model.fit(X_train, y_train)
print(f"held-out accuracy: {model.score(X_test, y_test):.4f}")

onnx_model = convert_sklearn(
    model,
    initial_types=[("input", FloatTensorType([None, X_train.shape[1]]))],  # any batch size
    options={id(model): {"zipmap": False}},
)
onnx_model.graph.name = "breast_cancer_gradient_boosting"  # skl2onnx would pick a random name
args.out.write_bytes(onnx_model.SerializeToString())
report(args.out)
