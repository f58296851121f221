"""The delay proxy of the bench and the tests: delay per chunk, exact round-trip counts, pause.

Timings are asserted only as lower bounds (a delay cannot be shorter than asked), except the
pipelining test, whose upper bound is half of what a serialising proxy would take.
"""

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest
from django.db import connection

from tests.delayproxy import DelayProxy, ProxyCounts

RTT_MS = 100


@pytest.fixture
def echo_port() -> Iterator[int]:
    """Run a TCP echo server on 127.0.0.1; yield its port."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    clients: list[socket.socket] = []

    def echo(sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := sock.recv(65536):
                sock.sendall(data)
        sock.close()

    def accept() -> None:
        while True:
            try:
                sock, _ = server.accept()
            except OSError:
                return
            clients.append(sock)
            threading.Thread(target=echo, args=(sock,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    yield int(server.getsockname()[1])
    with contextlib.suppress(OSError):
        server.shutdown(socket.SHUT_RDWR)
    server.close()
    for sock in clients:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def proxy(echo_port: int) -> Iterator[DelayProxy]:
    with DelayProxy(echo_port, RTT_MS, handshake=False) as running:
        yield running


def connect(proxy: DelayProxy) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def receive(sock: socket.socket, size: int) -> bytes:
    """Read exactly ``size`` bytes."""
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError(f"closed after {len(data)} of {size} bytes")
        data += chunk
    return data


def test_an_exchange_costs_at_least_one_round_trip(proxy: DelayProxy) -> None:
    with connect(proxy) as sock:
        started = time.monotonic()
        sock.sendall(b"ping")
        assert receive(sock, 4) == b"ping"
        elapsed = time.monotonic() - started
    assert elapsed >= RTT_MS / 1000


def test_the_first_send_pays_the_handshake_when_asked(echo_port: int) -> None:
    with DelayProxy(echo_port, RTT_MS, handshake=True) as proxy, connect(proxy) as sock:
        started = time.monotonic()
        sock.sendall(b"ping")
        assert receive(sock, 4) == b"ping"
        first = time.monotonic() - started
    assert first >= 2 * RTT_MS / 1000


def test_pipelined_chunks_are_delayed_once_not_once_each(proxy: DelayProxy) -> None:
    chunks = 10
    with connect(proxy) as sock:
        started = time.monotonic()
        for index in range(chunks):
            sock.sendall(bytes([index]) * 100)
            time.sleep(0.005)  # separate reads at the proxy, not one coalesced chunk
        assert receive(sock, chunks * 100) == b"".join(bytes([i]) * 100 for i in range(chunks))
        elapsed = time.monotonic() - started
    assert elapsed >= RTT_MS / 1000
    # A proxy that sleeps per chunk before reading the next would take chunks x RTT (1 s).
    assert elapsed < chunks * RTT_MS / 1000 / 2


def test_counts_a_round_trip_per_turn_of_the_client(proxy: DelayProxy) -> None:
    with connect(proxy) as sock:
        for _ in range(3):  # three request/answer turns
            sock.sendall(b"abc")
            receive(sock, 3)
        sock.sendall(b"one")  # two sends before the answer: one trip
        sock.sendall(b"two")
        receive(sock, 6)
    assert proxy.snapshot() == ProxyCounts(connections=1, round_trips=4, bytes_up=15, bytes_down=15)


def test_counts_each_connection_and_its_first_send(proxy: DelayProxy) -> None:
    for _ in range(2):
        with connect(proxy) as sock:
            sock.sendall(b"x")
            receive(sock, 1)
    counts = proxy.snapshot()
    assert (counts.connections, counts.round_trips) == (2, 2)


def test_a_connection_that_talks_while_the_clients_are_quiet_is_not_counted(
    proxy: DelayProxy,
) -> None:
    stop = threading.Event()

    def background(sock: socket.socket) -> None:  # a monitor's periodic query
        while not stop.is_set():
            sock.sendall(b"m")
            receive(sock, 1)
            stop.wait(0.05)

    with connect(proxy) as request, connect(proxy) as monitor:
        request.sendall(b"warm")
        receive(request, 4)
        talker = threading.Thread(target=background, args=(monitor,))
        talker.start()
        try:
            assert proxy.ignore_background(0.3) == 1
            before = proxy.snapshot()
            for _ in range(2):
                request.sendall(b"q")
                receive(request, 1)
            counted = proxy.snapshot() - before
        finally:
            stop.set()
            talker.join()

    assert counted.round_trips == 2, "the monitor's trips meanwhile are left out"


def test_a_difference_of_snapshots_measures_one_request_and_reset_zeroes(
    proxy: DelayProxy,
) -> None:
    with connect(proxy) as sock:
        sock.sendall(b"warm")
        receive(sock, 4)
        before = proxy.snapshot()
        sock.sendall(b"request")
        receive(sock, 7)
        assert proxy.snapshot() - before == ProxyCounts(0, 1, 7, 7)
    proxy.reset()
    assert proxy.snapshot() == ProxyCounts()


def test_a_paused_proxy_holds_data_without_closing_and_resume_delivers_it(
    proxy: DelayProxy,
) -> None:
    with connect(proxy) as sock:
        sock.sendall(b"before")
        receive(sock, 6)
        proxy.pause()
        sock.sendall(b"held")
        sock.settimeout(2 * RTT_MS / 1000 + 0.3)
        with pytest.raises(TimeoutError):
            sock.recv(16)  # neither an answer nor the end of the stream: a hung peer
        proxy.resume()
        sock.settimeout(10)
        assert receive(sock, 4) == b"held"


def test_stop_cuts_open_connections(echo_port: int) -> None:
    proxy = DelayProxy(echo_port, 0).start()
    sock = connect(proxy)
    sock.sendall(b"x")
    receive(sock, 1)
    proxy.stop()
    with sock, contextlib.suppress(ConnectionResetError):
        assert sock.recv(16) == b""


def postgres_dsn() -> str:
    """Return the connection string of the suite's PostgreSQL server (its maintenance db)."""
    db = connection.settings_dict
    if not db["ENGINE"].endswith("postgresql"):
        pytest.skip("the suite runs on SQLite: DATABASE_URL names no PostgreSQL")
    return psycopg.conninfo.make_conninfo(
        host=db.get("HOST") or "127.0.0.1",
        port=str(db.get("PORT") or 5432),
        user=db.get("USER") or "postgres",
        password=db.get("PASSWORD") or "",
        dbname="postgres",
    )


def test_a_postgres_session_costs_its_startup_plus_one_trip_per_statement() -> None:
    dsn = postgres_dsn()
    port = int(psycopg.conninfo.conninfo_to_dict(dsn)["port"] or 5432)
    with DelayProxy(port, 20) as proxy:
        through = psycopg.conninfo.make_conninfo(
            dsn, host="127.0.0.1", port=str(proxy.port), sslmode="disable", gssencmode="disable"
        )
        with psycopg.connect(through, autocommit=True) as conn:
            startup = proxy.snapshot()
            for statement in ("SELECT 1", "SELECT now()", "SHOW server_version"):
                conn.execute(statement).fetchall()
            statements = proxy.snapshot() - startup
    assert startup.connections == 1
    # StartupMessage, then one more exchange per password round of the server's auth method.
    assert startup.round_trips >= 1
    assert (statements.connections, statements.round_trips) == (0, 3)
