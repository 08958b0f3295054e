"""On a phone-sized screen (390 x 844) no main page scrolls sideways: the navbar wraps in
rows, and a wide table scrolls inside its own box."""

import pytest
from django.conf import settings
from django.test import Client
from django.utils import timezone

from models_catalog.models import Host
from servers.models import ServerProfile, UsageRecord

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PAGES = [
    "/", "/models/", "/models/hub/test-org/tiny-llama", "/models/local/", "/models/downloads/",
    "/servers/", "/servers/new/", "/servers/chat/", "/servers/usage/", "/servers/hosts/",
    "/api-keys/", "/users/",
]  # fmt: skip


# What sticks out, for the failure message.
WIDE_ELEMENTS = """() => [...document.querySelectorAll("body *")]
    .filter(e => e.getBoundingClientRect().right > innerWidth + 1 && !e.closest(".overflow-auto"))
    .slice(0, 4).map(e => `${e.tagName}.${e.className}: ${(e.textContent || "").slice(0, 40)}`)"""


def test_no_main_page_scrolls_sideways_on_a_phone(browser, live_server, admin_member, hub_settings):
    profile = ServerProfile.objects.create(
        name="A profile with a rather long name", slug="long", host=Host.objects.this_machine(),
        port=8100,
        model_id="mlx-community/Qwen3-30B-A3B-Instruct-2507-4bit-DWQ", owner=admin_member,
    )  # fmt: skip
    UsageRecord.objects.create(
        user=admin_member, profile=profile, profile_name=profile.name, host=profile.host,
        source="api", endpoint="chat/completions", status="ok", started_at=timezone.now(),
    )  # fmt: skip
    client = Client()
    client.force_login(admin_member)
    context = browser.new_context(base_url=live_server.url, viewport={"width": 390, "height": 844})
    context.add_cookies([{
        "name": settings.SESSION_COOKIE_NAME,
        "value": client.cookies[settings.SESSION_COOKIE_NAME].value, "url": live_server.url,
    }])  # fmt: skip
    page = context.new_page()
    try:
        wide = {}
        for path in PAGES:
            response = page.goto(path)
            assert response.ok, path
            width = page.evaluate("document.documentElement.scrollWidth")
            if width > 390:
                wide[path] = (width, page.evaluate(WIDE_ELEMENTS))
        assert wide == {}, f"pages wider than the screen: {wide}"
        assert page.get_by_role("button", name="Log out").is_visible()
    finally:
        context.close()
