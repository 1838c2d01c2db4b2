"""The hub's settings with log-in throttling off: the BEFORE state of benchmarks/account_attacks.py."""

from marketplace.settings import *  # noqa: F403

AXES_ENABLED = False
