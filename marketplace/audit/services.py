from typing import Any

from django.db import models

from marketplace.audit.models import AuditEvent


def audit_record(
    *,
    action: str,
    obj: models.Model,
    actor_user: Any = None,
    actor_site: Any = None,
    data: dict | None = None,
) -> AuditEvent:
    user = actor_user if getattr(actor_user, "is_authenticated", False) else None
    return AuditEvent.objects.create(
        action=action,
        object_type=obj._meta.model_name,
        object_id=str(obj.pk),
        actor_user=user,
        actor_site=actor_site,
        data=data or {},
    )
