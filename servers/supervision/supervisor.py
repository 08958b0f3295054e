"""The only code that spawns or signals processes: `mlx_lm.server` children of the workers.

A server is started detached, in a session (and process group) of its own, with stdin closed
and stdout/stderr in its log file, so that it outlives the Celery worker that started it: a
worker restart or crash never takes model servers down with it. Afterwards a server is known by
its pid *and* its process create time, so a pid the OS reused for something else is never
mistaken for it (and never signalled).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from servers.supervision.probes import is_probe_line

# Children this process spawned, so it can reap them (no zombies) and read their exit code.
_children: dict[int, subprocess.Popen] = {}
_children_lock = threading.Lock()
# Exit statuses of reaped children, by pid (kept small: only the latest few matter).
_exit_codes: dict[int, int] = {}
# A dead multi-threaded child can show as a zombie a moment before waitpid() collects it.
REAP_WAIT = 2.0
# psutil.Process objects kept between calls so cpu_percent() measures over the poll interval.
_watched: dict[tuple[int, float], psutil.Process] = {}

CREATE_TIME_TOLERANCE = 0.05  # seconds; psutil rounds create_time differently per platform


@dataclass(frozen=True)
class Spawned:
    pid: int
    create_time: float


@dataclass(frozen=True)
class ProcessStats:
    rss: int  # bytes, the whole process tree
    cpu_percent: float  # the whole tree, since the previous call (100 = one core)
    num_processes: int


def spawn(argv: list[str], log_path: Path, env: dict[str, str], cwd: Path | None = None) -> Spawned:
    """Start `argv` detached (own session, stdin closed, output appended to `log_path`)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
            close_fds=True,
        )
    with _children_lock:
        _children[process.pid] = process
    try:
        create_time = psutil.Process(process.pid).create_time()
    except psutil.NoSuchProcess:
        create_time = 0.0
    return Spawned(pid=process.pid, create_time=create_time)


def _process(pid: int | None, create_time: float | None) -> psutil.Process | None:
    """The live process `pid` if it is the one created at `create_time`, else None."""
    if not pid:
        return None
    reap(pid)
    try:
        proc = psutil.Process(pid)
        if create_time is not None and abs(proc.create_time() - create_time) > (
            CREATE_TIME_TOLERANCE
        ):
            return None
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None
    except psutil.AccessDenied:
        return None


def is_alive(pid: int | None, create_time: float | None) -> bool:
    """True when the process `pid`, created at `create_time`, still runs."""
    return _process(pid, create_time) is not None


def reap(pid: int) -> int | None:
    """Collect the exit status of a child this process spawned; None if unknown or running.

    Negative values are the signal that killed it (as in `Popen.returncode`).
    """
    with _children_lock:
        child = _children.get(pid)
    if child is None:
        return None
    code = child.poll()
    if code is not None:
        with _children_lock:
            _children.pop(pid, None)
            _exit_codes[pid] = code
            while len(_exit_codes) > 256:
                _exit_codes.pop(next(iter(_exit_codes)))
    return code


def exit_code(pid: int | None, wait: float = 0.0) -> int | None:
    """The exit status of a server this process spawned and that has ended, if known.

    `wait` gives a dying child that long to become reapable: a multi-threaded process shows
    as a zombie a moment before its status can be collected.
    """
    if not pid:
        return None
    deadline = time.monotonic() + wait
    while True:
        reap(pid)
        with _children_lock:
            if pid in _exit_codes:
                return _exit_codes[pid]
            if pid not in _children or time.monotonic() >= deadline:
                return None
        time.sleep(0.02)


def describe_exit(code: int | None) -> str:
    """'exited with code 1', 'was killed by SIGKILL', or 'ended (exit status unknown …)'."""
    if code is None:
        return "ended (exit status unknown: another worker process started it)"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"was killed by {name}"
    return f"exited with code {code}"


def group_members(pgid: int) -> list[psutil.Process]:
    """Live, non-zombie processes of process group `pgid`."""
    members = []
    for proc in psutil.process_iter(["pid", "status"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                members.append(proc)
        except (ProcessLookupError, PermissionError, psutil.NoSuchProcess):
            continue
    return members


def terminate(pid: int | None, create_time: float | None, grace: float = 10.0) -> int | None:
    """Stop the server and its whole process group: SIGTERM, then SIGKILL after `grace` s.

    Only signals the group when `pid` is still the process created at `create_time` (its
    group id is its pid: it leads its own session). Also cleans up a group whose leader died
    but whose children linger. Returns the exit status when this process spawned it.
    """
    if not pid:
        return None
    pgid = pid
    leader_ours = is_alive(pid, create_time)
    if not leader_ours:
        # The leader is gone: kill leftovers of its group only if none is older than it (a
        # reused group id would belong to processes created after our server).
        leftovers = group_members(pgid)
        if create_time is not None and all(
            p.create_time() >= create_time - CREATE_TIME_TOLERANCE for p in leftovers
        ):
            for proc in leftovers:
                _signal(proc, signal.SIGKILL)
        return exit_code(pid)
    _killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not is_alive(pid, create_time) and not group_members(pgid):
            return exit_code(pid, wait=REAP_WAIT)
        time.sleep(0.1)
    _killpg(pgid, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and (is_alive(pid, create_time) or group_members(pgid)):
        time.sleep(0.05)
    return exit_code(pid, wait=REAP_WAIT)


def kill(pid: int | None, create_time: float | None) -> None:
    """SIGKILL the server's group at once (a hung server is not asked twice)."""
    terminate(pid, create_time, grace=0.0)


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _signal(proc: psutil.Process, sig: int) -> None:
    with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
        proc.send_signal(sig)


def children_map() -> dict[int, list[int]]:
    """{parent pid: [child pids]} of every process of the machine, read now: one walk of the
    process table for all the servers of a sampling pass (servers/supervision/monitor.py), where
    psutil's children() walks it again for each call."""
    children: dict[int, list[int]] = {}
    for process in psutil.process_iter(["ppid"]):
        children.setdefault(process.info["ppid"], []).append(process.pid)
    return children


def _descendants(pid: int, children: dict[int, list[int]]) -> list[psutil.Process]:
    found: list[psutil.Process] = []
    pending = list(children.get(pid, ()))
    while pending:
        child = pending.pop()
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            found.append(psutil.Process(child))
            pending.extend(children.get(child, ()))
    return found


def stats(
    pid: int | None, create_time: float | None, children: dict[int, list[int]] | None = None
) -> ProcessStats | None:
    """RSS and CPU % of the server's process tree (CPU since the previous call for the same
    process: servers/supervision/monitor.py calls it every few seconds); None when it is not
    running. `children`: a `children_map()` read for several calls (else one is read now)."""
    if not pid:
        return None
    proc = _process(pid, create_time)
    if proc is None:
        return None
    key = (proc.pid, create_time or 0.0)
    proc = _watched.setdefault(key, proc)
    tree = [proc, *_descendants(proc.pid, children if children is not None else children_map())]
    rss = 0
    cpu = 0.0
    for member in tree:
        try:
            watched = _watched.setdefault((member.pid, member.create_time()), member)
            with watched.oneshot():
                rss += watched.memory_info().rss
                cpu += watched.cpu_percent(interval=None)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    if len(_watched) > 512:
        _watched.clear()
    return ProcessStats(rss=rss, cpu_percent=round(cpu, 1), num_processes=len(tree))


# How much further back than `max_bytes` read_log_tail may read when probe lines took the room.
LOG_PROBE_READ_FACTOR = 8


def read_log_tail(path: str | Path, lines: int = 40, max_bytes: int = 64 * 1024) -> str:
    """The last `lines` lines of a server's log file, without the lines of the portal's own
    probes (`probes.is_probe_line`: one every few seconds, 200 in 10 minutes). Reads at most
    `max_bytes` from its end, or up to LOG_PROBE_READ_FACTOR times that while the probes'
    lines leave fewer than `lines`."""
    if not path:
        return ""
    window = max_bytes
    try:
        with open(path, "rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            while True:
                handle.seek(max(0, size - window))
                data = handle.read(window)
                kept = [
                    line
                    for line in data.decode("utf-8", errors="replace").splitlines()
                    if not is_probe_line(line)
                ]
                if (
                    len(kept) > lines
                    or window >= size
                    or window >= max_bytes * LOG_PROBE_READ_FACTOR
                ):
                    break
                window *= 2
    except OSError:
        return ""
    return "\n".join(kept[-lines:])
