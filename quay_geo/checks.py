"""System checks for settings: each misconfiguration has its own id."""

import ipaddress
import re
from collections.abc import Sequence
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, register
from django.core.exceptions import ImproperlyConfigured

LOCATION_ID = re.compile(r"^[A-Za-z0-9_-]+$")


def preference_ids(raw: str) -> list[str]:
    """Return the location IDs of a preference string, split on spaces or commas."""
    return [part for part in re.split(r"[\s,]+", raw) if part]


@register(Tags.security, deploy=False)
def check_secret_key(app_configs: Sequence[Any] | None, **kwargs: Any) -> list[CheckMessage]:
    try:
        if settings.SECRET_KEY:
            return []
    except ImproperlyConfigured:  # Django refuses to hand out an empty key
        pass
    return [
        Error(
            "DJANGO_SECRET_KEY is not set.",
            hint="Set DJANGO_SECRET_KEY to a long random value (DJANGO_DEBUG=1 for development).",
            id="quay_geo.E001",
        )
    ]


@register()
def check_storage_preference(
    app_configs: Sequence[Any] | None, **kwargs: Any
) -> list[CheckMessage]:
    bad = [
        part
        for part in preference_ids(settings.QUAY_DISTRIBUTED_STORAGE_PREFERENCE)
        if not LOCATION_ID.match(part)
    ]
    return [
        Error(
            f"QUAY_DISTRIBUTED_STORAGE_PREFERENCE names an invalid location ID {part!r}.",
            hint="Location IDs use letters, digits, '_' and '-', separated by spaces or commas.",
            id="quay_geo.E002",
        )
        for part in bad
    ]


@register()
def check_broker_url(app_configs: Sequence[Any] | None, **kwargs: Any) -> list[CheckMessage]:
    url = settings.CELERY_BROKER_URL
    known = ("filesystem://", "redis://", "rediss://", "amqp://", "amqps://", "memory://")
    if url.startswith(known):
        return []
    return [
        Error(
            f"CELERY_BROKER_URL has an unsupported scheme: {url.split('://')[0]!r}.",
            hint="Use filesystem:// (embedded), redis://host:6379/0 or amqp://user:pass@host//.",
            id="quay_geo.E003",
        )
    ]


@register()
def check_replica_timing(app_configs: Sequence[Any] | None, **kwargs: Any) -> list[CheckMessage]:
    period = float(settings.DATABASE_REPLICA_CHECK_SECONDS)
    bound = float(settings.DATABASE_REPLICA_MAX_LAG_SECONDS)
    if 0 < period < bound:
        return []
    return [
        Error(
            f"DATABASE_REPLICA_MAX_LAG_SECONDS ({bound:g}) must exceed "
            f"DATABASE_REPLICA_CHECK_SECONDS ({period:g}), which must be positive.",
            hint="A replica is known caught up once per check: a bound under the period makes "
            "every replica look behind. The defaults are 5 and 1.",
            id="quay_geo.E004",
        )
    ]


@register()
def check_manifest_url_patterns(
    app_configs: Sequence[Any] | None, **kwargs: Any
) -> list[CheckMessage]:
    found: list[CheckMessage] = []
    for name in ("QUAY_GEO_MANIFEST_URLS_ALLOW", "QUAY_GEO_MANIFEST_URLS_DENY"):
        try:
            re.compile(getattr(settings, name, ""))
        except re.error as exc:
            found.append(
                Error(
                    f"{name} is not a valid regular expression: {exc}.",
                    hint="Give a Python regular expression, for example ^https://example\\.com/.",
                    id="quay_geo.E005",
                )
            )
    return found


@register(Tags.security)
def check_trusted_proxies(app_configs: Sequence[Any] | None, **kwargs: Any) -> list[CheckMessage]:
    found: list[CheckMessage] = []
    for entry in getattr(settings, "QUAY_GEO_TRUSTED_PROXIES", ()):
        try:
            ipaddress.ip_network(entry.strip())
        except ValueError as exc:
            found.append(
                Error(
                    f"QUAY_GEO_TRUSTED_PROXIES: {entry!r} is not an address or network ({exc}).",
                    hint="Give addresses or CIDR networks without host bits, separated by commas, "
                    "for example 10.0.0.5,172.30.0.0/24 (gunicorn reads the same list).",
                    id="quay_geo.E006",
                )
            )
    return found


@register()
def check_login_backoff(app_configs: Sequence[Any] | None, **kwargs: Any) -> list[CheckMessage]:
    base = float(settings.QUAY_GEO_LOGIN_BACKOFF_SECONDS)
    ceiling = float(settings.QUAY_GEO_LOGIN_BACKOFF_MAX_SECONDS)
    forget = float(settings.QUAY_GEO_LOGIN_FORGET_SECONDS)
    if 0 < base <= ceiling <= forget:
        return []
    return [
        Error(
            f"QUAY_GEO_LOGIN_BACKOFF_SECONDS ({base:g}) <= QUAY_GEO_LOGIN_BACKOFF_MAX_SECONDS "
            f"({ceiling:g}) <= QUAY_GEO_LOGIN_FORGET_SECONDS ({forget:g}) must hold, "
            "and the first must be positive.",
            hint="Failed logins are forgotten FORGET seconds after the last one: a shorter "
            "memory than the longest refusal would end refusals early. Defaults: 1, 900, 3600.",
            id="quay_geo.E007",
        )
    ]
