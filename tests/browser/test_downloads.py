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


def test_another_hosts_models_follow_its_reports_and_a_delete_goes_to_its_worker(
    member_page, member, settings
):
    """My models for a second Mac: its list as its worker reported it, refreshed by the page's
    poll; Delete (confirmed) sends the task to that host's queue, and the row leaves once the
    host reports its models without it (here written as its worker's heartbeat would)."""
    from django.utils import timezone

    from models_catalog.models import Download, Host
    from tests.hosts.conftest import Queues

    queues = Queues(settings.REDIS_URL)
    queues.purge()
    kept, gone = "acme/kept-on-beta", "acme/deleted-on-beta"
    beta = Host.objects.create(
        name="beta", last_heartbeat=timezone.now(), hf_cache_dir="/Volumes/models/hub",
        local_models=[{"repo_id": kept, "size": 2**30}, {"repo_id": gone, "size": 3 * 2**30}],
    )  # fmt: skip
    Download.objects.create(  # the member downloaded it there: theirs to delete
        repo_id=gone, revision="b" * 40, host=beta, requested_by=member,
        state=Download.State.COMPLETED,
    )  # fmt: skip
    page = member_page
    page.goto("/models/local/")
    page.get_by_test_id("host-beta").click()
    row = page.locator(f'.my-model[data-repo="{gone}"]')
    row.wait_for()
    assert "3.0" in row.inner_text() and "GB" in row.inner_text()

    page.once("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name="Delete").click()
    page.get_by_text(f"Deleting {gone} on beta").wait_for()
    assert queues.tasks("host.beta") == [("models_catalog.delete_model", [gone])]

    Host.objects.filter(pk=beta.pk).update(
        local_models=[{"repo_id": kept, "size": 2**30}], last_heartbeat=timezone.now()
    )
    row.wait_for(state="detached", timeout=15_000)  # the 5-s poll brought beta's new report
    assert page.locator(f'.my-model[data-repo="{kept}"]').is_visible()
    queues.purge()
