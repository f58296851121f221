"""Writes of the registry API, one module per topic.

``uploads`` (sessions, the data path in), ``serving`` (the data path out), ``repositories``
(first push, mounts, unlinks) and ``manifests``. The two functions the georeplication work
replaces or fills are re-exported here: ``upload_location_choose`` and
``replication_manifest_committed``.
"""

from .manifests import replication_manifest_committed
from .uploads import upload_location_choose

__all__ = ["replication_manifest_committed", "upload_location_choose"]
