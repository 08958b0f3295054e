"""Every file is checked against the Hub's checksums (LFS sha256, git blob id): a corrupted
blob or partial file is deleted and downloaded again, never silently accepted."""

import hashlib
import threading

import pytest
from django.db import connection

from models_catalog import downloads
from models_catalog.local import local_model_path
from models_catalog.models import Download
from tests.models_catalog.download_helpers import (
    add_random_repo,
    dir_digests,
    partial_files,
    source_digests,
    wait_until,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fast_heartbeat")]

S = Download.State
TINY = "test-org/tiny-llama"


def blob_of(cache, repo_id: str, data: bytes):
    return (
        cache
        / ("models--" + repo_id.replace("/", "--"))
        / "blobs"
        / hashlib.sha256(data).hexdigest()
    )


def test_a_corrupted_blob_in_the_cache_is_downloaded_again(hf, member, tiny_model):
    first, _ = downloads.start_download(TINY, member)
    assert downloads.run_download(first.pk) == S.COMPLETED
    weights = (tiny_model / "model.safetensors").read_bytes()
    blob = blob_of(hf.cache, TINY, weights)
    corrupted = bytearray(blob.read_bytes())
    corrupted[1000] ^= 0xFF  # same size, one byte off: only the checksum can tell
    blob.write_bytes(bytes(corrupted))

    again, _ = downloads.start_download(TINY, member)
    assert downloads.run_download(again.pk) == S.COMPLETED
    again.refresh_from_db()
    assert "checksum mismatch: model.safetensors" in again.state_reason
    assert blob.read_bytes() == weights
    assert dir_digests(local_model_path(TINY)) == dir_digests(tiny_model)


def test_a_corrupted_partial_file_is_caught_when_the_download_resumes(hf, member):
    repo = "test-org/corrupt-partial"
    files = add_random_repo(hf.hub, repo, {"model.safetensors": 1_200_000}, seed=3)
    hf.hub.throttle_bps = 400_000
    download, _ = downloads.start_download(repo, member)

    def run() -> None:
        try:
            downloads.run_download(download.pk)
        finally:
            connection.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    wait_until(
        lambda: (
            partial_files(hf.cache, repo)
            and partial_files(hf.cache, repo)[0].stat().st_size > 100_000
        ),
        what="a partial file",
    )
    downloads.pause_download(download.pk, member)
    thread.join(timeout=10)
    [partial] = partial_files(hf.cache, repo)
    with partial.open("r+b") as handle:  # a disk error flips the partial file's first bytes
        handle.write(b"\x00" * 64)

    hf.hub.throttle_bps = None
    downloads.resume_download(download.pk, member)
    assert downloads.run_download(download.pk) == S.COMPLETED
    download.refresh_from_db()
    assert "model.safetensors" in download.state_reason
    assert dir_digests(local_model_path(repo)) == source_digests(files)


def test_bytes_that_never_match_the_hub_fail_the_download_and_are_deleted(hf, member):
    repo = "test-org/lying-hub"
    add_random_repo(hf.hub, repo, {"model.safetensors": 200_000}, seed=5)
    # The Hub's metadata keeps the old sha256 while it serves other bytes.
    hf.hub.repos[repo].files["model.safetensors"].data = b"\x01" * 200_000
    download, _ = downloads.start_download(repo, member)
    assert downloads.run_download(download.pk) == S.FAILED
    download.refresh_from_db()
    assert "do not match the Hub's checksum" in download.error
    assert "model.safetensors" in download.error
    blobs = hf.cache / "models--test-org--lying-hub" / "blobs"
    stored = [p.name for p in blobs.iterdir()] if blobs.exists() else []
    weights_blob = download.manifest and next(
        f["blob"] for f in download.manifest if f["path"] == "model.safetensors"
    )
    assert weights_blob not in stored
    assert not any(name.endswith(".incomplete") for name in stored)
    assert local_model_path(repo) is None
