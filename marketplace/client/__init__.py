"""Vaultbench's client SDK for vendors: the hub's REST API from Python, with only ``requests``.

    from marketplace.client import Client

    hub = Client("https://hub.example.org", token="vbp_...")
    submission = hub.submit(task=3, artifact="model.joblib", artifact_format="sklearn", name="LogReg v2")
    final = hub.wait(submission["id"], timeout=1800)      # raises WaitTimeout if still pending
    print(final["status"], final.get("metrics"))
    board = hub.leaderboard(3, sort="accuracy")           # every page, rows under "results"

Nothing here imports Django or Celery (``pip install vaultbench[vendor]`` installs ``requests`` alone).
"""

from marketplace.client.sdk import (
    FAILED_STATUSES,
    FINAL_STATUSES,
    FORMATS,
    Client,
    ClientError,
    HubError,
    HubUnreachable,
    WaitTimeout,
)

__all__ = [
    "FAILED_STATUSES",
    "FINAL_STATUSES",
    "FORMATS",
    "Client",
    "ClientError",
    "HubError",
    "HubUnreachable",
    "WaitTimeout",
]
