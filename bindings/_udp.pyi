"""What Python sees of bindings/_udp.pyx."""

from core.sip.addr import Peer

dropped: int
unaddressable: int

def recv_batch(fd: int, family: int, peers: dict[bytes, Peer]) -> list[tuple[bytes, Peer]]: ...

def send_batch(fd: int, family: int, items: list[tuple[bytes, Peer]]) -> list[tuple[bytes, Peer]]: ...
