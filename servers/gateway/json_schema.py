"""Bounds on the JSON Schemas a `/v1` request asks the model server to enforce
(`response_format.json_schema.schema`, a function tool's `parameters`), checked before the
request reaches a server. The grammar engine (llguidance, in servers/supervision/mlx_entry.py)
has resource limits of its own for what passes; these keep what is sent small and plain:

- at most MAX_SCHEMA_BYTES of JSON and MAX_SCHEMA_DEPTH levels of nesting;
- `$ref` only inside the schema (`#…`): the portal never fetches a URL, and neither does
  llguidance. A recursive `$ref` is allowed (OpenAI allows it): the engine compiles it to a
  recursive grammar rule, never an expansion, and the reply stays bounded by `max_tokens`;
- a `pattern` (or `patternProperties` key) of at most MAX_PATTERN_CHARS characters. The engine
  builds its lexer lazily (derivatives), and its per-step work is capped (llguidance's
  `step_lexer_fuel`), so a regex built to explode costs bounded time.

See docs/gateway.md, "Structured output".
"""

from __future__ import annotations

import json
from typing import Any

from servers.gateway.errors import GatewayError

MAX_SCHEMA_BYTES = 64 * 1024
MAX_SCHEMA_DEPTH = 32
MAX_PATTERN_CHARS = 1000


def schema_problem(schema: Any) -> str | None:
    """What keeps `schema` from being sent to a model server, or None. Pure; iterative (a
    schema's depth is what is being bounded, not Python's stack)."""
    if not isinstance(schema, dict):
        return "must be a JSON Schema object"
    size = len(json.dumps(schema, separators=(",", ":")))
    if size > MAX_SCHEMA_BYTES:
        return f"is {size:,} bytes of JSON; at most {MAX_SCHEMA_BYTES:,} are accepted"
    pending: list[tuple[Any, int]] = [(schema, 1)]
    while pending:
        node, depth = pending.pop()
        if depth > MAX_SCHEMA_DEPTH:
            return f"is nested more than {MAX_SCHEMA_DEPTH} levels deep"
        if isinstance(node, list):
            pending += [(item, depth + 1) for item in node]
            continue
        if not isinstance(node, dict):
            continue
        ref = node.get("$ref")
        if ref is not None and (not isinstance(ref, str) or not ref.startswith("#")):
            return ("has a '$ref' outside the schema; only local references ('#/$defs/…') "
                    "are supported: the portal never fetches a URL")  # fmt: skip
        patterns = [node.get("pattern")]
        if isinstance(node.get("patternProperties"), dict):
            patterns += list(node["patternProperties"])
        for pattern in patterns:
            if isinstance(pattern, str) and len(pattern) > MAX_PATTERN_CHARS:
                return (f"has a 'pattern' of {len(pattern):,} characters; at most "
                        f"{MAX_PATTERN_CHARS:,} are accepted")  # fmt: skip
        pending += [(value, depth + 1) for value in node.values()]
    return None


def check_schema(schema: Any, param: str) -> None:
    """GatewayError (400, `invalid_json_schema`) when `schema_problem` finds something."""
    if problem := schema_problem(schema):
        raise GatewayError(
            f"The JSON Schema in '{param}' {problem}.", param=param, code="invalid_json_schema"
        )
