"""The model detail page: characteristics, files with sizes, a safely rendered README excerpt,
the fit on this host and the download action; repo ids validated before anything."""

import json

import pytest
from django.core.exceptions import ValidationError
from django.utils.html import escape

from models_catalog.markdown import readme_excerpt, render_markdown
from models_catalog.models import CatalogModel
from models_catalog.validators import validate_repo_id

pytestmark = pytest.mark.django_db

QWEN = "/models/hub/mlx-community/Qwen3-4B-4bit"


def test_detail_page_shows_everything_about_a_model(catalog_hub, member_client, host):
    response = member_client.get(QWEN)
    assert response.status_code == 200
    html = response.text
    for text in (
        "Qwen3-4B-4bit",
        "by <strong>mlx-community</strong>",
        "4-bit, group size 64",
        "40960 tokens (40K)",
        "config.json on Hugging Face",
        "config.json</code>",  # the files table
        "tokenizer_config.json</code>",
        "Model card",
        "converted to MLX format",
        'data-fit="fits"',
    ):
        assert text in html, text
    assert "models_catalog/_download_action.html" in [t.name for t in response.templates]
    assert escape(response.context["fit"].rule) in html  # the rule, shown on hover and below


def test_files_are_listed_with_sizes(catalog_hub, member_client, host):
    member_client.get("/models/hub/test-org/tiny-llama")
    model = CatalogModel.objects.get(repo_id="test-org/tiny-llama")
    names = {f["name"]: f["size"] for f in model.files}
    assert names["model.safetensors"] > 0 and "config.json" in names
    assert model.size_bytes == model.used_storage > 0


def test_a_repo_listing_no_weights_keeps_its_estimated_size(catalog_hub, member_client, host):
    # The fake Hub lists config files only for this repo, and no usedStorage: the size is the
    # parameters x bits estimate, and its page must not replace it with a few kilobytes.
    repo = "carol-experiments/zeta-7b-mlx"
    member_client.get("/models/", {"q": "zeta"})
    listed = CatalogModel.objects.get(repo_id=repo)
    assert listed.size_estimated and listed.size_bytes > 10**9
    member_client.get(f"/models/hub/{repo}")
    model = CatalogModel.objects.get(repo_id=repo)
    assert model.files and not any(f["name"].endswith(".safetensors") for f in model.files)
    assert (model.size_bytes, model.size_estimated) == (listed.size_bytes, True)


def test_on_disk_is_told_for_the_chosen_host(
    catalog_hub, member_client, host, settings, tiny_model
):
    from django.utils import timezone

    from models_catalog.models import Host
    from tests.models_catalog.conftest import GIB, put_in_local_cache

    repo = "test-org/tiny-llama"
    put_in_local_cache(settings.HF_HUB_CACHE, repo, tiny_model)
    Host.objects.create(
        name="beta", last_heartbeat=timezone.now(), memory_total=64 * GIB,
        local_models=[{"repo_id": repo, "size": 3 * GIB}],
    )  # fmt: skip
    Host.objects.create(name="gamma", last_heartbeat=timezone.now(), memory_total=64 * GIB)

    def on_disk(host_name: str) -> str:
        html = member_client.get(f"/models/hub/{repo}", {"host": host_name}).text
        line = html.split('data-testid="on-disk">', 1)[1:] or [""]
        return line[0].split("</p>")[0]

    here = on_disk(host.name)
    assert here.startswith("On disk: ") and here.endswith("in the Hugging Face cache.")
    assert "GB" not in here  # the tiny model, not beta's report
    assert on_disk("beta") == (
        "On disk: 3.0\xa0GB in beta's Hugging Face cache, as its worker last reported it."
    )
    assert on_disk("gamma") == ""  # not there: no line (it was this machine's before)


def test_a_second_visit_within_the_ttl_asks_the_hub_nothing(catalog_hub, member_client, host):
    member_client.get(QWEN)
    catalog_hub.reset()
    response = member_client.get(QWEN)
    assert response.status_code == 200
    assert catalog_hub.request_log == []


def test_a_search_result_then_its_page_reuses_the_stored_config(catalog_hub, member_client, host):
    member_client.get("/models/", {"q": "Qwen3-4B-4bit"})
    catalog_hub.reset()
    member_client.get(QWEN)
    paths = [p for _, p in catalog_hub.request_log]
    assert "/mlx-community/Qwen3-4B-4bit/resolve/main/config.json" not in paths
    assert "/mlx-community/Qwen3-4B-4bit/resolve/main/README.md" in paths


@pytest.mark.parametrize(
    "path",
    [
        "/models/hub/gpt2",
        "/models/hub/a/b/c",
        "/models/hub/../../etc/passwd",
        "/models/hub/a--b/c",
        "/models/hub/a/b%20c",
        "/models/hub/a/" + "n" * 100,
    ],
)
def test_invalid_repo_ids_are_404_with_the_reason(catalog_hub, member_client, host, path):
    response = member_client.get(path)
    assert response.status_code == 404
    assert "Not a model" in response.text
    with pytest.raises(ValidationError) as info:
        validate_repo_id(response.wsgi_request.resolver_match.kwargs["repo_id"])
    assert escape(info.value.messages[0]) in response.text  # the validator's own reason
    assert catalog_hub.request_log == []


def test_the_readme_is_rendered_safely(catalog_hub, member_client, host):
    card = (
        "---\nlicense: mit\ntags:\n- mlx\n---\n# Evil card\n\n<script>alert('x')</script>\n\n"
        "[click](javascript:alert(1)) <img src=x onerror=alert(1)> **bold**\n"
    )
    catalog_hub.add_files(
        "evil/card",
        {"README.md": card.encode(), "config.json": json.dumps({"model_type": "llama"}).encode()},
    )
    try:
        html = member_client.get("/models/hub/evil/card").text
    finally:
        catalog_hub.remove_repo("evil/card")
    readme = html[html.index('class="readme"') :]
    readme = readme[: readme.index("</article>")]
    assert "<strong>bold</strong>" in readme
    assert "<script>" not in readme and "<img" not in readme
    assert 'href="javascript' not in readme
    assert "license: mit" not in readme  # front matter dropped


def test_readme_excerpt_is_cut_at_a_paragraph_and_closes_code_blocks():
    text = "---\na: b\n---\n" + "\n\n".join(f"Paragraph {i} " + "x" * 300 for i in range(30))
    excerpt = readme_excerpt(text, limit=1000)
    assert excerpt.startswith("Paragraph 0") and excerpt.endswith("…")
    assert len(excerpt) <= 1005
    code = "intro\n\n```bash\n" + "echo hi\n" * 400 + "```\n"
    assert readme_excerpt(code, limit=500).count("```") % 2 == 0
    assert "<a" not in render_markdown("<a href='x'>raw html</a>")
    assert render_markdown("# Title\n\n###### Deep", heading_offset=2) == (
        "<h3>Title</h3>\n<h6>Deep</h6>\n"
    )


def test_a_gated_model_page_says_a_token_is_needed_for_its_files(catalog_hub, member_client, host):
    response = member_client.get("/models/hub/google/gemma-3-1b-it-qat-4bit")
    assert response.status_code == 200
    assert "gated" in response.text
    assert "needs a Hugging Face token, set by an admin" in response.text


def test_a_vision_model_on_disk_is_offered_as_a_vision_model(
    catalog_hub, member_client, host, settings, tiny_model_variant, tiny_model
):
    from tests.models_catalog.conftest import put_in_local_cache

    put_in_local_cache(settings.HF_HUB_CACHE, "test-org/tiny-vision", tiny_model_variant("vision"))
    put_in_local_cache(settings.HF_HUB_CACHE, "test-org/tiny-llama", tiny_model)
    vision = member_client.get("/models/hub/test-org/tiny-vision").text
    assert "Serve as vision model</button>" in vision
    text = member_client.get("/models/hub/test-org/tiny-llama").text
    assert ">Serve</button>" in text and "Serve as vision model" not in text
