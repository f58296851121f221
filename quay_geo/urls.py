"""Root URL configuration.

The panel and its JSON API are routed lazily: their modules (Django REST framework, the OpenAPI
generator, forms) are imported by the first request under their prefix, not by every web
worker that only ever answers registry clients.
"""

from functools import cached_property
from importlib import import_module
from typing import Any, cast

from django.urls import URLResolver, include, path
from django.urls.resolvers import RoutePattern

from . import views


class LazyUrlconf:
    """A URLconf module imported the first time Django needs its patterns."""

    def __init__(self, module: str) -> None:
        self.module = module

    @cached_property
    def urlpatterns(self) -> list[Any]:
        return list(import_module(self.module).urlpatterns)


def lazy_include(prefix: str, module: str, namespace: str) -> URLResolver:
    """Route ``prefix`` to ``module``'s patterns, imported at the first request under it.

    ``include()`` reads a URLconf's patterns at once; a resolver reads them when it matches.
    """
    return URLResolver(
        RoutePattern(prefix),
        cast(Any, LazyUrlconf(module)),
        app_name=namespace,
        namespace=namespace,
    )


urlpatterns = [
    path("health/instance", views.health_instance, name="health-instance"),
    path("health/endtoend", views.health_endtoend, name="health-endtoend"),
    path("metrics", views.metrics, name="metrics"),
    lazy_include("superuser/", "superuser.urls", "superuser"),
    lazy_include("api/v1/superuser/", "superuser.api_urls", "superuser-api"),
    path("", include("registry.urls")),
]
