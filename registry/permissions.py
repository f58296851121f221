"""Who may do what on a repository: the rules shared by the token endpoint and the routes.

* A superuser may do everything everywhere.
* A namespace's owner is its admin; organization members have their role (read, write, admin).
* ``pull`` needs a read role on the namespace, or a public repository (anonymous callers too).
* ``push`` and ``delete`` need a write or admin role; the repository need not exist yet (it is
  created on first push), the namespace must. ``*`` means every action and needs write.
* Names outside the OCI grammar, and single-component names, are never granted anything.
"""

from collections.abc import Iterable

from django.contrib.auth.models import User
from django.db.models import OuterRef, Q, QuerySet, Subquery

from replication.regioncache import content_ttl, region_cache

from . import errors
from .models import Namespace, NamespaceMember, Repository, Role, Visibility
from .names import NAME_MAX_LENGTH, NAME_PATTERN, name_check

PULL = "pull"
PUSH = "push"
DELETE = "delete"
ALL = "*"
REPOSITORY_ACTIONS = frozenset({PULL, PUSH, DELETE, ALL})

_WRITE_ROLES = frozenset({Role.WRITE, Role.ADMIN})


def namespace_name_valid(name: str) -> bool:
    """Return whether ``name`` is a valid namespace: one component of the repository grammar."""
    return "/" not in name and len(name) <= NAME_MAX_LENGTH and bool(NAME_PATTERN.fullmatch(name))


def repository_name_split(name: str) -> tuple[str, str] | None:
    """Return (namespace, rest) of a repository name, or None if it is out of grammar."""
    try:
        name_check(name)
    except errors.NameInvalid:
        return None
    namespace, _, rest = name.partition("/")
    return namespace, rest


_NO_ROLE = ""


def role_key(*, user_id: int, namespace: str) -> str:
    """Return the region-cache key of a user's role in a namespace."""
    return f"role:{user_id}:{namespace}"


def namespace_role(*, user: User, namespace: str) -> Role | None:
    """Return the user's role in a namespace, or None if none (or no such namespace).

    One query, cached in the region cache for ``QUAY_GEO_CACHE_SECONDS``: a membership
    changed in another process counts after that lifetime, as one changed after a token was
    issued counts when the token expires.
    """
    key = role_key(user_id=user.pk, namespace=namespace)
    cached = region_cache.get(key)
    if cached is None:
        member = NamespaceMember.objects.filter(namespace_id=OuterRef("pk"), user=user)
        row = (
            Namespace.objects.filter(name=namespace)
            .annotate(role=Subquery(member.values("role")[:1]))
            .values_list("owner_id", "role")
            .first()
        )
        if row is None:
            cached = _NO_ROLE
        else:
            owner_id, role = row
            cached = Role.ADMIN.value if owner_id == user.pk else (role or _NO_ROLE)
        region_cache.set(key, cached, ttl=content_ttl())
    return Role(cached) if cached else None


def actions_allowed(
    *, user: User | None, repository: str, actions: Iterable[str]
) -> frozenset[str]:
    """Return the subset of ``actions`` that ``user`` (None: anonymous) may do on ``repository``."""
    wanted = frozenset(actions) & REPOSITORY_ACTIONS
    parts = repository_name_split(repository)
    if not wanted or parts is None:
        return frozenset()
    if user is not None and user.is_active and user.is_superuser:
        return wanted
    namespace, rest = parts
    role = namespace_role(user=user, namespace=namespace) if user is not None else None
    if role in _WRITE_ROLES:
        return wanted
    granted = set()
    if PULL in wanted and (role == Role.READ or _is_public(namespace=namespace, name=rest)):
        granted.add(PULL)
    return frozenset(granted)


def public_key(*, namespace: str, name: str) -> str:
    """Return the region-cache key of whether a repository is public."""
    return f"public:{namespace}/{name}"


def _is_public(*, namespace: str, name: str) -> bool:
    key = public_key(namespace=namespace, name=name)
    cached = region_cache.get(key)
    if cached is None:
        cached = Repository.objects.filter(
            namespace__name=namespace, name=name, visibility=Visibility.PUBLIC
        ).exists()
        region_cache.set(key, cached, ttl=content_ttl())
    return bool(cached)


def repositories_pullable(*, user: User | None) -> QuerySet[Repository]:
    """Return the repositories ``user`` (None: anonymous) may pull."""
    repositories = Repository.objects.all()
    if user is not None and user.is_active and user.is_superuser:
        return repositories
    visible = Q(visibility=Visibility.PUBLIC)
    if user is not None:
        member_of = NamespaceMember.objects.filter(user=user).values("namespace_id")
        visible |= Q(namespace__owner=user) | Q(namespace_id__in=member_of)
    return repositories.filter(visible)
