"""What a `/v1` request body may hold: a table of fields with their bounds (`FIELDS`), read in
order by `build_upstream_body`, which builds the body sent to mlx_lm.server from it alone.

Only the fields of the table pass; `model` becomes "default_model" (the server's own model: any
other name would make mlx_lm.server load, or download, that model); streams always ask for
usage so tokens can be counted. What is known of the model on this host (`Limits`; None: not
known here, the model's own host checks) bounds the rest. Values that broke mlx_lm.server
(found by schemathesis) never reach it: each is said beside its field. See docs/gateway.md,
"What reaches mlx_lm.server: an allow-list".
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from servers.gateway import images
from servers.gateway.errors import GatewayError
from servers.gateway.json_schema import check_schema
from servers.validation import check_chat_template_args, max_tokens_cap, max_tokens_refusal

CHAT, TEXT = "chat/completions", "completions"
BOTH = frozenset({CHAT, TEXT})

# OpenAI's rule for the name of a response_format schema (and of a function).
NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
ROLES = {"system", "user", "assistant", "tool", "developer"}
# OpenAI fields that are accepted and deliberately not passed on (mlx_lm.server has no use for
# them). Any other unknown field is dropped as well; these are just documented.
IGNORED_FIELDS = {
    "user",
    "metadata",
    "store",
    "parallel_tool_calls",
    "service_tier",
    "reasoning_effort",
    "modalities",
}

# No tokenizer puts more characters than this in a token on average: a prompt longer than a
# model's context times this is refused before it reaches the server (which counts exactly,
# servers/supervision/mlx_entry.py, but must tokenize the prompt to do so, on the thread that
# generates for everyone).
MAX_CHARS_PER_TOKEN = 32


@dataclass(frozen=True)
class Limits:
    """What a request is checked against: the profile's max tokens (the default), its cap on
    what a request may ask (None: the context), and what is known of its model on this host
    (None: not known here)."""

    max_tokens: int
    max_tokens_cap: int | None = None
    vocab_size: int | None = None
    context_length: int | None = None
    # The variables the model's chat template reads (None: any, its own host checks).
    template_variables: frozenset[str] | None = None
    profile_name: str = "this server"
    # A vision server (engine "vision"): image parts are accepted (servers/gateway/images.py).
    vision: bool = False


def _invalid(message: str, param: str, code: str = "invalid_value") -> GatewayError:
    return GatewayError(message, param=param, code=code)


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


# --- the kinds of field -----------------------------------------------------------------------


class Field:
    """One field of a request body: read from `body`, checked, and written into `out` (the body
    sent on) when it has a value. `endpoints`: where the field exists."""

    endpoints: frozenset[str] = BOTH

    def __init__(self, name: str, *, endpoints: frozenset[str] | None = None) -> None:
        self.name = name
        if endpoints is not None:
            self.endpoints = endpoints

    def apply(self, body: dict, out: dict, limits: Limits) -> None:
        raise NotImplementedError


class Number(Field):
    """A finite number from `low` to `high`."""

    def __init__(self, name: str, low: float, high: float) -> None:
        super().__init__(name)
        self.low, self.high = low, high

    def apply(self, body: dict, out: dict, limits: Limits) -> None:
        value = body.get(self.name)
        if value is None:
            return
        if not _is_number(value) or not self.low <= value <= self.high:
            raise _invalid(
                f"'{self.name}' must be a number from {self.low:g} to {self.high:g}.", self.name
            )
        out[self.name] = value


class Integer(Field):
    """A whole number from `low` (to `high`). JSON has one number type: 8.0 is the integer 8,
    as JSON Schema says."""

    def __init__(self, name: str, low: int, high: int | None = None) -> None:
        super().__init__(name)
        self.low, self.high = low, high

    def read(self, body: dict) -> int | None:
        value = body.get(self.name)
        if value is None:
            return None
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not _is_int(value) or value < self.low or (self.high is not None and value > self.high):
            limit = (
                f"from {self.low} to {self.high}" if self.high is not None
                else f"of at least {self.low}"
            )  # fmt: skip
            raise _invalid(f"'{self.name}' must be an integer {limit}.", self.name)
        return value

    def apply(self, body: dict, out: dict, limits: Limits) -> None:
        value = self.read(body)
        if value is not None:
            out[self.name] = value


class TopK(Integer):
    """mlx_lm's sampler raises on a top_k of the vocabulary's size or more — in the server's
    generation thread, which dies: the server then answers no one until it is restarted (found
    by schemathesis). Such a top_k keeps every token, which is what 0 means."""

    def apply(self, body: dict, out: dict, limits: Limits) -> None:
        value = self.read(body)
        if value is not None:
            vocab = limits.vocab_size
            out[self.name] = 0 if vocab is not None and value >= vocab else value


class Flag(Field):
    """true or false."""

    def apply(self, body: dict, out: dict, limits: Limits) -> None:
        value = body.get(self.name)
        if value is None:
            return
        if not isinstance(value, bool):
            raise _invalid(f"'{self.name}' must be true or false.", self.name)
        out[self.name] = value


class Messages(Field):
    """The conversation: roles, text content (string or text parts), names, tool calls."""

    def apply(self, body: dict, out: dict, limits: Limits) -> None:
        if self.name not in body:
            raise _invalid("'messages' is required.", "messages", "missing_field")
        out["messages"] = _messages(body[self.name], limits)


class Prompt(Field):
    """An empty prompt gives the model no token to start from: mlx_lm.server dropped the
    connection without an answer (found by schemathesis)."""

    def apply(self, body: dict, out: dict, limits: Limits) -> None:
        prompt = body.get(self.name)
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        if not isinstance(prompt, str) or not prompt:
            raise _invalid("'prompt' is required and must be a non-empty string.", "prompt")
        out["prompt"] = prompt


class Stream(Field):
    """Streamed or not; a stream always asks upstream for usage (tokens are counted)."""

    def apply(self, body: dict, out: dict, limits: Limits) -> None:
        stream = body.get(self.name, False)
        if stream is None:
            stream = False
        if not isinstance(stream, bool):
            raise _invalid("'stream' must be true or false.", "stream")
        out["stream"] = stream
        if stream:
            out["stream_options"] = {"include_usage": True}


class StreamOptions(Field):
    """Checked only: whether the client gets the usage chunk is the relay's business."""

    def apply(self, body: dict, out: dict, limits: Limits) -> None:
        options = body.get(self.name)
        if options is not None and (
            not isinstance(options, dict)
            or not isinstance(options.get("include_usage", False), bool)
        ):
            raise _invalid(
                "'stream_options' must be an object like {\"include_usage\": true}.", self.name
            )


class MaxTokens(Field):
    """`max_completion_tokens` or `max_tokens` (the first given), defaulting to the profile's max
    tokens; a request asking more than the profile's cap (servers/validation.max_tokens_cap:
    its setting, else the model's context) is refused with 400 `max_tokens_too_large`, never
    cut silently."""

    def __init__(self) -> None:
        super().__init__("max_tokens")
        self.names = (Integer("max_completion_tokens", 1), Integer("max_tokens", 1))

    def apply(self, body: dict, out: dict, limits: Limits) -> None:
        requested, param = None, self.name
        for field in self.names:
            value = field.read(body)
            if value is not None and requested is None:
                requested, param = value, field.name
        cap = max_tokens_cap(limits.max_tokens_cap, limits.context_length)
        if requested is None:
            out["max_tokens"] = min(limits.max_tokens, cap) if cap else limits.max_tokens
            return
        if message := max_tokens_refusal(requested, cap, limits.profile_name, param):
            raise _invalid(message, param, "max_tokens_too_large")
        out["max_tokens"] = requested


class Stop(Field):
    """A string or up to 4 strings."""

    def apply(self, body: dict, out: dict, limits: Limits) -> None:
        stop = body.get(self.name)
        if stop is None:
            return
        if isinstance(stop, str):
            stop = [stop]
        if (
            not isinstance(stop, list)
            or len(stop) > 4
            or not all(isinstance(s, str) and s for s in stop)
        ):
            raise _invalid("'stop' must be a string or a list of up to 4 strings.", "stop")
        if stop:
            out["stop"] = stop


class LogitBias(Field):
    """Token ids (strings of digits) to numbers from -100 to 100. A token the model does not
    have cannot be biased: such ids are left out. Sent on, an id past the vocabulary or past
    int32 killed mlx_lm.server's generation thread, and with it the server (schemathesis)."""

    def apply(self, body: dict, out: dict, limits: Limits) -> None:
        bias = body.get(self.name)
        if bias is None:
            return
        if not isinstance(bias, dict) or not all(
            _token_id(k) is not None and _is_number(v) and -100 <= v <= 100 for k, v in bias.items()
        ):
            raise _invalid(
                "'logit_bias' must map token ids (strings of digits) to numbers from -100 to 100.",
                "logit_bias",
            )
        tokens = limits.vocab_size or 2**31
        kept = {k: v for k, v in bias.items() if (_token_id(k) or 0) < tokens}
        if kept:
            out["logit_bias"] = {str(k): float(v) for k, v in kept.items()}


class OneChoice(Field):
    """mlx_lm.server has one choice per request (and `true == 1` in Python)."""

    def apply(self, body: dict, out: dict, limits: Limits) -> None:
        n = body.get(self.name)
        if n is not None and (isinstance(n, bool) or n != 1):
            raise _invalid(
                "Only one choice per request is supported ('n' must be 1).", "n",
                "unsupported_value",
            )  # fmt: skip


class ResponseFormat(Field):
    """`response_format`: text, `json_object` or `json_schema` (name, schema, strict), enforced
    by the model server (servers/supervision/mlx_entry.py); the schema is bounded here first
    (servers/gateway/json_schema.py)."""

    def apply(self, body: dict, out: dict, limits: Limits) -> None:
        value = body.get(self.name)
        if value is None or value == {"type": "text"}:
            return
        kind = value.get("type") if isinstance(value, dict) else None
        if kind == "json_object" and value == {"type": "json_object"}:
            out[self.name] = {"type": "json_object"}
            return
        if kind != "json_schema":
            raise _invalid(
                '\'response_format\' must be {"type": "text"}, {"type": "json_object"} '
                'or {"type": "json_schema", "json_schema": {"name": …, "schema": …}}.',
                self.name,
            )
        spec = value.get("json_schema")
        param = "response_format.json_schema"
        if not isinstance(spec, dict):
            raise _invalid(f"'{param}' must be an object with a 'name' and a 'schema'.", param)
        name = spec.get("name")
        if not isinstance(name, str) or not NAME.fullmatch(name):
            raise _invalid(
                f"'{param}.name' must be 1 to 64 letters, digits, '_' or '-'.", f"{param}.name"
            )
        strict = spec.get("strict")
        if strict is not None and not isinstance(strict, bool):
            raise _invalid(f"'{param}.strict' must be true or false.", f"{param}.strict")
        description = spec.get("description")
        if description is not None and not isinstance(description, str):
            raise _invalid(f"'{param}.description' must be a string.", f"{param}.description")
        clean = {"name": name, "strict": bool(strict)}
        if "schema" in spec:
            check_schema(spec["schema"], f"{param}.schema")
            clean["schema"] = spec["schema"]
        out[self.name] = {"type": "json_schema", "json_schema": clean}


class TextFormat(Field):
    """/v1/completions has no JSON mode or JSON schema (OpenAI's neither): chat completions do."""

    def apply(self, body: dict, out: dict, limits: Limits) -> None:
        value = body.get(self.name)
        if value is not None and value != {"type": "text"}:
            raise _invalid(
                "'response_format' other than text is supported on /v1/chat/completions, not on "
                "/v1/completions.",
                "response_format",
                "unsupported_value",
            )


class Tools(Field):
    """Passed to the chat template; dropped when `tool_choice` is "none". A function's
    `parameters` is bounded as a response_format schema is: the model server may enforce it."""

    def apply(self, body: dict, out: dict, limits: Limits) -> None:
        tools = body.get(self.name)
        if tools is None:
            return
        if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
            raise _invalid("'tools' must be a list of tool objects.", "tools")
        for index, tool in enumerate(tools):
            function = tool.get("function")
            if isinstance(function, dict) and function.get("parameters") is not None:
                check_schema(function["parameters"], f"tools[{index}].function.parameters")
        if tools and body.get("tool_choice") != "none":
            out["tools"] = tools


class ToolChoice(Field):
    """`tool_choice`: "none", "auto", "required" or a named function (which must be one of
    `tools`). "required" and a named function make the model server constrain the call."""

    def apply(self, body: dict, out: dict, limits: Limits) -> None:
        choice = body.get(self.name)
        if choice is None or choice == "none":
            return
        tools = body.get("tools")
        names = {
            t["function"].get("name")
            for t in (tools if isinstance(tools, list) else [])
            if isinstance(t, dict)
            and isinstance(t.get("function"), dict)
            and isinstance(t["function"].get("name"), str)
        }
        if choice in ("auto", "required"):
            if choice == "required" and not names:
                raise _invalid("'tool_choice' is 'required' but no 'tools' are given.", self.name)
        elif isinstance(choice, dict) and choice.get("type") == "function":
            function = choice.get("function")
            name = function.get("name") if isinstance(function, dict) else None
            if not isinstance(name, str) or name not in names:
                raise _invalid(
                    "'tool_choice' names a function that is not one of 'tools'.", self.name
                )
            choice = {"type": "function", "function": {"name": name}}
        else:
            raise _invalid(
                "'tool_choice' must be 'none', 'auto', 'required' or "
                '{"type": "function", "function": {"name": …}}.',
                self.name,
            )
        if "tools" in out:
            out[self.name] = choice


class TemplateKwargs(Field):
    """`chat_template_kwargs` (see `_template_kwargs`)."""

    def apply(self, body: dict, out: dict, limits: Limits) -> None:
        kwargs = body.get(self.name)
        if kwargs is not None:
            out[self.name] = _template_kwargs(kwargs, limits.template_variables)


# --- the table ---------------------------------------------------------------------------------

FIELDS: tuple[Field, ...] = (
    Messages("messages", endpoints=frozenset({CHAT})),
    Prompt("prompt", endpoints=frozenset({TEXT})),
    Stream("stream"),
    StreamOptions("stream_options"),
    Number("temperature", 0, 2),
    Number("top_p", 0, 1),
    Number("min_p", 0, 1),
    Number("presence_penalty", -2, 2),
    Number("frequency_penalty", -2, 2),
    Number("repetition_penalty", 0, 10),
    TopK("top_k", 0),
    # mlx.random.seed takes an unsigned 64-bit integer: a negative seed made mlx_lm.server drop
    # the connection without an answer (found by schemathesis).
    Integer("seed", 0, 2**64 - 1),
    MaxTokens(),
    Stop("stop"),
    LogitBias("logit_bias"),
    Flag("logprobs"),
    Integer("top_logprobs", 0, 10),
    OneChoice("n"),
    ResponseFormat("response_format", endpoints=frozenset({CHAT})),
    TextFormat("response_format", endpoints=frozenset({TEXT})),
    Tools("tools", endpoints=frozenset({CHAT})),
    ToolChoice("tool_choice", endpoints=frozenset({CHAT})),
    TemplateKwargs("chat_template_kwargs", endpoints=frozenset({CHAT})),
)


def build_upstream_body(
    body: Any,
    *,
    endpoint: str,
    max_tokens: int,
    max_tokens_cap: int | None = None,
    vocab_size: int | None = None,
    context_length: int | None = None,
    template_variables: frozenset[str] | None = None,
    profile_name: str = "this server",
    vision: bool = False,
    defaults: dict[str, Any] | None = None,
) -> dict:
    """The body sent to the model server for a client's `body` (the fields of `FIELDS`, in its
    order), or GatewayError (400) naming the first field that is wrong. `vision`: the server
    sees images; `defaults`: values for fields the body leaves out (a vision server has no
    sampling defaults of its own: the profile's travel with each request)."""
    if not isinstance(body, dict):
        raise GatewayError("The request body must be a JSON object.", code="invalid_body")
    limits = Limits(
        max_tokens, max_tokens_cap, vocab_size, context_length, template_variables, profile_name,
        vision,
    )  # fmt: skip
    out: dict[str, Any] = {"model": "default_model"}
    for field in FIELDS:
        if endpoint in field.endpoints:
            field.apply(body, out, limits)
    for name, value in (defaults or {}).items():
        out.setdefault(name, value)
    _check_context(out, endpoint, limits.context_length)
    return out


def _check_context(out: dict, endpoint: str, context_length: int | None) -> None:
    if context_length and (size := _prompt_characters(out)) > context_length * MAX_CHARS_PER_TOKEN:
        raise GatewayError(
            f"This model's maximum context length is {context_length:,} tokens, which holds "
            f"at most about {context_length * MAX_CHARS_PER_TOKEN:,} characters; the prompt "
            f"has {size:,}. Shorten the messages (or the prompt) and try again.",
            param="messages" if endpoint == CHAT else "prompt",
            code="context_length_exceeded",
        )


# --- messages, tool calls and template kwargs ---------------------------------------------------


def _content_parts(content: list, index: int, limits: Limits, seen: list[int]) -> list:
    """A message's parts: text, and on a vision server images (`_image_part`); `seen` counts
    the request's images so far."""
    parts = []
    param = f"messages[{index}].content"
    in_message = 0
    for part in content:
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise GatewayError(
                f"messages[{index}].content parts must be objects with a 'type'.",
                param=param,
                code="invalid_value",
            )
        if part["type"] in ("text", "input_text"):
            if not isinstance(part.get("text"), str):
                raise GatewayError(
                    f"messages[{index}].content text parts need a 'text' string.",
                    param=param,
                    code="invalid_value",
                )
            parts.append({"type": "text", "text": part["text"]})
        elif part["type"] == "image_url" and not limits.vision:
            raise GatewayError(
                f"messages[{index}] has an image, but {limits.profile_name} cannot see images: "
                "it runs a text model. Send text, or use a profile with the vision engine.",
                param=param,
                code="images_not_supported",
            )
        elif part["type"] == "image_url":
            in_message += 1
            seen[0] += 1
            if in_message > images.MAX_IMAGES_PER_MESSAGE:
                raise GatewayError(
                    f"messages[{index}] has more than {images.MAX_IMAGES_PER_MESSAGE} images; "
                    f"a message may hold at most {images.MAX_IMAGES_PER_MESSAGE}.",
                    param=param,
                    code="too_many_images",
                )
            if seen[0] > images.MAX_IMAGES_PER_REQUEST:
                raise GatewayError(
                    f"The request has more than {images.MAX_IMAGES_PER_REQUEST} images; a "
                    f"request may hold at most {images.MAX_IMAGES_PER_REQUEST} (drop older ones).",
                    param=param,
                    code="too_many_images",
                )
            parts.append(_image_part(part, index, in_message))
        else:
            what = "images" if limits.vision else "images, audio and video"
            raise GatewayError(
                f"messages[{index}] has a '{part['type'][:30]}' part: {limits.profile_name} "
                f"takes text{' and image_url parts' if limits.vision else ''} only, not "
                f"{'audio or video' if limits.vision else what}.",
                param=param,
                code="unsupported_content",
            )
    return parts


def _image_part(part: dict, index: int, number: int) -> dict:
    """An `image_url` part checked (servers/gateway/images.py) and rebuilt: only its data: URL
    (with the media type the bytes really have) goes on."""
    image_url = part.get("image_url")
    url = image_url.get("url") if isinstance(image_url, dict) else image_url
    try:
        checked = images.image_from_url(url, f"Image {number} of messages[{index}]")
    except images.ImageRefused as exc:
        raise GatewayError(
            str(exc), param=f"messages[{index}].content", code="invalid_image"
        ) from None
    return {"type": "image_url", "image_url": {"url": checked.data_url}}


def _messages(value: Any, limits: Limits) -> list[dict]:
    if not isinstance(value, list) or not value:
        raise GatewayError(
            "'messages' must be a non-empty list of messages.",
            param="messages",
            code="invalid_value",
        )
    messages = []
    seen = [0]  # images in the request so far
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
            content = _content_parts(content, index, limits, seen)
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
            total += sum(len(part.get("text", "")) for part in content)
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
