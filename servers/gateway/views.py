"""The gateway's endpoints: `/v1/models`, `/v1/chat/completions`, `/v1/completions`, the OpenAPI
description, and the hop another host's web tier calls (`/internal/hop/<slug>/v1/<endpoint>`).

Each keyed view wears `auth.api_key_required` (the request's key is checked before it runs);
the OpenAPI description and the hop are `public` (the hop checks this host's hop token
itself). Views parse, call `calls`, and pass the answer on.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.views.decorators.csrf import csrf_exempt

from accounts.access import public
from accounts.teams import membership
from servers.gateway import calls, hop, openapi
from servers.gateway.auth import api_key_required, request_key
from servers.gateway.errors import GatewayError
from servers.gateway.relay import STREAM_HEADERS, Relay, sse
from servers.gateway.schema import build_upstream_body
from servers.gateway.transport import ClientGone, client_socket, send
from servers.models import ServerProfile, UsageRecord
from servers.supervision import lifecycle
from servers.usage.records import Caller

# What a request whose client left gets (nobody reads it): nginx's "client closed request".
CLIENT_CLOSED_REQUEST = 499


def read_json(request: HttpRequest) -> object:
    """The request's JSON body, refusing oversize (413) and malformed (400) bodies."""
    limit = settings.GATEWAY_MAX_BODY_BYTES
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


def _method_not_allowed(allowed: str) -> JsonResponse:
    return GatewayError(
        f"Use {allowed} for this endpoint.", 405, code="method_not_allowed",
        headers={"Allow": allowed},
    ).response()  # fmt: skip


@api_key_required
def models(request: HttpRequest) -> JsonResponse:
    """Every profile the key's owner may call (servers.models.may_see), in OpenAI's list shape;
    id = profile slug."""
    if request.method != "GET":
        return _method_not_allowed("GET")
    profiles = (
        ServerProfile.objects.visible_to(request_key(request).user)
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
                "root": profile.model_id,
                "status": profile.shown_state,  # "unknown" while its host is offline
                "host": profile.host.name,
                "on_demand": profile.allow_on_demand,
                "max_tokens": profile.max_tokens,
                "chat_template_kwargs": template_kwargs(profile),
            }
        )
    return JsonResponse({"object": "list", "data": data})


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

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self.relay.openai_stream(self.model, self.include_usage, self.chunk_object)
            self.status = UsageRecord.Status.OK
        except ClientGone:
            return  # cancelled: the client left while the server was silent
        except GatewayError as error:
            self.relay.measure.fail(error)
            self.status = UsageRecord.Status.ERROR
            yield sse(error.as_dict())

    def close(self) -> None:
        self.relay.close(self.status)


def _complete(request: HttpRequest, endpoint: str) -> HttpResponseBase:
    if request.method != "POST":
        return _method_not_allowed("POST")
    api_key = request_key(request)
    # The caller's groups (which profiles they see) and limits, in one query.
    member = membership(api_key.user)
    try:
        body = read_json(request)
        model = body.get("model") if isinstance(body, dict) else None
        profile = calls.find_profile(model, api_key.user, member.group_ids)
    except GatewayError as error:
        return error.response()
    caller = Caller(api_key.user, UsageRecord.Source.API, api_key)
    try:
        relay, upstream_body = calls.start(
            caller,
            profile,
            endpoint,
            body,
            limits=member.limits,
            client_socket=client_socket(request),
        )
    except GatewayError as error:
        return error.response()
    except ClientGone:
        return HttpResponse(status=CLIENT_CLOSED_REQUEST)
    if upstream_body["stream"]:
        options = (body.get("stream_options") if isinstance(body, dict) else None) or {}
        include_usage = bool(options.get("include_usage"))
        chunk_object = (
            "chat.completion.chunk" if endpoint == "chat/completions" else ("text_completion")
        )
        stream = ApiStream(relay, profile.slug, include_usage, chunk_object)
        return StreamingHttpResponse(
            stream, content_type="text/event-stream", headers=STREAM_HEADERS
        )
    status = UsageRecord.Status.ERROR
    try:
        data = relay.json()
        status = UsageRecord.Status.OK
    except GatewayError as error:
        relay.measure.fail(error)
        return error.response()
    except ClientGone:
        status = UsageRecord.Status.CANCELLED
        return HttpResponse(status=CLIENT_CLOSED_REQUEST)
    finally:
        relay.close(status)
    data["model"] = profile.slug
    return JsonResponse(data)


@api_key_required
def chat_completions(request: HttpRequest) -> HttpResponseBase:
    return _complete(request, "chat/completions")


@api_key_required
def text_completions(request: HttpRequest) -> HttpResponseBase:
    return _complete(request, "completions")


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
        "/v1/chat/completions and /v1/completions (described at /v1/openapi.json).",
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
        body = build_upstream_body(
            read_json(request),
            endpoint=endpoint,
            max_tokens_cap=profile.max_tokens,
            **calls.request_limits(profile),
        )
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
