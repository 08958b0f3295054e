"""The search page: whole page or HTMX partial from one view, a bookmarkable query, paging,
and every query parameter validated with a message (never a 500)."""

import re
from urllib.parse import parse_qs, urlsplit

import pytest

from models_catalog import catalog

pytestmark = pytest.mark.django_db


def result_ids(html: str) -> list[str]:
    return re.findall(r'data-repo-id="([^"]+)"', html)


def test_search_page_renders_results_and_the_nav_link(catalog_hub, member_client, host):
    response = member_client.get("/models/")
    assert response.status_code == 200
    html = response.text
    assert "<h1>Models</h1>" in html
    assert 'href="/models/"' in html  # the nav link
    assert len(result_ids(html)) == 25  # one Hub page (the fake Hub's page size)
    assert 'id="results"' in html and "<html" in html


def test_htmx_requests_get_only_the_results_partial(catalog_hub, member_client, host):
    response = member_client.get("/models/", {"q": "gemma"}, headers={"HX-Request": "true"})
    assert response.status_code == 200
    html = response.text
    assert html.lstrip().startswith('<section id="results"')
    assert "<html" not in html and "<h1>" not in html
    assert result_ids(html) and all("gemma" in r.lower() for r in result_ids(html))


def test_a_history_restore_gets_the_whole_page(catalog_hub, member_client, host):
    response = member_client.get(
        "/models/",
        {"q": "gemma"},
        headers={"HX-Request": "true", "HX-History-Restore-Request": "true"},
    )
    assert "<html" in response.text


def test_each_result_shows_size_downloads_likes_update_and_badges(catalog_hub, member_client, host):
    html = member_client.get("/models/", {"q": "Qwen3-32B-bf16"}).text
    row = html[html.index('data-repo-id="mlx-community/Qwen3-32B-bf16"') :]
    row = row[: row.index("</tr>")]
    assert "Qwen3-32B-bf16" in row and "by mlx-community" in row
    assert "≈ " in row  # no usedStorage: the size is an estimate
    assert "4.2K" in row  # downloads
    assert "2025-" in row  # last update
    for badge in ("Qwen", "16-bit", "40K ctx", "thinking", "won&#x27;t fit"):
        assert badge in row, badge
    assert 'title="The model takes about' in row  # the fit rule on hover


def test_the_whole_query_is_bookmarkable(catalog_hub, member_client, host):
    response = member_client.get(
        "/models/", {"q": "qwen", "sort": "likes", "cap": ["tools", "thinking"], "bits": "4"}
    )
    html = response.text
    assert 'value="qwen"' in html
    assert re.search(r'<option value="likes" selected>', html)
    assert re.search(r'value="tools"[^>]*checked', html)
    assert re.search(r'value="thinking"[^>]*checked', html)
    assert re.search(r'value="4"[^>]*checked', html)
    assert 'hx-push-url="true"' in html
    ids = result_ids(html)
    assert ids and all("qwen" in r.lower() for r in ids)


def test_next_page_keeps_the_query_and_carries_the_cursor(catalog_hub, member_client, host):
    catalog_hub.page_size = 10
    first = member_client.get("/models/", {"sort": "downloads", "cap": "tools"}).text
    next_url = re.search(r'<a href="([^"]+)"[^>]*rel="next"', first).group(1).replace("&amp;", "&")
    params = parse_qs(urlsplit(next_url).query)
    assert params["sort"] == ["downloads"] and params["cap"] == ["tools"]
    assert params["page"] == ["2"] and params["cursor"]
    second = member_client.get(next_url).text
    assert "Page 2" in second
    assert not set(result_ids(first)) & set(result_ids(second))
    assert "First page" in second


def test_the_count_is_of_this_page_not_a_total(catalog_hub, member_client, host):
    catalog_hub.page_size = 10
    first = member_client.get("/models/", {"sort": "downloads"}).text
    assert "10 models on this page; more on the next." in first
    catalog_hub.page_size = 100  # every model on one page: no "more"
    catalog.forget_listings()
    everything = member_client.get("/models/", {"sort": "downloads", "q": "gemma"}).text
    assert re.search(r"\d+ models? matching “gemma” on this page\.", everything)


def test_filters_are_honest_about_what_was_scanned(catalog_hub, member_client, host):
    html = member_client.get("/models/", {"family": "Gemma"}).text
    assert re.search(r"\d+ of \d+ models scanned on Hugging Face match the filters", html)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"sort": "bogus"}, "Unknown sort bogus: choose one of trending, downloads, likes, "),
        ({"family": "Nope"}, "Unknown family Nope: choose one of"),
        ({"bits": "7"}, "Unknown quantization 7: choose one of 2, 3, 4, 5, 6, 8, 16."),
        ({"cap": "telepathy"}, "Unknown capability telepathy: choose one of vision, tools, "),
        ({"fit": "maybe"}, "Unknown fit filter maybe: choose one of fits, runs."),
        ({"page": "abc", "cursor": "x"}, "The page must be a whole number"),
        ({"page": "0"}, "Pages start at 1."),
        ({"page": "2"}, "A page after the first needs its page link"),
        ({"page": "2", "cursor": "<script>"}, "That page link is damaged"),
        ({"q": "x" * 101}, "Search text is limited to 100 characters"),
        ({"q": "a\x01b"}, "cannot contain control characters"),
    ],
)  # fmt: skip
def test_bad_query_parameters_get_a_clear_message(
    catalog_hub, member_client, host, params, message
):
    response = member_client.get("/models/", params)
    assert response.status_code == 400
    assert message in response.text
    assert catalog_hub.count("GET", "/api/models") == 0  # nothing reached the Hub
    partial = member_client.get("/models/", params, headers={"HX-Request": "true"})
    assert partial.status_code == 200 and message in partial.text  # htmx swaps only 2xx


def test_no_results_says_so(catalog_hub, member_client, host):
    html = member_client.get("/models/", {"q": "no-such-model-anywhere"}).text
    assert "No MLX model matches “no-such-model-anywhere”" in html


@pytest.mark.parametrize(("platform", "says_gpu"), [("macOS Metal", True), ("Linux CPU", False)])
def test_the_fit_rule_speaks_of_the_gpus_share_only_for_a_mac(
    catalog_hub, member_client, host, platform, says_gpu
):
    host.platform = platform
    host.save(update_fields=["platform"])
    titles = re.findall(
        r'class="badge [a-z]* ?fit" title="([^"]+)"', member_client.get("/models/").text
    )
    assert titles
    assert all(("the share macOS lets the GPU use" in t) is says_gpu for t in titles)
