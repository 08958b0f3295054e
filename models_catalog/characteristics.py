"""What a model is, read from its `config.json`, chat template, tags and repo name.

Pure functions of plain data: no database, no network. The one place for the architecture-family
table and for the rules that decide quantization, parameter count, context length, vision, tool
use, thinking and size.

The inputs come from a repo's author (models_catalog/hub_data.py has cleaned them of NaN,
infinities and values no JSON column holds, but not of nonsense), so every rule takes only
values of the right type within plausible bounds, and every result fits the column it is stored
in: a value outside them counts as unknown.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import jinja2
import jinja2.ext
import jinja2.meta

# model_type (lower case) -> display family. The ONE table; unknown types show their raw value.
FAMILIES: dict[str, str] = {
    **dict.fromkeys(
        [
            "qwen", "qwen2", "qwen2_moe", "qwen2_vl", "qwen2_5_vl", "qwen2_5_omni", "qwen3",
            "qwen3_moe", "qwen3_next", "qwen3_vl", "qwen3_vl_moe",
        ],
        "Qwen",
    ),
    **dict.fromkeys(["llama", "llama4", "llama4_text", "mllama"], "Llama"),
    **dict.fromkeys(
        ["mistral", "mistral3", "ministral", "devstral", "mixtral", "pixtral", "magistral"],
        "Mistral",
    ),
    **dict.fromkeys(
        ["gemma", "gemma2", "gemma3", "gemma3_text", "gemma3n", "paligemma", "recurrent_gemma"],
        "Gemma",
    ),
    **dict.fromkeys(["phi", "phi3", "phi3small", "phi3v", "phimoe", "phi4mm", "phi4"], "Phi"),
    **dict.fromkeys(["deepseek", "deepseek_v2", "deepseek_v3", "deepseek_vl_v2"], "DeepSeek"),
    **dict.fromkeys(["granite", "granitemoe", "granitemoehybrid"], "Granite"),
    **dict.fromkeys(["falcon", "falcon_h1", "falcon_mamba"], "Falcon"),
    **dict.fromkeys(["olmo", "olmo2", "olmo3", "olmoe"], "OLMo"),
    **dict.fromkeys(["glm", "glm4", "glm4_moe", "chatglm"], "GLM"),
    **dict.fromkeys(["cohere", "cohere2"], "Command R"),
    **dict.fromkeys(["internlm2", "internlm3"], "InternLM"),
    **dict.fromkeys(["minicpm", "minicpm3"], "MiniCPM"),
    **dict.fromkeys(["exaone", "exaone4"], "EXAONE"),
    **dict.fromkeys(["mamba", "mamba2"], "Mamba"),
    **dict.fromkeys(["gpt_oss"], "gpt-oss"),
    **dict.fromkeys(["smollm3"], "SmolLM"),
    **dict.fromkeys(["starcoder2"], "StarCoder"),
    **dict.fromkeys(["nemotron", "nemotron_h"], "Nemotron"),
    **dict.fromkeys(["ernie4_5", "ernie4_5_moe"], "ERNIE"),
    **dict.fromkeys(["hunyuan", "hunyuan_v1_dense", "hunyuan_v1_moe"], "Hunyuan"),
    **dict.fromkeys(["lfm2", "lfm2_vl"], "LFM"),
    **dict.fromkeys(["jamba"], "Jamba"),
    **dict.fromkeys(["llava", "llava_next", "llava_qwen2"], "LLaVA"),
    **dict.fromkeys(["bitnet"], "BitNet"),
    **dict.fromkeys(["gpt2"], "GPT-2"),
    **dict.fromkeys(["stablelm"], "StableLM"),
    **dict.fromkeys(["dbrx"], "DBRX"),
    **dict.fromkeys(["openelm"], "OpenELM"),
    **dict.fromkeys(["kimi_vl"], "Kimi"),
    **dict.fromkeys(["baichuan"], "Baichuan"),
    # Embeddings and speech to text (engine_of)
    **dict.fromkeys(["bert", "distilbert", "nomic_bert"], "BERT"),
    **dict.fromkeys(["roberta", "xlm-roberta"], "RoBERTa"),
    **dict.fromkeys(["modernbert"], "ModernBERT"),
    **dict.fromkeys(["whisper"], "Whisper"),
    **dict.fromkeys(["parakeet"], "Parakeet"),
}  # fmt: skip

#: Every family the table knows, sorted: the choices of the family filter.
KNOWN_FAMILIES: tuple[str, ...] = tuple(sorted(set(FAMILIES.values()), key=str.lower))
#: A filter value meaning "a family the table does not know".
OTHER_FAMILY = "Other"

#: Vision-language model types that carry no `vl`/`vision` marker in their name.
_VISION_MODEL_TYPES = frozenset(
    {"llava", "llava_next", "llava_qwen2", "mllama", "paligemma", "pixtral", "idefics3", "gemma3n",
     "smolvlm", "phi3v", "phi4mm", "florence2", "molmo", "aya_vision", "kimi_vl", "lfm2_vl",
     "qwen2_5_omni"}
)  # fmt: skip
_VISION_TOKEN_KEYS = (
    "image_token_id", "image_token_index", "video_token_id", "video_token_index",
    "vision_start_token_id", "boi_token_index", "image_token",
)  # fmt: skip
_VISION_ARCHITECTURE = re.compile(r"VL|Vision|Llava|ImageText|Pixtral|Idefics|VLM")
_VISION_TAGS = frozenset(
    {"vision", "image-text-to-text", "visual-question-answering", "multimodal", "vlm",
     "video-text-to-text", "any-to-any"}
)  # fmt: skip
#: The engines a model may be served with (servers.models.Engine holds the same values).
ENGINE_TEXT, ENGINE_VISION, ENGINE_EMBEDDINGS, ENGINE_SPEECH = (
    "text", "vision", "embeddings", "speech-to-text",
)  # fmt: skip
_SPEECH_MODEL_TYPES = frozenset(
    {"whisper", "parakeet", "wav2vec2", "hubert", "moonshine", "voxtral", "granite_speech"}
)
_SPEECH_ARCHITECTURE = re.compile(r"Whisper|SpeechSeq2Seq|ForCTC|Parakeet|Moonshine|Voxtral")
_SPEECH_TAGS = frozenset({"automatic-speech-recognition", "speech-recognition", "whisper"})
#: Encoder-only model types: served for their vectors, never to chat.
_EMBEDDING_MODEL_TYPES = frozenset(
    {"bert", "roberta", "xlm-roberta", "modernbert", "nomic_bert", "distilbert", "mpnet",
     "electra", "deberta-v2"}
)  # fmt: skip
_EMBEDDING_TAGS = frozenset({"sentence-transformers", "feature-extraction", "sentence-similarity"})
_TOOL_TAGS = frozenset({"tool-use", "tools", "function-calling", "function_calling", "tool_use"})
_TOOL_TEMPLATE = re.compile(r"\btools\b|tool_call|\[AVAILABLE_TOOLS\]|<\|tool\|>")
_THINKING_TAGS = frozenset({"reasoning", "thinking", "chain-of-thought"})
_THINKING_TEMPLATE = re.compile(r"enable_thinking|<think>|</think>|reasoning_content")
_CONTEXT_KEYS = (
    "max_position_embeddings", "max_sequence_length", "seq_length", "n_positions",
    "max_seq_len", "n_ctx", "model_max_length",
)  # fmt: skip
_EXPERT_KEYS = ("num_local_experts", "n_routed_experts", "num_experts")

# Precision words in repo names and dtypes -> bits.
_NAME_PRECISION = {"bf16": 16, "fp16": 16, "f16": 16, "fp32": 32, "f32": 32, "mxfp4": 4, "fp8": 8}
_NAME_BITS = re.compile(r"(?<![a-z0-9.])(\d{1,2})[-_ ]?bits?(?![a-z])", re.IGNORECASE)
_NAME_WORD = re.compile(r"[a-z0-9]+", re.IGNORECASE)
_DTYPE_BITS = {"bfloat16": 16, "float16": 16, "float32": 32, "float8": 8}
_QUANT_METHOD_BITS = {"fp8": 8, "mxfp4": 4, "bitnet": 2}

# Parameter counts written in repo names: 7B, 0.5B, 30B-A3B (the total, 30B, comes first), 360M.
_NAME_PARAMETERS = re.compile(r"(?<![a-z0-9.])(\d+(?:\.\d+)?)\s*([bm])(?![a-z0-9])", re.IGNORECASE)

# Plausible bounds: beyond them a value is nonsense, and shown as unknown.
#: The largest integer read from a config (2**53, what a JSON number carries exactly).
MAX_CONFIG_INT = 2**53
#: Quantization bits and group sizes (the widest dtype is 64-bit; MLX groups are 32-128).
BITS_RANGE = (1, 64)
GROUP_SIZE_RANGE = (1, 4096)
#: Context lengths (the longest configured contexts are ~10M tokens).
CONTEXT_RANGE = (1, 100_000_000)
#: Parameter counts (the largest models have ~2 trillion).
MAX_PARAMETERS = 10**15
#: Sizes in bytes (8 PiB; a PostgreSQL bigint holds 1000 times more).
MAX_SIZE_BYTES = 2**53


@dataclass(frozen=True)
class Characteristics:
    """What the portal shows as badges and filters on."""

    model_type: str = ""
    family: str = ""
    parameters: int | None = None
    parameters_estimated: bool = False
    bits: int | None = None
    group_size: int | None = None
    context_length: int | None = None
    vision: bool = False
    tools: bool = False
    thinking: bool = False
    engine: str = ENGINE_TEXT

    @property
    def quantization_label(self) -> str:
        return quantization_label(self.bits)


def family_of(model_type: str) -> str:
    """The display family of a `model_type` (`qwen3_moe` → `Qwen`); unknown → the raw value."""
    key = (model_type or "").strip().lower()
    return FAMILIES.get(key, (model_type or "").strip())


def is_known_family(family: str) -> bool:
    return family in KNOWN_FAMILIES


def model_type_of(config: Mapping[str, Any]) -> str:
    """`model_type`, else derived from the first architecture (`LlamaForCausalLM` → `llama`)."""
    model_type = config.get("model_type")
    if isinstance(model_type, str) and model_type:
        return model_type
    for architecture in _architectures(config):
        stem = re.sub(r"For(CausalLM|ConditionalGeneration|Generation)$|Model$", "", architecture)
        if stem:
            return stem.lower()
    return ""


def quantization(
    config: Mapping[str, Any], repo_id: str = ""
) -> tuple[int | None, int | None, str]:
    """`(bits, group_size, source)`: from the config's `quantization`/`quantization_config`, else
    from the repo name (`4bit`, `8-bit`, `bf16`), else from `torch_dtype`; source says which."""
    for key in ("quantization", "quantization_config"):
        quant = config.get(key)
        if isinstance(quant, Mapping):
            bits = _int(quant.get("bits"), *BITS_RANGE)
            method = quant.get("quant_method")
            method = method.lower() if isinstance(method, str) else ""
            if bits is None and method in _QUANT_METHOD_BITS:
                bits = _QUANT_METHOD_BITS[method]
            if bits is not None:
                return bits, _int(quant.get("group_size"), *GROUP_SIZE_RANGE), "config"
    name = repo_id.rsplit("/", 1)[-1]
    if (match := _NAME_BITS.search(name)) and _int(match.group(1), *BITS_RANGE):
        return int(match.group(1)), None, "name"
    for word in _NAME_WORD.findall(name.lower()):
        if word in _NAME_PRECISION:
            return _NAME_PRECISION[word], None, "name"
    text = _text_config(config)
    dtype = config.get("torch_dtype") or config.get("dtype") or text.get("torch_dtype")
    if isinstance(dtype, str) and dtype in _DTYPE_BITS:
        return _DTYPE_BITS[dtype], None, "dtype"
    return None, None, ""


def quantization_label(bits: int | None) -> str:
    if bits is None:
        return ""
    return f"{bits}-bit" if bits < 16 else ("16-bit" if bits == 16 else f"{bits}-bit float")


def context_length(config: Mapping[str, Any]) -> int | None:
    """The longest context the model was configured for, from the top level or `text_config`."""
    for source in (config, _text_config(config)):
        for key in _CONTEXT_KEYS:
            if (value := _int(source.get(key), *CONTEXT_RANGE)) is not None:
                return value
    return None


def is_multimodal(config: Mapping[str, Any], tags: Iterable[str] = ()) -> bool:
    """A `vision_config`, image/video token ids, `vl`/`vision` in `model_type` or
    `architectures`, or a vision tag."""
    if isinstance(config.get("vision_config"), Mapping) or config.get("vision_tower"):
        return True
    if any(config.get(key) is not None for key in _VISION_TOKEN_KEYS):
        return True
    model_type = config.get("model_type")
    model_type = model_type.lower() if isinstance(model_type, str) else ""
    words = set(re.split(r"[_\-]", model_type))
    if words & {"vl", "vision", "vlm"} or model_type in _VISION_MODEL_TYPES:
        return True
    if any(_VISION_ARCHITECTURE.search(a) for a in _architectures(config)):
        return True
    return bool(_tag_set(tags) & _VISION_TAGS)


def engine_of(config: Mapping[str, Any], tags: Iterable[str] = ()) -> str:
    """The engine that serves a model: speech-to-text (a Whisper-like model_type, architecture
    or tag), embeddings (an encoder-only model_type or a sentence-transformers tag), vision
    (`is_multimodal`), else text."""
    tag_set = _tag_set(tags)
    model_type = config.get("model_type")
    model_type = model_type.lower() if isinstance(model_type, str) else ""
    architectures = _architectures(config)
    if (
        model_type in _SPEECH_MODEL_TYPES
        or tag_set & _SPEECH_TAGS
        or any(_SPEECH_ARCHITECTURE.search(a) for a in architectures)
    ):
        return ENGINE_SPEECH
    if model_type in _EMBEDDING_MODEL_TYPES or tag_set & _EMBEDDING_TAGS:
        return ENGINE_EMBEDDINGS
    if is_multimodal(config, tags):
        return ENGINE_VISION
    return ENGINE_TEXT


def supports_tools(chat_template: str, tags: Iterable[str] = ()) -> bool:
    """A tool tag, or a chat template that renders `tools` / tool calls."""
    if _tag_set(tags) & _TOOL_TAGS:
        return True
    return bool(_TOOL_TEMPLATE.search(chat_template or ""))


def supports_thinking(chat_template: str, tags: Iterable[str] = ()) -> bool:
    """A chat template with `enable_thinking` or `<think>`, or a reasoning tag."""
    if _tag_set(tags) & _THINKING_TAGS:
        return True
    return bool(_THINKING_TEMPLATE.search(chat_template or ""))


def parameter_count(
    safetensors_parameters: Mapping[str, int] | None,
    config: Mapping[str, Any],
    *,
    bits: int | None = None,
    group_size: int | None = None,
    repo_id: str = "",
) -> tuple[int | None, bool]:
    """`(parameters, estimated)`.

    From the Hub's safetensors counts when there are any. MLX quantized checkpoints store weights
    packed in U32 words (32 / bits weights per word) plus a bf16 scale and bias per group, so the
    counts are unpacked. Otherwise an estimate from the config's dimensions, else from the name.
    A count beyond `MAX_PARAMETERS` is nonsense: the next source is used.
    """
    counts: dict[str, int] = {}
    if isinstance(safetensors_parameters, Mapping):
        for dtype, value in safetensors_parameters.items():
            if (count := _int(value, 1)) is not None:
                counts[str(dtype).upper()] = counts.get(str(dtype).upper(), 0) + count
    if counts:
        packed = counts.pop("U32", 0)
        rest = sum(counts.values())
        if packed and bits and bits < 16:
            quantized = packed * 32 // bits
            scales_and_biases = 2 * quantized // (group_size or 64)
            total = quantized + max(0, rest - scales_and_biases)
        else:
            total = packed + rest
        if total <= MAX_PARAMETERS:
            return total, False
    for estimate in (_parameters_from_config(config), _parameters_from_name(repo_id)):
        if estimate is not None and 0 < estimate <= MAX_PARAMETERS:
            return estimate, True
    return None, False


def estimate_size(
    used_storage: int | None,
    parameters: int | None,
    bits: int | None,
    group_size: int | None = None,
) -> tuple[int | None, bool]:
    """`(bytes, estimated)`: the Hub's `usedStorage` when known, else parameters x bits / 8
    (plus a 16-bit scale and bias per group for quantized weights); None beyond
    `MAX_SIZE_BYTES`."""
    if (stored := _int(used_storage, 1, MAX_SIZE_BYTES)) is not None:
        return stored, False
    parameters = _int(parameters, 1, MAX_PARAMETERS)
    bits = _int(bits, *BITS_RANGE)
    if parameters is None or bits is None:
        return None, False
    group_size = _int(group_size, *GROUP_SIZE_RANGE) or 64
    effective_bits = bits + (32 / group_size if bits < 16 else 0)
    size = int(parameters * effective_bits / 8)
    return (size, True) if size <= MAX_SIZE_BYTES else (None, False)


def extract(
    config: Mapping[str, Any] | None,
    *,
    chat_template: str = "",
    tags: Iterable[str] = (),
    repo_id: str = "",
    safetensors_parameters: Mapping[str, int] | None = None,
) -> Characteristics:
    """Every characteristic at once, from whatever is known (each input may be empty)."""
    config = config or {}
    tags = list(tags or ())
    model_type = model_type_of(config)
    bits, group_size, _source = quantization(config, repo_id)
    parameters, estimated = parameter_count(
        safetensors_parameters, config, bits=bits, group_size=group_size, repo_id=repo_id
    )
    return Characteristics(
        model_type=model_type,
        family=family_of(model_type),
        parameters=parameters,
        parameters_estimated=estimated,
        bits=bits,
        group_size=group_size,
        context_length=context_length(config),
        vision=is_multimodal(config, tags),
        tools=supports_tools(chat_template, tags),
        thinking=supports_thinking(chat_template, tags),
        engine=engine_of(config, tags),
    )


def format_parameters(parameters: int | None) -> str:
    """`7615616512` → `7.6B`, `360000000` → `360M`."""
    if not parameters:
        return ""
    if parameters >= 999_500_000:
        value = parameters / 1e9
        return f"{value:.0f}B" if value >= 100 else f"{value:.1f}B".replace(".0B", "B")
    if parameters >= 1_000_000:
        return f"{parameters / 1e6:.0f}M"
    return f"{parameters / 1e3:.0f}K"


def format_context(tokens: int | None) -> str:
    """`131072` → `128K`, `40960` → `40K`, `8192` → `8K`."""
    if not tokens:
        return ""
    if tokens >= 1000 and tokens % 1000 == 0:
        return f"{tokens // 1000}K"
    if tokens >= 1024 and tokens % 1024 == 0:
        return f"{tokens // 1024}K"
    if tokens >= 1000:
        return f"{tokens / 1000:.0f}K"
    return str(tokens)


# --- helpers ------------------------------------------------------------------------------------


def _int(value: Any, low: int = 0, high: int = MAX_CONFIG_INT) -> int | None:
    """An integer within `low..high` (also an integral float, or a short string of digits),
    else None."""
    if isinstance(value, bool):
        return None
    integral_float = isinstance(value, float) and value.is_integer()  # never NaN or infinite
    digits = isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 17
    if integral_float or digits:
        value = int(value)
    if isinstance(value, int) and low <= value <= high:
        return value
    return None


def _tag_set(tags: Iterable[Any]) -> set[str]:
    return {t.lower() for t in tags if isinstance(t, str)}


def _architectures(config: Mapping[str, Any]) -> list[str]:
    value = config.get("architectures")
    return [a for a in value if isinstance(a, str)] if isinstance(value, list) else []


def _text_config(config: Mapping[str, Any]) -> Mapping[str, Any]:
    for key in ("text_config", "llm_config", "language_config"):
        value = config.get(key)
        if isinstance(value, Mapping):
            return value
    return {}


def _parameters_from_config(config: Mapping[str, Any]) -> int | None:
    """A decoder-only transformer's parameter count from its dimensions (MoE aware)."""
    text = _text_config(config) or config
    hidden = _int(text.get("hidden_size") or text.get("n_embd") or text.get("d_model"))
    layers = _int(text.get("num_hidden_layers") or text.get("n_layer") or text.get("n_layers"))
    vocab = _int(text.get("vocab_size"))
    if not (hidden and layers and vocab):
        return None
    heads = _int(text.get("num_attention_heads") or text.get("n_head")) or 1
    kv_heads = _int(text.get("num_key_value_heads")) or heads
    head_dim = _int(text.get("head_dim")) or hidden // heads
    intermediate = _int(text.get("intermediate_size") or text.get("n_inner")) or 4 * hidden
    attention = hidden * heads * head_dim * 2 + hidden * kv_heads * head_dim * 2
    experts = next((n for k in _EXPERT_KEYS if (n := _int(text.get(k)))), 0)
    if experts:
        expert_size = _int(text.get("moe_intermediate_size")) or intermediate
        shared = _int(text.get("n_shared_experts")) or 0
        mlp = 3 * hidden * expert_size * (experts + shared) + hidden * experts
    else:
        mlp = 3 * hidden * intermediate
    embeddings = vocab * hidden * (1 if text.get("tie_word_embeddings") else 2)
    return embeddings + layers * (attention + mlp + 2 * hidden) + hidden  # + final norm


def _parameters_from_name(repo_id: str) -> int | None:
    name = repo_id.rsplit("/", 1)[-1]
    if match := _NAME_PARAMETERS.search(name):
        value, unit = float(match.group(1)), match.group(2).lower()
        return int(value * (1e9 if unit == "b" else 1e6))
    return None


class _GenerationTag(jinja2.ext.Extension):
    """`{% generation %}…{% endgeneration %}`, the tag transformers adds to jinja for templates
    that mark the assistant's tokens: read as its body."""

    tags = {"generation"}

    def parse(self, parser: Any) -> list[Any]:
        next(parser.stream)
        body: list[Any] = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return body


# The names a chat template gets from transformers' apply_chat_template (or jinja itself), and
# its own arguments: never a chat-template kwarg of a request (`padding`/`max_length` padded a
# prompt to 57,000 tokens), whatever a template reads.
TEMPLATE_RESERVED = frozenset(
    {
        "messages", "conversation", "tools", "documents", "add_generation_prompt",
        "continue_final_message", "bos_token", "eos_token", "pad_token", "unk_token",
        "sep_token", "cls_token", "mask_token", "raise_exception", "strftime_now",
        "chat_template", "tokenize", "padding", "truncation", "max_length", "return_tensors",
        "return_dict", "return_assistant_tokens_mask", "tokenizer_kwargs", "add_special_tokens",
        "pad_to_multiple_of", "padding_side", "return_attention_mask", "processor_kwargs",
    }
)  # fmt: skip


def template_variables(templates: Iterable[str]) -> frozenset[str] | None:
    """The variables a request may set for the chat templates `templates` (the names they
    read, less TEMPLATE_RESERVED); None when there is no template, or one jinja cannot parse."""
    templates = list(templates)
    if not templates:
        return None
    # Only parsed, never rendered: autoescaping does not apply.
    environment = jinja2.Environment(  # noqa: S701
        extensions=["jinja2.ext.loopcontrols", _GenerationTag]
    )
    names: set[str] = set()
    for template in templates:
        try:
            names |= jinja2.meta.find_undeclared_variables(environment.parse(template))
        except (jinja2.TemplateError, RecursionError):
            return None
    return frozenset(names - TEMPLATE_RESERVED)
