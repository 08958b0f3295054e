from datetime import timedelta

from django.conf import settings
from django.db import models
from django.utils import timezone

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
    tags = models.JSONField(default=list, blank=True)
    used_storage = models.BigIntegerField(null=True, blank=True)
    safetensors_parameters = models.JSONField(null=True, blank=True)  # dtype -> count
    api_config = models.JSONField(null=True, blank=True)  # the Hub's short `config` field
    listed_at = models.DateTimeField(null=True, blank=True)

    # config.json and the chat template, read once (local cache first, then the Hub).
    config = models.JSONField(null=True, blank=True)
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
    files = models.JSONField(null=True, blank=True)  # [{"name": ..., "size": ...}]
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
        api_config = self.api_config or {}
        config = self.config if self.config is not None else api_config
        template = self.chat_template
        if not template:
            tokenizer = api_config.get("tokenizer_config") or {}
            if isinstance(tokenizer, dict):
                template = str(tokenizer.get("chat_template") or "")
        return extract(
            config,
            chat_template=template,
            tags=self.tags or [],
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

    def fit_on_memory(self, memory_total: int) -> Fit:
        """Whether this model fits in `memory_total` bytes (see models_catalog.fit)."""
        return fit(self.size_bytes, memory_total, estimated=self.size_estimated)

    def fit_on(self, host: Host) -> Fit:
        return self.fit_on_memory(host.memory_total)
