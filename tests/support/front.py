"""The portal as shipped for a host: gunicorn started from the Procfile's `web` line, behind
nginx running the shipped deploy/nginx/mlx-portal.conf. Both run as the current user, on free
ports, in their own sessions; nginx under a temporary prefix (`-p`, `-c`, `daemon off`).

No Django imports here: the caller passes the environment the portal processes need.
"""

from __future__ import annotations

import contextlib
import grp
import ipaddress
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SITE_CONF = ROOT / "deploy" / "nginx" / "mlx-portal.conf"
PROCFILE = ROOT / "Procfile"

# What the shipped file says, and what a test puts in its place.
SHIPPED_LISTEN = "    listen 80 default_server;\n    listen [::]:80 default_server;\n"
SHIPPED_UPSTREAM = "    server 127.0.0.1:8000;\n"


def nginx_executable() -> str:
    """nginx's path; a test fails when apt-get could have installed it (`make test` does), and
    is skipped, saying why, only where neither is found."""
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/opt/homebrew/bin/nginx") if Path(p).exists()), None
    )
    if found:
        return found
    if shutil.which("apt-get"):
        pytest.fail("nginx is not installed: `make test` installs it (apt-get install nginx).")
    pytest.skip("needs nginx (macOS: brew install nginx; Debian: apt-get install nginx)")


def lan_address() -> str | None:
    """An address of this machine other than loopback (the one its default route leaves from),
    or None. Nothing is sent: a UDP socket's connect only picks the route."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))
        except OSError:
            return None
        address = probe.getsockname()[0]
    return None if ipaddress.ip_address(address).is_loopback else address


def procfile_web_command(**variables: str) -> list[str]:
    """The Procfile's `web` command, its `${VAR:-default}`s filled from `variables` (else the
    default), run by this Python's gunicorn."""
    line = next(
        line.partition(":")[2] for line in PROCFILE.read_text().splitlines()
        if line.startswith("web:")
    )  # fmt: skip

    def fill(match: re.Match) -> str:
        return variables.get(match[1], match[2] or "")

    words = shlex.split(re.sub(r"\$\{([A-Z_0-9]+)(?::-([^}]*))?\}", fill, line))
    assert words[0] == "gunicorn", f"the Procfile's web tier is not gunicorn: {line}"
    return [sys.executable, "-m", "gunicorn", *words[1:]]


def render_site(listen: list[str], upstream: str) -> str:
    """The shipped server block, listening on `listen` and passing to `upstream`."""
    text = SITE_CONF.read_text()
    for shipped in (SHIPPED_LISTEN, SHIPPED_UPSTREAM):
        assert text.count(shipped) == 1, (
            f"{SITE_CONF.relative_to(ROOT)} no longer contains {shipped!r} once: "
            "update tests/support/front.py to match"
        )
    text = text.replace(
        SHIPPED_LISTEN, "".join(f"    listen {a} default_server;\n" for a in listen)
    )
    return text.replace(SHIPPED_UPSTREAM, f"    server {upstream};\n")


def _main_conf(prefix: Path) -> str:
    """What the distribution's nginx.conf gives the site file, with every path under `prefix`."""
    user = ""
    if os.geteuid() == 0:  # nginx runs its workers as `nobody` unless told otherwise
        user = f"user {pwd.getpwuid(0).pw_name} {grp.getgrgid(os.getgid()).gr_name};\n"
    temp = "".join(
        f"    {kind}_temp_path {prefix / kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return (
        f"{user}daemon off;\nworker_processes 1;\npid {prefix / 'nginx.pid'};\n"
        f"error_log {prefix / 'error.log'} info;\n"
        "events { worker_connections 512; }\n"
        f"http {{\n    access_log {prefix / 'access.log'};\n{temp}"
        f"    include {prefix / 'mlx-portal.conf'};\n}}\n"
    )


@dataclass
class Process:
    """A process of the test leading its own session, with its output in `log_path`."""

    process: subprocess.Popen
    log_path: Path

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
        if self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def _spawn(command: list[str], log_path: Path, env: dict[str, str] | None = None) -> Process:
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    return Process(process, log_path)


_collected: set[str] = set()


def collect_static(env: dict[str, str]) -> None:
    """`manage.py collectstatic` once per data directory and test session: pages name their
    static files through WhiteNoise's manifest, as in production."""
    if env["MLX_PORTAL_DATA_DIR"] in _collected:
        return
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"],
        cwd=ROOT, env=env, check=True, timeout=300,
    )  # fmt: skip
    _collected.add(env["MLX_PORTAL_DATA_DIR"])


def start_gunicorn(directory: Path, port: int, env: dict[str, str], **variables: str) -> Process:
    """gunicorn as the Procfile starts it, on 127.0.0.1:`port`; its `${MLX_PORTAL_DATA_DIR}`
    (the control socket's folder) from `env`, as the shell honcho runs it in expands it."""
    if "MLX_PORTAL_DATA_DIR" in env:
        variables.setdefault("MLX_PORTAL_DATA_DIR", env["MLX_PORTAL_DATA_DIR"])
    command = procfile_web_command(PORTAL_BIND=f"127.0.0.1:{port}", **variables)
    return _spawn(command, directory / "gunicorn.log", env)


def start_nginx(directory: Path, listen: list[str], upstream: str) -> Process:
    """nginx with the shipped site file, under the prefix `directory`/nginx."""
    prefix = directory / "nginx"
    prefix.mkdir(parents=True, exist_ok=True)
    (prefix / "mlx-portal.conf").write_text(render_site(listen, upstream))
    (prefix / "nginx.conf").write_text(_main_conf(prefix))
    executable = nginx_executable()
    command = [executable, "-p", str(prefix), "-c", str(prefix / "nginx.conf"),
               "-e", str(prefix / "error.log")]  # fmt: skip
    checked = subprocess.run([*command, "-t"], capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, f"nginx -t refused the shipped config:\n{checked.stderr}"
    return _spawn(command, prefix / "nginx.out")


def wait_listening(process: Process, host: str, port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.process.poll() is not None:
            raise RuntimeError(f"exited early:\n{process.log_tail()}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s:\n{process.log_tail()}")


@dataclass(frozen=True)
class ShippedPortal:
    """A running web tier as shipped: `url` is the front's (nginx), `web_port` gunicorn's."""

    front_port: int
    web_port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.front_port}"


@contextlib.contextmanager
def shipped_portal(
    directory: Path, env: dict[str, str], *, lan: str | None = None, **procfile: str
) -> Iterator[ShippedPortal]:
    """gunicorn from the Procfile (its `${VAR}`s from `procfile`, e.g. WEB_THREADS="4") behind
    nginx with the shipped config, on free ports of 127.0.0.1 (and of `lan`, when given);
    both stopped on exit. `env` is the portal processes' environment (tests/support/workers.py
    process_env)."""
    nginx_executable()  # fails or skips, saying why, before anything starts
    collect_static(env)
    web_port, front_port = _free_port(), _free_port()
    web = start_gunicorn(directory, web_port, env, **procfile)
    listen = [f"127.0.0.1:{front_port}", *([f"{lan}:{front_port}"] if lan else [])]
    front = start_nginx(directory, listen, upstream=f"127.0.0.1:{web_port}")
    try:
        wait_listening(web, "127.0.0.1", web_port)
        wait_listening(front, "127.0.0.1", front_port)
        yield ShippedPortal(front_port=front_port, web_port=web_port)
    finally:
        front.stop()
        web.stop()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
