"""Where the memory plan shows (in-process, no worker): the need on the profile form and the
tile, the plan's bar and an admin's policy on the Hosts page."""

from __future__ import annotations

from django.urls import reverse

from accounts.audit.models import AuditEntry
from models_catalog.models import Host
from servers import memory_plan
from servers.models import State


def test_the_profile_form_and_the_tile_show_the_need(served_model, make_profile, member_client):
    host = Host.objects.this_machine()
    url = reverse("servers:profile-need")
    full = member_client.get(url, {"model_id": served_model, "host": host.pk}).content.decode()
    quantized = member_client.get(url, {"model_id": served_model, "host": host.pk, "kv_bits": "4"})
    need = memory_plan.need_for(host, served_model)
    assert memory_plan.describe(need).replace("“", "") in full.replace("&#x27;", "'")
    assert "KV cache" in full and " at 4 bits" in quantized.content.decode()
    form = member_client.get(reverse("servers:profile-create")).content.decode()
    assert 'hx-get="/servers/need/"' in form and 'hx-trigger="load"' in form
    profile = make_profile("Needy", model_id=served_model)
    tiles = member_client.get(reverse("servers:list")).content.decode()
    assert f"Needs {memory_plan.describe(memory_plan.profile_need(profile))}" in tiles


def test_the_hosts_page_shows_each_hosts_plan_and_an_admin_sets_its_policy(
    served_model, make_profile, admin_client
):
    host = Host.objects.this_machine()
    Host.objects.filter(pk=host.pk).update(memory_limit=8 * 1024**3, memory_limit_kind="wired")
    profile = make_profile("Busy one", model_id=served_model)
    instance = profile.get_instance()
    instance.transition(State.STARTING, "test")
    instance.transition(State.RUNNING, "test")
    page = admin_client.get(reverse("servers:hosts")).content.decode()
    assert '<svg class="plan-bar"' in page and "style=" not in page.split("<main")[-1]
    assert "Busy one" in page and "free" in page and "8.0\xa0GB" in page
    response = admin_client.post(
        reverse("servers:host-plan", args=[host.name]),
        {"memory_policy": "evict-idle", "evict_idle_minutes": "15", "memory_cap_mb": "4096"},
    )
    assert response.status_code == 302
    host.refresh_from_db()
    assert (host.memory_policy, host.evict_idle_minutes, host.memory_cap_mb) == (
        "evict-idle", 15, 4096,
    )  # fmt: skip
    assert AuditEntry.objects.filter(action="setting.change", object_label=host.name).exists()
    plan = memory_plan.host_plan(host)
    assert (plan.limit, plan.limit_text) == (4096 * 1024**2, "an admin's cap on the Hosts page")
    bad = admin_client.post(
        reverse("servers:host-plan", args=[host.name]),
        {"memory_policy": "evict-idle", "evict_idle_minutes": "-3"},
        follow=True,
    )
    assert "was not saved" in bad.content.decode()
