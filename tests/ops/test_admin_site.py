"""The Django admin shows admins every row the portal keeps that they may want to look at;
rows that change only through the portal's own rules are read-only there."""

import pytest
from django.utils import timezone

from models_catalog.models import Download, Host
from servers.models import ServerInstance, ServerProfile, UsageRecord

pytestmark = pytest.mark.django_db

READ_ONLY = {
    "models_catalog/host": Host,
    "models_catalog/download": Download,
    "servers/serverinstance": ServerInstance,
    "servers/usagerecord": UsageRecord,
}


def test_hosts_downloads_instances_and_usage_are_listed_read_only(admin_client, admin_member):
    host = Host.local()
    profile = ServerProfile.objects.create(
        name="Alpha", slug="alpha", model_id="a/b", host=host, port=8100, owner=admin_member
    )
    instance = profile.get_instance()
    UsageRecord.objects.create(
        user=admin_member, profile=profile, profile_name="Alpha", host=host, source="api",
        endpoint="chat/completions", status="ok", started_at=timezone.now(),
    )  # fmt: skip
    index = admin_client.get("/admin/").text
    for path in READ_ONLY:
        assert f'href="/admin/{path}/"' in index, path
        listing = admin_client.get(f"/admin/{path}/")
        assert listing.status_code == 200, path
        assert admin_client.get(f"/admin/{path}/add/").status_code == 403, path
    page = admin_client.get(f"/admin/servers/serverinstance/{instance.pk}/change/").text
    assert 'name="_save"' not in page  # a view, not a form
    assert (
        admin_client.post(f"/admin/servers/serverinstance/{instance.pk}/delete/").status_code == 403
    )


def test_the_admin_index_has_one_accounts_section(admin_client):
    index = admin_client.get("/admin/").text
    assert "Users and API keys" in index
    assert index.count(">Accounts</a>") <= 1  # allauth's email addresses keep that name
