"""The tiny models are real MLX checkpoints: they load, answer a known sentence and stop."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import tiny_models
from tests.support.tiny_models import (
    EOS,
    REPLY,
    THINKING_REPLY,
    THOUGHT,
    build_tiny_model,
    expected_reply,
    tiny_model_cache,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
EXPECTED_FILES = {
    "README.md",
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "model.safetensors.index.json",
    "special_tokens_map.json",
    "tokenizer.json",
    "tokenizer_config.json",
}


def _generate(model_dir: Path, **template_kwargs: object) -> tuple[str, str | None]:
    """Greedy generation through mlx-lm itself; returns (text, finish_reason)."""
    from mlx_lm import load, stream_generate

    model, tokenizer = load(str(model_dir))
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi there, who are you?"}],
        add_generation_prompt=True,
        **template_kwargs,
    )
    text, finish = "", None
    for response in stream_generate(model, tokenizer, prompt, max_tokens=64):
        text += response.text
        finish = response.finish_reason
    return text, finish


def _digests(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in directory.iterdir()}


def test_text_model_has_the_files_mlx_lm_writes(tiny_model: Path) -> None:
    assert {p.name for p in tiny_model.iterdir()} == EXPECTED_FILES
    config = json.loads((tiny_model / "config.json").read_text())
    assert config["model_type"] == "llama"
    assert config["num_hidden_layers"] == 2
    assert config["hidden_size"] == 64
    assert "quantization" not in config
    card = (tiny_model / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: mlx\n")


def test_tokenizer_has_special_tokens_and_a_chat_template(tiny_model: Path) -> None:
    tokenizer_config = json.loads((tiny_model / "tokenizer_config.json").read_text())
    assert tokenizer_config["bos_token"] == "<s>"
    assert tokenizer_config["eos_token"] == EOS
    assert tokenizer_config["pad_token"] == "<pad>"
    assert "add_generation_prompt" in tokenizer_config["chat_template"]
    assert "tools" not in tokenizer_config["chat_template"]
    assert "enable_thinking" not in tokenizer_config["chat_template"]

    tokenizer = json.loads((tiny_model / "tokenizer.json").read_text())
    assert tokenizer["model"]["type"] == "BPE"
    assert tokenizer["decoder"]["type"] == "ByteLevel"
    special = {t["content"]: t for t in tokenizer["added_tokens"] if t["special"]}
    assert {"<s>", EOS, "<pad>"} <= special.keys()
    config = json.loads((tiny_model / "config.json").read_text())
    assert config["eos_token_id"] == special[EOS]["id"]
    generation_config = json.loads((tiny_model / "generation_config.json").read_text())
    assert special[EOS]["id"] in generation_config["eos_token_id"]


def test_text_model_answers_the_known_reply_and_stops_at_eos(tiny_model: Path) -> None:
    text, finish = _generate(tiny_model)
    assert text == REPLY
    assert finish == "stop"  # the EOS token, long before max_tokens


def test_build_is_deterministic(tmp_path: Path) -> None:
    first = build_tiny_model(tmp_path / "one", "text")
    second = build_tiny_model(tmp_path / "two", "text")
    assert _digests(first) == _digests(second)
    assert _digests(first) == _digests(tiny_model_cache("text"))


def test_quantized_model_is_4bit_by_mlx_lm_and_still_answers(
    tiny_model_variant,
) -> None:
    import mlx.core as mx

    model_dir = tiny_model_variant("quantized")
    config = json.loads((model_dir / "config.json").read_text())
    assert config["quantization"]["bits"] == 4
    assert config["quantization"]["group_size"] == 64
    assert config["quantization_config"]["bits"] == 4
    weights = mx.load(str(model_dir / "model.safetensors"))
    assert weights["model.layers.0.self_attn.q_proj.weight"].dtype == mx.uint32
    assert "model.layers.0.self_attn.q_proj.scales" in weights
    assert "lm_head.biases" in weights
    assert _generate(model_dir) == (REPLY, "stop")


def test_vision_variant_is_a_qwen2_vl_model_that_mlx_vlm_loads_and_runs_on_an_image(
    tiny_model_variant,
) -> None:
    from mlx_vlm import generate, load
    from mlx_vlm.prompt_utils import apply_chat_template
    from PIL import Image

    model_dir = tiny_model_variant("vision")
    config = json.loads((model_dir / "config.json").read_text())
    assert config["model_type"] == "qwen2_vl"
    assert config["vision_config"]["depth"] == 1
    tokenizer = json.loads((model_dir / "tokenizer.json").read_text())
    pad = [t for t in tokenizer["added_tokens"] if t["content"] == "<|image_pad|>"]
    assert pad and config["image_token_id"] == pad[0]["id"]

    model, processor = load(str(model_dir))
    prompt = apply_chat_template(processor, model.config, "What is this?", num_images=1)
    assert prompt.count("<|image_pad|>") == 1
    result = generate(
        model, processor, prompt, image=[Image.new("RGB", (64, 48), "red")], max_tokens=30,
        verbose=False,
    )  # fmt: skip
    assert result.text == REPLY
    assert result.prompt_tokens > 12  # the image became tokens


def test_thinking_template_honours_enable_thinking(tiny_model_variant) -> None:
    from transformers import AutoTokenizer

    model_dir = tiny_model_variant("thinking")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    messages = [{"role": "user", "content": "hello"}]
    thinking = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=False, enable_thinking=True
    )
    plain = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=False, enable_thinking=False
    )
    assert thinking.endswith("<|im_start|>assistant\n")
    assert plain.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    template = json.loads((model_dir / "tokenizer_config.json").read_text())["chat_template"]
    assert "enable_thinking" in template and "<think>" in template

    assert _generate(model_dir, enable_thinking=True) == (
        f"<think>{THOUGHT}</think>{THINKING_REPLY}",
        "stop",
    )
    assert _generate(model_dir, enable_thinking=False) == (THINKING_REPLY, "stop")
    assert expected_reply("thinking", enable_thinking=False) == THINKING_REPLY


def test_tools_template_renders_the_tools(tiny_model_variant) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_variant("tools"))
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather for a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Weather in Paris?"}],
        tools=tools,
        add_generation_prompt=True,
        tokenize=False,
    )
    assert "<tools>" in prompt and '"name": "get_weather"' in prompt
    assert "<tool_call>" in prompt
    assert prompt.endswith("<|im_start|>assistant\n")


def test_unknown_variant_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="Unknown tiny model variant"):
        build_tiny_model(tmp_path, "gguf")


def test_cache_builds_once_then_reuses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLX_PORTAL_TEST_CACHE", str(tmp_path))
    first = tiny_model_cache("text")
    assert first == tmp_path / tiny_models.BUILDER_VERSION / "text"
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    assert tiny_model_cache("text") == first
    assert (first / "model.safetensors").stat().st_mtime_ns == stamp
    assert [p.name for p in first.parent.iterdir() if "building" in p.name] == []

    monkeypatch.setattr(tiny_models, "BUILDER_VERSION", "test-bump")
    rebuilt = tiny_model_cache("text")
    assert rebuilt == tmp_path / "test-bump" / "text"
    assert (rebuilt / "model.safetensors").read_bytes() == (
        first / "model.safetensors"
    ).read_bytes()
    assert "builder version test-bump" in (rebuilt / "README.md").read_text()


def test_parallel_processes_share_one_build(tmp_path: Path) -> None:
    script = (
        "import os, sys\n"
        "from tests.support.tiny_models import tiny_model_cache\n"
        "path = tiny_model_cache('tools')\n"
        "print(path, os.stat(path).st_ino, flush=True)\n"
    )
    env = {**os.environ, "MLX_PORTAL_TEST_CACHE": str(tmp_path), "PYTHONPATH": str(REPO_ROOT)}
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", script],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outputs = []
    for worker in workers:
        out, err = worker.communicate(timeout=120)
        assert worker.returncode == 0, err
        outputs.append(out.split())
    final = tmp_path / tiny_models.BUILDER_VERSION / "tools"
    # Everyone got the same directory, which was never replaced after the first build.
    assert {tuple(o) for o in outputs} == {(str(final), str(final.stat().st_ino))}
    assert sorted(p.name for p in final.parent.iterdir()) == [".tools.lock", "tools"]
    assert _generate(final) == (REPLY, "stop")
