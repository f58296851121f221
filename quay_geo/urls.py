"""Root URL configuration."""

from django.urls import include, path

from . import views

urlpatterns = [
    path("health/instance", views.health_instance, name="health-instance"),
    path("", include("registry.urls")),
]
