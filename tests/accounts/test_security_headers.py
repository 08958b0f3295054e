"""What every answer tells the browser it may do: the Content-Security-Policy on every page (no
inline script, no eval, no other site's script), framing and referrer rules, and cookies no
script can read. The policy in a real browser: tests/browser/test_content_security_policy.py."""

import itertools
import json

import pytest
from django.test import Client

from tests.accounts.walk import ROLES, object_paths, user_for
from tests.conftest import PASSWORD
from tests.support.clean_env import run_python
from tests.support.url_walk import all_urls


def policy(response) -> dict[str, list[str]]:
    """The Content-Security-Policy header as {directive: [values]}."""
    header = response.headers.get("Content-Security-Policy", "")
    directives = (part.split() for part in header.split(";") if part.strip())
    return {name: values for name, *values in directives}


def page_problems(response) -> list[str]:
    """What is missing from a text/html answer's headers ([] if all is there)."""
    csp = policy(response)
    if not csp:
        return ["no Content-Security-Policy"]
    scripts = csp.get("script-src", csp.get("default-src", []))
    problems = [
        f"script-src {' '.join(scripts)}"
        for value in scripts
        if value in ("'unsafe-inline'", "'unsafe-eval'", "*", "data:", "http:", "https:")
    ]
    expected = {
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "frame-ancestors": ["'none'"],
        "style-src": ["'self'"],
    }
    problems += [
        f"{name} {csp.get(name)}" for name, want in expected.items() if csp.get(name) != want
    ]
    if not scripts:
        problems.append("no script-src or default-src")
    if response.headers.get("X-Frame-Options") != "DENY":
        problems.append("X-Frame-Options is not DENY")
    if response.headers.get("X-Content-Type-Options") != "nosniff":
        problems.append("no X-Content-Type-Options: nosniff")
    return problems


@pytest.mark.parametrize("role", ROLES)
def test_every_page_carries_the_content_security_policy(
    role, stored, member, admin_member, make_user
):
    """Every URL (and each stored object's pages), by GET and POST, with and without
    HX-Request: every text/html answer — pages, fragments, error pages — has the policy."""
    from models_catalog.models import Download
    from servers.models import Conversation, ServerProfile

    client = Client()
    if (user := user_for(role, member, admin_member, make_user)) is not None:
        client.force_login(user)
    paths = [url.path for url in all_urls()] + ["/no-such-page/"]
    if role in ("member", "admin"):
        pks = {o.pk for model in (Download, Conversation) for o in model.objects.all()}
        paths += object_paths(
            {"pk": sorted(pks | {member.pk}), "slug": [p.slug for p in ServerProfile.objects.all()]}
        )
    pages, wrong = 0, []
    for path, method, htmx in itertools.product(paths, ("get", "post"), (False, True)):
        headers = {"HX-Request": "true"} if htmx else {}
        response = getattr(client, method)(path, headers=headers)
        if response.streaming:
            response.close()
        if "text/html" not in response.get("Content-Type", ""):
            continue
        pages += 1
        if problems := page_problems(response):
            wrong.append(f"{method.upper()} {path} {headers or ''}: {'; '.join(problems)}")
    assert pages > (100 if role in ("member", "admin") else 10)
    assert wrong == [], "\n".join(wrong)


def test_the_policy_allows_only_the_portals_own_files():
    from django.conf import settings

    assert settings.SECURE_CSP["script-src"] == ["'self'"]
    assert settings.SECURE_CSP["connect-src"] == ["'self'"]
    assert settings.SECURE_CSP["form-action"] == ["'self'"]
    assert settings.SECURE_CSP["img-src"] == ["'self'", "data:"]


def test_htmx_is_told_not_to_evaluate_code_or_inject_styles(member_client):
    page = member_client.get("/").content.decode()
    config = page.split('<meta name="htmx-config" content=\'', 1)[1].split("'>", 1)[0]
    assert json.loads(config) == {
        "allowEval": False,
        "includeIndicatorStyles": False,
        "allowScriptTags": False,
        "attributesToSettle": ["class", "width", "height"],  # not "style"
    }
    assert page.index('name="htmx-config"') < page.index("htmx-2.0.11.min.js")


# --- cookies --------------------------------------------------------------------------------


def test_logging_in_sets_cookies_no_script_can_read_and_other_sites_do_not_post_with(
    client, member
):
    login_page = client.get("/accounts/login/")
    response = client.post("/accounts/login/", {"login": member.email, "password": PASSWORD})

    assert response.status_code == 302
    for cookie in (
        login_page.cookies["csrftoken"],
        response.cookies["csrftoken"],  # rotated at login
        response.cookies["sessionid"],
    ):
        assert cookie["httponly"] is True, cookie.key
        assert cookie["samesite"] == "Lax", cookie.key
    assert policy(response)  # the redirect too


def test_no_script_of_the_portal_reads_the_csrf_cookie():
    """The CSRF cookie is HttpOnly: scripts take the token from the page (hx-headers, the
    forms' hidden field), never from document.cookie."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    sources = [*(root / "static" / "js").glob("*.js"), *(root / "templates").rglob("*.html")]
    assert sources
    readers = [str(p) for p in sources if "document.cookie" in p.read_text()]
    assert readers == []


def test_production_cookies_are_secure_httponly_and_lax(tmp_path):
    show = (
        "import django, os; os.environ['DJANGO_SETTINGS_MODULE'] = 'config.settings'; "
        "django.setup(); from django.conf import settings as s; "
        "print([s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, s.SESSION_COOKIE_HTTPONLY, "
        "s.CSRF_COOKIE_HTTPONLY, s.SESSION_COOKIE_SAMESITE, s.CSRF_COOKIE_SAMESITE])"
    )
    result = run_python(tmp_path, "-c", show, DJANGO_PRODUCTION="1", DJANGO_SECRET_KEY="x" * 60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[True, True, True, True, 'Lax', 'Lax']"


# --- a form refused by the CSRF check --------------------------------------------------------


def test_a_form_refused_by_the_csrf_check_gets_the_portals_page_saying_what_to_do(member):
    client = Client(enforce_csrf_checks=True)
    client.force_login(member)

    response = client.post("/api-keys/", {"name": "laptop"})

    assert response.status_code == 403
    page = response.content.decode()
    assert "Reload the page and send it again." in page
    assert "<style" not in page  # Django's own page has inline style, refused by the policy
    assert 'href="/servers/"' in page  # inside the portal's frame
    assert page_problems(response) == []


def test_a_script_refused_by_the_csrf_check_gets_json(member):
    client = Client(enforce_csrf_checks=True)
    client.force_login(member)

    response = client.post(
        "/servers/chat/stream/", {"message": "hi"}, headers={"Accept": "text/event-stream"}
    )

    assert response.status_code == 403
    assert "Reload the page" in response.json()["error"]
