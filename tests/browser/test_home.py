"""The portal's home page opens in a real browser."""

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_home_page_loads_with_styles_and_htmx(page, screenshot):
    page.goto("/")
    assert page.title().endswith("MLX Portal")
    page.get_by_role("heading", name="Dashboard").wait_for()
    # The vendored HTMX and Pico CSS are served by the portal itself.
    assert page.evaluate("typeof window.htmx") == "object"
    font = page.evaluate("getComputedStyle(document.body).fontFamily")
    assert "system-ui" in font or "apple-system" in font.lower()
    screenshot("home")
