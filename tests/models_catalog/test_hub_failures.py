"""The Hub being unreachable, slow, rate-limiting or answering 401/404/5xx is a normal state:
typed errors with clear messages, pages that say so (never a 500), and what the portal already
knows keeps working."""

import socket

import pytest

from models_catalog import catalog, hub
from models_catalog.catalog import SearchQuery
from models_catalog.models import CatalogModel
from tests.models_catalog.conftest import GIB, put_in_local_cache

pytestmark = pytest.mark.django_db


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.mark.parametrize(
    ("status", "error_type", "words"),
    [
        (429, hub.HubRateLimited, "rate-limiting this portal: try again in 7 seconds"),
        (401, hub.HubAuthRequired, "needs a Hugging Face token, set by an admin"),
        (500, hub.HubServerError, "server error (500)"),
        (503, hub.HubServerError, "usually temporary"),
    ],
)
def test_listing_failures_become_typed_errors(catalog_hub, status, error_type, words):
    catalog_hub.fail_status = status
    catalog_hub.retry_after = 7
    with pytest.raises(error_type) as info:
        hub.list_models_page()
    assert words in info.value.message
    assert catalog_hub.count("GET", "/api/models") == 1  # no hidden retries


def test_a_rate_limit_without_retry_after_says_a_minute(catalog_hub):
    catalog_hub.fail_status = 429
    catalog_hub.retry_after = ""
    with pytest.raises(hub.HubRateLimited) as info:
        hub.list_models_page()
    assert "try again in a minute" in info.value.message


def test_a_slow_hub_times_out(catalog_hub, settings):
    settings.HUB_TIMEOUT = 0.3
    catalog_hub.latency = 1.0
    with pytest.raises(hub.HubTimeout) as info:
        hub.list_models_page()
    assert "did not answer within 0.3 s" in info.value.message


def test_an_unreachable_hub(catalog_hub, settings):
    settings.HF_ENDPOINT = closed_port_url()
    with pytest.raises(hub.HubUnreachable) as info:
        hub.list_models_page()
    assert "cannot be reached" in info.value.message


def test_unknown_model_is_not_found(catalog_hub):
    with pytest.raises(hub.HubNotFound) as info:
        hub.model_info("nobody/no-such-model")
    assert "No model named nobody/no-such-model" in info.value.message


def test_private_model_without_token_needs_one(catalog_hub):
    with pytest.raises(hub.HubAuthRequired) as info:
        hub.model_info("test-org/tiny-llama-private")
    assert "needs a Hugging Face token, set by an admin" in info.value.message


def test_gated_files_need_a_token_and_a_token_is_sent_when_set(catalog_hub, settings):
    with pytest.raises(hub.HubAuthRequired):
        hub.fetch_config("test-org/tiny-llama-gated")
    from tests.support.fake_hub import VALID_TOKEN

    settings.HF_TOKEN = VALID_TOKEN
    assert hub.fetch_config("test-org/tiny-llama-gated").config["model_type"] == "llama"
    assert catalog_hub.records[-1].headers["authorization"] == f"Bearer {VALID_TOKEN}"


def test_a_wrong_token_is_reported_for_the_admin(catalog_hub, settings):
    settings.HF_TOKEN = "hf_not_a_token_the_hub_knows"
    with pytest.raises(hub.HubAuthRequired) as info:
        hub.list_models_page()
    assert "an admin should check the Hugging Face token" in info.value.message


def test_search_falls_back_to_stored_models_when_the_hub_fails(catalog_hub):
    catalog.search(SearchQuery(text="qwen3"), 32 * GIB)
    catalog_hub.fail_status = 503
    results = catalog.search(SearchQuery(text="qwen3", sort="downloads"), 32 * GIB)
    assert isinstance(results.error, hub.HubServerError)
    assert results.offline and results.models
    assert all("qwen3" in m.repo_id.lower() for m in results.models)
    downloads = [m.downloads for m in results.models]
    assert downloads == sorted(downloads, reverse=True)


def test_a_page_link_the_hub_rejects_is_explained(catalog_hub):
    results = catalog.search(SearchQuery(cursor="bm90LWEtY3Vyc29y"), 32 * GIB)
    assert isinstance(results.error, hub.HubBadRequest)
    assert "start again from page 1" in results.error.message
    assert not results.offline


# --- the pages ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "words"),
    [
        (429, "try again in 1 second."),
        (401, "needs a Hugging Face token, set by an admin"),
        (500, "server error (500)"),
    ],
)
def test_search_page_shows_hub_failures(catalog_hub, member_client, host, status, words):
    catalog_hub.fail_status = status
    response = member_client.get("/models/", {"q": "qwen"})
    assert response.status_code == 200
    assert words in response.text
    assert 'role="alert"' in response.text


def test_search_page_when_the_hub_is_slow(catalog_hub, member_client, host, settings):
    settings.HUB_TIMEOUT = 0.3
    catalog_hub.latency = 1.0
    response = member_client.get("/models/", {"q": "qwen"}, headers={"HX-Request": "true"})
    assert response.status_code == 200
    assert "did not answer within 0.3 s" in response.text


def test_search_page_when_the_hub_is_unreachable_shows_what_is_known(
    catalog_hub, member_client, host, settings
):
    catalog.search(SearchQuery(text="gemma"), 32 * GIB)
    settings.HF_ENDPOINT = closed_port_url()
    response = member_client.get("/models/", {"q": "gemma"})
    assert response.status_code == 200
    assert "cannot be reached" in response.text
    assert "the portal already knows" in response.text
    assert "mlx-community/gemma-3-4b-it-4bit" in response.text


def test_detail_page_of_an_unknown_model_is_404(catalog_hub, member_client, host):
    response = member_client.get("/models/hub/nobody/no-such-model")
    assert response.status_code == 404
    assert "No model named nobody/no-such-model" in response.text


def test_detail_page_of_a_private_model_asks_for_a_token(catalog_hub, member_client, host):
    response = member_client.get("/models/hub/test-org/tiny-llama-private")
    assert response.status_code == 403
    assert "needs a Hugging Face token, set by an admin" in response.text


def test_detail_page_when_the_hub_is_down_shows_what_was_stored(
    catalog_hub, member_client, host, settings
):
    settings.CATALOG_DETAIL_TTL = 0
    assert member_client.get("/models/hub/mlx-community/Qwen3-4B-4bit").status_code == 200
    catalog_hub.fail_status = 500
    response = member_client.get("/models/hub/mlx-community/Qwen3-4B-4bit")
    assert response.status_code == 200
    assert "server error (500)" in response.text
    assert "Showing what the portal stored" in response.text
    assert "40960 tokens" in response.text


def test_detail_page_of_a_local_model_works_offline(
    catalog_hub, member_client, host, settings, tiny_model
):
    put_in_local_cache(settings.HF_HUB_CACHE, "someone/offline-tiny", tiny_model)
    settings.HF_ENDPOINT = closed_port_url()
    response = member_client.get("/models/hub/someone/offline-tiny")
    assert response.status_code == 200
    assert "cannot be reached" in response.text
    model = CatalogModel.objects.get(repo_id="someone/offline-tiny")
    assert model.config_source == "local" and model.family == "Llama"
    assert "config.json on this host" in response.text
    assert "model.safetensors" in response.text  # files listed from disk
