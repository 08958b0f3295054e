# ruff: noqa: RUF001 - the DeepSeek templates use fullwidth bars on purpose, as the real ones do.
"""The built-in catalog of the fake Hub: about sixty realistic model repositories.

Each entry is metadata (downloads, likes, trending score, dates, tags, ``usedStorage`` and/or
``safetensors`` parameter counts, gating) plus three small real files that the real client can
fetch: ``config.json``, ``tokenizer_config.json`` (with a chat template) and ``README.md`` (a model
card whose YAML front matter is the repo's ``cardData``). Weights are *not* served: the sizes say
what the real repository would weigh (from ~300 MB to ~400 GB), the files stay tiny.

Realistic quirks kept on purpose:

* Quantized MLX repos report ``safetensors.parameters`` the way the Hub does, in packed ``U32``
  words plus ``BF16`` scales/biases, so ``safetensors.total`` is far below the true parameter
  count (true ~ U32 * 32 / bits). The true count is in :attr:`CatalogEntry.true_parameters`.
* Some repos have no ``usedStorage`` at all (only ``safetensors``), as happens on the Hub.
* Vision models come in several shapes: ``vision_config`` at the top level with
  ``image_token_id``/``video_token_id`` (Qwen2.5-VL), nested ``text_config`` (Gemma 3,
  Mistral 3), or ``vl``/``vision`` only in ``model_type``/``architectures``.
* A few entries are not MLX at all (``library_name: transformers``); ``filter=mlx`` drops them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

# --- chat templates (short, but with the markers real ones carry) -----------------------------

CHATML = (
    "{%- for message in messages %}{{- '<|im_start|>' + message.role + '\\n' + message.content"
    " + '<|im_end|>\\n' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

QWEN25_TOOLS = (
    "{%- if tools %}{{- '<|im_start|>system\\n# Tools\\n\\nYou may call one or more functions to"
    " assist with the user query.\\n\\n<tools>' }}{%- for tool in tools %}{{- '\\n' }}"
    "{{- tool | tojson }}{%- endfor %}{{- '\\n</tools>\\n\\nFor each function call, return a"
    " json object with function name and arguments within <tool_call></tool_call> XML tags."
    "<|im_end|>\\n' }}{%- endif %}"
    "{%- for message in messages %}{%- if message.tool_calls %}"
    "{%- for tool_call in message.tool_calls %}{%- if tool_call.function is defined %}"
    "{%- set tool_call = tool_call.function %}{%- endif %}"
    "{{- '<tool_call>\\n{\"name\": \"' + tool_call.name + '\"}\\n</tool_call>' }}{%- endfor %}"
    "{%- else %}{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}"
    "{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

QWEN3_TOOLS_THINKING = (
    QWEN25_TOOLS.removesuffix(
        "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
    )
    + "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}"
    "{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}{%- endif %}"
)

QWEN3_THINKING = (
    CHATML.removesuffix(
        "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
    )
    + "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}"
    "{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}{%- endif %}"
)

LLAMA3 = (
    "{{- bos_token }}{%- for message in messages %}{{- '<|start_header_id|>' + message.role +"
    " '<|end_header_id|>\\n\\n' + message.content | trim + '<|eot_id|>' }}{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)

LLAMA3_TOOLS = (
    "{{- bos_token }}{%- if tools is not none %}{{- '<|start_header_id|>system<|end_header_id|>"
    "\\n\\nEnvironment: ipython\\nGiven the following functions, please respond with a JSON for a"
    " function call.\\n\\n' }}{%- for t in tools %}{{- t | tojson(indent=4) }}{{- '\\n\\n' }}"
    "{%- endfor %}{{- '<|eot_id|>' }}{%- endif %}" + LLAMA3.removeprefix("{{- bos_token }}")
)

MISTRAL = (
    "{{- bos_token }}{%- for message in messages %}{%- if message.role == 'user' %}"
    "{{- '[INST] ' + message.content + '[/INST]' }}{%- else %}{{- message.content + eos_token }}"
    "{%- endif %}{%- endfor %}"
)

MISTRAL_TOOLS = (
    "{{- bos_token }}{%- if tools is not none %}{{- '[AVAILABLE_TOOLS] [' }}"
    "{%- for tool in tools %}{{- tool | tojson }}{%- if not loop.last %}{{- ', ' }}{%- endif %}"
    "{%- endfor %}{{- '][/AVAILABLE_TOOLS]' }}{%- endif %}"
    "{%- for message in messages %}{%- if message.tool_calls is defined %}{{- '[TOOL_CALLS] ' }}"
    "{{- message.tool_calls | tojson }}{{- eos_token }}{%- elif message.role == 'user' %}"
    "{{- '[INST] ' + message.content + '[/INST]' }}{%- else %}{{- message.content + eos_token }}"
    "{%- endif %}{%- endfor %}"
)

GEMMA = (
    "{{ bos_token }}{%- for message in messages %}{%- set role = 'model' if message.role =="
    " 'assistant' else message.role %}{{ '<start_of_turn>' + role + '\\n' + message.content | trim"
    " + '<end_of_turn>\\n' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{%- endif %}"
)

PHI3 = (
    "{%- for message in messages %}{{ '<|' + message.role + '|>\\n' + message.content +"
    " '<|end|>\\n' }}{%- endfor %}{%- if add_generation_prompt %}{{ '<|assistant|>\\n' }}"
    "{%- else %}{{ eos_token }}{%- endif %}"
)

PHI4_TOOLS = (
    "{%- for message in messages %}{%- if message.role == 'system' and 'tools' in message %}"
    "{{ '<|system|>' + message.content + '<|tool|>' + message.tools + '<|/tool|>' + '<|end|>' }}"
    "{%- else %}{{ '<|' + message.role + '|>' + message.content + '<|end|>' }}{%- endif %}"
    "{%- endfor %}{%- if add_generation_prompt %}{{ '<|assistant|>' }}{%- endif %}"
)

PHI4_REASONING = (
    "{{ '<|system|>Your name is Phi, an AI math expert. Think step by step inside <think> and"
    " </think>.<|end|>' }}" + PHI3
)

DEEPSEEK_V3_TOOLS = (
    "{{ bos_token }}{%- for message in messages %}{%- if message.role == 'user' %}"
    "{{ '<｜User｜>' + message.content }}{%- elif message.tool_calls %}"
    "{{ '<｜Assistant｜><｜tool▁calls▁begin｜>' }}{%- for tool in message.tool_calls %}"
    "{{ '<｜tool▁call▁begin｜>' + tool.type + '<｜tool▁sep｜>' + tool.function.name }}"
    "{{ '<｜tool▁call▁end｜>' }}{%- endfor %}{{ '<｜tool▁calls▁end｜><｜end▁of▁sentence｜>' }}"
    "{%- else %}{{ '<｜Assistant｜>' + message.content + '<｜end▁of▁sentence｜>' }}{%- endif %}"
    "{%- endfor %}{%- if tools %}{# tools are described in the system prompt #}{%- endif %}"
    "{%- if add_generation_prompt %}{{ '<｜Assistant｜>' }}{%- endif %}"
)

DEEPSEEK_R1 = (
    "{{ bos_token }}{%- for message in messages %}{%- if message.role == 'user' %}"
    "{{ '<｜User｜>' + message.content }}{%- else %}{%- set content = message.content %}"
    "{%- if '</think>' in content %}{%- set content = content.split('</think>')[-1] %}{%- endif %}"
    "{{ '<｜Assistant｜>' + content + '<｜end▁of▁sentence｜>' }}{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{ '<｜Assistant｜><think>\\n' }}{%- endif %}"
)

# --- architecture families ---------------------------------------------------------------------

# model_type -> (architecture, hidden, layers, heads, kv heads, vocab, context, bos, eos)
_FAMILIES: dict[str, tuple[str, int, int, int, int, int, int, str, str]] = {
    "llama": (
        "LlamaForCausalLM",
        4096,
        32,
        32,
        8,
        128256,
        131072,
        "<|begin_of_text|>",
        "<|eot_id|>",
    ),
    "mllama": (
        "MllamaForConditionalGeneration",
        4096,
        40,
        32,
        8,
        128256,
        131072,
        "<|begin_of_text|>",
        "<|eot_id|>",
    ),
    "qwen2": ("Qwen2ForCausalLM", 3584, 28, 28, 4, 152064, 32768, "", "<|im_end|>"),
    "qwen2_moe": ("Qwen2MoeForCausalLM", 2048, 24, 16, 16, 151936, 8192, "", "<|im_end|>"),
    "qwen2_vl": (
        "Qwen2VLForConditionalGeneration",
        1536,
        28,
        12,
        2,
        151936,
        32768,
        "",
        "<|im_end|>",
    ),
    "qwen2_5_vl": (
        "Qwen2_5_VLForConditionalGeneration",
        3584,
        28,
        28,
        4,
        152064,
        128000,
        "",
        "<|im_end|>",
    ),
    "qwen3": ("Qwen3ForCausalLM", 4096, 36, 32, 8, 151936, 40960, "", "<|im_end|>"),
    "qwen3_moe": ("Qwen3MoeForCausalLM", 2048, 48, 32, 4, 151936, 40960, "", "<|im_end|>"),
    "mistral": ("MistralForCausalLM", 4096, 32, 32, 8, 32768, 32768, "<s>", "</s>"),
    "mistral3": (
        "Mistral3ForConditionalGeneration",
        5120,
        40,
        32,
        8,
        131072,
        131072,
        "<s>",
        "</s>",
    ),
    "mixtral": ("MixtralForCausalLM", 4096, 32, 32, 8, 32000, 32768, "<s>", "</s>"),
    "gemma2": ("Gemma2ForCausalLM", 3584, 42, 16, 8, 256000, 8192, "<bos>", "<eos>"),
    "gemma3": ("Gemma3ForConditionalGeneration", 2560, 34, 8, 4, 262208, 131072, "<bos>", "<eos>"),
    "gemma3_text": ("Gemma3ForCausalLM", 1152, 26, 4, 1, 262144, 32768, "<bos>", "<eos>"),
    "phi3": ("Phi3ForCausalLM", 3072, 32, 24, 8, 200064, 131072, "<|endoftext|>", "<|end|>"),
    "deepseek_v3": (
        "DeepseekV3ForCausalLM",
        7168,
        61,
        128,
        128,
        129280,
        163840,
        "<｜begin▁of▁sentence｜>",
        "<｜end▁of▁sentence｜>",
    ),
    "granite": (
        "GraniteForCausalLM",
        4096,
        40,
        32,
        8,
        49159,
        131072,
        "<|end_of_text|>",
        "<|end_of_text|>",
    ),
    "falcon_h1": (
        "FalconH1ForCausalLM",
        3072,
        44,
        12,
        2,
        130049,
        262144,
        "<|begin_of_text|>",
        "<|end_of_text|>",
    ),
    "olmo2": ("Olmo2ForCausalLM", 4096, 32, 32, 32, 100352, 4096, "<|endoftext|>", "<|endoftext|>"),
    "zeta_lm": ("ZetaForCausalLM", 4096, 30, 32, 8, 64000, 65536, "<s>", "</s>"),
}

_VISION_CONFIG = {
    "model_type": "siglip_vision_model",
    "hidden_size": 1152,
    "image_size": 896,
    "intermediate_size": 4304,
    "num_attention_heads": 16,
    "num_hidden_layers": 27,
    "patch_size": 14,
}


@dataclass
class CatalogEntry:
    """One repository of the built-in catalog: files to serve plus Hub metadata."""

    repo_id: str
    files: dict[str, bytes]
    meta: dict[str, Any]
    gated: bool | str = False
    private: bool = False
    true_parameters: int = 0
    bits: int = 16
    vision: bool = False
    tools: bool = False
    thinking: bool = False


@dataclass
class _Row:
    repo_id: str
    model_type: str
    params_b: float
    bits: int
    template: str
    downloads: int
    likes: int
    trending: int
    age_days: int
    vision: bool = False
    tools: bool = False
    thinking: bool = False
    used_storage: bool = True
    library: str = "mlx"
    gated: bool | str = False
    text_config: bool = False
    extra_config: dict[str, Any] = field(default_factory=dict)


def _rows() -> list[_Row]:
    # Flags: T tools, K thinking (reasoning), V vision, C nested text_config, N no usedStorage.
    Q25, Q3T, Q3 = QWEN25_TOOLS, QWEN3_TOOLS_THINKING, QWEN3_THINKING
    L3T, MT = LLAMA3_TOOLS, MISTRAL_TOOLS
    qwen_vl = {"image_token_id": 151655, "video_token_id": 151656}
    gemma_vl = {"image_token_index": 262144}
    mc, lm = "mlx-community", "lmstudio-community"
    # fmt: off
    return [
        # mlx-community: the bulk of MLX conversions
        _r(f"{mc}/Qwen2.5-0.5B-Instruct-4bit", "qwen2", 0.49, 4, Q25, 48210, 31, 12, 420, "T"),
        _r(f"{mc}/Qwen2.5-7B-Instruct-4bit", "qwen2", 7.62, 4, Q25, 95120, 88, 40, 400, "T"),
        _r(f"{mc}/Qwen2.5-7B-Instruct-8bit", "qwen2", 7.62, 8, Q25, 20311, 19, 6, 398, "T"),
        _r(f"{mc}/Qwen2.5-Coder-32B-Instruct-4bit", "qwen2", 32.8, 4, Q25, 38022, 142, 25, 350,
           "T"),
        _r(f"{mc}/Qwen2.5-72B-Instruct-4bit", "qwen2", 72.7, 4, Q25, 9120, 47, 9, 390, "T"),
        _r(f"{mc}/Qwen3-0.6B-4bit", "qwen3", 0.6, 4, Q3T, 61500, 40, 55, 120, "TK"),
        _r(f"{mc}/Qwen3-4B-4bit", "qwen3", 4.02, 4, Q3T, 120400, 95, 160, 118, "TK"),
        _r(f"{mc}/Qwen3-8B-6bit", "qwen3", 8.19, 6, Q3T, 33010, 37, 48, 117, "TK"),
        _r(f"{mc}/Qwen3-14B-8bit", "qwen3", 14.8, 8, Q3T, 18500, 29, 30, 116, "TK"),
        _r(f"{mc}/Qwen3-32B-bf16", "qwen3", 32.8, 16, Q3, 4200, 12, 8, 115, "KN"),
        _r(f"{mc}/Qwen3-30B-A3B-4bit", "qwen3_moe", 30.5, 4, Q3T, 150200, 210, 300, 114, "TK"),
        _r(f"{mc}/Qwen3-235B-A22B-3bit", "qwen3_moe", 235.0, 3, Q3T, 7400, 66, 44, 110, "TK"),
        _r(f"{mc}/Qwen1.5-MoE-A2.7B-Chat-4bit", "qwen2_moe", 14.3, 4, CHATML, 1200, 9, 1, 640),
        _r(f"{mc}/Qwen2.5-VL-7B-Instruct-4bit", "qwen2_5_vl", 8.29, 4, CHATML, 45100, 80, 70, 300,
           "V", qwen_vl),
        _r(f"{mc}/Qwen2-VL-2B-Instruct-4bit", "qwen2_vl", 2.21, 4, CHATML, 13300, 22, 11, 480,
           "V", qwen_vl),
        _r(f"{mc}/Llama-3.2-1B-Instruct-4bit", "llama", 1.24, 4, L3T, 210300, 120, 90, 430, "T"),
        _r(f"{mc}/Llama-3.2-3B-Instruct-8bit", "llama", 3.21, 8, L3T, 56100, 41, 20, 428, "T"),
        _r(f"{mc}/Meta-Llama-3.1-8B-Instruct-4bit", "llama", 8.03, 4, L3T, 143000, 160, 60, 480,
           "T"),
        _r(f"{mc}/Llama-3.3-70B-Instruct-4bit", "llama", 70.6, 4, L3T, 28400, 190, 35, 350, "T"),
        _r(f"{mc}/Llama-3.2-11B-Vision-Instruct-4bit", "mllama", 10.7, 4, LLAMA3, 9800, 37, 7, 420,
           "V"),
        _r(f"{mc}/Mistral-7B-Instruct-v0.3-4bit", "mistral", 7.25, 4, MT, 87300, 70, 26, 520, "T"),
        _r(f"{mc}/Mistral-Small-24B-Instruct-2501-4bit", "mistral", 23.6, 4, MT, 22300, 58, 22, 300,
           "T"),
        _r(f"{mc}/Mistral-Nemo-Instruct-2407-6bit", "mistral", 12.2, 6, MISTRAL, 6400, 18, 3, 460),
        _r(f"{mc}/Mixtral-8x7B-Instruct-v0.1-4bit", "mixtral", 46.7, 4, MISTRAL, 5100, 33, 2, 700),
        _r(f"{mc}/gemma-2-2b-it-4bit", "gemma2", 2.61, 4, GEMMA, 39200, 44, 10, 470),
        _r(f"{mc}/gemma-2-9b-it-8bit", "gemma2", 9.24, 8, GEMMA, 12800, 25, 5, 469),
        _r(f"{mc}/gemma-2-27b-it-bf16", "gemma2", 27.2, 16, GEMMA, 2100, 14, 1, 468, "N"),
        _r(f"{mc}/gemma-3-1b-it-4bit", "gemma3_text", 1.0, 4, GEMMA, 66400, 51, 33, 250),
        _r(f"{mc}/gemma-3-4b-it-4bit", "gemma3", 4.3, 4, GEMMA, 91800, 77, 65, 249, "VC", gemma_vl),
        _r(f"{mc}/gemma-3-27b-it-4bit", "gemma3", 27.4, 4, GEMMA, 52300, 130, 45, 248, "VC",
           gemma_vl),
        _r(f"{mc}/Phi-3.5-mini-instruct-4bit", "phi3", 3.82, 4, PHI3, 24100, 29, 4, 450),
        _r(f"{mc}/Phi-4-mini-instruct-8bit", "phi3", 3.84, 8, PHI4_TOOLS, 15200, 21, 9, 270, "T"),
        _r(f"{mc}/phi-4-4bit", "phi3", 14.7, 4, PHI3, 31300, 62, 12, 330),
        _r(f"{mc}/DeepSeek-V3-0324-4bit", "deepseek_v3", 671.0, 4, DEEPSEEK_V3_TOOLS, 8800, 150, 28,
           240, "T"),
        _r(f"{mc}/DeepSeek-R1-0528-3bit", "deepseek_v3", 671.0, 3, DEEPSEEK_R1, 3900, 88, 19, 180,
           "K"),
        _r(f"{mc}/DeepSeek-R1-Distill-Qwen-7B-4bit", "qwen2", 7.62, 4, DEEPSEEK_R1, 41200, 72, 15,
           310, "K"),
        _r(f"{mc}/DeepSeek-R1-Distill-Llama-70B-8bit", "llama", 70.6, 8, DEEPSEEK_R1, 6100, 40, 6,
           309, "KN"),
        _r(f"{mc}/SmolLM2-360M-Instruct-8bit", "llama", 0.36, 8, CHATML, 17800, 15, 8, 380),
        _r(f"{mc}/granite-3.3-8b-instruct-4bit", "granite", 8.17, 4, CHATML, 3300, 11, 4, 200),
        _r(f"{mc}/Falcon-H1-7B-Instruct-4bit", "falcon_h1", 7.59, 4, CHATML, 1500, 7, 3, 160),
        _r(f"{mc}/OLMo-2-1124-7B-Instruct-4bit", "olmo2", 7.3, 4, CHATML, 900, 6, 1, 330),
        # lmstudio-community: LM Studio's MLX builds
        _r(f"{lm}/Qwen3-30B-A3B-MLX-4bit", "qwen3_moe", 30.5, 4, Q3T, 98400, 64, 120, 113, "TK"),
        _r(f"{lm}/Llama-3.2-3B-Instruct-MLX-4bit", "llama", 3.21, 4, L3T, 30100, 20, 6, 420, "T"),
        _r(f"{lm}/gemma-3-12b-it-MLX-8bit", "gemma3", 12.2, 8, GEMMA, 27600, 26, 14, 245, "VC",
           gemma_vl),
        _r(f"{lm}/DeepSeek-R1-Distill-Qwen-14B-MLX-4bit", "qwen2", 14.8, 4, DEEPSEEK_R1, 19900, 23,
           5, 305, "K"),
        _r(f"{lm}/Mistral-Small-3.1-24B-Instruct-2503-MLX-4bit", "mistral3", 24.0, 4, MT, 12100,
           17, 9, 230, "TVC", {"image_token_index": 10}),
        _r(f"{lm}/phi-4-MLX-6bit", "phi3", 14.7, 6, PHI3, 8200, 9, 2, 325),
        # Official MLX builds from model authors
        _r("Qwen/Qwen3-4B-MLX-4bit", "qwen3", 4.02, 4, Q3T, 24500, 33, 27, 100, "TK"),
        _r("Qwen/Qwen3-14B-MLX-8bit", "qwen3", 14.8, 8, Q3T, 8700, 15, 11, 99, "TK"),
        _r("google/gemma-3-1b-it-qat-4bit", "gemma3_text", 1.0, 4, GEMMA, 14100, 40, 18, 210,
           gated="manual"),
        _r("microsoft/Phi-4-mini-reasoning-MLX-4bit", "phi3", 3.84, 4, PHI4_REASONING, 5300, 26,
           13, 150, "K"),
        _r("mistralai/Ministral-8B-Instruct-2410-MLX-4bit", "mistral", 8.02, 4, MT, 4100, 12, 3,
           380, "T", gated="auto"),
        # Individuals
        _r("alice-ml/tinyllama-chat-mlx-8bit", "llama", 1.1, 8, CHATML, 820, 3, 0, 600),
        _r("bob-quant/Qwen3-8B-DWQ-4bit", "qwen3", 8.19, 4, Q3T, 2600, 14, 7, 90, "TK"),
        _r("carol-experiments/zeta-7b-mlx", "zeta_lm", 7.0, 16, CHATML, 45, 1, 0, 60, "N"),
        _r("dave-dev/Llama-3.1-8B-Instruct-abliterated-mlx-8bit", "llama", 8.03, 8, L3T, 3100, 28,
           2, 280, "TN"),
        # Not MLX: filter=mlx must leave these out
        _r("Qwen/Qwen2.5-7B-Instruct", "qwen2", 7.62, 16, Q25, 2100000, 780, 120, 420, "T",
           library="transformers"),
        _r("deepseek-ai/DeepSeek-V3", "deepseek_v3", 671.0, 8, DEEPSEEK_V3_TOOLS, 610000, 3900,
           200, 330, "T", library="transformers"),
        _r("deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B", "qwen2", 1.78, 16, DEEPSEEK_R1, 1400000,
           1300, 80, 310, "K", library="transformers"),
        _r("google/gemma-3-27b-it", "gemma3", 27.4, 16, GEMMA, 980000, 1500, 150, 250, "VC",
           gemma_vl, library="transformers", gated="manual"),
        _r("microsoft/Phi-4-mini-instruct", "phi3", 3.84, 16, PHI4_TOOLS, 450000, 540, 60, 270,
           "T", library="transformers"),
        _r("mistralai/Mistral-7B-Instruct-v0.3", "mistral", 7.25, 16, MT, 1200000, 1900, 90, 530,
           "T", library="transformers", gated="auto"),
        _r("TheBloke/Llama-2-7B-Chat-GGUF", "llama", 6.74, 4, LLAMA3, 88000, 470, 5, 800,
           library="gguf"),
    ]
    # fmt: on


def _r(
    repo_id: str,
    model_type: str,
    params_b: float,
    bits: int,
    template: str,
    downloads: int,
    likes: int,
    trending: int,
    age_days: int,
    flags: str = "",
    extra_config: dict[str, Any] | None = None,
    *,
    library: str = "mlx",
    gated: bool | str = False,
) -> _Row:
    return _Row(
        repo_id=repo_id,
        model_type=model_type,
        params_b=params_b,
        bits=bits,
        template=template,
        downloads=downloads,
        likes=likes,
        trending=trending,
        age_days=age_days,
        tools="T" in flags,
        thinking="K" in flags,
        vision="V" in flags,
        text_config="C" in flags,
        used_storage="N" not in flags,
        library=library,
        gated=gated,
        extra_config=dict(extra_config or {}),
    )


_EPOCH = datetime(2025, 11, 1, 12, 0, 0, tzinfo=UTC)


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _storage(params: float, bits: int, library: str) -> int:
    """Bytes a checkpoint of ``params`` parameters at ``bits`` bits weighs on the Hub."""
    if bits >= 16:
        return int(params * 2)
    if library != "mlx":
        return int(params * bits / 8)
    # MLX affine quantization: a bf16 scale and bias per group of 64 weights = +0.5 bit/weight
    return int(params * (bits + 0.5) / 8)


def _safetensors_info(params: float, bits: int, library: str) -> dict[str, Any]:
    if bits >= 16:
        counts = {"BF16": int(params)}
    elif library != "mlx":  # e.g. DeepSeek's own FP8 checkpoints
        counts = {"BF16": int(params * 0.02), "F8_E4M3": int(params * 0.98)}
    else:
        counts = {"BF16": int(params * 2 / 64), "U32": int(params * bits / 32)}
    return {"parameters": counts, "total": sum(counts.values())}


def _config(row: _Row) -> dict[str, Any]:
    arch, hidden, layers, heads, kv_heads, vocab, context, _bos, _eos = _FAMILIES[row.model_type]
    text = {
        "hidden_size": hidden,
        "intermediate_size": hidden * 3,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "vocab_size": vocab,
        "max_position_embeddings": context,
        "rms_norm_eps": 1e-06,
        "rope_theta": 1000000.0,
    }
    config: dict[str, Any] = {"architectures": [arch], "model_type": row.model_type}
    if row.text_config:
        config["text_config"] = {"model_type": f"{row.model_type}_text", **text}
    else:
        config.update(text)
    if row.vision:
        config["vision_config"] = dict(_VISION_CONFIG)
    if row.model_type in ("qwen2_moe", "qwen3_moe", "mixtral", "deepseek_v3"):
        config["num_experts"] = 256 if row.model_type == "deepseek_v3" else 128
        config["num_experts_per_tok"] = 8
    config.update(row.extra_config)
    config["torch_dtype"] = "bfloat16"
    if row.library == "mlx" and row.bits < 16:
        quant = {"group_size": 64, "bits": row.bits}
        config["quantization"] = quant
        config["quantization_config"] = dict(quant)
    return dict(sorted(config.items()))


def _card(row: _Row, tags: list[str], card_data: dict[str, Any]) -> str:
    lines = ["---"]
    for key, value in card_data.items():
        if isinstance(value, list):
            lines.append(f"{key}:")
            lines.extend(f"- {item}" for item in value)
        else:
            lines.append(f"{key}: {value}")
    lines.append("---")
    name = row.repo_id.split("/", 1)[1]
    body = f"\n# {name}\n\n"
    if row.library == "mlx":
        origin = card_data.get("base_model", name)
        body += (
            f"This model was converted to MLX format from `{origin}`.\n\n"
            "```bash\npip install mlx-lm\n"
            f"mlx_lm.generate --model {row.repo_id} --prompt hello\n```\n"
        )
    else:
        body += "The original model weights.\n"
    return "\n".join(lines) + "\n" + body


def build_catalog() -> list[CatalogEntry]:
    """Every catalog entry, files and metadata, in a stable order."""
    entries = []
    for index, row in enumerate(_rows()):
        author = row.repo_id.split("/", 1)[0]
        _arch, *_dims, bos, eos = _FAMILIES[row.model_type]
        base_model = _guess_base_model(row)
        license_ = "gemma" if row.model_type.startswith("gemma") else "apache-2.0"
        pipeline = "image-text-to-text" if row.vision else "text-generation"
        tags = [row.library] if row.library != "mlx" else ["mlx"]
        tags += ["safetensors"] if row.library != "gguf" else []
        tags += [row.model_type, pipeline, "conversational"]
        if row.tools:
            tags.append("tool-use")
        if row.library == "mlx" and row.bits < 16:
            tags.append(f"{row.bits}-bit")
        if base_model:
            tags.append(f"base_model:quantized:{base_model}")
        tags += [f"license:{license_}", "region:us"]

        card_data: dict[str, Any] = {"library_name": row.library, "license": license_}
        if base_model:
            card_data["base_model"] = base_model
        card_data["pipeline_tag"] = pipeline
        card_data["tags"] = [t for t in tags if ":" not in t and t != row.library]

        tokenizer_config = {
            "bos_token": bos or None,
            "eos_token": eos,
            "pad_token": eos,
            "chat_template": row.template,
            "model_max_length": _FAMILIES[row.model_type][6],
            "tokenizer_class": "PreTrainedTokenizerFast",
        }
        config = _config(row)
        files = {
            "README.md": _card(row, tags, card_data).encode(),
            "config.json": (json.dumps(config, indent=2) + "\n").encode(),
            "tokenizer_config.json": (
                json.dumps(tokenizer_config, indent=2, ensure_ascii=False) + "\n"
            ).encode(),
        }
        created = _EPOCH - timedelta(days=row.age_days, hours=index)
        modified = created + timedelta(days=min(row.age_days // 3, 30), minutes=7 * index)
        api_config = {
            "architectures": config["architectures"],
            "model_type": row.model_type,
            "tokenizer_config": {
                k: v
                for k, v in tokenizer_config.items()
                if k.endswith("_token") or k == "chat_template"
            },
        }
        if "quantization_config" in config:
            api_config["quantization_config"] = config["quantization_config"]
        meta: dict[str, Any] = {
            "author": author,
            "downloads": row.downloads,
            "downloadsAllTime": row.downloads * 7,
            "likes": row.likes,
            "trendingScore": row.trending,
            "createdAt": _iso(created),
            "lastModified": _iso(modified),
            "tags": tags,
            "pipeline_tag": pipeline,
            "library_name": row.library,
            "cardData": card_data,
            "config": api_config,
            "safetensors": _safetensors_info(row.params_b * 1e9, row.bits, row.library)
            if row.library != "gguf"
            else None,
            "usedStorage": _storage(row.params_b * 1e9, row.bits, row.library)
            if row.used_storage
            else None,
        }
        entries.append(
            CatalogEntry(
                repo_id=row.repo_id,
                files=files,
                meta=meta,
                gated=row.gated,
                true_parameters=int(row.params_b * 1e9),
                bits=row.bits,
                vision=row.vision,
                tools=row.tools,
                thinking=row.thinking,
            )
        )
    return entries


def _guess_base_model(row: _Row) -> str | None:
    if row.library != "mlx":
        return None
    author, name = row.repo_id.split("/", 1)
    for suffix in (
        "-MLX-4bit",
        "-MLX-6bit",
        "-MLX-8bit",
        "-4bit",
        "-3bit",
        "-6bit",
        "-8bit",
        "-bf16",
        "-mlx-8bit",
        "-mlx",
    ):
        if name.endswith(suffix):
            name = name.removesuffix(suffix)
            break
    origin = {
        "qwen": "Qwen",
        "llama": "meta-llama",
        "meta": "meta-llama",
        "mistral": "mistralai",
        "mixtral": "mistralai",
        "gemma": "google",
        "phi": "microsoft",
        "deepseek": "deepseek-ai",
        "smollm2": "HuggingFaceTB",
        "granite": "ibm-granite",
        "falcon": "tiiuae",
        "olmo": "allenai",
    }
    lowered = name.lower()
    for prefix, org in origin.items():
        if lowered.startswith(prefix):
            return f"{org}/{name}"
    return f"{author}/{name}"


def catalog_digest() -> str:
    """A short hash of the catalog content (handy to see whether two hubs serve the same data)."""
    digest = hashlib.sha256()
    for entry in build_catalog():
        digest.update(entry.repo_id.encode())
        for path, data in sorted(entry.files.items()):
            digest.update(path.encode() + data)
    return digest.hexdigest()[:12]
