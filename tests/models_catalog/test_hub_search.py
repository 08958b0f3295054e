"""Searching Hugging Face for MLX models through the real huggingface_hub client (fake Hub):
sort, text search, cursor pages, filters on characteristics, no config read twice, a page's
reads all at once (bounded), listings cached, rows written only when they change."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from models_catalog import catalog, hub
from models_catalog.catalog import Filters, SearchQuery
from models_catalog.models import CatalogModel
from tests.models_catalog.conftest import GIB, put_in_local_cache

pytestmark = pytest.mark.django_db

NOT_MLX = {
    "Qwen/Qwen2.5-7B-Instruct",
    "deepseek-ai/DeepSeek-V3",
    "google/gemma-3-27b-it",
    "TheBloke/Llama-2-7B-Chat-GGUF",
}


def search(**kwargs) -> catalog.SearchResults:
    return catalog.search(SearchQuery(**kwargs), 32 * GIB)


def ids(results) -> list[str]:
    return [m.repo_id for m in results.models]


def config_reads(hub) -> int:
    return sum(1 for method, path in hub.request_log if path.endswith("/config.json"))


def test_search_lists_mlx_models_of_every_author(catalog_hub):
    results = search(sort="downloads")
    assert results.error is None
    found = ids(results)
    assert found and not set(found) & NOT_MLX
    authors = {m.author for m in results.models}
    assert {"mlx-community", "lmstudio-community"} <= authors
    assert len(authors) >= 3
    listing = next(r for r in catalog_hub.records if r.path == "/api/models")
    assert listing.query["filter"] == ["mlx"]
    assert "usedStorage" in listing.query["expand"] and "safetensors" in listing.query["expand"]


@pytest.mark.parametrize(
    ("sort", "field"),
    [("downloads", "downloads"), ("likes", "likes"), ("trending", "trending_score")],
)
def test_results_are_sorted_descending(catalog_hub, sort, field):
    values = [getattr(m, field) for m in search(sort=sort).models]
    assert values == sorted(values, reverse=True) and values[0] > values[-1]


def test_recently_updated_sort(catalog_hub):
    dates = [m.last_modified for m in search(sort="updated").models]
    assert dates == sorted(dates, reverse=True)


def test_text_search_narrows_results(catalog_hub):
    found = ids(search(text="qwen3"))
    assert found and all("qwen3" in repo_id.lower() for repo_id in found)


def test_pages_follow_the_hub_cursor_to_the_end(catalog_hub):
    catalog_hub.page_size = 10
    seen, cursor, pages = [], "", 0
    while True:
        results = search(sort="downloads", cursor=cursor)
        assert results.error is None
        seen += ids(results)
        pages += 1
        if not results.next_cursor:
            break
        cursor = results.next_cursor
    assert len(seen) == len(set(seen)) > 40  # every MLX repo once, nothing skipped
    assert pages == -(-len(seen) // 10)
    assert not set(seen) & NOT_MLX


def test_characteristics_are_read_and_stored(catalog_hub):
    for text in ("mlx-community/Qwen3-4B", "gemma-3-4b", "Qwen3-32B", "zeta", "R1-0528"):
        search(text=text)
    qwen = CatalogModel.objects.get(repo_id="mlx-community/Qwen3-4B-4bit")
    assert (qwen.family, qwen.quant_bits, qwen.quant_group_size) == ("Qwen", 4, 64)
    assert abs(qwen.parameters - 4_020_000_000) < 100 and not qwen.parameters_estimated
    assert qwen.context_length == 40960
    assert (qwen.tools, qwen.thinking, qwen.vision) == (True, True, False)
    assert qwen.size_bytes and not qwen.size_estimated  # usedStorage
    assert qwen.config["model_type"] == "qwen3" and qwen.config_source == "hub"

    gemma = CatalogModel.objects.get(repo_id="mlx-community/gemma-3-4b-it-4bit")
    assert gemma.vision and gemma.family == "Gemma" and gemma.context_length == 131072

    no_storage = CatalogModel.objects.get(repo_id="mlx-community/Qwen3-32B-bf16")
    assert no_storage.size_estimated  # no usedStorage: parameters x bits / 8
    assert no_storage.size_bytes == 2 * no_storage.parameters

    unknown = CatalogModel.objects.get(repo_id="carol-experiments/zeta-7b-mlx")
    assert unknown.family == "zeta_lm"  # not in the table: the raw model_type

    r1 = CatalogModel.objects.get(repo_id="mlx-community/DeepSeek-R1-0528-3bit")
    assert (r1.family, r1.thinking, r1.quant_bits) == ("DeepSeek", True, 3)


def file_reads(hub) -> int:
    return sum(1 for method, path in hub.request_log if "/resolve/" in path)


def writes(queries) -> list[str]:
    return [q["sql"] for q in queries if q["sql"].split()[0] in ("INSERT", "UPDATE", "DELETE")]


def test_a_second_search_reads_no_config_again(catalog_hub, settings):
    settings.CATALOG_LISTING_TTL = 0  # the listing is asked again: only the listing
    first = search(sort="downloads")
    assert config_reads(catalog_hub) == len(first.models)
    # The Hub's short config already carries the chat template: no tokenizer_config.json.
    assert not any(p.endswith("tokenizer_config.json") for _, p in catalog_hub.request_log)
    catalog_hub.reset()
    second = search(sort="downloads")
    assert ids(second) == ids(first)
    assert catalog_hub.request_log == [("GET", "/api/models")]


def test_overlapping_pages_read_only_the_new_configs(catalog_hub):
    first = set(ids(search(text="qwen")))
    catalog_hub.reset()
    second = set(ids(search(sort="downloads")))
    assert config_reads(catalog_hub) == len(second - first)


def test_a_repeated_search_within_the_ttl_asks_the_hub_nothing(catalog_hub):
    first = search(text="qwen", sort="likes")
    catalog_hub.reset()
    again = search(text="qwen", sort="likes")
    assert catalog_hub.request_log == []  # neither the listing nor any file
    assert ids(again) == ids(first)
    assert [m.family for m in again.models] == [m.family for m in first.models]
    # Every search parameter is part of the key: another sort, text or page asks the Hub.
    search(text="qwen", sort="downloads")
    search(text="gemma", sort="likes")
    assert catalog_hub.count("GET", "/api/models") == 2
    catalog_hub.page_size = 5
    page_one = search(text="qwen", sort="downloads")  # cached: still the 25-model page
    assert catalog_hub.count("GET", "/api/models") == 2 and len(page_one.models) > 5
    catalog.forget_listings()  # as when the TTL ran out
    page_one = search(text="qwen", sort="downloads")
    page_two = search(text="qwen", sort="downloads", cursor=page_one.next_cursor)
    assert catalog_hub.count("GET", "/api/models") == 4
    assert not set(ids(page_two)) & set(ids(page_one))


def test_a_cached_listing_still_stores_rows_deleted_since(catalog_hub):
    first = search(text="gemma")
    CatalogModel.objects.all().delete()
    catalog_hub.reset()
    again = search(text="gemma")
    assert catalog_hub.count("GET", "/api/models") == 0  # the listing came from the cache
    assert ids(again) == ids(first)
    assert CatalogModel.objects.filter(repo_id__in=ids(first)).count() == len(first.models)
    assert config_reads(catalog_hub) == len(first.models)  # their configs were read again


def test_a_cold_page_reads_all_its_files_at_once(catalog_hub):
    # The fake Hub holds each file request until 25 are in flight (the page's size): a client
    # reading them a few at a time would leave it short.
    catalog_hub.hold_files_until = 25
    results = search(sort="downloads")
    assert len(results.models) == 25 and results.pending_configs == 0
    assert config_reads(catalog_hub) == 25
    assert catalog_hub.max_files_in_flight == file_reads(catalog_hub)


def test_config_reads_are_bounded_by_the_pool(catalog_hub, settings):
    settings.CATALOG_FETCH_WORKERS = 3
    catalog_hub.hold_files_until = 3  # the first reads wait for each other: proven concurrent
    catalog_hub.latency = 0.05
    results = search(text="mlx-community/Qwen")
    assert len(results.models) >= 6
    assert config_reads(catalog_hub) == len(results.models)
    assert catalog_hub.max_files_in_flight == 3  # several at once, never more than the pool


def test_reads_still_running_at_the_deadline_are_picked_up_by_a_later_page(catalog_hub, settings):
    catalog_hub.latency = 0.5  # every answer, the listing's too
    settings.CATALOG_CONFIG_DEADLINE = 0.05
    first = search(text="gemma")
    assert first.models and first.pending_configs == len(first.models)
    assert not any(m.config for m in first.models)
    again = search(text="gemma")  # the listing is cached; the same reads are still running
    assert again.pending_configs == len(first.models)
    settings.CATALOG_CONFIG_DEADLINE = 20.0
    done = search(text="gemma")
    assert done.pending_configs == 0
    assert all(m.config or m.config_error for m in done.models)  # read, or refused (gated)
    stored = CatalogModel.objects.filter(repo_id__in=ids(first))
    assert stored.exclude(config=None, config_error="").count() == len(first.models)
    # One read per model, however many pages waited for it.
    assert config_reads(catalog_hub) == len(first.models)


def test_rows_are_written_only_when_the_hub_facts_change(catalog_hub, settings):
    settings.CATALOG_LISTING_TTL = 0  # every search asks the Hub
    first = search(sort="likes")
    stamps = dict(CatalogModel.objects.values_list("repo_id", "updated_at"))
    with CaptureQueriesContext(connection) as same:
        again = search(sort="likes")
    assert catalog_hub.count("GET", "/api/models") == 2
    assert ids(again) == ids(first)
    assert writes(same.captured_queries) == []
    assert dict(CatalogModel.objects.values_list("repo_id", "updated_at")) == stamps

    repo = catalog_hub.repos[ids(first)[3]]
    likes = repo.meta.get("likes")
    repo.meta["likes"] = (likes or 0) + 1  # the session's fake Hub: restored below
    try:
        with CaptureQueriesContext(connection) as changed:
            search(sort="likes")
    finally:
        repo.meta["likes"] = likes
    sql = writes(changed.captured_queries)
    assert len(sql) == 1 and sql[0].startswith("UPDATE")
    assert '"likes"' in sql[0] and '"config"' not in sql[0]  # only what changed
    now = dict(CatalogModel.objects.values_list("repo_id", "updated_at"))
    assert {r for r in now if now[r] != stamps[r]} == {repo.repo_id}
    assert CatalogModel.objects.get(repo_id=repo.repo_id).likes == (likes or 0) + 1


def test_a_cold_page_returns_its_new_rows_saved_and_reads_back_only_their_ids(catalog_hub):
    with CaptureQueriesContext(connection) as cold:
        results = search(sort="downloads")
    stored = {m.repo_id: m for m in CatalogModel.objects.filter(repo_id__in=ids(results))}
    assert len(stored) == len(results.models) > 0
    for model in results.models:
        assert model.pk == stored[model.repo_id].pk and not model._state.adding
        assert (model.family, model.parameters) == (
            stored[model.repo_id].family,
            stored[model.repo_id].parameters,
        )
    sql = [q["sql"] for q in cold.captured_queries]
    insert = next(i for i, q in enumerate(sql) if 'INTO "models_catalog_catalogmodel"' in q)
    read_back = next(q for q in sql[insert + 1 :] if q.startswith("SELECT"))
    assert read_back.split(" FROM ")[0].count(",") == 1  # repo_id and id, not ~30 columns

    # A returned row is a saved row: changing it updates, never inserts a second one.
    first = results.models[0]
    first.likes += 1
    first.save(update_fields=["likes"])
    assert CatalogModel.objects.filter(repo_id=first.repo_id).count() == 1


def test_a_row_stored_first_by_another_request_keeps_its_id():
    mine = CatalogModel(repo_id="someone/raced-model", likes=3)
    theirs = CatalogModel.objects.create(repo_id="someone/raced-model", likes=2)
    (saved,) = catalog.save_rows([mine], {"someone/raced-model": {"likes"}})
    assert saved.pk == theirs.pk
    assert CatalogModel.objects.filter(repo_id="someone/raced-model").count() == 1
    saved.save(update_fields=["likes"])
    assert CatalogModel.objects.get(pk=theirs.pk).likes == 3


def test_a_rate_limit_stops_the_reads_and_they_resume_later(catalog_hub, settings):
    settings.CATALOG_FETCH_WORKERS = 2
    catalog_hub.fail_status, catalog_hub.fail_scope, catalog_hub.retry_after = 429, "files", 30
    results = search(sort="downloads")
    assert len(results.models) == 25
    # The first reads met the 429; every read after them was not even sent.
    assert 1 <= file_reads(catalog_hub) <= 2
    assert isinstance(results.error, hub.HubRateLimited) and not results.offline
    assert "rate-limiting this portal: try again in 30 seconds" in results.error.message
    stored = CatalogModel.objects.filter(repo_id__in=ids(results))
    assert not any(m.config_error or m.config for m in stored)  # not failures: read later
    # While the window is open no Hub call is made: a new search answers from what is stored.
    offline = search(sort="likes")
    assert catalog_hub.count("GET", "/api/models") == 1
    assert isinstance(offline.error, hub.HubRateLimited) and offline.offline

    catalog_hub.reset()  # the Hub recovers; the request log starts again
    hub.forget_rate_limit()  # as when the 30 seconds are over
    later = search(sort="downloads")
    assert later.error is None and later.pending_configs == 0
    assert catalog_hub.count("GET", "/api/models") == 0  # the listing is still cached
    assert config_reads(catalog_hub) == 25
    assert all(m.config for m in later.models if not m.gated)


def test_config_is_read_from_the_local_cache_first(catalog_hub, settings, tiny_model):
    put_in_local_cache(settings.HF_HUB_CACHE, "test-org/tiny-llama", tiny_model)
    search(text="tiny-llama")
    model = CatalogModel.objects.get(repo_id="test-org/tiny-llama")
    assert model.config_source == "local"
    assert model.config["model_type"] == "llama"
    assert ("GET", "/test-org/tiny-llama/resolve/main/config.json") not in catalog_hub.request_log
    other = CatalogModel.objects.get(repo_id="test-org/tiny-llama-4bit")
    assert other.config_source == "hub"


def test_tiny_models_characteristics(catalog_hub):
    search(text="test-org")
    vision = CatalogModel.objects.get(repo_id="test-org/tiny-vision")
    thinking = CatalogModel.objects.get(repo_id="test-org/tiny-thinking")
    quantized = CatalogModel.objects.get(repo_id="test-org/tiny-llama-4bit")
    assert vision.vision and not vision.thinking
    assert thinking.thinking
    assert (quantized.quant_bits, quantized.quant_group_size) == (4, 64)


def test_a_gated_config_is_remembered_as_an_error_not_refetched(catalog_hub):
    search(text="gemma-3-1b-it-qat")
    gated = CatalogModel.objects.get(repo_id="google/gemma-3-1b-it-qat-4bit")
    assert gated.gated == "manual"
    assert "needs a Hugging Face token, set by an admin" in gated.config_error
    # The listing's short config still gives family and quantization.
    assert (gated.family, gated.quant_bits) == ("Gemma", 4)
    catalog_hub.reset()
    search(text="gemma-3-1b-it-qat")
    assert config_reads(catalog_hub) == 0


@pytest.mark.parametrize(
    ("filters", "check"),
    [
        (Filters(families=frozenset({"Gemma"})), lambda m: m.family == "Gemma"),
        (
            Filters(families=frozenset({"Gemma", "Phi"})),
            lambda m: m.family in ("Gemma", "Phi"),
        ),
        (Filters(capabilities=frozenset({"vision"})), lambda m: m.vision),
        (
            Filters(capabilities=frozenset({"tools", "thinking"})),
            lambda m: m.tools and m.thinking,
        ),
        (Filters(bits=frozenset({8})), lambda m: m.quant_bits == 8),
        (Filters(bits=frozenset({16})), lambda m: m.quant_bits >= 16),
        (
            Filters(families=frozenset({"Qwen"}), capabilities=frozenset({"vision"})),
            lambda m: m.family == "Qwen" and m.vision,
        ),
        (Filters(fit="fits"), lambda m: m.size_bytes <= 0.6 * 32 * GIB),
        (Filters(fit="runs"), lambda m: m.size_bytes <= 0.75 * 32 * GIB),
        (Filters(families=frozenset({"Other"})), lambda m: m.family in ("zeta_lm",)),
    ],
)
def test_filters_on_characteristics(catalog_hub, filters, check):
    catalog_hub.page_size = 100
    results = search(sort="downloads", filters=filters)
    assert results.models, filters
    assert all(check(m) for m in results.models)


def test_filters_combine_with_the_text_search(catalog_hub):
    results = search(text="qwen3", filters=Filters(bits=frozenset({8})))
    found = ids(results)
    assert found and all("qwen3" in r.lower() for r in found)
    assert all(m.quant_bits == 8 for m in results.models)


def test_a_filtered_page_scans_further_hub_pages(catalog_hub):
    catalog_hub.page_size = 10
    results = search(sort="downloads", filters=Filters(families=frozenset({"Gemma"})))
    assert results.hub_pages > 1
    assert results.scanned == 10 * results.hub_pages or not results.next_cursor
    assert all(m.family == "Gemma" for m in results.models)


def test_a_filtered_scan_stops_at_the_bound_and_says_so(catalog_hub, settings):
    settings.CATALOG_MAX_HUB_PAGES = 2
    catalog_hub.page_size = 5
    results = search(sort="downloads", filters=Filters(families=frozenset({"OLMo"})))
    assert results.hub_pages == 2 and results.scanned == 10
    assert results.stopped_at_bound and results.next_cursor
    # The next page carries on where the scan stopped.
    more = search(
        sort="downloads", filters=Filters(families=frozenset({"OLMo"})), cursor=results.next_cursor
    )
    assert more.scanned == 10 and not set(ids(more)) & set(ids(results))
