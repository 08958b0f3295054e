"""Single sign-on in a real browser, through a real OpenID Connect provider (`oidc-provider`
from npm): the login page's button, the provider's own login page, and back to the portal:
pending as everyone, or straight in when the email's domain is allowed or the group claim
approves (and then in the portal groups the claim names); a disabled user kept on the page
that says so; an ID token signed with a key the provider never published refused."""

import pytest
from django.contrib.auth.models import Group

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


def test_a_group_claim_lets_a_person_in_and_into_the_portal_group_it_names(
    page, sso, make_user, settings
):
    make_user("root@example.com", staff=True)
    settings.OIDC_CLAIM, settings.OIDC_APPROVE_VALUES = "groups", ["portal-users"]
    settings.OIDC_GROUPS_FROM_CLAIM = True
    ml_team = Group.objects.create(name="ml-team")
    Group.objects.create(name="interns")  # not in the claim: not joined
    sso.set_accounts(
        {
            "cleo": {
                "email": "cleo@example.com",  # a domain no rule allows: the claim approves
                "email_verified": True,
                "groups": ["portal-users", "ml-team"],
            }
        }
    )
    sign_in_through_the_provider(page, "cleo")
    page.get_by_role("heading", name="Dashboard").wait_for()
    cleo = User.objects.get(email="cleo@example.com")
    assert cleo.is_approved
    assert list(cleo.groups.all()) == [ml_team]  # "portal-users" names no portal group


def test_a_disabled_user_stays_out_whatever_the_provider_says(page, sso, make_user, settings):
    make_user("root@example.com", staff=True)
    gone = make_user("gone@example.com", status="disabled")
    settings.OIDC_APPROVE_DOMAINS = ["example.com"]  # every rule would approve a newcomer
    settings.OIDC_CLAIM, settings.OIDC_APPROVE_VALUES = "groups", ["portal-users"]
    settings.OIDC_GROUPS_FROM_CLAIM = True
    Group.objects.create(name="portal-users")
    sso.set_accounts(
        {
            "gone": {
                "email": "gone@example.com",
                "email_verified": True,
                "groups": ["portal-users"],
            }
        }
    )
    sign_in_through_the_provider(page, "gone")
    page.get_by_text("Your account is disabled").wait_for()
    assert page.url.endswith("/status/disabled/")
    # Nothing else of the portal opens: the dashboard sends them back to that page.
    page.goto("/")
    page.get_by_text("Your account is disabled").wait_for()
    assert page.url.endswith("/status/disabled/")
    assert page.get_by_role("heading", name="Dashboard").count() == 0
    gone.refresh_from_db()
    assert gone.status == User.Status.DISABLED and not gone.groups.exists()


def test_an_id_token_with_a_bad_signature_is_refused(page, sso, make_user, settings):
    make_user("root@example.com", staff=True)
    settings.OIDC_APPROVE_DOMAINS = ["example.com"]  # a valid token would be let in at once
    sso.set_accounts({"mallory": {"email": "mallory@example.com", "email_verified": True}})
    sso.tamper_next_id_token("bad-signature")
    sign_in_through_the_provider(page, "mallory")
    page.get_by_role("heading", name="Sign-in failed").wait_for()
    alert = page.get_by_role("alert")
    assert "the provider's answer could not be checked" in alert.inner_text()
    assert not User.objects.filter(email="mallory@example.com").exists()
    # Not signed in: the dashboard asks for a login.
    page.goto("/")
    page.wait_for_url("**/accounts/login/**")
    assert page.get_by_role("heading", name="Dashboard").count() == 0
