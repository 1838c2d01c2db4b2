"""One submission's page: what its vendor may see of it (the visibility funnel), and for the
task's owner the same plus its governance (jobs per site, approve/reject with a reason,
release/withhold)."""

from django.shortcuts import render

from marketplace.accounts.selectors import organization_ids_of
from marketplace.finetuning.services import TRAINABLE_FORMATS
from marketplace.jobs.models import JobStatus
from marketplace.portal.views._common import person_required
from marketplace.submissions.access import access_submission_by_id
from marketplace.submissions.selectors import finals_chosen
from marketplace.submissions.visibility import submission_view_for


def fixed_scores(task, metrics: dict | None) -> list[dict]:
    """Metric values written with exactly the task's decimals (0.9 with 4 -> 0.9000), in the
    task's metric order, each with its direction."""
    if not metrics:
        return []
    return [
        {"name": m["name"], "value": f"{metrics[m['name']]:.{m['decimals']}f}", "direction": m["direction"],
         "primary": m["name"] == task.primary_metric}
        for m in task.metric_specs if metrics.get(m["name"]) is not None
    ]  # fmt: skip


@person_required
def submission_detail(request, submission_id: int):
    submission = access_submission_by_id(request.user, submission_id)
    view = submission_view_for(user=request.user, submission=submission)
    task = submission.task
    owner = view["is_owner_view"]
    jobs = list(submission.jobs.select_related("site").order_by("site__name", "id")) if owner else None
    is_vendor = not owner or submission.vendor_id in organization_ids_of(user=request.user)
    context = {
        "submission": submission,
        "view": view,
        "task": task,
        "scores": fixed_scores(task, view["metrics"]),
        "owner": owner,
        "is_vendor": is_vendor,
        "jobs": jobs,
        "awaiting": JobStatus.AWAITING_APPROVAL,
        "held": JobStatus.HELD,
        "finals": finals_chosen(task_id=task.id, vendor_id=submission.vendor_id) if is_vendor else None,
        "can_fine_tune": is_vendor and view["status"] == "scored" and submission.artifact_format in TRAINABLE_FORMATS
        and not submission.is_fine_tuned and task.fine_tuning_allowed,
        "reason_max": 500,
    }  # fmt: skip
    return render(request, "portal/submission_detail.html", context)

