"""Run gcp-storage-emulator with the one part of GCS's upload protocol it lacks.

GCS answers an unfinished resumable-upload chunk with ``308 Resume Incomplete``. A client whose
HTTP stack reads 308 as a redirect (Go's, hence rclone) sends ``X-GUploader-No-308: yes``, and
GCS then answers ``200`` with ``X-Http-Status-Code-Override: 308`` and the same ``Range``. The
emulator ignores that header, so rclone failed on every object above its 16 MiB upload chunk
("unexpected 308 response status code"). This launcher gives the answer GCS gives; requests
without the header (quay-geo's own GCS engine among them) are answered as before.

Usage: the emulator's own arguments, e.g. ``gcs_emulator.py start -H 127.0.0.1 --port 9023
--in-memory`` (``scripts/test-servers.sh`` starts it so).
"""

import sys
from http import HTTPStatus

from gcp_storage_emulator import server
from gcp_storage_emulator.__main__ import main

RESUME_INCOMPLETE = 308

_close = server.Response.close


def close(self: server.Response) -> None:
    """Send the response, as a 200 with the override header where the client asked for it."""
    asked = self._handler.headers.get("X-GUploader-No-308", "").strip().lower() == "yes"
    if asked and getattr(self.status, "value", self.status) == RESUME_INCOMPLETE:
        self.status = HTTPStatus.OK
        self["X-Http-Status-Code-Override"] = str(RESUME_INCOMPLETE)
    _close(self)


server.Response.close = close

if __name__ == "__main__":
    sys.exit(main())
