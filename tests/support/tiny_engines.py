"""Tiny, real models for the embeddings and speech-to-text engines, built in a second or two.

``embed``    A BERT encoder (2 layers, hidden size 64, fixed seed) saved as mlx-embeddings
             saves one (``model.safetensors``, ``config.json`` with ``model_type: bert``) with a
             WordPiece tokenizer (``tokenizer.json`` from the ``tokenizers`` library, its
             ``tokenizer_config.json`` naming ``BertTokenizer``). ``mlx_embeddings.load`` loads it
             from the directory, without the network. Its vectors have :data:`EMBED_DIMENSION`
             numbers, L2-normalised (mean pooling, as mlx-embeddings' BERT does).
``whisper``  A Whisper encoder-decoder (1 layer each, width 64, 80 mel bins, fixed seed) in the
             Hugging Face layout (``config.json`` with ``model_type: whisper``, ``d_model`` …;
             ``model.safetensors``), with an English-only Whisper vocabulary (51 864 ids: a
             byte-level BPE padded to 50 256, then ``<|endoftext|>``, ``<|startoftranscript|>``,
             the language and task tokens, ``<|notimestamps|>`` and the 1 501 timestamps, in
             Whisper's order) and a ``preprocessor_config.json``, so that ``mlx_audio.stt.load``
             loads it and ``transformers.WhisperProcessor`` gives it its tokenizer. The weights
             are random: a transcription is some text, not the words spoken; the text decoder's
             context is 32 tokens, so one is at most 16 tokens long.

The weights are made by the packages' own model classes (mlx-embeddings' ``bert.Model``,
mlx-audio's ``whisper.Model``), so the checkpoints have exactly the parameters they load.
:func:`tiny_engine_cache` builds each once per machine, like ``tiny_models.tiny_model_cache``.
"""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import struct
import tempfile
import wave
from pathlib import Path
from typing import Any

from tests.support.tiny_models import _exclusive_lock, default_cache_root

# Bump whenever the output of build_tiny_engine changes: caches are keyed by it.
BUILDER_VERSION = "e1"
ENGINE_MODELS: tuple[str, ...] = ("embed", "whisper")
EMBED_DIMENSION = 64
EMBED_CONTEXT = 128  # max_position_embeddings: the most tokens one input may have
WHISPER_SAMPLE_RATE = 16_000
SEED = 20240602

_EMBED_CORPUS = [
    "MLX is an array framework for machine learning on Apple silicon.",
    "The portal serves embeddings so that a team can search its documents.",
    "A tiny model answers quickly, so the tests stay fast.",
    "Speech to text turns a recording into words.",
]
_BERT_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]

# Whisper's language codes in its token order (openai/whisper tokenizer.py LANGUAGES).
_WHISPER_LANGUAGES = [
    "en",
    "zh",
    "de",
    "es",
    "ru",
    "ko",
    "fr",
    "ja",
    "pt",
    "tr",
    "pl",
    "ca",
    "nl",
    "ar",
    "sv",
    "it",
    "id",
    "hi",
    "fi",
    "vi",
    "he",
    "uk",
    "el",
    "ms",
    "cs",
    "ro",
    "da",
    "hu",
    "ta",
    "no",
    "th",
    "ur",
    "hr",
    "bg",
    "lt",
    "la",
    "mi",
    "ml",
    "cy",
    "sk",
    "te",
    "fa",
    "lv",
    "bn",
    "sr",
    "az",
    "sl",
    "kn",
    "et",
    "mk",
    "br",
    "eu",
    "is",
    "hy",
    "ne",
    "mn",
    "bs",
    "kk",
    "sq",
    "sw",
    "gl",
    "mr",
    "pa",
    "si",
    "km",
    "sn",
    "yo",
    "so",
    "af",
    "oc",
    "ka",
    "be",
    "tg",
    "sd",
    "gu",
    "am",
    "yi",
    "lo",
    "uz",
    "fo",
    "ht",
    "ps",
    "tk",
    "nn",
    "mt",
    "sa",
    "lb",
    "my",
    "bo",
    "tl",
    "mg",
    "as",
    "tt",
    "haw",
    "ln",
    "ha",
    "ba",
    "jw",
    "su",
]
_WHISPER_TEXT_TOKENS = 50_256  # ids below <|endoftext|>: the byte-level BPE


def build_tiny_engine(dest: Path, name: str) -> Path:
    """Build the tiny model `name` (one of ENGINE_MODELS) into `dest` and return it."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    if name == "embed":
        _build_embed(dest)
    elif name == "whisper":
        _build_whisper(dest)
    else:
        raise ValueError(f"Unknown tiny engine model {name!r}; choose one of {ENGINE_MODELS}.")
    return dest


def tiny_engine_cache(name: str) -> Path:
    """The cached build of `name`, built once (process- and thread-safe) into
    ``<cache root>/<BUILDER_VERSION>/<name>``; treat it as read-only."""
    if name not in ENGINE_MODELS:
        raise ValueError(f"Unknown tiny engine model {name!r}; choose one of {ENGINE_MODELS}.")
    root = default_cache_root() / BUILDER_VERSION
    final = root / name
    if (final / "config.json").is_file():
        return final
    root.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(root / f".{name}.lock"):
        if (final / "config.json").is_file():
            return final
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}-building-", dir=root))
        try:
            build_tiny_engine(tmp, name)
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def wav_bytes(seconds: float = 1.0, *, rate: int = WHISPER_SAMPLE_RATE, hz: float = 440.0) -> bytes:
    """A mono 16-bit PCM WAV of a sine tone, written with the stdlib `wave` module."""
    frames = int(seconds * rate)
    samples = (int(12_000 * math.sin(2 * math.pi * hz * i / rate)) for i in range(frames))
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(b"".join(struct.pack("<h", s) for s in samples))
    return buffer.getvalue()


# --- internals -------------------------------------------------------------------------------


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _save(model: Any, path: Path) -> None:
    import mlx.core as mx
    from mlx.utils import tree_flatten

    weights = dict(tree_flatten(model.parameters()))
    mx.save_safetensors(str(path), weights, metadata={"format": "mlx"})


def _build_embed(dest: Path) -> None:
    import mlx.core as mx
    from mlx_embeddings.models import bert
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )

    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(
        vocab_size=400, special_tokens=_BERT_SPECIALS, show_progress=False
    )
    tokenizer.train_from_iterator(_EMBED_CORPUS * 3, trainer=trainer)
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    tokenizer.save(str(dest / "tokenizer.json"))
    vocab_size = (tokenizer.get_vocab_size() + 63) // 64 * 64
    config = {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "hidden_size": EMBED_DIMENSION,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "intermediate_size": 128,
        "max_position_embeddings": EMBED_CONTEXT,
        "type_vocab_size": 2,
        "vocab_size": vocab_size,
        "layer_norm_eps": 1e-12,
        "pad_token_id": 0,
        "torch_dtype": "float32",
    }
    _write_json(dest / "config.json", config)
    _write_json(
        dest / "tokenizer_config.json",
        {
            "tokenizer_class": "BertTokenizer",
            "do_lower_case": True,
            "cls_token": "[CLS]",
            "sep_token": "[SEP]",
            "pad_token": "[PAD]",
            "unk_token": "[UNK]",
            "mask_token": "[MASK]",
            "model_max_length": EMBED_CONTEXT,
        },
    )
    _write_json(
        dest / "special_tokens_map.json",
        {t.strip("[]").lower() + "_token": t for t in _BERT_SPECIALS},
    )
    mx.random.seed(SEED)
    model = bert.Model(bert.ModelArgs.from_dict(config))
    _save(model, dest / "model.safetensors")
    (dest / "README.md").write_text(
        "---\nlibrary_name: mlx\npipeline_tag: feature-extraction\ntags:\n- mlx\n"
        "- sentence-transformers\n---\n\n# tiny-embed\n\nA random-weight BERT for tests.\n",
        encoding="utf-8",
    )


def _whisper_tokenizer() -> Any:
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

    trained = Tokenizer(models.BPE())
    trained.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    trained.train_from_iterator(_EMBED_CORPUS * 3, trainer=trainer)
    state = json.loads(trained.to_str())["model"]
    vocab: dict[str, int] = dict(state["vocab"])
    # Unreachable filler (no merge makes them) up to Whisper's first special id.
    for index in range(len(vocab), _WHISPER_TEXT_TOKENS):
        vocab[f"<filler{index}>"] = index
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in state["merges"]]
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    specials = [
        "<|endoftext|>",
        "<|startoftranscript|>",
        *(f"<|{code}|>" for code in _WHISPER_LANGUAGES),
        "<|translate|>",
        "<|transcribe|>",
        "<|startoflm|>",
        "<|startofprev|>",
        "<|nocaptions|>",
        "<|notimestamps|>",
    ]
    tokenizer.add_special_tokens([AddedToken(t, special=True) for t in specials])
    tokenizer.add_tokens([AddedToken(f"<|{i * 0.02:.2f}|>", special=False) for i in range(1501)])
    return tokenizer


def _build_whisper(dest: Path) -> None:
    import mlx.core as mx
    from mlx_audio.stt.models.whisper import whisper

    tokenizer = _whisper_tokenizer()
    n_vocab = tokenizer.get_vocab_size()  # 51 864: English-only Whisper
    tokenizer.save(str(dest / "tokenizer.json"))
    config = {
        "architectures": ["WhisperForConditionalGeneration"],
        "model_type": "whisper",
        "num_mel_bins": 80,
        "max_source_positions": 1500,
        "d_model": 64,
        "encoder_attention_heads": 2,
        "encoder_layers": 1,
        "decoder_attention_heads": 2,
        "decoder_layers": 1,
        "vocab_size": n_vocab,
        "max_target_positions": 32,
        "bos_token_id": 50257,
        "eos_token_id": 50256,
        "decoder_start_token_id": 50257,
        "pad_token_id": 50256,
        "torch_dtype": "float16",
    }
    _write_json(dest / "config.json", config)
    _write_json(
        dest / "tokenizer_config.json",
        {
            "tokenizer_class": "WhisperTokenizer",
            "bos_token": "<|endoftext|>",
            "eos_token": "<|endoftext|>",
            "unk_token": "<|endoftext|>",
            "pad_token": "<|endoftext|>",
            "add_prefix_space": False,
            "model_max_length": 1024,
            "processor_class": "WhisperProcessor",
        },
    )
    _write_json(
        dest / "preprocessor_config.json",
        {
            "feature_extractor_type": "WhisperFeatureExtractor",
            "feature_size": 80,
            "sampling_rate": WHISPER_SAMPLE_RATE,
            "hop_length": 160,
            "chunk_length": 30,
            "n_fft": 400,
            "n_samples": 480_000,
            "nb_max_frames": 3000,
            "padding_side": "right",
            "padding_value": 0.0,
            "return_attention_mask": False,
            "processor_class": "WhisperProcessor",
        },
    )
    _write_json(
        dest / "generation_config.json",
        {"decoder_start_token_id": 50257, "eos_token_id": 50256, "pad_token_id": 50256},
    )
    mx.random.seed(SEED)
    model = whisper.Model(whisper.ModelDimensions.from_dict(config), dtype=mx.float16)
    _save(model, dest / "model.safetensors")
    (dest / "README.md").write_text(
        "---\nlibrary_name: mlx\npipeline_tag: automatic-speech-recognition\ntags:\n- mlx\n"
        "- whisper\n---\n\n# tiny-whisper\n\nA random-weight Whisper for tests.\n",
        encoding="utf-8",
    )
