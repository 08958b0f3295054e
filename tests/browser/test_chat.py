"""The chat page in a real browser: a reply streams in token by token, survives a reload."""

import pytest
from django.conf import settings
from django.utils import timezone

from models_catalog.models import Host
from servers.models import Conversation, ServerInstance, ServerProfile, State
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


def test_chat_streams_a_reply_and_keeps_the_conversation(
    mlx_server, member, client, page, live_server, screenshot
):
    profile = ServerProfile.objects.create(
        name="Tiny chat", slug="tiny-chat", model_id="mlx-community/tiny-text-test",
        host=Host.objects.this_machine(), port=mlx_server.port, owner=member,
        system_prompt="You are the tiny test model. Answer briefly.",
    )  # fmt: skip
    ServerInstance.objects.update_or_create(
        profile=profile,
        defaults={"state": State.RUNNING, "port": mlx_server.port, "pid": mlx_server.pid,
                  "started_at": timezone.now(), "ready_at": timezone.now()},
    )  # fmt: skip
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
    assert answer.inner_text().strip() == REPLY
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
    screenshot("chat")

    page.reload()
    assert page.locator(".msg-assistant").inner_text().strip() == REPLY
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
