"""The chat page: streamed replies from real servers, saved conversations, safe rendering."""

from __future__ import annotations

import json
import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from servers.chat.attachments import read_attachment
from servers.chat.conversations import title_from
from servers.chat.render import render_markdown, split_thinking
from servers.models import Conversation, Message, UsageRecord
from tests.support.tiny_models import REPLY

STREAM = reverse("servers:chat-stream")


def events(response) -> list[tuple[str, dict]]:
    out = []
    for block in b"".join(response.streaming_content).decode().split("\n\n"):
        name, data = "message", None
        for line in block.splitlines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data = line[6:]
        if data and data != "[DONE]":
            out.append((name, json.loads(data)))
    return out


def text_of(evts) -> str:
    return "".join(d["choices"][0]["delta"].get("content") or "" for n, d in evts if n == "message")


# --- pure parts ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    ["<script>alert(1)</script>", '<img src=x onerror="alert(1)">', "[x](javascript:alert(1))",
     '<a href="javascript:alert(1)">x</a>', "<iframe src=//evil></iframe>",
     '```html\n<script>alert(1)</script>\n```'],
)  # fmt: skip
def test_markdown_rendering_leaves_model_html_inert(source):
    html = render_markdown(source)
    assert "<script" not in html and "<img" not in html and "<iframe" not in html
    assert '<a href="javascript' not in html  # escaped text may mention it; no live link


def test_markdown_renders_code_tables_and_links():
    html = render_markdown("**b** `x<y`\n\n```python\nprint(1)\n```\n\n[d](https://e.org)")
    assert "<strong>b</strong>" in html and "<code>x&lt;y</code>" in html
    assert '<code class="language-python">' in html
    assert 'href="https://e.org"' in html and "noopener" in html


def test_aligned_table_cells_get_a_class_not_a_style_the_policy_would_refuse():
    html = render_markdown("| a | b | c |\n|:--|:-:|--:|\n| 1 | 2 | 3 |")
    assert "style=" not in html
    for where in ("left", "center", "right"):
        assert f'<th class="align-{where}">' in html and f'<td class="align-{where}">' in html


@pytest.mark.parametrize(
    "content,reasoning,answer",
    [("plain", "", "plain"), ("<think>hmm</think>Hi", "hmm", "Hi"),
     ("\n<think>\nhmm\n</think>\n\nHi", "hmm", "Hi"),
     ("<think>still thinking", "still thinking", "")],
)  # fmt: skip
def test_split_thinking(content, reasoning, answer):
    assert split_thinking(content) == (reasoning, answer)


def test_titles_come_from_the_first_line():
    assert title_from("\n  Hello there\nmore") == "Hello there"
    assert title_from("") == "New chat"
    assert len(title_from("x" * 200)) == 60


@pytest.mark.parametrize(
    "name,data,says",
    [("photo.png", b"\x89PNG", "Attach images with “Attach images”"),
     ("clip.mp4", b"....", "audio and video cannot be sent"),
     ("blob.bin", bytes(range(256)) * 4, "not a text file"),
     ("pixels.raw", b"\x89PNG\r\n\x1a\n" + bytes(200), "not a text file"),
     ("empty.txt", b"", "“empty.txt” is empty"),
     ("big.log", b"x" * 300_000, "at most")],
)  # fmt: skip
def test_attachments_that_cannot_be_sent(name, data, says, settings):
    from django.core.exceptions import ValidationError

    settings.CHAT_ATTACHMENT_MAX_BYTES = 256 * 1024
    with pytest.raises(ValidationError, match=re.escape(says)):
        read_attachment(name, data)


def test_a_readme_without_extension_is_a_text_attachment():
    assert read_attachment("README", b"# Title\n")["text"] == "# Title\n"


@pytest.mark.parametrize(
    "text,encoding",
    [("Größe überschritten \u2013 café €\n", "cp1252"),  # a Windows log
     ("Fehler: Datei nicht gefunden, naïve résumé\n", "latin-1"),
     ("Größe\n", "latin-1"),  # short: too little to guess from but the Western encodings
     ("a log written by a Windows tool\n", "utf-16"),  # with its byte-order mark
     ("\ufeffnotes with a byte-order mark\n", "utf-8")],
)  # fmt: skip
def test_text_files_that_are_not_utf8_are_read_as_a_person_would(text, encoding):
    attachment = read_attachment("server.log", text.encode(encoding))
    assert attachment["text"] == text.lstrip("\ufeff")


# --- the page and the stream --------------------------------------------------------------------

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.slow
def test_a_message_streams_a_reply_that_is_saved_and_recorded(
    mlx_server, serve_profile, member_client, member
):
    serve_profile(mlx_server, "Tiny", system_prompt="You are terse.")
    page = member_client.get(reverse("servers:chat")).content.decode()
    assert "You are terse." in page and 'data-testid="system-prompt"' in page

    readme = SimpleUploadedFile("README", b"# Project\nHello", content_type="text/plain")
    response = member_client.post(
        STREAM,
        {"profile": "tiny", "message": "Hi there", "temperature": "0", "max_tokens": "50",
         "files": [readme]},
    )  # fmt: skip
    assert response.status_code == 200 and response["Content-Type"] == "text/event-stream"
    evts = events(response)
    assert evts[0][0] == "meta"
    assert text_of(evts) == REPLY
    name, done = evts[-1]
    assert name == "done" and REPLY in done["html"]

    conversation = Conversation.objects.get()
    assert conversation.user == member and conversation.title == "Hi there"
    question, answer = conversation.messages.all()
    assert question.attachments[0]["name"] == "README" and question.max_tokens == 50
    assert (answer.role, answer.content, answer.status) == ("assistant", REPLY, "ok")
    record = UsageRecord.objects.get()
    assert (record.source, record.user, record.status) == ("chat", member, "ok")
    assert record.ttft_ms is not None and record.completion_tokens > 0

    # Reopen: the conversation is there; a follow-up carries the history.
    page = member_client.get(conversation.get_absolute_url()).content.decode()
    assert "Hi there" in page and REPLY in page and "README" in page
    evts = events(member_client.post(STREAM, {"profile": "tiny", "message": "Again",
                                               "conversation": conversation.pk}))  # fmt: skip
    assert evts[-1][0] == "done"
    assert conversation.messages.count() == 4
    assert UsageRecord.objects.get(pk__gt=record.pk).prompt_tokens > record.prompt_tokens


@pytest.mark.slow
def test_thinking_is_shown_in_a_thought_for_block(thinking_server, serve_profile, member_client):
    from tests.support.tiny_models import THINKING_REPLY, THOUGHT

    serve_profile(thinking_server, "Thinker")
    evts = events(member_client.post(STREAM, {"profile": "thinker", "message": "Hi"}))
    assert evts[-1][0] == "done"
    answer = Message.objects.get(role="assistant")
    assert answer.reasoning.strip() == THOUGHT
    assert answer.content.strip() == THINKING_REPLY
    assert answer.thought_seconds is not None
    assert "Thought for" in evts[-1][1]["html"] and "<details" in evts[-1][1]["html"]


@pytest.mark.slow
def test_script_in_model_output_is_inert_when_stored(mlx_server, serve_profile, member_client):
    # The tiny model only says its sentence; the user turn is rendered the same safe way,
    # and a stored assistant message with hostile markdown is rendered escaped.
    profile = serve_profile(mlx_server, "Tiny")
    evil = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    events(member_client.post(STREAM, {"profile": "tiny", "message": evil}))
    conversation = Conversation.objects.get()
    Message.objects.create(
        conversation=conversation, role="assistant", content=evil, html=render_markdown(evil)
    )
    page = member_client.get(conversation.get_absolute_url()).content.decode()
    assert "<script>alert" not in page and "<img src=x" not in page
    assert "&lt;script&gt;" in page
    assert profile.slug in page


def test_a_stopped_server_is_an_inline_error_with_retry(make_profile, member_client):
    make_profile("Off", allow_on_demand=False)
    evts = events(member_client.post(STREAM, {"profile": "off", "message": "Hi"}))
    name, error = evts[-1]
    assert name == "error" and error["retry"] is True
    assert "start it on the Servers page" in error["message"]
    conversation = Conversation.objects.get()
    # Retry sends the unanswered question again (no second copy of it).
    evts = events(member_client.post(STREAM, {"profile": "off", "retry": "1",
                                               "conversation": conversation.pk}))  # fmt: skip
    assert evts[-1][0] == "error"
    assert conversation.messages.count() == 1


def test_bad_messages_are_refused_with_a_clear_reason(make_profile, member_client):
    make_profile("Off", allow_on_demand=False, max_tokens_cap=100)
    cases = [
        ({"profile": "off", "message": ""}, "Write a message"),
        ({"profile": "nope", "message": "x"}, "Pick a server"),
        ({"profile": "off", "message": "x", "temperature": "9"}, "2"),
        ({"profile": "off", "message": "x", "max_tokens": "500"}, "at most 100 tokens"),
        ({"profile": "off", "message": "x", "max_tokens": "0"}, "Max tokens: "),
        ({"profile": "off", "message": "x",
          "files": [SimpleUploadedFile("cat.jpg", b"\xff\xd8", content_type="image/jpeg")]},
         "“cat.jpg” is an image, audio or video file"),
        ({"profile": "off", "message": "x", "files": [SimpleUploadedFile("empty.txt", b"")]},
         "“empty.txt” is empty: there is nothing in it to send."),
    ]  # fmt: skip
    for data, says in cases:
        response = member_client.post(STREAM, data)
        assert response.status_code == 400, data
        error = response.json()["error"]
        assert says in error
        assert not error.startswith("files")  # an attachment's error names the file itself
    assert not Conversation.objects.exists()


def test_conversations_are_private_renamed_and_deleted(make_user, member, member_client):
    mine = Conversation.objects.create(user=member, title="Mine")
    other = Conversation.objects.create(user=make_user("o@example.com"), title="Theirs")
    page = member_client.get(reverse("servers:chat")).content.decode()
    assert "Mine" in page and "Theirs" not in page
    assert member_client.get(other.get_absolute_url()).status_code == 404
    assert member_client.post(reverse("servers:chat-delete", args=[other.pk])).status_code == 404
    evts = member_client.post(STREAM, {"profile": "x", "message": "hi", "conversation": other.pk})
    assert evts.status_code == 400

    member_client.post(reverse("servers:chat-rename", args=[mine.pk]), {"title": "Renamed"})
    mine.refresh_from_db()
    assert mine.title == "Renamed"
    member_client.post(reverse("servers:chat-delete", args=[mine.pk]))
    assert not Conversation.objects.filter(pk=mine.pk).exists()
    assert Conversation.objects.filter(pk=other.pk).exists()


def test_picking_a_profile_updates_the_server_panel(make_profile, member_client):
    make_profile("Alpha", system_prompt="Be alpha.")
    make_profile("Beta", system_prompt="Be beta.")
    response = member_client.get(
        reverse("servers:chat") + "?profile=beta",
        headers={"HX-Request": "true", "HX-Target": "server-panel"},
    )
    html = response.content.decode()
    assert "Be beta." in html and "Be alpha." not in html and "<nav" not in html
    assert "sending a message starts it" in html


def test_the_chat_offers_only_profiles_that_chat(make_profile, member_client):
    make_profile("Words", engine="text")
    make_profile("Eyes", engine="vision")
    make_profile("Vectors", engine="embeddings", allow_on_demand=False)
    make_profile("Ears", engine="speech-to-text", allow_on_demand=False)
    page = member_client.get(reverse("servers:chat")).content.decode()
    offered = re.findall(r'<option value="([^"]*)"', page.split('id="chat-profile"')[1])
    assert set(offered) >= {"words", "eyes"}
    assert "vectors" not in offered and "ears" not in offered
    # Named in the address, it is not picked either: the first that chats is.
    page = member_client.get(reverse("servers:chat") + "?profile=vectors").content.decode()
    assert '<option value="vectors"' not in page
    # Nor can a message be sent to it.
    response = member_client.post(STREAM, {"profile": "vectors", "message": "Hi"})
    assert response.status_code == 400
    assert "it does not chat" in response.json()["error"]
