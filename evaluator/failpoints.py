"""Named points where a fault-injection run kills the agent (SIGKILL, as a power cut would).

Inactive unless ``VAULTBENCH_FAILPOINTS`` lists the point (comma-separated): the fault suite
(tests/faults, benchmarks/fault_campaign.py) starts an agent with it to die at an exact step of
a release, then restarts it without, and checks that nothing was lost or counted twice.

Points: ``ledger_prepared`` (the write-ahead entry is on disk, nothing else), ``pending_written``
(the body is pending too, not sent), ``posted`` (the hub answered 200, nothing settled here).
"""

from __future__ import annotations

import logging
import os
import signal

log = logging.getLogger(__name__)

ENV = "VAULTBENCH_FAILPOINTS"
POINTS = ("ledger_prepared", "pending_written", "posted")


def failpoint(name: str) -> None:
    listed = os.environ.get(ENV, "")
    if listed and name in listed.split(","):
        log.warning("failpoint %s: killing this agent (fault injection)", name)
        os.kill(os.getpid(), signal.SIGKILL)
