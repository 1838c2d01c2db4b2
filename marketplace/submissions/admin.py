from django.contrib import admin

from marketplace.submissions.models import Submission


@admin.register(Submission)
class SubmissionAdmin(admin.ModelAdmin):
    list_display = ["name", "vendor", "task", "artifact_format", "status", "size", "created_at"]
    list_filter = ["status", "artifact_format"]
    search_fields = ["name", "sha256"]
    readonly_fields = ["sha256", "size", "original_filename", "artifact"]
