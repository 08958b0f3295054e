"""Structured output (issue 27): decode tokens/s of a schema-constrained reply against the same
number of tokens unconstrained, on one model server, in one run.

    python -m bench.structured [--rounds 5] [--tokens 256] [--concurrency 1,4]

One tiny-model server (bench.harness.nonstop_tiny_model: it never ends a reply on its own)
runs as the portal runs it (servers/supervision/mlx_entry.py, where llguidance masks the
logits at each step). Each request streams `--tokens` tokens (`max_tokens`, finish_reason
"length" for both kinds): unconstrained, or with a `json_schema` response_format whose reply
cannot end earlier (an array of at least 10,000 small objects: an integer with bounds, an
enum, a bounded string), so the grammar is at work on every token. Decode tokens/s of a
reply = (tokens - 1) / (last token - first token); at concurrency c, c such requests run at
once and the figure is the sum over them. Each round runs both kinds, in an order that
alternates; the figure reported is the median over rounds of (constrained / unconstrained)
measured in the same round. Goal: >= 0.9x. A third kind, free text with a `logit_bias` that
changes nothing, shows what any per-request logits processor costs in mlx_lm's batch (it
then slices the batch's logits row by row and keeps a token buffer per row), apart from the
grammar's own work.

The tiny model's forward pass is about a millisecond on a CPU: the grammar's share of a step is
far larger here than with any real model, so this is the worst case of the ratio.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil

from bench.harness import median, median_interval, nonstop_tiny_model, print_machine, verdict

GOAL = 0.9
# Free text; free text with a logits processor that changes nothing (what mlx_lm's batch costs
# for any per-request processor); the schema-constrained reply.
KINDS = ("free", "processor", "constrained")
SCHEMA = {
    "type": "object",
    "properties": {
        "rows": {
            "type": "array",
            "minItems": 10_000,
            "items": {
                "type": "object",
                "properties": {
                    "id": {"type": "integer", "minimum": 0, "maximum": 999},
                    "kind": {"enum": ["cat", "dog", "bird"]},
                    "name": {"type": "string", "maxLength": 6},
                },
                "required": ["id", "kind", "name"],
                "additionalProperties": False,
            },
        }
    },
    "required": ["rows"],
    "additionalProperties": False,
}
FORMAT = {"type": "json_schema", "json_schema": {"name": "rows", "schema": SCHEMA, "strict": True}}


def one_reply(url: str, tokens: int, kind: str) -> tuple[int, float]:
    """Stream one reply: (tokens counted, decode seconds from its first token to its last)."""
    body: dict = {
        "messages": [{"role": "user", "content": "List the animals."}],
        "max_tokens": tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": 0,
    }
    if kind == "constrained":
        body["response_format"] = FORMAT
    elif kind == "processor":
        body["logit_bias"] = {"1": 0.0}  # a logits processor that changes nothing
    first = last = None
    count = 0
    text = ""
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=120) as answer:
        answer.raise_for_status()
        for line in answer.iter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                count = chunk["usage"]["completion_tokens"]
            for choice in chunk.get("choices") or []:
                if piece := (choice.get("delta") or {}).get("content"):
                    now = time.monotonic()
                    first = first or now
                    last = now
                    text += piece
    if kind == "constrained" and not text.startswith('{"rows": [{"id": '):
        raise RuntimeError(f"the constrained reply is not the schema's JSON: {text[:80]!r}")
    if count != tokens:
        raise RuntimeError(f"a reply ended after {count} tokens, not {tokens}")
    return count, (last or 0) - (first or 0)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of the server process so far (all its threads)."""
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def tokens_per_second(url: str, tokens: int, concurrency: int, kind: str) -> float:
    """Summed decode tokens/s of `concurrency` replies streamed at once."""
    results: list[tuple[int, float]] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(one_reply(url, tokens, kind))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return sum((count - 1) / seconds for count, seconds in results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--concurrency", default="1,4")
    args = parser.parse_args()
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    print_machine()
    from tests.support.mlx_server import start_mlx_server, stop_mlx_server

    with tempfile.TemporaryDirectory(prefix="bench-structured-") as tmp:
        cache = Path(tmp) / "hf-cache"
        cache.mkdir()
        server = start_mlx_server(
            nonstop_tiny_model(),
            log_path=Path(tmp) / "server.log",
            env={"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"},
            extra_args=["--decode-concurrency", str(max(concurrencies))],
        )
        try:
            for kind in KINDS:  # warm-up: compile, caches
                one_reply(server.url, 32, kind)
            for concurrency in concurrencies:
                rates: dict[str, list[float]] = {kind: [] for kind in KINDS}
                cpu: dict[str, list[float]] = {kind: [] for kind in KINDS}  # µs per token
                for round_ in range(args.rounds):
                    order = KINDS[round_ % 3 :] + KINDS[: round_ % 3]
                    for kind in order:
                        before = cpu_seconds(server.pid)
                        rate = tokens_per_second(server.url, args.tokens, concurrency, kind)
                        used = cpu_seconds(server.pid) - before
                        rates[kind].append(rate)
                        cpu[kind].append(used * 1e6 / (args.tokens * concurrency))
                free = rates["free"]
                line = [f"c={concurrency}: free {median(free):.0f} tok/s"]
                for kind in ("processor", "constrained"):
                    ratios = [r / f for r, f in zip(rates[kind], free, strict=True)]
                    low, high = median_interval(ratios)
                    line.append(
                        f"{kind} {median(rates[kind]):.0f} tok/s = {median(ratios):.2f}x "
                        f"[{low:.2f}, {high:.2f}]"
                    )
                ratios = [c / p for c, p in zip(rates["constrained"], rates["processor"],
                                                strict=True)]  # fmt: skip
                low, high = median_interval(ratios)
                line.append(f"constrained/processor {median(ratios):.2f}x [{low:.2f}, {high:.2f}]")
                print("; ".join(line) + f" over {args.rounds} rounds")
                low, high = median_interval(
                    [c / f for c, f in zip(rates["constrained"], free, strict=True)]
                )
                print(f"  goal: constrained >= {GOAL}x free: {verdict(low, high, GOAL)}")
                cost = {kind: median(cpu[kind]) for kind in KINDS}
                ratios = [c / f for c, f in zip(cpu["constrained"], cpu["free"], strict=True)]
                low, high = median_interval(ratios)
                print(
                    "  server CPU per token: "
                    + ", ".join(f"{kind} {cost[kind]:.0f} us" for kind in KINDS)
                    + f"; constrained/free {median(ratios):.2f}x [{low:.2f}, {high:.2f}]"
                    f" (<= {1 / GOAL:.2f}x is the goal's equivalent on a CPU-bound host: "
                    f"{verdict(low, high, 1 / GOAL, higher_is_better=False)})"
                )
        finally:
            with contextlib.suppress(Exception):
                stop_mlx_server(server)


if __name__ == "__main__":
    main()
