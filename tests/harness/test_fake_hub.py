"""The fake Hub answers the real huggingface_hub client the way huggingface.co does."""

import hashlib
import os
import select
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from huggingface_hub import HfApi, hf_hub_download, snapshot_download
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from tests.support.fake_hub import (
    GATED_REPO,
    PRIVATE_REPO,
    UNAPPROVED_TOKEN,
    USER_NAME,
    VALID_TOKEN,
    FakeHub,
)
from tests.support.mlx_server import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
TINY = "test-org/tiny-llama"
TINY_4BIT = "test-org/tiny-llama-4bit"


@pytest.fixture(autouse=True)
def _isolated_hf(hf_env):
    """No developer token, no offline flag, an empty cache: only the fake hub."""
    return hf_env


@pytest.fixture
def api(hub: FakeHub) -> HfApi:
    return HfApi(endpoint=hub.url, token=False)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _wait_for(condition, timeout: float, message: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")


# --- listing --------------------------------------------------------------------------------


def test_list_models_paginates_through_link_headers(hub: FakeHub, api: HfApi) -> None:
    hub.page_size = 10
    models = list(
        api.list_models(
            filter="mlx",
            sort="downloads",
            limit=45,
            expand=["downloads", "usedStorage", "safetensors", "tags", "config"],
        )
    )
    assert len(models) == 45
    assert len({m.id for m in models}) == 45
    downloads = [m.downloads for m in models]
    assert downloads == sorted(downloads, reverse=True)
    assert all("mlx" in m.tags for m in models)

    listing = [r for r in hub.records if r.path == "/api/models"]
    assert len(listing) == 5  # 5 pages of 10; the client stops after 45 items
    assert "cursor" not in listing[0].query
    assert all("cursor" in r.query for r in listing[1:])
    assert all(r.query["filter"] == ["mlx"] for r in listing)  # params carried by the Link


def test_filter_mlx_keeps_only_mlx_repos_from_every_author(api: HfApi) -> None:
    ids = [m.id for m in api.list_models(filter="mlx")]
    assert len(ids) >= 60
    assert "Qwen/Qwen2.5-7B-Instruct" not in ids
    assert "deepseek-ai/DeepSeek-V3" not in ids
    assert "TheBloke/Llama-2-7B-Chat-GGUF" not in ids
    assert PRIVATE_REPO not in ids  # no token: private repos stay hidden
    authors = {i.split("/")[0] for i in ids}
    assert {"mlx-community", "lmstudio-community", "Qwen", "google", "test-org"} <= authors
    everything = [m.id for m in api.list_models()]
    assert "Qwen/Qwen2.5-7B-Instruct" in everything


@pytest.mark.parametrize(
    ("sort", "attribute"),
    [
        ("downloads", "downloads"),
        ("likes", "likes"),
        ("trending_score", "trending_score"),
        ("last_modified", "last_modified"),
        ("created_at", "created_at"),
    ],
)
def test_sort_orders_descending(api: HfApi, sort: str, attribute: str) -> None:
    expand = ["downloads", "likes", "trendingScore", "lastModified", "createdAt"]
    models = list(api.list_models(filter="mlx", sort=sort, limit=30, expand=expand))
    values = [getattr(m, attribute) for m in models]
    assert None not in values
    assert values == sorted(values, reverse=True)
    assert values[0] != values[-1]


def test_search_and_author_narrow_the_list(api: HfApi) -> None:
    models = list(api.list_models(search="qwen3", author="mlx-community", filter="mlx"))
    assert len(models) >= 5
    assert all(m.id.startswith("mlx-community/") and "qwen3" in m.id.lower() for m in models)
    assert list(api.list_models(search="no-such-model-anywhere")) == []


def test_expand_returns_sizes_and_parameters(api: HfApi) -> None:
    expand = ["usedStorage", "safetensors", "config", "tags", "gated"]
    found = {m.id: m for m in api.list_models(search="mlx-community/", expand=expand)}
    big = found["mlx-community/DeepSeek-V3-0324-4bit"]
    assert 350e9 < big.used_storage < 420e9
    small = found["mlx-community/Qwen2.5-0.5B-Instruct-4bit"]
    assert 250e6 < small.used_storage < 350e6
    no_storage = found["mlx-community/gemma-2-27b-it-bf16"]
    assert no_storage.used_storage is None
    assert no_storage.safetensors.parameters == {"BF16": 27_200_000_000}
    # Packed MLX weights: the Hub counts U32 words, not real parameters.
    assert set(small.safetensors.parameters) == {"BF16", "U32"}
    vision = found["mlx-community/Qwen2.5-VL-7B-Instruct-4bit"]
    assert "vl" in vision.config["model_type"]
    assert (
        "enable_thinking"
        in found["mlx-community/Qwen3-4B-4bit"].config["tokenizer_config"]["chat_template"]
    )
    assert big.downloads is None  # not expanded, not sent


def test_full_config_and_card_data_flags(api: HfApi, tiny_model_variant) -> None:
    (model,) = api.list_models(search="tiny-thinking", full=True, fetch_config=True, cardData=True)
    assert model.id == "test-org/tiny-thinking"
    assert "enable_thinking" in model.config["tokenizer_config"]["chat_template"]
    assert model.card_data.library_name == "mlx"
    served = {p.name for p in tiny_model_variant("thinking").iterdir()}
    assert {s.rfilename for s in model.siblings} == served


# --- model info -----------------------------------------------------------------------------


def test_model_info_describes_files_like_the_hub(api: HfApi, tiny_model: Path) -> None:
    info = api.model_info(TINY, files_metadata=True)
    assert len(info.sha) == 40
    assert info.author == "test-org"
    assert info.gated is False and info.private is False
    assert "mlx" in info.tags and info.library_name == "mlx"
    siblings = {s.rfilename: s for s in info.siblings}
    assert set(siblings) == {p.name for p in tiny_model.iterdir()}
    weights = siblings["model.safetensors"]
    assert weights.size == (tiny_model / "model.safetensors").stat().st_size
    assert weights.lfs.sha256 == _sha256(tiny_model / "model.safetensors")
    assert siblings["config.json"].lfs is None
    assert info.used_storage == sum(p.stat().st_size for p in tiny_model.iterdir())
    assert info.safetensors.total == 131_392  # counted from the safetensors header
    assert info.config["model_type"] == "llama"


def test_model_info_by_revision_and_expand(api: HfApi) -> None:
    sha = api.model_info(TINY).sha
    assert api.model_info(TINY, revision=sha).sha == sha
    with pytest.raises(RevisionNotFoundError):
        api.model_info(TINY, revision="v9.9")
    info = api.model_info(TINY_4BIT, expand=["usedStorage", "config"])
    assert info.used_storage > 0
    assert info.config["quantization_config"]["bits"] == 4
    assert info.sha is None and info.siblings is None  # only what was expanded


def test_unknown_repo_and_file_raise_the_hub_errors(api: HfApi, hub: FakeHub) -> None:
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("nobody/nothing")
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("nobody/nothing", "config.json", endpoint=hub.url, token=False)
    with pytest.raises(RemoteEntryNotFoundError):
        hf_hub_download(TINY, "missing.json", endpoint=hub.url, token=False)

    response = httpx.get(f"{hub.url}/api/models/nobody/nothing")
    assert response.status_code == 404
    assert response.headers["X-Error-Code"] == "RepoNotFound"
    assert response.json() == {"error": "Repository not found"}
    response = httpx.head(f"{hub.url}/{TINY}/resolve/main/missing.json")
    assert response.status_code == 404
    assert response.headers["X-Error-Code"] == "EntryNotFound"
    assert len(response.headers["X-Repo-Commit"]) == 40


def test_tree_paths_info_and_nested_snapshot(hub: FakeHub, api: HfApi, tmp_path: Path) -> None:
    files = {"a.json": b"{}", "sub/b.txt": b"bee", "sub/deep/c.bin": b"\x00" * 2048}
    hub.add_files("test-org/nested", files)
    try:
        top = api.list_repo_tree("test-org/nested")
        assert [(e.path, type(e).__name__) for e in top] == [
            ("a.json", "RepoFile"),
            ("sub", "RepoFolder"),
        ]
        everything = {e.path for e in api.list_repo_tree("test-org/nested", recursive=True)}
        assert everything == {"a.json", "sub", "sub/b.txt", "sub/deep", "sub/deep/c.bin"}
        info = api.get_paths_info("test-org/nested", ["a.json", "sub/deep/c.bin", "nope"])
        assert {i.path: i.size for i in info} == {"a.json": 2, "sub/deep/c.bin": 2048}
        assert [i.lfs is not None for i in info] == [False, True]
        folder = Path(
            snapshot_download("test-org/nested", endpoint=hub.url, cache_dir=tmp_path, token=False)
        )
        assert {p: (folder / p).read_bytes() for p in files} == files
    finally:
        hub.remove_repo("test-org/nested")


# --- files ----------------------------------------------------------------------------------


def test_resolve_headers_and_ranges(hub: FakeHub, tiny_model: Path) -> None:
    source = (tiny_model / "model.safetensors").read_bytes()
    url = f"{hub.url}/{TINY}/resolve/main/model.safetensors"
    head = httpx.head(url)
    assert head.status_code == 200
    assert int(head.headers["Content-Length"]) == len(source)
    assert head.headers["Accept-Ranges"] == "bytes"
    assert head.headers["ETag"] == f'"{hashlib.sha256(source).hexdigest()}"'
    assert head.headers["X-Linked-Etag"] == head.headers["ETag"]
    assert int(head.headers["X-Linked-Size"]) == len(source)
    assert len(head.headers["X-Repo-Commit"]) == 40
    assert not [h for h in head.headers if h.lower().startswith("x-xet")]

    part = httpx.get(url, headers={"Range": "bytes=10-19"})
    assert part.status_code == 206
    assert part.content == source[10:20]
    assert part.headers["Content-Range"] == f"bytes 10-19/{len(source)}"
    tail = httpx.get(url, headers={"Range": f"bytes={len(source) - 5}-"})
    assert tail.content == source[-5:]
    assert httpx.get(url, headers={"Range": f"bytes={len(source)}-"}).status_code == 416

    config = httpx.head(f"{hub.url}/{TINY}/resolve/main/config.json")
    blob = (tiny_model / "config.json").read_bytes()
    git_oid = hashlib.sha1(f"blob {len(blob)}\0".encode() + blob).hexdigest()
    assert config.headers["ETag"] == f'"{git_oid}"'  # small files: the git blob id
    assert "X-Linked-Etag" not in config.headers


def test_hf_hub_download_fetches_the_exact_bytes(hub: FakeHub, tmp_path: Path, tiny_model) -> None:
    path = hf_hub_download(TINY, "config.json", endpoint=hub.url, cache_dir=tmp_path, token=False)
    assert Path(path).read_bytes() == (tiny_model / "config.json").read_bytes()
    assert ("HEAD", f"/{TINY}/resolve/main/config.json") in hub.request_log


def test_snapshot_download_is_byte_identical_and_cached(
    hub: FakeHub, tmp_path: Path, tiny_model_variant
) -> None:
    source = tiny_model_variant("quantized")
    folder = Path(snapshot_download(TINY_4BIT, endpoint=hub.url, cache_dir=tmp_path, token=False))
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in source.iterdir())
    for path in source.iterdir():
        assert (folder / path.name).read_bytes() == path.read_bytes(), path.name
    assert hub.count("GET", f"/api/models/{TINY_4BIT}/tree/") == 1

    hub.reset()
    again = snapshot_download(TINY_4BIT, endpoint=hub.url, cache_dir=tmp_path, token=False)
    assert Path(again) == folder
    assert hub.count(path_prefix=f"/{TINY_4BIT}/resolve/") == 0  # nothing re-downloaded


@pytest.fixture
def big_repo(hub: FakeHub):
    """A repo with a 12 MiB blob: huggingface_hub resumes in 10 MiB steps only."""
    repo_id = "test-org/big-blob"
    data = hashlib.sha256(b"seed").digest() * (12 * 1024 * 1024 // 32)
    hub.add_files(repo_id, {"weights.safetensors": data, "config.json": b"{}"})
    try:
        yield repo_id, data
    finally:
        hub.remove_repo(repo_id)


def test_interrupted_download_resumes_with_range(
    hub: FakeHub, tmp_path: Path, big_repo: tuple[str, bytes]
) -> None:
    repo_id, data = big_repo
    chunk = 10 * 1024 * 1024  # huggingface_hub's DOWNLOAD_CHUNK_SIZE: only whole chunks survive
    hub.interrupt_after_bytes = chunk + 512 * 1024
    path = hf_hub_download(
        repo_id, "weights.safetensors", endpoint=hub.url, cache_dir=tmp_path, token=False
    )
    assert Path(path).read_bytes() == data
    gets = [r for r in hub.records if r.method == "GET" and r.path.endswith(".safetensors")]
    assert [(r.headers.get("range"), r.status) for r in gets] == [
        (None, 200),
        (f"bytes={chunk}-", 206),
    ]


def test_interruption_before_a_full_chunk_restarts_from_zero(
    hub: FakeHub, tmp_path: Path, tiny_model: Path
) -> None:
    hub.interrupt_after_bytes = 100_000  # the tiny model's weights are ~265 kB
    path = hf_hub_download(
        TINY, "model.safetensors", endpoint=hub.url, cache_dir=tmp_path, token=False
    )
    assert _sha256(Path(path)) == _sha256(tiny_model / "model.safetensors")
    gets = [r for r in hub.records if r.method == "GET" and r.path.endswith(".safetensors")]
    assert [(r.headers.get("range"), r.status) for r in gets] == [(None, 200), (None, 200)]


def test_throttled_download_can_be_watched_mid_way(
    hub: FakeHub, tmp_path: Path, big_repo: tuple[str, bytes]
) -> None:
    repo_id, data = big_repo
    chunk = 10 * 1024 * 1024
    hub.throttle_bps = 20_000_000

    def body_record():
        for record in hub.records:
            if record.method == "GET" and record.path.endswith("weights.safetensors"):
                return record
        return None

    with ThreadPoolExecutor(max_workers=1) as pool:
        download = pool.submit(
            hf_hub_download,
            repo_id,
            "weights.safetensors",
            endpoint=hub.url,
            cache_dir=tmp_path,
            token=False,
        )
        try:
            record = _wait_for(body_record, timeout=10, message="the file GET")
            _wait_for(lambda: record.bytes_sent > chunk, timeout=10, message="10 MiB sent")
            hub.throttle_bps = 2_000  # all but paused: the download is now mid-way
            assert chunk < record.bytes_sent < len(data)
            assert not download.done()
            # The client writes its .incomplete file in whole 10 MiB chunks.
            blobs = tmp_path / "models--test-org--big-blob" / "blobs"

            def partial_sizes() -> list[int]:
                return [p.stat().st_size for p in blobs.glob("*.incomplete")]

            _wait_for(lambda: partial_sizes() == [chunk], timeout=10, message="10 MiB on disk")
        finally:
            hub.throttle_bps = None  # let it finish
        path = download.result(timeout=30)
    assert Path(path).read_bytes() == data
    assert record.bytes_sent == len(data)


# --- auth -----------------------------------------------------------------------------------


def test_gated_repo_needs_an_approved_token(hub: FakeHub, tmp_path: Path, tiny_model) -> None:
    info = HfApi(endpoint=hub.url, token=False).model_info(GATED_REPO)
    assert info.gated == "manual"  # metadata stays public
    download = {"endpoint": hub.url, "cache_dir": tmp_path}
    with pytest.raises(GatedRepoError) as refused:
        hf_hub_download(GATED_REPO, "config.json", token=False, **download)
    assert refused.value.response.status_code == 401
    with pytest.raises(GatedRepoError) as unapproved:
        hf_hub_download(GATED_REPO, "config.json", token=UNAPPROVED_TOKEN, **download)
    assert unapproved.value.response.status_code == 403

    folder = snapshot_download(GATED_REPO, token=VALID_TOKEN, **download)
    assert (Path(folder) / "model.safetensors").read_bytes() == (
        tiny_model / "model.safetensors"
    ).read_bytes()
    sent = [r.headers.get("authorization") for r in hub.records if "/resolve/" in r.path]
    assert f"Bearer {VALID_TOKEN}" in sent


def test_private_repo_is_invisible_without_a_token(hub: FakeHub) -> None:
    anonymous = HfApi(endpoint=hub.url, token=False)
    with pytest.raises(RepositoryNotFoundError):
        anonymous.model_info(PRIVATE_REPO)
    assert list(anonymous.list_models(search="tiny-llama-private")) == []
    member = HfApi(endpoint=hub.url, token=VALID_TOKEN)
    assert member.model_info(PRIVATE_REPO).private is True
    assert [m.id for m in member.list_models(search="tiny-llama-private")] == [PRIVATE_REPO]


def test_whoami_checks_tokens(hub: FakeHub) -> None:
    api = HfApi(endpoint=hub.url)
    assert api.whoami(token=VALID_TOKEN)["name"] == USER_NAME
    with pytest.raises(HfHubHTTPError, match="Invalid user token"):
        api.whoami(token="hf_not_a_real_token")
    assert httpx.get(f"{hub.url}/api/whoami-v2").status_code == 401
    with pytest.raises(HfHubHTTPError) as bad_token:
        api.model_info(TINY, token="hf_not_a_real_token")
    assert bad_token.value.response.status_code == 401
    assert bad_token.value.server_message == "Invalid credentials in Authorization header"


# --- fault and load knobs -------------------------------------------------------------------


def test_forced_429_carries_retry_after_and_spares_files(hub: FakeHub) -> None:
    hub.fail_status = 429
    hub.retry_after = 7
    response = httpx.get(f"{hub.url}/api/models", params={"limit": 1})
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "7"
    assert httpx.head(f"{hub.url}/{TINY}/resolve/main/config.json").status_code == 200


def test_transient_503_is_retried_by_the_client(hub: FakeHub, api: HfApi) -> None:
    hub.fail_status, hub.fail_times = 503, 1
    with pytest.raises(HfHubHTTPError) as failed:  # model_info does not retry
        api.model_info(TINY)
    assert failed.value.response.status_code == 503
    assert api.model_info(TINY).id == TINY  # recovered

    hub.reset()
    hub.fail_status, hub.fail_times = 503, 1
    assert len(list(api.list_models(search="tiny-llama", limit=3))) == 3  # paginate backs off
    assert [r.status for r in hub.records if r.path == "/api/models"] == [503, 200]


def test_file_failures_and_forced_401(hub: FakeHub, api: HfApi, tmp_path: Path) -> None:
    hub.fail_status, hub.fail_times, hub.fail_scope = 500, 1, "files"
    path = hf_hub_download(TINY, "README.md", endpoint=hub.url, cache_dir=tmp_path, token=False)
    assert Path(path).read_text().startswith("---")
    assert [r.status for r in hub.records if r.method == "HEAD"] == [500, 200]

    hub.reset()
    hub.fail_status = 401
    with pytest.raises(HfHubHTTPError) as refused:
        api.model_info(TINY)
    assert refused.value.response.status_code == 401


def test_latency_is_added_to_every_request(hub: FakeHub) -> None:
    hub.latency = 0.3
    started = time.monotonic()
    assert httpx.get(f"{hub.url}/api/models/{TINY}").status_code == 200
    assert time.monotonic() - started >= 0.3


# --- endpoint configuration -----------------------------------------------------------------


def test_hf_env_points_default_client_calls_at_the_hub(hf_env, tiny_model: Path) -> None:
    folder = Path(snapshot_download(TINY))  # no endpoint=, no cache_dir=
    assert folder.is_relative_to(hf_env.cache_dir)
    assert (folder / "tokenizer.json").read_bytes() == (tiny_model / "tokenizer.json").read_bytes()


def test_subprocess_reads_hf_endpoint_from_the_environment(hub: FakeHub) -> None:
    code = f"from huggingface_hub import HfApi; print(HfApi(token=False).model_info({TINY!r}).sha)"
    env = {**os.environ, "HF_ENDPOINT": hub.url}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == hub.repos[TINY].sha


def test_fake_hub_runs_as_a_process() -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.support.fake_hub", "--port", str(port)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        ready, _, _ = select.select([process.stdout], [], [], 30)
        assert ready, "fake hub printed nothing in 30 s"
        url = process.stdout.readline().strip()
        assert url == f"http://127.0.0.1:{port}"
        models = HfApi(endpoint=url, token=False).list_models(filter="mlx", limit=3)
        assert len(list(models)) == 3
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
