from django.apps import AppConfig


class BudgetsConfig(AppConfig):
    name = "marketplace.budgets"
    label = "budgets"
