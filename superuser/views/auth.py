"""Signing in and out of the panel."""

from django.contrib.auth import views as auth_views


class LoginView(auth_views.LoginView):
    template_name = "registration/login.html"
    next_page = "superuser:config"


class LogoutView(auth_views.LogoutView):
    next_page = "superuser:login"
