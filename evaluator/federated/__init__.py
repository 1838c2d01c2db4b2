"""Federated fine-tuning: the math and protocol core, as pure library code.

- ``updates``: flatten/unflatten weight dicts, L2 clipping, Gaussian noise for distributed DP,
  stochastic quantization to integers for secure aggregation.
- ``secagg``: Bonawitz et al. 2017 secure aggregation with double masking (site and hub sides).
- ``accounting``: RDP privacy accounting and a ledger that stops a run before the owner's cap.
- ``robust``: norm bounding, coordinate-wise median, trimmed mean (only WITHOUT secure aggregation).
- ``strategies``: the server optimizers (FedAvg, FedProx, FedAdam) behind a small base class.
- ``client_update``: the site-side pipeline old/new weights -> clipped, noised, quantized vector.

Nothing here imports Django, ``marketplace`` or torch at import time.
"""
