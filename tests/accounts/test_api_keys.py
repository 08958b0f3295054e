"""Personal API keys: created once, shown once, stored hashed, revoked; the gateway's check."""

import hashlib
from datetime import timedelta

import pytest
from django.test import Client
from django.urls import resolve
from django.utils import timezone

from accounts import approval
from accounts.access import is_public, is_self_authenticating
from accounts.api_keys import (
    KEY_PREFIX,
    authenticate_api_key,
    create_api_key,
    hash_key,
    revoke_api_key,
)
from accounts.models import ApiKey
from tests.support.url_walk import all_urls

HTMX = {"HX-Request": "true"}


def test_creating_a_key_shows_it_once(member_client, member):
    response = member_client.post("/api-keys/", {"name": "laptop"})

    page = response.content.decode()
    api_key = ApiKey.objects.get(user=member)
    assert api_key.name == "laptop"
    secret = page.split('id="new-key-secret" value="')[1].split('"')[0]
    assert secret.startswith(KEY_PREFIX) and len(secret) > 40
    assert "will not be shown again" in page and "data-copy" in page
    # Only its keyed hash is stored, and the list shows the prefix only.
    assert api_key.key_hash == hash_key(secret) != secret
    assert secret not in str(ApiKey.objects.values().get())
    assert secret.startswith(api_key.prefix)
    later = member_client.get("/api-keys/").content.decode()
    assert secret not in later and f"{api_key.prefix}…" in later and "laptop" in later


def test_keys_are_hashed_with_hmac_sha256_keyed_by_the_secret_key(settings):
    settings.SECRET_KEY = "one-secret"
    first = hash_key("mlxp_example")
    settings.SECRET_KEY = "another-secret"
    assert hash_key("mlxp_example") != first
    assert len(first) == 64
    assert first != hashlib.sha256(b"mlxp_example").hexdigest()


def test_keys_survive_a_secret_key_rotation_through_fallbacks(settings, member):
    new_key = create_api_key(member, "ci")
    settings.SECRET_KEY_FALLBACKS = [settings.SECRET_KEY]
    settings.SECRET_KEY = "a-brand-new-secret-key"
    assert authenticate_api_key(f"Bearer {new_key.secret}") == member


def test_creating_a_key_with_htmx_returns_the_keys_section(member_client):
    response = member_client.post("/api-keys/", {"name": "ci"}, headers=HTMX)
    fragment = response.content.decode()
    assert fragment.lstrip().startswith('<section id="keys">')
    assert "new-key-secret" in fragment


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "Give the key a name"),
        ("   ", "Give the key a name"),
        ("x" * 65, "Keep the name to 64 characters or fewer"),
    ],
    ids=["empty", "blank", "too-long"],
)
def test_key_names_are_validated_with_a_clear_message(member_client, name, message):
    page = member_client.post("/api-keys/", {"name": name}).content.decode()
    assert message in page
    assert 'aria-invalid="true"' in page
    assert not ApiKey.objects.exists()


def test_key_names_are_unique_per_user(member_client, member, make_user):
    create_api_key(member, "laptop")
    page = member_client.post("/api-keys/", {"name": "Laptop"}).content.decode()
    assert "You already have a key named “Laptop”" in page
    assert ApiKey.objects.filter(user=member).count() == 1
    # Another user may use the same name, and a revoked key frees its name.
    create_api_key(make_user("other@example.com"), "laptop")
    ApiKey.objects.filter(user=member).update(revoked_at=timezone.now())
    member_client.post("/api-keys/", {"name": "laptop"})
    assert ApiKey.objects.filter(user=member, revoked_at__isnull=True).count() == 1


def test_the_list_shows_name_prefix_created_and_last_used(member_client, member):
    new_key = create_api_key(member, "open-webui")
    authenticate_api_key(f"Bearer {new_key.secret}")
    page = member_client.get("/api-keys/").content.decode()
    row = page.split(f'id="api-key-{new_key.api_key.pk}"')[1].split("</tr>")[0]
    assert "open-webui" in row and new_key.api_key.prefix in row
    assert "ago" in row  # last used


def test_revoking_a_key_stops_it_at_once(member_client, member):
    new_key = create_api_key(member, "laptop")
    response = member_client.post(f"/api-keys/{new_key.api_key.pk}/revoke/", headers=HTMX)
    # The row goes away (nothing replaces it); the status line says so, out of band.
    assert response.status_code == 200
    assert response.content.decode().strip() == (
        '<p id="key-status" role="status" class="key-status" hx-swap-oob="true">'
        "Revoked the key “laptop”: requests with it are refused from now on.</p>"
    )
    assert authenticate_api_key(f"Bearer {new_key.secret}") is None
    assert f"api-key-{new_key.api_key.pk}" not in member_client.get("/api-keys/").content.decode()


def test_revoking_the_key_just_shown_takes_its_secret_off_the_page(member_client, member):
    older = create_api_key(member, "older")
    page = member_client.post("/api-keys/", {"name": "new"}, headers=HTMX).content.decode()
    shown = ApiKey.objects.get(name="new")
    # Only the shown key's form redraws the section (and so drops the banner); revoking
    # another key leaves the banner, whose secret may not be copied yet, where it is.
    row = page.split(f'id="api-key-{shown.pk}"')[1].split("</tr>")[0]
    assert 'hx-target="#keys"' in row
    other_row = page.split(f'id="api-key-{older.api_key.pk}"')[1].split("</tr>")[0]
    assert 'hx-target="closest tr"' in other_row
    response = member_client.post(
        f"/api-keys/{shown.pk}/revoke/", headers={**HTMX, "HX-Target": "keys"}
    )
    section = response.content.decode()
    assert section.lstrip().startswith('<section id="keys">')
    assert 'id="new-key-secret"' not in section and "copy it now" not in section
    assert "Revoked the key “new”" in section
    assert (
        f'id="api-key-{shown.pk}"' not in section and f'id="api-key-{older.api_key.pk}"' in section
    )


def test_users_cannot_revoke_or_see_each_others_keys(member_client, make_user):
    other_key = create_api_key(make_user("other@example.com"), "theirs")
    assert member_client.post(f"/api-keys/{other_key.api_key.pk}/revoke/").status_code == 404
    assert "theirs" not in member_client.get("/api-keys/").content.decode()
    assert authenticate_api_key(f"Bearer {other_key.secret}") is not None


# The gateway's helper ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [None, "", "Bearer", "Bearer ", "Basic abc", "Bearer mlxp_not-a-real-key", "Bearer sk-123"],
)
def test_authenticate_api_key_refuses_missing_malformed_and_unknown_keys(db, header):
    assert authenticate_api_key(header) is None


def test_authenticate_api_key_accepts_a_live_key_of_an_approved_user(member):
    new_key = create_api_key(member, "laptop")
    assert authenticate_api_key(f"Bearer {new_key.secret}") == member
    assert authenticate_api_key(f"bearer   {new_key.secret}  ") == member


@pytest.mark.parametrize("status", ["pending", "disabled"])
def test_authenticate_api_key_refuses_users_who_are_not_approved(make_user, status):
    user = make_user("someone@example.com")
    new_key = create_api_key(user, "laptop")
    type(user).objects.filter(pk=user.pk).update(status=status)
    assert authenticate_api_key(f"Bearer {new_key.secret}") is None


def test_authenticate_api_key_refuses_inactive_users(member):
    new_key = create_api_key(member, "laptop")
    type(member).objects.filter(pk=member.pk).update(is_active=False)
    assert authenticate_api_key(f"Bearer {new_key.secret}") is None


def test_last_used_is_recorded_at_a_bounded_rate(member):
    new_key = create_api_key(member, "laptop")
    header = f"Bearer {new_key.secret}"
    authenticate_api_key(header)
    first_use = ApiKey.objects.get().last_used_at
    assert first_use is not None

    authenticate_api_key(header)
    assert ApiKey.objects.get().last_used_at == first_use  # not rewritten on every request

    ApiKey.objects.update(last_used_at=first_use - timedelta(minutes=5))
    authenticate_api_key(header)
    assert ApiKey.objects.get().last_used_at > first_use - timedelta(minutes=1)


# The /v1/ gate in the access middleware ---------------------------------------------------


def test_v1_without_a_key_answers_401_in_openai_error_shape(db):
    response = Client().get("/v1/models")
    assert response.status_code == 401
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}  # OpenAI's four, as the gateway's
    assert error["code"] == "invalid_api_key"
    assert "Authorization: Bearer" in error["message"]


def test_v1_ignores_a_session_and_needs_a_key(member_client):
    assert member_client.get("/v1/models").status_code == 401


def test_v1_lets_a_valid_key_through_without_csrf(member):
    new_key = create_api_key(member, "laptop")
    client = Client(enforce_csrf_checks=True)
    headers = {"Authorization": f"Bearer {new_key.secret}"}
    # Getting past the gate: the gateway itself answers (a model list; a 400 for no body).
    assert client.get("/v1/models", headers=headers).status_code == 200
    assert client.post("/v1/chat/completions", {}, headers=headers).status_code == 400


def test_v1_tells_the_holder_of_a_revoked_key_so(admin_member, member):
    keys = [create_api_key(member, name) for name in ("laptop", "ci")]
    revoke_api_key(keys[0].api_key)
    response = Client().get("/v1/models", headers={"Authorization": f"Bearer {keys[0].secret}"})
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["code"] == "invalid_api_key"
    assert error["message"].startswith("This API key was revoked on ")
    assert "Create a new one on your API keys page." in error["message"]
    # Disabling the account revokes its keys (approval.save_status): the answer says both.
    approval.disable([member], by=admin_member)
    response = Client().get("/v1/models", headers={"Authorization": f"Bearer {keys[1].secret}"})
    assert response.status_code == 401
    assert response.json()["error"]["message"] == (
        "This API key was revoked, and the account it belongs to is disabled."
    )


def test_v1_tells_a_user_disabled_behind_the_portals_back_their_account_is_refused(member):
    new_key = create_api_key(member, "laptop")
    type(member).objects.filter(pk=member.pk).update(status="disabled")  # keys not revoked
    response = Client().get("/v1/models", headers={"Authorization": f"Bearer {new_key.secret}"})
    assert response.status_code == 403
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("permission_error", "account_not_approved")
    assert error["message"].startswith("The account this API key belongs to is disabled.")


def test_v1_tells_a_pending_user_their_account_awaits_approval(member):
    new_key = create_api_key(member, "laptop")
    type(member).objects.filter(pk=member.pk).update(status="pending")
    response = Client().get("/v1/models", headers={"Authorization": f"Bearer {new_key.secret}"})
    assert response.status_code == 403
    assert "waiting for an admin's approval" in response.json()["error"]["message"]


def test_the_right_key_of_a_disabled_user_is_not_counted_as_a_failed_attempt(member, settings):
    settings.API_KEY_FAILURES_PER_MINUTE = 2
    new_key = create_api_key(member, "laptop")
    type(member).objects.filter(pk=member.pk).update(status="disabled")
    client = Client(REMOTE_ADDR="198.51.100.8")
    headers = {"Authorization": f"Bearer {new_key.secret}"}
    assert [client.get("/v1/models", headers=headers).status_code for _ in range(4)] == [403] * 4


ANTHROPIC_ERROR_TYPES = {401: "authentication_error", 403: "permission_error"}


def _v1_urls():
    """Every /v1 route but the public ones (the OpenAPI description needs no key)."""
    v1 = [url for url in all_urls() if url.path.startswith("/v1/")]
    keyed = [url for url in v1 if not is_public(resolve(url.path).func)]
    assert keyed and all(is_self_authenticating(resolve(url.path).func) for url in keyed)
    return keyed


@pytest.mark.parametrize(
    "how, status, code",
    [
        ("revoked", 401, "invalid_api_key"),
        ("disabled", 401, "invalid_api_key"),  # disabling revokes the keys
        ("pending", 403, "account_not_approved"),
        ("inactive", 403, "account_not_approved"),
        ("deleted", 401, "invalid_api_key"),
    ],
)
def test_every_v1_route_refuses_a_dead_key_at_once(admin_member, member, how, status, code):
    secret = create_api_key(member, "laptop").secret
    headers = {"Authorization": f"Bearer {secret}"}
    client = Client()
    assert client.get("/v1/models", headers=headers).status_code == 200  # alive until now
    if how == "revoked":
        revoke_api_key(member.api_keys.get())
    elif how == "disabled":
        approval.disable([member], by=admin_member)
    elif how == "deleted":
        member.delete()
    else:  # set behind the portal's back (the Django admin, a shell): the gate still sees it
        type(member).objects.filter(pk=member.pk).update(
            **({"status": "pending"} if how == "pending" else {"is_active": False})
        )
    urls = _v1_urls()
    assert {"/v1/models", "/v1/chat/completions", "/v1/completions"} <= {u.path for u in urls}
    for url in urls:
        for method in ("get", "post"):
            response = getattr(client, method)(url.path, headers=headers)
            assert response.status_code == status, f"{method.upper()} {url}"
            error = response.json()["error"]
            if url.path.startswith("/v1/messages"):  # Anthropic's shape: a type, no code
                assert response.json()["type"] == "error"
                assert error["type"] == ANTHROPIC_ERROR_TYPES[status], url
            else:
                assert error["code"] == code


def _bad_key(n: int) -> dict:
    return {"Authorization": f"Bearer mlxp_{'x' * 40}{n:03d}"}


def test_a_burst_of_bad_keys_gets_429_in_openai_shape(db, settings):
    settings.API_KEY_FAILURES_PER_MINUTE = 5
    client = Client(REMOTE_ADDR="198.51.100.7")
    statuses = [client.get("/v1/models", headers=_bad_key(n)).status_code for n in range(8)]
    assert statuses == [401] * 5 + [429] * 3
    response = client.post("/v1/chat/completions", "{}", "application/json", headers=_bad_key(9))
    assert response.status_code == 429
    assert int(response["Retry-After"]) > 0
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == "rate_limit_exceeded"
    assert "Too many failed API key attempts" in error["message"]


def test_throttling_counts_per_address_and_spares_valid_keys(member, settings):
    settings.API_KEY_FAILURES_PER_MINUTE = 3
    attacker = Client(REMOTE_ADDR="198.51.100.7")
    for n in range(5):
        attacker.get("/v1/models", headers=_bad_key(n))
    assert attacker.get("/v1/models", headers=_bad_key(99)).status_code == 429
    # Another address is not affected, and a real key works even from the throttled address
    # (a team behind one proxy shares it; 256-bit keys cannot be guessed anyway).
    assert (
        Client(REMOTE_ADDR="198.51.100.8").get("/v1/models", headers=_bad_key(1)).status_code == 401
    )
    secret = create_api_key(member, "laptop").secret
    good = {"Authorization": f"Bearer {secret}"}
    assert attacker.get("/v1/models", headers=good).status_code == 200


def test_requests_without_any_key_are_not_counted_as_attempts(db, settings):
    settings.API_KEY_FAILURES_PER_MINUTE = 2
    client = Client(REMOTE_ADDR="198.51.100.7")
    assert {client.get("/v1/models").status_code for _ in range(5)} == {401}
