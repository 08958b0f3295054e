"""Fixtures for the reliability tests: an own Redis server, Celery pointed at it, servers."""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import redis

from tests.servers.conftest import (  # noqa: F401 - fixtures shared with the servers tests
    api_key,
    hf_cache,
    make_profile,
    serve_profile,
    served_model,
    server_reaper,
)
from tests.support.mlx_server import free_port, model_servers


@dataclass
class OwnRedis:
    """A `redis-server` subprocess of this test, on a free port, with no persistence."""

    port: int
    log_path: Path
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> OwnRedis:
        executable = shutil.which("redis-server")
        if executable is None:
            pytest.fail("redis-server is not installed")
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [executable, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited:\n{self.log_path.read_text()}")
            if self.answers():
                return self
            time.sleep(0.05)
        raise TimeoutError(f"redis-server on {self.port} did not answer in {timeout}s")

    def answers(self) -> bool:
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5, socket_timeout=0.5)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


def point_celery_at(url: str) -> None:
    """Make this process's Celery app publish to (and ping through) the broker at `url`."""
    from kombu import pools

    from config.celery import app

    app.conf.broker_url = url
    # kombu keeps connection and producer pools per broker URL in global registries and hands
    # the same (possibly closed or emptied) objects back when a URL is used again: drop them
    # all, so the next publish or ping builds fresh ones for `url`.
    pools.reset()
    app._pool = None
    app.amqp._producer_pool = None


@pytest.fixture
def own_redis(settings, tmp_path):
    """A Redis server of this test only; the settings, the workers started afterwards and
    this process's Celery app all use it. Stopped (and Celery pointed back) at teardown."""
    from config.celery import app

    previous = app.conf.broker_url
    server = OwnRedis(port=free_port(), log_path=tmp_path / "redis.log").start()
    settings.REDIS_URL = server.url
    settings.CELERY_BROKER_URL = server.url
    point_celery_at(server.url)
    try:
        yield server
    finally:
        point_celery_at(previous)
        server.stop()


def servers_on_port(port: int) -> list[psutil.Process]:
    """Live model server processes listening on `port` (by their command line)."""
    return model_servers(port)


def all_mlx_servers() -> list[psutil.Process]:
    return model_servers()


def start_beat(tmp_path: Path, **env: str) -> subprocess.Popen:
    """A real `celery beat` of the test, on the test's broker, logging to `tmp_path`."""
    import sys

    from tests.support.workers import ROOT, process_env

    log = (tmp_path / "beat.log").open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "config", "beat", "--loglevel", "INFO",
         "--schedule", str(tmp_path / "celerybeat-schedule")],
        cwd=ROOT, env=process_env(**env), stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    log.close()
    return process


def stop_process(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


_collected: set = set()


def start_web(tmp_path: Path, port: int, workers: int = 1, threads: int = 8) -> subprocess.Popen:
    """The Procfile's web tier (gunicorn gthread; the Procfile runs 2 x 32), in its own session."""
    import sys

    from django.conf import settings

    from tests.support.workers import ROOT, process_env

    # As in production (make run): pages name static files through WhiteNoise's manifest,
    # collected once per test session (a manifest of an older checkout may lack new files).
    if settings.STATIC_ROOT not in _collected:
        _collected.add(settings.STATIC_ROOT)
        subprocess.run(
            [sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"],
            cwd=ROOT, env=process_env(), check=True, timeout=300,
        )  # fmt: skip
    log = (tmp_path / "web.log").open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "config.wsgi", "--bind", f"127.0.0.1:{port}",
         "--worker-class", "gthread", "--workers", str(workers), "--threads", str(threads),
         "--timeout", "0",
         "--access-logfile", "-"],
        cwd=ROOT, env=process_env(), stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    log.close()
    return process


def kill_group(process: subprocess.Popen) -> None:
    """SIGKILL a process and everything in its session (gunicorn's workers too)."""
    import contextlib
    import os
    import signal

    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(10)
