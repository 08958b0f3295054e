"""The profile form offers, for each host, the models its worker reported; it refuses a model
that is not on the chosen host's disk."""

import pytest
from django.utils import timezone

from models_catalog.models import Host
from servers.forms import ServerProfileForm
from tests.servers.test_profiles import valid_data

pytestmark = pytest.mark.django_db


@pytest.fixture
def beta(local_models):
    return Host.objects.create(
        name="beta", last_heartbeat=timezone.now(),
        local_models=[{"repo_id": "acme/only-on-beta", "size": 10},
                      {"repo_id": "acme/tiny-b", "size": 10}],
    )  # fmt: skip


def test_model_choices_are_grouped_by_host_from_what_each_reported(beta, member):
    form = ServerProfileForm(user=member)
    groups = dict(form.fields["model_id"].choices[1:])
    assert sorted(groups) == sorted([f"On {Host.objects.this_machine().name}", "On beta"])
    assert [value for value, _ in groups["On beta"]] == ["acme/only-on-beta", "acme/tiny-b"]
    assert "mlx-community/Tiny-A-4bit" in [
        v for v, _ in groups[f"On {Host.objects.this_machine().name}"]
    ]
    html = form.as_p()
    assert '<optgroup label="On beta">' in html


def test_a_model_must_be_on_the_chosen_hosts_disk(beta, member):
    on_beta = ServerProfileForm(valid_data(model_id="acme/only-on-beta", host=beta.pk), user=member)
    assert on_beta.is_valid(), on_beta.errors
    here = ServerProfileForm(valid_data(model_id="acme/only-on-beta"), user=member)
    assert not here.is_valid()
    assert (
        "not on host " + Host.objects.this_machine().name + "'s disk" in here.errors["model_id"][0]
    )
    wrong = ServerProfileForm(
        valid_data(model_id="mlx-community/Tiny-A-4bit", host=beta.pk), user=member
    )
    assert not wrong.is_valid()
    assert "not on host beta's disk (as its worker last reported)" in wrong.errors["model_id"][0]
    draft = ServerProfileForm(
        valid_data(model_id="acme/tiny-b", draft_model_id="acme/only-on-beta"), user=member
    )
    assert not draft.is_valid() and "The draft model" in draft.errors["draft_model_id"][0]
