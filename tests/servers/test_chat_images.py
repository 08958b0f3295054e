"""Chat with images: attached to a message for a vision server (the real mlx_vlm.server on the
tiny Qwen2-VL), kept with thumbnails for their owner only, named in exports; refused with a
clear message for a text server or when they break a limit. A conversation holding images goes
to a route's vision member; a text server picked for it gets them named, and the page says so."""

from __future__ import annotations

import io
import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from PIL import Image

from servers.chat.conversations import begin_turn
from servers.chat.images import read_image
from servers.chat.replies import build_messages
from servers.models import Conversation, Message, MessageImage, Route, RouteMember, UsageRecord
from tests.servers.test_chat import events, text_of
from tests.support.tiny_models import REPLY

pytestmark = pytest.mark.django_db(transaction=True)

STREAM = reverse("servers:chat-stream")
PANEL = {"HX-Request": "true", "HX-Target": "server-panel"}  # the picker's refresh


def upload(
    name: str = "cat.png", size=(300, 200), fmt: str = "PNG", mode="RGB"
) -> SimpleUploadedFile:
    buffer = io.BytesIO()
    Image.new(mode, size, "purple").save(buffer, fmt)
    return SimpleUploadedFile(name, buffer.getvalue(), content_type=f"image/{fmt.lower()}")


@pytest.mark.slow
def test_images_reach_a_vision_server_and_stay_with_the_conversation(
    vision_server, serve_profile, member_client, member, make_user
):
    serve_profile(vision_server, "Eyes", engine="vision")
    response = member_client.post(
        STREAM, {"profile": "eyes", "message": "What is in these?",
                 "images": [upload(), upload("logo.gif", (40, 40), "GIF", "P")]},
    )  # fmt: skip
    evts = events(response)
    assert text_of(evts) == REPLY and evts[-1][0] == "done"
    meta = evts[0][1]
    assert meta["html"].count('class="chat-thumb"') == 2  # the question shows its thumbnails

    conversation = Conversation.objects.get()
    question = conversation.messages.first()
    first, second = question.images.all()
    assert (first.name, first.media_type, first.width, first.height) == ("cat.png", "image/png",
                                                                        300, 200)  # fmt: skip
    assert second.media_type == "image/gif"
    thumbnail = Image.open(io.BytesIO(bytes(first.thumbnail)))
    assert max(thumbnail.size) <= 320 and first.thumbnail_type == "image/jpeg"
    record = UsageRecord.objects.get()
    assert record.status == "ok" and record.prompt_tokens > 20  # the images became tokens

    # Reload: the thumbnails are on the page, served to the owner only.
    page = member_client.get(conversation.get_absolute_url()).text
    thumb = reverse("servers:chat-image", args=[first.pk])
    assert thumb in page and 'alt="cat.png"' in page
    answer = member_client.get(thumb)
    assert answer["Content-Type"] == "image/jpeg" and answer["X-Content-Type-Options"] == "nosniff"
    full = member_client.get(reverse("servers:chat-image-full", args=[first.pk]))
    assert full.content == bytes(first.data) and full["Content-Type"] == "image/png"
    other = member_client.__class__()
    other.force_login(make_user("other@example.com"))
    assert other.get(thumb).status_code == 404

    # A follow-up carries the images again; exports name them.
    follow = events(member_client.post(STREAM, {"profile": "eyes", "message": "And now?",
                                                "conversation": conversation.pk}))  # fmt: skip
    assert follow[-1][0] == "done"
    markdown = member_client.get(reverse("servers:chat-export-md", args=[conversation.pk])).text
    assert "*(Image attached: cat.png, 300x200, image/png)*" in markdown
    exported = json.loads(
        member_client.get(reverse("servers:chat-export-json", args=[conversation.pk])).content
    )
    assert [i["name"] for i in exported["messages"][0]["images"]] == ["cat.png", "logo.gif"]


def test_a_text_server_cannot_see_images(make_profile, member_client):
    make_profile("Words")
    response = member_client.post(STREAM, {"profile": "words", "message": "Look",
                                           "images": [upload()]})  # fmt: skip
    assert response.status_code == 400
    assert response.json()["error"].startswith("Words cannot see images: it runs a text model.")
    assert not MessageImage.objects.exists() and not Conversation.objects.exists()


def test_a_route_of_text_servers_cannot_see_new_images(make_profile, member, member_client):
    ordered_route("team/words", [make_profile("Words"), make_profile("Prose")], member)
    response = member_client.post(STREAM, {"profile": "route:team/words", "message": "Look",
                                           "images": [upload()]})  # fmt: skip
    assert response.status_code == 400
    assert response.json()["error"] == (
        "No server of the route team/words sees images: they run text models. Pick a server "
        "with the vision engine, or remove the images."
    )
    assert not Conversation.objects.exists()


@pytest.mark.parametrize(
    ("images", "says"),
    [
        pytest.param([upload()] * 4, "Attach at most 3 images to one message", id="four"),
        pytest.param(
            [SimpleUploadedFile("notes.png", b"just text" * 50, content_type="image/png")],
            "“notes.png” is not an image the portal can read",
            id="not an image",
        ),
        pytest.param(
            [
                SimpleUploadedFile(
                    "d.svg",
                    b"<svg xmlns='http://www.w3.org/2000/svg'/>",
                    content_type="image/svg+xml",
                )
            ],
            "“d.svg” is an SVG drawing",
            id="svg",
        ),
        pytest.param(
            [SimpleUploadedFile("huge.png", bytes(6 * 1024 * 1024), content_type="image/png")],
            "“huge.png” is 6.0 MiB; an image may be at most 5.0 MiB.",
            id="too big",
        ),
        pytest.param([upload("bmp.bmp", fmt="BMP")], "not an image the portal can read", id="bmp"),
    ],
)
def test_images_that_break_a_limit_are_refused_naming_it(make_profile, member_client, images,
                                                         says):  # fmt: skip
    make_profile("Eyes", engine="vision")
    response = member_client.post(STREAM, {"profile": "eyes", "message": "Look",
                                           "images": images})  # fmt: skip
    assert response.status_code == 400
    assert says in response.json()["error"]
    assert not Conversation.objects.exists()


TURN = {"conversation": None, "retry": False, "edit": None, "files": [], "message": "Look"}


def test_a_text_server_gets_older_images_named_and_a_vision_server_the_latest_ten(
    make_profile, member
):
    text, eyes = make_profile("Words"), make_profile("Eyes", engine="vision")
    turn = begin_turn(member, eyes, {**TURN, "images": [read_image("a.png", upload())] * 3}, {})
    for _ in range(3):
        begin_turn(member, eyes, {**TURN, "conversation": turn.conversation,
                                  "images": [read_image("b.png", upload())] * 3}, {})  # fmt: skip
    sent = build_messages(turn.conversation, eyes)
    parts = [p for m in sent if isinstance(m["content"], list) for p in m["content"]]
    assert sum(p["type"] == "image_url" for p in parts) == 10
    assert "(An image was attached here: a.png.)" in parts[0]["text"]  # 2 of the first 3 dropped
    plain = build_messages(turn.conversation, text)
    assert all(isinstance(m["content"], str) for m in plain)
    assert plain[0]["content"].count("(An image was attached here: a.png.)") == 3


@pytest.mark.slow
def test_a_route_sends_a_message_with_images_to_its_vision_member(
    vision_server, mlx_server, serve_profile, member_client, member
):
    """A route of a text server first and a vision server second: a question with an image goes
    to the vision member (the text one would refuse it), one without to the first member."""
    words = serve_profile(mlx_server, "Words")
    eyes = serve_profile(vision_server, "Eyes", engine="vision")
    route = Route.objects.create(name="team/any", owner=member, policy=Route.Policy.ORDERED)
    for position, profile in enumerate((words, eyes)):
        RouteMember.objects.create(route=route, profile=profile, position=position)

    seen = events(member_client.post(STREAM, {"profile": "route:team/any", "message": "What?",
                                              "images": [upload()]}))  # fmt: skip
    assert text_of(seen) == REPLY and seen[-1][0] == "done"
    seen = events(member_client.post(STREAM, {"profile": "route:team/any", "message": "Hi"}))
    assert seen[-1][0] == "done"
    served = list(UsageRecord.objects.order_by("pk").values_list("profile__slug", "route_name"))
    assert served == [("eyes", "team/any"), ("words", "team/any")]


def ordered_route(name: str, profiles, owner) -> Route:
    route = Route.objects.create(name=name, owner=owner, policy=Route.Policy.ORDERED)
    for position, profile in enumerate(profiles):
        RouteMember.objects.create(route=route, profile=profile, position=position)
    return route


def served() -> list[str]:
    """The profiles that answered, in order."""
    return list(UsageRecord.objects.order_by("pk").values_list("profile__slug", flat=True))


def panel(client, conversation_pk: int, profile: str) -> str:
    """The server panel as the picker redraws it for `profile` in the conversation."""
    url = reverse("servers:chat-conversation", args=[conversation_pk])
    return client.get(url, {"profile": profile}, headers=PANEL).text


@pytest.mark.slow
def test_a_route_sends_a_conversation_whose_history_holds_images_to_its_vision_member(
    vision_server, mlx_server, serve_profile, member_client, member
):
    """A route of a text server first and a vision server second: once the conversation holds
    an image, a follow-up without one, a regenerate and an edit go to the vision member too (the
    text one would answer without seeing it); an edit that drops the image's message goes to the
    first member again."""
    words = serve_profile(mlx_server, "Words")
    eyes = serve_profile(vision_server, "Eyes", engine="vision")
    ordered_route("team/any", [words, eyes], member)

    def send(**fields) -> int:
        seen = events(member_client.post(STREAM, {"profile": "route:team/any", **fields}))
        assert seen[-1][0] == "done", seen[-1]
        return seen[0][1]["conversation"]

    pk = send(message="Hi")  # no image yet: the route's first member
    send(message="What is this?", images=[upload()], conversation=pk)
    send(message="And now?", conversation=pk)
    send(retry="1", conversation=pk)
    last = Message.objects.filter(conversation=pk, role="user").last()
    send(message="And now, again?", edit=last.pk, conversation=pk)
    assert served() == ["words", "eyes", "eyes", "eyes", "eyes"]
    # The panel shows the member the route picks for this conversation: the vision one.
    shown = panel(member_client, pk, "route:team/any")
    assert 'data-engine="vision"' in shown and "images-unseen" not in shown

    first = Message.objects.filter(conversation=pk, role="user").first()
    send(message="Hello", edit=first.pk, conversation=pk)  # the image's message is dropped
    assert served()[-1] == "words"
    assert 'data-engine="text"' in panel(member_client, pk, "route:team/any")


@pytest.mark.slow
def test_a_text_server_picked_for_a_conversation_with_images_answers_and_the_page_says_so(
    vision_server, mlx_server, serve_profile, member_client, member
):
    """A conversation with images switched to a text server (or a route of text servers only)
    is not refused: the server gets the history with each image named, and the panel says it
    does not see them and what to do."""
    words = serve_profile(mlx_server, "Words")
    serve_profile(vision_server, "Eyes", engine="vision")
    ordered_route("team/words", [words], member)
    two = [upload(), upload("dog.png")]
    first = events(member_client.post(STREAM, {"profile": "eyes", "message": "What?",
                                               "images": two}))  # fmt: skip
    pk = first[0][1]["conversation"]
    assert "images-unseen" not in panel(member_client, pk, "eyes")

    told = panel(member_client, pk, "words")
    assert "Words runs a text model: it does not see the 2 images of this conversation" in told
    assert "pick a server with the vision engine" in told
    routed = panel(member_client, pk, "route:team/words")
    assert "No server of the route team/words sees images: they do not see the 2 images" in routed

    for profile in ("words", "route:team/words"):
        seen = events(member_client.post(STREAM, {"profile": profile, "message": "And now?",
                                                  "conversation": pk}))  # fmt: skip
        assert seen[-1][0] == "done", seen[-1]
    assert served() == ["eyes", "words", "words"]
    # Reopened: the conversation is on the text server, and the page still says so.
    page = member_client.get(reverse("servers:chat-conversation", args=[pk])).text
    assert "it does not see the 2 images of this conversation" in page


def test_the_chat_page_reads_a_conversation_s_images_in_one_query_however_many(
    make_profile, member, member_client
):
    """Whether the picked server sees the conversation's images comes from the messages the page
    reads anyway: its queries do not grow with the messages holding images."""
    words, eyes = make_profile("Words"), make_profile("Eyes", engine="vision")
    ordered_route("team/any", [words, eyes], member)
    turn = begin_turn(member, eyes, {**TURN, "images": [read_image("a.png", upload())]}, {})

    def queries(profile: str) -> int:
        with CaptureQueriesContext(connection) as captured:
            page = member_client.get(
                reverse("servers:chat-conversation", args=[turn.conversation.pk]),
                {"profile": profile},
            )
        assert page.status_code == 200
        return len(captured)

    few = {profile: queries(profile) for profile in ("words", "route:team/any")}
    for _ in range(5):
        begin_turn(member, eyes, {**TURN, "conversation": turn.conversation,
                                  "images": [read_image("b.png", upload())] * 2}, {})  # fmt: skip
    assert {profile: queries(profile) for profile in few} == few
