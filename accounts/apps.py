from django.apps import AppConfig


class AccountsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "accounts"
    verbose_name = "Users and API keys"  # allauth's own app is "Accounts"

    def ready(self) -> None:
        # Here, as Django requires (the receivers import models): importing connects them.
        from accounts import signals  # noqa: F401
