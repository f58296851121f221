"""Per-namespace replication page: list, search, paginate, set extra target locations."""

import hashlib
import io
from typing import Any

import pytest
from django.core.exceptions import ValidationError

from registry.models import Manifest, ManifestBlob, Namespace, Repository
from replication.models import (
    AuditEntry,
    NamespaceReplication,
    Placement,
    PlacementState,
    ReplicationSettings,
)
from replication.selectors import location_engine
from replication.services import blob_commit, location_create, replication_enable
from replication.targets import LOCAL_REFUSED
from storage_engines.keys import content_key
from superuser.services import namespace_targets_update

pytestmark = pytest.mark.django_db


@pytest.fixture
def locations(db: Any) -> Any:
    us = location_create(location_id="us_mem", kind="memory", options={})
    eu = location_create(location_id="eu_mem", kind="memory", options={})
    replication_enable(enabled=True)
    return us, eu


def image_in(namespace: Namespace, location: Any, capture: Any) -> Any:
    """Store one blob in ``location`` and reference it from a manifest of the namespace."""
    data = b"layer of " + namespace.name.encode()
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    location_engine(location).write(content_key(digest), io.BytesIO(data), size=len(data))
    with capture(execute=True):
        blob = blob_commit(digest=digest, size=len(data), sha256=digest[7:], location=location)
    repository = Repository.objects.create(namespace=namespace, name="app")
    manifest = Manifest.objects.create(
        repository=repository, digest="sha256:" + "0" * 64, media_type="x", content=b"{}", size=2
    )
    ManifestBlob.objects.create(manifest=manifest, blob=blob)
    return blob


def test_list_search_and_pagination(admin_client: Any, locations: Any) -> None:
    for index in range(30):
        Namespace.objects.create(name=f"team{index:02d}")
    Namespace.objects.create(name="special")

    first = admin_client.get("/superuser/namespaces/").content.decode()
    second = admin_client.get("/superuser/namespaces/?page=2").content.decode()
    found = admin_client.get("/superuser/namespaces/?q=spec").content.decode()

    assert "page 1 of 2" in first
    assert 'data-namespace="team00"' in first
    assert 'data-namespace="team29"' in second
    assert 'data-namespace="special"' in found
    assert 'data-namespace="team00"' not in found
    assert 'value="eu_mem"' in first


def test_adding_a_location_replicates_the_namespace_there(
    admin_client: Any, locations: Any, django_capture_on_commit_callbacks: Any
) -> None:
    us, eu = locations
    namespace = Namespace.objects.create(name="acme")
    blob = image_in(namespace, us, django_capture_on_commit_callbacks)
    targets = ReplicationSettings.load().targets_version

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            f"/superuser/namespaces/{namespace.pk}/targets/",
            {"locations": ["eu_mem"], "next": "/superuser/namespaces/?q=ac"},
        )

    assert response.status_code == 302
    assert response["Location"] == "/superuser/namespaces/?q=ac"
    assert list(NamespaceReplication.objects.values_list("location__location_id", flat=True)) == [
        "eu_mem"
    ]
    assert ReplicationSettings.load().targets_version > targets
    assert Placement.objects.get(blob=blob, location=eu).state == PlacementState.PRESENT
    assert AuditEntry.objects.get(action="namespace_targets_set").changes == {
        "namespace": "acme",
        "locations": [[], ["eu_mem"]],
    }
    page = admin_client.get("/superuser/namespaces/?q=acme").content.decode()
    assert '<span class="badge">eu_mem</span>' in page


def test_removing_every_location_leaves_defaults_only(
    admin_client: Any, locations: Any, django_capture_on_commit_callbacks: Any
) -> None:
    namespace = Namespace.objects.create(name="acme")
    NamespaceReplication.objects.create(namespace=namespace, location=locations[1])

    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(f"/superuser/namespaces/{namespace.pk}/targets/", {})

    assert not NamespaceReplication.objects.exists()


def test_foreign_redirects_and_unknown_locations_are_refused(
    admin_client: Any, locations: Any
) -> None:
    namespace = Namespace.objects.create(name="acme")

    response = admin_client.post(
        f"/superuser/namespaces/{namespace.pk}/targets/",
        {"locations": ["nowhere"], "next": "https://evil.example/"},
    )

    assert response["Location"] == "/superuser/namespaces/"
    assert not NamespaceReplication.objects.exists()


def test_local_storage_cannot_be_a_namespace_target(admin_client: Any, tmp_path: Any) -> None:
    location_create(location_id="disk", kind="local", options={"storage_path": str(tmp_path)})
    namespace = Namespace.objects.create(name="acme")

    page = admin_client.get("/superuser/namespaces/").content.decode()

    assert 'value="disk"' not in page  # not offered
    with pytest.raises(ValidationError) as refused:
        namespace_targets_update(namespace=namespace, location_ids=["disk"], user=None)
    assert refused.value.messages == [LOCAL_REFUSED]
