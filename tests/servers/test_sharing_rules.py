"""The fair queue and the limits, in process against the real Redis (servers/sharing/admission):
who is admitted, who waits, in which order, and what is refused. The gateway and chat paths,
through gunicorn and a real model server, are in test_sharing.py."""

import threading

import pytest
import redis
from django.contrib.auth.models import Group

from accounts.models import Limits
from accounts.teams import NO_LIMITS, UserLimits, limits_for
from servers.models import UsageRecord
from servers.sharing import admission
from servers.sharing.admission import ClientLeft, Refusal, enter

pytestmark = pytest.mark.django_db


@pytest.fixture
def people(make_user):
    return [make_user(f"{name}@example.com") for name in ("ann", "bob", "cy")]


def drain(ticket, still_there=lambda: True):
    return list(ticket.wait(still_there))


def test_a_server_admits_its_slots_then_queues(make_profile, people):
    ann, bob, _ = people
    profile = make_profile(max_in_flight=2, reserved_slots=0)
    first, second = enter(ann, profile, NO_LIMITS), enter(ann, profile, NO_LIMITS)
    third = enter(bob, profile, NO_LIMITS)
    assert [t.state for t in (first, second, third)] == ["admitted", "admitted", "queued"]
    assert admission.queues([profile.pk]) == {profile.pk: admission.Queue(2, 1)}
    first.release()
    drain(third)
    assert third.state == "admitted" and third.queued_ms is not None
    assert admission.queues([profile.pk])[profile.pk] == admission.Queue(2, 0)


def test_waiting_users_are_served_round_robin_one_ticket_each(make_profile, people):
    ann, bob, cy = people
    profile = make_profile(max_in_flight=1, reserved_slots=0, queue_length=40)
    tickets = [enter(ann, profile, NO_LIMITS) for _ in range(7)]
    tickets += [enter(bob, profile, NO_LIMITS), enter(cy, profile, NO_LIMITS)]
    current = tickets[0]
    for _ in range(8):  # each finished request lets exactly the next one in
        current.release()
        admitted = [t for t in tickets if not t.released and in_flight(t)]
        assert len(admitted) == 1
        current = admitted[0]
    order = [user for what, _, user in admission.admission_log(profile.pk) if what == "admit"]
    # Bob's and Cy's single requests each waited behind at most one of Ann's.
    assert order == [ann.pk, ann.pk, bob.pk, cy.pk] + [ann.pk] * 5


def in_flight(ticket):
    key = f"{admission.PREFIX}p:{ticket.profile.pk}:in"
    return admission._redis.client().zscore(key, ticket.id) is not None


def test_reserved_slots_keep_room_for_a_colleague(make_profile, people):
    ann, bob, _ = people
    profile = make_profile(max_in_flight=3, reserved_slots=1)
    anns = [enter(ann, profile, NO_LIMITS) for _ in range(3)]
    assert [t.state for t in anns] == ["admitted", "admitted", "queued"]
    assert enter(bob, profile, NO_LIMITS).state == "admitted"  # the slot Ann could not take


def test_the_queue_is_bounded_and_one_person_fills_at_most_half(make_profile, people):
    ann, bob, cy = people
    profile = make_profile(max_in_flight=1, reserved_slots=0, queue_length=4)
    enter(cy, profile, NO_LIMITS)
    assert [enter(ann, profile, NO_LIMITS).state for _ in range(2)] == ["queued", "queued"]
    with pytest.raises(Refusal) as refused:
        enter(ann, profile, NO_LIMITS)
    assert (refused.value.status, refused.value.error_type, refused.value.code) == (
        503,
        "server_busy",
        "queue_share",
    )
    assert refused.value.retry_after > 0
    assert [enter(bob, profile, NO_LIMITS).state for _ in range(2)] == ["queued", "queued"]
    with pytest.raises(Refusal) as refused:
        enter(cy, profile, NO_LIMITS)
    assert refused.value.code == "queue_full" and "queue is full (4 waiting)" in str(refused.value)
    assert admission.queues([profile.pk])[profile.pk].waiting == 4


def test_a_wait_longer_than_the_profile_allows_is_refused_and_leaves_the_queue(
    make_profile, people
):
    ann, bob, _ = people
    profile = make_profile(max_in_flight=1, reserved_slots=0, queue_wait_seconds=1)
    enter(ann, profile, NO_LIMITS)
    waiting = enter(bob, profile, NO_LIMITS)
    with pytest.raises(Refusal) as refused:
        drain(waiting)
    assert refused.value.code == "queue_wait" and refused.value.status == 503
    assert admission.queues([profile.pk])[profile.pk] == admission.Queue(1, 0)


def test_a_release_from_another_thread_wakes_the_waiting_request(make_profile, people):
    ann, bob, _ = people
    profile = make_profile(max_in_flight=1, reserved_slots=0)
    holder = enter(ann, profile, NO_LIMITS)
    waiting = enter(bob, profile, NO_LIMITS)
    seen = []
    thread = threading.Thread(target=lambda: seen.extend(drain(waiting)))
    thread.start()
    holder.release()
    thread.join(timeout=30)
    assert not thread.is_alive() and waiting.state == "admitted" and seen == [1]


def test_a_client_that_leaves_while_queued_frees_its_place_at_once(make_profile, people):
    ann, bob, _ = people
    profile = make_profile(max_in_flight=1, reserved_slots=0)
    enter(ann, profile, NO_LIMITS)
    waiting = enter(bob, profile, NO_LIMITS)
    with pytest.raises(ClientLeft):
        drain(waiting, still_there=lambda: False)
    assert admission.queues([profile.pk])[profile.pk] == admission.Queue(1, 0)
    assert admission.standing(bob, NO_LIMITS).in_flight == 0


def test_the_slots_of_a_process_that_died_come_back_after_its_lease(make_profile, people, settings):
    ann, bob, _ = people
    settings.SHARING_LEASE_SECONDS = 1  # this "process" renews nothing: its keeper is stopped
    profile = make_profile(max_in_flight=1, reserved_slots=0)
    dead = enter(ann, profile, NO_LIMITS)
    admission._keeper.forget(dead)  # as if its process had died
    waiting = enter(bob, profile, NO_LIMITS)
    assert waiting.state == "queued"
    drain(waiting)  # the looks every second drop the expired ticket
    assert waiting.state == "admitted"


def test_requests_per_minute_and_in_flight_limits_refuse_with_429(make_profile, people):
    ann, _, _ = people
    profile = make_profile()
    per_minute = UserLimits(requests_per_minute=2, source={"requests_per_minute": "group Lab"})
    enter(ann, profile, per_minute).release()
    enter(ann, profile, per_minute).release()
    with pytest.raises(Refusal) as refused:
        enter(ann, profile, per_minute)
    assert (refused.value.status, refused.value.error_type) == (429, "rate_limit_exceeded")
    assert "2 requests per minute (group Lab)" in str(refused.value)
    assert 0 < refused.value.retry_after <= 60

    at_once = UserLimits(concurrent_requests=1)
    other = make_profile("Other")
    held = enter(ann, other, at_once)
    with pytest.raises(Refusal) as refused:
        enter(ann, other, at_once)
    assert refused.value.code == "concurrent_requests" and refused.value.status == 429
    held.release()
    enter(ann, other, at_once).release()


def test_tokens_per_day_are_counted_and_rebuilt_from_the_usage_records(make_profile, people):
    ann, bob, _ = people
    profile = make_profile()
    team = Group.objects.create(name="Lab")
    Limits.objects.create(group=team, tokens_per_day=100)
    ann.groups.add(team)
    limits = limits_for(ann)
    ticket = enter(ann, profile, limits)
    record = UsageRecord.objects.create(
        user=ann, profile=profile, profile_name=profile.name, source="api", endpoint="x",
        prompt_tokens=70, completion_tokens=40, status="ok",
    )  # fmt: skip
    ticket.release(110, record.pk)
    with pytest.raises(Refusal) as refused:
        enter(ann, profile, limits)
    assert (refused.value.status, refused.value.error_type, refused.value.code) == (
        429,
        "insufficient_quota",
        "tokens_per_day",
    )
    assert "100 tokens per day (group Lab): 110 used today" in str(refused.value)
    assert refused.value.retry_after <= 86400
    enter(bob, profile, limits).release()  # another person is not affected

    admission._redis.client().flushdb()  # Redis lost everything: the records are the truth
    with pytest.raises(Refusal):
        enter(ann, profile, limits)
    assert admission.tokens_today(ann.pk) == 110


def test_without_redis_requests_go_through_uncounted(make_profile, people, monkeypatch):
    ann, _, _ = people
    profile = make_profile(max_in_flight=1, reserved_slots=0)
    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    monkeypatch.setattr(admission._redis, "_client", dead)
    monkeypatch.setattr(admission._redis, "_scripts", {})
    tickets = [enter(ann, profile, UserLimits(requests_per_minute=1)) for _ in range(3)]
    assert [t.state for t in tickets] == ["open"] * 3
    for ticket in tickets:
        ticket.release()
