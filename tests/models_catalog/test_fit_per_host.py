"""With several hosts, "fits" is judged on the memory of the host chosen on the page."""

import pytest

from models_catalog.models import Host

pytestmark = pytest.mark.django_db

GIB = 1024**3
REPO = "mlx-community/Qwen3-32B-bf16"  # ~64 GB of weights


def _fit_of(html: str) -> str:
    row = html[html.index(f'data-repo-id="{REPO}"') :]
    row = row[: row.index("</tr>")]
    return row.split('data-fit="', 1)[1].split('"', 1)[0]


def test_the_fit_uses_the_memory_of_the_chosen_host(catalog_hub, member_client, host):
    Host.objects.create(name="big", memory_total=512 * GIB)
    page = member_client.get("/models/", {"q": "Qwen3-32B-bf16"}).text
    assert 'data-testid="fit-host"' in page and ">big (" in page
    assert _fit_of(page) == "too_big"  # this host has 32 GiB
    page = member_client.get("/models/", {"q": "Qwen3-32B-bf16", "host": "big"}).text
    assert _fit_of(page) == "fits"
    assert '<option value="big" selected>' in page


def test_an_unknown_host_falls_back_to_this_one(catalog_hub, member_client, host):
    page = member_client.get("/models/", {"q": "Qwen3-32B-bf16", "host": "nowhere"}).text
    assert _fit_of(page) == "too_big"
    assert 'data-testid="fit-host"' not in page  # one host: no selector
