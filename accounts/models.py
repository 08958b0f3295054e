from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models


class User(AbstractUser):
    """A portal member. Signs in by email; `status` decides whether they get in at all.

    Status changes, admin rights and deletion go through `accounts.approval`, which keeps the
    rule that at least one active admin always remains.
    """

    class Status(models.TextChoices):
        PENDING = "pending", "Pending approval"
        APPROVED = "approved", "Approved"
        DISABLED = "disabled", "Disabled"

    email = models.EmailField("email address", unique=True)
    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True
    )
    approved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    approved_at = models.DateTimeField(null=True, blank=True)

    @property
    def is_approved(self) -> bool:
        return self.is_active and self.status == self.Status.APPROVED

    @property
    def is_admin(self) -> bool:
        """Has admin rights (whether or not the account is currently usable)."""
        return self.is_staff or self.is_superuser

    @property
    def is_active_admin(self) -> bool:
        """An admin who can sign in and act: the kind that must never run out."""
        return self.is_approved and self.is_admin

    def __str__(self) -> str:
        return self.email or self.username


class Lock(models.Model):
    """The portal's one lock: a named row, held for a transaction (SELECT … FOR UPDATE, for
    rare critical sections) or for a lease (`held_by` until `held_until`, for a long pass that
    must not keep a transaction open). See `accounts.locks`.

    Works the same on PostgreSQL (row lock) and SQLite (the IMMEDIATE transaction that
    writes the row holds the database's write lock).
    """

    name = models.CharField(max_length=64, primary_key=True)
    held_by = models.CharField(max_length=64, blank=True)
    held_until = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return self.name


class ApiKey(models.Model):
    """A personal key for the OpenAI-compatible gateway. Only its keyed hash is stored."""

    NAME_MAX_LENGTH = 64

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_keys"
    )
    name = models.CharField(max_length=NAME_MAX_LENGTH)
    prefix = models.CharField(
        max_length=16, help_text="The first characters of the key, to recognise it in lists."
    )
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        verbose_name = "API key"
        constraints = [
            models.UniqueConstraint(
                fields=["user", "name"],
                condition=models.Q(revoked_at__isnull=True),
                name="accounts_apikey_unique_active_name_per_user",
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None


class Limits(models.Model):
    """How much of the shared host one group (a team: Django's `auth.Group`) or one person may
    use: requests per minute, prompt + completion tokens per day (a day of settings.TIME_ZONE)
    and requests in flight at once. Blank = no limit. A row belongs to a group or to a user,
    never both; a user's own value overrides their groups' (`accounts.teams.limits_for`).
    Counted and enforced by servers.sharing.admission, for /v1 and the chat alike."""

    MAX_REQUESTS_PER_MINUTE = 100_000
    MAX_TOKENS_PER_DAY = 10_000_000_000
    MAX_CONCURRENT_REQUESTS = 10_000

    group = models.OneToOneField(
        "auth.Group", null=True, blank=True, on_delete=models.CASCADE, related_name="limits"
    )
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="limits",
    )
    requests_per_minute = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MaxValueValidator(MAX_REQUESTS_PER_MINUTE)],
        help_text="Blank: no limit.",
    )
    tokens_per_day = models.PositiveBigIntegerField(
        "tokens per day",
        null=True,
        blank=True,
        validators=[MaxValueValidator(MAX_TOKENS_PER_DAY)],
        help_text="Prompt + completion tokens in a day of the portal's time zone. Blank: no limit.",
    )
    concurrent_requests = models.PositiveIntegerField(
        "requests in flight",
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(MAX_CONCURRENT_REQUESTS)],
        help_text="Requests admitted or waiting at once. Blank: no limit.",
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "limits"
        constraints = [
            models.CheckConstraint(
                condition=models.Q(group__isnull=False, user__isnull=True)
                | models.Q(group__isnull=True, user__isnull=False),
                name="accounts_limits_group_or_user",
            )
        ]

    def __str__(self) -> str:
        return f"limits of {self.group or self.user}"
