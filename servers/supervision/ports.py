"""Port allocation for model servers: the one place that decides which port a server gets."""

from __future__ import annotations

import errno
import socket

import psutil
from django.conf import settings

LOOPBACK = "127.0.0.1"


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    """True when a server could listen on `host:port` right now.

    Binds with SO_REUSEADDR, as mlx_lm.server's HTTPServer does, so a socket lingering in
    TIME_WAIT does not count as busy but any listener (on 127.0.0.1 or 0.0.0.0) does.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def port_holder(port: int) -> str | None:
    """A description of the process listening on `port` ("python3 (pid 123)"), if findable.

    Needs permission to read other processes' sockets; returns None when it has not.
    """
    try:
        connections = psutil.net_connections(kind="tcp")
    except (psutil.AccessDenied, PermissionError, OSError):
        return None
    for conn in connections:
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
            if conn.pid is None:
                return None
            try:
                name = psutil.Process(conn.pid).name()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                name = "a process"
            return f"{name} (pid {conn.pid})"
    return None


def port_range() -> range:
    low, high = settings.SERVER_PORT_RANGE
    return range(low, high + 1)


def suggest_port(taken: set[int] | frozenset[int] = frozenset(), check_os: bool = True) -> int:
    """The lowest port in SERVER_PORT_RANGE that no profile uses and (if asked) the OS has free.

    `taken` is the set of ports profiles on the host already claim.
    """
    for port in port_range():
        if port in taken:
            continue
        if check_os and not port_is_free(port):
            continue
        return port
    low, high = settings.SERVER_PORT_RANGE
    raise LookupError(f"No free port left between {low} and {high}; widen SERVER_PORT_RANGE.")
