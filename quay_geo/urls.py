"""Root URL configuration."""

from django.urls import include, path

from . import views

urlpatterns = [
    path("health/instance", views.health_instance, name="health-instance"),
    path("health/endtoend", views.health_endtoend, name="health-endtoend"),
    path("metrics", views.metrics, name="metrics"),
    path("superuser/", include("superuser.urls")),
    path("api/v1/superuser/", include("superuser.api_urls")),
    path("", include("registry.urls")),
]
