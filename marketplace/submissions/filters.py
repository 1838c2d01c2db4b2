import django_filters
from django.utils import timezone

from marketplace.accounts.selectors import organization_ids_of
from marketplace.core.filters import IdFilter
from marketplace.submissions.models import ArtifactFormat, Submission, SubmissionStatus
from marketplace.submissions.visibility import PENDING, status_seen_q


class SubmissionFilter(django_filters.FilterSet):
    task = IdFilter(field_name="task_id")
    # The status as the person sees it ("pending" until the release time on others' tasks).
    status = django_filters.ChoiceFilter(
        choices=[(PENDING, "Pending"), *SubmissionStatus.choices], method="filter_status"
    )
    artifact_format = django_filters.ChoiceFilter(choices=ArtifactFormat.choices)

    class Meta:
        model = Submission
        fields = ["task", "status", "artifact_format"]

    def filter_status(self, queryset, name, value):
        org_ids = organization_ids_of(user=self.request.user) if self.request is not None else set()
        now = getattr(self.request, "seen_at", None) or timezone.now()  # the list view's instant
        return queryset.filter(status_seen_q(value, org_ids=org_ids, now=now))
