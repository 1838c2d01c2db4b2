import django_filters

from marketplace.core.filters import IdFilter
from marketplace.jobs.models import Job, JobKind, JobStatus


class JobFilter(django_filters.FilterSet):
    task = IdFilter(field_name="submission__task_id")
    submission = IdFilter(field_name="submission_id")
    site = IdFilter(field_name="site_id")
    status = django_filters.ChoiceFilter(choices=JobStatus.choices)
    kind = django_filters.ChoiceFilter(choices=JobKind.choices)

    class Meta:
        model = Job
        fields = ["task", "submission", "site", "status", "kind"]
