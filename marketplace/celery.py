"""The hub's Celery application; configuration comes from Django settings (CELERY_*)."""

import os

from celery import Celery
from celery.signals import task_postrun, task_prerun

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "marketplace.settings")

app = Celery("marketplace")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


# Log lines of a task carry the ids in its arguments (VAULTBENCH_LOG_FORMAT=json).
_CONTEXT_KWARGS = {"submission_id": "submission", "run_id": "run", "job_id": "job", "site_id": "site"}
_tokens: dict[str, object] = {}


@task_prerun.connect
def _bind_task_ids(task_id=None, kwargs=None, **_):
    from evaluator.jsonlog import bind

    ids = {name: (kwargs or {}).get(key) for key, name in _CONTEXT_KWARGS.items()}
    _tokens[task_id] = bind(**ids)


@task_postrun.connect
def _reset_task_ids(task_id=None, **_):
    from evaluator.jsonlog import reset

    token = _tokens.pop(task_id, None)
    if token is not None:
        reset(token)
