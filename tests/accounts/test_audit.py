"""The audit log: every audited action leaves exactly one entry naming the right actor; entries
cannot be changed or deleted except by `prune_audit`; the Audit page filters, pages and exports
CSV; a member reads only the entries about their own account and what they own."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import timedelta

import pytest
from django.contrib.auth.models import Group
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from accounts import approval
from accounts.api_keys import create_api_key
from accounts.audit import log as audit
from accounts.audit.models import AppendOnlyError, AuditEntry
from accounts.models import Limits, User
from models_catalog.models import Download, Host
from servers import operations
from servers.models import ServerInstance, State
from servers.supervision import lifecycle
from tests.accounts.test_last_admin import _change_form_data
from tests.servers.conftest import (  # noqa: F401 (the servers' fixtures, used here too)
    clean_queues,
    hf_cache,
    local_models,
    make_profile,
)
from tests.servers.test_profiles import valid_data
from tests.support import fake_hub

A = audit.Action


@dataclass
class World:
    member: User
    admin: User
    member_client: Client
    admin_client: Client
    profile: object


@pytest.fixture
def world(member, admin_member, local_models, make_profile, clean_queues, hub, settings):  # noqa: F811
    settings.HF_ENDPOINT = hub.url
    settings.HF_TOKEN = ""
    member_client, admin_client = Client(), Client()
    member_client.force_login(member)
    admin_client.force_login(admin_member)
    profile = make_profile("Shared", owner=member)
    return World(member, admin_member, member_client, admin_client, profile)


def post(client: Client, name: str, *args, data=None, **kwargs):
    response = client.post(reverse(name, args=args or None, kwargs=kwargs or None), data or {})
    assert response.status_code in (200, 302), response.content.decode()[:500]
    return response


# Setups: what the action needs first (its entries are not counted).


def someone(w: World, status="approved") -> User:
    return User.objects.create_user("someone", "someone@example.com", "x", status=status)


def someone_pending(w: World) -> User:
    return someone(w, "pending")


def someone_admin(w: World) -> User:
    return approval.make_admin([someone(w)], by=w.admin)[0]


def someone_and_a_group(w: World) -> User:
    Group.objects.create(name="interns")
    return someone(w)


def a_group(w: World) -> Group:
    group = Group.objects.create(name="Research")
    group.user_set.add(w.member)
    return group


def a_group_with_limits(w: World) -> Group:
    group = a_group(w)
    Limits.objects.create(group=group, requests_per_minute=60)
    return group


def own_limits(w: World) -> User:
    Limits.objects.create(user=w.member, tokens_per_day=1000)
    return w.member


NO_LIMITS = {"requests_per_minute": "", "tokens_per_day": "", "concurrent_requests": ""}


def limits_page(name: str, **values):
    return lambda w, obj: post(w.admin_client, name, obj.pk, data={**NO_LIMITS, **values})


def limits_inline(row: Limits | None = None, **values) -> dict:
    """The Django admin's limits inline as a browser posts it."""
    data = {"limits-TOTAL_FORMS": "1", "limits-INITIAL_FORMS": "1" if row else "0",
            "limits-0-id": row.pk if row else ""}  # fmt: skip
    for name in NO_LIMITS:
        data[f"limits-0-{name}"] = values.get(name, getattr(row, name, None) or "")
    return data


def group_admin(w: World, group: Group | None, **data):
    url = f"/admin/auth/group/{group.pk}/change/" if group else "/admin/auth/group/add/"
    response = w.admin_client.post(url, data)
    assert response.status_code == 302, response.content.decode()[:3000]


def a_key(w: World):
    return create_api_key(w.member, "old").api_key


def started(w: World):
    lifecycle.request_start(w.profile, w.member)


def failed_and_due_for_restart(w: World):
    ServerInstance.objects.filter(pk=w.profile.get_instance().pk).update(
        state=State.FAILED, desired_state="running", next_restart_at=timezone.now(), pid=None
    )


def auto_start_on(w: World):
    type(w.profile).objects.filter(pk=w.profile.pk).update(auto_start=True)


def a_download(w: World) -> Download:
    return Download.objects.create(
        repo_id="test-org/tiny-llama", revision="a" * 40, host=Host.objects.this_machine(),
        requested_by=w.member, state=Download.State.QUEUED,
    )  # fmt: skip


def hub_token_set(w: World, *_):
    post(
        w.admin_client, "catalog:hub-token", data={"action": "save", "token": fake_hub.VALID_TOKEN}
    )


# Actions: as people do them (through the pages), and as the system's parts do.


def sign_up(w: World, _):
    password = "correct-horse-battery-staple"
    data = {"email": "new@example.com", "password1": password, "password2": password}
    Client().post(reverse("account_signup"), data)


def users_page(action: str):
    return lambda w, user: post(w.admin_client, "accounts:user-action", user.pk, action)


def admin_change(w: World, user: User, **changes):
    w.admin_client.post(
        f"/admin/accounts/user/{user.pk}/change/", _change_form_data(user, **changes)
    )


def edit_profile(w: World, _):
    data = valid_data(name="Shared", slug="shared", port=w.profile.port, temperature="0.2")
    post(w.member_client, "servers:profile-edit", slug="shared", data=data)


def on_demand(w: World, _):
    with pytest.raises(lifecycle.ServerUnavailable):  # no worker: it is still starting
        lifecycle.ensure_running(w.profile, timeout=0)


def supervise(w: World, _):
    lifecycle.reconcile_instance(ServerInstance.objects.get(profile=w.profile))


def start_download(w: World, _):
    data = {"repo_id": "test-org/tiny-llama", "revision": "main"}
    post(w.member_client, "catalog:download-start", data=data)


MODEL = "acme/tiny-b"  # on disk (local_models), used by no server
ACTIONS = [
    ("password sign-up", A.SIGNUP, "new@example.com", None, sign_up),
    ("approved on the Users page", A.APPROVE, "admin", someone_pending, users_page("approve")),
    ("disabled on the Users page", A.DISABLE, "admin", someone, users_page("disable")),
    ("made admin", A.MAKE_ADMIN, "admin", someone, users_page("make-admin")),
    ("admin rights removed", A.REMOVE_ADMIN, "admin", someone_admin, users_page("remove-admin")),
    ("set back to pending in the Django admin", A.PEND, "admin", someone,
     lambda w, u: admin_change(w, u, status="pending")),
    ("groups changed in the Django admin", A.GROUPS, "admin", someone_and_a_group,
     lambda w, u: admin_change(w, u, groups=[Group.objects.get().pk])),
    ("account deleted in the Django admin", A.USER_DELETE, "admin", someone,
     lambda w, u: w.admin_client.post(f"/admin/accounts/user/{u.pk}/delete/", {"post": "yes"})),
    ("groups set on the Users page", A.GROUPS, "admin", someone_and_a_group,
     lambda w, u: post(w.admin_client, "accounts:user-sharing", u.pk,
                       data={**NO_LIMITS, "groups": [Group.objects.get().pk]})),
    ("own limits set on the Users page", A.LIMITS, "admin", None,
     lambda w, _: limits_page("accounts:user-sharing", tokens_per_day="5")(w, w.member)),
    ("own limits removed on the Users page", A.LIMITS, "admin", own_limits,
     limits_page("accounts:user-sharing")),
    ("group created", A.GROUP_CREATE, "admin", None,
     lambda w, _: post(w.admin_client, "accounts:groups", data={"name": "Research"})),
    ("group renamed", A.GROUP_RENAME, "admin", a_group,
     lambda w, g: post(w.admin_client, "accounts:group-rename", g.pk, data={"name": "Lab"})),
    ("group members set", A.GROUP_MEMBERS, "admin", a_group,
     lambda w, g: post(w.admin_client, "accounts:group-members", g.pk,
                       data={"members": [w.admin.pk]})),
    ("group limits set", A.LIMITS, "admin", a_group, limits_page("accounts:group-limits",
                                                                 concurrent_requests="2")),
    ("group limits changed", A.LIMITS, "admin", a_group_with_limits,
     limits_page("accounts:group-limits", requests_per_minute="30")),
    ("group limits removed", A.LIMITS, "admin", a_group_with_limits,
     limits_page("accounts:group-limits")),
    ("group deleted", A.GROUP_DELETE, "admin", a_group_with_limits,
     lambda w, g: post(w.admin_client, "accounts:group-delete", g.pk)),
    ("group created in the Django admin", A.GROUP_CREATE, "admin", None,
     lambda w, _: group_admin(w, None, name="Research", **limits_inline())),
    ("group renamed in the Django admin", A.GROUP_RENAME, "admin", a_group,
     lambda w, g: group_admin(w, g, name="Lab", **limits_inline())),
    ("group limits set in the Django admin", A.LIMITS, "admin", a_group,
     lambda w, g: group_admin(w, g, name=g.name, **limits_inline(requests_per_minute="9"))),
    ("group deleted in the Django admin", A.GROUP_DELETE, "admin", a_group_with_limits,
     lambda w, g: w.admin_client.post(f"/admin/auth/group/{g.pk}/delete/", {"post": "yes"})),
    ("own limits changed in the Django admin's user", A.LIMITS, "admin", own_limits,
     lambda w, u: admin_change(w, u, **limits_inline(Limits.objects.get(user=u),
                                                     tokens_per_day="7"))),
    ("limits changed on their Django admin page", A.LIMITS, "admin", a_group_with_limits,
     lambda w, g: w.admin_client.post(f"/admin/accounts/limits/{g.limits.pk}/change/",
                                      {**NO_LIMITS, "requests_per_minute": "1"})),
    ("limits deleted on their Django admin page", A.LIMITS, "admin", a_group_with_limits,
     lambda w, g: w.admin_client.post(f"/admin/accounts/limits/{g.limits.pk}/delete/",
                                      {"post": "yes"})),
    ("API key created", A.KEY_CREATE, "member", None,
     lambda w, _: post(w.member_client, "accounts:api-keys", data={"name": "laptop"})),
    ("API key revoked", A.KEY_REVOKE, "member", a_key,
     lambda w, key: post(w.member_client, "accounts:api-key-revoke", key.pk)),
    ("profile created", A.PROFILE_CREATE, "member", None,
     lambda w, _: post(w.member_client, "servers:profile-create", data=valid_data(name="Fresh"))),
    ("profile edited", A.PROFILE_EDIT, "member", None, edit_profile),
    ("profile deleted", A.PROFILE_DELETE, "admin", None,
     lambda w, _: post(w.admin_client, "servers:profile-delete", slug="shared")),
    ("server started by a person", A.SERVER_START, "admin", None,
     lambda w, _: post(w.admin_client, "servers:server-start", slug="shared")),
    ("server stopped by a person", A.SERVER_STOP, "admin", started,
     lambda w, _: post(w.admin_client, "servers:server-stop", slug="shared")),
    ("server restarted by a person", A.SERVER_RESTART, "admin", started,
     lambda w, _: post(w.admin_client, "servers:server-restart", slug="shared")),
    ("server restarted by the supervisor", A.SERVER_RESTART, "system: supervisor",
     failed_and_due_for_restart, supervise),
    ("server started on demand", A.SERVER_START, "system: on-demand start", None, on_demand),
    ("server started by auto-start", A.SERVER_START, "system: auto-start", auto_start_on,
     lambda w, _: lifecycle.autostart()),
    ("servers stopped by an operator", A.SERVER_STOP, "system: operator command", started,
     lambda w, _: operations.stop_all(Host.objects.this_machine(), reason="maintenance")),
    ("download started", A.DOWNLOAD_START, "member", None, start_download),
    ("download cancelled", A.DOWNLOAD_CANCEL, "member", a_download,
     lambda w, d: post(w.member_client, "catalog:download-cancel", d.pk)),
    ("model deleted", A.MODEL_DELETE, "admin", None,
     lambda w, _: post(w.admin_client, "catalog:local-model-delete", data={"repo_id": MODEL})),
    ("Hugging Face token set", A.SETTING_CHANGE, "admin", None, hub_token_set),
    ("Hugging Face token removed", A.SETTING_CHANGE, "admin", hub_token_set,
     lambda w, _: post(w.admin_client, "catalog:hub-token", data={"action": "remove"})),
    ("audit log pruned", A.AUDIT_PRUNE, "system: operator command", None,
     lambda w, _: call_command("prune_audit", "--older-than", "30", stdout=io.StringIO())),
]  # fmt: skip
# The idle stop is checked with a real model server in tests/servers/test_supervisor.py, and
# single sign-on's approvals, group changes and links in tests/accounts/test_sso.py.


@pytest.mark.parametrize(
    ("kind", "who", "setup", "act"), [a[1:] for a in ACTIONS], ids=[a[0] for a in ACTIONS]
)
def test_each_audited_action_leaves_exactly_one_entry_naming_its_actor(
    world, kind, who, setup, act
):
    target = setup(world) if setup else None
    last = AuditEntry.objects.order_by("-pk").values_list("pk", flat=True).first() or 0

    act(world, target)

    entries = list(AuditEntry.objects.filter(pk__gt=last))
    assert [entry.action for entry in entries] == [kind], [str(e) for e in entries]
    entry = entries[0]
    person = {"member": world.member, "admin": world.admin}.get(who)
    assert entry.actor_label == (person.email if person else who)
    if person is not None:
        assert entry.actor_id == person.pk
        assert entry.address == "127.0.0.1"  # the test client's address, through the middleware
    elif who.startswith("system:"):
        assert entry.actor_id is None and entry.address is None  # no request behind it
    assert fake_hub.VALID_TOKEN not in f"{entry.before} {entry.after} {entry.detail}"


def test_an_edit_records_only_the_fields_that_changed_before_and_after(world):
    data = valid_data(name="Shared", slug="shared", port=world.profile.port, temperature="0.2")
    post(world.member_client, "servers:profile-edit", slug="shared", data=data)
    entry = AuditEntry.objects.get(action=A.PROFILE_EDIT)
    assert entry.owner_id == world.member.pk
    assert entry.object_label == "Shared" and entry.object_type == "server profile"
    assert "temperature" in entry.after and "name" not in entry.after
    assert entry.before["temperature"] != entry.after["temperature"]


def test_entries_cannot_be_changed_or_deleted_by_the_portal(member):
    entry = audit.record(member, A.KEY_CREATE, member)
    entry.detail = "rewritten"
    with pytest.raises(AppendOnlyError):
        entry.save()
    with pytest.raises(AppendOnlyError):
        entry.delete()
    with pytest.raises(AppendOnlyError):
        AuditEntry.objects.filter(pk=entry.pk).update(detail="rewritten")
    with pytest.raises(AppendOnlyError):
        AuditEntry.objects.all().delete()
    assert AuditEntry.objects.get(pk=entry.pk).detail == ""


def test_the_django_admin_shows_entries_read_only(admin_client, member):
    entry = audit.record(member, A.KEY_CREATE, member)
    assert admin_client.get("/admin/audit/auditentry/").status_code == 200
    page = admin_client.get(f"/admin/audit/auditentry/{entry.pk}/change/")
    assert page.status_code == 200 and b'name="detail"' not in page.content  # nothing to edit
    assert admin_client.post(f"/admin/audit/auditentry/{entry.pk}/change/", {}).status_code == 403
    assert (
        admin_client.post(
            f"/admin/audit/auditentry/{entry.pk}/delete/", {"post": "yes"}
        ).status_code
        == 403
    )
    assert admin_client.get("/admin/audit/auditentry/add/").status_code == 403
    assert AuditEntry.objects.filter(pk=entry.pk).exists()


def test_prune_removes_only_old_entries_and_records_itself(member):
    old = AuditEntry.objects.create(
        actor_label=member.email, action=A.KEY_CREATE, at=timezone.now() - timedelta(days=40)
    )
    recent = audit.record(member, A.KEY_REVOKE, member)
    out = io.StringIO()
    call_command("prune_audit", "--older-than", "30", "--dry-run", stdout=out)
    assert "1 audit entry would be removed" in out.getvalue()
    assert AuditEntry.objects.filter(pk=old.pk).exists()

    call_command("prune_audit", "--older-than", "30", stdout=out)
    assert not AuditEntry.objects.filter(pk=old.pk).exists()
    assert AuditEntry.objects.filter(pk=recent.pk).exists()
    pruned = AuditEntry.objects.get(action=A.AUDIT_PRUNE)
    assert pruned.after == {"removed": 1, "older_than_days": 30}
    for bad, message in [("0", "1 day or more"), ("soon", "whole number"), ("-3", "1 day or more")]:
        with pytest.raises(CommandError, match=message):
            call_command("prune_audit", "--older-than", bad)


def test_the_audit_page_filters_pages_and_exports_csv(admin_client, admin_member, member):
    for index in range(55):
        audit.record(member, A.KEY_CREATE, member, detail=f"key {index}")
    audit.record(admin_member, A.APPROVE, member, after={"status": "approved"})
    audit.record(audit.SUPERVISOR, A.SERVER_RESTART, audit.Target("server profile", "9", "Tiny"))
    url = reverse("accounts:audit")

    page = admin_client.get(url)
    assert page.context["page"].paginator.count == 57 and len(page.context["page"]) == 50
    assert admin_client.get(url, {"page": "2"}).context["page"].number == 2
    by_kind = admin_client.get(url, {"action": A.APPROVE})
    assert [e.actor_label for e in by_kind.context["page"]] == ["admin@example.com"]
    by_person = admin_client.get(url, {"person": "admin@"})
    assert {e.action for e in by_person.context["page"]} == {A.APPROVE}
    by_object = admin_client.get(url, {"object": "tiny"}, headers={"HX-Request": "true"})
    assert [e.actor_label for e in by_object.context["page"]] == ["system: supervisor"]
    assert b"<html" not in by_object.content  # the fragment only
    today = timezone.localdate()
    tomorrow, yesterday = today + timedelta(days=1), today - timedelta(days=1)
    assert admin_client.get(url, {"since": tomorrow}).context["page"].paginator.count == 0
    swapped = admin_client.get(url, {"since": today, "until": yesterday})
    assert "swap the dates" in swapped.content.decode()
    unknown = admin_client.get(url, {"action": "nope"})
    assert "Pick a kind from the list" in unknown.content.decode()

    export = admin_client.get(reverse("accounts:audit-export"), {"action": A.KEY_CREATE})
    assert export["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(export.content.decode())))
    assert len(rows) == 55 and {row["kind"] for row in rows} == {A.KEY_CREATE}
    assert rows[0]["who"] == "member@example.com" and rows[0]["from"] == ""


def test_a_spreadsheet_formula_in_an_entry_is_not_run_from_the_export(admin_client, member):
    audit.record(member, A.PROFILE_CREATE, audit.Target("server profile", "1", "=HYPERLINK(1)"))
    export = admin_client.get(reverse("accounts:audit-export"))
    (row,) = csv.DictReader(io.StringIO(export.content.decode()))
    assert row["object"] == "'=HYPERLINK(1)"
