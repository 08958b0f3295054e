from django.contrib import admin, messages
from django.contrib.admin.actions import delete_selected
from django.http import HttpResponseRedirect
from django.urls import reverse

from models_catalog.admin import ReadOnlyAdmin
from servers.models import ServerInstance, ServerProfile, UsageRecord


class ServerInstanceInline(admin.StackedInline):
    model = ServerInstance
    can_delete = False
    extra = 0
    readonly_fields = [f.name for f in ServerInstance._meta.fields if f.name != "profile"]


@admin.register(ServerProfile)
class ServerProfileAdmin(admin.ModelAdmin):
    """A profile whose server is live is not deleted here either (ServerProfile.delete_refusal):
    its process would keep running with nothing tracking it."""

    list_display = ["name", "slug", "model_id", "host", "port", "owner", "auto_start"]
    list_filter = ["host", "auto_start"]
    search_fields = ["name", "slug", "model_id"]
    prepopulated_fields = {"slug": ["name"]}
    # The instance is shown here, not on an admin page of its own: a read-only admin of it would
    # take away the delete permission a profile's deletion cascades to.
    inlines = [ServerInstanceInline]
    actions = ["delete_stopped"]

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # replaced by delete_stopped
        return actions

    @admin.action(permissions=["delete"], description="Delete selected server profiles")
    def delete_stopped(self, request, queryset):
        refusals = [r for profile in queryset if (r := profile.delete_refusal())]
        if refusals:
            self.message_user(request, " ".join(refusals), messages.ERROR)
            return None
        return delete_selected(self, request, queryset)

    def delete_view(self, request, object_id, extra_context=None):
        profile = self.get_object(request, object_id)
        if profile is not None and (refusal := profile.delete_refusal()):
            self.message_user(request, refusal, messages.ERROR)
            url = reverse("admin:servers_serverprofile_change", args=[profile.pk])
            return HttpResponseRedirect(url)
        return super().delete_view(request, object_id, extra_context)


@admin.register(UsageRecord)
class UsageRecordAdmin(ReadOnlyAdmin):
    """Read-only: what went through the portal (never the message text)."""

    list_display = ["started_at", "user", "profile_name", "source", "status", "completion_tokens"]
    list_filter = ["source", "status"]
    search_fields = ["profile_name", "user__email"]
    date_hierarchy = "started_at"
