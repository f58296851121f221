"""Signing in and out of the panel; failed sign-ins are counted as on the token endpoint."""

from typing import Any

from django import forms
from django.contrib.auth import views as auth_views
from django.contrib.auth.forms import AuthenticationForm
from django.http import HttpResponse

from quay_geo.proxies import client_address
from registry.logins import LoginRefused, password_login


class CountedAuthenticationForm(AuthenticationForm):
    """Django's sign-in form, its password checked through ``registry.logins``."""

    refused: LoginRefused | None = None

    def clean(self) -> dict[str, Any]:
        username = self.cleaned_data.get("username")
        password = self.cleaned_data.get("password")
        if username is not None and password:
            try:
                self.user_cache = password_login(
                    request=self.request,
                    username=username,
                    password=password,
                    client=client_address(self.request) if self.request else "",
                )
            except LoginRefused as exc:
                self.refused = exc
                raise forms.ValidationError(
                    "Too many sign-in attempts: try again in %(seconds)s s.",
                    code="throttled",
                    params={"seconds": exc.retry_after},
                ) from exc
            if self.user_cache is None:
                raise self.get_invalid_login_error()
            self.confirm_login_allowed(self.user_cache)
        return self.cleaned_data


class LoginView(auth_views.LoginView):
    template_name = "registration/login.html"
    next_page = "superuser:config"
    form_class = CountedAuthenticationForm

    def form_invalid(self, form: Any) -> HttpResponse:
        response = super().form_invalid(form)
        if isinstance(form, CountedAuthenticationForm) and form.refused is not None:
            response.status_code = 429
            response["Retry-After"] = str(form.refused.retry_after)
        return response


class LogoutView(auth_views.LogoutView):
    next_page = "superuser:login"
