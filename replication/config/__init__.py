"""The storage configuration as one unit: read it, validate all of it, save it in one go.

The ``/superuser`` panel, the JSON API, ``importquayconfig`` and ``addlocation`` (through
:func:`location_add`) all save through :func:`storage_config_save`, so one set of rules applies
everywhere.
"""

from .add import location_add, save_result_messages
from .audit import SECRET_MASK
from .probes import PROBE_TIMEOUT, probe_engine, probe_message, probes_run
from .service import (
    CARD,
    NO_DEFAULT_WARNING,
    LocationSpec,
    SaveResult,
    StorageConfig,
    storage_config_read,
    storage_config_save,
)

__all__ = [
    "CARD",
    "NO_DEFAULT_WARNING",
    "PROBE_TIMEOUT",
    "SECRET_MASK",
    "LocationSpec",
    "SaveResult",
    "StorageConfig",
    "location_add",
    "probe_engine",
    "probe_message",
    "probes_run",
    "save_result_messages",
    "storage_config_read",
    "storage_config_save",
]
