"""Routes: a public model name served by one or more profiles (servers.models.Route).

`resolve` says what a request's `model` names for its caller: a profile (as before routes
existed: one indexed read) or else a route, whose members that serve the request's endpoint (a
route may mix engines: chat goes only to its text and vision servers, embeddings only to its
embeddings servers, `engines.serves`) are put in the order to try them:

* `least-busy`: the running members with the fewest requests in flight and waiting in their
  fair queue (servers/sharing), members equally busy taking turns;
* `ordered`: the running members in the route's order (the first is the one to use, the others
  fall-backs);

then, either way, the members that are not running but may start on demand, those whose host
has the most free memory first. The gateway tries them in that order (servers/gateway/views.py):
a member that cannot be reached or fails before its first byte (`RETRY_CODES`) is skipped and
the request sent to the next one, once per member, never after a byte reached the client.
"""

from __future__ import annotations

from dataclasses import dataclass

from accounts.models import User
from servers.gateway import engines
from servers.gateway.calls import find_profile
from servers.gateway.errors import GatewayError
from servers.models import Engine, Route, RouteMember, ServerProfile, State, may_see
from servers.sharing import admission
from servers.validation import check_route_name

# What a member answers that sends the request on to the next member, when no byte has reached
# the client yet: it could not be reached, failed or died before its first byte, is not running,
# could not start, or its queue is full.
RETRY_CODES = frozenset(
    {
        "server_unreachable",
        "upstream_error",
        "upstream_died",
        "upstream_timeout",
        "server_not_ready",
        "server_not_running",
        "server_starting",
        "server_unavailable",
        "host_unreachable",
        "queue_full",
        "queue_share",
    }
)


@dataclass(frozen=True)
class Target:
    """What a request's `model` names: one profile (`route` None) or a route's members in the
    order to try them."""

    profiles: list[ServerProfile]
    route: Route | None = None


def resolve(
    model: object, user: User, groups: frozenset[int], endpoint: str = "chat/completions"
) -> Target:
    """The profile or the route `model` names for `user` (in `groups`), for a request to
    `endpoint`; GatewayError 404 when neither exists for them. A route's members are those that
    serve `endpoint` (`engines.serves`: chat goes to its chat servers only, embeddings to its
    embeddings servers), 400 `wrong_engine` when none does; a profile of the wrong engine is
    refused when its call checks the body (calls.upstream_body)."""
    try:
        return Target([find_profile(model, user, groups)])
    except GatewayError as error:
        if error.code != "model_not_found" or not isinstance(model, str):
            raise
        try:
            name = check_route_name(model)
        except ValueError:
            raise error from None  # no route is named so (nor may be: NUL, surrogates, …)
        route = Route.objects.filter(name=name).first()
        if route is None:
            raise
        members = members_for(route, user, groups)
        if not members:
            raise  # a route none of whose members this caller may use is not there for them
        profiles = serving(members, endpoint)
        if not profiles:
            engines_of = {p.engine for p in members}
            raise engines.route_refusal(route.name, endpoint, engines_of) from None
        return Target(order(route, profiles), route)


def serving(profiles: list[ServerProfile], endpoint: str) -> list[ServerProfile]:
    """The `profiles` whose engine serves `endpoint` (`engines.serves`), in their order."""
    return [p for p in profiles if engines.serves(p.engine, endpoint)]


def seeing(profiles: list[ServerProfile], has_images: bool) -> list[ServerProfile]:
    """The `profiles` (a route's members, in the order to try them) that can answer a chat whose
    messages hold images (new ones, or a conversation's earlier ones): its vision servers only,
    in that order — none when it has no vision server. Without images, all of them."""
    if not has_images:
        return profiles
    return [p for p in profiles if p.engine == Engine.VISION]


def members_for(route: Route, user: User, groups: frozenset[int]) -> list[ServerProfile]:
    """The route's members `user` may call, in the route's order."""
    members = list(
        RouteMember.objects.filter(route=route)
        .select_related("profile__host", "profile__instance")
        .order_by("position", "pk")
    )
    allowed: dict[int, set[int]] = {}
    through = ServerProfile.allowed_groups.through
    rules = through.objects.filter(serverprofile__in=[m.profile_id for m in members])
    for profile_id, group_id in rules.values_list("serverprofile_id", "group_id"):
        allowed.setdefault(profile_id, set()).add(group_id)
    return [m.profile for m in members if may_see(user, allowed.get(m.profile_id, ()), groups)]


def _running(profile: ServerProfile) -> bool:
    instance = getattr(profile, "instance", None)
    return instance is not None and instance.state == State.RUNNING and profile.host.is_online


def order(route: Route, profiles: list[ServerProfile]) -> list[ServerProfile]:
    """`profiles` (the route's members, in its order) in the order to try them."""
    running = [p for p in profiles if _running(p)]
    if route.policy == Route.Policy.LEAST_BUSY and len(running) > 1:
        queues = admission.queues(p.pk for p in running)

        def busy(profile: ServerProfile) -> int:
            queue = queues.get(profile.pk)
            return queue.in_flight + queue.waiting if queue else 0

        least = min(busy(p) for p in running)
        tied = [p for p in running if busy(p) == least]
        first = tied[admission.next_turn(f"route:{route.pk}") % len(tied)]
        running = [first, *sorted((p for p in running if p is not first), key=busy)]
    startable = sorted(
        (p for p in profiles if not _running(p) and p.allow_on_demand),
        key=lambda p: -p.host.memory_available,
    )
    stopped = [p for p in profiles if not _running(p) and not p.allow_on_demand]
    return [*running, *startable, *stopped]
