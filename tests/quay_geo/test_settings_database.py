"""Database and cache settings: each case loads the settings in a fresh process."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SECRET = "s3cret-pw"
PRINT_SETTINGS = """
import json
import django
from django.conf import settings
django.setup()
from quay_geo.replica import replica_status, replicas
replicas.mark_down("password authentication failed for s3cret-pw")
print(json.dumps({
    "databases": settings.DATABASES,
    "routers": settings.DATABASE_ROUTERS,
    "cache": settings.CACHES["default"]["BACKEND"],
    "status": replica_status(),
}, default=str))
"""


def load(**variables: str) -> subprocess.CompletedProcess[str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DATABASE_URL", "DATABASE_REPLICA_URL", "QUAY_GEO_REGION_CACHE_URL")
    }
    env.update(DJANGO_SETTINGS_MODULE="quay_geo.settings", PYTHONPATH=str(ROOT), **variables)
    return subprocess.run(
        [sys.executable, "-c", PRINT_SETTINGS],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def loaded(**variables: str) -> dict[str, object]:
    result = load(**variables)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout.splitlines()[-1])
    assert isinstance(data, dict)
    return data


def test_an_empty_database_url_is_a_configuration_error_naming_it() -> None:
    result = load(DATABASE_URL="")

    assert result.returncode != 0
    assert "ImproperlyConfigured: DATABASE_URL is set but empty" in result.stderr
    assert "KeyError" not in result.stderr


def test_a_malformed_replica_url_is_a_configuration_error_without_its_password() -> None:
    result = load(
        DATABASE_URL="postgres://postgres@127.0.0.1/x",
        DATABASE_REPLICA_URL=f"postgress://u:{SECRET}@replica/x",
    )

    assert result.returncode != 0
    assert "ImproperlyConfigured: DATABASE_REPLICA_URL is not a database URL" in result.stderr
    assert SECRET not in result.stderr


def test_no_replica_url_means_one_database_and_a_process_cache() -> None:
    data = loaded(DATABASE_URL="postgres://postgres@127.0.0.1/x", DATABASE_REPLICA_URL="")

    assert list(data["databases"]) == ["default"]  # type: ignore[call-overload]
    assert data["routers"] == ["quay_geo.replica.ReplicaRouter"]
    assert data["cache"] == "django.core.cache.backends.locmem.LocMemCache"
    assert data["status"] == {"configured": False, "state": "none"}


def test_a_replica_url_adds_a_mirrored_alias_with_a_short_connect_timeout() -> None:
    data = loaded(
        DATABASE_URL="postgres://postgres@127.0.0.1/x",
        DATABASE_REPLICA_URL=f"postgres://reader:{SECRET}@replica.eu:6432/x",
        DATABASE_REPLICA_CONNECT_TIMEOUT="3",
        QUAY_GEO_REGION_CACHE_URL="redis://127.0.0.1:6379/3",
    )

    alias = data["databases"]["replica"]  # type: ignore[index]
    assert (alias["HOST"], alias["PORT"], alias["NAME"]) == ("replica.eu", 6432, "x")
    assert alias["TEST"]["MIRROR"] == "default"
    assert alias["OPTIONS"]["connect_timeout"] == 3
    assert data["cache"] == "django.core.cache.backends.redis.RedisCache"


def test_replica_status_names_host_port_and_database_but_never_the_password() -> None:
    data = loaded(
        DATABASE_URL="postgres://postgres@127.0.0.1/x",
        DATABASE_REPLICA_URL=f"postgres://reader:{SECRET}@replica.eu:6432/y",
    )

    status = data["status"]
    assert status["configured"] is True  # type: ignore[index]
    assert (status["host"], status["port"], status["dbname"]) == ("replica.eu", "6432", "y")  # type: ignore[index]
    assert status["state"] == "down"  # type: ignore[index]
    assert status["error"] == "password authentication failed for ***"  # type: ignore[index]
    assert SECRET not in json.dumps(status)
