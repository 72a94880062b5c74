"""Where a message came from or goes to."""
from typing import NamedTuple


class Peer(NamedTuple):
    """A transport address: ``transport`` is "udp" or "tcp"; responses and requests go back by it."""

    transport: str
    host: str
    port: int

    @property
    def reliable(self) -> bool:
        # RFC 3261 §17.1.1.2 / §17.2.1: no retransmission timers over a reliable transport.
        return self.transport != "udp"
