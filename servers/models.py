"""Server profiles (what a user configures) and server instances (what the supervisor runs).

A profile is the user's configuration, edited through a form. Its instance is the supervisor's
record of the process that serves it: state, pid, log, exit code. They are two rows on purpose:
a form save writes every field of its model, so keeping runtime state on the profile would let an
edit silently overwrite what a worker wrote a moment before (or the reverse).
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.urls import reverse
from django.utils import timezone

from common.states import StateMachine
from models_catalog.models import Host


def _default_host() -> int:
    return Host.objects.this_machine().pk


def slots(max_in_flight: int | None, decode_concurrency: int) -> int:
    """The rule of how many requests the portal lets through to a server at once: the
    profile's max_in_flight, else its decode concurrency (`ServerProfile.slots`, and the tiles
    from plain values)."""
    return max_in_flight or decode_concurrency or 1


def may_see(user, allowed_group_ids, user_group_ids) -> bool:
    """The rule of who sees and calls a profile: an admin always; anyone when the profile has
    no group rule (`allowed_group_ids` empty); otherwise a member of one of those groups.
    `ProfileQuerySet.visible_to` is the same rule in SQL (a test checks they agree)."""
    if user.is_admin:
        return True
    allowed = set(allowed_group_ids)
    return not allowed or bool(allowed & set(user_group_ids))


class Engine(models.TextChoices):
    """What serves a profile's model (the values of models_catalog.characteristics.engine_of,
    which picks the default for a model)."""

    TEXT = "text", "Text (mlx-lm)"
    VISION = "vision", "Vision (mlx-vlm)"
    EMBEDDINGS = "embeddings", "Embeddings"
    SPEECH = "speech-to-text", "Speech to text"


#: The engines whose servers chat (mlx_lm.server, mlx_vlm.server): the chat offers only their
#: profiles, and the profile form shows a chat server's options only for them.
CHAT_ENGINES = frozenset({Engine.TEXT, Engine.VISION})


class ProfileQuerySet(models.QuerySet):
    def for_chat(self) -> ProfileQuerySet:
        """The profiles whose engine chats (CHAT_ENGINES): the chat's picker and its form."""
        return self.filter(engine__in=CHAT_ENGINES)

    def visible_to(self, user) -> ProfileQuerySet:
        """The profiles `user` may see and call (`may_see`, in SQL): for the pages, the chat
        picker and /v1/models."""
        if user.is_admin:
            return self
        return self.filter(
            models.Q(allowed_groups__isnull=True) | models.Q(allowed_groups__user=user)
        ).distinct()

    def hidden_from(self, user) -> set[int]:
        """The ids of the profiles `user` may not see (`may_see`): none for an admin. Two small
        queries (the group rules, the user's groups), for the tiles' poll to filter its rows."""
        if user.is_admin:
            return set()
        allowed: dict[int, set[int]] = {}
        through = ServerProfile.allowed_groups.through
        for profile_id, group_id in through.objects.values_list("serverprofile_id", "group_id"):
            allowed.setdefault(profile_id, set()).add(group_id)
        if not allowed:
            return set()
        groups = set(user.groups.values_list("id", flat=True))
        return {pk for pk, ids in allowed.items() if not may_see(user, ids, groups)}


class ServerProfile(models.Model):
    """How to serve one model with `mlx_lm.server` on one host and port."""

    MAX_IN_FLIGHT = 1024
    MAX_QUEUE_LENGTH = 10_000
    MAX_QUEUE_WAIT_SECONDS = 3600

    name = models.CharField(max_length=80, unique=True)
    slug = models.SlugField(max_length=80, unique=True)
    model_id = models.CharField("model", max_length=96)
    engine = models.CharField(
        max_length=16,
        choices=Engine,
        default=Engine.TEXT,
        help_text="What serves the model: text chat, chat with images, embeddings or speech "
        "to text. The default fits the model.",
    )
    host = models.ForeignKey(
        Host, on_delete=models.PROTECT, related_name="server_profiles", default=_default_host
    )
    port = models.PositiveIntegerField()
    description = models.TextField(blank=True)
    system_prompt = models.TextField(blank=True)

    # mlx_lm.server options (defaults are mlx_lm.server's own).
    temperature = models.FloatField(default=0.0)
    top_p = models.FloatField("top-p", default=1.0)
    top_k = models.PositiveIntegerField("top-k", default=0)
    min_p = models.FloatField("min-p", default=0.0)
    max_tokens = models.PositiveIntegerField(default=512)
    # The most a request may ask for (servers/validation.max_tokens_cap); blank: the context.
    max_tokens_cap = models.PositiveIntegerField(
        "max tokens a request may ask",
        null=True,
        blank=True,
        help_text="A request asking for more gets 400 max_tokens_too_large. Blank: the model's "
        "context.",
    )
    chat_template_args = models.JSONField(default=dict, blank=True)
    draft_model_id = models.CharField("draft model", max_length=96, blank=True)
    num_draft_tokens = models.PositiveSmallIntegerField(default=3)
    prompt_cache_size = models.PositiveIntegerField(default=10)
    decode_concurrency = models.PositiveIntegerField(default=32)
    prompt_concurrency = models.PositiveIntegerField(default=8)
    kv_bits = models.PositiveSmallIntegerField("KV-cache bits", null=True, blank=True)
    adapter_path = models.CharField(max_length=512, blank=True)
    trust_remote_code = models.BooleanField(default=False)

    auto_start = models.BooleanField(default=False)
    # New profiles stop when idle, so members need not stop each other's servers.
    idle_timeout_minutes = models.PositiveIntegerField(default=30)
    allow_on_demand = models.BooleanField(default=True)

    # Sharing (servers/sharing): who may use it, and the portal's fair queue in front of it.
    allowed_groups = models.ManyToManyField(
        "auth.Group",
        blank=True,
        related_name="server_profiles",
        help_text="Only members of these groups see and call it (admins always do). "
        "None: every member.",
    )
    max_in_flight = models.PositiveIntegerField(
        "requests at once",
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(MAX_IN_FLIGHT)],
        help_text="Requests the portal lets through to the server at once; the rest wait in "
        "its queue. Blank: the decode concurrency.",
    )
    reserved_slots = models.PositiveIntegerField(
        "slots kept for others",
        default=1,
        validators=[MaxValueValidator(MAX_IN_FLIGHT)],
        help_text="One person may hold at most the requests at once minus these, so a "
        "colleague's request always finds a free slot soon.",
    )
    queue_length = models.PositiveIntegerField(
        default=64,
        validators=[MaxValueValidator(MAX_QUEUE_LENGTH)],
        help_text="Requests that may wait for a turn; one person may fill at most half. "
        "A request beyond it gets 503 server_busy.",
    )
    queue_wait_seconds = models.PositiveIntegerField(
        "longest wait (seconds)",
        default=120,
        validators=[MinValueValidator(1), MaxValueValidator(MAX_QUEUE_WAIT_SECONDS)],
        help_text="A request still waiting after this gets 503 server_busy.",
    )

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="server_profiles"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = ProfileQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["host", "port"], name="servers_unique_host_port"),
        ]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("servers:list") + f"#server-{self.slug}"

    def can_edit(self, user) -> bool:
        return may_edit(user, self.owner_id)

    @property
    def slots(self) -> int:
        """Requests the portal admits to the server at once."""
        return slots(self.max_in_flight, self.decode_concurrency)

    def clean(self) -> None:
        """The rule between the fair-queue fields (the portal's form and the Django admin)."""
        super().clean()
        if message := self.reserved_slots_error():
            raise ValidationError({"reserved_slots": message})

    def reserved_slots_error(self) -> str | None:
        """One person may hold the requests at once minus the slots kept for others, so at
        least one slot must be left for them (servers/sharing)."""
        if self.reserved_slots is None or self.reserved_slots < self.slots:
            return None
        return (
            "Keep at least one slot for the person using it: slots kept for others must be "
            f"fewer than requests at once ({self.slots})."
        )

    def get_instance(self) -> ServerInstance:
        """This profile's instance row, created (stopped) on first use."""
        try:
            return self.instance
        except ServerInstance.DoesNotExist:
            instance, _ = ServerInstance.objects.get_or_create(profile=self)
            self.instance = instance
            return instance

    def delete_refusal(self) -> str | None:
        """Why this profile cannot be deleted now (its server is live: deleting the row would
        leave the process running with nothing tracking it), else None. The portal's Delete
        and the Django admin both ask."""
        instance = self.get_instance()
        if instance.is_active:
            state = instance.state
            return f"“{self.name}” is {state}: stop the server before deleting its profile."
        return None

    @property
    def shown_state(self) -> str:
        """The state a page shows: the instance's, or "unknown" while the host is offline
        (its worker is silent, so nobody knows whether the process lives; nothing is marked
        failed or restarted elsewhere for it)."""
        instance = getattr(self, "instance", None)
        return shown_state(self.host.is_online, instance.state if instance is not None else None)

    def running_url(self) -> str | None:
        """Base URL (`http://127.0.0.1:<port>`) of this profile's server when it is running."""
        instance = getattr(self, "instance", None)
        if instance is None or instance.state != ServerInstance.State.RUNNING:
            return None
        return instance.base_url


class State(models.TextChoices):
    STOPPED = "stopped", "Stopped"
    STARTING = "starting", "Starting"
    RUNNING = "running", "Running"
    STOPPING = "stopping", "Stopping"
    RESTARTING = "restarting", "Restarting"
    FAILED = "failed", "Failed"


# The instance state machine: every allowed transition, in one place.
TRANSITIONS: dict[str, frozenset[str]] = {
    State.STOPPED: frozenset({State.STARTING}),
    State.STARTING: frozenset({State.RUNNING, State.FAILED, State.STOPPING, State.RESTARTING}),
    State.RUNNING: frozenset({State.STOPPING, State.RESTARTING, State.FAILED}),
    State.STOPPING: frozenset({State.STOPPED, State.FAILED}),
    State.RESTARTING: frozenset({State.STARTING, State.STOPPING, State.FAILED}),
    State.FAILED: frozenset({State.STARTING, State.RESTARTING, State.STOPPED, State.STOPPING}),
}

# Shown, never stored: the host of the server is offline (ServerProfile.shown_state).
UNKNOWN = "unknown"


def may_edit(user, owner_id: int | None) -> bool:
    """The rule of who may edit or delete a profile: its owner or an admin (any member may run
    it). `ServerProfile.can_edit`, and the server tiles from plain values."""
    return bool(user.is_admin or user.pk == owner_id)


def shown_state(host_online: bool, instance_state: str | None) -> str:
    """The rule of `ServerProfile.shown_state`, from plain values (the server tiles' query)."""
    if not host_online:
        return UNKNOWN
    return instance_state or State.STOPPED


# States in which a process may exist (and hold the model in memory).
ACTIVE_STATES = frozenset({State.STARTING, State.RUNNING, State.STOPPING, State.RESTARTING})


# The server's state machine (common.states: one helper and lock discipline for every row).
MACHINE = StateMachine(TRANSITIONS, what="server")


class ServerInstance(models.Model):
    """The supervised `mlx_lm.server` process of one profile, as the supervisor knows it."""

    State = State

    class Desired(models.TextChoices):
        RUNNING = "running", "Running"
        STOPPED = "stopped", "Stopped"

    profile = models.OneToOneField(ServerProfile, on_delete=models.CASCADE, related_name="instance")
    state = models.CharField(max_length=16, choices=State.choices, default=State.STOPPED)
    desired_state = models.CharField(
        max_length=16, choices=Desired.choices, default=Desired.STOPPED
    )
    reason = models.CharField(max_length=500, blank=True)
    state_changed_at = models.DateTimeField(default=timezone.now)

    # The process, as launched.
    port = models.PositiveIntegerField(null=True, blank=True)
    pid = models.PositiveIntegerField(null=True, blank=True)
    process_create_time = models.FloatField(null=True, blank=True)
    command = models.JSONField(default=list, blank=True)
    log_path = models.CharField(max_length=1024, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    ready_at = models.DateTimeField(null=True, blank=True)
    exit_code = models.IntegerField(null=True, blank=True)
    log_tail = models.TextField(blank=True)

    # What the process tree uses, measured by its host's worker (servers/supervision/monitor.py).
    rss = models.PositiveBigIntegerField(null=True, blank=True)  # bytes
    cpu_percent = models.FloatField(null=True, blank=True)  # 100 = one core
    stats_at = models.DateTimeField(null=True, blank=True)
    # The requests the server is working on (its `GET /portal/status`,
    # servers/supervision/mlx_entry.py), measured with the figures above: {"requests": n, "oldest":
    # {age_seconds, prompt_tokens_done, prompt_tokens, generated_tokens, stream}}, or None when
    # idle.
    busy = models.JSONField(null=True, blank=True)

    # Supervision.
    restart_count = models.PositiveIntegerField(default=0)
    next_restart_at = models.DateTimeField(null=True, blank=True)
    failed_probes = models.PositiveIntegerField(default=0)
    last_request_at = models.DateTimeField(null=True, blank=True)

    # A start that was refused before any process existed (port busy, model missing, memory).
    last_error = models.CharField(max_length=500, blank=True)
    last_error_kind = models.CharField(max_length=16, blank=True)

    class Meta:
        ordering = ["profile__name"]

    def __str__(self) -> str:
        return f"{self.profile_id}: {self.state}"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port or self.profile.port}"

    @property
    def is_active(self) -> bool:
        return self.state in ACTIVE_STATES

    @property
    def uptime(self) -> timedelta | None:
        if self.state != State.RUNNING or not self.started_at:
            return None
        return timezone.now() - self.started_at

    def can_transition(self, new_state: str) -> bool:
        return MACHINE.can(self.state, new_state)

    def transition(self, new_state: str, reason: str, **fields) -> None:
        """Move to `new_state` if the state machine allows it, recording reason, time and the
        extra `fields` (common.states: the row is locked and its current state checked);
        raises InvalidTransition otherwise."""
        MACHINE.move(self, new_state, reason, **fields)


class Route(models.Model):
    """A public model name ("qwen3-8b") that clients call instead of a profile: one or more
    profiles (members, on one or several hosts) serve it, picked by the route's policy
    (servers/gateway/routing.py). Its owner or an admin edits it; every member may call it
    (the members their groups let them see: servers.models.may_see)."""

    NAME_MAX_LENGTH = 64
    MAX_MEMBERS = 8

    class Policy(models.TextChoices):
        LEAST_BUSY = "least-busy", "Least busy (fewest requests in flight and waiting)"
        ORDERED = "ordered", "Ordered (the first one running; the others are fall-backs)"

    name = models.CharField(
        max_length=NAME_MAX_LENGTH,
        unique=True,
        help_text="The model name clients send: letters, digits and . - _ : / (at most 64).",
    )
    policy = models.CharField(max_length=16, choices=Policy.choices, default=Policy.LEAST_BUSY)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="routes"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def can_edit(self, user) -> bool:
        return may_edit(user, self.owner_id)


class RouteMember(models.Model):
    """One profile serving a route, at its place in the route's order."""

    route = models.ForeignKey(Route, on_delete=models.CASCADE, related_name="members")
    profile = models.ForeignKey(ServerProfile, on_delete=models.CASCADE, related_name="routes")
    position = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["route", "position", "pk"]
        constraints = [
            models.UniqueConstraint(fields=["route", "profile"], name="servers_route_member_once")
        ]

    def __str__(self) -> str:
        return f"{self.route_id} #{self.position}: {self.profile_id}"


# The error codes of a request the portal refused for a person's limit or a busy server's
# queue (servers/sharing), as usage records and /metrics name them.
REFUSAL_CODES = (
    "requests_per_minute",
    "tokens_per_day",
    "concurrent_requests",
    "queue_full",
    "queue_share",
    "queue_wait",
)


class UsageRecord(models.Model):
    """One request that went through the portal to a model server (chat page or `/v1/`).

    Counts and timings only — never the text of a prompt or a reply. Written once, when the
    response has finished (or failed, or the client went away). Times are measured by the
    portal from the moment it sent the request upstream (an on-demand start is not counted).
    """

    class Source(models.TextChoices):
        CHAT = "chat", "Chat page"
        API = "api", "API"

    class Status(models.TextChoices):
        OK = "ok", "OK"
        ERROR = "error", "Error"
        CANCELLED = "cancelled", "Cancelled"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="usage"
    )
    api_key = models.ForeignKey(
        "accounts.ApiKey", on_delete=models.SET_NULL, null=True, blank=True, related_name="usage"
    )
    profile = models.ForeignKey(
        ServerProfile, on_delete=models.SET_NULL, null=True, related_name="usage"
    )
    profile_name = models.CharField(max_length=80)  # kept when the profile is deleted
    host = models.ForeignKey(Host, on_delete=models.SET_NULL, null=True, related_name="usage")
    source = models.CharField(max_length=8, choices=Source.choices)
    # "chat/completions", "completions", "embeddings" or "audio/transcriptions"
    endpoint = models.CharField(max_length=32)
    stream = models.BooleanField(default=False)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    # The other engines' units: the texts of an embeddings request, the seconds of audio of a
    # transcription (its tokens are the prompt tokens; a transcription has none).
    inputs = models.PositiveIntegerField(default=0)
    audio_seconds = models.FloatField(default=0.0)
    ttft_ms = models.FloatField("time to first token (ms)", null=True, blank=True)
    generation_ms = models.FloatField(null=True, blank=True)  # first token → end
    duration_ms = models.FloatField(default=0.0)
    status = models.CharField(max_length=16, choices=Status.choices)
    status_code = models.PositiveSmallIntegerField(default=200)
    error_code = models.CharField(max_length=40, blank=True)
    # The route the client called ("" when it named the profile itself); `profile` served it.
    route_name = models.CharField(max_length=64, blank=True)
    # Time spent in the portal's fair queue before a turn (servers/sharing), None when admitted
    # at once.
    queue_ms = models.FloatField(null=True, blank=True)
    started_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-started_at"]
        indexes = [
            models.Index(fields=["started_at"], name="usage_started"),
            models.Index(fields=["profile", "started_at"], name="usage_profile_started"),
            models.Index(fields=["user", "started_at"], name="usage_user_started"),
        ]

    def __str__(self) -> str:
        return f"{self.profile_name} {self.source} {self.status} {self.started_at:%Y-%m-%d %H:%M}"


class UsageTotals(models.Model):
    """The /metrics counters of every usage record with an id up to `up_to_id`, added up as
    the records came (servers/usage/metrics.py): a scrape reads this one row and groups only the
    records after it, and pruning old records does not lower the counters."""

    up_to_id = models.BigIntegerField(default=0)
    totals = models.JSONField(default=dict)
    # The time zone whose days the UsageDay rows count (settings.TIME_ZONE when they were
    # added up); another one means they are rebuilt at the next advance.
    days_time_zone = models.CharField(max_length=64, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "usage totals"

    def __str__(self) -> str:
        return f"usage totals up to record #{self.up_to_id}"


class UsageDay(models.Model):
    """One day's usage (a day of settings.TIME_ZONE) of one user and one model: the usage
    records up to the checkpoint (`UsageTotals.up_to_id`) added up, so the Usage page reads
    at most a row per day, user and model instead of every request (servers/usage/days.py).
    Kept when old records are pruned."""

    day = models.DateField()
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="usage_days"
    )
    profile_name = models.CharField(max_length=80)
    requests = models.PositiveIntegerField(default=0)
    errors = models.PositiveIntegerField(default=0)
    prompt_tokens = models.PositiveBigIntegerField(default=0)
    completion_tokens = models.PositiveBigIntegerField(default=0)
    inputs = models.PositiveBigIntegerField(default=0)  # embeddings' texts
    audio_seconds = models.FloatField(default=0.0)  # transcriptions' audio
    ttft_count = models.PositiveIntegerField(default=0)  # requests with a time to first token
    ttft_sum_ms = models.FloatField(default=0.0)
    tokens_timed = models.PositiveBigIntegerField(default=0)  # completion tokens with a
    generation_ms = models.FloatField(default=0.0)  # generation time, and that time

    class Meta:
        indexes = [
            models.Index(fields=["day"], name="usage_day"),
            models.Index(fields=["user", "day"], name="usage_day_user"),
        ]

    def __str__(self) -> str:
        return f"{self.day} {self.profile_name}: {self.requests} requests"


CONVERSATION_SYSTEM_PROMPT_MAX_CHARS = 20_000


class Conversation(models.Model):
    """A chat saved for its owner (only they see it)."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="conversations"
    )
    profile = models.ForeignKey(
        ServerProfile, on_delete=models.SET_NULL, null=True, blank=True,
        related_name="conversations",
    )  # fmt: skip
    title = models.CharField(max_length=120)
    # The conversation's own settings (servers/chat/forms.py); empty: the profile's.
    system_prompt = models.TextField(blank=True, max_length=CONVERSATION_SYSTEM_PROMPT_MAX_CHARS)
    temperature = models.FloatField(
        null=True, blank=True, validators=[MinValueValidator(0.0), MaxValueValidator(2.0)]
    )
    max_tokens = models.PositiveIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1), MaxValueValidator(131072)]
    )
    created_at = models.DateTimeField(auto_now_add=True)
    # When the conversation last had a message: the sidebar's order. A rename or new settings
    # leave it (they are saved with update_fields that omit it).
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at", "-pk"]

    def __str__(self) -> str:
        return self.title

    def get_absolute_url(self) -> str:
        return reverse("servers:chat-conversation", args=[self.pk])


class Message(models.Model):
    """One turn of a conversation. Assistant turns keep their reasoning and rendered HTML."""

    class Role(models.TextChoices):
        USER = "user", "User"
        ASSISTANT = "assistant", "Assistant"

    class Status(models.TextChoices):
        OK = "ok", "Complete"
        STOPPED = "stopped", "Stopped"
        ERROR = "error", "Interrupted"

    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="messages"
    )
    role = models.CharField(max_length=16, choices=Role.choices)
    content = models.TextField(blank=True)
    reasoning = models.TextField(blank=True)
    thought_seconds = models.FloatField(null=True, blank=True)
    html = models.TextField(blank=True)  # sanitised rendering of `content`
    # Text files sent inline with a user message: [{"name", "size", "text"}].
    attachments = models.JSONField(default=list, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OK)
    temperature = models.FloatField(null=True, blank=True)
    max_tokens = models.PositiveIntegerField(null=True, blank=True)
    # A user message edited and sent again: when, and how many later messages it replaced.
    edited_at = models.DateTimeField(null=True, blank=True)
    replaced = models.PositiveIntegerField(default=0)
    # An answer's speed as the portal measured it: time to first token, then tokens a second.
    ttft_ms = models.FloatField("time to first token (ms)", null=True, blank=True)
    completion_tokens = models.PositiveIntegerField(null=True, blank=True)
    tokens_per_second = models.FloatField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at", "pk"]

    def __str__(self) -> str:
        return f"{self.role} #{self.pk}"


class MessageImage(models.Model):
    """An image attached to a user's chat message (for a vision server), kept for its owner
    only: the bytes as sent, checked first (servers/gateway/images.py: an accepted type that
    decodes whole, bounded in bytes and pixels), and a small thumbnail re-encoded by the portal
    for the page (servers/chat/images.py)."""

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="images")
    name = models.CharField(max_length=120)
    media_type = models.CharField(max_length=32)
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    data = models.BinaryField()
    thumbnail = models.BinaryField()
    thumbnail_type = models.CharField(max_length=32)

    class Meta:
        ordering = ["pk"]

    def __str__(self) -> str:
        return self.name

    @property
    def size(self) -> int:
        return len(self.data)
