from django.apps import AppConfig


class SitesConfig(AppConfig):
    name = "marketplace.sites"
    label = "sites"
