"""Default-deny: every URL of the project is refused to anonymous, pending and disabled users,
except the explicit allow-list in accounts/access.py."""

import pytest
from django.test import Client
from django.urls import resolve, reverse

from accounts import access
from tests.support.url_walk import all_urls

URLS = all_urls()


def _view(url):
    return resolve(url.path).func


# Marked on their views (`@public`), or django-allauth's pages listed by name.
PUBLIC_VIEWS = frozenset(url.name for url in URLS if access.is_public(_view(url)))
OPEN_TO_ANYONE = access.PUBLIC_URL_NAMES | PUBLIC_VIEWS
OPEN_TO_SIGNED_IN = OPEN_TO_ANYONE | access.STATUS_URL_NAMES
# The gateway's keyed views authenticate their requests themselves (an API key, no session).
SELF_AUTHENTICATING = frozenset(
    url.name for url in URLS if access.is_self_authenticating(_view(url))
)


def _is_keyed(url) -> bool:
    return url.name in SELF_AUTHENTICATING


def _refused(response) -> bool:
    """Refused means: no page content for this URL (a redirect away, 401, 403 or HX-Redirect)."""
    if "HX-Redirect" in response.headers:
        return not response.content
    return response.status_code in (301, 302, 303, 401, 403)


def test_the_public_allow_list_is_exactly_the_login_and_status_pages():
    # Marking a view public (or listing a name) opens a URL to the world: this test asks for a
    # second look.
    expected_public_views = {
        "healthz",
        "metrics",  # the view checks localhost or its admin token (tests/servers/test_metrics.py)
        "hop",  # the view checks this host's hop token (tests/hosts/test_hop.py)
        "v1:openapi",  # the gateway's OpenAPI description: no secret (docs/gateway.md)
        # Single sign-on: off to the identity provider, and back with its code (accounts/sso/).
        "openid_connect_login",
        "openid_connect_callback",
    }
    expected_allauth = {
        "account_login",
        "account_logout",
        "account_signup",
        "account_inactive",
        "account_email_verification_sent",
        "account_confirm_email",
        "account_reset_password",
        "account_reset_password_done",
        "account_reset_password_from_key",
        "account_reset_password_from_key_done",
        "socialaccount_login_cancelled",
        "socialaccount_login_error",
    }
    expected_status = {"accounts:pending", "accounts:disabled"}
    # Views that take no session but an API key, checked by the gateway's decorator.
    # v1:model has an argument, but no OBJECT_URLS entry: keyed views are not member pages;
    # a profile the caller may not see is a 404 (tests/servers/test_gateway_dialects.py).
    expected_keyed = {
        "v1:models", "v1:model", "v1:chat-completions", "v1:completions", "v1:embeddings",
        "v1:audio-transcriptions", "v1:messages", "v1:count-tokens", "v1:responses",
        "v1:not-found",
    }  # fmt: skip
    assert sorted(PUBLIC_VIEWS) == sorted(expected_public_views)
    assert sorted(access.PUBLIC_URL_NAMES) == sorted(expected_allauth)
    assert sorted(access.STATUS_URL_NAMES) == sorted(expected_status)
    assert sorted(SELF_AUTHENTICATING) == sorted(expected_keyed)


def test_the_walk_covers_every_url_pattern_including_later_apps():
    names = {url.name for url in URLS}
    assert {"home", "accounts:users", "accounts:api-keys", "admin:index"} <= names
    assert len(URLS) >= 40


REQUESTS = [
    (method, headers)
    for method in ("get", "post")
    for headers in ({}, {"HX-Request": "true"}, {"Accept": "application/json"})
]


def walk(client: Client, urls) -> list[tuple[str, str, dict, object]]:
    """Request every URL in every way; return (method, url, headers, response) tuples."""
    return [
        (method, url, headers, getattr(client, method)(url.path, headers=headers))
        for url in urls
        for method, headers in REQUESTS
    ]


def redirect_target(response) -> str:
    """Where the answer sends the browser: HX-Redirect, Location, or the `redirect` of the JSON
    a script that does not accept HTML gets."""
    target = response.headers.get("HX-Redirect") or response.headers.get("Location")
    if not target and response.headers.get("Content-Type") == "application/json":
        target = response.json().get("redirect")
    return target or ""


def _describe(method, url, headers, response) -> str:
    return f"{method.upper()} {url} {headers or ''} -> {response.status_code}"


def test_anonymous_users_are_refused_every_protected_url(db):
    protected = [url for url in URLS if url.name not in OPEN_TO_ANYONE]
    answers = walk(Client(), protected)

    leaks = [_describe(*answer) for answer in answers if not _refused(answer[-1])]
    assert leaks == [], "Protected URLs answered anonymous users:\n" + "\n".join(leaks)
    for _, url, _, response in answers:
        if _is_keyed(url):  # API clients get 401 with OpenAI's error, no redirect
            assert response.status_code == 401 and response.json()["error"]
            continue
        assert redirect_target(response).startswith("/accounts/login/?next="), url


@pytest.mark.parametrize("status", ["pending", "disabled"])
def test_pending_and_disabled_users_are_refused_every_protected_url(make_user, status):
    client = Client()
    # Even a pending or disabled *admin* gets nothing but their status page.
    client.force_login(make_user(f"{status}@example.com", status=status, staff=True))
    protected = [url for url in URLS if url.name not in OPEN_TO_SIGNED_IN]
    answers = walk(client, protected)

    leaks = [_describe(*answer) for answer in answers if not _refused(answer[-1])]
    assert leaks == [], f"Protected URLs answered a {status} user:\n" + "\n".join(leaks)
    wrong_target = [
        _describe(*answer)
        for answer in answers
        if answer[1].name != "account_login"  # allauth sends signed-in users home first
        and redirect_target(answer[-1]) not in ("", f"/status/{status}/")
    ]
    assert wrong_target == []


def _staff_only(url) -> bool:
    match = resolve(url.path)
    return access.is_staff_only(match.func, match.namespace)


STAFF_ONLY = [url for url in URLS if _staff_only(url)]


def test_admin_pages_are_found_by_their_marking_not_a_list():
    names = {url.name for url in STAFF_ONLY}
    assert {"accounts:users", "accounts:user-action", "accounts:pending-badge"} <= names
    assert {"accounts:user-sharing", "accounts:groups", "accounts:group"} <= names
    assert {"accounts:group-rename", "accounts:group-members", "accounts:group-limits"} <= names
    assert "accounts:group-delete" in names
    assert "catalog:hub-token" in names  # the portal's Hugging Face token
    assert all(url.name not in OPEN_TO_SIGNED_IN for url in STAFF_ONLY)


def test_staff_only_urls_answer_403_to_approved_members(member_client):
    answers = walk(member_client, STAFF_ONLY)
    wrong = [_describe(*answer) for answer in answers if answer[-1].status_code != 403]
    assert wrong == []


def test_anonymous_page_requests_go_to_login_with_next(client):
    response = client.get("/api-keys/?x=1")
    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/?next=/api-keys/%3Fx%3D1"


def test_htmx_requests_without_a_session_get_hx_redirect_to_login_not_a_form(client):
    response = client.get(
        "/users/pending-badge/",
        headers={"HX-Request": "true", "HX-Current-URL": "http://testserver/users/?status=x"},
    )
    assert response["HX-Redirect"] == "/accounts/login/?next=/users/%3Fstatus%3Dx"
    assert response.content == b""
    assert b"<form" not in response.content


def test_an_expired_session_on_an_htmx_request_redirects_the_whole_page(admin_client):
    assert admin_client.get("/users/pending-badge/", headers={"HX-Request": "true"}).status_code
    admin_client.session.flush()
    admin_client.cookies.clear()  # what an expired session cookie amounts to
    response = admin_client.get("/users/pending-badge/", headers={"HX-Request": "true"})
    assert response["HX-Redirect"].startswith("/accounts/login/")


def test_a_script_without_a_session_gets_401_json_naming_the_login_page(client):
    # The chat page's fetch(): a redirect would be followed, and the login form read as the reply.
    response = client.post(
        "/servers/chat/stream/",
        {"message": "hi"},
        headers={"Accept": "text/event-stream", "Referer": "http://testserver/servers/chat/7/"},
    )
    assert response.status_code == 401
    assert response.json() == {
        "error": "Your session has ended: log in again.",
        "redirect": "/accounts/login/?next=/servers/chat/7/",
    }


def test_a_form_posted_without_a_session_comes_back_to_its_page_after_login(client):
    response = client.post(
        "/api-keys/", {"name": "x"}, headers={"Referer": "http://testserver/api-keys/?a=1"}
    )
    assert response["Location"] == "/accounts/login/?next=/api-keys/%3Fa%3D1"
    # Another site's Referer is not followed: next is the URL posted to.
    response = client.post(
        "/api-keys/", {"name": "x"}, headers={"Referer": "https://evil.example/api-keys/"}
    )
    assert response["Location"] == "/accounts/login/?next=/api-keys/"


def test_a_script_of_a_pending_user_gets_403_json_naming_the_status_page(client, make_user):
    client.force_login(make_user("waiting@example.com", status="pending"))
    response = client.post(
        "/servers/chat/stream/", {"message": "hi"}, headers={"Accept": "text/event-stream"}
    )
    assert response.status_code == 403
    assert response.json() == {
        "error": "Your account is awaiting approval.",
        "redirect": "/status/pending/",
    }


def test_pending_users_who_log_in_see_only_the_waiting_page(client, make_user):
    make_user("waiting@example.com", status="pending")
    response = client.post(
        "/accounts/login/",
        {"login": "waiting@example.com", "password": "correct-horse-battery-staple"},
        follow=True,
    )
    assert response.redirect_chain[-1][0] == "/status/pending/"
    page = response.content.decode()
    assert "awaiting approval" in page
    assert "API keys" not in page and "Users" not in page
    assert "Signed in" not in page  # no welcome that contradicts the waiting page


def test_disabled_users_who_log_in_see_only_the_disabled_page(client, make_user):
    make_user("gone@example.com", status="disabled")
    response = client.post(
        "/accounts/login/",
        {"login": "gone@example.com", "password": "correct-horse-battery-staple"},
        follow=True,
    )
    assert response.redirect_chain[-1][0] == "/status/disabled/"
    assert "disabled" in response.content.decode()


def test_pending_users_get_403_for_non_page_requests(client, make_user):
    client.force_login(make_user("waiting@example.com", status="pending"))
    assert client.post("/api-keys/", {"name": "x"}).status_code == 403
    assert client.get("/api-keys/", headers={"Accept": "application/json"}).status_code == 403


def test_status_pages_send_approved_users_home(member_client):
    assert member_client.get("/status/pending/")["Location"] == "/"
    assert member_client.get("/status/disabled/")["Location"] == "/"


def test_each_status_page_sends_the_other_status_to_its_own_page(client, make_user):
    client.force_login(make_user("waiting@example.com", status="pending"))
    assert client.get("/status/disabled/")["Location"] == "/status/pending/"


def test_approved_members_and_admins_reach_their_pages(member_client, admin_member):
    assert member_client.get("/").status_code == 200
    assert member_client.get("/api-keys/").status_code == 200
    admin = Client()
    admin.force_login(admin_member)
    assert admin.get("/users/").status_code == 200
    assert admin.get("/groups/").status_code == 200
    assert admin.get("/admin/").status_code == 200


def test_static_files_and_healthz_need_no_login(client):
    assert client.get("/healthz").status_code in (200, 503)
    assert client.get("/static/css/portal.css").status_code in (200, 404)
    assert client.get("/static/css/portal.css").status_code != 302


def test_metrics_has_its_own_authentication_localhost_or_token(client):
    # Public to the middleware; the view answers only localhost or the METRICS_TOKEN bearer.
    assert client.get("/metrics", REMOTE_ADDR="203.0.113.9").status_code == 403
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 200


# --- the matrix: approved member, owner, admin over every URL that names an object ------------

OWNER = "owner"  # only the object's owner: others get 404 or 403
OWNER_OR_ADMIN = "owner-or-admin"
ANY_MEMBER = "any-member"

# Every URL with arguments that approved members reach names the object it acts on and who may
# act on it. A new route with arguments fails the first test below until it is listed here.
OBJECT_URLS: dict[str, tuple[str, str]] = {
    "accounts:api-key-revoke": ("api_key", OWNER),
    "servers:chat-conversation": ("conversation", OWNER),
    "servers:chat-rename": ("conversation", OWNER),
    "servers:chat-delete": ("conversation", OWNER),
    "servers:chat-settings": ("conversation", OWNER),
    "servers:chat-stopped": ("conversation", OWNER),
    "servers:chat-export-md": ("conversation", OWNER),
    "servers:chat-export-json": ("conversation", OWNER),
    "servers:chat-image": ("image", OWNER),
    "servers:chat-image-full": ("image", OWNER),
    "servers:profile-edit": ("profile", OWNER_OR_ADMIN),
    "servers:profile-delete": ("profile", OWNER_OR_ADMIN),
    "servers:route-edit": ("route", OWNER_OR_ADMIN),
    "servers:route-delete": ("route", OWNER_OR_ADMIN),
    "catalog:download-cancel": ("download", OWNER_OR_ADMIN),
    # Shared on purpose (SPEC §3 to §5): any member runs any server and copies any profile, and
    # any member may pause, resume or retry a download everyone waits for.
    "servers:profile-duplicate": ("profile", ANY_MEMBER),
    "servers:server-start": ("profile", ANY_MEMBER),
    "servers:server-stop": ("profile", ANY_MEMBER),
    "servers:server-restart": ("profile", ANY_MEMBER),
    "servers:log": ("profile", ANY_MEMBER),
    "catalog:download-pause": ("download", ANY_MEMBER),
    "catalog:download-resume": ("download", ANY_MEMBER),
    "catalog:download-retry": ("download", ANY_MEMBER),
    "catalog:model-detail": ("repo", ANY_MEMBER),
}
MEMBER_URLS = [
    url
    for url in URLS
    if url.name not in OPEN_TO_SIGNED_IN and not _staff_only(url) and not _is_keyed(url)
]


def test_every_member_url_with_arguments_says_whose_object_it_acts_on():
    unlisted = [str(url) for url in MEMBER_URLS if url.params and url.name not in OBJECT_URLS]
    assert unlisted == [], "Classify these routes in OBJECT_URLS:\n" + "\n".join(unlisted)
    unknown = set(OBJECT_URLS) - {url.name for url in MEMBER_URLS}
    assert unknown == set()


@pytest.fixture
def owned(member, hub, settings, tmp_path):
    """One object of each kind, all belonging to `member` (the owner). Pages that ask the Hub
    ask the local fake one (nothing leaves the machine)."""
    settings.HF_ENDPOINT = hub.url
    settings.HF_HUB_CACHE = tmp_path / "hf-cache"
    settings.HF_TOKEN = ""
    from accounts.api_keys import create_api_key
    from models_catalog.models import Download, Host
    from servers.models import Conversation, MessageImage, Route, ServerProfile
    from tests.accounts.conftest import tiny_image

    host = Host.objects.this_machine()
    profile = ServerProfile.objects.create(
        name="Owned", slug="owned", model_id="acme/tiny", host=host, port=18123, owner=member
    )
    route = Route.objects.create(name="owned-route", owner=member)
    conversation = Conversation.objects.create(user=member, profile=profile, title="Mine")
    route.members.create(profile=profile)
    return {
        "profile": profile,
        "route": route,
        "conversation": conversation,
        "image": MessageImage.objects.create(
            message=conversation.messages.create(role="user", content="Look"),
            **tiny_image("mine.png"),
        ),
        "download": Download.objects.create(
            repo_id="acme/tiny", revision="a" * 40, host=host, requested_by=member
        ),
        "api_key": create_api_key(member, "mine").api_key,
        "repo": None,
    }


def _object_path(url, owned) -> str:
    kind, _ = OBJECT_URLS[url.name]
    obj = owned[kind]
    if kind == "repo":
        return reverse(url.name, kwargs={"repo_id": "test-org/tiny-llama"})
    kwargs = {"slug": obj.slug} if "slug" in url.params else {"pk": obj.pk}
    return reverse(url.name, kwargs=kwargs)


def _snapshot(owned) -> dict:
    """What must not change when someone is refused: each object, as stored."""
    from django.forms.models import model_to_dict

    return {
        kind: model_to_dict(type(obj).objects.get(pk=obj.pk))
        for kind, obj in owned.items()
        if obj is not None
    }


def _object_walk(client, owned, rule, methods=("get", "post")):
    answers = []
    for url in MEMBER_URLS:
        if url.name not in OBJECT_URLS or OBJECT_URLS[url.name][1] != rule:
            continue
        path = _object_path(url, owned)
        for method, headers in REQUESTS:
            if method in methods:
                response = getattr(client, method)(path, headers=headers)
                answers.append((method, f"{path} ({url.name})", headers, response))
    return answers


@pytest.mark.parametrize("rule", [OWNER, OWNER_OR_ADMIN])
def test_other_members_are_refused_owner_only_actions_and_nothing_changes(make_user, owned, rule):
    other = Client()
    other.force_login(make_user("other@example.com"))
    before = _snapshot(owned)

    answers = _object_walk(other, owned, rule)

    assert answers
    wrong = [
        f"{method.upper()} {path} {headers or ''} -> {response.status_code}"
        for method, path, headers, response in answers
        # 405: a GET of a POST-only action is refused before anything is looked up.
        if response.status_code not in (403, 404) and (method, response.status_code) != ("get", 405)
    ]
    assert wrong == [], "Another member reached someone's object:\n" + "\n".join(wrong)
    assert _snapshot(owned) == before


def test_owners_reach_their_own_objects(member_client, owned):
    answers = _object_walk(member_client, owned, OWNER, methods=("get",))
    answers += _object_walk(member_client, owned, OWNER_OR_ADMIN, methods=("get",))
    # GET of a POST-only action answers 405: allowed, just not that way.
    wrong = [
        f"GET {path} {headers or ''} -> {response.status_code}"
        for _, path, headers, response in answers
        if response.status_code in (401, 403, 404)
    ]
    assert wrong == []


def test_admins_may_change_any_profile_or_download_but_not_read_private_chats(admin_client, owned):
    shared = _object_walk(admin_client, owned, OWNER_OR_ADMIN, methods=("get",))
    assert [r.status_code for *_, r in shared if r.status_code in (401, 403, 404)] == []
    private = _object_walk(admin_client, owned, OWNER)
    assert {r.status_code for *_, r in private} <= {403, 404, 405}


@pytest.mark.parametrize("who", ["member", "admin"])
def test_no_url_answers_an_error_page_to_approved_users(make_user, owned, who):
    """Every URL, with sample arguments and with real objects, as a page, HTMX and JSON:
    the test client re-raises a view's exception, so a 500 fails here with its traceback."""
    client = Client()
    client.force_login(make_user(f"{who}-walker@example.com", staff=who == "admin"))
    # /healthz answers 503 by design while no worker runs (tests/ops/test_healthz.py).
    paths = [url.path for url in URLS if not _is_keyed(url) and url.name != "healthz"]
    paths += [_object_path(url, owned) for url in MEMBER_URLS if url.name in OBJECT_URLS]
    errors = []
    for path in paths:
        for headers in ({}, {"HX-Request": "true"}, {"Accept": "application/json"}):
            response = client.get(path, headers=headers)
            if response.status_code >= 500:
                errors.append(f"GET {path} {headers} -> {response.status_code}")
    assert errors == []


def test_a_superuser_without_staff_flag_has_the_same_admin_rights(make_user, owned):
    """The Django admin can leave `is_staff` off a superuser: the portal treats either flag as
    admin (User.is_admin) everywhere — the middleware and every object permission alike."""
    user = make_user("root@example.com")
    type(user).objects.filter(pk=user.pk).update(is_superuser=True, is_staff=False)
    client = Client()
    client.force_login(user)

    shared = _object_walk(client, owned, OWNER_OR_ADMIN, methods=("get",))
    assert shared
    assert [r.status_code for *_, r in shared if r.status_code in (401, 403, 404)] == []
    private = _object_walk(client, owned, OWNER)
    assert {r.status_code for *_, r in private} <= {403, 404, 405}
    assert client.get(reverse("accounts:users")).status_code == 200
    assert client.get(reverse("accounts:groups")).status_code == 200


def test_members_read_only_the_audit_entries_about_their_account_and_what_they_own(
    member, admin_client, admin_member, make_user
):
    from accounts.audit import log as audit

    member_client = Client()
    member_client.force_login(member)
    other = make_user("other@example.com")
    about_me = audit.record(admin_member, audit.Action.APPROVE, member)
    by_me = audit.record(member, audit.Action.KEY_CREATE, member)
    about_other = audit.record(admin_member, audit.Action.DISABLE, other)
    by_other = audit.record(other, audit.Action.KEY_CREATE, other)
    system_about_other = audit.record(
        audit.SUPERVISOR,
        audit.Action.SERVER_RESTART,
        audit.Target("server profile", "1", "Theirs", other.pk),
    )
    page = member_client.get(reverse("accounts:audit"))
    assert {e.pk for e in page.context["page"]} == {about_me.pk, by_me.pk}
    export = member_client.get(reverse("accounts:audit-export")).content.decode()
    assert "other@example.com" not in export and "Theirs" not in export
    # No filter reaches them: a member has no person filter, and the others match nothing.
    assert "person" not in page.context["form"].fields
    theirs = member_client.get(reverse("accounts:audit"), {"object": "Theirs", "person": "other"})
    assert list(theirs.context["page"]) == []
    everyone = admin_client.get(reverse("accounts:audit")).context["page"]
    assert {e.pk for e in everyone} >= {about_other.pk, by_other.pk, system_about_other.pk}
