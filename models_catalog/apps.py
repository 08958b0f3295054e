from django.apps import AppConfig
from django.db.models.signals import post_migrate


class ModelsCatalogConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "models_catalog"
    verbose_name = "Model catalog"

    def ready(self) -> None:
        # Imported here: a model module may only be imported once the app registry is ready.
        from models_catalog.hosts.models import register_this_machine

        post_migrate.connect(register_this_machine, sender=self)
