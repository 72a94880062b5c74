"""The call layer's RTP ports (core.call.b2bua.PortAllocator): never-used ports first, a released port
again once it has rested its quarantine (the media engine then finds its sockets still open), the
longest-released port when the range runs out — and the B2BUA's calls taking them in that order."""

from __future__ import annotations

from core.call import MediaBridge
from core.call.b2bua import PORT_QUARANTINE, PortAllocator
from tests.test_b2bua import net  # noqa: F401  (the fixture)


def test_never_used_ports_come_first_even_and_with_room_for_rtcp():
    ports = PortAllocator(20001, 20009)
    got = [ports.allocate(0.0) for _ in range(4)]
    assert got == [20002, 20004, 20006, 20008]  # 20008 + 1 = 20009 still in the range
    assert ports.allocate(0.0) is None and len(ports) == 0


def test_a_call_gets_both_legs_ports_or_none():
    ports = PortAllocator(20000, 20005)  # three pairs: 20000, 20002, 20004
    assert ports.allocate_pair(0.0) == (20000, 20002)
    assert ports.allocate_pair(0.0) is None  # one pair left: not half a call
    assert len(ports) == 1 and ports.allocate(0.0) == 20004  # and that one was given back


def test_a_released_port_rests_while_never_used_ones_remain():
    ports = PortAllocator(20000, 20011, quarantine=1.0)
    first = ports.allocate(0.0)
    ports.release(first, 5.0)
    assert ports.allocate(5.5) == 20002  # within the quarantine: a never-used port
    assert ports.allocate(5.999) == 20004


def test_a_rested_port_is_taken_before_a_never_used_one():
    ports = PortAllocator(20000, 20011, quarantine=1.0)
    first = ports.allocate(0.0)
    ports.release(first, 5.0)
    assert ports.allocate(6.0) == first  # released at now - quarantine: rested
    assert ports.allocate(6.0) == 20002


def test_rested_ports_come_back_longest_released_first():
    ports = PortAllocator(20000, 20099, quarantine=1.0)
    a, b, c = (ports.allocate(0.0) for _ in range(3))
    ports.release(b, 1.0)
    ports.release(c, 1.5)
    ports.release(a, 2.0)
    assert [ports.allocate(10.0) for _ in range(3)] == [b, c, a]


def test_a_full_range_hands_out_the_longest_released_port_inside_its_quarantine():
    ports = PortAllocator(20000, 20003, quarantine=1.0)
    a, b = ports.allocate(0.0), ports.allocate(0.0)
    assert ports.allocate(0.0) is None
    ports.release(b, 3.0)
    ports.release(a, 3.1)
    # No never-used port is left: a call is better served by a port that may hear a stray packet.
    assert ports.allocate(3.2) == b
    assert ports.allocate(3.2) == a
    assert ports.allocate(3.2) is None


def test_a_port_released_twice_or_never_taken_is_not_handed_out_twice():
    ports = PortAllocator(20000, 20011)
    port = ports.allocate(0.0)
    ports.release(port, 1.0)
    ports.release(port, 1.0)
    ports.release(None, 1.0)
    ports.release(20010, 1.0)  # never taken: still among the never-used
    assert len(ports) == 6
    got = [ports.allocate(10.0) for _ in range(6)]
    assert sorted(got) == [20000, 20002, 20004, 20006, 20008, 20010]
    assert ports.allocate(10.0) is None


def test_the_b2bua_gives_a_finished_calls_ports_again_only_once_they_have_rested(net):  # noqa: F811
    caller, _ = net.answered_call()
    (first,) = net.switch.take(MediaBridge)
    used = {first.leg_a_port, first.leg_b_port}
    caller.bye(net.now + 10)
    net.flush(net.now + 10)

    net.now += PORT_QUARANTINE / 2  # the released ports rest: the next call takes never-used ones
    caller, _ = net.answered_call()
    (second,) = net.switch.take(MediaBridge)
    assert {second.leg_a_port, second.leg_b_port}.isdisjoint(used)
    caller.bye(net.now)
    net.flush()

    net.now += PORT_QUARANTINE  # the first call's ports have rested: they come back first
    net.answered_call()
    (third,) = net.switch.take(MediaBridge)
    assert {third.leg_a_port, third.leg_b_port} == used
