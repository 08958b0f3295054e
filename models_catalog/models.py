from django.conf import settings
from django.db import models
from django.utils import timezone

from models_catalog.hosts import collect_facts
from models_catalog.validators import validate_repo_id


class Host(models.Model):
    """A machine that runs a Celery worker on its own queue and keeps its own model cache."""

    name = models.SlugField(max_length=64, unique=True)
    platform = models.CharField(max_length=32, blank=True)
    memory_total = models.BigIntegerField(default=0)
    memory_available = models.BigIntegerField(default=0)
    disk_free = models.BigIntegerField(default=0)
    disk_total = models.BigIntegerField(default=0)
    mlx_version = models.CharField(max_length=32, blank=True)
    mlx_lm_version = models.CharField(max_length=32, blank=True)
    hf_cache_dir = models.CharField(max_length=512, blank=True)
    last_heartbeat = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def queue(self) -> str:
        """The Celery queue that only this host's workers consume."""
        return f"host.{self.name}"

    @classmethod
    def local(cls) -> "Host":
        """This machine's host row, created with its facts on first use."""
        host, created = cls.objects.get_or_create(name=settings.HOST_NAME)
        if created or not host.memory_total:
            host.record_heartbeat()
        return host

    def record_heartbeat(self) -> None:
        """Store this machine's current facts; only the host's own worker should call it."""
        for field, value in collect_facts().items():
            setattr(self, field, value)
        self.last_heartbeat = timezone.now()
        self.save()


class InvalidTransition(ValueError):
    """A download was asked to move to a state its current state does not lead to."""


class Download(models.Model):
    """One model repo being (or having been) copied from the Hub into a host's cache.

    The state machine lives here: `TRANSITIONS` is the one mapping of allowed moves and
    `transition()` the one method that makes them, recording the reason and the time. Workers
    hold a lease (`lease_owner` until `lease_expires_at`) while they run, renewed by a
    heartbeat; see models_catalog/downloads.py and docs/downloads.md.
    """

    class State(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Downloading"
        PAUSED = "paused", "Paused"
        CANCELLED = "cancelled", "Cancelled"
        FAILED = "failed", "Failed"
        COMPLETED = "completed", "Completed"

    TRANSITIONS: dict[str, set[str]] = {
        State.QUEUED: {State.RUNNING, State.PAUSED, State.CANCELLED, State.FAILED},
        State.RUNNING: {
            State.QUEUED,  # its worker was lost: waiting for another one
            State.PAUSED,
            State.CANCELLED,
            State.FAILED,
            State.COMPLETED,
        },
        State.PAUSED: {State.QUEUED, State.CANCELLED},
        State.FAILED: {State.QUEUED, State.CANCELLED},
        State.CANCELLED: {State.QUEUED},
        State.COMPLETED: set(),
    }
    ACTIVE_STATES = (State.QUEUED, State.RUNNING, State.PAUSED)

    repo_id = models.CharField(max_length=96, validators=[validate_repo_id])
    requested_revision = models.CharField(max_length=128, default="main")
    revision = models.CharField(max_length=64, help_text="Commit hash, resolved at start.")
    host = models.ForeignKey(Host, on_delete=models.PROTECT, related_name="downloads")
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="downloads",
    )
    state = models.CharField(
        max_length=16, choices=State.choices, default=State.QUEUED, db_index=True
    )
    state_reason = models.CharField(max_length=500, blank=True)
    state_changed_at = models.DateTimeField(default=timezone.now)
    phase = models.CharField(max_length=32, blank=True)
    manifest = models.JSONField(default=list, blank=True)
    bytes_total = models.BigIntegerField(default=0)
    bytes_done = models.BigIntegerField(default=0)
    files_total = models.IntegerField(default=0)
    files_done = models.IntegerField(default=0)
    speed_bps = models.BigIntegerField(default=0)
    eta_seconds = models.IntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    lease_owner = models.CharField(max_length=200, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    enqueued_at = models.DateTimeField(null=True, blank=True)
    attempts = models.IntegerField(default=0)
    files_removed = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            # The same model is never downloaded twice at once on a host (whatever revision:
            # both would write into the same cache folder). A second click joins the first.
            models.UniqueConstraint(
                fields=["host", "repo_id"],
                condition=models.Q(state__in=["queued", "running", "paused"]),
                name="one_active_download_per_host_repo",
            )
        ]

    def __str__(self) -> str:
        return f"{self.repo_id}@{self.revision[:8]} on {self.host} ({self.state})"

    @property
    def is_active(self) -> bool:
        return self.state in self.ACTIVE_STATES

    @property
    def percent(self) -> int:
        if self.state == self.State.COMPLETED:
            return 100
        if not self.bytes_total:
            return 0
        return min(100, int(self.bytes_done * 100 / self.bytes_total))

    def can_be_cancelled_by(self, user) -> bool:
        """Cancelling deletes partial files: the member who started it, or an admin."""
        return bool(user.is_staff or (self.requested_by_id and self.requested_by_id == user.pk))

    def can(self, state: str) -> bool:
        return state in self.TRANSITIONS[self.state]

    def transition(self, state: str, reason: str = "", *, save: bool = True) -> None:
        """Move to `state` if the mapping allows it, recording why and when.

        Callers that race with others (web vs. worker) hold the row with select_for_update.
        """
        if not self.can(state):
            raise InvalidTransition(
                f"A {self.get_state_display().lower()} download cannot become {state}."
            )
        now = timezone.now()
        self.state = state
        self.state_reason = reason[:500]
        self.state_changed_at = now
        fields = ["state", "state_reason", "state_changed_at"]
        if state in (self.State.COMPLETED, self.State.FAILED, self.State.CANCELLED):
            self.finished_at = now
            self.speed_bps = 0
            self.eta_seconds = None
            fields += ["finished_at", "speed_bps", "eta_seconds"]
        if state == self.State.FAILED:
            self.error = reason
            fields.append("error")
        elif state in (self.State.QUEUED, self.State.RUNNING):
            self.error = ""
            self.finished_at = None
            fields += ["error", "finished_at"]
        if state == self.State.QUEUED:
            self.files_removed = False
            fields.append("files_removed")
        if state == self.State.PAUSED:
            self.speed_bps = 0
            self.eta_seconds = None
            fields += ["speed_bps", "eta_seconds"]
        if save:
            self.save(update_fields=fields)


class DownloadAttempt(models.Model):
    """One worker run of a download, from taking the lease to letting it go (or dying)."""

    download = models.ForeignKey(Download, on_delete=models.CASCADE, related_name="runs")
    owner = models.CharField(max_length=200)
    started_at = models.DateTimeField(default=timezone.now)
    last_heartbeat_at = models.DateTimeField(default=timezone.now)
    ended_at = models.DateTimeField(null=True, blank=True)
    bytes_at_start = models.BigIntegerField(default=0)
    outcome = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["started_at", "id"]

    def __str__(self) -> str:
        return f"run of download {self.download_id} by {self.owner}"


class HubSettings(models.Model):
    """The portal's Hugging Face token (one row), encrypted with a key derived from
    SECRET_KEY. See models_catalog/crypto.py and `models_catalog.hub_files.hub_token()`."""

    token_encrypted = models.TextField(blank=True)
    token_hint = models.CharField(max_length=16, blank=True)
    checked_user = models.CharField(max_length=200, blank=True)
    checked_at = models.DateTimeField(null=True, blank=True)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "Hugging Face settings"
        verbose_name_plural = "Hugging Face settings"

    def __str__(self) -> str:
        return "Hugging Face settings"

    @classmethod
    def load(cls) -> "HubSettings":
        settings_row, _ = cls.objects.get_or_create(pk=1)
        return settings_row


class ModelUsage(models.Model):
    """When a host last served a model (set by the servers app through `mark_model_used`)."""

    host = models.ForeignKey(Host, on_delete=models.CASCADE, related_name="model_usage")
    repo_id = models.CharField(max_length=96, validators=[validate_repo_id])
    last_used_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["host", "repo_id"], name="one_usage_row_per_host_repo")
        ]

    def __str__(self) -> str:
        return f"{self.repo_id} on {self.host} last used {self.last_used_at}"
