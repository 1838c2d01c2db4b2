from django.contrib import admin

from marketplace.audit.models import AuditEvent


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    list_display = ["created_at", "action", "object_type", "object_id", "actor_user", "actor_site"]
    list_filter = ["action", "object_type"]
    search_fields = ["object_id", "action"]

    # Append-only: the admin can read the log but never rewrite history.
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
