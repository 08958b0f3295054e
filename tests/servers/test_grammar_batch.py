"""The grammar rows of mlx_lm's continuous batch are masked together
(servers/supervision/mlx_entry.py, `batch_grammars`), in process: mlx_lm's own BatchGenerator
on the `tools` tiny model, real llguidance matchers, a batch that mixes free rows, grammar rows,
rows with a `logit_bias` and rows with both, and rows that join while it runs.

The step that masks the batch together must produce, token for token, what mlx_lm's own
per-row processor path produces with the same GrammarProcessors (the path the entry point used
before, and still uses for an mlx_lm it does not know); every constrained reply validates, every
free reply is the tiny model's sentence.
"""

from __future__ import annotations

import importlib
import json
from typing import Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field

from servers.supervision import mlx_entry
from tests.support.tiny_models import REPLY, tiny_model_cache

pytestmark = pytest.mark.timeout(300)

MAX_TOKENS = 160


class Item(BaseModel):
    model_config = ConfigDict(extra="forbid")  # else any other key (a free string) is allowed
    sku: str = Field(max_length=6)
    quantity: int = Field(ge=1, le=99)


class Order(BaseModel):
    model_config = ConfigDict(extra="forbid")
    items: list[Item] = Field(min_length=1, max_length=3)


class Flat(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(max_length=12)
    size: Literal["small", "medium", "large"]


def _format(schema: type[BaseModel]) -> dict:
    return {"type": "json_schema", "json_schema": {"name": schema.__name__,
            "schema": schema.model_json_schema(), "strict": False}}  # fmt: skip


# (label, response_format or None, logit_bias or None): the first four start together, the
# last two join the running batch.
REQUESTS = [
    ("free", None, None),
    ("order", _format(Order), None),
    ("flat + logit_bias", _format(Flat), {"5": -2.0, "9": 1.5}),
    ("free + logit_bias", None, {"3": 0.0}),
    ("json_object, joining", {"type": "json_object"}, None),
    ("free, joining", None, None),
]
SCHEMAS = {"order": Order, "flat + logit_bias": Flat}
JOIN_AFTER_STEPS = 6


@pytest.fixture(scope="module")
def lm():
    import llguidance
    import llguidance.hf
    import mlx.core as mx
    import numpy as np
    from mlx_lm import load

    model, tokenizer = load(str(tiny_model_cache("tools")))
    llg = llguidance.hf.from_tokenizer(
        tokenizer._tokenizer, eos_token=sorted(tokenizer.eos_token_ids)
    )
    return model, tokenizer, llg, mx, np


@pytest.fixture
def steps(lm, monkeypatch):
    """mlx_lm's own GenerationBatch._step and the entry point's, for this test only."""
    *_, mx, np = lm
    generate = importlib.import_module("mlx_lm.generate")
    stock = generate.GenerationBatch._step
    monkeypatch.setattr(generate.GenerationBatch, "_step", stock)  # put back after the test
    assert mlx_entry.batch_grammars(generate, mx=mx, np=np), "mlx_lm's batch step is unknown"
    return {"per-row": stock, "batched": generate.GenerationBatch._step}


def _processors(lm, response_format, bias) -> list:
    import llguidance
    from mlx_lm.sample_utils import make_logits_processors

    _, _, llg, mx, np = lm
    processors = make_logits_processors({int(k): v for k, v in bias.items()}) if bias else []
    grammar = mlx_entry.output_grammar({"response_format": response_format}, None)
    if grammar is not None:
        matcher = llguidance.LLMatcher(llg, grammar, log_level=0)
        assert not matcher.is_error(), matcher.get_error()
        processors.append(
            mlx_entry.GrammarProcessor(matcher, llg.vocab_size, llg.eos_token, mx=mx, np=np)
        )
    return processors


def _generate(lm, step) -> tuple[dict[str, list[int]], dict[str, str], list[list[int]]]:
    """Run REQUESTS through one BatchGenerator with `step`: each row's tokens, finish reasons,
    and the token-buffer sizes of the first batch's rows at each step while all four run."""
    generate = importlib.import_module("mlx_lm.generate")
    model, tokenizer, *_ = lm
    generate.GenerationBatch._step = step
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Say hello."}], add_generation_prompt=True
    )
    batch = generate.BatchGenerator(
        model, stop_tokens=[[t] for t in tokenizer.eos_token_ids], completion_batch_size=8
    )

    def insert(requests) -> dict[int, str]:
        uids = batch.insert(
            [prompt] * len(requests),
            max_tokens=[MAX_TOKENS] * len(requests),
            logits_processors=[_processors(lm, f, b) for _, f, b in requests],
        )
        return {uid: label for uid, (label, _, _) in zip(uids, requests, strict=True)}

    labels = insert(REQUESTS[:4])
    tokens: dict[str, list[int]] = {label: [] for label, _, _ in REQUESTS}
    finished: dict[str, str] = {}
    buffers: list[list[int]] = []
    steps = 0
    joined = False
    try:
        while len(finished) < len(REQUESTS):
            _, responses = batch.next()
            assert steps < 4 * MAX_TOKENS, "the batch never finished"
            for response in responses:
                tokens[labels[response.uid]].append(response.token)
                if response.finish_reason is not None:
                    finished[labels[response.uid]] = response.finish_reason
            if responses:
                steps += 1
                rows = batch._generation_batch
                if len(rows) == 4 and steps <= JOIN_AFTER_STEPS:
                    buffers.append([buffer._size for buffer in rows._token_context])
            if steps == JOIN_AFTER_STEPS and not joined:
                labels.update(insert(REQUESTS[4:]))
                joined = True
    finally:
        batch.close()
    return tokens, finished, buffers


def test_a_mixed_batch_masked_together_answers_as_mlx_lms_per_row_path(lm, steps):
    _, tokenizer, *_ = lm
    per_row, _, _ = _generate(lm, steps["per-row"])
    batched, finished, buffers = _generate(lm, steps["batched"])
    for label, _, _ in REQUESTS:
        assert batched[label] == per_row[label], label
        text = tokenizer.decode(
            batched[label][:-1] if finished[label] == "stop" else batched[label]
        )
        if label.startswith("free"):
            assert text == REPLY and finished[label] == "stop", label
        elif label in SCHEMAS:
            assert finished[label] == "stop", (label, text)
            SCHEMAS[label].model_validate_json(text)
        else:
            assert finished[label] == "stop" and isinstance(json.loads(text), dict), text
    # Rows whose only processor is the grammar keep no token buffer; a row with a logit_bias
    # still gets mlx_lm's (it is that processor's context).
    assert len(buffers) >= 3
    first, last = buffers[0], buffers[-1]
    for row, (label, _, bias) in enumerate(REQUESTS[:4]):
        if bias:
            assert last[row] - first[row] == len(buffers) - 1, label
        else:
            assert last[row] == first[row], label


def test_allowed_tokens_keeps_free_rows_whole_and_cuts_the_padding():
    import numpy as np

    vocab, width = 40, 48  # a model's logits are often padded past its vocabulary
    bitmask = np.zeros((2, 2), dtype=np.int32)
    bitmask[0, 0] = 0b101  # tokens 0 and 2
    bitmask[1, :] = -1  # every token, and bits past the vocabulary
    allowed = mlx_entry.allowed_tokens(np, bitmask, [0, 2], 3, width, vocab)
    assert allowed.shape == (3, width) and allowed.dtype == np.bool_
    assert np.flatnonzero(allowed[0]).tolist() == [0, 2]
    assert allowed[1].all()  # a row without a grammar: untouched
    assert np.flatnonzero(allowed[2]).tolist() == list(range(vocab))
    whole = mlx_entry.allowed_tokens(np, bitmask[:1], [0], 1, 32, 32)
    assert np.flatnonzero(whole[0]).tolist() == [0, 2]
