"""A member searches the catalog, filters on a badge and opens a model, in a real browser."""

import re

import pytest

from models_catalog.models import Host

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def rows(page):
    return page.locator("#results tbody tr")


def test_search_filter_and_open_a_model(member_page, hub_settings, screenshot):
    # This machine's worker has reported its memory, as it does within seconds of `make run`
    # (pages never measure the host: the "fits" column needs the worker's figures).
    Host.objects.this_machine().record_heartbeat()
    page = member_page
    page.goto("/models/")
    page.get_by_role("heading", name="Models").wait_for()
    assert rows(page).count() > 10

    # Typing searches after a short pause; the URL keeps the query.
    page.get_by_placeholder("Search MLX models").press_sequentially("qwen", delay=30)
    page.wait_for_url(re.compile(r"q=qwen"))
    page.wait_for_function(
        "() => [...document.querySelectorAll('#results tbody tr')].length > 0 &&"
        " [...document.querySelectorAll('#results tbody tr')]"
        ".every(r => r.dataset.repoId.toLowerCase().includes('qwen'))"
    )

    # A capability badge filters the results (AND with the text).
    page.locator("label.chip", has_text="Thinking").click()
    page.wait_for_url(re.compile(r"cap=thinking"))
    page.wait_for_function(
        "() => [...document.querySelectorAll('#results tbody tr')].length > 0 &&"
        " [...document.querySelectorAll('#results tbody tr')]"
        ".every(r => r.textContent.includes('thinking'))"
    )
    assert page.locator("#results").get_by_text("match the filters").is_visible()
    screenshot("catalog")

    # The URL is a bookmark: loading it again shows the same search.
    page.reload()
    assert page.get_by_placeholder("Search MLX models").input_value() == "qwen"
    assert page.locator("input[name=cap][value=thinking]").is_checked()

    # Open the first result.
    first = rows(page).first
    repo_id = first.get_attribute("data-repo-id")
    first.locator("a.repo").click()
    page.wait_for_url(f"**/models/hub/{repo_id}")
    page.get_by_role("heading", level=1, name=repo_id.split("/")[1]).wait_for()
    assert page.get_by_text("Characteristics").is_visible()
    assert page.get_by_text("Context length").is_visible()
    assert page.locator("[data-fit]").first.get_attribute("title").startswith("The model takes")
    assert page.locator(".readme").is_visible()
    screenshot("model-detail")


def test_a_pasted_query_searches_and_clear_filters_keeps_it(member_page, hub_settings):
    page = member_page
    page.goto("/models/")
    page.get_by_role("heading", name="Models").wait_for()

    # Text that arrives without a key-up (a paste, autofill, dictation) searches too.
    page.get_by_placeholder("Search MLX models").focus()
    page.keyboard.insert_text("qwen")
    page.wait_for_url(re.compile(r"q=qwen"))

    page.locator("label.chip", has_text="Thinking").click()
    page.wait_for_url(re.compile(r"cap=thinking"))
    page.locator("input[name=fit][value=fits]").check()
    page.wait_for_url(re.compile(r"fit=fits"))

    page.get_by_test_id("clear-filters").click()
    page.wait_for_url(lambda url: "q=qwen" in url and "cap=" not in url and "fit=fits" not in url)
    assert not page.locator("input[name=cap][value=thinking]").is_checked()
    assert page.locator("input[name=fit][value='']").is_checked()
    assert page.get_by_placeholder("Search MLX models").input_value() == "qwen"
    page.wait_for_function(
        "() => [...document.querySelectorAll('#results tbody tr')].length > 0 &&"
        " [...document.querySelectorAll('#results tbody tr')]"
        ".some(r => !r.textContent.includes('thinking'))"
    )
