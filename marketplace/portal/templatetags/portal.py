from django import template

register = template.Library()


@register.filter
def fixed(value, decimals):
    """A score with exactly the task's number of decimals (0.9 with 4 -> 0.9000)."""
    if value is None or value == "":
        return "—"
    try:
        return f"{float(value):.{int(decimals)}f}"
    except (TypeError, ValueError):
        return value


@register.filter
def get_item(mapping, key):
    return mapping.get(key) if hasattr(mapping, "get") else None


STATUS_TONES = {
    "scored": "ok", "succeeded": "ok", "completed": "ok", "open": "ok", "approved": "ok", "online": "ok",
    "failed": "bad", "rejected": "bad", "offline": "bad",
    "running": "busy", "evaluating": "busy", "checking": "busy",
    "queued": "wait", "pending": "wait", "awaiting_approval": "wait", "requested": "wait", "draft": "wait", "never": "wait",
}  # fmt: skip


@register.filter
def tone(status):
    return STATUS_TONES.get(str(status), "neutral")


@register.simple_tag(takes_context=True)
def portal_roles(context) -> dict:
    """Which sides of the marketplace the person belongs to, for the navigation (once per request)."""
    request = context.get("request")
    if request is None:
        return {"owner": False, "vendor": False}
    cached = getattr(request, "_portal_roles", None)
    if cached is None:
        from marketplace.accounts.selectors import organizations_of

        kinds = set(organizations_of(user=request.user).values_list("kind", flat=True))
        cached = {"owner": "data_owner" in kinds, "vendor": "vendor" in kinds}
        request._portal_roles = cached
    return cached
