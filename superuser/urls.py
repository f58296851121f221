"""Routes of the /superuser panel."""

from django.urls import path

from .views import auth, config, namespaces, status

app_name = "superuser"
urlpatterns = [
    path("", config.config, name="config"),
    path("login/", auth.LoginView.as_view(), name="login"),
    path("logout/", auth.LogoutView.as_view(), name="logout"),
    path("storage/sync/", config.sync, name="sync"),
    path("namespaces/", namespaces.namespaces, name="namespaces"),
    path("namespaces/<int:pk>/targets/", namespaces.namespace_targets, name="namespace-targets"),
    path("status/", status.status, name="status"),
    path("status/fragment/", status.status_fragment, name="status-fragment"),
    path("status/retry/", status.retry, name="retry"),
    path("status/audit/", status.audit, name="audit"),
]
