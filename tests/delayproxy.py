"""A loopback TCP proxy that puts an ocean between two processes and counts the round trips.

This machine has no ``tc netem``: a far region's distance to the PostgreSQL primary is this
proxy. Every chunk read from one side is delivered to the other half a round trip later, from
a timestamped queue per direction, so a request and its answer cost one ``rtt_ms`` while chunks
sent back to back stay back to back (the delay adds latency, never a throughput limit). The
proxy counts connections and round trips (each time a client sends after it received, and the
first send of a connection), so a caller measures one request by differencing two snapshots.
It can also hang both directions without closing anything (a peer that stopped answering).

Standard library only: the bench imports it without Django.
"""

import contextlib
import queue
import socket
import threading
import time
from dataclasses import dataclass
from types import TracebackType

#: Bytes read per ``recv``: one chunk of the queue.
CHUNK = 65536
#: Chunks waiting per direction before the reader stops reading (TCP backpressure takes over).
QUEUE_CHUNKS = 1024


@dataclass(frozen=True)
class ProxyCounts:
    """What crossed the proxy: connections opened, client round trips, bytes each way."""

    connections: int = 0
    round_trips: int = 0
    bytes_up: int = 0
    bytes_down: int = 0

    def __sub__(self, other: "ProxyCounts") -> "ProxyCounts":
        return ProxyCounts(
            self.connections - other.connections,
            self.round_trips - other.round_trips,
            self.bytes_up - other.bytes_up,
            self.bytes_down - other.bytes_down,
        )


class _Link:
    """One proxied connection: its two sockets and whether the client has heard back."""

    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.client = client
        self.upstream = upstream
        #: True until the client's first send, and again after each delivery to the client.
        self.answered = True
        self.open_directions = 2
        self.round_trips = 0
        #: A background connection (``ignore_background``): its round trips are not counted.
        self.ignored = False

    def close(self) -> None:
        for sock in (self.client, self.upstream):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


class DelayProxy:
    """Forward ``127.0.0.1:port`` to ``target_host:target_port`` with ``rtt_ms`` of distance.

    ``handshake``: the first bytes a client sends on a connection wait one more round trip, the
    TCP handshake a real connection over the same distance costs before it can send.
    ``rtt_ms`` may be changed while the proxy runs; it applies to chunks read from then on.
    """

    def __init__(
        self,
        target_port: int,
        rtt_ms: float = 0.0,
        *,
        target_host: str = "127.0.0.1",
        handshake: bool = True,
    ) -> None:
        self.target = (target_host, target_port)
        self.rtt_ms = rtt_ms
        self.handshake = handshake
        self.port = 0
        self._lock = threading.Lock()
        self._counts = ProxyCounts()
        self._links: set[_Link] = set()
        self._server: socket.socket | None = None
        self._flowing = threading.Event()
        self._flowing.set()
        self._stopped = threading.Event()

    # --- life cycle -------------------------------------------------------------------------

    def start(self) -> "DelayProxy":
        """Listen on a free port of 127.0.0.1 (``self.port``) and forward what connects."""
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.port))
        server.listen(128)
        self.port = int(server.getsockname()[1])
        self._server = server
        self._stopped.clear()
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()
        return self

    def stop(self) -> None:
        """Refuse new connections and cut the open ones."""
        self._stopped.set()
        self._flowing.set()  # wake writers held by pause() so they see the stop
        if self._server is not None:
            # close() alone leaves a thread blocked in accept() listening: shutdown() wakes it.
            with contextlib.suppress(OSError):
                self._server.shutdown(socket.SHUT_RDWR)
            self._server.close()
            self._server = None
        with self._lock:
            links, self._links = list(self._links), set()
        for link in links:
            link.close()

    def __enter__(self) -> "DelayProxy":
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def pause(self) -> None:
        """Stop delivering in both directions, closing nothing: the far side hangs."""
        self._flowing.clear()

    def resume(self) -> None:
        """Deliver again, what was held first."""
        self._flowing.set()

    # --- counters ---------------------------------------------------------------------------

    def snapshot(self) -> ProxyCounts:
        """Return the counts since the start or the last ``reset()``."""
        with self._lock:
            return self._counts

    def reset(self) -> None:
        """Set every count back to zero."""
        with self._lock:
            self._counts = ProxyCounts()

    def ignore_background(self, seconds: float) -> int:
        """Stop counting the connections that talk during ``seconds`` of quiet; return how many.

        Call it while the clients under measurement send nothing: what still talks then is a
        process's own background work (a replica monitor, a heartbeat), not a request's.
        """
        with self._lock:
            before = {link: link.round_trips for link in self._links}
        time.sleep(seconds)
        with self._lock:
            chatty = [link for link, count in before.items() if link.round_trips != count]
            chatty += [link for link in self._links if link not in before]
            for link in chatty:
                link.ignored = True
        return len(chatty)

    @property
    def url_host(self) -> str:
        """Return ``127.0.0.1:port``, for a URL naming the proxy instead of the target."""
        return f"127.0.0.1:{self.port}"

    # --- forwarding -------------------------------------------------------------------------

    def _count(self, **add: int) -> None:
        counts = self._counts
        self._counts = ProxyCounts(
            counts.connections + add.get("connections", 0),
            counts.round_trips + add.get("round_trips", 0),
            counts.bytes_up + add.get("bytes_up", 0),
            counts.bytes_down + add.get("bytes_down", 0),
        )

    def _accept(self, server: socket.socket) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            link = _Link(client, upstream)
            with self._lock:
                self._links.add(link)
                self._count(connections=1)
            for up in (True, False):
                held: queue.Queue[tuple[float, bytes]] = queue.Queue(QUEUE_CHUNKS)
                source, sink = (client, upstream) if up else (upstream, client)
                threading.Thread(
                    target=self._read, args=(link, source, held, up), daemon=True
                ).start()
                threading.Thread(
                    target=self._deliver, args=(link, sink, held, up), daemon=True
                ).start()

    def _read(
        self, link: _Link, source: socket.socket, held: "queue.Queue[tuple[float, bytes]]", up: bool
    ) -> None:
        """Read chunks from ``source`` and queue each with the time it is due on the other side."""
        first = True
        while True:
            try:
                data = source.recv(CHUNK)
            except OSError:
                data = b""
            delay = self.rtt_ms / 2000
            if up and first and self.handshake:
                delay += self.rtt_ms / 1000
            first = False
            if data and up:
                with self._lock:
                    link.round_trips += int(link.answered)
                    if not link.ignored:
                        self._count(round_trips=int(link.answered), bytes_up=len(data))
                    link.answered = False
            held.put((time.monotonic() + delay, data))
            if not data:  # end of stream, delivered in order like any chunk
                return

    def _deliver(
        self, link: _Link, sink: socket.socket, held: "queue.Queue[tuple[float, bytes]]", up: bool
    ) -> None:
        """Send each queued chunk once it is due (and the proxy is not paused)."""
        broken = False
        while True:
            due, data = held.get()
            if not broken:
                wait = due - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                self._flowing.wait()
                if data and not up:
                    # Before the send: a client woken by these bytes may send again at once.
                    with self._lock:
                        self._count(bytes_down=len(data))
                        link.answered = True
                broken = self._stopped.is_set() or not self._send(sink, data)
                if broken:
                    link.close()  # the reader then ends its stream: drain the queue up to it
            if not data:
                self._direction_done(link)
                return

    @staticmethod
    def _send(sink: socket.socket, data: bytes) -> bool:
        """Send ``data``, or the end of the stream when empty; return False if the peer is gone."""
        try:
            if data:
                sink.sendall(data)
            else:
                sink.shutdown(socket.SHUT_WR)
        except OSError:
            return False
        return True

    def _direction_done(self, link: _Link) -> None:
        with self._lock:
            link.open_directions -= 1
            done = link.open_directions == 0 and link in self._links
            if done:
                self._links.discard(link)
        if done:
            link.close()
