"""The token endpoint's route, included by ``registry.urls``."""

from django.urls import path

from . import token_views
from .auth import TOKEN_PATH

urlpatterns = [
    path(TOKEN_PATH.lstrip("/"), token_views.token, name="registry-token"),
]
