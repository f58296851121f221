"""Gunicorn's access log, with every field escaped so that a request cannot forge a log line.

Gunicorn writes the Basic-auth user name, the request line and the headers as sent; a user name
holding a line feed wrote a second, made-up line. ``AccessLogger`` (``--logger-class
quay_geo.gunicorn_logging.AccessLogger``) writes control characters and backslashes as
``\\xNN`` and ``\\\\``, as nginx's ``escape=default`` does.
"""

from typing import Any

from gunicorn.glogging import Logger, SafeAtoms

from .logging import log_escape


class EscapedAtoms(SafeAtoms):
    """The atoms of one access log line, each string escaped (quotes too, as gunicorn does)."""

    def __init__(self, atoms: dict[str, Any]) -> None:
        super().__init__(
            {
                key: log_escape(value) if isinstance(value, str) else value
                for key, value in atoms.items()
            }
        )


class AccessLogger(Logger):
    """Gunicorn's logger with an access log that no request can forge."""

    atoms_wrapper_class = EscapedAtoms
