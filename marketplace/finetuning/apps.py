from django.apps import AppConfig


class FinetuningConfig(AppConfig):
    name = "marketplace.finetuning"
    label = "finetuning"
    verbose_name = "Federated fine-tuning"
