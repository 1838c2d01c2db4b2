import django_filters

from marketplace.core.filters import IdFilter
from marketplace.egress.models import EgressKind, EgressRecord


class EgressFilter(django_filters.FilterSet):
    site = IdFilter(field_name="site_id")
    task = IdFilter(field_name="task_id")
    vendor = IdFilter(field_name="vendor_id")
    kind = django_filters.ChoiceFilter(choices=EgressKind.choices)
    since = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    until = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = EgressRecord
        fields = ["site", "task", "vendor", "kind"]
