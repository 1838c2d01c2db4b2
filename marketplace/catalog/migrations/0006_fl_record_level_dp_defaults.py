from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("catalog", "0005_release_delay_past_the_timeout"),
    ]

    operations = [
        migrations.AddField(
            model_name="task",
            name="fl_privacy_unit",
            field=models.CharField(
                default="record",
                help_text="record: DP-SGD at each site protects every training row (default); site: noise on the "
                "aggregate protects a whole site; none: no DP guarantee (the owner's explicit opt-out)",
                max_length=8,
            ),
        ),
        migrations.AddField(
            model_name="task",
            name="fl_example_clip_norm",
            field=models.FloatField(default=1.0, help_text="record: L2 bound of each row's gradient"),
        ),
        migrations.AlterField(
            model_name="task",
            name="fl_clip_norm",
            field=models.FloatField(
                default=1.0,
                help_text="L2 bound of each site's whole update (site unit: the sensitivity; record: a bound)",
            ),
        ),
        migrations.AlterField(
            model_name="task",
            name="fl_noise_multiplier",
            field=models.FloatField(
                default=1.0, help_text="record: sigma of each DP-SGD step; site: the aggregate carries noise z * clip"
            ),
        ),
        migrations.AlterField(
            model_name="task",
            name="fl_epsilon_cap",
            field=models.FloatField(blank=True, default=8.0, help_text="A run stops before passing it", null=True),
        ),
    ]
