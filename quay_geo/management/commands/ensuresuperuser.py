"""Create the first superuser for `make run`, from the environment or with a generated password."""

import os
import secrets
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = (
        "Create a superuser from DJANGO_SUPERUSER_USERNAME / DJANGO_SUPERUSER_PASSWORD, or, when "
        "none exists and they are unset, 'admin' with a generated password printed once."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        users = get_user_model()
        username = os.environ.get("DJANGO_SUPERUSER_USERNAME", "")
        password = os.environ.get("DJANGO_SUPERUSER_PASSWORD", "")
        if username and password:
            user = users.objects.filter(username=username).first()
            if user is None:
                users.objects.create_superuser(username=username, password=password, email="")
                self.stdout.write(f"created superuser {username}")
            elif not user.check_password(password) or not user.is_superuser:
                user.set_password(password)
                user.is_superuser = user.is_staff = True
                user.save()
                self.stdout.write(f"updated superuser {username}")
            return
        if users.objects.filter(is_superuser=True).exists():
            return
        generated = secrets.token_urlsafe(12)
        users.objects.create_superuser(username="admin", password=generated, email="")
        self.stdout.write(f"created superuser admin with password {generated} (shown only once)")
