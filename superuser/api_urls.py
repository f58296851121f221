"""Routes of the /api/v1/superuser/ JSON API."""

from django.urls import include, path

from .api import views

api_patterns = [
    path("config/", views.StorageConfigView.as_view(), name="config"),
    path("namespaces/", views.NamespaceListView.as_view(), name="namespaces"),
    path(
        "namespaces/<str:name>/targets/",
        views.NamespaceTargetsView.as_view(),
        name="namespace-targets",
    ),
    path("status/", views.StatusView.as_view(), name="status"),
    path("placements/retry/", views.RetryView.as_view(), name="retry"),
    path("backfills/", views.BackfillListView.as_view(), name="backfills"),
    path("backfills/<int:pk>/", views.BackfillDetailView.as_view(), name="backfill"),
]

app_name = "superuser-api"
urlpatterns = [
    *api_patterns,
    path(
        "schema/",
        views.SchemaView.as_view(
            urlconf=[path("api/v1/superuser/", include((api_patterns, "superuser-api")))]
        ),
        name="schema",
    ),
]
