"""A gunicorn configuration module for the benches (`-c python:bench.web_probe`): it measures,
per request, the CPU time of the thread that serves it, and nothing else changes.

`post_worker_init` wraps the gthread worker's `handle` (one request of a connection, run on a
pool thread: reading and parsing it, the WSGI call, writing the answer, closing the body) and
its WSGI application. For each request under `/v1/` it appends one line to
`$BENCH_WEB_PROBE_DIR/<worker pid>.tsv`:

    <path>  <thread CPU before the first byte, s>  <thread CPU of the whole request, s>

"Before the first byte" runs from the moment the thread takes the request up to the moment
gunicorn has written the response's head and first body chunk (it asks the body for the next
chunk only after writing the one before). `time.thread_time()` counts this thread's CPU only:
other threads running meanwhile (other requests, gunicorn's main loop) do not count, so the
figure does not grow with the machine's load. The rest of the web tier's CPU (the main thread
accepting and polling connections, the lease keeper) is what psutil sees of the processes
beyond these lines.

Nothing of the portal imports this module; bench/gateway_stream.py starts its gunicorn with it.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

_local = threading.local()


class _Body:
    """The WSGI body, passed on as it is; notes the thread's CPU once the first chunk is
    written (gunicorn comes back for the second one)."""

    def __init__(self, body, on_first):
        self._body = body
        self._on_first = on_first

    def __iter__(self):
        chunks = iter(self._body)
        for chunk in chunks:
            if chunk:
                yield chunk
                self._on_first()  # gunicorn wrote the head and the first chunk
                yield from chunks
                return
            yield chunk

    def close(self):
        close = getattr(self._body, "close", None)
        if close is not None:
            close()


def post_worker_init(worker):
    folder = os.environ.get("BENCH_WEB_PROBE_DIR")
    if not folder:
        return
    out = (Path(folder) / f"{os.getpid()}.tsv").open("a", buffering=1)
    lock = threading.Lock()
    app, handle = worker.wsgi, worker.handle

    def timed_app(environ, start_response):
        path = environ.get("PATH_INFO", "")
        body = app(environ, start_response)
        if not path.startswith("/v1/"):
            return body
        _local.path = path

        def first() -> None:
            _local.first = time.thread_time()

        return _Body(body, first)

    def timed_handle(conn):
        _local.path = None
        _local.first = None
        started = time.thread_time()
        try:
            return handle(conn)
        finally:
            if _local.path is not None:
                total = time.thread_time() - started
                first = total if _local.first is None else _local.first - started
                with lock:
                    out.write(f"{_local.path}\t{first:.6f}\t{total:.6f}\n")

    worker.wsgi = timed_app
    worker.handle = timed_handle
