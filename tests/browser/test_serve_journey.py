"""A member's first conversation in a real browser: from the catalog, Serve a model that is on
disk (one click: a profile from its characteristics, started by a real worker) to the first
reply in the chat; a model not on disk offers Download there instead."""

import pytest

from servers.models import ServerInstance, ServerProfile
from servers.supervision import lifecycle, supervisor
from tests.servers.helpers import install_model, wait_for
from tests.support.tiny_models import REPLY
from tests.support.workers import new_worker

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

REPO = "test-org/tiny-llama"  # the fake Hub lists it; the tiny text model is on disk
NOT_ON_DISK = "test-org/tiny-llama-4bit"


@pytest.fixture
def worker_with_model(hub_settings, settings, tiny_model, tmp_path):
    """The tiny model in the test's cache as REPO, then a real worker that sees that cache;
    the server it starts is stopped at the end."""
    install_model(settings.HF_HUB_CACHE, REPO, source=tiny_model)
    worker = new_worker(tmp_path).start()
    try:
        worker.wait_ready()
        yield worker
    finally:
        for instance in ServerInstance.objects.exclude(pid=None):
            supervisor.kill(instance.pid, instance.process_create_time)
        worker.stop()


def test_serve_from_the_catalog_to_a_first_reply(worker_with_model, member_page, screenshot):
    page = member_page
    page.goto("/models/?q=tiny-llama")
    row = page.locator(f'#results tr[data-repo-id="{REPO}"]')
    row.wait_for()
    other = page.locator(f'#results tr[data-repo-id="{NOT_ON_DISK}"]')
    assert other.get_by_role("button", name="Download").is_visible()
    assert other.get_by_test_id("serve").count() == 0
    screenshot("catalog-serve")

    row.get_by_test_id("serve").click()
    page.wait_for_url("**/servers/chat/?profile=tiny-llama")
    profile = ServerProfile.objects.get()
    assert (profile.model_id, profile.idle_timeout_minutes) == (REPO, 30)
    assert profile.temperature == 0.0  # its generation_config.json says do_sample: false
    assert "its server is starting" in page.locator(".messages").inner_text()

    # The model loads (a real worker, a real mlx_lm.server). The first message is sent once it
    # runs: sent while it starts, the chat's wait can give up at the moment the server becomes
    # ready ("still starting after 0.5 s"; servers/chat/replies.py `_wait_for_start`, reported).
    wait_for(lambda: lifecycle.upstream_for(profile), timeout=90, what="the server to run")
    page.get_by_label("Message").fill("Hello!")
    page.get_by_role("button", name="Send").click()
    answer = page.locator('.msg-assistant[data-status="ok"]')
    answer.wait_for(timeout=120_000)
    assert answer.locator(".msg-body").inner_text().strip() == REPLY
    assert lifecycle.upstream_for(profile) is not None
    screenshot("serve-first-reply")
