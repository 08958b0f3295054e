"""Fair sharing (issue 24): one member (A) floods a model server with parallel streams while a
colleague (B) sends single requests one after another. B's time to first token through the
portal's `/v1` and straight to `mlx_lm.server`, each against B's idle value on the same,
warm target measured in the same run.

    python -m bench.fairness [--rounds 2] [--seconds 8] [--batch 4] [--floods 2,4] [--ramp 2]
                             [--tokens 128] [--b-tokens 128] [--b-think 0.1]
                             [--retry-wait-max 0.5]

One tiny-model server (bench.harness.nonstop_tiny_model) runs as the portal runs it, with
`--decode-concurrency` = `--batch` (the server's batch); its profile has that
`decode_concurrency` and every other field at its default (so fair sharing's admission limit,
reserved slots, queue length and wait are the profile's defaults), except
`prompt_concurrency`, lowered to the batch when larger: mlx_lm's BatchGenerator decodes
max(decode, prompt concurrency) requests at once, so with the default 8 a batch of 4 is 8.
A and B are two approved members (not admins), each with an API key of their own; the direct
target takes no key.

Scenarios, per target: idle (B alone), and floods of `--floods` x the batch: A keeps that many
streamed requests open (threads in a process of their own, so A's client does not hold B's
interpreter), each sending its next request as soon as one ends. A refused request (429, 503,
anything not 200) is counted by status and retried after its `Retry-After`, at most
`--retry-wait-max` seconds: the flood keeps its number of streams. B starts once A's flood has
run `--ramp` seconds and sends one request after another for `--seconds` (a random pause of
up to `--b-think` s between them); A stops after B's last reply. Tokens/s count the tokens each
reply delivered within B's window (spread evenly between a reply's first token and its end;
`usage.completion_tokens`). Every round runs all scenarios of both targets, in an order that
rotates each round; B's TTFT percentiles pool the rounds.
Goal: through the portal, B's TTFT p50 <= 2 x its idle value at floods of 2x and 4x the batch;
direct's is recorded (there B waits behind A's queue).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx

from bench.gateway_stream import MODEL, TOKENS, Target, portal_profile, run
from bench.harness import (
    Bench,
    admin_user,
    cpu_times,
    install_model,
    median,
    nonstop_tiny_model,
    percentile,
    print_machine,
    steal_since,
    table,
    verdict,
)

BATCH = 4  # the server's decode_concurrency: small, so two cores can run 4x its streams
FLOODS = (2, 4)  # A's parallel streams, as multiples of the batch
GOAL_RATIO = 2.0  # B's TTFT p50 through the portal under a flood, x its idle value
REFUSED = (429, 503)  # the statuses fair sharing answers a refused request with
ERROR, STREAM_ERROR = 0, -1  # "statuses" of a connection error and of an error event


@dataclass
class Reply:
    """One request as its client saw it (perf_counter seconds, one clock for all processes)."""

    started: float
    ended: float
    status: int  # HTTP status; ERROR or STREAM_ERROR
    first: float | None = None  # the first content token's arrival
    tokens: int = 0
    retry_after: float | None = None

    @property
    def ttft(self) -> float:
        return (self.first or self.ended) - self.started


def one_request(client: httpx.Client, target: Target, tokens: int) -> Reply:
    """One streamed chat completion; a refusal is returned (its status), not raised."""
    body = {
        "model": target.model,
        "messages": [{"role": "user", "content": "Say hello."}],
        "max_tokens": tokens,
        "temperature": 0.0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    headers = {"Authorization": f"Bearer {target.key}"} if target.key else {}
    started = time.perf_counter()
    try:
        with client.stream(
            "POST", f"{target.url}/chat/completions", json=body, headers=headers
        ) as response:
            if response.status_code != 200:
                response.read()
                return Reply(started, time.perf_counter(), response.status_code,
                             retry_after=_seconds(response.headers.get("Retry-After")))  # fmt: skip
            reply = Reply(started, started, 200)
            chunks = 0
            for line in response.iter_lines():
                if not line.startswith("data:"):
                    continue  # SSE comments (a queued or long prompt's keep-alives)
                payload = line[5:].strip()
                if payload == "[DONE]":
                    break
                data = json.loads(payload)
                if data.get("error"):
                    reply.status = STREAM_ERROR
                    break
                for choice in data.get("choices") or ():
                    if (choice.get("delta") or {}).get("content"):
                        chunks += 1
                        reply.first = reply.first or time.perf_counter()
                if data.get("usage"):
                    reply.tokens = data["usage"].get("completion_tokens") or reply.tokens
    except httpx.HTTPError:
        return Reply(started, time.perf_counter(), ERROR)
    reply.ended = time.perf_counter()
    reply.tokens = reply.tokens or chunks
    if reply.first is None and reply.status == 200:
        reply.status = STREAM_ERROR  # a 200 with no content
    return reply


def _seconds(value: str | None) -> float | None:
    with contextlib.suppress(TypeError, ValueError):
        return max(0.0, float(value))
    return None


def pause_after(reply: Reply, retry_wait_max: float) -> None:
    """A refused or failed request is retried after its Retry-After (at most retry_wait_max
    seconds; 0.1 s when it gave none)."""
    if reply.status != 200:
        wait = reply.retry_after if reply.retry_after is not None else 0.1
        time.sleep(min(wait, retry_wait_max))


def flood(target: Target, streams: int, tokens: int, retry_wait_max: float,
          ready, stop, results) -> None:  # fmt: skip
    """A's flood, in a process of its own: `streams` threads, each sending a streamed request
    as soon as its last one ended, until `stop` is set; then every Reply goes to `results`."""
    replies: list[Reply] = []
    lock = threading.Lock()

    def stream() -> None:
        with httpx.Client(timeout=600) as client:
            while not stop.is_set():
                reply = one_request(client, target, tokens)
                with lock:
                    replies.append(reply)
                pause_after(reply, retry_wait_max)

    threads = [threading.Thread(target=stream) for _ in range(streams)]
    for thread in threads:
        thread.start()
    ready.set()
    for thread in threads:
        thread.join()
    results.put(replies)


@dataclass
class Run:
    target: str
    streams: int  # A's parallel streams; 0 = idle
    start: float  # B's window
    end: float
    b: list[Reply]
    a: list[Reply] = field(default_factory=list)

    def tps(self, replies: list[Reply]) -> float:
        return tokens_within(replies, self.start, self.end) / (self.end - self.start)

    @property
    def ttfts(self) -> list[float]:
        return [reply.ttft for reply in self.b if reply.status == 200]


def tokens_within(replies: list[Reply], start: float, end: float) -> float:
    """The tokens these replies delivered between start and end, each reply's tokens spread
    evenly from its first token to its end."""
    total = 0.0
    for reply in replies:
        if reply.status != 200 or reply.first is None:
            continue
        span = reply.ended - reply.first
        if span <= 0:
            total += reply.tokens if start <= reply.first <= end else 0
            continue
        overlap = min(end, reply.ended) - max(start, reply.first)
        total += reply.tokens * max(0.0, overlap) / span
    return total


def colleague(target: Target, args: argparse.Namespace) -> tuple[list[Reply], float, float]:
    """B: one request after another for `args.seconds`, a random pause of 0 to `args.b_think`
    seconds between them (B's replies as long as A's would otherwise keep B in step with
    A's waves); (replies, window start, window end)."""
    replies = []
    rng = random.Random(0)
    with httpx.Client(timeout=600) as client:
        start = time.perf_counter()
        end = start + args.seconds
        while time.perf_counter() < end:
            replies.append(one_request(client, target, args.b_tokens))
            pause_after(replies[-1], args.retry_wait_max)
            time.sleep(rng.uniform(0, args.b_think))
    return replies, start, end


def scenario(a_target: Target, b_target: Target, streams: int, args: argparse.Namespace) -> Run:
    """B's window, with A flooding `streams` parallel streams (none: idle)."""
    if not streams:
        b, start, end = colleague(b_target, args)
        return Run(b_target.name, 0, start, end, b)
    context = multiprocessing.get_context("spawn")
    ready, stop, results = context.Event(), context.Event(), context.Queue()
    process = context.Process(
        target=flood,
        args=(a_target, streams, args.tokens, args.retry_wait_max, ready, stop, results),
    )
    process.start()
    try:
        if not ready.wait(60):
            raise RuntimeError("A's flood did not start")
        time.sleep(args.ramp)
        b, start, end = colleague(b_target, args)
        stop.set()  # A's streams end their current reply and send no more
        a = results.get(timeout=600)
    finally:
        stop.set()
        process.join(30)
        if process.is_alive():
            process.kill()
    return Run(b_target.name, streams, start, end, b, a)


# --- setting up ------------------------------------------------------------------------------


def member(name: str):
    """An approved member (not an admin), signed up and approved as the portal does it."""
    from accounts import approval
    from accounts.models import User

    admin = admin_user()
    user = User(username=name, email=f"{name}@example.com")
    user.set_unusable_password()
    approval.register(user, by=admin)
    approval.approve([user], by=admin)
    user.refresh_from_db()
    return user


def batch_fields(batch: int) -> dict[str, int]:
    """The profile fields that make the server's batch `batch`: decode_concurrency, and
    prompt_concurrency when its default is larger (mlx_lm decodes max(decode, prompt)
    requests at once)."""
    from servers.models import ServerProfile

    prompt = ServerProfile._meta.get_field("prompt_concurrency").get_default()
    return {"decode_concurrency": batch, "prompt_concurrency": min(prompt, batch)}


def portal_targets(server, batch: int, portal: str) -> tuple[Target, Target]:
    """The profile of `server` with batch_fields(batch) (every other field at its default);
    A's and B's targets through the portal, each with their own key."""
    from accounts.api_keys import create_api_key
    from servers.models import ServerProfile

    slug, _ = portal_profile(server)  # the profile and its running instance (the admin's)
    ServerProfile.objects.filter(slug=slug).update(**batch_fields(batch))
    keys = {name: create_api_key(member(f"member-{name}"), "bench").secret for name in "ab"}
    url = f"{portal}/v1"
    return Target("portal", url, slug, keys["a"]), Target("portal", url, slug, keys["b"])


# --- the bench -------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2, help="rounds of every scenario")
    parser.add_argument("--seconds", type=float, default=8.0, help="B's window per scenario")
    parser.add_argument(
        "--batch", type=_positive, default=BATCH,
        help=f"the server's batch: the profile's decode_concurrency (default {BATCH})",
    )  # fmt: skip
    parser.add_argument(
        "--floods", type=_floods, default=FLOODS, metavar="N[,N...]",
        help="A's parallel streams as multiples of --batch (default 2,4)",
    )  # fmt: skip
    parser.add_argument(
        "--ramp", type=float, default=2.0, help="seconds of A's flood before B starts"
    )
    parser.add_argument(
        "--tokens", type=_positive, default=TOKENS, help="tokens of each of A's replies"
    )
    parser.add_argument(
        "--b-tokens", type=_positive, default=TOKENS, help="tokens of each of B's replies"
    )
    parser.add_argument(
        "--b-think", type=float, default=0.1,
        help="B pauses a random 0 to this many seconds between requests (default 0.1)",
    )  # fmt: skip
    parser.add_argument(
        "--retry-wait-max", type=float, default=0.5,
        help="a refused request is retried after its Retry-After, at most this many seconds",
    )  # fmt: skip
    args = parser.parse_args()
    print_machine()

    with Bench("fairness") as bench:
        bench.setup_django()
        from tests.support.mlx_server import start_mlx_server, stop_mlx_server

        snapshot = install_model(MODEL, nonstop_tiny_model(), bench.hf_cache)
        server = start_mlx_server(
            snapshot,
            log_path=bench.logs / "mlx-server.log",
            env={"HF_HUB_CACHE": str(bench.hf_cache)},
            extra_args=[
                f"--{name.replace('_', '-')}={value}"
                for name, value in batch_fields(args.batch).items()
            ],
        )
        bench.cleanups.append(lambda: stop_mlx_server(server))
        portal = bench.start_web()
        portal_a, portal_b = portal_targets(server, args.batch, portal)
        direct = Target("direct", f"{server.url}/v1", "default_model")
        pairs = [(direct, direct), (portal_a, portal_b)]  # (A's target, B's target)
        print(
            f"server batch: {args.batch} ({batch_fields(args.batch)}); floods: "
            + ", ".join(f"{n * args.batch} streams ({n}x)" for n in args.floods)
            + f"; B's window {args.seconds:g} s after {args.ramp:g} s of flood; "
            f"replies of {args.tokens} (A) and {args.b_tokens} (B) tokens"
        )
        for _, target in pairs:  # warm up: connections, imports, a full batch
            run(target, args.batch, args.batch)

        plan = [(a, b, n * args.batch) for a, b in pairs for n in (0, *args.floods)]
        runs: dict[tuple[str, int], list[Run]] = {}
        started = cpu_times()
        clock = time.perf_counter()
        for index in range(args.rounds):
            order = plan[index % len(plan) :] + plan[: index % len(plan)]
            for a_target, b_target, streams in order:
                result = scenario(a_target, b_target, streams, args)
                runs.setdefault((b_target.name, streams), []).append(result)
                print_run(index, result, args.batch)
        report(runs, [b.name for _, b in pairs], args)
        print(
            f"rounds took {time.perf_counter() - clock:.0f} s; CPU time stolen by the "
            f"hypervisor during the rounds: {steal_since(started)}; load average (1 min) at "
            f"the end: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs"
        )


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: at least 1")
    return value


def _floods(text: str) -> tuple[int, ...]:
    """`--floods`: "2,4" -> (2, 4); whole multiples of the batch, at least 1."""
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: use numbers separated by commas") from None
    if not values or any(value < 1 for value in values):
        raise argparse.ArgumentTypeError(f"{text!r}: each multiple at least 1")
    return values


def label(streams: int, batch: int) -> str:
    return f"flood {streams // batch}x ({streams} streams)" if streams else "idle"


def statuses(replies: list[Reply]) -> Counter:
    """How many replies ended with each status other than 200."""
    return Counter(reply.status for reply in replies if reply.status != 200)


def print_run(index: int, run: Run, batch: int) -> None:
    ttfts = run.ttfts
    refused = statuses(run.a)
    print(
        f"  round {index + 1} {run.target:<6} {label(run.streams, batch):<24} B: {len(ttfts):2} "
        f"replies, TTFT p50 {percentile(ttfts, 50) * 1000:7.1f} ms, p90 "
        f"{percentile(ttfts, 90) * 1000:7.1f} ms, {run.tps(run.b):6.1f} tok/s"
        + (f"; A: {run.tps(run.a):6.1f} tok/s" if run.streams else "")
        + (f", refused {_counts(refused)}" if refused else "")
        + (f"; B refused {_counts(statuses(run.b))}" if statuses(run.b) else "")
    )


def _counts(counter: Counter) -> str:
    names = {ERROR: "connection error", STREAM_ERROR: "error in the stream"}
    return ", ".join(f"{names.get(k, k)} x{v}" for k, v in sorted(counter.items()))


def report(runs: dict[tuple[str, int], list[Run]], targets: list[str],
           args: argparse.Namespace) -> None:  # fmt: skip
    rows = [["target", "scenario", "B replies", "B TTFT p50 ms", "B TTFT p90 ms",
             "x idle (p50)", "rounds' x idle", "A tok/s", "B tok/s", "A refused 429",
             "A refused 503"]]  # fmt: skip
    verdicts, notes = [], []
    for name in targets:
        idle = runs[(name, 0)]
        idle_p50 = percentile([t for run in idle for t in run.ttfts], 50)
        for streams in (0, *(n * args.batch for n in args.floods)):
            group = runs[(name, streams)]
            ttfts = [t for run in group for t in run.ttfts]
            p50 = percentile(ttfts, 50)
            ratios = sorted(
                percentile(run.ttfts, 50) / percentile(base.ttfts, 50)
                for run, base in zip(group, idle, strict=True)
            )
            refused = sum((statuses(run.a) for run in group), Counter())
            rows.append([
                name, label(streams, args.batch), str(len(ttfts)), f"{p50 * 1000:.1f}",
                f"{percentile(ttfts, 90) * 1000:.1f}", f"{p50 / idle_p50:.2f}",
                f"{ratios[0]:.2f}..{ratios[-1]:.2f}" if streams else "",
                f"{median(run.tps(run.a) for run in group):.0f}" if streams else "",
                f"{median(run.tps(run.b) for run in group):.0f}",
                str(refused.get(429, 0)) if streams else "",
                str(refused.get(503, 0)) if streams else "",
            ])  # fmt: skip
            other = Counter({k: v for k, v in refused.items() if k not in REFUSED})
            if other:
                notes.append(f"{name}, {label(streams, args.batch)}: A's other failures "
                             f"{_counts(other)}")  # fmt: skip
            b_refused = sum((statuses(run.b) for run in group), Counter())
            if b_refused:
                notes.append(f"{name}, {label(streams, args.batch)}: B refused or failed "
                             f"{_counts(b_refused)} (not in B's TTFT)")  # fmt: skip
            if streams:
                judged = (
                    verdict(ratios[0], ratios[-1], GOAL_RATIO, higher_is_better=False)
                    if name == "portal"
                    else "recorded"
                )
                verdicts.append(
                    f"{name} at {streams // args.batch}x: {p50 / idle_p50:.2f}x idle "
                    f"({ratios[0]:.2f}..{ratios[-1]:.2f} over the rounds) - {judged}"
                )
    print(
        f"\nB's TTFT over {args.rounds} rounds (percentiles of all of B's replies; \"x idle\": "
        "p50 / the same target's idle p50; \"rounds' x idle\": the lowest and highest of the "
        "rounds' ratios); tokens/s: medians over the rounds, within B's window; refusals: "
        "all rounds:\n"
    )
    print(table(rows))
    print(
        f"\nGoal (through the portal, B's TTFT p50 <= {GOAL_RATIO:g} x idle at every flood; "
        '"met" when every round\'s ratio is, "missed" when none is): ' + "; ".join(verdicts)
    )
    idle = {name: percentile([t for run in runs[(name, 0)] for t in run.ttfts], 50)
            for name in targets}  # fmt: skip
    if {"direct", "portal"} <= idle.keys():
        notes.append(
            f"idle, B's TTFT p50: portal {idle['portal'] * 1000:.1f} ms, direct "
            f"{idle['direct'] * 1000:.1f} ms ({(idle['portal'] - idle['direct']) * 1000:+.1f} "
            "ms through the portal)"
        )
    for note in notes:
        print(f"note: {note}")


if __name__ == "__main__":
    main()
