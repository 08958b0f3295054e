"""A local Hugging Face Hub for tests: real HTTP, Hub-shaped answers, real files.

It serves what ``huggingface_hub`` 2.4 requests (read from its source, not guessed):

* ``GET /api/models`` — ``HfApi.list_models``: ``search``, ``author``, ``filter`` (repeatable,
  all must match), ``pipeline_tag``, ``gated``, ``sort`` (downloads, likes, trendingScore,
  lastModified, createdAt), ``direction``, ``limit``, ``full``, ``config``, ``cardData``,
  ``expand`` (repeatable). Pages are cut at :attr:`FakeHub.page_size` and chained with a
  ``Link: <absolute url with cursor=…>; rel="next"`` header, which
  ``huggingface_hub.utils._pagination`` follows.
* ``GET /api/models/{repo_id}`` and ``/api/models/{repo_id}/revision/{revision}`` —
  ``model_info``/``repo_info`` (with ``expand`` and ``blobs=true`` for ``files_metadata``).
* ``GET /api/models/{repo_id}/tree/{revision}[/{path}]`` — ``list_repo_tree``, which
  ``snapshot_download`` calls after ``repo_info``; ``POST …/paths-info/{revision}`` —
  ``get_paths_info``.
* ``HEAD``/``GET /{repo_id}/resolve/{revision}/{path}`` — ``hf_hub_download``: ``X-Repo-Commit``,
  ``ETag`` (git blob sha1, or sha256 for LFS files), ``X-Linked-Etag``/``X-Linked-Size`` for LFS
  files, ``Content-Length``, ``Accept-Ranges`` and ``Range`` → ``206``. No Xet headers are ever
  sent, so the client takes the plain HTTP path.
* ``GET /api/whoami-v2`` — token checks.

Hostile metadata: a field given as :class:`RawJSON` goes out exactly as written (``1e309``,
``NaN``, ``-Infinity``, deep nesting, wrong types), as a repo's author could make the Hub send it;
files are served as the bytes given, so a ``config.json`` can hold anything.

Errors have the Hub's shape: JSON ``{"error": …}`` with ``X-Error-Code`` (``RepoNotFound``,
``EntryNotFound``, ``RevisionNotFound``, ``GatedRepo``) and ``X-Error-Message``, which
``hf_raise_for_status`` maps to ``RepositoryNotFoundError``, ``RemoteEntryNotFoundError``,
``RevisionNotFoundError`` and ``GatedRepoError``.

Run it standalone: ``python -m tests.support.fake_hub --port 8765 --with-tiny-models``.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import re
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

#: A token the hub accepts; it is approved for every gated repo.
VALID_TOKEN = "hf_portal_tests_valid_token_0123456789"
#: A token the hub accepts (``whoami`` works) that is *not* approved for gated repos (403).
UNAPPROVED_TOKEN = "hf_portal_tests_unapproved_token_0123"
#: The user both tokens belong to.
USER_NAME = "portal-tester"

#: Tiny model repos the ``--with-tiny-models`` flag and the pytest fixtures add: repo -> variant.
TINY_REPOS: dict[str, str] = {
    "test-org/tiny-llama": "text",
    "test-org/tiny-llama-4bit": "quantized",
    "test-org/tiny-vision": "vision",
    "test-org/tiny-thinking": "thinking",
    "test-org/tiny-tools": "tools",
}
#: The tiny models of the other engines (tests/support/tiny_engines.py), served as they are.
ENGINE_REPOS: dict[str, str] = {
    "test-org/tiny-embed": "embed",
    "test-org/tiny-whisper": "whisper",
}
#: A gated copy of the text tiny model (needs :data:`VALID_TOKEN`).
GATED_REPO = "test-org/tiny-llama-gated"
#: A private copy of the text tiny model (invisible without :data:`VALID_TOKEN`).
PRIVATE_REPO = "test-org/tiny-llama-private"

_LFS_SUFFIXES = (
    ".safetensors", ".bin", ".gguf", ".npz", ".npy", ".pt", ".pth", ".h5", ".onnx", ".msgpack",
    ".model", ".tflite", ".ot", ".zip", ".tar", ".gz", ".pkl", ".ckpt",
)  # fmt: skip
_LFS_MIN_SIZE = 10 * 1024 * 1024
_MAX_PAGE_SIZE = 1000
_SORT_KEYS = ("downloads", "likes", "trendingScore", "lastModified", "createdAt", "id")
_DEFAULT_LIST_FIELDS = (
    "id", "likes", "trendingScore", "private", "downloads", "tags", "pipeline_tag",
    "library_name", "createdAt", "modelId",
)  # fmt: skip
_FULL_LIST_FIELDS = ("author", "sha", "lastModified", "gated", "disabled", "siblings")
_DEFAULT_INFO_FIELDS = (
    "id", "author", "sha", "lastModified", "private", "gated", "disabled", "downloads", "likes",
    "tags", "pipeline_tag", "library_name", "createdAt", "modelId", "cardData", "config",
    "siblings", "spaces", "safetensors", "usedStorage", "widgetData",
)  # fmt: skip
_EPOCH = "2025-06-01T12:00:00.000Z"


# --- data model -------------------------------------------------------------------------------


@dataclass(frozen=True)
class RawJSON:
    """A Hub API field sent as this exact JSON text (``RawJSON("1e309")``, ``RawJSON("NaN")``,
    ``RawJSON("[" * 10000 + "]" * 10000)``…), not as ``json.dumps`` would write it. ``value`` is
    what the fake hub itself sorts and filters on (``None``: as if the field were missing)."""

    text: str
    value: Any = None


def _plain(value: Any) -> Any:
    """What the fake hub itself uses of a field's value (a :class:`RawJSON`'s ``value``)."""
    return value.value if isinstance(value, RawJSON) else value


def dumps(data: Any) -> bytes:
    """``json.dumps`` (``NaN``/``Infinity`` allowed, as Python writes them), with every
    :class:`RawJSON` inside ``data`` written as its text."""
    raws: list[str] = []

    def swap(value: Any) -> Any:
        if isinstance(value, RawJSON):
            raws.append(value.text)
            return f"\x00raw{len(raws) - 1}\x00"
        if isinstance(value, dict):
            return {key: swap(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [swap(item) for item in value]
        return value

    body = json.dumps(swap(data))
    for index, text in enumerate(raws):
        body = body.replace(json.dumps(f"\x00raw{index}\x00"), text, 1)
    return body.encode()


@dataclass
class HubFile:
    """One file of a repo: content in memory (``data``) or on disk (``source``)."""

    path: str
    size: int
    sha256: str
    git_oid: str
    lfs: bool
    data: bytes | None = None
    source: Path | None = None

    @classmethod
    def from_bytes(cls, path: str, data: bytes) -> HubFile:
        return cls(
            path=path,
            size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            git_oid=_git_blob_sha1(data),
            lfs=_is_lfs(path, len(data)),
            data=data,
        )

    @classmethod
    def from_disk(cls, path: str, source: Path) -> HubFile:
        size = source.stat().st_size
        sha256 = hashlib.sha256()
        sha1 = hashlib.sha1(f"blob {size}\0".encode())
        with open(source, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                sha256.update(chunk)
                sha1.update(chunk)
        return cls(
            path=path,
            size=size,
            sha256=sha256.hexdigest(),
            git_oid=sha1.hexdigest(),
            lfs=_is_lfs(path, size),
            source=source,
        )

    @property
    def etag(self) -> str:
        """What the Hub puts in ``ETag``: sha256 for LFS files, the git blob id otherwise."""
        return self.sha256 if self.lfs else self.git_oid

    def read(self, start: int, end: int) -> Iterable[bytes]:
        """Yield the bytes ``start..end`` (inclusive) in chunks."""
        if self.data is not None:
            view = memoryview(self.data)[start : end + 1]
            for offset in range(0, len(view), 64 * 1024):
                yield bytes(view[offset : offset + 64 * 1024])
            return
        assert self.source is not None
        with open(self.source, "rb") as handle:
            handle.seek(start)
            remaining = end - start + 1
            while remaining > 0:
                chunk = handle.read(min(64 * 1024, remaining))
                if not chunk:
                    return
                remaining -= len(chunk)
                yield chunk


@dataclass
class HubRepo:
    """A model repository served by the fake hub."""

    repo_id: str
    files: dict[str, HubFile]
    sha: str
    gated: bool | str = False
    private: bool = False
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def author(self) -> str:
        return self.repo_id.split("/", 1)[0] if "/" in self.repo_id else ""

    def field(self, name: str, *, blobs: bool = False) -> Any:
        """The value of one Hub API field for this repo (``None`` when the Hub would omit it)."""
        if name in self.meta:
            return self.meta[name]
        if name == "id" or name == "modelId":
            return self.repo_id
        if name == "_id":
            return hashlib.md5(self.repo_id.encode()).hexdigest()[:24]
        if name == "author":
            return self.author
        if name == "sha":
            return self.sha
        if name == "private":
            return self.private
        if name == "gated":
            return self.gated
        if name == "disabled":
            return False
        if name == "siblings":
            return [_sibling(f, blobs=blobs) for f in sorted(self.files.values(), key=_path_key)]
        if name in ("spaces", "tags"):
            return []
        if name in ("downloads", "likes", "trendingScore", "downloadsAllTime"):
            return 0
        if name in ("lastModified", "createdAt"):
            return _EPOCH
        if name == "usedStorage":
            return sum(f.size for f in self.files.values())
        return None


@dataclass
class RequestRecord:
    """One request the hub received."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    status: int | None = None
    #: Body bytes written so far (file downloads; grows while a throttled body streams).
    bytes_sent: int = 0


# --- the hub ----------------------------------------------------------------------------------


class FakeHub:
    """A Hugging Face Hub on ``127.0.0.1`` (stdlib ``ThreadingHTTPServer`` in a thread).

    Knobs (plain attributes, change them any time; :meth:`reset` restores the defaults):

    ``latency``               seconds added before answering every request.
    ``fail_status``           force this status (e.g. 401, 429, 500, 503) on the routes of
                              ``fail_scope``; 429 answers carry ``Retry-After: retry_after``.
    ``fail_times``            how many requests fail before the hub recovers (``None``: all).
    ``fail_scope``            ``"api"`` (``/api/…``, the default), ``"files"`` (``/resolve/``) or
                              ``"all"``.
    ``retry_after``           the ``Retry-After`` value sent with a forced 429 (seconds).
    ``throttle_bps``          cap file bodies at this many bytes per second (``None``: no cap).
    ``interrupt_after_bytes`` cut a file body's connection after this many bytes, so the client
                              must resume with ``Range`` (``None``: never).
    ``interrupt_times``       how many file bodies to cut that way (then downloads run through).
    ``page_size``             largest ``/api/models`` page; beyond it a ``Link`` header chains.
    ``user_name``             the ``name`` ``whoami`` answers (a :class:`RawJSON`: a hostile one).
    ``hold_files_until``      hold every file request (``/resolve/``) until this many are in
                              flight at once (or ``hold_timeout`` seconds passed), then answer
                              them all: proves a client's reads are concurrent (``None``: off).

    ``request_log`` lists ``(method, path)`` of every request; ``records`` has the full
    :class:`RequestRecord` (query, headers, status). ``max_in_flight`` (and
    ``max_files_in_flight``, file requests only) is the most requests that were being answered at
    the same moment since the last :meth:`reset`.
    """

    def __init__(
        self,
        *,
        with_catalog: bool = True,
        host: str = "127.0.0.1",
        port: int = 0,
        tokens: Iterable[str] = (VALID_TOKEN,),
        unapproved_tokens: Iterable[str] = (UNAPPROVED_TOKEN,),
    ) -> None:
        self.host = host
        self._requested_port = port
        self.tokens: set[str] = set(tokens)
        self.unapproved_tokens: set[str] = set(unapproved_tokens)
        self.repos: dict[str, HubRepo] = {}
        self.records: list[RequestRecord] = []
        self._lock = threading.Lock()
        self._in_flight_changed = threading.Condition(self._lock)
        self.in_flight = 0
        self.files_in_flight = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self.reset()
        if with_catalog:
            self.add_catalog()

    # lifecycle

    def start(self) -> FakeHub:
        """Start serving in a background thread; returns ``self``."""
        if self._server is not None:
            return self
        server = _Server((self.host, self._requested_port), _Handler)
        server.daemon_threads = True
        server.hub = self  # type: ignore[attr-defined]
        self._server = server
        self._stopping.clear()
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and free the port (in-flight throttled bodies are abandoned)."""
        if self._server is None:
            return
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("FakeHub is not started.")
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:54321`` (use as ``HF_ENDPOINT`` or ``endpoint=``)."""
        return f"http://{self.host}:{self.port}"

    # knobs and observation

    def reset(self) -> None:
        """Restore every knob to its default and clear the request log."""
        self.latency: float = 0.0
        self.fail_status: int | None = None
        self.fail_times: int | None = None
        self.fail_scope: str = "api"
        self.retry_after: int = 1
        self.throttle_bps: int | None = None
        self.interrupt_after_bytes: int | None = None
        self.interrupt_times: int = 1
        self.page_size: int = 25
        self.user_name: Any = USER_NAME
        self.hold_files_until: int | None = None
        self.hold_timeout: float = 5.0
        with self._lock:
            self.records.clear()
            self.max_in_flight = 0
            self.max_files_in_flight = 0

    @property
    def request_log(self) -> list[tuple[str, str]]:
        """``(method, path)`` of every request so far (path without the query string)."""
        with self._lock:
            return [(r.method, r.path) for r in self.records]

    def count(self, method: str | None = None, path_prefix: str = "") -> int:
        """Count requests with `method` (any if None) whose path starts with `path_prefix`."""
        return sum(
            1
            for m, p in self.request_log
            if (method is None or m == method) and p.startswith(path_prefix)
        )

    # content

    def add_repo(
        self,
        repo_id: str,
        directory: Path | str,
        *,
        gated: bool | str = False,
        private: bool = False,
        meta: dict[str, Any] | None = None,
    ) -> HubRepo:
        """Serve every file under ``directory`` (dotfiles skipped) as the model repo ``repo_id``.

        ``gated`` may be ``True`` (shown as ``"manual"``), ``"auto"`` or ``"manual"``. ``meta``
        overrides or adds Hub API fields (``downloads``, ``likes``, ``tags``, ``usedStorage``, …);
        by default they are derived from the files (tags and ``cardData`` from the README front
        matter, ``config`` from ``config.json`` + ``tokenizer_config.json``, ``safetensors``
        from the safetensors headers, ``usedStorage`` from the file sizes).
        """
        directory = Path(directory)
        if not directory.is_dir():
            raise FileNotFoundError(f"{directory} is not a directory")
        files = {}
        for path in sorted(directory.rglob("*")):
            relative = path.relative_to(directory)
            if path.is_file() and not any(part.startswith(".") for part in relative.parts):
                files[relative.as_posix()] = HubFile.from_disk(relative.as_posix(), path)
        derived = _derive_meta(repo_id, files)
        derived.update(meta or {})
        return self._put(repo_id, files, gated=gated, private=private, meta=derived)

    def add_files(
        self,
        repo_id: str,
        files: dict[str, bytes],
        *,
        gated: bool | str = False,
        private: bool = False,
        meta: dict[str, Any] | None = None,
    ) -> HubRepo:
        """Serve in-memory ``files`` (``{path: content}``) as the model repo ``repo_id``."""
        hub_files = {path: HubFile.from_bytes(path, data) for path, data in files.items()}
        derived = _derive_meta(repo_id, hub_files)
        derived.update(meta or {})
        return self._put(repo_id, hub_files, gated=gated, private=private, meta=derived)

    def remove_repo(self, repo_id: str) -> None:
        with self._lock:
            self.repos.pop(repo_id, None)

    def add_catalog(self) -> None:
        """Add the ~60 built-in catalog repos (see :mod:`tests.support.hub_catalog`)."""
        from .hub_catalog import build_catalog

        for entry in build_catalog():
            # None values stay in meta on purpose: the field is then omitted from answers.
            self.add_files(entry.repo_id, entry.files, gated=entry.gated, meta=entry.meta)

    def add_tiny_models(self) -> dict[str, Path]:
        """Build (or reuse) the tiny models and serve them as :data:`TINY_REPOS` and
        :data:`ENGINE_REPOS`, plus :data:`GATED_REPO` and :data:`PRIVATE_REPO`. Returns
        ``{repo_id: directory}``."""
        from .tiny_models import tiny_model_cache

        served: dict[str, Path] = {}
        for repo_id, variant in TINY_REPOS.items():
            served[repo_id] = tiny_model_cache(variant)
            self.add_repo(repo_id, served[repo_id], meta={"downloads": 42, "likes": 3})
        from .tiny_engines import tiny_engine_cache

        for repo_id, name in ENGINE_REPOS.items():
            served[repo_id] = tiny_engine_cache(name)
            self.add_repo(repo_id, served[repo_id], meta={"downloads": 7, "likes": 1})
        served[GATED_REPO] = tiny_model_cache("text")
        self.add_repo(GATED_REPO, served[GATED_REPO], gated="manual")
        served[PRIVATE_REPO] = tiny_model_cache("text")
        self.add_repo(PRIVATE_REPO, served[PRIVATE_REPO], private=True)
        return served

    def _put(
        self,
        repo_id: str,
        files: dict[str, HubFile],
        *,
        gated: bool | str,
        private: bool,
        meta: dict[str, Any],
    ) -> HubRepo:
        if gated is True:
            gated = "manual"
        digest = hashlib.sha1(repo_id.encode())
        for path in sorted(files):
            digest.update(f"{path}:{files[path].etag}".encode())
        repo = HubRepo(
            repo_id=repo_id,
            files=files,
            sha=digest.hexdigest(),
            gated=gated,
            private=private,
            meta=meta,
        )
        with self._lock:
            self.repos[repo_id] = repo
        return repo

    # request handling (called from the handler threads)

    def _record(self, record: RequestRecord) -> None:
        with self._lock:
            self.records.append(record)

    def _enter(self, path: str) -> None:
        """Count a request in flight (and hold a file request, see ``hold_files_until``)."""
        is_file = "/resolve/" in path
        with self._in_flight_changed:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            if is_file:
                self.files_in_flight += 1
                self.max_files_in_flight = max(self.max_files_in_flight, self.files_in_flight)
            self._in_flight_changed.notify_all()
            hold = self.hold_files_until
            if is_file and hold is not None:
                self._in_flight_changed.wait_for(
                    lambda: self.max_files_in_flight >= hold, timeout=self.hold_timeout
                )

    def _leave(self, path: str) -> None:
        with self._in_flight_changed:
            self.in_flight -= 1
            if "/resolve/" in path:
                self.files_in_flight -= 1

    def _take_failure(self, path: str) -> int | None:
        status = self.fail_status
        if status is None:
            return None
        scope = self.fail_scope
        is_api = path.startswith("/api/")
        if (scope == "api" and not is_api) or (scope == "files" and "/resolve/" not in path):
            return None
        with self._lock:
            if self.fail_times is not None:
                if self.fail_times <= 0:
                    return None
                self.fail_times -= 1
        return status

    def _take_interrupt(self) -> int | None:
        with self._lock:
            if self.interrupt_after_bytes is None or self.interrupt_times <= 0:
                return None
            self.interrupt_times -= 1
            return self.interrupt_after_bytes

    def _repo(self, repo_id: str) -> HubRepo | None:
        with self._lock:
            return self.repos.get(repo_id)

    def _visible_repos(self, authorised: bool) -> list[HubRepo]:
        with self._lock:
            return [r for r in self.repos.values() if authorised or not r.private]


# --- HTTP handler -----------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    # socketserver's default listen backlog is 5: a burst of concurrent connections (a client
    # reading 50 files at once) overflowed it and waited out a 1 s SYN retransmit, which the
    # real Hub never makes anyone do.
    request_queue_size = 256


class _HubError(Exception):
    def __init__(
        self, status: int, message: str, code: str | None = None, headers: dict | None = None
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = headers or {}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeHub/1.0"
    # Headers and a small body go out in two writes; with Nagle's algorithm on, the body waited
    # for the client's delayed ACK (~40 ms per file read) — a cost the real Hub does not add.
    disable_nagle_algorithm = True
    hub: FakeHub

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode("utf-8", "replace") if length else ""
        self._form = parse_qs(body, keep_blank_values=True)
        self._dispatch("POST")

    # plumbing

    def _dispatch(self, method: str) -> None:
        self.hub = self.server.hub  # type: ignore[attr-defined]
        split = urlsplit(self.path)
        self._raw_path = split.path
        path = unquote(split.path)
        query = parse_qs(split.query, keep_blank_values=True)
        self._record = RequestRecord(
            method=method,
            path=path,
            query=query,
            headers={k.lower(): v for k, v in self.headers.items()},
        )
        self.hub._record(self._record)
        self.hub._enter(path)
        try:
            if self.hub.latency > 0:
                time.sleep(self.hub.latency)
            forced = self.hub._take_failure(path)
            if forced is not None:
                headers = {"Retry-After": str(self.hub.retry_after)} if forced == 429 else {}
                raise _HubError(forced, _reason(forced), headers=headers)
            self._route(method, path, query)
        except _HubError as error:
            self._send_error(error)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as error:  # noqa: BLE001 - a bug here must reach the test as a 500
            if self._record.status is None:
                self._send_error(_HubError(500, f"FakeHub failed: {error!r}"))
            self.close_connection = True
        finally:
            self.hub._leave(path)

    def send_response(self, code: int, message: str | None = None) -> None:
        record = getattr(self, "_record", None)
        if record is not None:
            record.status = code
        super().send_response(code, message)

    def _token_state(self) -> str:
        """``"none"``, ``"valid"`` or ``"unapproved"``; raises 401 for an unknown token."""
        header = self.headers.get("Authorization") or ""
        if not header.lower().startswith("bearer "):
            return "none"
        token = header[7:].strip()
        if token in self.hub.tokens:
            return "valid"
        if token in self.hub.unapproved_tokens:
            return "unapproved"
        raise _HubError(401, "Invalid credentials in Authorization header")

    def _send_json(self, data: Any, status: int = 200, headers: dict | None = None) -> None:
        body = dumps(data)
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_error(self, error: _HubError) -> None:
        headers = {"X-Error-Message": error.message, "X-Request-Id": f"fake-{time.time_ns()}"}
        if error.code:
            headers["X-Error-Code"] = error.code
        headers.update(error.headers)
        self._send_json({"error": error.message}, status=error.status, headers=headers)

    def _base_url(self) -> str:
        return f"http://{self.headers.get('Host') or f'{self.hub.host}:{self.hub.port}'}"

    # routing

    def _route(self, method: str, path: str, query: dict[str, list[str]]) -> None:
        token = self._token_state()
        authorised = token == "valid" or token == "unapproved"
        if path == "/api/whoami-v2":
            return self._whoami(token)
        if path in ("/api/models", "/api/models/"):
            return self._list_models(query, authorised)
        if path.startswith("/api/models/"):
            return self._model_api(path.removeprefix("/api/models/"), query, token)
        if "/resolve/" in path:
            return self._resolve(method, self._raw_path, token)
        raise _HubError(404, "Sorry, we can't find the page you are looking for.")

    def _whoami(self, token: str) -> None:
        if token == "none":
            raise _HubError(401, "Invalid username or password.")
        self._send_json(
            {
                "type": "user",
                "id": hashlib.md5(USER_NAME.encode()).hexdigest()[:24],
                "name": self.hub.user_name,
                "fullname": "Portal Tester",
                "email": "tester@example.com",
                "emailVerified": True,
                "canPay": False,
                "isPro": False,
                "periodEnd": None,
                "avatarUrl": "/avatars/portal-tester.svg",
                "orgs": [],
                "auth": {
                    "type": "access_token",
                    "accessToken": {
                        "displayName": "portal-tests",
                        "role": "read" if token == "valid" else "fineGrained",
                        "createdAt": _EPOCH,
                    },
                },
            }
        )

    def _find_repo(self, segments: list[str]) -> tuple[str, list[str]]:
        """Split path segments into (repo_id, rest), preferring ``owner/name`` ids."""
        if len(segments) >= 2 and self.hub._repo("/".join(segments[:2])) is not None:
            return "/".join(segments[:2]), segments[2:]
        if segments and self.hub._repo(segments[0]) is not None:
            return segments[0], segments[1:]
        if len(segments) >= 2 and segments[1] not in ("revision", "tree", "resolve"):
            return "/".join(segments[:2]), segments[2:]
        return segments[0] if segments else "", segments[1:]

    def _check_access(self, repo_id: str, token: str, *, files: bool) -> HubRepo:
        repo = self.hub._repo(repo_id)
        not_found = "Repository not found"
        if repo is None:
            raise _HubError(404, not_found, "RepoNotFound")
        if repo.private and token == "none":
            raise _HubError(401, not_found, "RepoNotFound")
        if files and repo.gated:
            if token == "none":
                raise _HubError(
                    401,
                    f"Access to model {repo_id} is restricted. You must have access to it and be"
                    " authenticated to access it. Please log in.",
                    "GatedRepo",
                )
            if token == "unapproved":
                raise _HubError(
                    403,
                    f"Access to model {repo_id} is restricted and you are not in the authorized"
                    f" list. Visit {self._base_url()}/{repo_id} to ask for access.",
                    "GatedRepo",
                )
        return repo

    def _check_revision(self, repo: HubRepo, revision: str) -> None:
        if revision not in ("main", repo.sha):
            raise _HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    # /api/models

    def _list_models(self, query: dict[str, list[str]], authorised: bool) -> None:
        repos = self.hub._visible_repos(authorised)
        if search := _first(query, "search"):
            repos = [r for r in repos if search.lower() in r.repo_id.lower()]
        if author := _first(query, "author"):
            repos = [r for r in repos if r.author == author]
        for wanted in query.get("filter", []):
            repos = [r for r in repos if wanted in _filter_terms(r)]
        if pipeline_tag := _first(query, "pipeline_tag"):
            repos = [r for r in repos if r.field("pipeline_tag") == pipeline_tag]
        if (gated := _first(query, "gated")) is not None:
            repos = [r for r in repos if bool(r.gated) == _truthy(gated)]

        sort = _first(query, "sort") or "trendingScore"
        if sort not in _SORT_KEYS:
            raise _HubError(400, f"Invalid sort parameter: {sort}")
        descending = (_first(query, "direction") or "-1") != "1"
        repos.sort(key=lambda r: r.repo_id)
        repos.sort(key=lambda r: _sort_value(r, sort), reverse=descending)

        try:
            limit = int(_first(query, "limit") or 0) or None
            offset = _decode_cursor(_first(query, "cursor"))
        except ValueError:
            raise _HubError(400, "Invalid limit or cursor") from None
        page_size = max(1, min(self.hub.page_size, _MAX_PAGE_SIZE, limit or _MAX_PAGE_SIZE))
        page = repos[offset : offset + page_size]

        fields = _list_fields(query)
        body = [_serialize(r, fields) for r in page]
        headers = {}
        if offset + page_size < len(repos):
            params = [(k, v) for k, values in query.items() if k != "cursor" for v in values]
            params.append(("cursor", _encode_cursor(offset + page_size)))
            headers["Link"] = f'<{self._base_url()}/api/models?{urlencode(params)}>; rel="next"'
        self._send_json(body, headers=headers)

    def _model_api(self, rest: str, query: dict[str, list[str]], token: str) -> None:
        segments = [s for s in rest.split("/") if s]
        repo_id, tail = self._find_repo(segments)
        repo = self._check_access(repo_id, token, files=False)
        if not tail:
            return self._model_info(repo, query)
        if tail[0] == "revision" and len(tail) >= 2:
            self._check_revision(repo, "/".join(tail[1:]))
            return self._model_info(repo, query)
        if tail[0] == "tree" and len(tail) >= 2:
            self._check_revision(repo, tail[1])
            return self._tree(repo, "/".join(tail[2:]), query)
        if tail[0] == "paths-info" and len(tail) >= 2 and self.command == "POST":
            self._check_revision(repo, "/".join(tail[1:]))
            wanted = {p.strip("/") for p in getattr(self, "_form", {}).get("paths", [])}
            entries = _tree_entries(repo, "", recursive=True)
            return self._send_json([e for e in entries if e["path"] in wanted])
        raise _HubError(404, "Sorry, we can't find the page you are looking for.")

    def _model_info(self, repo: HubRepo, query: dict[str, list[str]]) -> None:
        expand = query.get("expand")
        fields = ["_id", *expand] if expand else ["_id", *_DEFAULT_INFO_FIELDS]
        blobs = _truthy(_first(query, "blobs"))
        self._send_json(_serialize(repo, fields, blobs=blobs))

    def _tree(self, repo: HubRepo, prefix: str, query: dict[str, list[str]]) -> None:
        prefix = prefix.strip("/")
        if prefix and prefix in repo.files:
            raise _HubError(400, f"{prefix} is a file, not a directory")
        entries = _tree_entries(repo, prefix, recursive=_truthy(_first(query, "recursive")))
        if prefix and not entries:
            raise _HubError(404, f"{prefix} does not exist on main", "EntryNotFound")
        self._send_json(entries)

    # /{repo_id}/resolve/{revision}/{path}

    def _resolve(self, method: str, path: str, token: str) -> None:
        match = re.fullmatch(r"/(.+?)/resolve/([^/]+)/(.+)", path)
        if match is None:
            raise _HubError(404, "Sorry, we can't find the page you are looking for.")
        repo_id, revision, filename = (unquote(part) for part in match.groups())
        repo = self._check_access(repo_id, token, files=True)
        self._check_revision(repo, revision)
        hub_file = repo.files.get(filename)
        if hub_file is None:
            raise _HubError(
                404,
                f"Entry not found: {filename}",
                "EntryNotFound",
                headers={"X-Repo-Commit": repo.sha},
            )

        start, end, status = 0, hub_file.size - 1, 200
        range_header = self.headers.get("Range")
        if range_header:
            parsed = _parse_range(range_header, hub_file.size)
            if parsed is None:
                raise _HubError(
                    416,
                    "Requested Range Not Satisfiable",
                    headers={"Content-Range": f"bytes */{hub_file.size}"},
                )
            start, end = parsed
            status = 206
        length = max(0, end - start + 1)

        self.send_response(status)
        self.send_header("Content-Type", _content_type(filename))
        self.send_header("Content-Length", str(length))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", f'"{hub_file.etag}"')
        self.send_header("X-Repo-Commit", repo.sha)
        self.send_header("Content-Disposition", f'inline; filename="{Path(filename).name}";')
        if hub_file.lfs:
            self.send_header("X-Linked-Etag", f'"{hub_file.sha256}"')
            self.send_header("X-Linked-Size", str(hub_file.size))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{hub_file.size}")
        self.end_headers()
        if method == "HEAD" or length == 0:
            return
        self._stream(hub_file, start, end)

    def _stream(self, hub_file: HubFile, start: int, end: int) -> None:
        cut_after = self.hub._take_interrupt()
        sent = 0
        began = time.monotonic()
        for chunk in hub_file.read(start, end):
            while chunk:
                if self.hub._stopping.is_set():
                    self.close_connection = True
                    return
                bps = self.hub.throttle_bps
                piece = chunk[: max(1024, bps // 20)] if bps else chunk
                if cut_after is not None and sent + len(piece) >= cut_after:
                    piece = piece[: max(0, cut_after - sent)]
                    self.wfile.write(piece)
                    self.wfile.flush()
                    self._record.bytes_sent = sent + len(piece)
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(piece)
                sent += len(piece)
                self._record.bytes_sent = sent
                chunk = chunk[len(piece) :]
                if bps:
                    self.wfile.flush()
                    ahead = sent / bps - (time.monotonic() - began)
                    if ahead > 0:
                        time.sleep(min(ahead, 0.5))


# --- helpers ----------------------------------------------------------------------------------


def _git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(f"blob {len(data)}\0".encode() + data).hexdigest()


def _is_lfs(path: str, size: int) -> bool:
    return path.lower().endswith(_LFS_SUFFIXES) or size >= _LFS_MIN_SIZE


def _path_key(hub_file: HubFile) -> str:
    return hub_file.path


def _tree_entries(repo: HubRepo, prefix: str, *, recursive: bool) -> list[dict[str, Any]]:
    """``/tree`` entries under ``prefix`` (folders and files), the Hub's JSON shape."""
    base = f"{prefix}/" if prefix else ""
    entries: dict[str, dict[str, Any]] = {}
    for hub_file in sorted(repo.files.values(), key=_path_key):
        if not hub_file.path.startswith(base):
            continue
        parts = hub_file.path[len(base) :].split("/")
        for depth in range(1, len(parts) if recursive else min(2, len(parts))):
            folder = base + "/".join(parts[:depth])
            entries.setdefault(
                folder,
                {
                    "type": "directory",
                    "oid": hashlib.sha1(f"{repo.sha}:{folder}".encode()).hexdigest(),
                    "size": 0,
                    "path": folder,
                },
            )
        if len(parts) == 1 or recursive:
            entry: dict[str, Any] = {
                "type": "file",
                "oid": hub_file.git_oid,
                "size": hub_file.size,
                "path": hub_file.path,
            }
            if hub_file.lfs:
                entry["lfs"] = {"oid": hub_file.sha256, "size": hub_file.size, "pointerSize": 134}
            entries[hub_file.path] = entry
    return sorted(entries.values(), key=lambda e: e["path"])


def _sibling(hub_file: HubFile, *, blobs: bool) -> dict[str, Any]:
    sibling: dict[str, Any] = {"rfilename": hub_file.path}
    if blobs:
        sibling["size"] = hub_file.size
        sibling["blobId"] = hub_file.git_oid
        if hub_file.lfs:
            sibling["lfs"] = {"sha256": hub_file.sha256, "size": hub_file.size, "pointerSize": 134}
    return sibling


def _serialize(repo: HubRepo, fields: Iterable[str], *, blobs: bool = False) -> dict[str, Any]:
    data: dict[str, Any] = {"_id": repo.field("_id"), "id": repo.repo_id}
    for name in fields:
        value = repo.field(name, blobs=blobs)
        if value is not None:
            data[name] = value
    return data


def _list_fields(query: dict[str, list[str]]) -> list[str]:
    if expand := query.get("expand"):
        return list(expand)
    fields = list(_DEFAULT_LIST_FIELDS)
    if _truthy(_first(query, "full")):
        fields += _FULL_LIST_FIELDS
    if _truthy(_first(query, "config")):
        fields.append("config")
    if _truthy(_first(query, "cardData")):
        fields.append("cardData")
    return fields


def _filter_terms(repo: HubRepo) -> set[str]:
    tags = _plain(repo.field("tags"))
    terms = {t for t in tags if isinstance(t, str)} if isinstance(tags, list) else set()
    for name in ("library_name", "pipeline_tag"):
        if isinstance(value := _plain(repo.field(name)), str) and value:
            terms.add(value)
    return terms


def _sort_value(repo: HubRepo, sort: str) -> Any:
    """The repo's value of a sort key; one of the wrong type (hostile metadata) sorts as
    missing."""
    missing: Any = {"id": "", "lastModified": _EPOCH, "createdAt": _EPOCH}.get(sort, 0)
    value = _plain(repo.field(sort))
    if isinstance(value, bool) or not isinstance(value, type(missing)):
        return missing
    return value or missing


def _first(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[0] if values else None


def _truthy(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true", "yes")


def _encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"offset": offset}).encode()).decode()


def _decode_cursor(cursor: str | None) -> int:
    if not cursor:
        return 0
    try:
        return int(json.loads(base64.urlsafe_b64decode(cursor.encode()))["offset"])
    except Exception as exc:
        raise ValueError(cursor) from exc


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    match = re.fullmatch(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", header)
    if match is None or size == 0:
        return None
    first, last = match.groups()
    if first == "" and last == "":
        return None
    if first == "":  # suffix range: the last N bytes
        start, end = max(0, size - int(last)), size - 1
    else:
        start = int(first)
        end = min(int(last), size - 1) if last else size - 1
    if start >= size or start > end:
        return None
    return start, end


def _content_type(filename: str) -> str:
    if filename.endswith(".json"):
        return "application/json; charset=utf-8"
    if filename.endswith((".md", ".txt", ".jinja", ".py")):
        return "text/plain; charset=utf-8"
    return "application/octet-stream"


def _reason(status: int) -> str:
    return {
        401: "Invalid credentials in Authorization header",
        429: "You have exceeded our hourly quotas for action: api. Retry later.",
        500: "Internal Error - We're working hard to fix this as soon as possible!",
        502: "Bad Gateway",
        503: "Service Temporarily Unavailable",
        504: "Gateway Timeout",
    }.get(status, f"Forced failure {status}")


def _derive_meta(repo_id: str, files: dict[str, HubFile]) -> dict[str, Any]:
    """Hub fields derived from a repo's files, as the Hub computes them on push."""
    meta: dict[str, Any] = {}
    card = _read_json_free(files.get("README.md"))
    card_data = _front_matter(card) if card else {}
    config = _read_json(files.get("config.json"))
    tokenizer_config = _read_json(files.get("tokenizer_config.json"))

    tags: list[str] = []
    library = card_data.get("library_name")
    if library:
        meta["library_name"] = library
        tags.append(library)
    if any(p.endswith(".safetensors") for p in files):
        tags.append("safetensors")
    if config and isinstance(config.get("model_type"), str) and config["model_type"]:
        tags.append(config["model_type"])
    pipeline = card_data.get("pipeline_tag")
    if pipeline:
        meta["pipeline_tag"] = pipeline
        tags.append(pipeline)
    card_tags = card_data.get("tags")
    for tag in card_tags if isinstance(card_tags, list) else []:
        if isinstance(tag, str) and tag not in tags:
            tags.append(tag)
    if tokenizer_config and tokenizer_config.get("chat_template"):
        tags.append("conversational")
    if card_data.get("license"):
        tags.append(f"license:{card_data['license']}")
    tags.append("region:us")
    meta["tags"] = tags
    if card_data:
        meta["cardData"] = card_data

    if config is not None:
        api_config: dict[str, Any] = {
            k: config[k] for k in ("architectures", "model_type") if k in config
        }
        if "quantization_config" in config:
            api_config["quantization_config"] = config["quantization_config"]
        if tokenizer_config:
            api_config["tokenizer_config"] = {
                k: v
                for k, v in tokenizer_config.items()
                if k.endswith("_token") or k == "chat_template"
            }
        meta["config"] = api_config

    parameters: dict[str, int] = {}
    for hub_file in files.values():
        if hub_file.path.endswith(".safetensors"):
            for dtype, count in _safetensors_parameters(hub_file).items():
                parameters[dtype] = parameters.get(dtype, 0) + count
    if parameters:
        meta["safetensors"] = {"parameters": parameters, "total": sum(parameters.values())}
    meta["usedStorage"] = sum(f.size for f in files.values())
    return meta


def _read_bytes(hub_file: HubFile | None, limit: int = 4 << 20) -> bytes | None:
    if hub_file is None or hub_file.size > limit:
        return None
    return b"".join(hub_file.read(0, hub_file.size - 1)) if hub_file.size else b""


def _read_json(hub_file: HubFile | None) -> dict[str, Any] | None:
    raw = _read_bytes(hub_file)
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):  # hostile files are served, not read
        return None
    if _deeper_than(value, _MAX_DERIVED_DEPTH):
        # Parsed, but too deep for `dumps` to write back into the Hub fields derived from it
        # (its walk recurses): the listing would answer 500. Served, not read, like the above.
        return None
    return value if isinstance(value, dict) else None


#: The deepest file content the fake Hub derives fields from (real configs nest a few levels).
_MAX_DERIVED_DEPTH = 64


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether `value` nests lists or objects more than `limit` levels (without recursion)."""
    level = [value]
    for _ in range(limit + 1):
        level = [
            child
            for item in level
            if isinstance(item, dict | list)
            for child in (item.values() if isinstance(item, dict) else item)
        ]
        if not level:
            return False
    return True


def _read_json_free(hub_file: HubFile | None) -> str | None:
    raw = _read_bytes(hub_file)
    return raw.decode("utf-8", "replace") if raw is not None else None


def _front_matter(card: str) -> dict[str, Any]:
    if not card.startswith("---"):
        return {}
    end = card.find("\n---", 3)
    if end < 0:
        return {}
    import yaml  # a huggingface_hub dependency

    try:
        data = yaml.safe_load(card[3:end])
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


def _safetensors_parameters(hub_file: HubFile) -> dict[str, int]:
    """Parameter count per dtype from a safetensors header, the way the Hub reports it."""
    head = b"".join(hub_file.read(0, min(hub_file.size, 8) - 1))
    if len(head) < 8:
        return {}
    header_len = int.from_bytes(head, "little")
    raw = b"".join(hub_file.read(8, 8 + header_len - 1))
    try:
        header = json.loads(raw)
    except ValueError:
        return {}
    counts: dict[str, int] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        count = 1
        for dim in info["shape"]:
            count *= dim
        counts[info["dtype"]] = counts.get(info["dtype"], 0) + count
    return counts


# --- standalone process -----------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    """``python -m tests.support.fake_hub [--port N] [--with-tiny-models] [--no-catalog]
    [--repo ID=DIR …]``."""
    parser = argparse.ArgumentParser(description="Serve a fake Hugging Face Hub locally.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--with-tiny-models", action="store_true", help="serve test-org/tiny-*")
    parser.add_argument("--no-catalog", action="store_true", help="leave out the built-in catalog")
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--throttle-bps", type=int, default=None)
    parser.add_argument("--page-size", type=int, default=25, help="largest /api/models page")
    parser.add_argument(
        "--repo", action="append", default=[], metavar="ID=DIR",
        help="also serve the files under DIR as the model repo ID (repeatable)",
    )  # fmt: skip
    args = parser.parse_args(argv)

    hub = FakeHub(with_catalog=not args.no_catalog, host=args.host, port=args.port)
    if args.with_tiny_models:
        hub.add_tiny_models()
    for spec in args.repo:
        repo_id, _, directory = spec.partition("=")
        hub.add_repo(repo_id, directory)
    hub.latency = args.latency
    hub.throttle_bps = args.throttle_bps
    hub.page_size = args.page_size
    hub.start()
    print(hub.url, flush=True)
    print(
        f"# {len(hub.repos)} repos; tokens: {VALID_TOKEN} (approved), {UNAPPROVED_TOKEN}."
        f" Use HF_ENDPOINT={hub.url}",
        flush=True,
    )
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):
            pass
    finally:
        hub.stop()
        sys.stdout.flush()


if __name__ == "__main__":
    main()
