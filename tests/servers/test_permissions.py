"""Owner or admin edits and deletes a profile; any member runs any profile."""

import pytest
from django.urls import reverse

from servers.models import ServerProfile


@pytest.fixture
def others_profile(make_profile, make_user):
    owner = make_user("owner@example.com")
    return make_profile("Theirs", owner=owner)


@pytest.mark.parametrize("action", ["servers:profile-edit", "servers:profile-delete"])
def test_a_member_cannot_change_someone_elses_profile(member_client, others_profile, action):
    url = reverse(action, args=[others_profile.slug])
    assert member_client.get(url).status_code == 403
    assert member_client.post(url, {"name": "hijacked"}).status_code == 403
    others_profile.refresh_from_db()
    assert others_profile.name == "Theirs"
    assert ServerProfile.objects.filter(pk=others_profile.pk).exists()


@pytest.mark.parametrize("action", ["servers:profile-edit", "servers:profile-delete"])
def test_the_owner_and_an_admin_may_change_a_profile(client, admin_member, others_profile, action):
    url = reverse(action, args=[others_profile.slug])
    client.force_login(others_profile.owner)
    assert client.get(url).status_code == 200
    client.force_login(admin_member)
    assert client.get(url).status_code == 200


def test_any_member_may_duplicate_a_profile(member_client, others_profile):
    url = reverse("servers:profile-duplicate", args=[others_profile.slug])
    assert member_client.get(url).status_code == 200


def test_tiles_offer_edit_and_delete_only_where_allowed(
    member_client, member, make_profile, others_profile
):
    mine = make_profile("Mine", owner=member)
    html = member_client.get(reverse("servers:list")).content.decode()
    assert reverse("servers:profile-edit", args=[mine.slug]) in html
    assert reverse("servers:profile-edit", args=[others_profile.slug]) not in html


def test_only_an_admin_may_skip_the_memory_check(member_client, others_profile):
    url = reverse("servers:server-start", args=[others_profile.slug])
    assert member_client.post(url, {"override_memory": "1"}).status_code == 403


def test_actions_need_post(member_client, others_profile):
    for action in ("servers:server-start", "servers:server-stop", "servers:server-restart"):
        assert member_client.get(reverse(action, args=[others_profile.slug])).status_code == 405
