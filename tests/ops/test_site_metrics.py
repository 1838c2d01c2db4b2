"""The site agent's Prometheus endpoint: shards, ledger (and whether its hash chain verifies),
pending and held results, free disk -- read from the site's files when scraped, over real HTTP."""

import socket

import numpy as np
import requests

from evaluator.config import load_config
from evaluator.datasets import register_task_data
from evaluator.site_metrics import serve


def _value(text: str, name: str) -> float:
    (line,) = [line for line in text.splitlines() if line.split("{")[0].split(" ")[0] == name]
    return float(line.rsplit(" ", 1)[1])


def test_the_agent_metrics_show_shards_ledger_health_and_disk(tmp_path):
    toml = tmp_path / "site.toml"
    toml.write_text(f'data_dir = "{tmp_path / "data"}"\n')
    config = load_config(toml, env={}, require_hub=False)
    features, labels = tmp_path / "X.npy", tmp_path / "y.npy"
    np.save(features, np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32))
    np.save(labels, np.arange(20) % 2)
    register_task_data(data_dir=config.data_dir, task_id=5, features_path=features, labels_path=labels,
                       input_spec={"n_features": 4, "task_type": "binary_classification"})  # fmt: skip
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server, _thread = serve(config, port)
    try:
        text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        assert _value(text, "vaultbench_site_shards") == 1
        assert _value(text, "vaultbench_site_ledger_chain_ok") == 1 and _value(text, "vaultbench_site_ledger_bytes") == 0
        assert _value(text, "vaultbench_site_pending_posts") == 0 and _value(text, "vaultbench_site_held_results") == 0
        assert _value(text, "vaultbench_site_free_disk_bytes") > 0
        config.ledger_path.write_text('{"not": "a ledger entry"}\n')  # a tampered ledger shows
        text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        assert _value(text, "vaultbench_site_ledger_chain_ok") == 0
    finally:
        server.shutdown()
