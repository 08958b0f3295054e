"""The Django admin for users: status filter, approval and admin-rights bulk actions; groups
and limits (an inline on the group and on the user, and a page of their own).

Every change goes through `accounts.approval`, so the last active admin cannot be demoted,
disabled or deleted here either (change form, bulk actions, delete view, bulk delete). A
change of a group or of limits is one audit entry, as on the Groups page (`accounts.groups`).
"""

from django.contrib import admin, messages
from django.contrib.admin.actions import delete_selected as django_delete_selected
from django.contrib.admin.utils import unquote
from django.contrib.auth.admin import GroupAdmin as DjangoGroupAdmin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.contrib.auth.models import Group
from django.db import transaction
from django.shortcuts import redirect
from django.urls import reverse

from accounts import approval, groups
from accounts.audit import log as audit
from accounts.forms import AdminGroupForm, AdminUserChangeForm, AdminUserCreationForm
from accounts.models import ApiKey, Limits, User
from accounts.teams import LIMIT_FIELDS


def _report(modeladmin, request, changed, verb: str) -> None:
    if changed:
        names = ", ".join(str(user) for user in changed)
        modeladmin.message_user(request, f"{verb}: {names}.", messages.SUCCESS)
    else:
        modeladmin.message_user(request, "Nothing to change.", messages.INFO)


class GroupLimitsInline(admin.StackedInline):
    model = Limits
    fk_name = "group"
    fields = LIMIT_FIELDS
    max_num = 1
    verbose_name_plural = "limits (blank: no limit)"


class UserLimitsInline(GroupLimitsInline):
    fk_name = "user"
    verbose_name_plural = "own limits, overriding the groups' (blank: the groups')"


class LimitsRecorded:
    """Records a change of the limits inline as one audit entry (`accounts.groups`)."""

    def save_formset(self, request, form, formset, change):
        if formset.model is not Limits:
            return super().save_formset(request, form, formset, change)
        owner = form.instance
        before = groups.limits_of(owner) if change else dict.fromkeys(LIMIT_FIELDS)
        super().save_formset(request, form, formset, change)
        groups.record_limits(owner, before, by=request.user)
        return None


admin.site.unregister(Group)


@admin.register(Group)
class GroupAdmin(LimitsRecorded, DjangoGroupAdmin):
    form = AdminGroupForm
    inlines = [GroupLimitsInline]
    list_display = ("name", "member_count")

    @admin.display(description="members")
    def member_count(self, group: Group) -> int:
        return group.user_set.count()

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        if not change:
            audit.record(request.user, audit.Action.GROUP_CREATE, obj, after={"name": obj.name})
        elif "name" in form.changed_data:
            audit.record(
                request.user, audit.Action.GROUP_RENAME, obj,
                before={"name": form.initial["name"]}, after={"name": obj.name},
            )  # fmt: skip

    def delete_model(self, request, obj):
        groups.delete_group(obj, by=request.user)

    def delete_queryset(self, request, queryset):
        for group in queryset:
            groups.delete_group(group, by=request.user)


@admin.register(Limits)
class LimitsAdmin(admin.ModelAdmin):
    list_display = ("__str__", *LIMIT_FIELDS, "updated_at")
    list_filter = (("group", admin.EmptyFieldListFilter),)
    search_fields = ("group__name", "user__email")
    fields = ("group", "user", *LIMIT_FIELDS)

    def get_readonly_fields(self, request, obj=None):
        return ("group", "user") if obj is not None else ()

    def save_model(self, request, obj, form, change):
        owner = obj.group or obj.user
        before = groups.limits_of(owner) if change else dict.fromkeys(LIMIT_FIELDS)
        super().save_model(request, obj, form, change)
        groups.record_limits(owner, before, by=request.user)

    def delete_model(self, request, obj):
        self.delete_queryset(request, Limits.objects.filter(pk=obj.pk))

    def delete_queryset(self, request, queryset):
        for row in queryset.select_related("group", "user"):
            owner = row.group or row.user
            before = groups.limits_of(owner)
            row.delete()
            groups.record_limits(owner, before, by=request.user)


@admin.register(User)
class UserAdmin(LimitsRecorded, DjangoUserAdmin):
    form = AdminUserChangeForm
    add_form = AdminUserCreationForm
    list_display = (
        "email",
        "status",
        "is_staff",
        "is_superuser",
        "is_active",
        "approved_by",
        "approved_at",
        "date_joined",
    )
    list_filter = ("status", "is_staff", "is_superuser", "is_active")
    search_fields = ("email", "username", "first_name", "last_name")
    ordering = ("-date_joined",)
    readonly_fields = ("approved_by", "approved_at", "last_login", "date_joined")
    fieldsets = (
        (None, {"fields": ("email", "username", "password")}),
        ("Access", {"fields": ("status", "approved_by", "approved_at")}),
        ("Personal info", {"fields": ("first_name", "last_name")}),
        (
            "Permissions",
            {
                "fields": (
                    "is_active",
                    "is_staff",
                    "is_superuser",
                    "groups",
                    "user_permissions",
                )
            },
        ),
        ("Important dates", {"fields": ("last_login", "date_joined")}),
    )
    add_fieldsets = (
        (
            None,
            {
                "classes": ("wide",),
                "fields": ("email", "username", "usable_password", "password1", "password2"),
            },
        ),
    )
    actions = ["approve", "disable", "make_admin", "remove_admin", "delete_selected"]

    def get_inlines(self, request, obj):
        return [UserLimitsInline] if obj is not None else []

    # Single-object paths -------------------------------------------------------------------

    def save_model(self, request, obj, form, change):
        # The change form's clean() has already applied the last-admin rule, inside the
        # transaction the admin wraps around the whole change view.
        previous_status = form.initial.get("status") if change else None
        approval.save_status(obj, previous_status, by=request.user)
        if change:
            before = {name: form.initial.get(name) for name in approval.ACCESS_FIELDS}
            approval.record_edit(obj, before, by=request.user)
        else:
            after = {"status": obj.status, "admin": obj.is_admin, "via": "Django admin"}
            audit.record(request.user, audit.Action.USER_CREATE, obj, after=after)

    def save_related(self, request, form, formsets, change):
        groups = form.instance.groups
        before = sorted(groups.values_list("name", flat=True)) if change else []
        super().save_related(request, form, formsets, change)
        after = sorted(groups.values_list("name", flat=True))
        if before != after:
            audit.record(
                request.user, audit.Action.GROUPS, form.instance,
                before={"groups": before}, after={"groups": after},
            )  # fmt: skip

    def delete_view(self, request, object_id, extra_context=None):
        with transaction.atomic():
            obj = self.get_object(request, unquote(object_id))
            if obj is not None:
                try:
                    approval.ensure_admins_remain([obj])
                except approval.LastAdminError as error:
                    self.message_user(request, error.message, messages.ERROR)
                    return redirect(reverse("admin:accounts_user_change", args=[obj.pk]))
            return super().delete_view(request, object_id, extra_context)

    def delete_model(self, request, obj):
        approval.delete_users([obj], by=request.user)

    def delete_queryset(self, request, queryset):
        approval.delete_users(queryset, by=request.user)

    # Bulk actions --------------------------------------------------------------------------

    def _apply(self, request, change, users, verb: str) -> None:
        try:
            changed = change(users, by=request.user)
        except approval.LastAdminError as error:
            self.message_user(request, error.message, messages.ERROR)
        else:
            _report(self, request, changed, verb)

    @admin.action(description="Approve selected users", permissions=["change"])
    def approve(self, request, queryset):
        self._apply(request, approval.approve, queryset, "Approved")

    @admin.action(description="Disable selected users", permissions=["change"])
    def disable(self, request, queryset):
        self._apply(request, approval.disable, queryset, "Disabled")

    @admin.action(description="Make selected users admins", permissions=["change"])
    def make_admin(self, request, queryset):
        self._apply(request, approval.make_admin, queryset, "Now admins")

    @admin.action(description="Remove admin rights from selected users", permissions=["change"])
    def remove_admin(self, request, queryset):
        self._apply(request, approval.remove_admin, queryset, "No longer admins")

    @admin.action(description="Delete selected users", permissions=["delete"])
    def delete_selected(self, request, queryset):
        """Django's bulk delete (with its confirmation page), refused up front when it would
        delete the last active admin."""
        try:
            with transaction.atomic():
                approval.ensure_admins_remain(queryset)
                return django_delete_selected(self, request, queryset)
        except approval.LastAdminError as error:
            self.message_user(request, error.message, messages.ERROR)
            return None


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ("name", "user", "prefix", "created_at", "last_used_at", "revoked_at")
    list_filter = ("revoked_at",)
    search_fields = ("name", "user__email", "prefix")
    readonly_fields = ("user", "prefix", "created_at", "last_used_at")
    fields = ("user", "name", "prefix", "created_at", "last_used_at", "revoked_at")

    def has_add_permission(self, request):
        return False  # Keys are created by their owner, who alone sees the secret once.

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        if not form.changed_data:
            return
        revoked = obj.revoked_at is not None and form.initial.get("revoked_at") is None
        action = audit.Action.KEY_REVOKE if revoked else audit.Action.KEY_CHANGE
        audit.record(request.user, action, obj, **audit.form_changes(form))

    def delete_model(self, request, obj):
        self.delete_queryset(request, ApiKey.objects.filter(pk=obj.pk))

    def delete_queryset(self, request, queryset):
        for key in queryset.filter(revoked_at__isnull=True):  # deleting a live key revokes it
            audit.record(request.user, audit.Action.KEY_REVOKE, key, detail="Deleted.")
        super().delete_queryset(request, queryset)
