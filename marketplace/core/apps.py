from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "marketplace.core"
    label = "core"

    def ready(self) -> None:
        # Loads the hub's Celery application as the current app whenever Django starts (web,
        # manage.py, tests), so that ``shared_task``s send to the configured broker. It used to be
        # imported by ``marketplace/__init__.py``, which the vendor SDK must import without Celery.
        from marketplace.celery import app  # noqa: F401
