"""Make a repository public (pullable anonymously) or private."""

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from registry.accounts import AccountError, repository_visibility_set
from registry.models import Visibility


class Command(BaseCommand):
    help = "Make a repository public (anyone may pull it) or private."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("repository", help="<namespace>/<name>")
        parser.add_argument("visibility", choices=Visibility.values)

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            repository = repository_visibility_set(
                repository=options["repository"], visibility=Visibility(options["visibility"])
            )
        except AccountError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"{repository.full_name} is {repository.visibility}")
