"""One request to a model server, for the gateway (`/v1/`) and the chat page alike.

`find_profile` names the profile a request's `model` means; `start` validates the body
(`schema`), gets the profile's server running (or says why not: servers.supervision), sends
the request (`hop`, `transport`) and returns a `relay.Relay`. Once the profile is known,
every outcome — an answer, an error, a client that went away — ends in exactly one
UsageRecord.
"""

from __future__ import annotations

import socket
import time

from django.conf import settings

from accounts.api_keys import still_allowed
from common.rows import first_row
from models_catalog.local import serving_facts
from servers.gateway import hop
from servers.gateway.errors import GatewayError
from servers.gateway.relay import Relay
from servers.gateway.schema import build_upstream_body
from servers.gateway.transport import ClientGone, send
from servers.models import ServerInstance, ServerProfile, State
from servers.supervision import lifecycle
from servers.usage.records import Caller, Measure, recorder

PROFILE_NAME_MAX: int = ServerProfile._meta.get_field("name").max_length or 80


def find_profile(model: object) -> ServerProfile:
    """The profile a request's `model` names (its slug, or its name), else GatewayError 404."""
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
    profile = _profile_by_slug(model)
    if profile is None:
        # A name instead of the slug (rare: GET /v1/models lists slugs).
        profiles = ServerProfile.objects.select_related("host", "instance")
        profile = profiles.filter(name__iexact=model).first()
    if profile is None:
        raise GatewayError(
            f"The model '{model[:80]}' does not exist. Use the id of a server profile from "
            "GET /v1/models.",
            404,
            param="model",
            code="model_not_found",
        )
    return profile


def _profile_by_slug(slug: str) -> ServerProfile | None:
    """The profile with its host and instance loaded, as `select_related` would load them, in
    one plain query (common/rows.py): this runs before every gateway request's first byte, and
    server_url then reads the instance's state without another query."""
    return first_row(ServerProfile, {"slug": slug}, related=("host", "instance"))


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


def is_ready(profile: ServerProfile) -> bool:
    return ServerInstance.objects.filter(profile=profile, state=State.RUNNING).exists()


def start(
    caller: Caller,
    profile: ServerProfile,
    endpoint: str,
    body: object,
    *,
    start_timeout: float | None = None,
    client_socket: socket.socket | None = None,
) -> tuple[Relay, dict]:
    """Validate `body`, reach the profile's server and send it; returns (relay, upstream body).

    `client_socket` (the web server's socket of the client's request, when it gives one) is
    watched while the server is silent: a client that leaves ends the request (ClientGone),
    and the server stops working on it.
    Raises GatewayError or ClientGone after recording it. The caller closes the relay (which
    records).
    """
    finish = recorder(
        caller, profile, endpoint, bool(isinstance(body, dict) and body.get("stream"))
    )
    measure = Measure()
    try:
        upstream_body = build_upstream_body(
            body,
            endpoint=endpoint,
            max_tokens_cap=profile.max_tokens,
            # Another host's hop checks with its own copy of the model (hop_views.py).
            **request_limits(profile),
        )
        url, headers = hop.route(profile.host, server_url(profile, start_timeout), profile.slug)
        measure = Measure()  # times start when the request leaves for the server
        response = send(url, endpoint, upstream_body, profile.slug, headers, client_socket)
    except GatewayError as error:
        measure.fail(error)
        measure.finished_at = time.monotonic()
        finish(measure)
        raise
    except ClientGone:
        measure.status = "cancelled"
        measure.finished_at = time.monotonic()
        finish(measure)
        raise
    lifecycle.touch_last_request(profile)
    api_key_id = getattr(caller.api_key, "pk", None)

    def between_events() -> bool:
        # A reply longer than the idle time-out keeps its server busy, not idle (written at
        # most every LAST_REQUEST_RESOLUTION); then: is the caller still allowed?
        lifecycle.touch_last_request(profile)
        return still_allowed(caller.user.pk, api_key_id)

    relay = Relay(response, measure, profile.slug, finish, still_allowed=between_events)
    return relay, upstream_body
