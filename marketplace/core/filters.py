"""Query-string filters shared by the list endpoints."""

import django_filters
from django import forms

from marketplace.core.parsers import INT64_MAX, INT64_MIN


class IdFilter(django_filters.NumberFilter):
    """An id in the query string: a whole number within the database's 64-bit range (outside it,
    a 400 from the filter backend rather than an OverflowError from the database)."""

    field_class = forms.IntegerField

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("min_value", INT64_MIN)
        kwargs.setdefault("max_value", INT64_MAX)
        super().__init__(*args, **kwargs)
