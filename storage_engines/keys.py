"""Content-addressed object keys: the same key for a blob in every location."""

import re

_HEX = {"sha256": re.compile(r"^[0-9a-f]{64}$"), "sha512": re.compile(r"^[0-9a-f]{128}$")}


def content_key(digest: str) -> str:
    """Return the object key of a digest such as ``sha256:<hex>``: ``sha256/<2 hex>/<hex>``."""
    algorithm, _, hexdigest = digest.partition(":")
    pattern = _HEX.get(algorithm)
    if pattern is None or not pattern.match(hexdigest):
        raise ValueError(f"not a supported content digest: {digest!r}")
    return f"{algorithm}/{hexdigest[:2]}/{hexdigest}"


def is_content_key(key: str) -> bool:
    """Return whether ``key`` is a content key (its bytes, and so its size, never change)."""
    algorithm, _, rest = key.partition("/")
    pattern = _HEX.get(algorithm)
    prefix, _, hexdigest = rest.partition("/")
    return pattern is not None and bool(pattern.match(hexdigest)) and hexdigest[:2] == prefix


def upload_key(upload_id: str, name: str) -> str:
    """Return the key of a staging object that belongs to one upload session."""
    if not re.match(r"^[A-Za-z0-9_-]+$", upload_id):
        raise ValueError(f"invalid upload id: {upload_id!r}")
    return f"_uploads/{upload_id}/{name}"
