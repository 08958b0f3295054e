"""The Servers page and its polled tiles partial."""

import re
from datetime import timedelta

import psutil
import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from servers.models import ServerInstance, State, UsageRecord
from servers.supervision import monitor


def _tiles_queries(client, **headers) -> tuple[int, int]:
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(reverse("servers:list"), headers={"HX-Request": "true", **headers})
    assert response.status_code in (200, 204)
    return len(ctx.captured_queries), response.status_code


def _poll(client, version: str | None = None, **params):
    headers = {"HX-Request": "true"}
    if version is not None:
        headers["X-Tiles-Version"] = version
    return client.get(reverse("servers:list"), params, headers=headers)


def _version(response) -> str:
    match = re.search(r'data-tiles-version="([0-9a-f]+)"', response.content.decode())
    assert match, response.content[:300]
    return match.group(1)


def _add_usage(profile, **fields):
    now = timezone.now()
    return UsageRecord.objects.create(
        user=profile.owner, profile=profile, profile_name=profile.name, host=profile.host,
        source="api", endpoint="chat/completions", completion_tokens=100, prompt_tokens=10,
        generation_ms=1000.0, ttft_ms=50.0, duration_ms=1050.0, status="ok",
        started_at=now - timedelta(minutes=1), **fields,
    )  # fmt: skip


def test_tiles_partial_query_count_does_not_grow_with_servers(member_client, make_profile):
    """Counted three ways: a usage record was just added, nothing was, and a poll answered
    204. Running servers here point at this process, measured as their host's worker
    measures them (monitor.sample_servers): their figures add no query."""
    me = psutil.Process()

    def counts(profile) -> list[tuple[int, int]]:
        _add_usage(profile)
        added = _tiles_queries(member_client)
        same = _tiles_queries(member_client)
        version = _version(_poll(member_client))
        unchanged = _tiles_queries(member_client, **{"X-Tiles-Version": version})
        return [added, same, unchanged]

    _poll(member_client)  # this process's usage figures loaded: a poll reads what is new
    one = counts(make_profile("One"))
    assert [status for _, status in one] == [200, 200, 204]
    assert one[0][0] == one[1][0]  # a new record costs no query more than none
    for n in range(8):
        profile = make_profile(f"Server {n}")
        if n % 2:
            fields = {
                "state": State.RUNNING,
                "pid": me.pid,
                "process_create_time": me.create_time(),
            }
        else:
            fields = {"state": State.FAILED, "reason": "boom", "log_tail": "Traceback…"}
        ServerInstance.objects.filter(pk=profile.get_instance().pk).update(**fields)
        _add_usage(profile)
    assert monitor.sample_servers() == 4
    assert counts(profile) == one
    html = _poll(member_client).content.decode()
    assert html.count('data-testid="rss"') == 4 and html.count('data-testid="usage"') == 9


def test_a_poll_showing_the_current_tiles_gets_no_content(member_client, make_profile):
    make_profile("Alpha")
    first = _poll(member_client)
    version = _version(first)
    again = _poll(member_client, version)
    assert again.status_code == 204 and again.content == b""  # htmx swaps nothing on 204
    assert _poll(member_client, "0" * 24).status_code == 200  # another version: the tiles
    page = member_client.get(reverse("servers:list")).content.decode()
    assert f'data-tiles-version="{version}"' in page  # the page's first poll can be a 204 too
    filtered = _poll(member_client, version, q="nothing-matches")  # the filter is in the version
    assert filtered.status_code == 200 and "No profile matches" in filtered.content.decode()


def test_a_state_change_shows_on_the_next_poll(member_client, make_profile):
    profile = make_profile("Alpha")
    version = _version(_poll(member_client))
    ServerInstance.objects.filter(pk=profile.get_instance().pk).update(
        state=State.FAILED, reason="The process exited with code 3", exit_code=3
    )  # an update() that no model signal sees
    response = _poll(member_client, version)
    assert response.status_code == 200
    assert 'data-state="failed"' in response.content.decode()
    assert "exited with code 3" in response.content.decode()
    assert _version(response) != version


def test_a_running_server_shows_the_port_it_uses_until_a_restart_moves_it(
    member_client, make_profile
):
    profile = make_profile("Alpha", port=8100)
    ServerInstance.objects.filter(pk=profile.get_instance().pk).update(
        state=State.RUNNING, port=8100
    )
    assert "port 8100 ·" in _poll(member_client).content.decode()
    profile.port = 8110  # edited while it runs
    profile.save()
    page = _poll(member_client).content.decode()
    assert "port 8100, 8110 after a restart" in page and "port 8110 ·" not in page
    ServerInstance.objects.filter(pk=profile.get_instance().pk).update(state=State.STOPPED)
    assert "port 8110 ·" in _poll(member_client).content.decode()  # stopped: the profile's


def test_a_restarting_tile_keeps_the_rows_of_a_running_one(member_client, make_profile):
    # The same rows in every live state, "—" until measured: a restart does not resize the
    # tile, so the page below it does not jump.
    profile = make_profile("Alpha")
    instance = profile.get_instance()

    def rows(state) -> list[str]:
        ServerInstance.objects.filter(pk=instance.pk).update(
            state=state, pid=4242, started_at=timezone.now()
        )
        tile = _poll(member_client).content.decode().split('id="server-alpha"')[1]
        return re.findall(r"<dt>(\w+)</dt>", tile.split("</article>")[0])

    assert rows(State.RUNNING) == rows(State.RESTARTING) == rows(State.STARTING)
    assert rows(State.RUNNING) == ["Uptime", "Memory", "CPU", "PID"]
    assert rows(State.STOPPED) == []


def test_a_new_usage_record_shows_on_the_next_poll(member_client, make_profile):
    profile = make_profile("Alpha")
    _add_usage(profile)
    response = _poll(member_client)
    assert re.search(r'data-testid="requests">1<', response.content.decode())
    _add_usage(profile)  # right away: each poll reads the records added since the last
    response = _poll(member_client, _version(response))
    assert response.status_code == 200
    assert re.search(r'data-testid="requests">2<', response.content.decode())


def test_the_owners_buttons_are_not_served_to_another_member(
    member_client, member, make_profile, make_user, client
):
    profile = make_profile("Mine", owner=member)
    edit = reverse("servers:profile-edit", args=[profile.slug])
    owners = _poll(member_client)
    assert edit in owners.content.decode()
    other = Client()
    other.force_login(make_user("other@example.com"))
    theirs = _poll(other, _version(owners))  # the owner's version: not theirs
    assert theirs.status_code == 200
    assert edit not in theirs.content.decode()
    assert f'id="server-{profile.slug}"' in theirs.content.decode()
    assert edit in _poll(member_client).content.decode()  # and the owner still has them


def test_tiles_partial_is_only_the_tiles(member_client, make_profile):
    make_profile("Alpha")
    html = member_client.get(reverse("servers:list"), headers={"HX-Request": "true"}).content
    html = html.decode()
    assert 'id="server-alpha"' in html
    assert "<nav" not in html and "<html" not in html


def test_page_polls_the_tiles_every_two_seconds(member_client, make_profile):
    make_profile("Alpha")
    html = member_client.get(reverse("servers:list")).content.decode()
    assert 'id="server-tiles"' in html
    assert 'hx-trigger="every 2s' in html


def test_failed_tile_shows_reason_log_tail_and_copy_button(member_client, make_profile):
    profile = make_profile("Broken")
    ServerInstance.objects.filter(pk=profile.get_instance().pk).update(
        state=State.FAILED, reason="The server was killed by SIGKILL while running.",
        log_tail="line 1\nTraceback: boom", exit_code=-9,
    )  # fmt: skip
    html = member_client.get(reverse("servers:list")).content.decode()
    assert "killed by SIGKILL" in html
    assert "Traceback: boom" in html
    assert "exit code -9" in html
    assert "data-copy=" in html


def test_a_failed_tile_says_when_the_automatic_restarts_are_used_up(
    member_client, make_profile, settings
):
    settings.SERVER_MAX_RESTARTS = 3
    profile = make_profile("Broken")
    instance = ServerInstance.objects.filter(pk=profile.get_instance().pk)
    instance.update(
        state=State.FAILED, desired_state="running", restart_count=1,
        next_restart_at=timezone.now() + timedelta(seconds=4),
    )  # fmt: skip
    html = _poll(member_client).content.decode()
    assert "Restarting automatically (attempt 2) soon." in html
    assert "Gave up" not in html
    instance.update(restart_count=3, next_restart_at=None)  # the third one failed too
    html = _poll(member_client).content.decode()
    assert "Gave up after 3 automatic restarts: read the log tail" in html
    instance.update(desired_state="stopped")  # the user stopped it: nothing was given up
    assert "Gave up" not in _poll(member_client).content.decode()


def test_a_starting_tile_does_not_show_the_last_runs_pid(member_client, make_profile):
    profile = make_profile("Alpha")
    ServerInstance.objects.filter(pk=profile.get_instance().pk).update(
        state=State.STARTING, pid=5686
    )
    html = _poll(member_client).content.decode()
    assert "<dt>PID</dt><dd>—</dd>" in html and "5686" not in html


def test_dashboard_counts_running_servers(member_client, make_profile):
    profile = make_profile("Alpha")
    ServerInstance.objects.filter(pk=profile.get_instance().pk).update(state=State.RUNNING)
    html = member_client.get(reverse("home")).content.decode()
    assert "1 running" in html
    assert reverse("servers:list") in html


def test_log_page_without_a_log_says_so(member_client, make_profile):
    profile = make_profile("Alpha")
    html = member_client.get(reverse("servers:log", args=[profile.slug])).content.decode()
    assert "No log yet" in html
    partial = member_client.get(
        reverse("servers:log", args=[profile.slug]), headers={"HX-Request": "true"}
    ).content.decode()
    assert partial.strip() == "No log yet: the server has not been started."


def test_log_page_validates_the_number_of_lines(member_client, make_profile):
    profile = make_profile("Alpha")
    url = reverse("servers:log", args=[profile.slug])
    html = member_client.get(url, {"lines": "lots"}).content.decode()
    assert "is not a number of lines; showing 200" in html
    assert "last 2000 lines" in member_client.get(url, {"lines": "999999"}).content.decode()


@pytest.mark.django_db
def test_a_filter_with_control_characters_is_cleaned_not_a_500(member_client):
    # PostgreSQL refuses NUL in text: the filter must never reach it (found by hypothesis).
    response = member_client.get("/servers/", {"q": "a\x00b\x07"}, headers={"HX-Request": "true"})
    assert response.status_code == 200


def test_a_new_version_renders_again_only_the_tiles_that_changed(member_client, make_profile):
    """Twenty tiles, one changes: the next poll renders that tile alone (tiles.tile_html keeps
    the others' HTML), and the page shows the change."""
    from servers import tiles

    profiles = [make_profile(f"Server {n:02d}") for n in range(20)]
    tiles._tiles = tiles._Rendered(tiles.TILES_KEPT)  # this test's own count
    version = _version(_poll(member_client))
    assert len(tiles._tiles._html) == 20
    ServerInstance.objects.filter(pk=profiles[7].get_instance().pk).update(
        state=State.FAILED, reason="The process exited with code 3", exit_code=3
    )
    response = _poll(member_client, version)
    assert response.status_code == 200 and "exited with code 3" in response.content.decode()
    assert len(tiles._tiles._html) == 21  # one new rendering: the changed tile
    page = member_client.get(reverse("servers:list")).content.decode()
    assert page.count('class="server-tile"') == 20 and "exited with code 3" in page
    assert len(tiles._tiles._html) == 21  # the whole page from the same renderings
