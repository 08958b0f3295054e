"""One request to a model server, for the gateway (`/v1/`) and the chat page alike.

`find_profile` names the profile a request's `model` means (if the caller may see it); a
`Call` validates the body (`schema`), waits for a turn under the caller's limits and the
server's fair queue (servers/sharing), gets the profile's server running (or says why not:
servers.supervision), sends the request (`hop`, `transport`) and returns a `relay.Relay`;
`start` does all of it for a caller that shows nothing while it waits. Once the profile is
known, every outcome — an answer, a refusal, an error, a client that went away — ends in
exactly one UsageRecord.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import NoReturn

from django.conf import settings

from accounts.api_keys import still_allowed
from accounts.models import User
from accounts.teams import NO_LIMITS, UserLimits, membership
from common.rows import LookupVersions, compiled_rows, first_row, versions_of
from models_catalog.local import serving_facts
from servers.gateway import hop
from servers.gateway.engines import (
    EMBEDDINGS,
    TRANSCRIPTIONS,
    check_engine,
    embeddings_body,
    transcription_body,
)
from servers.gateway.errors import GatewayError
from servers.gateway.relay import Relay
from servers.gateway.schema import build_upstream_body
from servers.gateway.transport import ClientGone, send
from servers.models import Engine, ServerInstance, ServerProfile, State, may_see
from servers.sharing import admission
from servers.supervision import lifecycle
from servers.supervision.mlx_entry import peer_closed
from servers.usage.records import Caller, Measure, recorder

PROFILE_NAME_MAX: int = ServerProfile._meta.get_field("name").max_length or 80


def find_profile(
    model: object, user: User | None = None, groups: frozenset[int] | None = None
) -> ServerProfile:
    """The profile a request's `model` names (its slug, or its name) if `user` (when given, in
    `groups`: their group ids) may see it, else GatewayError 404: a profile of another team is
    not there for them, as in /v1/models."""
    if not isinstance(model, str) or not model:
        raise GatewayError(
            "'model' is required: the name of a server profile (see GET /v1/models).",
            param="model",
            code="missing_field",
        )
    model = model.strip()
    # Only white space (Python's: NEL, say, which JSON Schema's \S counts as a character) names
    # no profile: a 404 as for any other unknown name, not a missing field.
    if not model or len(model) > PROFILE_NAME_MAX or not model.isprintable():
        # No profile is named so (names are printable, at most 80 characters); and a NUL or a
        # lone surrogate must not reach the database (PostgreSQL refuses NUL in text).
        raise GatewayError(
            f"The model must be the id of a server profile: at most {PROFILE_NAME_MAX} "
            "printable characters, with no control characters (see GET /v1/models).",
            404,
            param="model",
            code="model_not_found",
        )
    # A gateway request's user carries the counters read with its key (common/rows.py).
    versions = versions_of(user)
    profile = _profile_by_slug(model, versions)
    if profile is None:
        # A name instead of the slug (rare: GET /v1/models lists slugs).
        profiles = ServerProfile.objects.select_related("host", "instance")
        profile = profiles.filter(name__iexact=model).first()
    if profile is not None and user is not None and not _visible(profile, user, groups, versions):
        profile = None
    if profile is None:
        raise GatewayError(
            f"The model '{model[:80]}' does not exist. Use the id of a server profile from "
            "GET /v1/models.",
            404,
            param="model",
            code="model_not_found",
        )
    return profile


def _visible(
    profile: ServerProfile,
    user: User,
    groups: frozenset[int] | None,
    versions: LookupVersions | None = None,
) -> bool:
    """servers.models.may_see for `profile`, reading its allowed groups in one compiled query
    (the gateway asks on every request), or as read last time while `versions` say no
    profile's groups changed."""
    if user.is_admin:
        return True
    through = ServerProfile.allowed_groups.through
    rows = compiled_rows(
        through,
        "gateway-profile-groups",
        lambda: through.objects.filter(serverprofile_id=0).values_list("group_id"),
        params=[profile.pk],
        version=versions.servers if versions is not None else None,
    )
    allowed = [row[0] for row in rows]
    if groups is None:
        groups = membership(user).group_ids
    return may_see(user, allowed, groups)


def _profile_by_slug(slug: str, versions: LookupVersions | None = None) -> ServerProfile | None:
    """The profile with its host and instance loaded, as `select_related` would load them, in
    one plain query (common/rows.py): this runs before every gateway request's first byte, and
    server_url then reads the instance's state without another query. With `versions`, as read
    last time while no profile, instance or host changed (database triggers count every
    change: a stopped server is seen stopped at the next request)."""
    return first_row(
        ServerProfile,
        {"slug": slug},
        related=("host", "instance"),
        version=versions.servers if versions is not None else None,
    )


def server_url(profile: ServerProfile, timeout: float | None = None) -> str:
    """The base URL of the profile's running server; starts it on demand when the profile
    allows it (waiting at most `timeout` seconds); GatewayError 503 otherwise.

    The instance's state is the one read with the profile in this request (find_profile
    loads both in one query): fresh enough, and one query less before the first token."""
    url = profile.running_url()
    if url:
        return url
    instance = profile.get_instance()
    if not profile.allow_on_demand:
        if instance.state in (State.STARTING, State.RESTARTING):
            raise GatewayError(
                f"Server '{profile.slug}' is still starting; try again in a moment.",
                503,
                code="server_starting",
            )
        raise GatewayError(
            f"Server '{profile.slug}' is {instance.state}; start it on the Servers page.",
            503,
            code="server_not_running",
        )
    timeout = settings.GATEWAY_START_TIMEOUT if timeout is None else timeout
    try:
        return lifecycle.ensure_running(profile, timeout=timeout)
    except lifecycle.ServerUnavailable as exc:
        raise GatewayError(str(exc), 503, code="server_unavailable") from None


def request_limits(profile: ServerProfile) -> dict:
    """What build_upstream_body checks a request for `profile` against: its model's facts on
    this host, or nothing for another host's model (that host's hop checks with its own)."""
    if not profile.host.is_this_machine:
        return {}
    facts = serving_facts(profile.model_id)
    return {
        "vocab_size": facts.vocab_size,
        "context_length": facts.context_length,
        # A template that cannot be read lets a request set only `enable_thinking`.
        "template_variables": facts.template_variables or frozenset(),
    }


def engine_fields(profile: ServerProfile) -> dict:
    """What build_upstream_body needs to know of the profile's engine: a vision server sees
    images, and gets the profile's sampling defaults with each request (mlx_vlm.server takes
    none on its command line: servers/supervision/command.py)."""
    if profile.engine != Engine.VISION:
        return {}
    defaults = {
        "temperature": profile.temperature,
        "top_p": profile.top_p,
        "top_k": profile.top_k,
        "min_p": profile.min_p,
    }
    return {"vision": True, "defaults": defaults}


def upstream_body(profile: ServerProfile, endpoint: str, body: object) -> dict:
    """The body sent to the profile's server for `endpoint`, from the request's `body` alone
    (`schema` for chat and completions, `engines` for embeddings and transcriptions), once the
    profile's engine is known to serve the endpoint; GatewayError otherwise."""
    check_engine(profile.engine, endpoint, profile.name)
    if endpoint == EMBEDDINGS:
        return embeddings_body(body, request_limits(profile).get("context_length"))
    if endpoint == TRANSCRIPTIONS:
        return transcription_body(body)
    return build_upstream_body(
        body,
        endpoint=endpoint,
        max_tokens=profile.max_tokens,
        max_tokens_cap=profile.max_tokens_cap,
        profile_name=profile.name,
        # Another host's hop checks with its own copy of the model (hop_views.py).
        **request_limits(profile),
        **engine_fields(profile),
    )


def is_ready(profile: ServerProfile) -> bool:
    return ServerInstance.objects.filter(profile=profile, state=State.RUNNING).exists()


def _refused(refusal: admission.Refusal) -> GatewayError:
    """A limit's or the queue's refusal as the gateway answers it: OpenAI's shape, its type, and
    when to try again."""
    return GatewayError(
        refusal.message,
        refusal.status,
        code=refusal.code,
        error_type=refusal.error_type,
        headers={"Retry-After": str(refusal.retry_after)},
    )


class Call:
    """One request to a profile's server, from the gateway or the chat page: validated
    (`schema`), admitted by the limits and the fair queue (servers/sharing), sent (`send`).

    `turns()` validates the body and waits for a turn, yielding the number of requests waiting
    while this one waits (the chat shows it; the API sends nothing while a request waits, so no
    OpenAI client reads a byte it could misread). `send()` then reaches the server (starting it
    on demand) and returns a `relay.Relay`. Every outcome ends in exactly one UsageRecord, and
    the turn is given back (with the request's tokens) when the relay closes.
    """

    def __init__(
        self,
        caller: Caller,
        profile: ServerProfile,
        endpoint: str,
        body: object,
        *,
        limits: UserLimits = NO_LIMITS,
        client_socket: socket.socket | None = None,
        recorded_as: str | None = None,
    ):
        self.caller, self.profile, self.endpoint, self.body = caller, profile, endpoint, body
        self.limits = limits
        self.client_socket = client_socket
        stream = bool(isinstance(body, dict) and body.get("stream"))
        # The endpoint the client called (a dialect's, such as "messages", is sent as chat
        # completions: servers/gateway/dialects.py).
        self._record = recorder(caller, profile, recorded_as or endpoint, stream)
        self.measure = Measure()
        self.ticket: admission.Ticket | None = None
        self.upstream_body: dict = {}

    def turns(self) -> Iterator[int]:
        """Validate the body, then wait for a turn: yields the number of requests waiting for
        this server while this one waits. Raises GatewayError or ClientGone (recorded)."""
        try:
            self.upstream_body = upstream_body(self.profile, self.endpoint, self.body)
            self.ticket = admission.enter(self.caller.user, self.profile, self.limits)
            yield from self.ticket.wait(self._client_still_there)
        except admission.Refusal as refusal:
            self._fail(_refused(refusal))
        except GatewayError as error:
            self._fail(error)
        except admission.ClientLeft:
            self._cancel()
            raise ClientGone from None
        except GeneratorExit:  # the chat's reader left while the request waited
            self._cancel()
            raise

    def wait_turn(self) -> None:
        """`turns()` without looking at the queue."""
        for _waiting in self.turns():
            pass

    def send(self, start_timeout: float | None = None) -> tuple[Relay, dict]:
        """Reach the profile's server (starting it on demand) and send the request; returns
        (relay, upstream body). Call after `turns()`. The caller closes the relay (which
        records and gives the turn back)."""
        queued_ms = self.ticket.queued_ms if self.ticket is not None else None
        try:
            profile = self.profile
            url, headers = hop.route(profile.host, server_url(profile, start_timeout), profile.slug)
            # Times start when the request leaves for the server.
            inputs = len(self.upstream_body["input"]) if self.endpoint == EMBEDDINGS else 0
            self.measure = Measure(queued_ms=queued_ms, inputs=inputs)
            response = send(
                url, self.endpoint, self.upstream_body, profile.slug, headers, self.client_socket
            )
        except GatewayError as error:
            self._fail(error)
        except ClientGone:
            self._cancel()
            raise
        lifecycle.touch_last_request(self.profile)
        api_key_id = getattr(self.caller.api_key, "pk", None)

        def between_events() -> bool:
            # A reply longer than the idle time-out keeps its server busy, not idle (written at
            # most every LAST_REQUEST_RESOLUTION); then: is the caller still allowed?
            lifecycle.touch_last_request(self.profile)
            return still_allowed(self.caller.user.pk, api_key_id)

        relay = Relay(
            response, self.measure, self.profile.slug, self._finish, still_allowed=between_events
        )
        return relay, self.upstream_body

    def _client_still_there(self) -> bool:
        return self.client_socket is None or not peer_closed(self.client_socket)

    def _finish(self, measure: Measure) -> None:
        """Record the request and give its turn back with its tokens (the relay calls it once)."""
        record_id = None
        if measure.queued_ms is None and self.ticket is not None:
            measure.queued_ms = self.ticket.queued_ms  # also for one that never left the queue
        try:
            record_id = self._record(measure)
        finally:
            if self.ticket is not None:
                tokens = measure.prompt_tokens + measure.completion_tokens
                self.ticket.release(tokens, record_id)

    def _fail(self, error: GatewayError) -> NoReturn:
        self.measure.fail(error)
        self.measure.finished_at = time.monotonic()
        self._finish(self.measure)
        raise error

    def _cancel(self) -> None:
        self.measure.status = "cancelled"
        self.measure.finished_at = time.monotonic()
        self._finish(self.measure)


def start(
    caller: Caller,
    profile: ServerProfile,
    endpoint: str,
    body: object,
    *,
    limits: UserLimits = NO_LIMITS,
    start_timeout: float | None = None,
    client_socket: socket.socket | None = None,
    recorded_as: str | None = None,
) -> tuple[Relay, dict]:
    """Validate `body`, wait for a turn, reach the profile's server and send it: `Call` for a
    caller that shows nothing while it waits. Returns (relay, upstream body).

    `client_socket` (the web server's socket of the client's request, when it gives one) is
    watched while the request waits and while the server is silent: a client that leaves ends
    the request (ClientGone), and the server stops working on it.
    Raises GatewayError or ClientGone after recording it. The caller closes the relay (which
    records, as `recorded_as` when the client called another endpoint than `endpoint`).
    """
    call = Call(
        caller, profile, endpoint, body,
        limits=limits, client_socket=client_socket, recorded_as=recorded_as,
    )  # fmt: skip
    call.wait_turn()
    return call.send(start_timeout)
