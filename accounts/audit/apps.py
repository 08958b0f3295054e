from django.apps import AppConfig


class AuditConfig(AppConfig):
    """The audit log: an app of its own (label `audit`) so its table has its own migrations."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "accounts.audit"
    label = "audit"
    verbose_name = "Audit log"
