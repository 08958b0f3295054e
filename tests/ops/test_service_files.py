"""The service files in deploy/ agree with the front: every way of starting the web tier keeps
gunicorn on 127.0.0.1:8000, where deploy/nginx/mlx-portal.conf passes requests, so that no
client reaches gunicorn around the front. (The front itself is run in test_front.py.)"""

import plistlib
import re
from pathlib import Path

import pytest

from tests.support.front import SHIPPED_UPSTREAM, SITE_CONF, procfile_web_command

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
UPSTREAM = SHIPPED_UPSTREAM.split()[1].rstrip(";")


def _bind(words: list[str]) -> str:
    return words[words.index("--bind") + 1]


def test_the_front_passes_to_gunicorn_on_loopback():
    assert SITE_CONF.read_text().count(SHIPPED_UPSTREAM) == 1
    assert UPSTREAM == "127.0.0.1:8000"


@pytest.mark.parametrize(
    "plist", sorted((DEPLOY / "launchd").glob("*.plist")), ids=lambda p: p.name
)
def test_every_launchd_plist_is_a_valid_property_list(plist):
    with plist.open("rb") as handle:
        assert plistlib.load(handle)["Label"] == plist.stem


def test_the_web_tier_binds_where_the_front_passes_in_every_service_file():
    with (DEPLOY / "launchd" / "com.mlxportal.web.plist").open("rb") as handle:
        launchd = plistlib.load(handle)["ProgramArguments"]
    unit = (DEPLOY / "systemd" / "mlx-portal-web.service").read_text()
    systemd = re.search(r"^ExecStart=(.*?)(?<!\\)$", unit, re.M | re.S)[1].replace("\\\n", " ")
    assert _bind(launchd) == UPSTREAM
    assert _bind(systemd.split()) == UPSTREAM
    assert _bind(procfile_web_command()) == UPSTREAM  # make run, and PORTAL_BIND's default
    assert "nginx.service" in unit  # starting the web tier starts the front


def test_every_service_file_keeps_gunicorns_control_socket_in_the_data_directory():
    with (DEPLOY / "launchd" / "com.mlxportal.web.plist").open("rb") as handle:
        launchd = plistlib.load(handle)["ProgramArguments"]
    unit = (DEPLOY / "systemd" / "mlx-portal-web.service").read_text()
    systemd = re.search(r"^ExecStart=(.*?)(?<!\\)$", unit, re.M | re.S)[1].replace("\\\n", " ")
    for words in (launchd, systemd.split()):
        assert words[words.index("--control-socket") + 1] == "/opt/mlx-portal/var/gunicorn.ctl"
