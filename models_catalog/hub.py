"""The only code that talks to the Hugging Face Hub: search and model facts for the catalog,
file lists, bytes, snapshots and the token check for downloads.

Every call passes the endpoint, the token and a time-out explicitly (never the `HF_ENDPOINT`
environment variable, which huggingface_hub reads once at import; never a token saved on the
machine by `hf auth login`: `token=False` when the portal has none) and turns every failure into
one `HubError` hierarchy whose `message` can be shown to a user as is.

Listing pages: `HfApi.list_models` hides the Hub's pagination cursor (it follows `Link` headers
itself) and retries 429/5xx for up to ~25 s, so a page of results is fetched here with the same
huggingface_hub session, headers, error mapping and `ModelInfo` type, but one request per page,
no hidden retries, and the `next` cursor kept so that "next page" is a bookmarkable URL.

Rate limits: a 429 to a catalog read opens a window (its `Retry-After`, else a minute) during
which every catalog read here raises `HubRateLimited` at once, without a request, so a burst of
concurrent reads stops firing as soon as the Hub pushes back.

What the Hub answers, and what a model's files hold (on the Hub or in the local cache), is read
through `hub_data` (NaN, 1e309, wrong types, huge strings and deep nesting cleaned or refused),
and files are read up to a size limit: a repo's author cannot make a page fail.

Downloads: huggingface_hub 2.4 writes each file to a temporary `<etag>.<random>.incomplete` file
and deletes it when the transfer fails, so an interrupted file always starts again from zero. The
portal streams each file into the cache's own `blobs/<etag>.incomplete` (a stable name) and
resumes it with an HTTP `Range` request (`download_file`), then asks `snapshot_download` to build
the snapshot (symlinks, refs, tree cache) from the blobs it finds (`finalize_snapshot`).
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import httpx2
from django.conf import settings
from django.urls import reverse
from huggingface_hub import HfApi, hf_hub_url, snapshot_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.hf_api import ModelInfo
from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

from models_catalog import crypto, hub_data
from models_catalog.local import local_model_path
from models_catalog.models import HubSettings
from models_catalog.validators import validate_repo_id

logger = logging.getLogger(__name__)

#: The portal's sort names -> the Hub's sort keys (always descending).
HUB_SORTS: dict[str, str] = {
    "trending": "trendingScore",
    "downloads": "downloads",
    "likes": "likes",
    "updated": "lastModified",
}
#: What a listing asks the Hub to include for each model.
LIST_EXPAND = [
    "author", "downloads", "likes", "trendingScore", "lastModified", "tags", "pipeline_tag",
    "library_name", "gated", "sha", "safetensors", "usedStorage", "config",
]  # fmt: skip
#: A cursor as the Hub writes it (base64-ish); anything else never reaches the Hub.
CURSOR_PATTERN = re.compile(r"[A-Za-z0-9_\-=.%+/]{1,512}")
#: At most this much of a README is read.
README_MAX_BYTES = 256 * 1024
#: A `config.json` or `tokenizer_config.json` longer than this is not read.
JSON_FILE_MAX_BYTES = hub_data.MAX_JSON_BYTES
#: A page of search results longer than this is not read (30 models are ~200 KB).
LISTING_MAX_BYTES = 64 << 20
#: Seconds the portal stops calling the Hub after a 429 that carried no `Retry-After`.
DEFAULT_RATE_LIMIT_WAIT = 60


#: Downloads: bytes read per chunk, and the time-outs of their requests.
CHUNK_SIZE = 64 * 1024
API_TIMEOUT = 15.0
READ_TIMEOUT = 60.0
TRANSFER_RETRIES = 5
_HEX_ID = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
# What huggingface_hub raises for Hub answers, network trouble and cache problems.
_HUB_ERRORS = (HfHubHTTPError, httpx2.HTTPError, OSError, ValueError)


# --- errors -------------------------------------------------------------------------------------


class HubError(Exception):
    """A Hub call failed; `message` says what happened and what to do, for the user. `status`
    is the Hub's HTTP status (if any), `retry_after` its `Retry-After`, and `retryable` whether
    trying again later may work (the Hub unreachable, slow, rate-limiting or failing)."""

    kind = "error"
    retryable_by_default = False

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retry_after: int | None = None,
        retryable: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.retry_after = retry_after
        self.retryable = self.retryable_by_default if retryable is None else retryable


class HubUnreachable(HubError):
    kind = "unreachable"
    retryable_by_default = True


class HubTimeout(HubError):
    kind = "timeout"
    retryable_by_default = True


class HubRateLimited(HubError):
    kind = "rate_limited"
    retryable_by_default = True


class HubAuthRequired(HubError):
    kind = "auth"


class HubNotFound(HubError):
    kind = "not_found"


class HubServerError(HubError):
    kind = "server_error"
    retryable_by_default = True


class HubBadRequest(HubError):
    kind = "bad_request"


class HubBadData(HubError):
    """The Hub answered, or a model's file holds, something the portal cannot use."""

    kind = "bad_data"


class DownloadStopped(Exception):
    """The caller asked a transfer to stop (pause, cancel, lost lease): not a Hub failure."""


class _RangeRefused(Exception):
    """416: the server will not send the rest of a partial file."""


# --- the token ----------------------------------------------------------------------------------


def stored_token() -> tuple[str | None, str]:
    """`(token, problem)`: the admin-set token from the database; `problem` explains a token
    that is stored but cannot be read (SECRET_KEY changed)."""
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
    """The token every Hub call sends: the admin-set one, else the HF_TOKEN setting, else None."""
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
    `USER_NAME_MAX`); HubAuthRequired when it is rejected, a retryable HubError when the Hub
    cannot be reached or its answer cannot be read."""
    try:
        info = HfApi(endpoint=settings.HF_ENDPOINT).whoami(token=token)
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        if status in (401, 403):
            raise HubAuthRequired(
                "Hugging Face rejected this token (401): check it and try again.", status=status
            ) from None
        raise _unreachable(exc) from None
    except (httpx2.HTTPError, OSError) as exc:
        raise _unreachable(exc) from None
    except (ValueError, RecursionError):  # an answer that is not JSON, or nested too deeply
        raise HubBadData(
            "Hugging Face's answer to the token check cannot be read: try again later.",
            retryable=True,
        ) from None
    name = info.get("name") if isinstance(info, dict) else None
    return hub_data.text(name, USER_NAME_MAX)


# --- endpoint and access ------------------------------------------------------------------------


def hub_timeout() -> float:
    return float(settings.HUB_TIMEOUT)


def endpoint() -> str:
    return settings.HF_ENDPOINT.rstrip("/")


def api() -> HfApi:
    return HfApi(endpoint=endpoint(), token=hub_token() or False)


@dataclass(frozen=True)
class HubAccess:
    """Endpoint, token and time-out, resolved once in the request's thread. Reads run in
    worker threads take it as an argument: resolving the token queries the database, which a
    pool thread must not do (each thread would hold a connection of its own)."""

    endpoint: str
    token: str | None
    timeout: float

    @cached_property
    def headers(self) -> dict[str, str]:
        """huggingface_hub's headers (user agent, token), built once per page, not per file:
        building them costs ~0.3 ms of CPU, times every file read at once."""
        # token=False: never fall back to a token saved on this machine or in the environment.
        return build_hf_headers(token=self.token or False)

    @property
    def key(self) -> str:
        """Endpoint and a digest of the token: what a rate limit or a cached answer is for."""
        digest = hashlib.sha256((self.token or "").encode()).hexdigest()[:16]
        return f"{self.endpoint} {digest}"


def current_access() -> HubAccess:
    return HubAccess(endpoint=endpoint(), token=hub_token(), timeout=hub_timeout())


def _headers(access: HubAccess) -> dict[str, str]:
    return dict(access.headers)


# --- listing ------------------------------------------------------------------------------------


@dataclass
class HubPage:
    """One page of `/api/models`: the models, the cursor of the next page (None: last) and the
    Hub's JSON for each model (`items`, plain data that can be cached and read back with
    `page_from_items`)."""

    models: list[ModelInfo]
    next_cursor: str | None
    items: list[dict[str, Any]] = field(default_factory=list)


def page_from_items(items: list[Any], next_cursor: str | None, *, cleaned: bool = False) -> HubPage:
    """A `HubPage` from the JSON items of `/api/models` as the Hub sent them, each cleaned by
    `hub_data.model_item` (what is not a model is left out), or — `cleaned` — items this
    function kept before (`HubPage.items`, as the listing cache holds them)."""
    kept, models = [], []
    for raw in items:
        if (item := raw if cleaned else hub_data.model_item(raw)) is not None:
            kept.append(item)
            models.append(ModelInfo(**{"siblings": None, **item}))
    return HubPage(models=models, next_cursor=next_cursor, items=kept)


def list_models_page(
    *,
    search: str = "",
    sort: str = "trending",
    cursor: str = "",
    limit: int = 30,
    access: HubAccess | None = None,
) -> HubPage:
    """One page of MLX models (`filter=mlx`, every author), sorted descending by `sort`."""
    access = access or current_access()
    if sort not in HUB_SORTS:
        raise ValueError(f"Unknown sort {sort!r}")
    if cursor and not CURSOR_PATTERN.fullmatch(cursor):
        raise HubBadRequest("That page link is not valid any more: start again from page 1.")
    params: list[tuple[str, Any]] = [
        ("filter", "mlx"),
        ("sort", HUB_SORTS[sort]),
        ("direction", "-1"),
        ("limit", str(limit)),
    ]
    if search:
        params.append(("search", search))
    params += [("expand", name) for name in LIST_EXPAND]
    if cursor:
        params.append(("cursor", cursor))
    with _translate_errors("search the Hub", access):
        response = get_session().get(
            f"{access.endpoint}/api/models",
            params=params,
            headers=_headers(access),
            timeout=access.timeout,
        )
        hf_raise_for_status(response)
        items = hub_data.loads(response.content, max_bytes=LISTING_MAX_BYTES)
    if not isinstance(items, list):
        raise HubServerError("Hugging Face answered the search with something unexpected.")
    return page_from_items(items, _next_cursor(response))


def _next_cursor(response: httpx2.Response) -> str | None:
    url = response.links.get("next", {}).get("url")
    if not url:
        return None
    cursor = (parse_qs(urlsplit(url).query).get("cursor") or [""])[0]
    return cursor if CURSOR_PATTERN.fullmatch(cursor or "") else None


# --- one model ----------------------------------------------------------------------------------


def model_info(repo_id: str) -> ModelInfo:
    """The model's Hub page facts, with its files and their sizes."""
    validate_repo_id(repo_id)
    access = current_access()
    with _translate_errors(f"look up {repo_id}", access, repo_id=repo_id):
        return _model_info_request(
            repo_id, endpoint=access.endpoint, token=access.token, timeout=access.timeout
        )


@dataclass
class ModelFiles:
    """A model's `config.json` and chat template, and where they were read."""

    config: dict[str, Any] | None
    chat_template: str = ""
    source: str = "hub"  # "local" (the Hugging Face cache on this host) or "hub"
    errors: list[str] = field(default_factory=list)


def fetch_config(repo_id: str, *, chat_template: bool = True) -> ModelFiles:
    """`config.json` (and, when asked, the chat template from `tokenizer_config.json`): from the
    local Hugging Face cache when the model is on disk, else from the Hub (one request per
    file, one after the other; `catalog` runs `fetch_config_json` and `fetch_chat_template`
    concurrently instead)."""
    if (files := local_files(repo_id)) is not None:
        return files
    access = current_access()
    config = fetch_config_json(repo_id, access)
    template = fetch_chat_template(repo_id, access) if chat_template else ""
    return ModelFiles(config=config, chat_template=template, source="hub")


def local_files(repo_id: str) -> ModelFiles | None:
    """`config.json` and the chat template from this host's Hugging Face cache; None when the
    model is not on disk."""
    validate_repo_id(repo_id)
    local = local_model_path(repo_id)
    return _local_files(local) if local is not None else None


def fetch_config_json(repo_id: str, access: HubAccess) -> dict[str, Any]:
    """The model's `config.json` from the Hub: one GET (safe in a worker thread)."""
    validate_repo_id(repo_id)
    return _fetch_json(repo_id, "config.json", access)


def fetch_chat_template(repo_id: str, access: HubAccess) -> str:
    """The chat template in the model's `tokenizer_config.json` from the Hub (one GET, safe in
    a worker thread); empty when the repo has no such file or template."""
    validate_repo_id(repo_id)
    try:
        tokenizer_config = _fetch_json(repo_id, "tokenizer_config.json", access)
    except HubNotFound:
        return ""
    return hub_data.chat_template(tokenizer_config.get("chat_template"))


def fetch_readme(repo_id: str) -> str:
    """The model card (README.md) text, local cache first; empty when the repo has none."""
    validate_repo_id(repo_id)
    if (local := local_model_path(repo_id)) is not None:
        readme = local / "README.md"
        return _read_text(readme, README_MAX_BYTES) if readme.is_file() else ""
    try:
        raw = _fetch_bytes(repo_id, "README.md", current_access(), README_MAX_BYTES, cut=True)
    except HubNotFound:
        return ""
    return hub_data.text(raw.decode("utf-8", "replace"))


def hub_url(repo_id: str) -> str:
    """The model's page on the Hub (for a link)."""
    return f"{endpoint()}/{repo_id}"


# --- reading a model's files -------------------------------------------------------------------


def _fetch_bytes(
    repo_id: str, filename: str, access: HubAccess, limit: int, *, cut: bool = False
) -> bytes:
    """The file's bytes, read as they arrive and never more than `limit`: a longer file is cut
    there (`cut`) or refused (HubBadData)."""
    url = hf_hub_url(repo_id, filename, endpoint=access.endpoint)
    action = f"read {filename} of {repo_id}"
    with (
        _translate_errors(action, access, repo_id=repo_id, filename=filename),
        get_session().stream(
            "GET", url, headers=_headers(access), timeout=access.timeout, follow_redirects=True
        ) as response,
    ):
        if response.status_code >= 400:
            response.read()  # the error's body, for hf_raise_for_status's message
        hf_raise_for_status(response)
        body = bytearray()
        for chunk in response.iter_bytes():
            body += chunk
            if len(body) > limit:
                if cut:
                    return bytes(body[:limit])
                raise HubBadData(
                    f"{filename} of {repo_id} is larger than {limit // 1024:,} KiB: the portal "
                    "does not read it."
                )
        return bytes(body)


def _fetch_json(repo_id: str, filename: str, access: HubAccess) -> dict[str, Any]:
    raw = _fetch_bytes(repo_id, filename, access, JSON_FILE_MAX_BYTES)
    return _json_object(raw, f"{filename} of {repo_id}")


def _json_object(raw: bytes, what: str) -> dict[str, Any]:
    """A JSON object from a model's file (cleaned by `hub_data`), else HubBadData."""
    try:
        value = hub_data.loads(raw, max_bytes=JSON_FILE_MAX_BYTES)
    except hub_data.HubDataError as exc:
        raise HubBadData(f"{what} cannot be used: {exc.message}.") from None
    if not isinstance(value, dict):
        raise HubBadData(f"{what} is not a JSON object.")
    return value


def _local_files(snapshot: Path) -> ModelFiles:
    errors = []
    try:
        config = _json_object(_read_bytes(snapshot / "config.json"), "config.json on disk")
    except OSError as exc:
        config, errors = None, [f"config.json on disk is unreadable: {exc}"]
    except HubBadData as exc:
        config, errors = None, [exc.message]
    template = ""
    tokenizer_config = snapshot / "tokenizer_config.json"
    if tokenizer_config.is_file():
        try:
            raw = _read_bytes(tokenizer_config)
            template = hub_data.chat_template(_json_object(raw, "").get("chat_template"))
        except (OSError, HubBadData):
            template = ""
    jinja = snapshot / "chat_template.jinja"
    if not template and jinja.is_file():
        template = hub_data.chat_template(_read_text(jinja))
    return ModelFiles(config=config, chat_template=template, source="local", errors=errors)


def _read_bytes(path: Path, limit: int = JSON_FILE_MAX_BYTES) -> bytes:
    """At most `limit` + 1 bytes of the file (one more than `hub_data.loads` accepts, so that
    a longer file is refused as too large, not read as cut-off JSON)."""
    with open(path, "rb") as handle:
        return handle.read(limit + 1)


def _read_text(path: Path, limit: int = JSON_FILE_MAX_BYTES) -> str:
    with open(path, "rb") as handle:
        return hub_data.text(handle.read(limit).decode("utf-8", "replace"))


# --- downloads: file lists, bytes, snapshots --------------------------------------------------


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


#: The largest answer about one model that is read (a model with thousands of files is ~2 MB).
MODEL_INFO_MAX_BYTES = 32 << 20


def _model_info_request(
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
    huggingface_hub raises for the Hub's errors, and `hub_data.HubDataError`: its callers
    (`model_info`, `fetch_manifest`) turn them into HubErrors."""
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
        info = _model_info_request(
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
            raise HubBadData(
                f"Hugging Face did not give the hash of {sibling.rfilename}: try again."
            )
        size = sibling.size if sibling.size is not None else (sibling.lfs and sibling.lfs.size)
        if size is None:
            raise HubBadData(
                f"Hugging Face did not give a usable size for {sibling.rfilename} of {repo_id}, "
                "so the portal cannot check what it downloads: try again later."
            )
        files.append(
            RepoFile(
                path=sibling.rfilename, size=size, blob=blob, sha256=sha256, git_oid=sibling.blob_id
            )
        )
    if not info.sha:
        raise HubBadData(f"Hugging Face did not say which commit {repo_id} is at: try again.")
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


# --- bytes --------------------------------------------------------------------------------------


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
        raise HubBadData(
            f"huggingface_hub could not read Hugging Face's answer about {manifest.repo_id} "
            f"({exc.__class__.__name__}: {exc}"[:300]
            + "). The files downloaded so far are kept and verified: retry later."
        ) from None
    return Path(path)


# --- rate limits and the catalog's errors ------------------------------------------------------

_rate_lock = threading.Lock()
#: HubAccess.key (endpoint and token) -> time.monotonic() until which the Hub asked this
#: process to wait. A new token starts without a window.
_rate_limited_until: dict[str, float] = {}


def rate_limit_wait(access: HubAccess | None = None) -> int:
    """Seconds left before the Hub may be called again (0: now)."""
    key = (access or current_access()).key
    with _rate_lock:
        until = _rate_limited_until.get(key, 0.0)
    left = until - time.monotonic()
    return max(1, int(left + 0.999)) if left > 0 else 0


def forget_rate_limit() -> None:
    """Forget every rate-limit window (tests)."""
    with _rate_lock:
        _rate_limited_until.clear()


def _note_rate_limit(access: HubAccess, retry_after: int | None) -> None:
    until = time.monotonic() + (retry_after or DEFAULT_RATE_LIMIT_WAIT)
    with _rate_lock:
        _rate_limited_until[access.key] = max(until, _rate_limited_until.get(access.key, 0.0))


def _rate_limited(access: HubAccess, retry_after: int | None) -> HubRateLimited:
    if retry_after:
        wait = f"in {retry_after} second{'s' if retry_after != 1 else ''}"
    else:
        wait = "in a minute"
    advice = "" if access.token else " An admin can set a Hugging Face token to raise the limit."
    return HubRateLimited(
        f"Hugging Face is rate-limiting this portal: try again {wait}.{advice}",
        status=429,
        retry_after=retry_after,
    )


@contextmanager
def _translate_errors(
    action: str, access: HubAccess, *, repo_id: str = "", filename: str = ""
) -> Iterator[None]:
    """Turn whatever huggingface_hub / httpx raise into one of the HubError types; while a
    rate-limit window is open, raise `HubRateLimited` before any request is made."""
    if wait := rate_limit_wait(access):
        raise _rate_limited(access, wait)
    try:
        yield
    except HubError:
        raise
    except hub_data.HubDataError as exc:
        raise HubBadData(
            f"Hugging Face answered with something the portal cannot use when trying to {action} "
            f"({exc.message}). If it lasts, the repo's metadata is broken."
        ) from exc
    except GatedRepoError as exc:
        raise _auth_error(access, repo_id, exc) from exc
    except EntryNotFoundError as exc:
        raise HubNotFound(f"{repo_id} has no file {filename} on Hugging Face.", status=404) from exc
    except RepositoryNotFoundError as exc:
        status = _status(exc)
        if status == 401 and not access.token:
            raise _auth_error(access, repo_id, exc) from exc
        raise HubNotFound(
            f"No model named {repo_id} on Hugging Face (or it is private and the portal's "
            "token cannot see it).",
            status=status,
        ) from exc
    except HfHubHTTPError as exc:
        error = _http_error(action, access, exc, repo_id)
        if isinstance(error, HubRateLimited):
            _note_rate_limit(access, error.retry_after)
        raise error from exc
    except httpx2.TimeoutException as exc:
        raise HubTimeout(
            f"Hugging Face did not answer within {access.timeout:g} s when trying to {action}. "
            "It may be slow right now: try again in a moment."
        ) from exc
    except (httpx2.TransportError, OfflineModeIsEnabled, OSError) as exc:
        raise HubUnreachable(
            f"Hugging Face ({access.endpoint}) cannot be reached from this host, so the portal "
            f"could not {action}. Models already on disk keep working; try again when the "
            "network is back."
        ) from exc


def _status(exc: HfHubHTTPError) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def _auth_error(access: HubAccess, repo_id: str, exc: Exception) -> HubAuthRequired:
    status = _status(exc) if isinstance(exc, HfHubHTTPError) else None
    what = repo_id or "This request"
    if access.token:
        message = (
            f"{what} is gated or private and the portal's Hugging Face token is not allowed to "
            "read it: an admin should check the token, or request access on the model's page."
        )
    else:
        message = f"{what} is gated or private: it needs a Hugging Face token, set by an admin."
    return HubAuthRequired(message, status=status)


def _http_error(action: str, access: HubAccess, exc: HfHubHTTPError, repo_id: str) -> HubError:
    status = _status(exc) or 0
    if status == 429:
        return _rate_limited(access, _retry_after(exc))
    if status in (401, 403):
        if not repo_id:
            if access.token:
                return HubAuthRequired(
                    "Hugging Face refused the portal's token: an admin should check the "
                    "Hugging Face token.",
                    status=status,
                )
            return HubAuthRequired(
                "Hugging Face refused the request: it needs a Hugging Face token, set by an admin.",
                status=status,
            )
        return _auth_error(access, repo_id, exc)
    if status == 404:
        return HubNotFound(f"Hugging Face has no answer for this ({action}).", status=404)
    if status == 400:
        return HubBadRequest(
            f"Hugging Face did not accept the request to {action}: if you followed a page "
            "link, start again from page 1.",
            status=400,
        )
    if status >= 500:
        return HubServerError(
            f"Hugging Face answered with a server error ({status}) when trying to {action}. "
            "It is usually temporary: try again in a minute.",
            status=status,
        )
    return HubError(
        f"Hugging Face answered {status} when trying to {action}.", status=status or None
    )


def _retry_after(exc: HfHubHTTPError) -> int | None:
    response = getattr(exc, "response", None)
    value = (response.headers.get("Retry-After") if response is not None else None) or ""
    value = value.strip()
    return int(value) if value.isdigit() else None


# --- the downloads' errors: messages that say what to do ---------------------------------------


def token_page() -> str:
    return f"Downloads → Hugging Face token ({reverse('catalog:hub-token')})"


def _unreachable(exc: BaseException) -> HubUnreachable:
    return HubUnreachable(
        f"Hugging Face could not be reached ({exc.__class__.__name__}). The portal keeps what it "
        "has; try again in a moment."
    )


def translate(exc: BaseException, repo_id: str, token: str | None) -> HubError:
    """A Hub exception met while downloading `repo_id`, as the HubError whose message says what
    to do (the catalog's reads use `_translate_errors`, whose messages speak of pages)."""
    if isinstance(exc, HubError):
        return exc
    if isinstance(exc, hub_data.HubDataError):
        return HubBadData(
            f"Hugging Face's answer about {repo_id} cannot be used ({exc.message}): the repo's "
            "metadata is broken. Try again later, or ask its author to fix it."
        )
    if isinstance(exc, GatedRepoError):
        if not token:
            return HubAuthRequired(
                f"This model is gated: an admin must set a Hugging Face token under {token_page()},"
                f" from an account that has accepted {repo_id}'s terms on Hugging Face."
            )
        return HubAuthRequired(
            f"This model is gated and the portal's Hugging Face token has no access to it: accept "
            f"{repo_id}'s terms on huggingface.co with the token's account, or have an admin set "
            f"another token under {token_page()}."
        )
    if isinstance(exc, RevisionNotFoundError):
        return HubNotFound(
            f"{repo_id} has no such revision on Hugging Face: use a branch, tag or commit."
        )
    if isinstance(exc, RepositoryNotFoundError):
        hint = (
            "check the spelling."
            if token
            else f"check the spelling; if it is private, an admin must set a Hugging Face token "
            f"under {token_page()}."
        )
        return HubNotFound(f"Model {repo_id} was not found on Hugging Face: {hint}")
    if isinstance(exc, HfHubHTTPError):
        status = exc.response.status_code if exc.response is not None else None
        if status == 401:
            if token:
                return HubAuthRequired(
                    f"Hugging Face rejected the portal's token (401): an admin must set a valid "
                    f"token under {token_page()}."
                )
            return HubAuthRequired(
                f"Hugging Face wants a token for {repo_id}: an admin must set a Hugging Face token "
                f"under {token_page()}."
            )
        if status == 429:
            return HubRateLimited(
                "Hugging Face is rate-limiting the portal (429): wait a minute and retry.",
                status=429,
            )
        if status is not None and status >= 500:
            return HubServerError(
                f"Hugging Face is having trouble ({status}): retry in a moment.", status=status
            )
        return HubError(f"Hugging Face refused the request ({status}): {exc}"[:400], status=status)
    if isinstance(exc, httpx2.HTTPError | OSError | ConnectionError):
        return _unreachable(exc)
    return HubError(f"Unexpected answer from Hugging Face ({exc.__class__.__name__}: {exc})"[:400])
