"""Routes of the registry API (``/v2/``) and its token endpoint.

Repository names contain slashes, so ``<name>`` is matched broadly and checked against the
spec's grammar in the view: a name out of grammar (uppercase, ``..``, too long, a line feed)
is ``NAME_INVALID``, never a 404 page. The patterns match any character, line feeds included
(``.`` does not): a ``%0a`` would otherwise fall through every route to Django's HTML 404.
"""

from django.urls import include, path, re_path

from .views.blobs import BlobView
from .views.listing import CatalogView, ReferrersView, RootView, TagsView, UnknownRouteView
from .views.manifests import ManifestView
from .views.uploads import UploadsView, UploadView

NAME = r"(?P<name>[\s\S]+)"

urlpatterns = [
    path("", include("registry.auth_urls")),
    re_path(r"^v2/$", RootView.as_view(), name="registry-root"),
    re_path(r"^v2/_catalog$", CatalogView.as_view(), name="registry-catalog"),
    re_path(rf"^v2/{NAME}/blobs/uploads/?$", UploadsView.as_view(), name="registry-uploads"),
    re_path(
        rf"^v2/{NAME}/blobs/uploads/(?P<uuid>[^/]+)$", UploadView.as_view(), name="registry-upload"
    ),
    re_path(rf"^v2/{NAME}/blobs/(?P<digest>[^/]+)$", BlobView.as_view(), name="registry-blob"),
    re_path(
        rf"^v2/{NAME}/manifests/(?P<reference>[^/]+)$",
        ManifestView.as_view(),
        name="registry-manifest",
    ),
    re_path(rf"^v2/{NAME}/tags/list$", TagsView.as_view(), name="registry-tags"),
    re_path(
        rf"^v2/{NAME}/referrers/(?P<digest>[^/]+)$",
        ReferrersView.as_view(),
        name="registry-referrers",
    ),
    re_path(r"^v2(?:/(?P<rest>[\s\S]*))?$", UnknownRouteView.as_view(), name="registry-unknown"),
]
