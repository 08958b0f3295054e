"""The portal's home page opens in a real browser (after logging in: every page needs it)."""

import pytest

from tests.conftest import PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_home_page_loads_with_styles_and_htmx(page, screenshot, make_user):
    make_user("admin@example.com", staff=True)
    page.goto("/")
    # Anonymous visitors land on the login form first.
    page.get_by_role("heading", name="Sign In").wait_for()
    page.fill("input[name=login]", "admin@example.com")
    page.fill("input[name=password]", PASSWORD)
    page.get_by_role("button", name="Sign In").click()

    page.get_by_role("heading", name="Dashboard").wait_for()
    assert page.title().endswith("MLX Portal")
    # The vendored HTMX and Pico CSS are served by the portal itself.
    assert page.evaluate("typeof window.htmx") == "object"
    font = page.evaluate("getComputedStyle(document.body).fontFamily")
    assert "system-ui" in font or "apple-system" in font.lower()
    screenshot("home")
