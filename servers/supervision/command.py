"""The model servers' command lines: pure functions from validated profile fields to argv, one
per engine (`build_server_command`: text, `mlx_lm.server`; `build_vision_command`: vision,
`mlx_vlm.server`; `build_engine_command`: embeddings and speech to text, the portal's own
entry). `servers.supervision.lifecycle.server_command` picks by the profile's engine.

No shell is involved: the list goes to `subprocess.Popen` as is. Only the options listed here
ever reach a server, and it always listens on the loopback interface with cross-origin
requests limited to its own origin (both servers allow `*` by default).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LOOPBACK = "127.0.0.1"
# mlx_lm.server's own main(), admitting new requests into the running batch every few
# milliseconds instead of every 0.5 s (see that file).
MLX_ENTRY = str(Path(__file__).resolve().with_name("mlx_entry.py"))
# mlx_vlm.server's own main(), serving only its own model (see that file).
VLM_ENTRY = str(Path(__file__).resolve().with_name("vlm_entry.py"))


@dataclass(frozen=True)
class ServerOptions:
    """The validated fields of a profile that shape the command line (plain data only)."""

    port: int
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    max_tokens: int = 512
    chat_template_args: dict[str, Any] = field(default_factory=dict)
    num_draft_tokens: int = 3
    prompt_cache_size: int = 10
    decode_concurrency: int = 32
    prompt_concurrency: int = 8
    kv_bits: int | None = None
    trust_remote_code: bool = False
    # The model's context (from its config.json): longer prompts are refused (mlx_entry.py).
    context_length: int | None = None

    @classmethod
    def from_profile(cls, profile: Any, context_length: int | None = None) -> ServerOptions:
        return cls(
            port=profile.port,
            temperature=profile.temperature,
            top_p=profile.top_p,
            top_k=profile.top_k,
            min_p=profile.min_p,
            max_tokens=profile.max_tokens,
            chat_template_args=dict(profile.chat_template_args or {}),
            num_draft_tokens=profile.num_draft_tokens,
            prompt_cache_size=profile.prompt_cache_size,
            decode_concurrency=profile.decode_concurrency,
            prompt_concurrency=profile.prompt_concurrency,
            kv_bits=profile.kv_bits,
            trust_remote_code=profile.trust_remote_code,
            context_length=context_length,
        )


def _number(value: float) -> str:
    return repr(float(value))


def build_server_command(
    python: str,
    model_path: Path,
    options: ServerOptions,
    *,
    draft_model_path: Path | None = None,
    adapter_path: Path | None = None,
) -> list[str]:
    """The argv that starts `mlx_lm.server` (through MLX_ENTRY) for a profile (paths already
    resolved and checked)."""
    origin = f"http://{LOOPBACK}:{options.port}"
    argv = [
        python, MLX_ENTRY,
        "--model", str(model_path),
        "--host", LOOPBACK,
        "--port", str(int(options.port)),
        "--allowed-origins", origin,
        "--temp", _number(options.temperature),
        "--top-p", _number(options.top_p),
        "--top-k", str(int(options.top_k)),
        "--min-p", _number(options.min_p),
        "--max-tokens", str(int(options.max_tokens)),
        "--prompt-cache-size", str(int(options.prompt_cache_size)),
        "--decode-concurrency", str(int(options.decode_concurrency)),
        "--prompt-concurrency", str(int(options.prompt_concurrency)),
    ]  # fmt: skip
    if options.chat_template_args:
        argv += [
            "--chat-template-args",
            json.dumps(options.chat_template_args, sort_keys=True, separators=(",", ":")),
        ]
    if draft_model_path is not None:
        argv += ["--draft-model", str(draft_model_path)]
        argv += ["--num-draft-tokens", str(int(options.num_draft_tokens))]
    argv += _shared_options(options, adapter_path)
    if options.context_length is not None:
        argv += ["--portal-context-length", str(int(options.context_length))]
    return argv


def build_vision_command(
    python: str,
    model_path: Path,
    options: ServerOptions,
    *,
    adapter_path: Path | None = None,
) -> list[str]:
    """The argv that starts `mlx_vlm.server` (through VLM_ENTRY) for a vision profile. It takes
    the reply length, the batch size (decode concurrency), KV-cache bits, an adapter and
    trust-remote-code; sampling defaults travel with each request (the gateway adds the
    profile's), and mlx_vlm has no draft model for these models nor a prompt-cache size."""
    argv = [
        python, VLM_ENTRY,
        "--model", str(model_path),
        "--host", LOOPBACK,
        "--port", str(int(options.port)),
        "--max-tokens", str(int(options.max_tokens)),
        "--max-num-seqs", str(int(options.decode_concurrency)),
    ]  # fmt: skip
    return argv + _shared_options(options, adapter_path)


def _shared_options(options: ServerOptions, adapter_path: Path | None) -> list[str]:
    """The options mlx_lm.server and mlx_vlm.server spell alike: an adapter, KV-cache bits,
    trust-remote-code."""
    argv: list[str] = []
    if adapter_path is not None:
        argv += ["--adapter-path", str(adapter_path)]
    if options.kv_bits is not None:
        argv += ["--kv-bits", str(int(options.kv_bits))]
    if options.trust_remote_code:
        argv.append("--trust-remote-code")
    return argv


# --- the engines without a server of their own: embeddings, speech to text ----------------------

# The portal's own server for them (see that file and docs/servers.md).
ENGINE_ENTRY = str(Path(__file__).resolve().with_name("engine_entry.py"))
#: The engines ENGINE_ENTRY serves (servers.models.Engine's values).
ENTRY_ENGINES = ("embeddings", "speech-to-text")


def build_engine_command(python: str, model_path: Path, engine: str, port: int) -> list[str]:
    """The argv that starts ENGINE_ENTRY for an embeddings or speech-to-text profile (the
    model's path already resolved and checked). The generation options of a text profile do not
    apply to these engines, so none is passed."""
    if engine not in ENTRY_ENGINES:
        raise ValueError(f"{engine!r} is not served by {ENGINE_ENTRY}")
    return [
        python, ENGINE_ENTRY,
        "--engine", engine,
        "--model", str(model_path),
        "--host", LOOPBACK,
        "--port", str(int(port)),
    ]  # fmt: skip
