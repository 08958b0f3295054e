"""The Content-Security-Policy in a real browser: it refuses script that was not served as a
file of the portal, and the pages that rely on script (the Django admin's widgets, allauth's
email page, the chat's confirmations, the catalog's filters) still work under it. Every browser
test also fails on any violation it meets (tests/conftest.py, `_no_csp_violations`)."""

import pytest
from django.conf import settings
from django.test import Client

from models_catalog.models import Host
from servers.models import Conversation, ServerProfile

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def signed_in(page, live_server, user):
    client = Client()
    client.force_login(user)
    session = client.cookies[settings.SESSION_COOKIE_NAME].value
    page.context.add_cookies(
        [{"name": settings.SESSION_COOKIE_NAME, "value": session, "url": live_server.url}]
    )
    return page


SLIPPED_IN = """() => {
    window.refused = [];
    document.addEventListener("securitypolicyviolation",
        (e) => window.refused.push(e.effectiveDirective));
    // A handler in markup, an inline script and another site's script, as an unescaped
    // value would bring them.
    document.body.insertAdjacentHTML("beforeend",
        '<img src="/static/favicon.svg" onload="window.ran = 1">');
    for (const [attribute, value] of [["textContent", "window.ran = 1"],
                                      ["src", "https://evil.example/x.js"]]) {
        const script = document.createElement("script");
        script[attribute] = value;
        document.body.append(script);
    }
}"""


def test_script_that_slipped_into_a_page_is_refused_and_reported(member_page, browser):
    member_page.goto("/")

    member_page.evaluate(SLIPPED_IN)

    member_page.wait_for_function("() => window.refused.length === 3")
    assert sorted(member_page.evaluate("window.refused")) == [
        "script-src-attr", "script-src-elem", "script-src-elem",
    ]  # fmt: skip
    assert member_page.evaluate("window.ran") is None
    member_page.wait_for_function("() => true")  # one more round trip: the reports arrive
    assert len(set(browser.violations)) >= 3, browser.violations  # the watcher saw them
    browser.violations.clear()  # expected here; any other browser test fails on one


def test_the_django_admin_works_under_the_policy(page, live_server, admin_member, member):
    signed_in(page, live_server, admin_member)

    page.goto("/admin/")
    page.get_by_role("link", name="Users", exact=True).first.wait_for()

    # The change list's actions (actions.js): ticking every row updates the counter.
    page.goto("/admin/accounts/user/")
    page.locator("#action-toggle").check()
    page.locator(".action-counter").get_by_text("2 of 2 selected").wait_for()

    # A user's permissions use the two-box filter that SelectFilter2.js draws.
    page.goto(f"/admin/accounts/user/{member.pk}/change/")
    page.locator("#id_user_permissions_from").wait_for()
    page.locator("#id_user_permissions_filter").wait_for()

    # A new profile's slug follows its name as it is typed (prepopulate.js, urlify.js).
    page.goto("/admin/servers/serverprofile/add/")
    page.locator("#id_name").press_sequentially("My Fast Server")
    page.wait_for_function("() => document.querySelector('#id_slug').value === 'my-fast-server'")


def test_allauth_email_page_and_chat_confirmation_work_under_the_policy(
    member_page, member, live_server
):
    member_page.goto("/accounts/email/")
    member_page.get_by_role("heading", name="Email Addresses").wait_for()

    profile = ServerProfile.objects.create(
        name="Tiny",
        slug="tiny",
        model_id="acme/tiny",
        host=Host.objects.this_machine(),
        port=18124,
        owner=member,
    )
    conversation = Conversation.objects.create(user=member, profile=profile, title="Keep me")
    member_page.goto(f"/servers/chat/{conversation.pk}/")

    # Deleting a conversation asks first (portal.js, data-confirm): no, then yes.
    member_page.locator("summary", has_text="Keep me").click()
    questions = []

    def answer(dialog, accept):
        questions.append(dialog.message)
        dialog.accept() if accept else dialog.dismiss()

    member_page.once("dialog", lambda dialog: answer(dialog, False))
    member_page.get_by_role("button", name="Delete").click()
    assert questions == ["Delete this conversation?"]
    assert Conversation.objects.filter(pk=conversation.pk).exists()

    member_page.once("dialog", lambda dialog: answer(dialog, True))
    with member_page.expect_navigation():
        member_page.get_by_role("button", name="Delete").click()
    assert not Conversation.objects.filter(pk=conversation.pk).exists()


def test_polls_pause_while_the_tab_is_hidden(member_page):
    """The Servers page's 2 s poll asks nothing while the tab is hidden (portal.js,
    data-poll-visible: the policy rules out htmx's `[!document.hidden]` filter, an eval)."""
    member_page.goto("/servers/")
    member_page.evaluate(
        """() => {
            window.hidden = true;
            Object.defineProperty(document, "hidden", {get: () => window.hidden});
            window.ticks = {skipped: 0, sent: 0};
            document.addEventListener("htmx:confirm", (e) => {
                if (e.detail.elt.id === "server-tiles") {
                    window.ticks[e.defaultPrevented ? "skipped" : "sent"] += 1;
                }
            });
        }"""
    )
    member_page.wait_for_function("() => window.ticks.skipped >= 2")
    assert member_page.evaluate("window.ticks.sent") == 0

    member_page.evaluate("() => { window.hidden = false; }")

    def a_poll(response):
        return "/servers/?" in response.url and response.request.headers.get("hx-request")

    with member_page.expect_response(a_poll):
        member_page.wait_for_function("() => window.ticks.sent >= 1")
