"""Facts about the machine this process runs on, as reported by a host's heartbeat, and the
one rule of when a host was heard from recently enough to be online.

`collect_facts()` is what a host's worker writes into its `Host` row every few seconds (see
`models_catalog/hosts/heartbeat.py`): memory, disk, platform, MLX versions, its model cache and
the models in it, and the address of its portal web tier (for the hop, docs/hosts.md).
"""

from __future__ import annotations

import logging
import platform
import shutil
import subprocess
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil
from django.conf import settings
from django.utils import timezone
from django.utils.timesince import timesince

from models_catalog.local import list_local_models, model_memory

log = logging.getLogger(__name__)

MACOS_METAL = "macOS Metal"
LINUX_CUDA = "Linux CUDA"
LINUX_CPU = "Linux CPU"
# The memory a host's plan may fill (servers/memory_plan.py), and what says so.
LIMIT_WIRED = "wired"  # macOS: iogpu.wired_limit_mb, set by an admin of the Mac
LIMIT_MACOS_DEFAULT = "macos-default"  # macOS: the share of memory the GPU may wire by default
LIMIT_AVAILABLE = "available"  # elsewhere: the memory available now (psutil)
#: When `iogpu.wired_limit_mb` is 0, macOS lets the GPU wire about 2/3 of memory on machines
#: with up to 36 GB and 3/4 above (Metal's recommendedMaxWorkingSetSize: 96 GB of 128 GB, ~48
#: of 64, 21-24 of 32; https://stencel.io/posts/apple-silicon-limitations-with-usage-on-local-llm%20.html,
#: and GPUStack's "75% of total RAM", https://github.com/gpustack/gpustack/issues/1375). Newer
#: macOS releases were measured a little higher on 128 GB (107.5 GiB,
#: https://github.com/antirez/ds4/pull/893): an estimate on the safe side, which an admin can
#: cap further on the Hosts page.
MACOS_SMALL_MEMORY = 36 * 1024**3
MACOS_SMALL_SHARE = 2 / 3
MACOS_LARGE_SHARE = 3 / 4
SYSCTL_TIMEOUT = 2.0
# Heartbeats carry at most this many local models (newest first), to keep the row small.
MAX_REPORTED_MODELS = 500


def heartbeat_age(last_heartbeat: datetime | None, now: datetime | None = None) -> float | None:
    """Seconds since a host's worker last reported (None: it never did)."""
    if last_heartbeat is None:
        return None
    return max(0.0, ((now or timezone.now()) - last_heartbeat).total_seconds())


def is_online(last_heartbeat: datetime | None, now: datetime | None = None) -> bool:
    """The one rule of "online": the host's worker reported within
    MLX_PORTAL_HOST_OFFLINE_AFTER seconds. `Host.is_online` and the server tiles (which read
    only the column) both call it."""
    age = heartbeat_age(last_heartbeat, now)
    return age is not None and age <= settings.HOST_OFFLINE_AFTER


def heard_ago(when: datetime | None, now: datetime | None = None) -> str:
    """How long ago a host was last heard, for "… ago": in seconds under a minute (a host goes
    offline after 30 s of silence, so "0 minutes" would hide it), else Django's timesince."""
    if when is None:
        return ""
    seconds = int(((now or timezone.now()) - when).total_seconds())
    if seconds < 60:
        seconds = max(seconds, 0)
        return f"{seconds} second{'s' if seconds != 1 else ''}"
    return timesince(when, now)


def package_version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return ""


def platform_label(system: str, *, metal: bool, cuda: bool) -> str:
    """The platform a host shows: where MLX computes on it (a pure function, see tests)."""
    if system == "Darwin":
        return MACOS_METAL if metal else "macOS CPU"
    name = "Linux" if system == "Linux" else (system or "Unknown")
    if cuda:
        return f"{name} CUDA"
    return f"{name} CPU"


def accelerators() -> tuple[bool, bool]:
    """`(metal, cuda)`: whether MLX on this machine can use Metal or a CUDA GPU, as MLX itself
    reports it (`mx.metal.is_available()`, `mx.cuda.is_available()`); False when MLX is missing."""
    # Imported here, not at the top: MLX is optional (a host without it still reports), and
    # loading it takes ~20 ms and sets up the accelerator, which only the worker's heartbeat
    # needs, once per process (detect_platform), never a web process importing this room.
    try:
        import mlx.core as mx
    except Exception:  # noqa: BLE001 - no MLX (or a broken one): no accelerator
        return False, False
    metal = cuda = False
    try:
        metal = bool(mx.metal.is_available())
    except Exception:  # noqa: BLE001
        metal = False
    try:
        cuda = bool(getattr(mx, "cuda", None) and mx.cuda.is_available())
    except Exception:  # noqa: BLE001
        cuda = False
    return metal, cuda


_platform: str | None = None


def detect_platform() -> str:
    """This machine's platform label (computed once per process)."""
    global _platform
    if _platform is None:
        metal, cuda = accelerators()
        _platform = platform_label(platform.system(), metal=metal, cuda=cuda)
    return _platform


def memory_limit(
    system: str, total: int, available: int, wired_limit_mb: int | None
) -> tuple[int, str]:
    """The memory a host's model servers may use together, and which rule said so (a pure
    function, see tests): on macOS the GPU wired limit, `iogpu.wired_limit_mb` when an admin set
    it (0 or unreadable: macOS's default share of memory); elsewhere the memory available now."""
    if system == "Darwin":
        if wired_limit_mb:
            return min(wired_limit_mb * 1024 * 1024, total), LIMIT_WIRED
        share = MACOS_SMALL_SHARE if total <= MACOS_SMALL_MEMORY else MACOS_LARGE_SHARE
        return int(total * share), LIMIT_MACOS_DEFAULT
    return available, LIMIT_AVAILABLE


def parse_wired_limit_mb(output: str) -> int | None:
    """The value of `sysctl iogpu.wired_limit_mb` (with or without `-n`): "0",
    "iogpu.wired_limit_mb: 49152"; None when it says something else (an older macOS)."""
    value = output.strip().rpartition(":")[2].strip()
    return int(value) if value.isdigit() else None


def read_wired_limit_mb() -> int | None:
    """`sysctl -n iogpu.wired_limit_mb` on this Mac; None when it cannot be read."""
    try:
        done = subprocess.run(
            ["/usr/sbin/sysctl", "-n", "iogpu.wired_limit_mb"],
            capture_output=True,
            text=True,
            timeout=SYSCTL_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return parse_wired_limit_mb(done.stdout) if done.returncode == 0 else None


def reported_models(limit: int = MAX_REPORTED_MODELS) -> list[dict[str, Any]]:
    """The models in this machine's cache, as a heartbeat reports them: repo id, size on
    disk, files, revision, last access and change (seconds since the epoch), and what their
    memory need is made of (`memory.ModelMemory.as_report`: weights, KV shape, context)."""
    try:
        models = list_local_models()
    except Exception:  # a cache being written to can fail a scan
        log.exception("Listing the local models for the heartbeat failed")
        return []
    return [
        {"repo_id": m.repo_id, "size": m.size_on_disk, "files": m.nb_files,
         "revision": m.revision, "last_accessed": m.last_accessed.timestamp(),
         "last_modified": m.last_modified.timestamp(),
         "memory": (known.as_report() if (known := model_memory(m.repo_id)) else None)}
        for m in models[:limit]
        if m.last_accessed and m.last_modified
    ]  # fmt: skip


def collect_facts(*, with_models: bool = True) -> dict[str, Any]:
    """Memory, disk, platform and MLX versions of this machine (and its models, web address)."""
    memory = psutil.virtual_memory()
    cache = Path(settings.HF_HUB_CACHE)
    # The cache's disk, measured where the cache is or will be (the nearest folder that exists).
    probe = next(p for p in (cache, *cache.parents) if p.exists())
    disk = shutil.disk_usage(probe)
    system = platform.system()
    wired = read_wired_limit_mb() if system == "Darwin" else None
    limit, limit_kind = memory_limit(system, memory.total, memory.available, wired)
    facts = {
        "memory_total": memory.total,
        "memory_available": memory.available,
        "memory_limit": limit,
        "memory_limit_kind": limit_kind,
        "disk_free": disk.free,
        "disk_total": disk.total,
        "platform": detect_platform(),
        "mlx_version": package_version("mlx"),
        "mlx_lm_version": package_version("mlx-lm"),
        "hf_cache_dir": str(cache),
        "web_url": settings.HOST_WEB_URL,
    }
    if with_models:
        facts["local_models"] = reported_models()
    return facts
