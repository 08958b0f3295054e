from django.apps import AppConfig


class ServersConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "servers"
    verbose_name = "Servers"

    def ready(self) -> None:
        from models_catalog.usage import register_in_use_provider
        from servers import services

        # My models refuses to delete what a server on that host holds.
        register_in_use_provider(services.running_model_ids)
