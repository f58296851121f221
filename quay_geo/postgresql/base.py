"""Django's PostgreSQL backend, skipping the health check of a connection that just worked.

``CONN_HEALTH_CHECKS`` makes the first query of every request run ``SELECT 1`` on a reused
connection first: one more round trip per request, which a region 100 ms from the primary pays
on every push request. A connection that served a request without error less than
``HEALTH_CHECK_AFTER`` seconds ago is trusted without that ping; an idle one is still checked.
If the server went away in between, that one request fails and the connection is replaced, as
without health checks.
"""

import time

from django.db.backends.postgresql import base

#: A connection proven by a request younger than this many seconds is not pinged again.
HEALTH_CHECK_AFTER = 10.0


class DatabaseWrapper(base.DatabaseWrapper):
    """PostgreSQL connection that skips the health check while it is proven fresh."""

    _proven_at = float("-inf")

    def close_if_health_check_failed(self) -> None:
        if time.monotonic() - self._proven_at < HEALTH_CHECK_AFTER:
            self.health_check_done = True
            return
        super().close_if_health_check_failed()

    def close_if_unusable_or_obsolete(self) -> None:
        # Called as a request starts and ends: a connection used in the request (its health
        # check is done) without error is proven; the start of the next request proves nothing.
        used = self.connection is not None and self.health_check_done and not self.errors_occurred
        super().close_if_unusable_or_obsolete()
        if used and self.connection is not None:
            self._proven_at = time.monotonic()
