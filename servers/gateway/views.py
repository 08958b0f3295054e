"""The gateway's endpoints: `/v1/models` (and `/v1/models/<id>`), `/v1/chat/completions`,
`/v1/completions`, `/v1/embeddings`, `/v1/audio/transcriptions` (their fields: `engines`),
Anthropic's `/v1/messages` (and `/v1/messages/count_tokens`) and OpenAI's `/v1/responses`
(translated to chat completions: servers/gateway/dialects.py), the OpenAPI
description, and the hop another host's web tier calls (`/internal/hop/<slug>/v1/<endpoint>`).

Each keyed view wears `auth.api_key_required` (the request's key is checked before it runs);
the OpenAPI description and the hop are `public` (the hop checks this host's hop token
itself). Views parse, call `calls`, and pass the answer on.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from itertools import chain

import httpx
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.views.decorators.csrf import csrf_exempt

from accounts.access import public
from accounts.models import User
from accounts.teams import membership
from servers.gateway import calls, dialects, engines, hop, openapi, routing
from servers.gateway.auth import anthropic_key_required, api_key_required, request_key
from servers.gateway.errors import GatewayError
from servers.gateway.relay import STREAM_HEADERS, Relay, sse
from servers.gateway.transport import ClientGone, client_socket, send
from servers.models import Route, ServerProfile, UsageRecord
from servers.supervision import lifecycle
from servers.usage.records import Caller

# A route's stream holds back the keep-alives before its first event this long at most: until
# then, a member that fails can still be replaced by another (servers/gateway/routing.py).
PRIME_SECONDS = 10.0

# What a request whose client left gets (nobody reads it): nginx's "client closed request".
CLIENT_CLOSED_REQUEST = 499


def read_json(request: HttpRequest, limit: int | None = None) -> object:
    """The request's JSON body, refusing oversize (413: over `limit`, by default
    GATEWAY_MAX_BODY_BYTES) and malformed (400) bodies."""
    limit = limit or settings.GATEWAY_MAX_BODY_BYTES
    too_large = GatewayError(
        f"The request body is larger than the limit of {limit // 1024} KiB.",
        413,
        code="request_too_large",
    )
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > limit:
        raise too_large
    raw = request.read(limit + 1)
    if len(raw) > limit:
        raise too_large
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise GatewayError("The request body is not valid JSON.", code="invalid_json") from None
    except RecursionError:
        raise GatewayError(
            "The request body is nested too deeply to be read.", code="invalid_json"
        ) from None


def _method_not_allowed(
    allowed: str, shape: Callable[[GatewayError], dict] | None = None
) -> JsonResponse:
    return GatewayError(
        f"Use {allowed} for this endpoint.", 405, code="method_not_allowed",
        headers={"Allow": allowed},
    ).response(shape)  # fmt: skip


@api_key_required
def models(request: HttpRequest) -> JsonResponse:
    """Every profile the key's owner may call (servers.models.may_see), in OpenAI's list shape
    (id = profile slug), then the routes (id = the route's name) with a member they may call."""
    if request.method != "GET":
        return _method_not_allowed("GET")
    return JsonResponse({"object": "list", "data": model_objects(request_key(request).user)})


@api_key_required
def model_detail(request: HttpRequest, model: str) -> JsonResponse:
    """One entry of `models` (the same object), or 404 in OpenAI's shape for an id the caller
    does not see there — unknown or hidden alike."""
    if request.method != "GET":
        return _method_not_allowed("GET")
    for found in model_objects(request_key(request).user):
        if found["id"] == model:
            return JsonResponse(found)
    return GatewayError(
        f"The model '{model[:80]}' does not exist. Use an id from GET /v1/models.",
        404,
        param="model",
        code="model_not_found",
    ).response()


def model_objects(user: User) -> list[dict]:
    """The models `user` may call, as GET /v1/models lists them."""
    profiles = (
        ServerProfile.objects.visible_to(user)
        .select_related("instance", "owner", "host")
        .order_by("slug")
    )
    data = []
    for profile in profiles:
        data.append(
            {
                "id": profile.slug,
                "object": "model",
                "created": int(profile.created_at.timestamp()),
                "owned_by": profile.owner.email,
                # Extensions (ignored by OpenAI clients): what it serves and whether it runs.
                "name": profile.name,
                "kind": model_kind(profile),
                "root": profile.model_id,
                "status": profile.shown_state,  # "unknown" while its host is offline
                "host": profile.host.name,
                "on_demand": profile.allow_on_demand,
                "max_tokens": profile.max_tokens,
                "max_tokens_cap": profile.max_tokens_cap,  # None: the model's context
                "chat_template_kwargs": template_kwargs(profile),
            }
        )
    visible = {profile.pk: profile for profile in profiles}
    routes = Route.objects.select_related("owner").prefetch_related("members").order_by("name")
    for route in routes:
        members = [visible[m.profile_id] for m in route.members.all() if m.profile_id in visible]
        if not members:
            continue
        running = any(p.shown_state == "running" for p in members)
        data.append(
            {
                "id": route.name,
                "object": "model",
                "created": int(route.created_at.timestamp()),
                "owned_by": route.owner.email,
                "name": route.name,
                "status": "running" if running else members[0].shown_state,
                "route": {"policy": route.policy, "members": [p.slug for p in members]},
                "kind": model_kind(members[0]),
                # A route may mix engines: each endpoint goes to its members of the engine.
                "kinds": sorted({model_kind(p) for p in members}),
                "on_demand": any(p.allow_on_demand for p in members),
            }
        )
    return data


def template_kwargs(profile: ServerProfile) -> list[str] | None:
    """The `chat_template_kwargs` a request for `profile` may set (None: another host's)."""
    limits = calls.request_limits(profile)
    if not limits:
        return None
    return sorted(limits["template_variables"] | {"enable_thinking"})


class ApiStream:
    """The body of a streamed answer: the upstream stream passed on as it arrives (OpenAI's
    usage chunk only when asked), recorded when the response is closed.

    The WSGI server closes the response after its last byte — or when the client went away
    (then the stream is `cancelled`). Recording there, rather than when the last event has
    been handed over, keeps the usage row's write out of the reply: the client has its end of
    the response before the database is touched.
    """

    def __init__(
        self,
        relay: Relay,
        model: str,
        include_usage: bool,
        chunk_object: str = "chat.completion.chunk",
    ):
        self.relay = relay
        self.model = model
        self.include_usage = include_usage
        self.chunk_object = chunk_object
        self.status = UsageRecord.Status.CANCELLED  # unless the stream ends: the client left
        self._events: Iterator[bytes] | None = None  # once primed
        self._first = b""

    def prime(self) -> None:
        """Read the upstream stream up to its first event for the client (keep-alives before it
        are held back, for at most PRIME_SECONDS), before the response starts: GatewayError
        (recorded by the caller's close) means the server failed before a byte could reach the
        client, so a route may send the request to another member."""
        self._events = self.relay.openai_stream(self.model, self.include_usage, self.chunk_object)
        held = []
        deadline = time.monotonic() + PRIME_SECONDS
        for piece in self._events:
            held.append(piece)
            if b"data:" in piece or time.monotonic() > deadline:
                break
        self._first = b"".join(held)

    def __iter__(self) -> Iterator[bytes]:
        try:
            if self._events is None:
                yield from self.relay.openai_stream(
                    self.model, self.include_usage, self.chunk_object
                )
            else:
                if self._first:
                    yield self._first
                yield from self._events
            self.status = UsageRecord.Status.OK
        except ClientGone:
            return  # cancelled: the client left while the server was silent
        except GatewayError as error:
            self.relay.measure.fail(error)
            self.status = UsageRecord.Status.ERROR
            yield sse(error.as_dict())

    def close(self) -> None:
        self.relay.close(self.status)


def _json_answer(data: dict, body: object, model_name: str) -> HttpResponse:
    data["model"] = model_name
    return JsonResponse(data)


def _complete(
    request: HttpRequest,
    endpoint: str,
    read: Callable[[HttpRequest], object] = read_json,
    render: Callable[[dict, object, str], HttpResponse] = _json_answer,
) -> HttpResponseBase:
    """One keyed request to a profile or a route: `read` the body, send it (a route's next
    member when one fails before any byte), and pass the answer on (`render` for a whole one)."""
    if request.method != "POST":
        return _method_not_allowed("POST")
    api_key = request_key(request)
    # The caller's groups (which profiles they see) and limits, in one query.
    member = membership(api_key.user)
    try:
        body = read(request)
        model = body.get("model") if isinstance(body, dict) else None
        target = routing.resolve(model, api_key.user, member.group_ids, endpoint)
        profiles = target.profiles
        if target.route is not None and _has_images(body):
            profiles = _able(profiles, has_images=True)
    except GatewayError as error:
        return error.response()
    caller = Caller(api_key.user, UsageRecord.Source.API, api_key)
    if target.route is not None:
        caller = replace(caller, route=target.route.name)
    options = (body.get("stream_options") if isinstance(body, dict) else None) or {}
    chunk_object = "chat.completion.chunk" if endpoint == "chat/completions" else "text_completion"
    model_name = target.route.name if target.route is not None else target.profiles[0].slug
    return _first_answer(
        profiles,
        lambda profile: calls.start(
            caller, profile, endpoint, body, limits=member.limits,
            client_socket=client_socket(request),
        ),
        lambda relay, data: render(data, body, model_name),
        lambda relay: ApiStream(
            relay, model_name, bool(options.get("include_usage")), chunk_object
        ),
    )  # fmt: skip


def _first_answer(
    profiles: list[ServerProfile],
    start: Callable[[ServerProfile], tuple[Relay, dict]],
    whole: Callable[[Relay, dict], HttpResponseBase],
    streamed: Callable[[Relay], ApiStream | DialectStream],
    shape: Callable[[GatewayError], dict] | None = None,
) -> HttpResponseBase:
    """The answer of the first of `profiles` (one profile, or a route's members in order) that
    answers: `start(profile)` opens the call (calls.start); a whole answer is read and given to
    `whole(relay, data)`, a stream is wrapped by `streamed(relay)` and returned. A member that
    fails before any byte reached the client (routing.RETRY_CODES; a route's stream is held to
    its first event for that) hands the request to the next; the last one's error is the
    answer (in `shape`)."""
    last = len(profiles) - 1
    for index, profile in enumerate(profiles):
        retry = index < last
        stream: ApiStream | DialectStream | None = None
        try:
            relay, upstream_body = start(profile)
            if not upstream_body.get("stream"):  # embeddings and transcriptions never stream
                data = _read_whole(relay)
            else:
                stream = streamed(relay)
                if retry:
                    _prime(stream)
        except GatewayError as error:
            if retry and error.code in routing.RETRY_CODES:
                continue
            return error.response(shape)
        except ClientGone:
            return HttpResponse(status=CLIENT_CLOSED_REQUEST)
        if stream is None:
            return whole(relay, data)
        return StreamingHttpResponse(
            stream, content_type="text/event-stream", headers=STREAM_HEADERS
        )
    raise AssertionError("unreachable: the last member returns")  # pragma: no cover


def _read_whole(relay: Relay) -> dict:
    """The whole answer of `relay`, which is closed and recorded either way."""
    status = UsageRecord.Status.ERROR
    try:
        data = relay.json()
        status = UsageRecord.Status.OK
        return data
    except GatewayError as error:
        relay.measure.fail(error)
        raise
    except ClientGone:
        status = UsageRecord.Status.CANCELLED
        raise
    finally:
        relay.close(status)


def _prime(stream: ApiStream | DialectStream) -> None:
    """`stream.prime()`, its relay closed and recorded when it fails."""
    try:
        stream.prime()
    except GatewayError as error:
        stream.relay.measure.fail(error)
        stream.relay.close(UsageRecord.Status.ERROR)
        raise
    except ClientGone:
        stream.relay.close(UsageRecord.Status.CANCELLED)
        raise


@api_key_required
def chat_completions(request: HttpRequest) -> HttpResponseBase:
    return _complete(request, "chat/completions")


@api_key_required
def text_completions(request: HttpRequest) -> HttpResponseBase:
    return _complete(request, "completions")


@api_key_required
def embeddings(request: HttpRequest) -> HttpResponseBase:
    """OpenAI's `POST /v1/embeddings`, for a profile of the embeddings engine."""
    return _complete(request, engines.EMBEDDINGS)


def _transcription(data: dict, body: object, model_name: str) -> HttpResponse:
    """A transcription as the client asked for it: `text` as plain text, else JSON (the
    model server's answer, without its name for the model)."""
    data.pop("model", None)
    if isinstance(body, dict) and body.get("response_format") == "text":
        return HttpResponse(str(data.get("text") or ""), content_type="text/plain; charset=utf-8")
    return JsonResponse(data)


@api_key_required
def audio_transcriptions(request: HttpRequest) -> HttpResponseBase:
    """OpenAI's `POST /v1/audio/transcriptions` (a multipart form), for a profile of the
    speech-to-text engine."""
    return _complete(request, engines.TRANSCRIPTIONS, engines.read_upload, _transcription)


def model_kind(profile: ServerProfile) -> str:
    """What a model of /v1/models is for: its profile's engine (text, vision, embeddings,
    speech-to-text)."""
    return profile.engine


# --- other APIs: Anthropic's Messages, OpenAI's Responses -----------------------------------------


class DialectStream:
    """The body of a streamed answer in another API's dialect: the upstream chunks translated
    event by event (`dialects.MessageEvents`, `dialects.ResponseEvents`), recorded when the
    response is closed (as `ApiStream`)."""

    def __init__(self, relay: Relay, state: dialects.MessageEvents | dialects.ResponseEvents):
        self.relay, self.state = relay, state
        self.status = UsageRecord.Status.CANCELLED  # unless the stream ends: the client left
        self._held: list = []
        self._events: Iterator | None = None

    def prime(self) -> None:
        """Read upstream up to its first chunk (for at most PRIME_SECONDS) before the response
        starts: a GatewayError then lets a route try its next member."""
        self._events = self.relay.events()
        deadline = time.monotonic() + PRIME_SECONDS
        for event in self._events:
            self._held.append(event)
            if event.data is not None or event.done or time.monotonic() > deadline:
                break

    def __iter__(self) -> Iterator[bytes]:
        rest = self._events if self._events is not None else self.relay.events()
        events = chain(self._held, rest)
        try:
            yield self.state.start()
            for event in events:
                if event.done:
                    break
                if event.data is None:
                    yield b": keepalive\n\n"
                    continue
                if out := self.state.chunk(event.data):
                    yield out
                    self.relay.measure.relayed(int(event.token))
            yield self.state.end()
            self.status = UsageRecord.Status.OK
        except ClientGone:
            return
        except GatewayError as error:
            self.relay.measure.fail(error)
            self.status = UsageRecord.Status.ERROR
            yield self.state.error(error)

    def close(self) -> None:
        self.relay.close(self.status)


def _translated(request: HttpRequest, dialect: dialects.Dialect) -> HttpResponseBase:
    """A request of another API (`dialect`), sent as chat completions: resolved, limited,
    queued, routed and recorded exactly as `_complete` does, its answer translated back."""
    shape = dialect.error
    if request.method != "POST":
        return _method_not_allowed("POST", shape)
    api_key = request_key(request)
    member = membership(api_key.user)
    try:
        translated = dialect.request(read_json(request))
        target = routing.resolve(
            translated.body["model"], api_key.user, member.group_ids, "chat/completions"
        )
        profiles = _able(target.profiles, has_images=translated.images)
    except GatewayError as error:
        return error.response(shape)
    caller = Caller(api_key.user, UsageRecord.Source.API, api_key)
    if target.route is not None:
        caller = replace(caller, route=target.route.name)
    model_name = target.route.name if target.route is not None else profiles[0].slug

    def whole(relay: Relay, data: dict) -> HttpResponse:
        if dialect.answer is None:  # counting tokens
            return JsonResponse({"input_tokens": relay.measure.prompt_tokens})
        return JsonResponse(dialect.answer(data, model_name, translated.echo))

    def start(profile: ServerProfile) -> tuple[Relay, dict]:
        try:
            return calls.start(
                caller, profile, "chat/completions", translated.body, limits=member.limits,
                client_socket=client_socket(request), recorded_as=dialect.endpoint,
            )  # fmt: skip
        except GatewayError as error:  # named as the client's request names the place
            raise translated.located(error) from None

    return _first_answer(
        profiles,
        start,
        whole,
        lambda relay: DialectStream(relay, dialect.events(model_name, translated.echo)),
        shape,
    )  # fmt: skip


def _has_images(body: object) -> bool:
    """Whether a chat completions body has an image part (its checks come later, in
    schema.py: this only picks a route's members that can see it)."""
    messages = body.get("messages") if isinstance(body, dict) else None
    return isinstance(messages, list) and any(
        isinstance(part, dict) and part.get("type") == "image_url"
        for message in messages
        if isinstance(message, dict) and isinstance(message.get("content"), list)
        for part in message["content"]
    )


def _able(profiles: list[ServerProfile], *, has_images: bool) -> list[ServerProfile]:
    """The `profiles` (a profile, or a route's members in order) that can answer the request:
    for images, the vision servers only."""
    able = routing.seeing(profiles, has_images)
    if not able:
        # The words and code of chat completions' refusal (schema.py), said before the call.
        raise GatewayError(
            f"The request has an image, but {profiles[0].slug} cannot see images: it is not a "
            f"vision server (its engine is {profiles[0].engine}). Send text, or use a profile "
            "with the vision engine.",
            param="messages",
            code="images_not_supported",
        )
    return able


@anthropic_key_required
def messages(request: HttpRequest) -> HttpResponseBase:
    return _translated(request, dialects.MESSAGES)


@anthropic_key_required
def count_tokens(request: HttpRequest) -> HttpResponseBase:
    """The prompt's tokens, counted by the model server itself (its chat template and tokenizer:
    a one-token request), so the web tier loads no tokenizer."""
    return _translated(request, dialects.COUNT_TOKENS)


@api_key_required
def responses(request: HttpRequest) -> HttpResponseBase:
    return _translated(request, dialects.RESPONSES_DIALECT)


@public  # the description holds no secret, and API clients read it before they have a key
@csrf_exempt  # no session is involved, and any method but GET gets its 405
def openapi_description(request: HttpRequest) -> JsonResponse:
    """The OpenAPI 3.1 description of this gateway (servers/gateway/openapi.yaml), without a
    key."""
    if request.method != "GET":
        return _method_not_allowed("GET")
    return JsonResponse(openapi.description())


@api_key_required
def not_found(request: HttpRequest, rest: str = "") -> JsonResponse:
    return GatewayError(
        f"Unknown endpoint {request.path}. This gateway serves /v1/models, "
        "/v1/chat/completions, /v1/completions, /v1/embeddings, /v1/audio/transcriptions, "
        "/v1/messages and /v1/responses (described at /v1/openapi.json).",
        404,
        code="unknown_url",
    ).response()


# --- the hop ----------------------------------------------------------------------------------


def _passthrough(response: httpx.Response) -> Iterator[bytes]:
    try:
        yield from response.iter_raw()
    except ClientGone:
        return  # the calling host's web tier hung up (its own client left)
    finally:
        response.close()


@public  # only this host's hop token is accepted: the view checks it (servers/gateway/hop.py)
@csrf_exempt
def hop_view(request: HttpRequest, slug: str, endpoint: str) -> HttpResponseBase:
    if not hop.is_authorized(request.headers.get("Authorization")):
        error = GatewayError("Missing or invalid hop token.", 401, code="invalid_hop_token")
        return error.response()
    if request.method != "POST":
        return _method_not_allowed("POST")
    try:
        if endpoint not in hop.ENDPOINTS:
            raise GatewayError(f"Unknown endpoint /v1/{endpoint[:40]}.", 404, code="not_found")
        profile = (
            ServerProfile.objects.select_related("host")
            .filter(slug=slug, host__name=settings.HOST_NAME)
            .first()
        )
        if profile is None:
            raise GatewayError(
                f"No server '{slug[:80]}' on host {settings.HOST_NAME}.",
                404,
                code="model_not_found",
            )
        incoming: object
        if endpoint == engines.TRANSCRIPTIONS:  # the audio in base64, as the transport sends it
            incoming = engines.form_of(read_json(request, engines.hop_body_limit()))
        else:
            incoming = read_json(request)
        body = calls.upstream_body(profile, endpoint, incoming)
        url = lifecycle.upstream_for(profile)
        if url is None:
            raise GatewayError(
                f"Server '{slug}' is not running on host {settings.HOST_NAME}.",
                503,
                code="server_not_running",
            )
        upstream = send(url, endpoint, body, profile.slug, client_socket=client_socket(request))
    except GatewayError as error:
        return error.response()
    except ClientGone:
        return HttpResponse(status=CLIENT_CLOSED_REQUEST)
    lifecycle.touch_last_request(profile)
    # The model server's own answer (JSON or an event stream), passed on as it came: only another
    # host's web tier reaches this view, with this host's hop token, never a browser's session.
    content_type = upstream.headers.get("Content-Type", "application/json")
    if body.get("stream"):
        return StreamingHttpResponse(
            _passthrough(upstream), content_type=content_type, headers=STREAM_HEADERS
        )
    try:
        return HttpResponse(upstream.read(), content_type=content_type)
    except ClientGone:
        return HttpResponse(status=CLIENT_CLOSED_REQUEST)
    finally:
        upstream.close()
