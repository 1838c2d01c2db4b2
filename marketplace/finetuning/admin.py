from django.contrib import admin

from marketplace.finetuning.models import FineTuningRun, Participant, RoundRecord


class ParticipantInline(admin.TabularInline):
    model = Participant
    extra = 0
    readonly_fields = ["site", "number", "job"]


@admin.register(FineTuningRun)
class FineTuningRunAdmin(admin.ModelAdmin):
    list_display = ["id", "task", "parent", "vendor", "status", "current_round", "phase", "epsilon_spent"]
    list_filter = ["status", "strategy", "secure_aggregation"]
    inlines = [ParticipantInline]


@admin.register(RoundRecord)
class RoundRecordAdmin(admin.ModelAdmin):
    list_display = ["run", "round", "attempt", "status", "n_contributors", "train_loss", "epsilon"]
    list_filter = ["status"]
