"""Validation rules for profile fields that are more than a range: the one place for them."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from django.conf import settings

from models_catalog.characteristics import TEMPLATE_RESERVED

# Slugs a profile may not take: the Servers pages' own paths (servers/urls.py).
RESERVED_SLUGS = {"new", "picker", "hosts", "usage", "chat", "need", "serve", "api"}

MAX_TEMPLATE_ARGS = 32
MAX_TEMPLATE_ARGS_BYTES = 4096
MAX_TEMPLATE_STRING = 1000
MAX_TEMPLATE_NUMBER = 1_000_000
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


def check_chat_template_args(value: Any) -> dict[str, Any]:
    """A JSON object of simple values (string, number, true/false, null), none of them an
    argument of the tokenizer rather than of the template (`padding`, `max_length`, …: they
    padded a prompt to 57,000 tokens); raise ValueError."""
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return {}
        if len(text.encode()) > MAX_TEMPLATE_ARGS_BYTES:
            raise ValueError(
                f"Keep chat-template args under {MAX_TEMPLATE_ARGS_BYTES} bytes of JSON."
            )
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(
                f'Chat-template args must be JSON, e.g. {{"enable_thinking": false}} '
                f"({exc.msg} at line {exc.lineno}, column {exc.colno})."
            ) from None
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(
            'Chat-template args must be a JSON object, e.g. {"enable_thinking": false}.'
        )
    if len(value) > MAX_TEMPLATE_ARGS:
        raise ValueError(f"Use at most {MAX_TEMPLATE_ARGS} chat-template args.")
    for key, item in value.items():
        if not isinstance(key, str) or not _KEY.fullmatch(key):
            raise ValueError(
                f"{str(key)[:80]!r} is not a usable argument name: use letters, digits and '_' "
                "(not starting with a digit), at most 64 characters."
            )
        if key in TEMPLATE_RESERVED:
            raise ValueError(
                f"{key!r} is set by the portal or the tokenizer, not by chat-template args "
                '(they are for the template\'s own options, e.g. {"enable_thinking": false}).'
            )
        if key == "enable_thinking" and item is not None and not isinstance(item, bool):
            raise ValueError("'enable_thinking' must be true or false.")
        if isinstance(item, str):
            if len(item) > MAX_TEMPLATE_STRING:
                raise ValueError(
                    f"The value of {key!r} is too long (at most {MAX_TEMPLATE_STRING} characters)."
                )
        elif item is not None and not isinstance(item, bool | int | float):
            raise ValueError(
                f"The value of {key!r} must be a string, number, true, false or null "
                "(no lists or objects)."
            )
        if isinstance(item, float) and not math.isfinite(item):
            raise ValueError(f"The value of {key!r} must be a finite number.")
        number = isinstance(item, int | float) and not isinstance(item, bool)
        if number and abs(item) > MAX_TEMPLATE_NUMBER:
            raise ValueError(
                f"The value of {key!r} must be from {-MAX_TEMPLATE_NUMBER:,} to "
                f"{MAX_TEMPLATE_NUMBER:,}."
            )
    if len(json.dumps(value).encode()) > MAX_TEMPLATE_ARGS_BYTES:
        raise ValueError(f"Keep chat-template args under {MAX_TEMPLATE_ARGS_BYTES} bytes of JSON.")
    return value


def adapter_roots() -> list[Path]:
    return [Path(p).resolve() for p in settings.SERVER_ADAPTER_DIRS]


def resolve_adapter_path(value: str) -> Path:
    """The adapter directory `value` (absolute, or relative to the first allowed directory),
    resolved through symlinks, if it stays inside an allowed directory and holds an
    `adapter_config.json`; raise ValueError otherwise.
    """
    roots = adapter_roots()
    allowed = ", ".join(str(r) for r in roots)
    if not value or "\x00" in value or len(value) > 512:
        raise ValueError(f"Give an adapter directory inside {allowed}.")
    try:
        candidate = Path(value).expanduser()
    except RuntimeError:  # "~someone" naming no user of this machine
        raise ValueError(f"Give an adapter directory inside {allowed}.") from None
    if not candidate.is_absolute():
        candidate = roots[0] / candidate
    resolved = candidate.resolve()
    if not any(resolved.is_relative_to(root) for root in roots):
        raise ValueError(
            f"The adapter path {value[:200]!r} is outside the allowed adapter directories "
            f"({allowed}). Put the adapter there (an admin sets MLX_PORTAL_ADAPTER_DIRS)."
        )
    if not resolved.is_dir() or not (resolved / "adapter_config.json").is_file():
        raise ValueError(
            f"{resolved} is not an adapter directory: it must exist and contain "
            "adapter_config.json (as written by mlx_lm.lora)."
        )
    return resolved


# Numeric profile fields: (minimum, maximum, what the value means). Forms check these.
RANGES: dict[str, tuple[float, float, str]] = {
    "port": (1024, 65535, "a TCP port between 1024 and 65535"),
    "temperature": (0.0, 2.0, "0 always picks the likeliest token; 0.7 is a usual chat value"),
    "top_p": (0.01, 1.0, "1 disables nucleus sampling"),
    "top_k": (0, 1000, "0 disables top-k"),
    "min_p": (0.0, 1.0, "0 disables min-p"),
    "max_tokens": (1, 131072, "the reply length of a request that asks for none"),
    "max_tokens_cap": (1, 10_000_000, "the most a request may ask for; blank: the context"),
    "num_draft_tokens": (1, 16, "tokens the draft model proposes per step"),
    "prompt_cache_size": (0, 1000, "distinct prompt KV caches kept"),
    "decode_concurrency": (1, 256, "requests decoded in parallel"),
    "prompt_concurrency": (1, 64, "prompts processed in parallel"),
    "idle_timeout_minutes": (0, 10080, "minutes without requests before it stops; 0 = never"),
}

KV_BITS_CHOICES = [2, 3, 4, 5, 6, 8]


def range_error(field: str, value: float) -> str | None:
    """A message when `value` is outside the field's range, else None."""
    low, high, meaning = RANGES[field]
    if low <= value <= high:
        return None
    return f"Use a value from {low:g} to {high:g} ({meaning}); {value:g} is out of range."


ROUTE_NAME = re.compile(r"[A-Za-z0-9._:/-]{1,64}")


def check_route_name(value: str) -> str:
    """A route's public model name: letters, digits and `.-_:/`, at most 64 characters, with a
    letter or digit in it; raise ValueError saying what to change."""
    name = (value or "").strip()
    if not name:
        raise ValueError("Give the route a name, e.g. “qwen3-8b”: the model name clients send.")
    if len(name) > 64:
        raise ValueError("Keep the route's name to 64 characters or fewer.")
    if not ROUTE_NAME.fullmatch(name):
        bad = next((c for c in name if not ROUTE_NAME.fullmatch(c)), "")
        shown = repr(bad) if bad.isprintable() else f"U+{ord(bad):04X}"
        raise ValueError(
            f"A route's name may hold only letters, digits and . - _ : / (not {shown}), "
            "e.g. “qwen3-8b” or “team/coder:latest”."
        )
    if not any(c.isalnum() for c in name):
        raise ValueError("A route's name needs at least one letter or digit.")
    return name


# --- max tokens: the profile's default, and the cap on what a request may ask ----------------


def max_tokens_cap(setting: int | None, context_length: int | None) -> int | None:
    """The most `max_tokens` a request may ask for: the profile's cap when it has one, else the
    model's context (None: not known here, e.g. another host's model)."""
    return setting or context_length or None


def max_tokens_refusal(
    requested: int, cap: int | None, profile_name: str, param: str = "max_tokens"
) -> str | None:
    """Why a request's `max_tokens` is refused (it asks more than the cap), else None: the
    gateway's 400 and the chat page's message say the same."""
    if cap is None or requested <= cap:
        return None
    return (
        f"'{param}' is {requested:,}, but {profile_name} allows at most {cap:,} tokens per "
        f"reply: ask for {cap:,} or fewer (or leave '{param}' out for its default)."
    )


# --- a new profile's defaults, from the model's generation_config.json -----------------------

#: Without a generation_config.json saying otherwise: the usual chat sampling.
DEFAULT_TEMPERATURE = 0.7
DEFAULT_TOP_P = 0.95
#: Room for a thinking model's reasoning and its answer.
DEFAULT_MAX_TOKENS = 8192
#: The fields a generation_config.json may set, as the profile names them.
_GENERATION_FIELDS = {"temperature": "temperature", "top_p": "top_p", "top_k": "top_k",
                      "min_p": "min_p"}  # fmt: skip


def _usable(field: str, value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if not math.isfinite(value) or range_error(field, value) is not None:
        return False
    return field != "top_k" or float(value).is_integer()


def profile_defaults(
    generation_config: dict[str, Any] | None, context_length: int | None
) -> dict[str, Any]:
    """Temperature, top-p, top-k, min-p and max tokens for a new profile of a model.

    What the model's `generation_config.json` says wins (values out of the fields' ranges are
    ignored); `do_sample: false` means greedy decoding (temperature 0). Otherwise temperature
    0.7 and top-p 0.95. Max tokens leaves room for a thinking model (8,192), but at most half
    the context, so a prompt fits beside the reply."""
    config = generation_config if isinstance(generation_config, dict) else {}
    out: dict[str, Any] = {
        "temperature": DEFAULT_TEMPERATURE,
        "top_p": DEFAULT_TOP_P,
        "top_k": 0,
        "min_p": 0.0,
    }
    if config.get("do_sample") is False:
        out.update(temperature=0.0, top_p=1.0)
    else:
        for key, field in _GENERATION_FIELDS.items():
            value = config.get(key)
            if _usable(field, value):
                out[field] = int(value) if field == "top_k" else float(value)
    max_tokens = DEFAULT_MAX_TOKENS
    if context_length and context_length > 0:
        max_tokens = max(1, min(max_tokens, context_length // 2))
    out["max_tokens"] = max_tokens
    return out
