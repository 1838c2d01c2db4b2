from typing import Any

from django.db import models

from marketplace.audit.models import AuditEvent


def audit_record(
    *,
    action: str,
    obj: models.Model,
    actor_user: Any = None,
    actor_site: Any = None,
    actor_site_id: int | None = None,
    data: dict | None = None,
) -> AuditEvent:
    """``actor_site_id``: the acting site by id, when the caller does not hold the row."""
    user = actor_user if getattr(actor_user, "is_authenticated", False) else None
    if actor_site is not None:
        actor_site_id = actor_site.pk
    return AuditEvent.objects.create(
        action=action,
        object_type=obj._meta.model_name,
        object_id=str(obj.pk),
        actor_user=user,
        actor_site_id=actor_site_id,
        data=data or {},
    )
