from django.apps import AppConfig
from django.db.models.signals import post_migrate


class ServersConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "servers"
    verbose_name = "Servers"

    def ready(self) -> None:
        # Imported here, as Django requires: these import models, which the app registry
        # loads only after every app's config.
        from models_catalog.last_used import register_in_use_provider
        from servers.supervision import lifecycle

        # My models refuses to delete what a server on that host holds.
        register_in_use_provider(lifecycle.running_model_ids)

        # The look-ups' triggers, put back after every migrate: SQLite drops a table's triggers
        # when the schema editor rebuilds it (servers/lookup_triggers.py).
        post_migrate.connect(_ensure_lookup_triggers, sender=self)


def _ensure_lookup_triggers(sender, using: str = "default", **kwargs) -> None:
    from django.db import connections
    from django.db.migrations.recorder import MigrationRecorder

    from servers import lookup_triggers

    connection = connections[using]
    # Only while the migration that made them is applied: migrating back before it removes them.
    if ("servers", lookup_triggers.MIGRATION) in MigrationRecorder(connection).applied_migrations():
        lookup_triggers.ensure(connection)
