"""Sign-up and login by email; the first user becomes the admin, everyone after waits."""

import threading

import pytest
from django.db import connection
from django.test import Client

from accounts.models import User


def test_first_user_becomes_approved_staff_superuser(client, sign_up):
    response = sign_up(client, "first@example.com")

    assert response.status_code == 302
    first = User.objects.get(email="first@example.com")
    assert first.status == User.Status.APPROVED
    assert first.is_staff and first.is_superuser and first.is_active
    assert first.approved_at is not None
    # Signed in and straight onto the dashboard.
    assert client.get("/").status_code == 200


def test_later_users_sign_up_as_pending_and_see_the_waiting_page(client, sign_up, admin_member):
    response = sign_up(client, "second@example.com", follow=True)

    second = User.objects.get(email="second@example.com")
    assert second.status == User.Status.PENDING
    assert not second.is_staff and not second.is_superuser
    assert second.approved_by is None and second.approved_at is None
    assert response.redirect_chain[-1][0] == "/status/pending/"
    assert b"awaiting approval" in response.content


def test_sign_up_tells_every_active_admin_by_email(client, sign_up, make_user, mailoutbox):
    make_user("boss@example.com", staff=True)
    make_user("deputy@example.com", staff=True)
    make_user("gone@example.com", status="disabled", staff=True)
    make_user("member@example.com")

    sign_up(client, "newcomer@example.com")

    assert len(mailoutbox) == 1
    message = mailoutbox[0]
    assert sorted(message.to) == ["boss@example.com", "deputy@example.com"]
    assert "newcomer@example.com" in message.subject
    assert "/users/?status=pending" in message.body


def test_the_first_user_is_not_told_about_their_own_sign_up(client, sign_up, mailoutbox):
    sign_up(client, "first@example.com")
    assert mailoutbox == []


def test_login_is_by_email_and_password(client, member, log_in):
    response = log_in(client, "member@example.com")
    assert response.status_code == 302
    assert client.get("/").status_code == 200


def test_a_wrong_password_is_refused_with_a_message(client, member, log_in):
    response = log_in(client, "member@example.com", password="wrong-password")
    assert response.status_code == 200
    assert b"not correct" in response.content
    assert client.get("/").status_code == 302


def test_repeated_failed_logins_are_throttled(client, member, log_in):
    for _ in range(5):
        log_in(client, "member@example.com", password="wrong-password")

    # Even the right password is refused while the throttle holds.
    response = log_in(client, "member@example.com")
    assert b"Too many failed login attempts" in response.content
    assert client.get("/").status_code == 302


@pytest.mark.django_db(transaction=True)
def test_twenty_simultaneous_first_sign_ups_make_exactly_one_admin(sign_up):
    count = 20
    barrier = threading.Barrier(count)
    statuses: list[int] = []
    errors: list[BaseException] = []

    def sign_up_one(index: int) -> None:
        try:
            client = Client(REMOTE_ADDR=f"10.0.0.{index + 1}")
            barrier.wait(timeout=30)
            statuses.append(sign_up(client, f"racer{index}@example.com").status_code)
        except BaseException as error:  # noqa: BLE001 - reported by the assertion below
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=sign_up_one, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert errors == []
    assert statuses == [302] * count
    assert User.objects.count() == count
    assert User.objects.filter(is_superuser=True).count() == 1
    assert User.objects.filter(is_staff=True, status=User.Status.APPROVED).count() == 1
    assert User.objects.filter(status=User.Status.PENDING).count() == count - 1
