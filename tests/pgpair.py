"""A private PostgreSQL primary and its streaming hot standby, for the tests and the bench.

The machine's PostgreSQL has no replication entry in pg_hba, so this builds its own pair on free
loopback ports: ``initdb`` a primary, ``pg_basebackup -R`` (with a replication slot, so a stopped
standby can catch up) a standby from it, start both, and wait until the standby is in recovery
and streaming. The standby can be stopped and started again, and made to lag by pausing its
replay. Importable without Django; a missing PostgreSQL is an error, never a skip.

    with pg_pair(log_dir) as pair:
        pair.sql("CREATE DATABASE app")
        pair.url("app"), pair.url("app", standby=True)
"""

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import psycopg

#: Bounds of every wait (seconds): start, stop, catch-up.
TIMEOUT = 60.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def postgres_bindir() -> Path:
    """Return the newest installed PostgreSQL's bin directory; raise if there is none."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not found:
        raise RuntimeError("PostgreSQL is not installed (Debian package postgresql): no initdb")
    return found[-1].parent


@dataclass
class PgPair:
    """A running primary and hot standby; ``url()`` names a database on either."""

    bindir: Path
    root: Path
    log_dir: Path
    primary_port: int = field(default_factory=_free_port)
    standby_port: int = field(default_factory=_free_port)
    standby_log_statements: bool = False
    _servers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _logs: dict[str, TextIO] = field(default_factory=dict)

    # --- addresses -----------------------------------------------------------------------------

    def url(self, dbname: str = "postgres", *, standby: bool = False) -> str:
        """Return a ``postgres://`` URL of ``dbname`` on the primary or the standby."""
        port = self.standby_port if standby else self.primary_port
        return f"postgres://postgres@127.0.0.1:{port}/{dbname}"

    def sql(self, query: str, *params: Any, standby: bool = False, dbname: str = "postgres") -> Any:
        """Run one statement (autocommit) and return its rows (None if it returns none)."""
        with psycopg.connect(self.url(dbname, standby=standby), autocommit=True) as conn:
            cursor = conn.execute(query, params or None)
            return cursor.fetchall() if cursor.description is not None else None

    def standby_log(self) -> str:
        """Return what the standby has logged so far."""
        return (self.log_dir / "pg-standby.log").read_text(errors="replace")

    # --- lifecycle -----------------------------------------------------------------------------

    def _as_owner(self) -> dict[str, Any]:
        # initdb and postgres refuse to run as root.
        return {"user": "postgres", "group": "postgres"} if os.getuid() == 0 else {}

    def _run(self, *args: str) -> None:
        result = subprocess.run(
            args, capture_output=True, text=True, timeout=TIMEOUT, check=False, **self._as_owner()
        )
        if result.returncode != 0:
            raise RuntimeError(f"{args[0]} failed: {result.stderr or result.stdout}")

    def _start(self, role: str, port: int, *options: str) -> None:
        log = (self.log_dir / f"pg-{role}.log").open("a")
        self._logs[role] = log
        args = [str(self.bindir / "postgres"), "-D", str(self.root / role), "-p", str(port)]
        args += ["-k", str(self.root), "-c", "listen_addresses=127.0.0.1"]
        args += ["-c", "max_connections=100", "-c", "fsync=off", *options]
        self._servers[role] = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **self._as_owner()
        )
        self._wait_ready(role, port)

    def _wait_ready(self, role: str, port: int) -> None:
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            server = self._servers[role]
            if server.poll() is not None:
                raise RuntimeError(f"PostgreSQL {role} exited with {server.returncode}; see logs")
            with contextlib.suppress(psycopg.OperationalError):
                psycopg.connect(self.url(standby=role == "standby"), connect_timeout=2).close()
                return
            time.sleep(0.1)
        raise TimeoutError(f"PostgreSQL {role} did not accept connections within {TIMEOUT:g} s")

    def _stop(self, role: str, sig: int = signal.SIGINT) -> None:
        """Stop a server: SIGINT is PostgreSQL's fast shutdown (it ends client sessions)."""
        server = self._servers.pop(role, None)
        if server is not None and server.poll() is None:
            try:
                os.killpg(server.pid, sig)
                server.wait(timeout=TIMEOUT)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait(timeout=TIMEOUT)
            except ProcessLookupError:
                pass
        log = self._logs.pop(role, None)
        if log is not None:
            log.close()

    def primary_start(self) -> None:
        """Create and start the primary."""
        self._run(str(self.bindir / "initdb"), "-D", str(self.root / "primary"), "-U", "postgres")
        # initdb's pg_hba trusts local and loopback connections, replication included.
        self._start("primary", self.primary_port, "-c", "wal_level=replica")

    def standby_create(self) -> None:
        """Copy the primary into a standby (``pg_basebackup -R``) and start it."""
        self._run(
            str(self.bindir / "pg_basebackup"),
            *("-h", "127.0.0.1", "-p", str(self.primary_port), "-U", "postgres"),
            *("-D", str(self.root / "standby"), "-R", "-X", "stream", "-C", "-S", "standby"),
        )
        self.standby_start()

    def standby_start(self) -> None:
        """Start the standby and wait until it streams from the primary."""
        options = ["-c", "hot_standby=on"]
        if self.standby_log_statements:
            options += ["-c", "log_statement=all", "-c", "log_line_prefix=%m [%p] "]
        self._start("standby", self.standby_port, *options)
        self.wait_streaming()

    def standby_stop(self) -> None:
        """Stop the standby (fast shutdown): its clients see their connections fail."""
        self._stop("standby")

    def standby_running(self) -> bool:
        return "standby" in self._servers

    def stop(self) -> None:
        """Stop both servers."""
        self._stop("standby")
        self._stop("primary")

    # --- replication -----------------------------------------------------------------------------

    def wait_streaming(self, timeout: float = TIMEOUT) -> None:
        """Wait until the standby is in recovery and its WAL receiver streams."""
        self._wait(
            "SELECT pg_is_in_recovery() AND EXISTS "
            "(SELECT 1 FROM pg_stat_wal_receiver WHERE status = 'streaming')",
            timeout,
            "the standby does not stream from the primary",
        )

    def wait_replayed(self, timeout: float = TIMEOUT) -> None:
        """Wait until the standby has replayed everything the primary has written so far."""
        target = self.sql("SELECT pg_current_wal_lsn()::text")[0][0]
        self._wait(
            f"SELECT pg_last_wal_replay_lsn() >= '{target}'::pg_lsn",
            timeout,
            f"the standby did not replay up to {target}",
        )

    def replay_pause(self) -> None:
        """Pause the standby's replay: it keeps receiving WAL but falls behind the primary."""
        self.sql("SELECT pg_wal_replay_pause()", standby=True)
        self._wait(
            "SELECT pg_get_wal_replay_pause_state() = 'paused'", TIMEOUT, "replay did not pause"
        )

    def replay_resume(self) -> None:
        """Resume the standby's replay."""
        self.sql("SELECT pg_wal_replay_resume()", standby=True)

    def replay_paused(self) -> bool:
        return bool(self.sql("SELECT pg_is_wal_replay_paused()", standby=True)[0][0])

    def _wait(self, query: str, timeout: float, message: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(psycopg.OperationalError):
                if self.sql(query, standby=True)[0][0]:
                    return
            time.sleep(0.1)
        raise TimeoutError(f"{message} within {timeout:g} s")


@contextlib.contextmanager
def pg_pair(log_dir: Path, *, standby_log_statements: bool = False) -> Iterator[PgPair]:
    """Run a private primary and streaming standby until the block ends; yield them."""
    bindir = postgres_bindir()
    log_dir.mkdir(parents=True, exist_ok=True)
    # Under the system temp dir: the postgres user must reach it from a root-only parent.
    root = Path(tempfile.mkdtemp(prefix="quay-geo-pgpair-"))
    if os.getuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    pair = PgPair(bindir, root, log_dir, standby_log_statements=standby_log_statements)
    try:
        pair.primary_start()
        pair.standby_create()
        yield pair
    finally:
        pair.stop()
        shutil.rmtree(root, ignore_errors=True)
