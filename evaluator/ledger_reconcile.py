"""The site's ledger against the hub's receipts: what left once, on both sides.

The hub mirrors every release it accepted (``GET /api/v1/agent/receipts``). Compared by
(job id, sha256) with the entries that count here (every state but ``voided``):

- on both sides, not yet ``confirmed`` here (the agent died after its post): confirmed;
- here only, never reached the hub, and nothing pending will post it (the agent died between
  its write-ahead entry and its post, or the hub refused it): voided — after a grace period,
  so an agent working right now is never raced;
- here only and pending: left alone, the agent's next flush settles it;
- here ``confirmed`` and not at the hub: the hub lost it (restored from an older backup); only
  reported, nothing here can repair that;
- at the hub only: the site's ledger is older than what left (restored from an older copy).
  The hub's mirror is authoritative for totals: the entry is rebuilt from the receipt
  (``recovered``, its bytes unknown) and its privacy cost committed again in the site's budget,
  so a restored ledger never lowers a vendor's spent budget silently.

``python -m evaluator.ledger_reconcile --config site.toml [--repair]`` prints the report (JSON)
and exits 1 when the two sides disagree before repairs. The agent runs it, repairing, at start.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from evaluator.ledger import Ledger, LedgerEntry
from evaluator.site_budget import SiteBudget
from evaluator.state import AgentState

log = logging.getLogger(__name__)

GRACE_SECONDS = 120.0
# The hub's receipt kinds, as the site's ledger kinds and budget splits.
_KIND = {"metrics": ("metrics", "public"), "reveal": ("metrics", "private"), "failure": ("failure", None),
         "update": ("update", None)}  # fmt: skip


@dataclass
class Report:
    site_entries: int = 0
    hub_receipts: int = 0
    confirmed: list[str] = field(default_factory=list)  # settled here from the hub's receipts
    voided: list[str] = field(default_factory=list)  # never reached the hub
    pending: list[str] = field(default_factory=list)  # the agent's next flush settles them
    missing_at_site: list[str] = field(default_factory=list)  # restored ledger: recovered
    missing_at_hub: list[str] = field(default_factory=list)  # restored hub: reported only
    duplicates: list[str] = field(default_factory=list)  # one (job, attempt) counted twice
    repaired: bool = False

    @property
    def agrees(self) -> bool:
        return not (self.confirmed or self.voided or self.missing_at_site or self.missing_at_hub or self.duplicates)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "agrees": self.agrees}


def _name(job_id: Any, sha256: str) -> str:
    return f"job {job_id} {sha256[:12]}"


def _age_seconds(entry: LedgerEntry, now: datetime) -> float:
    try:
        written = datetime.fromisoformat(entry.time.replace("Z", "+00:00"))
    except ValueError:
        return float("inf")
    return (now - written).total_seconds()


def _pending_receipts(state: AgentState) -> set[tuple[str, str]]:
    out = set()
    for item in state.pending().values():
        body = item.get("body") or {}
        sha = (body.get("ledger") or {}).get("sha256")
        if isinstance(sha, str):
            out.add((str(item.get("job_id")), sha))
    return out


def reconcile(
    *,
    ledger: Ledger,
    state: AgentState,
    budget: SiteBudget | None,
    receipts: Iterable[Mapping[str, Any]],
    repair: bool,
    grace_seconds: float = GRACE_SECONDS,
    now: datetime | None = None,
) -> Report:
    now = now or datetime.now(UTC)
    hub = {(str(r.get("job_id")), str(r.get("sha256"))): r for r in receipts}
    entries = ledger.read_entries()
    pending = _pending_receipts(state)
    report = Report(site_entries=sum(1 for e in entries if e.counts), hub_receipts=len(hub))
    seen: set[tuple[str, str]] = set()
    attempts: dict[tuple[str, str, str], int] = {}
    for entry in entries:
        key = (str(entry.job_id), entry.sha256)
        seen.add(key)
        name = _name(entry.job_id, entry.sha256)
        if key in hub:
            if entry.state != "confirmed":
                report.confirmed.append(name)
                if repair:
                    ledger.mark(entry.key, "confirmed", why="the hub's receipts list it")
        elif entry.state == "voided":
            continue
        elif key in pending:
            report.pending.append(name)
            continue
        elif entry.state == "confirmed":
            report.missing_at_hub.append(name)
        elif _age_seconds(entry, now) >= grace_seconds:
            report.voided.append(name)
            if repair:
                ledger.mark(entry.key, "voided", why="the hub never received it")
            continue
        else:
            continue  # written moments ago: an agent may be about to post it
        if entry.attempt and entry.kind != "update":
            slot = (str(entry.job_id), entry.attempt, entry.kind)
            attempts[slot] = attempts.get(slot, 0) + 1
            if attempts[slot] > 1:
                report.duplicates.append(name)
    for key, receipt in hub.items():
        if key in seen:
            continue
        report.missing_at_site.append(_name(key[0], key[1]))
        if repair:
            _recover(ledger, budget, receipt)
    report.repaired = repair
    if report.missing_at_site:
        log.error(
            "the site's ledger lacks %d release(s) the hub recorded (was it restored from an older copy?); "
            "the hub's receipts are authoritative for the totals%s",
            len(report.missing_at_site), ": rebuilt from them and committed in the site's budget" if repair else "",
        )  # fmt: skip
    if report.missing_at_hub:
        log.error(
            "the hub lacks %d release(s) the site's ledger holds as confirmed (was the hub restored from a "
            "backup?): %s", len(report.missing_at_hub), ", ".join(report.missing_at_hub[:10]),
        )  # fmt: skip
    return report


def _recover(ledger: Ledger, budget: SiteBudget | None, receipt: Mapping[str, Any]) -> None:
    kind, split = _KIND.get(str(receipt.get("kind")), ("metrics", None))
    rho = receipt.get("rho")
    ledger.recover(
        job_id=str(receipt.get("job_id")), attempt=None, sha256=str(receipt.get("sha256")), size=int(receipt.get("bytes") or 0),
        kind=kind, task_id=receipt.get("task_id"), vendor_id=receipt.get("vendor_id"), rho=rho,
        epsilon=receipt.get("epsilon"), delta=receipt.get("delta"), split=split,
        note="recovered from the hub's receipt: the site's ledger had lost it",
    )  # fmt: skip
    if budget is not None and split is not None and isinstance(rho, int | float) and rho > 0:
        budget.commit(
            job_id=receipt.get("job_id"), split=split, task_id=receipt.get("task_id"),
            vendor_id=receipt.get("vendor_id"), rho=float(rho),
        )  # fmt: skip


def reconcile_with_hub(*, config: Any, client: Any, repair: bool, grace_seconds: float = GRACE_SECONDS) -> Report:
    return reconcile(
        ledger=Ledger(config.ledger_path),
        state=AgentState(config.state_path),
        budget=SiteBudget(config.budget_path),
        receipts=client.receipts(),
        repair=repair,
        grace_seconds=grace_seconds,
    )


def main(argv: list[str] | None = None) -> int:
    from evaluator.client import HubClient
    from evaluator.config import load_config

    parser = argparse.ArgumentParser(prog="python -m evaluator.ledger_reconcile", description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="the site's config file (site.toml)")
    parser.add_argument("--repair", action="store_true", help="confirm, void and recover entries as reported")
    parser.add_argument("--grace-seconds", type=float, default=GRACE_SECONDS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    config = load_config(args.config)
    report = reconcile_with_hub(
        config=config, client=HubClient.from_config(config), repair=args.repair, grace_seconds=args.grace_seconds
    )
    print(json.dumps(report.to_json(), indent=2))
    return 0 if report.agrees else 1


if __name__ == "__main__":
    sys.exit(main())
