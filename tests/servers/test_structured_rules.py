"""The pure rules of structured output, as tables: the gateway's bounds on a JSON Schema
(servers/gateway/json_schema.py), OpenAI's strict rules and the grammar asked of the model
server (servers/supervision/mlx_entry.py). The engine itself runs in
tests/servers/test_structured_output.py."""

from __future__ import annotations

import pytest

from servers.gateway.json_schema import MAX_SCHEMA_DEPTH, schema_problem
from servers.supervision.mlx_entry import Refused, ToolFormat, output_grammar, strict_problem


def _nested(depth: int) -> dict:
    schema: dict = {"type": "integer"}
    for _ in range(depth - 1):
        schema = {"type": "array", "items": schema}
    return schema


BOUNDS = [
    ("plain object", {"type": "object", "properties": {"a": {"type": "string"}}}, None),
    ("recursive local $ref", {"$defs": {"n": {"$ref": "#/$defs/n"}}, "$ref": "#/$defs/n"}, None),
    ("not an object", ["type", "object"], "must be a JSON Schema object"),
    ("too big", {"enum": ["x" * 70_000]}, "bytes of JSON"),
    ("deep enough", _nested(MAX_SCHEMA_DEPTH // 2), None),
    ("too deep", _nested(MAX_SCHEMA_DEPTH + 1), "nested more than"),
    ("remote $ref", {"$ref": "https://example.com/s.json"}, "outside the schema"),
    ("file $ref", {"items": {"$ref": "/etc/passwd"}}, "outside the schema"),
    ("long pattern", {"type": "string", "pattern": "a" * 1001}, "'pattern' of 1,001"),
    ("long patternProperties key", {"patternProperties": {"b" * 1001: {}}}, "'pattern' of"),
]  # fmt: skip


@pytest.mark.parametrize("label,schema,problem", BOUNDS, ids=[b[0] for b in BOUNDS])
def test_schema_bounds(label, schema, problem):
    found = schema_problem(schema)
    assert (found is None) if problem is None else (problem in found), found


STRICT = [
    ("strict object", {"type": "object", "properties": {"a": {"type": "string"}},
                       "required": ["a"], "additionalProperties": False}, None),
    ("extra properties allowed", {"type": "object", "properties": {}}, "additionalProperties"),
    ("a property not required", {"type": "object", "properties": {"a": {}, "b": {}},
                                 "required": ["a"], "additionalProperties": False}, "'b'"),
    ("nested in $defs", {"$defs": {"x": {"type": "object", "properties": {"a": {}}}},
                         "$ref": "#/$defs/x"}, "schema.$defs.x"),
    ("nested in anyOf", {"anyOf": [{"type": "string"}, {"type": "object"}]}, "anyOf[1]"),
    ("not an object schema", {"type": "array", "items": {"type": "integer"}}, None),
]  # fmt: skip


@pytest.mark.parametrize("label,schema,problem", STRICT, ids=[s[0] for s in STRICT])
def test_strict_rules_are_openais(label, schema, problem):
    found = strict_problem(schema)
    assert (found is None) if problem is None else (problem in found), found


TOOLS = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}},
         {"type": "function", "function": {"name": "g"}}]  # fmt: skip
FORMAT = ToolFormat(start="<[9]>", end="<[10]>")
JSON_MODE = {"type": "json_object"}


def test_what_the_grammar_allows():
    assert output_grammar({}, FORMAT) is None
    assert output_grammar({"response_format": {"type": "text"}}, FORMAT) is None
    assert output_grammar({"response_format": JSON_MODE}, FORMAT).startswith("start: %json {")
    # Free to call a tool or not: nothing constrains the reply.
    assert output_grammar({"tools": TOOLS}, FORMAT) is None
    required = output_grammar({"tools": TOOLS, "tool_choice": "required"}, FORMAT)
    assert required.splitlines()[0] == "start: call_0 | call_1"
    assert '<[9]> "\\n{\\"name\\": \\"g\\", \\"arguments\\": " args_1 "}\\n" <[10]>' in required
    named = output_grammar(
        {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "g"}}}, FORMAT
    )
    assert named.splitlines()[0] == "start: call_0" and '\\"g\\"' in named
    # JSON or a call, as OpenAI allows with tools on "auto"; only JSON when they are off.
    both = output_grammar({"tools": TOOLS, "response_format": JSON_MODE}, FORMAT)
    assert both.splitlines()[0] == "start: answer | call_0 | call_1"
    off = output_grammar({"tools": TOOLS, "tool_choice": "none", "response_format": JSON_MODE},
                         FORMAT)  # fmt: skip
    assert off.splitlines()[0].startswith("start: %json")
    # A model whose call format is not known here: its calls are not constrained.
    assert output_grammar({"tools": TOOLS, "tool_choice": "required"}, None) is None


@pytest.mark.parametrize(
    "body,param",
    [
        ({"response_format": {"type": "yaml"}}, "response_format"),
        ({"response_format": {"type": "json_schema"}}, "response_format"),
        ({"response_format": {"type": "json_schema", "json_schema": {"schema": []}}},
         "response_format.json_schema.schema"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "h"}}},
         "tool_choice"),
        ({"tools": [{"function": {"name": "bad name"}}], "tool_choice": "required"}, "tools"),
    ],
)  # fmt: skip
def test_what_cannot_be_constrained_is_refused(body, param):
    with pytest.raises(Refused) as refused:
        output_grammar(body, FORMAT)
    assert refused.value.param == param
