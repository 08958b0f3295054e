"""A new profile's defaults (servers.validation.profile_defaults): from the model's
generation_config.json when it has one, else the usual chat sampling; a reply length with room
for a thinking model, bounded by the context."""

from __future__ import annotations

import pytest

from servers.validation import profile_defaults

USUAL = {"temperature": 0.7, "top_p": 0.95, "top_k": 0, "min_p": 0.0}

CASES = [
    ("no generation_config.json", None, None, {**USUAL, "max_tokens": 8192}),
    ("an empty one", {}, 32768, {**USUAL, "max_tokens": 8192}),
    ("Qwen3's sampling", {"do_sample": True, "temperature": 0.6, "top_p": 0.95, "top_k": 20},
     40960, {"temperature": 0.6, "top_p": 0.95, "top_k": 20, "min_p": 0.0, "max_tokens": 8192}),
    ("only a temperature", {"temperature": 1.0}, None,
     {**USUAL, "temperature": 1.0, "max_tokens": 8192}),
    ("min-p", {"min_p": 0.05}, None, {**USUAL, "min_p": 0.05, "max_tokens": 8192}),
    ("do_sample false is greedy", {"do_sample": False, "temperature": 0.9}, 2048,
     {"temperature": 0.0, "top_p": 1.0, "top_k": 0, "min_p": 0.0, "max_tokens": 1024}),
    ("a small context: half of it", {}, 4096, {**USUAL, "max_tokens": 2048}),
    ("a tiny context still leaves a token", {}, 1, {**USUAL, "max_tokens": 1}),
    ("out of range values are ignored",
     {"temperature": 7, "top_p": 0, "top_k": 2.5, "min_p": -1}, None,
     {**USUAL, "max_tokens": 8192}),
    ("values of the wrong type are ignored",
     {"temperature": "hot", "top_p": True, "top_k": None, "min_p": [0.1]}, None,
     {**USUAL, "max_tokens": 8192}),
    ("not a JSON object", ["temperature", 0.1], None, {**USUAL, "max_tokens": 8192}),
    ("top_k as a float that is whole", {"top_k": 40.0}, None,
     {**USUAL, "top_k": 40, "max_tokens": 8192}),
]  # fmt: skip


@pytest.mark.parametrize(
    "config,context,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_a_new_profiles_defaults_come_from_the_models_generation_config(config, context, expected):
    defaults = profile_defaults(config, context)
    assert defaults == expected
    assert isinstance(defaults["top_k"], int)
