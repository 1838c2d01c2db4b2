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
    job=None,
    job_id: int | None = None,
    kind: str,
    sha256: str,
    size: int,
    rho: float | None = None,
    epsilon: float | None = None,
    delta: float | None = None,
    site_id: int | None = None,
    task_id: int | None = None,
    vendor_id: int | None = None,
) -> None:
    """Mirrors one ledger entry of a site, with the release's privacy cost (None: a constant
    release, which carries nothing). A repeat of a recorded release (same site, job and hash)
    adds nothing. ``job_id``/``site_id``/``task_id``/``vendor_id`` instead of ``job``: the job,
    its site and its submission's task and vendor, when the caller has them (saves reading them).

    One ``INSERT ... ON CONFLICT DO NOTHING`` on the ``one_record_per_release`` constraint (was a
    read, then an insert in a savepoint): the same outcome on PostgreSQL and SQLite, also when two
    requests record the same release at once."""
    if task_id is None or vendor_id is None:
        task_id, vendor_id = job.submission.task_id, job.submission.vendor_id
    record = EgressRecord(
        site_id=job.site_id if site_id is None else site_id, job_id=job.id if job_id is None else job_id,
        task_id=task_id, vendor_id=vendor_id,
        kind=kind, bytes=size, sha256=sha256, rho=rho, epsilon=epsilon, delta=delta,
    )  # fmt: skip
    EgressRecord.objects.bulk_create([record], ignore_conflicts=True)
