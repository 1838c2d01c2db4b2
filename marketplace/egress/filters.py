import django_filters

from marketplace.egress.models import EgressKind, EgressRecord


class EgressFilter(django_filters.FilterSet):
    site = django_filters.NumberFilter(field_name="site_id")
    task = django_filters.NumberFilter(field_name="task_id")
    vendor = django_filters.NumberFilter(field_name="vendor_id")
    kind = django_filters.ChoiceFilter(choices=EgressKind.choices)
    since = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    until = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = EgressRecord
        fields = ["site", "task", "vendor", "kind"]
