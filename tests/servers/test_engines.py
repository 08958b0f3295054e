"""A profile's engine: picked from the model (the form's initial value, Serve, the catalog's
button), changeable, with only the options that engine takes; each engine's command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.urls import reverse

from servers.forms import ServerProfileForm
from servers.models import ServerProfile
from servers.supervision.command import (
    ENGINE_ENTRY,
    MLX_ENTRY,
    VLM_ENTRY,
    ServerOptions,
    build_vision_command,
)
from servers.supervision.lifecycle import LaunchPlan, server_command
from tests.servers.helpers import install_model
from tests.servers.test_profiles import valid_data

pytestmark = pytest.mark.usefixtures("clean_queues")

VL = "mlx-community/Qwen2-VL-2B-Instruct-4bit"
QWEN = "mlx-community/Qwen3-4B-4bit"
PY = "/venv/bin/python"
MODEL = Path("/cache/models--a--b/snapshots/abc")


@pytest.fixture
def vl_and_text_on_disk(hf_cache):
    vl = install_model(hf_cache, VL)
    (vl / "config.json").write_text(
        json.dumps({"model_type": "qwen2_vl", "vision_config": {"depth": 32}})
    )
    text = install_model(hf_cache, QWEN)
    (text / "config.json").write_text(json.dumps({"model_type": "qwen3"}))
    return VL, QWEN


VISION_CASES = [
    ("defaults", {}, {}, []),
    ("kv bits", {"kv_bits": 4}, {}, ["--kv-bits", "4"]),
    ("trust", {"trust_remote_code": True}, {}, ["--trust-remote-code"]),
    ("adapter", {}, {"adapter_path": Path("/a/lora")}, ["--adapter-path", "/a/lora"]),
]


@pytest.mark.parametrize(
    ("label", "fields", "paths", "extra"), VISION_CASES, ids=[c[0] for c in VISION_CASES]
)
def test_the_vision_command_runs_mlx_vlm_server_on_loopback_with_its_options(
    label, fields, paths, extra
):
    options = ServerOptions(port=8101, max_tokens=300, decode_concurrency=4, **fields)
    argv = build_vision_command(PY, MODEL, options, **paths)
    assert argv[:10] == [
        PY, VLM_ENTRY, "--model", str(MODEL), "--host", "127.0.0.1", "--port", "8101",
        "--max-tokens", "300",
    ]  # fmt: skip
    assert argv[10:12] == ["--max-num-seqs", "4"]
    assert argv[12:] == extra


@pytest.mark.django_db
def test_the_profiles_engine_picks_its_server(make_profile):
    plan = LaunchPlan(model_path=MODEL, draft_model_path=Path("/draft"), adapter_path=None)
    words = make_profile("Words", engine="text", temperature=0.7)
    assert server_command(words, plan)[1] == MLX_ENTRY
    eyes = make_profile("Eyes", engine="vision", temperature=0.7)
    argv = server_command(eyes, plan)
    assert argv[1] == VLM_ENTRY
    assert "--draft-model" not in argv and "--temp" not in argv  # not mlx_vlm options
    vectors = make_profile("Vectors", engine="embeddings")
    assert server_command(vectors, plan)[1:4] == [ENGINE_ENTRY, "--engine", "embeddings"]


def test_the_form_picks_the_engine_that_fits_the_model_and_marks_text_only_fields(
    member_client, vl_and_text_on_disk
):
    page = member_client.get(reverse("servers:profile-create"), {"model": VL}).text
    assert 'name="engine"' in page
    assert '<option value="vision" selected>' in page
    assert f'"{VL}": "vision"' in page and f'"{QWEN}": "text"' in page  # the map for the JS
    # Draft model, prompt cache, …: marked text-only, hidden for vision; the rest shown.
    assert '<div class="field" id="field-draft_model_id" data-chat-only data-text-only hidden>' in (
        page
    )
    assert '<div class="field" id="field-kv_bits" data-chat-only>' in page
    page = member_client.get(reverse("servers:profile-create"), {"model": QWEN}).text
    assert '<option value="text" selected>' in page
    assert '<div class="field" id="field-draft_model_id" data-chat-only data-text-only>' in page


def test_a_vision_profile_with_a_draft_model_is_refused(member, vl_and_text_on_disk):
    data = valid_data(model_id=VL, engine="vision", draft_model_id=QWEN)
    form = ServerProfileForm(data, user=member)
    assert not form.is_valid()
    assert "draft model is for text profiles" in form.errors["draft_model_id"][0]
    form = ServerProfileForm({**data, "draft_model_id": ""}, user=member)
    assert form.is_valid(), form.errors
    assert form.save(commit=False).engine == "vision"


def test_no_engine_given_means_the_one_that_fits_the_model(member, vl_and_text_on_disk):
    for model, engine in ((VL, "vision"), (QWEN, "text")):
        form = ServerProfileForm(valid_data(model_id=model), user=member)
        assert form.is_valid(), form.errors
        assert form.cleaned_data["engine"] == engine


def test_serve_gives_a_vision_model_the_vision_engine(member_client, vl_and_text_on_disk):
    member_client.post(reverse("servers:serve"), {"repo_id": VL})
    member_client.post(reverse("servers:serve"), {"repo_id": QWEN})
    engines = dict(ServerProfile.objects.values_list("model_id", "engine"))
    assert engines == {VL: "vision", QWEN: "text"}
