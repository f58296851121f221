"""The OCI grammar of repository names, tags, digests and references.

Every check raises the spec's error for the part that is wrong, so that a bad name, tag or
digest is a 4xx with the spec's code and never reaches the database or a storage engine.
"""

import hashlib
import re
from dataclasses import dataclass

from . import errors

#: A path component: lowercase alphanumerics separated by ``.``, ``_``, ``__`` or dashes.
_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
NAME_PATTERN = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
#: Many clients cap ``host[:port]/name`` at 255 characters; the name alone gets the same cap.
NAME_MAX_LENGTH = 255
TAG_PATTERN = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}")
#: The digest grammar of the spec: ``algorithm ":" encoded``.
DIGEST_PATTERN = re.compile(r"[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+")
#: The algorithms this registry computes, with the exact form of their hex encoding.
ALGORITHMS: dict[str, re.Pattern[str]] = {
    "sha256": re.compile(r"[0-9a-f]{64}"),
    "sha512": re.compile(r"[0-9a-f]{128}"),
}

#: The digests of the empty blob, which a client may "upload" without a body.
EMPTY_DIGESTS = frozenset(
    f"{algorithm}:{hashlib.new(algorithm, b'').hexdigest()}" for algorithm in ALGORITHMS
)


@dataclass(frozen=True)
class Digest:
    """A validated content digest, such as ``sha256:<64 hex>``."""

    algorithm: str
    hex: str

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"


def name_check(name: str) -> str:
    """Return ``name`` if it is a repository name of the grammar; raise NameInvalid if not."""
    if len(name) > NAME_MAX_LENGTH:
        raise errors.NameInvalid(
            {"name": name[:300]},
            message=f"repository name is longer than {NAME_MAX_LENGTH} characters",
        )
    if not NAME_PATTERN.fullmatch(name):
        raise errors.NameInvalid(
            {"name": name},
            message="invalid repository name: use lowercase path components "
            "([a-z0-9] separated by '.', '_', '__' or '-') joined by '/'",
        )
    if "/" not in name:
        raise errors.NameInvalid(
            {"name": name},
            message="repository names need a namespace: use <namespace>/<repository>",
        )
    return name


def digest_parse(value: str) -> Digest:
    """Return the digest ``value`` names; raise DigestInvalid if malformed or unsupported."""
    if not DIGEST_PATTERN.fullmatch(value):
        raise errors.DigestInvalid({"digest": value[:300]}, message="malformed digest")
    algorithm, _, encoded = value.partition(":")
    pattern = ALGORITHMS.get(algorithm)
    if pattern is None:
        raise errors.DigestInvalid(
            {"digest": value[:300]},
            message=f"unsupported digest algorithm {algorithm!r}: use sha256 or sha512",
        )
    if not pattern.fullmatch(encoded):
        raise errors.DigestInvalid({"digest": value[:300]}, message=f"malformed {algorithm} digest")
    return Digest(algorithm, encoded)


def algorithm_check(value: str) -> str:
    """Return a ``digest-algorithm`` value this registry computes; raise Unsupported if not."""
    if value not in ALGORITHMS:
        raise errors.Unsupported(
            {"digest-algorithm": value[:100]},
            message="unsupported digest algorithm: use sha256 or sha512",
        )
    return value


def is_digest_reference(reference: str) -> bool:
    """Return whether a manifest reference is meant as a digest (it has a colon)."""
    return ":" in reference


def tag_valid(tag: str) -> bool:
    """Return whether ``tag`` fits the tag grammar."""
    return TAG_PATTERN.fullmatch(tag) is not None


def tag_check(tag: str) -> str:
    """Return ``tag`` if it fits the tag grammar; raise ManifestInvalid if not."""
    if not tag_valid(tag):
        raise errors.ManifestInvalid(
            {"tag": tag[:300]},
            message="invalid tag: up to 128 of [a-zA-Z0-9_.-], not starting with '.' or '-'",
        )
    return tag
