"""The Django admin shows admins the rows the portal keeps that they may want to look at;
rows that change only through the portal's own rules are read-only there."""

import pytest
from django.utils import timezone

from models_catalog.models import Download, Host
from servers.models import ServerInstance, ServerProfile, UsageRecord

pytestmark = pytest.mark.django_db

READ_ONLY = {
    "models_catalog/host": Host,
    "models_catalog/download": Download,
    "servers/usagerecord": UsageRecord,
}


def test_hosts_downloads_instances_and_usage_are_listed_read_only(admin_client, admin_member):
    host = Host.objects.this_machine()
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
    # The instance is on its profile's page (read-only fields), and deleting a stopped
    # profile takes it along: nothing read-only stands in the way of the cascade.
    page = admin_client.get(f"/admin/servers/serverprofile/{profile.pk}/change/").text
    assert "Server instance" in page
    response = admin_client.post(
        f"/admin/servers/serverprofile/{profile.pk}/delete/", {"post": "yes"}
    )
    assert response.status_code == 302
    assert not ServerProfile.objects.filter(pk=profile.pk).exists()
    assert not ServerInstance.objects.filter(pk=instance.pk).exists()
    assert UsageRecord.objects.get().profile is None  # the usage stays, by name


def test_the_admin_index_has_one_accounts_section(admin_client):
    index = admin_client.get("/admin/").text
    assert "Users and API keys" in index
    assert index.count(">Accounts</a>") <= 1  # allauth's email addresses keep that name


def test_the_admin_is_branded_as_the_portal(admin_client):
    for path in ("/admin/", "/admin/accounts/user/"):
        page = admin_client.get(path).text
        assert "MLX Portal administration" in page, path
        assert "Django administration" not in page and "Django site admin" not in page, path
    assert "<title>Administration | MLX Portal</title>" in admin_client.get("/admin/").text
