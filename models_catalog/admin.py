"""What admins see of the catalog's rows in the Django admin: hosts and downloads, read-only.

They change through the portal (a host's worker reports it; a download moves through its state
machine in models_catalog/downloads.py), never by editing a row here.
"""

from django.contrib import admin

from models_catalog.models import Download, Host


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Host)
class HostAdmin(ReadOnlyAdmin):
    list_display = ["name", "platform", "last_heartbeat", "memory_total", "mlx_version"]
    search_fields = ["name"]


@admin.register(Download)
class DownloadAdmin(ReadOnlyAdmin):
    list_display = ["repo_id", "host", "state", "requested_by", "created_at"]
    list_filter = ["state", "host"]
    search_fields = ["repo_id"]
