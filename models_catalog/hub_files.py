"""The download side of the Hugging Face boundary: file lists with their hashes, file bytes,
snapshots and token checks. (Search and model facts live in models_catalog/hub.py.)

Every call passes `endpoint=settings.HF_ENDPOINT`, `cache_dir=settings.HF_HUB_CACHE` and the
token explicitly: huggingface_hub reads its environment once at import, and an implicit token
from the machine's login must never leak into the portal's requests (`token=False`).

Why the portal moves the bytes itself: huggingface_hub 2.4 writes each file to a temporary
`<etag>.<random>.incomplete` file and deletes it when the transfer fails, so an interrupted
file always starts again from zero. The portal streams each file into the cache's own
`blobs/<etag>.incomplete` (a stable name) and resumes it with an HTTP `Range` request, then asks
`snapshot_download` to build the snapshot (symlinks, refs, tree cache) from the blobs it finds.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import quote

import httpx2
from django.conf import settings
from django.urls import reverse
from huggingface_hub import HfApi, hf_hub_url, snapshot_download
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.hf_api import ModelInfo
from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

from models_catalog import crypto, hub_data

logger = logging.getLogger(__name__)

CHUNK_SIZE = 64 * 1024
API_TIMEOUT = 15.0
READ_TIMEOUT = 60.0
TRANSFER_RETRIES = 5
_HEX_ID = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
# What huggingface_hub raises for Hub answers, network trouble and cache problems.
_HUB_ERRORS = (HfHubHTTPError, httpx2.HTTPError, OSError, ValueError)


class HubError(Exception):
    """A Hub answer the user must read: the message says what happened and what to do."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable


class _RangeRefused(Exception):
    """416: the server will not send the rest of a partial file."""


class DownloadStopped(Exception):
    """The caller asked the transfer to stop (pause, cancel, lost lease)."""


@dataclass(frozen=True)
class RepoFile:
    path: str
    size: int
    blob: str  # the cache's blob name: the LFS sha256, else the git blob id
    sha256: str | None  # LFS files: the content's sha256 from the Hub
    git_oid: str | None  # every file: git's blob id (sha1 of "blob <size>\0" + content)

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> RepoFile:
        return cls(**data)


@dataclass(frozen=True)
class Manifest:
    repo_id: str
    commit: str
    files: list[RepoFile]
    gated: bool
    private: bool

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)


# --- the token ------------------------------------------------------------------------------


def stored_token() -> tuple[str | None, str]:
    """`(token, problem)`: the admin-set token from the database; `problem` explains a token
    that is stored but cannot be read (SECRET_KEY changed)."""
    from models_catalog.models import HubSettings

    row = HubSettings.objects.filter(pk=1).first()
    if row is None or not row.token_encrypted:
        return None, ""
    try:
        return crypto.decrypt(row.token_encrypted), ""
    except crypto.InvalidToken:
        return None, (
            "The stored Hugging Face token cannot be decrypted (the portal's secret key changed): "
            "an admin must set it again."
        )


def hub_token() -> str | None:
    """The token for every Hub call: the admin-set one, else the HF_TOKEN setting, else None."""
    token, _ = stored_token()
    return token or settings.HF_TOKEN or None


def token_source() -> str:
    """Where `hub_token()` comes from: "portal", "environment" or "" (none)."""
    if stored_token()[0]:
        return "portal"
    return "environment" if settings.HF_TOKEN else ""


#: The longest user name kept (HubSettings.checked_user).
USER_NAME_MAX = 200


def whoami(token: str) -> str:
    """The Hub user name the token belongs to (as text a column takes, cut to
    `USER_NAME_MAX`); HubError when it is rejected or the answer cannot be read."""
    try:
        info = HfApi(endpoint=settings.HF_ENDPOINT).whoami(token=token)
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        if status in (401, 403):
            raise HubError(
                "Hugging Face rejected this token (401): check it and try again."
            ) from None
        raise _unreachable(exc) from None
    except (httpx2.HTTPError, OSError) as exc:
        raise _unreachable(exc) from None
    except (ValueError, RecursionError):  # an answer that is not JSON, or nested too deeply
        raise HubError(
            "Hugging Face's answer to the token check cannot be read: try again later.",
            retryable=True,
        ) from None
    name = info.get("name") if isinstance(info, dict) else None
    return hub_data.text(name, USER_NAME_MAX)


# --- the file list --------------------------------------------------------------------------

#: The largest answer about one model that is read (a model with thousands of files is ~2 MB).
MODEL_INFO_MAX_BYTES = 32 << 20


def model_info(
    repo_id: str,
    *,
    endpoint: str,
    token: str | None,
    timeout: float,
    revision: str | None = None,
) -> ModelInfo:
    """`HfApi.model_info(files_metadata=True)`, with the Hub's answer read through `hub_data`
    (`model_item`): what a repo's author wrote into it (NaN, 1e309, wrong types, huge strings)
    arrives cleaned, never as an exception or a value no column can hold. Raises what
    huggingface_hub raises for the Hub's errors, and `hub_data.HubDataError`."""
    path = f"{endpoint}/api/models/{repo_id}"
    if revision is not None:
        path += f"/revision/{quote(revision, safe='')}"
    response = get_session().get(
        path,
        headers=build_hf_headers(token=token or False),
        params={"blobs": True},
        timeout=timeout,
    )
    hf_raise_for_status(response)
    item = hub_data.model_item(hub_data.loads(response.content, max_bytes=MODEL_INFO_MAX_BYTES))
    if item is None:
        raise hub_data.HubDataError("it does not describe a model")
    return ModelInfo(**{"siblings": None, **item})


def fetch_manifest(repo_id: str, revision: str, token: str | None) -> Manifest:
    """The repo's commit and every file with its size and hashes (one model_info call)."""
    try:
        info = model_info(
            repo_id,
            endpoint=settings.HF_ENDPOINT,
            token=token,
            timeout=API_TIMEOUT,
            revision=revision,
        )
    except _HUB_ERRORS as exc:
        raise translate(exc, repo_id, token) from None
    files = []
    for sibling in info.siblings or []:
        sha256 = sibling.lfs.sha256 if sibling.lfs is not None else None
        blob = sha256 or sibling.blob_id
        if not blob or not _HEX_ID.fullmatch(blob):
            raise HubError(f"Hugging Face did not give the hash of {sibling.rfilename}: try again.")
        size = sibling.size if sibling.size is not None else (sibling.lfs and sibling.lfs.size)
        if size is None:
            raise HubError(
                f"Hugging Face did not give a usable size for {sibling.rfilename} of {repo_id}, "
                "so the portal cannot check what it downloads: try again later."
            )
        files.append(
            RepoFile(
                path=sibling.rfilename, size=size, blob=blob, sha256=sha256, git_oid=sibling.blob_id
            )
        )
    if not info.sha:
        raise HubError(f"Hugging Face did not say which commit {repo_id} is at: try again.")
    return Manifest(
        repo_id=repo_id,
        commit=info.sha,
        files=sorted(files, key=lambda f: (f.size, f.path)),
        gated=bool(info.gated),
        private=bool(info.private),
    )


def check_file_access(manifest: Manifest, token: str | None) -> None:
    """Ask for one file's headers: a gated repo answers 401/403 here, not in model_info."""
    if not manifest.files:
        return
    url = hf_hub_url(
        manifest.repo_id,
        manifest.files[0].path,
        revision=manifest.commit,
        endpoint=settings.HF_ENDPOINT,
    )
    try:
        response = get_session().head(
            url, headers=build_hf_headers(token=token or False), timeout=API_TIMEOUT
        )
        hf_raise_for_status(response)
    except _HUB_ERRORS as exc:
        raise translate(exc, manifest.repo_id, token) from None


# --- bytes ----------------------------------------------------------------------------------


def download_file(
    manifest: Manifest,
    repo_file: RepoFile,
    incomplete: Path,
    token: str | None,
    *,
    should_stop: Callable[[], bool],
    on_bytes: Callable[[int], None] | None = None,
) -> None:
    """Append the rest of `repo_file` to `incomplete`, resuming from its current size with an
    HTTP Range request; retries broken transfers. Raises DownloadStopped when `should_stop()`
    turns true (checked between chunks), HubError when the Hub refuses."""
    url = hf_hub_url(
        manifest.repo_id, repo_file.path, revision=manifest.commit, endpoint=settings.HF_ENDPOINT
    )
    headers = build_hf_headers(token=token or False)
    incomplete.parent.mkdir(parents=True, exist_ok=True)
    incomplete.touch(exist_ok=True)  # an empty file is complete as soon as it exists
    failures = 0
    while True:
        done = incomplete.stat().st_size if incomplete.exists() else 0
        if done > repo_file.size:  # longer than the file can be: start again
            incomplete.unlink()
            done = 0
        if done == repo_file.size:
            return
        if should_stop():
            raise DownloadStopped()
        request_headers = {**headers, "Range": f"bytes={done}-"} if done else headers
        try:
            _stream_into(url, request_headers, incomplete, done, should_stop, on_bytes)
            failures = 0
        except _RangeRefused:
            incomplete.write_bytes(b"")
            failures += 1
            if failures > TRANSFER_RETRIES:
                raise HubError(f"Hugging Face refused to resume {repo_file.path}: retry.") from None
        except (httpx2.TransportError, OSError) as exc:
            if isinstance(exc, HfHubHTTPError):  # an HTTP answer (an OSError too): no retry
                raise translate(exc, manifest.repo_id, token) from None
            failures += 1
            if failures > TRANSFER_RETRIES:
                raise HubError(
                    f"Hugging Face stopped sending {repo_file.path} ({exc.__class__.__name__}). "
                    "Retry: the download resumes where it stopped.",
                    retryable=True,
                ) from None
            logger.warning("Transfer of %s broke (%s); resuming", repo_file.path, exc)
            time.sleep(min(2**failures, 10))


def _stream_into(
    url: str,
    headers: dict[str, str],
    incomplete: Path,
    done: int,
    should_stop: Callable[[], bool],
    on_bytes: Callable[[int], None] | None,
) -> None:
    timeout = httpx2.Timeout(API_TIMEOUT, read=READ_TIMEOUT)
    with get_session().stream(
        "GET", url, headers=headers, timeout=timeout, follow_redirects=True
    ) as response:
        if response.status_code == 416 and done:
            # The server disagrees about what we have: the partial file is no good.
            raise _RangeRefused()
        hf_raise_for_status(response)
        mode = "ab"
        if done and response.status_code == 200:  # the server ignored Range: start over
            mode = "wb"
        with incomplete.open(mode) as out:
            for chunk in response.iter_bytes(CHUNK_SIZE):
                if should_stop():
                    raise DownloadStopped()
                out.write(chunk)
                if on_bytes is not None:
                    on_bytes(len(chunk))


def file_matches(path: Path, repo_file: RepoFile) -> bool:
    """Whether the bytes at `path` are the Hub's: sha256 for LFS files (the Hub's LFS
    metadata), git's blob id for the others."""
    if path.stat().st_size != repo_file.size:
        return False
    if repo_file.sha256:
        digest = hashlib.sha256()
        expected = repo_file.sha256
    elif repo_file.git_oid:
        digest = hashlib.sha1(f"blob {repo_file.size}\0".encode(), usedforsecurity=False)
        expected = repo_file.git_oid
    else:
        return True
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest() == expected


def finalize_snapshot(manifest: Manifest, token: str | None) -> Path:
    """Build the snapshot directory from the blobs already in the cache (and fetch anything
    still missing) with huggingface_hub's own snapshot_download."""
    try:
        path = snapshot_download(
            manifest.repo_id,
            revision=manifest.commit,
            cache_dir=settings.HF_HUB_CACHE,
            endpoint=settings.HF_ENDPOINT,
            token=token or False,
            max_workers=4,
        )
    except _HUB_ERRORS as exc:
        raise translate(exc, manifest.repo_id, token) from None
    except (TypeError, KeyError, AttributeError) as exc:
        # huggingface_hub reads the Hub's answer about the repo itself here (ModelInfo), and
        # fails on metadata of the wrong shape: the run fails with this message, not a traceback.
        raise HubError(
            f"huggingface_hub could not read Hugging Face's answer about {manifest.repo_id} "
            f"({exc.__class__.__name__}: {exc}"[:300]
            + "). The files downloaded so far are kept and verified: retry later."
        ) from None
    return Path(path)


# --- errors ---------------------------------------------------------------------------------


def token_page() -> str:
    return f"Downloads → Hugging Face token ({reverse('catalog:hub-token')})"


def _unreachable(exc: BaseException) -> HubError:
    return HubError(
        f"Hugging Face could not be reached ({exc.__class__.__name__}). The portal keeps what it "
        "has; try again in a moment.",
        retryable=True,
    )


def translate(exc: BaseException, repo_id: str, token: str | None) -> HubError:
    """A Hub exception as a message that says what to do."""
    if isinstance(exc, HubError):
        return exc
    if isinstance(exc, hub_data.HubDataError):
        return HubError(
            f"Hugging Face's answer about {repo_id} cannot be used ({exc.message}): the repo's "
            "metadata is broken. Try again later, or ask its author to fix it."
        )
    if isinstance(exc, GatedRepoError):
        if not token:
            return HubError(
                f"This model is gated: an admin must set a Hugging Face token under {token_page()},"
                f" from an account that has accepted {repo_id}'s terms on Hugging Face."
            )
        return HubError(
            f"This model is gated and the portal's Hugging Face token has no access to it: accept "
            f"{repo_id}'s terms on huggingface.co with the token's account, or have an admin set "
            f"another token under {token_page()}."
        )
    if isinstance(exc, RevisionNotFoundError):
        return HubError(
            f"{repo_id} has no such revision on Hugging Face: use a branch, tag or commit."
        )
    if isinstance(exc, RepositoryNotFoundError):
        hint = (
            "check the spelling."
            if token
            else f"check the spelling; if it is private, an admin must set a Hugging Face token "
            f"under {token_page()}."
        )
        return HubError(f"Model {repo_id} was not found on Hugging Face: {hint}")
    if isinstance(exc, HfHubHTTPError):
        status = exc.response.status_code if exc.response is not None else None
        if status == 401:
            if token:
                return HubError(
                    f"Hugging Face rejected the portal's token (401): an admin must set a valid "
                    f"token under {token_page()}."
                )
            return HubError(
                f"Hugging Face wants a token for {repo_id}: an admin must set a Hugging Face token "
                f"under {token_page()}."
            )
        if status == 429:
            return HubError(
                "Hugging Face is rate-limiting the portal (429): wait a minute and retry.",
                retryable=True,
            )
        if status is not None and status >= 500:
            return HubError(
                f"Hugging Face is having trouble ({status}): retry in a moment.", retryable=True
            )
        return HubError(f"Hugging Face refused the request ({status}): {exc}"[:400])
    if isinstance(exc, httpx2.HTTPError | OSError | ConnectionError):
        return _unreachable(exc)
    return HubError(f"Unexpected answer from Hugging Face ({exc.__class__.__name__}: {exc})"[:400])
