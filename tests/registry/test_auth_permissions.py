"""registry.permissions: who may pull, push and delete where."""

import pytest

from registry.accounts import organization_member_add
from registry.models import Role, Visibility
from registry.permissions import actions_allowed, repositories_pullable
from tests.registry.auth_fixtures import World, repository_create, user_create, world

__all__ = ["world"]

EVERYTHING = ("pull", "push", "delete", "*")


def allowed(user: object, repository: str, actions: tuple[str, ...] = EVERYTHING) -> set[str]:
    return set(actions_allowed(user=user, repository=repository, actions=actions))  # type: ignore[arg-type]


def test_owner_may_do_everything_in_their_namespace(world: World) -> None:
    assert allowed(world.alice, "alice/private-app") == set(EVERYTHING)


def test_owner_may_push_a_repository_that_does_not_exist_yet(world: World) -> None:
    assert allowed(world.alice, "alice/new/nested", ("pull", "push")) == {"pull", "push"}


@pytest.mark.parametrize(
    ("member", "expected"),
    [
        ("reader", {"pull"}),
        ("writer", set(EVERYTHING)),
        ("admin", set(EVERYTHING)),
        ("stranger", set()),
    ],
)
def test_organization_roles_decide_private_repository_access(
    world: World, member: str, expected: set[str]
) -> None:
    assert allowed(getattr(world, member), "acme/tool") == expected


def test_reader_may_not_push_a_new_repository(world: World) -> None:
    assert allowed(world.reader, "acme/new", ("pull", "push")) == {"pull"}


def test_non_member_may_pull_a_public_repository_but_not_push(world: World) -> None:
    assert allowed(world.stranger, "acme/open") == {"pull"}


def test_user_may_not_touch_another_users_private_repository(world: World) -> None:
    assert allowed(world.stranger, "alice/private-app") == set()


def test_anonymous_may_pull_public_repositories_only(world: World) -> None:
    assert allowed(None, "alice/public-app") == {"pull"}
    assert allowed(None, "alice/private-app") == set()
    assert allowed(None, "alice/missing") == set()


def test_superuser_may_do_everything_anywhere(world: World) -> None:
    assert allowed(world.root, "acme/tool") == set(EVERYTHING)
    assert allowed(world.root, "alice/private-app") == set(EVERYTHING)


def test_disabled_superuser_gets_nothing_special(world: World) -> None:
    world.root.is_active = False

    assert allowed(world.root, "acme/tool") == set()


def test_nobody_may_push_into_a_namespace_that_does_not_exist(world: World) -> None:
    assert allowed(world.alice, "nobody/app", ("pull", "push")) == set()


@pytest.mark.parametrize(
    "name",
    ["alice", "Alice/app", "alice/../app", "alice/%2e%2e", "alice//app", "alice/" + "a" * 300],
)
def test_names_out_of_grammar_are_never_granted(world: World, name: str) -> None:
    assert allowed(world.root, name) == set()
    assert allowed(world.alice, name) == set()


def test_unknown_actions_are_never_granted(world: World) -> None:
    assert allowed(world.alice, "alice/private-app", ("pull", "admin", "")) == {"pull"}


def test_public_is_per_repository_not_per_namespace(world: World) -> None:
    assert allowed(None, "alice/public-app") == {"pull"}
    assert allowed(None, "alice/public-app-2") == set()


def test_pullable_repositories_follow_the_same_rules(world: World) -> None:
    def names(user: object) -> set[str]:
        repositories = repositories_pullable(user=user)  # type: ignore[arg-type]
        return {repository.full_name for repository in repositories}

    public = {"alice/public-app", "acme/open"}
    everything = public | {"alice/private-app", "acme/tool"}
    assert names(None) == public
    assert names(world.stranger) == public
    assert names(world.alice) == public | {"alice/private-app"}
    assert names(world.reader) == public | {"acme/tool"}
    assert names(world.root) == everything


def test_pullable_lists_each_public_repository_once_however_many_members(world: World) -> None:
    for index in range(3):
        user = user_create(f"extra{index}")
        organization_member_add(organization="acme", user=user, role=Role.READ)
    repository_create("acme/open2", visibility=Visibility.PUBLIC)

    names = [r.full_name for r in repositories_pullable(user=world.stranger)]

    assert sorted(names) == ["acme/open", "acme/open2", "alice/public-app"]
