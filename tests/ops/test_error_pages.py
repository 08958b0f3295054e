"""The portal's own error pages: a 404 inside the portal's frame with a way back, a 500 that
renders without a request or a database, and the icon every page names."""

import pytest
from django.contrib.staticfiles import finders
from django.test import RequestFactory
from django.views.defaults import server_error

pytestmark = pytest.mark.django_db


def test_an_unknown_page_answers_404_in_the_portals_frame(member_client):
    response = member_client.get("/servers/no-such-profile/edit/")
    assert response.status_code == 404
    page = response.content.decode()
    assert "<title>Not found · MLX Portal</title>" in page
    assert "There is nothing at <code>/servers/no-such-profile/edit/</code>" in page
    assert 'href="/servers/"' in page  # the navbar
    assert 'href="/">Back to the dashboard</a>' in page


def test_someone_elses_conversation_is_the_same_404(member_client, make_user):
    from servers.models import Conversation

    other = Conversation.objects.create(user=make_user("other@example.com"), title="theirs")
    response = member_client.get(f"/servers/chat/{other.pk}/")
    assert response.status_code == 404
    assert "Not found · MLX Portal" in response.content.decode()
    assert "theirs" not in response.content.decode()


def test_the_500_page_renders_with_no_request_context():
    response = server_error(RequestFactory().get("/anything/"))
    assert response.status_code == 500
    page = response.content.decode()
    assert "<title>Something went wrong · MLX Portal</title>" in page
    assert "pico-2.1.1.min.css" in page and 'href="/">Back to the dashboard' in page


def test_every_page_names_an_icon_that_exists(member_client):
    page = member_client.get("/").content.decode()
    assert '<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">' in page
    assert finders.find("favicon.svg")
