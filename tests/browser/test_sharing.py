"""Sharing in a real browser: an admin makes a group with a tokens-per-day limit on the Groups
page and puts a member in it; the member chats until the limit, sees the chat say which limit
and when it resets, and finds their use against it on the Usage page."""

import re

import pytest
from django.conf import settings
from django.test import Client
from django.utils import timezone

from models_catalog.models import Host
from servers.models import ServerInstance, ServerProfile, State
from tests.conftest import SCREENSHOTS

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def log_in(page, user, base_url):
    client = Client()  # a session of its own: the other person's stays valid
    client.force_login(user)
    cookie = client.cookies[settings.SESSION_COOKIE_NAME]
    page.context.add_cookies(
        [{"name": settings.SESSION_COOKIE_NAME, "value": cookie.value, "url": base_url}]
    )


def test_an_admin_limits_a_group_and_its_member_meets_the_limit_in_the_chat(
    mlx_server, admin_member, member, page, browser, live_server, screenshot
):
    profile = ServerProfile.objects.create(
        name="Tiny chat", slug="tiny-chat", model_id="mlx-community/tiny-text-test",
        host=Host.objects.this_machine(), port=mlx_server.port, owner=admin_member,
    )  # fmt: skip
    ServerInstance.objects.update_or_create(
        profile=profile,
        defaults={"state": State.RUNNING, "port": mlx_server.port, "pid": mlx_server.pid,
                  "started_at": timezone.now(), "ready_at": timezone.now()},
    )  # fmt: skip

    log_in(page, admin_member, live_server.url)
    page.goto("/groups/")
    page.get_by_label("New group").fill("Research")
    page.get_by_role("button", name="Create group").click()
    page.get_by_role("heading", name="Group “Research”").wait_for()  # its page, to fill in
    page.get_by_label(member.email).check()
    page.get_by_role("button", name="Save members").click()
    page.get_by_role("heading", name="Group “Research”").wait_for()
    page.get_by_label(re.compile("tokens per day", re.I)).fill("30")
    page.get_by_label(re.compile("requests per minute", re.I)).fill("100")
    page.get_by_role("button", name="Save limits").click()
    page.goto("/groups/")
    row = page.locator("table.groups tbody tr").filter(has_text="Research")
    assert "30 tokens per day" in row.inner_text() and row.locator("td").nth(1).inner_text() == "1"
    screenshot("groups")

    other = browser.new_context(base_url=live_server.url, viewport={"width": 1280, "height": 800})
    mine = other.new_page()
    mine.set_default_timeout(30_000)
    try:
        log_in(mine, member, live_server.url)
        mine.goto("/servers/chat/")
        refused = mine.locator('.msg-assistant[data-status="error"]')
        for attempt in range(6):  # each exchange uses tokens; the limit of 30 comes soon
            mine.get_by_label("Message").fill(f"Hello {attempt}")
            mine.get_by_role("button", name="Send").click()
            answers = mine.locator('.msg-assistant[data-status="ok"]')
            answers.nth(attempt).or_(refused).first.wait_for()
            if refused.count():
                break
        text = refused.inner_text()
        assert "You have reached your limit of 30 tokens per day (group Research)" in text
        assert "It resets at midnight" in text

        mine.goto("/servers/usage/")
        tokens = mine.get_by_test_id("limit-tokens_per_day")
        tokens.wait_for()  # the fragment loaded by htmx
        cells = tokens.locator("td")
        assert int(cells.nth(1).inner_text()) >= 30 and cells.nth(2).inner_text() == "30"
        assert cells.nth(4).inner_text() == "group Research"
        assert tokens.locator("progress").get_attribute("value") == "100"
        mine.screenshot(path=str(SCREENSHOTS / "limits.png"), full_page=True)
    finally:
        other.close()
