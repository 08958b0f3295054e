"""A Python process of the portal's code with a clean environment: only PATH and a data
directory of the test's own, holding a secret key as `make run` leaves it, plus what the test
sets. For start-up checks (settings that must refuse to start, `check --deploy`), which read
the environment once, at import."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from config import secret_key

ROOT = Path(__file__).resolve().parents[2]


def run_python(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """`python <args>` in the project's root, with `env` over a clean base; output captured.
    The data directory is `tmp_path`, with the key `make run` creates (`config.secret_key`)."""
    secret_key.create(tmp_path)
    base = {"PATH": "/usr/bin:/bin", "MLX_PORTAL_DATA_DIR": str(tmp_path)}
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
