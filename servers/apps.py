from django.apps import AppConfig


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
