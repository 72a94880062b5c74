"""SIP transports on uvloop: UDP and TCP (RFC 3261 §18).

Thin: they move bytes between sockets and the node and keep no call logic. A UDP datagram is one
message (§18.3: what follows its body is ignored by the parser). A TCP connection runs a
``StreamFramer`` that cuts the stream into messages by Content-Length; a framing error there cannot
be recovered (§18.3), so the connection is answered once if possible and closed.

Every message is tagged with the ``Peer`` it came from; responses go back to that Peer (§18.2.2:
the packet's source, not a name from the message), over the same TCP connection where there is one.

A request to a TCP peer with no connection open opens one (§18.1.1): to the request's own
destination (§8.1.2: its first Route, else its Request-URI), since a Peer learnt from a connection
(a binding's ``received``, RFC 3261 §10.3) is that connection's far end, often an ephemeral port
nobody listens on once it is closed. The request and what follows it to the same Peer wait until the
connection is up; it is then read like an accepted one. A connection that cannot be opened is
reported to the caller (``on_connect_failed``), which makes it the transaction layer's transport
error (§17.1.1.2: 503 for the TU).
"""
from __future__ import annotations

import asyncio
import errno
import logging
import socket
import time

from core.errors import ProtocolError

try:
    from bindings._udp import first_stamp, recv_batch, send_batch, stamp_arrivals
except ImportError:  # nothing built: a system call a datagram, and no arrival times
    first_stamp = recv_batch = send_batch = stamp_arrivals = None
from core.sip.addr import Peer
from core.sip.dialog import next_hop
from core.sip.message import StreamFramer, parse, reply_for_malformed
from core.sip.uri import parse_name_addr_list, parse_uri

log = logging.getLogger("switchcore.transport")

# How long an outbound TCP connection may take to open before it counts as a transport error:
# well inside Timer B (64*T1, 32 s), so that the call layer hears 503 and can try elsewhere.
TCP_CONNECT_TIMEOUT = 10.0


def _peer(transport: str, addr) -> Peer:
    return Peer(transport, addr[0], addr[1])


# Source address -> its Peer, for UDP: a node hears from the same phones, trunks and proxies datagram
# after datagram, and a Peer is a NamedTuple built in Python. Bounded: emptied when it fills.
_UDP_PEERS_MAX = 8192
# Datagrams one read takes (recv_batch reads at most this many), and reads in a row before the loop
# serves its other sockets and timers.
_READ_BATCH = 64
_READ_ROUNDS = 16


class UdpTransport:
    """One bound UDP socket on the event loop, read and written in batches; every datagram goes to
    ``on_message(data, peer)``. When given, ``on_wait(waited)`` is called after a turn's first read,
    before its datagrams are handled, with how long the oldest of them had waited in the socket, in
    seconds (the kernel's arrival time: the socket must be given to ``stamp_arrivals``; not called when
    unknown, as without the compiled ``bindings._udp``), and ``after_reads()`` once the datagrams read
    together are handled, before their answers leave.

    Reading: one ``recvmmsg`` takes up to 64 waiting datagrams (``bindings/_udp.pyx``), for as long
    as more wait (up to 16 rounds before the loop's other work gets its turn).
    Writing: ``send`` queues; the queue leaves in one ``sendmmsg`` once the datagrams read together
    are handled, or at the end of the loop's turn for a send made elsewhere (a timer, a commit). A
    send that wakes a sleeping peer costs about three times one that finds it awake, and a batch wakes
    each peer once. What the kernel has no room for waits, in order, until the socket is writable.
    A host that is not a numeric address of the socket's family is not resolved (the loop must not
    wait for DNS): that datagram is dropped (counted in ``bindings._udp.unaddressable``).

    Without the compiled ``bindings._udp`` (nothing built) the same, a datagram per system call."""

    def __init__(self, on_message, sock: socket.socket, loop: asyncio.AbstractEventLoop, after_reads=None,
                 on_wait=None):
        self.on_message = on_message
        self.after_reads = after_reads
        self.on_wait = on_wait
        self.sock = sock
        self._fd = sock.fileno()
        self._family = sock.family
        self._loop: asyncio.AbstractEventLoop | None = loop
        self._peers: dict = {}
        self._pending: list[tuple[bytes, Peer]] = []
        self._backlog: list[tuple[bytes, Peer]] = []  # what the kernel had no room for, in order
        self._flush_due = False  # a flush is scheduled, or comes at the end of the reads
        loop.add_reader(self._fd, self._readable)

    def sockname(self):
        return self.sock.getsockname()

    def _readable(self) -> None:
        self._flush_due = True  # the reads' answers leave together, below
        try:
            for turn in range(_READ_ROUNDS):
                batch = self._read()
                if turn == 0 and batch and self.on_wait is not None and recv_batch is not None:
                    stamp = first_stamp()  # the kernel's arrival time of the oldest datagram read
                    if stamp:
                        self.on_wait(max(0.0, (time.time_ns() - stamp) / 1e9))
                for data, peer in batch:
                    self.on_message(data, peer)
                if len(batch) < _READ_BATCH or self._loop is None:
                    break
        finally:
            if self.after_reads is not None:
                self.after_reads()
            self.flush()

    def _read(self) -> list[tuple[bytes, Peer]]:
        try:
            if recv_batch is not None:
                return recv_batch(self._fd, self._family, self._peers)
            return self._read_py()
        except OSError as exc:  # not an ICMP echo of an earlier send: those are skipped
            log.warning("udp read failed: %s", exc)
            return []

    def _read_py(self) -> list[tuple[bytes, Peer]]:
        out = []
        for _ in range(_READ_BATCH):
            try:
                data, addr = self.sock.recvfrom(65536)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno in (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH):
                    continue  # an earlier send's ICMP error, reported on this read
                raise
            peer = self._peers.get(addr)
            if peer is None:
                if len(self._peers) >= _UDP_PEERS_MAX:
                    self._peers.clear()
                peer = self._peers[addr] = Peer("udp", addr[0], addr[1])
            out.append((data, peer))
        return out

    def send(self, data: bytes, peer: Peer) -> None:
        """Send ``data`` to ``peer`` with the rest of this turn's datagrams."""
        if self._loop is None:
            return  # closed: nowhere to send from
        self._pending.append((data, peer))
        if not self._flush_due:
            self._flush_due = True
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        """Send what waits now, behind anything the kernel had no room for earlier."""
        self._flush_due = False
        pending, self._pending = self._pending, []
        if not pending or self._loop is None:
            return
        if self._backlog:
            self._backlog.extend(pending)
            return
        self._write(pending)

    def _write(self, items: list[tuple[bytes, Peer]]) -> None:
        if send_batch is not None:
            left = send_batch(self._fd, self._family, items)
        else:
            left = self._write_py(items)
        if left:
            self._backlog = left
            self._loop.add_writer(self._fd, self._writable)

    def _write_py(self, items: list[tuple[bytes, Peer]]) -> list[tuple[bytes, Peer]]:
        for i, (data, peer) in enumerate(items):
            try:
                self.sock.sendto(data, (peer[1], peer[2]))
            except BlockingIOError:
                return items[i:]
            except OSError as exc:  # too large, no route, a name: lost, as a datagram may be
                log.debug("udp send to %s:%s failed: %s", peer[1], peer[2], exc)
        return []

    def _writable(self) -> None:
        self._loop.remove_writer(self._fd)
        backlog, self._backlog = self._backlog, []
        self._write(backlog)

    def close(self) -> None:
        """Send what waits (what still finds no room is lost), then close the socket."""
        if self._loop is None:
            return
        self.flush()
        loop, self._loop = self._loop, None
        loop.remove_reader(self._fd)
        if self._backlog:
            loop.remove_writer(self._fd)
            log.info("udp: %d datagrams not sent at close: no room in the socket", len(self._backlog))
            self._backlog = []
        self.sock.close()


class TcpConnection(asyncio.Protocol):
    """One TCP connection, accepted or opened by us, framed by Content-Length."""

    def __init__(self, registry: "TcpRegistry", on_message, max_size: int):
        self.registry = registry
        self.on_message = on_message
        self.framer = StreamFramer(max_size)
        self.transport: asyncio.Transport | None = None
        self.peer: Peer | None = None
        self.names: list[Peer] = []  # every Peer the registry knows it by (its far end first)

    def connection_made(self, transport):
        self.transport = transport
        self.peer = _peer("tcp", transport.get_extra_info("peername"))
        self.registry.add(self.peer, self)

    def data_received(self, data):
        try:
            messages = self.framer.feed(data)
        except ProtocolError as exc:
            # §18.3: with the framing lost nothing after this point can be trusted; answer what
            # can be answered, then close.
            reply = reply_for_malformed(data, exc)
            if reply is not None and self.transport is not None:
                self.transport.write(reply)
            log.info("closing tcp %s:%s: %s", self.peer.host, self.peer.port, exc.reason)
            self.close()
            return
        for message in messages:
            self.on_message(message, self.peer)

    def connection_lost(self, exc):
        connections = self.registry.connections
        for name in self.names:
            if connections.get(name) is self:
                del connections[name]

    def send(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class TcpRegistry:
    """The live TCP connections of a node, by the Peer at their far end (and, for one we opened,
    the Peer we opened it for), and the ones being opened."""

    def __init__(self, on_message=None, max_size: int = 65536, on_connect_failed=None):
        self.connections: dict[Peer, TcpConnection] = {}
        self.on_message = on_message
        self.max_size = max_size
        self.on_connect_failed = on_connect_failed  # called with the Peer that cannot be reached
        self._opening: dict[Peer, list[bytes]] = {}  # Peer -> what waits for its connection
        self._tasks: set[asyncio.Task] = set()

    def add(self, name: Peer, conn: TcpConnection) -> None:
        self.connections[name] = conn
        conn.names.append(name)

    def send(self, data: bytes, peer: Peer) -> bool:
        """Send over the connection to ``peer``, or queue behind the one being opened to it; False
        when there is neither (see ``open``)."""
        conn = self.connections.get(peer)
        if conn is not None:
            conn.send(data)
            return True
        waiting = self._opening.get(peer)
        if waiting is not None:
            waiting.append(data)
            return True
        return False

    def open(self, request: bytes, peer: Peer) -> None:
        """§18.1.1: open a connection for ``request``, which has none to ``peer``, to the request's
        own destination, and send it there once connected. Responses are not sent this way
        (§18.2.2: they go back over the connection the request came on, or not at all)."""
        try:
            destination = request_destination(request)
        except (ProtocolError, ValueError) as exc:
            log.info("request to %s:%s dropped: no destination in it (%s)", peer.host, peer.port, exc)
            return
        self._opening[peer] = [request]
        task = asyncio.get_running_loop().create_task(self._open(peer, destination))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _open(self, peer: Peer, destination: Peer) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(lambda: TcpConnection(self, self.on_message, self.max_size),
                                       destination.host, destination.port),
                TCP_CONNECT_TIMEOUT)
        except (OSError, asyncio.TimeoutError) as exc:
            self._opening.pop(peer, None)
            log.info("tcp connection to %s:%s (for %s:%s) failed: %s", destination.host, destination.port,
                     peer.host, peer.port, exc or "timed out")
            if self.on_connect_failed is not None:
                self.on_connect_failed(peer)
            return
        # Known by its far end already; by the Peer it was opened for and by the destination as
        # written too, unless a connection of their own has appeared meanwhile.
        for name in (peer, destination):
            if name not in self.connections:
                self.add(name, conn)
        for data in self._opening.pop(peer, ()):
            conn.send(data)

    def close_all(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        self._opening.clear()
        for conn in list(self.connections.values()):
            conn.close()


def request_destination(request: bytes) -> Peer:
    """Where a connection for ``request`` goes (RFC 3261 §8.1.2, §18.1.1): its first Route, else its
    Request-URI; the port 5060 if none is written, TCP whatever the URI's transport parameter."""
    msg = parse(request)
    routes = msg.header_values("Route")
    uri = parse_name_addr_list(routes[0])[0].uri if routes else parse_uri(msg.uri)
    hop = next_hop(uri, "tcp")
    return Peer("tcp", hop.host, hop.port)
