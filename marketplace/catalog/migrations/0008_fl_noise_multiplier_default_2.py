from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("catalog", "0007_merge_20261126_1703"),
    ]

    operations = [
        migrations.AlterField(
            model_name="task",
            name="fl_noise_multiplier",
            field=models.FloatField(
                default=2.0, help_text="record: sigma of each DP-SGD step; site: the aggregate carries noise z * clip"
            ),
        ),
    ]
