"""What the Hub says is cleaned or refused when it is read (models_catalog/hub_data.py): NaN,
infinities, numbers no column holds, wrong types, NUL characters, huge strings and deep nesting.
Pure functions, tested with tables of cases and with generated JSON."""

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models_catalog import hub_data
from models_catalog.characteristics import (
    BITS_RANGE,
    CONTEXT_RANGE,
    GROUP_SIZE_RANGE,
    MAX_PARAMETERS,
    MAX_SIZE_BYTES,
    estimate_size,
    extract,
)
from models_catalog.hub_data import HubDataError, StoredJSONDecoder

BIG = 2**53

# --- loads: JSON text -> clean values ---------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ('{"max_position_embeddings": 1e309}', {"max_position_embeddings": None}),
        ('{"a": -1e309, "b": 1e400, "c": -1e400}', {"a": None, "b": None, "c": None}),
        ('{"a": NaN, "b": Infinity, "c": -Infinity}', {"a": None, "b": None, "c": None}),
        ("[9007199254740992, 9007199254740993]", [BIG, None]),
        ("[-9007199254740992, -9007199254740993]", [-BIG, None]),
        ("[123456789012345678901234567890, 1e20, 1.5e15]", [None, None, 1.5e15]),
        ("[0, 1e-7, 0.5, true, false, null]", [0, 1e-7, 0.5, True, False, None]),
        ('{"s": "a\\u0000b", "t": "x\\ud800y"}', {"s": "ab", "t": "x?y"}),
        ('{"\\u0000key": 1}', {"key": 1}),
        ('"' + "x" * (hub_data.MAX_STRING + 1) + '"', None),
        ('{"ok": "' + "x" * hub_data.MAX_STRING + '"}', {"ok": "x" * hub_data.MAX_STRING}),
        ("[" + "1" * 5000 + "]", [None]),  # never converted (Python refuses 4300+ digits)
    ],
)
def test_loads_cleans_what_no_column_or_page_can_take(raw, expected):
    value = hub_data.loads(raw)
    assert value == expected
    json.dumps(value, allow_nan=False)  # what a JSON column accepts


def test_nesting_beyond_max_depth_becomes_null():
    value = hub_data.loads("[" * 40 + "]" * 40)
    depth = 0
    while isinstance(value, list):
        value, depth = value[0] if value else None, depth + 1
    assert depth == hub_data.MAX_DEPTH and value is None


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[" * 200_000 + "]" * 200_000, "nested too deeply"),
        (b"\xff\xfe{}", "not valid JSON"),
        ("[" + "0," * 5_000_000 + "0]", "larger than"),
    ],
)
def test_loads_refuses_what_cannot_be_read(raw, message):
    with pytest.raises(HubDataError, match=message):
        hub_data.loads(raw)


def test_loads_keeps_a_real_config_as_it_is():
    config = {
        "architectures": ["Qwen3ForCausalLM"],
        "max_position_embeddings": 40960,
        "rope_theta": 1000000,
        "rms_norm_eps": 1e-06,
        "quantization": {"group_size": 64, "bits": 4},
        "torch_dtype": "bfloat16",
        "tie_word_embeddings": True,
        "rope_scaling": None,
    }
    assert hub_data.loads(json.dumps(config)) == config


# --- small helpers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "low", "high", "expected"),
    [
        (5, 0, 10, 5),
        (5.0, 0, 10, 5),
        (5.5, 0, 10, None),
        (-1, 0, 10, None),
        (11, 0, 10, None),
        (True, 0, 10, None),
        ("5", 0, 10, None),
        (math.inf, 0, 10, None),
        (math.nan, 0, 10, None),
        (1e300, 0, BIG, None),
        (None, 0, 10, None),
        ([5], 0, 10, None),
    ],
)
def test_number_takes_integers_within_bounds_only(value, low, high, expected):
    assert hub_data.number(value, low, high) == expected


@pytest.mark.parametrize(
    ("value", "limit", "expected"),
    [
        ("plain", None, "plain"),
        ("nul\x00in", None, "nulin"),
        ("half \ud83d surrogate", None, "half ? surrogate"),
        ("long", 2, "lo"),
        (42, None, ""),
        (None, None, ""),
        ({"a": 1}, None, ""),
    ],
)
def test_text_is_what_a_text_column_takes(value, limit, expected):
    assert hub_data.text(value, limit) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2025-06-01T12:00:00.000Z", "2025-06-01T12:00:00.000000Z"),
        ("2024-11-16T00:27:02Z", "2024-11-16T00:27:02.000000Z"),
        ("2022-08-19T07:19:38.123456789Z", "2022-08-19T07:19:38.123456Z"),
        ("0001-01-01T00:00:00.000Z", None),  # a template's time zone shift would overflow
        ("9999-12-31T23:59:59.999Z", None),
        ("2025-13-45T00:00:00.000Z", None),
        ("yesterday", None),
        (1717243200, None),
        ("2025-06-01T12:00:00.000Z" + " " * 100, None),
    ],
)
def test_dates_are_hub_dates_in_a_sane_year(value, expected):
    assert hub_data.date(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("{{ messages }}", "{{ messages }}"),
        ([{"name": "default", "template": "A"}, {"name": "tool_use", "template": "B"}], "A\nB"),
        ([{"name": "x", "template": 7}, "junk"], ""),
        (7, ""),
        ("x" * (hub_data.MAX_STRING + 1), ""),
        ("a\x00b", "ab"),
    ],
)
def test_chat_templates_are_text(value, expected):
    assert hub_data.chat_template(value) == expected


# --- one model of /api/models ---------------------------------------------------------------------

SHA = "a" * 40
SHA256 = "b" * 64
BF16 = {"BF16": 10}
SIZELESS_A = {"rfilename": "a", "size": None}


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("downloads", 1234, 1234),
        ("downloads", math.inf, None),
        ("downloads", -5, None),
        ("downloads", "many", None),
        ("downloads", 2**63, None),
        ("likes", 2**31 - 1, 2**31 - 1),
        ("likes", 2**31, None),  # beyond a PostgreSQL integer column
        ("trendingScore", -3, -3),
        ("trendingScore", 1e10, None),
        ("usedStorage", 4_500_000_000, 4_500_000_000),
        ("usedStorage", 1e400, None),
        ("usedStorage", math.nan, None),
        ("author", "x" * 500, "x" * 96),
        ("author", 7, None),
        ("sha", SHA, SHA),
        ("sha", "not-a-sha", None),
        ("gated", "manual", "manual"),
        ("gated", True, "manual"),
        ("gated", False, False),
        ("gated", "sometimes", None),
        ("private", "yes", None),
        ("pipeline_tag", "text-generation", "text-generation"),
        ("pipeline_tag", ["text-generation"], None),
        ("library_name", "m" * 100, "m" * 64),
        ("lastModified", "2025-06-01T12:00:00.000Z", "2025-06-01T12:00:00.000000Z"),
        ("lastModified", "soon", None),
        ("tags", ["mlx", 4, None, "x" * 201, "a\x00b", {"t": 1}], ["mlx", "ab"]),
        ("tags", "mlx", None),
        ("tags", [f"t{i}" for i in range(300)], [f"t{i}" for i in range(200)]),
        ("config", {"model_type": "qwen3", "x": math.inf}, {"model_type": "qwen3", "x": None}),
        ("config", ["not", "a", "dict"], None),
        ("safetensors", {"parameters": BF16, "total": 10}, {"parameters": BF16, "total": 10}),
        ("safetensors", {"parameters": {"U32": -1, **BF16}}, {"parameters": BF16, "total": 0}),
        ("safetensors", {"parameters": {"U32": "x"}}, None),
        ("safetensors", {"parameters": [1, 2]}, None),
        ("safetensors", "big", None),
    ],
)  # fmt: skip
def test_a_listed_model_keeps_each_field_within_its_bounds(field, value, expected):
    item = hub_data.model_item({"id": "org/model", field: value})
    assert item.get(field) == expected
    json.dumps(item, allow_nan=False)


@pytest.mark.parametrize(
    ("siblings", "expected"),
    [
        (
            [{"rfilename": "model.safetensors", "size": 10, "blobId": SHA,
              "lfs": {"sha256": SHA256, "size": 10, "pointerSize": 134}}],
            [{"rfilename": "model.safetensors", "size": 10, "blobId": SHA,
              "lfs": {"sha256": SHA256, "size": 10, "pointerSize": 134}}],
        ),
        ([{"rfilename": "a", "size": 1e309}], [{"rfilename": "a", "size": None}]),
        ([{"rfilename": "a", "size": -1}], [{"rfilename": "a", "size": None}]),
        ([{"rfilename": "a", "lfs": {"sha256": "short", "size": 1}}], [SIZELESS_A]),
        ([{"rfilename": "a", "lfs": {"sha256": SHA256, "size": math.nan}}], [SIZELESS_A]),
        ([{"rfilename": 5}, {"size": 3}, "junk", {"rfilename": "a\x00b"}, {"rfilename": ""}], []),
        ("all of them", None),
    ],
)  # fmt: skip
def test_a_models_files_keep_only_what_holds(siblings, expected):
    item = hub_data.model_item({"id": "org/model", "siblings": siblings})
    assert item.get("siblings") == expected


@pytest.mark.parametrize("item", [None, [], "org/model", {"id": 5}, {"id": ""}, {"no": "id"}])
def test_what_is_not_a_model_is_left_out(item):
    assert hub_data.model_item(item) is None


def test_fields_the_portal_does_not_use_are_dropped():
    item = hub_data.model_item({"id": "org/model", "cardData": {"x": math.nan}, "widgetData": [1]})
    assert item == {"id": "org/model"}


# --- rows stored before the rules -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("stored", "expected"),
    [
        ('{"a": 1}', {"a": 1}),
        ('{"a": 1e309, "b": NaN}', {"a": None, "b": None}),
        ("[123456789012345678901234567890]", [None]),
        ("[" * 200_000 + "]" * 200_000, None),
        ("not json", None),
    ],
)
def test_stored_json_is_read_clean_or_as_null(stored, expected):
    assert json.loads(stored, cls=StoredJSONDecoder) == expected


# --- generated JSON -------------------------------------------------------------------------------

HOSTILE_NUMBERS = st.sampled_from(
    ["1e309", "-1e309", "1e400", "NaN", "Infinity", "-Infinity", "-1", "0", "1e18",
     "9223372036854775808", "4.5", '"4"', '"sixteen"', "true", "null", "[]", "{}", '"\\u0000"',
     '"\\ud800"', "[" * 50 + "]" * 50]
)  # fmt: skip
JSON_TEXT = st.recursive(
    st.one_of(
        HOSTILE_NUMBERS,
        st.integers().map(str),
        st.floats().map(json.dumps),  # NaN, Infinity and -Infinity included
        st.text(max_size=8).map(json.dumps),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4).map(lambda items: "[" + ",".join(items) + "]"),
        st.dictionaries(
            st.sampled_from(["max_position_embeddings", "hidden_size", "quantization", "bits",
                             "group_size", "text_config", "vocab_size", "num_hidden_layers",
                             "model_type", "architectures", "torch_dtype", "usedStorage"]),
            inner,
            max_size=5,
        ).map(lambda d: "{" + ",".join(f"{json.dumps(k)}: {v}" for k, v in d.items()) + "}"),
    ),
    max_leaves=20,
)  # fmt: skip


def _within_bounds(value, depth=0) -> None:
    assert depth <= hub_data.MAX_DEPTH
    if isinstance(value, dict):
        for key, item in value.items():
            assert "\x00" not in key
            _within_bounds(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _within_bounds(item, depth + 1)
    elif isinstance(value, str):
        assert "\x00" not in value and len(value) <= hub_data.MAX_STRING
        value.encode("utf-8")  # no unpaired surrogate
    elif isinstance(value, int | float) and not isinstance(value, bool):
        assert -BIG <= value <= BIG


@settings(max_examples=300, deadline=None)
@given(raw=JSON_TEXT)
def test_any_json_is_read_within_bounds_or_refused_with_a_reason(raw):
    try:
        value = hub_data.loads(raw)
    except HubDataError as refused:
        assert refused.message
        return
    _within_bounds(value)
    json.dumps(value, allow_nan=False)
    # ...and whatever characteristics follow fit their columns.
    found = extract(value if isinstance(value, dict) else {}, repo_id="org/model-99999999B-99bit")
    assert found.parameters is None or 0 < found.parameters <= MAX_PARAMETERS
    assert found.bits is None or BITS_RANGE[0] <= found.bits <= BITS_RANGE[1]
    assert (
        found.group_size is None or GROUP_SIZE_RANGE[0] <= found.group_size <= GROUP_SIZE_RANGE[1]
    )
    assert (
        found.context_length is None or CONTEXT_RANGE[0] <= found.context_length <= CONTEXT_RANGE[1]
    )
    size, _ = estimate_size(None, found.parameters, found.bits, found.group_size)
    assert size is None or 0 < size <= MAX_SIZE_BYTES


@settings(max_examples=200, deadline=None)
@given(item=st.dictionaries(st.sampled_from(
    ["downloads", "likes", "trendingScore", "usedStorage", "author", "sha", "gated", "tags",
     "lastModified", "safetensors", "config", "siblings", "pipeline_tag", "library_name"]),
    JSON_TEXT, max_size=6))  # fmt: skip
def test_any_listed_model_is_kept_within_bounds(item):
    raw = '{"id": "org/model"' + "".join(f", {json.dumps(k)}: {v}" for k, v in item.items()) + "}"
    try:
        parsed = hub_data.loads(raw)
    except HubDataError:
        return
    cleaned = hub_data.model_item(parsed)
    assert cleaned is not None and cleaned["id"] == "org/model"
    _within_bounds(cleaned)
    from huggingface_hub.hf_api import ModelInfo

    ModelInfo(**{"siblings": None, **cleaned})  # huggingface_hub takes it as is
