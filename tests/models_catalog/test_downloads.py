"""Starting, joining, pausing, resuming and cancelling downloads against the fake Hub. Runs are
called in this process (the Celery task is a thin wrapper); test_download_resume.py uses real
workers."""

import threading

import pytest
from django.db import IntegrityError, connection

from models_catalog import downloads
from models_catalog.downloads import DownloadRefused
from models_catalog.local import local_model_path
from models_catalog.models import Download, DownloadAttempt, Host
from tests.models_catalog.download_helpers import (
    add_random_repo,
    dir_digests,
    partial_files,
    source_digests,
    state_of,
    wait_until,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fast_heartbeat")]

S = Download.State
TINY = "test-org/tiny-llama"


def run_in_thread(download_id: int) -> tuple[threading.Thread, dict]:
    """run_download in a thread of its own (its own database connection), like a worker."""
    result: dict = {}

    def target() -> None:
        try:
            result["outcome"] = downloads.run_download(download_id)
        finally:
            connection.close()

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, result


def test_a_download_copies_every_file_byte_for_byte_into_the_cache(hf, member, tiny_model):
    download, joined = downloads.start_download(TINY, member)
    assert not joined
    assert download.state == S.QUEUED
    assert download.files_total == len(dir_digests(tiny_model))
    assert download.bytes_total == sum(
        p.stat().st_size for p in tiny_model.iterdir() if p.is_file()
    )

    assert downloads.run_download(download.pk) == S.COMPLETED

    download.refresh_from_db()
    assert download.state == S.COMPLETED
    assert download.bytes_done == download.bytes_total
    assert download.percent == 100
    assert "verified" in download.state_reason
    assert download.lease_owner == ""
    snapshot = local_model_path(TINY)
    assert snapshot is not None and snapshot.name == download.revision
    assert dir_digests(snapshot) == dir_digests(tiny_model)
    assert partial_files(hf.cache, TINY) == []


def test_a_second_click_joins_the_first_download(hf, make_user):
    alice, bob = make_user("alice@example.com"), make_user("bob@example.com")
    first, joined_first = downloads.start_download(TINY, alice)
    second, joined_second = downloads.start_download(TINY, bob)
    assert (joined_first, joined_second) == (False, True)
    assert second.pk == first.pk
    assert Download.objects.count() == 1
    assert second.requested_by == alice


def test_the_database_allows_one_active_download_per_repo_and_host(hf, member):
    host = Host.objects.this_machine()
    Download.objects.create(repo_id=TINY, revision="a" * 40, host=host, state=S.RUNNING)
    with pytest.raises(IntegrityError):
        Download.objects.create(repo_id=TINY, revision="b" * 40, host=host, state=S.QUEUED)


def test_finished_downloads_do_not_block_a_new_one(hf, member):
    host = Host.objects.this_machine()
    for state in (S.COMPLETED, S.FAILED, S.CANCELLED):
        Download.objects.create(repo_id=TINY, revision="a" * 40, host=host, state=state)
    download, joined = downloads.start_download(TINY, member)
    assert not joined and download.state == S.QUEUED


def test_clicking_download_on_a_paused_download_resumes_it(hf, member):
    download, _ = downloads.start_download(TINY, member)
    downloads.pause_download(download.pk, member)
    again, joined = downloads.start_download(TINY, member)
    assert joined and again.pk == download.pk
    assert state_of(download) == S.QUEUED


def test_a_short_disk_is_refused_before_anything_is_written(hf, member, settings):
    settings.DOWNLOAD_DISK_RESERVE_BYTES = 10**18
    with pytest.raises(DownloadRefused, match="Not enough disk space for test-org/tiny-llama"):
        downloads.start_download(TINY, member)
    assert not Download.objects.exists()
    assert not hf.cache.exists() or not any(hf.cache.iterdir())


@pytest.mark.parametrize(
    ("repo_id", "knobs", "message"),
    [
        ("test-org/does-not-exist", {}, "was not found on Hugging Face"),
        (TINY, {"fail_status": 503}, "Hugging Face is having trouble (503)"),
        (TINY, {"fail_status": 429, "retry_after": 0}, "rate-limiting"),
    ],
)
def test_hub_problems_are_refused_with_a_clear_message(hf, member, repo_id, knobs, message):
    for name, value in knobs.items():
        setattr(hf.hub, name, value)
    with pytest.raises(DownloadRefused) as refused:
        downloads.start_download(repo_id, member)
    assert message in refused.value.message
    assert not Download.objects.exists()


def test_a_pause_stops_the_transfer_promptly_and_resume_continues_with_a_range_request(hf, member):
    repo = "test-org/slow-pause"
    files = add_random_repo(hf.hub, repo, {"model.safetensors": 1_500_000})
    hf.hub.throttle_bps = 400_000
    download, _ = downloads.start_download(repo, member)
    thread, result = run_in_thread(download.pk)
    wait_until(
        lambda: (
            partial_files(hf.cache, repo)
            and partial_files(hf.cache, repo)[0].stat().st_size > 100_000
        ),
        what="a partial file",
    )

    downloads.pause_download(download.pk, member)
    thread.join(timeout=10)
    assert not thread.is_alive(), "the run did not notice the pause"
    assert result["outcome"] == S.PAUSED
    download.refresh_from_db()
    assert download.state == S.PAUSED and download.lease_owner == ""
    [partial] = partial_files(hf.cache, repo)
    kept = partial.stat().st_size
    assert 0 < kept < 1_500_000

    hf.hub.throttle_bps = None
    downloads.resume_download(download.pk, member)
    assert downloads.run_download(download.pk) == S.COMPLETED
    ranges = [
        r.headers.get("range")
        for r in hf.hub.records
        if r.method == "GET" and r.path.endswith("/model.safetensors")
    ]
    assert ranges[0] is None
    assert ranges[-1] is not None
    assert int(ranges[-1].removeprefix("bytes=").split("-")[0]) >= kept
    assert dir_digests(local_model_path(repo)) == source_digests(files)
    assert DownloadAttempt.objects.filter(download=download).count() == 2


def test_cancel_stops_the_run_and_removes_its_partial_files(hf, member):
    repo = "test-org/slow-cancel"
    add_random_repo(hf.hub, repo, {"model.safetensors": 1_500_000})
    hf.hub.throttle_bps = 400_000
    download, _ = downloads.start_download(repo, member)
    thread, result = run_in_thread(download.pk)
    wait_until(lambda: partial_files(hf.cache, repo), what="a partial file")

    downloads.cancel_download(download.pk, member)
    thread.join(timeout=10)
    assert result["outcome"] == S.CANCELLED
    download.refresh_from_db()
    assert download.state == S.CANCELLED and download.files_removed
    assert not (hf.cache / "models--test-org--slow-cancel").exists()


def test_a_run_that_loses_its_lease_stops_and_ends_its_attempt(hf, member):
    repo = "test-org/slow-lost"
    add_random_repo(hf.hub, repo, {"model.safetensors": 1_500_000})
    hf.hub.throttle_bps = 400_000
    download, _ = downloads.start_download(repo, member)
    thread, result = run_in_thread(download.pk)
    wait_until(lambda: partial_files(hf.cache, repo), what="a partial file")

    # Another run took the download over (its lease had expired while this one was stalled).
    Download.objects.filter(pk=download.pk).update(lease_owner="someone-else")
    thread.join(timeout=10)
    assert result["outcome"] == "lost"
    attempt = DownloadAttempt.objects.get(download=download)
    assert attempt.ended_at is not None and attempt.ended_at >= attempt.last_heartbeat_at
    assert attempt.outcome.startswith("lost its lease")
    assert Download.objects.get(pk=download.pk).lease_owner == "someone-else"  # not touched


def test_cancelling_a_paused_download_removes_its_files_on_the_host(hf, member):
    repo = "test-org/slow-paused-cancel"
    add_random_repo(hf.hub, repo, {"model.safetensors": 1_000_000})
    hf.hub.throttle_bps = 400_000
    download, _ = downloads.start_download(repo, member)
    thread, _ = run_in_thread(download.pk)
    wait_until(lambda: partial_files(hf.cache, repo), what="a partial file")
    downloads.pause_download(download.pk, member)
    thread.join(timeout=10)
    assert partial_files(hf.cache, repo)

    downloads.cancel_download(download.pk, member)
    # What the cleanup task sent to the host's queue does:
    assert downloads.cleanup_download(download.pk).startswith("removed")
    assert partial_files(hf.cache, repo) == []
    assert not (hf.cache / "models--test-org--slow-paused-cancel").exists()
    assert Download.objects.get(pk=download.pk).files_removed


def test_a_cancel_keeps_other_complete_revisions_of_the_model(hf, member):
    download, _ = downloads.start_download(TINY, member)
    downloads.run_download(download.pk)
    snapshot = local_model_path(TINY)
    # A later download of the same repo (e.g. an update) is cancelled before it finishes.
    again, _ = downloads.start_download(TINY, member)
    downloads.cancel_download(again.pk, member)
    downloads.cleanup_download(again.pk)
    assert local_model_path(TINY) == snapshot
    assert all(p.exists() for p in snapshot.iterdir())


def test_only_one_run_holds_a_download_at_a_time(hf, member):
    download, _ = downloads.start_download(TINY, member)
    assert downloads.take_lease(download.pk, "another-worker") is not None
    assert downloads.run_download(download.pk) == "skipped"
    assert downloads.take_lease(download.pk, "a-third-worker") is None


def test_final_and_paused_downloads_are_not_run(hf, member):
    download, _ = downloads.start_download(TINY, member)
    downloads.pause_download(download.pk, member)
    assert downloads.run_download(download.pk) == "skipped"
    downloads.cancel_download(download.pk, member)
    assert downloads.run_download(download.pk) == "skipped"


def test_reconcile_requeues_a_download_whose_worker_stopped_answering(hf, member, purged_queues):
    from datetime import timedelta

    from django.utils import timezone

    download, _ = downloads.start_download(TINY, member)
    assert downloads.take_lease(download.pk, "dead-worker") is not None
    live = downloads.reconcile_downloads()
    assert live["requeued"] == 0 and state_of(download) == S.RUNNING

    Download.objects.filter(pk=download.pk).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    assert downloads.reconcile_downloads()["requeued"] == 1
    download.refresh_from_db()
    assert download.state == S.QUEUED
    assert "stopped answering" in download.state_reason
    assert download.lease_owner == ""
    assert downloads.run_download(download.pk) == S.COMPLETED
    outcomes = list(download.runs.values_list("owner", "outcome"))
    assert outcomes == [
        ("dead-worker", "worker lost (lease expired)"),
        (outcomes[1][0], S.COMPLETED),
    ]


def test_a_failed_download_shows_why_and_can_be_retried(hf, member):
    download, _ = downloads.start_download(TINY, member)
    hf.hub.fail_status = 500
    hf.hub.fail_scope = "all"
    assert downloads.run_download(download.pk) == S.FAILED
    download.refresh_from_db()
    assert "Hugging Face is having trouble (500)" in download.error
    hf.hub.fail_status = None
    downloads.retry_download(download.pk, member)
    assert downloads.run_download(download.pk) == S.COMPLETED


def test_a_connection_cut_mid_file_is_resumed_within_the_same_run(hf, member):
    repo = "test-org/flaky-connection"
    files = add_random_repo(hf.hub, repo, {"model.safetensors": 800_000}, seed=9)
    hf.hub.interrupt_after_bytes = 300_000
    hf.hub.interrupt_times = 2  # every body counts: config.json (too short to cut), then weights
    download, _ = downloads.start_download(repo, member)
    assert downloads.run_download(download.pk) == S.COMPLETED
    ranges = [
        r.headers.get("range")
        for r in hf.hub.records
        if r.method == "GET" and r.path.endswith("/model.safetensors")
    ]
    assert ranges[0] is None and ranges[-1].startswith("bytes=")
    assert dir_digests(local_model_path(repo)) == source_digests(files)
    assert download.runs.count() == 1


def test_the_files_of_a_download_are_fetched_at_once(hf, member):
    """A CDN caps each connection: one file at a time would leave a fast link mostly idle."""
    repo = "test-org/three-shards"
    files = add_random_repo(
        hf.hub, repo, {f"model-{n}.safetensors": 600_000 for n in range(3)}, seed=11
    )
    download, _ = downloads.start_download(repo, member)
    hf.hub.throttle_bps = 200_000  # 3 s a file: in turn, the third would start after 6 s
    thread, result = run_in_thread(download.pk)
    wait_until(lambda: hf.hub.files_in_flight >= 3, timeout=5, what="three files in flight")
    hf.hub.throttle_bps = None
    thread.join(timeout=30)
    assert result["outcome"] == S.COMPLETED
    assert dir_digests(local_model_path(repo)) == source_digests(files)


def complete_blobs(cache, repo_id: str, size: int) -> list:
    blobs = cache / ("models--" + repo_id.replace("/", "--")) / "blobs"
    return [p for p in blobs.iterdir() if p.suffix != ".incomplete" and p.stat().st_size == size]


def test_a_file_that_fails_stops_the_files_fetched_beside_it(hf, member):
    repo = "test-org/one-bad-shard"
    big = 2_000_000
    add_random_repo(hf.hub, repo, {"model-1.safetensors": big, "model-2.safetensors": big})
    download, _ = downloads.start_download(repo, member)
    hf.hub.throttle_bps = 200_000  # a big file alone would take 10 s
    hf.hub.fail_status, hf.hub.fail_scope, hf.hub.fail_times = 500, "files", 1
    assert downloads.run_download(download.pk) == S.FAILED
    assert "Hugging Face is having trouble (500)" in Download.objects.get(pk=download.pk).error
    assert complete_blobs(hf.cache, repo, big) == []  # the other big file stopped too
    hf.hub.throttle_bps = None
    downloads.retry_download(download.pk, member)
    assert downloads.run_download(download.pk) == S.COMPLETED
    assert len(complete_blobs(hf.cache, repo, big)) == 2
