"""What long byte streams need: the request body as a readable, and no database held open."""

from dataclasses import dataclass

from django.db import connection

from storage_engines.streams import Readable


@dataclass(frozen=True)
class Body:
    """A request body to stream: ``length`` is None when it is chunked (read to its end)."""

    stream: Readable
    length: int | None

    @property
    def empty(self) -> bool:
        """Return whether the body surely carries no byte."""
        return self.length == 0


class _Empty:
    def read(self, size: int = -1, /) -> bytes:
        return b""


EMPTY_BODY = Body(_Empty(), 0)


def db_release() -> None:
    """Close this thread's database connection before a long stream; the next query reopens it.

    Inside an atomic block (tests, ATOMIC_REQUESTS) the connection is kept: closing it would
    break the transaction.
    """
    if not connection.in_atomic_block:
        connection.close()
