"""How the portal runs `mlx_lm.server`: the server's own `main()`, with a few changes that make
it fit to be shared by a team.

    python servers/supervision/mlx_entry.py [--portal-context-length N] <mlx_lm.server options>

1. **Admission.** mlx_lm.server (0.32) generates for a continuous batch of requests in one
   thread, and takes new requests off its queue only between time slices of that loop
   (`TimeBudget`): a slice ends after 0.5 s, or when the batch has nothing left. A request that
   arrives while others are streaming therefore waits up to half a second before it is even
   tokenized (docs/benchmarks.md §1e). Here a slice lasts ADMISSION_SLICE_SECONDS.
2. **A client that leaves stops its request.** mlx_lm.server notices a gone client only when a
   write fails; a non-streamed request writes nothing until its answer is complete, so a client
   that gave up on a long prompt kept the server busy for everyone until the end. Here every
   request watches its connection between prompt chunks and tokens, and stops (the generation
   loop drops it at its next step) within CLIENT_CHECK_SECONDS of the client closing it.
3. **Prompts longer than the context are refused** with 400 `context_length_exceeded` (OpenAI's
   code), counted exactly (the tokens the chat template produced), and `max_tokens` is cut to
   what is left of the context. `--portal-context-length` comes from the portal, which reads the
   model's `config.json` by its one rule (models_catalog.characteristics.context_length).
4. **A listen backlog of LISTEN_BACKLOG** instead of socketserver's 5: a burst of 60 clients
   got connection resets from a healthy server.
5. **`GET /portal/status`** lists the requests in flight (age, prompt progress, tokens), for the
   portal's worker to show a server busy on one long request on its tile.
6. The `system_fingerprint` of the answers is opaque, as OpenAI's (`fp_` and a hash of the
   mlx-lm and mlx versions: it changes with them), instead of naming the host's operating
   system, kernel, C library and GPU.
7. **Structured output, enforced.** mlx_lm.server ignores `response_format`. Here, on
   /v1/chat/completions, `{"type": "json_object"}` and `{"type": "json_schema", ...}` are
   compiled by llguidance into a grammar (`output_grammar`), and a logits processor
   (`GrammarProcessor`) masks every token the grammar does not allow, at each step, streamed or
   not, batched with unconstrained requests; the grammar rows of a batch are masked together in
   one pass (`batch_grammars`), not through mlx_lm's per-row processor path, when mlx_lm's
   batch step is the known one. With `tool_choice` "required" or a named function,
   the whole tool call (`<tool_call>{"name": …, "arguments": …}</tool_call>`, the format of
   mlx_lm's `json_tools` parser) is constrained, its arguments to the function's `parameters`.
   A grammar llguidance cannot build is refused with 400 (code `invalid_json_schema`) and its
   reason. See docs/gateway.md, "Structured output".
8. **Which stop word ended a reply.** mlx_lm answers finish_reason "stop" both for the model's
   end of turn and for one of the request's `stop` words, without saying which. Here, on a
   request with stop words, the final choice also has `stop_reason`: the stop word that ended
   the reply, or null (vLLM's field), which the gateway's Anthropic Messages turns into
   `stop_reason: "stop_sequence"` and `stop_sequence`.
9. **Reasoning tokens, counted.** mlx_lm separates a reasoning model's thinking (its text
   state machine: the `reasoning` of the message or delta) but counts its tokens only in
   `completion_tokens`. Here, for a model whose tokenizer thinks, the tokens generated in the
   reasoning state (the thinking markers included: `reasoning_token`) are counted, and the
   usage says so as OpenAI's does: `completion_tokens_details: {"reasoning_tokens": n}`, a part
   of `completion_tokens`, not more tokens. The gateway's Responses report it as
   `output_tokens_details.reasoning_tokens`, its Messages as
   `output_tokens_details.thinking_tokens`.

Nothing else changes: the options, the HTTP server and the generation code are mlx_lm's own
(change 7 repeats its batch step, with the grammar rows masked together).
This file runs as a script in the model server's process and imports nothing of the portal.
Where mlx_lm lacks what a change patches (another version), that change is skipped and the
server's log says so on its first line.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import http.server
import importlib
import inspect
import json
import re
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

ADMISSION_SLICE_SECONDS = 0.005
CLIENT_CHECK_SECONDS = 0.05
LISTEN_BACKLOG = 1024
STATUS_PATH = "/portal/status"
CONTEXT_OPTION = "--portal-context-length"


def admit_often(server_module) -> bool:
    """Make `server_module` (mlx_lm.server) look at its request queue every
    ADMISSION_SLICE_SECONDS; False (nothing changed) when its scheduler is not the known one."""
    budget = getattr(server_module, "TimeBudget", None)
    try:
        known = "budget" in inspect.signature(budget).parameters
    except (TypeError, ValueError):
        known = False
    if not known:
        return False
    # ResponseGenerator looks the name up when it is created (in main()), so this is the one
    # it uses; distributed runs (not started by the portal) keep their own iteration count.
    server_module.TimeBudget = functools.partial(budget, budget=ADMISSION_SLICE_SECONDS)
    return True


# --- requests in flight -------------------------------------------------------------------------


# Both end a request across mlx_lm's handler, whose `except Exception` would answer 404 instead:
# its `finally` still stops the generation.
class ClientGone(BaseException):
    """The client of a request closed its connection: stop working on the request."""


class Answered(BaseException):
    """The request was answered here (an error); mlx_lm's handler has nothing more to do."""


def peer_closed(sock: socket.socket) -> bool:
    """Whether the other end of `sock` has closed it (nothing is read: a peek). Here a request
    body is read in full before generation starts, so anything readable is the end of the
    connection; the gateway asks the same of its clients' sockets (it imports this)."""
    try:
        data = sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return True
    return data == b""


@dataclass
class InFlight:
    """One request being served, as `GET /portal/status` tells it."""

    connection: socket.socket
    stream: bool
    started: float = field(default_factory=time.monotonic)
    prompt_done: int = 0
    prompt_total: int = 0
    generated: int = 0
    _checked: float = 0.0

    def check(self) -> None:
        """Raise ClientGone when the client has left (looked at most every
        CLIENT_CHECK_SECONDS)."""
        now = time.monotonic()
        if now - self._checked < CLIENT_CHECK_SECONDS:
            return
        self._checked = now
        if peer_closed(self.connection):
            raise ClientGone

    def as_dict(self, now: float) -> dict[str, Any]:
        return {
            "age_seconds": round(now - self.started, 3),
            "stream": self.stream,
            "prompt_tokens_done": self.prompt_done,
            "prompt_tokens": self.prompt_total,
            "generated_tokens": self.generated,
        }


class Registry:
    """The requests in flight in this server, and how many were stopped for gone clients."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: dict[int, InFlight] = {}
        self.stopped_for_gone_clients = 0

    def add(self, request: InFlight) -> None:
        with self._lock:
            self._requests[id(request)] = request

    def remove(self, request: InFlight, *, client_gone: bool = False) -> None:
        with self._lock:
            self._requests.pop(id(request), None)
            if client_gone:
                self.stopped_for_gone_clients += 1

    def status(self) -> dict[str, Any]:
        now = time.monotonic()
        with self._lock:
            requests = sorted(self._requests.values(), key=lambda r: r.started)
            return {
                "requests": [r.as_dict(now) for r in requests],
                "stopped_for_gone_clients": self.stopped_for_gone_clients,
            }


registry = Registry()
_current = threading.local()  # the handler thread's `handler` and its `entry` (InFlight)


def _send_json(handler, status: int, payload: dict) -> None:
    body = json.dumps(payload).encode()
    handler._set_completion_headers(status)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)
    handler.wfile.flush()


def watch_requests(server_module) -> bool:
    """Make every completion request of `server_module` (mlx_lm.server) stop when its client
    leaves, and be listed by `GET /portal/status`; False when the handler is not the known one."""
    handler = getattr(server_module, "APIHandler", None)
    generator = getattr(server_module, "ResponseGenerator", None)
    if not all(
        callable(getattr(cls, name, None))
        for cls, name in ((handler, "handle_completion"), (handler, "do_GET"),
                          (generator, "generate"))
    ):  # fmt: skip
        return False
    handle_completion, do_get, generate = (
        handler.handle_completion,
        handler.do_GET,
        generator.generate,
    )

    def watched_handle_completion(self, request, stop_words):
        entry = InFlight(connection=self.connection, stream=bool(getattr(self, "stream", False)))
        registry.add(entry)
        _current.handler, _current.entry = self, entry
        gone = False
        try:
            return handle_completion(self, request, stop_words)
        except (ClientGone, BrokenPipeError, ConnectionResetError):
            gone = True
            print(
                f"MLX Portal: the client left after {entry.prompt_done}/{entry.prompt_total} "
                f"prompt tokens and {entry.generated} generated; the request was stopped.",
                file=sys.stderr,
                flush=True,
            )
        except Answered:
            pass
        finally:
            _current.handler = _current.entry = None
            registry.remove(entry, client_gone=gone)

    def watched_generate(self, request, generation_args, progress_callback=None):
        entry = getattr(_current, "entry", None)
        if entry is None:  # not a request of the HTTP handler
            return generate(self, request, generation_args, progress_callback)

        def progress(processed: int, total: int) -> None:
            entry.prompt_done, entry.prompt_total = processed, total
            entry.check()
            if progress_callback is not None:
                progress_callback(processed, total)

        entry.check()  # it may have waited in the queue
        ctx, tokens = generate(self, request, generation_args, progress)
        entry.prompt_total = entry.prompt_total or len(getattr(ctx, "prompt", ()))

        def watched_tokens():
            for token in tokens:
                entry.generated += 1
                entry.check()
                yield token

        return ctx, watched_tokens()

    def status_do_get(self):
        if self.path == STATUS_PATH:
            _send_json(self, 200, registry.status())
            return
        do_get(self)

    handler.handle_completion = watched_handle_completion
    handler.do_GET = status_do_get
    generator.generate = watched_generate
    return True


# --- the context ------------------------------------------------------------------------------


class PromptTooLong(Exception):
    def __init__(self, tokens: int, context: int):
        super().__init__(
            f"This model's maximum context length is {context} tokens, but the prompt has "
            f"{tokens} tokens. Shorten the messages (or the prompt) and try again."
        )
        self.tokens, self.context = tokens, context


def limit_context(server_module, context: int) -> bool:
    """Refuse prompts of `context` tokens or more, and cut `max_tokens` to what is left of the
    context; False when mlx_lm's tokenizing step is not the known one."""
    generator = getattr(server_module, "ResponseGenerator", None)
    tokenize = getattr(generator, "_tokenize", None)
    generate = getattr(generator, "generate", None)
    if not callable(tokenize) or not callable(generate):
        return False

    def limited_tokenize(self, tokenizer, request, args):
        result = tokenize(self, tokenizer, request, args)
        tokens = len(result[0])
        if tokens >= context:
            raise PromptTooLong(tokens, context)
        if isinstance(getattr(args, "max_tokens", None), int):
            args.max_tokens = max(1, min(args.max_tokens, context - tokens))
        return result

    def refusing_generate(self, request, generation_args, progress_callback=None):
        try:
            return generate(self, request, generation_args, progress_callback)
        except PromptTooLong as exc:
            handler = getattr(_current, "handler", None)
            if handler is None:
                raise
            _send_json(handler, 400, {"error": {
                "message": str(exc), "type": "invalid_request_error", "param": "messages",
                "code": "context_length_exceeded",
            }})  # fmt: skip
            raise Answered from None

    generator._tokenize = limited_tokenize
    generator.generate = refusing_generate
    return True


# --- structured output --------------------------------------------------------------------------

# The JSON the grammar allows: no free whitespace (a model could otherwise pad a reply with
# spaces until max_tokens), separators as json.dumps writes them.
JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
# OpenAI's rule for function names (it is also what keeps them plain inside a grammar literal).
FUNCTION_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
# The keywords that hold subschemas, walked by `strict_problem`.
_SUBSCHEMA_MAPS = ("properties", "$defs", "definitions", "patternProperties")
_SUBSCHEMA_LISTS = ("anyOf", "allOf", "oneOf", "prefixItems")
_SUBSCHEMA_ONE = ("items", "additionalProperties", "not", "contains")


class Refused(Exception):
    """A request whose output cannot be constrained as asked: 400, in OpenAI's shape."""

    def __init__(self, message: str, param: str, code: str = "invalid_json_schema"):
        super().__init__(message)
        self.message, self.param, self.code = message, param, code

    def as_dict(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": "invalid_request_error",
                          "param": self.param, "code": self.code}}  # fmt: skip


@dataclass(frozen=True)
class ToolFormat:
    """How the served model writes a tool call: the grammar atoms of its start and end markers
    (a special token `<[id]>` or a quoted literal). Only mlx_lm's `json_tools` format
    (`<tool_call>{"name": …, "arguments": …}</tool_call>`, Qwen 2.5, Hermes) is known here."""

    start: str
    end: str


def strict_problem(schema: Any, where: str = "schema") -> str | None:
    """What makes `schema` break OpenAI's rules for `strict: true` (every object lists all its
    properties in `required` and has `additionalProperties: false`), or None. Iterative: the
    depth of a schema is bounded by the gateway, not by Python's stack."""
    pending = [(schema, where)]
    while pending:
        node, path = pending.pop()
        if not isinstance(node, dict):
            continue
        properties = node.get("properties")
        if node.get("type") == "object" or isinstance(properties, dict):
            if node.get("additionalProperties") is not False:
                return (f"In {path}, 'additionalProperties' is required to be supplied and to "
                        "be false (strict mode).")  # fmt: skip
            names = list(properties) if isinstance(properties, dict) else []
            required = node.get("required") or []
            if missing := [n for n in names if n not in required]:
                return (f"In {path}, 'required' must list every property (strict mode); "
                        f"missing: {', '.join(map(repr, missing[:5]))}. Make optional fields "
                        "nullable instead.")  # fmt: skip
        for key in _SUBSCHEMA_MAPS:
            if isinstance(sub := node.get(key), dict):
                pending += [(v, f"{path}.{key}.{k}") for k, v in sub.items()]
        for key in _SUBSCHEMA_LISTS:
            if isinstance(sub := node.get(key), list):
                pending += [(v, f"{path}.{key}[{i}]") for i, v in enumerate(sub)]
        for key in _SUBSCHEMA_ONE:
            if isinstance(sub := node.get(key), dict):
                pending.append((sub, f"{path}.{key}"))
    return None


def _json_rule(schema: Any, *, strict: bool, param: str) -> str:
    """The grammar (Lark, llguidance's `%json`) of the JSON text `schema` allows; Refused when
    `strict` and the schema breaks OpenAI's strict rules."""
    if schema is True or schema is None:
        schema = {}
    if not isinstance(schema, dict):
        raise Refused(f"'{param}' must be a JSON Schema object.", param, "invalid_value")
    if strict and (problem := strict_problem(schema)):
        raise Refused(f"Invalid schema for '{param}': {problem}", param)
    options = {**JSON_OPTIONS, "lenient": not strict}
    return "%json " + json.dumps({**schema, "x-guidance": options})


def _response_rule(response_format: Any) -> str | None:
    """The grammar rule of the reply's content for `response_format`, or None (free text)."""
    if response_format is None:
        return None
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return _json_rule({"type": "object"}, strict=False, param="response_format")
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        if not isinstance(spec, dict):
            raise Refused("'response_format.json_schema' must be an object with 'name' and "
                          "'schema'.", "response_format", "invalid_value")  # fmt: skip
        return _json_rule(spec.get("schema"), strict=spec.get("strict") is True,
                          param="response_format.json_schema.schema")  # fmt: skip
    raise Refused("'response_format.type' must be 'text', 'json_object' or 'json_schema'.",
                  "response_format", "invalid_value")  # fmt: skip


def _called_tools(tools: Any, tool_choice: Any) -> list[dict] | None:
    """The function tools a reply must call one of (`tool_choice` "required" or a named
    function), or None (the model may answer in text)."""
    functions = [t.get("function") for t in tools or [] if isinstance(t, dict)
                 and t.get("type", "function") == "function"]  # fmt: skip
    functions = [f for f in functions if isinstance(f, dict)]
    if tool_choice == "required":
        if not functions:
            raise Refused("'tool_choice' is 'required' but there are no function 'tools'.",
                          "tool_choice", "invalid_value")  # fmt: skip
        return functions
    if isinstance(tool_choice, dict):
        function = tool_choice.get("function")
        name = function.get("name") if isinstance(function, dict) else None
        chosen = [f for f in functions if f.get("name") == name]
        if not chosen:
            raise Refused(f"'tool_choice' names the function {name!r}, which is not in 'tools'.",
                          "tool_choice", "invalid_value")  # fmt: skip
        return chosen[:1]
    return None


def _call_rule(index: int, function: dict, tool_format: ToolFormat) -> tuple[str, str]:
    """The rules of one tool call of `function` (its name, arguments to its parameters)."""
    name = function.get("name")
    if not isinstance(name, str) or not FUNCTION_NAME.fullmatch(name):
        raise Refused("A function's 'name' must be 1 to 64 letters, digits, '_' or '-'.",
                      "tools", "invalid_value")  # fmt: skip
    strict = function.get("strict") is True
    arguments = _json_rule(function.get("parameters") or {"type": "object"}, strict=strict,
                           param=f"tools[{name}].function.parameters")  # fmt: skip
    head = json.dumps('\n{"name": "' + name + '", "arguments": ')
    call = f'call_{index}: {tool_format.start} {head} args_{index} "}}\\n" {tool_format.end}'
    return call, f"args_{index}: {arguments}"


def constrains(body: dict) -> bool:
    """Whether a chat completion asks for a constrained reply (`output_grammar` would give a
    grammar for some tool format): the tokenizer is looked at only then, so a free request to a
    model that failed to load still reaches mlx_lm and gets its error."""
    tools = body.get("tools") if body.get("tool_choice") != "none" else None
    return (
        _response_rule(body.get("response_format")) is not None
        or _called_tools(tools, body.get("tool_choice", "auto")) is not None
    )


def output_grammar(body: dict, tool_format: ToolFormat | None) -> str | None:
    """The Lark grammar (llguidance's dialect) a chat completion's reply must match, or None
    when nothing constrains it. Refused (400) for what cannot be constrained as asked.

    - `tool_choice` "required" or a named function (with `tool_format` known): one call of one
      of those functions, its arguments valid for its `parameters`.
    - `response_format` json_object / json_schema: that JSON; with `tools` (and `tool_choice`
      "auto") a call of any of them is allowed instead, as on OpenAI.
    - `strict: true` (response_format's or a function's): OpenAI's strict rules are checked
      (`strict_problem`) and any keyword llguidance does not implement is refused; otherwise
      such keywords are ignored (llguidance's `lenient`) and the rest is enforced as written.
    """
    content = _response_rule(body.get("response_format"))
    tools = body.get("tools") if body.get("tool_choice") != "none" else None
    called = _called_tools(tools, body.get("tool_choice", "auto"))
    if called is None and content is not None and tools and tool_format is not None:
        called = [t["function"] for t in tools if isinstance(t, dict)
                  and isinstance(t.get("function"), dict)]  # fmt: skip
    if called is not None and tool_format is None:
        return None  # a format not known here: the call is not constrained (docs/gateway.md)
    if called is None:
        return None if content is None else f"start: {content}"
    rules = [_call_rule(i, f, tool_format) for i, f in enumerate(called)]
    choices = [f"call_{i}" for i in range(len(rules))]
    if content is not None and body.get("tool_choice", "auto") == "auto":
        choices.insert(0, "answer")
        rules.insert(0, (f"answer: {content}", ""))
    lines = [f"start: {' | '.join(choices)}", *(line for rule in rules for line in rule if line)]
    return "\n".join(lines) + "\n"


class GrammarProcessor:
    """Keeps one reply in its grammar: at each step the llguidance matcher takes the token
    sampled last and computes the set of tokens allowed next; the others get -inf.

    In mlx_lm's continuous batch (`batch_grammars`) the grammar rows of a step are masked
    together: one wait for the tokens sampled last, every row's mask, one `mx.where` for the
    whole batch. Called as an mlx_lm logits processor (`processor(tokens, logits) -> logits`)
    it masks its own row: mlx_lm's single-request path, and its batch when the batch step is
    not the known one."""

    def __init__(self, matcher, vocab_size: int, eos: int, *, mx, np) -> None:
        self.matcher, self.vocab, self.eos = matcher, vocab_size, eos
        self.words = (vocab_size + 31) // 32
        self.started = False  # the first step comes with the prompt: nothing sampled yet
        self._mx, self._np = mx, np

    def next_mask(self, last_token: int, bitmask, row: int) -> None:
        """Take `last_token` (the token sampled at the step before; ignored at the first step)
        and write the tokens allowed next into `bitmask[row]` (int32 words, one bit a token;
        zeros past this vocabulary)."""
        if self.started:
            self.matcher.consume_token(last_token)
        self.started = True
        if self.matcher.is_error():  # cannot happen for sampled tokens; end the reply
            print(f"MLX Portal: grammar: {self.matcher.get_error()[:300]}", file=sys.stderr)
            bitmask[row] = 0
            bitmask[row, self.eos // 32] = 1 << (self.eos % 32)
            return
        self.matcher.unsafe_compute_mask_ptr(bitmask[row].ctypes.data, self.words * 4)

    def __call__(self, tokens, logits):
        mx, np = self._mx, self._np
        mx.async_eval(logits)  # on a GPU the forward pass runs while the mask is computed
        bitmask = np.zeros((1, self.words), dtype=np.int32)
        self.next_mask(int(tokens[-1].item()) if self.started else 0, bitmask, 0)
        allowed = allowed_tokens(np, bitmask, [0], 1, logits.shape[-1], self.vocab)
        return mx.where(mx.array(allowed), logits, -mx.inf)


def allowed_tokens(np, bitmask, rows: list[int], batch: int, width: int, vocab: int):
    """The (batch, width) boolean array of what a batch's logits keep: for `rows[i]` the bits
    of `bitmask[i]` (nothing past `vocab`: a model's logits are often padded past its
    vocabulary), every token for the rows not in `rows`."""
    count = min(vocab, width)
    bits = np.unpackbits(bitmask.view(np.uint8), axis=1, count=count, bitorder="little")
    if len(rows) == batch and count == width:
        return bits.view(np.bool_)
    allowed = np.ones((batch, width), dtype=np.bool_)
    allowed[rows, :] = False
    allowed[np.asarray(rows)[:, None], np.arange(count)] = bits.view(np.bool_)
    return allowed


# mlx_lm.generate.GenerationBatch._step of mlx-lm 0.32.2, which `grammar_step` repeats with the
# grammar rows masked together; another version keeps mlx_lm's per-row processor path.
KNOWN_BATCH_STEP = "d7513c5031029194ca3820ae81d8966b792e66a90c39c1d7ad61d30bc9e8c5ad"


def batch_grammars(generate_module, *, mx, np) -> bool:
    """Mask the grammar rows of mlx_lm's continuous batch (`generate_module` is
    mlx_lm.generate) together at each step, instead of through mlx_lm's per-row processor path
    (a slice of the logits, a growing token buffer, a submission and a wait, a mask and a
    `where` for each row, then a concatenation). Rows without a grammar are left as they are;
    rows with other processors (logit_bias, penalties) still go through mlx_lm's path for
    those, the grammar after them as before. False when GenerationBatch._step is not the known
    one (each GrammarProcessor then masks its own row, as an ordinary processor)."""
    batch = getattr(generate_module, "GenerationBatch", None)
    step = getattr(batch, "_step", None)
    try:
        source = inspect.getsource(step)  # type: ignore[arg-type]
    except (TypeError, OSError):
        return False
    if hashlib.sha256(source.encode()).hexdigest() != KNOWN_BATCH_STEP:
        return False

    def grammar_step(self):
        grammars = [
            next((p for p in row if isinstance(p, GrammarProcessor)), None) if row else None
            for row in self.logits_processors or ()
        ]
        if not any(grammars):
            return step(self)
        self._current_tokens = self._next_tokens
        self._current_logprobs = self._next_logprobs
        inputs = self._current_tokens

        logits = self.model(inputs[:, None], cache=self.prompt_cache)
        logits = logits[:, -1, :]
        # Submitted once for the batch, before the masks: on a GPU the pass runs while they
        # are computed. (On MLX's CPU backend the call returns only once most of a small
        # model's pass has run; one submission after the masks still cost more server CPU a
        # token there: docs/benchmarks.md.)
        mx.async_eval(logits)
        last = inputs.tolist()  # the tokens sampled at the step before (the one wait)
        rows = [e for e, grammar in enumerate(grammars) if grammar is not None]
        bitmask = np.zeros((len(rows), max(grammars[e].words for e in rows)), dtype=np.int32)
        for i, e in enumerate(rows):
            grammars[e].next_mask(last[e], bitmask, i)

        # Other processors: mlx_lm's own path, for the rows that have some. A row with only
        # a grammar keeps no token buffer (the grammar needs only the last token).
        others = [tuple(p for p in row or () if not isinstance(p, GrammarProcessor))
                  for row in self.logits_processors]  # fmt: skip
        token_context = []
        if any(others):
            processed_logits = []
            for e in range(len(self.uids)):
                sample_logits = logits[e : e + 1]
                if others[e]:
                    context = self._token_context[e].update_and_fetch(inputs[e : e + 1])
                    token_context.append(context)
                    for processor in others[e]:
                        sample_logits = processor(context, sample_logits)
                processed_logits.append(sample_logits)
            logits = mx.concatenate(processed_logits, axis=0)
        allowed = allowed_tokens(np, bitmask, rows, len(grammars), logits.shape[-1],
                                 max(grammars[e].vocab for e in rows))  # fmt: skip
        logits = mx.where(mx.array(allowed), logits, -mx.inf)

        # From here on, mlx_lm's step as it is.
        logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
        samplers = [
            self.fallback_sampler if s is None else s
            for s in (self.samplers or [None] * len(self.uids))
        ]
        if not samplers or all(s is samplers[0] for s in samplers):
            sampled = (samplers[0] if samplers else self.fallback_sampler)(logprobs)
        else:
            sampled = mx.concatenate(
                [s(logprobs[e : e + 1]) for e, s in enumerate(samplers)], axis=0
            )
        self._next_tokens = sampled
        self._next_logprobs = list(logprobs)
        mx.async_eval(self._next_tokens, self._next_logprobs, token_context)
        mx.eval(inputs, self._current_logprobs)
        for sti, ti in zip(self.tokens, last, strict=False):
            sti.append(ti)
        return last, self._current_logprobs

    batch._step = grammar_step
    return True


def constrain_output(server_module, *, llguidance, mx, np) -> bool:
    """Enforce `response_format` and forced tool calls on /v1/chat/completions of
    `server_module` (mlx_lm.server; `llguidance` with its `hf` module loaded,
    `mx` and `np` as main() imports them): the grammar of `output_grammar` is compiled when the
    request arrives (its handler thread; 400 when it cannot be) and its GrammarProcessor joins
    the request's logits processors. False when mlx_lm is not the known one (nothing is
    constrained: the start-up line says so)."""
    generator = getattr(server_module, "ResponseGenerator", None)
    generate = getattr(generator, "generate", None)
    make_processors = getattr(server_module, "_make_logits_processors", None)
    if not callable(generate) or not callable(make_processors):
        return False
    limits = llguidance.LLParserLimits(verbose_errors=False)
    tokenizers: dict[int, Any] = {}  # id(mlx_lm TokenizerWrapper) -> llguidance's tokenizer
    lock = threading.Lock()

    def llg_tokenizer(tokenizer):
        with lock:  # ~1 s for a 150k vocabulary, once per model
            if id(tokenizer) not in tokenizers:
                eos = sorted(getattr(tokenizer, "eos_token_ids", None) or []) or None
                tokenizers[id(tokenizer)] = llguidance.hf.from_tokenizer(
                    tokenizer._tokenizer, eos_token=eos
                )
            return tokenizers[id(tokenizer)]

    def atom(tokenizer, llg, text: str) -> str:
        ids = tokenizer.encode(text, add_special_tokens=False)
        if len(ids) == 1 and llg.is_special_token(ids[0]):
            return f"<[{ids[0]}]>"
        return json.dumps(text)

    def tool_format(tokenizer, llg) -> ToolFormat | None:
        parser = getattr(tokenizer, "tool_parser", None)
        start = getattr(tokenizer, "tool_call_start", None)
        end = getattr(tokenizer, "tool_call_end", None)
        if not getattr(parser, "__module__", "").endswith(".json_tools") or not start or not end:
            return None
        return ToolFormat(atom(tokenizer, llg, start), atom(tokenizer, llg, end))

    def processor_for(self, body: dict):
        if not constrains(body):
            return None
        tokenizer = self.model_provider.tokenizer
        if tokenizer is None:
            raise Refused("The model is still loading; try again in a moment.", "model",
                          "model_loading")  # fmt: skip
        llg = llg_tokenizer(tokenizer)
        grammar = output_grammar(body, tool_format(tokenizer, llg))
        if grammar is None:
            return None
        matcher = llguidance.LLMatcher(llg, grammar, log_level=0, limits=limits)
        if matcher.is_error():
            param = "response_format" if body.get("response_format") else "tools"
            reason = re.sub(r"^at \d+\(\d+\): ", "", matcher.get_error().split("\n")[0])
            raise Refused(f"The schema cannot be enforced: {reason[:1000]}", param)
        return GrammarProcessor(matcher, llg.vocab_size, llg.eos_token, mx=mx, np=np)

    def constrained_generate(self, request, generation_args, progress_callback=None):
        handler = getattr(_current, "handler", None)
        body = getattr(handler, "body", None)
        if handler is not None and request.request_type == "chat" and isinstance(body, dict):
            try:
                generation_args.portal_grammar = processor_for(self, body)
            except Refused as exc:
                _send_json(handler, 503 if exc.code == "model_loading" else 400, exc.as_dict())
                raise Answered from None
        return generate(self, request, generation_args, progress_callback)

    def make_logits_processors(args):
        processors = make_processors(args)
        grammar = getattr(args, "portal_grammar", None)
        return [*processors, grammar] if grammar is not None else processors

    generator.generate = constrained_generate
    server_module._make_logits_processors = make_logits_processors
    return True


# --- which stop word ended a reply -------------------------------------------------------------

_stops = threading.local()  # the handler thread's request: its stop words' tokens, its last tokens


def matched_stop(words: list[tuple[str, tuple[int, ...]]], tail: tuple[int, ...]) -> str | None:
    """The stop word whose tokens the generated tokens end with (`tail`: the last ones), or
    None. mlx_lm stops a reply on exactly that (each word encoded alone, matched on token
    ids: StopSequences), so this names the word it stopped on."""
    for word, ids in words:
        if ids and tail[-len(ids) :] == ids:
            return word
    return None


def tell_matched_stop(server_module) -> bool:
    """Give the final choice of a request with stop words a `stop_reason`: the stop word that
    ended the reply, or None. False (nothing changed) when mlx_lm is not the known one."""
    generator = getattr(server_module, "ResponseGenerator", None)
    handler = getattr(server_module, "APIHandler", None)
    generate = getattr(generator, "generate", None)
    respond = getattr(handler, "generate_response", None)
    if not callable(generate) or not callable(respond):
        return False

    def recording_generate(self, request, generation_args, progress_callback=None):
        _stops.words = None
        ctx, tokens = generate(self, request, generation_args, progress_callback)
        stop_words = getattr(generation_args, "stop_words", None) or ()
        tokenizer = self.model_provider.tokenizer
        words = [word for word in stop_words if isinstance(word, str) and word]
        if not words or tokenizer is None:
            return ctx, tokens
        encoded = [(w, tuple(tokenizer.encode(w, add_special_tokens=False))) for w in words]
        tail: collections.deque[int] = collections.deque(maxlen=max(len(i) for _, i in encoded))
        _stops.words, _stops.tail = encoded, tail

        def recorded():
            for response in tokens:
                tail.append(response.token)
                yield response

        return ctx, recorded()

    def telling_response(self, text, finish_reason, *args, **kwargs):
        response = respond(self, text, finish_reason, *args, **kwargs)
        words = getattr(_stops, "words", None)
        if finish_reason is not None and words is not None:
            matched = None if finish_reason == "length" else matched_stop(words, tuple(_stops.tail))
            response["choices"][0]["stop_reason"] = matched
        return response

    generator.generate = recording_generate
    handler.generate_response = telling_response
    return True


# --- reasoning tokens --------------------------------------------------------------------------

_reasoning = threading.local()  # the handler thread's request: how many reasoning tokens so far


def reasoning_token(before: str | None, after: str | None) -> bool:
    """Whether a token is spent on reasoning, from the states of mlx_lm's text state machine
    before and after its text: one generated while reasoning, or the one that starts it (the
    opening marker, or the prompt left it open) or ends it (the closing marker). A tool call
    begun inside the reasoning is not reasoning."""
    return after == "reasoning" or (before == "reasoning" and after == "normal")


def count_reasoning(server_module, text_state_machine) -> bool:
    """Count the reasoning tokens of each request to a model whose tokenizer thinks, and give
    its usage `completion_tokens_details.reasoning_tokens` (`text_state_machine`:
    mlx_lm.generate.TextStateMachine). False (nothing changed) when mlx_lm is not the known
    one."""
    generator = getattr(server_module, "ResponseGenerator", None)
    handler = getattr(server_module, "APIHandler", None)
    generate = getattr(generator, "generate", None)
    respond = getattr(handler, "generate_response", None)
    usage_response = getattr(handler, "completion_usage_response", None)
    split = getattr(text_state_machine, "split", None)
    if not all(callable(f) for f in (generate, respond, usage_response, split)):
        return False

    def counting_generate(self, request, generation_args, progress_callback=None):
        _reasoning.counter = None
        ctx, tokens = generate(self, request, generation_args, progress_callback)
        machine = getattr(ctx, "text_sm", None)
        if not getattr(ctx, "has_thinking", False) or machine is None:
            return ctx, tokens
        # The request's own copy of the state machine handle_completion runs on the same text.
        counter = _reasoning.counter = [0]
        state = machine.make_state(ctx.initial_state)

        def counted():
            nonlocal state
            for response in tokens:
                before = state[0]
                state, _ = split(state, response.text)
                if reasoning_token(before, state[0]):
                    counter[0] += 1
                yield response

        return ctx, counted()

    def with_reasoning(response: dict) -> dict:
        counter = getattr(_reasoning, "counter", None)
        usage = response.get("usage")
        if counter is not None and isinstance(usage, dict):
            usage["completion_tokens_details"] = {"reasoning_tokens": counter[0]}
        return response

    def counting_response(self, *args, **kwargs):
        return with_reasoning(respond(self, *args, **kwargs))

    def counting_usage_response(self, *args, **kwargs):
        return with_reasoning(usage_response(self, *args, **kwargs))

    generator.generate = counting_generate
    handler.generate_response = counting_response
    handler.completion_usage_response = counting_usage_response
    return True


# --- start-up ---------------------------------------------------------------------------------


def take_portal_options(argv: list[str]) -> tuple[dict[str, int], list[str]]:
    """The portal's own options out of `argv` (they are not mlx_lm.server's); SystemExit with
    a message for a bad value."""
    options: dict[str, int] = {}
    rest: list[str] = []
    items = iter(argv)
    for item in items:
        name, _, value = item.partition("=")
        if name != CONTEXT_OPTION:
            rest.append(item)
            continue
        value = value or next(items, "")
        if not value.isdigit() or int(value) < 1:
            raise SystemExit(f"{CONTEXT_OPTION} needs a positive whole number, not {value!r}")
        options["context"] = int(value)
    return options, rest


def main(argv: list[str]) -> None:
    # Here, not at the top: the portal imports this module (peer_closed, STATUS_PATH), and only
    # the model server's process must load mlx, mlx_lm and llguidance.
    import llguidance
    import llguidance.hf
    import mlx.core as mx
    import mlx_lm
    import mlx_lm.server as server
    import numpy as np

    options, argv = take_portal_options(argv)
    notes = []
    if admit_often(server):
        notes.append(
            f"new requests join the running batch every {ADMISSION_SLICE_SECONDS * 1e3:g} ms"
        )
    else:
        notes.append("mlx_lm's scheduler is not the known one: it admits as it ships")
    watched = watch_requests(server)
    notes.append("requests stop when their client leaves" if watched else
                 "requests are not watched (unknown handler)")  # fmt: skip
    if "context" in options:
        # The refusal is written through the handler that watch_requests keeps per thread.
        if watched and limit_context(server, options["context"]):
            notes.append(f"prompts of {options['context']} tokens or more are refused")
        else:
            notes.append("the context is not enforced (unknown tokenizing step)")
    if not tell_matched_stop(server):
        notes.append("the stop word that ended a reply is not told (unknown mlx_lm)")
    # mlx_lm's package attribute `generate` is its function, not this module
    generate_module = importlib.import_module("mlx_lm.generate")
    if not count_reasoning(server, getattr(generate_module, "TextStateMachine", None)):
        notes.append("reasoning tokens are not counted (unknown mlx_lm)")
    if watched and constrain_output(server, llguidance=llguidance, mx=mx, np=np):
        how = (
            "a batch's masks applied together"
            if batch_grammars(generate_module, mx=mx, np=np)
            else "masked row by row: mlx_lm's batch step is not the known one"
        )
        notes.append(
            f"response_format and forced tool calls are enforced (llguidance "
            f"{llguidance.__version__}; {how})"
        )
    else:
        notes.append("response_format is not enforced (unknown mlx_lm)")
    http.server.ThreadingHTTPServer.request_queue_size = LISTEN_BACKLOG
    versions = f"mlx-lm {mlx_lm.__version__}, mlx {mx.__version__}"
    fingerprint = "fp_" + hashlib.sha256(versions.encode()).hexdigest()[:10]
    server.get_system_fingerprint = lambda: fingerprint
    print(f"MLX Portal: mlx_lm.server; {'; '.join(notes)} (servers/supervision/mlx_entry.py)",
          file=sys.stderr, flush=True)  # fmt: skip
    sys.argv = ["mlx_lm.server", *argv]
    server.main()


if __name__ == "__main__":
    # This folder is sys.path[0]: its modules (models.py, tasks.py, …) must not shadow what
    # mlx_lm and its dependencies import.
    sys.path.pop(0)
    main(sys.argv[1:])
