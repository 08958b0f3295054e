"""The OpenAI-compatible gateway: `/v1/models`, `/v1/chat/completions`, `/v1/completions`.

The access middleware has already authenticated the API key (`request.user`, `request.api_key`)
or answered 401. Views here parse, call `servers.completions`, and pass the answer on.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt

from servers import completions, openapi
from servers.gateway import ClientGone, GatewayError, Relay, sse
from servers.models import ServerProfile, UsageRecord
from servers.usage import Caller

STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
# What a request whose client left gets (nobody reads it): nginx's "client closed request".
CLIENT_CLOSED_REQUEST = 499


def client_socket(request: HttpRequest) -> socket.socket | None:
    """The socket of the client's connection, when the web server gives it (gunicorn does):
    the gateway watches it to stop a model server's work for a client that left."""
    sock = request.META.get("gunicorn.socket")
    return sock if isinstance(sock, socket.socket) else None


def error_response(error: GatewayError) -> JsonResponse:
    headers = {"Retry-After": "5"} if error.status == 503 else None
    return JsonResponse(error.as_dict(), status=error.status, headers=headers)


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
    error = GatewayError(f"Use {allowed} for this endpoint.", 405, code="method_not_allowed")
    return JsonResponse(error.as_dict(), status=405, headers={"Allow": allowed})


def models(request: HttpRequest) -> JsonResponse:
    """Every profile (any member may call any), in OpenAI's list shape; id = profile slug."""
    if request.method != "GET":
        return _method_not_allowed("GET")
    profiles = ServerProfile.objects.select_related("instance", "owner", "host").order_by("slug")
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
    limits = completions.request_limits(profile)
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


def _complete(request: HttpRequest, endpoint: str) -> HttpResponse:
    if request.method != "POST":
        return _method_not_allowed("POST")
    try:
        body = read_json(request)
        profile = completions.find_profile(body.get("model") if isinstance(body, dict) else None)
    except GatewayError as error:
        return error_response(error)
    caller = Caller(request.user, UsageRecord.Source.API, getattr(request, "api_key", None))
    try:
        relay, upstream_body = completions.start(
            caller, profile, endpoint, body, client_socket=client_socket(request)
        )
    except GatewayError as error:
        return error_response(error)
    except ClientGone:
        return HttpResponse(status=CLIENT_CLOSED_REQUEST)
    if upstream_body["stream"]:
        options = body.get("stream_options") or {}
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
        return error_response(error)
    except ClientGone:
        status = UsageRecord.Status.CANCELLED
        return HttpResponse(status=CLIENT_CLOSED_REQUEST)
    finally:
        relay.close(status)
    data["model"] = profile.slug
    return JsonResponse(data)


@csrf_exempt
def chat_completions(request: HttpRequest) -> HttpResponse:
    return _complete(request, "chat/completions")


@csrf_exempt
def text_completions(request: HttpRequest) -> HttpResponse:
    return _complete(request, "completions")


@csrf_exempt  # public: no session is involved, and any method but GET gets its 405
def openapi_description(request: HttpRequest) -> JsonResponse:
    """The OpenAPI 3.1 description of this gateway (servers/openapi.yaml), without a key."""
    if request.method != "GET":
        return _method_not_allowed("GET")
    return JsonResponse(openapi.description())


@csrf_exempt
def not_found(request: HttpRequest, rest: str = "") -> JsonResponse:
    error = GatewayError(
        f"Unknown endpoint {request.path}. This gateway serves /v1/models, "
        "/v1/chat/completions and /v1/completions (described at /v1/openapi.json).",
        404,
        code="unknown_url",
    )
    return error_response(error)
