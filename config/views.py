"""The dashboard: what this host has and what the portal is doing."""

import platform
import shutil
from importlib import metadata

import psutil
from django.conf import settings
from django.shortcuts import render


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def host_facts() -> dict:
    memory = psutil.virtual_memory()
    cache = settings.HF_HUB_CACHE
    probe = (
        cache if cache.exists() else cache.parent if cache.parent.exists() else settings.DATA_DIR
    )
    disk = shutil.disk_usage(probe)
    accelerator = "Metal" if platform.system() == "Darwin" else "CPU"
    return {
        "name": settings.HOST_NAME,
        "platform": f"{platform.system()} {platform.machine()} ({accelerator})",
        "memory_total": memory.total,
        "memory_available": memory.available,
        "disk_free": disk.free,
        "disk_total": disk.total,
        "mlx_version": _version("mlx"),
        "mlx_lm_version": _version("mlx-lm"),
        "hf_cache": str(cache),
    }


def home(request):
    return render(request, "home.html", {"host": host_facts()})
