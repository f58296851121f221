"""Encryption at rest for engine secrets (Fernet, keyed from settings)."""

import base64
import hashlib
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings

PREFIX = "fernet:"


@lru_cache(maxsize=4)
def _fernet(key_material: str) -> Fernet:
    digest = hashlib.sha256(("quay-geo secrets|" + key_material).encode()).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


def _key_material() -> str:
    return str(getattr(settings, "QUAY_GEO_ENCRYPTION_KEY", "") or settings.SECRET_KEY)


def secret_encrypt(value: str) -> str:
    """Return ``value`` encrypted for storage."""
    return PREFIX + _fernet(_key_material()).encrypt(value.encode()).decode()


def secret_decrypt(token: str) -> str:
    """Return the plain value of an encrypted secret; raise ValueError if the key changed."""
    if not token.startswith(PREFIX):
        raise ValueError("value is not an encrypted secret")
    try:
        return _fernet(_key_material()).decrypt(token[len(PREFIX) :].encode()).decode()
    except InvalidToken:
        raise ValueError(
            "cannot decrypt a stored secret: QUAY_GEO_ENCRYPTION_KEY (or DJANGO_SECRET_KEY) "
            "differs from the one it was stored with"
        ) from None
