#!/usr/bin/env bash
# Demo only: each vendor builds baseline artifacts with docs/examples and uploads them with curl,
# exactly as a vendor would through the REST API.
set -euo pipefail
HUB=$1 SEED=$2 OUT=$3
mkdir -p "$OUT"
field() { python -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2], {}, {"d": d}))' "$SEED" "$1"; }
TASK=$(field 'd["task_id"]')
ACME=$(field 'd["vendors"][0]["token"]')
GLOBEX=$(field 'd["vendors"][1]["token"]')

python docs/examples/make_sklearn_model.py "$OUT/acme-logreg.joblib" >/dev/null
python docs/examples/make_torchscript_model.py "$OUT/acme-mlp.pt" >/dev/null
python docs/examples/make_onnx_model.py "$OUT/globex-boosting.onnx" >/dev/null
python docs/examples/make_python_package.py "$OUT/globex-numpy-logreg.zip" >/dev/null

upload() {  # token, name, format, file
    local sha; sha=$(sha256sum "$4" | cut -d' ' -f1)
    curl -fsS -H "Authorization: Bearer $1" -F task="$TASK" -F name="$2" -F artifact_format="$3" \
        -F sha256="$sha" -F artifact=@"$4" "$HUB/api/v1/submissions" \
        | python -c 'import json,sys; s=json.load(sys.stdin); print("  submitted #%(id)s %(name)s (%(artifact_format)s, %(size)s bytes)" % s)'
}
upload "$ACME" "Logistic regression" sklearn "$OUT/acme-logreg.joblib"
upload "$ACME" "MLP (TorchScript)" torchscript "$OUT/acme-mlp.pt"
upload "$GLOBEX" "Gradient boosting (ONNX)" onnx "$OUT/globex-boosting.onnx"
upload "$GLOBEX" "NumPy logistic regression" python_package "$OUT/globex-numpy-logreg.zip"
