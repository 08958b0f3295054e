"""Journey: a member starts a download from the downloads panel, watches it progress live to
100% (HTMX polling, a real Celery worker, the fake Hub), then finds the model in My models."""

import pytest

from tests.browser.helpers import wait_for_partial_progress
from tests.models_catalog.download_helpers import hf, purged_queues  # noqa: F401
from tests.support.workers import new_worker

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

TINY = "test-org/tiny-llama"


@pytest.fixture
def worker(hf, tmp_path, purged_queues):  # noqa: F811 - imported fixtures
    worker = new_worker(tmp_path, DOWNLOAD_HEARTBEAT_SECONDS="0.3").start()
    try:
        worker.wait_ready()
        yield worker
    finally:
        worker.stop()


def test_a_download_progresses_live_and_lands_in_my_models(
    hf,  # noqa: F811 - the imported fixture
    worker,
    member_page,
    screenshot,
):
    page = member_page
    hf.hub.throttle_bps = 60_000  # ~5 s for the tiny model: slow enough to watch
    page.goto("/models/downloads/")
    page.get_by_role("heading", name="Downloads").wait_for()
    page.get_by_label("Model").fill(TINY)
    page.get_by_role("button", name="Download", exact=True).click()

    row = page.locator(f'.download-row[data-repo="{TINY}"]')
    row.wait_for()
    assert page.get_by_text(f"Download of {TINY}").is_visible()
    # The row changes without a reload: running with a partial percentage, then complete.
    page.locator(f'.download-row[data-repo="{TINY}"][data-state="running"]').wait_for(
        timeout=30_000
    )
    wait_for_partial_progress(page, ".download-row")
    screenshot("downloads")
    page.locator(f'.download-row[data-repo="{TINY}"][data-state="completed"]').wait_for(
        timeout=60_000
    )
    assert row.locator(".download-percent").inner_text() == "100%"
    assert "verified" in row.inner_text()
    # Polling stopped once everything was final.
    assert page.locator("#downloads-panel[hx-trigger]").count() == 0

    page.get_by_role("link", name="My models").click()
    page.get_by_role("heading", name="My models").wait_for()
    model = page.locator(f'.my-model[data-repo="{TINY}"]')
    model.wait_for()
    assert "KB" in model.inner_text()
    screenshot("my-models")
