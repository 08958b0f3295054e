"""The in-portal Users page: list, filter, search, HTMX actions, and the navbar badge."""

from accounts.models import User

HTMX = {"HX-Request": "true"}


def test_users_page_lists_users_with_status_and_role(admin_client, make_user):
    make_user("waiting@example.com", status="pending")
    make_user("gone@example.com", status="disabled")

    page = admin_client.get("/users/").content.decode()

    assert "waiting@example.com" in page and "gone@example.com" in page
    assert "Pending approval" in page and "Disabled" in page and "Admin" in page
    assert "Pending approval (1)" in page  # the status filter shows counts


def test_users_page_filters_by_status(admin_client, make_user):
    make_user("waiting@example.com", status="pending")
    page = admin_client.get("/users/?status=pending").content.decode()
    assert "waiting@example.com" in page
    assert "admin@example.com</td>" not in page


def test_users_page_searches_by_email_and_answers_htmx_with_the_table_only(admin_client, make_user):
    make_user("alice@example.com")
    make_user("bob@example.com")

    response = admin_client.get("/users/?q=ALI", headers=HTMX)

    fragment = response.content.decode()
    assert fragment.lstrip().startswith('<div id="user-table"')
    assert "alice@example.com" in fragment and "bob@example.com" not in fragment
    assert "<html" not in fragment


def test_approve_button_updates_the_row_in_place(admin_client, admin_member, make_user):
    waiting = make_user("waiting@example.com", status="pending")

    response = admin_client.post(f"/users/{waiting.pk}/approve/", headers=HTMX)

    fragment = response.content.decode()
    assert fragment.lstrip().startswith(f'<tr id="user-{waiting.pk}"')
    assert "Approved" in fragment and "by admin@example.com" in fragment
    waiting.refresh_from_db()
    assert waiting.status == "approved" and waiting.approved_by == admin_member
    # The navbar's pending count is refreshed out of band in the same response.
    assert '<span id="pending-badge" hx-swap-oob="true"' in fragment


def test_an_action_redraws_the_filters_counts_keeping_its_choice(admin_client, make_user):
    waiting = make_user("waiting@example.com", status="pending")
    page = admin_client.get("/users/?status=pending").content.decode()
    assert 'hx-include="#status-filter"' in page  # each action sends the filter's choice
    assert '<option value="pending" selected>Pending approval (1)</option>' in page

    response = admin_client.post(
        f"/users/{waiting.pk}/approve/", {"status": "pending"}, headers=HTMX
    )
    fragment = response.content.decode()
    select = fragment.split('<select name="status" id="status-filter"')[1].split("</select>")[0]
    assert select.lstrip().startswith('aria-label="Status" hx-swap-oob="true"')
    assert '<option value="pending" selected>Pending approval (0)</option>' in select
    assert '<option value="approved">Approved (2)</option>' in select
    # A value that is no status selects "All statuses".
    response = admin_client.post(f"/users/{waiting.pk}/disable/", {"status": "x"}, headers=HTMX)
    select = response.content.decode().split('id="status-filter"')[1]
    assert select.count(" selected>") == 1
    assert '<option value="" selected>All statuses (2)</option>' in select


def test_disable_make_admin_and_remove_admin_buttons(admin_client, member):
    admin_client.post(f"/users/{member.pk}/make-admin/", headers=HTMX)
    member.refresh_from_db()
    assert member.is_active_admin

    admin_client.post(f"/users/{member.pk}/remove-admin/", headers=HTMX)
    member.refresh_from_db()
    assert not member.is_admin

    response = admin_client.post(f"/users/{member.pk}/disable/", headers=HTMX)
    member.refresh_from_db()
    assert member.status == User.Status.DISABLED
    assert "Approve" in response.content.decode()  # the row now offers re-approval


def test_actions_work_without_htmx_too(admin_client, member):
    response = admin_client.post(f"/users/{member.pk}/disable/", follow=True)
    assert "member@example.com disabled." in response.content.decode()


def test_unknown_actions_and_gets_are_refused(admin_client, member):
    assert admin_client.post(f"/users/{member.pk}/promote-to-god/").status_code == 404
    assert admin_client.get(f"/users/{member.pk}/approve/").status_code == 405


def test_navbar_shows_admins_the_pending_count_polled_every_30_seconds(admin_client, make_user):
    make_user("one@example.com", status="pending")
    make_user("two@example.com", status="pending")

    page = admin_client.get("/").content.decode()

    assert 'hx-get="/users/pending-badge/"' in page
    assert 'hx-trigger="every 30s"' in page
    assert 'title="2 waiting for approval">2</span>' in page


def test_pending_badge_partial_follows_new_sign_ups(admin_client, make_user):
    fragment = admin_client.get("/users/pending-badge/", headers=HTMX).content.decode()
    assert 'class="badge' not in fragment
    make_user("one@example.com", status="pending")
    fragment = admin_client.get("/users/pending-badge/", headers=HTMX).content.decode()
    assert fragment.startswith('<span id="pending-badge"')
    assert ">1</span>" in fragment


def test_members_see_api_keys_but_not_users_in_the_navbar(member_client):
    page = member_client.get("/").content.decode()
    assert 'href="/api-keys/"' in page
    assert 'href="/users/"' not in page and "pending-badge" not in page
