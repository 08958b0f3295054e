"""The gateway's transport to model servers: one request, one connection, the answer read as
it arrives, and the client watched meanwhile.

mlx_lm.server speaks HTTP/1.0 (every answer closes its connection), so `send` writes one
HTTP/1.0 request on a new socket and reads the answer with `recv` (`DirectBody`): cheaper per
streamed token than httpx's layers (docs/benchmarks.md §1c). The same path reaches another
host's hop over plain HTTP (servers/gateway/hop.py); a hop over HTTPS goes through one pooled
`httpx.Client` (`client()`). While the server is silent, the client's own socket is watched
(`_Waiter`): a client that leaves raises ClientGone, and closing the upstream connection makes
the model server stop working on the request (servers/supervision/mlx_entry.py). See
docs/gateway.md, "A client that leaves stops the server's work" and "Streaming".
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import select
import socket
import threading
import time
from collections.abc import Iterator
from typing import cast

import httpx
from django.conf import settings
from django.http import HttpRequest

from servers.gateway.errors import GatewayError, own_error, upstream_error
from servers.supervision.mlx_entry import peer_closed

log = logging.getLogger(__name__)


def client_socket(request: HttpRequest) -> socket.socket | None:
    """The socket of the client's connection, when the web server gives it (gunicorn does):
    the gateway watches it to stop a model server's work for a client that left."""
    sock = request.META.get("gunicorn.socket")
    return sock if isinstance(sock, socket.socket) else None


# --- the pool (a hop over HTTPS) --------------------------------------------------------------

_client: httpx.Client | None = None
_client_lock = threading.Lock()


def client() -> httpx.Client:
    """The one HTTP client of this process (a shared, thread-safe connection pool)."""
    global _client
    if _client is None:
        with _client_lock:
            if _client is None:
                limits = httpx.Limits(
                    max_connections=settings.GATEWAY_MAX_CONNECTIONS,
                    max_keepalive_connections=32,
                    keepalive_expiry=30,
                )
                # TCP_NODELAY: the request leaves in two writes (headers, body); the second
                # must not wait for the first's acknowledgement (Nagle).
                nodelay = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
                _client = httpx.Client(
                    transport=httpx.HTTPTransport(limits=limits, socket_options=nodelay),
                    timeout=httpx.Timeout(
                        connect=settings.GATEWAY_CONNECT_TIMEOUT,
                        read=settings.GATEWAY_READ_TIMEOUT,
                        write=30.0,
                        pool=30.0,
                    ),
                )
    return _client


def connections_in_use() -> int:
    """Connections to model servers that carry a request right now (0 when all are idle)."""
    direct = _direct_slots.open
    if _client is None:
        return direct
    transport = cast(httpx.HTTPTransport, _client._transport)
    pool = transport._pool  # httpcore.ConnectionPool: httpx says nothing of what is busy
    return direct + sum(1 for connection in pool.connections if not connection.is_idle())


class _DirectSlots:
    """The direct connections open now, at most GATEWAY_MAX_CONNECTIONS (as the pool's)."""

    def __init__(self) -> None:
        self.open = 0
        self._lock = threading.Lock()
        self._free: threading.Semaphore | None = None

    def take(self, timeout: float) -> bool:
        if self._free is None:
            with self._lock:
                if self._free is None:
                    self._free = threading.Semaphore(settings.GATEWAY_MAX_CONNECTIONS)
        if not self._free.acquire(timeout=timeout):
            return False
        with self._lock:
            self.open += 1
        return True

    def give_back(self) -> None:
        with self._lock:
            self.open -= 1
        assert self._free is not None  # a slot was taken
        self._free.release()


_direct_slots = _DirectSlots()


# poll() flag for "the peer closed its end", without waking for data (Linux).
_POLLRDHUP: int | None = getattr(select, "POLLRDHUP", None)
# Where there is none (macOS): poll() for data with the socket's read low-water mark set this
# high says "closed" too, as a closed end is always readable; a pause gathers a few KB.
_LOW_WATER = 1 << 18


def wait_for_close(sock: socket.socket, seconds: float) -> None:
    """Wait up to `seconds` for the peer to close its end of `sock`, without waking for data
    that arrives meanwhile (it stays in the socket for the next read)."""
    if _POLLRDHUP is not None:
        poller = select.poll()
        try:
            poller.register(sock, _POLLRDHUP)
        except (OSError, ValueError):  # closed meanwhile: nothing to wait for
            return
        poller.poll(seconds * 1000)
        return
    wait_for_close_by_low_water(sock, seconds)


def wait_for_close_by_low_water(sock: socket.socket, seconds: float) -> None:
    """`wait_for_close` where poll() has no POLLRDHUP (macOS; Linux runs it in the tests):
    with `SO_RCVLOWAT` above what can gather, poll() reports the socket readable only once
    the peer has closed its end (or that much arrived). The mark is set back to 1 before
    returning, or a later blocking read would wait for that many bytes."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, _LOW_WATER)
    except OSError:  # not settable here: a plain wait, which may hold back a reply's end
        time.sleep(seconds)
        return
    try:
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        poller.poll(seconds * 1000)
    except (OSError, ValueError):  # closed meanwhile: nothing to wait for
        pass
    finally:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, 1)


class ClientGone(Exception):
    """The client of a request closed its connection while the portal waited for the model
    server. The caller closes the upstream connection, so the server stops working on the
    request (servers/supervision/mlx_entry.py watches its connections), and records it as
    cancelled."""


# What poll() reports for a client that closed its end: POLLRDHUP (Linux) without waking for
# data; elsewhere POLLIN, and a peek tells the end of the connection from data.
_CLIENT_EVENTS = (_POLLRDHUP or select.POLLIN) | select.POLLHUP | select.POLLERR


class _Waiter:
    """Waits for data from a model server while watching the client of the request.

    `client_socket` is the web server's socket of the client's request (`gunicorn.socket`;
    None where the server does not give it, e.g. Django's development server: then only the
    write of the next event notices a client that left). A client that closes its connection
    ends the wait at once with ClientGone, even while the server is silent: reading a long
    prompt, or generating a non-streamed answer.
    """

    def __init__(self, upstream: socket.socket, client_socket: socket.socket | None):
        self._poller = select.poll()
        self._upstream = upstream.fileno()
        self._poller.register(self._upstream, select.POLLIN)
        self._client: socket.socket | None = None
        if client_socket is not None:
            try:
                self._poller.register(client_socket.fileno(), _CLIENT_EVENTS)
            except (OSError, ValueError):  # already closed: the first wait will tell
                return
            self._client = client_socket

    def wait(self, timeout: float) -> None:
        """Return once the server's socket has data (or is closed); raise ClientGone when the
        client left first, TimeoutError after `timeout` seconds of silence."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            ready = False
            for fd, _event in self._poller.poll(left * 1000):
                if fd == self._upstream:
                    ready = True
                elif self._client is not None:
                    if peer_closed(self._client):
                        raise ClientGone
                    # Data from the client (a pipelined request): it is there; stop watching
                    # it, or poll() would report it again at once.
                    self._poller.unregister(fd)
                    self._client = None
            if ready:
                return

    def watch_client(self, poller: select.poll) -> None:
        """Also watch the client on `poller` (the pauses', `DirectBody.pause`)."""
        if self._client is not None:
            with contextlib.suppress(OSError, ValueError):  # closed: the next wait tells
                poller.register(self._client.fileno(), _CLIENT_EVENTS)

    def client_event(self, poller: select.poll, fd: int) -> None:
        """What `fd`'s event on `poller` says: ClientGone for a client that left; else data
        from the client (a pipelined request), watched no more, as `wait` does."""
        if self._client is None or fd != self._client.fileno():
            return
        if peer_closed(self._client):
            raise ClientGone
        with contextlib.suppress(KeyError, ValueError):
            poller.unregister(fd)
        self._client = None


class DirectBody(httpx.SyncByteStream):
    """The body of a model server's answer, read from its socket as it arrives, for `send`.

    mlx_lm.server speaks HTTP/1.0 (and the hop is asked in HTTP/1.0): every answer closes its
    connection, so a pool has nothing to reuse, and a streamed token is one small read. Through
    httpx, httpcore and h11 such a read cost ~65 µs of CPU; `recv` on the socket ~30 µs
    (docs/benchmarks.md §1c). Socket errors become httpx's, so the callers' handling
    (time-outs, a server that died) is the same as for any httpx response; a client that left
    raises ClientGone.
    """

    def __init__(
        self, sock: socket.socket, waiter: _Waiter, rest: bytes, length: int | None
    ) -> None:
        self._sock = sock
        self._waiter = waiter
        self._rest = rest  # what came with the head
        self._left = length  # Content-Length, when the server sent one
        self._closed = False
        self._closing: select.poll | None = None  # pause()'s, made once
        self._paused = False  # a pause (which watched the client) came just before this read
        self._client_left = False  # seen by a pause

    def pause(self, seconds: float) -> None:
        """Wait `seconds` for more of the answer to gather — less when the server has
        closed its end: the answer is complete (HTTP/1.0), so pacing (Relay.openai_stream)
        never holds back the end of a reply."""
        if seconds <= 0:
            return
        if _POLLRDHUP is None:
            wait_for_close(self._sock, seconds)
            return
        if self._closing is None:  # one poll object for every pause of this answer
            poller = select.poll()
            try:
                poller.register(self._sock, _POLLRDHUP)
            except (OSError, ValueError):  # closed meanwhile: nothing to wait for
                return
            self._waiter.watch_client(poller)
            self._closing = poller
        upstream = self._sock.fileno()
        for fd, _event in self._closing.poll(seconds * 1000):
            if fd == upstream:
                continue
            try:
                self._waiter.client_event(self._closing, fd)
            except ClientGone:  # raised by the next read, where a wait would raise it
                self._client_left = True
        # The client was watched for the whole pause (a client that left ends it): the next
        # read need not ask poll() again before its recv (one system call less a write).
        self._paused = True

    def __iter__(self) -> Iterator[bytes]:
        if self._rest:
            data, self._rest = self._rest, b""
            yield self._count(data)
        while self._left is None or self._left > 0:
            if self._client_left:
                raise ClientGone
            try:
                ready = self._ready() if self._paused else None
                if ready is None:
                    self._waiter.wait(settings.GATEWAY_READ_TIMEOUT)
                    ready = self._sock.recv(65536)
                data = ready
            except TimeoutError:
                raise httpx.ReadTimeout("the model server stopped sending") from None
            except OSError as exc:
                raise httpx.ReadError(repr(exc)) from None
            if not data:
                return
            yield self._count(data)

    def _ready(self) -> bytes | None:
        """What the server sent during the pause just made (b"": it closed), without waiting;
        None when nothing is there yet (then the read waits, watching the client)."""
        self._paused = False
        try:
            return self._sock.recv(65536, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return None

    def _count(self, data: bytes) -> bytes:
        if self._left is not None:
            data = data[: self._left]
            self._left -= len(data)
        return data

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._sock.close()
        finally:
            _direct_slots.give_back()


# A connection reset before the server answered a byte (a burst that overflowed its listen
# queue) is tried again, this many times in all, after a short pause: the server never saw the
# request.
SEND_ATTEMPTS = 3
_MAX_HEAD = 64 * 1024


class _Reset(Exception):
    """The connection was reset before any byte of an answer arrived."""


@functools.lru_cache(maxsize=256)
def _target(base_url: str) -> tuple[str, int, str]:
    """(host, port, path prefix) of a server's base URL: parsed once per URL, not per request
    (httpx's parser was ~5 % of a request's CPU before its first token)."""
    url = httpx.URL(base_url)
    return url.host, url.port or 80, url.raw_path.decode().split("?")[0].rstrip("/")


def _request_bytes(
    target: tuple[str, int, str], endpoint: str, body: dict, headers: dict[str, str]
) -> bytes:
    host, port, prefix = target
    payload = json.dumps(body, separators=(",", ":"), allow_nan=False).encode()
    lines = [
        f"POST {prefix}/v1/{endpoint} HTTP/1.0",
        f"Host: {host}:{port}",
        "Content-Type: application/json",
        f"Content-Length: {len(payload)}",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload


def _read_head(sock: socket.socket, waiter: _Waiter) -> tuple[int, list[tuple[str, str]], bytes]:
    """The status, headers and the first bytes of the body of the server's answer."""
    data = b""
    while (end := data.find(b"\r\n\r\n")) < 0:
        if len(data) > _MAX_HEAD:
            raise httpx.RemoteProtocolError("the answer's head is too long")
        try:
            waiter.wait(settings.GATEWAY_READ_TIMEOUT)
            chunk = sock.recv(65536)
        except TimeoutError:
            raise httpx.ReadTimeout("no answer within the time-out") from None
        except (ConnectionResetError, ConnectionAbortedError, BrokenPipeError):
            if not data:
                raise _Reset from None
            raise httpx.ReadError("the connection was reset") from None
        except OSError as exc:
            raise httpx.ReadError(repr(exc)) from None
        if not chunk:
            raise httpx.RemoteProtocolError("the server closed the connection without an answer")
        data += chunk
    status_line, _, block = data[:end].partition(b"\r\n")
    parts = status_line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        raise httpx.RemoteProtocolError(f"not an HTTP answer: {status_line[:80]!r}")
    headers = []
    for line in block.split(b"\r\n"):
        name, colon, value = line.partition(b":")
        if colon:
            headers.append((name.strip().decode("latin-1"), value.strip().decode("latin-1")))
    return int(parts[1]), headers, data[end + 4 :]


def _exchange(
    address: tuple[str, int], request: bytes, client_socket: socket.socket | None
) -> httpx.Response:
    """One attempt: connect, send `request`, read the answer's head."""
    try:
        sock = socket.create_connection(address, timeout=settings.GATEWAY_CONNECT_TIMEOUT)
    except TimeoutError:
        raise httpx.ConnectTimeout("no connection within the time-out") from None
    except (ConnectionResetError, ConnectionAbortedError):
        raise _Reset from None
    except OSError as exc:
        raise httpx.ConnectError(repr(exc)) from None
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(30.0)  # a write that long means a server that reads nothing
        waiter = _Waiter(sock, client_socket)
        try:
            sock.sendall(request)
        except (ConnectionResetError, ConnectionAbortedError, BrokenPipeError):
            raise _Reset from None
        except TimeoutError:
            raise httpx.WriteTimeout("the server does not read the request") from None
        except OSError as exc:
            raise httpx.ConnectError(repr(exc)) from None
        # From here on `_Waiter` keeps the time-outs: with one of its own, the socket would
        # poll() again before every recv (CPython does), one more system call per read.
        sock.settimeout(None)
        status, headers, rest = _read_head(sock, waiter)
    except BaseException:
        sock.close()
        raise
    length = next((v for k, v in headers if k.lower() == "content-length"), None)
    size = int(length) if length is not None and length.isdigit() else None
    return httpx.Response(status, headers=headers, stream=DirectBody(sock, waiter, rest, size))


def _send_direct(
    base_url: str,
    endpoint: str,
    body: dict,
    headers: dict[str, str] | None = None,
    client_socket: socket.socket | None = None,
) -> httpx.Response:
    """POST `body` to `base_url` (a local server, or another host's hop over plain HTTP) over
    a new connection (`DirectBody`); the response's head is read, its body is not. Raises
    httpx's exceptions, as `client().send` does, and ClientGone."""
    target = _target(base_url)
    if not _direct_slots.take(timeout=30.0):  # as the pool's time-out
        raise httpx.PoolTimeout("all connections to model servers are in use")
    request = _request_bytes(target, endpoint, body, headers or {})
    address = target[:2]
    try:
        for attempt in range(SEND_ATTEMPTS):
            try:
                return _exchange(address, request, client_socket)
            except _Reset:
                log.info("Connection to %s reset before an answer (try %d)", base_url, attempt + 1)
                time.sleep(0.02 * 2**attempt)
        raise httpx.ConnectError(f"the connection was reset {SEND_ATTEMPTS} times")
    except BaseException:
        _direct_slots.give_back()
        raise


def send(
    base_url: str,
    endpoint: str,
    body: dict,
    name: str,
    headers: dict[str, str] | None = None,
    client_socket: socket.socket | None = None,
) -> httpx.Response:
    """Send `body` to the server's `/v1/<endpoint>`; the response is streamed (not yet read).

    `headers` (the hop's token) mean `base_url` is another host's hop (servers/gateway/hop.py): its
    errors are already in OpenAI's shape and worded for the user, so they pass on as they are.
    `client_socket` is the socket of the client's own request, watched while the server is silent
    (ClientGone when it leaves; see `_Waiter`).
    Raises GatewayError (503) when the server cannot be reached, or for an HTTP error.
    The caller must close the response (Relay does).
    """
    try:
        if base_url.startswith("http://"):
            response = _send_direct(base_url, endpoint, body, headers, client_socket)
        else:  # another host's hop over HTTPS: the pooled client
            request = client().build_request(
                "POST", f"{base_url}/v1/{endpoint}", json=body, headers=headers
            )
            response = client().send(request, stream=True)
    except httpx.TimeoutException:
        raise GatewayError(
            f"The model server of '{name}' did not answer in time.", 504, code="upstream_timeout"
        ) from None
    except httpx.HTTPError as exc:
        log.warning("Cannot reach %s: %s", base_url, exc)
        raise GatewayError(
            f"The model server of '{name}' is not answering (it may be restarting). Try again "
            "in a moment.",
            503,
            code="server_unreachable",
        ) from None
    if response.status_code != 200:
        try:
            text = response.read()[:500].decode(errors="replace")
        except httpx.HTTPError:
            text = "(unreadable)"
        finally:
            response.close()
        log.warning("Model server %s answered HTTP %s: %s", base_url, response.status_code, text)
        if (error := own_error(response.status_code, text, bool(headers))) is not None:
            raise error
        raise upstream_error(response.status_code, name, text)
    return response
