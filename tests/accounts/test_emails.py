"""Emails name the portal (settings.PORTAL_NAME), never the host and port a request came to:
allauth's (password reset, its notices) through accounts/adapter.py, the portal's own notices
through accounts/notifications.py."""

import pytest
from django.test import Client
from django.urls import reverse

NAME = "MLX Portal"


@pytest.fixture(autouse=True)
def _reached_by_a_host_name(settings):
    settings.ALLOWED_HOSTS = ["studio.lan"]


def _names_the_portal_not_the_host(message, host: str) -> None:
    assert message.subject.startswith(f"[{NAME}] "), message.subject
    assert host not in message.subject
    assert f"Hello from {host}" not in message.body and f"using {host}" not in message.body


def test_the_password_reset_email_names_the_portal(member, mailoutbox):
    client = Client(HTTP_HOST="studio.lan:8000")
    response = client.post(reverse("account_reset_password"), {"email": member.email})
    assert response.status_code == 302
    [message] = mailoutbox
    assert message.to == [member.email]
    _names_the_portal_not_the_host(message, "studio.lan:8000")
    assert f"Hello from {NAME}!" in message.body and f"Thank you for using {NAME}!" in message.body
    assert "http://studio.lan:8000/accounts/password/reset/key/" in message.body  # the link


def test_the_notice_to_an_unknown_address_names_the_portal(db, mailoutbox):
    client = Client(HTTP_HOST="studio.lan:8000")
    client.post(reverse("account_reset_password"), {"email": "nobody@example.com"})
    [message] = mailoutbox
    _names_the_portal_not_the_host(message, "studio.lan:8000")
    assert f"Hello from {NAME}!" in message.body


def test_the_admins_notice_of_a_sign_up_names_the_portal(sign_up, admin_member, mailoutbox):
    client = Client(HTTP_HOST="studio.lan:8000")
    sign_up(client, "newcomer@example.com")
    [message] = mailoutbox
    _names_the_portal_not_the_host(message, "studio.lan:8000")
    assert f"signed up for {NAME}" in message.body
