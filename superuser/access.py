"""Who may use the panel: signed-in superusers; others go to the sign-in page or get 403."""

import functools
from collections.abc import Callable
from typing import Any

from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse

View = Callable[..., HttpResponse]


def forbidden(request: HttpRequest) -> HttpResponse:
    """Answer 403 to a signed-in user who is not a superuser."""
    return render(request, "superuser/forbidden.html", status=403)


def superuser_required(view: View) -> View:
    """Send anonymous visitors to the sign-in page and answer 403 to non-superusers."""

    @functools.wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path(), reverse("superuser:login"))
        if not request.user.is_superuser:
            return forbidden(request)
        return view(request, *args, **kwargs)

    return wrapped
