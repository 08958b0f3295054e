"""Gateway streaming: the same tiny-model mlx_lm.server, direct vs through the portal's `/v1`
(real gunicorn from the Procfile, API key auth, usage recording) vs LiteLLM's proxy.

    python -m bench.gateway_stream [--rounds 3] [--scale 1] [--concurrency 1,4,16,64]
                                   [--no-litellm] [--stock-server] [--keep-cpus-awake]
                                   [--competitor] [--with-limits]

The server is started as the portal starts its servers (servers/supervision/mlx_entry.py),
or as mlx_lm ships it with --stock-server. 128-token streamed chat completions at concurrency 1,
4, 16 and 64. For each concurrency the targets run interleaved, `--rounds` times, in a rotating
order; each figure is the median over the rounds of (target / direct measured in the same round).
Goals (issue 30): portal >= 0.95 x direct tokens/s at every concurrency (also with
--competitor), added TTFT p50 <= 2 ms at c = 1 and <= 10 ms at c = 4 and 16.

The same run measures CPU time, which the machine's load does not change the way it changes
wall time: the web tier's (psutil on gunicorn's processes) and the model server's per token,
and, through the probe gunicorn is started with (bench/web_probe.py), the CPU each /v1
request's thread spent before its first byte. "Relay CPU per token" is the web tier's CPU of
the run less those before-first-byte parts, over the tokens relayed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.harness import (
    CACHE,
    Bench,
    admin_user,
    competitor,
    cpu_times,
    cpus_awake,
    free_port,
    median,
    median_interval,
    percentile,
    print_machine,
    steal_since,
    table,
    verdict,
    wait_for,
)
from bench.web_probe import SENT_HEADER, WALL_MARKS

TOKENS = 128
CONCURRENCY = (1, 4, 16, 64)
REQUESTS = {1: 6, 4: 12, 16: 32, 64: 128}  # per run: a few seconds each at this model's speed
LITELLM_VENV = Path(os.environ.get("BENCH_LITELLM_VENV", CACHE / "litellm-venv"))
LITELLM_KEY = "sk-bench-litellm"
MODEL = "bench/tiny-nonstop"  # the profile's model, laid out in the bench's HF cache


@dataclass
class Target:
    name: str
    url: str  # base URL up to and including /v1
    model: str
    key: str | None = None
    jitter_ms: float = 0.0  # a random pause of 0..jitter_ms before each request (--jitter-ms)


@dataclass
class Cpu:
    """CPU seconds spent during one run."""

    web: float  # gunicorn's processes (master and workers, every thread)
    server: float  # the model server's process
    before_first_byte: list[float]  # each /v1 request's thread, up to its first byte
    requests: float  # each /v1 request's thread, whole requests, summed
    writes: list[int] = field(default_factory=list)  # per request: chunks written to the client
    walls: list[dict[str, float]] = field(default_factory=list)  # per request: WALL_MARKS


@dataclass
class Result:
    tokens: int
    seconds: float
    ttft: list[float]
    errors: int
    cpu: Cpu | None = None

    @property
    def tps(self) -> float:
        return self.tokens / self.seconds

    @property
    def relay_us_per_token(self) -> float:
        """The web tier's CPU per token, less each request's part before its first byte."""
        if self.cpu is None or not self.tokens:
            return float("nan")
        return (self.cpu.web - sum(self.cpu.before_first_byte)) / self.tokens * 1e6

    @property
    def web_us_per_token(self) -> float:
        if self.cpu is None or not self.tokens:
            return float("nan")
        return self.cpu.web / self.tokens * 1e6

    @property
    def server_us_per_token(self) -> float:
        if self.cpu is None or not self.tokens:
            return float("nan")
        return self.cpu.server / self.tokens * 1e6


class CpuMeter:
    """The CPU time of the web tier's processes and the model server's, and the lines the
    gunicorn probe (bench/web_probe.py) wrote, between `start()` and `stop()`."""

    def __init__(self, web_pid: int, server_pid: int, probe_dir: Path, workers: int) -> None:
        import psutil

        web = psutil.Process(web_pid)
        # Every worker, not the first to answer only: one left out, the web figures miss its
        # half of the requests (seen with the floor's gunicorn, quick to boot its first worker).
        wait_for(lambda: len(web.children()) >= workers, 30, "gunicorn's workers")
        self.web = [web, *web.children(recursive=True)]
        self.server = psutil.Process(server_pid)
        self.probe_dir = probe_dir
        self._read: dict[Path, int] = {}
        self._started = (0.0, 0.0)

    @staticmethod
    def _cpu(processes) -> float:
        """CPU seconds of `processes` (every thread, living or ended). On Linux from each
        process's CPU clock (clock_gettime on the pid's clock id, as clock_getcpuclockid(3)
        gives it: nanoseconds); psutil's times come in clock ticks (10 ms: with the ~1,500
        tokens of a c = 1 run, 6.5 us a token, as much as the figures compared)."""
        total = 0.0
        for process in processes:
            try:
                total += time.clock_gettime(((~process.pid) << 3) | 2)  # CPUCLOCK_SCHED
                continue
            except (OSError, OverflowError):
                pass
            with contextlib.suppress(Exception):
                times = process.cpu_times()
                total += times.user + times.system
        return total

    def _probe_lines(self) -> list[tuple[str, float, float, int, dict[str, float]]]:
        lines = []
        for path in sorted(self.probe_dir.glob("*.tsv")):
            with path.open() as file:
                file.seek(self._read.get(path, 0))
                text = file.read()
            complete = text[: text.rfind("\n") + 1]
            self._read[path] = self._read.get(path, 0) + len(complete.encode())
            for line in complete.splitlines():
                name, first, total, writes, *walls = line.split("\t")
                marks = dict(zip(WALL_MARKS, map(float, walls), strict=True))
                lines.append((name, float(first), float(total), int(writes), marks))
        return lines

    def start(self) -> None:
        self._probe_lines()  # what came before is not this run's
        self._started = (self._cpu(self.web), self._cpu([self.server]))

    def stop(self) -> Cpu:
        web, server = self._cpu(self.web), self._cpu([self.server])
        lines = self._probe_lines()
        return Cpu(
            web=web - self._started[0],
            server=server - self._started[1],
            before_first_byte=[first for _, first, *_ in lines],
            requests=sum(total for _, _, total, *_ in lines),
            writes=[writes for *_, writes, _ in lines],
            walls=[walls for *_, walls in lines],
        )


# How a client ends a stream: the `openai` SDK's sync `Stream` (3.54) stops at `[DONE]` and
# closes the response, so over HTTP/1.1 every request opens a new connection (the default here);
# its async client reads the rest of an HTTP/1.1 body first and keeps the connection (--drain).
DRAIN = False


def one_stream(client: httpx.Client, target: Target) -> tuple[int, float]:
    """One streamed reply; returns (completion tokens, TTFT in seconds)."""
    body = {
        "model": target.model,
        "messages": [{"role": "user", "content": "Say hello."}],
        "max_tokens": TOKENS,
        "temperature": 0.0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    headers = {"Authorization": f"Bearer {target.key}"} if target.key else {}
    headers[SENT_HEADER] = f"{time.monotonic():.6f}"  # the probe's first mark (same clock)
    started = time.perf_counter()
    ttft = None
    tokens = chunks = 0
    with client.stream(
        "POST", f"{target.url}/chat/completions", json=body, headers=headers
    ) as response:
        if response.status_code != 200:
            raise RuntimeError(f"{target.name}: HTTP {response.status_code} {response.read()!r}")
        for line in response.iter_lines():
            if not line.startswith("data:"):
                continue
            payload = line[5:].strip()
            if payload == "[DONE]":
                if DRAIN:  # read on to the body's end: the connection stays for the next
                    continue
                break
            data = json.loads(payload)
            for choice in data.get("choices") or ():
                if (choice.get("delta") or {}).get("content"):
                    chunks += 1
                    if ttft is None:
                        ttft = time.perf_counter() - started
            if data.get("usage"):
                tokens = data["usage"].get("completion_tokens") or tokens
    if ttft is None:
        raise RuntimeError(f"{target.name}: no content in the stream")
    return tokens or chunks, ttft


def run(target: Target, concurrency: int, requests: int) -> Result:
    """`requests` streams over `concurrency` threads; aggregate tokens over the wall time."""
    lock = threading.Lock()
    remaining = [requests]
    ttfts: list[float] = []
    totals = [0, 0]  # tokens, errors

    def worker() -> None:
        rng = random.Random()
        with httpx.Client(timeout=120) as client:
            while True:
                with lock:
                    if remaining[0] == 0:
                        return
                    remaining[0] -= 1
                if target.jitter_ms:
                    time.sleep(rng.uniform(0, target.jitter_ms) / 1000)
                try:
                    tokens, ttft = one_stream(client, target)
                except Exception as exc:  # noqa: BLE001 (counted and shown, not fatal)
                    print(f"  ! {exc}")
                    with lock:
                        totals[1] += 1
                    continue
                with lock:
                    totals[0] += tokens
                    ttfts.append(ttft)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return Result(totals[0], time.perf_counter() - started, ttfts, totals[1])


# --- setting up ------------------------------------------------------------------------------


def portal_profile(server) -> tuple[str, str]:
    """A profile whose running instance is `server`; returns (slug, API key secret)."""
    from accounts.api_keys import create_api_key

    user = admin_user()
    profile = _served_profile(server, "Bench tiny", "bench-tiny", server.port, user)
    return profile.slug, create_api_key(user, "bench").secret


def _served_profile(server, name: str, slug: str, port: int, owner):
    """A profile whose instance is the running `server`, as the supervisor records one."""
    import psutil
    from django.utils import timezone

    from models_catalog.models import Host
    from servers.models import ServerInstance, ServerProfile, State

    profile = ServerProfile.objects.create(
        name=name, slug=slug, model_id=MODEL, port=port, owner=owner,
        host=Host.objects.this_machine(), max_tokens=4096,
    )  # fmt: skip
    now = timezone.now()
    ServerInstance.objects.update_or_create(
        profile=profile,
        defaults={"state": State.RUNNING, "desired_state": "running", "port": server.port,
                  "pid": server.pid, "started_at": now, "ready_at": now,
                  "process_create_time": psutil.Process(server.pid).create_time()},
    )  # fmt: skip
    return profile


def limited_profile(server) -> tuple[str, str]:
    """Another profile on `server`, limited to a group, and the key of a member (not an admin)
    of that group with limits none of the runs reaches (docs/sharing.md): the gateway reads the
    member's groups and limits, the profile's group rule, and counts every request in Redis."""
    from django.contrib.auth.models import Group

    from accounts.api_keys import create_api_key
    from accounts.models import Limits, User

    member = User.objects.create_user(
        username="bench-member", email="bench-member@example.com", password=None,
        status="approved",
    )  # fmt: skip
    team = Group.objects.create(name="Bench team")
    Limits.objects.create(
        group=team, requests_per_minute=Limits.MAX_REQUESTS_PER_MINUTE,
        tokens_per_day=Limits.MAX_TOKENS_PER_DAY, concurrent_requests=1000,
    )  # fmt: skip
    member.groups.add(team)
    profile = _served_profile(
        server, "Bench tiny limited", "bench-tiny-limited", server.port + 1, admin_user()
    )
    profile.allowed_groups.add(team)
    return profile.slug, create_api_key(member, "bench").secret


def install_litellm() -> str:
    """Create LiteLLM's own venv and `pip install 'litellm[proxy]'` into it when missing
    (never into the portal's venv); returns why it could not, else ""."""
    exe = LITELLM_VENV / "bin" / "litellm"
    if exe.exists():
        return ""
    print(
        f"LiteLLM is not installed: creating {LITELLM_VENV} and installing 'litellm[proxy]' "
        "into it (once; a few minutes)...",
        flush=True,
    )
    log = CACHE / "litellm-install.log"
    CACHE.mkdir(parents=True, exist_ok=True)
    steps = [
        [sys.executable, "-m", "venv", "--clear", str(LITELLM_VENV)],
        [str(LITELLM_VENV / "bin" / "pip"), "install", "--quiet", "litellm[proxy]"],
    ]
    with log.open("w") as output:
        for step in steps:
            try:
                subprocess.run(step, stdout=output, stderr=subprocess.STDOUT, check=True,
                               timeout=1800)  # fmt: skip
            except (OSError, subprocess.SubprocessError) as exc:
                shutil.rmtree(LITELLM_VENV, ignore_errors=True)  # retried next time
                return f"installing LiteLLM failed ({exc}); see {log}"
    return "" if exe.exists() else f"installing LiteLLM gave no `litellm` command; see {log}"


def start_litellm(bench: Bench, upstream: str) -> tuple[str | None, str]:
    """LiteLLM's proxy (its own venv) as an OpenAI passthrough to `upstream`; (URL, why not)."""
    exe = LITELLM_VENV / "bin" / "litellm"
    if not exe.exists():
        return None, f"LiteLLM is not installed at {LITELLM_VENV}"
    config = bench.root / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        "  - model_name: tiny\n"
        "    litellm_params:\n"
        "      model: openai/default_model\n"
        f"      api_base: {upstream}/v1\n"
        "      api_key: none\n"
        "general_settings:\n"
        f"  master_key: {LITELLM_KEY}\n"
        "litellm_settings:\n"
        "  drop_params: true\n"
        "  telemetry: false\n"
    )
    port = free_port()
    env = {
        **os.environ,
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no fetch from GitHub at start-up
        "LITELLM_TELEMETRY": "False",
        "LITELLM_LOG": "ERROR",
        "DISABLE_SCHEMA_UPDATE": "True",
    }
    env.pop("DATABASE_URL", None)
    proc = bench.spawn(
        "litellm",
        [str(exe), "--config", str(config), "--host", "127.0.0.1", "--port", str(port)],
        env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(
            lambda: httpx.get(f"{url}/health/liveliness", timeout=2).status_code == 200,
            120,
            "LiteLLM",
            proc,
        )
    except (RuntimeError, TimeoutError) as exc:
        return None, f"LiteLLM did not start: {exc}"
    return url, ""


def version_of(python: Path, package: str) -> str:
    with contextlib.suppress(Exception):
        return subprocess.run(
            [str(python), "-c", f"import importlib.metadata as m; print(m.version('{package}'))"],
            capture_output=True, text=True, timeout=60, check=True,
        ).stdout.strip()  # fmt: skip
    return "?"


# --- the bench -------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-litellm", action="store_true")
    parser.add_argument(
        "--jitter-ms",
        type=float,
        default=0.0,
        help="add a 'direct+jitter' target: direct, each request sent after a random 0..N ms "
        "pause (what a proxy's few ms do to the arrival order, with no proxy CPU)",
    )
    parser.add_argument(
        "--stream-intervals",
        type=_intervals,
        default=(),
        metavar="MS[,MS...]",
        help="add a target per value: the portal in its own gunicorn with "
        "MLX_PORTAL_GATEWAY_STREAM_INTERVAL_MS=MS (pacing of API streams), to compare "
        "intervals in one run; 'portal' keeps the settings' value",
    )
    parser.add_argument(
        "--stock-server",
        action="store_true",
        help="run mlx_lm.server as mlx_lm ships it (python -m mlx_lm server), not as the portal "
        "runs it (servers/supervision/mlx_entry.py: new requests join the running batch "
        "every 5 ms)",
    )
    parser.add_argument(
        "--scale", type=int, default=1, help="requests per run x this (longer, steadier runs)"
    )
    parser.add_argument(
        "--concurrency",
        type=_concurrencies,
        default=CONCURRENCY,
        help="which concurrencies to run, comma-separated (default 1,4,16,64): e.g. 1 with "
        "many --rounds, to narrow the interval at one of them",
    )
    parser.add_argument(
        "--keep-cpus-awake",
        action="store_true",
        help="run an idle-class spinner (harness.cpus_awake) during the rounds, so the CPUs do "
        "not go idle between tokens: on a VM slow to wake an idle CPU, this shows how much of "
        "a c = 1 figure is the wake-up (docs/benchmarks.md 1h); it slows c >= 4",
    )
    parser.add_argument(
        "--with-limits",
        action="store_true",
        help="add a 'portal+limits' target: a member (not an admin) of a group with limits "
        "that no run reaches, calling a profile limited to that group: the cost of fair "
        "sharing's checks and counts (docs/sharing.md)",
    )
    parser.add_argument(
        "--competitor",
        action="store_true",
        help="run a fixed CPU load during the rounds: one process pinned to the last CPU "
        "running a pure-Python loop that never sleeps (harness.competitor); every target is "
        "measured beside it",
    )
    parser.add_argument(
        "--floor",
        action="store_true",
        help="add a 'floor' target: bench/floor_relay.py in its own gunicorn (the Procfile's "
        "settings, the same probe), a relay that only passes the model server's bytes on, paced "
        "as the portal paces them: the CPU no change inside the portal can take away",
    )
    parser.add_argument(
        "--floor-asgi",
        action="store_true",
        help="add a 'floor-asgi' target: the floor's relay on gunicorn's ASGI worker (-k asgi: "
        "asyncio, one thread a worker), so the floor of threads and the floor of an event loop "
        "compare in one run (web CPU only: the probe measures threads)",
    )
    parser.add_argument(
        "--drain",
        action="store_true",
        help="clients read each stream to its end after [DONE], as the openai SDK's async "
        "client does over HTTP/1.1, and keep their connection to the portal (the default stops "
        "at [DONE] and closes, as its sync client does: a new connection per request)",
    )
    args = parser.parse_args()
    global DRAIN
    DRAIN = args.drain
    print_machine()
    print(
        "clients: "
        + (
            "read each stream to its end, keeping the connection (--drain)"
            if DRAIN
            else "stop at [DONE] and close (as the openai sync client)"
        )
    )
    # Before anything runs: the first run installs LiteLLM into its own venv (minutes).
    litellm_note = "skipped (--no-litellm)" if args.no_litellm else install_litellm()

    with Bench("gateway") as bench, contextlib.ExitStack() as bench_stack:
        bench.setup_django()
        from bench.harness import install_model, nonstop_tiny_model
        from tests.support.mlx_server import start_mlx_server, stop_mlx_server

        # In the bench's HF cache, as a downloaded model is: the gateway finds it there.
        snapshot = install_model(MODEL, nonstop_tiny_model(), bench.hf_cache)
        server = start_mlx_server(
            snapshot,
            log_path=bench.logs / "mlx-server.log",
            env={"HF_HUB_CACHE": str(bench.hf_cache)},
            stock=args.stock_server,
        )
        bench.cleanups.append(lambda: stop_mlx_server(server))
        slug, key = portal_profile(server)
        probe_dir = bench.root / "web-probe"
        probe_dir.mkdir()
        probed = {"BENCH_WEB_PROBE_DIR": str(probe_dir)}
        portal = bench.start_web(["-c", "python:bench.web_probe"], **probed)
        workers = int(bench.env.get("WEB_WORKERS") or 2)  # the Procfile's default
        meters = {"portal": CpuMeter(bench.procs[-1].pid, server.pid, probe_dir, workers)}
        targets = [
            Target("direct", f"{server.url}/v1", "default_model"),
            Target("portal", f"{portal}/v1", slug, key),
        ]
        if args.floor:
            floor_dir = bench.root / "floor"
            (floor_dir / "web-probe").mkdir(parents=True)
            floor = bench.start_web(
                ["-c", "python:bench.web_probe"],
                app="bench.floor_relay",
                ready_path="/",
                BENCH_WEB_PROBE_DIR=str(floor_dir / "web-probe"),
                BENCH_FLOOR_UPSTREAM=f"127.0.0.1:{server.port}",
                MLX_PORTAL_DATA_DIR=str(floor_dir),  # its own control socket
            )
            meters["floor"] = CpuMeter(
                bench.procs[-1].pid, server.pid, floor_dir / "web-probe", workers
            )
            targets.append(Target("floor", f"{floor}/v1", "default_model"))
        if args.floor_asgi:
            floor_dir = bench.root / "floor-asgi"
            (floor_dir / "web-probe").mkdir(parents=True)  # stays empty: no thread to probe
            url = bench.start_web(
                ["--worker-class", "asgi", "--threads", "1"],
                app="bench.floor_relay:asgi",
                ready_path="/",
                BENCH_FLOOR_UPSTREAM=f"127.0.0.1:{server.port}",
                MLX_PORTAL_DATA_DIR=str(floor_dir),
            )
            meters["floor-asgi"] = CpuMeter(
                bench.procs[-1].pid, server.pid, floor_dir / "web-probe", workers
            )
            targets.append(Target("floor-asgi", f"{url}/v1", "default_model"))
        if args.with_limits:
            limited_slug, limited_key = limited_profile(server)
            targets.append(Target("portal+limits", f"{portal}/v1", limited_slug, limited_key))
        for interval in args.stream_intervals:
            url = bench.start_web(MLX_PORTAL_GATEWAY_STREAM_INTERVAL_MS=str(interval))
            # (not measured: the CPU figures are the first gunicorn's)
            targets.append(Target(f"portal {interval}ms", f"{url}/v1", slug, key))
        if args.jitter_ms:
            targets.append(
                Target("direct+jitter", f"{server.url}/v1", "default_model", None, args.jitter_ms)
            )
        if not litellm_note:
            url, why = start_litellm(bench, server.url)
            if url:
                targets.append(Target("litellm", f"{url}/v1", "tiny", LITELLM_KEY))
                litellm_note = "litellm " + version_of(LITELLM_VENV / "bin" / "python", "litellm")
            else:
                litellm_note = why
        print(f"LiteLLM: {litellm_note}")
        entry = "servers/supervision/mlx_entry.py"
        how = "python -m mlx_lm server (stock)" if args.stock_server else entry
        print(f"mlx_lm.server started as: {how}")

        for target in targets:  # warm up: connections, imports, the model's first batch
            run(target, 4, 4)

        results: dict[tuple[str, int], list[Result]] = {}
        if bench_stack.enter_context(cpus_awake(args.keep_cpus_awake)):
            print("CPUs kept awake during the rounds by an idle-class spinner (--keep-cpus-awake)")
        load = bench_stack.enter_context(competitor(args.competitor))
        if args.competitor:
            print("A competitor occupies one core during the rounds (--competitor, see harness)")
        started = cpu_times()
        for concurrency in args.concurrency:
            for index in range(args.rounds):
                order = targets[index % len(targets) :] + targets[: index % len(targets)]
                for target in order:
                    meter = meters.get(target.name, meters["portal"])
                    meter.start()
                    result = run(target, concurrency, REQUESTS[concurrency] * args.scale)
                    result.cpu = meter.stop()
                    results.setdefault((target.name, concurrency), []).append(result)
                    p50, p99 = percentile(result.ttft, 50), percentile(result.ttft, 99)
                    errors = f"  errors {result.errors}" if result.errors else ""
                    cpu = ""
                    if target.url.startswith(portal + "/") or target.name.startswith("floor"):
                        cpu = (
                            f"  relay {result.relay_us_per_token:5.1f} us/token, before first "
                            f"byte {median(result.cpu.before_first_byte) * 1000:5.2f} ms"
                        )
                    print(
                        f"  c={concurrency:<2} round {index + 1} {target.name:<13} "
                        f"{result.tps:7.1f} tok/s  TTFT p50 {p50 * 1000:6.1f} ms  "
                        f"p99 {p99 * 1000:6.1f} ms{cpu}{errors}",
                        flush=True,
                    )
        bench_stack.close()  # the competitor stops here, and says what it ran
        report(targets, results, args.rounds, args.concurrency)
        cpu_report(targets, results, args.concurrency, portal)
        if args.floor:
            floor_report(results, args.concurrency)
        wall_report(results, args.concurrency)
        if args.competitor:
            print(f"Competitor: {load}")
        print(f"CPU time stolen by the hypervisor during the rounds: {steal_since(started)}")
        from servers.models import UsageRecord

        print(f"usage records written by the portal: {UsageRecord.objects.count()}")


GOAL_RATIO = 0.95  # of direct tokens/s, at every concurrency
GOAL_ADDED_TTFT_MS = {1: 2.0, 4: 10.0, 16: 10.0}  # added TTFT p50, by concurrency (issue 30)


def _concurrencies(text: str) -> tuple[int, ...]:
    """`--concurrency`: "1,4,16" -> (1, 4, 16); each one of CONCURRENCY (REQUESTS has its
    number of requests)."""
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: use numbers separated by commas") from None
    unknown = [value for value in values if value not in REQUESTS]
    if unknown or not values:
        raise argparse.ArgumentTypeError(f"{text!r}: pick from {', '.join(map(str, REQUESTS))}")
    return values


def _intervals(text: str) -> tuple[int, ...]:
    """`--stream-intervals`: "20,40" -> (20, 40); whole milliseconds the setting accepts."""
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: use whole milliseconds separated by commas"
        ) from None
    if not values or any(not 0 <= value <= 1000 for value in values):
        raise argparse.ArgumentTypeError(f"{text!r}: each interval from 0 to 1000 ms")
    return values


def report(
    targets: list[Target], results: dict, rounds: int, concurrencies: tuple[int, ...]
) -> None:
    rows = [["concurrency", "target", "tokens/s", "x direct", "rounds' x direct",
             "95% CI of x direct", "TTFT p50 ms", "TTFT p99 ms", "added TTFT p50 ms",
             "95% CI of added"]]  # fmt: skip
    verdicts = []
    for concurrency in concurrencies:
        direct = results[("direct", concurrency)]
        for target in targets:
            runs = results[(target.name, concurrency)]
            ratios = sorted(r.tps / d.tps for r, d in zip(runs, direct, strict=True))
            added_ms = [
                (percentile(r.ttft, 50) - percentile(d.ttft, 50)) * 1000
                for r, d in zip(runs, direct, strict=True)
            ]
            ratio_ci, added_ci = median_interval(ratios), median_interval(added_ms)
            own = target.name == "direct"
            rows.append([
                str(concurrency), target.name, f"{median(r.tps for r in runs):.0f}",
                f"{median(ratios):.3f}",
                "" if own else f"{ratios[0]:.2f}..{ratios[-1]:.2f}",
                "" if own else f"{ratio_ci[0]:.3f}..{ratio_ci[1]:.3f}",
                f"{median(percentile(r.ttft, 50) for r in runs) * 1000:.1f}",
                f"{median(percentile(r.ttft, 99) for r in runs) * 1000:.1f}",
                "" if own else f"{median(added_ms):+.1f}",
                "" if own else f"{added_ci[0]:+.1f}..{added_ci[1]:+.1f}",
            ])  # fmt: skip
            if target.name == "portal":
                goal_ms = GOAL_ADDED_TTFT_MS.get(concurrency)
                verdicts.append(
                    f"c = {concurrency}: tokens/s {verdict(*ratio_ci, GOAL_RATIO)}"
                    + (
                        f", added TTFT {verdict(*added_ci, goal_ms, False)}"
                        if goal_ms is not None
                        else ""
                    )
                )
    print(
        f"\nMedians over {rounds} interleaved rounds ({TOKENS}-token streamed replies); "
        "\"rounds' x direct\" is the lowest and highest of the rounds' ratios; the 95 % "
        "intervals of the medians are bootstrapped from the rounds:\n"
    )
    print(table(rows))
    ttft_goals = ", ".join(f"<= {ms:g} ms at c = {c}" for c, ms in GOAL_ADDED_TTFT_MS.items())
    print(
        f"\nGoal (>= {GOAL_RATIO:g} x direct tokens/s at every c; added TTFT p50 {ttft_goals}), "
        'judged on the 95 % intervals ("within noise": the interval spans the goal; more '
        "rounds would tell): " + "; ".join(verdicts)
    )


def cpu_report(
    targets: list[Target], results: dict, concurrencies: tuple[int, ...], portal: str
) -> None:
    """CPU per token and before the first byte, medians over the rounds (same runs as above)."""
    rows = [["concurrency", "target", "model server CPU us/token", "web CPU us/token",
             "relay CPU us/token", "CPU before first byte ms (p50)", "(p90)",
             "writes a reply (p50)"]]  # fmt: skip
    for concurrency in concurrencies:
        for target in targets:
            runs = results[(target.name, concurrency)]
            server = f"{median(r.server_us_per_token for r in runs):.0f}"
            if not target.url.startswith(portal + "/") and not target.name.startswith("floor"):
                rows.append([str(concurrency), target.name, server, "", "", "", "", ""])
                continue
            firsts = [f for r in runs for f in r.cpu.before_first_byte]
            rows.append([
                str(concurrency), target.name, server,
                f"{median(r.web_us_per_token for r in runs):.1f}",
                f"{median(r.relay_us_per_token for r in runs):.1f}",
                f"{percentile(firsts, 50) * 1000:.2f}", f"{percentile(firsts, 90) * 1000:.2f}",
                f"{percentile([w for r in runs for w in r.cpu.writes], 50):.0f}",
            ])  # fmt: skip
    print(
        "\nCPU time, the same runs (medians over the rounds). Web CPU = gunicorn's processes "
        "(every thread) over the run / tokens; relay = the same less each request's CPU before "
        "its first byte; before first byte = the request's own thread, from taking the request "
        "to its first body chunk written (bench/web_probe.py):\n"
    )
    print(table(rows))


def floor_report(results: dict, concurrencies: tuple[int, ...]) -> None:
    """The portal's CPU figures over the floor's (bench/floor_relay.py), in the same runs: the
    part of each that is the portal's own work."""
    rows = [["concurrency", "CPU before first byte: portal / floor ms (p50)", "x floor",
             "relay us/token: portal / floor", "x floor", "web us/token: portal / floor",
             "x floor"]]  # fmt: skip
    for concurrency in concurrencies:
        portal, floor = results[("portal", concurrency)], results[("floor", concurrency)]
        row = [str(concurrency)]
        for figure in (
            lambda runs: percentile([f for r in runs for f in r.cpu.before_first_byte], 50) * 1e3,
            lambda runs: median(r.relay_us_per_token for r in runs),
            lambda runs: median(r.web_us_per_token for r in runs),
        ):
            mine, least = figure(portal), figure(floor)
            row += [f"{mine:.2f} / {least:.2f}", f"{mine / least:.2f}"]
        rows.append(row)
    print(
        "\nThe portal against the floor (the same streams through bench/floor_relay.py: gunicorn "
        "and a paced byte relay, nothing else), medians over the same rounds:\n"
    )
    print(table(rows))


# Where a streamed reply's first token spends its time through the portal: the steps between
# two of the probe's marks (bench/web_probe.py WALL_MARKS), as the report names them.
WALL_STEPS = (
    ("client's connection + request", "sent", "queued"),
    ("to a gunicorn thread", "queued", "taken"),
    ("request read by gunicorn", "taken", "app"),
    ("portal's checks (Django, key, admission)", "app", "upstream_sent"),
    ("model server: connect to head", "upstream_sent", "upstream_head"),
    ("model server: head to first token", "upstream_head", "token"),
    ("first token written", "token", "token_written"),
)


def wall_report(results: dict, concurrencies: tuple[int, ...]) -> None:
    """The portal's requests, step by step (wall time, p50 and p90 of every request of the
    rounds), beside direct's TTFT p50: what the portal adds is its own steps (a thread, the
    request read, the checks, the write) plus a second connection's set-up; the model server's
    steps are what direct's TTFT is mostly made of too."""
    rows = [["step (portal, wall ms)", *(f"c = {c} p50 / p90" for c in concurrencies)]]
    for label, start, end in WALL_STEPS:
        row = [label]
        for concurrency in concurrencies:
            spans = [
                (walls[end] - walls[start]) * 1000
                for run in results[("portal", concurrency)]
                for walls in run.cpu.walls
                if walls[end] == walls[end] and walls[start] == walls[start]  # not nan
            ]
            row.append(
                f"{percentile(spans, 50):.2f} / {percentile(spans, 90):.2f}" if spans else "-"
            )
        rows.append(row)
    rows.append(["direct's TTFT (the client's)", *(
        f"{median(percentile(r.ttft, 50) for r in results[('direct', c)]) * 1000:.2f}"
        for c in concurrencies
    )])  # fmt: skip
    print(
        "\nWhere the portal's first token waits (wall time between the probe's marks, every "
        "request of the rounds; a step's p50s do not add up to the TTFT's). The client's send "
        "is its X-Bench-Sent header; a kept connection (--drain) is handed to a thread when its "
        "next request arrives:\n"
    )
    print(table(rows))


if __name__ == "__main__":
    main()
