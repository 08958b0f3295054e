"""Helpers for tests that need models in the Hugging Face cache or wait on servers."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

TINY_REPO = "mlx-community/tiny-text-test"


def install_model(cache: Path, repo_id: str, source: Path | None = None) -> Path:
    """Lay out `repo_id` in `cache` as huggingface_hub does (blobs are plain files here):
    models--org--name/snapshots/<sha>/… and refs/main. With no `source`, only a config.json
    and a small weights file. Returns the snapshot directory."""
    sha = hashlib.sha1(repo_id.encode()).hexdigest()
    repo_dir = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo_dir / "snapshots" / sha
    if source is not None:
        shutil.copytree(source, snapshot, dirs_exist_ok=True)
    else:
        snapshot.mkdir(parents=True, exist_ok=True)
        (snapshot / "config.json").write_text(json.dumps({"model_type": "llama"}))
        (snapshot / "model.safetensors").write_bytes(b"\0" * 1024)
    (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs" / "main").write_text(sha)
    return snapshot


def wait_for(condition: Callable[[], object], timeout: float = 60.0, every: float = 0.2, what=""):
    """Poll `condition` until it returns something truthy (returned) or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := condition():
            return result
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
