"""The torch-free accountant gives Opacus' numbers, and needs neither torch nor Opacus.

Budgets, tests and docs were written against Opacus' RDP accountant; the hub and the site agent now
compute the same epsilons with ``evaluator.privacy.sampled_gaussian`` (Opacus' RDP formulas on numpy
and scipy) and the conversion in ``evaluator.privacy.zcdp.epsilon_from_rdp``. ~6 s (the Opacus grid)
+ ~1 s (the subprocess).
"""

from __future__ import annotations

import itertools
import math
import subprocess
import sys
import warnings

import pytest

from evaluator.federated.accounting import ORDERS, _epsilon
from evaluator.privacy.zcdp import epsilon_for_rho, epsilon_from_rdp

RTOL = 1e-9
DELTAS = (1e-5, 1e-6)
RHOS = (1e-6, 1e-4, 1e-3, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 50.0)


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-300)


def test_subsampled_gaussian_epsilons_match_opacus_rdp_accountant():
    pytest.importorskip("opacus")
    from opacus.accountants import RDPAccountant

    worst = 0.0
    for z, q, steps, delta in itertools.product((0.5, 1.0, 2.0, 5.0), (0.01, 0.1, 1.0), (1, 10, 1000), DELTAS):
        accountant = RDPAccountant()
        accountant.history = [(z, q, steps)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected, _ = accountant.get_privacy_spent(delta=delta, alphas=list(ORDERS))
        got = _epsilon([(z, q, steps)], delta)
        worst = max(worst, _rel(got, expected))
        assert got == pytest.approx(expected, rel=RTOL), (z, q, steps, delta)
    # A composed history (dropout rounds at another z, another rate) too.
    history = [(1.0, 0.1, 50), (1.4, 0.1, 20), (0.8, 1.0, 3)]
    accountant = RDPAccountant()
    accountant.history = history
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected, _ = accountant.get_privacy_spent(delta=1e-5, alphas=list(ORDERS))
    assert _epsilon(history, 1e-5) == pytest.approx(expected, rel=RTOL)
    print(f"max relative difference vs Opacus (subsampled Gaussian): {worst:.2e}")


def test_zcdp_epsilons_match_opacus_conversion():
    pytest.importorskip("opacus")
    from opacus.accountants.analysis.rdp import get_privacy_spent

    worst = 0.0
    for rho, delta in itertools.product(RHOS, DELTAS):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected, _ = get_privacy_spent(orders=list(ORDERS), rdp=[a * rho for a in ORDERS], delta=delta)
        got = epsilon_for_rho(rho, delta)
        worst = max(worst, _rel(got, float(expected)))
        assert got == pytest.approx(float(expected), rel=RTOL), (rho, delta)
    print(f"max relative difference vs Opacus (zCDP conversion): {worst:.2e}")


def test_conversion_handles_no_privacy_like_opacus():
    assert epsilon_from_rdp(ORDERS, [math.inf] * len(ORDERS), 1e-5) == math.inf
    assert epsilon_from_rdp([2.0, 3.0], [math.nan, math.nan], 1e-5) == math.inf
    assert epsilon_from_rdp([2.0, 3.0], [math.nan, 0.5], 1e-5) == pytest.approx(
        0.5 - (math.log(1e-5) + math.log(3.0)) / 2 + math.log(2 / 3)
    )
    with pytest.raises(ValueError, match="same length"):
        epsilon_from_rdp([2.0, 3.0], [0.1], 1e-5)


def test_accounting_runs_with_torch_and_opacus_blocked():
    # A finder that refuses torch and opacus, as if they were not installed (``sys.modules[...] =
    # None`` would also work for our code, but scipy probes ``sys.modules['torch'].Tensor``).
    code = (
        "import sys\n"
        "class Absent:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'opacus'):\n"
        "            raise ModuleNotFoundError(f'No module named {name!r} (blocked)')\n"
        "sys.meta_path.insert(0, Absent())\n"
        "for blocked in ('torch', 'opacus'):\n"
        "    try:\n"
        "        __import__(blocked)\n"
        "    except ModuleNotFoundError:\n"
        "        pass\n"
        "    else:\n"
        "        raise SystemExit(blocked + ' was not blocked')\n"
        "import evaluator.privacy.zcdp as z, evaluator.federated.accounting as a\n"
        "print(z.epsilon_for_rho(0.1, 1e-6), a.epsilon_after(100, 1.0, 0.1, 1e-5),"
        " a.record_level_epsilon(rounds=3, noise_multiplier=1.1, sample_rate=0.05, local_epochs=1, delta=1e-5))\n"
        "assert not {'torch', 'opacus'} & set(sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    eps_rho, eps_fl, eps_record = (float(x) for x in out.stdout.split())
    assert eps_rho == pytest.approx(epsilon_for_rho(0.1, 1e-6), rel=1e-12)
    assert 0 < eps_fl < math.inf and 0 < eps_record < math.inf
