"""Create an organization namespace, with its owner as admin."""

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from registry.accounts import AccountError, organization_create, user_by_username


class Command(BaseCommand):
    help = "Create an organization namespace whose admin is the given user."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="organization (namespace) name")
        parser.add_argument("--owner", required=True, help="username of its first admin")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            owner = user_by_username(options["owner"])
            organization = organization_create(name=options["name"], owner=owner)
        except AccountError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"organization {organization.name} created, admin {owner.username}")
