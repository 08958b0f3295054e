"""Facts about the machine this process runs on, as reported by a host's heartbeat."""

import platform
import shutil
from importlib import metadata
from pathlib import Path

import psutil
from django.conf import settings


def package_version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return ""


def platform_label() -> str:
    if platform.system() == "Darwin":
        return "macOS Metal"
    return "Linux CPU"


def collect_facts() -> dict:
    """Memory, disk, platform and MLX versions of this machine."""
    memory = psutil.virtual_memory()
    cache = Path(settings.HF_HUB_CACHE)
    probe = next((p for p in (cache, cache.parent) if p.exists()), settings.DATA_DIR)
    disk = shutil.disk_usage(probe)
    return {
        "memory_total": memory.total,
        "memory_available": memory.available,
        "disk_free": disk.free,
        "disk_total": disk.total,
        "platform": platform_label(),
        "mlx_version": package_version("mlx"),
        "mlx_lm_version": package_version("mlx-lm"),
        "hf_cache_dir": str(cache),
    }
