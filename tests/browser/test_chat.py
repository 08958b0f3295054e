"""The chat page in a real browser: a reply streams in token by token, survives a reload;
code is highlighted and copied; a reply regenerated; a question edited and sent again; the
conversation's settings kept; the list searched; the conversation exported."""

import json
from pathlib import Path

import pytest
from django.conf import settings

from models_catalog.models import Host
from servers.chat.render import render_markdown
from servers.models import Conversation, Message, ServerProfile
from tests.support.profiles import running_profile
from tests.support.tiny_models import REPLY

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

# Every text the streaming answer showed, in order: each assignment of its text is one
# mutation record, even when the browser paints several at once.
RECORD_UPDATES = """
window.__updates = [];
new MutationObserver(function (records) {
  records.forEach(function (record) {
    var target = record.target;
    if (!target.classList || !target.classList.contains('streaming-text')) return;
    record.addedNodes.forEach(function (node) {
      if (node.nodeType === 3 && node.data) window.__updates.push(node.data);
    });
  });
}).observe(document, {subtree: true, childList: true});
"""


def log_in(page, client, user, base_url):
    client.force_login(user)
    cookie = client.cookies[settings.SESSION_COOKIE_NAME]
    page.context.add_cookies(
        [{"name": settings.SESSION_COOKIE_NAME, "value": cookie.value, "url": base_url}]
    )


def tiny_chat(server, owner) -> ServerProfile:
    return running_profile(
        server, owner, "Tiny chat", system_prompt="You are the tiny test model. Answer briefly."
    )


def test_chat_streams_a_reply_and_keeps_the_conversation(
    mlx_server, member, client, page, live_server, screenshot
):
    profile = tiny_chat(mlx_server, member)
    Conversation.objects.create(user=member, profile=profile, title="Earlier chat")
    log_in(page, client, member, live_server.url)
    page.add_init_script(RECORD_UPDATES)
    page.goto("/servers/chat/")
    assert page.get_by_test_id("system-prompt").inner_text().endswith("Answer briefly.")
    assert page.get_by_test_id("server-state").inner_text() == "running"

    page.get_by_label("Message").fill("Hello, tiny model! Show me <b>bold</b>?")
    page.get_by_role("button", name="Send").click()
    answer = page.locator('.msg-assistant[data-status="ok"]')
    answer.wait_for()
    assert answer.locator(".msg-body").inner_text().strip() == REPLY
    updates = page.evaluate("window.__updates")
    # Token by token: the page showed partial answers before the whole one.
    assert len(updates) >= 2 and len(updates[0]) < len(REPLY), updates
    assert all(REPLY.startswith(u) for u in updates)
    assert page.locator(".msg-user").inner_text().startswith("Hello, tiny model! Show me <b>")
    assert "/servers/chat/" in page.url and page.url.rstrip("/").split("/")[-1].isdigit()
    # The new conversation tops the list; the earlier one keeps its line as it was.
    items = page.locator(".conversation-list li")
    assert items.first.inner_text().startswith("Hello") and "just now" in items.first.inner_text()
    assert (
        items.nth(1).inner_text().startswith("Earlier chat") and "ago" in items.nth(1).inner_text()
    )

    page.reload()
    assert page.locator(".msg-assistant .msg-body").inner_text().strip() == REPLY
    assert page.locator(".conversation-list li[aria-current]").inner_text().startswith("Hello")

    page.goto("/servers/usage/")
    assert page.get_by_test_id("total-requests").inner_text() == "1"
    screenshot("usage")


def test_sending_after_the_session_ended_goes_to_login_and_back_to_the_chat(
    member, client, page, live_server
):
    ServerProfile.objects.create(
        name="Tiny chat", slug="tiny-chat", model_id="mlx-community/tiny-text-test",
        host=Host.objects.this_machine(), port=8100, owner=member,
    )  # fmt: skip
    log_in(page, client, member, live_server.url)
    page.goto("/servers/chat/")
    page.context.clear_cookies()  # what an expired session amounts to
    page.get_by_label("Message").fill("Still there?")
    page.get_by_role("button", name="Send").click()
    page.wait_for_url("**/accounts/login/?next=/servers/chat/")
    assert page.locator(".msg-user").count() == 0


def test_a_message_that_starts_the_server_on_demand_shows_it_running(
    tiny_in_cache, celery_worker, member, member_page
):
    from servers.supervision import supervisor
    from servers.supervision.ports import suggest_port

    profile = ServerProfile.objects.create(
        name="Lazy", slug="lazy", model_id=tiny_in_cache, host=Host.objects.this_machine(),
        port=suggest_port(), owner=member, allow_on_demand=True,
    )  # fmt: skip
    page = member_page
    page.goto("/servers/chat/")
    assert page.get_by_test_id("server-state").inner_text() == "stopped"
    page.get_by_label("Message").fill("Wake up")
    page.get_by_role("button", name="Send").click()
    try:
        page.locator('.msg-assistant[data-status="ok"]').wait_for(timeout=90_000)
        # The panel and the picker show the state the message left, without a reload.
        page.get_by_test_id("server-state").filter(has_text="running").wait_for()
        assert "sending a message starts it" not in page.locator("#server-panel").inner_text()
        selected = page.locator("#chat-profile option:checked")
        assert selected.inner_text() == "Lazy — running"
    finally:
        instance = profile.get_instance()
        instance.refresh_from_db()
        if instance.pid:
            supervisor.kill(instance.pid, instance.process_create_time)


CODE = "print(sorted([3, 1, 2]))\n"


def say(conversation, role, text):
    Message.objects.create(
        conversation=conversation, role=role, content=text, html=render_markdown(text)
    )


def test_copy_regenerate_edit_settings_search_and_export(
    mlx_server, member, member_page, live_server, screenshot
):
    profile = tiny_chat(mlx_server, member)
    conversation = Conversation.objects.create(user=member, profile=profile, title="Sorting")
    say(conversation, "user", "How do I sort a list?")
    say(conversation, "assistant", f"Use `sorted`:\n\n```python\n{CODE}```")
    say(conversation, "user", "And the other way round?")
    say(conversation, "assistant", "Pass `reverse=True`.")
    Conversation.objects.create(user=member, profile=profile, title="Unrelated")
    page = member_page
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server.url)

    def clipboard() -> str:
        return page.evaluate("() => navigator.clipboard.readText()")

    page.goto(conversation.get_absolute_url())
    assert page.locator(".conversation-list li[aria-current]").inner_text().startswith("Sorting")
    # Highlighted on the server; copied from the block's own button, and a whole reply.
    assert page.locator(".markdown pre code span.nb").first.inner_text() == "print"
    page.get_by_role("button", name="Copy code").click()
    page.get_by_role("button", name="Copied").wait_for()
    assert clipboard() == CODE
    first_answer = page.locator(".msg-assistant").first
    first_answer.get_by_role("button", name="Copy", exact=True).click()
    assert clipboard() == f"Use `sorted`:\n\n```python\n{CODE}```"

    # Settings, saved on their own, are there after a reload.
    settings = page.get_by_text("Conversation settings")
    settings.click()
    page.get_by_label("System prompt").fill("Answer like a pirate.")
    page.get_by_label("Temperature").fill("0.4")
    page.get_by_label("Max tokens").fill("64")
    page.get_by_role("button", name="Save settings").click()
    page.get_by_role("status").filter(has_text="Saved.").wait_for()
    page.reload()
    settings.click()
    assert page.get_by_label("System prompt").input_value() == "Answer like a pirate."
    assert page.get_by_label("Temperature").input_value() == "0.4"
    assert page.get_by_label("Max tokens").input_value() == "64"
    assert "Answer like a pirate." in page.get_by_test_id("system-prompt").inner_text()
    settings.click()

    # Regenerate: the last reply is replaced by a new one, with its speed under it.
    page.get_by_role("button", name="Regenerate").click()
    page.locator('.msg-assistant[data-status="ok"]').filter(has_text=REPLY).wait_for()
    assert page.locator(".msg").count() == 4
    assert "reverse=True" not in page.locator(".chat-messages").inner_text()
    speed = page.get_by_test_id("reply-speed").inner_text()
    assert "tok/s" in speed and "ms to first token" in speed

    # Edit the last question and send it again: the reply after it is replaced, and it says so.
    page.locator(".msg-user").nth(1).get_by_role("button", name="Edit").click()
    page.get_by_label("Edit message").fill("And in **reverse**?")
    page.get_by_role("button", name="Save and send").click()
    note = page.get_by_test_id("edited-note")
    note.wait_for()
    assert note.inner_text() == "Edited; 1 later message replaced."
    page.locator('.msg-assistant[data-status="ok"]').nth(1).wait_for()
    assert page.locator(".msg-user strong").inner_text() == "reverse"
    assert page.locator(".msg").count() == 4
    texts = [m.content for m in conversation.messages.all()]
    assert texts[2:] == ["And in **reverse**?", REPLY]
    answer = conversation.messages.last()
    assert (answer.temperature, answer.max_tokens) == (0.4, 64)
    screenshot("chat")

    # Search by the text of a message: only this conversation is listed.
    page.get_by_label("Search conversations").fill("REVERSE")
    page.locator(".conversation-list li").filter(has_text="Unrelated").wait_for(state="detached")
    assert page.locator(".conversation-list li").inner_text().startswith("Sorting")

    # Export: the downloaded files hold the conversation.
    page.get_by_test_id("conversation-title").click()
    with page.expect_download() as markdown:
        page.get_by_role("button", name="Export Markdown").click()
    assert markdown.value.suggested_filename == f"sorting-{conversation.pk}.md"
    text = Path(markdown.value.path()).read_text()
    assert text.startswith("# Sorting\n") and "## System prompt\n\nAnswer like a pirate." in text
    assert f"## You\n\nAnd in **reverse**?\n\n## Assistant\n\n{REPLY}\n" in text
    assert f"```python\n{CODE}```" in text
    with page.expect_download() as exported:
        page.get_by_role("button", name="Export JSON").click()
    data = json.loads(Path(exported.value.path()).read_text())
    assert [m["content"] for m in data["messages"]][2:] == ["And in **reverse**?", REPLY]
    assert data["settings"]["temperature"] == 0.4
