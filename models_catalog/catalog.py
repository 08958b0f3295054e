"""Searching the catalog and opening one model: the Hub (through hub.py) plus what the portal
already stored, so that a page never refetches what it knows.

* `search()` reads one Hub page (more when filters on characteristics are set, up to a bound),
  stores each model's Hub facts, reads the `config.json` of the models it does not know yet —
  concurrently, with a small shared thread pool, never twice for the same model — and filters
  on the stored characteristics. When the Hub fails, it answers from the stored models.
* `model_detail()` refreshes one model from the Hub (files, README) at most every
  `CATALOG_DETAIL_TTL` seconds, and falls back to what is stored or on disk.

Threads only do network and disk reads; every database write happens in the caller's thread.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from huggingface_hub.hf_api import ModelInfo

from models_catalog import hub
from models_catalog.characteristics import OTHER_FAMILY, is_known_family
from models_catalog.fit import FITS, TIGHT, fit
from models_catalog.local import LocalModel, list_local_models, local_model_path
from models_catalog.markdown import readme_excerpt
from models_catalog.models import CatalogModel
from models_catalog.validators import validate_repo_id

CAPABILITIES = ("vision", "tools", "thinking")
#: sort name -> the stored field ordering used when answering from the database.
_STORED_ORDER = {
    "trending": ["-trending_score", "-downloads"],
    "downloads": ["-downloads"],
    "likes": ["-likes", "-downloads"],
    "updated": ["-last_modified"],
}
_LISTING_FIELDS = [
    "author", "sha", "downloads", "likes", "trending_score", "last_modified", "gated",
    "pipeline_tag", "library_name", "tags", "used_storage", "safetensors_parameters",
    "api_config", "listed_at",
]  # fmt: skip


# --- filters ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Filters:
    """Filters on characteristics. Values of one group are alternatives (Qwen or Llama); the
    groups, and each capability, must all hold (AND)."""

    families: frozenset[str] = frozenset()
    bits: frozenset[int] = frozenset()
    capabilities: frozenset[str] = frozenset()
    fit: str = ""  # "", "fits" or "runs" (fits or tight)

    @property
    def active(self) -> bool:
        return bool(self.families or self.bits or self.capabilities or self.fit)

    def matches(self, model: CatalogModel, memory_total: int) -> bool:
        if self.families:
            family = model.family if is_known_family(model.family) else OTHER_FAMILY
            if family not in self.families:
                return False
        if self.bits:
            bits = model.quant_bits
            if bits is None or (min(bits, 16) not in self.bits):
                return False
        for capability in self.capabilities:
            if not getattr(model, capability):
                return False
        if self.fit:
            verdict = fit(model.size_bytes, memory_total).verdict
            allowed = {FITS} if self.fit == "fits" else {FITS, TIGHT}
            if verdict not in allowed:
                return False
        return True


@dataclass(frozen=True)
class SearchQuery:
    text: str = ""
    sort: str = "trending"
    filters: Filters = field(default_factory=Filters)
    cursor: str = ""
    page: int = 1


@dataclass
class SearchResults:
    models: list[CatalogModel]
    next_cursor: str | None = None
    scanned: int = 0  # Hub models looked at for this page
    hub_pages: int = 0
    stopped_at_bound: bool = False  # filters left the page short after CATALOG_MAX_HUB_PAGES
    error: hub.HubError | None = None
    offline: bool = False  # the models come from the database because the Hub failed
    pending_configs: int = 0  # configs still being read when the page was rendered


# --- search -------------------------------------------------------------------------------------


def search(query: SearchQuery, memory_total: int) -> SearchResults:
    """One page of results for `query`; filters apply to the Hub pages fetched for it."""
    limit = settings.CATALOG_PAGE_SIZE
    max_pages = settings.CATALOG_MAX_HUB_PAGES if query.filters.active else 1
    results = SearchResults(models=[])
    cursor = query.cursor
    target = limit
    for _ in range(max_pages):
        try:
            page = hub.list_models_page(
                search=query.text, sort=query.sort, cursor=cursor, limit=limit
            )
        except hub.HubError as error:
            results.error = error
            if results.hub_pages == 0 and not isinstance(error, hub.HubBadRequest):
                results.models = search_stored(query, memory_total)
                results.offline = True
            break
        models = upsert_listing(page.models)
        results.pending_configs += ensure_configs(models)
        results.hub_pages += 1
        results.scanned += len(page.models)
        if results.hub_pages == 1:
            target = len(page.models)  # a filtered page is as full as an unfiltered one
        results.models += [m for m in models if query.filters.matches(m, memory_total)]
        cursor = page.next_cursor or ""
        results.next_cursor = page.next_cursor
        if not cursor or len(results.models) >= target:
            break
    else:
        results.stopped_at_bound = query.filters.active and len(results.models) < target
    for model in results.models:
        model.fit = model.fit_on_memory(memory_total)
    return results


def search_stored(query: SearchQuery, memory_total: int, limit: int = 60) -> list[CatalogModel]:
    """Search the models the portal already stored (when the Hub cannot answer)."""
    stored = CatalogModel.objects.filter(listed_at__isnull=False)
    for word in query.text.split():
        stored = stored.filter(repo_id__icontains=word)
    if query.filters.families and OTHER_FAMILY not in query.filters.families:
        stored = stored.filter(family__in=query.filters.families)
    for capability in query.filters.capabilities:
        stored = stored.filter(Q(**{capability: True}))
    stored = stored.order_by(*_STORED_ORDER.get(query.sort, ["-downloads"]), "repo_id")
    found = [m for m in stored[:1000] if query.filters.matches(m, memory_total)]
    return found[:limit]


def upsert_listing(infos: Iterable[ModelInfo]) -> list[CatalogModel]:
    """Store the Hub facts of listed models (creating rows as needed), in listing order.

    Characteristics are recomputed from what is stored; nothing is fetched here."""
    now = timezone.now()
    infos = [info for info in infos if _valid_repo_id(info.id)]
    repo_ids = [info.id for info in infos]
    CatalogModel.objects.bulk_create(
        [CatalogModel(repo_id=r) for r in dict.fromkeys(repo_ids)], ignore_conflicts=True
    )
    stored = CatalogModel.objects.in_bulk(repo_ids, field_name="repo_id")
    # One UPDATE per row, in one transaction: bulk_update's CASE expressions over ~30 columns
    # cost far more than they save.
    with transaction.atomic():
        for info in infos:
            model = stored[info.id]
            apply_info(model, info)
            model.listed_at = now
            model.refresh_characteristics()
            model.save(
                update_fields=[*_LISTING_FIELDS, *CatalogModel.CHARACTERISTIC_FIELDS, "updated_at"]
            )
    return [stored[r] for r in dict.fromkeys(repo_ids)]


def apply_info(model: CatalogModel, info: ModelInfo) -> None:
    """Copy what the Hub said about a model onto its row (fields it left out are kept)."""
    model.author = (info.author or info.id.split("/", 1)[0])[:96]
    if info.sha:
        model.sha = info.sha[:64]
    for attribute, field_name in [
        ("downloads", "downloads"),
        ("likes", "likes"),
        ("trending_score", "trending_score"),
    ]:
        value = getattr(info, attribute, None)
        if value is not None:
            setattr(model, field_name, int(value))
    if info.last_modified:
        model.last_modified = info.last_modified
    if info.gated is not None:
        model.gated = str(info.gated or "")[:16] if info.gated else ""
    if info.pipeline_tag:
        model.pipeline_tag = info.pipeline_tag[:64]
    if info.library_name:
        model.library_name = info.library_name[:64]
    if info.tags is not None:
        model.tags = [str(t) for t in info.tags][:200]
    if info.used_storage:
        model.used_storage = int(info.used_storage)
    if info.safetensors is not None and info.safetensors.parameters:
        model.safetensors_parameters = dict(info.safetensors.parameters)
    if isinstance(info.config, dict):
        model.api_config = info.config


# --- config.json, concurrently and once ---------------------------------------------------------

_pool_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_pool_size = 0
# repo_id -> (started, future): one read per model at a time, shared by every request of the
# process; finished reads stay until a request stores them (or they are 5 minutes old).
_reads: dict[str, tuple[float, Future]] = {}


def _executor() -> ThreadPoolExecutor:
    global _pool, _pool_size
    workers = max(1, int(settings.CATALOG_FETCH_WORKERS))
    if _pool is None or _pool_size != workers:
        if _pool is not None:
            _pool.shutdown(wait=False)
        _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="catalog-config")
        _pool_size = workers
    return _pool


def _read_files(repo_id: str, chat_template: bool) -> hub.ModelFiles | hub.HubError:
    try:
        return hub.fetch_config(repo_id, chat_template=chat_template)
    except hub.HubError as error:
        return error


def _start_read(repo_id: str, chat_template: bool) -> Future:
    with _pool_lock:
        now = time.monotonic()
        for key, (started, future) in list(_reads.items()):
            if future.done() and now - started > 300:
                del _reads[key]
        if repo_id not in _reads:
            _reads[repo_id] = (now, _executor().submit(_read_files, repo_id, chat_template))
        return _reads[repo_id][1]


def _finish_read(repo_id: str, future: Future) -> None:
    with _pool_lock:
        if repo_id in _reads and _reads[repo_id][1] is future:
            del _reads[repo_id]


def ensure_configs(models: Iterable[CatalogModel]) -> int:
    """Read `config.json` for the models that lack it (at most `CATALOG_FETCH_WORKERS` at a
    time), store it and the characteristics. Returns how many reads were still running at the
    deadline (`CATALOG_CONFIG_DEADLINE`); a later page picks them up."""
    retry = timedelta(seconds=settings.CATALOG_CONFIG_RETRY)
    wanted = {m.repo_id: m for m in models if m.needs_config(retry)}
    if not wanted:
        return 0
    futures = {
        repo_id: _start_read(repo_id, chat_template=not _api_template(model))
        for repo_id, model in wanted.items()
    }
    wait_futures(futures.values(), timeout=settings.CATALOG_CONFIG_DEADLINE)
    pending = 0
    with transaction.atomic():
        for repo_id, future in futures.items():
            if not future.done():
                pending += 1
                continue
            _finish_read(repo_id, future)
            store_files(wanted[repo_id], future.result())
    return pending


def store_files(model: CatalogModel, result: hub.ModelFiles | hub.HubError) -> None:
    """Store a config read (or its failure) and the characteristics that follow."""
    now = timezone.now()
    if isinstance(result, hub.HubError) or result.config is None:
        message = result.message if isinstance(result, hub.HubError) else "; ".join(result.errors)
        model.config_error = (message or "config.json could not be read.")[:300]
        model.config_error_at = now
    else:
        model.config = result.config
        if result.chat_template:
            model.chat_template = result.chat_template
        model.config_source = result.source
        model.config_sha = model.sha
        model.config_fetched_at = now
        model.config_error = ""
        model.config_error_at = None
    model.refresh_characteristics()
    model.save(
        update_fields=[
            "config", "chat_template", "config_source", "config_sha", "config_fetched_at",
            "config_error", "config_error_at", *CatalogModel.CHARACTERISTIC_FIELDS, "updated_at",
        ]
    )  # fmt: skip


def _api_template(model: CatalogModel) -> bool:
    tokenizer = (model.api_config or {}).get("tokenizer_config") or {}
    return bool(model.chat_template) or (
        isinstance(tokenizer, dict) and bool(tokenizer.get("chat_template"))
    )


def _valid_repo_id(repo_id: str) -> bool:
    try:
        validate_repo_id(repo_id)
    except ValidationError:
        return False
    return True


# --- one model ----------------------------------------------------------------------------------


@dataclass
class Detail:
    """What the detail page shows: the stored model (None when nothing is known), the Hub error
    of this visit (if any), and the copy on this host's disk (if any)."""

    repo_id: str
    model: CatalogModel | None
    error: hub.HubError | None = None
    local: LocalModel | None = None
    refreshed: bool = False

    @property
    def stale(self) -> bool:
        return self.model is not None and self.error is not None


def model_detail(repo_id: str) -> Detail:
    """Everything about one model; `repo_id` must have been validated by the caller."""
    model = CatalogModel.objects.filter(repo_id=repo_id).first()
    local = _local(repo_id)
    detail = Detail(repo_id=repo_id, model=model, local=local)
    ttl = timedelta(seconds=settings.CATALOG_DETAIL_TTL)
    fresh = (
        model is not None
        and model.detail_fetched_at
        and timezone.now() - model.detail_fetched_at < ttl
    )
    if not fresh:
        try:
            info = hub.model_info(repo_id)
        except hub.HubError as error:
            detail.error = error
        else:
            detail.model = model = _store_detail(model, info)
            detail.refreshed = True
    if model is None and local is not None:
        detail.model = model = _from_local(repo_id, local)
    if model is None:
        return detail
    ensure_configs([model])
    if detail.refreshed or (local is not None and not model.readme_excerpt):
        _store_readme(model)
    if not model.files and local is not None:
        model.files = _local_files(local.path)
        model.save(update_fields=["files", "updated_at"])
    return detail


def _store_detail(model: CatalogModel | None, info: ModelInfo) -> CatalogModel:
    model = model or CatalogModel.objects.get_or_create(repo_id=info.id)[0]
    apply_info(model, info)
    if info.siblings is not None:
        model.files = [
            {"name": s.rfilename, "size": s.size}
            for s in sorted(info.siblings, key=lambda s: s.rfilename)
        ]
        if not model.used_storage:
            sizes = [s.size for s in info.siblings if s.size]
            model.used_storage = sum(sizes) or None
    model.detail_fetched_at = timezone.now()
    model.refresh_characteristics()
    model.save()
    return model


def _store_readme(model: CatalogModel) -> None:
    try:
        text = hub.fetch_readme(model.repo_id)
    except hub.HubError:
        return  # the README is a nicety: the stored excerpt (if any) stays
    model.readme_excerpt = readme_excerpt(text)
    model.save(update_fields=["readme_excerpt", "updated_at"])


def _local(repo_id: str) -> LocalModel | None:
    if local_model_path(repo_id) is None:
        return None
    return next((m for m in list_local_models() if m.repo_id == repo_id), None)


def _from_local(repo_id: str, local: LocalModel) -> CatalogModel:
    model, _created = CatalogModel.objects.get_or_create(
        repo_id=repo_id, defaults={"author": repo_id.split("/", 1)[0]}
    )
    if not model.used_storage:
        model.used_storage = local.size_on_disk
    model.refresh_characteristics()
    model.save()
    return model


def _local_files(snapshot: Path) -> list[dict]:
    files = []
    for path in sorted(snapshot.rglob("*")):
        if path.is_file():
            files.append(
                {"name": path.relative_to(snapshot).as_posix(), "size": path.stat().st_size}
            )
    return files
