"""Revoke a user's application token."""

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from registry.accounts import AccountError, app_token_revoke, user_by_username


class Command(BaseCommand):
    help = (
        "Revoke an application token. Bearer tokens already issued with it stay valid until "
        "they expire (QUAY_GEO_TOKEN_TTL seconds)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--name", required=True)

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            user = user_by_username(options["username"])
            app_token_revoke(user=user, name=options["name"])
        except AccountError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"token {options['name']!r} of {user.username} revoked")
