"""A host's facts and heartbeat: platform detection, online/offline, what pages show."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from models_catalog.hosts.facts import heard_ago, platform_label
from models_catalog.hosts.heartbeat import Heartbeat
from models_catalog.models import Host
from servers.models import ServerInstance, ServerProfile, State
from tests.servers.helpers import install_model


@pytest.mark.parametrize(
    ("system", "metal", "cuda", "label"),
    [
        ("Darwin", True, False, "macOS Metal"),
        ("Darwin", False, False, "macOS CPU"),
        ("Linux", False, False, "Linux CPU"),
        ("Linux", False, True, "Linux CUDA"),
        ("FreeBSD", False, False, "FreeBSD CPU"),
    ],
)
def test_the_platform_says_where_mlx_computes(system, metal, cuda, label):
    assert platform_label(system, metal=metal, cuda=cuda) == label


@pytest.mark.parametrize(
    ("seconds", "says"),
    [(0, "0 seconds"), (1, "1 second"), (49, "49 seconds"), (-3, "0 seconds"),
     (60, "1\xa0minute"), (3 * 3600 + 60, "3\xa0hours, 1\xa0minute")],
)  # fmt: skip
def test_a_host_heard_under_a_minute_ago_is_told_in_seconds(seconds, says):
    now = timezone.now()
    assert heard_ago(now - timedelta(seconds=seconds), now) == says
    assert heard_ago(None, now) == ""


def test_a_heartbeat_registers_the_host_with_its_facts_and_models(db, settings, tmp_path):
    settings.HOST_NAME = "gamma"
    settings.HF_HUB_CACHE = tmp_path / "hub"
    settings.HOST_WEB_URL = "http://gamma.lan:8000"
    install_model(settings.HF_HUB_CACHE, "acme/tiny-b")
    Heartbeat("gamma", 5.0).beat()
    host = Host.objects.get(name="gamma")
    assert host.is_online and host.heartbeat_age < 60
    assert host.memory_total > 0 and host.disk_free > 0 and host.mlx_lm_version
    assert host.hf_cache_dir == str(tmp_path / "hub")
    assert host.web_url == "http://gamma.lan:8000"
    assert [m["repo_id"] for m in host.local_models] == ["acme/tiny-b"]


def test_a_host_silent_past_the_threshold_is_offline(db, settings):
    settings.HOST_OFFLINE_AFTER = 30.0
    now = timezone.now()
    assert Host(name="a", last_heartbeat=now - timedelta(seconds=10)).is_online
    assert not Host(name="b", last_heartbeat=now - timedelta(seconds=31)).is_online
    assert not Host(name="c").is_online  # never reported


def test_another_hosts_models_are_the_ones_its_worker_reported(db, settings):
    settings.HOST_NAME = "alpha"
    beta = Host.objects.create(name="beta", local_models=[{"repo_id": "acme/x", "size": 3}])
    assert beta.model_ids() == ["acme/x"]


def test_servers_of_an_offline_host_show_unknown_on_the_tiles(admin_client, admin_member):
    beta = Host.objects.create(name="beta", last_heartbeat=timezone.now() - timedelta(hours=1))
    profile = ServerProfile.objects.create(
        name="Far", slug="far", model_id="a/b", host=beta, port=8120, owner=admin_member
    )
    ServerInstance.objects.create(profile=profile, state=State.RUNNING, pid=1)
    page = admin_client.get("/servers/").content.decode()
    assert 'data-state="unknown" data-host="beta"' in page
    assert "Last known state: running" in page
    assert "(last heard 1\xa0hour ago)" in page
    assert ">Start<" not in page and ">Restart<" not in page
    Host.objects.filter(pk=beta.pk).update(last_heartbeat=timezone.now())
    page = admin_client.get("/servers/", headers={"HX-Request": "true"}).content.decode()
    assert 'data-state="running" data-host="beta"' in page


def test_every_page_shows_a_server_of_an_offline_host_as_unknown(admin_client, admin_member):
    beta = Host.objects.create(name="beta", last_heartbeat=timezone.now() - timedelta(hours=1))
    profile = ServerProfile.objects.create(
        name="Far", slug="far", model_id="a/b", host=beta, port=8120, owner=admin_member
    )
    ServerInstance.objects.create(profile=profile, state=State.RUNNING, pid=1)
    chat = admin_client.get("/servers/chat/", {"profile": "far"}).content.decode()
    assert 'data-state="unknown"' in chat and ">Far — unknown</option>" in chat
    assert 'data-testid="server-state">unknown<' in chat
    log = admin_client.get("/servers/far/log/").content.decode()
    assert 'state <span class="badge warn">unknown</span>' in log
    picker = admin_client.get("/servers/picker/", {"q": "Far"}).content.decode()
    assert ">unknown</span>" in picker and ">running</span>" not in picker


def test_the_hosts_page_lists_hosts_for_admins_and_refreshes_its_rows(admin_client, member):
    now = timezone.now()
    Host.objects.create(name="alpha", last_heartbeat=now, memory_total=64 * 1024**3,
                        platform="macOS Metal", mlx_version="0.32.4")  # fmt: skip
    Host.objects.create(name="beta", last_heartbeat=now - timedelta(seconds=49))
    page = admin_client.get("/servers/hosts/").content.decode()
    assert 'id="host-alpha" data-state="online"' in page
    assert 'id="host-beta" data-state="offline"' in page
    assert re.search(r"\b49 seconds ago|\b50 seconds ago", page)  # not "0 minutes ago"
    assert "macOS Metal" in page and "64.0" in page and 'hx-trigger="every 5s' in page
    rows = admin_client.get("/servers/hosts/", headers={"HX-Request": "true"}).content.decode()
    assert 'id="host-alpha"' in rows and "<html" not in rows
    member_client = Client()
    member_client.force_login(member)
    assert member_client.get("/servers/hosts/").status_code == 403
