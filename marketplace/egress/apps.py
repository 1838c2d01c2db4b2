from django.apps import AppConfig


class EgressConfig(AppConfig):
    name = "marketplace.egress"
    label = "egress"
