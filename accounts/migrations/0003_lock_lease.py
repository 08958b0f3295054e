from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0002_api_keys_and_locks"),
    ]

    operations = [
        migrations.AddField(
            model_name="lock",
            name="held_by",
            field=models.CharField(blank=True, max_length=64),
        ),
        migrations.AddField(
            model_name="lock",
            name="held_until",
            field=models.DateTimeField(blank=True, null=True),
        ),
    ]
