"""The other APIs the gateway speaks, translated to and from chat completions: Anthropic's
Messages (`POST /v1/messages`, `/v1/messages/count_tokens`) and OpenAI's Responses
(`POST /v1/responses`). See docs/gateway.md, "Anthropic Messages and OpenAI Responses".

A dialect checks its request against its own table of fields (`Rule`s: types, bounds, sizes;
a field the real API does not have is refused with 400, as Anthropic and OpenAI refuse it),
turns it into a chat completions body — which then goes through schema.build_upstream_body and
calls.Call like any other — and turns the chat completion, or its stream of chunks, back into
its own shape. Pure work: no I/O, no database; the views (servers/gateway/views.py) send.
"""

from __future__ import annotations

import functools
import json
import math
import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from servers.gateway import images
from servers.gateway.errors import GatewayError
from servers.gateway.relay import sse

# Bounds of what a translated request may hold. Messages, content blocks and texts are bounded
# by the body's size (GATEWAY_MAX_BODY_BYTES, checked before it is parsed) and the model's
# context (schema.py, then the model server).
MAX_TOOLS = 128
MAX_STOP_SEQUENCES = 4  # what the chat completions endpoint (and mlx_lm.server) takes
TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
DATA_URL = re.compile(r"^data:([\w/+.-]+);base64,")
BASE64 = re.compile(r"^[A-Za-z0-9+/]*={0,2}$")

# mlx_lm.server's finish_reason → Anthropic's stop_reason. A stop word and the end-of-turn token
# are both "stop": which stop word ended a reply, if one did, is the choice's `stop_reason` (the
# portal's server entry adds it, as vLLM names it: servers/supervision/mlx_entry.py change 8).
STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}


def _invalid(message: str, param: str, code: str = "invalid_value") -> GatewayError:
    return GatewayError(message, param=param, code=code)


def _new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


# --- the table of fields ----------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """One top-level field of a request: its JSON type(s), bounds and size. `ignored`: accepted
    (the real API has it) and not used here."""

    kinds: tuple[type, ...]
    low: float | None = None
    high: float | None = None
    required: bool = False
    max_items: int | None = None  # strings: characters; lists: items; objects: keys
    ignored: bool = False
    choices: frozenset[str] | None = None
    integer: bool = False

    def check(self, name: str, value: Any) -> Any:
        """`value` if it fits the rule (8.0 read as 8 for an integer), else GatewayError 400."""
        if self.integer and isinstance(value, float) and value.is_integer():
            value = int(value)
        kinds = " or ".join(_KIND_NAMES[k] for k in self.kinds)
        if isinstance(value, bool) and bool not in self.kinds:
            raise _invalid(f"'{name}' must be {kinds}.", name)
        if not isinstance(value, self.kinds):
            raise _invalid(f"'{name}' must be {kinds}.", name)
        if isinstance(value, int | float) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise _invalid(f"'{name}' must be a finite number.", name)
            if (self.low is not None and value < self.low) or (
                self.high is not None and value > self.high
            ):
                high = f"{self.high:g}" if self.high is not None else "any"
                raise _invalid(f"'{name}' must be from {self.low or 0:g} to {high}.", name)
        size = len(value) if isinstance(value, str | list | dict) else 0
        if self.max_items is not None and size > self.max_items:
            raise _invalid(f"'{name}' may hold at most {self.max_items:,} items.", name)
        if self.choices is not None and isinstance(value, str) and value not in self.choices:
            raise _invalid(f"'{name}' must be one of {', '.join(sorted(self.choices))}.", name)
        return value


_KIND_NAMES = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "true or false",
    list: "a list",
    dict: "an object",
    type(None): "null",
}
NUMBER = (int, float)


def read_fields(body: Any, table: dict[str, Rule], api: str) -> dict:
    """The fields of `body` the dialect uses (checked by `table`), or GatewayError 400: not an
    object, a required field missing, a field `api` does not have, a value out of bounds."""
    if not isinstance(body, dict):
        raise GatewayError("The request body must be a JSON object.", code="invalid_body")
    if unknown := sorted(name for name in body if name not in table):
        names = ", ".join(repr(name[:40]) for name in unknown[:5])
        raise _invalid(
            f"Unknown field {names}: {api} has no such field here (the fields this gateway "
            "takes are in /v1/openapi.json).",
            unknown[0][:40],
            "unknown_field",
        )
    checked = {}
    for name, rule in table.items():
        value = body.get(name)
        if value is None:
            if rule.required:
                raise _invalid(f"'{name}' is required.", name, "missing_field")
            continue
        value = rule.check(name, value)
        if not rule.ignored:
            checked[name] = value
    return checked


def _text(value: Any, param: str) -> str:
    if not isinstance(value, str):
        raise _invalid(f"'{param}' must be a string.", param)
    return value


def _items(value: Any, param: str) -> list:
    if not isinstance(value, list):
        raise _invalid(f"'{param}' must be a list.", param)
    return value


def _object(value: Any, param: str) -> dict:
    if not isinstance(value, dict):
        raise _invalid(f"'{param}' must be an object.", param)
    return value


def _image_part(media_type: Any, data: Any, param: str) -> dict:
    """A chat completions image part for base64 image data (its declared type and alphabet
    checked here; the image itself, as every image, by servers/gateway/images.py when the
    request is built for the vision server)."""
    if not isinstance(media_type, str) or media_type not in IMAGE_TYPES:
        raise _invalid(
            f"The image in '{param}' is of type {str(media_type)[:40]}; accepted: "
            f"{images.ACCEPTED} ({', '.join(sorted(IMAGE_TYPES))}).",
            param,
            "invalid_image",
        )
    if not isinstance(data, str) or not data or not BASE64.match(data):
        raise _invalid(f"'{param}' must hold the image as base64 data.", param, "invalid_image")
    return {"type": "image_url", "image_url": {"url": f"data:{media_type};base64,{data}"}}


def _not_fetched(param: str, what: str) -> GatewayError:
    """The refusal of an image given by reference (`what`: a URL, a file id)."""
    return _invalid(
        f"The image in '{param}' is {what}: the portal never fetches URLs or files for a "
        f"client. Send the image itself as base64 ({images.ACCEPTED}).",
        param,
        "unsupported_content",
    )


def _unsupported(param: str, what: Any, noun: str, takes: str) -> GatewayError:
    """The refusal of a content block or part of a kind the gateway does not take."""
    return _invalid(
        f"'{param}' is a {str(what)[:40]!r} {noun}, which is not supported here ({takes}).",
        param,
        "unsupported_content",
    )


def _chat_content(parts: list[dict]) -> tuple[str | list[dict], bool]:
    """Parts as a chat message's content (the parts when they hold images, else their text
    joined), and whether they hold images."""
    with_images = any(part["type"] == "image_url" for part in parts)
    return (parts if with_images else "".join(part["text"] for part in parts)), with_images


def _tool_function(name: Any, description: Any, parameters: Any, param: str) -> dict:
    if not isinstance(name, str) or not TOOL_NAME.match(name):
        raise _invalid(
            f"'{param}.name' must be 1 to 64 letters, digits, '_' or '-'.", f"{param}.name"
        )
    function: dict[str, Any] = {"name": name}
    if description is not None:
        function["description"] = _text(description, f"{param}.description")
    function["parameters"] = _object(
        parameters if parameters is not None else {"type": "object"}, f"{param}.parameters"
    )
    return {"type": "function", "function": function}


def _json_schema_format(schema: Any, name: Any, strict: Any, param: str) -> dict:
    """A chat completions `response_format` asking replies that validate against `schema`."""
    if name is not None and not (isinstance(name, str) and TOOL_NAME.match(name)):
        raise _invalid(f"'{param}.name' must be 1 to 64 letters, digits, '_' or '-'.", param)
    spec: dict[str, Any] = {
        "name": name or "output",
        "schema": _object(schema, f"{param}.schema"),
    }
    if strict is not None:
        if not isinstance(strict, bool):
            raise _invalid(f"'{param}.strict' must be true or false.", f"{param}.strict")
        spec["strict"] = strict
    return {"type": "json_schema", "json_schema": spec}


def _arguments(text: Any) -> dict:
    """A tool call's arguments (a JSON string from the server) as an object ({} when they are not
    one: a model can write anything)."""
    try:
        value = json.loads(text) if isinstance(text, str) and text else {}
    except (ValueError, RecursionError):
        return {}
    return value if isinstance(value, dict) else {}


@dataclass
class Translated:
    """A dialect's request as chat completions: the `body` to send, whether it holds images
    (only a vision server takes them), what the answer echoes, and where each of the body's
    messages came from in the request (`places[i]`, e.g. "messages[2]" or "input[0]")."""

    body: dict
    images: bool = False
    echo: dict = field(default_factory=dict)
    places: list[str] = field(default_factory=list)

    def located(self, error: GatewayError) -> GatewayError:
        """`error`, about the body's `messages[i]` (an image refused when the body is built for
        the server, …), naming the place in the request the client sent instead."""

        def place(match: re.Match) -> str:
            index = int(match.group(1))
            return self.places[index] if index < len(self.places) else match.group(0)

        error.message = _CHAT_MESSAGE.sub(place, error.message)
        if isinstance(error.param, str):
            error.param = _CHAT_MESSAGE.sub(place, error.param)
        return error


_CHAT_MESSAGE = re.compile(r"\bmessages\[(\d+)\]")


# --- Anthropic Messages ------------------------------------------------------------------------

ANTHROPIC = "Anthropic's Messages API"

MESSAGES_FIELDS: dict[str, Rule] = {
    "model": Rule((str,), required=True, max_items=200),
    "messages": Rule((list,), required=True),
    "max_tokens": Rule((int,), low=1, required=True, integer=True),
    "system": Rule((str, list)),
    "stop_sequences": Rule((list,), max_items=MAX_STOP_SEQUENCES),
    "stream": Rule((bool,)),
    "temperature": Rule(NUMBER, low=0, high=1),
    "top_p": Rule(NUMBER, low=0, high=1),
    "top_k": Rule((int,), low=0, integer=True),
    "tools": Rule((list,), max_items=MAX_TOOLS),
    "tool_choice": Rule((dict,)),
    "thinking": Rule((dict,)),
    "output_config": Rule((dict,)),
    # Accepted, not used: who the caller is, caching hints, Anthropic's own service options.
    "metadata": Rule((dict,), ignored=True, max_items=16),
    "service_tier": Rule((str,), ignored=True, max_items=40),
    "cache_control": Rule((dict,), ignored=True),
    "inference_geo": Rule((str,), ignored=True, max_items=40),
    "speed": Rule((str,), ignored=True, max_items=40),
    "diagnostics": Rule((dict,), ignored=True),
    "user_profile_id": Rule((str,), ignored=True, max_items=256),
    "workspace_id": Rule((str,), ignored=True, max_items=256),
}
# count_tokens takes the conversation, not how to answer it.
COUNT_FIELDS: dict[str, Rule] = {
    name: rule
    for name, rule in MESSAGES_FIELDS.items()
    if name not in {"max_tokens", "stop_sequences", "stream", "temperature", "top_p", "top_k",
                    "metadata", "service_tier", "inference_geo", "speed", "diagnostics",
                    "user_profile_id", "workspace_id"}
}  # fmt: skip


def messages_request(body: Any, *, counting: bool = False) -> Translated:
    """An Anthropic Messages request (or a count_tokens one) as chat completions."""
    fields = read_fields(body, COUNT_FIELDS if counting else MESSAGES_FIELDS, ANTHROPIC)
    chat: list[dict] = []
    places: list[str] = []
    has_images = False
    if "system" in fields:
        chat.append({"role": "system", "content": _anthropic_text(fields["system"], "system")})
        places.append("system")
    if not fields["messages"]:
        raise _invalid("'messages' must hold at least one message.", "messages")
    for index, message in enumerate(fields["messages"]):
        added, with_images = _anthropic_message(message, f"messages[{index}]")
        chat.extend(added)
        places += [f"messages[{index}]"] * len(added)
        has_images = has_images or with_images
    out: dict[str, Any] = {"model": fields["model"], "messages": chat}
    if counting:
        out["max_tokens"] = 1
    else:
        out["max_tokens"] = fields["max_tokens"]
        out["stream"] = fields.get("stream", False)
        for name in ("temperature", "top_p", "top_k"):
            if name in fields:
                out[name] = fields[name]
        if stops := fields.get("stop_sequences"):
            out["stop"] = [_text(s, "stop_sequences") for s in stops]
            if not all(out["stop"]):
                raise _invalid("'stop_sequences' may not hold an empty string.", "stop_sequences")
    if tools := fields.get("tools"):
        out["tools"] = [_anthropic_tool(tool, f"tools[{i}]") for i, tool in enumerate(tools)]
    if "tool_choice" in fields:
        _anthropic_tool_choice(fields["tool_choice"], out)
    thinking = True  # the model's own default: a model that reasons shows its thinking
    if "thinking" in fields:
        kind = fields["thinking"].get("type")
        if kind not in ("enabled", "disabled", "adaptive"):
            raise _invalid("'thinking.type' must be enabled, adaptive or disabled.", "thinking")
        thinking = kind != "disabled"
        out["chat_template_kwargs"] = {"enable_thinking": thinking}
    config = fields.get("output_config", {})
    if config.get("effort") is not None and not isinstance(config["effort"], str):
        raise _invalid("'output_config.effort' must be a string.", "output_config")
    if (fmt := config.get("format")) is not None:
        fmt = _object(fmt, "output_config.format")
        if fmt.get("type") != "json_schema":
            raise _invalid("'output_config.format.type' must be json_schema.", "output_config")
        out["response_format"] = _json_schema_format(
            fmt.get("schema"), "output", True, "output_config.format"
        )
    echo = {"stop_sequences": fields.get("stop_sequences") or [], "thinking": thinking}
    return Translated(out, has_images, echo, places)


def _anthropic_text(value: Any, param: str) -> str:
    """A string, or text blocks joined (system prompts, tool results)."""
    if isinstance(value, str):
        return value
    texts = []
    for index, block in enumerate(_items(value, param)):
        if not isinstance(block, dict) or block.get("type") != "text":
            raise _invalid(f"'{param}[{index}]' must be a text block.", param)
        texts.append(_text(block.get("text"), f"{param}[{index}].text"))
    return "\n\n".join(texts)


def _anthropic_message(message: Any, param: str) -> tuple[list[dict], bool]:
    """One Anthropic message as chat messages (a user's tool results are tool messages, before
    the rest of what they say); whether it holds images."""
    message = _object(message, param)
    role = message.get("role")
    if role not in ("user", "assistant"):
        raise _invalid(f"'{param}.role' must be user or assistant.", f"{param}.role")
    content = message.get("content")
    if isinstance(content, str):
        return [{"role": role, "content": content}], False
    blocks = _items(content, f"{param}.content")
    tool_messages: list[dict] = []
    parts: list[dict] = []
    calls: list[dict] = []
    for index, block in enumerate(blocks):
        where = f"{param}.content[{index}]"
        block = _object(block, where)
        kind = block.get("type")
        if kind == "text":
            parts.append({"type": "text", "text": _text(block.get("text"), f"{where}.text")})
        elif kind == "image" and role == "user":
            source = _object(block.get("source"), f"{where}.source")
            if source.get("type") != "base64":
                url = source.get("url")
                raise _not_fetched(f"{where}.source", f"a link ({url[:60]})" if isinstance(
                    url, str) else f"a {str(source.get('type'))[:20]!r} source")  # fmt: skip
            parts.append(_image_part(source.get("media_type"), source.get("data"), where))
        elif kind == "tool_use" and role == "assistant":
            name = block.get("name")
            if not isinstance(name, str) or not TOOL_NAME.match(name):
                raise _invalid(f"'{where}.name' must be a tool's name.", f"{where}.name")
            arguments = json.dumps(_object(block.get("input", {}), f"{where}.input"))
            calls.append({
                "id": _text(block.get("id"), f"{where}.id"), "type": "function",
                "function": {"name": name, "arguments": arguments},
            })  # fmt: skip
        elif kind == "tool_result" and role == "user":
            result = block.get("content")
            text = _anthropic_text(result if result is not None else "", f"{where}.content")
            is_error = block.get("is_error")
            if is_error is not None and not isinstance(is_error, bool):
                raise _invalid(f"'{where}.is_error' must be true or false.", f"{where}.is_error")
            if is_error:
                text = f"Error: {text}"
            tool_call_id = _text(block.get("tool_use_id"), f"{where}.tool_use_id")
            tool_messages.append({"role": "tool", "tool_call_id": tool_call_id, "content": text})
        elif kind in ("thinking", "redacted_thinking") and role == "assistant":
            continue  # earlier reasoning: templates drop it too
        else:
            raise _unsupported(where, kind, f"block in a {role} message",
                               "text, image (user, base64), tool_use (assistant), tool_result "
                               "(user)")  # fmt: skip
    content, with_images = _chat_content(parts)
    chat = list(tool_messages)
    if role == "assistant":
        reply: dict[str, Any] = {"role": "assistant", "content": content}
        if calls:
            reply["tool_calls"] = calls
        chat.append(reply)
    elif parts or not tool_messages:
        chat.append({"role": "user", "content": content})
    return chat, with_images


def _anthropic_tool(tool: Any, param: str) -> dict:
    tool = _object(tool, param)
    if tool.get("type") not in (None, "custom"):
        raise _invalid(
            f"'{param}' is Anthropic's server tool {str(tool.get('type'))[:40]!r}, which this "
            "gateway does not run: describe your own tools with name, description and "
            "input_schema.",
            param,
            "unsupported_value",
        )
    schema = tool.get("input_schema")
    return _tool_function(tool.get("name"), tool.get("description"), schema, param)


def _anthropic_tool_choice(choice: dict, out: dict) -> None:
    kind = choice.get("type")
    if kind == "auto":
        out["tool_choice"] = "auto"
    elif kind == "any":
        out["tool_choice"] = "required"
    elif kind == "none":
        out["tool_choice"] = "none"
    elif kind == "tool":
        name = choice.get("name")
        if not isinstance(name, str) or not name:
            raise _invalid("'tool_choice.name' must name one of 'tools'.", "tool_choice")
        out["tool_choice"] = {"type": "function", "function": {"name": name}}
    else:
        raise _invalid("'tool_choice.type' must be auto, any, tool or none.", "tool_choice")
    parallel = choice.get("disable_parallel_tool_use")
    if parallel is not None and not isinstance(parallel, bool):
        raise _invalid("'tool_choice.disable_parallel_tool_use' must be true or false.",
                       "tool_choice")  # fmt: skip
    if parallel:
        out["parallel_tool_calls"] = False


def reasoning_of(message: dict) -> str:
    """The reasoning of a chat completion's message or delta: mlx_lm.server's `reasoning` (the
    text between the model's thinking markers), or `reasoning_content` as other servers name it."""
    text = message.get("reasoning") or message.get("reasoning_content")
    return text if isinstance(text, str) else ""


def anthropic_stop(choice: dict, echo: dict) -> tuple[str, str | None]:
    """Anthropic's `stop_reason` and `stop_sequence` for a chat completion's final choice: the
    stop sequence the model server says matched (`stop_reason`, a string), when it is one of
    the request's."""
    finish, matched = choice.get("finish_reason") or "stop", choice.get("stop_reason")
    if finish == "stop" and isinstance(matched, str) and matched in echo.get("stop_sequences", ()):
        return "stop_sequence", matched
    return STOP_REASONS.get(finish, "end_turn"), None


def message_answer(chat: dict, model: str, echo: dict) -> dict:
    """A chat completion as an Anthropic message (the model's reasoning as a thinking block
    first, unless the request turned thinking off)."""
    choice = (chat.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    content: list[dict] = []
    if (thought := reasoning_of(message)) and echo.get("thinking", True):
        content.append({"type": "thinking", "thinking": thought, "signature": ""})
    if message.get("content"):
        content.append({"type": "text", "text": message["content"]})
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        content.append({
            "type": "tool_use", "id": call.get("id") or _new_id("toolu"),
            "name": function.get("name", ""), "input": _arguments(function.get("arguments")),
        })  # fmt: skip
    usage = chat.get("usage") or {}
    stop_reason, stop_sequence = anthropic_stop(choice, echo)
    return {
        "id": _new_id("msg"),
        "type": "message",
        "role": "assistant",
        "content": content,
        "model": model,
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": _message_usage(usage),
    }


def anthropic_error(error: GatewayError) -> dict:
    """A gateway error in Anthropic's shape."""
    return {"type": "error", "error": {"type": ANTHROPIC_TYPES.get(error.status, _server_type(
        error.status)), "message": error.message}}  # fmt: skip


ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    529: "overloaded_error",
}


def _server_type(status: int) -> str:
    return "invalid_request_error" if status < 500 else "api_error"


def _deltas(chunk: dict, usage: dict) -> Iterator[tuple[dict, dict]]:
    """The choices of a stream's chunk, each with its delta; its usage, if any, kept in
    `usage`."""
    if isinstance(chunk.get("usage"), dict):
        usage.update(chunk["usage"])
    for choice in chunk.get("choices") or ():
        yield choice, choice.get("delta") or {}


class MessageEvents:
    """Anthropic's event stream for a chat completion's chunks: message_start, then per content
    block content_block_start (a ping after the first), its deltas (thinking_delta, text_delta,
    input_json_delta) and content_block_stop, then message_delta (stop_reason, stop_sequence,
    usage) and message_stop."""

    def __init__(self, model: str, echo: dict):
        self.model, self.echo = model, echo
        self.id = _new_id("msg")
        self.index = -1  # of the open content block
        self.open: str | None = None  # its type
        self.pinged = False
        self.last: dict = {}  # the choice that ended the reply
        self.usage: dict = {}

    def start(self) -> bytes:
        return self._event("message_start", {"message": {
            "id": self.id, "type": "message", "role": "assistant", "content": [],
            "model": self.model, "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }})  # fmt: skip

    def chunk(self, data: dict) -> bytes:
        out: list[bytes] = []
        for choice, delta in _deltas(data, self.usage):
            if (thought := reasoning_of(delta)) and self.echo.get("thinking", True):
                if self.open != "thinking":
                    out += self._begin({"type": "thinking", "thinking": "", "signature": ""})
                out.append(self._delta({"type": "thinking_delta", "thinking": thought}))
            if text := delta.get("content"):
                if self.open != "text":
                    out += self._begin({"type": "text", "text": ""})
                out.append(self._delta({"type": "text_delta", "text": text}))
            for call in delta.get("tool_calls") or ():
                function = call.get("function") or {}
                out += self._begin({
                    "type": "tool_use", "id": call.get("id") or _new_id("toolu"),
                    "name": function.get("name", ""), "input": {},
                })  # fmt: skip
                arguments = function.get("arguments") or ""
                out.append(self._delta({"type": "input_json_delta", "partial_json": arguments}))
                out += self._end()
            if choice.get("finish_reason"):
                self.last = choice
        return b"".join(out)

    def end(self) -> bytes:
        out = self._end()
        stop_reason, stop_sequence = anthropic_stop(self.last, self.echo)
        out.append(self._event("message_delta", {
            "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
            "usage": _message_usage(self.usage),
        }))  # fmt: skip
        out.append(self._event("message_stop", {}))
        return b"".join(out)

    def error(self, error: GatewayError) -> bytes:
        return sse(anthropic_error(error), "error")

    def _begin(self, block: dict) -> list[bytes]:
        out = self._end()
        self.index += 1
        self.open = block["type"]
        start = {"index": self.index, "content_block": block}
        out.append(self._event("content_block_start", start))
        if not self.pinged:
            self.pinged = True
            out.append(self._event("ping", {}))
        return out

    def _delta(self, delta: dict) -> bytes:
        return self._event("content_block_delta", {"index": self.index, "delta": delta})

    def _end(self) -> list[bytes]:
        if self.open is None:
            return []
        self.open = None
        return [self._event("content_block_stop", {"index": self.index})]

    @staticmethod
    def _event(kind: str, data: dict) -> bytes:
        return sse({"type": kind, **data}, kind)


# --- OpenAI Responses --------------------------------------------------------------------------

RESPONSES = "OpenAI's Responses API"

RESPONSES_FIELDS: dict[str, Rule] = {
    "model": Rule((str,), required=True, max_items=200),
    "input": Rule((str, list), required=True),
    "instructions": Rule((str,)),
    "max_output_tokens": Rule((int,), low=1, integer=True),
    "temperature": Rule(NUMBER, low=0, high=2),
    "top_p": Rule(NUMBER, low=0, high=1),
    "tools": Rule((list,), max_items=MAX_TOOLS),
    "tool_choice": Rule((str, dict), max_items=40),
    "text": Rule((dict,)),
    "stream": Rule((bool,)),
    "store": Rule((bool,)),  # accepted; nothing is kept either way (the answer says store: false)
    "metadata": Rule((dict,), max_items=16),
    "parallel_tool_calls": Rule((bool,)),
    "previous_response_id": Rule((str,), max_items=200),
    # Accepted, not used.
    "user": Rule((str,), ignored=True, max_items=256),
    "safety_identifier": Rule((str,), ignored=True, max_items=256),
    "prompt_cache_key": Rule((str,), ignored=True, max_items=256),
    "service_tier": Rule((str,), ignored=True, max_items=40),
    "include": Rule((list,), ignored=True, max_items=16),
    "reasoning": Rule((dict,), ignored=True),
    "truncation": Rule((str,), ignored=True, choices=frozenset({"auto", "disabled"})),
    "stream_options": Rule((dict,), ignored=True),
}


def responses_request(body: Any) -> Translated:
    """An OpenAI Responses request as chat completions (stateless: nothing is kept, so an
    earlier response cannot be continued)."""
    fields = read_fields(body, RESPONSES_FIELDS, RESPONSES)
    if "previous_response_id" in fields:
        raise _invalid(
            "'previous_response_id' is not supported: this gateway keeps no responses (store "
            "is always false). Send the whole conversation in 'input'.",
            "previous_response_id",
            "unsupported_value",
        )
    chat: list[dict] = []
    places: list[str] = []
    if "instructions" in fields:
        chat.append({"role": "system", "content": fields["instructions"]})
        places.append("instructions")
    has_images = False
    items = fields["input"]
    if isinstance(items, str):
        chat.append({"role": "user", "content": items})
        places.append("input")
    else:
        if not items:
            raise _invalid("'input' must be a string or a non-empty list of items.", "input")
        for index, item in enumerate(_items(items, "input")):
            has_images = _response_item(item, f"input[{index}]", chat) or has_images
            places += [f"input[{index}]"] * (len(chat) - len(places))
        if not any(message["role"] in ("user", "assistant", "tool") for message in chat):
            raise _invalid(
                "'input' needs a message or a function call output to answer, not only "
                "reasoning or instructions.",
                "input",
            )
    out: dict[str, Any] = {"model": fields["model"], "messages": chat}
    out["stream"] = fields.get("stream", False)
    if "max_output_tokens" in fields:
        out["max_tokens"] = fields["max_output_tokens"]
    for name in ("temperature", "top_p"):
        if name in fields:
            out[name] = fields[name]
    tools = [_response_tool(tool, f"tools[{i}]") for i, tool in enumerate(fields.get("tools", []))]
    if tools:
        out["tools"] = tools
    if "tool_choice" in fields:
        out["tool_choice"] = _response_tool_choice(fields["tool_choice"])
    text = fields.get("text") or {}
    if (fmt := text.get("format")) is not None:
        fmt = _object(fmt, "text.format")
        kind = fmt.get("type")
        if kind == "json_schema":
            out["response_format"] = _json_schema_format(
                fmt.get("schema"), fmt.get("name"), fmt.get("strict"), "text.format"
            )
        elif kind == "json_object":
            out["response_format"] = {"type": "json_object"}
        elif kind != "text":
            raise _invalid("'text.format.type' must be text, json_object or json_schema.",
                           "text.format")  # fmt: skip
    echo = {
        "instructions": fields.get("instructions"),
        "max_output_tokens": fields.get("max_output_tokens"),
        "metadata": fields.get("metadata") or {},
        "parallel_tool_calls": fields.get("parallel_tool_calls", True),
        "temperature": fields.get("temperature", 1.0),
        "top_p": fields.get("top_p", 1.0),
        "tool_choice": fields.get("tool_choice", "auto"),
        "tools": fields.get("tools", []),
        "text": {"format": text.get("format") or {"type": "text"}},
    }
    return Translated(out, has_images, echo, places)


def _response_item(item: Any, param: str, chat: list[dict]) -> bool:
    """Add one Responses input item to the chat messages `chat`; whether it holds images."""
    item = _object(item, param)
    kind = item.get("type", "message")
    if kind == "message":
        role = item.get("role")
        if role not in ("user", "assistant", "system", "developer"):
            raise _invalid(
                f"'{param}.role' must be user, assistant, system or developer.", f"{param}.role"
            )
        content = item.get("content")
        if isinstance(content, str):
            chat.append({"role": role, "content": content})
            return False
        parts = []
        for index, part in enumerate(_items(content, f"{param}.content")):
            where = f"{param}.content[{index}]"
            part = _object(part, where)
            if part.get("type") in ("input_text", "output_text"):
                parts.append({"type": "text", "text": _text(part.get("text"), f"{where}.text")})
            elif part.get("type") == "refusal":
                parts.append({"type": "text", "text": _text(part.get("refusal"), where)})
            elif part.get("type") == "input_image" and role == "user":
                url = part.get("image_url")
                match = DATA_URL.match(url) if isinstance(url, str) else None
                if match is None or not isinstance(url, str):
                    raise _not_fetched(where, f"a link ({url[:60]})" if isinstance(url, str)
                                       else "not a data: URL (file_id?)")  # fmt: skip
                parts.append(_image_part(match.group(1), url[match.end() :], where))
            else:
                raise _unsupported(
                    where, part.get("type"), "part",
                    "input_text, output_text, input_image for user messages",
                )  # fmt: skip
        content, with_images = _chat_content(parts)
        chat.append({"role": role, "content": content})
        return with_images
    if kind == "function_call":
        name = item.get("name")
        if not isinstance(name, str) or not TOOL_NAME.match(name):
            raise _invalid(f"'{param}.name' must be a function's name.", f"{param}.name")
        call = {
            "id": _text(item.get("call_id"), f"{param}.call_id"), "type": "function",
            "function": {"name": name, "arguments": _text(item.get("arguments", ""),
                                                          f"{param}.arguments")},
        }  # fmt: skip
        last = chat[-1] if chat else None
        if last is not None and last["role"] == "assistant" and "tool_calls" in last:
            last["tool_calls"].append(call)
        else:
            chat.append({"role": "assistant", "content": "", "tool_calls": [call]})
        return False
    if kind == "function_call_output":
        output = item.get("output")
        if isinstance(output, list):
            output = "".join(
                _text(_object(p, f"{param}.output").get("text"), f"{param}.output") for p in output
            )
        chat.append({
            "role": "tool", "tool_call_id": _text(item.get("call_id"), f"{param}.call_id"),
            "content": _text(output, f"{param}.output"),
        })  # fmt: skip
        return False
    if kind == "reasoning":
        return False  # earlier reasoning: templates drop it too
    raise _invalid(
        f"'{param}' is a {str(kind)[:40]!r} item, which is not supported here (message, "
        "function_call, function_call_output).",
        param,
        "unsupported_content",
    )


def _response_tool(tool: Any, param: str) -> dict:
    tool = _object(tool, param)
    if tool.get("type") != "function":
        raise _invalid(
            f"'{param}' is a {str(tool.get('type'))[:40]!r} tool: this gateway runs no built-in "
            "tools; describe your own as function tools.",
            param,
            "unsupported_value",
        )
    if tool.get("strict") is not None and not isinstance(tool["strict"], bool):
        raise _invalid(f"'{param}.strict' must be true or false.", f"{param}.strict")
    return _tool_function(tool.get("name"), tool.get("description"), tool.get("parameters"), param)


def _response_tool_choice(choice: Any) -> Any:
    if choice in ("auto", "none", "required"):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function":
        name = choice.get("name")
        if isinstance(name, str) and name:
            return {"type": "function", "function": {"name": name}}
    raise _invalid(
        '\'tool_choice\' must be auto, none, required or {"type": "function", "name": …}.',
        "tool_choice",
    )


def _detail(usage: dict, details: str, name: str, most: int) -> int:
    """A count the model server reported inside usage's `details` (0 when it did not, or
    sent something that is not a count), never more than `most` (the total it is part of)."""
    found = usage.get(details)
    value = found.get(name) if isinstance(found, dict) else None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        return 0
    return min(value, most)


def _message_usage(usage: dict) -> dict:
    """Anthropic's usage from chat completions'. Anthropic's input is the sum of three counts:
    `input_tokens` are the prompt's tokens the model server did not find in its prompt cache,
    `cache_read_input_tokens` those it found (mlx_lm.server's `prompt_tokens_details`), and
    `cache_creation_input_tokens` those written to a cache on request — 0: a local server
    caches every prompt by itself, unasked. The thinking tokens the server counted apart
    (mlx_entry.py's change 9; 0 where it does not) are `output_tokens_details.thinking_tokens`,
    within `output_tokens`."""
    prompt, completion = usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)
    cached = _detail(usage, "prompt_tokens_details", "cached_tokens", prompt)
    thinking = _detail(usage, "completion_tokens_details", "reasoning_tokens", completion)
    return {
        "input_tokens": prompt - cached,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
        "output_tokens": completion,
        "output_tokens_details": {"thinking_tokens": thinking},
    }


def _response_usage(usage: dict) -> dict:
    """Responses' usage from chat completions': the reasoning tokens are the part of the
    completion's the model server counted apart (`completion_tokens_details`, mlx_entry.py's
    change 9; 0 where it does not), within `output_tokens`, never added to it; the cached tokens
    are the prompt's that mlx_lm.server found in its prompt cache (`prompt_tokens_details`),
    within `input_tokens`."""
    prompt, completion = usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)
    reasoning = _detail(usage, "completion_tokens_details", "reasoning_tokens", completion)
    cached = _detail(usage, "prompt_tokens_details", "cached_tokens", prompt)
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": prompt + completion,
    }


@dataclass(frozen=True)
class _TextKind:
    """One of the two kinds of output item that grow by text deltas: the model's reasoning (a
    `reasoning` item, before the answer) and its answer (a `message` item)."""

    item: str  # the item's type
    prefix: str  # of its id
    part: str  # the type of its content part
    events: str  # the prefix of its delta and done events


REASONING_TEXT = _TextKind("reasoning", "rs", "reasoning_text", "response.reasoning_text")
MESSAGE_TEXT = _TextKind("message", "msg", "output_text", "response.output_text")


def _text_part(kind: _TextKind, text: str) -> dict:
    if kind is REASONING_TEXT:
        return {"type": "reasoning_text", "text": text}
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _text_item(kind: _TextKind, item_id: str, text: str, status: str = "completed") -> dict:
    content = [_text_part(kind, text)] if status == "completed" else []
    if kind is REASONING_TEXT:
        return {"id": item_id, "type": "reasoning", "status": status, "summary": [],
                "content": content}  # fmt: skip
    return {"id": item_id, "type": "message", "status": status, "role": "assistant",
            "content": content}  # fmt: skip


def _call_item(call: dict, status: str = "completed") -> dict:
    function = call.get("function") or {}
    return {
        "id": _new_id("fc"), "type": "function_call", "status": status,
        "call_id": call.get("id") or _new_id("call"), "name": function.get("name", ""),
        "arguments": (function.get("arguments") or "") if status == "completed" else "",
    }  # fmt: skip


def response_object(
    response_id: str, model: str, echo: dict, output: list[dict], finish: str | None,
    usage: dict | None, created_at: int,
) -> dict:  # fmt: skip
    """A Responses `response` object: in progress (`finish` None) or finished."""
    status = "in_progress"
    incomplete = None
    if finish is not None:
        status = "incomplete" if finish == "length" else "completed"
        if finish == "length":
            incomplete = {"reason": "max_output_tokens"}
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "error": None,
        "incomplete_details": incomplete,
        "model": model,
        "output": output,
        "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None},
        "store": False,
        "truncation": "disabled",
        "usage": _response_usage(usage) if usage is not None else None,
        "user": None,
        **echo,
    }


def response_answer(chat: dict, model: str, echo: dict) -> dict:
    """A chat completion as a Responses `response`."""
    choice = (chat.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    output = []
    if thought := reasoning_of(message):
        output.append(_text_item(REASONING_TEXT, _new_id("rs"), thought))
    if message.get("content"):
        output.append(_text_item(MESSAGE_TEXT, _new_id("msg"), message["content"]))
    output += [_call_item(call) for call in message.get("tool_calls") or ()]
    return response_object(
        _new_id("resp"), model, echo, output, choice.get("finish_reason") or "stop",
        chat.get("usage") or {}, int(time.time()),
    )  # fmt: skip


class ResponseEvents:
    """The Responses event stream for a chat completion's chunks, each event with its
    `sequence_number`: response.created and response.in_progress; for the reasoning (when the
    model server returns some) and for the text response.output_item.added,
    response.content_part.added, response.reasoning_text.delta or response.output_text.delta …,
    its .done, response.content_part.done, response.output_item.done; for each function call
    response.output_item.added, response.function_call_arguments.delta and .done,
    response.output_item.done; then response.completed (response.incomplete when the reply
    reached max_output_tokens)."""

    def __init__(self, model: str, echo: dict):
        self.model, self.echo = model, echo
        self.id = _new_id("resp")
        self.created_at = int(time.time())
        self.sequence = 0
        self.output: list[dict] = []
        self.open: _TextKind | None = None  # the kind of the open text item (the last)
        self.open_id = ""
        self.text = ""
        self.finish: str | None = None
        self.usage: dict = {}

    def start(self) -> bytes:
        response = self._response(None)
        return self._event("response.created", {"response": response}) + self._event(
            "response.in_progress", {"response": response}
        )

    def chunk(self, data: dict) -> bytes:
        out: list[bytes] = []
        for choice, delta in _deltas(data, self.usage):
            if thought := reasoning_of(delta):
                out += self._grow(REASONING_TEXT, thought)
            if text := delta.get("content"):
                out += self._grow(MESSAGE_TEXT, text)
            for call in delta.get("tool_calls") or ():
                out += self._close()
                item = _call_item(call)
                index = len(self.output)
                self.output.append(item)
                added = {**item, "status": "in_progress", "arguments": ""}
                out.append(self._event("response.output_item.added",
                                       {"output_index": index, "item": added}))  # fmt: skip
                where = {"item_id": item["id"], "output_index": index}
                out.append(self._event("response.function_call_arguments.delta",
                                       {**where, "delta": item["arguments"]}))  # fmt: skip
                out.append(self._event("response.function_call_arguments.done",
                                       {**where, "name": item["name"],
                                        "arguments": item["arguments"]}))  # fmt: skip
                out.append(self._event("response.output_item.done",
                                       {"output_index": index, "item": item}))  # fmt: skip
            if choice.get("finish_reason"):
                self.finish = choice["finish_reason"]
        return b"".join(out)

    def end(self) -> bytes:
        out = self._close()
        response = self._response(self.finish or "stop")
        kind = "response.incomplete" if response["status"] == "incomplete" else "response.completed"
        out.append(self._event(kind, {"response": response}))
        return b"".join(out)

    def error(self, error: GatewayError) -> bytes:
        return self._event("error", {"code": error.code, "message": error.message,
                                     "param": error.param})  # fmt: skip

    def _where(self) -> dict:
        return {"item_id": self.open_id, "output_index": len(self.output) - 1, "content_index": 0}

    def _grow(self, kind: _TextKind, piece: str) -> list[bytes]:
        """`piece` added to the open item of `kind` (the other one closed, this one opened)."""
        out = []
        if self.open is not kind:
            out = self._close()
            self.open, self.open_id = kind, _new_id(kind.prefix)
            self.output.append(_text_item(kind, self.open_id, "", "in_progress"))
            out.append(self._event("response.output_item.added",
                                   {"output_index": len(self.output) - 1,
                                    "item": self.output[-1]}))  # fmt: skip
            out.append(self._event("response.content_part.added",
                                   {**self._where(), "part": _text_part(kind, "")}))  # fmt: skip
        self.text += piece
        extra: dict[str, list] = {"logprobs": []} if kind is MESSAGE_TEXT else {}
        out.append(self._event(f"{kind.events}.delta", {**self._where(), "delta": piece, **extra}))
        return out

    def _close(self) -> list[bytes]:
        kind = self.open
        if kind is None:
            return []
        where = self._where()
        item = _text_item(kind, self.open_id, self.text)
        self.output[-1] = item
        extra: dict[str, list] = {"logprobs": []} if kind is MESSAGE_TEXT else {}
        out = [
            self._event(f"{kind.events}.done", {**where, "text": self.text, **extra}),
            self._event("response.content_part.done",
                        {**where, "part": _text_part(kind, self.text)}),
            self._event("response.output_item.done",
                        {"output_index": where["output_index"], "item": item}),
        ]  # fmt: skip
        self.open, self.open_id, self.text = None, "", ""
        return out

    def _response(self, finish: str | None) -> dict:
        usage = self.usage if finish is not None else None
        return response_object(self.id, self.model, self.echo, list(self.output), finish, usage,
                               self.created_at)  # fmt: skip

    def _event(self, kind: str, data: dict) -> bytes:
        event = {"type": kind, "sequence_number": self.sequence, **data}
        self.sequence += 1
        return sse(event, kind)


# --- the dialects, for the views ----------------------------------------------------------------


@dataclass(frozen=True)
class Dialect:
    """What a view needs of an API: its name in usage records, how its request becomes chat
    completions, how answers (None: only the prompt's tokens are wanted), streams and errors
    look in it."""

    endpoint: str  # as UsageRecord.endpoint records it
    request: Callable[[Any], Translated]
    answer: Callable[[dict, str, dict], dict] | None
    events: Callable[[str, dict], MessageEvents | ResponseEvents]
    error: Callable[[GatewayError], dict]


def _openai_error(error: GatewayError) -> dict:
    return error.as_dict()


MESSAGES = Dialect("messages", messages_request, message_answer, MessageEvents, anthropic_error)
COUNT_TOKENS = Dialect(
    "messages/count_tokens", functools.partial(messages_request, counting=True), None,
    MessageEvents, anthropic_error,
)  # fmt: skip
RESPONSES_DIALECT = Dialect(
    "responses", responses_request, response_answer, ResponseEvents, _openai_error
)
