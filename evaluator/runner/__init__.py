"""The in-sandbox runner: loads a vendor model and writes its predictions.

This package is copied into the sandbox image, where it is the top-level package
``runner`` (``python -m runner predict ...``). It may import only the standard
library, numpy and the model runtimes (torch, scikit-learn/joblib, onnxruntime,
safetensors), never the rest of ``evaluator``.

Nothing here is a security boundary: vendor code runs in this same process and can
do anything the process can. The container profile and the host-side validation of
``/out`` (``evaluator.outputs``) are the boundary.
"""
