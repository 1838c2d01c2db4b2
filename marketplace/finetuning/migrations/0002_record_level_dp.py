from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("finetuning", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="finetuningrun",
            name="privacy_unit",
            field=models.CharField(blank=True, help_text="record, site or none (no DP)", max_length=8),
        ),
        migrations.AddField(
            model_name="finetuningrun",
            name="example_clip_norm",
            field=models.FloatField(blank=True, help_text="record: per-row gradient bound C", null=True),
        ),
        migrations.AddField(
            model_name="finetuningrun",
            name="dp_sample_rate",
            field=models.FloatField(blank=True, help_text="record: Poisson sampling rate q", null=True),
        ),
        migrations.AddField(
            model_name="finetuningrun",
            name="dp_steps_per_round",
            field=models.PositiveIntegerField(blank=True, help_text="record: DP-SGD steps", null=True),
        ),
    ]
