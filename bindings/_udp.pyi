"""What Python sees of bindings/_udp.pyx."""

from core.sip.addr import Peer

dropped: int
unaddressable: int

def recv_batch(fd: int, family: int, peers: dict[bytes, Peer]) -> list[tuple[bytes, Peer]]: ...

def stamp_arrivals(fd: int) -> None: ...

def first_stamp() -> int: ...

def send_batch(fd: int, family: int, items: list[tuple[bytes, Peer]]) -> list[tuple[bytes, Peer]]: ...
