from django.contrib import admin

from marketplace.catalog.models import AccessEvent, DataShard, Task


class DataShardInline(admin.TabularInline):
    model = DataShard
    extra = 0
    readonly_fields = ["site", "row_count", "fingerprint", "split_sizes", "registered_at", "updated_at"]


@admin.register(Task)
class TaskAdmin(admin.ModelAdmin):
    list_display = ["title", "organization", "task_type", "status", "visibility", "created_at"]
    list_filter = ["status", "visibility", "task_type"]
    search_fields = ["title", "slug"]
    inlines = [DataShardInline]


@admin.register(DataShard)
class DataShardAdmin(admin.ModelAdmin):
    list_display = ["task", "site", "row_count", "updated_at"]


@admin.register(AccessEvent)
class AccessEventAdmin(admin.ModelAdmin):
    list_display = ["task", "vendor", "kind", "actor", "created_at"]
    list_filter = ["kind"]

    # Append-only log.
    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
