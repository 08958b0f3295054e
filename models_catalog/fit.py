"""Will a model fit in a host's memory? A pure function of two numbers, with the rule as text.

The weights must sit in (unified) memory, and the model also needs room for its KV cache, which
grows with the context, plus the OS and whatever else runs on the machine. macOS lets the GPU
wire only about three quarters of memory by default (`iogpu.wired_limit_mb`), so:

* fits   — weights take at most 60% of memory: room left for a long context and the OS;
* tight  — up to 75%: it loads, but long contexts or other apps may push it into swap;
* won't fit — beyond 75%: the GPU cannot wire it by default.

The same shares hold elsewhere (MLX on the CPU: the weights, the KV cache and the OS share the
memory), but the rule names the GPU's share only for a host on macOS with Metal.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.template.defaultfilters import filesizeformat

FITS_SHARE = 0.60
TIGHT_SHARE = 0.75

FITS = "fits"
TIGHT = "tight"
TOO_BIG = "too_big"
UNKNOWN = "unknown"


@dataclass(frozen=True)
class Fit:
    verdict: str  # fits / tight / too_big / unknown
    label: str  # what the badge says
    css: str  # the badge class: ok / warn / bad / ""
    rule: str  # the rule, shown on hover

    @property
    def runs(self) -> bool:
        """Fits or tight: the model can be loaded on this host."""
        return self.verdict in (FITS, TIGHT)


def rule_text(memory_total: int, *, macos_gpu: bool = False) -> str:
    """The rule for a host with `memory_total` bytes; `macos_gpu` for a host on macOS with
    Metal (Host.uses_macos_gpu), the only one where the GPU's share of memory decides "tight"."""
    if not memory_total:
        return "This host has not reported its memory yet."
    fits = filesizeformat(int(memory_total * FITS_SHARE))
    tight = filesizeformat(int(memory_total * TIGHT_SHARE))
    if macos_gpu:
        why_tight = "the share macOS lets the GPU use by default"
    else:
        why_tight = "it loads, but a long context or other programs may push it into swap"
    return (
        f"Fits when the model takes at most {FITS_SHARE:.0%} of this host's "
        f"{filesizeformat(memory_total)} of memory ({fits}), leaving room for the KV cache "
        f"and the OS; tight up to {TIGHT_SHARE:.0%} ({tight}), {why_tight}; beyond that it "
        "won't fit."
    )


def fit(
    size_bytes: int | None,
    memory_total: int | None,
    *,
    estimated: bool = False,
    macos_gpu: bool = False,
) -> Fit:
    """The verdict for a model of `size_bytes` on a host with `memory_total` bytes
    (`macos_gpu`, see rule_text, changes only the rule's wording)."""
    rule = rule_text(memory_total or 0, macos_gpu=macos_gpu)
    if not size_bytes or not memory_total:
        reason = "The model's size is unknown. " if not size_bytes else ""
        return Fit(UNKNOWN, "fit unknown", "", reason + rule)
    share = size_bytes / memory_total
    about = "about " if estimated else ""
    detail = (
        f"The model takes {about}{filesizeformat(size_bytes)}, {share:.0%} of this host's memory. "
    )
    if share <= FITS_SHARE:
        return Fit(FITS, "fits", "ok", detail + rule)
    if share <= TIGHT_SHARE:
        return Fit(TIGHT, "tight", "warn", detail + rule)
    return Fit(TOO_BIG, "won't fit", "bad", detail + rule)
