"""Approving, disabling, promoting and demoting users; what each change does."""

from django.contrib.sessions.models import Session
from django.test import Client

from accounts import approval
from accounts.api_keys import authenticate_api_key, create_api_key
from accounts.models import User


def test_approval_records_who_approved_and_when(admin_member, make_user):
    waiting = make_user("waiting@example.com", status="pending")

    approval.approve([waiting], by=admin_member)

    waiting.refresh_from_db()
    assert waiting.status == User.Status.APPROVED
    assert waiting.approved_by == admin_member
    assert waiting.approved_at is not None


def test_approving_an_approved_user_changes_nothing(admin_member, member):
    assert approval.approve([member], by=admin_member) == []
    member.refresh_from_db()
    assert member.approved_by is None


def test_an_approved_user_gets_in_on_the_next_request(admin_member, make_user):
    waiting = make_user("waiting@example.com", status="pending")
    client = Client()
    client.force_login(waiting)
    assert client.get("/")["Location"] == "/status/pending/"

    approval.approve([waiting], by=admin_member)

    assert client.get("/").status_code == 200


def test_disabling_a_user_ends_their_sessions_at_once(admin_member, member):
    browser_one, browser_two = Client(), Client()
    browser_one.force_login(member)
    browser_two.force_login(member)
    other = Client()
    other.force_login(admin_member)
    assert Session.objects.count() == 3

    approval.disable([member], by=admin_member)

    assert Session.objects.count() == 1  # only the admin's
    assert browser_one.get("/")["Location"].startswith("/accounts/login/")
    assert other.get("/").status_code == 200


def test_disabling_a_user_revokes_their_api_keys(admin_member, member):
    new_key = create_api_key(member, "laptop")
    header = f"Bearer {new_key.secret}"
    assert authenticate_api_key(header) == member

    approval.disable([member], by=admin_member)

    new_key.api_key.refresh_from_db()
    assert new_key.api_key.revoked_at is not None
    approval.approve([member], by=admin_member)
    assert authenticate_api_key(header) is None  # re-enabling does not bring keys back


def test_make_admin_and_remove_admin_set_staff_and_superuser(admin_member, member):
    approval.make_admin([member], by=admin_member)
    member.refresh_from_db()
    assert member.is_staff and member.is_superuser and member.is_active_admin

    approval.remove_admin([member], by=admin_member)
    member.refresh_from_db()
    assert not member.is_staff and not member.is_superuser


def test_a_pending_admin_is_not_an_active_admin(make_user):
    assert not make_user("p@example.com", status="pending", staff=True).is_active_admin
    assert make_user("a@example.com", staff=True).is_active_admin


def test_admins_can_add_a_user_in_the_django_admin(admin_client):
    assert admin_client.get("/admin/accounts/user/add/").status_code == 200
    response = admin_client.post(
        "/admin/accounts/user/add/",
        {
            "email": "added@example.com",
            "username": "added",
            "usable_password": "true",
            "password1": "correct-horse-battery-staple",
            "password2": "correct-horse-battery-staple",
        },
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    added = User.objects.get(email="added@example.com")
    assert added.status == User.Status.PENDING


def test_the_django_admin_user_list_filters_by_status(admin_client, make_user):
    make_user("waiting@example.com", status="pending")
    page = admin_client.get("/admin/accounts/user/?status__exact=pending").content.decode()
    assert "waiting@example.com" in page
    assert "By status" in page


def test_an_approved_member_is_told_by_email(
    admin_member, make_user, mailoutbox, django_capture_on_commit_callbacks
):
    waiting = make_user("waiting@example.com", status="pending")
    mailoutbox.clear()
    with django_capture_on_commit_callbacks(execute=True):
        approval.approve([waiting], by=admin_member)
    assert [m.to for m in mailoutbox] == [["waiting@example.com"]]
    assert "approved" in mailoutbox[0].subject and "Serve" in mailoutbox[0].body
    with django_capture_on_commit_callbacks(execute=True):
        approval.approve([waiting], by=admin_member)  # already approved: no second email
    assert len(mailoutbox) == 1


def test_an_approval_by_a_rule_sends_no_email(
    make_user, mailoutbox, django_capture_on_commit_callbacks
):
    waiting = make_user("ruled@example.com", status="pending")
    mailoutbox.clear()
    with django_capture_on_commit_callbacks(execute=True):
        approval.approve([waiting], by=None, why="approved by the email domain rule")
    assert mailoutbox == []
