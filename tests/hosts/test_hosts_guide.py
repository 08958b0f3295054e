"""The Hosts page's reference to docs/hosts.md is a link an admin can open: the portal serves
that file, rendered (raw HTML off, sanitised), to admins only."""

import re

import pytest

pytestmark = pytest.mark.django_db


def test_the_hosts_page_links_to_the_guide_it_serves(admin_client):
    page = admin_client.get("/servers/hosts/").text
    [href] = re.findall(r'<a href="([^"]+)">hosts guide</a>', page)
    guide = admin_client.get(href)
    assert guide.status_code == 200
    html = guide.text
    assert "<h2>Hosts: more than one machine</h2>" in html  # docs/hosts.md's title, under the h1
    assert "MLX_PORTAL_HOST" in html and "<code>host.&lt;name&gt;</code>" in html


def test_only_admins_read_the_guide(member_client):
    assert member_client.get("/servers/hosts/guide/").status_code == 403
