"""The version row of the gateway's remembered look-ups and the triggers that bump it
(servers/lookup_triggers.py; docs/gateway.md, "The look-ups before the first byte"). The same
`ensure` runs again after every `migrate` (servers/apps.py), which puts back what a rebuilt
SQLite table lost."""

from django.db import migrations


def create(apps, schema_editor):
    from servers import lookup_triggers

    lookup_triggers.ensure(schema_editor.connection)


def drop(apps, schema_editor):
    from servers import lookup_triggers

    lookup_triggers.drop(schema_editor.connection)


class Migration(migrations.Migration):
    dependencies = [
        ("servers", "0013_message_image"),
        ("accounts", "0004_limits"),
        ("models_catalog", "0008_host_memory_plan"),
    ]

    operations = [migrations.RunPython(create, drop, elidable=False)]
