import django_filters

from marketplace.core.filters import IdFilter
from marketplace.submissions.models import ArtifactFormat, Submission, SubmissionStatus


class SubmissionFilter(django_filters.FilterSet):
    task = IdFilter(field_name="task_id")
    status = django_filters.ChoiceFilter(choices=SubmissionStatus.choices)
    artifact_format = django_filters.ChoiceFilter(choices=ArtifactFormat.choices)

    class Meta:
        model = Submission
        fields = ["task", "status", "artifact_format"]
