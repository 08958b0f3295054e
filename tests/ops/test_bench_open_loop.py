"""The status-poll bench's 100 requests/s load (loadtest in a Node process, bench/open_loop.mjs)
is open-loop: it keeps sending on schedule while earlier requests are still unanswered, carries
the session's headers, counts each latency from the send, and counts errors."""

import shutil
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bench.status_poll import ensure_loadtest, node_open_loop

pytestmark = pytest.mark.skipif(
    not (shutil.which("node") and shutil.which("npm")), reason="Node.js and npm are not installed"
)

SLOW = 0.3  # seconds each answer of the slow path takes


@pytest.fixture(scope="module")
def loadtest():
    if why := ensure_loadtest():
        pytest.fail(why)


@pytest.fixture
def server():
    arrivals: list[tuple[float, str, dict[str, str]]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            arrivals.append(
                (time.monotonic(), self.path, {k.lower(): v for k, v in self.headers.items()})
            )
            if self.path == "/slow":
                time.sleep(SLOW)
            status = 500 if self.path == "/fail" else 200
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", arrivals
    httpd.shutdown()
    httpd.server_close()


def test_it_keeps_sending_while_slow_answers_are_outstanding(loadtest, server):
    base, arrivals = server
    headers = {"Cookie": "sessionid=abc", "HX-Request": "true"}
    result = node_open_loop(f"{base}/slow", headers, rate=20, seconds=1.5)

    # 30 sends are scheduled over 1.5 s. A client that waited for each 0.3 s answer on one
    # connection would send 5; this one sends on schedule, so most arrive.
    assert len(arrivals) >= 20
    times = [at for at, _, _ in arrivals]
    assert times[-1] - times[0] >= 0.8  # spread over the run, not one burst
    assert all(sent["cookie"] == "sessionid=abc" for _, _, sent in arrivals)
    assert all(sent["hx-request"] == "true" for _, _, sent in arrivals)
    # Latency is counted from the send, so it holds the server's 0.3 s.
    assert result["p50"] >= SLOW * 1000
    assert result["errors"] == 0
    assert result["rps"] > 0
    assert "lag_p99" in result


def test_error_answers_are_counted(loadtest, server):
    base, arrivals = server
    result = node_open_loop(f"{base}/fail", {}, rate=20, seconds=1)
    assert len(arrivals) >= 10
    assert result["errors"] >= 10
