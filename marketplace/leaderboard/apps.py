from django.apps import AppConfig


class LeaderboardConfig(AppConfig):
    name = "marketplace.leaderboard"
    label = "leaderboard"
