from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.db import models


class User(AbstractUser):
    """A portal member. Signs in by email; `status` decides whether they get in at all."""

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

    def __str__(self) -> str:
        return self.email or self.username
