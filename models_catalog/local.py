"""Models on this host's disk: what the Hugging Face cache holds, however it got there."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from huggingface_hub import scan_cache_dir
from huggingface_hub.errors import CacheNotFound

from models_catalog import characteristics, hub_data, memory
from models_catalog.validators import path_inside, validate_repo_id

#: Larger vocabularies than any model has (the largest are ~260K tokens) are not believed.
MAX_VOCAB_SIZE = 16_000_000


@dataclass(frozen=True)
class LocalModel:
    repo_id: str
    path: Path  # the newest snapshot directory
    revision: str  # its commit hash
    size_on_disk: int
    nb_files: int
    # None only for another host's model that its worker reported without them (older release)
    last_accessed: datetime | None
    last_modified: datetime | None


def cache_dir() -> Path:
    return Path(settings.HF_HUB_CACHE)


def list_local_models(root: Path | None = None) -> list[LocalModel]:
    """Every model repo in the cache that has a snapshot with a `config.json`, newest first."""
    root = root or cache_dir()
    try:
        info = scan_cache_dir(root)
    except CacheNotFound:
        return []
    models = []
    for repo in info.repos:
        if repo.repo_type != "model":
            continue
        revisions = sorted(repo.revisions, key=lambda r: r.last_modified, reverse=True)
        snapshot = next((r for r in revisions if (r.snapshot_path / "config.json").exists()), None)
        if snapshot is None:
            continue
        models.append(
            LocalModel(
                repo_id=repo.repo_id,
                path=snapshot.snapshot_path,
                revision=snapshot.commit_hash,
                size_on_disk=repo.size_on_disk,
                nb_files=repo.nb_files,
                last_accessed=datetime.fromtimestamp(repo.last_accessed, tz=UTC),
                last_modified=datetime.fromtimestamp(repo.last_modified, tz=UTC),
            )
        )
    return sorted(models, key=_modified, reverse=True)


def _modified(model: LocalModel) -> datetime:
    """A model's last change, for sorting (always known for a model read from this disk)."""
    return model.last_modified or datetime.min.replace(tzinfo=UTC)


def repos_with_a_folder(repo_ids: Iterable[str], root: Path | None = None) -> set[str]:
    """The repo ids whose folder exists in the cache: one directory listing for many models
    (only these can have a `local_model_path`)."""
    try:
        folders = set(os.listdir(root or cache_dir()))
    except OSError:
        return set()
    return {r for r in repo_ids if "models--" + r.replace("/", "--") in folders}


def local_model_path(repo_id: str, root: Path | None = None) -> Path | None:
    """The snapshot directory of `repo_id` in the cache, or None when it is not on disk.

    The repo id is validated first and the result is checked to stay inside the cache.
    """
    validate_repo_id(repo_id)
    root = root or cache_dir()
    repo_dir = root / ("models--" + repo_id.replace("/", "--"))
    if not repo_dir.is_dir():
        return None
    snapshots = repo_dir / "snapshots"
    ref = repo_dir / "refs" / "main"
    candidates: list[Path] = []
    if ref.is_file():
        candidates.append(snapshots / ref.read_text().strip())
    if snapshots.is_dir():
        candidates += sorted(snapshots.iterdir(), key=lambda p: p.stat().st_mtime, reverse=True)
    for candidate in candidates:
        if (candidate / "config.json").is_file():
            return path_inside(root, candidate.relative_to(root))
    return None


_vocab_sizes: dict[tuple[str, Path], int] = {}


def vocab_size(repo_id: str, root: Path | None = None) -> int | None:
    """The model's vocabulary size from its `config.json` (`text_config` for multimodal
    models); None when the model is not on disk or does not say. Known sizes are remembered
    per process (a snapshot's config does not change), so the gateway reads the file once."""
    root = root or cache_dir()
    key = (repo_id, root)
    if key in _vocab_sizes:
        return _vocab_sizes[key]
    try:
        path = local_model_path(repo_id, root)
        data = hub_data.loads(_head(path / "config.json")) if path else None
    except (ValidationError, OSError, ValueError):  # hub_data.HubDataError is a ValueError
        return None
    if not isinstance(data, dict):
        return None
    text = data.get("text_config")
    for section in (data, text if isinstance(text, dict) else {}):
        value = hub_data.number(section.get("vocab_size"), 1, MAX_VOCAB_SIZE)
        if value is not None:
            _vocab_sizes[key] = value
            return value
    return None


def _head(path: Path) -> bytes:
    """The file's bytes, one more than `hub_data.loads` accepts at most (it refuses more)."""
    with open(path, "rb") as handle:
        return handle.read(hub_data.MAX_JSON_BYTES + 1)


# --- what the gateway checks a request against ---------------------------------------------


@dataclass(frozen=True)
class ServingFacts:
    """A local model's limits for requests, read from its files on this host."""

    vocab_size: int | None
    context_length: int | None
    # The variables its chat template reads (None: no template could be read).
    template_variables: frozenset[str] | None


_serving_facts: dict[tuple[str, Path], ServingFacts] = {}


def serving_facts(repo_id: str, root: Path | None = None) -> ServingFacts:
    """The model's vocabulary size, context length and chat-template variables; all unknown
    when the model is not on disk. Remembered per process once the model is on disk (its
    files do not change; the gateway asks before every request's first token)."""
    root = root or cache_dir()
    if (known := _serving_facts.get((repo_id, root))) is not None:
        return known
    try:
        path = local_model_path(repo_id, root)
    except ValidationError:
        path = None
    if path is None:
        return ServingFacts(None, None, None)
    config = _json_file(path / "config.json")
    facts = ServingFacts(
        vocab_size=vocab_size(repo_id, root),
        context_length=characteristics.context_length(config) if config else None,
        template_variables=characteristics.template_variables(_chat_templates(path)),
    )
    _serving_facts[(repo_id, root)] = facts
    return facts


#: The files whose bytes count as a model's weights.
WEIGHT_SUFFIXES = frozenset({".safetensors", ".npz", ".gguf", ".bin"})


def weight_bytes(snapshot: Path) -> int:
    """Bytes of weights in a model snapshot (what loading it puts in memory, roughly)."""
    total = 0
    for file in snapshot.iterdir():
        if file.suffix in WEIGHT_SUFFIXES:
            try:
                total += file.stat().st_size
            except OSError:
                continue
    return total


_memory: dict[Path, memory.ModelMemory] = {}


def model_memory(repo_id: str, root: Path | None = None) -> memory.ModelMemory | None:
    """The model's weights and KV shape (models_catalog/memory.py) from its snapshot on this
    host's disk; None when it is not there. Remembered per snapshot directory and process (a
    snapshot's files do not change; the heartbeat reports every model every few seconds)."""
    try:
        path = local_model_path(repo_id, root)
    except ValidationError:
        return None
    if path is None:
        return None
    if (known := _memory.get(path)) is None:
        known = memory.model_memory(_json_file(path / "config.json"), weight_bytes(path))
        _memory[path] = known
    return known


def generation_config(repo_id: str, root: Path | None = None) -> dict[str, Any] | None:
    """The model's `generation_config.json` on this host's disk, read through hub_data (its
    author wrote it), or None when the model or the file is not there or is unusable."""
    try:
        path = local_model_path(repo_id, root)
    except ValidationError:
        return None
    return _json_file(path / "generation_config.json") if path is not None else None


def model_config(repo_id: str, root: Path | None = None) -> dict[str, Any] | None:
    """The model's `config.json` on this host's disk (read as `generation_config`), or None."""
    try:
        path = local_model_path(repo_id, root)
    except ValidationError:
        return None
    return _json_file(path / "config.json") if path is not None else None


def _json_file(path: Path) -> dict[str, Any] | None:
    try:
        data = hub_data.loads(_head(path))
    except (OSError, ValueError):  # hub_data.HubDataError is a ValueError
        return None
    return data if isinstance(data, dict) else None


def _chat_templates(snapshot: Path) -> list[str]:
    """Every chat template of a model as transformers finds them: `chat_template.jinja`,
    `chat_template.json`, or `tokenizer_config.json` (a string, or a list of named ones)."""
    templates: list[str] = []
    jinja = snapshot / "chat_template.jinja"
    if jinja.is_file():
        with contextlib.suppress(OSError):
            templates.append(_head(jinja).decode("utf-8", errors="replace"))
    for name in ("chat_template.json", "tokenizer_config.json"):
        value = (_json_file(snapshot / name) or {}).get("chat_template")
        if isinstance(value, str):
            templates.append(value)
        elif isinstance(value, list):
            templates += [
                t["template"]
                for t in value
                if isinstance(t, dict) and isinstance(t.get("template"), str)
            ]
    return templates
