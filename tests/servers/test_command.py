"""The mlx_lm.server command line is built from validated fields only, with no shell."""

from pathlib import Path

import pytest

from servers.supervision.command import MLX_ENTRY, ServerOptions, build_server_command

PY = "/venv/bin/python"
MODEL = Path("/cache/models--a--b/snapshots/abc")
BASE = [
    PY, MLX_ENTRY, "--model", str(MODEL),
    "--host", "127.0.0.1", "--port", "8101",
    "--allowed-origins", "http://127.0.0.1:8101",
    "--temp", "0.0", "--top-p", "1.0", "--top-k", "0", "--min-p", "0.0",
    "--max-tokens", "512", "--prompt-cache-size", "10",
    "--decode-concurrency", "32", "--prompt-concurrency", "8",
]  # fmt: skip


def _with(base: list[str], flag: str, value: str) -> list[str]:
    argv = list(base)
    argv[argv.index(flag) + 1] = value
    return argv


CASES = [
    ("defaults", {}, {}, BASE),
    (
        "sampling",
        {"temperature": 0.7, "top_p": 0.9, "top_k": 40, "min_p": 0.05, "max_tokens": 2048},
        {},
        _with(
            _with(
                _with(_with(_with(BASE, "--temp", "0.7"), "--top-p", "0.9"), "--top-k", "40"),
                "--min-p",
                "0.05",
            ),
            "--max-tokens",
            "2048",
        ),
    ),
    (
        "chat template args as compact sorted JSON",
        {"chat_template_args": {"enable_thinking": False, "a": 1}},
        {},
        [*BASE, "--chat-template-args", '{"a":1,"enable_thinking":false}'],
    ),
    (
        "draft model with its token count",
        {"num_draft_tokens": 5},
        {"draft_model_path": Path("/cache/draft")},
        [*BASE, "--draft-model", "/cache/draft", "--num-draft-tokens", "5"],
    ),
    (
        "draft token count is dropped without a draft model",
        {"num_draft_tokens": 5},
        {},
        BASE,
    ),
    (
        "adapter",
        {},
        {"adapter_path": Path("/data/adapters/lora")},
        [*BASE, "--adapter-path", "/data/adapters/lora"],
    ),
    ("kv bits", {"kv_bits": 4}, {}, [*BASE, "--kv-bits", "4"]),
    ("trust remote code", {"trust_remote_code": True}, {}, [*BASE, "--trust-remote-code"]),
    (
        "concurrency and cache",
        {"decode_concurrency": 4, "prompt_concurrency": 2, "prompt_cache_size": 0},
        {},
        _with(
            _with(_with(BASE, "--decode-concurrency", "4"), "--prompt-concurrency", "2"),
            "--prompt-cache-size",
            "0",
        ),
    ),
]


@pytest.mark.parametrize(("label", "fields", "paths", "expected"), CASES, ids=[c[0] for c in CASES])
def test_command_line_is_built_from_the_profile_fields(label, fields, paths, expected):
    options = ServerOptions(port=8101, **fields)
    assert build_server_command(PY, MODEL, options, **paths) == expected


def test_server_listens_on_loopback_with_its_own_origin_only():
    argv = build_server_command(PY, MODEL, ServerOptions(port=9000))
    assert argv[argv.index("--host") + 1] == "127.0.0.1"
    assert argv[argv.index("--allowed-origins") + 1] == "http://127.0.0.1:9000"
    assert "*" not in argv


def test_a_hostile_string_stays_one_argument():
    options = ServerOptions(port=8101, chat_template_args={"x": "; rm -rf / #"})
    argv = build_server_command(PY, Path("/m; echo hi"), options)
    assert argv[argv.index("--model") + 1] == "/m; echo hi"
    assert argv[argv.index("--chat-template-args") + 1] == '{"x":"; rm -rf / #"}'
