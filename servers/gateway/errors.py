"""The one error type of the `/v1` gateway, in OpenAI's shape, and what an upstream error
becomes (a model server's own text is logged, never forwarded). See docs/gateway.md, "Errors"."""

from __future__ import annotations

import json
from collections.abc import Callable

from django.http import JsonResponse


class GatewayError(Exception):
    """An answer of the gateway that is an error, in OpenAI's shape: the one error type of the
    `/v1` boundary (refused bodies, keys, unreachable servers, a stream that broke, the hop).

    `type` is OpenAI's for the status (a refused key is an `invalid_request_error`, a rate
    limit `requests`, as OpenAI answers them) unless `error_type` says it (the limits of
    servers/sharing: `rate_limit_exceeded`, `insufficient_quota`, `server_busy`); `headers` go
    with the response (`Retry-After`, …).
    """

    def __init__(
        self,
        message: str,
        status: int = 400,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        error_type: str | None = None,
    ):
        super().__init__(message)
        self.error_type = error_type
        self.message = message
        self.status = status
        self.param = param
        self.code = code
        self.headers = dict(headers or {})

    @property
    def type(self) -> str:
        if self.error_type:  # said by the error (a limit: rate_limit_exceeded, server_busy, …)
            return self.error_type
        if self.status == 403:
            return "permission_error"
        if self.status == 429:
            return "requests"
        return "invalid_request_error" if self.status < 500 else "server_error"

    def as_dict(self) -> dict:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def response(self, shape: Callable[[GatewayError], dict] | None = None) -> JsonResponse:
        """The answer: this error as JSON with its status (OpenAI's shape, or what `shape`
        makes of it: Anthropic's, servers/gateway/dialects.py); `Retry-After` on a 503, and
        `WWW-Authenticate` on a 401, unless the error says otherwise."""
        headers = dict(self.headers)
        if self.status == 503:
            headers.setdefault("Retry-After", "5")
        if self.status == 401:
            headers.setdefault("WWW-Authenticate", 'Bearer realm="mlx-portal"')
        body = self.as_dict() if shape is None else shape(self)
        return JsonResponse(body, status=self.status, headers=headers)


def upstream_error(status: int, name: str, text: str = "") -> GatewayError:
    """The clean error for an upstream HTTP error (its raw `text` is logged, never forwarded)."""
    # mlx_lm.server answers 404 for any exception while it prepares a generation: its
    # generation thread is gone ("generation thread died"), or this request broke something
    # (a chat template that refuses the conversation, say). The portal only sends requests to
    # servers whose model answered the readiness probe, so the model itself is loaded.
    if status == 404 and "generation thread died" in text:
        return GatewayError(
            f"The model server of '{name}' is not ready: its generation thread stopped. "
            "Restart it on the Servers page and check its log.",
            503,
            code="server_not_ready",
        )
    if status in (400, 404, 422):
        return GatewayError(
            f"The model server of '{name}' could not process this request (for example the "
            "prompt is too long for the model, or a parameter is out of range for it).",
            400,
            code="upstream_rejected",
        )
    if status == 413:
        return GatewayError(
            "The request is too large for the model server.", 413, code="request_too_large"
        )
    return GatewayError(
        f"The model server of '{name}' failed (HTTP {status}). Try again; if it keeps "
        "failing, check its log on the Servers page.",
        502,
        code="upstream_error",
    )


# The refusals of the portal's own model server entry points (mlx_entry.py: the context;
# engine_entry.py: an input or audio it cannot take), worded for the user: passed on.
ENTRY_REFUSALS = frozenset(
    {"context_length_exceeded", "invalid_audio", "audio_too_long", "unsupported_audio"}
)


def own_error(status: int, text: str, from_hop: bool) -> GatewayError | None:
    """The error in OpenAI's shape that the portal's own code answered upstream, if it is one:
    another host's hop (worded for the user already), or a refusal of the portal's model
    server entry points (ENTRY_REFUSALS; the schema refusals of mlx_entry.py's grammar
    engine). mlx_lm's own errors are not: they are a plain string, and never forwarded."""
    try:
        error = json.loads(text).get("error")
    except (ValueError, AttributeError):
        return None
    if not isinstance(error, dict) or not isinstance(error.get("message"), str):
        return None
    code = error.get("code") if isinstance(error.get("code"), str) else None
    if not from_hop:
        if status == 400 and code in ENTRY_REFUSALS:
            param = error.get("param") if isinstance(error.get("param"), str) else "messages"
            return GatewayError(error["message"][:500], 400, param=param, code=code)
        if status == 400 and code in ("invalid_json_schema", "invalid_value"):
            # The grammar engine's refusal of a response_format or tool schema (its reason).
            param = error.get("param") if isinstance(error.get("param"), str) else None
            return GatewayError(error["message"][:1000], 400, param=param, code=code)
        return None
    if status == 401:  # our hop token was refused: a configuration problem, not the user's
        return GatewayError(
            "The host of this server refused the portal's hop token: MLX_PORTAL_HOP_SECRET "
            "differs between hosts (docs/hosts.md).",
            502,
            code="hop_refused",
        )
    return GatewayError(error["message"][:500], status, param=error.get("param"), code=code)
