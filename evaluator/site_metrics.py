"""The site agent's Prometheus metrics (``vaultbench-site run --metrics-port 9101``), read from the
site's own files at scrape time: the egress ledger, the agent state, the shards, free disk. Served
on 127.0.0.1 only: these are the site operator's, not the hub's."""

from __future__ import annotations

import shutil
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from evaluator.config import AgentConfig


class SiteCollector(Collector):
    def __init__(self, config: AgentConfig) -> None:
        self.config = config

    def collect(self):
        from evaluator.ledger import Ledger, LedgerError
        from evaluator.state import AgentState

        entries = GaugeMetricFamily("vaultbench_site_ledger_entries", "Egress ledger entries by kind and state",
                                    labels=["kind", "state"])  # fmt: skip
        bytes_out = GaugeMetricFamily("vaultbench_site_ledger_bytes", "Bytes that left the site (ledger)")
        healthy = 1.0
        counts: dict[tuple[str, str], int] = {}
        total = 0
        try:
            for entry in Ledger(self.config.ledger_path).iter_entries(verify=True):
                counts[(entry.kind, entry.state)] = counts.get((entry.kind, entry.state), 0) + 1
                total += entry.bytes
        except LedgerError:
            healthy = 0.0
        for (kind, state), n in sorted(counts.items()):
            entries.add_metric([kind, state], n)
        bytes_out.add_metric([], total)
        yield entries
        yield bytes_out
        yield GaugeMetricFamily("vaultbench_site_ledger_chain_ok", "1 when the ledger's hash chain verifies", value=healthy)
        state: dict[str, Any] = {"pending": {}, "held": {}}
        if self.config.state_path.exists():
            agent_state = AgentState(self.config.state_path)
            state = {"pending": agent_state.pending(), "held": agent_state.held()}
        yield GaugeMetricFamily("vaultbench_site_pending_posts", "Results waiting to be posted to the hub",
                                value=len(state["pending"]))  # fmt: skip
        yield GaugeMetricFamily("vaultbench_site_held_results", "Results held for the owner's release decision",
                                value=len(state["held"]))  # fmt: skip
        shards = list((self.config.data_dir / "tasks").glob("*/meta.json"))
        yield GaugeMetricFamily("vaultbench_site_shards", "Tasks with data at this site", value=len(shards))
        work = self.config.work_dir if self.config.work_dir.exists() else self.config.data_dir
        free = shutil.disk_usage(work).free if work.exists() else 0
        yield GaugeMetricFamily("vaultbench_site_free_disk_bytes", "Free space where sandboxes work", value=free)


def serve(config: AgentConfig, port: int, addr: str = "127.0.0.1"):
    """Starts the metrics endpoint in a daemon thread; returns (server, thread)."""
    registry = CollectorRegistry()
    registry.register(SiteCollector(config))
    return start_http_server(port, addr=addr, registry=registry)
