"""A server's memory need (models_catalog/memory.py): the KV cache's formula checked on the
test Hub's catalog configs, part by part (not a snapshot of its output)."""

import json

import pytest

from models_catalog import memory
from tests.support.hub_catalog import build_catalog

CONFIGS = {entry.repo_id: json.loads(entry.files["config.json"]) for entry in build_catalog()}

# repo, (layers, KV heads, head dim, context) as the config says them: grouped-query attention,
# a nested text_config (Gemma 3, Mistral 3), a vision model, no GQA (OLMo 2), a MoE.
SHAPES = [
    ("mlx-community/Qwen3-8B-6bit", 36, 8, 4096 // 32, 40960),
    ("mlx-community/Meta-Llama-3.1-8B-Instruct-4bit", 32, 8, 4096 // 32, 131072),
    ("mlx-community/gemma-3-27b-it-4bit", 34, 4, 2560 // 8, 131072),
    ("lmstudio-community/Mistral-Small-3.1-24B-Instruct-2503-MLX-4bit", 40, 8, 5120 // 32, 131072),
    ("mlx-community/Qwen2.5-VL-7B-Instruct-4bit", 28, 4, 3584 // 28, 128000),
    ("mlx-community/OLMo-2-1124-7B-Instruct-4bit", 32, 32, 4096 // 32, 4096),
    ("mlx-community/Qwen3-30B-A3B-4bit", 48, 4, 2048 // 32, 40960),
]


@pytest.mark.parametrize(("repo", "layers", "kv_heads", "head_dim", "context"), SHAPES)
@pytest.mark.parametrize(
    ("kv_bits", "bytes_per_element"), [(None, 2), (8, 1 + 4 / 64), (4, 0.5 + 4 / 64)]
)
def test_the_kv_cache_is_keys_and_values_of_every_layer_at_the_models_context(
    repo, layers, kv_heads, head_dim, context, kv_bits, bytes_per_element
):
    config = CONFIGS[repo]
    model = memory.model_memory(config, weights=1_000_000)
    assert model.shape == memory.KvShape(layers, kv_heads, head_dim)
    assert model.context_length == context
    need = memory.need(model.weights, model.shape, model.context_length, kv_bits, overhead=512)
    expected_kv = 2 * layers * kv_heads * head_dim * context * bytes_per_element
    assert need.kv_cache == round(expected_kv)
    assert need.total == 1_000_000 + round(expected_kv) + 512


def test_an_explicit_head_dim_wins_over_hidden_size_by_heads():
    # Real Gemma 3 and Qwen 3 configs say head_dim, which differs from hidden/heads for Gemma.
    config = {**CONFIGS["mlx-community/Qwen3-8B-6bit"], "head_dim": 256}
    assert memory.kv_shape(config) == memory.KvShape(36, 8, 256)


def test_without_kv_heads_every_attention_head_is_cached():
    config = {k: v for k, v in CONFIGS["mlx-community/Qwen3-8B-6bit"].items()}
    del config["num_key_value_heads"]
    assert memory.kv_shape(config) == memory.KvShape(36, 32, 128)


@pytest.mark.parametrize(
    "config",
    [{}, {"num_hidden_layers": 2}, {"num_hidden_layers": "32", "num_attention_heads": 8,
      "hidden_size": 512}, {"num_hidden_layers": 2, "num_attention_heads": 3, "hidden_size": 10}],
)  # fmt: skip
def test_a_config_that_does_not_say_its_shape_leaves_the_kv_cache_unknown(config):
    assert memory.kv_shape(config) is None
    need = memory.need(100, memory.kv_shape(config), 4096, None, overhead=10)
    assert (need.kv_cache, need.total) == (None, 110)


def test_a_heartbeats_report_gives_back_the_same_facts():
    model = memory.model_memory(CONFIGS["mlx-community/Qwen3-8B-6bit"], weights=123)
    assert memory.ModelMemory.from_report(json.loads(json.dumps(model.as_report()))) == model
    assert memory.ModelMemory.from_report({"weights": "many"}) is None
