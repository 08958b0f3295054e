"""The hop between hosts: how the web tier of one host reaches a model server on another.

Model servers listen on their own host's loopback only. A request for a server on another
host goes to *that host's* portal web tier, `POST <host.web_url>/internal/hop/<slug>/v1/<endpoint>`,
which forwards it to its local `mlx_lm.server`. The hop is authenticated with a bearer token
derived from the cluster's shared secret (`MLX_PORTAL_HOP_SECRET`) and the *target* host's name:
a host accepts only the token for its own name. See docs/hosts.md for the trust model.
"""

from __future__ import annotations

import hashlib
import hmac

from django.conf import settings

from models_catalog.models import Host
from servers.gateway.errors import GatewayError

HOP_PREFIX = "/internal/hop"
ENDPOINTS = ("chat/completions", "completions", "embeddings", "audio/transcriptions")


def hop_token(host_name: str, secret: str | None = None) -> str:
    """The bearer token that host `host_name` accepts on its hop endpoint."""
    secret = settings.HOP_SECRET if secret is None else secret
    return hmac.new(
        secret.encode(), f"mlx-portal-hop:{host_name}".encode(), hashlib.sha256
    ).hexdigest()


def is_authorized(authorization: str | None) -> bool:
    """Whether a hop request's `Authorization` header carries this host's token."""
    if not settings.HOP_SECRET or not authorization:
        return False
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token:
        return False
    return hmac.compare_digest(token.strip(), hop_token(settings.HOST_NAME))


def route(host: Host, local_url: str, slug: str) -> tuple[str, dict[str, str]]:
    """Where this web tier sends a request for `slug`'s server on `host`: `(base URL, headers)`.

    On this machine, the server itself (`local_url`, 127.0.0.1); on another host, that host's
    hop. GatewayError 503 when another host cannot be reached (no address, no secret).
    """
    if host.name == settings.HOST_NAME:
        return local_url, {}
    if not host.web_url:
        raise GatewayError(
            f"Server '{slug}' runs on host {host.name}, whose web tier has no address: set "
            f"MLX_PORTAL_HOST_URL on {host.name} (docs/hosts.md).",
            503,
            code="host_unreachable",
        )
    if not settings.HOP_SECRET:
        raise GatewayError(
            f"Server '{slug}' runs on host {host.name}, but MLX_PORTAL_HOP_SECRET is not set "
            "here, so this portal cannot reach other hosts (docs/hosts.md).",
            503,
            code="hop_not_configured",
        )
    url = f"{host.web_url.rstrip('/')}{HOP_PREFIX}/{slug}"
    return url, {"Authorization": f"Bearer {hop_token(host.name)}"}
