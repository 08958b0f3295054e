"""Status polling: the Servers page's tiles partial (what every open Servers page fetches every
2 s), through real gunicorn started from the Procfile, logged in with a session cookie.

    python -m bench.status_poll [--seconds 8] [--rounds 3] [--busy 20] [--client loadtest|python]

20 profiles on 2 hosts, 8 of them running: 6 on this host, each pointing at a live process
that the bench started (a `sleep`, so psutil measures a real process tree), and 2 on the
second host (rows only: no worker of that host runs here to measure them); 2 failed with a log
tail, 10 stopped; 2,000 usage records in the last hour for the tiles' speed figures (`--busy
20`: 68,000, and 20 more each second during the load, as a gateway answering 20 requests/s
writes them). The Procfile's worker runs too, as under `make run`: it measures the 6 local
servers every 2 s (servers/supervision/monitor.py) and writes their rows during the load.

Baseline, same gunicorn, same run: a small static file (WhiteNoise), the floor of one request
through the web tier. Two loads, interleaved baseline/tiles, `--rounds` times:
100 requests/s open-loop, and saturation with wrk (2 threads, 8 connections).
Goal: tiles p99 < 50 ms at 100 requests/s on 2 cores.

The 100 requests/s load comes from loadtest (npm; `bench/open_loop.mjs`) in its own Node
process: one timer sends a request every 10 ms whether or not the earlier ones have answered,
on keep-alive connections. The bench installs it once into ~/.cache/mlx-portal-bench/ (never
into the portal). `--client python` is the bench's earlier client instead: 16 threads in this
process, latency counted from each request's scheduled time. It measured its own pauses too
(docs/benchmarks.md §2), so the goal is judged on loadtest.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import queue
import re
import shutil
import subprocess
import threading
import time
from datetime import timedelta
from pathlib import Path

import httpx

from bench.harness import (
    CACHE,
    Bench,
    admin_user,
    login_cookie,
    median,
    percentile,
    print_machine,
    table,
    wait_for,
)

RATE = 100  # requests per second
THREADS = 16  # client threads of the Python open-loop load (`--client python`)
LOADTEST = "loadtest@8.2.1"  # npm: the open-loop load generator, pinned
LOADTEST_DIR = Path(os.environ.get("BENCH_LOADTEST_DIR", CACHE / "loadtest-8.2.1"))
OPEN_LOOP_SCRIPT = Path(__file__).with_name("open_loop.mjs")


def setup_rows(bench: Bench, usage_records: int = 2000) -> None:
    import psutil
    from django.utils import timezone

    from models_catalog.models import Host
    from servers.models import ServerInstance, ServerProfile, State, UsageRecord

    user = admin_user()
    local = Host.objects.this_machine()
    remote, _ = Host.objects.get_or_create(
        name="studio-2",
        defaults={"platform": "darwin", "memory_total": 192 * 2**30, "memory_available": 2**37,
                  "last_heartbeat": timezone.now()},
    )  # fmt: skip
    now = timezone.now()
    profiles = []
    for index in range(20):
        host = local if index < 10 else remote
        profile = ServerProfile.objects.create(
            name=f"Server {index:02d}", slug=f"server-{index:02d}", owner=user, host=host,
            model_id=f"mlx-community/Model-{index % 7}B-4bit", port=8100 + index % 10,
            description="A profile of the status-polling bench.",
        )  # fmt: skip
        profiles.append(profile)
        fields: dict = {"state": State.STOPPED}
        if index < 6 or index in (10, 11):  # 6 running here, 2 on the other host
            fields = {"state": State.RUNNING, "desired_state": "running",
                      "port": profile.port, "started_at": now - timedelta(hours=1),
                      "ready_at": now - timedelta(minutes=59)}  # fmt: skip
            if host == local:
                proc = bench.spawn(f"live-{index}", ["sleep", "600"])
                fields["pid"] = proc.pid
                fields["process_create_time"] = psutil.Process(proc.pid).create_time()
            else:
                fields["pid"] = 40000 + index
        elif index in (6, 12):
            tail = "Traceback (most recent call last):\n" * 20
            fields = {"state": State.FAILED, "reason": "The process exited with code 1",
                      "exit_code": 1, "log_tail": tail}  # fmt: skip
        ServerInstance.objects.update_or_create(profile=profile, defaults=fields)
    records = []
    running = [p for i, p in enumerate(profiles) if i < 6 or i in (10, 11)]
    spacing = 3400 / usage_records  # seconds: the records spread over the last ~57 minutes
    for n in range(usage_records):
        start = now - timedelta(seconds=n * spacing)
        records.append(usage_record(user, running[n % len(running)], start))
    UsageRecord.objects.bulk_create(records, batch_size=2000)


def usage_record(user, profile, start):
    """One finished API request's record, as the gateway writes it."""
    from servers.models import UsageRecord

    return UsageRecord(
        user=user, profile=profile, profile_name=profile.name, host_id=profile.host_id,
        source="api", endpoint="chat/completions", stream=True, prompt_tokens=40,
        completion_tokens=128, ttft_ms=30.0, generation_ms=900.0, duration_ms=930.0,
        status="ok", status_code=200, started_at=start, finished_at=start,
    )  # fmt: skip


class RecordWriter(threading.Thread):
    """Adds usage records at `rate` per second, as a busy gateway does, until `stop()`."""

    def __init__(self, rate: float) -> None:
        super().__init__(daemon=True)
        self.rate = rate
        self.written = 0
        self._stop = threading.Event()

    def run(self) -> None:
        from django.db import connection
        from django.utils import timezone

        from bench.harness import admin_user
        from servers.models import ServerProfile, State

        user = admin_user()
        running = list(ServerProfile.objects.filter(instance__state=State.RUNNING))
        while not self._stop.wait(1 / self.rate):
            usage_record(user, running[self.written % len(running)], timezone.now()).save()
            self.written += 1
        connection.close()

    def stop(self) -> None:
        self._stop.set()
        self.join()


def open_loop(url: str, headers: dict[str, str], rate: float, seconds: float) -> dict:
    """`rate` requests/s for `seconds`; latency from each request's scheduled time."""
    schedule: queue.Queue[float | None] = queue.Queue()
    start = time.perf_counter() + 0.2
    total = int(rate * seconds)
    for n in range(total):
        schedule.put(start + n / rate)
    latencies: list[float] = []
    errors = [0]
    dropped = [0]
    lock = threading.Lock()
    cutoff = start + seconds + 5  # a server that cannot keep up: stop sending, count the rest

    def worker() -> None:
        with httpx.Client(headers=headers, timeout=30) as client:
            while True:
                try:
                    due = schedule.get_nowait()
                except queue.Empty:
                    return
                if time.perf_counter() > cutoff:
                    with lock:
                        dropped[0] += 1
                    continue
                delay = due - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                try:
                    ok = client.get(url).status_code == 200
                except httpx.HTTPError:
                    ok = False
                done = time.perf_counter()
                with lock:
                    latencies.append(done - due)
                    errors[0] += not ok

    threads = [threading.Thread(target=worker) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    return {
        "rps": len(latencies) / elapsed,
        "p50": percentile(latencies, 50) * 1000,
        "p99": percentile(latencies, 99) * 1000,
        "errors": errors[0] + dropped[0],
        "dropped": dropped[0],
    }


def ensure_loadtest() -> str:
    """Install loadtest into its own directory under the bench cache when missing (never into
    the portal); returns why it could not, else ""."""
    if (LOADTEST_DIR / "node_modules" / "loadtest" / "index.js").exists():
        return ""
    if not (shutil.which("node") and shutil.which("npm")):
        return "the 100 requests/s load needs Node.js and npm (or use --client python)"
    print(f"installing {LOADTEST} into {LOADTEST_DIR} (once)...", flush=True)
    LOADTEST_DIR.mkdir(parents=True, exist_ok=True)
    step = ["npm", "install", "--prefix", str(LOADTEST_DIR), "--no-audit", "--no-fund",
            "--ignore-scripts", LOADTEST]  # fmt: skip
    done = subprocess.run(step, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        return f"npm install {LOADTEST} failed: {done.stderr.strip()[-500:]}"
    return ""


def node_open_loop(url: str, headers: dict[str, str], rate: float, seconds: float) -> dict:
    """`rate` requests/s for `seconds` from loadtest in its own Node process (open_loop.mjs).

    loadtest counts whole milliseconds, rounded down: each latency gets 1 ms added, so the
    figures are upper bounds, within 1 ms. `lag p99` is how late the client sent its requests
    against a steady schedule (latency is counted from the send)."""
    args = ["node", str(OPEN_LOOP_SCRIPT), str(LOADTEST_DIR), url, str(rate), str(seconds),
            json.dumps(headers)]  # fmt: skip
    done = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 60, check=True)
    out = json.loads(done.stdout)
    latencies = [(ms + 1) / 1000 for ms in out["latencies"]]
    lags = send_lags(out["sent"], rate) or [0.0]
    return {
        "rps": len(latencies) / out["elapsed"],
        "p50": percentile(latencies, 50) * 1000,
        "p99": percentile(latencies, 99) * 1000,
        "errors": out["errors"],
        "lag_p99": percentile(lags, 99),
    }


def send_lags(sent_ms: list[float], rate: float) -> list[float]:
    """How late each send was (ms) against a steady schedule of `rate` a second. loadtest's
    timer keeps its own schedule, catching up when late, from an origin it does not report:
    the origin taken is the earliest that no send was ahead of, so a late first send does
    not make every other send look early."""
    period = 1000 / rate
    origin = min((at - n * period for n, at in enumerate(sent_ms)), default=0.0)
    return [at - (origin + n * period) for n, at in enumerate(sent_ms)]


def wrk(url: str, headers: dict[str, str], seconds: float) -> dict:
    args = ["wrk", "-t2", "-c8", f"-d{seconds:g}s", "--latency", "--timeout", "10s"]
    for name, value in headers.items():
        args += ["-H", f"{name}: {value}"]
    out = subprocess.run([*args, url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    latency = dict(re.findall(r"^\s+(50|99)%\s+([\d.]+\w+)", out, re.M))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "p50": _ms(latency["50"]), "p99": _ms(latency["99"]),
            "errors": int(non2xx.group(1)) if non2xx else 0}  # fmt: skip


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(\w+)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--busy",
        type=float,
        default=0,
        metavar="RATE",
        help="a busy gateway: the last hour holds RATE x 3,600 usage records instead of 2,000, "
        "and RATE more are added each second during the load",
    )
    parser.add_argument(
        "--client",
        choices=("loadtest", "python"),
        default="loadtest",
        help="the 100 requests/s load: loadtest in a Node process (default), or the bench's "
        "own 16 Python threads",
    )
    args = parser.parse_args()
    print_machine()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is needed for the saturation run: apt-get install wrk")
    steady = open_loop
    if args.client == "loadtest":
        if why := ensure_loadtest():
            raise SystemExit(why)
        steady = node_open_loop
    print(f"100 requests/s load: {args.client}")

    with Bench("status") as bench:
        bench.setup_django()
        setup_rows(bench, int(args.busy * 3400) if args.busy else 2000)
        # As `make run`: the worker's threads keep the host online and measure its servers
        # every 2 s (servers/supervision/monitor.py), writing the rows the tiles read, during
        # the load.
        bench.start_worker()
        base = bench.start_web()
        cookie = login_cookie(base)
        tiles = (f"{base}/servers/", {"Cookie": cookie, "HX-Request": "true"})
        static_path = _static_path()
        floor = (f"{base}{static_path}", {"Cookie": cookie})
        check = httpx.get(tiles[0], headers=tiles[1])
        assert check.status_code == 200 and 'id="server-server-00"' in check.text, check.text[:300]
        running = check.text.count("badge-running") or check.text.count(">running<")

        def measured() -> int:
            return httpx.get(tiles[0], headers=tiles[1]).text.count('data-testid="rss"')

        wait_for(lambda: measured() >= 6, 30, "the worker's figures of the 6 local servers")
        print(
            f"tiles partial: {len(check.content)} bytes, {running} 'running' badges, "
            f"{measured()} with memory figures"
        )
        for target in (floor, tiles):  # warm up
            steady(target[0], target[1], 50, 2)
        # The load generator's own pauses must not count: this process holds Django and the
        # rows it made, and a full garbage-collector pass over them (~70 ms) would stall every
        # request in flight. Frozen, as the web tier's objects are (config/wsgi.py).
        gc.collect()
        gc.freeze()

        writer = None
        if args.busy:
            writer = RecordWriter(args.busy)
            writer.start()
        results: dict[tuple[str, str], list[dict]] = {}
        for index in range(args.rounds):
            for load in ("100/s", "saturation"):
                order = [("static", floor), ("tiles", tiles)]
                for name, (url, headers) in order if index % 2 == 0 else order[::-1]:
                    if load == "100/s":
                        result = steady(url, headers, RATE, args.seconds)
                    else:
                        result = wrk(url, headers, args.seconds / 2)
                    results.setdefault((name, load), []).append(result)
                    print(
                        f"  round {index + 1} {load:<10} {name:<6} {result['rps']:7.1f} req/s  "
                        f"p50 {result['p50']:6.1f} ms  p99 {result['p99']:6.1f} ms"
                        + (f"  errors {result['errors']}" if result["errors"] else "")
                        + (f" (not sent: {result['dropped']})" if result.get("dropped") else "")
                        + (
                            f"  send lag p99 {result['lag_p99']:.1f} ms"
                            if "lag_p99" in result
                            else ""
                        )
                    )
        if writer:
            writer.stop()
            print(f"usage records added during the load: {writer.written}")
        rows = [["load", "target", "req/s", "p50 ms", "p99 ms", "req/s x static",
                 "p99 x static"]]  # fmt: skip
        for load in ("100/s", "saturation"):
            for name in ("static", "tiles"):
                runs, floor_runs = results[(name, load)], results[("static", load)]
                pairs = list(zip(runs, floor_runs, strict=True))
                rows.append([
                    load, name, f"{median(r['rps'] for r in runs):.0f}",
                    f"{median(r['p50'] for r in runs):.1f}",
                    f"{median(r['p99'] for r in runs):.1f}",
                    f"{median(r['rps'] / f['rps'] for r, f in pairs):.2f}",
                    f"{median(r['p99'] / f['p99'] for r, f in pairs):.2f}",
                ])  # fmt: skip
        print(f"\nMedians over {args.rounds} interleaved rounds:\n")
        print(table(rows))


def _static_path() -> str:
    from django.templatetags.static import static

    return static("css/portal.css")


if __name__ == "__main__":
    main()
