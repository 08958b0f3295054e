"""The portal's secret key file. `python -m config.secret_key` creates it; the settings read it.

`make run` runs this before `migrate` (the deploy steps too, docs/deploy.md): it creates the
data directory (MLX_PORTAL_DATA_DIR, default ./var: the SQLite database, beat's schedule, the
logs and this key live there) and, unless DJANGO_SECRET_KEY is set, a random key in
DATA_DIR/secret_key, readable by its owner only. A key already there is kept: sessions, API
keys and the stored Hugging Face token depend on it. The settings never write; without a key
from either place they refuse to load, saying what to do (`missing`).

A script rather than a management command: it runs before the portal can (there is no key
yet, perhaps no database) and needs nothing of Django's; and `config/` is wiring, not an app
that could hold a command. It reads the environment and `.env` exactly as the settings do.
"""

from __future__ import annotations

import os
import secrets
import sys
import tempfile
from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent
DEFAULT_DATA_DIR = BASE_DIR / "var"
FILENAME = "secret_key"


def read(data_dir: Path) -> str:
    """The key kept in `data_dir`, or "" when there is none. Reads only."""
    try:
        return (data_dir / FILENAME).read_text().strip()
    except FileNotFoundError:
        return ""


def missing(data_dir: Path) -> str:
    """What the portal says when it has no key."""
    return (
        f"No secret key: DJANGO_SECRET_KEY is not set and {data_dir / FILENAME} is missing or "
        "empty. Run `make run` (it creates the key there; so does `python -m config.secret_key`), "
        "or set DJANGO_SECRET_KEY in the environment or .env (the same value on every host)."
    )


def create(data_dir: Path) -> bool:
    """`data_dir`, and a new random key in it unless one is there. True when a key was written.

    The key is written to a private temporary file (mode 0600) and linked into place, which
    fails when a key appeared meanwhile (two `make run`s at once): a reader never sees half a
    key, and the first key written is the one kept."""
    data_dir.mkdir(parents=True, exist_ok=True)
    if read(data_dir):
        return False
    descriptor, temporary = tempfile.mkstemp(prefix=f".{FILENAME}-", dir=data_dir)
    try:
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secrets.token_urlsafe(64))
        os.link(temporary, data_dir / FILENAME)
    except FileExistsError:
        return False
    finally:
        os.unlink(temporary)
    return True


def main() -> int:
    env = environ.Env()
    environ.Env.read_env(BASE_DIR / ".env", overwrite=False)  # as config/settings.py
    data_dir = Path(env.str("MLX_PORTAL_DATA_DIR", default=str(DEFAULT_DATA_DIR))).resolve()
    if env.str("DJANGO_SECRET_KEY", default=""):
        data_dir.mkdir(parents=True, exist_ok=True)
        return 0  # the environment's key wins; no file is needed
    if create(data_dir):
        print(f"Created the portal's secret key in {data_dir / FILENAME} (keep it).")
    elif not read(data_dir):
        print(missing(data_dir), file=sys.stderr)  # an empty file is not replaced: say so
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
