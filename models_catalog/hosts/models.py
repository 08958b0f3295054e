"""`Host`: one row per machine that runs a portal Celery worker on its own queue and keeps its
own model cache (docs/hosts.md). It lives in the `models_catalog` app (its table and
migrations are that app's); `models_catalog.models` imports it so Django registers it."""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.apps.registry import Apps
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, models
from django.utils import timezone

from models_catalog import memory
from models_catalog.hosts import facts
from models_catalog.local import list_local_models, model_memory


class HostManager(models.Manager["Host"]):
    def this_machine(self) -> Host:
        """This machine's row (`settings.HOST_NAME`), created bare when it is missing (after
        `migrate` it exists: `register_this_machine`). It never gathers facts: memory, disk and
        the rest are written by the host's worker (hosts/heartbeat.py), not by whoever reads.

        A row no worker has reported for yet counts its first use by a portal process as one
        heartbeat (whoever uses it runs on this machine: a fresh install is online before its
        worker's first beat); from then on only the host's worker keeps it online.
        """
        now = timezone.now()
        host, _ = self.get_or_create(name=settings.HOST_NAME, defaults={"last_heartbeat": now})
        if host.last_heartbeat is None:
            self.filter(pk=host.pk, last_heartbeat__isnull=True).update(last_heartbeat=now)
            host.last_heartbeat = now
        return host

    def chosen(self, name: str | None) -> Host:
        """The host a page's `?host=<name>` names, else this machine's."""
        if name:
            host = self.filter(name=name[:64]).first()
            if host is not None:
                return host
        return self.this_machine()


class Host(models.Model):
    """A machine that runs a Celery worker on its own queue and keeps its own model cache."""

    name = models.SlugField(max_length=64, unique=True)
    platform = models.CharField(max_length=32, blank=True)
    memory_total = models.BigIntegerField(default=0)
    memory_available = models.BigIntegerField(default=0)
    # The memory its model servers may use together, as its worker measured it, and which rule
    # said so (facts.memory_limit: the GPU wired limit on macOS, available memory elsewhere).
    memory_limit = models.BigIntegerField(default=0)
    memory_limit_kind = models.CharField(max_length=16, blank=True)
    disk_free = models.BigIntegerField(default=0)
    disk_total = models.BigIntegerField(default=0)
    mlx_version = models.CharField(max_length=32, blank=True)
    mlx_lm_version = models.CharField(max_length=32, blank=True)
    hf_cache_dir = models.CharField(max_length=512, blank=True)
    # The portal web tier of this host, as other hosts' web tiers reach it for the hop to its
    # model servers (MLX_PORTAL_HOST_URL on that host; docs/hosts.md). Empty: not reachable.
    web_url = models.CharField(max_length=200, blank=True)
    # The models in this host's cache as its worker last reported them:
    # [{repo_id, size, files, revision, last_accessed, last_modified}] (hosts/facts.py).
    local_models = models.JSONField(default=list, blank=True)
    # What this host's worker did with the last delete sent to it from another host's page
    # (library.delete_on_this_host): {repo_id, ok, message}, {} before any; and when.
    last_delete = models.JSONField(default=dict, blank=True)
    last_delete_at = models.DateTimeField(null=True, blank=True)
    last_heartbeat = models.DateTimeField(null=True, blank=True)

    # The memory plan, as an admin set it on the Hosts page (servers/memory_plan.py).
    class MemoryPolicy(models.TextChoices):
        REFUSE = "refuse", "Refuse the start"
        EVICT_IDLE = "evict-idle", "Stop idle servers to make room"

    memory_policy = models.CharField(
        "when a start does not fit",
        max_length=16,
        choices=MemoryPolicy.choices,
        default=MemoryPolicy.REFUSE,
    )
    evict_idle_minutes = models.PositiveIntegerField(
        "idle for at least (minutes)",
        default=10,
        help_text="Only a server without a request for this long is stopped to make room.",
    )
    memory_cap_mb = models.PositiveBigIntegerField(
        "plan with at most (MB)",
        null=True,
        blank=True,
        help_text="Keep memory for other work on the machine. Blank: what its worker measures.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    DELETE_NOTICE_SECONDS = 600  # how long My models shows what the worker did with a delete

    objects = HostManager()

    class Meta:
        app_label = "models_catalog"
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def heartbeat_age(self) -> float | None:
        """Seconds since the host's worker last reported (None: it never did)."""
        return facts.heartbeat_age(self.last_heartbeat)

    @property
    def is_online(self) -> bool:
        """Its worker reported within MLX_PORTAL_HOST_OFFLINE_AFTER seconds (facts.is_online)."""
        return facts.is_online(self.last_heartbeat)

    #: The rule of `is_online`, for a caller that read only the column (the server tiles).
    heartbeat_is_recent = staticmethod(facts.is_online)

    @property
    def delete_notice(self) -> dict[str, Any] | None:
        """The outcome of the last delete this host's worker did for another host's page,
        while it is news (DELETE_NOTICE_SECONDS): {repo_id, ok, message}; else None."""
        if not self.last_delete or self.last_delete_at is None:
            return None
        if (timezone.now() - self.last_delete_at).total_seconds() > self.DELETE_NOTICE_SECONDS:
            return None
        notice: dict[str, Any] = self.last_delete
        return notice

    @property
    def uses_macos_gpu(self) -> bool:
        """MLX computes on the GPU of macOS here (Metal): the GPU's share of memory then
        decides which models fit (models_catalog.fit)."""
        return self.platform == facts.MACOS_METAL

    @property
    def is_this_machine(self) -> bool:
        return bool(self.name == settings.HOST_NAME)

    def model_ids(self) -> list[str]:
        """Repo ids of the models on this host's disk: read from the cache on this machine,
        else the list the host's worker reported in its last heartbeat."""
        if self.is_this_machine:
            return [m.repo_id for m in list_local_models()]
        return [m["repo_id"] for m in self.local_models or [] if isinstance(m, dict)]

    def model_memory(self, repo_id: str) -> memory.ModelMemory | None:
        """What a model on this host's disk brings to a server's memory need: read from this
        machine's cache, else as the host's worker reported it in its last heartbeat."""
        if self.is_this_machine:
            return model_memory(repo_id)
        for model in self.local_models or []:
            if isinstance(model, dict) and model.get("repo_id") == repo_id:
                report = model.get("memory")
                return memory.ModelMemory.from_report(report) if isinstance(report, dict) else None
        return None

    @property
    def queue(self) -> str:
        """The Celery queue that only this host's workers consume."""
        return f"host.{self.name}"

    def record_heartbeat(self) -> None:
        """Store this machine's current facts and mark it online; the host's worker calls it
        every few seconds (and once more after a delete it carried out)."""
        values = {**facts.collect_facts(), "last_heartbeat": timezone.now()}
        Host.objects.filter(pk=self.pk).update(**values)
        for field, value in values.items():
            setattr(self, field, value)


def register_this_machine(
    sender: AppConfig, *, using: str = DEFAULT_DB_ALIAS, **kwargs: Any
) -> None:
    """`post_migrate` (connected in ModelsCatalogConfig.ready): once `migrate` has run, this
    machine's row exists, bare, so pages rarely need to create it; its worker's heartbeat
    brings the facts. `flush` (tests emptying the database) sends the same signal without a
    migration plan: nothing is created then."""
    if "plan" not in kwargs:
        return
    registry: Apps = kwargs["apps"]
    try:
        # The model as the migrations left it (the signal's registry), as Django asks of
        # post_migrate handlers; absent when the catalog's migrations are not applied yet.
        model = registry.get_model("models_catalog", "Host")
    except LookupError:
        return
    model._default_manager.using(using).get_or_create(name=settings.HOST_NAME)
