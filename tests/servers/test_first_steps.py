"""A fresh install says the first account becomes the admin; the admin's dashboard shows the
first steps (approve people, download a model, serve it), each checked from what is, until all
are done."""

from __future__ import annotations

from django.test import Client
from django.urls import reverse
from django.utils import timezone

from servers.models import ServerInstance
from tests.servers.helpers import install_model


def test_the_first_visit_of_a_fresh_install_says_the_first_account_becomes_the_admin(db):
    for url in (reverse("account_login"), reverse("account_signup")):
        page = Client().get(url).content.decode()
        assert 'data-testid="first-admin"' in page and "becomes the admin" in page


def test_once_someone_has_an_account_the_notice_is_gone(client, member):
    assert 'data-testid="first-admin"' not in client.get(reverse("account_login")).content.decode()


def _steps(client) -> dict[str, str] | None:
    response = client.get(reverse("home"))
    page = response.content.decode()
    if 'data-testid="first-steps"' not in page:
        return None
    return {key: page.split(f'data-step="{key}" data-done="')[1][0] for key in
            ("approve", "download", "serve")}  # fmt: skip


def test_the_admins_first_steps_follow_what_is_done(admin_member, make_user, hf_cache, settings):
    from models_catalog.models import Host
    from servers.models import ServerProfile

    admin = Client()
    admin.force_login(admin_member)
    assert _steps(admin) == {"approve": "0", "download": "0", "serve": "0"}
    waiting = make_user("waiting@example.com", status="pending")
    member = Client()
    member.force_login(make_user("member@example.com"))
    assert _steps(member) is None  # members see no admin steps
    assert _steps(admin)["approve"] == "0"  # someone waits
    waiting.status = "approved"
    waiting.save()
    assert _steps(admin)["approve"] == "1"
    install_model(hf_cache, "mlx-community/Tiny-A-4bit")
    assert _steps(admin) == {"approve": "1", "download": "1", "serve": "0"}
    profile = ServerProfile.objects.create(
        name="Tiny", slug="tiny", model_id="mlx-community/Tiny-A-4bit", port=8100,
        host=Host.objects.this_machine(), owner=admin_member,
    )  # fmt: skip
    profile.get_instance()
    assert _steps(admin)["serve"] == "0"  # a profile is not a served model yet
    ServerInstance.objects.filter(profile=profile).update(ready_at=timezone.now())
    assert _steps(admin) is None  # all done: the list is gone
