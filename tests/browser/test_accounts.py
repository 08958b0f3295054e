"""The accounts journey in a real browser: the first sign-up becomes the admin, the second
waits, the admin approves them on the Users page, and they get in and make an API key."""

import pytest
from django.core.cache import cache

from accounts.models import User
from tests.conftest import PASSWORD, SCREENSHOTS

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def shoot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def sign_up(page, email: str) -> None:
    page.goto("/accounts/signup/")
    page.fill("input[name=email]", email)
    page.fill("input[name=password1]", PASSWORD)
    page.fill("input[name=password2]", PASSWORD)
    page.get_by_role("button", name="Sign Up").click()


def test_first_admin_approves_a_second_user_who_then_gets_in(page, browser, live_server):
    cache.clear()  # allauth's rate-limit counters

    # Anyone who opens the portal meets the login page.
    page.goto("/")
    page.get_by_role("heading", name="Sign In").wait_for()
    assert "/accounts/login/?next=/" in page.url
    shoot(page, "login")

    # The first user to sign up becomes the admin and lands on the dashboard.
    sign_up(page, "ada@example.com")
    page.get_by_role("heading", name="Dashboard").wait_for()
    assert page.get_by_role("link", name="Users").is_visible()

    # A second user signs up in another browser and is told to wait.
    other = browser.new_context(base_url=live_server.url, viewport={"width": 1280, "height": 800})
    grace = other.new_page()
    grace.set_default_timeout(15_000)
    try:
        sign_up(grace, "grace@example.com")
        grace.get_by_text("Your account is awaiting approval").wait_for()
        assert grace.url.endswith("/status/pending/")
        assert grace.get_by_role("link", name="API keys").count() == 0
        shoot(grace, "pending")
        grace.goto("/api-keys/")
        assert grace.url.endswith("/status/pending/")

        # The admin sees the pending count, approves Grace on the Users page, in place.
        page.goto("/users/")
        assert page.locator("#pending-badge .badge").inner_text() == "1"
        row = page.locator("tr", has_text="grace@example.com")
        row.get_by_role("button", name="Approve").click()
        row = page.locator("tr", has_text="grace@example.com")
        row.get_by_text("Approved", exact=True).wait_for()
        row.get_by_text("by ada@example.com").wait_for()
        assert page.url.endswith("/users/")  # no page load: the row was swapped
        assert page.locator("#pending-badge .badge").count() == 0  # nobody waits any more
        # The filter's counts follow, out of band too.
        pending = page.locator("#status-filter option[value=pending]")
        assert pending.inner_text() == "Pending approval (0)"
        shoot(page, "users")
        grace_user = User.objects.get(email="grace@example.com")
        assert grace_user.approved_by.email == "ada@example.com"

        # Grace gets in, and makes herself an API key, shown once with a copy button.
        grace.goto("/")
        grace.get_by_role("heading", name="Dashboard").wait_for()
        grace.get_by_role("link", name="API keys").click()
        grace.fill("input[name=name]", "laptop")
        grace.get_by_role("button", name="Create key").click()
        secret = grace.locator("#new-key-secret")
        secret.wait_for()
        assert secret.input_value().startswith("mlxp_")
        grace.get_by_role("button", name="Copy").wait_for()
        shoot(grace, "api-keys")

        # Revoking that key takes its secret off the page, and says the key is dead.
        grace.once("dialog", lambda dialog: dialog.accept())
        grace.locator("tr", has_text="laptop").get_by_role("button", name="Revoke").click()
        grace.get_by_role("status").get_by_text("Revoked the key “laptop”").wait_for()
        assert grace.locator("#new-key-secret").count() == 0
        assert grace.get_by_text("No keys yet.").is_visible()
    finally:
        other.close()


def test_the_last_admin_message_wraps_in_its_row(page, live_server, admin_member):
    from django.conf import settings
    from django.test import Client

    client = Client()
    client.force_login(admin_member)
    session = client.cookies[settings.SESSION_COOKIE_NAME].value
    page.context.add_cookies(
        [{"name": settings.SESSION_COOKIE_NAME, "value": session, "url": live_server.url}]
    )
    page.set_viewport_size({"width": 1280, "height": 800})
    page.goto("/users/")
    row = page.locator("tr", has_text=admin_member.email)
    row.get_by_role("button", name="Remove admin").click()
    error = page.locator("tr", has_text=admin_member.email).locator(".row-error")
    error.wait_for()
    assert "must keep at least one active admin" in error.inner_text()
    lines = error.evaluate(
        "e => Math.round(e.getBoundingClientRect().height"
        " / parseFloat(getComputedStyle(e).lineHeight))"
    )
    assert lines >= 2  # wrapped, not one long line
    right = error.evaluate("e => e.getBoundingClientRect().right")
    assert right <= page.viewport_size["width"]  # and the page does not scroll sideways
