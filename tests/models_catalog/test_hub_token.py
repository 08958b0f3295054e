"""The portal's Hugging Face token: admins set it (stored encrypted), check it with whoami and
remove it; gated and private models use it; a missing or wrong token gets a clear message."""

import pytest

from models_catalog import downloads, hub
from models_catalog.downloads import DownloadRefused
from models_catalog.models import Download, HubSettings
from tests.support.fake_hub import (
    GATED_REPO,
    PRIVATE_REPO,
    UNAPPROVED_TOKEN,
    USER_NAME,
    VALID_TOKEN,
    RawJSON,
)

pytestmark = pytest.mark.django_db(transaction=True)

URL = "/models/hub-token/"


def test_members_who_are_not_admins_cannot_see_or_set_the_token(hf, member_client):
    assert member_client.get(URL).status_code == 403
    assert member_client.post(URL, {"action": "save", "token": VALID_TOKEN}).status_code == 403
    assert not HubSettings.objects.exclude(token_encrypted="").exists()


def test_an_admin_sets_a_token_that_is_checked_and_stored_encrypted(hf, admin_client):
    response = admin_client.post(URL, {"action": "save", "token": VALID_TOKEN}, follow=True)
    html = response.content.decode()
    assert f"it belongs to {USER_NAME}" in html
    assert VALID_TOKEN not in html  # never shown back
    row = HubSettings.objects.get()
    assert row.token_encrypted and VALID_TOKEN not in row.token_encrypted
    assert row.checked_user == USER_NAME
    assert hub.hub_token() == VALID_TOKEN
    assert hub.token_source() == "portal"


def test_a_token_the_hub_rejects_is_not_stored(hf, admin_client):
    response = admin_client.post(URL, {"action": "save", "token": "hf_wrong_token_123456"})
    assert response.status_code == 400
    assert "Hugging Face rejected this token" in response.content.decode()
    assert hub.hub_token() is None


@pytest.mark.parametrize(
    ("token", "message"), [("", "Paste a Hugging Face access token"), ("hf_ a b", "without spaces")]
)
def test_a_malformed_token_is_refused_by_the_form(hf, admin_client, token, message):
    response = admin_client.post(URL, {"action": "save", "token": token})
    assert response.status_code == 400
    assert message in response.content.decode()


def test_check_and_remove(hf, admin_client):
    admin_client.post(URL, {"action": "save", "token": VALID_TOKEN})
    checked = admin_client.post(URL, {"action": "check"}, follow=True).content.decode()
    assert f"The token works: it belongs to {USER_NAME}" in checked
    removed = admin_client.post(URL, {"action": "remove"}, follow=True).content.decode()
    assert "removed" in removed
    assert hub.hub_token() is None


def test_a_gated_model_without_a_token_says_an_admin_must_set_one(hf, member):
    with pytest.raises(DownloadRefused) as refused:
        downloads.start_download(GATED_REPO, member)
    assert "This model is gated: an admin must set a Hugging Face token under" in str(refused.value)
    assert "/models/hub-token/" in str(refused.value)


def test_a_gated_model_downloads_with_the_admin_token(hf, admin_client, member):
    admin_client.post(URL, {"action": "save", "token": VALID_TOKEN})
    download, _ = downloads.start_download(GATED_REPO, member)
    assert downloads.run_download(download.pk) == Download.State.COMPLETED
    gated_requests = [r for r in hf.hub.records if "/resolve/" in r.path]
    assert gated_requests
    assert all(r.headers.get("authorization") == f"Bearer {VALID_TOKEN}" for r in gated_requests)


def test_a_token_without_access_to_a_gated_model_says_what_to_do(hf, admin_client, member):
    admin_client.post(URL, {"action": "save", "token": UNAPPROVED_TOKEN})
    with pytest.raises(DownloadRefused, match="has no access to it: accept"):
        downloads.start_download(GATED_REPO, member)


def test_the_environment_token_is_the_fallback(hf, member, settings, admin_client):
    with pytest.raises(DownloadRefused, match="if it is private, an admin must set"):
        downloads.start_download(PRIVATE_REPO, member)
    settings.HF_TOKEN = VALID_TOKEN
    assert hub.token_source() == "environment"
    download, _ = downloads.start_download(PRIVATE_REPO, member)
    assert downloads.run_download(download.pk) == Download.State.COMPLETED
    assert "From the environment" in admin_client.get(URL).content.decode()


def test_a_token_stored_under_an_old_secret_key_is_reported(
    hf, admin_client, admin_member, settings
):
    admin_client.post(URL, {"action": "save", "token": VALID_TOKEN})
    settings.SECRET_KEY = "rotated-" + "x" * 50
    assert hub.hub_token() is None
    admin_client.force_login(admin_member)  # sessions are signed with the old key too
    html = admin_client.get(URL).content.decode()
    assert "cannot be decrypted" in html


@pytest.mark.parametrize(
    ("name", "stored"),
    [
        (RawJSON('"' + "n" * 5000 + '"'), "n" * 200),  # beyond the column (PostgreSQL refused it)
        (RawJSON('"port\\u0000al"'), "portal"),
        (RawJSON("1e309"), ""),
        (RawJSON('{"first": "a"}'), ""),
    ],
)
def test_the_user_name_a_token_check_answers_is_kept_as_text(hf, admin_client, name, stored):
    hf.hub.user_name = name
    response = admin_client.post(URL, {"action": "save", "token": VALID_TOKEN}, follow=True)
    assert response.status_code == 200
    assert HubSettings.objects.get().checked_user == stored


def test_a_token_check_answer_too_deep_to_read_is_explained(hf, admin_client):
    hf.hub.user_name = RawJSON("[" * 200_000 + "]" * 200_000)
    response = admin_client.post(URL, {"action": "save", "token": VALID_TOKEN}, follow=True)
    assert "Saved, but not checked: Hugging Face's answer to the token check cannot be read" in (
        response.content.decode().replace("&#x27;", "'")
    )
