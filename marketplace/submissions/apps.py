from django.apps import AppConfig


class SubmissionsConfig(AppConfig):
    name = "marketplace.submissions"
    label = "submissions"
