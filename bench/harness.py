"""What every benchmark needs: a throwaway portal (data dir, database, Redis db 7), its real
processes started from the Procfile's own command lines, the test harness's tiny models and
fake Hub, and small statistics helpers.

Nothing here is imported by the portal or the test suite. Every process a bench starts runs in
a process group of its own and is stopped (SIGTERM, then SIGKILL) by `Bench.close()`.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from config import secret_key

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
VENV_BIN = Path(PY).parent
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/7")
CACHE = Path(os.environ.get("BENCH_CACHE", Path.home() / ".cache" / "mlx-portal-bench"))
PASSWORD = "bench-password-123"


# --- statistics ------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), linear interpolation; nan for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * q / 100
    low, high = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (k - low)


def median(values: Iterable[float]) -> float:
    values = list(values)
    return statistics.median(values) if values else float("nan")


def median_interval(
    values: Sequence[float], confidence: float = 0.95, resamples: int = 4000
) -> tuple[float, float]:
    """A bootstrap confidence interval of the median of `values` (the percentile method).
    The seed is fixed, so the same rounds always give the same interval. (nan, nan) for
    fewer than three values."""
    import numpy as np  # installed with mlx-lm; only the benches use it

    if len(values) < 3:
        return float("nan"), float("nan")
    rng = np.random.default_rng(0)
    samples = rng.choice(np.asarray(values, dtype=float), size=(resamples, len(values)))
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(np.median(samples, axis=1), [tail, 100 - tail])
    return float(low), float(high)


def verdict(low: float, high: float, goal: float, higher_is_better: bool = True) -> str:
    """Whether an interval [low, high] meets `goal`: "met" when all of it does, "missed"
    when none of it does, else "within noise" (more rounds would tell)."""
    if higher_is_better:
        return "met" if low >= goal else "missed" if high < goal else "within noise"
    return "met" if high <= goal else "missed" if low > goal else "within noise"


def table(rows: list[list[str]]) -> str:
    """A Markdown table (the first row is the header)."""
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    lines = ["| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) + " |"
             for r in rows]  # fmt: skip
    lines.insert(1, "| " + " | ".join("-" * w for w in widths) + " |")
    return "\n".join(lines)


# --- the machine -----------------------------------------------------------------------------


def machine() -> dict[str, str]:
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    cpu = cpu or platform.processor()
    mem = ""
    with contextlib.suppress(OSError):
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kib / 1024 / 1024:.1f} GiB"
    versions = {}
    for name in ("django", "mlx", "mlx_lm", "huggingface_hub", "httpx", "gunicorn", "celery"):
        with contextlib.suppress(Exception):
            from importlib.metadata import version

            versions[name] = version(name.replace("_", "-"))
    return {
        "nproc": str(os.cpu_count()),
        "ram": mem,
        "cpu": cpu,
        "os": f"{platform.system()} {platform.release()} ({_os_name()})",
        "python": platform.python_version(),
        **versions,
    }


def _os_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    return platform.platform()


def print_machine() -> None:
    info = machine()
    print("machine: " + ", ".join(f"{k}={v}" for k, v in info.items()))


def cpu_times() -> tuple[float, float] | None:
    """(all CPU time, time stolen by the hypervisor), in jiffies, from /proc/stat (Linux)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
        return float(sum(fields)), float(fields[7])
    return None


def steal_since(start: tuple[float, float] | None) -> str:
    """The share of CPU time the hypervisor took from this VM since `start` (cpu_times()):
    a noisy host shows here, and figures taken while it is high move by tens of per cent."""
    end = cpu_times()
    if start is None or end is None or end[0] <= start[0]:
        return "unknown"
    return f"{100 * (end[1] - start[1]) / (end[0] - start[0]):.1f} %"


_SPIN = (
    "import os\n"
    "try:\n"
    "    os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))\n"
    "except (AttributeError, OSError):\n"
    "    os.nice(19)\n"
    "while True:\n"
    "    pass\n"
)


@contextlib.contextmanager
def cpus_awake(enabled: bool = True):
    """Keep the CPUs from going idle while the block runs: one spinning process in the
    SCHED_IDLE class (nice 19 where that class is missing), which the kernel runs only when
    nothing else wants a CPU.

    On this VM a CPU that goes idle is slow to wake again: a reply from mlx_lm.server at
    c = 1 took 190 ms with the CPUs idling between tokens and 120 ms with this spinner
    (docs/benchmarks.md §1h), and a proxy whose own event loop keeps a CPU busy sped the
    model server up by the same effect. With the spinner every target is measured on awake
    CPUs. It is not a clean control at higher concurrency: there it takes time slices that
    mlx's own threads want (c = 4 direct fell from 1640 to 1118 tok/s), so it is opt-in."""
    if not enabled:
        yield False
        return
    proc = subprocess.Popen([sys.executable, "-c", _SPIN], stdin=subprocess.DEVNULL)
    try:
        yield True
    finally:
        proc.kill()
        proc.wait()


_COMPETE = (
    "import os, signal, sys, time\n"
    "os.sched_setaffinity(0, {int(sys.argv[1])})\n"
    "stop = []\n"
    "signal.signal(signal.SIGTERM, lambda *_: stop.append(1))\n"
    "started, cpu, loops = time.perf_counter(), time.process_time(), 0\n"
    "while not stop:\n"
    "    x = 0\n"
    "    for i in range(1000):\n"
    "        x += i * i\n"
    "    loops += 1\n"
    "print(loops, time.perf_counter() - started, time.process_time() - cpu, flush=True)\n"
)


@dataclass
class Competitor:
    """What `competitor()` says once its block has run (zeros when it did not run)."""

    cpu: int = -1  # the CPU it was pinned to
    loops: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0

    def __str__(self) -> str:
        if self.cpu < 0:
            return "none"
        share = self.cpu_seconds / self.seconds if self.seconds else 0.0
        return (
            f"pinned to CPU {self.cpu}, ran {self.cpu_seconds:.1f} CPU-s in {self.seconds:.1f} s "
            f"({share:.2f} of a core), {self.loops / max(self.seconds, 1e-9):,.0f} loops/s"
        )


@contextlib.contextmanager
def competitor(enabled: bool = True):
    """A fixed CPU load beside the bench while the block runs, so that "under contention" is
    the same from run to run: one process at normal priority (nice 0) pinned to the last CPU
    (`sched_setaffinity`), running a pure-Python loop that never sleeps (1,000 multiply-adds
    a loop). It wants one core whole; the kernel shares that core between it and whatever
    else runs there. Yields a `Competitor`, filled in when the block ends (its loops, and the
    CPU time it got: the share of a core it really took)."""
    result = Competitor()
    if not enabled:
        yield result
        return
    cpu = max(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 0
    proc = subprocess.Popen(
        [sys.executable, "-c", _COMPETE, str(cpu)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        yield result
    finally:
        proc.terminate()
        output, _ = proc.communicate(timeout=10)
        with contextlib.suppress(ValueError):
            loops, seconds, cpu_seconds = output.split()
            result.cpu, result.loops = cpu, int(loops)
            result.seconds, result.cpu_seconds = float(seconds), float(cpu_seconds)


# --- processes -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Proc:
    name: str
    process: subprocess.Popen
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self, grace: float = 10.0) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(grace)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(5)


def procfile_command(kind: str, env: dict[str, str]) -> list[str]:
    """The Procfile's command line for `kind` (web, worker, beat), its ${VAR:-default}
    expanded from `env`, the program taken from this venv."""
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.startswith(f"{kind}:"):
            text = line.split(":", 1)[1].strip()
            break
    else:
        raise RuntimeError(f"No {kind!r} line in the Procfile")

    def expand(match: re.Match) -> str:
        return env.get(match.group(1)) or match.group(2)

    text = re.sub(r"\$\{(\w+):-([^}]*)\}", expand, text)
    args = shlex.split(text)
    args[0] = str(VENV_BIN / args[0])
    return args


def wait_for(check: Callable[[], object], timeout: float, what: str, proc: Proc | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.process.poll() is not None:
            raise RuntimeError(f"{proc.name} exited early:\n{proc.log_tail()}")
        with contextlib.suppress(Exception):
            if result := check():
                return result
        time.sleep(0.1)
    tail = proc.log_tail() if proc else ""
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}\n{tail}")


def http_ok(url: str, timeout: float = 2.0) -> bool:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.status == 200


# --- a throwaway portal ----------------------------------------------------------------------


@dataclass
class Bench:
    """A throwaway portal: its own data dir, SQLite database, HF cache and Redis db 7."""

    name: str
    root: Path = field(init=False)
    procs: list[Proc] = field(default_factory=list)
    cleanups: list[Callable[[], None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix=f"mlx-portal-bench-{self.name}-"))
        self.data_dir = self.root / "data"
        secret_key.create(self.data_dir)  # the data dir and its key, as `make run` makes them
        self.hf_cache = self.root / "hf" / "hub"
        self.hf_cache.mkdir(parents=True)
        self.logs = self.root / "logs"
        self.logs.mkdir()
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "MLX_PORTAL_DATA_DIR": str(self.data_dir),
            "REDIS_URL": REDIS_URL,
            "HF_HUB_CACHE": str(self.hf_cache),
            "HF_HOME": str(self.root / "hf"),
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "LOG_LEVEL": "WARNING",
            "PYTHONUNBUFFERED": "1",
            "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}",
        }
        self.env.pop("DATABASE_URL", None)
        self.env.pop("HF_TOKEN", None)

    # Django in this process, on the bench's database (for setting up rows).
    def setup_django(self, **extra_env: str) -> None:
        self.env.update(extra_env)
        os.environ.update({k: v for k, v in self.env.items() if k != "PATH"})
        sys.path.insert(0, str(ROOT))
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0, interactive=False)
        call_command("createcachetable", verbosity=0)
        call_command("collectstatic", interactive=False, verbosity=0)  # as `make run` does
        self._purge_redis()

    def _purge_redis(self) -> None:
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        client.flushdb()
        client.close()

    def spawn(self, name: str, command: list[str], env: dict[str, str] | None = None) -> Proc:
        log_path = self.logs / f"{name}.log"
        log = log_path.open("ab")
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env or self.env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        proc = Proc(name, process, log_path)
        self.procs.append(proc)
        return proc

    def start_web(
        self,
        gunicorn_args: Sequence[str] = (),
        app: str = "config.wsgi",
        ready_path: str = "/accounts/login/",
        **extra_env: str,
    ) -> str:
        """gunicorn with the Procfile's settings on a free port (plus `gunicorn_args`), serving
        the portal or another WSGI `app` (bench/floor_relay.py); returns its base URL once
        `ready_path` answers 200. Its `Proc` is the last of `self.procs`."""
        port = free_port()
        env = {**self.env, "PORTAL_BIND": f"127.0.0.1:{port}", **extra_env}
        command = procfile_command("web", env)
        command = [c for c in command if c not in ("--access-logfile", "-")]  # keep logs quiet
        command = [app if c == "config.wsgi" else c for c in command]
        proc = self.spawn("web", [*command, *gunicorn_args], env)
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: http_ok(f"{url}{ready_path}"), 60, "gunicorn", proc)
        return url

    def start_worker(self, **extra_env: str) -> Proc:
        """The Procfile's Celery worker; returns once it answers a ping."""
        env = {**self.env, **extra_env}
        command = procfile_command("worker", env)
        command = [c.replace("%h", "bench") for c in command]
        proc = self.spawn("worker", command, env)
        from config.celery import app

        hostname = command[command.index("--hostname") + 1]
        wait_for(
            lambda: any(hostname in r for r in app.control.ping([hostname], timeout=0.5)),
            90,
            "the Celery worker",
            proc,
        )
        return proc

    def start_fake_hub(self, *args: str) -> str:
        proc = self.spawn(
            "fake-hub", [PY, "-m", "tests.support.fake_hub", "--port", "0", *args], self.env
        )
        url = wait_for(lambda: _first_line(proc.log_path), 60, "the fake hub", proc)
        return url.strip()

    def close(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()
        for cleanup in reversed(self.cleanups):
            with contextlib.suppress(Exception):
                cleanup()
        if os.environ.get("BENCH_KEEP"):
            print(f"(kept {self.root})")
        else:
            shutil.rmtree(self.root, ignore_errors=True)
        with contextlib.suppress(Exception):
            self._purge_redis()

    def __enter__(self) -> Bench:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _first_line(path: Path) -> str | None:
    text = path.read_text(errors="replace") if path.exists() else ""
    for line in text.splitlines():
        if line.startswith("http://"):
            return line
    return None


# --- portal rows -----------------------------------------------------------------------------


def admin_user():
    """The first account (approved admin), with a fast hasher-independent password."""
    from accounts.models import User

    user = User.objects.filter(email="bench@example.com").first()
    if user is None:
        user = User.objects.create_superuser(
            username="bench", email="bench@example.com", password=PASSWORD
        )
    User.objects.filter(pk=user.pk).update(status="approved", is_staff=True, is_superuser=True)
    user.refresh_from_db()
    return user


def login_cookie(base_url: str) -> str:
    """Log in through the real allauth form; returns the `Cookie` header value."""
    import httpx

    with httpx.Client(base_url=base_url, follow_redirects=False, timeout=30) as client:
        page = client.get("/accounts/login/")
        token = client.cookies["csrftoken"]
        answer = client.post(
            "/accounts/login/",
            data={"login": "bench@example.com", "password": PASSWORD,
                  "csrfmiddlewaretoken": token},
            headers={"Referer": f"{base_url}/accounts/login/"},
        )  # fmt: skip
        if answer.status_code != 302 or "sessionid" not in client.cookies:
            raise RuntimeError(f"login failed: HTTP {answer.status_code} {page.status_code}")
        return "; ".join(f"{k}={v}" for k, v in client.cookies.items())


def install_model(repo_id: str, source: Path, cache: Path) -> Path:
    """Lay `source` out in the HF cache as `repo_id` (as tests/servers/helpers.py does)."""
    import hashlib

    sha = hashlib.sha1(repo_id.encode()).hexdigest()
    repo_dir = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo_dir / "snapshots" / sha
    shutil.copytree(source, snapshot, dirs_exist_ok=True)
    (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs" / "main").write_text(sha)
    return snapshot


# --- tiny models -----------------------------------------------------------------------------


def nonstop_tiny_model() -> Path:
    """The test harness's `text` tiny model with its EOS rewired to `<pad>` (never generated),
    so it repeats its sentence until `max_tokens`: 128-token replies for the benches.

    Built once into the bench cache from `tiny_model_cache("text")` (the weights are the same;
    only config.json, generation_config.json and the tokenizer's eos_token change)."""
    from tests.support.tiny_models import BUILDER_VERSION, PAD, tiny_model_cache

    dest = CACHE / f"tiny-nonstop-{BUILDER_VERSION}"
    if (dest / "config.json").exists():
        return dest
    source = tiny_model_cache("text")
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tiny-nonstop-", dir=CACHE))
    shutil.copytree(source, tmp, dirs_exist_ok=True)

    def edit(name: str, change: Callable[[dict], None]) -> None:
        data = json.loads((tmp / name).read_text())
        change(data)
        (tmp / name).write_text(json.dumps(data, indent=2))

    pad_id = json.loads((tmp / "config.json").read_text())["pad_token_id"]
    edit("config.json", lambda d: d.update(eos_token_id=pad_id))
    edit("generation_config.json", lambda d: d.update(eos_token_id=[pad_id]))
    edit("tokenizer_config.json", lambda d: d.update(eos_token=PAD))
    edit("special_tokens_map.json", lambda d: d.update(eos_token=PAD))
    if dest.exists():
        shutil.rmtree(dest)
    os.replace(tmp, dest)
    return dest
