from typing import Any

from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.utils import timezone
from django.utils.text import slugify

from marketplace.accounts.models import Organization
from marketplace.audit.services import audit_record
from marketplace.catalog.models import (
    DEFAULT_RELEASE_DELAY_SECONDS,
    AccessEvent,
    AccessEventKind,
    DataShard,
    Task,
    TaskStatus,
    Visibility,
)
from marketplace.catalog.selectors import access_state
from marketplace.catalog.specs import (
    validate_fl_policy,
    validate_input_spec,
    validate_metrics,
    validate_policy,
    validate_privacy,
    validate_resource_limits,
)
from marketplace.core.errors import Conflict, DomainError, Forbidden, NotFound, PayloadTooLarge
from marketplace.sites.models import Site

# Fields that define what a submission is judged on: frozen once the task has opened.
# The release's noise (epsilon per release, delta) is fixed too: sites release at it and budgets add it up.
STRUCTURAL_FIELDS = {
    "task_type",
    "input_spec",
    "metrics",
    "primary_metric",
    "public_split_fraction",
    "dp_epsilon_per_release",
    "dp_delta",
}
EDITABLE_FIELDS = STRUCTURAL_FIELDS | {
    "title",
    "description",
    "rules",
    "visibility",
    "opens_at",
    "closes_at",
    "quota_per_day",
    "quota_total",
    "resource_limits",
    "show_per_site",
    "min_test_rows",
    "public_split_fraction",
    "leaderboard_mode",
    "requires_job_approval",
    "requires_release_approval",
    "failed_jobs_consume_quota",
    "dp_epsilon_per_release",
    "dp_delta",
    "dp_vendor_epsilon",
    "dp_task_epsilon",
    "release_delay_seconds",
    "ladder_threshold",
    "final_submissions",
    "fine_tuning_allowed",
    "fl_privacy_unit",
    "fl_example_clip_norm",
    "fl_clip_norm",
    "fl_noise_multiplier",
    "fl_dp_delta",
    "fl_epsilon_cap",
    "fl_secure_aggregation",
    "fl_robust_rule",
    "fl_quantization_bits",
}


def _unique_slug(title: str) -> str:
    base = slugify(title)[:180] or "task"
    slug, n = base, 2
    while Task.objects.filter(slug=slug).exists():
        slug, n = f"{base}-{n}", n + 1
    return slug


def _validated(values: dict[str, Any]) -> dict[str, Any]:
    """Checks the combined spec and returns the cleaned values."""
    values = dict(values)
    values["input_spec"] = validate_input_spec(values["task_type"], values["input_spec"])
    values["metrics"] = validate_metrics(values["task_type"], values["metrics"], values["primary_metric"])
    values["resource_limits"] = validate_resource_limits(values.get("resource_limits") or {})
    validate_policy(
        public_split_fraction=values.get("public_split_fraction", 1.0),
        quota_per_day=values.get("quota_per_day", 5),
        quota_total=values.get("quota_total"),
        final_submissions=values.get("final_submissions", 2),
    )
    validate_privacy(
        epsilon_per_release=values.get("dp_epsilon_per_release", 1.0),
        delta=values.get("dp_delta", 1e-6),
        vendor_epsilon=values.get("dp_vendor_epsilon", 10.0),
        task_epsilon=values.get("dp_task_epsilon", 20.0),
        release_delay_seconds=values.get("release_delay_seconds", DEFAULT_RELEASE_DELAY_SECONDS),
        ladder_threshold=values.get("ladder_threshold", 0.01),
    )
    # Private by default (docs/federated-protocol.md): record-level DP-SGD, epsilon capped at 8. A task
    # whose owner sets no noise, or opts out (unit "none"), gets no default cap.
    # Empty sigma (the default): calibrated to the cap over each run's planned rounds at approval.
    unit, noise = values.get("fl_privacy_unit", "record"), values.get("fl_noise_multiplier")
    if "fl_epsilon_cap" not in values and (unit == "none" or noise == 0):
        values["fl_epsilon_cap"] = None
    validate_fl_policy(
        clip_norm=values.get("fl_clip_norm", 1.0),
        noise_multiplier=noise,
        dp_delta=values.get("fl_dp_delta", 1e-5),
        epsilon_cap=values.get("fl_epsilon_cap", 8.0),
        privacy_unit=unit,
        example_clip_norm=values.get("fl_example_clip_norm", 1.0),
        secure_aggregation=values.get("fl_secure_aggregation", True),
        robust_rule=values.get("fl_robust_rule", "mean"),
        quantization_bits=values.get("fl_quantization_bits", 20),
    )
    opens_at, closes_at = values.get("opens_at"), values.get("closes_at")
    if opens_at and closes_at and closes_at <= opens_at:
        raise DomainError("closes_at must be after opens_at.", code="invalid_spec")
    return values


def _check_not_past(closes_at) -> None:
    if closes_at and closes_at <= timezone.now():
        raise DomainError("closes_at must be in the future.", code="invalid_spec")


@transaction.atomic
def task_create(*, organization: Organization, actor, spec: dict[str, Any]) -> Task:
    if not organization.is_data_owner:
        raise Forbidden("Only data owner organizations publish tasks.", code="wrong_role")
    unknown = set(spec) - EDITABLE_FIELDS
    if unknown:
        raise DomainError(f"Unknown fields: {', '.join(sorted(unknown))}.", code="invalid_spec")
    values = _validated(spec)
    _check_not_past(values.get("closes_at"))
    task = Task.objects.create(organization=organization, slug=_unique_slug(values["title"]), **values)
    audit_record(action="task.created", obj=task, actor_user=actor)
    return task


@transaction.atomic
def task_update(*, task: Task, actor, changes: dict[str, Any]) -> Task:
    unknown = set(changes) - EDITABLE_FIELDS
    if unknown:
        raise DomainError(f"Unknown fields: {', '.join(sorted(unknown))}.", code="invalid_spec")
    if task.status != TaskStatus.DRAFT:
        frozen = {f for f in STRUCTURAL_FIELDS & set(changes) if changes[f] != getattr(task, f)}
        if frozen:
            raise Conflict(
                f"{', '.join(sorted(frozen))} cannot change once the task has opened.", code="task_frozen"
            )
    current = {field: getattr(task, field) for field in EDITABLE_FIELDS}
    values = _validated({**current, **changes})
    changed = [field for field in changes if values[field] != current[field]]
    if "closes_at" in changed:
        _check_not_past(values["closes_at"])
    for field in changed:
        setattr(task, field, values[field])
    if changed:
        task.save(update_fields=[*changed, "updated_at"])
        audit_record(action="task.updated", obj=task, actor_user=actor, data={"fields": sorted(changed)})
    return task


@transaction.atomic
def task_open(*, task: Task, actor) -> Task:
    if task.status != TaskStatus.DRAFT:
        raise Conflict("Only a draft task can be opened.", code="invalid_state")
    if task.closes_at and task.closes_at <= timezone.now():
        raise Conflict("The task's closing date has passed: move closes_at first.", code="closes_at_past")
    task.status = TaskStatus.OPEN
    if task.opens_at is None:
        task.opens_at = timezone.now()
    task.save(update_fields=["status", "opens_at", "updated_at"])
    audit_record(action="task.opened", obj=task, actor_user=actor)
    return task


def task_close_plan(*, task: Task) -> dict:
    """What closing the task would reveal (finals only) and what would not fit the private budgets."""
    from marketplace.leaderboard.closing import close_plan

    return close_plan(task)


@transaction.atomic
def task_close(*, task: Task, actor, confirmed_reveals: list[int] | None = None) -> Task:
    """Closes the task. The owner confirming the close approves the reveals of its plan: their
    private budget is reserved now, and only they are listed to the sites (job_reveals_for_site).
    ``confirmed_reveals``: the submission ids the owner was shown; if the plan has changed since,
    nothing is closed (409 plan_changed)."""
    from marketplace.leaderboard.closing import close_plan, close_reveals_approve

    task = Task.objects.select_for_update().get(id=task.id)
    if task.status != TaskStatus.OPEN:
        raise Conflict("Only an open task can be closed.", code="invalid_state")
    if confirmed_reveals is not None:
        planned = sorted(row["submission_id"] for row in close_plan(task)["reveal"])
        if sorted(confirmed_reveals) != planned:
            raise Conflict(
                "What the close would reveal has changed since it was shown: review the close plan again.",
                code="plan_changed",
                details={"reveal": planned},
            )
    task.status = TaskStatus.CLOSED
    task.closes_at = timezone.now()
    task.save(update_fields=["status", "closes_at", "updated_at"])
    plan = close_plan(task)
    approved, refused = close_reveals_approve(task=task, plan=plan)
    audit_record(
        action="task.closed",
        obj=task,
        actor_user=actor,
        data={
            "reveals": approved,
            "not_revealed": sorted(refused + [row["submission_id"] for row in plan["not_revealed"]]),
        },
    )
    return task


@transaction.atomic
def task_sample_set(*, task: Task, actor, sample: UploadedFile, max_bytes: int) -> Task:
    """Attaches the public sample: synthetic or non-sensitive rows for vendors' dry runs."""
    if sample.size > max_bytes:
        raise PayloadTooLarge(f"The sample file is larger than {max_bytes} bytes.")
    if task.sample_file:
        task.sample_file.delete(save=False)
    task.sample_file.save(f"task-{task.id}-sample-{sample.name}", sample, save=False)
    task.save(update_fields=["sample_file", "updated_at"])
    audit_record(action="task.sample_set", obj=task, actor_user=actor, data={"bytes": sample.size})
    return task


@transaction.atomic
def task_access_request(*, task: Task, vendor: Organization, actor, note: str = "") -> AccessEvent:
    if task.visibility != Visibility.INVITE_ONLY:
        raise Conflict("This task is public: no access request is needed.", code="not_invite_only")
    state = access_state(task=task, vendor=vendor)
    if state in (AccessEventKind.REQUESTED, AccessEventKind.APPROVED):
        raise Conflict(f"Access is already {state}.", code="already_" + state)
    event = AccessEvent.objects.create(
        task=task, vendor=vendor, kind=AccessEventKind.REQUESTED, actor=actor, note=note[:500]
    )
    audit_record(action="access.requested", obj=task, actor_user=actor, data={"vendor": vendor.id})
    return event


@transaction.atomic
def task_access_decide(*, task: Task, vendor_id: int, approve: bool, actor, note: str = "") -> AccessEvent:
    """The owner approves or rejects a vendor's request; approving again later is allowed."""
    vendor = Organization.objects.filter(id=vendor_id, access_events__task=task).distinct().first()
    if vendor is None:
        raise NotFound("No access request from this vendor.")
    kind = AccessEventKind.APPROVED if approve else AccessEventKind.REJECTED
    if access_state(task=task, vendor=vendor) == kind:
        raise Conflict(f"Access is already {kind}.", code="already_" + kind)
    event = AccessEvent.objects.create(task=task, vendor=vendor, kind=kind, actor=actor, note=note[:500])
    audit_record(action=f"access.{kind}", obj=task, actor_user=actor, data={"vendor": vendor.id})
    return event


@transaction.atomic
def shard_register(
    *, site: Site, task_id: int, row_count: int, fingerprint: str, split_sizes: dict[str, int]
) -> tuple[DataShard, bool]:
    """A site reports its shard of a task (metadata only). Only the task owner's sites may."""
    task = Task.objects.filter(id=task_id, organization_id=site.organization_id).first()
    if task is None:
        raise NotFound("Task not found.")
    if row_count < task.min_test_rows:
        raise DomainError(
            f"The task needs at least {task.min_test_rows} test rows per site; this shard has {row_count}.",
            code="too_few_rows",
        )
    shard, created = DataShard.objects.update_or_create(
        task=task,
        site=site,
        defaults={"row_count": row_count, "fingerprint": fingerprint, "split_sizes": split_sizes},
    )
    audit_record(
        action="shard.registered" if created else "shard.updated",
        obj=shard,
        actor_site=site,
        data={"rows": row_count, "fingerprint": fingerprint},
    )
    return shard, created


def tasks_apply_schedule(*, now=None) -> dict[str, list[int]]:
    """Celery beat, every minute: drafts whose opens_at has come are opened; open tasks whose
    closes_at has passed are closed. The owner who set closes_at approved the close at that time,
    with the reveals of its plan then (as confirming the close page does)."""
    now = now or timezone.now()
    done: dict[str, list[int]] = {"opened": [], "closed": []}
    due_open = Task.objects.filter(status=TaskStatus.DRAFT, opens_at__lte=now).exclude(closes_at__lte=now)
    for task in due_open.order_by("id"):
        try:
            task_open(task=task, actor=None)
        except DomainError:
            continue  # changed since the query (opened or edited by its owner)
        done["opened"].append(task.id)
    for task in Task.objects.filter(status=TaskStatus.OPEN, closes_at__lte=now).order_by("id"):
        try:
            task_close(task=task, actor=None)
        except DomainError:
            continue
        done["closed"].append(task.id)
    return done
