"""Real Celery worker processes for tests: started against the test database and Redis."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parents[2]


def test_database_url() -> str:
    """A DATABASE_URL naming the database the tests run on (the test copy, not the real one)."""
    db = connection.settings_dict
    if db["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{db['NAME']}"
    user = db.get("USER") or ""
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    auth = f"{user}{password}@" if user else ""
    port = f":{db['PORT']}" if db.get("PORT") else ""
    return f"postgres://{auth}{db.get('HOST') or '127.0.0.1'}{port}/{db['NAME']}"


def process_env(**extra: str) -> dict[str, str]:
    """The environment a portal process needs to see what the test process sees."""
    env = dict(os.environ)
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "config.test_settings",
            "DATABASE_URL": test_database_url(),
            "REDIS_URL": settings.REDIS_URL,
            "MLX_PORTAL_DATA_DIR": str(settings.DATA_DIR),
            "HF_ENDPOINT": settings.HF_ENDPOINT,
            "HF_HUB_CACHE": str(settings.HF_HUB_CACHE),
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra)
    return env


@dataclass
class WorkerProcess:
    """A `celery worker` subprocess with its own log file."""

    hostname: str
    queues: list[str]
    log_path: Path
    env_extra: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen | None = None

    def start(self) -> WorkerProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        command = [
            sys.executable, "-m", "celery", "-A", "config", "worker",
            "--loglevel", "INFO", "--pool", "threads", "--concurrency", "4",
            "--queues", ",".join(self.queues), "--hostname", self.hostname,
            "--without-gossip", "--without-mingle",
        ]  # fmt: skip
        self.process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=process_env(**self.env_extra),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Wait until the worker answers a broadcast ping by its own name."""
        from config.celery import app

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited early:\n{self.log_tail()}")
            replies = app.control.ping(destination=[self.hostname], timeout=0.5)
            if any(self.hostname in reply for reply in replies):
                return
        raise TimeoutError(f"worker {self.hostname} not ready in {timeout}s:\n{self.log_tail()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, sig)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def kill(self) -> None:
        """SIGKILL the whole worker process group, as a crash or `kill -9` would."""
        self.stop(signal.SIGKILL)

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def new_worker(tmp_dir: Path, queues: list[str] | None = None, **env_extra: str) -> WorkerProcess:
    name = f"test-{uuid.uuid4().hex[:8]}@localhost"
    return WorkerProcess(
        hostname=name,
        queues=queues or ["default", f"host.{settings.HOST_NAME}"],
        log_path=tmp_dir / f"{name}.log",
        env_extra=env_extra,
    )
