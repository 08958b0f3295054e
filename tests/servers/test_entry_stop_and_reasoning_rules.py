"""The pure rules of the server entries' stop words and reasoning tokens, as tables: where a
vision server's reply meets a stop word (servers/supervision/vlm_entry.py, change 5) and how its
final choice names it, and which tokens a text server counts as reasoning
(servers/supervision/mlx_entry.py, change 9). The servers themselves answer in
tests/servers/test_gateway_dialects.py."""

from __future__ import annotations

import json

import pytest
from mlx_lm.generate import TextStateMachine
from mlx_vlm.server.generation import StreamingToken
from mlx_vlm.server.schemas import ChatRequest

from servers.supervision.mlx_entry import reasoning_token
from servers.supervision.vlm_entry import (
    InFlight,
    StopScan,
    applies_no_stop,
    read_request,
    told_answer,
    told_chunk,
)

# (case, stop words, the texts of the tokens, what goes out for each, the word that ended it)
SCANS = [
    ("no word said", (" MLX",), ["Hello", " from"], ["Hello", " from"], None),
    ("a whole token", (" MLX",), ["Hello", " tiny", " MLX", " test"], ["Hello", " tiny", ""],
     " MLX"),
    ("across tokens: held back, then cut", ("MLX t",), [" tiny", " MLX", " test"],
     [" tiny", " ", ""], "MLX t"),
    ("held back, then let go", ("MLX t",), [" MLX", " model"], [" ", "MLX model"], None),
    ("inside a token", ("ll",), ["Hello"], ["He"], "ll"),
    ("the earliest place wins", ("model", "tiny"), [" tiny model"], [" "], "tiny"),
    ("same place: the first listed", ("ti", "tiny"), [" tiny"], [" "], "ti"),
    ("a prefix of the longest word held", ("abc", "b"), ["xa"], ["x"], None),
]  # fmt: skip


@pytest.mark.parametrize(("words", "texts", "out", "word"), [s[1:] for s in SCANS],
                         ids=[s[0] for s in SCANS])  # fmt: skip
def test_a_reply_ends_before_the_earliest_stop_word_and_holds_back_what_may_begin_one(
    words, texts, out, word
):
    scan = StopScan(words)
    given, matched = [], None
    for text in texts:
        part, matched = scan.feed(text)
        given.append(part)
        if matched:
            break
    assert (given, matched) == (out, word)


def test_what_is_held_back_goes_out_at_the_end():
    scan = StopScan(("END",))
    assert scan.feed("The E") == ("The ", None)
    assert scan.flush() == "E"
    assert scan.flush() == ""


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"stop": " MLX", "stream": true}', (True, (" MLX",))),
        (b'{"stop": ["a", "", 3, "b"]}', (False, ("a", "b"))),
        (b'{"stop": null}', (False, ())),
        (b'{"stop": {"a": 1}}', (False, ())),
        (b"[1]", (False, ())),
        (b"not json", (False, ())),
    ],
)
def test_a_requests_stop_words_are_its_non_empty_strings(body, expected):
    assert read_request(body) == expected


def _entry(matched: str | None) -> InFlight:
    return InFlight(stream=True, stop_words=(" MLX",), matched_stop=matched)


def test_the_final_choice_names_the_stop_word_that_ended_the_reply():
    final = b'data: {"choices":[{"index":0,"finish_reason":"stop","delta":{}}]}\n\n'
    told = json.loads(told_chunk(final, _entry(" MLX"))[len(b"data: ") :])
    assert told["choices"][0]["stop_reason"] == " MLX"
    told = json.loads(told_chunk(final, _entry(None))[len(b"data: ") :])
    assert told["choices"][0]["stop_reason"] is None
    length = final.replace(b'"stop"', b'"length"')
    assert json.loads(told_chunk(length, _entry(" MLX"))[6:])["choices"][0]["stop_reason"] is None
    # Chunks before the last, the usage chunk, [DONE] and errors are left as they are.
    for other in (
        b'data: {"choices":[{"index":0,"finish_reason":null,"delta":{"content":"Hi"}}]}\n\n',
        b'data: {"choices":[],"usage":{"prompt_tokens":1}}\n\n',
        b"data: [DONE]\n\n",
        b'data: {"error": "finish_reason"}\n\n',
    ):
        assert told_chunk(other, _entry(" MLX")) == other
    answer = b'{"choices":[{"index":0,"finish_reason":"stop","message":{"content":"Hi"}}]}'
    assert json.loads(told_answer(answer, _entry(" MLX")))["choices"][0]["stop_reason"] == " MLX"
    assert told_answer(b'{"detail": "bad"}', _entry(" MLX")) == b'{"detail": "bad"}'


def test_the_installed_mlx_vlm_ignores_stop_so_the_entry_applies_it():
    """When an mlx-vlm upgrade takes `stop` itself, this fails: the entry's change 5 must then
    be looked at again (the entry leaves stop words to it, and says so)."""
    assert applies_no_stop(ChatRequest, StreamingToken)

    class TakesStop(ChatRequest):
        stop: list[str] | None = None

    assert not applies_no_stop(TakesStop, StreamingToken)
    assert not applies_no_stop(ChatRequest, dict)


REASONING = [
    ("the opening marker", "normal", "reasoning", True),
    ("a thought", "reasoning", "reasoning", True),
    ("the closing marker", "reasoning", "normal", True),
    ("the answer", "normal", "normal", False),
    ("a tool call begun while reasoning", "reasoning", "tool", False),
    ("a tool call", "tool", "tool", False),
]


@pytest.mark.parametrize(("before", "after", "counted"), [r[1:] for r in REASONING],
                         ids=[r[0] for r in REASONING])  # fmt: skip
def test_a_token_is_reasoning_from_the_states_around_it(before, after, counted):
    assert reasoning_token(before, after) is counted


def test_reasoning_tokens_of_a_reply_through_mlx_lms_state_machine():
    """The rule applied as the entry does, through mlx_lm's own state machine: the markers and
    the thoughts between them count, the answer does not — a marker split over two tokens too."""
    machine = TextStateMachine(
        {"normal": [("<think>", "reasoning")], "reasoning": [("</think>", "normal")]}
    )
    state = machine.make_state("normal")
    counted = []
    for text in ["<think>", "Hmm", " ok", "</th", "ink>", "Hi", "!"]:
        before = state[0]
        state, _ = TextStateMachine.split(state, text)
        counted.append(reasoning_token(before, state[0]))
    assert counted == [True, True, True, True, True, False, False]
