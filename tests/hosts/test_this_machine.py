"""This machine's host row: registered by `migrate`, found (or created bare) by
`Host.objects.this_machine()`, and never written by a page a member only looks at: a host's
facts are its worker's heartbeat's job."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from models_catalog.models import Host

TINY = "test-org/tiny-llama"


@pytest.mark.django_db(transaction=True)
def test_migrate_registers_this_machine_bare(settings):
    Host.objects.all().delete()
    call_command("migrate", verbosity=0)
    host = Host.objects.get(name=settings.HOST_NAME)
    assert (host.memory_total, host.platform, host.last_heartbeat) == (0, "", None)


@pytest.mark.django_db
def test_this_machine_is_created_bare_and_counts_as_one_heartbeat(settings):
    settings.HOST_NAME = "delta"
    host = Host.objects.this_machine()
    assert host.name == "delta" and host.is_this_machine
    assert (host.memory_total, host.disk_total, host.platform, host.mlx_lm_version) == (
        0,
        0,
        "",
        "",
    )
    assert host.is_online  # whoever first needs it runs on this machine
    assert Host.objects.this_machine().pk == host.pk


@pytest.mark.django_db
def test_a_row_no_worker_reported_for_counts_its_first_use_as_a_heartbeat_once(settings):
    Host.objects.update_or_create(name=settings.HOST_NAME, defaults={"last_heartbeat": None})
    first = Host.objects.this_machine()
    assert first.last_heartbeat is not None
    old = timezone.now() - timezone.timedelta(hours=1)
    Host.objects.filter(pk=first.pk).update(last_heartbeat=old)
    assert Host.objects.this_machine().last_heartbeat == old  # only the worker keeps it online


@pytest.mark.django_db
def test_chosen_is_the_named_host_else_this_machine(settings):
    beta = Host.objects.create(name="beta")
    assert Host.objects.chosen("beta") == beta
    for name in (None, "", "nowhere", "x" * 500):
        assert Host.objects.chosen(name).name == settings.HOST_NAME


@pytest.mark.django_db
@pytest.mark.usefixtures("hf")
def test_no_page_a_member_looks_at_writes_a_host_row(member_client, settings):
    here = Host.objects.this_machine()  # as `migrate` and a first use leave it
    pages = [
        "/",
        "/models/",
        f"/models/hub/{TINY}",
        "/models/local/",
        "/models/local/?host=beta",
        "/models/downloads/",
        f"/models/downloads/action/?repo_id={TINY}",
    ]
    Host.objects.create(name="beta", last_heartbeat=timezone.now())
    with CaptureQueriesContext(connection) as queries:
        for page in pages:
            assert member_client.get(page).status_code == 200, page
    writes = [
        q["sql"]
        for q in queries.captured_queries
        if '"models_catalog_host"' in q["sql"]
        and q["sql"].lstrip().upper().startswith(("UPDATE", "INSERT", "DELETE"))
    ]
    assert writes == []
    assert Host.objects.get(pk=here.pk).memory_total == 0  # its facts wait for its worker
