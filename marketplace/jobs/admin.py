from django.contrib import admin

from marketplace.jobs.models import Job, Result


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ["id", "kind", "submission", "site", "status", "attempts", "failure_reason", "lease_expires_at"]
    list_filter = ["status", "kind", "failure_reason"]


@admin.register(Result)
class ResultAdmin(admin.ModelAdmin):
    list_display = ["job", "n_rows", "ledger_sha256", "created_at"]
