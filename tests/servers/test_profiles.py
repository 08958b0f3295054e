"""Profile form validation (tables of cases) and create / edit / duplicate / delete."""

import socket

import pytest
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.test import Client
from django.urls import reverse

from accounts.audit.models import AuditEntry
from models_catalog.models import Host
from servers.forms import ServerProfileForm
from servers.models import ServerInstance, ServerProfile, State
from servers.supervision.ports import suggest_port


def valid_data(**overrides) -> dict:
    data = {
        "name": "Tiny chat",
        "slug": "",
        "model_id": "mlx-community/Tiny-A-4bit",
        "host": Host.objects.this_machine().pk,
        "port": suggest_port(set(ServerProfile.objects.values_list("port", flat=True))),
        "description": "",
        "system_prompt": "You are terse.",
        "temperature": "0.7",
        "top_p": "1.0",
        "top_k": "0",
        "min_p": "0.0",
        "max_tokens": "512",
        "chat_template_args": "",
        "draft_model_id": "",
        "num_draft_tokens": "3",
        "prompt_cache_size": "10",
        "decode_concurrency": "32",
        "prompt_concurrency": "8",
        "kv_bits": "",
        "adapter_path": "",
        "idle_timeout_minutes": "0",
        "allow_on_demand": "on",
        "max_in_flight": "",
        "reserved_slots": "1",
        "queue_length": "64",
        "queue_wait_seconds": "120",
    }
    data.update(overrides)
    return data


INVALID = [
    ("name", {"name": "   "}, "name"),
    ("model not on disk", {"model_id": "acme/not-here"}, "not on this host's disk"),
    ("model not a repo id", {"model_id": "../../etc"}, "not on this host's disk"),
    ("port too low", {"port": "80"}, "1024 to 65535"),
    ("port not a number", {"port": "eighty"}, "whole number"),
    ("temperature too high", {"temperature": "3"}, "0 to 2"),
    ("negative temperature", {"temperature": "-0.1"}, "0 to 2"),
    ("top-p zero", {"top_p": "0"}, "0.01 to 1"),
    ("top-k huge", {"top_k": "5000"}, "0 to 1000"),
    ("min-p above one", {"min_p": "1.5"}, "0 to 1"),
    ("max tokens zero", {"max_tokens": "0"}, "1 to 131072"),
    ("chat template args not JSON", {"chat_template_args": "{enable_thinking: no}"}, "JSON"),
    ("chat template args a list", {"chat_template_args": "[1, 2]"}, "JSON object"),
    ("chat template args nested", {"chat_template_args": '{"a": {"b": 1}}'}, "no lists"),
    ("chat template args bad key", {"chat_template_args": '{"a b": 1}'}, "argument name"),
    ("chat template args too big", {"chat_template_args": '{"a": "' + "x" * 5000 + '"}'}, "4096"),
    ("draft not on disk", {"draft_model_id": "acme/nope"}, "not on this host's disk"),
    ("draft equals model", {"draft_model_id": "mlx-community/Tiny-A-4bit"}, "must differ"),
    ("draft tokens zero", {"draft_model_id": "acme/tiny-b", "num_draft_tokens": "0"}, "1 to 16"),
    ("decode concurrency zero", {"decode_concurrency": "0"}, "1 to 256"),
    ("prompt concurrency huge", {"prompt_concurrency": "1000"}, "1 to 64"),
    ("kv bits unsupported", {"kv_bits": "7"}, "Select a valid choice"),
    (
        "kv bits with draft",
        {"kv_bits": "4", "draft_model_id": "acme/tiny-b"},
        "cannot quantize the KV cache",
    ),
    ("adapter outside allowed dirs", {"adapter_path": "/etc"}, "outside the allowed"),
    ("adapter traversal", {"adapter_path": "../../../etc"}, "outside the allowed"),
    ("adapter under an unknown user's home", {"adapter_path": "~0"}, "Give an adapter directory"),
    ("adapter missing config", {"adapter_path": "missing"}, "adapter_config.json"),
    ("idle timeout negative", {"idle_timeout_minutes": "-1"}, "greater than or equal to 0"),
    ("idle timeout too long", {"idle_timeout_minutes": "999999"}, "0 to 10080"),
    (
        "requests at once zero",
        {"max_in_flight": "0"},
        "Requests at once: use a whole number "
        "from 1 to 1,024, or leave it blank for the decode concurrency.",
    ),
    ("requests at once huge", {"max_in_flight": "1025"}, "from 1 to 1,024"),
    (
        "slots kept negative",
        {"reserved_slots": "-1"},
        "Slots kept for others: use a whole number from 0 to 1,024.",
    ),
    ("slots kept blank", {"reserved_slots": ""}, "This field is required"),
    (
        "queue too long",
        {"queue_length": "10001"},
        "Queue length: use a whole number from 0 to 10,000.",
    ),
    (
        "wait zero",
        {"queue_wait_seconds": "0"},
        "Longest wait (seconds): use a whole number from 1 to 3,600.",
    ),
    ("wait not a number", {"queue_wait_seconds": "soon"}, "from 1 to 3,600"),
    (
        "slots kept equal to requests at once",
        {"max_in_flight": "4", "reserved_slots": "4"},
        "Keep at least one slot for the person using it: slots kept for others must be fewer "
        "than requests at once (4).",
    ),
    (
        "slots kept equal to decode concurrency",
        {"decode_concurrency": "2", "reserved_slots": "3"},
        "fewer than requests at once (2).",
    ),
    ("reserved slug", {"slug": "new"}, "reserved"),
    ("bad slug", {"slug": "a b!"}, "slug"),
]


@pytest.mark.parametrize(("label", "overrides", "message"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid_profile_fields_get_a_clear_message(
    local_models, adapter_dir, admin_member, label, overrides, message
):
    form = ServerProfileForm(valid_data(**overrides), user=admin_member)
    assert not form.is_valid()
    errors = " ".join(e for field_errors in form.errors.values() for e in field_errors)
    assert message.lower() in errors.lower(), errors


VALID = [
    ("defaults", {}),
    ("thinking off", {"chat_template_args": '{"enable_thinking": false}'}),
    ("draft model", {"draft_model_id": "acme/tiny-b", "num_draft_tokens": "4"}),
    ("kv bits", {"kv_bits": "8"}),
    ("adapter relative", {"adapter_path": "my-lora"}),
    ("idle and auto-start", {"idle_timeout_minutes": "30", "auto_start": "on"}),
    (
        "fair queue",
        {
            "max_in_flight": "2",
            "reserved_slots": "1",
            "queue_length": "0",
            "queue_wait_seconds": "3600",
        },
    ),
    ("nothing kept for others", {"decode_concurrency": "1", "reserved_slots": "0"}),
]


@pytest.mark.parametrize(("label", "overrides"), VALID, ids=[c[0] for c in VALID])
def test_valid_profiles_save(local_models, adapter_dir, member, label, overrides):
    form = ServerProfileForm(valid_data(**overrides), user=member)
    assert form.is_valid(), form.errors
    profile = form.save(commit=False)
    profile.owner = member
    profile.save()
    assert profile.slug == "tiny-chat"
    if "adapter_path" in overrides:
        assert profile.adapter_path == str((adapter_dir / "my-lora").resolve())
    if "chat_template_args" in overrides:
        assert profile.chat_template_args == {"enable_thinking": False}


def test_port_used_by_another_profile_is_refused(local_models, member, make_profile):
    other = make_profile("Other")
    form = ServerProfileForm(valid_data(port=str(other.port)), user=member)
    assert not form.is_valid()
    assert "used by the profile “Other”" in form.errors["port"][0]


def test_port_busy_at_the_os_is_refused_naming_the_holder(local_models, member):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        form = ServerProfileForm(valid_data(port=str(port)), user=member)
        assert not form.is_valid()
    assert f"Port {port} is in use on this host" in form.errors["port"][0]
    assert "python" in form.errors["port"][0]  # the holder: this test process


def test_a_member_cannot_turn_on_trust_remote_code(local_models, member):
    form = ServerProfileForm(valid_data(trust_remote_code="on"), user=member)
    assert form.is_valid()  # the field is disabled for members: the posted value is ignored
    assert form.cleaned_data["trust_remote_code"] is False


def test_an_admin_can_turn_on_trust_remote_code(local_models, admin_member):
    form = ServerProfileForm(valid_data(trust_remote_code="on"), user=admin_member)
    assert form.is_valid(), form.errors
    assert form.cleaned_data["trust_remote_code"] is True


def test_new_profile_form_suggests_a_free_port(local_models, member_client):
    response = member_client.get(reverse("servers:profile-create"))
    port = response.context["form"].initial["port"]
    low, high = response.context["form"].fields["port"].widget.attrs["min"], 65535
    assert low <= port <= high


def test_create_records_the_owner(local_models, member, member_client):
    response = member_client.post(reverse("servers:profile-create"), valid_data())
    assert response.status_code == 302
    profile = ServerProfile.objects.get(slug="tiny-chat")
    assert profile.owner == member
    assert profile.instance.state == State.STOPPED


def test_edit_keeps_a_model_that_left_the_disk(local_models, member_client, make_profile):
    profile = make_profile("Gone", model_id="acme/deleted-model")
    data = valid_data(name="Gone", slug="gone", model_id="acme/deleted-model", port=profile.port)
    data["description"] = "still editable"
    response = member_client.post(reverse("servers:profile-edit", args=[profile.slug]), data)
    assert response.status_code == 302, response.context["form"].errors
    profile.refresh_from_db()
    assert profile.description == "still editable"


def test_duplicate_copies_settings_with_a_new_name_and_port(
    local_models, admin_member, admin_client, make_profile
):
    source = make_profile("Source", temperature=0.4, chat_template_args={"enable_thinking": False})
    page = admin_client.get(reverse("servers:profile-duplicate", args=[source.slug]))
    form = page.context["form"]
    assert form.initial["name"] == "Copy of Source"
    assert form.initial["temperature"] == 0.4
    data = valid_data(name="Copy of Source", chat_template_args='{"enable_thinking": false}')
    response = admin_client.post(reverse("servers:profile-duplicate", args=[source.slug]), data)
    assert response.status_code == 302
    copy = ServerProfile.objects.get(slug="copy-of-source")
    assert copy.owner == admin_member
    assert copy.port != source.port
    assert copy.chat_template_args == {"enable_thinking": False}


def test_a_member_duplicating_a_trust_remote_code_profile_gets_a_copy_without_it(
    local_models, member, member_client, make_profile, admin_member
):
    # The form's checkbox is disabled for members: a copy that kept it on could not be saved,
    # nor the box unticked (the outside attack's finding 9).
    source = make_profile("Trusted", owner=admin_member, trust_remote_code=True)
    url = reverse("servers:profile-duplicate", args=[source.slug])
    page = member_client.get(url)
    form = page.context["form"]
    assert form.initial["trust_remote_code"] is False
    assert "this copy runs without it" in page.content.decode()
    response = member_client.post(url, valid_data(name="My copy", trust_remote_code="on"))
    assert response.status_code == 302, response.context["form"].errors
    copy = ServerProfile.objects.get(slug="my-copy")
    assert copy.owner == member and copy.trust_remote_code is False


def test_a_member_can_turn_trust_remote_code_off_but_not_back_on(
    local_models, member, member_client, make_profile
):
    profile = make_profile("Mine", trust_remote_code=True)  # an admin turned it on
    edit = reverse("servers:profile-edit", args=[profile.slug])
    assert not member_client.get(edit).context["form"].fields["trust_remote_code"].disabled
    data = valid_data(name="Mine", slug="mine", port=str(profile.port))
    assert member_client.post(edit, data).status_code == 302  # the box unticked
    profile.refresh_from_db()
    assert profile.trust_remote_code is False
    assert member_client.get(edit).context["form"].fields["trust_remote_code"].disabled
    member_client.post(edit, {**data, "trust_remote_code": "on"})
    profile.refresh_from_db()
    assert profile.trust_remote_code is False


def test_delete_is_refused_while_running(member_client, make_profile):
    profile = make_profile()
    ServerInstance.objects.filter(pk=profile.get_instance().pk).update(state=State.RUNNING)
    response = member_client.post(reverse("servers:profile-delete", args=[profile.slug]))
    assert response.status_code == 302
    assert ServerProfile.objects.filter(pk=profile.pk).exists()
    follow = member_client.get(reverse("servers:list"))
    assert "stop the server before deleting" in follow.content.decode()


@pytest.mark.parametrize("state", [State.STARTING, State.RUNNING, State.STOPPING])
def test_the_django_admin_refuses_to_delete_a_live_servers_profile(
    admin_client, make_profile, state
):
    live, stopped = make_profile("Live"), make_profile("Idle")
    ServerInstance.objects.filter(pk=live.get_instance().pk).update(state=state)
    # The delete page of one profile sends back to it, with the reason.
    response = admin_client.post(f"/admin/servers/serverprofile/{live.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert response["Location"] == f"/admin/servers/serverprofile/{live.pk}/change/"
    # The bulk action deletes nothing when one of the profiles is live, and says why.
    changelist = "/admin/servers/serverprofile/"
    response = admin_client.post(
        changelist,
        {"action": "delete_stopped", "_selected_action": [live.pk, stopped.pk], "post": "yes"},
        follow=True,
    )
    assert f"“Live” is {state}: stop the server before deleting its profile." in response.text
    assert ServerProfile.objects.filter(pk__in=[live.pk, stopped.pk]).count() == 2
    assert "delete_selected" not in admin_client.get(changelist).text  # no way around it
    # Stopped profiles still go, through the same action (after its confirmation page).
    admin_client.post(
        changelist, {"action": "delete_stopped", "_selected_action": [stopped.pk], "post": "yes"}
    )
    assert not ServerProfile.objects.filter(pk=stopped.pk).exists()


def test_delete_removes_a_stopped_profile(member_client, make_profile):
    profile = make_profile()
    response = member_client.post(reverse("servers:profile-delete", args=[profile.slug]))
    assert response.status_code == 302
    assert not ServerProfile.objects.filter(pk=profile.pk).exists()


def test_picker_filters_on_name_and_model(member_client, make_profile):
    make_profile("Qwen chat", model_id="mlx-community/Qwen3-4B-4bit")
    make_profile("Coder", model_id="acme/llama-coder")
    by_name = member_client.get(reverse("servers:picker"), {"q": "qwen"}).content.decode()
    by_model = member_client.get(reverse("servers:picker"), {"q": "llama"}).content.decode()
    assert "Qwen chat" in by_name and "Coder" not in by_name
    assert "Coder" in by_model and "Qwen chat" not in by_model


def test_servers_page_search_filters_tiles(member_client, make_profile):
    make_profile("Qwen chat", model_id="mlx-community/Qwen3-4B-4bit")
    make_profile("Coder", model_id="acme/llama-coder")
    html = member_client.get(
        reverse("servers:list"), {"q": "coder"}, headers={"HX-Request": "true"}
    ).content.decode()
    assert "Coder" in html and "Qwen chat" not in html


# --- Sharing: the fair queue's settings, and the groups a profile is limited to -------------


def test_the_sharing_fieldset_shows_the_queue_fields_and_groups_to_admins_only(
    local_models, member_client, admin_member, make_profile
):
    profile = make_profile("Shared")
    edit = reverse("servers:profile-edit", args=[profile.slug])
    Group.objects.create(name="Research")

    mine = member_client.get(edit).content.decode()
    assert "<legend><strong>Sharing</strong></legend>" in mine
    for name in ("max_in_flight", "reserved_slots", "queue_length", "queue_wait_seconds"):
        assert f'name="{name}"' in mine
    assert 'name="allowed_groups"' not in mine

    admin = Client()
    admin.force_login(admin_member)
    assert 'name="allowed_groups"' in admin.get(edit).content.decode()
    new = admin.get(reverse("servers:profile-create")).content.decode()
    assert 'name="allowed_groups"' in new
    assert (
        'name="allowed_groups"'
        not in member_client.get(reverse("servers:profile-create")).content.decode()
    )


def test_a_new_profile_or_a_copy_gets_its_group_rule(
    local_models, member, member_client, admin_member, make_profile
):
    research = Group.objects.create(name="Research")
    research.user_set.add(member)
    admin = Client()
    admin.force_login(admin_member)
    data = valid_data(name="Fresh", slug="fresh")
    response = admin.post(
        reverse("servers:profile-create"), {**data, "allowed_groups": [research.pk]}
    )
    assert response.status_code == 302, response.context["form"].errors
    fresh = ServerProfile.objects.get(slug="fresh")
    assert list(fresh.allowed_groups.all()) == [research]

    # A member's copy keeps the source's rule (they cannot set one, nor drop it by copying).
    copy = valid_data(name="Copy", slug="copy")
    response = member_client.post(
        reverse("servers:profile-duplicate", args=["fresh"]), {**copy, "allowed_groups": []}
    )
    assert response.status_code == 302, response.context["form"].errors
    assert list(ServerProfile.objects.get(slug="copy").allowed_groups.all()) == [research]


def test_an_admin_limits_a_profile_to_groups_and_the_edit_is_audited(
    local_models, admin_member, make_profile
):
    profile = make_profile("Shared")
    research, interns = Group.objects.create(name="Research"), Group.objects.create(name="Interns")
    client = Client()
    client.force_login(admin_member)
    edit = reverse("servers:profile-edit", args=[profile.slug])
    data = valid_data(name="Shared", slug="shared", port=profile.port, max_in_flight="4")

    response = client.post(edit, {**data, "allowed_groups": [research.pk, interns.pk]})

    assert response.status_code == 302, response.context["form"].errors
    profile.refresh_from_db()
    assert sorted(g.name for g in profile.allowed_groups.all()) == ["Interns", "Research"]
    assert profile.max_in_flight == 4 and profile.slots == 4
    entry = AuditEntry.objects.get(action="profile.edit")
    assert (entry.before["max_in_flight"], entry.after["max_in_flight"]) == (None, 4)
    assert entry.before["allowed_groups"] == []
    assert entry.after["allowed_groups"] == ["Interns", "Research"]

    client.post(edit, {**data, "allowed_groups": []})  # none: everyone again
    assert not profile.allowed_groups.exists()


def test_an_owner_who_is_not_admin_keeps_the_profiles_groups_whatever_is_posted(
    local_models, member, member_client, make_profile
):
    profile = make_profile("Mine", owner=member)
    research, interns = Group.objects.create(name="Research"), Group.objects.create(name="Interns")
    profile.allowed_groups.add(research)
    research.user_set.add(member)  # so the owner still sees it
    edit = reverse("servers:profile-edit", args=[profile.slug])
    data = valid_data(name="Mine", slug="mine", port=profile.port, queue_length="8")

    response = member_client.post(edit, {**data, "allowed_groups": [interns.pk]})

    assert response.status_code == 302, response.context["form"].errors
    profile.refresh_from_db()
    assert profile.queue_length == 8
    assert list(profile.allowed_groups.all()) == [research]
    member_client.post(edit, data)  # posting none does not open it either
    assert list(profile.allowed_groups.all()) == [research]


def test_the_django_admin_applies_the_slots_rule_too(local_models, make_profile):
    profile = make_profile("Shared", decode_concurrency=2, reserved_slots=2)
    with pytest.raises(ValidationError) as refused:
        profile.full_clean()
    assert "fewer than requests at once (2)" in str(refused.value.message_dict["reserved_slots"])
    profile.max_in_flight = 3
    profile.full_clean()  # 2 kept of 3: one left for the person using it
