"""Single sign-on through a real OpenID Connect provider (`oidc-provider` from npm, in its own
Node process): approval rules, groups from a claim, linking by verified email, the disabled
staying out, and ID tokens that do not check out (signature, audience, expiry, replayed
state). The portal runs in the test client; the "browser" between it and the provider is an
HTTP client that fills in the provider's own login page."""

from __future__ import annotations

import importlib.util
import re
from html import unescape
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from allauth.socialaccount.models import SocialAccount
from django.contrib.auth.models import Group
from django.core.exceptions import ImproperlyConfigured
from django.test import Client

from accounts.audit.models import Action, AuditEntry
from accounts.models import User

LOGIN = "/accounts/oidc/corp/login/"


def _form(html: str) -> tuple[str, dict]:
    action = unescape(re.search(r'<form[^>]*action="([^"]+)"', html).group(1))
    fields = dict(re.findall(r'<input[^>]*name="([^"]+)"[^>]*value="([^"]*)"', html))
    return action, fields


def provider_round_trip(client: Client, login: str) -> str:
    """Start a sign-in at the portal and go through the provider's pages as `login`; returns
    the portal callback URL the provider sends the browser back to (with its code and state)."""
    start = client.post(LOGIN)
    assert start.status_code == 302, start.content.decode()[:300]
    url = start["Location"]
    with httpx.Client(timeout=10) as browser:
        for _ in range(10):
            if url.startswith("http://testserver/"):
                return url
            answer = browser.get(url)
            if answer.is_redirect:
                url = str(answer.url.join(answer.headers["Location"]))
                continue
            action, fields = _form(answer.text)
            if 'name="login"' in answer.text:
                fields.update(login=login, password="any")
            posted = browser.post(str(answer.url.join(action)), data=fields)
            assert posted.is_redirect, posted.text[:500]
            url = str(posted.url.join(posted.headers["Location"]))
    raise AssertionError(f"the provider never sent the browser back: {url}")


def sign_in(client: Client, login: str):
    """The whole sign-in; returns the portal's answer to the callback, redirects followed."""
    callback = provider_round_trip(client, login)
    parts = urlsplit(callback)
    return client.get(f"{parts.path}?{parts.query}", follow=True)


def signed_in(client: Client) -> User | None:
    user_id = client.session.get("_auth_user_id")
    return User.objects.get(pk=user_id) if user_id else None


def person(email: str, verified=True, **claims) -> dict:
    return {"email": email, "email_verified": verified, **claims}


@pytest.fixture
def first_admin(make_user):
    return make_user("root@example.com", staff=True)  # so that those who sign in wait


def test_a_new_person_signs_in_and_waits_for_approval(client, sso, first_admin, mailoutbox):
    sso.set_accounts({"ada": person("ada@example.com", name="Ada")})
    answer = sign_in(client, "ada")
    assert answer.redirect_chain[-1][0] == "/status/pending/"
    ada = signed_in(client)
    assert ada.email == "ada@example.com" and ada.status == User.Status.PENDING
    assert not ada.has_usable_password()
    assert SocialAccount.objects.get(user=ada).provider == "corp"
    signup = AuditEntry.objects.get(action=Action.SIGNUP)
    assert signup.actor_label == "ada@example.com"
    assert signup.after["via"] == "single sign-on (corp)"
    assert [message.to for message in mailoutbox] == [["root@example.com"]]  # told, as for any


def test_the_very_first_account_made_by_single_sign_on_is_the_admin(client, sso):
    sso.set_accounts({"ada": person("ada@example.com")})
    assert sign_in(client, "ada").redirect_chain[-1][0] == "/"
    assert signed_in(client).is_active_admin


@pytest.mark.parametrize(
    ("rule", "claims", "approved"),
    [
        ({"OIDC_APPROVE_DOMAINS": ["example.com"]}, {}, True),
        ({"OIDC_APPROVE_DOMAINS": ["example.com"]}, {"email_verified": False}, False),
        ({"OIDC_APPROVE_DOMAINS": ["example.org"]}, {}, False),
        ({"OIDC_CLAIM": "groups", "OIDC_APPROVE_VALUES": ["portal"]}, {"groups": ["portal"]}, True),
        ({"OIDC_CLAIM": "groups", "OIDC_APPROVE_VALUES": ["portal"]}, {"groups": ["other"]}, False),
    ],
    ids=["allowed domain", "unverified email", "other domain", "claim value", "other value"],
)
def test_an_allowed_domain_or_claim_value_approves_on_first_sign_in(
    client, sso, first_admin, settings, rule, claims, approved
):
    for name, value in rule.items():
        setattr(settings, name, value)
    sso.set_accounts({"ada": {**person("ada@example.com"), **claims}})
    answer = sign_in(client, "ada")
    assert answer.redirect_chain[-1][0] == ("/" if approved else "/status/pending/")
    entries = AuditEntry.objects.filter(action=Action.APPROVE)
    if approved:
        (entry,) = entries
        assert entry.actor_label == "system: single sign-on (corp)" and entry.actor_id is None
        assert entry.detail.startswith("Approved on first sign-in: the ")
    else:
        assert not entries.exists()


def test_the_claim_sets_the_groups_on_every_sign_in(client, sso, first_admin, settings):
    settings.OIDC_CLAIM, settings.OIDC_GROUPS_FROM_CLAIM = "groups", True
    interns, ops = Group.objects.create(name="interns"), Group.objects.create(name="ops")
    sso.set_accounts({"ada": person("ada@example.com", groups=["interns", "no-such-team"])})
    sign_in(client, "ada")
    ada = signed_in(client)
    assert list(ada.groups.all()) == [interns]  # a name without a group is left out

    client.logout()
    sso.set_accounts({"ada": person("ada@example.com", groups="ops")})  # a single value too
    sign_in(client, "ada")
    assert list(ada.groups.all()) == [ops]
    changes = AuditEntry.objects.filter(action=Action.GROUPS).order_by("pk")
    assert [(e.before, e.after) for e in changes] == [
        ({"groups": []}, {"groups": ["interns"]}),
        ({"groups": ["interns"]}, {"groups": ["ops"]}),
    ]
    assert {e.actor_label for e in changes} == {"system: single sign-on (corp)"}


def test_an_existing_account_is_linked_on_a_verified_email_never_duplicated(client, sso, member):
    sso.set_accounts({"m": person("MEMBER@example.com")})
    assert sign_in(client, "m").redirect_chain[-1][0] == "/"
    assert signed_in(client) == member
    assert User.objects.count() == 1
    assert SocialAccount.objects.get().user == member
    link = AuditEntry.objects.get(action=Action.SSO_LINK)
    assert link.owner_id == member.pk and link.after == {"provider": "corp"}


@pytest.mark.parametrize("verified", [False, "false", None], ids=["false", "'false'", "absent"])
def test_an_unverified_email_never_links_nor_makes_a_second_account(client, sso, member, verified):
    claims = person("member@example.com", verified)
    if verified is None:
        del claims["email_verified"]
    sso.set_accounts({"m": claims})
    answer = sign_in(client, "m")
    assert answer.status_code == 403
    assert "does not say that it has verified this email" in answer.content.decode()
    assert signed_in(client) is None
    assert User.objects.count() == 1 and not SocialAccount.objects.exists()


def test_a_disabled_user_stays_out_whatever_the_provider_says(client, sso, make_user, settings):
    make_user("root@example.com", staff=True)
    gone = make_user("gone@example.com", status="disabled")
    settings.OIDC_APPROVE_DOMAINS = ["example.com"]
    settings.OIDC_CLAIM, settings.OIDC_APPROVE_VALUES = "groups", ["portal"]
    settings.OIDC_GROUPS_FROM_CLAIM = True
    Group.objects.create(name="portal")
    sso.set_accounts({"g": person("gone@example.com", groups=["portal"])})
    answer = sign_in(client, "g")
    assert answer.redirect_chain[-1][0] == "/status/disabled/"
    assert client.get("/").url == "/status/disabled/"
    gone.refresh_from_db()
    assert gone.status == User.Status.DISABLED and not gone.groups.exists()


@pytest.mark.parametrize("mode", ["bad-signature", "wrong-audience", "expired"])
def test_an_id_token_that_does_not_check_out_is_refused(client, sso, first_admin, mode):
    sso.set_accounts({"ada": person("ada@example.com")})
    sso.tamper_next_id_token(mode)
    answer = sign_in(client, "ada")
    assert "Sign-in failed" in answer.content.decode()
    assert signed_in(client) is None
    assert not User.objects.filter(email="ada@example.com").exists()


def test_a_replayed_state_is_refused(client, sso, first_admin):
    sso.set_accounts({"ada": person("ada@example.com")})
    callback = provider_round_trip(client, "ada")
    parts = urlsplit(callback)
    assert client.get(f"{parts.path}?{parts.query}").status_code == 302
    assert signed_in(client) is not None
    client.logout()
    for replayer in (client, Client()):  # the same browser, or another one
        answer = replayer.get(f"{parts.path}?{parts.query}", follow=True)
        assert "Sign-in failed" in answer.content.decode()
        assert signed_in(replayer) is None


@pytest.mark.parametrize(
    ("claims", "why"),
    [
        ({}, "did not send an email address"),
        ({"email": "not-an-email"}, "cannot use"),
        ({"email": "ada@example.com", "email_verified": 1}, "neither true nor false"),
        ({"email": "ada@example.com", "groups": [{"a": 1}]}, "not a list of names"),
    ],
    ids=["no email", "bad email", "odd email_verified", "odd claim"],
)
def test_claims_the_portal_cannot_use_refuse_the_sign_in_saying_why(
    client, sso, first_admin, settings, claims, why
):
    settings.OIDC_CLAIM = "groups"
    sso.set_accounts({"ada": claims})
    answer = sign_in(client, "ada")
    assert answer.status_code == 403 and why in answer.content.decode()
    assert signed_in(client) is None


def test_password_sign_up_can_be_turned_off_leaving_single_sign_on(client, sso, settings):
    settings.PASSWORD_SIGNUP = False
    page = client.get("/accounts/login/").content.decode()
    assert "Sign in with Corp SSO" in page and "/accounts/signup/" not in page
    password = "correct-horse-battery-staple"
    data = {"email": "x@example.com", "password1": password, "password2": password}
    closed = client.post("/accounts/signup/", data)
    assert "Sign-up with a password is turned off" in closed.content.decode()
    assert not User.objects.exists()
    sso.set_accounts({"ada": person("ada@example.com")})
    sign_in(client, "ada")
    assert signed_in(client).email == "ada@example.com"


def _settings_with(monkeypatch, **environment):
    """config/settings.py run afresh (as a separate module) with `environment`."""
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    path = Path(__file__).resolve().parents[2] / "config" / "settings.py"
    spec = importlib.util.spec_from_file_location("settings_probe", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_providers_are_configured_from_the_environment(monkeypatch):
    probe = _settings_with(
        monkeypatch,
        MLX_PORTAL_OIDC_PROVIDERS="corp, google-ws",
        MLX_PORTAL_OIDC_CORP_ISSUER="https://id.example.com/realms/team/",
        MLX_PORTAL_OIDC_CORP_CLIENT_ID="portal",
        MLX_PORTAL_OIDC_CORP_SECRET="s3",
        MLX_PORTAL_OIDC_CORP_LABEL="Sign in with Keycloak",
        MLX_PORTAL_OIDC_CORP_SCOPES="openid email profile groups",
        MLX_PORTAL_OIDC_GOOGLE_WS_ISSUER="https://accounts.google.com",
        MLX_PORTAL_OIDC_GOOGLE_WS_CLIENT_ID="g",
        MLX_PORTAL_OIDC_GOOGLE_WS_SECRET="gs",
        MLX_PORTAL_OIDC_APPROVE_DOMAINS="Example.com",
        MLX_PORTAL_PASSWORD_SIGNUP="off",
    )
    corp, google = probe.SOCIALACCOUNT_PROVIDERS["openid_connect"]["APPS"]
    assert corp["name"] == "Sign in with Keycloak" and google["name"] == "Sign in with Google-Ws"
    assert corp["settings"] == {
        "server_url": "https://id.example.com/realms/team",
        "scope": ["openid", "email", "profile", "groups"],
    }
    assert google["provider_id"] == "google-ws" and google["secret"] == "gs"
    assert probe.OIDC_APPROVE_DOMAINS == ["example.com"] and probe.PASSWORD_SIGNUP is False


@pytest.mark.parametrize(
    ("environment", "message"),
    [
        ({"MLX_PORTAL_OIDC_PROVIDERS": "Corp SSO"}, "is not a provider id"),
        ({"MLX_PORTAL_OIDC_PROVIDERS": "corp,corp"}, "names 'corp' twice"),
        ({"MLX_PORTAL_OIDC_PROVIDERS": "corp"}, "MLX_PORTAL_OIDC_CORP_ISSUER is not set"),
        (
            {"MLX_PORTAL_OIDC_PROVIDERS": "corp", "MLX_PORTAL_OIDC_CORP_ISSUER": "id.example.com"},
            "give the issuer URL",
        ),
        (
            {
                "MLX_PORTAL_OIDC_PROVIDERS": "corp",
                "MLX_PORTAL_OIDC_CORP_ISSUER": "https://i.example",
            },
            "MLX_PORTAL_OIDC_CORP_CLIENT_ID is not set",
        ),
        (
            {
                "MLX_PORTAL_OIDC_PROVIDERS": "corp",
                "MLX_PORTAL_OIDC_CORP_ISSUER": "https://i.example",
                "MLX_PORTAL_OIDC_CORP_CLIENT_ID": "c",
                "MLX_PORTAL_OIDC_CORP_SECRET": "s",
                "MLX_PORTAL_OIDC_CORP_SCOPES": "openid profile",
            },
            "include openid and email",
        ),
        (
            {
                "DJANGO_PRODUCTION": "1",
                "DJANGO_SECRET_KEY": "x" * 60,
                "MLX_PORTAL_OIDC_PROVIDERS": "corp",
                "MLX_PORTAL_OIDC_CORP_ISSUER": "http://i.example",
            },
            "must be reached over https",
        ),
        ({"MLX_PORTAL_OIDC_APPROVE_DOMAINS": "example"}, "is not a domain"),
        ({"MLX_PORTAL_OIDC_CLAIM": "two words"}, "the name of one claim"),
        ({"MLX_PORTAL_OIDC_APPROVE_VALUES": "portal"}, "name it in MLX_PORTAL_OIDC_CLAIM"),
        ({"MLX_PORTAL_OIDC_GROUPS_FROM_CLAIM": "ture"}, "use true or false"),
        ({"MLX_PORTAL_PASSWORD_SIGNUP": "nope"}, "use true or false"),
    ],
    ids=[
        "id",
        "twice",
        "no issuer",
        "issuer not a URL",
        "no client id",
        "scopes",
        "http in production",
        "domain",
        "claim",
        "values without claim",
        "typo in a flag",
        "typo in sign-up",
    ],
)
def test_a_mistake_in_the_settings_stops_the_portal_saying_what_to_set(
    monkeypatch, environment, message
):
    with pytest.raises(ImproperlyConfigured, match=re.escape(message)):
        _settings_with(monkeypatch, **environment)
