"""The last active admin can never be demoted, disabled or deleted, by any path, and the
person trying is told why."""

import threading

import pytest
from django.db import connection, transaction
from django.test import Client

from accounts import approval
from accounts.models import User

WHY = "must keep at least one active admin"


@pytest.fixture
def only_admin(admin_member, make_user):
    make_user("member@example.com")
    make_user("waiting@example.com", status="pending", staff=True)  # not an *active* admin
    return admin_member


def assert_still_admin(user: User) -> None:
    user.refresh_from_db()
    assert user.is_active_admin, "the last admin lost admin rights"


# The rule itself ------------------------------------------------------------------------


def test_last_admin_cannot_be_disabled(only_admin):
    with pytest.raises(approval.LastAdminError, match=WHY):
        approval.disable([only_admin], by=only_admin)
    assert_still_admin(only_admin)


def test_last_admin_cannot_be_demoted(only_admin):
    with pytest.raises(approval.LastAdminError, match=WHY):
        approval.remove_admin([only_admin], by=only_admin)
    assert_still_admin(only_admin)


def test_last_admin_cannot_be_sent_back_to_pending(only_admin):
    with pytest.raises(approval.LastAdminError):
        approval.set_status([only_admin], User.Status.PENDING, by=only_admin)
    assert_still_admin(only_admin)


def test_last_admin_cannot_be_deleted(only_admin):
    with pytest.raises(approval.LastAdminError):
        approval.delete_users([only_admin], by=only_admin)
    assert_still_admin(only_admin)


def test_an_admin_can_be_demoted_while_another_remains(only_admin, make_user):
    other = make_user("second-admin@example.com", staff=True)
    approval.remove_admin([only_admin], by=other)
    only_admin.refresh_from_db()
    assert not only_admin.is_admin


def test_all_admins_at_once_cannot_be_disabled(only_admin, make_user):
    other = make_user("second-admin@example.com", staff=True)
    with pytest.raises(approval.LastAdminError):
        approval.disable([only_admin, other], by=only_admin)
    assert_still_admin(only_admin)
    assert_still_admin(other)


@pytest.mark.django_db(transaction=True)
def test_the_rule_must_run_inside_a_transaction(only_admin):
    with pytest.raises(RuntimeError, match="transaction"):
        approval.ensure_admins_remain([only_admin])
    with transaction.atomic(), pytest.raises(approval.LastAdminError):
        approval.ensure_admins_remain([only_admin])


# The portal's Users page ----------------------------------------------------------------


def test_last_admin_cannot_disable_themselves_on_the_users_page(only_admin):
    client = Client()
    client.force_login(only_admin)
    response = client.post(f"/users/{only_admin.pk}/disable/", headers={"HX-Request": "true"})
    assert response.status_code == 200
    assert WHY in response.content.decode()
    assert 'role="alert"' in response.content.decode()
    assert_still_admin(only_admin)


def test_last_admin_cannot_remove_their_admin_rights_on_the_users_page(only_admin):
    client = Client()
    client.force_login(only_admin)
    response = client.post(f"/users/{only_admin.pk}/remove-admin/", follow=True)
    assert WHY in response.content.decode()  # as a message, without HTMX
    assert_still_admin(only_admin)


# The Django admin ------------------------------------------------------------------------


def _change_form_data(user: User, **changes) -> dict:
    data = {
        "email": user.email,
        "username": user.username,
        "status": user.status,
        "first_name": "",
        "last_name": "",
        "is_active": "on" if user.is_active else "",
        "is_staff": "on" if user.is_staff else "",
        "is_superuser": "on" if user.is_superuser else "",
        "last_login_0": "",
        "last_login_1": "",
        "date_joined_0": "2026-01-01",
        "date_joined_1": "00:00:00",
        # The management form of the limits inline, as a browser sends it (no limits row).
        "limits-TOTAL_FORMS": "0",
        "limits-INITIAL_FORMS": "0",
    }
    data.update(changes)
    return {key: value for key, value in data.items() if value != ""}


@pytest.mark.parametrize(
    "changes",
    [
        {"status": "disabled"},
        {"status": "pending"},
        {"is_staff": "", "is_superuser": ""},
        {"is_active": ""},
    ],
    ids=["disabled", "pending", "demoted", "deactivated"],
)
def test_last_admin_cannot_lose_rights_in_the_django_admin_change_form(only_admin, changes):
    client = Client()
    client.force_login(only_admin)
    url = f"/admin/accounts/user/{only_admin.pk}/change/"
    response = client.post(url, _change_form_data(only_admin, **changes))
    assert response.status_code == 200  # the form again, with the reason
    assert WHY in response.content.decode()
    assert_still_admin(only_admin)


def test_the_django_admin_change_form_still_saves_other_edits(only_admin):
    client = Client()
    client.force_login(only_admin)
    url = f"/admin/accounts/user/{only_admin.pk}/change/"
    response = client.post(url, _change_form_data(only_admin, first_name="Ada"))
    assert response.status_code == 302, response.content.decode()[:2000]
    only_admin.refresh_from_db()
    assert only_admin.first_name == "Ada"
    assert_still_admin(only_admin)


def test_approving_in_the_django_admin_change_form_records_who_and_when(only_admin):
    waiting = User.objects.get(email="waiting@example.com")
    client = Client()
    client.force_login(only_admin)
    url = f"/admin/accounts/user/{waiting.pk}/change/"
    response = client.post(url, _change_form_data(waiting, status="approved"))
    assert response.status_code == 302
    waiting.refresh_from_db()
    assert waiting.status == "approved"
    assert waiting.approved_by == only_admin and waiting.approved_at


@pytest.mark.parametrize("action", ["disable", "remove_admin", "delete_selected"])
def test_last_admin_is_kept_by_django_admin_bulk_actions(only_admin, action):
    client = Client()
    client.force_login(only_admin)
    everyone = list(User.objects.values_list("pk", flat=True))
    response = client.post(
        "/admin/accounts/user/",
        {"action": action, "_selected_action": everyone, "post": "yes"},
        follow=True,
    )
    assert WHY in response.content.decode()
    assert_still_admin(only_admin)
    assert User.objects.count() == len(everyone)


def test_django_admin_bulk_actions_change_the_others(only_admin):
    client = Client()
    client.force_login(only_admin)
    waiting = User.objects.get(email="waiting@example.com")
    client.post("/admin/accounts/user/", {"action": "approve", "_selected_action": [waiting.pk]})
    waiting.refresh_from_db()
    assert waiting.status == "approved" and waiting.approved_by == only_admin


def test_the_django_admin_bulk_delete_deletes_non_admins(only_admin):
    client = Client()
    client.force_login(only_admin)
    member = User.objects.get(email="member@example.com")
    client.post(
        "/admin/accounts/user/",
        {"action": "delete_selected", "_selected_action": [member.pk], "post": "yes"},
    )
    assert not User.objects.filter(pk=member.pk).exists()


def test_last_admin_cannot_be_deleted_in_the_django_admin_delete_view(only_admin):
    client = Client()
    client.force_login(only_admin)
    url = f"/admin/accounts/user/{only_admin.pk}/delete/"
    # Told before confirming, and refused when confirming anyway.
    response = client.get(url, follow=True)
    assert WHY in response.content.decode()
    response = client.post(url, {"post": "yes"}, follow=True)
    assert WHY in response.content.decode()
    assert_still_admin(only_admin)


def test_the_django_admin_delete_queryset_keeps_the_last_admin(only_admin, rf):
    from django.contrib.admin.sites import site

    request = rf.post("/admin/accounts/user/")
    request.user = only_admin
    model_admin = site._registry[User]
    with pytest.raises(approval.LastAdminError):
        model_admin.delete_queryset(request, User.objects.all())
    with pytest.raises(approval.LastAdminError):
        model_admin.delete_model(request, only_admin)
    assert_still_admin(only_admin)


# Concurrency -----------------------------------------------------------------------------


def demote_each_other_at_once(first: User, second: User) -> list[str]:
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def demote(target: User, by: User) -> None:
        try:
            barrier.wait(timeout=10)
            approval.remove_admin([target], by=by)
            outcomes.append("demoted")
        except approval.LastAdminError:
            outcomes.append("refused")
        finally:
            connection.close()

    threads = [
        threading.Thread(target=demote, args=(second, first)),
        threading.Thread(target=demote, args=(first, second)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return sorted(outcomes)


@pytest.mark.django_db(transaction=True)
def test_two_admins_demoting_each_other_at_once_leave_one_admin(make_user):
    for _ in range(5):
        User.objects.all().delete()
        first = make_user("first@example.com", staff=True)
        second = make_user("second@example.com", staff=True)

        assert demote_each_other_at_once(first, second) == ["demoted", "refused"]
        assert approval.active_admins().count() == 1


def test_disabling_in_the_django_admin_change_form_ends_access(only_admin):
    from accounts.api_keys import authenticate_api_key, create_api_key

    member = User.objects.get(email="member@example.com")
    new_key = create_api_key(member, "laptop")
    member_browser = Client()
    member_browser.force_login(member)
    client = Client()
    client.force_login(only_admin)

    url = f"/admin/accounts/user/{member.pk}/change/"
    assert client.post(url, _change_form_data(member, status="disabled")).status_code == 302

    assert authenticate_api_key(f"Bearer {new_key.secret}") is None
    assert member_browser.get("/")["Location"].startswith("/accounts/login/")
