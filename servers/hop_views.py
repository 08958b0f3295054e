"""The hop endpoint: `POST /internal/hop/<slug>/v1/<endpoint>` (see servers/hop.py).

Public to the access middleware (no session, no API key): the view itself accepts only this
host's hop token, and only for a running server on this host. The caller (another host's web
tier) has already authenticated the user, validated the body and records the usage; this view
validates the body again (defence in depth) and passes the server's answer through untouched.
"""

from __future__ import annotations

from collections.abc import Iterator

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt

from servers import completions, hop, services
from servers.api_views import (
    CLIENT_CLOSED_REQUEST,
    STREAM_HEADERS,
    client_socket,
    error_response,
    read_json,
)
from servers.gateway import ClientGone, GatewayError, build_upstream_body, send
from servers.models import ServerProfile


def _passthrough(response) -> Iterator[bytes]:
    try:
        yield from response.iter_raw()
    except ClientGone:
        return  # the calling host's web tier hung up (its own client left)
    finally:
        response.close()


@csrf_exempt
def hop_view(request: HttpRequest, slug: str, endpoint: str) -> HttpResponse:
    if not hop.is_authorized(request.headers.get("Authorization")):
        error = GatewayError("Missing or invalid hop token.", 401, code="invalid_hop_token")
        return JsonResponse(error.as_dict(), status=401)
    if request.method != "POST":
        error = GatewayError("Use POST for this endpoint.", 405, code="method_not_allowed")
        return JsonResponse(error.as_dict(), status=405, headers={"Allow": "POST"})
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
            **completions.request_limits(profile),
        )
        url = services.upstream_for(profile)
        if url is None:
            raise GatewayError(
                f"Server '{slug}' is not running on host {settings.HOST_NAME}.",
                503,
                code="server_not_running",
            )
        upstream = send(url, endpoint, body, profile.slug, client_socket=client_socket(request))
    except GatewayError as error:
        return error_response(error)
    except ClientGone:
        return HttpResponse(status=CLIENT_CLOSED_REQUEST)
    services.touch_last_request(profile)
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
