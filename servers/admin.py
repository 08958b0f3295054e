from django.contrib import admin

from servers.models import ServerInstance, ServerProfile


class ServerInstanceInline(admin.StackedInline):
    model = ServerInstance
    can_delete = False
    extra = 0
    readonly_fields = [f.name for f in ServerInstance._meta.fields if f.name != "profile"]


@admin.register(ServerProfile)
class ServerProfileAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "model_id", "host", "port", "owner", "auto_start"]
    list_filter = ["host", "auto_start"]
    search_fields = ["name", "slug", "model_id"]
    prepopulated_fields = {"slug": ["name"]}
    inlines = [ServerInstanceInline]
