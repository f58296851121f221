"""Give a user a role in an organization."""

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from registry.accounts import AccountError, organization_member_add, user_by_username
from registry.models import Role


class Command(BaseCommand):
    help = "Give a user a role (read, write or admin) in an organization, replacing any other."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("organization")
        parser.add_argument("username")
        parser.add_argument("--role", required=True, choices=Role.values)

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            user = user_by_username(options["username"])
            member = organization_member_add(
                organization=options["organization"], user=user, role=Role(options["role"])
            )
        except AccountError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"{user.username} is {member.role} in {options['organization']}")
