from django.contrib import admin

from marketplace.leaderboard.models import LeaderboardEntry


@admin.register(LeaderboardEntry)
class LeaderboardEntryAdmin(admin.ModelAdmin):
    list_display = ["submission", "task", "n_sites", "n_rows", "updated_at"]
