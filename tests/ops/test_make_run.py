"""`make run` says where it really serves, and two portals on one machine keep their own
gunicorn control sockets: each under its own data directory (the Procfile's web line), so
stopping one never deletes the other's."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

from tests.servers.helpers import wait_for
from tests.support.front import _free_port, procfile_web_command, start_gunicorn, wait_listening
from tests.support.workers import process_env

ROOT = Path(__file__).resolve().parents[2]


def _bind(words: list[str]) -> str:
    return words[words.index("--bind") + 1]


def make_address(**env: str) -> str:
    variables = {k: v for k, v in os.environ.items() if k not in {"PORTAL_BIND", "MAKEFLAGS"}}
    done = subprocess.run(
        ["make", "-s", "--no-print-directory", "address"],
        cwd=ROOT, env={**variables, **env}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture
def no_bind_in_dot_env():
    dot_env = ROOT / ".env"
    if dot_env.exists() and "PORTAL_BIND" in dot_env.read_text():
        pytest.skip(".env sets PORTAL_BIND: `make run` prints that one")


def test_make_run_prints_the_address_of_portal_bind(no_bind_in_dot_env):
    assert "MLX Portal: http://127.0.0.1:8123 " in make_address(PORTAL_BIND="127.0.0.1:8123")


def test_make_run_prints_the_procfiles_default_address_without_portal_bind(no_bind_in_dot_env):
    assert f"MLX Portal: http://{_bind(procfile_web_command())} " in make_address()


def test_the_control_socket_is_under_the_data_directory():
    words = procfile_web_command(MLX_PORTAL_DATA_DIR="/srv/portal-a")
    assert words[words.index("--control-socket") + 1] == "/srv/portal-a/gunicorn.ctl"
    assert "var/gunicorn.ctl" in procfile_web_command()  # the settings' default ./var


def _answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        try:
            client.connect(str(path))
        except OSError:
            return False
        return True


@pytest.mark.slow
@pytest.mark.django_db
def test_stopping_one_portal_leaves_the_other_portals_control_socket(tmp_path):
    portals = []
    try:
        for name in ("a", "b"):
            data_dir = tmp_path / name
            data_dir.mkdir()
            port = _free_port()
            web = start_gunicorn(
                data_dir, port, process_env(MLX_PORTAL_DATA_DIR=str(data_dir)), WEB_WORKERS="1"
            )
            portals.append(web)
            wait_listening(web, "127.0.0.1", port)
            wait_for(lambda d=data_dir: _answers(d / "gunicorn.ctl"), 30, what="its socket")
        portals[0].stop()
        assert not (tmp_path / "a" / "gunicorn.ctl").exists()  # it removed its own
        assert _answers(tmp_path / "b" / "gunicorn.ctl")  # and left the other's
    finally:
        for web in portals:
            web.stop()
