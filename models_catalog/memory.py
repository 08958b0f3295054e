"""How much memory a served model needs: pure functions of its `config.json` and its weights.

A server's **need** is what a host's memory plan counts for it (servers/memory_plan.py):

    need = weights on disk + KV cache for its context + a fixed overhead

* **weights**: the bytes of its weight files (and its draft model's), which loading puts in
  memory as they are;
* **KV cache**: keys and values of every layer for one request at the full context:
  `2 * layers * KV heads * head dim * context * bytes per element`. The shape comes from
  `config.json` (`text_config` for multimodal models): `num_hidden_layers`,
  `num_key_value_heads` (else `num_attention_heads`: no grouped-query attention), `head_dim`
  (else `hidden_size / num_attention_heads`). Elements are fp16/bf16 (2 bytes); with
  `--kv-bits b` mlx-lm's `QuantizedKVCache` stores b bits per element plus a scale and a bias
  (2 bytes each) per group of 64 (`--kv-group-size`, its default), so `b/8 + 4/64` bytes;
* **overhead**: the Python process, MLX and the tokenizer (`MLX_PORTAL_SERVER_MEMORY_OVERHEAD`).

An estimate, on the safe side: models with sliding-window layers (Gemma 2 and 3) or compressed
attention (DeepSeek's MLA) keep less than this; several requests at once share the context
only when their prompts are shorter.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from models_catalog.characteristics import context_length

#: Bytes of one fp16/bf16 element: the KV cache's type without --kv-bits.
FULL_PRECISION_BYTES = 2
#: mlx_lm.server's --kv-group-size default: one scale and one bias per this many elements.
KV_GROUP_SIZE = 64
#: Plausible bounds of a config's dimensions; beyond them a value is not believed.
MAX_LAYERS = 10_000
MAX_HEADS = 100_000
MAX_HEAD_DIM = 100_000
MAX_HIDDEN = 10_000_000


@dataclass(frozen=True)
class KvShape:
    """What one token's keys and values are made of, per the model's config."""

    layers: int
    kv_heads: int
    head_dim: int

    @property
    def elements_per_token(self) -> int:
        """Keys and values of every layer for one token."""
        return 2 * self.layers * self.kv_heads * self.head_dim


@dataclass(frozen=True)
class ModelMemory:
    """What a model on a host's disk brings to a need: its weights and its KV shape."""

    weights: int
    shape: KvShape | None
    context_length: int | None

    def as_report(self) -> dict[str, int | None]:
        """The plain values a heartbeat reports (see `from_report`)."""
        shape = self.shape
        return {
            "weights": self.weights,
            "layers": shape.layers if shape else None,
            "kv_heads": shape.kv_heads if shape else None,
            "head_dim": shape.head_dim if shape else None,
            "context": self.context_length,
        }

    @classmethod
    def from_report(cls, report: Mapping[str, Any]) -> ModelMemory | None:
        """The facts a host's worker reported (`as_report`), or None when they are not there."""
        weights = _int(report.get("weights"), 0, 2**53)
        if weights is None:
            return None
        dims = [_int(report.get(k), 1, MAX_HEAD_DIM) for k in ("layers", "kv_heads", "head_dim")]
        layers, kv_heads, head_dim = dims
        shape = KvShape(layers, kv_heads, head_dim) if layers and kv_heads and head_dim else None
        return cls(weights, shape, _int(report.get("context"), 1, 100_000_000))


@dataclass(frozen=True)
class Need:
    """A server's memory need, in its parts (bytes), and what the KV cache was counted for."""

    weights: int
    kv_cache: int | None  # None: the model's config does not say its shape
    overhead: int
    context: int | None  # tokens
    kv_bits: int | None  # None: full precision

    @property
    def total(self) -> int:
        return self.weights + (self.kv_cache or 0) + self.overhead


def _int(value: Any, low: int, high: int) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return value if isinstance(value, int) and low <= value <= high else None


def kv_shape(config: Mapping[str, Any]) -> KvShape | None:
    """The KV shape from a `config.json` (its `text_config` first, for multimodal models);
    None when it does not say enough."""
    text = config.get("text_config")
    for source in (text if isinstance(text, Mapping) else None, config):
        if source is None:
            continue
        layers = _int(source.get("num_hidden_layers"), 1, MAX_LAYERS)
        heads = _int(source.get("num_attention_heads"), 1, MAX_HEADS)
        kv_heads = _int(source.get("num_key_value_heads"), 1, MAX_HEADS) or heads
        head_dim = _int(source.get("head_dim"), 1, MAX_HEAD_DIM)
        if head_dim is None and heads:
            hidden = _int(source.get("hidden_size"), 1, MAX_HIDDEN)
            head_dim = hidden // heads if hidden and hidden % heads == 0 else None
        if layers and kv_heads and head_dim:
            return KvShape(layers, kv_heads, head_dim)
    return None


def model_memory(config: Mapping[str, Any] | None, weights: int) -> ModelMemory:
    """A model's weights with what its config says of its KV cache and context."""
    if not config:
        return ModelMemory(weights, None, None)
    return ModelMemory(weights, kv_shape(config), context_length(config))


def kv_bytes_per_element(kv_bits: int | None) -> float:
    """fp16 without --kv-bits; else the bits plus a 2-byte scale and bias per group of 64."""
    if not kv_bits:
        return float(FULL_PRECISION_BYTES)
    return kv_bits / 8 + 2 * FULL_PRECISION_BYTES / KV_GROUP_SIZE


def kv_cache_bytes(shape: KvShape, context: int, kv_bits: int | None = None) -> int:
    """The KV cache of one request at `context` tokens."""
    return round(shape.elements_per_token * context * kv_bytes_per_element(kv_bits))


def need(
    weights: int,
    shape: KvShape | None,
    context: int | None,
    kv_bits: int | None,
    overhead: int,
) -> Need:
    """A server's need: its weights, its KV cache at `context` tokens, the fixed overhead."""
    kv = kv_cache_bytes(shape, context, kv_bits) if shape and context else None
    return Need(weights, kv, overhead, context, kv_bits)
