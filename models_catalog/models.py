"""The catalog's models: what the portal knows of Hub models, downloads and their runs, the Hub
token and when a model was last used. `Host` is the hosts room's (models_catalog/hosts/)."""

from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone

from common.states import StateMachine
from models_catalog.characteristics import (
    Characteristics,
    estimate_size,
    extract,
    format_context,
    format_parameters,
    is_known_family,
    quantization_label,
)
from models_catalog.fit import Fit, fit
from models_catalog.hosts.models import Host as Host  # registered with this app from here
from models_catalog.hub_data import StoredJSONDecoder, chat_template
from models_catalog.validators import validate_repo_id


class CatalogModel(models.Model):
    """A Hugging Face model the portal has seen: its Hub facts, its `config.json` and the
    characteristics read from them, stored so that a page never refetches what it knows."""

    repo_id = models.CharField(max_length=96, unique=True)
    author = models.CharField(max_length=96, blank=True)
    sha = models.CharField(max_length=64, blank=True)
    downloads = models.BigIntegerField(default=0)
    likes = models.IntegerField(default=0)
    trending_score = models.IntegerField(default=0)
    last_modified = models.DateTimeField(null=True, blank=True)
    gated = models.CharField(max_length=16, blank=True)  # "", "auto" or "manual"
    pipeline_tag = models.CharField(max_length=64, blank=True)
    library_name = models.CharField(max_length=64, blank=True)
    # What the Hub said is cleaned when it is read (models_catalog/hub_data.py), and again when
    # a JSON column is loaded (StoredJSONDecoder): rows stored before those rules still load.
    tags = models.JSONField(default=list, blank=True, decoder=StoredJSONDecoder)
    used_storage = models.BigIntegerField(null=True, blank=True)
    # dtype -> count
    safetensors_parameters = models.JSONField(null=True, blank=True, decoder=StoredJSONDecoder)
    # the Hub's short `config` field
    api_config = models.JSONField(null=True, blank=True, decoder=StoredJSONDecoder)
    listed_at = models.DateTimeField(null=True, blank=True)

    # config.json and the chat template, read once (local cache first, then the Hub).
    config = models.JSONField(null=True, blank=True, decoder=StoredJSONDecoder)
    chat_template = models.TextField(blank=True)
    config_source = models.CharField(max_length=8, blank=True)  # "local" or "hub"
    config_sha = models.CharField(max_length=64, blank=True)
    config_fetched_at = models.DateTimeField(null=True, blank=True)
    config_error = models.CharField(max_length=300, blank=True)
    config_error_at = models.DateTimeField(null=True, blank=True)

    # Characteristics (models_catalog.characteristics.extract), kept in step by refresh().
    model_type = models.CharField(max_length=64, blank=True)
    family = models.CharField(max_length=64, blank=True, db_index=True)
    parameters = models.BigIntegerField(null=True, blank=True)
    parameters_estimated = models.BooleanField(default=False)
    quant_bits = models.PositiveSmallIntegerField(null=True, blank=True)
    quant_group_size = models.PositiveSmallIntegerField(null=True, blank=True)
    context_length = models.IntegerField(null=True, blank=True)
    vision = models.BooleanField(default=False)
    tools = models.BooleanField(default=False)
    thinking = models.BooleanField(default=False)
    size_bytes = models.BigIntegerField(null=True, blank=True)
    size_estimated = models.BooleanField(default=False)

    # The detail page: files with sizes and a README excerpt.
    # [{"name": ..., "size": ...}]
    files = models.JSONField(null=True, blank=True, decoder=StoredJSONDecoder)
    readme_excerpt = models.TextField(blank=True)
    detail_fetched_at = models.DateTimeField(null=True, blank=True)

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    CHARACTERISTIC_FIELDS = [
        "model_type", "family", "parameters", "parameters_estimated", "quant_bits",
        "quant_group_size", "context_length", "vision", "tools", "thinking", "size_bytes",
        "size_estimated",
    ]  # fmt: skip

    class Meta:
        ordering = ["-downloads", "repo_id"]

    def __str__(self) -> str:
        return self.repo_id

    @property
    def name(self) -> str:
        return self.repo_id.split("/", 1)[-1]

    @property
    def has_config(self) -> bool:
        return self.config is not None

    def needs_config(self, retry_errors_after: timedelta) -> bool:
        """True when config.json is unknown, or the repo changed since it was read (new sha),
        and no recent attempt failed."""
        if self.config is not None and not (self.sha and self.config_sha != self.sha):
            return False
        failed_recently = (
            self.config_error_at is not None
            and timezone.now() - self.config_error_at < retry_errors_after
        )
        return not failed_recently

    def characteristics(self) -> Characteristics:
        """Characteristics from everything known: config.json (else the Hub's short config),
        chat template, tags, safetensors counts and the repo name."""
        # Each stored value is used only in the shape it should have: a row stored by an
        # older release (or by hand) may hold anything.
        api_config = self.api_config if isinstance(self.api_config, dict) else {}
        config = self.config if isinstance(self.config, dict) else api_config
        template = self.chat_template
        if not template:
            tokenizer = api_config.get("tokenizer_config")
            if isinstance(tokenizer, dict):
                template = chat_template(tokenizer.get("chat_template"))
        return extract(
            config,
            chat_template=template,
            tags=self.tags if isinstance(self.tags, list) else [],
            repo_id=self.repo_id,
            safetensors_parameters=self.safetensors_parameters,
        )

    def refresh_characteristics(self) -> None:
        """Recompute the stored characteristics and size (no I/O)."""
        found = self.characteristics()
        self.model_type = found.model_type[:64]
        self.family = found.family[:64]
        self.parameters = found.parameters
        self.parameters_estimated = found.parameters_estimated
        self.quant_bits = found.bits
        self.quant_group_size = found.group_size
        self.context_length = found.context_length
        self.vision = found.vision
        self.tools = found.tools
        self.thinking = found.thinking
        self.size_bytes, self.size_estimated = estimate_size(
            self.used_storage, found.parameters, found.bits, found.group_size
        )

    @property
    def quantization_label(self) -> str:
        return quantization_label(self.quant_bits)

    @property
    def parameters_label(self) -> str:
        return format_parameters(self.parameters)

    @property
    def context_label(self) -> str:
        return format_context(self.context_length)

    @property
    def family_known(self) -> bool:
        return is_known_family(self.family)

    def fit_on_memory(self, memory_total: int, *, macos_gpu: bool = False) -> Fit:
        """Whether this model fits in `memory_total` bytes (see models_catalog.fit)."""
        return fit(
            self.size_bytes, memory_total, estimated=self.size_estimated, macos_gpu=macos_gpu
        )

    def fit_on(self, host: Host) -> Fit:
        return self.fit_on_memory(host.memory_total, macos_gpu=host.uses_macos_gpu)


class Download(models.Model):
    """One model repo being (or having been) copied from the Hub into a host's cache.

    The state machine lives here: `TRANSITIONS` is the one mapping of allowed moves and
    `transition()` the one method that makes them, through common.states (the row locked, the
    move checked against the state the database holds, reason, time and side effects written
    at once). Workers hold a lease (`lease_owner` until `lease_expires_at`) while they run,
    renewed by a heartbeat; see models_catalog/downloads.py and docs/downloads.md.
    """

    class State(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Downloading"
        PAUSED = "paused", "Paused"
        CANCELLED = "cancelled", "Cancelled"
        FAILED = "failed", "Failed"
        COMPLETED = "completed", "Completed"
        DELETED = "deleted", "Deleted"  # completed, then removed from the host's cache

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
        State.COMPLETED: {State.DELETED},  # downloads.record_deletion
        State.DELETED: set(),  # downloading it again is a new download
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

    def can_be_cancelled_by(self, user: Any) -> bool:
        """Cancelling deletes partial files: the member who started it, or an admin."""
        return bool(user.is_admin or (self.requested_by_id and self.requested_by_id == user.pk))

    def can(self, state: str) -> bool:
        return DOWNLOAD_MACHINE.can(self.state, state)

    def transition(self, state: str, reason: str = "", **fields: Any) -> None:
        """Move to `state` if the table allows it from the state the database holds now,
        recording why and when, the side effects of that state (`transition_effects`) and the
        caller's other `fields`, in one locked write (common.states); raises
        InvalidTransition otherwise. The instance is up to date afterwards."""
        now = timezone.now()
        effects = transition_effects(state, reason, now)
        DOWNLOAD_MACHINE.move(self, state, reason, state_changed_at=now, **effects, **fields)


def transition_effects(state: str, reason: str, now: datetime) -> dict[str, Any]:
    """What moving a download to `state` changes besides the state and its reason (pure): an
    end closes it (when, no speed); a failure's reason is its error; queued or running again
    clears the error and the end; queued again means its files are no longer removed."""
    State = Download.State
    fields: dict[str, Any] = {}
    if state in (State.COMPLETED, State.FAILED, State.CANCELLED):
        fields.update(finished_at=now, speed_bps=0, eta_seconds=None)
    if state == State.FAILED:
        fields["error"] = reason
    elif state in (State.QUEUED, State.RUNNING):
        fields.update(error="", finished_at=None)
    if state == State.QUEUED:
        fields["files_removed"] = False
    if state == State.PAUSED:
        fields.update(speed_bps=0, eta_seconds=None)
    return fields


# The downloads' state machine (common.states: one helper and lock discipline for every row).
DOWNLOAD_MACHINE = StateMachine(Download.TRANSITIONS, what="download", reason_field="state_reason")


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
    SECRET_KEY. See models_catalog/crypto.py and `models_catalog.hub.hub_token()`."""

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
