"""A gunicorn configuration module for the benches (`-c python:bench.web_probe`): it measures,
per request, the CPU time of the thread that serves it and when each step of the request
happened, and nothing else changes.

`post_worker_init` wraps the gthread worker's `handle` (one request of a connection, run on a
pool thread: reading and parsing it, the WSGI call, writing the answer, closing the body), its
`enqueue_req` (the main thread hands an accepted or readable connection to the pool) and its
WSGI application, and in the portal the send to a local model server
(`servers.gateway.transport._send_direct`: connect, request, the answer's head) and the first
token of a reply (`servers.usage.records.Measure.token`). For each request under `/v1/` it
appends one line to `$BENCH_WEB_PROBE_DIR/<worker pid>.tsv`:

    <path>  <CPU before the first byte, s>  <CPU of the whole request, s>  <writes>  <wall>…

"Before the first byte" runs from the moment the thread takes the request up to the moment
gunicorn has written the response's head and first body chunk (it asks the body for the next
chunk only after writing the one before). `time.thread_time()` counts this thread's CPU only:
other threads running meanwhile (other requests, gunicorn's main loop) do not count, so the
figure does not grow with the machine's load. The rest of the web tier's CPU (the main thread
accepting and polling connections, the lease keeper) is what psutil sees of the processes
beyond these lines.

`writes` counts the body's chunks gunicorn wrote (each a write to the client: how well the
relay's pacing gathers tokens). The wall columns are `time.monotonic()` instants (one clock
for every process of the machine), "nan" when a step did not happen, in the order of
WALL_MARKS: the client's send (its `X-Bench-Sent` header, the bench's clients set it), the
connection handed to the pool, a thread taking it, the WSGI call, the upstream send's start,
the upstream answer's head, the first token read, and the first token written to the client
(gunicorn comes back for more).

Nothing of the portal imports this module; bench/gateway_stream.py starts its gunicorn with it,
and the floor's (bench/floor_relay.py, `--floor`), where only the portal's own marks are missing.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from pathlib import Path

WALL_MARKS = (
    "sent", "queued", "taken", "app", "upstream_sent", "upstream_head", "token", "token_written",
)  # fmt: skip
SENT_HEADER = "X-Bench-Sent"

_local = threading.local()
NAN = float("nan")


def _mark(name: str) -> None:
    """Note when `name` first happened in the request this thread serves."""
    marks = getattr(_local, "marks", None)
    if marks is not None and name not in marks:
        marks[name] = time.monotonic()


class _Body:
    """The WSGI body, passed on as it is; notes the thread's CPU once the first chunk is
    written (gunicorn comes back for the second one), and the instant the chunk holding the
    first token was."""

    def __init__(self, body, on_first):
        self._body = body
        self._on_first = on_first

    def __iter__(self):
        chunks = iter(self._body)
        first = True
        for chunk in chunks:
            yield chunk
            _local.writes += 1
            if chunk and first:
                first = False
                self._on_first()  # gunicorn wrote the head and the first chunk
            if "token" in _local.marks:
                _mark("token_written")
                for chunk in chunks:
                    yield chunk
                    _local.writes += 1
                return

    def close(self):
        close = getattr(self._body, "close", None)
        if close is not None:
            close()


def _wrap_portal() -> None:
    """The upstream send and the first token, marked on the request's thread."""
    from servers.gateway import transport
    from servers.usage import records

    send_direct, token = transport._send_direct, records.Measure.token

    def timed_send_direct(*args, **kwargs):
        _mark("upstream_sent")
        try:
            return send_direct(*args, **kwargs)
        finally:
            _mark("upstream_head")

    def timed_token(self):
        if self.first_token_at is None:
            _mark("token")
        return token(self)

    transport._send_direct = timed_send_direct
    records.Measure.token = timed_token


def post_worker_init(worker):
    folder = os.environ.get("BENCH_WEB_PROBE_DIR")
    if not folder:
        return
    out = (Path(folder) / f"{os.getpid()}.tsv").open("a", buffering=1)
    lock = threading.Lock()
    app, handle = worker.wsgi, worker.handle
    enqueue = getattr(worker, "enqueue_req", None)
    if "BENCH_FLOOR_UPSTREAM" not in os.environ:  # the portal (not bench/floor_relay.py)
        _wrap_portal()

    def timed_app(environ, start_response):
        path = environ.get("PATH_INFO", "")
        _local.marks["app"] = time.monotonic()
        with contextlib.suppress(ValueError):  # the bench's clients send a number
            _local.marks["sent"] = float(environ.get("HTTP_X_BENCH_SENT", "nan"))
        body = app(environ, start_response)
        if not path.startswith("/v1/"):
            return body
        _local.path = path

        def first() -> None:
            _local.first = time.thread_time()

        return _Body(body, first)

    def timed_enqueue(conn):
        conn.bench_queued = time.monotonic()
        return enqueue(conn)

    def timed_handle(conn):
        _local.path = None
        _local.first = None
        _local.writes = 0
        _local.marks = {"taken": time.monotonic()}
        queued = getattr(conn, "bench_queued", None)
        if queued is not None:
            _local.marks["queued"] = queued
        started = time.thread_time()
        try:
            return handle(conn)
        finally:
            if _local.path is not None:
                total = time.thread_time() - started
                first = total if _local.first is None else _local.first - started
                walls = "\t".join(f"{_local.marks.get(name, NAN):.6f}" for name in WALL_MARKS)
                with lock:
                    out.write(
                        f"{_local.path}\t{first:.6f}\t{total:.6f}\t{_local.writes}\t{walls}\n"
                    )

    worker.wsgi = timed_app
    worker.handle = timed_handle
    if enqueue is not None:
        worker.enqueue_req = timed_enqueue
