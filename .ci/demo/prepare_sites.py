"""Demo only: gives each of the three demo sites its private shard and its agent config.

The test rows of scikit-learn's breast-cancer data (the held-out rows of docs/examples/_common.py,
which the vendors' baselines never saw) are split across the sites; each site receives its rows
in a different file format (.npy, .csv, .parquet), as real sites would.
"""

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "docs" / "examples"))
from _common import load_split  # noqa: E402

FORMATS = ["npy", "csv", "parquet"]


def write(array: np.ndarray, path: Path, prefix: str) -> None:
    if path.suffix == ".npy":
        np.save(path, array)
        return
    # Named columns: a CSV whose first row is numeric is read as data, not as a header.
    frame = pd.DataFrame(array, columns=[f"{prefix}{i}" for i in range(array.shape[1])])
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)


def main(seed_path: Path, sites_dir: Path, hub_url: str, image: str) -> None:
    seed = json.loads(seed_path.read_text())
    _, _, features, labels = load_split()
    shards = np.array_split(np.arange(len(labels)), len(seed["sites"]))
    for site, rows, fmt in zip(seed["sites"], shards, FORMATS, strict=True):
        root = sites_dir / site["name"]
        (root / "incoming").mkdir(parents=True, exist_ok=True)
        write(features[rows], root / "incoming" / f"features.{fmt}", "feature_")
        write(labels[rows].reshape(-1, 1), root / "incoming" / f"labels.{fmt}", "label_")
        token_file = root / "site-token"
        token_file.write_text(site["token"])
        token_file.chmod(0o600)
        (root / "site.toml").write_text(
            f'hub_url = "{hub_url}"\n'
            f'site_token_file = "site-token"\n'
            f'data_dir = "data"\n'
            f'image = "{image}"\n'
            "poll_interval_seconds = 2\n"
            "\n[limits]\nmax_memory_mb = 2048\nmax_cpus = 1.0\nmax_timeout_seconds = 600\n"
        )
        print(f"{site['name']}: {len(rows)} rows as .{fmt}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4])
