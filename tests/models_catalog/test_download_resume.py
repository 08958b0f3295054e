"""A download survives its worker being killed with SIGKILL mid-file: the lease expires, the
reconcile task (Celery beat's job, called here directly) queues it again, a new worker resumes
the partial file with a Range request, and every file ends byte-identical to the source."""

import hashlib
import itertools
import os

import pytest

from models_catalog import downloads
from models_catalog.local import local_model_path
from models_catalog.models import Download
from tests.models_catalog.download_helpers import (
    add_random_repo,
    dir_digests,
    partial_files,
    source_digests,
    state_of,
    wait_until,
)
from tests.support.workers import new_worker

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

S = Download.State
WORKER_ENV = {"DOWNLOAD_LEASE_SECONDS": "3", "DOWNLOAD_HEARTBEAT_SECONDS": "0.3"}


def test_a_download_resumes_after_its_worker_is_killed_mid_file(
    hf, member, tmp_path, purged_queues
):
    repo = "test-org/big-sigkill"
    big = "model-00002-of-00002.safetensors"  # files go at once: both are partial at the kill
    files = add_random_repo(
        hf.hub, repo, {"model-00001-of-00002.safetensors": 1_000_000, big: 3_000_000}, seed=11
    )
    hf.hub.throttle_bps = 600_000

    first = new_worker(tmp_path, **WORKER_ENV).start()
    try:
        first.wait_ready()
        download, _ = downloads.start_download(repo, member)

        big_partial = f"{hashlib.sha256(files[big]).hexdigest()}.incomplete"

        def mid_big_file() -> bool:
            partial = [p for p in partial_files(hf.cache, repo) if p.name == big_partial]
            return bool(partial) and partial[0].stat().st_size > 400_000

        wait_until(mid_big_file, timeout=60, what=f"the first worker mid-file\n{first.log_tail()}")
        first.kill()
    finally:
        first.stop()
    assert first.process.poll() is not None
    partials = {p.name: p.stat().st_size for p in partial_files(hf.cache, repo)}
    kept = partials[big_partial]
    assert 400_000 < kept < 3_000_000
    downloads_before = hf.hub.count("GET", f"/{repo}/resolve/")

    hf.hub.throttle_bps = None
    second = new_worker(tmp_path, **WORKER_ENV).start()
    try:
        second.wait_ready()

        def completed() -> bool:
            downloads.reconcile_downloads()  # what Celery beat runs every few seconds
            download.refresh_from_db()
            assert download.state != S.FAILED, download.error
            return download.state == S.COMPLETED

        wait_until(completed, timeout=60, every=0.5, what=f"completion\n{second.log_tail()}")
    finally:
        second.stop()

    # Byte-identical to the source, nothing partial left.
    assert dir_digests(local_model_path(repo)) == source_digests(files)
    assert partial_files(hf.cache, repo) == []

    # The second run resumed the big file where the first one stopped.
    resumed = [
        r.headers.get("range")
        for r in hf.hub.records[:]
        if r.method == "GET" and r.path.endswith(f"/{big}")
    ]
    assert resumed[-1] == f"bytes={kept}-"
    assert hf.hub.count("GET", f"/{repo}/resolve/") > downloads_before

    # Two runs, one after the other: the second took over only once the first's lease was gone.
    first_run, second_run = download.runs.order_by("started_at")
    assert first_run.outcome == "worker lost (lease expired)"
    # Killed, it never said goodbye: the reconcile ended it at its last sign of life.
    assert first_run.ended_at == first_run.last_heartbeat_at
    assert second_run.started_at > first_run.ended_at
    assert second_run.ended_at >= second_run.last_heartbeat_at
    assert second_run.outcome == S.COMPLETED
    # It started from the progress the killed run had recorded (its last heartbeat).
    assert 0 < second_run.bytes_at_start <= sum(partials.values())


def test_a_run_whose_worker_dies_after_a_pause_is_ended_at_its_last_heartbeat(
    hf, member, tmp_path, purged_queues, settings
):
    """Paused while its worker was already dead: no lease of a running download expires, so
    only the attempts' own heartbeats tell that the run is gone."""
    settings.DOWNLOAD_LEASE_SECONDS = 3  # what this process's reconcile presumes dead
    repo = "test-org/big-paused-kill"
    files = add_random_repo(hf.hub, repo, {"model.safetensors": 2_000_000}, seed=3)
    big_partial = f"{hashlib.sha256(files['model.safetensors']).hexdigest()}.incomplete"
    hf.hub.throttle_bps = 300_000

    worker = new_worker(tmp_path, **WORKER_ENV).start()
    try:
        worker.wait_ready()
        download, _ = downloads.start_download(repo, member)

        def mid_file() -> bool:
            partial = [p for p in partial_files(hf.cache, repo) if p.name == big_partial]
            return bool(partial) and partial[0].stat().st_size > 100_000

        wait_until(mid_file, timeout=60, what=f"the worker mid-file\n{worker.log_tail()}")
        worker.kill()
    finally:
        worker.stop()
    downloads.pause_download(download.pk, member)  # the member gives up waiting
    run = download.runs.get()
    assert run.ended_at is None and run.outcome == ""

    def ended() -> bool:
        downloads.reconcile_downloads()  # what Celery beat runs every few seconds
        run.refresh_from_db()
        return run.ended_at is not None

    wait_until(ended, timeout=30, every=0.3, what="the dead run's attempt ended")
    assert run.ended_at == run.last_heartbeat_at
    assert run.outcome == "worker lost (no heartbeat)"
    assert state_of(download) == S.PAUSED  # nothing else changed


KILLS = 5


def test_a_download_killed_five_times_completes_byte_identical_with_one_run_at_a_time(
    hf, member, tmp_path, purged_queues
):
    """SIGKILL the worker five times in one download, each time after some progress; the
    sixth worker finishes it. Figures: docs/reliability.md."""
    import time

    repo = "test-org/big-sigkill-5"
    big = "model.safetensors"
    files = add_random_repo(hf.hub, repo, {"config.json": 2_000, big: 4_000_000}, seed=5)
    hf.hub.throttle_bps = 1_000_000
    big_partial = f"{hashlib.sha256(files[big]).hexdigest()}.incomplete"
    env = {"DOWNLOAD_LEASE_SECONDS": "1.5", "DOWNLOAD_HEARTBEAT_SECONDS": "0.2"}
    started = time.monotonic()

    def partial_size() -> int:
        partial = [p for p in partial_files(hf.cache, repo) if p.name == big_partial]
        return partial[0].stat().st_size if partial else 0

    download = None
    sizes = []
    for kill in range(KILLS):
        worker = new_worker(tmp_path, **env).start()
        try:
            worker.wait_ready()
            if download is None:
                download, _ = downloads.start_download(repo, member)
            reached = (sizes[-1] if sizes else 0) + 300_000

            def progressed(reached=reached) -> bool:
                downloads.reconcile_downloads()  # requeues the download of the dead worker
                return partial_size() > reached

            wait_until(progressed, timeout=60, every=0.2, what=f"kill {kill}\n{worker.log_tail()}")
            worker.kill()
        finally:
            worker.stop()
        sizes.append(partial_size())

    hf.hub.throttle_bps = None
    last = new_worker(tmp_path, **env).start()
    try:
        last.wait_ready()

        def completed() -> bool:
            downloads.reconcile_downloads()
            download.refresh_from_db()
            assert download.state != S.FAILED, download.error
            return download.state == S.COMPLETED

        wait_until(completed, timeout=60, every=0.3, what=f"completion\n{last.log_tail()}")
    finally:
        last.stop()
    elapsed = time.monotonic() - started

    assert dir_digests(local_model_path(repo)) == source_digests(files)
    assert partial_files(hf.cache, repo) == []
    assert sizes == sorted(sizes) and sizes[-1] < 4_000_000  # each worker resumed, none restarted
    # One run per worker, never two at once: each began after the previous one's last sign of
    # life, and only the last one completed.
    runs = list(download.runs.order_by("started_at"))
    assert len(runs) == KILLS + 1
    for before, after in itertools.pairwise(runs):
        assert after.started_at >= before.last_heartbeat_at
        assert before.ended_at == before.last_heartbeat_at  # each killed run was ended
    assert all(r.ended_at is not None for r in runs)
    assert [r.outcome for r in runs].count(S.COMPLETED) == 1 and runs[-1].outcome == S.COMPLETED
    report = os.environ.get("MLX_PORTAL_RELIABILITY_REPORT")
    if report:
        with open(report, "a") as out:
            out.write(f"download kills={KILLS} seconds={elapsed:.1f} partial sizes={sizes}\n")
