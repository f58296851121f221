"""Client addresses and schemes behind a reverse proxy: forwarded headers only from trusted ones."""

import pytest
import requests
from django.test import Client, RequestFactory, override_settings

from quay_geo.proxies import client_address
from tests import live

FACTORY = RequestFactory()


def _address(peer: str, forwarded_for: str | None = None) -> str:
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for is not None else {}
    return client_address(FACTORY.get("/v2/", REMOTE_ADDR=peer, headers=headers))


@override_settings(QUAY_GEO_TRUSTED_PROXIES=[])
def test_an_untrusted_peer_is_the_client_whatever_it_forwards() -> None:
    assert _address("127.0.0.1", "10.9.9.9") == "127.0.0.1"
    assert _address("203.0.113.7", "10.9.9.9") == "203.0.113.7"


@override_settings(QUAY_GEO_TRUSTED_PROXIES=["172.30.57.10", "10.1.0.0/16"])
def test_behind_trusted_proxies_the_client_is_the_first_untrusted_hop_from_the_right() -> None:
    # nginx appends the address it saw; what is left of it was written by the client.
    assert _address("172.30.57.10", "6.6.6.6, 198.51.100.4") == "198.51.100.4"
    # A second trusted proxy (10.1.2.3) between the client and nginx is skipped.
    assert _address("172.30.57.10", "6.6.6.6, 198.51.100.4, 10.1.2.3") == "198.51.100.4"
    # No header: the proxy itself is all we know.
    assert _address("172.30.57.10") == "172.30.57.10"
    # A hop that is no address ends the walk at the last trusted one.
    assert _address("172.30.57.10", "198.51.100.4, bogus") == "172.30.57.10"
    # An untrusted peer in the trusted proxies' network range only counts if it is listed.
    assert _address("172.30.57.11", "198.51.100.4") == "172.30.57.11"


def _realm(client: Client, peer: str) -> str:
    response = client.get("/v2/", REMOTE_ADDR=peer, headers={"X-Forwarded-Proto": "https"})
    assert response.status_code == 401
    return str(response["WWW-Authenticate"])


@pytest.mark.django_db
@override_settings(
    QUAY_GEO_TRUSTED_PROXIES=["172.30.57.10"],
    SECURE_PROXY_SSL_HEADER=("HTTP_X_FORWARDED_PROTO", "https"),
)
def test_x_forwarded_proto_counts_only_from_a_trusted_proxy() -> None:
    client = Client()
    assert _realm(client, "172.30.57.10").startswith('Bearer realm="https://')
    assert _realm(client, "127.0.0.1").startswith('Bearer realm="http://')


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("trusted", "scheme"), [("", "http"), ("127.0.0.1", "https")])
def test_gunicorn_honours_x_forwarded_proto_only_from_the_configured_proxies(
    trusted: str, scheme: str
) -> None:
    # gunicorn's own default trusts 127.0.0.1; quay_geo/gunicorn_config.py trusts the setting.
    with live.gunicorn(workers=1, QUAY_GEO_TRUSTED_PROXIES=trusted) as url:
        response = requests.get(f"{url}/v2/", headers={"X-Forwarded-Proto": "https"}, timeout=30)
    assert response.status_code == 401
    port = url.rsplit(":", 1)[1]
    assert f'realm="{scheme}://127.0.0.1:{port}/v2/auth"' in response.headers["WWW-Authenticate"]


@pytest.mark.django_db(transaction=True)
def test_rate_limit_counts_the_forwarded_client_behind_a_trusted_proxy() -> None:
    with live.gunicorn(
        workers=1, QUAY_GEO_TRUSTED_PROXIES="127.0.0.1", QUAY_GEO_RATE_LIMIT_PER_MINUTE="2"
    ) as url:

        def status(client: str) -> int:
            headers = {"X-Forwarded-For": f"6.6.6.6, {client}"}
            return requests.get(f"{url}/v2/", headers=headers, timeout=30).status_code

        first = [status("198.51.100.1") for _ in range(3)]
        other = status("198.51.100.2")
    assert first == [401, 401, 429]
    assert other == 401
