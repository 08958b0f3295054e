"""Serve: from a model on disk to a starting server and the chat in one click
(servers/serving.py); the same profile again rather than a duplicate."""

from __future__ import annotations

import json

import pytest
from django.urls import reverse

from servers.models import ServerProfile, State
from tests.servers.helpers import install_model

pytestmark = pytest.mark.usefixtures("clean_queues")

SERVE = reverse("servers:serve")
QWEN = "mlx-community/Qwen3-4B-4bit"


@pytest.fixture
def qwen_on_disk(hf_cache):
    snapshot = install_model(hf_cache, QWEN)
    (snapshot / "config.json").write_text(
        json.dumps({"model_type": "qwen3", "max_position_embeddings": 40960})
    )
    (snapshot / "generation_config.json").write_text(
        json.dumps({"do_sample": True, "temperature": 0.6, "top_p": 0.95, "top_k": 20})
    )
    return QWEN


def test_serve_creates_a_profile_from_the_model_starts_it_and_opens_the_chat(
    member_client, member, qwen_on_disk
):
    response = member_client.post(SERVE, {"repo_id": QWEN})
    profile = ServerProfile.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"{reverse('servers:chat')}?profile={profile.slug}"
    assert (profile.name, profile.slug, profile.model_id) == (
        "Qwen3-4B-4bit", "qwen3-4b-4bit", QWEN,
    )  # fmt: skip
    assert profile.owner == member and profile.allow_on_demand
    # Sampling from its generation_config.json, room for thinking within the context.
    assert (profile.temperature, profile.top_p, profile.top_k) == (0.6, 0.95, 20)
    assert profile.max_tokens == 8192 and profile.idle_timeout_minutes == 30
    assert profile.get_instance().state == State.STARTING


def test_serve_again_uses_the_profile_that_exists(member_client, make_user, qwen_on_disk):
    member_client.post(SERVE, {"repo_id": QWEN})
    member_client.post(SERVE, {"repo_id": QWEN})
    other = make_user("colleague@example.com")
    member_client.force_login(other)
    response = member_client.post(SERVE, {"repo_id": QWEN}, follow=True)
    profile = ServerProfile.objects.get()  # one profile for all three
    assert response.redirect_chain[-1][0].endswith(f"?profile={profile.slug}")
    assert "Using the profile “Qwen3-4B-4bit”" in response.content.decode()


def test_two_models_of_the_same_name_get_two_profiles(member_client, hf_cache, qwen_on_disk):
    install_model(hf_cache, "someone/Qwen3-4B-4bit")
    member_client.post(SERVE, {"repo_id": QWEN})
    member_client.post(SERVE, {"repo_id": "someone/Qwen3-4B-4bit"})
    pairs = sorted(ServerProfile.objects.values_list("name", "slug"))
    assert pairs == [("Qwen3-4B-4bit", "qwen3-4b-4bit"), ("Qwen3-4B-4bit-2", "qwen3-4b-4bit-2")]
    ports = set(ServerProfile.objects.values_list("port", flat=True))
    assert len(ports) == 2


@pytest.mark.parametrize(
    "repo_id,says",
    [(QWEN, "is not on"), ("../etc/passwd", ""), ("", "")],
    ids=["not on disk", "not a repo id", "empty"],
)
def test_serve_refuses_what_is_not_on_disk_and_says_what_to_do(member_client, hf_cache, repo_id,
                                                               says):  # fmt: skip
    response = member_client.post(SERVE, {"repo_id": repo_id}, follow=True)
    assert response.redirect_chain[-1][0] == reverse("catalog:my-models")
    assert not ServerProfile.objects.exists()
    page = response.content.decode()
    assert 'class="message message-error"' in page
    if says:
        assert f"{QWEN} is not on" in page and "download it first" in page


def test_serve_is_post_only(member_client, qwen_on_disk):
    assert member_client.get(SERVE, {"repo_id": QWEN}).status_code == 405


def test_my_models_and_a_finished_download_offer_serve(member_client, qwen_on_disk):
    page = member_client.get(reverse("catalog:my-models")).content.decode()
    assert 'data-testid="serve"' in page and f'value="{QWEN}"' in page
    action = member_client.get(reverse("catalog:download-action"), {"repo_id": QWEN})
    assert 'data-testid="serve"' in action.content.decode()


def test_a_new_profile_form_starts_from_the_usual_defaults(member_client, qwen_on_disk):
    form = member_client.get(reverse("servers:profile-create")).context["form"]
    assert (form["temperature"].value(), form["top_p"].value()) == (0.7, 0.95)
    assert form["max_tokens"].value() == 8192 and form["idle_timeout_minutes"].value() == 30


def test_the_default_reply_length_may_not_exceed_the_cap(member_client, qwen_on_disk):
    from tests.servers.test_profiles import valid_data

    data = {**valid_data(), "model_id": QWEN, "max_tokens": "4096", "max_tokens_cap": "1024"}
    response = member_client.post(reverse("servers:profile-create"), data)
    assert response.status_code == 200
    assert "must not exceed what a request may ask for (1,024)" in response.content.decode()
