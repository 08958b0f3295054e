import pytest
from django.core.cache import cache

from tests.accounts.walk import marker
from tests.conftest import PASSWORD
from tests.servers.helpers import TINY_REPO, install_model


@pytest.fixture(autouse=True)
def _fresh_rate_limits(db):
    """allauth keeps its rate-limit counters in the (database) cache, which outlives a test."""
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def sign_up():
    """`sign_up(client, "a@example.com")` posts allauth's sign-up form and returns the reply."""

    def post(client, email: str, password: str = PASSWORD, **extra):
        return client.post(
            "/accounts/signup/",
            {"email": email, "password1": password, "password2": password},
            **extra,
        )

    return post


@pytest.fixture
def log_in():
    def post(client, email: str, password: str = PASSWORD, **extra):
        return client.post("/accounts/login/", {"login": email, "password": password}, **extra)

    return post


def tiny_image(name: str) -> dict:
    """The fields of a MessageImage: a real 8x8 PNG, checked and thumbnailed by the chat."""
    import io

    from django.core.files.uploadedfile import SimpleUploadedFile
    from PIL import Image

    from servers.chat.images import read_image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buffer, "PNG")
    upload = SimpleUploadedFile("a.png", buffer.getvalue(), content_type="image/png")
    return {**read_image("a.png", upload).fields, "name": name}


@pytest.fixture
def stored(member, make_user, hub, settings, tmp_path):
    """Objects of `member`, with markers in their text, and a model in the Hugging Face cache;
    pages that ask the Hub ask the local fake one. Returns {token: what holds its marker}."""
    from django.contrib.auth.models import Group

    from accounts.api_keys import create_api_key
    from accounts.models import Limits
    from models_catalog.models import Download, Host
    from servers.chat.render import render_markdown
    from servers.models import (
        Conversation,
        Message,
        MessageImage,
        ServerProfile,
        State,
        UsageRecord,
    )

    settings.HF_ENDPOINT = hub.url
    settings.HF_HUB_CACHE = tmp_path / "hf-cache"
    settings.HF_TOKEN = ""
    install_model(settings.HF_HUB_CACHE, TINY_REPO)
    host = Host.objects.this_machine()
    where = {
        "sa": "a profile's name",
        "sb": "a profile's description",
        "sc": "a profile's system prompt",
        "sd": "a failed server's reason",
        "se": "a failed server's error",
        "sf": "a failed server's log tail",
        "sg": "a conversation's title",
        "sh": "a user's message",
        "si": "a model's answer",
        "sj": "a model's reasoning",
        "sk": "an API key's name",
        "sl": "a download's error",
        "sm": "a download's state reason",
        "sn": "a user's email",
        "so": "a usage record's profile name",
        "sp": "a group's name",
        "sq": "an attached image's name",
    }
    m = {token: marker(token) for token in where}
    profile = ServerProfile.objects.create(
        name=m["sa"], slug="owned", model_id=TINY_REPO, host=host, port=18123, owner=member,
        description=m["sb"], system_prompt=m["sc"],
    )  # fmt: skip
    type(profile.get_instance()).objects.filter(profile=profile).update(
        state=State.FAILED, reason=m["sd"], last_error=m["se"], log_tail=m["sf"]
    )
    conversation = Conversation.objects.create(user=member, profile=profile, title=m["sg"])
    question = Message.objects.create(conversation=conversation, role="user", content=m["sh"])
    MessageImage.objects.create(message=question, **tiny_image(m["sq"]))
    Message.objects.create(
        conversation=conversation, role="assistant", content=m["si"],
        html=render_markdown(m["si"]), reasoning=m["sj"],
    )  # fmt: skip
    create_api_key(member, m["sk"])
    Download.objects.create(
        repo_id=TINY_REPO, revision="a" * 40, host=host, requested_by=member,
        state=Download.State.FAILED, error=m["sl"], state_reason=m["sm"],
    )  # fmt: skip
    make_user(f"{m['sn']}@example.com", status="pending")
    group = Group.objects.create(name=m["sp"])
    group.user_set.add(member)
    Limits.objects.create(group=group, requests_per_minute=60)
    Limits.objects.create(user=member, tokens_per_day=1000)
    profile.allowed_groups.add(group)
    UsageRecord.objects.create(
        user=member, profile=profile, profile_name=m["so"], host=host, source="chat",
        endpoint="chat/completions", status="ok",
    )  # fmt: skip
    return where
