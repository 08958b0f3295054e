"""What each pytest-xdist worker of `make test` owns, so that the workers never share state:
its Redis database, its data directory (SQLite's test database, the logs and sockets of the
processes it starts, collectstatic's output) and its slice of the model servers' port range.
The test database gets the worker's suffix from pytest-django itself (`test_…_gw1`).

config/test_settings.py applies `worker_environment(os.environ)` to its own environment before
it loads the portal's settings (which read these variables once, at import); pytest-django
loads it in each worker before any conftest. The processes the tests start (Celery workers,
gunicorn) inherit that environment, and `MLX_PORTAL_TEST_WORKER` tells their own
config.test_settings that it was already applied.

Worker `gwN` of `COUNT` workers takes, from what the suite was given:

| Variable | Given (`make test`) | Worker gwN |
| --- | --- | --- |
| `REDIS_URL` | `redis://…/15` (`TEST_REDIS_URL`) | database 15-N: gw0 15, gw1 14, gw2 13 |
| `MLX_PORTAL_DATA_DIR` | `var/test` (`TEST_DATA_DIR`) | `var/test/gwN` |
| `MLX_PORTAL_SERVER_PORTS` | `8100-8999` (the settings' default) | the N-th of COUNT equal slices |

Redis database 0 is `make run`'s: a worker that would get it (or a negative one) refuses to
start and says which base to give instead.

No Django imports here: this runs before the settings exist.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/15"
DEFAULT_DATA_DIR = ROOT / "var" / "test"
DEFAULT_SERVER_PORTS = "8100-8999"  # config/settings.py SERVER_PORT_RANGE's default


def worker_number(worker: str) -> int:
    """`gw3` → 3 (pytest-xdist's names)."""
    if not (worker.startswith("gw") and worker[2:].isdigit()):
        raise ValueError(f"not a pytest-xdist worker name: {worker!r}")
    return int(worker[2:])


def redis_url_for(base_url: str, number: int) -> str:
    """The base URL with database `base - number`; refuses database 0 (`make run`'s)."""
    parts = urlsplit(base_url)
    path = parts.path.strip("/")
    base = int(path) if path else 0
    db = base - number
    if db < 1:
        raise ValueError(
            f"pytest-xdist worker gw{number} would use Redis database {db} of {base_url}: "
            f"database 0 is `make run`'s. Give the suite a base of {number + 1} or more "
            "(TEST_REDIS_URL=redis://127.0.0.1:6379/15), or fewer workers."
        )
    return urlunsplit(parts._replace(path=f"/{db}"))


def port_slice(ports: str, number: int, count: int) -> str:
    """The `number`-th of `count` equal slices of the range `low-high`, as `low-high`."""
    low, high = (int(p) for p in ports.split("-", 1))
    size = (high - low + 1) // count
    if size < 1:
        raise ValueError(f"the server ports {ports} cannot be shared by {count} workers")
    start = low + number * size
    return f"{start}-{start + size - 1}"


def worker_environment(env: Mapping[str, str]) -> dict[str, str]:
    """The variables a pytest-xdist worker sets before Django's settings load: none outside a
    worker (a plain `pytest` keeps what it was given), nor in a process it started, which
    inherited them already (`MLX_PORTAL_TEST_WORKER`)."""
    worker = env.get("PYTEST_XDIST_WORKER")
    if not worker or env.get("MLX_PORTAL_TEST_WORKER") == worker:
        return {}
    number = worker_number(worker)
    count = int(env.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    data_dir = Path(env.get("MLX_PORTAL_DATA_DIR") or DEFAULT_DATA_DIR)
    return {
        "MLX_PORTAL_TEST_WORKER": worker,
        "REDIS_URL": redis_url_for(env.get("REDIS_URL") or DEFAULT_REDIS_URL, number),
        "MLX_PORTAL_DATA_DIR": str(data_dir / worker),
        "MLX_PORTAL_SERVER_PORTS": port_slice(
            env.get("MLX_PORTAL_SERVER_PORTS") or DEFAULT_SERVER_PORTS, number, count
        ),
    }
