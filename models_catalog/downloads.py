"""Downloads: starting, joining, pausing, resuming, cancelling and running them.

The web tier calls `start_download`, `pause_download`, `resume_download`, `cancel_download`
and `retry_download`. A host's worker calls `run_download` (the Celery task is a thin wrapper)
and `cleanup_download`; Celery beat calls `reconcile_downloads`. Deleting a model from a host's
cache (models_catalog/library.py) calls `record_deletion`.

Leases: a run owns its download while `lease_owner` is its id and `lease_expires_at` is in the
future. It takes the lease in one locked transaction (never two runs at once) and renews it
from a heartbeat thread that also records progress and notices pause/cancel. A worker that
dies (kill -9, reboot) stops renewing; `reconcile_downloads` sees the lease expire and queues
the download again, and the next run resumes every partial file with HTTP Range requests.
Every run is a `DownloadAttempt`, ended when it lets the lease go, when it finds the lease lost,
or — when its worker died — by `reconcile_downloads`, at its last heartbeat.
See docs/downloads.md.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Case, F, Value, When
from django.template.defaultfilters import filesizeformat
from django.utils import timezone

from accounts.audit import log as audit
from models_catalog import cache, hub
from models_catalog.hosts.queue import enqueue
from models_catalog.hub import DownloadStopped, HubError, Manifest, RepoFile
from models_catalog.models import Download, DownloadAttempt, Host
from models_catalog.validators import validate_repo_id, validate_revision

logger = logging.getLogger(__name__)

State = Download.State

#: The tasks a download sends to its host's queue (by name: models_catalog/tasks.py).
RUN_TASK = "models_catalog.download_model"
CLEANUP_TASK = "models_catalog.cleanup_download"
#: What a download waits for while Redis does not take its task message.
WAITING_FOR_QUEUE = "it starts when the task queue is back"
#: What a cancelled download adds to its reason while its clean-up cannot be sent.
QUEUE_DOWN_CLEANUP = (
    "; its partial files are removed once the task queue is back (Redis is not answering)"
)


class DownloadRefused(Exception):
    """A download cannot start or change as asked; the message tells the user why and what
    to do."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def lease_seconds() -> float:
    return float(settings.DOWNLOAD_LEASE_SECONDS)


def heartbeat_seconds() -> float:
    return float(settings.DOWNLOAD_HEARTBEAT_SECONDS)


# --- pure rules -----------------------------------------------------------------------------


def rate_and_eta(samples: Sequence[tuple[float, int]], total: int) -> tuple[int, int | None]:
    """Speed (bytes/s) over the samples `(monotonic time, bytes done)` and the seconds left
    at that speed (None when nothing moves)."""
    if len(samples) < 2:
        return 0, None
    (t0, b0), (t1, b1) = samples[0], samples[-1]
    if t1 <= t0 or b1 <= b0:
        return 0, None
    speed = (b1 - b0) / (t1 - t0)
    remaining = max(0, total - b1)
    return int(speed), int(remaining / speed + 0.999)


def disk_shortfall(needed: int, free: int, reserve: int) -> int:
    """How many bytes are missing to store `needed` more and still keep `reserve` free."""
    return max(0, needed + reserve - free)


def space_message(repo_id: str, needed: int, free: int, reserve: int) -> str:
    return (
        f"Not enough disk space for {repo_id}: it needs {filesizeformat(needed)} more and the "
        f"model cache's disk has {filesizeformat(free)} free (the portal keeps "
        f"{filesizeformat(reserve)} spare). Delete models you no longer use under My models, "
        "then try again."
    )


# --- starting and controlling (web tier) ----------------------------------------------------


def start_download(
    repo_id: str,
    user,
    *,
    revision: str = "main",
    host: Host | None = None,
) -> tuple[Download, bool]:
    """Queue a download of `repo_id` on `host` (this machine by default), or join the one
    already active for that repo there. Returns `(download, joined)`.

    Checks first, with the Hub: the repo exists and the portal's token can read it (gated and
    private repos), and the host's disk has room for what is not in the cache yet."""
    validate_repo_id(repo_id)
    validate_revision(revision)
    host = host or Host.objects.this_machine()

    active = _active_for(host, repo_id)
    if active is not None:
        return _join(active, user), True

    token = hub.hub_token()
    try:
        manifest = hub.fetch_manifest(repo_id, revision, token)
        if manifest.gated or manifest.private:
            hub.check_file_access(manifest, token)
    except HubError as exc:
        raise DownloadRefused(exc.message) from None
    if not manifest.files:
        raise DownloadRefused(f"{repo_id} has no files on Hugging Face: nothing to download.")

    present, files_present = cache.bytes_present(repo_id, _blobs(manifest.files))
    needed = manifest.total_size - present
    free = cache.free_bytes() if host.name == settings.HOST_NAME else host.disk_free
    reserve = settings.DOWNLOAD_DISK_RESERVE_BYTES
    if disk_shortfall(needed, free, reserve):
        raise DownloadRefused(space_message(repo_id, needed, free, reserve))

    try:
        with transaction.atomic():
            Host.objects.select_for_update().get(pk=host.pk)  # one starter per host at a time
            active = _active_for(host, repo_id)
            if active is not None:
                return _join(active, user), True
            download = Download.objects.create(
                repo_id=repo_id,
                requested_revision=revision,
                revision=manifest.commit,
                host=host,
                requested_by=user,
                state=State.QUEUED,
                state_reason=f"Requested by {user}",
                manifest=[f.as_dict() for f in manifest.files],
                bytes_total=manifest.total_size,
                bytes_done=present,
                files_total=len(manifest.files),
                files_done=files_present,
            )
            _enqueue(download)
            audit.record(
                user, audit.Action.DOWNLOAD_START, download,
                after={"repo_id": repo_id, "revision": manifest.commit, "host": host.name},
            )  # fmt: skip
    except IntegrityError:  # another starter won on a database without row locks
        active = _active_for(host, repo_id)
        if active is None:
            raise
        return _join(active, user), True
    return download, False


def _blobs(files: Sequence[RepoFile]) -> list[tuple[str, int]]:
    return [(f.blob, f.size) for f in files]


def _active_for(host: Host, repo_id: str) -> Download | None:
    active = Download.objects.filter(host=host, repo_id=repo_id, state__in=Download.ACTIVE_STATES)
    return active.first()


def _join(download: Download, user) -> Download:
    """A second click on an active download joins it; on a paused one it also resumes it."""
    if download.state == State.PAUSED:
        try:
            return resume_download(download.pk, user)
        except DownloadRefused:
            pass
    return download


def _locked(download_id: int) -> Download:
    try:
        return Download.objects.select_for_update().select_related("host").get(pk=download_id)
    except Download.DoesNotExist:
        raise DownloadRefused("This download no longer exists.") from None


def _control(download_id: int, state: str, reason: str) -> Download:
    with transaction.atomic():
        download = _locked(download_id)
        if not download.can(state):
            verb = {
                State.PAUSED: "paused",
                State.QUEUED: "resumed",
                State.CANCELLED: "cancelled",
            }.get(state, state)
            raise DownloadRefused(
                f"This download is {download.get_state_display().lower()}: it cannot be {verb}."
            )
        download.transition(state, reason)
        if state == State.QUEUED:
            _enqueue(download)
        elif state == State.CANCELLED:
            _enqueue_cleanup(download)
    return download


def pause_download(download_id: int, user) -> Download:
    """Stop the transfer and keep the partial files; `resume_download` continues it."""
    return _control(download_id, State.PAUSED, f"Paused by {user}")


def resume_download(download_id: int, user) -> Download:
    return _control(download_id, State.QUEUED, f"Resumed by {user}")


def retry_download(download_id: int, user) -> Download:
    """Queue a failed or cancelled download again (it resumes from what is on disk)."""
    try:
        with transaction.atomic():
            return _control(download_id, State.QUEUED, f"Retried by {user}")
    except IntegrityError:
        raise DownloadRefused(
            "This model is already being downloaded on this host: follow that download instead."
        ) from None


def cancel_download(download_id: int, user) -> Download:
    """Stop the transfer and remove the partial files (done on the download's host)."""
    with transaction.atomic():
        download = _control(download_id, State.CANCELLED, f"Cancelled by {user}")
        audit.record(user, audit.Action.DOWNLOAD_CANCEL, download)
    return download


def record_deletion(repo_id: str, host: Host, by: str = "") -> int:
    """`repo_id` left `host`'s cache (deleted under My models): its completed downloads there
    become Deleted, saying by whom (and, in `state_changed_at`, when), instead of claiming a
    model that is gone. A new download of it can start at any time. Returns how many changed."""
    reason = f"Deleted from {host.name}'s cache" + (f" by {by}" if by else "")
    with transaction.atomic():
        completed = Download.objects.select_for_update().filter(
            host=host, repo_id=repo_id, state=State.COMPLETED
        )
        changed = list(completed)
        for download in changed:
            download.transition(State.DELETED, reason)
    return len(changed)


def queue_down_reason() -> str:
    """The reason a queued download shows while its task message could not be sent."""
    return (
        f"Queued; {WAITING_FOR_QUEUE} (Redis is not answering; the portal sends it again every "
        f"{settings.DOWNLOAD_REQUEUE_SECONDS:g} s)."
    )


def waits_for_the_queue(download: Download) -> bool:
    """Whether the download is queued but its task message could not be sent (Redis down):
    `reconcile_downloads` sends it again after DOWNLOAD_REQUEUE_SECONDS."""
    return download.state == State.QUEUED and WAITING_FOR_QUEUE in download.state_reason


def _enqueue(download: Download) -> None:
    """Send the run to the download's host queue once the transaction commits. When Redis
    does not take it, the download stays queued and says so (`waits_for_the_queue`)."""
    Download.objects.filter(pk=download.pk).update(enqueued_at=timezone.now())

    def queue_down(_error: Exception) -> None:
        reason = queue_down_reason()
        Download.objects.filter(pk=download.pk, state=State.QUEUED).update(state_reason=reason)
        if download.state == State.QUEUED:
            download.state_reason = reason

    enqueue(RUN_TASK, download.host, args=[download.pk], on_failure=queue_down)


def _enqueue_cleanup(download: Download) -> None:
    """Send the clean-up of a cancelled download to its host once the transaction commits.
    When Redis does not take it, the download says its files go once the queue is back
    (`reconcile_downloads` sends it again)."""
    Download.objects.filter(pk=download.pk).update(enqueued_at=timezone.now())

    def queue_down(_error: Exception) -> None:
        current = Download.objects.filter(pk=download.pk, state=State.CANCELLED).first()
        if current is None or QUEUE_DOWN_CLEANUP in current.state_reason:
            return
        reason = f"{current.state_reason}{QUEUE_DOWN_CLEANUP}"[:500]
        Download.objects.filter(pk=download.pk).update(state_reason=reason)
        download.state_reason = reason

    enqueue(CLEANUP_TASK, download.host, args=[download.pk], on_failure=queue_down)


# --- leases ---------------------------------------------------------------------------------


def new_owner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


def _lease_is_live(download: Download, now) -> bool:
    return bool(download.lease_owner) and (
        download.lease_expires_at is not None and download.lease_expires_at > now
    )


def take_lease(download_id: int, owner: str) -> tuple[Download, DownloadAttempt] | None:
    """Make `owner` the one run of the download, or None when it must not run (final, paused,
    or another live run holds it). Locked, so two workers can never both win."""
    with transaction.atomic():
        download = Download.objects.select_for_update().filter(pk=download_id).first()
        now = timezone.now()
        if download is None or download.state not in (State.QUEUED, State.RUNNING):
            return None
        if _lease_is_live(download, now):
            return None
        lease = {
            "lease_owner": owner,
            "lease_expires_at": now + timedelta(seconds=lease_seconds()),
            "heartbeat_at": now,
            "attempts": download.attempts + 1,
            "started_at": download.started_at or now,
        }
        if download.state == State.QUEUED:
            reason = "Resuming" if download.attempts else "Started"
            download.transition(State.RUNNING, f"{reason} on {download.host}", **lease)
        else:  # running, its lease expired: this run takes over
            Download.objects.filter(pk=download.pk).update(**lease)
            for name, value in lease.items():
                setattr(download, name, value)
        attempt = DownloadAttempt.objects.create(
            download=download,
            owner=owner,
            started_at=now,
            last_heartbeat_at=now,
            bytes_at_start=download.bytes_done,
        )
    return download, attempt


def _release(
    download_id: int, owner: str, attempt: DownloadAttempt, outcome: str, **fields
) -> None:
    """Let the lease go (only if still ours). A download resumed while this run was stopping
    is queued again here, since its own task found the lease taken."""
    with transaction.atomic():
        download = _locked(download_id)
        if download.lease_owner == owner:
            download.lease_owner = ""
            download.lease_expires_at = None
            for name, value in fields.items():
                setattr(download, name, value)
            download.save()
            if download.state == State.QUEUED:
                _enqueue(download)
        DownloadAttempt.objects.filter(pk=attempt.pk).update(
            ended_at=timezone.now(), outcome=outcome[:500]
        )


def _close_lost_run(attempt: DownloadAttempt) -> None:
    """A run that found its lease gone ends its attempt (unless `reconcile_downloads` already
    ended it at its last heartbeat); it writes nothing else, someone else owns the download."""
    DownloadAttempt.objects.filter(pk=attempt.pk, ended_at__isnull=True).update(
        ended_at=timezone.now(), outcome="lost its lease: the download went on without this run"
    )


# --- running (a host's worker) --------------------------------------------------------------


def run_download(download_id: int) -> str:
    """Run the download if no other run holds it; returns what happened (for logs and tests)."""
    owner = new_owner_id()
    taken = take_lease(download_id, owner)
    if taken is None:
        return "skipped"
    download, attempt = taken
    return _Run(download, attempt, owner).execute()


@dataclass
class _Progress:
    bytes_done: int = 0
    files_done: int = 0


class _Run:
    """One run of one download, from a taken lease to its release."""

    def __init__(self, download: Download, attempt: DownloadAttempt, owner: str) -> None:
        self.download = download
        self.attempt = attempt
        self.owner = owner
        self.stop = threading.Event()
        self.stop_reason = ""  # "paused", "cancelled" or "lost"
        self.failed = threading.Event()  # a file failed: the files fetched beside it stop
        self.finished = threading.Event()
        self.samples: deque[tuple[float, int]] = deque(maxlen=10)
        self.files: list[RepoFile] = [RepoFile.from_dict(f) for f in download.manifest]
        self.repaired: list[str] = []
        self._heartbeat: threading.Thread | None = None
        # The run trusts its lease only until shortly before it could expire: if heartbeats
        # stall (database busy, process frozen) it stops writing before anyone can take over.
        self.trusted_until = time.monotonic() + lease_seconds() * 0.8

    def should_stop(self) -> bool:
        if self.stop.is_set() or self.failed.is_set():
            return True
        if time.monotonic() > self.trusted_until:
            self.stop_reason = "lost"
            self.stop.set()
            return True
        return False

    # the heartbeat: lease, progress, pause/cancel

    def _measure(self) -> _Progress:
        done, files = cache.bytes_present(self.download.repo_id, _blobs(self.files))
        return _Progress(done, files)

    def _beat(self, **extra) -> bool:
        """Renew the lease and record progress; False (and stop) when the run must end."""
        began = time.monotonic()
        progress = self._measure()
        self.samples.append((began, progress.bytes_done))
        speed, eta = rate_and_eta(list(self.samples), self.download.bytes_total)
        now = timezone.now()
        updated = Download.objects.filter(
            pk=self.download.pk, lease_owner=self.owner, state=State.RUNNING
        ).update(
            lease_expires_at=now + timedelta(seconds=lease_seconds()),
            heartbeat_at=now,
            bytes_done=progress.bytes_done,
            files_done=progress.files_done,
            speed_bps=speed,
            eta_seconds=eta,
            **extra,
        )
        if updated:
            self.trusted_until = began + lease_seconds() * 0.8
            DownloadAttempt.objects.filter(pk=self.attempt.pk).update(last_heartbeat_at=now)
            return True
        current = (
            Download.objects.filter(pk=self.download.pk).values("state", "lease_owner").first()
        )
        if current is None or current["lease_owner"] != self.owner:
            self.stop_reason = "lost"
        else:
            self.stop_reason = current["state"]
        self.stop.set()
        return False

    def _heartbeat_loop(self) -> None:
        try:
            while not self.finished.wait(heartbeat_seconds()):
                try:
                    if not self._beat():
                        return
                except Exception:  # keep beating; should_stop() ends the run if this lasts
                    logger.exception("Heartbeat of download %s failed", self.download.pk)
        finally:
            connection.close()

    def _set_phase(self, phase: str) -> None:
        if not self._beat(phase=phase):
            raise DownloadStopped()

    # the work

    def execute(self) -> str:
        download = self.download
        outcome = "stopped"
        fields: dict = {}
        try:
            self._set_phase("Fetching the file list")
            token = hub.hub_token()
            manifest = hub.fetch_manifest(download.repo_id, download.revision, token)
            self.files = manifest.files
            Download.objects.filter(pk=download.pk, lease_owner=self.owner).update(
                manifest=[f.as_dict() for f in manifest.files],
                bytes_total=manifest.total_size,
                files_total=len(manifest.files),
            )
            download.bytes_total = manifest.total_size
            self._check_space(manifest)
            self._set_phase("Downloading")
            self._heartbeat = threading.Thread(
                target=self._heartbeat_loop, name=f"download-{download.pk}-heartbeat", daemon=True
            )
            self._heartbeat.start()
            # One fetch per blob (two paths with the same bytes share it), the largest first:
            # the files fetched at once share the link until the end.
            blobs = {f.blob: f for f in sorted(manifest.files, key=lambda f: f.size)}
            files = sorted(blobs.values(), key=lambda f: f.size, reverse=True)
            fetched = self._each(files, lambda f: self._fetch(manifest, f, token))
            skipped = [f for f, new in zip(files, fetched, strict=True) if not new]
            self._set_phase("Verifying")
            self._each(skipped, lambda f: self._verify_existing(manifest, f, token))
            self._set_phase("Finishing")
            hub.finalize_snapshot(manifest, token)
            outcome = self._finish(State.COMPLETED, self._completion_reason())
        except DownloadStopped:
            outcome = self.stop_reason or "stopped"
            if self.stop_reason == State.CANCELLED:
                cache.remove_partial_download(download.repo_id, [f.blob for f in self.files])
                fields["files_removed"] = True
        except HubError as exc:
            outcome = self._finish(State.FAILED, exc.message)
        except Exception as exc:
            logger.exception("Download %s failed", download.pk)
            outcome = self._finish(
                State.FAILED, f"The download stopped on an error ({exc.__class__.__name__}: {exc})."
            )
        finally:
            self.finished.set()
            if self._heartbeat is not None:
                self._heartbeat.join(timeout=30)
            if self.stop_reason != "lost":
                _release(download.pk, self.owner, self.attempt, outcome, **fields)
            else:
                _close_lost_run(self.attempt)
        return outcome

    def _each[T](self, files: list[RepoFile], work: Callable[[RepoFile], T]) -> list[T]:
        """`work(file)` for every file, DOWNLOAD_FILES_AT_ONCE at a time; the results in the
        order of `files`. The first failure stops the others (they see `should_stop`) and is
        raised; a stop (pause, cancel, a lost lease) raises DownloadStopped."""
        if len(files) <= 1 or settings.DOWNLOAD_FILES_AT_ONCE <= 1:
            return [work(f) for f in files]
        with ThreadPoolExecutor(
            max_workers=min(settings.DOWNLOAD_FILES_AT_ONCE, len(files)),
            thread_name_prefix=f"download-{self.download.pk}",
        ) as pool:
            futures = [pool.submit(self._in_thread, work, f) for f in files]
            wait(futures, return_when=FIRST_EXCEPTION)
            failed = next((f for f in futures if f.done() and f.exception()), None)
            if failed is not None:
                self.failed.set()  # the others stop at their next chunk
            wait(futures)
        errors = [f.exception() for f in futures if f.exception() is not None]
        first = next((e for e in errors if not isinstance(e, DownloadStopped)), None)
        if first is not None:
            raise first
        if errors:
            raise errors[0]
        return [f.result() for f in futures]

    def _in_thread[T](self, work: Callable[[RepoFile], T], repo_file: RepoFile) -> T:
        try:
            return work(repo_file)
        finally:
            connection.close()  # a pool thread's own database connection, if it opened one

    def _check_space(self, manifest: Manifest) -> None:
        present, _ = cache.bytes_present(manifest.repo_id, _blobs(manifest.files))
        needed = manifest.total_size - present
        free = cache.free_bytes()
        reserve = settings.DOWNLOAD_DISK_RESERVE_BYTES
        if disk_shortfall(needed, free, reserve):
            raise HubError(space_message(manifest.repo_id, needed, free, reserve))

    def _fetch(self, manifest: Manifest, repo_file: RepoFile, token: str | None) -> bool:
        """Download one file into its blob; False when the blob was already there."""
        blob = cache.blob_path(manifest.repo_id, repo_file.blob)
        if blob.exists():
            return False
        partial = cache.incomplete_path(manifest.repo_id, repo_file.blob)
        for attempt in (1, 2):
            hub.download_file(manifest, repo_file, partial, token, should_stop=self.should_stop)
            if hub.file_matches(partial, repo_file):
                partial.chmod(0o644)
                os.replace(partial, blob)
                return True
            partial.unlink(missing_ok=True)
            logger.warning("%s: %s does not match the Hub's hash", manifest.repo_id, repo_file.path)
            if attempt == 1:
                self.repaired.append(repo_file.path)
        raise HubError(
            f"{repo_file.path} arrived twice with bytes that do not match the Hub's checksum, so "
            "it was deleted rather than used. Retry later; if it keeps failing the files on "
            "Hugging Face may be changing."
        )

    def _verify_existing(self, manifest: Manifest, repo_file: RepoFile, token: str | None) -> None:
        blob = cache.blob_path(manifest.repo_id, repo_file.blob)
        if hub.file_matches(blob, repo_file):
            return
        logger.warning(
            "%s: cached %s is corrupt; fetching it again", manifest.repo_id, repo_file.path
        )
        blob.unlink()
        self.repaired.append(repo_file.path)
        self._fetch(manifest, repo_file, token)

    def _completion_reason(self) -> str:
        reason = f"All {len(self.files)} files verified against Hugging Face's checksums"
        if self.repaired:
            names = ", ".join(sorted(set(self.repaired)))
            reason += f"; downloaded again after a checksum mismatch: {names}"
        return reason + "."

    def _finish(self, state: str, reason: str) -> str:
        with transaction.atomic():
            download = Download.objects.select_for_update().get(pk=self.download.pk)
            if download.lease_owner != self.owner:
                self.stop_reason = "lost"
                return "lost"
            if download.state != State.RUNNING:  # paused or cancelled at the last moment
                return download.state
            fields: dict[str, object] = {"phase": ""}
            if state == State.COMPLETED:
                fields.update(bytes_done=download.bytes_total, files_done=download.files_total)
            download.transition(state, reason, **fields)
        return state


# --- cleaning up and reconciling ------------------------------------------------------------


def cleanup_download(download_id: int) -> str:
    """Remove a cancelled download's partial files on its host, unless a live run still holds
    it (that run cleans up itself when it notices the cancel)."""
    owner = new_owner_id()
    with transaction.atomic():
        download = Download.objects.select_for_update().filter(pk=download_id).first()
        if download is None or download.state != State.CANCELLED or download.files_removed:
            return "nothing to do"
        if _lease_is_live(download, timezone.now()):
            return "a run holds it"
        download.lease_owner = owner
        download.lease_expires_at = timezone.now() + timedelta(seconds=lease_seconds())
        download.save(update_fields=["lease_owner", "lease_expires_at"])
    files = [RepoFile.from_dict(f) for f in download.manifest]
    freed = cache.remove_partial_download(download.repo_id, [f.blob for f in files])
    with transaction.atomic():
        current = _locked(download_id)
        if current.lease_owner == owner:
            current.lease_owner = ""
            current.lease_expires_at = None
            current.files_removed = current.state == State.CANCELLED
            current.bytes_done = 0 if current.state == State.CANCELLED else current.bytes_done
            current.save()
            if current.state == State.QUEUED:
                _enqueue(current)
    return f"removed {freed} bytes"


def reconcile_downloads() -> dict[str, int]:
    """Celery beat, every few seconds: re-queue downloads whose run died (lease expired) or
    whose task message went missing, end the attempts of runs that died, and finish cancelled
    downloads' clean-up."""
    now = timezone.now()
    counts = {"requeued": 0, "resent": 0, "cleanups": 0, "runs_ended": 0}
    expired = Download.objects.filter(state=State.RUNNING, lease_expires_at__lt=now)
    for download_id in expired.values_list("pk", flat=True):
        with transaction.atomic():
            download = _locked(download_id)
            if download.state != State.RUNNING or _lease_is_live(download, timezone.now()):
                continue
            lost = download.lease_expires_at
            # It ended at its last sign of life (it never got to say so itself).
            DownloadAttempt.objects.filter(
                download=download, owner=download.lease_owner, ended_at__isnull=True
            ).update(outcome="worker lost (lease expired)", ended_at=F("last_heartbeat_at"))
            download.transition(
                State.QUEUED,
                f"The worker stopped answering (lease expired at {lost:%H:%M:%S}); "
                "resuming on the next free worker.",
                lease_owner="",
                lease_expires_at=None,
            )
            _enqueue(download)
            counts["requeued"] += 1

    stale = now - timedelta(seconds=settings.DOWNLOAD_REQUEUE_SECONDS)
    waiting = Download.objects.filter(state=State.QUEUED, lease_owner="", enqueued_at__lt=stale)
    for download_id in waiting.values_list("pk", flat=True):
        with transaction.atomic():
            download = _locked(download_id)
            if download.state == State.QUEUED and not download.lease_owner:
                _enqueue(download)
                counts["resent"] += 1

    cancelled = Download.objects.filter(
        state=State.CANCELLED, files_removed=False, enqueued_at__lt=stale
    ).exclude(lease_expires_at__gt=now)
    for download in cancelled.select_related("host"):
        with transaction.atomic():
            _enqueue_cleanup(download)
        counts["cleanups"] += 1

    counts["runs_ended"] = _end_dead_runs(now)
    return counts


def _end_dead_runs(now) -> int:
    """End the attempts of runs silent for a lease time, whatever their download's state: a
    worker killed while its download was paused, cancelled, finishing or taken over never ends
    its attempt itself. A live run renews its attempt's heartbeat with its lease, so a silent
    one is dead; it ended at its last heartbeat."""
    silent_since = now - timedelta(seconds=lease_seconds())
    dead = DownloadAttempt.objects.filter(ended_at__isnull=True, last_heartbeat_at__lt=silent_since)
    return dead.update(
        ended_at=F("last_heartbeat_at"),
        outcome=Case(
            When(outcome="", then=Value("worker lost (no heartbeat)")), default=F("outcome")
        ),
    )
