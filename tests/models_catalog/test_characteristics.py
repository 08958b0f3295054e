"""Characteristics are read from config.json, the chat template, tags and the repo name.

Pure functions, tables of realistic cases: no database, no network.
"""

import pytest

from models_catalog.characteristics import (
    FAMILIES,
    KNOWN_FAMILIES,
    context_length,
    engine_of,
    estimate_size,
    extract,
    family_of,
    format_context,
    format_parameters,
    is_multimodal,
    model_type_of,
    parameter_count,
    quantization,
    supports_thinking,
    supports_tools,
)
from servers.models import Engine

# --- realistic configs (trimmed copies of real mlx-community config.json files) ------------------

QWEN3_4B_4BIT = {
    "architectures": ["Qwen3ForCausalLM"],
    "model_type": "qwen3",
    "hidden_size": 2560,
    "intermediate_size": 9728,
    "num_hidden_layers": 36,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "vocab_size": 151936,
    "max_position_embeddings": 40960,
    "tie_word_embeddings": True,
    "torch_dtype": "bfloat16",
    "quantization": {"group_size": 64, "bits": 4},
    "quantization_config": {"group_size": 64, "bits": 4},
}
LLAMA_32_1B_BF16 = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 2048,
    "intermediate_size": 8192,
    "num_hidden_layers": 16,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 64,
    "vocab_size": 128256,
    "max_position_embeddings": 131072,
    "tie_word_embeddings": True,
    "torch_dtype": "bfloat16",
}
QWEN25_VL_7B = {
    "architectures": ["Qwen2_5_VLForConditionalGeneration"],
    "model_type": "qwen2_5_vl",
    "hidden_size": 3584,
    "num_hidden_layers": 28,
    "vocab_size": 152064,
    "max_position_embeddings": 128000,
    "image_token_id": 151655,
    "video_token_id": 151656,
    "vision_config": {"depth": 32, "hidden_size": 1280, "patch_size": 14},
    "quantization": {"group_size": 64, "bits": 4},
}
GEMMA3_4B = {
    "architectures": ["Gemma3ForConditionalGeneration"],
    "model_type": "gemma3",
    "image_token_index": 262144,
    "text_config": {
        "model_type": "gemma3_text",
        "hidden_size": 2560,
        "num_hidden_layers": 34,
        "vocab_size": 262208,
        "max_position_embeddings": 131072,
    },
    "vision_config": {"model_type": "siglip_vision_model", "hidden_size": 1152},
    "quantization": {"group_size": 64, "bits": 4},
}
MISTRAL3_SMALL = {
    "architectures": ["Mistral3ForConditionalGeneration"],
    "model_type": "mistral3",
    "text_config": {"model_type": "mistral", "max_position_embeddings": 131072},
    "vision_config": {"model_type": "pixtral"},
    "image_token_index": 10,
}
DEEPSEEK_V3 = {
    "architectures": ["DeepseekV3ForCausalLM"],
    "model_type": "deepseek_v3",
    "hidden_size": 7168,
    "intermediate_size": 18432,
    "moe_intermediate_size": 2048,
    "n_routed_experts": 256,
    "n_shared_experts": 1,
    "num_experts_per_tok": 8,
    "num_hidden_layers": 61,
    "num_attention_heads": 128,
    "vocab_size": 129280,
    "max_position_embeddings": 163840,
    "quantization_config": {"quant_method": "fp8", "fmt": "e4m3"},
}
PHI3_MINI = {
    "architectures": ["Phi3ForCausalLM"],
    "model_type": "phi3",
    "max_position_embeddings": 131072,
    "quantization": {"group_size": 32, "bits": 8},
}
MLLAMA = {"architectures": ["MllamaForConditionalGeneration"], "model_type": "mllama"}
NO_MODEL_TYPE = {"architectures": ["GraniteForCausalLM"], "max_position_embeddings": 131072}

QWEN3_TEMPLATE = (
    "{%- if tools %}<tools>{% for tool in tools %}{{ tool | tojson }}{% endfor %}</tools>"
    "{%- endif %}{%- if enable_thinking is defined and enable_thinking is false %}"
    "{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}"
)
LLAMA3_TOOLS_TEMPLATE = "{%- if tools is not none %}Environment: ipython{% endif %}"
MISTRAL_TOOLS_TEMPLATE = "{{- '[AVAILABLE_TOOLS] [' }}{{- '][/AVAILABLE_TOOLS]' }}"
PHI4_TOOLS_TEMPLATE = "{{ '<|system|>' + message.content + '<|tool|>' + message.tools }}"
DEEPSEEK_R1_TEMPLATE = "{{ '<\uff5cAssistant\uff5c><think>\\n' }}"  # DeepSeek's full-width bars
PHI4_REASONING_TEMPLATE = "Think step by step inside <think> and </think>."
CHATML = "{{ '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' }}"


@pytest.mark.parametrize(
    ("model_type", "family"),
    [
        ("qwen2", "Qwen"),
        ("qwen3", "Qwen"),
        ("qwen2_moe", "Qwen"),
        ("qwen3_moe", "Qwen"),
        ("qwen2_5_vl", "Qwen"),
        ("llama", "Llama"),
        ("mllama", "Llama"),
        ("mistral", "Mistral"),
        ("devstral", "Mistral"),
        ("mixtral", "Mistral"),
        ("mistral3", "Mistral"),
        ("gemma", "Gemma"),
        ("gemma2", "Gemma"),
        ("gemma3", "Gemma"),
        ("gemma3_text", "Gemma"),
        ("phi", "Phi"),
        ("phi3", "Phi"),
        ("phimoe", "Phi"),
        ("deepseek_v2", "DeepSeek"),
        ("deepseek_v3", "DeepSeek"),
        ("Qwen3", "Qwen"),  # case does not matter
        ("granite", "Granite"),
        ("olmo2", "OLMo"),
        ("falcon_h1", "Falcon"),
        ("zeta_lm", "zeta_lm"),  # unknown: the raw value
        ("", ""),
    ],
)
def test_architecture_family_is_normalised_by_one_table(model_type, family):
    assert family_of(model_type) == family


def test_known_families_are_the_table_values_sorted():
    assert set(KNOWN_FAMILIES) == set(FAMILIES.values())
    assert list(KNOWN_FAMILIES) == sorted(KNOWN_FAMILIES, key=str.lower)


@pytest.mark.parametrize(
    ("config", "model_type"),
    [
        (QWEN3_4B_4BIT, "qwen3"),
        (NO_MODEL_TYPE, "granite"),
        ({"architectures": ["MistralModel"]}, "mistral"),
        ({}, ""),
    ],
)
def test_model_type_falls_back_to_the_architecture(config, model_type):
    assert model_type_of(config) == model_type


@pytest.mark.parametrize(
    ("config", "repo_id", "expected"),
    [
        (QWEN3_4B_4BIT, "mlx-community/Qwen3-4B-4bit", (4, 64, "config")),
        (PHI3_MINI, "mlx-community/Phi-3.5-mini-instruct-8bit", (8, 32, "config")),
        (DEEPSEEK_V3, "deepseek-ai/DeepSeek-V3", (8, None, "config")),  # fp8 method
        (
            {"quantization_config": {"quant_method": "mxfp4"}},
            "openai/gpt-oss-20b",
            (4, None, "config"),
        ),
        (LLAMA_32_1B_BF16, "mlx-community/Llama-3.2-1B-Instruct-bf16", (16, None, "name")),
        ({}, "mlx-community/Qwen3-8B-6bit", (6, None, "name")),
        ({}, "someone/model-3-bit", (3, None, "name")),
        ({}, "lmstudio-community/Qwen3-30B-A3B-MLX-4bit", (4, None, "name")),
        ({}, "someone/Mistral-7B-fp16", (16, None, "name")),
        (LLAMA_32_1B_BF16, "someone/llama-1b", (16, None, "dtype")),
        ({}, "someone/model", (None, None, "")),
        ({}, "someone/Qwen2.5-7B", (None, None, "")),  # "2.5" and "7B" are not bits
    ],
)
def test_quantization_from_config_then_name_then_dtype(config, repo_id, expected):
    assert quantization(config, repo_id) == expected


@pytest.mark.parametrize(
    ("config", "tokens"),
    [
        (QWEN3_4B_4BIT, 40960),
        (GEMMA3_4B, 131072),  # nested text_config
        (MISTRAL3_SMALL, 131072),
        ({"n_positions": 1024}, 1024),
        ({"max_sequence_length": 4096}, 4096),
        ({}, None),
        ({"max_position_embeddings": "lots"}, None),
    ],
)
def test_context_length(config, tokens):
    assert context_length(config) == tokens


@pytest.mark.parametrize(
    ("config", "tags", "vision"),
    [
        (QWEN25_VL_7B, [], True),  # vision_config + image/video token ids
        (GEMMA3_4B, [], True),
        (MISTRAL3_SMALL, [], True),
        ({"model_type": "qwen2_vl"}, [], True),  # vl in model_type
        ({"model_type": "some_vision_model"}, [], True),
        ({"architectures": ["Qwen2VLForConditionalGeneration"]}, [], True),
        (MLLAMA, [], True),
        ({"image_token_id": 5}, [], True),
        ({"model_type": "llama"}, ["image-text-to-text"], True),  # a tag says so
        (QWEN3_4B_4BIT, ["text-generation"], False),
        ({"model_type": "devstral"}, [], False),  # "vl" inside a word does not count
        ({}, [], False),
    ],
)
def test_multimodal(config, tags, vision):
    assert is_multimodal(config, tags) is vision


@pytest.mark.parametrize(
    ("config", "tags", "engine"),
    [
        (QWEN3_4B_4BIT, ["text-generation"], "text"),
        ({}, [], "text"),
        (QWEN25_VL_7B, [], "vision"),
        (GEMMA3_4B, [], "vision"),
        ({"model_type": "llama"}, ["image-text-to-text"], "vision"),
        ({"model_type": "whisper", "architectures": ["WhisperForConditionalGeneration"]}, [],
         "speech-to-text"),
        ({"architectures": ["WhisperForConditionalGeneration"]}, [], "speech-to-text"),
        ({"model_type": "parakeet"}, [], "speech-to-text"),
        ({}, ["automatic-speech-recognition"], "speech-to-text"),
        ({"model_type": "bert", "architectures": ["BertModel"]}, [], "embeddings"),
        ({"model_type": "xlm-roberta"}, [], "embeddings"),
        ({"model_type": "modernbert"}, [], "embeddings"),
        # A decoder fine-tuned for embeddings says so with its tags.
        ({"model_type": "qwen3", "architectures": ["Qwen3ForCausalLM"]},
         ["sentence-transformers", "feature-extraction"], "embeddings"),
        ({"model_type": "Whisper"}, [], "speech-to-text"),  # any case
    ],
)  # fmt: skip
def test_engine_fits_the_model(config, tags, engine):
    assert engine_of(config, tags) == engine
    assert extract(config, tags=tags).engine == engine


def test_engine_values_are_the_profile_choices():
    configs = [{}, {"model_type": "qwen2_vl"}, {"model_type": "bert"}, {"model_type": "whisper"}]
    engines = {engine_of(config) for config in configs}
    assert engines == set(Engine.values)


@pytest.mark.parametrize(
    ("template", "tags", "tools"),
    [
        (QWEN3_TEMPLATE, [], True),
        (LLAMA3_TOOLS_TEMPLATE, [], True),
        (MISTRAL_TOOLS_TEMPLATE, [], True),
        (PHI4_TOOLS_TEMPLATE, [], True),
        (CHATML, ["tool-use"], True),
        (CHATML, [], False),
        (DEEPSEEK_R1_TEMPLATE, [], False),
        ("", [], False),
    ],
)
def test_tool_use_from_tags_and_chat_template(template, tags, tools):
    assert supports_tools(template, tags) is tools


@pytest.mark.parametrize(
    ("template", "tags", "thinking"),
    [
        (QWEN3_TEMPLATE, [], True),  # enable_thinking
        (DEEPSEEK_R1_TEMPLATE, [], True),  # <think>
        (PHI4_REASONING_TEMPLATE, [], True),
        ("{{ message.reasoning_content }}", [], True),
        (CHATML, ["reasoning"], True),
        (CHATML, [], False),
        (LLAMA3_TOOLS_TEMPLATE, [], False),
    ],
)
def test_thinking_from_chat_template(template, tags, thinking):
    assert supports_thinking(template, tags) is thinking


@pytest.mark.parametrize(
    ("safetensors", "config", "bits", "group", "repo_id", "expected"),
    [
        # A plain bf16 checkpoint: the Hub's count is the parameter count.
        ({"BF16": 1_235_814_400}, {}, 16, None, "", (1_235_814_400, False)),
        # MLX 4-bit: 4.02B weights packed 8 per U32, plus a bf16 scale and bias per 64.
        ({"U32": 502_500_000, "BF16": 125_625_000}, {}, 4, 64, "", (4_020_000_000, False)),
        # MLX 3-bit with unquantized norms beside the scales and biases.
        ({"U32": 300_000_000, "BF16": 100_000_000 + 5_000}, {}, 3, 64, "", (3_200_005_000, False)),
        # DeepSeek's own FP8 checkpoint: dtypes are simply added.
        (
            {"BF16": 13_420_000_000, "F8_E4M3": 657_580_000_000},
            {},
            8,
            None,
            "",
            (671_000_000_000, False),
        ),
        # No safetensors: estimated from the config's dimensions (Llama 3.2 1B is 1.24B).
        (None, LLAMA_32_1B_BF16, 16, None, "", (1_235_814_400, True)),
        # Nor a usable config: from the name.
        (None, {}, None, None, "mlx-community/Qwen2.5-0.5B-Instruct-4bit", (500_000_000, True)),
        (None, {}, None, None, "mlx-community/SmolLM2-360M-Instruct", (360_000_000, True)),
        (None, {}, None, None, "x/Qwen3-30B-A3B-4bit", (30_000_000_000, True)),
        (None, {}, None, None, "x/model", (None, False)),
    ],
)
def test_parameter_count(safetensors, config, bits, group, repo_id, expected):
    assert parameter_count(safetensors, config, bits=bits, group_size=group, repo_id=repo_id) == (
        expected
    )


def test_moe_estimate_counts_every_expert():
    parameters, estimated = parameter_count(None, DEEPSEEK_V3)
    assert estimated
    assert 600e9 < parameters < 720e9  # DeepSeek V3 has 671B parameters


@pytest.mark.parametrize(
    ("used_storage", "parameters", "bits", "group", "expected"),
    [
        (2_261_000_000, 4_020_000_000, 4, 64, (2_261_000_000, False)),  # the Hub knows
        (None, 4_000_000_000, 4, 64, (2_250_000_000, True)),  # 4 bits + 0.5 for scales
        (None, 1_000_000_000, 16, None, (2_000_000_000, True)),
        (0, 1_000_000_000, 8, 32, (1_125_000_000, True)),  # 8 bits + 1 for scales at 32
        (None, None, 4, 64, (None, False)),
        (None, 1_000_000_000, None, None, (None, False)),
    ],
)
def test_size_from_used_storage_else_estimated(used_storage, parameters, bits, group, expected):
    assert estimate_size(used_storage, parameters, bits, group) == expected


@pytest.mark.parametrize(
    ("config", "template", "tags", "repo_id", "safetensors", "expected"),
    [
        (
            QWEN3_4B_4BIT,
            QWEN3_TEMPLATE,
            ["mlx", "text-generation"],
            "mlx-community/Qwen3-4B-4bit",
            {"U32": 502_500_000, "BF16": 125_625_000},
            dict(family="Qwen", parameters=4_020_000_000, bits=4, group_size=64,
                 context_length=40960, vision=False, tools=True, thinking=True),
        ),
        (
            GEMMA3_4B,
            CHATML,
            ["image-text-to-text"],
            "mlx-community/gemma-3-4b-it-4bit",
            None,
            dict(family="Gemma", bits=4, context_length=131072, vision=True, tools=False,
                 thinking=False, parameters_estimated=True),
        ),
        (
            None,  # nothing fetched yet: the name still says something
            "",
            [],
            "someone/Llama-3.2-3B-Instruct-8bit",
            None,
            dict(family="", parameters=3_000_000_000, parameters_estimated=True, bits=8,
                 context_length=None, vision=False),
        ),
    ],
)  # fmt: skip
def test_extract_all_characteristics(config, template, tags, repo_id, safetensors, expected):
    found = extract(
        config,
        chat_template=template,
        tags=tags,
        repo_id=repo_id,
        safetensors_parameters=safetensors,
    )
    for name, value in expected.items():
        assert getattr(found, name) == value, name


@pytest.mark.parametrize(
    ("parameters", "label"),
    [
        (7_615_616_512, "7.6B"),
        (1_000_000_000, "1B"),
        (235_000_000_000, "235B"),
        (494_032_768, "494M"),
        (None, ""),
    ],
)
def test_parameter_labels(parameters, label):
    assert format_parameters(parameters) == label


@pytest.mark.parametrize(
    ("tokens", "label"), [(131072, "128K"), (40960, "40K"), (128000, "128K"), (512, "512")]
)
def test_context_labels(tokens, label):
    assert format_context(tokens) == label
