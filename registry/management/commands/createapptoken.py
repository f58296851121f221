"""Create an application token for a user and print it, once."""

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from registry.accounts import AccountError, app_token_create, user_by_username


class Command(BaseCommand):
    help = (
        "Create an application token (log in with the username and the token as password). "
        "The token is printed on stdout once and cannot be shown again."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--name", required=True, help="what the token is for, e.g. ci")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            user = user_by_username(options["username"])
            _, secret = app_token_create(user=user, name=options["name"])
        except AccountError as exc:
            raise CommandError(str(exc)) from exc
        self.stderr.write(f"token {options['name']!r} for {user.username} (not shown again):")
        self.stdout.write(secret)
