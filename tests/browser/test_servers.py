"""The Servers page in a real browser: start a real server, watch it run, read its log, stop."""

import psutil
import pytest
from django.conf import settings
from django.utils.text import slugify

from models_catalog.models import Host
from servers.models import ServerInstance, ServerProfile, State
from servers.supervision import supervisor
from servers.supervision.ports import suggest_port

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def log_in(page, client, user, base_url):
    client.force_login(user)
    cookie = client.cookies[settings.SESSION_COOKIE_NAME]
    page.context.add_cookies(
        [{"name": settings.SESSION_COOKIE_NAME, "value": cookie.value, "url": base_url}]
    )


def test_start_watch_running_read_the_log_and_stop(
    tiny_in_cache, celery_worker, member, client, page, live_server, screenshot
):
    profile = ServerProfile.objects.create(
        name="Tiny chat",
        slug=slugify("Tiny chat"),
        model_id=tiny_in_cache,
        host=Host.objects.this_machine(),
        port=suggest_port(),
        description="The tiny test model, served for real by mlx_lm.server.",
        owner=member,
    )
    ServerProfile.objects.create(
        name="Spare", slug="spare", model_id=tiny_in_cache, host=Host.objects.this_machine(),
        port=suggest_port({profile.port}), owner=member,
    )  # fmt: skip
    log_in(page, client, member, live_server.url)
    page.goto("/servers/")
    tile = page.locator(f"#server-{profile.slug}")
    state = tile.get_by_test_id("state")
    assert state.inner_text() == "stopped"

    # From the keyboard: the focus stays on the tile's lifecycle button (Start, then Stop)
    # through the action's swap and every poll's.
    tile.get_by_role("button", name="Start").focus()
    page.keyboard.press("Enter")
    state.filter(has_text="starting").or_(state.filter(has_text="running")).wait_for()
    tile.get_by_test_id("state").filter(has_text="running").wait_for(timeout=90_000)
    focused = "document.activeElement && document.activeElement.textContent.trim()"
    assert page.evaluate(focused) == "Stop"
    tile.get_by_test_id("uptime").wait_for()
    tile.get_by_test_id("rss").wait_for()
    screenshot("servers")

    # The 2 s poll swaps the tiles' content only (or nothing): the page keeps its scroll position.
    page.set_viewport_size({"width": 1280, "height": 420})
    page.evaluate("window.scrollTo(0, 150)")
    before = page.evaluate("window.scrollY")
    assert before > 0
    page.evaluate(
        """() => new Promise(resolve => document.body.addEventListener(
            "htmx:afterRequest", e => { if (e.detail.target.id === "server-tiles") resolve(); }))"""
    )
    assert page.evaluate("window.scrollY") == before
    page.set_viewport_size({"width": 1280, "height": 800})

    tile.get_by_role("link", name="Log").click()
    page.locator("#log-body").filter(has_text="Starting httpd").wait_for()
    screenshot("server-log")

    page.go_back()
    tile = page.locator(f"#server-{profile.slug}")
    instance = profile.get_instance()
    instance.refresh_from_db()
    pid, create_time = instance.pid, instance.process_create_time
    assert supervisor.is_alive(pid, create_time)
    tile.get_by_role("button", name="Stop").click()
    tile.get_by_test_id("state").filter(has_text="stopped").wait_for(timeout=30_000)
    assert not supervisor.is_alive(pid, create_time)
    assert not supervisor.group_members(pid)
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE

    # Both servers stopped, nothing changes: the poll sends the version it shows and gets
    # 204 No Content, which htmx does not swap (servers/tiles.py, static/js/servers.js).
    page.evaluate(
        """() => {
            window.tilePolls = [];
            window.tileSwaps = [];
            const record = list => e => {
                if (e.detail.target.id === "server-tiles") list.push(e.detail.xhr.status);
            };
            document.body.addEventListener("htmx:afterRequest", record(window.tilePolls));
            document.body.addEventListener("htmx:afterSwap", record(window.tileSwaps));
        }"""
    )
    page.wait_for_function(
        "() => window.tilePolls.filter(s => s === 204).length >= 2", timeout=20_000
    )
    assert 204 not in page.evaluate("window.tileSwaps")
    # A change made elsewhere still shows on the next poll.
    spare = ServerProfile.objects.get(slug="spare").get_instance()
    ServerInstance.objects.filter(pk=spare.pk).update(state=State.FAILED, reason="Changed here")
    spare_tile = page.locator("#server-spare")
    spare_tile.get_by_test_id("state").filter(has_text="failed").wait_for(timeout=10_000)
    assert "Changed here" in spare_tile.inner_text()
