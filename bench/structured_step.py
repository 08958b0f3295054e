"""Structured output (issue 27), in process: what one decode step of mlx_lm's continuous batch
costs with grammar-constrained rows, the way mlx_lm masks them and the way the portal's entry
point does, against free rows in the same run.

    python -m bench.structured_step [--rounds 30] [--steps 50] [--concurrency 1,4] [--kinds …]

No server, no HTTP: mlx_lm's own BatchGenerator on the bench's tiny model (the one
bench.structured serves), c rows of one kind per batch, one batch per kind kept generating
side by side; a round times `--steps` decode steps of each batch, in an order that turns
round by round, so a shared host's swings fall on every kind alike. Kinds:

- free: no logits processor;
- processor: a `logit_bias` that changes nothing (mlx_lm's per-row processor path alone);
- per-row: bench.structured's schema, each row's GrammarProcessor called by mlx_lm as an
  ordinary logits processor (the path before `batch_grammars`, and its fall-back);
- batched: the same grammar through servers/supervision/mlx_entry.py's `batch_grammars` step
  (the forward pass submitted once, every grammar row's mask, one `mx.where` for the batch).

Printed per kind: medians over rounds of the process's CPU time per step (every thread, MLX's
included) and of the wall time per step, and free/kind for both (1.00 = as cheap as free text;
bench.structured's goal is >= 0.9 in tokens/s). CPU is what a shared host perturbs least.
"""

from __future__ import annotations

import argparse
import importlib
import time

from bench.harness import median, median_interval, nonstop_tiny_model, print_machine
from bench.structured import FORMAT
from servers.supervision import mlx_entry

KINDS = ("free", "processor", "per-row", "batched")
PROMPT = [{"role": "user", "content": "List the animals."}]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--concurrency", default="1,4")
    parser.add_argument("--kinds", default=",".join(KINDS), help="free is always measured")
    args = parser.parse_args()
    kinds = ("free", *(k for k in args.kinds.split(",") if k in KINDS and k != "free"))
    print_machine()

    import llguidance
    import llguidance.hf
    import mlx.core as mx
    import numpy as np
    from mlx_lm import load
    from mlx_lm.sample_utils import make_logits_processors

    generate = importlib.import_module("mlx_lm.generate")
    batch_class = generate.GenerationBatch
    steps = {"stock": batch_class._step}
    if not mlx_entry.batch_grammars(generate, mx=mx, np=np):
        raise SystemExit("mlx_lm's batch step is not the one mlx_entry knows: nothing to compare")
    steps["batched"] = batch_class._step

    model, tokenizer = load(str(nonstop_tiny_model()))
    llg = llguidance.hf.from_tokenizer(
        tokenizer._tokenizer, eos_token=sorted(tokenizer.eos_token_ids)
    )
    grammar = mlx_entry.output_grammar({"response_format": FORMAT}, None)
    prompt = tokenizer.apply_chat_template(PROMPT, add_generation_prompt=True)

    def processors(kind: str) -> list:
        if kind == "free":
            return []
        if kind == "processor":
            return make_logits_processors({1: 0.0})
        matcher = llguidance.LLMatcher(llg, grammar, log_level=0)
        return [mlx_entry.GrammarProcessor(matcher, llg.vocab_size, llg.eos_token, mx=mx, np=np)]

    def started(kind: str, rows: int):
        """A batch of `rows` replies of `kind`, every row generating."""
        batch_class._step = steps.get(kind, steps["stock"])
        batch = generate.BatchGenerator(model, completion_batch_size=rows, prefill_batch_size=rows)
        batch.insert(
            [prompt] * rows,
            max_tokens=[(args.rounds + 1) * args.steps + 64] * rows,
            logits_processors=[processors(kind) for _ in range(rows)],
        )
        generating = 0
        while generating < 4:  # prompt, then a few steps: caches warm
            _, responses = batch.next()
            generating += bool(responses)
        return batch

    for rows in [int(c) for c in args.concurrency.split(",")]:
        batches = {kind: started(kind, rows) for kind in kinds}
        texts: dict[str, list[int]] = {kind: [] for kind in kinds}
        cpu: dict[str, list[float]] = {kind: [] for kind in kinds}
        wall: dict[str, list[float]] = {kind: [] for kind in kinds}
        for round_ in range(args.rounds):
            shift = round_ % len(kinds)
            for kind in kinds[shift:] + kinds[:shift]:
                batch_class._step = steps.get(kind, steps["stock"])
                batch = batches[kind]
                used, took = time.process_time(), time.perf_counter()
                for _ in range(args.steps):
                    _, responses = batch.next()
                    texts[kind].extend(r.token for r in responses if r.uid == 0)
                cpu[kind].append((time.process_time() - used) / args.steps)
                wall[kind].append((time.perf_counter() - took) / args.steps)
        for kind, batch in batches.items():
            batch.close()
            if kind in ("per-row", "batched"):
                text = tokenizer.decode(texts[kind])
                if '}, {"id": ' not in text:  # its first tokens went by in the warm-up
                    raise RuntimeError(f"{kind}: the reply is not the schema's: {text[:80]!r}")
        print(f"c={rows}: {args.rounds} rounds of {args.steps} steps (medians, 95% intervals):")
        for kind in kinds:
            line = f"  {kind:14s} CPU {median(cpu[kind]) * 1e6:5.0f} us/step"
            line += f", wall {median(wall[kind]) * 1e6:5.0f} us/step"
            if kind != "free":
                for label, values in (("CPU", cpu), ("wall", wall)):
                    ratios = [f / k for k, f in zip(values[kind], values["free"], strict=True)]
                    low, high = median_interval(ratios)
                    line += f"; {label} free/{kind} {median(ratios):.2f} [{low:.2f}, {high:.2f}]"
            print(line)


if __name__ == "__main__":
    main()
