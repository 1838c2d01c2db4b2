from django.contrib import admin

from marketplace.egress.models import EgressRecord


@admin.register(EgressRecord)
class EgressRecordAdmin(admin.ModelAdmin):
    list_display = ["created_at", "site", "task", "vendor", "kind", "bytes", "rho", "epsilon", "delta"]
    list_filter = ["kind", "site"]

    # A mirror of the sites' append-only ledgers.
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
