"""Single sign-on in a real browser, through a real OpenID Connect provider (`oidc-provider`
from npm): the login page's button, the provider's own login page, and back to the portal:
pending as everyone, or straight in when the email's domain is allowed."""

import pytest

from accounts.models import User
from tests.conftest import SCREENSHOTS

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def sign_in_through_the_provider(page, login: str) -> None:
    page.goto("/")
    page.get_by_role("button", name="Sign in with Corp SSO").click()
    page.fill("input[name=login]", login)  # the provider's page, on its own origin
    page.fill("input[name=password]", "anything")
    page.get_by_role("button", name="Sign-in").click()


def test_a_person_signs_in_with_the_team_provider_and_waits_or_gets_in(
    page, browser, live_server, sso, make_user, settings
):
    make_user("root@example.com", staff=True)
    sso.set_accounts(
        {
            "ada": {"email": "ada@example.com", "email_verified": True},
            "bob": {"email": "bob@team.example", "email_verified": True},
        }
    )
    page.goto("/accounts/login/")
    page.get_by_role("button", name="Sign in with Corp SSO").wait_for()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "login-sso.png"), full_page=True)

    sign_in_through_the_provider(page, "ada")
    page.get_by_text("Your account is awaiting approval").wait_for()
    assert page.url.endswith("/status/pending/")
    assert User.objects.get(email="ada@example.com").status == User.Status.PENDING

    # With the team's domain allowed, the next person is approved on first sign-in.
    settings.OIDC_APPROVE_DOMAINS = ["team.example"]
    other = browser.new_context(base_url=live_server.url, viewport={"width": 1280, "height": 800})
    bob = other.new_page()
    bob.set_default_timeout(15_000)
    try:
        sign_in_through_the_provider(bob, "bob")
        bob.get_by_role("heading", name="Dashboard").wait_for()
        assert User.objects.get(email="bob@team.example").is_approved
    finally:
        other.close()
