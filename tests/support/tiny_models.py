"""Tiny, real, loadable MLX models built in a second or two.

A tiny model is a llama-architecture checkpoint (2 layers, hidden size 64) saved the way mlx-lm
saves its own conversions (``model.safetensors`` + index, ``config.json``), with a byte-level BPE
tokenizer trained on a few lines of text by the ``tokenizers`` library, a chat template, a
``generation_config.json`` and a model card. ``mlx_lm.load`` and ``mlx_lm.server`` load it as is.

The transformer layers are random (fixed seed). The embedding and the output head are wired so
that the next token depends on the last token only, which makes every reply a known sentence
ending in the EOS special token: a test can assert on the exact text, streaming yields several
chunks, and generation stops on its own long before ``max_tokens``.

Variants:

``text``       ChatML template, no tools, no thinking. Replies :data:`REPLY`.
``tools``      Same model, the template renders ``tools`` (Qwen 2.5 style ``<tool_call>``).
``thinking``   Qwen 3 style: ``<think>``/``</think>`` tokens, template honours ``enable_thinking``.
               Replies ``<think>`` + :data:`THOUGHT` + ``</think>`` + :data:`THINKING_REPLY`, or
               only :data:`THINKING_REPLY` when ``enable_thinking`` is false.
``vision``     A real vision-language model: Qwen2-VL (``model_type`` ``qwen2_vl``: a 1-block vision
               tower, the same 2-layer language model wired the same way) saved as mlx-vlm saves
               one, with ``preprocessor_config.json`` (images scaled to at most 112x112, so an
               image is a handful of tokens) and a template that renders image parts as
               ``<|vision_start|><|image_pad|><|vision_end|>``. ``mlx_vlm.load`` and
               ``mlx_vlm.server`` load it from the directory alone; it answers :data:`REPLY`
               with or without images. mlx-lm cannot load it.
``quantized``  ``text`` quantized by mlx-lm itself: 4 bits, group size 64.

:func:`tiny_model_cache` builds each variant once per machine (per :data:`BUILDER_VERSION`).
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Bump whenever the output of build_tiny_model changes: caches are keyed by it.
BUILDER_VERSION = "2"

VARIANTS: tuple[str, ...] = ("text", "tools", "thinking", "vision", "quantized")

#: What every non-thinking tiny model answers, whatever it is asked.
REPLY = "Hello from the tiny MLX test model."
#: The thinking variant's reasoning (between ``<think>`` and ``</think>``).
THOUGHT = "Greeting detected; answer kindly."
#: The thinking variant's answer after ``</think>``.
THINKING_REPLY = "Hi, I thought first!"

HIDDEN_SIZE = 64
PATCH_SIZE = 14
# The vision variant's images are scaled to between these many pixels (56x56 .. 112x112): at most
# 16 image tokens after the 2x2 merge.
VISION_MIN_PIXELS, VISION_MAX_PIXELS = 56 * 56, 112 * 112
NUM_LAYERS = 2
SEED = 20240601

BOS = "<s>"
EOS = "<|im_end|>"
PAD = "<pad>"
IM_START = "<|im_start|>"
END_OF_TEXT = "<|endoftext|>"
THINK_START = "<think>"
THINK_END = "</think>"
VISION_START = "<|vision_start|>"
VISION_END = "<|vision_end|>"
IMAGE_PAD = "<|image_pad|>"
VIDEO_PAD = "<|video_pad|>"
TOOL_CALL_START = "<tool_call>"
TOOL_CALL_END = "</tool_call>"

_SPECIAL_TOKENS = [END_OF_TEXT, BOS, EOS, IM_START, PAD]

_CHATML_TEMPLATE = (
    "{{- bos_token -}}"
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)

_TOOLS_TEMPLATE = (
    "{{- bos_token -}}"
    "{%- if tools %}"
    "{{- '<|im_start|>system\\n' }}"
    "{%- if messages[0]['role'] == 'system' %}{{- messages[0]['content'] + '\\n\\n' }}{%- endif %}"
    "{{- '# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n"
    "You are provided with function signatures within <tools></tools> XML tags:\\n<tools>' }}"
    "{%- for tool in tools %}{{- '\\n' }}{{- tool | tojson }}{%- endfor %}"
    "{{- '\\n</tools>\\n\\nFor each function call, return a json object with function name and "
    "arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n"
    '{\\"name\\": <function-name>, \\"arguments\\": <args-json-object>}\\n</tool_call>'
    "<|im_end|>\\n' }}"
    "{%- elif messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'system' %}"
    "{%- elif message['role'] == 'assistant' %}"
    "{{- '<|im_start|>assistant' }}"
    "{%- if message['content'] %}{{- '\\n' + message['content'] }}{%- endif %}"
    "{%- for tool_call in message.tool_calls | default([]) %}"
    "{%- if tool_call.function is defined %}{%- set tool_call = tool_call.function %}{%- endif %}"
    '{{- \'\\n<tool_call>\\n{"name": "\' }}{{- tool_call.name }}'
    "{{- '\", \"arguments\": ' }}{{- tool_call.arguments | tojson }}{{- '}\\n</tool_call>' }}"
    "{%- endfor %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- elif message['role'] == 'tool' %}"
    "{{- '<|im_start|>user\\n<tool_response>\\n' + message['content'] + "
    "'\\n</tool_response><|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

# ChatML whose content may be a list of parts (as mlx-vlm passes them): an image part becomes the
# Qwen2-VL placeholder the processor expands to the image's tokens.
_VISION_TEMPLATE = (
    "{{- bos_token -}}"
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] in ('image', 'image_url', 'input_image') -%}"
    "{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}"
    "{%- elif part['type'] == 'text' -%}{{- part['text'] -}}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)

_THINKING_TEMPLATE = (
    "{{- bos_token -}}"
    "{%- for message in messages -%}"
    "{%- set content = message['content'] -%}"
    "{%- if message['role'] == 'assistant' and '</think>' in content -%}"
    "{%- set content = content.split('</think>')[-1].lstrip('\\n') -%}"
    "{%- endif -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + content + '<|im_end|>' + '\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{- '<|im_start|>assistant\\n' -}}"
    "{%- if enable_thinking is defined and enable_thinking is false -%}"
    "{{- '<think>\\n\\n</think>\\n\\n' -}}"
    "{%- endif -%}"
    "{%- endif -%}"
)

# A few lines of text for the BPE trainer. They contain the replies (so those become a handful
# of multi-byte tokens) and paragraph breaks (so "\n\n" gets a token of its own, which the
# thinking variant needs to tell "thinking disabled" from "thinking enabled").
_CORPUS = [
    "MLX is an array framework for machine learning on Apple silicon.",
    "The portal downloads models from the Hub and serves them with mlx_lm.",
    "A tiny model answers quickly, so the tests stay fast.\n\nIt is not smart at all.",
    "Quantization stores weights in four bits with a group size of sixty four.",
    "user\nWhat is the capital of France?\n\nassistant\nParis is the capital.",
    "system\nYou are a helpful assistant.\n\nuser\nSay hello.",
    "Tools let a model call functions and read their results.\n\nCall them wisely.",
    "Thinking models reason before they answer.\n\nThe reasoning is shown folded.",
    "A paragraph ends with a blank line.\n\n",
    "Reasoning done.\n\n",
]

_REPLY_LINES = [REPLY, THOUGHT, THINKING_REPLY]


@dataclass(frozen=True)
class _VariantSpec:
    chat_template: str
    thinking: bool = False
    tools: bool = False
    vision: bool = False
    quantized: bool = False


_SPECS: dict[str, _VariantSpec] = {
    "text": _VariantSpec(chat_template=_CHATML_TEMPLATE),
    "tools": _VariantSpec(chat_template=_TOOLS_TEMPLATE, tools=True),
    "thinking": _VariantSpec(chat_template=_THINKING_TEMPLATE, thinking=True),
    "vision": _VariantSpec(chat_template=_VISION_TEMPLATE, vision=True),
    "quantized": _VariantSpec(chat_template=_CHATML_TEMPLATE, quantized=True),
}


def expected_reply(variant: str = "text", *, enable_thinking: bool = True) -> str:
    """The exact text the tiny model of ``variant`` generates (special tokens not included).

    For the thinking variant with thinking enabled this is the raw text, ``<think>`` and
    ``</think>`` included; a server that splits reasoning out returns :data:`THOUGHT` and
    :data:`THINKING_REPLY` separately.
    """
    _spec(variant)
    if variant != "thinking":
        return REPLY
    if not enable_thinking:
        return THINKING_REPLY
    return f"{THINK_START}{THOUGHT}{THINK_END}{THINKING_REPLY}"


def build_tiny_model(dest: Path, variant: str = "text") -> Path:
    """Build a tiny MLX model of ``variant`` into ``dest`` (created if needed) and return it.

    Deterministic for a given :data:`BUILDER_VERSION`. Takes about a second.
    """
    spec = _spec(variant)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)

    tokenizer = _train_tokenizer(spec)
    vocab_size = _round_up(tokenizer.get_vocab_size(), 64)
    ids = {t: tokenizer.token_to_id(t) for t in _SPECIAL_TOKENS}
    config = _model_config(spec, tokenizer, vocab_size, ids)
    transitions, default_next = _transitions(spec, tokenizer, ids)

    tokenizer.save(str(dest / "tokenizer.json"))
    _write_json(dest / "tokenizer_config.json", _tokenizer_config(spec, tokenizer))
    _write_json(
        dest / "special_tokens_map.json",
        {"bos_token": BOS, "eos_token": EOS, "pad_token": PAD},
    )
    _write_json(
        dest / "generation_config.json",
        {
            "bos_token_id": ids[BOS],
            "eos_token_id": [ids[EOS], ids[END_OF_TEXT]],
            "pad_token_id": ids[PAD],
            "do_sample": False,
        },
    )
    if spec.vision:
        _save_vision_weights(dest, config, transitions, default_next)
        _write_json(dest / "preprocessor_config.json", _preprocessor_config())
    else:
        _save_weights(dest, config, transitions, default_next, quantized=spec.quantized)
    (dest / "README.md").write_text(_model_card(variant, spec), encoding="utf-8")
    return dest


def default_cache_root() -> Path:
    """Where :func:`tiny_model_cache` keeps its builds (``MLX_PORTAL_TEST_CACHE`` overrides)."""
    override = os.environ.get("MLX_PORTAL_TEST_CACHE")
    if override:
        return Path(override).expanduser()
    return Path.home() / ".cache" / "mlx-portal-tests"


def tiny_model_cache(variant: str = "text") -> Path:
    """Return the cached build of ``variant``, building it once (process- and thread-safe).

    The directory is ``<cache root>/<BUILDER_VERSION>/<variant>``. It appears atomically (built in
    a temporary sibling, then renamed) under an exclusive file lock, so parallel test processes
    wait for one build instead of racing. Treat it as read-only; copy it to modify it.
    """
    _spec(variant)
    root = default_cache_root() / BUILDER_VERSION
    final = root / variant
    if (final / "config.json").is_file():
        return final
    root.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(root / f".{variant}.lock"):
        if (final / "config.json").is_file():
            return final
        tmp = Path(tempfile.mkdtemp(prefix=f".{variant}-building-", dir=root))
        try:
            build_tiny_model(tmp, variant)
            if final.exists():  # a half-written directory from an older, killed run
                shutil.rmtree(final)
            os.replace(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return final


# --- internals -------------------------------------------------------------------------------


def _spec(variant: str) -> _VariantSpec:
    try:
        return _SPECS[variant]
    except KeyError:
        raise ValueError(
            f"Unknown tiny model variant {variant!r}; choose one of {VARIANTS}."
        ) from None


@contextlib.contextmanager
def _exclusive_lock(path: Path) -> Iterator[None]:
    with open(path, "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _round_up(value: int, multiple: int) -> int:
    return (value + multiple - 1) // multiple * multiple


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _train_tokenizer(spec: _VariantSpec) -> Any:
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from tokenizers import processors as tk_processors

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = tk_processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=448,
        min_frequency=2,
        special_tokens=_SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = _CORPUS * 3 + _REPLY_LINES * 8
    tokenizer.train_from_iterator(corpus, trainer=trainer)

    extra: list[Any] = []
    if spec.thinking:
        extra += [AddedToken(THINK_START, special=False), AddedToken(THINK_END, special=False)]
    if spec.tools:
        extra += [
            AddedToken(TOOL_CALL_START, special=False),
            AddedToken(TOOL_CALL_END, special=False),
        ]
    if extra:
        tokenizer.add_tokens(extra)
    if spec.vision:
        tokenizer.add_special_tokens(
            [AddedToken(t, special=True) for t in (VISION_START, VISION_END, IMAGE_PAD, VIDEO_PAD)]
        )
    return tokenizer


def _tokenizer_config(spec: _VariantSpec, tokenizer: Any) -> dict[str, Any]:
    added = {}
    for token_id, token in sorted(tokenizer.get_added_tokens_decoder().items()):
        added[str(token_id)] = {
            "content": token.content,
            "lstrip": token.lstrip,
            "normalized": token.normalized,
            "rstrip": token.rstrip,
            "single_word": token.single_word,
            "special": token.special,
        }
    return {
        "added_tokens_decoder": added,
        "bos_token": BOS,
        "eos_token": EOS,
        "pad_token": PAD,
        "unk_token": None,
        "add_bos_token": False,
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 2048,
        "tokenizer_class": "PreTrainedTokenizerFast",
        "chat_template": spec.chat_template,
    }


def _model_config(
    spec: _VariantSpec, tokenizer: Any, vocab_size: int, ids: dict[str, int]
) -> dict[str, Any]:
    config: dict[str, Any] = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": HIDDEN_SIZE,
        "intermediate_size": 2 * HIDDEN_SIZE,
        "num_hidden_layers": NUM_LAYERS,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": HIDDEN_SIZE // 4,
        "hidden_act": "silu",
        "rms_norm_eps": 1e-05,
        "rope_theta": 10000.0,
        "max_position_embeddings": 2048,
        "vocab_size": vocab_size,
        "tie_word_embeddings": False,
        "attention_bias": False,
        "mlp_bias": False,
        "bos_token_id": ids[BOS],
        "eos_token_id": ids[EOS],
        "pad_token_id": ids[PAD],
        "torch_dtype": "bfloat16",
    }
    if spec.vision:
        del config["head_dim"], config["attention_bias"], config["mlp_bias"]
        config.update(
            architectures=["Qwen2VLForConditionalGeneration"],
            model_type="qwen2_vl",
            # mrope: the rotary half of each head (8) split over time, height and width.
            rope_scaling={"type": "mrope", "mrope_section": [4, 2, 2]},
            image_token_id=tokenizer.token_to_id(IMAGE_PAD),
            video_token_id=tokenizer.token_to_id(VIDEO_PAD),
            vision_start_token_id=tokenizer.token_to_id(VISION_START),
            vision_end_token_id=tokenizer.token_to_id(VISION_END),
            vision_config={
                "model_type": "qwen2_vl",
                "depth": 1,
                "embed_dim": 32,
                "hidden_size": HIDDEN_SIZE,
                "num_heads": 2,
                "mlp_ratio": 2,  # an integer: transformers' config class checks it
                "in_channels": 3,
                "patch_size": PATCH_SIZE,
                "spatial_patch_size": PATCH_SIZE,
                "spatial_merge_size": 2,
                "temporal_patch_size": 2,
            },
        )
    return config


def _transitions(
    spec: _VariantSpec, tokenizer: Any, ids: dict[str, int]
) -> tuple[dict[int, int], int]:
    """The next-token table: ``{source token: next token}`` plus the default next token."""

    def encode(text: str) -> list[int]:
        return tokenizer.encode(text, add_special_tokens=False).ids

    eos = ids[EOS]
    table: dict[int, int] = {}

    def chain(tokens: list[int], last_next: int) -> None:
        for current, following in zip(tokens, [*tokens[1:], last_next], strict=True):
            if table.get(current, following) != following:
                raise RuntimeError(
                    f"Token {tokenizer.id_to_token(current)!r} appears twice in the tiny replies;"
                    " change the reply texts so every token is unique."
                )
            table[current] = following

    if spec.thinking:
        think_start = tokenizer.token_to_id(THINK_START)
        think_end = tokenizer.token_to_id(THINK_END)
        answer = encode(THINKING_REPLY)
        chain([think_start, *encode(THOUGHT), think_end], answer[0])
        chain(answer, eos)
        # With enable_thinking false the prompt ends in "</think>\n\n": answer straight away.
        no_think_last = encode("</think>\n\n")[-1]
        chain([no_think_last], answer[0])
        default_next = think_start
    else:
        reply = encode(REPLY)
        chain(reply, eos)
        default_next = reply[0]

    prompt_last = encode("<|im_start|>assistant\n")[-1]
    if prompt_last in table:
        raise RuntimeError("The generation prompt's last token is part of a reply chain.")
    if len(table) >= HIDDEN_SIZE:
        raise RuntimeError("The tiny replies use more tokens than the hidden size allows.")
    return table, default_next


def _save_weights(
    dest: Path,
    config: dict[str, Any],
    transitions: dict[int, int],
    default_next: int,
    *,
    quantized: bool,
) -> None:
    import mlx.core as mx
    import numpy as np
    from mlx_lm.models.llama import Model, ModelArgs
    from mlx_lm.utils import quantize_model, save_config, save_model

    mx.random.seed(SEED)
    model = Model(ModelArgs.from_dict(config))
    rng = np.random.default_rng(SEED)
    vocab, hidden = config["vocab_size"], config["hidden_size"]

    _wire(model, model.model, rng, vocab, hidden, transitions, default_next)
    model.set_dtype(mx.bfloat16)
    mx.eval(model.parameters())

    if quantized:
        with contextlib.redirect_stdout(io.StringIO()):  # it prints the bits per weight
            model, config = quantize_model(model, config, group_size=64, bits=4)
    save_model(dest, model)
    save_config(config, config_path=dest / "config.json", keep_vision_config=True)


def _wire(
    head_owner: Any,
    body: Any,
    rng: Any,
    vocab: int,
    hidden: int,
    transitions: dict[int, int],
    default_next: int,
) -> None:
    """Wire the embedding (`body.embed_tokens`) and the head (`head_owner.lm_head`) so the next
    token depends on the last one only, and quiet the random layers of `body`."""
    import mlx.core as mx
    import numpy as np

    # Token t is (almost) the unit vector of its own dimension if it starts a transition, of
    # dimension 0 otherwise; the head row of each next token points back at its sources.
    embed = rng.normal(0.0, 0.02, (vocab, hidden)).astype(np.float32)
    head = rng.normal(0.0, 0.02, (vocab, hidden)).astype(np.float32)
    dims = {source: index + 1 for index, source in enumerate(sorted(transitions))}
    for token in range(vocab):
        embed[token, dims.get(token, 0)] = 1.0
    head[default_next, 0] = 4.0
    for source, following in transitions.items():
        head[following, dims[source]] = 4.0
    body.embed_tokens.weight = mx.array(embed)
    head_owner.lm_head.weight = mx.array(head)
    # Keep the random layers from drowning the token signal in the residual stream.
    for layer in body.layers:
        layer.self_attn.o_proj.weight = layer.self_attn.o_proj.weight * 0.02
        layer.mlp.down_proj.weight = layer.mlp.down_proj.weight * 0.02


def _save_vision_weights(
    dest: Path, config: dict[str, Any], transitions: dict[int, int], default_next: int
) -> None:
    """The Qwen2-VL model built by mlx-vlm's own classes (as its `load_model` builds them) and
    saved by its own `save_weights`; the image features land on image-pad positions, which the
    wired head ignores, so the answer is :data:`REPLY` whatever the image."""
    import mlx.core as mx
    import numpy as np
    from mlx_vlm.models import qwen2_vl
    from mlx_vlm.utils import save_weights, update_module_configs

    mx.random.seed(SEED)
    params = json.loads(json.dumps(config))  # from_dict fills in text_config
    model_config = qwen2_vl.ModelConfig.from_dict(params)
    model_config = update_module_configs(model_config, qwen2_vl, params, ["text", "vision"])
    model = qwen2_vl.Model(model_config)
    language = model.language_model
    rng = np.random.default_rng(SEED)
    _wire(language, language.model, rng, config["vocab_size"], HIDDEN_SIZE, transitions,
          default_next)  # fmt: skip
    model.set_dtype(mx.bfloat16)
    mx.eval(model.parameters())
    save_weights(dest, model)
    _write_json(dest / "config.json", dict(sorted(config.items())))


def _preprocessor_config() -> dict[str, Any]:
    return {
        "image_processor_type": "Qwen2VLImageProcessor",
        "processor_class": "Qwen2VLProcessor",
        "patch_size": PATCH_SIZE,
        "temporal_patch_size": 2,
        "merge_size": 2,
        "min_pixels": VISION_MIN_PIXELS,
        "max_pixels": VISION_MAX_PIXELS,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "do_convert_rgb": True,
    }


def _model_card(variant: str, spec: _VariantSpec) -> str:
    tags = ["mlx", "text-generation", "test-fixture"]
    if spec.quantized:
        tags.append("4-bit")
    if spec.thinking:
        tags.append("reasoning")
    if spec.tools:
        tags.append("tool-use")
    if spec.vision:
        tags.append("vision")
    tag_lines = "\n".join(f"- {tag}" for tag in tags)
    return (
        "---\n"
        "library_name: mlx\n"
        "license: mit\n"
        f"pipeline_tag: {'image-text-to-text' if spec.vision else 'text-generation'}\n"
        f"tags:\n{tag_lines}\n"
        "---\n\n"
        f"# {'tiny-qwen2-vl' if spec.vision else 'tiny-llama'} ({variant})\n\n"
        "A 2-layer llama model with random layers, built by the MLX Portal test suite "
        f"(builder version {BUILDER_VERSION}). It always answers the same sentence.\n\n"
        "```bash\nmlx_lm.generate --model <this directory> --prompt hello\n```\n"
    )
