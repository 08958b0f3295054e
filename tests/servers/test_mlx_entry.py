"""The portal's mlx_lm.server admits a new request into the running batch at once.

Stock mlx_lm.server (0.32) takes new requests off its queue only between 0.5-s slices of its
generation loop, or when the batch empties: a request that arrives while another streams waits
for it to finish. `servers/mlx_entry.py` makes the slice 5 ms. Both are checked against a real
server with the same condition — does the second request's first token arrive before the first
request's stream ends? — the first stream being sized (from a measured run) to last about
0.25 s, half of the stock slice. The stock case pins mlx_lm's behaviour: when an upgrade
admits requests promptly on its own, it fails, and the entry script can go.
"""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest

from tests.support.mlx_server import running_mlx_server
from tests.support.tiny_models import END_OF_TEXT, EOS

pytestmark = pytest.mark.timeout(180)


def _no_end_bias(model_dir) -> dict[str, int]:
    """logit_bias that keeps the tiny model from ending its reply (it runs to max_tokens)."""
    vocab = json.loads((model_dir / "tokenizer.json").read_text())["added_tokens"]
    ids = {token["content"]: token["id"] for token in vocab}
    return {str(ids[EOS]): -100, str(ids[END_OF_TEXT]): -100}


def _stream(url: str, max_tokens: int, bias: dict, on_token) -> None:
    body = {
        "messages": [{"role": "user", "content": "Say hello."}],
        "max_tokens": max_tokens,
        "logit_bias": bias,
        "stream": True,
    }
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=60) as answer:
        assert answer.status_code == 200
        for line in answer.iter_lines():
            if line.startswith("data: {") and '"content": ""' not in line:
                on_token()


def _second_starts_before_first_ends(url: str, bias: dict) -> bool:
    # How fast does one stream go here? Then size the first stream to ~0.25 s.
    count = [0]
    started = time.monotonic()
    _stream(url, 200, bias, lambda: count.__setitem__(0, count[0] + 1))
    per_second = count[0] / (time.monotonic() - started)
    first_tokens = max(int(per_second * 0.25), 40)

    events: list[str] = []  # "first ended" and "second's first token", in the order they came
    first_tokens_seen = [0]
    first_done = threading.Event()

    def first() -> None:
        try:
            _stream(
                url,
                first_tokens,
                bias,
                lambda: first_tokens_seen.__setitem__(0, first_tokens_seen[0] + 1),
            )
        finally:
            events.append("first ended")
            first_done.set()

    def second_token() -> None:
        if "second's first token" not in events:
            events.append("second's first token")

    runner = threading.Thread(target=first)
    runner.start()
    deadline = time.monotonic() + 30
    while first_tokens_seen[0] < 5 and not first_done.is_set() and time.monotonic() < deadline:
        time.sleep(0.001)
    assert first_tokens_seen[0] >= 5 and not first_done.is_set(), "the first stream stalled"
    _stream(url, 3, bias, second_token)
    runner.join(timeout=60)
    assert sorted(events) == ["first ended", "second's first token"]
    return events[0] == "second's first token"


@pytest.mark.parametrize("stock", [False, True], ids=["portal-entry", "stock-mlx-lm"])
def test_a_new_request_joins_the_running_batch(tmp_path, tiny_model, stock):
    bias = _no_end_bias(tiny_model)
    with running_mlx_server(tiny_model, log_path=tmp_path / "server.log", stock=stock) as server:
        log = server.log_tail(200)
        assert ("join the running batch every 5 ms" in log) is not stock
        joined = _second_starts_before_first_ends(server.url, bias)
    assert joined is not stock
