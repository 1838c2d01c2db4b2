"""Keeping a job's lease alive while the agent works on it."""

from __future__ import annotations

import logging
import threading

from evaluator.client import HubClient, HubError, LeaseLost

log = logging.getLogger(__name__)


class LeaseKeeper:
    """Renews one job's lease in a background thread until stopped or the lease is lost."""

    def __init__(self, client: HubClient, job_id: int | str, interval: float) -> None:
        self.client = client
        self.job_id = job_id
        self.interval = max(0.05, interval)
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{job_id}", daemon=True)

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval + 5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.client.renew_lease(self.job_id)
            except LeaseLost:
                log.warning("job %s: lease lost; its result will not be posted", self.job_id)
                self.lost.set()
                return
            except HubError as exc:  # unreachable or refused: keep trying until the lease ends
                log.warning("job %s: lease renewal failed: %s", self.job_id, exc)
            except Exception:  # a renewal bug must not kill the job silently
                log.exception("job %s: lease renewal crashed", self.job_id)
