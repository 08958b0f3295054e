"""The Servers page and its polled tiles partial."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from servers.models import ServerInstance, State


def _tiles_queries(client) -> int:
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(reverse("servers:list"), headers={"HX-Request": "true"})
    assert response.status_code == 200
    return len(ctx.captured_queries)


def test_tiles_partial_query_count_does_not_grow_with_servers(member_client, make_profile):
    make_profile("One")
    one = _tiles_queries(member_client)
    for n in range(8):
        profile = make_profile(f"Server {n}")
        ServerInstance.objects.filter(pk=profile.get_instance().pk).update(
            state=State.FAILED, reason="boom", log_tail="Traceback…"
        )
    assert _tiles_queries(member_client) == one


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
