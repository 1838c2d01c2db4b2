"""Submissions that ended before results were padded to a release time become visible as they
were: at their last update (otherwise their vendors would see them as pending for ever)."""

from django.db import migrations
from django.db.models import F

FINAL = ("scored", "failed")


def backfill(apps, schema_editor):
    Submission = apps.get_model("submissions", "Submission")
    Submission.objects.filter(status__in=FINAL, results_visible_at__isnull=True).update(
        results_visible_at=F("updated_at")
    )


class Migration(migrations.Migration):
    dependencies = [("submissions", "0004_submission_results_visible_at")]

    operations = [migrations.RunPython(backfill, migrations.RunPython.noop)]
