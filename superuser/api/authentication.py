"""HTTP Basic for the superuser API, with password guesses counted as on the token endpoint."""

from typing import Any

from django.contrib.auth.models import User
from rest_framework import exceptions
from rest_framework.authentication import BasicAuthentication

from quay_geo.proxies import client_address
from registry.logins import LoginRefused, password_login


class CountedBasicAuthentication(BasicAuthentication):
    """Basic auth whose failures are counted; a refused login is 429 with ``Retry-After``."""

    def authenticate_credentials(
        self, userid: str, password: str, request: Any = None
    ) -> tuple[User, None]:
        try:
            user = password_login(
                request=getattr(request, "_request", None),
                username=userid,
                password=password,
                client=client_address(request) if request is not None else "",
            )
        except LoginRefused as exc:
            raise exceptions.Throttled(wait=exc.retry_after, detail=str(exc)) from exc
        if user is None:
            raise exceptions.AuthenticationFailed("Invalid username/password.")
        return user, None
