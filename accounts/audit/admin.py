"""The audit log in the Django admin: read-only. No add, change or delete (nor the bulk
delete action); `manage.py prune_audit` is the only way out."""

from django.contrib import admin

from accounts.audit.models import AuditEntry


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin):
    list_display = ("at", "actor_label", "action", "object_type", "object_label", "address")
    list_filter = ("action", "object_type")
    search_fields = ("actor_label", "object_label", "object_id", "detail")
    date_hierarchy = "at"
    readonly_fields = [field.name for field in AuditEntry._meta.fields]
    actions = None

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
