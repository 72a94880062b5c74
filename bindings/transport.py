"""SIP transports on uvloop: UDP and TCP (RFC 3261 §18).

Thin: they move bytes between sockets and the node and keep no call logic. A UDP datagram is one
message (§18.3: what follows its body is ignored by the parser). A TCP connection runs a
``StreamFramer`` that cuts the stream into messages by Content-Length; a framing error there cannot
be recovered (§18.3), so the connection is answered once if possible and closed.

Every message is tagged with the ``Peer`` it came from; responses go back to that Peer (§18.2.2:
the packet's source, not a name from the message), over the same TCP connection where there is one.
"""
from __future__ import annotations

import asyncio
import logging

from core.errors import ProtocolError
from core.sip.addr import Peer
from core.sip.message import StreamFramer, reply_for_malformed

log = logging.getLogger("switchcore.transport")


def _peer(transport: str, addr) -> Peer:
    return Peer(transport, addr[0], addr[1])


# Source address -> its Peer, for UDP: a node hears from the same phones, trunks and proxies datagram
# after datagram, and a Peer is a NamedTuple built in Python. Bounded: emptied when it fills.
_UDP_PEERS_MAX = 8192


class UdpTransport(asyncio.DatagramProtocol):
    """One bound UDP socket; every datagram goes to ``on_message``."""

    def __init__(self, on_message):
        self.on_message = on_message
        self.transport: asyncio.DatagramTransport | None = None
        self._peers: dict[tuple, Peer] = {}

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        peer = self._peers.get(addr)
        if peer is None:
            if len(self._peers) >= _UDP_PEERS_MAX:
                self._peers.clear()
            peer = self._peers[addr] = Peer("udp", addr[0], addr[1])
        self.on_message(data, peer)

    def error_received(self, exc):
        # An ICMP error for an earlier sendto (a phone gone away): not fatal to the socket.
        log.debug("udp error: %s", exc)

    def send(self, data: bytes, peer: Peer) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.sendto(data, (peer[1], peer[2]))


class TcpConnection(asyncio.Protocol):
    """One accepted TCP connection, framed by Content-Length."""

    def __init__(self, registry: "TcpRegistry", on_message, max_size: int):
        self.registry = registry
        self.on_message = on_message
        self.framer = StreamFramer(max_size)
        self.transport: asyncio.Transport | None = None
        self.peer: Peer | None = None

    def connection_made(self, transport):
        self.transport = transport
        self.peer = _peer("tcp", transport.get_extra_info("peername"))
        self.registry.connections[self.peer] = self

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
        if self.peer is not None and self.registry.connections.get(self.peer) is self:
            del self.registry.connections[self.peer]

    def send(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class TcpRegistry:
    """The live TCP connections of a node, by the Peer at their far end."""

    def __init__(self):
        self.connections: dict[Peer, TcpConnection] = {}

    def send(self, data: bytes, peer: Peer) -> bool:
        conn = self.connections.get(peer)
        if conn is None:
            # §18.2.2 would open a new connection to the sent-by; phones that talk TCP to us keep
            # their connection open, so a response with no connection left is dropped.
            return False
        conn.send(data)
        return True

    def close_all(self) -> None:
        for conn in list(self.connections.values()):
            conn.close()
