"""`transport.send` to a local model server: an HTTP/1.0 request, and the answer read from the
socket as it arrives (`DirectBody`), not through httpx's pool. Here the peer is a scripted
socket server (what mlx_lm.server writes: HTTP/1.0, a close-delimited body), so the cuts
between reads, a silent server and a dead one can be produced at will; the same path against
a real mlx_lm.server is covered by test_gateway.py, test_stream_disconnects.py and
test_stream_access.py."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

import httpx
import pytest

from servers.gateway import relay as relaying
from servers.gateway import transport
from servers.gateway.errors import GatewayError
from servers.gateway.relay import Relay
from servers.usage.records import Measure
from tests.servers.helpers import wait_for
from tests.servers.test_gateway_relay import STREAM, chunk, client_events, relay, upstream_bytes

HEAD = b"HTTP/1.0 200 OK\r\nServer: BaseHTTP/0.6\r\nContent-type: text/event-stream\r\n\r\n"


class Upstream:
    """One-connection socket server: reads the request, then runs `script(connection)`."""

    def __init__(self, script: Callable[[socket.socket], None]):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.request = b""
        self.peer_closed = threading.Event()
        self.done = threading.Event()
        self._script = script
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        connection, _ = self.listener.accept()
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        connection.settimeout(10)
        try:
            while b"\r\n\r\n" not in self.request:
                self.request += connection.recv(65536)
            head, _, body = self.request.partition(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            while len(body) < length:
                body += connection.recv(65536)
            self.request = head + b"\r\n\r\n" + body
            self._script(connection)
            # Until the portal closes its end (a recv of b"" or a reset): proves it let go.
            try:
                while connection.recv(65536):
                    pass
            except OSError:
                pass
            self.peer_closed.set()
        except OSError:
            pass
        finally:
            connection.close()
            self.listener.close()
            self.done.set()

    def close(self) -> None:
        self.done.wait(10)


@pytest.fixture
def upstream():
    servers: list[Upstream] = []

    def start(script: Callable[[socket.socket], None]) -> Upstream:
        server = Upstream(script)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def writes(*parts: bytes) -> Callable[[socket.socket], None]:
    def script(connection: socket.socket) -> None:
        for part in parts:
            connection.sendall(part)
        connection.shutdown(socket.SHUT_WR)  # HTTP/1.0: the end of the body

    return script


def direct_relay(url: str) -> Relay:
    body = {"model": "default_model", "messages": [{"role": "user", "content": "hi"}]}
    response = transport.send(url, "chat/completions", body, "tiny")
    return Relay(response, Measure(), "tiny")


@pytest.mark.parametrize("size", [1, 7, 64, 4096])
def test_a_direct_stream_cut_anywhere_relays_the_same_bytes_as_one_in_memory(upstream, size):
    parts = [STREAM[i : i + size] for i in range(0, len(STREAM), size)]
    server = upstream(writes(HEAD, *parts))
    relay_ = direct_relay(server.url)
    try:
        out = b"".join(relay_.openai_stream("m", include_usage=True))
    finally:
        relay_.close()
    expected, _ = relay([STREAM])
    assert out == b"".join(expected.openai_stream("m", include_usage=True))
    assert relay_.measure.completion_tokens == 3
    assert server.request.startswith(b"POST /v1/chat/completions HTTP/1.0\r\n")
    assert b'"model":"default_model"' in server.request
    assert server.peer_closed.wait(10)
    wait_for(lambda: transport.connections_in_use() == 0, 10, what="no open connection")


def test_a_client_that_leaves_mid_stream_closes_the_upstream_socket(upstream):
    release = threading.Event()

    def script(connection: socket.socket) -> None:
        connection.sendall(HEAD + upstream_bytes(chunk("a")))
        release.wait(10)  # and keeps the connection open, like a long reply

    server = upstream(script)
    relay_ = direct_relay(server.url)
    stream = relay_.openai_stream("m", include_usage=True)
    assert b'"content":"a"' in next(stream)
    assert transport.connections_in_use() == 1
    stream.close()  # what the WSGI server does when the client went away
    relay_.close("cancelled")
    release.set()
    assert server.peer_closed.wait(10)
    assert transport.connections_in_use() == 0


def test_a_server_that_dies_mid_stream_is_an_upstream_died_error(upstream):
    server = upstream(writes(HEAD, upstream_bytes(chunk("a"))))  # then closes, no [DONE]
    relay_ = direct_relay(server.url)
    out = []
    with pytest.raises(GatewayError) as error:
        for data in relay_.openai_stream("m", include_usage=True):
            out.append(data)
    relay_.close()
    assert error.value.code == "upstream_died" and error.value.status == 502
    assert b'"content":"a"' in b"".join(out)


def test_a_server_that_stops_sending_times_out(upstream, settings):
    settings.GATEWAY_READ_TIMEOUT = 0.3
    release = threading.Event()

    def script(connection: socket.socket) -> None:
        connection.sendall(HEAD + upstream_bytes(chunk("a")))
        release.wait(10)

    server = upstream(script)
    relay_ = direct_relay(server.url)
    try:
        with pytest.raises(GatewayError) as error:
            list(relay_.openai_stream("m", include_usage=True))
    finally:
        relay_.close()
        release.set()
    assert error.value.code == "upstream_timeout" and error.value.status == 504
    assert server.peer_closed.wait(10)


def test_a_server_that_never_answers_times_out_before_the_response(upstream, settings):
    settings.GATEWAY_READ_TIMEOUT = 0.3
    release = threading.Event()
    server = upstream(lambda connection: release.wait(10))
    try:
        with pytest.raises(GatewayError) as error:
            direct_relay(server.url)
    finally:
        release.set()
    assert error.value.code == "upstream_timeout" and error.value.status == 504
    assert transport.connections_in_use() == 0


def test_a_server_that_hangs_up_without_an_answer_is_unreachable(upstream):
    server = upstream(lambda connection: connection.shutdown(socket.SHUT_WR))
    with pytest.raises(GatewayError) as error:
        direct_relay(server.url)
    assert error.value.code == "server_unreachable" and error.value.status == 503
    assert transport.connections_in_use() == 0


def test_an_http_error_is_mapped_and_its_connection_closed(upstream):
    body = b'{"error": "generation thread died"}'
    answer = b"HTTP/1.0 404 Not Found\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    server = upstream(writes(answer))
    with pytest.raises(GatewayError) as error:
        direct_relay(server.url)
    assert error.value.code == "server_not_ready" and error.value.status == 503
    assert server.peer_closed.wait(10)
    assert transport.connections_in_use() == 0


def test_a_non_streamed_answer_is_read_whole(upstream):
    body = b'{"choices": [{"message": {"content": "hi"}}], "usage": {"completion_tokens": 1}}'
    answer = b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    server = upstream(writes(answer))
    relay_ = direct_relay(server.url)
    try:
        data = relay_.json()
    finally:
        relay_.close()
    assert data["choices"][0]["message"]["content"] == "hi"
    assert relay_.measure.completion_tokens == 1
    assert isinstance(relay_.response, httpx.Response)


@pytest.mark.parametrize("interval_ms", [0, 2000])
def test_tokens_after_the_first_leave_together_within_the_stream_interval(
    upstream, settings, interval_ms
):
    """The first token is written as soon as it is read; after it, writes are at least
    GATEWAY_STREAM_INTERVAL_MS apart, so tokens that arrive meanwhile leave in one write.
    With 0 every read is written. The server sends five tokens one by one, each once the one
    before has been written — or, when it is not written within 50 ms (the relay waits out
    its 2-s interval), anyway."""
    settings.GATEWAY_STREAM_INTERVAL_MS = interval_ms
    written: list[bytes] = []

    def script(connection: socket.socket) -> None:
        connection.sendall(HEAD + upstream_bytes(chunk("a")))
        for count, text in enumerate("abcdef", start=1):
            if text != "a":
                connection.sendall(upstream_bytes(chunk(text)))
            # Generous when every read is written at once (a loaded machine), short otherwise.
            deadline = time.monotonic() + (0.05 if interval_ms and text != "a" else 10)
            while len(written) < count and time.monotonic() < deadline:
                time.sleep(0.001)
        connection.sendall(upstream_bytes(chunk("", finish="stop"), "data: [DONE]\n\n"))
        connection.shutdown(socket.SHUT_WR)

    server = upstream(script)
    relay_ = direct_relay(server.url)
    try:
        for data in relay_.openai_stream("m", include_usage=False):
            written.append(data)
    finally:
        relay_.close()
    contents = [
        "".join(e["choices"][0]["delta"].get("content", "") for e in client_events(data)
                if isinstance(e, dict))
        for data in written
    ]  # fmt: skip
    assert contents[0] == "a"  # not held back for company
    if interval_ms:
        assert contents[1] == "bcdef"
    else:
        assert contents[1:6] == list("bcdef")


def test_pacing_never_holds_back_the_end_of_a_reply(upstream, settings):
    """The relay waits out its interval after a write — but not once the server has closed
    its end (the reply is complete): here the interval is a minute, the reply ends at once."""
    settings.GATEWAY_STREAM_INTERVAL_MS = 60_000
    written: list[bytes] = []

    def script(connection: socket.socket) -> None:
        connection.sendall(HEAD + upstream_bytes(chunk("a")))
        wait_for(lambda: written, 10, what="the first token out")
        connection.sendall(upstream_bytes(chunk("b", finish="stop"), "data: [DONE]\n\n"))
        connection.shutdown(socket.SHUT_WR)

    server = upstream(script)
    relay_ = direct_relay(server.url)

    def consume() -> None:
        try:
            for data in relay_.openai_stream("m", include_usage=False):
                written.append(data)
        finally:
            relay_.close()

    reader = threading.Thread(target=consume, daemon=True)
    reader.start()
    reader.join(30)  # far less than the interval; a paced end would take 60 s
    assert not reader.is_alive(), "the end of the reply was held back by the interval"
    assert b"[DONE]" in written[-1]


@pytest.mark.parametrize(
    ("base_ms", "max_ms", "streams", "seconds"),
    [
        (10, 50, 0, 0.010),  # counted or not, one stream's interval is the base
        (10, 50, 1, 0.010),
        (10, 50, 2, 0.020),
        (10, 50, 4, 0.040),
        (10, 50, 5, 0.050),
        (10, 50, 16, 0.050),  # never longer than the maximum
        (20, 50, 2, 0.040),
        (100, 50, 3, 0.100),  # a maximum under the base leaves the base
        (0, 50, 16, 0.0),  # 0: no pacing, whatever the number of streams
    ],
)
def test_the_stream_interval_grows_with_the_streams_of_the_process_up_to_its_maximum(
    base_ms, max_ms, streams, seconds
):
    assert relaying.stream_interval(base_ms, max_ms, streams) == pytest.approx(seconds)


def test_a_stream_counts_as_relayed_from_its_start_until_it_is_closed(upstream):
    """The pacing's count of streams: one more while a stream runs, and one less once it is
    closed — whether it ended, or its client left half-way (the generator dropped early)."""
    before = relaying._streams.open
    for leave_early in (False, True):
        server = upstream(writes(HEAD, STREAM))
        relay_ = direct_relay(server.url)
        stream = relay_.openai_stream("m", include_usage=False)
        next(stream)
        assert relaying._streams.open == before + 1
        if not leave_early:
            b"".join(stream)
        assert relaying._streams.open == before + 1  # until closed, ended or not
        stream.close()
        relay_.close()
        relay_.close()  # closing twice counts once
        assert relaying._streams.open == before


@pytest.fixture
def tcp_pair():
    """Two ends of a real loopback TCP connection: (ours, the peer's)."""
    listener = socket.create_server(("127.0.0.1", 0))
    ours = socket.create_connection(listener.getsockname())
    peer, _ = listener.accept()
    listener.close()
    ours.settimeout(5)
    yield ours, peer
    ours.close()
    peer.close()


WAITS = [
    pytest.param(transport.wait_for_close, id="this-platform"),
    # macOS's way (no POLLRDHUP there), run here too
    pytest.param(transport.wait_for_close_by_low_water, id="low-water"),
]


@pytest.mark.parametrize("wait", WAITS)
def test_the_wait_for_a_close_does_not_wake_for_data_and_leaves_it_to_read(tcp_pair, wait):
    ours, peer = tcp_pair
    peer.sendall(b"x" * 100)
    started = time.monotonic()
    wait(ours, 0.3)
    assert time.monotonic() - started >= 0.29  # data arrived, and it waited on
    # Readable at once: a low-water mark left set would make this read wait for 64 KB.
    assert ours.recv(65536) == b"x" * 100


@pytest.mark.parametrize("wait", WAITS)
def test_the_wait_for_a_close_ends_when_the_peer_closes(tcp_pair, wait):
    ours, peer = tcp_pair

    def close_soon() -> None:
        time.sleep(0.1)
        peer.sendall(b"end")
        peer.shutdown(socket.SHUT_WR)

    closer = threading.Thread(target=close_soon, daemon=True)
    closer.start()
    waiter = threading.Thread(target=wait, args=(ours, 60.0), daemon=True)
    waiter.start()
    waiter.join(30)  # far less than the 60-s wait
    assert not waiter.is_alive(), "the wait did not end when the peer closed"
    assert ours.recv(65536) == b"end"
    assert ours.recv(65536) == b""


@pytest.mark.skipif(transport._POLLRDHUP is None, reason="the pause watches the client on Linux")
def test_a_client_leaving_during_a_pause_ends_it_and_the_next_read_says_so(upstream, tcp_pair):
    """Pacing's wait watches the client as a read's wait does: a client that leaves ends the
    pause, and the read after it raises ClientGone though the server's next data is there
    (that read asks no poll() of its own); the upstream connection is then closed."""
    ours, client = tcp_pair
    more, sent = threading.Event(), threading.Event()

    def script(connection: socket.socket) -> None:
        connection.sendall(HEAD + upstream_bytes(chunk("a")))
        more.wait(10)
        connection.sendall(upstream_bytes(chunk("b")))  # there for the next read; no end yet
        sent.set()

    server = upstream(script)
    body = {"model": "default_model", "messages": [{"role": "user", "content": "hi"}]}
    response = transport.send(server.url, "chat/completions", body, "tiny", client_socket=ours)
    reads = response.iter_raw()
    try:
        assert b'"a"' in next(reads)
        more.set()
        assert sent.wait(10)
        client.close()  # the client leaves
        pause = threading.Thread(target=response.stream.pause, args=(60.0,), daemon=True)
        pause.start()
        pause.join(30)  # far less than the 60-s pause
        assert not pause.is_alive(), "the pause did not end when the client left"
        with pytest.raises(transport.ClientGone):
            next(reads)
    finally:
        response.close()
    assert server.peer_closed.wait(10)
