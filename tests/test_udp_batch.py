"""SIP datagrams out in batches (bindings/_udp.pyx, bindings/transport.py): every datagram of a turn
of the event loop leaves in one sendmmsg, in order, to each its own peer; what the batch cannot send
goes the transport's usual way, and one datagram the kernel refuses does not hold back the others."""
from __future__ import annotations

import asyncio
import socket
import time

import pytest
import uvloop

from bindings.transport import UdpTransport
from core.sip.addr import Peer

udp = pytest.importorskip("bindings._udp", reason="bindings._udp is not built (python setup.py build_ext --inplace)")


def receiver(family=socket.AF_INET, host="127.0.0.1"):
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    sock.settimeout(2.0)
    return sock


def drain(sock, n):
    return [sock.recv(70000) for _ in range(n)]


def test_a_batch_reaches_each_peer_in_order():
    a, b = receiver(), receiver()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as out, a, b:
        items = []
        for i in range(150):  # more than one sendmmsg holds
            dst = a if i % 3 else b
            items.append((f"datagram {i}".encode(), Peer("udp", "127.0.0.1", dst.getsockname()[1])))
        assert udp.send_batch(out.fileno(), socket.AF_INET, items) == []
        assert drain(a, 100) == [d for d, p in items if p.port == a.getsockname()[1]]
        assert drain(b, 50) == [d for d, p in items if p.port == b.getsockname()[1]]


def test_ipv6_peers_from_an_ipv6_socket():
    try:
        a = receiver(socket.AF_INET6, "::1")
    except OSError:
        pytest.skip("no IPv6 loopback here")
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as out, a:
        items = [(b"one", Peer("udp", "::1", a.getsockname()[1])), (b"two", Peer("udp", "::1", a.getsockname()[1]))]
        assert udp.send_batch(out.fileno(), socket.AF_INET6, items) == []
        assert drain(a, 2) == [b"one", b"two"]


def test_a_host_that_is_not_an_address_of_the_family_is_dropped_not_resolved():
    a = receiver()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as out, a:
        port = a.getsockname()[1]
        before = udp.unaddressable
        items = [(b"first", Peer("udp", "127.0.0.1", port)), (b"named", Peer("udp", "localhost", port)),
                 (b"v6", Peer("udp", "::1", port)), (b"last", Peer("udp", "127.0.0.1", port))]
        assert udp.send_batch(out.fileno(), socket.AF_INET, items) == []
        assert udp.unaddressable == before + 2
        assert drain(a, 2) == [b"first", b"last"]


def test_a_datagram_the_kernel_refuses_is_dropped_and_the_rest_still_go():
    a = receiver()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as out, a:
        port = a.getsockname()[1]
        before = udp.dropped
        items = [(b"before", Peer("udp", "127.0.0.1", port)), (b"x" * 70000, Peer("udp", "127.0.0.1", port)),
                 (b"after", Peer("udp", "127.0.0.1", port))]
        assert udp.send_batch(out.fileno(), socket.AF_INET, items) == []  # 70,000 bytes: EMSGSIZE
        assert udp.dropped == before + 1
        assert drain(a, 2) == [b"before", b"after"]


def test_a_read_takes_what_waits_and_names_each_sender_once():
    r = receiver()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s1, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s2, r:
        s1.bind(("127.0.0.3", 0))
        s2.bind(("127.0.0.4", 0))
        for i in range(70):
            (s1 if i % 2 else s2).sendto(b"d%d" % i, r.getsockname())
        peers = {}
        first = udp.recv_batch(r.fileno(), socket.AF_INET, peers)
        second = udp.recv_batch(r.fileno(), socket.AF_INET, peers)
        assert (len(first), len(second)) == (64, 6)  # at most 64 a read
        assert udp.recv_batch(r.fileno(), socket.AF_INET, peers) == []  # nothing waits: no blocking
        got = first + second
        assert [d for d, _ in got] == [b"d%d" % i for i in range(70)]
        assert {p for _, p in got} == {Peer("udp", "127.0.0.3", s1.getsockname()[1]),
                                        Peer("udp", "127.0.0.4", s2.getsockname()[1])}
        assert got[0][1] is got[2][1]  # one Peer per sender, not one per datagram


def test_an_icmp_error_for_an_earlier_send_does_not_stop_the_reads():
    r = receiver()
    with r, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as gone, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        gone.bind(("127.0.0.1", 0))
        dead = gone.getsockname()
        gone.close()  # nobody listens there any more: the kernel answers port unreachable
        r.sendto(b"to nobody", dead)
        s.sendto(b"still read", r.getsockname())
        got = []
        for _ in range(50):
            got += udp.recv_batch(r.fileno(), socket.AF_INET, {})
            if got:
                break
        assert [d for d, _ in got] == [b"still read"]


@pytest.mark.parametrize("loop_factory", [asyncio.new_event_loop, uvloop.new_event_loop], ids=["asyncio", "uvloop"])
def test_the_transport_reads_batches_and_answers_them_together(loop_factory):
    async def run():
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        seen = []

        def echo(data, peer):
            seen.append(data)
            proto.send(b"re " + data, peer)

        proto = UdpTransport(echo, sock, loop)
        phone = receiver()
        phone.setblocking(False)
        try:
            for i in range(100):
                phone.sendto(b"%d" % i, proto.sockname())
            for _ in range(100):
                await asyncio.sleep(0.01)
                if len(seen) == 100:
                    break
            await asyncio.sleep(0.05)
            answers = []
            while True:
                try:
                    answers.append(phone.recv(100))
                except BlockingIOError:
                    break
            assert seen == [b"%d" % i for i in range(100)]
            assert answers == [b"re %d" % i for i in range(100)]
        finally:
            proto.close()
            phone.close()
        assert sock.fileno() == -1  # closed

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(run())


@pytest.mark.parametrize("loop_factory", [asyncio.new_event_loop, uvloop.new_event_loop], ids=["asyncio", "uvloop"])
def test_the_transport_sends_a_turns_datagrams_at_its_end_and_what_waits_before_closing(loop_factory):
    async def run():
        loop = asyncio.get_running_loop()
        a = receiver()
        a.setblocking(False)
        port = a.getsockname()[1]
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        proto = UdpTransport(lambda d, p: None, sock, loop)
        try:
            peer = Peer("udp", "127.0.0.1", port)
            proto.send(b"one", peer)
            proto.send(b"two", peer)
            with pytest.raises(BlockingIOError):
                a.recv(100)  # nothing has left yet: the turn is not over
            await asyncio.sleep(0)
            await asyncio.sleep(0.05)
            assert [a.recv(100), a.recv(100)] == [b"one", b"two"]
            proto.send(b"last", peer)
            proto.close()  # what waits leaves before the socket closes
            await asyncio.sleep(0.05)
            assert a.recv(100) == b"last"
            proto.send(b"after close", peer)  # dropped, quietly
            await asyncio.sleep(0.05)
            with pytest.raises(BlockingIOError):
                a.recv(100)
        finally:
            proto.close()
            a.close()

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(run())


def test_a_read_says_when_its_oldest_datagram_arrived():
    """How long the oldest datagram of a read waited in the socket: what tells the node it is behind."""
    stamped, plain = socket.socket(socket.AF_INET, socket.SOCK_DGRAM), socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        udp.stamp_arrivals(stamped.fileno())
        for sock in (stamped, plain):
            sock.bind(("127.0.0.1", 0))
            sock.setblocking(False)
        sender.sendto(b"first", stamped.getsockname())
        sent = time.time_ns()
        time.sleep(0.2)
        sender.sendto(b"second", stamped.getsockname())
        batch = udp.recv_batch(stamped.fileno(), socket.AF_INET, {})
        assert [data for data, _ in batch] == [b"first", b"second"]
        waited = (time.time_ns() - udp.first_stamp()) / 1e9
        assert 0.2 <= waited < 10 and abs(udp.first_stamp() - sent) < 0.1e9  # the first one's arrival
        sender.sendto(b"plain", plain.getsockname())
        time.sleep(0.01)
        assert [data for data, _ in udp.recv_batch(plain.fileno(), socket.AF_INET, {})] == [b"plain"]
        assert udp.first_stamp() == 0  # a socket without stamp_arrivals: unknown
    finally:
        for sock in (stamped, plain, sender):
            sock.close()
