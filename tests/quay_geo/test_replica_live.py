"""The read replica for real: gunicorn on a private primary and its streaming hot standby.

The standby logs every statement it runs, so a test sees which reads reached it, and that no
write ever did (a standby refuses writes: each attempt would be logged with its error).
"""

import hashlib
import itertools
import json
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlparse

import psycopg
import pytest
import requests

from tests import live
from tests.pgpair import PgPair

PASSWORD = "replica-live-password"
DBNAME = "quay_geo_replica_live"
REPOSITORY = "alice/pub"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


@dataclass
class Site:
    """A migrated database on the private primary, a local-disk location, alice, a public image."""

    pair: PgPair
    primary: str
    standby: str

    def heartbeats(self) -> list[dict[str, Any]]:
        """Return the replica status of every web process that beat in the last 3 seconds."""
        rows = self.pair.sql(
            "SELECT replica FROM replication_instanceheartbeat "
            "WHERE role = 'web' AND seen_at > now() - interval '3 seconds'",
            dbname=DBNAME,
        )
        return [row[0] for row in rows]

    def standby_has_tag(self, tag: str) -> bool:
        rows = self.pair.sql(
            "SELECT count(*) FROM registry_tag WHERE name = %s", tag, standby=True, dbname=DBNAME
        )
        return bool(rows[0][0])


def manage(database_url: str, *args: str, **env: str) -> None:
    result = subprocess.run(
        [str(live.BIN / "python"), "manage.py", *args],
        cwd=live.ROOT,
        env=live.process_env(DATABASE_URL=database_url, **env),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]


def digest_of(response: requests.Response) -> str:
    assert response.status_code == 200, response.text
    return str(response.headers["Docker-Content-Digest"])


class Registry:
    """Just enough of a registry client: a token per scope, monolithic blob push, pulls."""

    def __init__(self, base: str, user: str | None = None) -> None:
        self.base, self.user = base, user
        self.session = requests.Session()
        self.tokens: dict[str, str] = {}

    def headers(self, scope: str) -> dict[str, str]:
        if scope not in self.tokens:
            response = self.session.get(
                f"{self.base}/v2/auth",
                params={"service": urlparse(self.base).netloc, "scope": scope},
                auth=(self.user, PASSWORD) if self.user else None,
                timeout=30,
            )
            assert response.status_code == 200, response.text
            self.tokens[scope] = response.json()["token"]
        return {"Authorization": f"Bearer {self.tokens[scope]}"}

    def push(self, repository: str, tag: str) -> dict[str, bytes]:
        """Push a config, a layer and a manifest tagged ``tag``; return the blobs by digest."""
        scope = f"repository:{repository}:pull,push"
        config = json.dumps({"architecture": "amd64", "os": "linux", "tag": tag}).encode()
        blobs = {"sha256:" + hashlib.sha256(b).hexdigest(): b for b in (config, os.urandom(4096))}
        for digest, data in blobs.items():
            response = self.session.post(
                f"{self.base}/v2/{repository}/blobs/uploads/",
                params={"digest": digest},
                data=data,
                headers={"Content-Type": "application/octet-stream", **self.headers(scope)},
                timeout=60,
            )
            assert response.status_code == 201, response.text
        (config_digest, layer_digest) = blobs
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer_digest,
                    "size": len(blobs[layer_digest]),
                }
            ],
        }
        response = self.session.put(
            f"{self.base}/v2/{repository}/manifests/{tag}",
            data=json.dumps(manifest).encode(),
            headers={"Content-Type": OCI_MANIFEST, **self.headers(scope)},
            timeout=60,
        )
        assert response.status_code == 201, response.text
        return blobs

    def get(self, repository: str, path: str) -> requests.Response:
        response = self.session.get(
            f"{self.base}/v2/{repository}/{path}",
            headers={"Accept": OCI_MANIFEST, **self.headers(f"repository:{repository}:pull")},
            allow_redirects=False,
            timeout=60,
        )
        if response.status_code == 307:  # a store that redirects: fetch the bytes there
            response = requests.get(urljoin(response.url, response.headers["Location"]), timeout=60)
        return response


@pytest.fixture(scope="module")
def site(pgpair: PgPair, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    pgpair.sql(f"DROP DATABASE IF EXISTS {DBNAME} WITH (FORCE)")
    pgpair.sql(f"CREATE DATABASE {DBNAME}")
    primary, standby = pgpair.url(DBNAME), pgpair.url(DBNAME, standby=True)
    store = tmp_path_factory.mktemp("replica-store")
    manage(primary, "migrate", "--noinput")
    manage(
        primary,
        "ensuresuperuser",
        DJANGO_SUPERUSER_USERNAME="alice",
        DJANGO_SUPERUSER_PASSWORD=PASSWORD,
    )
    manage(primary, "addlocation", "disk", "--kind", "local", "--option", f"storage_path={store}")
    site = Site(pgpair, primary, standby)
    with server(site, False) as url:
        Registry(url, "alice").push(REPOSITORY, "base")
    manage(primary, "setrepovisibility", REPOSITORY, "public")
    pgpair.wait_replayed()
    yield site
    pgpair.sql(f"DROP DATABASE IF EXISTS {DBNAME} WITH (FORCE)")


@pytest.fixture(autouse=True)
def _standby_restored(pgpair: PgPair) -> Iterator[None]:
    """Every test leaves the standby running, replaying, and caught up."""
    yield
    if not pgpair.standby_running():
        pgpair.standby_start()
    if pgpair.replay_paused():
        pgpair.replay_resume()
    pgpair.wait_replayed()


_SERVICES = itertools.count()


@contextmanager
def server(site: Site, replica: bool = True, /, **env: str) -> Iterator[str]:
    """Run gunicorn on the private primary (and its standby as the replica); yield its URL."""
    settings = {
        "DATABASE_URL": site.primary,
        "DATABASE_REPLICA_URL": site.standby if replica else "",
        "DATABASE_CONN_MAX_AGE": "60",
        "QUAY_GEO_HEARTBEAT_SECONDS": "1",
        # The region cache off: every read here is the router's (a write-through cache entry
        # would answer a pull without asking any database, hiding what the router did).
        "QUAY_GEO_CACHE_SECONDS": "0",
        "QUAY_GEO_TAG_CACHE_SECONDS": "0",
        # Each server its own row on the status tab (one per host, role and service name).
        "QUAY_GEO_SERVICE_NAME": f"web-{next(_SERVICES)}",
        **env,
    }
    with live.gunicorn(workers=1, **settings) as url:
        yield url


def wait_replica(site: Site, urls: list[str], state: str, timeout: float = 30) -> None:
    """Wait until every web process reports ``state`` (requests keep their heartbeats going)."""

    def reported() -> bool:
        for url in urls:
            requests.get(f"{url}/v2/", timeout=10)
        beats = site.heartbeats()
        return len(beats) >= len(urls) and all(beat.get("state") == state for beat in beats)

    live.wait_until(reported, timeout, 0.3, f"replica not {state}: {site.heartbeats()}")


def gunicorn_logs() -> str:
    return "".join(p.read_text(errors="replace") for p in live.log_dir().glob("gunicorn-*.log"))


def test_a_push_is_pulled_at_once_in_its_region_while_the_replica_is_behind(site: Site) -> None:
    with server(
        site, DATABASE_REPLICA_CHECK_SECONDS="30", DATABASE_REPLICA_MAX_LAG_SECONDS="600"
    ) as url:
        wait_replica(site, [url], "ok")
        alice, anonymous = Registry(url, "alice"), Registry(url)
        before = digest_of(anonymous.get(REPOSITORY, "manifests/base"))
        site.pair.replay_pause()

        blobs = alice.push(REPOSITORY, "fresh")
        alice.push(REPOSITORY, "base")  # moves a tag the replica already has
        manifest = alice.get(REPOSITORY, "manifests/fresh")
        pulled = {digest: alice.get(REPOSITORY, f"blobs/{digest}").content for digest in blobs}
        moved = digest_of(alice.get(REPOSITORY, "manifests/base"))

        assert manifest.status_code == 200, manifest.text
        assert pulled == blobs
        assert moved != before, "the writer reads the primary while the replica lags behind it"
        # The replica is really behind, and serves whoever has not written: a moved tag is still
        # the old one there; a tag it lacks is a miss, which is read again on the primary.
        assert not site.standby_has_tag("fresh")
        assert digest_of(anonymous.get(REPOSITORY, "manifests/base")) == before
        assert anonymous.get(REPOSITORY, "manifests/fresh").status_code == 200


def test_writes_never_reach_the_replica_while_reads_do(site: Site) -> None:
    start = len(site.pair.standby_log())
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):  # what a stray write leaves
        site.pair.sql("CREATE TABLE stray (x int)", standby=True, dbname=DBNAME)
    assert "read-only transaction" in site.pair.standby_log()[start:]

    with server(site) as url:
        wait_replica(site, [url], "ok")
        start = len(site.pair.standby_log())
        Registry(url, "alice").push(REPOSITORY, "written")
        site.pair.wait_replayed()
        anonymous = Registry(url)
        assert anonymous.get(REPOSITORY, "manifests/written").status_code == 200
        log = site.pair.standby_log()[start:]

    assert "registry_tag" in log  # the anonymous pull read the replica
    for write in ("INSERT INTO", "UPDATE ", "DELETE FROM", "read-only transaction"):
        assert write not in log


def test_a_stopped_replica_is_skipped_within_the_request(site: Site) -> None:
    # A check every 30 s: the monitor cannot notice the stop before the request does.
    with server(
        site, DATABASE_REPLICA_CHECK_SECONDS="30", DATABASE_REPLICA_MAX_LAG_SECONDS="600"
    ) as url:
        wait_replica(site, [url], "ok")
        anonymous = Registry(url)
        assert anonymous.get(REPOSITORY, "manifests/base").status_code == 200
        site.pair.standby_stop()

        manifest = anonymous.get(REPOSITORY, "manifests/base")

        assert manifest.status_code == 200, manifest.text
        assert f"the replica failed on GET /v2/{REPOSITORY}/manifests/base" in gunicorn_logs()
        wait_replica(site, [url], "down")


def test_a_lagging_replica_is_skipped(site: Site) -> None:
    with server(
        site, DATABASE_REPLICA_CHECK_SECONDS="0.2", DATABASE_REPLICA_MAX_LAG_SECONDS="1.5"
    ) as url:
        wait_replica(site, [url], "ok")
        alice, anonymous = Registry(url, "alice"), Registry(url)
        anonymous.headers(f"repository:{REPOSITORY}:pull")
        site.pair.replay_pause()
        alice.push(REPOSITORY, "late")
        wait_replica(site, [url], "lagging")

        manifest = anonymous.get(REPOSITORY, "manifests/late")

        assert manifest.status_code == 200, manifest.text
        assert site.pair.replay_paused()
        assert not site.standby_has_tag("late")
        site.pair.replay_resume()
        wait_replica(site, [url], "ok")


def test_read_your_writes_across_processes_needs_the_region_cache(site: Site) -> None:
    """Two processes of one region: the pull lands in the one that did not take the push."""
    import redis

    cache_url = "redis://127.0.0.1:6390/15"  # the test Redis of scripts/test-servers.sh
    redis.Redis.from_url(cache_url).flushdb()
    slow_checks = {
        "DATABASE_REPLICA_CHECK_SECONDS": "30",
        "DATABASE_REPLICA_MAX_LAG_SECONDS": "600",
    }
    for shared in (True, False):
        region = {"QUAY_GEO_REGION_CACHE_URL": cache_url} if shared else {}
        with (
            server(site, **slow_checks, **region) as one,
            server(site, **slow_checks, **region) as two,
        ):
            wait_replica(site, [one, two], "ok")
            before = digest_of(Registry(two, "alice").get(REPOSITORY, "manifests/base"))
            site.pair.replay_pause()
            Registry(one, "alice").push(REPOSITORY, "base")  # moves the tag

            pulled = digest_of(Registry(two, "alice").get(REPOSITORY, "manifests/base"))

            # With a shared region cache the other process knows alice wrote and asks the
            # primary; without it, it reads the lagging replica's old tag.
            assert (pulled != before) is shared
            site.pair.replay_resume()
            site.pair.wait_replayed()
