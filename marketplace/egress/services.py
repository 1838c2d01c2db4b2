from typing import Any

from marketplace.core.errors import DomainError
from marketplace.egress.models import EgressRecord
from marketplace.egress.receipts import receipt_of


class LedgerMismatch(DomainError):
    code = "ledger_mismatch"


def egress_receipt_verify(*, body: dict[str, Any], sha256: str, size: int) -> None:
    """The receipt must be the hash of exactly what the site released (see receipts.py)."""
    expected_sha, expected_size = receipt_of(body)
    if sha256 != expected_sha or size != expected_size:
        raise LedgerMismatch("The ledger receipt does not match the released body.")


def egress_record_create(
    *,
    job,
    kind: str,
    sha256: str,
    size: int,
    rho: float | None = None,
    epsilon: float | None = None,
    delta: float | None = None,
) -> EgressRecord:
    """Mirrors one ledger entry of a site, with the release's privacy cost (None: a constant
    release, which carries nothing)."""
    record, _ = EgressRecord.objects.get_or_create(
        site=job.site,
        job=job,
        sha256=sha256,
        defaults={
            "task_id": job.submission.task_id,
            "vendor_id": job.submission.vendor_id,
            "kind": kind,
            "bytes": size,
            "rho": rho,
            "epsilon": epsilon,
            "delta": delta,
        },
    )
    return record
