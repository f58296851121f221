"""registry.accounts and its commands: namespaces, organizations, application tokens, visibility."""

import hashlib
from io import StringIO
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command

from registry import accounts
from registry.models import AppToken, Namespace, NamespaceKind, NamespaceMember, Repository, Role
from tests.registry.auth_fixtures import World, repository_create, user_create, world

__all__ = ["world"]


def run(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


# --- users' namespaces ----------------------------------------------------------------------------


def test_new_user_gets_a_namespace_named_after_them_lowercased(db: None) -> None:
    user = User.objects.create_user("Bob.Smith")

    namespace = Namespace.objects.get(owner=user)
    assert namespace.name == "bob.smith"
    assert namespace.kind == NamespaceKind.USER


@pytest.mark.parametrize("username", ["bob@example.com", "-bob", "bob+ci", "bob_"])
def test_user_whose_name_is_no_namespace_gets_none(db: None, username: str) -> None:
    user = User.objects.create_user(username)

    assert not Namespace.objects.filter(owner=user).exists()


def test_user_whose_name_is_taken_by_an_organization_gets_none(world: World) -> None:
    user = User.objects.create_user("acme")

    assert not Namespace.objects.filter(owner=user).exists()
    assert Namespace.objects.get(name="acme").kind == NamespaceKind.ORGANIZATION


def test_saving_a_user_again_changes_nothing(db: None) -> None:
    user = User.objects.create_user("carol")
    user.username = "caroline"
    user.save()

    assert list(Namespace.objects.filter(owner=user).values_list("name", flat=True)) == ["carol"]


def test_namespace_ensure_is_idempotent(db: None) -> None:
    user = User.objects.create_user("dave")

    assert accounts.user_namespace_ensure(user=user) == Namespace.objects.get(owner=user)
    assert Namespace.objects.filter(owner=user).count() == 1


# --- organizations --------------------------------------------------------------------------------


def test_organization_has_its_creator_as_admin(db: None) -> None:
    owner = user_create("erin")

    organization = accounts.organization_create(name="team", owner=owner)

    assert organization.kind == NamespaceKind.ORGANIZATION
    assert organization.owner is None
    assert NamespaceMember.objects.get(namespace=organization).role == Role.ADMIN


@pytest.mark.parametrize(
    ("name", "reason"),
    [("Team", "not a valid"), ("a/b", "not a valid"), ("erin", "already exists")],
)
def test_organization_name_must_be_valid_and_free(db: None, name: str, reason: str) -> None:
    owner = user_create("erin")

    with pytest.raises(accounts.AccountError, match=reason):
        accounts.organization_create(name=name, owner=owner)
    assert not Namespace.objects.filter(kind=NamespaceKind.ORGANIZATION).exists()


def test_member_role_is_replaced_not_duplicated(world: World) -> None:
    accounts.organization_member_add(organization="acme", user=world.reader, role=Role.WRITE)

    assert NamespaceMember.objects.get(namespace__name="acme", user=world.reader).role == Role.WRITE


def test_members_are_added_to_organizations_only(world: World) -> None:
    with pytest.raises(accounts.AccountError, match="no organization named 'alice'"):
        accounts.organization_member_add(organization="alice", user=world.reader, role=Role.READ)


# --- application tokens ---------------------------------------------------------------------------


def test_app_token_is_stored_as_its_sha256_only(world: World) -> None:
    token, secret = accounts.app_token_create(user=world.alice, name="ci")

    assert secret.startswith("qgat_")
    assert len(secret) > 40
    stored = AppToken.objects.get(pk=token.pk)
    assert stored.token_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in str(AppToken.objects.filter(pk=token.pk).values().get())


def test_app_tokens_are_random(world: World) -> None:
    _, first = accounts.app_token_create(user=world.alice, name="one")
    _, second = accounts.app_token_create(user=world.alice, name="two")

    assert first != second


def test_app_token_verifies_for_its_user_and_records_its_use(world: World) -> None:
    token, secret = accounts.app_token_create(user=world.alice, name="ci")

    assert accounts.app_token_user(username="alice", secret=secret) == world.alice
    assert AppToken.objects.get(pk=token.pk).last_used_at is not None


@pytest.mark.parametrize(("username", "tamper"), [("writer", False), ("alice", True)])
def test_app_token_refuses_another_username_or_a_wrong_secret(
    world: World, username: str, tamper: bool
) -> None:
    _, secret = accounts.app_token_create(user=world.alice, name="ci")

    assert (
        accounts.app_token_user(username=username, secret=secret + ("x" if tamper else "")) is None
    )


def test_app_token_of_a_disabled_user_is_refused(world: World) -> None:
    _, secret = accounts.app_token_create(user=world.alice, name="ci")
    User.objects.filter(pk=world.alice.pk).update(is_active=False)

    assert accounts.credentials_check(username="alice", password=secret) is None


def test_revoked_app_token_no_longer_verifies(world: World) -> None:
    _, secret = accounts.app_token_create(user=world.alice, name="ci")
    assert accounts.app_token_user(username="alice", secret=secret) == world.alice  # cached

    accounts.app_token_revoke(user=world.alice, name="ci")

    assert accounts.app_token_user(username="alice", secret=secret) is None


def test_a_verified_app_token_is_checked_again_without_a_query(
    world: World, django_assert_num_queries: Any
) -> None:
    _, secret = accounts.app_token_create(user=world.alice, name="ci")
    assert accounts.app_token_user(username="alice", secret=secret) == world.alice

    with django_assert_num_queries(0):
        again = accounts.app_token_user(username="alice", secret=secret)
        other = accounts.app_token_user(username="writer", secret=secret)

    assert again == world.alice
    assert other is None, "the token is alice's: another user name never matches it"


def test_revoking_an_unknown_app_token_is_an_error(world: World) -> None:
    with pytest.raises(accounts.AccountError, match="no application token named 'ci'"):
        accounts.app_token_revoke(user=world.alice, name="ci")


def test_app_token_names_are_unique_per_user(world: World) -> None:
    accounts.app_token_create(user=world.alice, name="ci")
    accounts.app_token_create(user=world.writer, name="ci")

    with pytest.raises(accounts.AccountError, match="already has"):
        accounts.app_token_create(user=world.alice, name="ci")


def test_credentials_accept_the_password_too(world: World) -> None:
    assert accounts.credentials_check(username="alice", password="alice-password") == world.alice
    assert accounts.credentials_check(username="alice", password="") is None
    assert accounts.credentials_check(username="", password="alice-password") is None


# --- visibility -----------------------------------------------------------------------------------


def test_repository_visibility_is_set(world: World) -> None:
    repository = accounts.repository_visibility_set(repository="acme/tool", visibility="public")  # type: ignore[arg-type]

    assert repository.visibility == "public"
    assert Repository.objects.get(pk=repository.pk).visibility == "public"


@pytest.mark.parametrize(
    ("name", "reason"), [("acme/missing", "no repository"), ("acme", "not a valid")]
)
def test_visibility_of_unknown_or_invalid_repository_is_an_error(
    world: World, name: str, reason: str
) -> None:
    with pytest.raises(accounts.AccountError, match=reason):
        accounts.repository_visibility_set(repository=name, visibility="public")  # type: ignore[arg-type]


# --- management commands --------------------------------------------------------------------------


def test_createorg_command(db: None) -> None:
    user_create("frank")

    out, _ = run("createorg", "builders", "--owner", "frank")

    assert out.strip() == "organization builders created, admin frank"
    assert NamespaceMember.objects.get(namespace__name="builders").role == Role.ADMIN


def test_createorg_command_reports_refusals(db: None) -> None:
    with pytest.raises(CommandError, match="no user named 'ghost'"):
        run("createorg", "builders", "--owner", "ghost")


def test_addorgmember_command(world: World) -> None:
    out, _ = run("addorgmember", "acme", "stranger", "--role", "write")

    assert out.strip() == "stranger is write in acme"
    assert (
        NamespaceMember.objects.get(namespace__name="acme", user=world.stranger).role == Role.WRITE
    )


def test_addorgmember_command_refuses_unknown_roles(world: World) -> None:
    with pytest.raises(CommandError, match="invalid choice"):
        run("addorgmember", "acme", "stranger", "--role", "owner")


def test_createapptoken_prints_the_token_once_on_stdout(world: World) -> None:
    out, err = run("createapptoken", "alice", "--name", "ci")

    secret = out.strip()
    assert accounts.app_token_user(username="alice", secret=secret) == world.alice
    assert "not shown again" in err
    assert secret not in err


def test_revokeapptoken_command(world: World) -> None:
    out, _ = run("createapptoken", "alice", "--name", "ci")

    revoked, _ = run("revokeapptoken", "alice", "--name", "ci")

    assert revoked.strip() == "token 'ci' of alice revoked"
    assert accounts.app_token_user(username="alice", secret=out.strip()) is None


def test_setrepovisibility_command(world: World) -> None:
    repository_create("alice/tool")

    out, _ = run("setrepovisibility", "alice/tool", "public")

    assert out.strip() == "alice/tool is public"
    with pytest.raises(CommandError, match="no repository named 'alice/nothing'"):
        run("setrepovisibility", "alice/nothing", "private")
