from django.contrib import admin

from marketplace.sites.models import Site, SiteToken


@admin.register(Site)
class SiteAdmin(admin.ModelAdmin):
    list_display = ["name", "organization", "last_heartbeat_at", "last_agent_id"]
    list_filter = ["organization"]
    search_fields = ["name"]


@admin.register(SiteToken)
class SiteTokenAdmin(admin.ModelAdmin):
    list_display = ["display_prefix", "site", "created_at", "last_used_at", "revoked_at"]
    readonly_fields = ["key_hash", "display_prefix", "created_at", "last_used_at"]
