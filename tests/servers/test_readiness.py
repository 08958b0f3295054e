"""Waiting for a starting server's port: connection attempts until it accepts, then the probe.

The probe itself (a real one-token completion from a real mlx_lm.server) is covered by
test_supervisor.py; here a real socket stands for the port, bound but not yet listening (so
connections are refused) until the test makes it listen.
"""

from __future__ import annotations

import socket

from servers.supervision import probes


def test_the_port_is_noticed_when_it_accepts_after_refused_attempts():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
        port = server.getsockname()[1]
        refusals = []

        def keep_waiting() -> bool:
            refusals.append(1)
            if len(refusals) == 3:
                server.listen()  # the "model server" opens its port now
            return True

        accepted = probes.wait_for_port(
            f"http://127.0.0.1:{port}", timeout=30, interval=0.001, keep_waiting=keep_waiting
        )
    assert accepted
    assert len(refusals) == 3  # asked after each refusal, and not once more after it accepted


def test_waiting_stops_when_the_server_is_gone():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        port = server.getsockname()[1]
        asked = []

        def keep_waiting() -> bool:
            asked.append(1)
            return False  # e.g. the process died while starting

        accepted = probes.wait_for_port(
            f"http://127.0.0.1:{port}", timeout=30, keep_waiting=keep_waiting
        )
    assert not accepted
    assert len(asked) == 1


def test_a_port_that_keeps_refusing_times_out():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        port = server.getsockname()[1]
        assert not probes.wait_for_port(f"http://127.0.0.1:{port}", timeout=0.05)
