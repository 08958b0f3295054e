"""Who sent a request: the client's address, read through the reverse proxies we trust.

Behind the nginx front (deploy/nginx/mlx-portal.conf, docs/deploy.md) every request reaches
gunicorn from 127.0.0.1, and the client's address travels in `X-Forwarded-For`, which nginx
extends with the address it saw. Clients can send that header too, so it is read from the
right and believed only as far as the proxies in `TRUSTED_PROXIES` (MLX_PORTAL_TRUSTED_PROXIES)
vouch for it: the client is the first address, walking leftwards from the peer, that is not
one of them. A peer that is not a trusted proxy is the client, whatever the headers say.

Everything that judges a client by its address asks here: the wrong-API-key counter
(accounts/middleware.py), allauth's login throttling (accounts/adapter.py) and `/metrics`'
localhost rule (servers/usage/metrics.py). Imports no app.
"""

from __future__ import annotations

import ipaddress

from django.conf import settings
from django.http import HttpRequest

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Forwarding headers the portal does not read: a request carrying one was forwarded by a proxy
# whose word about the client is not taken, so it is never treated as coming from this machine.
_UNREAD_FORWARDING = ("HTTP_FORWARDED", "HTTP_X_REAL_IP")


def _parse(text: str) -> IPAddress | None:
    text = text.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped  # a dual-stack socket's view of an IPv4 client
    return address


def _trusted(address: IPAddress) -> bool:
    return any(address in network for network in settings.TRUSTED_PROXIES)


def _client(request: HttpRequest) -> IPAddress | None:
    address = _parse(request.META.get("REMOTE_ADDR", ""))
    # Empty elements of a header list are ignored (RFC 9110, 5.6.1).
    hops = [hop for hop in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if hop.strip()]
    for hop in reversed(hops):
        if address is None or not _trusted(address):
            break
        # A trusted proxy wrote this hop; anything it wrote that is not an address leaves the
        # client unknown (never the proxy's own, local, address).
        address = _parse(hop)
    return address


def client_address(request: HttpRequest) -> str:
    """The client's IP address as text, or "" when it cannot be known."""
    address = _client(request)
    return str(address) if address is not None else ""


def is_local_client(request: HttpRequest) -> bool:
    """Whether the request comes from this machine: its client is a loopback address, and no
    proxy outside `TRUSTED_PROXIES` forwarded it (a local proxy the portal does not trust
    would make every client of the world look local)."""
    if any(header in request.META for header in _UNREAD_FORWARDING):
        return False
    peer = _parse(request.META.get("REMOTE_ADDR", ""))
    if "HTTP_X_FORWARDED_FOR" in request.META and (peer is None or not _trusted(peer)):
        return False
    address = _client(request)
    return address is not None and address.is_loopback
