"""The on-disk layout of the Hugging Face cache, for writing into it: blob paths, partial
files, what a cancelled download leaves behind, deleting a model. Every path goes through
`path_inside`, so nothing here can touch a file outside the cache.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from django.conf import settings
from huggingface_hub.file_download import repo_folder_name

from models_catalog.validators import path_inside, validate_repo_id

INCOMPLETE_SUFFIX = ".incomplete"


def cache_root() -> Path:
    return Path(settings.HF_HUB_CACHE)


def _folder(repo_id: str) -> Path:
    validate_repo_id(repo_id)
    return Path(repo_folder_name(repo_id=repo_id, repo_type="model"))


def repo_dir(repo_id: str) -> Path:
    return path_inside(cache_root(), _folder(repo_id))


def blob_path(repo_id: str, blob: str) -> Path:
    return path_inside(cache_root(), _folder(repo_id) / "blobs" / blob)


def incomplete_path(repo_id: str, blob: str) -> Path:
    path = blob_path(repo_id, blob)
    return path.with_name(path.name + INCOMPLETE_SUFFIX)


def bytes_present(repo_id: str, blobs: Iterable[tuple[str, int]]) -> tuple[int, int]:
    """`(bytes, complete files)` already in the cache for these `(blob, size)` pairs, partial
    files included in the bytes."""
    done = files = 0
    for blob, size in blobs:
        complete = blob_path(repo_id, blob)
        partial = incomplete_path(repo_id, blob)
        if complete.exists():
            done += min(complete.stat().st_size, size)
            files += 1
        elif partial.exists():
            done += min(partial.stat().st_size, size)
    return done, files


def free_bytes() -> int:
    """Free space on the volume that holds the cache (or would, once created)."""
    probe = cache_root()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return shutil.disk_usage(probe).free


def referenced_blobs(repo_id: str) -> set[str]:
    """Blob names that some snapshot of the repo links to."""
    snapshots = repo_dir(repo_id) / "snapshots"
    names: set[str] = set()
    if not snapshots.is_dir():
        return names
    for dirpath, _dirnames, filenames in os.walk(snapshots):
        for filename in filenames:
            link = Path(dirpath) / filename
            if link.is_symlink():
                names.add(Path(os.readlink(link)).name)
    return names


def remove_partial_download(repo_id: str, blobs: Iterable[str]) -> int:
    """Remove what an unfinished download left: every partial file of the repo and the listed
    blobs that no snapshot uses. The repo folder goes too when nothing else remains.
    Returns the number of bytes freed."""
    root = repo_dir(repo_id)
    blobs_dir = root / "blobs"
    freed = 0
    if blobs_dir.is_dir():
        used = referenced_blobs(repo_id)
        doomed = [p for p in blobs_dir.iterdir() if p.name.endswith(INCOMPLETE_SUFFIX)]
        doomed += [blob_path(repo_id, b) for b in set(blobs) if b not in used]
        for path in doomed:
            try:
                freed += path.stat().st_size
                path.unlink()
            except FileNotFoundError:
                continue
    if _holds_nothing(root):
        delete_repo(repo_id)
    return freed


def _holds_nothing(root: Path) -> bool:
    if not root.is_dir():
        return False
    for sub in ("blobs", "snapshots"):
        folder = root / sub
        if folder.is_dir() and any(p for p in folder.rglob("*") if not p.is_dir()):
            return False
    return True


def delete_repo(repo_id: str) -> int:
    """Remove the repo from the cache (blobs, snapshots, refs, locks); bytes freed."""
    root = repo_dir(repo_id)
    freed = 0
    if root.is_dir():
        freed = sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())
        shutil.rmtree(root)
    locks = path_inside(cache_root(), Path(".locks") / root.name)
    shutil.rmtree(locks, ignore_errors=True)
    return freed
