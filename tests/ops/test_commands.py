"""Operators' management commands: hosts, servers, stop_servers, prune_downloads, createadmin."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.contrib.auth import authenticate
from django.core.management import CommandError, call_command
from django.utils import timezone

from accounts.models import User
from models_catalog.models import Download, DownloadAttempt, Host
from servers.models import ServerInstance, ServerProfile, State

GIB = 1024**3


def run(*args, **options) -> str:
    out = StringIO()
    call_command(*args, stdout=out, **options)
    return out.getvalue()


@pytest.fixture
def two_hosts(db):
    now = timezone.now()
    alpha = Host.objects.create(
        name="alpha", last_heartbeat=now, memory_total=64 * GIB, memory_available=40 * GIB,
        disk_free=500 * GIB, platform="macOS Metal", mlx_version="0.32.4",
        mlx_lm_version="0.32.2",
    )  # fmt: skip
    beta = Host.objects.create(
        name="beta", last_heartbeat=now - timedelta(minutes=10), memory_total=32 * GIB
    )
    return alpha, beta


@pytest.fixture
def profiles(two_hosts, member):
    alpha, beta = two_hosts
    made = {}
    for name, host, port, state in [
        ("a-chat", alpha, 8101, State.RUNNING),
        ("a-idle", alpha, 8102, State.STOPPED),
        ("b-chat", beta, 8101, State.RUNNING),
    ]:
        profile = ServerProfile.objects.create(
            name=name, slug=name, model_id="acme/tiny", host=host, port=port, owner=member
        )
        ServerInstance.objects.create(profile=profile, state=state, pid=4242, port=port)
        made[name] = profile
    return made


def test_hosts_lists_each_host_with_state_heartbeat_memory_and_servers(profiles):
    out = run("hosts")
    alpha_line = next(line for line in out.splitlines() if line.startswith("alpha"))
    beta_line = next(line for line in out.splitlines() if line.startswith("beta"))
    assert "online" in alpha_line and "macOS Metal" in alpha_line
    assert "40.0 GB/64.0 GB" in alpha_line
    assert "2 (1 running)" in alpha_line
    assert "offline" in beta_line and "10 min ago" in beta_line
    assert "1 (1 running)" in beta_line


def test_servers_lists_every_server_per_host_and_shows_unknown_on_an_offline_host(profiles):
    out = run("servers")
    lines = {line.split()[1]: line for line in out.splitlines()[1:]}
    assert lines["a-chat"].startswith("alpha") and " running " in lines["a-chat"]
    assert " stopped " in lines["a-idle"]
    assert "unknown (host offline; last known running)" in lines["b-chat"]
    only_beta = run("servers", host="beta")
    assert "b-chat" in only_beta and "a-chat" not in only_beta


def test_servers_and_stop_servers_refuse_an_unknown_host(db):
    with pytest.raises(CommandError, match="No host named 'nowhere'"):
        run("servers", host="nowhere")
    with pytest.raises(CommandError, match="No host named 'nowhere'"):
        run("stop_servers", host="nowhere")


def test_stop_servers_stops_only_that_hosts_servers_through_its_queue(
    profiles, django_capture_on_commit_callbacks, settings
):
    import redis

    client = redis.Redis.from_url(settings.REDIS_URL)
    client.delete("host.alpha", "host.beta")
    with django_capture_on_commit_callbacks(execute=True):
        out = run("stop_servers", host="alpha")
    assert "Stopping 1 server(s) on alpha: a-chat" in out
    states = dict(ServerInstance.objects.values_list("profile__slug", "state"))
    assert states == {"a-chat": "stopping", "a-idle": "stopped", "b-chat": "running"}
    assert ServerInstance.objects.get(profile__slug="a-chat").desired_state == "stopped"
    assert client.llen("host.alpha") == 1 and client.llen("host.beta") == 0
    client.delete("host.alpha", "host.beta")
    assert "No server is running on alpha" in run("stop_servers", host="alpha")


def test_prune_downloads_removes_only_finished_records_older_than_the_cutoff(two_hosts):
    alpha, _ = two_hosts
    old = timezone.now() - timedelta(days=40)

    def make(repo, state, finished_at):
        download = Download.objects.create(
            repo_id=repo, revision="c" * 40, host=alpha, state=state, finished_at=finished_at
        )
        DownloadAttempt.objects.create(download=download, owner="w")
        return download

    make("acme/old-done", "completed", old)
    make("acme/old-failed", "failed", old)
    make("acme/old-cancelled", "cancelled", old)
    make("acme/old-deleted", "deleted", old)  # completed, then deleted from the cache
    make("acme/recent-done", "completed", timezone.now() - timedelta(days=1))
    make("acme/paused", "paused", None)

    assert "4 finished download record(s) would be removed" in run(
        "prune_downloads", older_than=30, dry_run=True
    )
    assert Download.objects.count() == 6
    assert "Removed 4 finished download record(s)" in run("prune_downloads", older_than=30)
    assert sorted(Download.objects.values_list("repo_id", flat=True)) == [
        "acme/paused",
        "acme/recent-done",
    ]
    assert DownloadAttempt.objects.count() == 2
    with pytest.raises(CommandError):
        run("prune_downloads", older_than=-1)


def test_createadmin_creates_an_approved_admin_who_can_log_in(db, monkeypatch):
    make_user = User.objects.create_user("someone", "someone@example.com", "x")  # not first
    assert make_user.status == "pending"
    monkeypatch.setenv("ADMIN_PW", "a-long-and-unusual-passphrase")
    out = run("createadmin", email="Boss@Example.com", password_from_env="ADMIN_PW")
    assert "Created admin boss@example.com" in out
    boss = User.objects.get(email="boss@example.com")
    assert boss.is_active_admin and boss.approved_at is not None
    assert authenticate(username="boss", password="a-long-and-unusual-passphrase") == boss
    from allauth.account.models import EmailAddress

    assert EmailAddress.objects.filter(user=boss, email="boss@example.com", verified=True).exists()


def test_createadmin_is_idempotent_and_promotes_an_existing_user(make_user):
    existing = make_user("carol@example.com", status="pending")
    assert "Updated admin carol@example.com" in run("createadmin", email="carol@example.com")
    assert "Updated admin carol@example.com" in run("createadmin", email="carol@example.com")
    existing.refresh_from_db()
    assert existing.is_active_admin and existing.has_usable_password()
    assert User.objects.filter(email="carol@example.com").count() == 1


def test_createadmin_without_password_makes_an_account_with_none(db):
    out = run("createadmin", email="ops@example.com")
    assert "no password yet" in out
    assert not User.objects.get(email="ops@example.com").has_usable_password()


def test_createadmin_refuses_bad_input_with_a_clear_message(db, monkeypatch):
    with pytest.raises(CommandError, match="not a valid email"):
        run("createadmin", email="not-an-email")
    with pytest.raises(CommandError, match="EMPTY_VAR is not set"):
        run("createadmin", email="a@example.com", password_from_env="EMPTY_VAR")
    monkeypatch.setenv("WEAK", "123")
    with pytest.raises(CommandError, match="The password is refused"):
        run("createadmin", email="a@example.com", password_from_env="WEAK")
    assert not User.objects.filter(email="a@example.com").exists()
