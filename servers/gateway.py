"""The only code that speaks HTTP to `mlx_lm.server`.

- The readiness probe (a real one-token chat completion: the server loads its model on the
  first request, so an open port or `/health` saying "ok" prove nothing) and the liveness check
  used by the reconcile loop.
- The proxy of the OpenAI-compatible gateway and the chat page: `build_upstream_body` (the
  allow-list of what may reach a server), `send` (one request through a shared connection
  pool) and `Relay` (a response passed on event by event, measured as it goes).

See docs/gateway.md.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
from django.conf import settings

from servers.mlx_entry import peer_closed
from servers.validation import check_chat_template_args

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    detail: str = ""


def probe_ready(base_url: str, timeout: float = 30.0) -> ProbeResult:
    """Ask the server for a one-token chat completion; ok when it answers with a choice."""
    body = {
        "messages": [{"role": "user", "content": "ping"}],
        "max_tokens": 1,
        "temperature": 0.0,
        "stream": False,
    }
    try:
        # The shared pool: a bare httpx.post() builds a client, and its TLS context, each time
        # (~20 ms of CPU, taken from the model server that is starting on the same cores).
        response = client().post(f"{base_url}/v1/chat/completions", json=body, timeout=timeout)
    except httpx.TimeoutException:
        return ProbeResult(False, f"no answer within {timeout:g} s")
    except httpx.HTTPError as exc:
        return ProbeResult(False, f"cannot connect ({exc.__class__.__name__})")
    if response.status_code != 200:
        return ProbeResult(False, f"HTTP {response.status_code}: {response.text[:200]}")
    try:
        choices = response.json().get("choices")
    except ValueError:
        return ProbeResult(False, "the answer is not JSON")
    if not choices:
        return ProbeResult(False, "the answer has no choices")
    return ProbeResult(True, "answered a one-token chat completion")


PORT_POLL_INTERVAL = 0.025  # seconds between connection attempts to a starting server


def wait_for_port(
    base_url: str,
    timeout: float,
    *,
    interval: float = PORT_POLL_INTERVAL,
    keep_waiting: Callable[[], bool] | None = None,
) -> bool:
    """Try to connect to the server's port every `interval` s until it accepts (True), for
    at most `timeout` s, or until `keep_waiting()` (asked after each refusal) says no (False).

    A starting mlx_lm.server opens its port only once its model is loaded. A refused
    connection costs microseconds, so trying often notices that moment at once without
    competing for the CPU with the server; the readiness probe itself (a real completion)
    is sent only when the port accepts.
    """
    url = httpx.URL(base_url)
    address = (url.host, url.port or 80)
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(address, timeout=max(interval, 0.5)):
                return True
        except OSError:
            pass
        if keep_waiting is not None and not keep_waiting():
            return False
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(interval, left))


def check_alive(base_url: str, timeout: float = 3.0) -> ProbeResult:
    """The cheap liveness check: `GET /health` answers 200 (the HTTP loop and generator live)."""
    try:
        response = client().get(f"{base_url}/health", timeout=timeout)
    except httpx.TimeoutException:
        return ProbeResult(False, f"/health gave no answer within {timeout:g} s")
    except httpx.HTTPError as exc:
        return ProbeResult(False, f"/health: cannot connect ({exc.__class__.__name__})")
    if response.status_code != 200:
        return ProbeResult(False, f"/health answered HTTP {response.status_code}")
    return ProbeResult(True, "ok")


# --- errors ------------------------------------------------------------------------------------


class GatewayError(Exception):
    """A request the gateway answers with an error in OpenAI's shape."""

    def __init__(
        self, message: str, status: int = 400, *, param: str | None = None, code: str | None = None
    ):
        super().__init__(message)
        self.message = message
        self.status = status
        self.param = param
        self.code = code

    @property
    def type(self) -> str:
        if self.status == 401:
            return "authentication_error"
        if self.status == 403:
            return "permission_error"
        return "invalid_request_error" if self.status < 500 else "server_error"

    def as_dict(self) -> dict:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


def upstream_error(status: int, name: str, text: str = "") -> GatewayError:
    """The clean error for an upstream HTTP error (its raw `text` is logged, never forwarded)."""
    # mlx_lm.server answers 404 for any exception while it prepares a generation: its
    # generation thread is gone ("generation thread died"), or this request broke something
    # (a chat template that refuses the conversation, say). The portal only sends requests to
    # servers whose model answered the readiness probe, so the model itself is loaded.
    if status == 404 and "generation thread died" in text:
        return GatewayError(
            f"The model server of '{name}' is not ready: its generation thread stopped. "
            "Restart it on the Servers page and check its log.",
            503,
            code="server_not_ready",
        )
    if status in (400, 404, 422):
        return GatewayError(
            f"The model server of '{name}' could not process this request (for example the "
            "prompt is too long for the model, or a parameter is out of range for it).",
            400,
            code="upstream_rejected",
        )
    if status == 413:
        return GatewayError(
            "The request is too large for the model server.", 413, code="request_too_large"
        )
    return GatewayError(
        f"The model server of '{name}' failed (HTTP {status}). Try again; if it keeps "
        "failing, check its log on the Servers page.",
        502,
        code="upstream_error",
    )


# --- the request body: an allow-list ------------------------------------------------------------

ROLES = {"system", "user", "assistant", "tool", "developer"}
# OpenAI fields that are accepted and deliberately not passed on (mlx_lm.server has no use for
# them). Any other unknown field is dropped as well; these are just documented.
IGNORED_FIELDS = {
    "user",
    "metadata",
    "store",
    "parallel_tool_calls",
    "service_tier",
    "tool_choice",
    "reasoning_effort",
    "modalities",
}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)


def _token_id(key: str) -> int | None:
    """A logit_bias key as a token id (ASCII digits only), else None. Ids of more than 12
    digits count as 10**12: no model has that many tokens."""
    if not (key.isascii() and key.isdigit()):
        return None
    return int(key) if len(key) <= 12 else 10**12


def _number(body: dict, name: str, low: float, high: float) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if not _is_number(value) or not low <= value <= high:
        raise GatewayError(
            f"'{name}' must be a number from {low:g} to {high:g}.", param=name, code="invalid_value"
        )
    return value


def _integer(body: dict, name: str, low: int, high: int | None = None) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # JSON has one number type: 8.0 is the integer 8 (as JSON Schema says)
    if not _is_int(value) or value < low or (high is not None and value > high):
        limit = f"from {low} to {high}" if high is not None else f"of at least {low}"
        raise GatewayError(
            f"'{name}' must be an integer {limit}.", param=name, code="invalid_value"
        )
    return value


def _content_parts(content: list, index: int) -> list:
    parts = []
    for part in content:
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise GatewayError(
                f"messages[{index}].content parts must be objects with a 'type'.",
                param=f"messages[{index}].content",
                code="invalid_value",
            )
        if part["type"] in ("text", "input_text"):
            if not isinstance(part.get("text"), str):
                raise GatewayError(
                    f"messages[{index}].content text parts need a 'text' string.",
                    param=f"messages[{index}].content",
                    code="invalid_value",
                )
            parts.append({"type": "text", "text": part["text"]})
        else:
            raise GatewayError(
                f"messages[{index}] has a '{part['type'][:30]}' part: images, audio and video "
                "need a vision-capable server (mlx-vlm), which is not supported yet. Send text.",
                param=f"messages[{index}].content",
                code="unsupported_content",
            )
    return parts


def _messages(value: Any) -> list[dict]:
    if not isinstance(value, list) or not value:
        raise GatewayError(
            "'messages' must be a non-empty list of messages.",
            param="messages",
            code="invalid_value",
        )
    messages = []
    for index, message in enumerate(value):
        role = message.get("role") if isinstance(message, dict) else None
        if not isinstance(role, str) or role not in ROLES:
            raise GatewayError(
                f"messages[{index}] must be an object with a role of {', '.join(sorted(ROLES))}.",
                param=f"messages[{index}]",
                code="invalid_value",
            )
        role = "system" if role == "developer" else role
        content = message.get("content")
        if isinstance(content, list):
            content = _content_parts(content, index)
        elif content is not None and not isinstance(content, str):
            raise GatewayError(
                f"messages[{index}].content must be a string or a list of parts.",
                param=f"messages[{index}].content",
                code="invalid_value",
            )
        clean: dict[str, Any] = {"role": role, "content": content if content is not None else ""}
        for extra in ("name", "tool_call_id"):
            value = message.get(extra)
            if value is None:
                continue
            if not isinstance(value, str):
                raise GatewayError(
                    f"messages[{index}].{extra} must be a string.",
                    param=f"messages[{index}].{extra}",
                    code="invalid_value",
                )
            clean[extra] = value
        if message.get("tool_calls") is not None:
            clean["tool_calls"] = _tool_calls(message["tool_calls"], index)
        messages.append(clean)
    return messages


def _tool_calls(value: Any, index: int) -> list:
    """A message's earlier tool calls, as OpenAI sends them back. mlx_lm.server parses a string
    `arguments` as JSON, and its chat template reads an object. A model may have written
    arguments that are not JSON, and an agent sends them back as they were: such text reaches
    the template as text (sent JSON-encoded, so mlx_lm's parse gives the text back) rather
    than failing the conversation."""
    param = f"messages[{index}].tool_calls"
    problem = GatewayError(
        f'{param} must be a list of objects like {{"type": "function", "function": '
        f'{{"name": "…", "arguments": "{{…}}"}}}} (arguments: a JSON object, or a string).',
        param=param,
        code="invalid_value",
    )
    if not isinstance(value, list):
        raise problem
    calls = []
    for call in value:
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise problem
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            try:
                parsed = json.loads(arguments)
            except (ValueError, RecursionError):
                parsed = None
            if not isinstance(parsed, dict):
                call = {**call, "function": {**function, "arguments": json.dumps(arguments)}}
        elif arguments is not None and arguments != "" and not isinstance(arguments, dict):
            raise problem
        calls.append(call)
    return calls


# No tokenizer puts more characters than this in a token on average: a prompt longer than a
# model's context times this is refused before it reaches the server (which counts exactly,
# servers/mlx_entry.py, but must tokenize the prompt to do so, on the thread that generates
# for everyone).
MAX_CHARS_PER_TOKEN = 32


def _prompt_characters(out: dict) -> int:
    """The characters of the text a request sends to the model (its tools' JSON included)."""
    if "prompt" in out:
        return len(out["prompt"])
    total = 0
    for message in out["messages"]:
        content = message["content"]
        if isinstance(content, str):
            total += len(content)
        else:
            total += sum(len(part["text"]) for part in content)
    if tools := out.get("tools"):
        total += len(json.dumps(tools))
    return total


def _template_kwargs(value: Any, allowed: frozenset[str] | None) -> dict:
    """A request's `chat_template_kwargs`: simple values, bounded (servers/validation.py), and
    only the variables the model's chat template reads (`allowed`; None: not known here, the
    model's own host checks) or `enable_thinking`."""
    param = "chat_template_kwargs"
    if not isinstance(value, dict):
        raise GatewayError(f"'{param}' must be an object.", param=param, code="invalid_value")
    try:
        kwargs = check_chat_template_args(value)
    except ValueError as exc:
        raise GatewayError(f"'{param}': {exc}", param=param, code="invalid_value") from None
    if allowed is None:
        return kwargs
    allowed = allowed | {"enable_thinking"}
    if unknown := sorted(set(kwargs) - allowed):
        raise GatewayError(
            f"'{param}' may only set what this model's chat template reads "
            f"({', '.join(sorted(allowed))}); {', '.join(unknown[:5])[:200]} is not among them.",
            param=param,
            code="invalid_value",
        )
    return kwargs


def build_upstream_body(
    body: Any,
    *,
    endpoint: str,
    max_tokens_cap: int,
    vocab_size: int | None = None,
    context_length: int | None = None,
    template_variables: frozenset[str] | None = None,
) -> dict:
    """The body sent to mlx_lm.server for a client's `body`, or GatewayError (400).

    Only allow-listed fields pass; `model` becomes "default_model" (the server's own model:
    any other name would make mlx_lm.server load, or download, that model), `max_tokens` is
    capped by the profile's, and streams always ask for usage so tokens can be counted.
    What is known of the model (None: not known on this host) bounds the rest: `vocab_size`
    bounds `top_k` and `logit_bias`, `context_length` the prompt's length, and
    `template_variables` which `chat_template_kwargs` a request may set.
    """
    if not isinstance(body, dict):
        raise GatewayError("The request body must be a JSON object.", code="invalid_body")
    out: dict[str, Any] = {"model": "default_model"}
    if endpoint == "chat/completions":
        if "messages" not in body:
            raise GatewayError("'messages' is required.", param="messages", code="missing_field")
        out["messages"] = _messages(body["messages"])
    else:
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        if not isinstance(prompt, str) or not prompt:
            # An empty prompt gives the model no token to start from: mlx_lm.server drops the
            # connection without an answer (found by schemathesis).
            raise GatewayError(
                "'prompt' is required and must be a non-empty string.",
                param="prompt",
                code="invalid_value",
            )
        out["prompt"] = prompt

    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise GatewayError("'stream' must be true or false.", param="stream", code="invalid_value")
    out["stream"] = stream
    if stream:
        out["stream_options"] = {"include_usage": True}
    options = body.get("stream_options")
    if options is not None and (
        not isinstance(options, dict) or not isinstance(options.get("include_usage", False), bool)
    ):
        raise GatewayError(
            "'stream_options' must be an object like {\"include_usage\": true}.",
            param="stream_options",
            code="invalid_value",
        )

    for name, low, high in (
        ("temperature", 0, 2),
        ("top_p", 0, 1),
        ("min_p", 0, 1),
        ("presence_penalty", -2, 2),
        ("frequency_penalty", -2, 2),
        ("repetition_penalty", 0, 10),
    ):
        value = _number(body, name, low, high)
        if value is not None:
            out[name] = value
    top_k = _integer(body, "top_k", 0)
    if top_k is not None:
        # mlx_lm's sampler raises on a top_k of the vocabulary's size or more — in the server's
        # generation thread, which dies: the server then answers no one until it is restarted
        # (found by schemathesis). Such a top_k keeps every token, which is what 0 means.
        out["top_k"] = 0 if vocab_size is not None and top_k >= vocab_size else top_k
    # mlx.random.seed takes an unsigned 64-bit integer: a negative seed made mlx_lm.server drop
    # the connection without an answer (found by schemathesis).
    seed = _integer(body, "seed", 0, 2**64 - 1)
    if seed is not None:
        out["seed"] = seed

    requested = None
    for name in ("max_completion_tokens", "max_tokens"):
        value = _integer(body, name, 1)
        if value is not None and requested is None:
            requested = value
    out["max_tokens"] = min(requested or max_tokens_cap, max_tokens_cap)

    stop = body.get("stop")
    if stop is not None:
        if isinstance(stop, str):
            stop = [stop]
        if (
            not isinstance(stop, list)
            or len(stop) > 4
            or not all(isinstance(s, str) and s for s in stop)
        ):
            raise GatewayError(
                "'stop' must be a string or a list of up to 4 strings.",
                param="stop",
                code="invalid_value",
            )
        if stop:
            out["stop"] = stop

    bias = body.get("logit_bias")
    if bias is not None:
        if not isinstance(bias, dict) or not all(
            _token_id(k) is not None and _is_number(v) and -100 <= v <= 100 for k, v in bias.items()
        ):
            raise GatewayError(
                "'logit_bias' must map token ids (strings of digits) to numbers from -100 to 100.",
                param="logit_bias",
                code="invalid_value",
            )
        # A token the model does not have cannot be biased: such ids are left out. Sent on,
        # an id past the vocabulary or past int32 killed mlx_lm.server's generation thread,
        # and with it the server (found by schemathesis).
        tokens = vocab_size or 2**31
        bias = {k: v for k, v in bias.items() if _token_id(k) < tokens}
        if bias:
            out["logit_bias"] = {str(k): float(v) for k, v in bias.items()}

    logprobs = body.get("logprobs")
    if logprobs is not None:
        if not isinstance(logprobs, bool):
            raise GatewayError(
                "'logprobs' must be true or false.", param="logprobs", code="invalid_value"
            )
        out["logprobs"] = logprobs
    top_logprobs = _integer(body, "top_logprobs", 0, 10)
    if top_logprobs is not None:
        out["top_logprobs"] = top_logprobs

    n = body.get("n")
    if n is not None and (isinstance(n, bool) or n != 1):  # `true == 1` in Python
        raise GatewayError(
            "Only one choice per request is supported ('n' must be 1).",
            param="n",
            code="unsupported_value",
        )
    response_format = body.get("response_format")
    if response_format is not None and response_format != {"type": "text"}:
        raise GatewayError(
            "'response_format' other than text (JSON mode, JSON schema) is not supported by "
            "mlx_lm.server.",
            param="response_format",
            code="unsupported_value",
        )

    if endpoint == "chat/completions":
        tools = body.get("tools")
        if tools is not None:
            if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
                raise GatewayError(
                    "'tools' must be a list of tool objects.", param="tools", code="invalid_value"
                )
            if tools and body.get("tool_choice") != "none":
                out["tools"] = tools
        kwargs = body.get("chat_template_kwargs")
        if kwargs is not None:
            out["chat_template_kwargs"] = _template_kwargs(kwargs, template_variables)
    if context_length and (size := _prompt_characters(out)) > context_length * MAX_CHARS_PER_TOKEN:
        raise GatewayError(
            f"This model's maximum context length is {context_length:,} tokens, which holds "
            f"at most about {context_length * MAX_CHARS_PER_TOKEN:,} characters; the prompt "
            f"has {size:,}. Shorten the messages (or the prompt) and try again.",
            param="messages" if endpoint == "chat/completions" else "prompt",
            code="context_length_exceeded",
        )
    return out


# --- the connection pool -----------------------------------------------------------------------

_client: httpx.Client | None = None
_client_lock = threading.Lock()


def client() -> httpx.Client:
    """The one HTTP client of this process (a shared, thread-safe connection pool)."""
    global _client
    if _client is None:
        with _client_lock:
            if _client is None:
                limits = httpx.Limits(
                    max_connections=settings.GATEWAY_MAX_CONNECTIONS,
                    max_keepalive_connections=32,
                    keepalive_expiry=30,
                )
                # TCP_NODELAY: the request leaves in two writes (headers, body); the second
                # must not wait for the first's acknowledgement (Nagle).
                nodelay = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
                _client = httpx.Client(
                    transport=httpx.HTTPTransport(limits=limits, socket_options=nodelay),
                    timeout=httpx.Timeout(
                        connect=settings.GATEWAY_CONNECT_TIMEOUT,
                        read=settings.GATEWAY_READ_TIMEOUT,
                        write=30.0,
                        pool=30.0,
                    ),
                )
    return _client


def connections_in_use() -> int:
    """Connections to model servers that carry a request right now (0 when all are idle)."""
    direct = _direct_slots.open
    if _client is None:
        return direct
    pool = _client._transport._pool  # httpcore.ConnectionPool
    return direct + sum(1 for connection in pool.connections if not connection.is_idle())


class _DirectSlots:
    """The direct connections open now, at most GATEWAY_MAX_CONNECTIONS (as the pool's)."""

    def __init__(self) -> None:
        self.open = 0
        self._lock = threading.Lock()
        self._free: threading.Semaphore | None = None

    def take(self, timeout: float) -> bool:
        if self._free is None:
            with self._lock:
                if self._free is None:
                    self._free = threading.Semaphore(settings.GATEWAY_MAX_CONNECTIONS)
        if not self._free.acquire(timeout=timeout):
            return False
        with self._lock:
            self.open += 1
        return True

    def give_back(self) -> None:
        with self._lock:
            self.open -= 1
        self._free.release()


_direct_slots = _DirectSlots()


class _StreamCount:
    """How many API streams this process relays now (Relay.openai_stream), for pacing."""

    def __init__(self) -> None:
        self.open = 0
        self._lock = threading.Lock()

    def add(self, change: int) -> None:
        with self._lock:
            self.open += change


_streams = _StreamCount()


def stream_interval(base_ms: float, max_ms: float, streams: int) -> float:
    """Seconds between an API stream's writes after its first token: `base_ms` for one
    stream, growing with the `streams` this process relays, to at most `max_ms` (or base_ms,
    if larger). A process then wakes about as often for sixteen streams as for one: at
    c = 16 on two cores a fixed 10 ms gave ~one token a write (docs/benchmarks.md §1f)."""
    return min(max(base_ms, max_ms), base_ms * max(1, streams)) / 1000


# poll() flag for "the peer closed its end", without waking for data (Linux).
_POLLRDHUP: int | None = getattr(select, "POLLRDHUP", None)
# Where there is none (macOS): poll() for data with the socket's read low-water mark set this
# high says "closed" too, as a closed end is always readable; a pause gathers a few KB.
_LOW_WATER = 1 << 18


def wait_for_close(sock: socket.socket, seconds: float) -> None:
    """Wait up to `seconds` for the peer to close its end of `sock`, without waking for data
    that arrives meanwhile (it stays in the socket for the next read)."""
    if _POLLRDHUP is not None:
        poller = select.poll()
        try:
            poller.register(sock, _POLLRDHUP)
        except (OSError, ValueError):  # closed meanwhile: nothing to wait for
            return
        poller.poll(seconds * 1000)
        return
    wait_for_close_by_low_water(sock, seconds)


def wait_for_close_by_low_water(sock: socket.socket, seconds: float) -> None:
    """`wait_for_close` where poll() has no POLLRDHUP (macOS; Linux runs it in the tests):
    with `SO_RCVLOWAT` above what can gather, poll() reports the socket readable only once
    the peer has closed its end (or that much arrived). The mark is set back to 1 before
    returning, or a later blocking read would wait for that many bytes."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, _LOW_WATER)
    except OSError:  # not settable here: a plain wait, which may hold back a reply's end
        time.sleep(seconds)
        return
    try:
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        poller.poll(seconds * 1000)
    except (OSError, ValueError):  # closed meanwhile: nothing to wait for
        pass
    finally:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, 1)


def _sleep(seconds: float) -> None:
    """Relay pacing for a response that is not a local server's (another host's hop)."""
    if seconds > 0:
        time.sleep(seconds)


class ClientGone(Exception):
    """The client of a request closed its connection while the portal waited for the model
    server. The caller closes the upstream connection, so the server stops working on the
    request (servers/mlx_entry.py watches its connections), and records it as cancelled."""


# What poll() reports for a client that closed its end: POLLRDHUP (Linux) without waking for
# data; elsewhere POLLIN, and a peek tells the end of the connection from data.
_CLIENT_EVENTS = (_POLLRDHUP or select.POLLIN) | select.POLLHUP | select.POLLERR


class _Waiter:
    """Waits for data from a model server while watching the client of the request.

    `client_socket` is the web server's socket of the client's request (`gunicorn.socket`;
    None where the server does not give it, e.g. Django's development server: then only the
    write of the next event notices a client that left). A client that closes its connection
    ends the wait at once with ClientGone, even while the server is silent: reading a long
    prompt, or generating a non-streamed answer.
    """

    def __init__(self, upstream: socket.socket, client_socket: socket.socket | None):
        self._poller = select.poll()
        self._upstream = upstream.fileno()
        self._poller.register(self._upstream, select.POLLIN)
        self._client: socket.socket | None = None
        if client_socket is not None:
            try:
                self._poller.register(client_socket.fileno(), _CLIENT_EVENTS)
            except (OSError, ValueError):  # already closed: the first wait will tell
                return
            self._client = client_socket

    def wait(self, timeout: float) -> None:
        """Return once the server's socket has data (or is closed); raise ClientGone when the
        client left first, TimeoutError after `timeout` seconds of silence."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            ready = False
            for fd, _event in self._poller.poll(left * 1000):
                if fd == self._upstream:
                    ready = True
                elif self._client is not None:
                    if peer_closed(self._client):
                        raise ClientGone
                    # Data from the client (a pipelined request): it is there; stop watching
                    # it, or poll() would report it again at once.
                    self._poller.unregister(fd)
                    self._client = None
            if ready:
                return


class _DirectBody(httpx.SyncByteStream):
    """The body of a model server's answer, read from its socket as it arrives, for `send`.

    mlx_lm.server speaks HTTP/1.0 (and the hop is asked in HTTP/1.0): every answer closes its
    connection, so a pool has nothing to reuse, and a streamed token is one small read. Through
    httpx, httpcore and h11 such a read cost ~65 µs of CPU; `recv` on the socket ~30 µs
    (docs/benchmarks.md §1c). Socket errors become httpx's, so the callers' handling
    (time-outs, a server that died) is the same as for any httpx response; a client that left
    raises ClientGone.
    """

    def __init__(
        self, sock: socket.socket, waiter: _Waiter, rest: bytes, length: int | None
    ) -> None:
        self._sock = sock
        self._waiter = waiter
        self._rest = rest  # what came with the head
        self._left = length  # Content-Length, when the server sent one
        self._closed = False

    def pause(self, seconds: float) -> None:
        """Wait `seconds` for more of the answer to gather — less when the server has
        closed its end: the answer is complete (HTTP/1.0), so pacing (Relay.openai_stream)
        never holds back the end of a reply."""
        if seconds > 0:
            wait_for_close(self._sock, seconds)

    def __iter__(self) -> Iterator[bytes]:
        if self._rest:
            data, self._rest = self._rest, b""
            yield self._count(data)
        while self._left is None or self._left > 0:
            try:
                self._waiter.wait(settings.GATEWAY_READ_TIMEOUT)
                data = self._sock.recv(65536)
            except TimeoutError:
                raise httpx.ReadTimeout("the model server stopped sending") from None
            except OSError as exc:
                raise httpx.ReadError(repr(exc)) from None
            if not data:
                return
            yield self._count(data)

    def _count(self, data: bytes) -> bytes:
        if self._left is not None:
            data = data[: self._left]
            self._left -= len(data)
        return data

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._sock.close()
        finally:
            _direct_slots.give_back()


# A connection reset before the server answered a byte (a burst that overflowed its listen
# queue) is tried again, this many times in all, after a short pause: the server never saw the
# request.
SEND_ATTEMPTS = 3
_MAX_HEAD = 64 * 1024


class _Reset(Exception):
    """The connection was reset before any byte of an answer arrived."""


def _request_bytes(url: httpx.URL, endpoint: str, body: dict, headers: dict[str, str]) -> bytes:
    payload = json.dumps(body, separators=(",", ":"), allow_nan=False).encode()
    path = f"{url.raw_path.decode().split('?')[0].rstrip('/')}/v1/{endpoint}"
    lines = [
        f"POST {path} HTTP/1.0",
        f"Host: {url.host}:{url.port or 80}",
        "Content-Type: application/json",
        f"Content-Length: {len(payload)}",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload


def _read_head(sock: socket.socket, waiter: _Waiter) -> tuple[int, list[tuple[str, str]], bytes]:
    """The status, headers and the first bytes of the body of the server's answer."""
    data = b""
    while (end := data.find(b"\r\n\r\n")) < 0:
        if len(data) > _MAX_HEAD:
            raise httpx.RemoteProtocolError("the answer's head is too long")
        try:
            waiter.wait(settings.GATEWAY_READ_TIMEOUT)
            chunk = sock.recv(65536)
        except TimeoutError:
            raise httpx.ReadTimeout("no answer within the time-out") from None
        except (ConnectionResetError, ConnectionAbortedError, BrokenPipeError):
            if not data:
                raise _Reset from None
            raise httpx.ReadError("the connection was reset") from None
        except OSError as exc:
            raise httpx.ReadError(repr(exc)) from None
        if not chunk:
            raise httpx.RemoteProtocolError("the server closed the connection without an answer")
        data += chunk
    status_line, _, block = data[:end].partition(b"\r\n")
    parts = status_line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        raise httpx.RemoteProtocolError(f"not an HTTP answer: {status_line[:80]!r}")
    headers = []
    for line in block.split(b"\r\n"):
        name, colon, value = line.partition(b":")
        if colon:
            headers.append((name.strip().decode("latin-1"), value.strip().decode("latin-1")))
    return int(parts[1]), headers, data[end + 4 :]


def _exchange(
    address: tuple[str, int], request: bytes, client_socket: socket.socket | None
) -> httpx.Response:
    """One attempt: connect, send `request`, read the answer's head."""
    try:
        sock = socket.create_connection(address, timeout=settings.GATEWAY_CONNECT_TIMEOUT)
    except TimeoutError:
        raise httpx.ConnectTimeout("no connection within the time-out") from None
    except (ConnectionResetError, ConnectionAbortedError):
        raise _Reset from None
    except OSError as exc:
        raise httpx.ConnectError(repr(exc)) from None
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(30.0)  # a write that long means a server that reads nothing
        waiter = _Waiter(sock, client_socket)
        try:
            sock.sendall(request)
        except (ConnectionResetError, ConnectionAbortedError, BrokenPipeError):
            raise _Reset from None
        except TimeoutError:
            raise httpx.WriteTimeout("the server does not read the request") from None
        except OSError as exc:
            raise httpx.ConnectError(repr(exc)) from None
        status, headers, rest = _read_head(sock, waiter)
    except BaseException:
        sock.close()
        raise
    length = next((v for k, v in headers if k.lower() == "content-length"), None)
    size = int(length) if length is not None and length.isdigit() else None
    return httpx.Response(status, headers=headers, stream=_DirectBody(sock, waiter, rest, size))


def _send_direct(
    base_url: str,
    endpoint: str,
    body: dict,
    headers: dict[str, str] | None = None,
    client_socket: socket.socket | None = None,
) -> httpx.Response:
    """POST `body` to `base_url` (a local server, or another host's hop over plain HTTP) over
    a new connection (`_DirectBody`); the response's head is read, its body is not. Raises
    httpx's exceptions, as `client().send` does, and ClientGone."""
    url = httpx.URL(base_url)
    if not _direct_slots.take(timeout=30.0):  # as the pool's time-out
        raise httpx.PoolTimeout("all connections to model servers are in use")
    request = _request_bytes(url, endpoint, body, headers or {})
    address = (url.host, url.port or 80)
    try:
        for attempt in range(SEND_ATTEMPTS):
            try:
                return _exchange(address, request, client_socket)
            except _Reset:
                log.info("Connection to %s reset before an answer (try %d)", base_url, attempt + 1)
                time.sleep(0.02 * 2**attempt)
        raise httpx.ConnectError(f"the connection was reset {SEND_ATTEMPTS} times")
    except BaseException:
        _direct_slots.give_back()
        raise


def send(
    base_url: str,
    endpoint: str,
    body: dict,
    name: str,
    headers: dict[str, str] | None = None,
    client_socket: socket.socket | None = None,
) -> httpx.Response:
    """Send `body` to the server's `/v1/<endpoint>`; the response is streamed (not yet read).

    `headers` (the hop's token) mean `base_url` is another host's hop (servers/hop.py): its
    errors are already in OpenAI's shape and worded for the user, so they pass on as they are.
    `client_socket` is the socket of the client's own request, watched while the server is silent
    (ClientGone when it leaves; see `_Waiter`).
    Raises GatewayError (503) when the server cannot be reached, or for an HTTP error.
    The caller must close the response (Relay does).
    """
    try:
        if base_url.startswith("http://"):
            response = _send_direct(base_url, endpoint, body, headers, client_socket)
        else:  # another host's hop over HTTPS: the pooled client
            request = client().build_request(
                "POST", f"{base_url}/v1/{endpoint}", json=body, headers=headers
            )
            response = client().send(request, stream=True)
    except httpx.TimeoutException:
        raise GatewayError(
            f"The model server of '{name}' did not answer in time.", 504, code="upstream_timeout"
        ) from None
    except httpx.HTTPError as exc:
        log.warning("Cannot reach %s: %s", base_url, exc)
        raise GatewayError(
            f"The model server of '{name}' is not answering (it may be restarting). Try again "
            "in a moment.",
            503,
            code="server_unreachable",
        ) from None
    if response.status_code != 200:
        try:
            text = response.read()[:500].decode(errors="replace")
        except httpx.HTTPError:
            text = "(unreadable)"
        finally:
            response.close()
        log.warning("Model server %s answered HTTP %s: %s", base_url, response.status_code, text)
        if (error := _own_error(response.status_code, text, bool(headers))) is not None:
            raise error
        raise upstream_error(response.status_code, name, text)
    return response


def _own_error(status: int, text: str, from_hop: bool) -> GatewayError | None:
    """The error in OpenAI's shape that the portal's own code answered upstream, if it is one:
    another host's hop (worded for the user already), or the context check of the portal's
    model server entry point (servers/mlx_entry.py). mlx_lm's own errors are not: they are
    a plain string, and never forwarded."""
    try:
        error = json.loads(text).get("error")
    except (ValueError, AttributeError):
        return None
    if not isinstance(error, dict) or not isinstance(error.get("message"), str):
        return None
    code = error.get("code") if isinstance(error.get("code"), str) else None
    if not from_hop:
        if status == 400 and code == "context_length_exceeded":
            return GatewayError(error["message"][:500], 400, param="messages", code=code)
        return None
    if status == 401:  # our hop token was refused: a configuration problem, not the user's
        return GatewayError(
            "The host of this server refused the portal's hop token: MLX_PORTAL_HOP_SECRET "
            "differs between hosts (docs/hosts.md).",
            502,
            code="hop_refused",
        )
    return GatewayError(error["message"][:500], status, param=error.get("param"), code=code)


# --- relaying a response ------------------------------------------------------------------------


@dataclass
class Measure:
    """What the portal measured of one request (monotonic seconds; tokens from `usage`)."""

    sent_at: float = field(default_factory=time.monotonic)
    first_token_at: float | None = None
    finished_at: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    status: str = "ok"
    status_code: int = 200
    error_code: str = ""

    def token(self) -> None:
        if self.first_token_at is None:
            self.first_token_at = time.monotonic()

    def usage(self, usage: Any) -> None:
        if isinstance(usage, dict):
            self.prompt_tokens = int(usage.get("prompt_tokens") or 0)
            self.completion_tokens = int(usage.get("completion_tokens") or 0)

    def fail(self, error: GatewayError, status: str = "error") -> None:
        self.status, self.status_code, self.error_code = status, error.status, error.code or ""

    @property
    def ttft_ms(self) -> float | None:
        if self.first_token_at is None:
            return None
        return (self.first_token_at - self.sent_at) * 1000

    @property
    def duration_ms(self) -> float:
        return ((self.finished_at or time.monotonic()) - self.sent_at) * 1000


@dataclass(frozen=True)
class Event:
    """One server-sent event of an upstream stream: `raw` as received; `data` parsed."""

    raw: bytes
    data: dict | None = None
    done: bool = False


# How mlx_lm.server (json.dumps) writes the model every upstream body names (see
# build_upstream_body); an event without it exactly so is parsed and rewritten instead.
_UPSTREAM_MODEL = b'"model": "default_model"'


def has_token(chunk: dict) -> bool:
    """Whether a stream chunk carries generated text (content, reasoning, text or tool call)."""
    for choice in chunk.get("choices") or ():
        delta = choice.get("delta") or {}
        if delta.get("content") or delta.get("reasoning") or delta.get("reasoning_content"):
            return True
        if delta.get("tool_calls") or choice.get("text"):
            return True
    return False


def sse(data: dict | str, event: str | None = None) -> bytes:
    """One server-sent event."""
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {text}\n\n".encode()


class Relay:
    """An upstream response, passed on as it comes, measured, and closed exactly once.

    `events()` yields each server-sent event as soon as it arrives (streams); `json()` reads a
    whole answer (non-streamed). `close(status)` closes the upstream connection and calls
    `on_finish(measure)` once — from the caller's `finally`, so a client that went away
    (GeneratorExit) or a dead server still ends in a record.

    `still_allowed()`, when given, is asked between events at most once every
    `STREAM_ACCESS_CHECK_SECONDS`: when the caller was disabled or their key revoked meanwhile,
    the stream ends with GatewayError 403 `access_revoked`.
    """

    def __init__(
        self,
        response: httpx.Response,
        measure: Measure,
        name: str,
        on_finish: Callable[[Measure], None] | None = None,
        still_allowed: Callable[[], bool] | None = None,
    ):
        self.response = response
        self.measure = measure
        self.name = name
        self.on_finish = on_finish
        self.still_allowed = still_allowed
        self._checked_at = time.monotonic()
        self._closed = False
        self._counted = False  # in _streams (openai_stream), until close()

    def _check_access(self) -> None:
        if self.still_allowed is None:
            return
        now = time.monotonic()
        if now - self._checked_at < settings.STREAM_ACCESS_CHECK_SECONDS:
            return
        self._checked_at = now
        if not self.still_allowed():
            raise GatewayError(
                "Your access was revoked while the reply was streaming: the account is no "
                "longer approved or the API key was revoked.",
                403,
                code="access_revoked",
            )

    def events(self) -> Iterator[Event]:
        lines: list[str] = []
        try:
            for line in self.response.iter_lines():
                if line:
                    lines.append(line)
                    continue
                if not lines:
                    continue
                event, lines = self._event(lines), []
                self._check_access()
                yield event
                if event.done:
                    return
            if lines:
                event = self._event(lines)
                yield event
                if event.done:
                    return
        except httpx.TimeoutException:
            raise self._timeout() from None
        except httpx.HTTPError as exc:
            log.warning("Stream from %s broke: %r", self.name, exc)
        raise self._died()

    def openai_stream(
        self, model: str, include_usage: bool, chunk_object: str = "chat.completion.chunk"
    ) -> Iterator[bytes]:
        """The stream for an API client, as bytes, passed on as each read arrives.

        What the client gets is OpenAI's: `model` is `model` (the profile's slug), and the
        final usage-only chunk is sent only when the client asked for it (`include_usage`),
        with `object` set to `chunk_object`. Only what the portal needs is parsed: the events
        up to the first token (TTFT) and the usage chunk. Every other event is the server's
        bytes with its `"model": "default_model"` replaced, and the events of one read go out
        in one write: a relayed token costs a few bytes operations instead of a JSON round
        trip and a write each (docs/benchmarks.md §1). After the first token, writes are at
        least `stream_interval` apart: what arrived meanwhile leaves in one write (§1e, §1f).
        Raises GatewayError like `events()`.
        """
        model_field = b'"model": ' + json.dumps(model).encode()
        base, most = settings.GATEWAY_STREAM_INTERVAL_MS, settings.GATEWAY_STREAM_INTERVAL_MAX_MS
        pause = getattr(self.response.stream, "pause", _sleep)
        buffer = b""
        if not self._counted:
            self._counted = True
            _streams.add(1)  # until close()
        try:
            for data in self.response.iter_raw():
                buffer += data
                if b"\r" in buffer:  # SSE allows CRLF line ends; mlx_lm.server writes LF
                    buffer = buffer.replace(b"\r\n", b"\n")
                end = buffer.rfind(b"\n\n")
                if end < 0:
                    continue
                complete, buffer = buffer[:end], buffer[end + 2 :]
                out: list[bytes] = []
                done = False
                for raw in complete.split(b"\n\n"):
                    if not raw.strip(b"\n"):
                        continue
                    chunk, done = self._openai_event(raw, model, model_field, include_usage,
                                                     chunk_object)  # fmt: skip
                    if chunk:
                        out.append(chunk)
                    if done:
                        break
                if out:
                    written_at = time.monotonic()
                    yield b"".join(out)
                if done:
                    return
                self._check_access()
                if base and out and self.measure.first_token_at is not None:
                    # Let the next tokens gather upstream: one read and one write for all
                    # of them, instead of a thread wake-up and a write per token.
                    interval = stream_interval(base, most, _streams.open)
                    pause(written_at + interval - time.monotonic())
            if buffer.strip(b"\n"):
                chunk, done = self._openai_event(
                    buffer, model, model_field, include_usage, chunk_object
                )
                if chunk:
                    yield chunk
                if done:
                    return
        except httpx.TimeoutException:
            raise self._timeout() from None
        except httpx.HTTPError as exc:
            log.warning("Stream from %s broke: %r", self.name, exc)
        raise self._died()

    def _openai_event(
        self, raw: bytes, model: str, model_field: bytes, include_usage: bool, chunk_object: str
    ) -> tuple[bytes, bool]:
        """One upstream event (without its blank line) as the client gets it; and whether
        it ends the stream."""
        if (
            self.measure.first_token_at is not None
            and raw.startswith(b"data: {")
            and b"\n" not in raw
            and b'"usage"' not in raw
            and _UPSTREAM_MODEL in raw
        ):
            return raw.replace(_UPSTREAM_MODEL, model_field, 1) + b"\n\n", False
        event = self._event(raw.decode("utf-8", errors="replace").split("\n"))
        data = event.data
        if data is None:
            return event.raw, event.done  # keep-alive comments and [DONE]
        if "usage" in data and not data.get("choices"):
            if not include_usage:
                return b"", False
            data["object"] = chunk_object
        data["model"] = model
        return sse(data), False

    def _timeout(self) -> GatewayError:
        return GatewayError(
            f"The model server of '{self.name}' stopped sending for "
            f"{settings.GATEWAY_READ_TIMEOUT:g} s.",
            504,
            code="upstream_timeout",
        )

    def _died(self) -> GatewayError:
        # mlx_lm.server speaks HTTP/1.0: a process that dies just closes the connection, so a
        # stream without its final "[DONE]" is a broken one.
        return GatewayError(
            f"The model server of '{self.name}' stopped in the middle of the reply (it may "
            "have crashed).",
            502,
            code="upstream_died",
        )

    def _event(self, lines: list[str]) -> Event:
        raw = ("\n".join(lines) + "\n\n").encode()
        payload = "\n".join(line[5:].lstrip(" ") for line in lines if line.startswith("data:"))
        if not payload:
            return Event(raw)  # a comment such as ": keepalive 10/200"
        if payload.strip() == "[DONE]":
            return Event(raw, done=True)
        try:
            data = json.loads(payload)
        except ValueError:
            return Event(raw)
        if not isinstance(data, dict):
            return Event(raw)
        if has_token(data):
            self.measure.token()
        if data.get("usage"):
            self.measure.usage(data["usage"])
        return Event(raw, data)

    def json(self) -> dict:
        try:
            self.response.read()
            data = self.response.json()
        except httpx.TimeoutException:
            raise GatewayError(
                f"The model server of '{self.name}' did not answer within "
                f"{settings.GATEWAY_READ_TIMEOUT:g} s.",
                504,
                code="upstream_timeout",
            ) from None
        except (httpx.HTTPError, ValueError):
            raise GatewayError(
                f"The model server of '{self.name}' sent a broken answer.",
                502,
                code="upstream_error",
            ) from None
        if not isinstance(data, dict):
            raise GatewayError(
                f"The model server of '{self.name}' sent a broken answer.",
                502,
                code="upstream_error",
            )
        self.measure.usage(data.get("usage"))
        return data

    def close(self, status: str | None = None) -> None:
        if self._closed:
            return
        self._closed = True
        self.measure.finished_at = time.monotonic()
        if self._counted:
            _streams.add(-1)
        if status is not None:
            self.measure.status = status
        try:
            self.response.close()
        finally:
            if self.on_finish is not None:
                try:
                    self.on_finish(self.measure)
                except Exception:
                    log.exception("Recording the usage of a request to %s failed", self.name)
