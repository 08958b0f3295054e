"""Searching the catalog and opening one model: the Hub (through hub.py) plus what the portal
already stored, so that a page never refetches what it knows.

* `search()` reads one Hub page (more when filters on characteristics are set, up to a bound) —
  from the cache when the same page was listed less than `CATALOG_LISTING_TTL` seconds ago —
  stores the Hub facts that changed, reads the `config.json` of the models it does not know yet
  — all files of a page at once, through a shared pool of `CATALOG_FETCH_WORKERS` threads, never
  twice for the same model — and filters on the stored characteristics. When the Hub fails, it
  answers from the stored models.
* `model_detail()` refreshes one model from the Hub (files, README) at most every
  `CATALOG_DETAIL_TTL` seconds, and falls back to what is stored or on disk.

Threads only do network and disk reads; every database write happens in the caller's thread.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from huggingface_hub.hf_api import ModelInfo

from models_catalog import hub, hub_data
from models_catalog.characteristics import OTHER_FAMILY, is_known_family
from models_catalog.fit import FITS, TIGHT, fit
from models_catalog.local import (
    LocalModel,
    list_local_models,
    local_model_path,
    repos_with_a_folder,
)
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
#: The files that hold a model's weights (MLX writes safetensors; older conversions npz).
WEIGHT_SUFFIXES = (".safetensors", ".npz", ".gguf", ".bin", ".pt", ".pth")
_LISTING_FIELDS = [
    "author", "sha", "downloads", "likes", "trending_score", "last_modified", "gated",
    "pipeline_tag", "library_name", "tags", "used_storage", "safetensors_parameters",
    "api_config",
]  # fmt: skip
#: What a listing may change on a row: compared before writing, so unchanged rows are not saved.
_LISTED_FIELDS = [*_LISTING_FIELDS, *CatalogModel.CHARACTERISTIC_FIELDS]


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


def search(query: SearchQuery, memory_total: int, *, macos_gpu: bool = False) -> SearchResults:
    """One page of results for `query`, each judged for a host with `memory_total` bytes
    (`macos_gpu`: models_catalog.fit); filters apply to the Hub pages fetched for it."""
    limit = settings.CATALOG_PAGE_SIZE
    max_pages = settings.CATALOG_MAX_HUB_PAGES if query.filters.active else 1
    results = SearchResults(models=[])
    cursor = query.cursor
    target = limit
    access = hub.current_access()
    for _ in range(max_pages):
        try:
            page, cached = list_page(
                text=query.text, sort=query.sort, cursor=cursor, limit=limit, access=access
            )
        except hub.HubError as error:
            results.error = error
            if results.hub_pages == 0 and not isinstance(error, hub.HubBadRequest):
                results.models = search_stored(query, memory_total)
                results.offline = True
            break
        # A cached page was stored when it was fetched: only rows missing since are merged.
        models, changes = merge_listing(page.models, refresh=not cached)
        reads = read_configs(models, changes, access)
        models = save_rows(models, changes)  # each row written once, after its reads
        results.pending_configs += reads.pending
        if reads.error is not None and results.error is None:
            results.error = reads.error  # rate-limited: the page says so and when to retry
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
        model.fit = model.fit_on_memory(memory_total, macos_gpu=macos_gpu)
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


#: repo_id -> the fields of its row that changed in memory and must be written.
Changes = dict[str, set[str]]


def merge_listing(
    infos: Iterable[ModelInfo], *, refresh: bool = True
) -> tuple[list[CatalogModel], Changes]:
    """The rows of listed models, in listing order, with the Hub's facts and the
    characteristics that follow merged in memory (new rows are not saved yet: `save_rows`).
    Nothing is fetched here. `changes` names, per row, the fields that differ from what is
    stored; with `refresh=False` (a listing read back from the cache, stored when it was
    fetched) only rows never listed are merged."""
    now = timezone.now()
    infos = [info for info in infos if _valid_repo_id(info.id)]
    repo_ids = list(dict.fromkeys(info.id for info in infos))
    # The model page's file list and README are not needed here (and can be long).
    stored = CatalogModel.objects.defer("files", "readme_excerpt")
    rows = stored.in_bulk(repo_ids, field_name="repo_id")
    changes: Changes = {}
    for info in infos:
        model = rows.get(info.id)
        if model is None:
            model = rows[info.id] = CatalogModel(repo_id=info.id)
        elif not refresh and model.listed_at is not None:
            continue
        before = [getattr(model, name) for name in _LISTED_FIELDS]
        apply_info(model, info)
        model.refresh_characteristics()
        fields = {
            name
            for name, old in zip(_LISTED_FIELDS, before, strict=True)
            if getattr(model, name) != old
        }
        if fields or model.listed_at is None:
            model.listed_at = now
            changes.setdefault(info.id, set()).update(fields | {"listed_at"})
    return [rows[r] for r in repo_ids], changes


def save_rows(models: list[CatalogModel], changes: Changes) -> list[CatalogModel]:
    """Write what `merge_listing` and `read_configs` changed: new rows in one INSERT, changed
    rows one UPDATE each of their changed fields only (bulk_update's CASE expressions over ~30
    columns cost more than they save); unchanged rows are not written. Returns the rows, saved."""
    new = [m for m in models if m.pk is None]
    if not new and not any(changes.get(m.repo_id) for m in models):
        return models  # nothing changed: not even an empty transaction
    with transaction.atomic():
        if new:
            # ignore_conflicts: a request that stored the same model first keeps its row.
            CatalogModel.objects.bulk_create(new, ignore_conflicts=True)
        for model in models:
            if model.pk is not None and (fields := changes.get(model.repo_id)):
                model.save(update_fields=[*sorted(fields), "updated_at"])
    if not new:
        return models
    # ignore_conflicts leaves the new rows without ids; only the ids are read back (the rows
    # themselves are in memory, as fresh as the Hub's answer). A row stored first by another
    # request keeps its id and gets this request's values on the next change.
    stored = CatalogModel.objects.filter(repo_id__in=[m.repo_id for m in new])
    ids = dict(stored.values_list("repo_id", "pk"))
    for model in new:
        if (pk := ids.get(model.repo_id)) is not None:
            model.pk = pk
            model._state.adding = False
            model._state.db = stored.db
    return models


def list_page(
    *, text: str, sort: str, cursor: str, limit: int, access: hub.HubAccess | None = None
) -> tuple[hub.HubPage, bool]:
    """One Hub listing page and whether it came from the cache: a page listed less than
    `CATALOG_LISTING_TTL` seconds ago (same search, sort, cursor, size, endpoint and token) is
    not asked again. Failures are not cached."""
    ttl = settings.CATALOG_LISTING_TTL
    access = access or hub.current_access()
    key = _listing_key(access, text, sort, cursor, limit)
    if ttl > 0 and (hit := cache.get(key)) is not None:
        # Cleaned when they were fetched (hub_data.model_item): not again on every warm page.
        return hub.page_from_items(hit["items"], hit["next"], cleaned=True), True
    page = hub.list_models_page(search=text, sort=sort, cursor=cursor, limit=limit, access=access)
    if ttl > 0:
        cache.set(key, {"items": page.items, "next": page.next_cursor}, ttl)
    return page, False


_listing_generation = 0


def forget_listings() -> None:
    """Stop using the listings this process cached so far (tests; the bench's cold runs)."""
    global _listing_generation
    _listing_generation += 1


def forget_process_state() -> None:
    """Forget what this process keeps between requests: cached listings, finished config reads
    and Hub rate-limit windows (so that tests do not answer for each other)."""
    forget_listings()
    with _pool_lock:
        _reads.clear()
    hub.forget_rate_limit()


#: The shape of a cached listing's items; a new value makes every page cached before unread
#: (2: items cleaned by hub_data.model_item; 1 held the Hub's items as sent).
_LISTING_FORMAT = 2


def _listing_key(access: hub.HubAccess, text: str, sort: str, cursor: str, limit: int) -> str:
    parts = [access.key, text, sort, cursor, limit, _listing_generation, _LISTING_FORMAT]
    digest = hashlib.sha256(json.dumps(parts).encode()).hexdigest()
    return f"catalog:listing:{digest}"


def apply_info(model: CatalogModel, info: ModelInfo) -> None:
    """Copy what the Hub said about a model onto its row (fields it left out are kept). `info`
    was read through `hub_data.model_item`: each value has its column's type and bounds."""
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


@dataclass
class _Read:
    """The files of one model being read: one future per Hub file (config.json, and
    tokenizer_config.json when the listing gave no chat template), or one for the local cache."""

    started: float
    futures: list[Future]
    local: bool = False

    def done(self) -> bool:
        return all(f.done() for f in self.futures)

    def result(self) -> hub.ModelFiles | hub.HubError:
        if self.local:
            return self.futures[0].result()
        config, *template = (f.result() for f in self.futures)
        if isinstance(config, hub.HubError):
            return config
        if template and isinstance(template[0], hub.HubError):
            return template[0]
        return hub.ModelFiles(config=config, chat_template=template[0] if template else "")


# repo_id -> its read: one read per model at a time, shared by every request of the process;
# finished reads stay until a request stores them (or they are 5 minutes old).
_reads: dict[str, _Read] = {}


@dataclass
class ConfigReads:
    """What `ensure_configs` left: reads still running at the deadline, and the rate-limit
    error that stopped some reads (those models are read again by a later page)."""

    pending: int = 0
    error: hub.HubError | None = None


def _executor() -> ThreadPoolExecutor:
    global _pool, _pool_size
    workers = max(1, int(settings.CATALOG_FETCH_WORKERS))
    if _pool is None or _pool_size != workers:
        if _pool is not None:
            _pool.shutdown(wait=False)
        _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="catalog-config")
        _pool_size = workers
    return _pool


def _call(function, *args):
    try:
        return function(*args)
    except hub.HubError as error:
        return error


def _start_reads(
    models: Iterable[CatalogModel], access: hub.HubAccess | None
) -> tuple[dict[str, CatalogModel], dict[str, _Read]]:
    """The models that need their config read (`CatalogModel.needs_config`), and their reads:
    started here, or the ones already running for them (one read per model at a time)."""
    retry = timedelta(seconds=settings.CATALOG_CONFIG_RETRY)
    wanted = {m.repo_id: m for m in models if m.needs_config(retry)}
    if not wanted:
        return wanted, {}
    access = access or hub.current_access()  # here: pool threads must not query the database
    on_disk = repos_with_a_folder(wanted)
    reads = {}
    with _pool_lock:
        now = time.monotonic()
        for key, read in list(_reads.items()):
            if read.done() and now - read.started > 300:
                del _reads[key]
        for repo_id, model in wanted.items():
            if repo_id not in _reads:
                template = not _api_template(model)
                _reads[repo_id] = _new_read(repo_id, template, access, repo_id in on_disk, now)
            reads[repo_id] = _reads[repo_id]
    return wanted, reads


def _new_read(
    repo_id: str, chat_template: bool, access: hub.HubAccess, local: bool, now: float
) -> _Read:
    pool = _executor()
    if local and local_model_path(repo_id) is not None:
        return _Read(now, [pool.submit(_call, hub.local_files, repo_id)], local=True)
    functions = [hub.fetch_config_json]
    if chat_template:
        functions.append(hub.fetch_chat_template)
    return _Read(now, [pool.submit(_call, f, repo_id, access) for f in functions])


def _finish_read(repo_id: str, read: _Read) -> None:
    with _pool_lock:
        if _reads.get(repo_id) is read:
            del _reads[repo_id]


def read_configs(
    models: Iterable[CatalogModel], changes: Changes, access: hub.HubAccess | None = None
) -> ConfigReads:
    """Read `config.json` (and the chat template when the listing lacked it) for the models
    that lack it — every file at once, at most `CATALOG_FETCH_WORKERS` requests in flight per
    process — and merge them and the characteristics into the rows, in memory (`changes` gets
    the fields to write). Reads still running at the deadline (`CATALOG_CONFIG_DEADLINE`) are
    counted in `pending`; a later page picks them up.

    A read the Hub rate-limited is not stored as a failure: the model is read again once the
    Hub allows it (`hub.rate_limit_wait`), and the error is returned for the page to show."""
    outcome = ConfigReads()
    wanted, reads = _start_reads(models, access)
    if not wanted:
        return outcome
    wait_futures(
        [f for read in reads.values() for f in read.futures],
        timeout=settings.CATALOG_CONFIG_DEADLINE,
    )
    for repo_id, read in reads.items():
        if not read.done():
            outcome.pending += 1
            continue
        _finish_read(repo_id, read)
        result = read.result()
        if isinstance(result, hub.HubRateLimited):
            outcome.error = result
            continue
        changes.setdefault(repo_id, set()).update(apply_files(wanted[repo_id], result))
    return outcome


def ensure_configs(models: Iterable[CatalogModel]) -> ConfigReads:
    """`read_configs` for stored rows, and store what was read."""
    models = list(models)
    changes: Changes = {}
    outcome = read_configs(models, changes)
    save_rows(models, changes)
    return outcome


_FILE_FIELDS = [
    "config", "chat_template", "config_source", "config_sha", "config_fetched_at",
    "config_error", "config_error_at", *CatalogModel.CHARACTERISTIC_FIELDS,
]  # fmt: skip


def apply_files(model: CatalogModel, result: hub.ModelFiles | hub.HubError) -> set[str]:
    """Merge a config read (or its failure) and the characteristics that follow into the row,
    in memory; returns the fields to write."""
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
    return set(_FILE_FIELDS)


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
        # Without the Hub's usedStorage, the files' sizes give the size, but only when the
        # weights are among them: else the parameters x bits estimate stays.
        if not model.used_storage and any(
            s.rfilename.endswith(WEIGHT_SUFFIXES) for s in info.siblings
        ):
            model.used_storage = (
                hub_data.number(sum(s.size for s in info.siblings if s.size)) or None
            )
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
