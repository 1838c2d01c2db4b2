"""Build a `python_package` submission: model.py + weights.safetensors, zipped or tarred.

    python docs/examples/make_python_package.py model.zip [--seed 0]
    python docs/examples/make_python_package.py model.tar.gz [--seed 0]

The package folder holds python_package/model.py (copied as is: pure numpy, `load` and
`predict`) and weights.safetensors (the standardization and the logistic regression's
coefficients). The folder's files go at the archive's root: no folder prefix, no links, no
absolute paths, no "..": see docs/model-contract.md. Entries get a fixed timestamp and owner, so
the same seed gives the same bytes and the same sha256.
"""

import gzip
import shutil
import tarfile
import tempfile
import zipfile
from pathlib import Path

import numpy as np
from _common import load_split, parse_args, report  # the helper next to this script
from safetensors.numpy import save_file
from sklearn.linear_model import LogisticRegression

args = parse_args("Train a logistic regression and package it.", (".zip", ".tar.gz"))
X_train, y_train, X_test, y_test = load_split()

mean, scale = X_train.mean(axis=0), X_train.std(axis=0).clip(min=1e-6)
classifier = LogisticRegression(max_iter=1000, random_state=args.seed)
classifier.fit((X_train - mean) / scale, y_train)
print(f"held-out accuracy: {classifier.score((X_test - mean) / scale, y_test):.4f}")
weights = {
    "mean": mean.astype(np.float32),  # (30,)
    "scale": scale.astype(np.float32),  # (30,)
    "coef": classifier.coef_[0].astype(np.float32),  # (30,)
    "intercept": classifier.intercept_.astype(np.float32),  # (1,)
}

with tempfile.TemporaryDirectory() as tmp:
    package = Path(tmp)
    shutil.copyfile(Path(__file__).parent / "python_package" / "model.py", package / "model.py")
    save_file(weights, str(package / "weights.safetensors"))
    members = sorted(path.name for path in package.iterdir())  # ["model.py", "weights.safetensors"]

    if args.out.name.endswith(".zip"):
        with zipfile.ZipFile(args.out, "w") as archive:
            for name in members:
                info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16  # a regular file, rw-r--r--
                archive.writestr(info, (package / name).read_bytes())
    else:
        with (
            open(args.out, "wb") as raw,
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as compressed,
            tarfile.open(fileobj=compressed, mode="w", format=tarfile.PAX_FORMAT) as archive,
        ):
            for name in members:
                info = archive.gettarinfo(package / name, arcname=name)
                info.mtime, info.mode = 0, 0o644
                info.uid, info.gid, info.uname, info.gname = 0, 0, "", ""
                with open(package / name, "rb") as member:
                    archive.addfile(info, member)

report(args.out)
