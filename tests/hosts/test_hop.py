"""The hop endpoint accepts only this host's token, only for running servers on this host; the
sender picks the hop for servers of other hosts (servers/gateway/hop.py)."""

from __future__ import annotations

import json

import pytest
from django.utils import timezone

from models_catalog.models import Host
from servers.gateway import hop
from servers.gateway.errors import GatewayError
from servers.models import ServerInstance, ServerProfile, State

SECRET = "a-cluster-secret"
BODY = json.dumps({"messages": [{"role": "user", "content": "hi"}]})


@pytest.fixture
def here(settings, db):
    settings.HOST_NAME = "alpha"
    settings.HOP_SECRET = SECRET
    return Host.objects.create(name="alpha", last_heartbeat=timezone.now())


def post(client, slug="tiny", token=None, endpoint="chat/completions", body=BODY):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return client.post(
        f"/internal/hop/{slug}/v1/{endpoint}", data=body, content_type="application/json",
        headers=headers,
    )  # fmt: skip


def test_tokens_are_derived_per_host_from_the_shared_secret(settings):
    assert hop.hop_token("alpha", SECRET) == hop.hop_token("alpha", SECRET)
    assert hop.hop_token("alpha", SECRET) != hop.hop_token("beta", SECRET)
    assert hop.hop_token("alpha", SECRET) != hop.hop_token("alpha", "another secret")


@pytest.mark.parametrize(
    "token",
    [None, "wrong", hop.hop_token("beta", SECRET), hop.hop_token("alpha", "other secret")],
)
def test_the_hop_refuses_requests_without_this_hosts_token(client, here, token):
    response = post(client, token=token)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_hop_token"


def test_the_hop_is_closed_when_no_secret_is_set(client, here, settings):
    settings.HOP_SECRET = ""
    assert post(client, token=hop.hop_token("alpha", "")).status_code == 401


def test_the_hop_serves_only_this_hosts_running_servers(client, here, member):
    token = hop.hop_token("alpha", SECRET)
    beta = Host.objects.create(name="beta", last_heartbeat=timezone.now())
    ServerProfile.objects.create(
        name="Elsewhere", slug="elsewhere", model_id="a/b", host=beta, port=8111, owner=member
    )
    assert post(client, "elsewhere", token).status_code == 404
    profile = ServerProfile.objects.create(
        name="Tiny", slug="tiny", model_id="a/b", host=here, port=8112, owner=member
    )
    ServerInstance.objects.create(profile=profile, state=State.STOPPED)
    response = post(client, "tiny", token)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "server_not_running"
    assert post(client, "tiny", token, endpoint="moderations").status_code == 404
    refused = post(client, "tiny", token, endpoint="embeddings")  # carried, for another engine
    assert (refused.status_code, refused.json()["error"]["code"]) == (400, "wrong_engine")
    assert post(client, "tiny", token, body="{not json").status_code == 400
    assert client.get("/internal/hop/tiny/v1/chat/completions",
                      headers={"Authorization": f"Bearer {token}"}).status_code == 405  # fmt: skip


def test_the_sender_goes_direct_on_this_host_and_through_the_hop_elsewhere(here, settings):
    assert hop.route(here, "http://127.0.0.1:8100", "tiny") == ("http://127.0.0.1:8100", {})
    beta = Host.objects.create(name="beta", web_url="http://beta.lan:8000/")
    url, headers = hop.route(beta, "http://127.0.0.1:8100", "tiny")
    assert url == "http://beta.lan:8000/internal/hop/tiny"
    assert headers == {"Authorization": f"Bearer {hop.hop_token('beta', SECRET)}"}


def test_the_sender_explains_a_host_it_cannot_reach(here, settings):
    beta = Host.objects.create(name="beta")
    with pytest.raises(GatewayError, match="MLX_PORTAL_HOST_URL on beta") as error:
        hop.route(beta, "http://127.0.0.1:8100", "tiny")
    assert error.value.status == 503
    beta.web_url = "http://beta.lan:8000"
    settings.HOP_SECRET = ""
    with pytest.raises(GatewayError, match="MLX_PORTAL_HOP_SECRET is not set"):
        hop.route(beta, "http://127.0.0.1:8100", "tiny")
