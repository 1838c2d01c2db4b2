import django_filters
from django.db.models import Q

from marketplace.catalog.models import Task, TaskStatus, TaskType, Visibility


class TaskFilter(django_filters.FilterSet):
    q = django_filters.CharFilter(method="search", label="Search title and description")
    task_type = django_filters.ChoiceFilter(choices=TaskType.choices)
    status = django_filters.ChoiceFilter(choices=TaskStatus.choices)
    visibility = django_filters.ChoiceFilter(choices=Visibility.choices)

    class Meta:
        model = Task
        fields = ["task_type", "status", "visibility"]

    def search(self, queryset, name, value):
        return queryset.filter(Q(title__icontains=value) | Q(description__icontains=value))
