"""Hostile Hub metadata: the fake Hub serves `config.json`s, chat templates and model facts with
NaN, Infinity, 1e309, wrong types, huge numbers, huge strings and deep nesting — as any repo's
author could — and search, the model page and downloads never answer 500. A row stored with
values no page expects (before the cleaning existed) never fails a page either.

Through the real huggingface_hub client over HTTP; generated cases by hypothesis (few examples
each: every example is a few real requests)."""

import itertools
import json

import pytest
from django.db import connection
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from models_catalog import downloads
from models_catalog.models import CatalogModel, Download
from tests.models_catalog.conftest import put_in_local_cache
from tests.support.fake_hub import RawJSON

pytestmark = pytest.mark.django_db(transaction=True)

S = Download.State
README = b"---\nlibrary_name: mlx\ntags: [mlx]\n---\n# A model\n\nConverted to MLX.\n"
DEEP_TO_PARSE = "[" * 200_000 + "]" * 200_000  # beyond what any JSON parser here reads
DEEP = "[" * 3000 + "]" * 3000
HUGE_STRING = '"' + "x" * 300_000 + '"'
_names = itertools.count()


@pytest.fixture
def evil(catalog_hub, host, settings):
    """The fake Hub, ready for hostile repos (removed again afterwards, since the Hub outlives
    the test)."""
    settings.CATALOG_DETAIL_TTL = 0
    yield catalog_hub
    for repo_id in [r for r in catalog_hub.repos if r.startswith("evil-org/")]:
        catalog_hub.remove_repo(repo_id)


def serve(hub, config: bytes, *, tokenizer: bytes | None = None, meta=None, readme=README) -> str:
    """A new MLX repo whose files and Hub facts are exactly these (bytes and RawJSON)."""
    repo_id = f"evil-org/hostile-{next(_names)}-mlx"
    files = {"config.json": config, "README.md": readme}
    if tokenizer is not None:
        files["tokenizer_config.json"] = tokenizer
    hub.add_files(repo_id, files, meta=meta or {})
    return repo_id


def obj(fields: dict[str, str]) -> str:
    """A JSON object written from raw JSON texts (so `1e309` stays `1e309`)."""
    return "{" + ", ".join(f"{json.dumps(k)}: {v}" for k, v in fields.items()) + "}"


def search_page(client, repo_id: str, q: str = ""):
    response = client.get("/models/", {"q": q or repo_id.split("/")[1]})
    assert response.status_code == 200
    return response


def model_page(client, repo_id: str):
    response = client.get(f"/models/hub/{repo_id}")
    assert response.status_code == 200, response.text[:400]
    assert repo_id in response.text
    return response


# --- the case, and each way in ------------------------------------------------------------


def test_an_infinite_context_length_breaks_neither_the_model_page_nor_search(evil, member_client):
    config = b'{"model_type": "llama", "max_position_embeddings": 1e309, "hidden_size": 64}'
    repo_id = serve(evil, config)

    page = model_page(member_client, repo_id)
    assert "Context length</dt><dd>unknown" in page.text
    model = CatalogModel.objects.get(repo_id=repo_id)
    assert model.config == {
        "model_type": "llama",
        "max_position_embeddings": None,
        "hidden_size": 64,
    }
    assert model.family == "Llama" and model.context_length is None

    for _ in range(2):  # and every search listing it, not only the first
        assert f'data-repo-id="{repo_id}"' in search_page(member_client, repo_id).text


def test_hostile_facts_in_the_listing_and_the_model_info_are_cleaned(evil, member_client):
    meta = {
        "usedStorage": RawJSON("1e400"),
        "downloads": RawJSON('"lots"'),
        "likes": RawJSON("3000000000"),  # beyond a PostgreSQL integer
        "trendingScore": RawJSON("NaN"),
        "lastModified": RawJSON('"0001-01-01T00:00:00.000Z"'),
        "tags": RawJSON('["mlx", 4, null, "a\\u0000b", {"x": -Infinity}]'),
        "safetensors": RawJSON('{"parameters": {"U32": 1e309, "BF16": "many"}, "total": NaN}'),
        "config": RawJSON('{"model_type": 7, "tokenizer_config": {"chat_template": ' + DEEP + "}}"),
        "siblings": RawJSON('[{"rfilename": "config.json", "size": -Infinity}, 42]'),
        "author": RawJSON('"' + "a" * 5000 + '"'),
        "cardData": RawJSON('{"license": NaN}'),
    }
    repo_id = serve(evil, b'{"model_type": "qwen3", "hidden_size": 1e400}', meta=meta)

    assert f'data-repo-id="{repo_id}"' in search_page(member_client, repo_id).text
    model_page(member_client, repo_id)
    model = CatalogModel.objects.get(repo_id=repo_id)
    assert (model.downloads, model.likes, model.trending_score, model.last_modified) == (
        0, 0, 0, None,
    )  # fmt: skip
    assert model.tags == ["mlx", "ab"] and model.author == "a" * 96
    assert model.safetensors_parameters is None and model.used_storage is None
    assert model.files == [{"name": "config.json", "size": None}]
    assert model.family == "Qwen"  # from config.json; the short config's model_type is no text


def test_a_readme_with_nul_bytes_and_broken_utf8_is_shown_without_them(evil, member_client):
    readme = README + b"Fast\x00 and \xff\xfe small.\n\n" + b"> " * 5000 + b"deep quote\n"
    repo_id = serve(evil, b'{"model_type": "llama"}', readme=readme)
    page = model_page(member_client, repo_id)
    model = CatalogModel.objects.get(repo_id=repo_id)
    assert "\x00" not in model.readme_excerpt and "Fast and \ufffd\ufffd small." in page.text


def test_a_chat_template_of_the_wrong_shape_is_ignored(evil, member_client):
    repo_id = serve(
        evil,
        b'{"model_type": "llama"}',
        tokenizer=b'{"chat_template": {"nested": [NaN, "tools"]}, "eos_token": 1e309}',
        meta={"config": RawJSON('{"model_type": "llama"}')},  # no template in the listing
    )
    search_page(member_client, repo_id)
    model = CatalogModel.objects.get(repo_id=repo_id)
    assert model.config_error == "" and model.chat_template == "" and not model.tools


@pytest.mark.parametrize(
    ("config", "why"),
    [
        (b"NaN", "is not a JSON object"),
        (b"[1, 2]", "is not a JSON object"),
        (b"{not json", "it is not valid JSON"),
        (DEEP_TO_PARSE.encode(), "it is nested too deeply to read"),
        (b'{"pad": "' + b"x" * (9 << 20) + b'"}', "is larger than 8,192 KiB"),
    ],
    ids=["nan", "a list", "not json", "too deep to read", "larger than 8 MiB"],
)
def test_a_config_that_is_no_json_object_is_explained(evil, member_client, config, why):
    repo_id = serve(evil, config)
    page = model_page(member_client, repo_id)
    model = CatalogModel.objects.get(repo_id=repo_id)
    assert model.config is None and model.config_error.startswith("config.json of ")
    assert why in model.config_error
    assert model.config_error in page.text.replace("&#x27;", "'")


def test_a_local_config_written_outside_the_portal_is_read_clean(
    evil, member_client, settings, tmp_path
):
    """A model downloaded outside the portal: its config.json is read from the disk."""
    source = tmp_path / "outside"
    source.mkdir()
    (source / "config.json").write_text(
        '{"model_type": "mistral", "max_position_embeddings": Infinity, "vocab_size": NaN,'
        ' "deep": ' + DEEP + ', "note": "a\\u0000b"}'
    )
    (source / "tokenizer_config.json").write_text('{"chat_template": ' + DEEP_TO_PARSE + "}")
    repo_id = "evil-org/outside-mlx"
    put_in_local_cache(settings.HF_HUB_CACHE, repo_id, source)

    model_page(member_client, repo_id)  # not on the Hub: read from the disk alone
    model = CatalogModel.objects.get(repo_id=repo_id)
    assert model.config_source == "local" and model.family == "Mistral"
    assert model.config["max_position_embeddings"] is None and model.config["note"] == "ab"
    assert model.context_length is None


def test_a_search_page_too_deep_to_read_shows_the_stored_models_and_says_why(evil, member_client):
    repo_id = serve(evil, b'{"model_type": "llama"}')
    search_page(member_client, repo_id)  # stored
    evil.repos[repo_id].meta["cardData"] = RawJSON(DEEP_TO_PARSE)
    evil.repos[repo_id].meta["tags"] = RawJSON(DEEP_TO_PARSE, value=["mlx"])
    # Another search text, so the listing is not read back from the cache.
    page = search_page(member_client, repo_id, q=repo_id.split("/")[1].removesuffix("-mlx"))
    assert 'data-hub-error="bad_data"' in page.text and "nested too deeply" in page.text
    assert f'data-repo-id="{repo_id}"' in page.text  # what the portal already knew


# --- rows stored before the fix -------------------------------------------------------------------

BAD_JSON = {
    "config": '{"max_position_embeddings": 1e309, "hidden_size": 123456789012345678901234567890,'
    ' "num_hidden_layers": 1e300, "vocab_size": 4,'
    ' "quantization": {"bits": 1e10, "group_size": -1}}',
    "api_config": "[1, 2, 3]",
    "safetensors_parameters": '{"U32": 1e300, "BF16": "x"}',
    "tags": '{"not": "a list"}',
    "files": '[{"name": "model.safetensors", "size": 1e300}, 5, {"name": {"x": 1}}]',
}
EXTREMES = {  # the largest values each column holds on PostgreSQL
    "downloads": 2**63 - 1,
    "likes": 2**31 - 1,
    "trending_score": -(2**31),
    "used_storage": 2**63 - 1,
    "size_bytes": 2**63 - 1,
    "parameters": 2**63 - 1,
    "quant_bits": 32767,
    "quant_group_size": 32767,
    "context_length": 2**31 - 1,
    "author": "x" * 96,
    "model_type": "m" * 64,
    "family": "f" * 64,
}


def store_bad_row(repo_id: str, sha: str) -> None:
    CatalogModel.objects.create(repo_id=repo_id, sha=sha, config_sha=sha, **EXTREMES)
    table = CatalogModel._meta.db_table
    cast = "CAST(%s AS jsonb)" if connection.vendor == "postgresql" else "%s"
    with connection.cursor() as cursor:
        for column, value in BAD_JSON.items():
            cursor.execute(
                f"UPDATE {table} SET {column} = {cast}, listed_at = %s WHERE repo_id = %s",
                [value, "2025-06-01 12:00:00+00:00", repo_id],
            )


def test_a_row_stored_with_bad_values_never_fails_a_page(evil, member_client):
    repo_id = serve(evil, b'{"model_type": "llama"}')
    store_bad_row(repo_id, evil.repos[repo_id].sha)

    evil.fail_status = 503  # the Hub is down: search answers from the stored rows
    page = search_page(member_client, repo_id)
    assert f'data-repo-id="{repo_id}"' in page.text and "server error (503)" in page.text
    page = model_page(member_client, repo_id)
    assert "Showing what the portal stored" in page.text

    evil.fail_status = None  # the Hub is back: the listing merges into the bad row
    assert f'data-repo-id="{repo_id}"' in search_page(member_client, repo_id).text
    model_page(member_client, repo_id)
    model = CatalogModel.objects.get(repo_id=repo_id)
    assert model.context_length is None or model.context_length < 2**31 - 1
    assert model.parameters is None or model.parameters < 2**63 - 1


# --- generated hostile repos ----------------------------------------------------------------------

HOSTILE = [
    "1e309", "-1e309", "1e400", "NaN", "Infinity", "-Infinity", "-1", "0", "1e18", "4.5",
    "9223372036854775808", "123456789012345678901234567890", '"4"', '"sixteen"', "true", "null",
    "[]", "{}", '"\\u0000"', '"\\ud800"', '"2025-13-45T00:00:00Z"', '"9999-12-31T23:59:59.999Z"',
    DEEP, HUGE_STRING,
]  # fmt: skip
VALUES = st.one_of(
    st.sampled_from(HOSTILE),
    st.integers().map(str),
    st.floats().map(json.dumps),  # NaN, Infinity, -Infinity among them
    st.text(max_size=12).map(json.dumps),
)
CONFIG_KEYS = [
    "model_type", "architectures", "max_position_embeddings", "hidden_size",
    "num_hidden_layers", "vocab_size", "num_attention_heads", "intermediate_size",
    "num_local_experts", "quantization", "text_config", "vision_config", "torch_dtype",
    "tie_word_embeddings",
]  # fmt: skip
CONFIGS = st.one_of(
    st.dictionaries(st.sampled_from(CONFIG_KEYS), VALUES, max_size=6).map(obj),
    st.tuples(VALUES, VALUES, VALUES).map(
        lambda v: obj({"model_type": '"llama"', "max_position_embeddings": v[0],
                       "quantization": obj({"bits": v[1], "group_size": v[2]})})
    ),
    st.sampled_from(["NaN", "[]", '"config"', "{", DEEP_TO_PARSE]),
)  # fmt: skip
TOKENIZERS = st.one_of(st.none(), VALUES.map(lambda v: obj({"chat_template": v})))


def _raw(strategy, value=None):
    return strategy.map(lambda text: RawJSON(text, value=value))


SAFETENSORS = st.tuples(VALUES, VALUES, VALUES).map(
    lambda v: f'{{"parameters": {{"U32": {v[0]}, "BF16": {v[1]}}}, "total": {v[2]}}}'
)
SHORT_CONFIG = st.tuples(VALUES, VALUES).map(
    lambda v: f'{{"model_type": {v[0]}, "tokenizer_config": {{"chat_template": {v[1]}}}}}'
)
SIBLINGS = VALUES.map(lambda v: f'[{{"rfilename": "config.json", "size": {v}}}]')
META = st.fixed_dictionaries(
    {},
    optional={
        "usedStorage": _raw(VALUES),
        "downloads": _raw(VALUES),
        "likes": _raw(VALUES),
        "trendingScore": _raw(VALUES),
        "lastModified": _raw(VALUES),
        "author": _raw(VALUES),
        "pipeline_tag": _raw(VALUES),
        "library_name": _raw(VALUES, value="mlx"),  # still found by filter=mlx
        "gated": _raw(st.one_of(VALUES, st.sampled_from(['"auto"', '"manual"', "false"]))),
        "sha": _raw(VALUES),
        "cardData": _raw(VALUES),
        "tags": _raw(st.one_of(VALUES, VALUES.map(lambda v: f'["mlx", {v}]'))),
        "safetensors": _raw(st.one_of(VALUES, SAFETENSORS)),
        "config": _raw(st.one_of(VALUES, SHORT_CONFIG)),
        "siblings": _raw(st.one_of(VALUES, SIBLINGS)),
    },
)
HYPOTHESIS = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@HYPOTHESIS
@given(config=CONFIGS, tokenizer=TOKENIZERS, meta=META)
def test_search_and_the_model_page_never_fail_on_hostile_metadata(
    evil, member_client, config, tokenizer, meta
):
    repo_id = serve(evil, config.encode(), tokenizer=tokenizer and tokenizer.encode(), meta=meta)
    assert f'data-repo-id="{repo_id}"' in search_page(member_client, repo_id).text
    model_page(member_client, repo_id)
    search_page(member_client, repo_id)  # the stored row, read back


@settings(HYPOTHESIS, max_examples=12)
@given(config=CONFIGS, meta=META)
def test_downloads_of_hostile_repos_never_fail_a_page(evil, member_client, config, meta):
    repo_id = serve(evil, config.encode(), meta=meta)
    response = member_client.post(
        "/models/downloads/start/", {"repo_id": repo_id, "fragment": "action"}
    )
    assert response.status_code == 200
    download = Download.objects.filter(repo_id=repo_id).first()
    if download is None:  # refused before anything started: the action says why
        event("download refused")
        assert 'role="alert"' in response.text
    else:
        outcome = downloads.run_download(download.pk)
        download.refresh_from_db()
        event(f"download {download.state}")
        assert download.state in (S.COMPLETED, S.FAILED), outcome
        assert download.state == S.COMPLETED or download.error
    assert member_client.get("/models/downloads/").status_code == 200
    model_page(member_client, repo_id)  # from the local copy when the download completed
    search_page(member_client, repo_id)
