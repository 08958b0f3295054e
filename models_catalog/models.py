from django.conf import settings
from django.db import models
from django.utils import timezone

from models_catalog.hosts import collect_facts


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
