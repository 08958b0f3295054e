"""The audit log's one table: an entry per change of who may do what, or of what runs.

Append-only: an entry is written once (`accounts.audit.record`) and never changed. Saving an
existing entry, deleting one, and a queryset's `update()` or `delete()` raise `AppendOnlyError`;
the Django admin shows entries read-only. `accounts.audit.prune()` (`manage.py prune_audit`) is
the only way out, and it records itself.

A Django app of its own (`accounts.audit`, label `audit`) inside the accounts room, with its
own migrations.

The people are kept as ids without a database constraint (`db_constraint=False`,
`DO_NOTHING`): deleting a user leaves their entries as they were, with the email they had
(`actor_label`).
"""

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.utils import timezone


class AppendOnlyError(Exception):
    """An audit entry was about to be changed or deleted."""


class Action(models.TextChoices):
    SIGNUP = "user.signup", "Signed up"
    USER_CREATE = "user.create", "Account created"
    APPROVE = "user.approve", "Approved"
    DISABLE = "user.disable", "Disabled"
    PEND = "user.pending", "Set back to pending"
    MAKE_ADMIN = "user.admin", "Made admin"
    REMOVE_ADMIN = "user.member", "Admin rights removed"
    USER_CHANGE = "user.change", "Account changed"
    GROUPS = "user.groups", "Groups changed"
    USER_DELETE = "user.delete", "Account deleted"
    GROUP_CREATE = "group.create", "Group created"
    GROUP_RENAME = "group.rename", "Group renamed"
    GROUP_MEMBERS = "group.members", "Group members changed"
    GROUP_DELETE = "group.delete", "Group deleted"
    LIMITS = "limits.change", "Limits changed"
    SSO_LINK = "user.sso-link", "Single sign-on linked"
    SSO_UNLINK = "user.sso-unlink", "Single sign-on unlinked"
    KEY_CREATE = "api-key.create", "API key created"
    KEY_REVOKE = "api-key.revoke", "API key revoked"
    KEY_CHANGE = "api-key.change", "API key changed"
    PROFILE_CREATE = "profile.create", "Profile created"
    PROFILE_EDIT = "profile.edit", "Profile edited"
    PROFILE_DELETE = "profile.delete", "Profile deleted"
    SERVER_START = "server.start", "Server started"
    SERVER_STOP = "server.stop", "Server stopped"
    SERVER_RESTART = "server.restart", "Server restarted"
    DOWNLOAD_START = "download.start", "Download started"
    DOWNLOAD_CANCEL = "download.cancel", "Download cancelled"
    MODEL_DELETE = "model.delete", "Model deleted"
    SETTING_CHANGE = "setting.change", "Setting changed"
    AUDIT_PRUNE = "audit.prune", "Audit log pruned"


class AuditQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise AppendOnlyError("Audit entries cannot be changed.")

    def delete(self):
        raise AppendOnlyError(
            "Audit entries cannot be deleted; `manage.py prune_audit --older-than DAYS` removes "
            "old ones."
        )

    def about(self, user) -> "AuditQuerySet":
        """What a member may read: the entries about their account and what they own, and
        those they made themselves."""
        return self.filter(models.Q(owner_id=user.pk) | models.Q(actor_id=user.pk))


class AuditEntry(models.Model):
    at = models.DateTimeField("when", default=timezone.now, db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.DO_NOTHING,
        db_constraint=False, related_name="+", help_text="Empty for a system actor.",
    )  # fmt: skip
    actor_label = models.CharField(
        "who", max_length=254, help_text="The person's email then, or the system actor."
    )
    action = models.CharField("what", max_length=32, choices=Action.choices, db_index=True)
    object_type = models.CharField(max_length=40, blank=True)
    object_id = models.CharField(max_length=255, blank=True)
    object_label = models.CharField("object", max_length=255, blank=True)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.DO_NOTHING,
        db_constraint=False, related_name="+",
        help_text="Whose account (or profile, key, download) the entry is about.",
    )  # fmt: skip
    address = models.GenericIPAddressField("from", null=True, blank=True)
    before = models.JSONField(default=dict, blank=True, encoder=DjangoJSONEncoder)
    after = models.JSONField(default=dict, blank=True, encoder=DjangoJSONEncoder)
    detail = models.CharField(max_length=500, blank=True)

    objects = AuditQuerySet.as_manager()

    class Meta:
        ordering = ["-at", "-pk"]
        verbose_name = "audit entry"
        verbose_name_plural = "audit log"

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.actor_label}: {self.get_action_display()}"

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise AppendOnlyError("Audit entries cannot be changed.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise AppendOnlyError("Audit entries cannot be deleted.")

    @property
    def changes(self) -> list[tuple[str, object, object]]:
        """(field, before, after) for each field the entry names."""
        names = list(dict.fromkeys([*self.before, *self.after]))
        return [(name, self.before.get(name), self.after.get(name)) for name in names]
