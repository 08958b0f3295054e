"""The instance state machine: one mapping of allowed transitions, one transition()."""

import pytest

from common.states import InvalidTransition
from servers.models import TRANSITIONS, ServerInstance, State

# Sorted: the targets are a frozenset, whose order changes with each process's hash seed, and
# pytest-xdist needs every worker to collect the same tests in the same order.
ALLOWED = [(src, dst) for src, targets in TRANSITIONS.items() for dst in sorted(targets)]
FORBIDDEN = [
    (State.STOPPED, State.RUNNING),
    (State.STOPPED, State.STOPPING),
    (State.RUNNING, State.STARTING),
    (State.RUNNING, State.STOPPED),
    (State.STOPPING, State.RUNNING),
    (State.STOPPING, State.STARTING),
    (State.RESTARTING, State.RUNNING),
]


def test_every_state_has_an_entry():
    assert set(TRANSITIONS) == set(State.values)


@pytest.mark.parametrize(("source", "target"), ALLOWED)
def test_allowed_transition_records_reason_and_time(make_profile, source, target):
    instance = make_profile().get_instance()
    ServerInstance.objects.filter(pk=instance.pk).update(state=source)
    instance.refresh_from_db()
    before = instance.state_changed_at
    instance.transition(target, f"because {target}")
    instance.refresh_from_db()
    assert instance.state == target
    assert instance.reason == f"because {target}"
    assert instance.state_changed_at >= before


@pytest.mark.parametrize(("source", "target"), FORBIDDEN)
def test_forbidden_transition_is_refused_and_changes_nothing(make_profile, source, target):
    instance = make_profile().get_instance()
    ServerInstance.objects.filter(pk=instance.pk).update(state=source, reason="kept")
    instance.refresh_from_db()
    with pytest.raises(InvalidTransition):
        instance.transition(target, "nope")
    instance.refresh_from_db()
    assert (instance.state, instance.reason) == (source, "kept")


def test_transition_saves_extra_fields(make_profile):
    instance = make_profile().get_instance()
    instance.transition(State.STARTING, "go", desired_state="running", restart_count=2)
    assert instance.desired_state == "running"
    assert instance.restart_count == 2
