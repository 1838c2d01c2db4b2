"""Build a `sklearn` submission: a fitted estimator saved with joblib.dump.

    python docs/examples/make_sklearn_model.py model.joblib [--seed 0]

The runner calls joblib.load(path) and then predict_proba(features) (classification) or
predict(features) (regression). A joblib file is a pickle: it runs code when loaded, so the
platform only ever loads it inside the sandbox, and you should only load ones you trust.
"""

import joblib
from _common import load_split, parse_args, report  # the helper next to this script
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

args = parse_args("Train and save a scikit-learn baseline.", (".joblib",))
X_train, y_train, X_test, y_test = load_split()

model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=args.seed))
model.fit(X_train, y_train)
print(f"held-out accuracy: {model.score(X_test, y_test):.4f}")

joblib.dump(model, args.out)
report(args.out)
