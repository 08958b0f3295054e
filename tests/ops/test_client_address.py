"""The client's address behind a reverse proxy (config/client_address.py): read through the
trusted proxies, so that behind the nginx front wrong API keys and failed logins are counted
per client and `/metrics` stays closed to the world. In-process; the same through a real
nginx and gunicorn is in test_front.py."""

from __future__ import annotations

import ipaddress

import pytest
from django.test import Client, RequestFactory

from common.client_address import client_address, is_local_client
from tests.support.clean_env import run_python

LOOPBACK = ("127.0.0.1", "::1")


@pytest.fixture
def trust(settings):
    def set_trusted(*networks: str) -> None:
        settings.TRUSTED_PROXIES = tuple(ipaddress.ip_network(n) for n in networks)

    set_trusted(*LOOPBACK)
    return set_trusted


def _request(peer: str, forwarded_for: str | None = None, **headers: str):
    meta = {"REMOTE_ADDR": peer, **headers}
    if forwarded_for is not None:
        meta["HTTP_X_FORWARDED_FOR"] = forwarded_for
    return RequestFactory().get("/", **meta)


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "client", "local"),
    [
        # No proxy: the peer is the client.
        ("203.0.113.5", None, "203.0.113.5", False),
        ("127.0.0.1", None, "127.0.0.1", True),
        ("::1", None, "::1", True),
        ("::ffff:127.0.0.1", None, "127.0.0.1", True),
        # Through the front on this machine: the address nginx appended.
        ("127.0.0.1", "203.0.113.5", "203.0.113.5", False),
        ("127.0.0.1", "2001:db8::7", "2001:db8::7", False),
        ("127.0.0.1", "127.0.0.1", "127.0.0.1", True),  # a scraper on this machine
        # What a client wrote itself is left of nginx's entry and is not read.
        ("127.0.0.1", "127.0.0.1, 203.0.113.5", "203.0.113.5", False),
        ("127.0.0.1", "198.51.100.1, 203.0.113.5", "203.0.113.5", False),
        ("127.0.0.1", "garbage, 203.0.113.5", "203.0.113.5", False),
        # A peer that is not a trusted proxy is the client, whatever it says.
        ("203.0.113.5", "127.0.0.1", "203.0.113.5", False),
        ("192.0.2.9", "198.51.100.1", "192.0.2.9", False),
        # Empty list elements are ignored; a trusted proxy's non-address leaves it unknown.
        ("127.0.0.1", "203.0.113.5, ", "203.0.113.5", False),
        ("127.0.0.1", "not-an-address", "", False),
        ("127.0.0.1", "", "127.0.0.1", True),  # an empty header from this machine
        ("", None, "", False),
    ],
)  # fmt: skip
def test_the_client_is_read_through_the_trusted_proxies(trust, peer, forwarded_for, client, local):
    request = _request(peer, forwarded_for)
    assert client_address(request) == client
    assert is_local_client(request) is local


def test_a_chain_of_trusted_proxies_is_walked_to_the_first_address_outside_it(trust):
    trust(*LOOPBACK, "10.0.0.0/8")  # e.g. a TLS terminator on the LAN in front of nginx
    request = _request("127.0.0.1", "198.51.100.1, 203.0.113.5, 10.1.2.3")
    assert client_address(request) == "203.0.113.5"


def test_trusting_no_proxy_makes_the_peer_the_client_and_a_forwarded_request_not_local(trust):
    trust()
    request = _request("127.0.0.1", "127.0.0.1")
    assert client_address(request) == "127.0.0.1"
    assert not is_local_client(request)  # a local proxy the portal does not trust


@pytest.mark.parametrize("header", ["HTTP_FORWARDED", "HTTP_X_REAL_IP"])
def test_a_request_forwarded_with_a_header_the_portal_does_not_read_is_not_local(trust, header):
    assert not is_local_client(_request("127.0.0.1", **{header: "for=203.0.113.5"}))


def _bad_key(n: int) -> dict:
    return {"Authorization": f"Bearer mlxp_{'x' * 40}{n:03d}"}


def test_wrong_api_keys_behind_the_proxy_are_counted_per_client(db, trust, settings):
    settings.API_KEY_FAILURES_PER_MINUTE = 3
    front = Client(REMOTE_ADDR="127.0.0.1")
    scanner = {"HTTP_X_FORWARDED_FOR": "203.0.113.5"}
    statuses = [
        front.get("/v1/models", headers=_bad_key(n), **scanner).status_code for n in range(5)
    ]
    assert statuses == [401] * 3 + [429] * 2
    # Another client behind the same front is not locked out by the scanner.
    other = front.get("/v1/models", headers=_bad_key(9), HTTP_X_FORWARDED_FOR="198.51.100.8")
    assert other.status_code == 401
    # Nor is the scanner's count reset by writing another address in front of nginx's.
    spoofed = {"HTTP_X_FORWARDED_FOR": "198.51.100.9, 203.0.113.5"}
    assert front.get("/v1/models", headers=_bad_key(10), **spoofed).status_code == 429


def test_failed_logins_behind_the_proxy_are_throttled_per_client(db, trust):
    front = Client(REMOTE_ADDR="127.0.0.1")

    def log_in(email: str, client_ip: str):
        data = {"login": email, "password": "wrong-password"}
        return front.post("/accounts/login/", data, HTTP_X_FORWARDED_FOR=client_ip)

    # login_failed allows 10 a minute per address (ACCOUNT_RATE_LIMITS).
    for n in range(10):
        assert b"Too many failed" not in log_in(f"guess{n}@example.com", "203.0.113.5").content
    assert b"Too many failed" in log_in("guess10@example.com", "203.0.113.5").content
    assert b"Too many failed" not in log_in("someone@example.com", "198.51.100.8").content


def test_metrics_through_the_proxy_answer_this_machine_only(db, trust):
    front = Client(REMOTE_ADDR="127.0.0.1")
    assert front.get("/metrics", HTTP_X_FORWARDED_FOR="203.0.113.5").status_code == 403
    spoofed = front.get("/metrics", HTTP_X_FORWARDED_FOR="127.0.0.1, 203.0.113.5")
    assert spoofed.status_code == 403
    assert front.get("/metrics", HTTP_X_FORWARDED_FOR="127.0.0.1").status_code == 200


@pytest.mark.parametrize("value", ["nginx", "127.0.0.1,localhost", "10.0.0.0/33"])
def test_a_trusted_proxy_that_is_not_an_address_stops_start_up_with_what_to_write(tmp_path, value):
    result = run_python(
        tmp_path, "-c", "import django; django.setup()",
        DJANGO_SETTINGS_MODULE="config.settings", MLX_PORTAL_TRUSTED_PROXIES=value,
    )  # fmt: skip
    assert result.returncode != 0
    assert "MLX_PORTAL_TRUSTED_PROXIES=" in result.stderr
    assert "is not an IP address or network" in result.stderr


@pytest.mark.parametrize(
    ("value", "trusted"),
    [("", "()"), (" 10.0.0.1 , fd00::/8 ,", "('10.0.0.1/32', 'fd00::/8')")],
)
def test_trusted_proxies_are_a_list_of_addresses_and_networks(tmp_path, value, trusted):
    code = "import django; django.setup(); from django.conf import settings; "
    code += "print(tuple(str(n) for n in settings.TRUSTED_PROXIES))"
    result = run_python(
        tmp_path, "-c", code,
        DJANGO_SETTINGS_MODULE="config.settings", MLX_PORTAL_TRUSTED_PROXIES=value,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == trusted
