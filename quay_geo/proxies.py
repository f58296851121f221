"""Who the client is behind a reverse proxy: forwarded headers count only from trusted proxies.

``QUAY_GEO_TRUSTED_PROXIES`` lists the addresses and networks of the proxies in front (nginx in
the compose file); gunicorn reads the same variable as ``forwarded_allow_ips``
(``quay_geo/gunicorn_config.py``), so that its ``wsgi.url_scheme`` and Django agree. A request
from any other peer has its ``X-Forwarded-*`` headers removed before a view (or Django's
``SECURE_PROXY_SSL_HEADER``) can read them, and its client is the peer itself.
"""

import functools
import ipaddress
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from django.conf import settings
from django.http import HttpRequest, HttpResponse

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class _Request(Protocol):  # a Django HttpRequest, or a DRF Request wrapping one
    @property
    def META(self) -> Mapping[str, Any]: ...


FORWARDED_HEADERS = (
    "HTTP_X_FORWARDED_FOR",
    "HTTP_X_FORWARDED_PROTO",
    "HTTP_X_FORWARDED_HOST",
    "HTTP_X_FORWARDED_PORT",
    "HTTP_FORWARDED",
)


@functools.lru_cache(maxsize=8)
def _networks(entries: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(entry.strip()) for entry in entries if entry.strip())


def trusted_networks() -> tuple[Network, ...]:
    """Return the configured proxies' networks; raise ValueError if one is not a network."""
    return _networks(tuple(getattr(settings, "QUAY_GEO_TRUSTED_PROXIES", ())))


def _trusted(address: str, networks: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return False
    return any(ip in network for network in networks)


def client_address(request: _Request) -> str:
    """Return the client's address: the first hop, from the right, that is not a trusted proxy.

    The peer's own address unless the peer is a trusted proxy; then ``X-Forwarded-For`` is read
    from its end (what the proxy appended) towards its start (what the client wrote) up to the
    first address no trusted proxy owns. A hop that is not an address ends the walk at the last
    trusted one: what lies left of it was written by the client.
    """
    peer = str(request.META.get("REMOTE_ADDR") or "unknown")
    networks = trusted_networks()
    if not _trusted(peer, networks):
        return peer
    client = peer
    for hop in reversed(str(request.META.get("HTTP_X_FORWARDED_FOR", "")).split(",")):
        hop = hop.strip()
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return client
        client = hop
        if not _trusted(hop, networks):
            return client
    return client


class ForwardedHeadersMiddleware:
    """Drop ``X-Forwarded-*`` and ``Forwarded`` headers unless a trusted proxy sent them."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if not _trusted(str(request.META.get("REMOTE_ADDR") or ""), trusted_networks()):
            for header in FORWARDED_HEADERS:
                request.META.pop(header, None)
        return self.get_response(request)
