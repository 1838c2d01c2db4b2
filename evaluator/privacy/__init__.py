"""Differentially private releases of evaluation results: a pure library used by the site (to
release) and by the hub (to reserve budgets and to pool what sites released).

- ``zcdp``: the privacy currency. Every release is a Gaussian mechanism; its cost is rho
  (zero-concentrated DP), which composes by addition, and is shown as (epsilon, delta) through
  the RDP accountant of Opacus.
- ``statistics``: the sufficient statistics each metric needs, their per-row sensitivity, and
  the metrics computed back from (pooled, noised) statistics.
- ``mechanism``: the Gaussian noise calibrated to a release's rho.

Imports nothing from the agent or the hub (see docs/disclosure.md).
"""
