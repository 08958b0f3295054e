"""The chat's conversations: markdown with highlighted code, regenerate, edit and resend,
per-conversation settings, search, rename in place, exports, speed, Stop while starting."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from servers.chat.conversations import export_filename
from servers.chat.render import render_markdown
from servers.chat.replies import speed
from servers.models import Conversation, Message, UsageRecord
from servers.usage.records import Measure
from tests.servers.test_chat import STREAM, events
from tests.support.tiny_models import REPLY

# --- pure parts ---------------------------------------------------------------------------------


def test_code_blocks_are_highlighted_with_token_classes_only():
    html = render_markdown("```python\ndef f(x):\n    return '<b>'\n```")
    assert '<code class="language-python"><span class="k">def</span>' in html
    assert "&lt;b&gt;" in html and "<b>" not in html


@pytest.mark.parametrize(
    "source",
    ['```"><script>alert(1)</script>\nx\n```', "```python\n</code></pre><script>x</script>\n```",
     '<span class="k" onclick="alert(1)">x</span>', "```js\n<img src=x onerror=alert(1)>\n```",
     "```unknown-lang\n<script>alert(1)</script>\n```"],
)  # fmt: skip
def test_highlighted_code_stays_inert(source):
    html = render_markdown(source)
    assert "<script" not in html and "<img" not in html
    assert not re.search(r"<[^>]*\son\w+=", html)  # no live tag with a handler


def test_a_block_in_a_language_pygments_does_not_know_is_plain_and_escaped():
    assert render_markdown("```nolang\n<x>\n```") == (
        '<pre><code class="language-nolang">&lt;x&gt;\n</code></pre>\n'
    )


@pytest.mark.parametrize(
    "title,name",
    [("Hello there", "hello-there-7.md"), ("../../etc/passwd", "etcpasswd-7.md"),
     ('a"b\r\nContent-Type: x', "ab-content-type-x-7.md"), ("日本語", "conversation-7.md"),
     ("x" * 200, "x" * 60 + "-7.md")],
)  # fmt: skip
def test_export_file_names_are_safe(title, name):
    assert export_filename(Conversation(pk=7, title=title), "md") == name


def test_speed_is_tokens_after_the_first_over_the_time_since_it():
    measure = Measure(sent_at=10.0, first_token_at=10.5, completion_tokens=11)
    assert speed(measure, chunks=3, now=12.5) == {
        "ttft_ms": 500.0, "completion_tokens": 11, "tokens_per_second": 5.0,
    }  # fmt: skip
    # Stopped: no usage chunk came, so the chunks are the tokens.
    assert speed(Measure(sent_at=0.0, first_token_at=1.0), chunks=5, now=3.0)[
        "tokens_per_second"
    ] == pytest.approx(2.0)
    assert speed(Measure(sent_at=0.0), chunks=0, now=1.0)["tokens_per_second"] is None


# --- the page and the stream --------------------------------------------------------------------

pytestmark = pytest.mark.django_db(transaction=True)


def conversation_of(member, **fields) -> Conversation:
    conversation = Conversation.objects.create(user=member, title="Talk", **fields)
    Message.objects.create(conversation=conversation, role="user", content="First")
    Message.objects.create(conversation=conversation, role="assistant", content="One")
    Message.objects.create(conversation=conversation, role="user", content="Second")
    Message.objects.create(conversation=conversation, role="assistant", content="Two")
    return conversation


@pytest.mark.slow
def test_regenerate_edit_and_settings_with_a_real_server(
    mlx_server, serve_profile, member_client, member
):
    serve_profile(mlx_server, "Tiny", system_prompt="Profile prompt.", max_tokens=200)
    evts = events(member_client.post(STREAM, {
        "profile": "tiny", "message": "Say **hi**", "system_prompt": "  Be brief.  ",
        "temperature": "0.3", "max_tokens": "40",
    }))  # fmt: skip
    meta, done = evts[0][1], evts[-1]
    assert "<strong>hi</strong>" in meta["html"] and meta["replaced"] == 0
    assert done[0] == "done"
    conversation = Conversation.objects.get()
    assert (conversation.system_prompt, conversation.temperature, conversation.max_tokens) == (
        "Be brief.", 0.3, 40,
    )  # fmt: skip
    answer = conversation.messages.get(role="assistant")
    assert answer.ttft_ms > 0 and answer.completion_tokens > 1 and answer.tokens_per_second > 0
    assert "tok/s" in done[1]["html"] and "ms to first token" in done[1]["html"]
    record = UsageRecord.objects.get()
    assert record.completion_tokens == answer.completion_tokens

    # Regenerate: the last answer is replaced, the question kept.
    evts = events(member_client.post(STREAM, {"profile": "tiny", "retry": "1",
                                              "conversation": conversation.pk}))  # fmt: skip
    assert evts[0][1]["replaced"] == 1 and evts[-1][0] == "done"
    question, new_answer = conversation.messages.all()
    assert new_answer.pk != answer.pk and new_answer.content == REPLY

    # A second turn, then an edit of the first question: the three later messages go.
    events(member_client.post(STREAM, {"profile": "tiny", "message": "More",
                                       "conversation": conversation.pk}))  # fmt: skip
    assert conversation.messages.count() == 4
    evts = events(member_client.post(STREAM, {"profile": "tiny", "edit": question.pk,
                                              "message": "Say *hello*",
                                              "conversation": conversation.pk}))  # fmt: skip
    meta = evts[0][1]
    assert meta["question"] == question.pk and meta["replaced"] == 3
    assert "Edited; 3 later messages replaced." in meta["html"] and "<em>hello</em>" in meta["html"]
    assert evts[-1][0] == "done"
    edited, last = conversation.messages.all()
    assert (edited.pk, edited.content, edited.replaced) == (question.pk, "Say *hello*", 3)
    assert last.role == "assistant" and last.content == REPLY
    page = member_client.get(conversation.get_absolute_url()).content.decode()
    assert "Edited; 3 later messages replaced." in page
    assert "Be brief." in page and 'value="0.3"' in page and 'value="40"' in page


def test_a_send_is_refused_for_bad_settings_or_a_foreign_edit(
    make_profile, member_client, member, make_user
):
    make_profile("Off", allow_on_demand=False, max_tokens=100, max_tokens_cap=100)
    mine = conversation_of(member)
    theirs = conversation_of(make_user("o@example.com"))
    foreign = theirs.messages.filter(role="user").first()
    answer = mine.messages.filter(role="assistant").first()
    cases = [
        ({"temperature": "2.5"}, "Temperature: Use a value from 0 to 2"),
        ({"temperature": "-1"}, "Temperature: Use a value from 0 to 2"),
        ({"max_tokens": "101"}, "Max tokens: 'max_tokens' is 101, but Off allows at most 100 "
         "tokens per reply"),
        ({"max_tokens": "0"}, "Max tokens: A reply needs at least 1 token."),
        ({"system_prompt": "x" * 20_001}, "System prompt: Keep it under 20,000 characters"),
        ({"edit": foreign.pk, "conversation": mine.pk}, "not in this conversation"),
        ({"edit": answer.pk, "conversation": mine.pk}, "not in this conversation"),
        ({"edit": mine.messages.first().pk, "conversation": mine.pk, "message": ""},
         "An edited message cannot be empty"),
    ]  # fmt: skip
    for extra, says in cases:
        data = {"profile": "off", "message": "x", **extra}
        response = member_client.post(STREAM, data)
        assert response.status_code == 400, extra
        assert says in response.json()["error"], (extra, response.json())
    assert mine.messages.count() == 4 and Conversation.objects.count() == 2


def test_settings_are_saved_on_their_own_without_moving_the_conversation(
    make_profile, member_client, member
):
    profile = make_profile("Off", allow_on_demand=False, max_tokens=100)
    older = conversation_of(member, profile=profile)
    newer = conversation_of(member, profile=profile)
    url = reverse("servers:chat-settings", args=[older.pk])
    htmx = {"HX-Request": "true", "HX-Target": "chat-settings"}
    response = member_client.post(url, {"temperature": "3", "max_tokens": "5"}, headers=htmx)
    assert response.status_code == 400 and "Use a value from 0 to 2" in response.content.decode()
    response = member_client.post(
        url, {"system_prompt": "Pirate.", "temperature": "0.7", "max_tokens": "50"}, headers=htmx
    )
    assert response.status_code == 200 and "Saved." in response.content.decode()
    older.refresh_from_db()
    assert (older.system_prompt, older.temperature, older.max_tokens) == ("Pirate.", 0.7, 50)
    page = member_client.get(older.get_absolute_url()).content.decode()
    assert "System prompt of this conversation" in page and "Pirate." in page
    # Renamed too: neither moves it above the newer one.
    member_client.post(reverse("servers:chat-rename", args=[older.pk]), {"title": "Renamed"})
    assert list(Conversation.objects.filter(user=member)) == [newer, older]
    other = member_client.post(reverse("servers:chat-settings", args=[99999]), {})
    assert other.status_code == 404


def test_search_finds_titles_and_text_of_ones_own_conversations(member_client, member, make_user):
    conversation_of(member)
    Conversation.objects.filter(user=member).update(title="Rust lifetimes")
    other = Conversation.objects.create(user=member, title="Cooking")
    Message.objects.create(conversation=other, role="assistant", content="Knead the DOUGH well")
    theirs = Conversation.objects.create(user=make_user("o@example.com"), title="dough secrets")
    htmx = {"HX-Request": "true", "HX-Target": "conversation-list"}

    def found(q):
        response = member_client.get(reverse("servers:chat"), {"q": q}, headers=htmx)
        html = response.content.decode()
        assert "<nav" not in html
        return [t for t in ("Rust lifetimes", "Cooking", theirs.title) if t in html]

    assert found("dough") == ["Cooking"]
    assert found("LIFETIME") == ["Rust lifetimes"]
    assert found("") == ["Rust lifetimes", "Cooking"]
    assert (
        "No conversation holds"
        in member_client.get(reverse("servers:chat"), {"q": "zzz"}, headers=htmx).content.decode()
    )
    too_long = member_client.get(reverse("servers:chat"), {"q": "x" * 201}, headers=htmx)
    assert "at most 200 characters" in too_long.content.decode()


def test_exports_are_downloads_for_the_owner_only(member_client, member, make_user):
    conversation = conversation_of(member, system_prompt="Terse.", temperature=0.2)
    conversation.title = 'Plan: "v2" / <launch>'
    conversation.save()
    Message.objects.filter(role="assistant", content="Two").update(
        reasoning="Let me think.", ttft_ms=120.0, tokens_per_second=33.5, completion_tokens=9
    )
    md = member_client.get(reverse("servers:chat-export-md", args=[conversation.pk]))
    assert md["Content-Type"].startswith("text/markdown")
    assert md["Content-Disposition"] == (
        f'attachment; filename="plan-v2-launch-{conversation.pk}.md"'
    )
    text = md.content.decode()
    assert text.startswith('# Plan: "v2" / <launch>\n')
    assert "## System prompt\n\nTerse." in text and "- Temperature: 0.2" in text
    assert "## You\n\nFirst\n\n## Assistant\n\nOne" in text and "> Let me think.\n\nTwo" in text

    data = json.loads(
        member_client.get(reverse("servers:chat-export-json", args=[conversation.pk])).content
    )
    assert data["title"] == 'Plan: "v2" / <launch>'
    assert data["settings"] == {"system_prompt": "Terse.", "temperature": 0.2, "max_tokens": None}
    assert [(m["role"], m["content"]) for m in data["messages"]] == [
        ("user", "First"), ("assistant", "One"), ("user", "Second"), ("assistant", "Two"),
    ]  # fmt: skip
    assert data["messages"][3]["tokens_per_second"] == 33.5

    theirs = conversation_of(make_user("o@example.com"))
    for name in ("servers:chat-export-md", "servers:chat-export-json"):
        assert member_client.get(reverse(name, args=[theirs.pk])).status_code == 404


@pytest.mark.slow
def test_stop_while_the_server_starts_sends_and_saves_nothing(
    served_model, make_profile, member_client, clean_queues
):
    # No worker runs: the start is asked for and the server stays "starting".
    profile = make_profile("Lazy", model_id=served_model, allow_on_demand=True)
    response = member_client.post(STREAM, {"profile": "lazy", "message": "Wake up"})
    stream = iter(response.streaming_content)
    assert b"event: meta" in next(stream)
    assert b"Starting Lazy" in next(stream)
    started = timezone.now()
    assert b"Starting Lazy" in next(stream)  # a status about every half second while it starts
    assert timezone.now() - started < timedelta(seconds=3)
    response.close()  # the browser's Stop: the web server closes the response's iterator
    assert profile.get_instance().state == "starting"
    conversation = Conversation.objects.get()
    assert [m.role for m in conversation.messages.all()] == ["user"]
    assert not UsageRecord.objects.exists()


# --- Stop keeps what the page showed ------------------------------------------------------------


@pytest.mark.parametrize("page_first", [True, False], ids=["page-first", "save-first"])
def test_a_stopped_reply_keeps_no_more_than_the_page_showed(
    page_first, member, member_client, make_profile
):
    """The page posts how much it had shown when Stop was pressed; what was already on its way
    (written by the portal, unread by the page) is not kept, whichever comes first: the page's
    word or the stream's save."""
    from django.core.cache import cache

    from servers.chat.replies import Params, Reply, _save_answer

    conversation = Conversation.objects.create(user=member, profile=make_profile(), title="t")
    # The cache outlives the test database's rows: nothing of an earlier test's conversation
    # of the same id (a new reply clears them, as stream_reply does).
    cache.delete_many([f"chat-shown:{conversation.pk}", f"chat-stopped:{conversation.pk}"])
    stopped = reverse("servers:chat-stopped", args=[conversation.pk])
    shown = {"content_chars": "11", "reasoning_chars": "4"}
    reply = Reply(content="Hello there, and the rest 🙂 unseen", reasoning="Hmm, more unseen")
    if page_first:
        assert member_client.post(stopped, shown).status_code == 204
    message = _save_answer(conversation, reply, Message.Status.STOPPED, Params(), Measure())
    if not page_first:
        assert member_client.post(stopped, shown).status_code == 204
    message.refresh_from_db()
    assert (message.content, message.reasoning) == ("Hello there", "Hmm,")
    assert "unseen" not in message.html
    bad = member_client.post(stopped, {"content_chars": "-1", "reasoning_chars": "x"})
    assert bad.status_code == 400 and "whole numbers" in bad.json()["error"]
    # Each word is used once: a later Stop of this conversation is trimmed by its own.
    assert cache.get(f"chat-shown:{conversation.pk}") is None
    assert cache.get(f"chat-stopped:{conversation.pk}") is None
