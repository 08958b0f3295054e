"""The Groups page (admins): list groups with members and limits; create, rename, delete a
group; set its members and limits. And the Users page's groups and own limits of a person."""

import pytest
from django.contrib.auth.models import Group
from django.urls import reverse

from accounts.audit.models import Action, AuditEntry
from accounts.models import Limits
from accounts.teams import limits_for
from tests.servers.conftest import make_profile  # noqa: F401 (the servers' fixture)

BLANK_LIMITS = {"requests_per_minute": "", "tokens_per_day": "", "concurrent_requests": ""}


def page(client, url, data=None):
    response = client.post(url, data or {}, follow=True) if data is not None else client.get(url)
    assert response.status_code == 200
    return response.content.decode()


def test_the_groups_page_lists_groups_with_member_count_limits_and_profiles(
    admin_client,
    member,
    make_user,
    make_profile,  # noqa: F811
):
    research = Group.objects.create(name="Research")
    Group.objects.create(name="Interns")
    research.user_set.add(member, make_user("two@example.com"))
    Limits.objects.create(group=research, requests_per_minute=1200, tokens_per_day=5_000_000)
    make_profile("Big model").allowed_groups.add(research)

    html = page(admin_client, reverse("accounts:groups"))

    row = html.split(f'id="group-{research.pk}"')[1].split("</tr>")[0]
    assert "<td>2</td>" in row
    assert "1,200 requests per minute" in row and "5,000,000 tokens per day" in row
    assert "requests in flight" not in row  # not set: no limit
    assert "Big model" in row
    interns = html.split('id="group-')[1]  # ordered by name: Interns first
    assert "Interns" in interns and "No limits" in interns and "<td>0</td>" in interns


def test_the_nav_shows_groups_to_admins_only(admin_client, member, client):
    assert 'href="/groups/"' in page(admin_client, "/")
    client.force_login(member)
    assert 'href="/groups/"' not in page(client, "/")
    assert client.get("/groups/").status_code == 403


def test_a_group_is_created_with_its_name_stripped(admin_client):
    html = page(admin_client, reverse("accounts:groups"), {"name": "  Research   team "})
    group = Group.objects.get()
    assert group.name == "Research team"
    assert "Group “Research team” created" in html


GROUP_NAMES = [
    ("blank", "   ", "Give the group a name"),
    ("too long", "x" * 151, "150 characters or fewer"),
    ("taken in another case", "research", "There is already a group named “Research”"),
    ("taken with spaces", " Research ", "There is already a group named “Research”"),
]


@pytest.mark.parametrize(("label", "name", "message"), GROUP_NAMES, ids=[c[0] for c in GROUP_NAMES])
def test_a_bad_group_name_is_refused_with_a_clear_message(admin_client, label, name, message):
    Group.objects.create(name="Research")
    html = page(admin_client, reverse("accounts:groups"), {"name": name})
    assert message in html
    assert Group.objects.count() == 1


def test_a_group_is_renamed_but_not_onto_another_groups_name(admin_client):
    research = Group.objects.create(name="Research")
    Group.objects.create(name="Interns")
    url = reverse("accounts:group-rename", args=[research.pk])

    html = page(admin_client, url, {"name": "INTERNS"})
    assert "There is already a group named “Interns”" in html
    research.refresh_from_db()
    assert research.name == "Research"

    html = page(admin_client, url, {"name": "research"})  # its own name in another case
    research.refresh_from_db()
    assert research.name == "research" and "renamed “research”" in html


def test_a_groups_members_are_set_to_exactly_those_ticked(admin_client, member, make_user):
    group = Group.objects.create(name="Research")
    other = make_user("other@example.com")
    group.user_set.add(other)
    url = reverse("accounts:group-members", args=[group.pk])

    html = page(admin_client, url, {"members": [member.pk]})

    assert list(group.user_set.all()) == [member]
    assert "Members of “Research” saved" in html
    entry = AuditEntry.objects.get(action=Action.GROUP_MEMBERS)
    assert entry.object_label == "Research" and entry.object_type == "group"
    assert entry.before == {"members": ["other@example.com"]}
    assert entry.after == {"members": ["member@example.com"]}
    detail = page(admin_client, reverse("accounts:group", args=[group.pk]))
    assert f'value="{member.pk}" id="id_members_' in detail.replace(" checked", "")
    assert detail.count("checked") == 1

    html = page(admin_client, url, {"members": ["999999"]})
    assert "Pick members from the list" in html
    assert list(group.user_set.all()) == [member]


def test_a_groups_limits_are_set_and_apply_to_its_members_at_once(admin_client, member):
    group = Group.objects.create(name="Research")
    group.user_set.add(member)
    url = reverse("accounts:group-limits", args=[group.pk])

    page(admin_client, url, {**BLANK_LIMITS, "requests_per_minute": "60", "tokens_per_day": "0"})

    limits = limits_for(member)
    assert (limits.requests_per_minute, limits.tokens_per_day) == (60, 0)
    assert limits.concurrent_requests is None
    entry = AuditEntry.objects.get(action=Action.LIMITS)
    assert entry.before == {"requests_per_minute": None, "tokens_per_day": None}
    assert entry.after == {"requests_per_minute": 60, "tokens_per_day": 0}
    page(admin_client, url, BLANK_LIMITS)  # all blank: no limits, no row
    assert not Limits.objects.filter(group=group).exists()
    assert limits_for(member).requests_per_minute is None


BAD_LIMITS = [
    ("negative", "requests_per_minute", "-1", "Requests per minute: use a whole number from 0"),
    ("over the bound", "requests_per_minute", "100001", "from 0 to 100,000, or leave it blank"),
    ("not a number", "tokens_per_day", "lots", "Tokens per day: use a whole number"),
    ("tokens over", "tokens_per_day", "10000000001", "from 0 to 10,000,000,000"),
    ("no request at once", "concurrent_requests", "0", "from 1 to 10,000"),
    ("a fraction", "concurrent_requests", "1.5", "Requests in flight at once: use a whole"),
]


@pytest.mark.parametrize(
    ("label", "name", "value", "message"), BAD_LIMITS, ids=[c[0] for c in BAD_LIMITS]
)
def test_bad_limits_are_refused_with_a_clear_message(admin_client, label, name, value, message):
    group = Group.objects.create(name="Research")
    Limits.objects.create(group=group, requests_per_minute=5)
    url = reverse("accounts:group-limits", args=[group.pk])

    html = page(admin_client, url, {**BLANK_LIMITS, name: value})

    assert message in html.replace("&#x27;", "'")
    assert Limits.objects.get(group=group).requests_per_minute == 5  # nothing saved
    assert not AuditEntry.objects.filter(action=Action.LIMITS).exists()


def test_deleting_a_group_asks_first_saying_what_it_touches(
    admin_client,
    member,
    make_user,
    make_profile,  # noqa: F811
):
    group = Group.objects.create(name="Research")
    other = Group.objects.create(name="Interns")
    group.user_set.add(member, make_user("two@example.com"))
    Limits.objects.create(group=group, requests_per_minute=5)
    make_profile("Only research").allowed_groups.add(group)
    make_profile("Shared").allowed_groups.add(group, other)
    url = reverse("accounts:group-delete", args=[group.pk])

    html = page(admin_client, url)

    assert "Delete the group “Research”?" in html
    assert "2 members leave it" in html
    assert "2 profiles limited to it: Only research, Shared." in html
    assert "<strong>Only research</strong> will be limited to no group any more" in html
    assert Group.objects.filter(pk=group.pk).exists()  # asking deletes nothing

    html = page(admin_client, url, {})
    assert "Group “Research” deleted." in html
    assert not Group.objects.filter(pk=group.pk).exists()
    assert not Limits.objects.exists()
    member.refresh_from_db()  # the members stay, outside it
    assert list(member.groups.all()) == []


def test_an_admin_sets_a_persons_groups_and_own_limits_on_the_users_page(admin_client, member):
    research = Group.objects.create(name="Research")
    Group.objects.create(name="Interns")
    Limits.objects.create(group=research, requests_per_minute=10)
    url = reverse("accounts:user-sharing", args=[member.pk])
    assert f'href="{url}"' in page(admin_client, reverse("accounts:users"))

    data = {**BLANK_LIMITS, "groups": [research.pk], "tokens_per_day": "1000"}
    html = page(admin_client, url, data)

    assert [g.name for g in member.groups.all()] == ["Research"]
    assert Limits.objects.get(user=member).tokens_per_day == 1000
    assert "Groups and limits of member@example.com saved." in html
    assert "10 requests per minute (group Research)" in html
    assert "1,000 tokens per day (your own limit)" in html
    users = page(admin_client, reverse("accounts:users"))
    row = users.split(f'id="user-{member.pk}"')[1].split("</tr>")[0]
    assert "Research" in row and "1,000 tokens per day" in row

    page(admin_client, url, {**BLANK_LIMITS, "groups": []})  # all blank: the row goes
    assert not Limits.objects.filter(user=member).exists()
    assert list(member.groups.all()) == []

    html = page(admin_client, url, {**BLANK_LIMITS, "concurrent_requests": "0"})
    assert "Requests in flight at once: use a whole number from 1 to 10,000" in html
    assert not Limits.objects.filter(user=member).exists()


def test_unknown_groups_answer_404(admin_client):
    for name in ("group", "group-delete"):
        assert admin_client.get(reverse(f"accounts:{name}", args=[999])).status_code == 404
    for name in ("group-rename", "group-members", "group-limits"):
        assert admin_client.post(reverse(f"accounts:{name}", args=[999])).status_code == 404
