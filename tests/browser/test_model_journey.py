"""The catalog journey end to end in a real browser: search, filter by a badge, open a
model, download it from its page with a real Celery worker, watch the progress reach 100%,
and find it in My models."""

import re

import pytest

from models_catalog import catalog
from tests.browser.helpers import wait_for_partial_progress
from tests.models_catalog.download_helpers import hf, purged_queues  # noqa: F401
from tests.support.workers import new_worker

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

REPO = "test-org/tiny-llama-4bit"


@pytest.fixture
def worker(hf, tmp_path, purged_queues):  # noqa: F811 - imported fixtures
    catalog.forget_process_state()
    worker = new_worker(tmp_path, DOWNLOAD_HEARTBEAT_SECONDS="0.3").start()
    try:
        worker.wait_ready()
        yield worker
    finally:
        worker.stop()
        catalog.forget_process_state()


def test_search_filter_open_download_and_find_it_in_my_models(
    hf,  # noqa: F811 - the imported fixture
    worker,
    member_page,
):
    page = member_page
    page.goto("/models/?q=tiny")
    page.locator(f'#results tr[data-repo-id="{REPO}"]').wait_for()

    page.locator("label.chip", has_text="4-bit").click()
    page.wait_for_url(re.compile(r"bits=4"))
    page.wait_for_function(
        "() => [...document.querySelectorAll('#results tbody tr')].length > 0 &&"
        " [...document.querySelectorAll('#results tbody tr')]"
        ".every(r => r.textContent.includes('4-bit'))"
    )
    page.locator(f'#results tr[data-repo-id="{REPO}"] a.repo').click()
    page.wait_for_url(f"**/models/hub/{REPO}")

    hf.hub.throttle_bps = 40_000  # slow enough to see the download move
    action = page.locator(f'.download-action[data-repo="{REPO}"]')
    action.get_by_role("button", name="Download", exact=True).click()
    page.locator(f'.download-action[data-repo="{REPO}"][data-state="running"]').wait_for(
        timeout=30_000
    )
    wait_for_partial_progress(page, ".download-action")
    # The same fragment keeps polling until the model is on this host.
    action.get_by_text("On this host").wait_for(timeout=90_000)

    page.get_by_role("link", name="Downloads").first.click()
    row = page.locator(f'.download-row[data-repo="{REPO}"][data-state="completed"]')
    row.wait_for()
    assert row.locator(".download-percent").inner_text() == "100%"

    page.get_by_role("link", name="My models").first.click()
    page.locator(f'.my-model[data-repo="{REPO}"]').wait_for()
