"""The floor under the portal's CPU figures (`python -m bench.gateway_stream --floor`): the
least a relay of the same streams does, served by the same gunicorn (the Procfile's worker
class, workers and threads, and bench/web_probe.py measuring it the same way).

It reads the request, sends it as it is to the model server (`BENCH_FLOOR_UPSTREAM`,
host:port) over a new connection, and passes the answer's bytes on as they arrive, paced as
the portal paces an API stream (servers/gateway/relay.py: no pause before the first token; after
it, writes at least GATEWAY_STREAM_INTERVAL_MS apart, growing with the streams the process
relays to GATEWAY_STREAM_INTERVAL_MAX_MS, a pause that ends when the server closes). No key, no
look-up, no admission, no body rules, no parsing, no usage record, no Django: whatever the
portal's figures are above this one's is the portal's own work, and what this one costs is
the part of the portal's figures that no change inside the portal can take away (gunicorn, a
second connection, a thread woken for each write).

Nothing of the portal imports this module, and it imports nothing of the portal: it reads the
pacing settings from the same environment variables with the same defaults (config/settings.py).
"""

from __future__ import annotations

import os
import select
import socket
import threading
import time
from collections.abc import Iterator

_BASE_MS = float(os.environ.get("MLX_PORTAL_GATEWAY_STREAM_INTERVAL_MS", "20"))
_MOST_MS = float(os.environ.get("MLX_PORTAL_GATEWAY_STREAM_INTERVAL_MAX_MS", max(50, _BASE_MS)))
_TOKEN = b'"finish_reason": null'  # a chunk of an unfinished reply: a token (mlx_lm.server)
_POLLRDHUP = getattr(select, "POLLRDHUP", 0x2000)

_open = [0]  # streams this process relays now, for the pacing
_lock = threading.Lock()


def _upstream() -> tuple[str, int]:
    host, port = os.environ["BENCH_FLOOR_UPSTREAM"].rsplit(":", 1)
    return host, int(port)


def application(environ, start_response):
    path = environ.get("PATH_INFO", "")
    if not path.startswith("/v1/"):  # the bench's readiness check
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [b"ok"]
    body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    host, port = _upstream()
    sock = socket.create_connection((host, port))
    sock.sendall(
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body
    )
    head = b""
    while b"\r\n\r\n" not in head:
        data = sock.recv(65536)
        if not data:
            sock.close()
            start_response("502 Bad Gateway", [("Content-Length", "0")])
            return [b""]
        head += data
    head, rest = head.split(b"\r\n\r\n", 1)
    status = head.split(b"\r\n", 1)[0].split(b" ", 1)[1].decode()
    start_response(status, [("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache")])
    return _relay(sock, rest)


def _relay(sock: socket.socket, rest: bytes) -> Iterator[bytes]:
    with _lock:
        _open[0] += 1
    poller = select.poll()
    poller.register(sock, _POLLRDHUP)
    paced = False
    try:
        data = rest
        while True:
            if data:
                written_at = time.monotonic()
                yield data
                paced = paced or _TOKEN in data
                if paced:
                    interval = min(max(_BASE_MS, _MOST_MS), _BASE_MS * max(1, _open[0])) / 1000
                    wait = written_at + interval - time.monotonic()
                    if wait > 0:
                        poller.poll(wait * 1000)
            data = sock.recv(65536)
            if not data:
                return
    finally:
        with _lock:
            _open[0] -= 1
        sock.close()


# --- the same relay on an event loop ------------------------------------------------------------


async def asgi(scope, receive, send):
    """The same relay for gunicorn's ASGI worker (`-k asgi`, asyncio; `--floor-asgi`): every
    stream of a worker on one thread, each pacing wait a timer of the event loop (reading
    paused) instead of a thread asleep in poll()."""
    import asyncio

    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    path = scope["path"]
    if not path.startswith("/v1/"):
        headers = [(b"content-type", b"text/plain"), (b"content-length", b"2")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"ok"})
        return
    body, more = b"", True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    host, port = _upstream()
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body
    )
    loop = asyncio.get_running_loop()
    _open[0] += 1  # one thread: no lock
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        paced = False
        while data := await reader.read(65536):
            written_at = loop.time()
            await send({"type": "http.response.body", "body": data, "more_body": True})
            paced = paced or _TOKEN in data
            if paced:
                interval = min(max(_BASE_MS, _MOST_MS), _BASE_MS * max(1, _open[0])) / 1000
                wait = written_at + interval - loop.time()
                if wait > 0:
                    # The tokens stay in the socket meanwhile, as with the threads' poll():
                    # an asyncio transport reading on, the loop would wake for each of them.
                    writer.transport.pause_reading()
                    await asyncio.sleep(wait)
                    writer.transport.resume_reading()
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    finally:
        _open[0] -= 1
        writer.close()
