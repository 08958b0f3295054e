"""Images through the gateway, with the official `openai` client: a vision server (the real
mlx_vlm.server on the tiny Qwen2-VL) answers a chat with an image; a text server refuses it;
hostile images are refused in the portal, each with its own message, and never reach a server."""

from __future__ import annotations

import io

import openai
import pytest
from PIL import Image

from servers.models import Route, RouteMember, UsageRecord
from tests.support.images import SVG, bomb, data_url, gif, png
from tests.support.tiny_models import REPLY

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def asking(*urls: str) -> list[dict]:
    parts = [{"type": "image_url", "image_url": {"url": url}} for url in urls]
    return [{"role": "user", "content": [{"type": "text", "text": "What is this?"}, *parts]}]


@pytest.fixture
def client(live_server, api_key) -> openai.OpenAI:
    return openai.OpenAI(base_url=live_server.url + "/v1", api_key=api_key, max_retries=0)


def test_a_vision_server_answers_a_chat_with_an_image_streamed_or_not(
    vision_server, serve_profile, client
):
    serve_profile(vision_server, "Eyes", engine="vision")
    listed = {m.id: m.model_extra["kind"] for m in client.models.list()}
    assert listed == {"eyes": "vision"}

    answer = client.chat.completions.create(model="eyes", messages=asking(data_url(png())))
    assert answer.choices[0].message.content == REPLY
    plain = client.chat.completions.create(
        model="eyes", messages=[{"role": "user", "content": "hi"}]
    )
    # The image became tokens of the prompt.
    assert answer.usage.prompt_tokens > plain.usage.prompt_tokens

    chunks = list(
        client.chat.completions.create(
            model="eyes", messages=asking(data_url(png(color="blue"))), stream=True,
            stream_options={"include_usage": True},
        )
    )  # fmt: skip
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == REPLY
    assert chunks[-1].usage.completion_tokens > 0
    with pytest.raises(openai.BadRequestError, match="use /v1/chat/completions"):
        client.completions.create(model="eyes", prompt="Once")
    records = UsageRecord.objects.filter(status="ok")
    assert records.count() == 3
    assert all(r.completion_tokens > 0 and r.prompt_tokens > 0 for r in records)


def test_an_image_to_a_text_server_is_refused_before_it_reaches_it(
    mlx_server, serve_profile, client
):
    serve_profile(mlx_server, "Words")
    size = mlx_server.log_path.stat().st_size
    with pytest.raises(openai.BadRequestError, match="cannot see images") as refused:
        client.chat.completions.create(model="words", messages=asking(data_url(png())))
    assert refused.value.code == "images_not_supported"
    assert mlx_server.log_path.stat().st_size == size


@pytest.mark.parametrize(
    ("messages", "says"),
    [
        pytest.param(asking("https://example.com/cat.png"), "never fetches URLs", id="remote URL"),
        pytest.param(
            # 20 MB of real PNG header and noise: over the 5 MiB limit, checked before decoding.
            asking(data_url(png()[:64] + bytes(20 * 1024 * 1024))),
            "at most 5.0 MiB",
            id="20 MB image",
        ),
        pytest.param(
            asking(data_url(b"This is a text file, not a picture.\n" * 20)),
            "not an image the portal can read",
            id="PNG that is not an image",
        ),
        pytest.param(asking(data_url(png()[:80])), "does not decode", id="truncated PNG"),
        pytest.param(asking(data_url(SVG, "image/svg+xml")), "SVG", id="SVG"),
        pytest.param(asking(data_url(SVG, "image/png")), "SVG", id="SVG called a PNG"),
        pytest.param(asking(*[data_url(png())] * 4), "at most 3", id="4 images in a message"),
        pytest.param(asking(data_url(b"BM" + bytes(100), "image/bmp")), "image/bmp", id="BMP"),
        pytest.param(asking(data_url(bomb())), "25,000,000 pixels", id="decompression bomb"),
    ],
)
def test_hostile_images_are_refused_each_with_its_own_message_and_never_reach_the_server(
    vision_server, serve_profile, client, messages, says
):
    serve_profile(vision_server, "Eyes", engine="vision")
    size = vision_server.log_path.stat().st_size
    with pytest.raises(openai.BadRequestError, match=says):
        client.chat.completions.create(model="eyes", messages=messages)
    assert vision_server.log_path.stat().st_size == size
    assert UsageRecord.objects.get().status == "error"


def test_a_gif_and_a_mislabelled_jpeg_are_accepted(vision_server, serve_profile, client):
    serve_profile(vision_server, "Eyes", engine="vision")
    jpeg = io.BytesIO()
    Image.new("RGB", (40, 40), "green").save(jpeg, "JPEG")
    answer = client.chat.completions.create(
        model="eyes", messages=asking(data_url(gif(), "image/gif"), data_url(jpeg.getvalue()))
    )
    assert answer.choices[0].message.content == REPLY


def test_a_route_sends_an_image_to_its_vision_members_only(
    vision_server, mlx_server, serve_profile, client, member
):
    """A route of a text server first and a vision server second: a chat with an image goes to
    the vision member (the text one would refuse it), one without to the first member; a route
    with no vision member refuses the image before any server."""
    words = serve_profile(mlx_server, "Words")
    eyes = serve_profile(vision_server, "Eyes", engine="vision")
    mixed = Route.objects.create(name="team/any", owner=member, policy=Route.Policy.ORDERED)
    for position, profile in enumerate((words, eyes)):
        RouteMember.objects.create(route=mixed, profile=profile, position=position)
    text_only = Route.objects.create(name="team/text", owner=member)
    RouteMember.objects.create(route=text_only, profile=words)

    answer = client.chat.completions.create(model="team/any", messages=asking(data_url(png())))
    assert answer.choices[0].message.content == REPLY and answer.model == "team/any"
    streamed = client.chat.completions.create(
        model="team/any", messages=asking(data_url(png(color="blue"))), stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == REPLY
    client.chat.completions.create(model="team/any", messages=[{"role": "user", "content": "hi"}])
    served = list(UsageRecord.objects.order_by("pk").values_list("profile__slug", "route_name"))
    assert served == [("eyes", "team/any"), ("eyes", "team/any"), ("words", "team/any")]

    with pytest.raises(openai.BadRequestError, match="cannot see images") as refused:
        client.chat.completions.create(model="team/text", messages=asking(data_url(png())))
    assert refused.value.code == "images_not_supported"
    assert UsageRecord.objects.count() == 3  # refused before any server
