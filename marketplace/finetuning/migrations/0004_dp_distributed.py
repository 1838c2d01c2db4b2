from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("finetuning", "0003_example_weighting"),
    ]

    operations = [
        migrations.AddField(
            model_name="finetuningrun",
            name="dp_distributed",
            field=models.BooleanField(
                default=False,
                help_text="record, secure aggregation, one full-batch step per round: each site adds "
                "sigma/sqrt(t) and any released sum carries sigma (evaluator.privacy.distributed)",
            ),
        ),
    ]
