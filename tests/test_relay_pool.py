"""Warm ports (core/_rtp.pyx Engine, ``spare_pairs``): a removed relay's sockets stay open and bound as
spares, and a new relay on the same ports takes them. Checked with real sockets on 127.0.0.1: the new
relay behaves as on new sockets (nothing the old call's peers sent reaches it, it latches on its own
peers, its figures and numbering start from nothing), every rest of a pair discards what reached it, a
spare forwards nothing, the spares are capped and given up when descriptors run out, close() leaves no
descriptor open, and the spares stay in the engine's epoll set (one-shot, without EPOLLIN) while every
socket closed is taken out of it first (read from /proc/self/fdinfo)."""

from __future__ import annotations

import os
import random
import resource
import select
import threading
import time

import pytest

from core.media import Engine
from core.media.rtp import Latched
from tests.test_media_relay import HOST, Phone, phones, pump  # noqa: F401 (phones: a fixture)
from tests.test_rtp import fields, rtp

pytestmark = pytest.mark.skipif(Engine is None, reason="core._rtp is not built")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def a_range(span: int) -> tuple[int, int]:
    base = random.randrange(30000, 60000 - span, 2)
    return base, base + span - 1


def epoll_fds() -> set[int]:
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:[eventpoll]":
                found.add(int(fd))
        except OSError:
            pass  # the descriptor listdir itself used
    return found


def new_engine(*args, **kwargs):
    """An Engine, and its epoll descriptor."""
    before = epoll_fds()
    engine = Engine(*args, **kwargs)
    (epfd,) = epoll_fds() - before
    return engine, epfd


def watched(epfd: int, by_inode: bool = False) -> dict[int, int]:
    """The descriptors in an epoll set (as numbered when added, or by inode) and the events each waits for."""
    out = {}
    with open(f"/proc/self/fdinfo/{epfd}") as f:
        for line in f:
            if line.startswith("tfd:"):
                words = line.split()  # tfd: N events: E data: D pos:P ino:I sdev:S
                key = int(words[7].removeprefix("ino:"), 16) if by_inode else int(words[1])
                out[key] = int(words[3], 16)
    return out


def old_call(engine, phones):
    """A call relayed, spoken on, and removed; its peers then keep sending to its ports."""
    old_a, old_b = phones(rtcp=True), phones(rtcp=True)
    pa, pb = engine.add_relay("old", options={"b": {"peer": old_b.addr}})
    old_a.send(pa, rtp(1000, 160000, 0x1111, payload=b"old call"))
    pump(engine)
    assert [p[12:] for p in old_b.recv_all(expect=1)] == [b"old call"]
    engine.remove_relay("old")
    engine.events()
    for seq in range(1001, 1011):
        old_a.send(pa, rtp(seq, seq * 160, 0x1111, payload=b"stray a"))
        old_b.send(pb, rtp(seq, seq * 160, 0x2222, payload=b"stray b"))
    old_a.send(pa + 1, b"\x80\xc8\x00\x06" + b"\x00" * 24, rtcp=True)  # an RTCP SR to the RTCP port
    return pa, pb, old_a, old_b


def test_a_new_relay_on_a_spare_pair_behaves_as_on_new_sockets(phones):
    with Engine(*a_range(100)) as engine:
        pa, pb, old_a, old_b = old_call(engine, phones)
        pump(engine)  # spares do not wake the loop: what reached them waits in their sockets
        assert old_a.recv_all() == [] and old_b.recv_all() == []
        assert engine.spare_count == 2

        new_a, new_b = phones(), phones()
        fds = open_fds()
        assert engine.add_relay("new", pa, pb, {"b": {"peer": new_b.addr}, "a": {"ssrc": 0xA0A0A0A0},
                                                 "dtmf_pt": 101}) == (pa, pb)
        assert open_fds() == fds and engine.spare_count == 0  # the old sockets, not new ones
        pump(engine)
        # What the old peers sent before the new relay existed was discarded, not relayed to new_b
        # (leg b's SDP peer) nor latched on: the new relay has heard nothing yet.
        assert new_b.recv_all() == [] and new_a.recv_all() == [] and old_a.recv_all() == []
        assert engine.events() == []
        figures = engine.figures("new")
        assert figures["a"].packets_received == figures["b"].packets_received == 0
        assert figures["a"].rtcp_received == 0 and figures["a"].packets_dropped == 0

        new_a.send(pa, rtp(5, 800, 0x3333, payload=b"new call"))
        pump(engine)
        got = new_b.recv_all(expect=1)
        assert [g[12:] for g in got] == [b"new call"]
        seq, ts, ssrc, _ = fields(got[0])
        # the first source keeps its numbers: nothing of the old call's stream is continued
        assert (seq, ts) == (5, 800) and ssrc != 0x1111
        new_b.send(pb, rtp(9, 1440, 0x4444, payload=b"answer"))
        pump(engine)
        got = new_a.recv_all(expect=1)
        assert [g[12:] for g in got] == [b"answer"] and fields(got[0])[2] == 0xA0A0A0A0
        events = engine.events()
        assert Latched("new", "a", HOST, new_a.port, False, False) in events
        assert Latched("new", "b", HOST, new_b.port, False, False) in events
        figures = engine.remove_relay("new")
        assert (figures["a"].packets_received, figures["a"].packets_sent) == (1, 1)
        assert (figures["b"].packets_received, figures["b"].packets_sent) == (1, 1)
        assert figures["a"].packets_lost == 0 and figures["a"].ssrc_changes == 0


def test_each_rest_of_a_pair_discards_what_reached_it(phones):
    # the pair rests, is taken, rests again: each rest is watched anew, and each relay that takes the
    # pair starts with nothing of the calls before it
    with Engine(*a_range(100)) as engine:
        pa, pb, old_a, old_b = old_call(engine, phones)
        pump(engine)
        for call in range(3):
            new_a, new_b = phones(), phones()
            engine.add_relay("new", pa, pb, {"b": {"peer": new_b.addr}})
            pump(engine)
            assert new_b.recv_all() == [] and new_a.recv_all() == [] and engine.events() == []
            payload = b"call %d" % call
            new_a.send(pa, rtp(5, 800, 0x3333, payload=payload))
            pump(engine)
            assert [g[12:] for g in new_b.recv_all(expect=1)] == [payload]
            assert Latched("new", "a", HOST, new_a.port, False, False) in engine.events()
            engine.remove_relay("new")
            assert engine.spare_count == 2
            for seq in range(6, 16):  # this call's phones go on sending to the resting pair
                new_a.send(pa, rtp(seq, seq * 160, 0x3333, payload=b"stray a"))
                new_b.send(pb, rtp(seq, seq * 160, 0x4444, payload=b"stray b"))
            pump(engine)


def test_a_spare_that_heard_nothing_is_taken_as_it_is(phones):
    with Engine(*a_range(100)) as engine:
        pa, pb = engine.add_relay("old")
        engine.remove_relay("old")
        pump(engine)
        new_a, new_b = phones(), phones()
        assert engine.add_relay("new", pa, pb, {"b": {"peer": new_b.addr}}) == (pa, pb)
        assert engine.spare_count == 0
        new_a.send(pa, rtp(5, 800, 0x3333, payload=b"new call"))
        pump(engine)
        assert [g[12:] for g in new_b.recv_all(expect=1)] == [b"new call"]


def test_spares_stay_in_the_epoll_set_and_what_is_closed_leaves_it_first():
    # A socket closed while a copy of it lives on (in a forked child: here, a dup) stays in an epoll set
    # unless it was deleted from it: every socket the engine closes must leave the set first.
    engine, epfd = new_engine(*a_range(100), spare_pairs=1)
    own = set(watched(epfd))  # the wake eventfd and the timerfd
    copies = []
    try:
        pa, _ = engine.add_relay("r")
        relay = set(watched(epfd)) - own
        assert len(relay) == 4
        copies += [os.dup(fd) for fd in relay]
        engine.remove_relay("r")
        now = watched(epfd)
        resting = set(now) - own
        # leg a's pair rests (spare_pairs=1), still in the set, one-shot and deaf to datagrams; leg b's
        # was closed and left the set
        assert len(resting) == 2 and resting < relay and engine.spare_count == 1
        assert all(now[fd] & select.EPOLLONESHOT and not now[fd] & select.EPOLLIN for fd in resting)
        engine.add_relay("s", pa)  # the spare, watched for the leg now
        engine.add_relay("t")
        now = watched(epfd)
        live = set(now) - own
        assert len(live) == 8 and resting < live and engine.spare_count == 0
        assert all(now[fd] & select.EPOLLIN and not now[fd] & select.EPOLLONESHOT for fd in live)
        copies += [os.dup(fd) for fd in live - resting]
        engine.remove_relay("t")
        assert engine.spare_count == 1 and len(set(watched(epfd)) - own) == 6
        keep = os.dup(epfd)  # the set outlives close() while a copy of its descriptor does
        copies.append(keep)
        engine.close()
        assert watched(keep) == {}  # the spare and the legs' sockets left it before they were closed
    finally:
        for fd in copies:
            os.close(fd)
        engine.close()


def test_what_reaches_a_spare_just_before_it_is_taken_is_discarded(phones):
    # the loop running in its thread: datagrams sent to a resting pair right before add_relay takes it
    # (loopback has queued them when sendto returns) never reach the new relay, RTP nor RTCP
    with Engine(*a_range(100)) as engine:
        loop = threading.Thread(target=engine.serve, args=(20,), daemon=True)
        loop.start()
        try:
            old, new_b = phones(rtcp=True), phones(rtcp=True)
            pa, pb = engine.add_relay("r", options={"b": {"peer": new_b.addr}})
            engine.remove_relay("r")
            for i in range(50):
                old.send(pa, rtp(i, i * 160, 0x1111, payload=b"stray"))
                old.send(pa + 1, b"\x80\xc8\x00\x06" + b"\x00" * 24, rtcp=True)
                engine.add_relay("r", pa, pb, {"b": {"peer": new_b.addr}})
                time.sleep(0.002)  # time for the loop to relay what it would
                engine.remove_relay("r")
            assert new_b.recv_all() == [] and new_b.recv_all(rtcp=True) == []
            assert engine.packets_forwarded == 0
        finally:
            engine.stop()
            loop.join(5)


def test_a_spare_pair_forwards_nothing_while_the_engine_runs(phones):
    with Engine(*a_range(100)) as engine:
        loop = threading.Thread(target=engine.serve, args=(20,), daemon=True)
        loop.start()
        try:
            old_a, old_b = phones(), phones()
            pa, pb = engine.add_relay("old", options={"a": {"peer": old_a.addr}, "b": {"peer": old_b.addr}})
            old_a.send(pa, rtp(1, 160, 0x1111))
            assert len(old_b.recv_all(expect=1)) == 1
            engine.remove_relay("old")
            forwarded = engine.packets_forwarded
            for seq in range(2, 50):
                old_a.send(pa, rtp(seq, seq * 160, 0x1111))
                old_b.send(pb, rtp(seq, seq * 160, 0x2222))
            time.sleep(0.1)
            assert old_a.recv_all() == [] and old_b.recv_all() == []
            assert engine.packets_forwarded == forwarded and engine.spare_count == 2

            # and the pair taken again while the loop runs carries the new call only
            new_a, new_b = phones(), phones()
            engine.add_relay("new", pa, pb, {"b": {"peer": new_b.addr}})
            new_a.send(pa, rtp(7, 1120, 0x5555, payload=b"new"))
            assert [g[12:] for g in new_b.recv_all(expect=1)] == [b"new"]
            assert old_b.recv_all() == []
        finally:
            engine.stop()
            loop.join(5)


def test_the_spares_are_capped_and_the_first_released_are_kept():
    fds = open_fds()
    low, high = a_range(200)
    with Engine(low, high, spare_pairs=3) as engine:
        ports = [engine.add_relay(i) for i in range(4)]
        engine.remove_relay(0)
        engine.remove_relay(1)  # its leg b's pair does not fit: closed
        engine.remove_relay(2)
        engine.remove_relay(3)
        assert engine.spare_count == 3
        assert open_fds() == fds + 4 + 2 * 3  # epoll, two eventfds, timerfd; two per spare
        # the pairs kept are those released first (a port allocator gives those back first)
        before = open_fds()
        engine.add_relay("again", *ports[0])
        assert engine.spare_count == 1 and open_fds() == before
        engine.add_relay("fresh", *ports[3])
        assert engine.spare_count == 1 and open_fds() == before + 4
    assert open_fds() == fds


def test_close_leaves_no_descriptor_open(phones):
    fds = open_fds()
    engine = Engine(*a_range(400))
    for i in range(20):
        engine.add_relay(i)
    for i in range(15):
        engine.remove_relay(i)
    assert engine.spare_count == 30
    engine.close()
    assert open_fds() == fds and engine.spare_count == 0


def test_no_spares_kept_with_spare_pairs_zero(phones):
    with Engine(*a_range(100), spare_pairs=0) as engine:
        fds = open_fds()
        pa, pb, old_a, old_b = old_call(engine, phones)
        assert engine.spare_count == 0 and open_fds() == fds + 4  # the old phones' sockets only
        new_a, new_b = phones(), phones()
        fds = open_fds()
        engine.add_relay("new", pa, pb, {"b": {"peer": new_b.addr}})
        assert open_fds() == fds + 4
        pump(engine)
        assert new_b.recv_all() == []  # the old packets went to closed ports
        new_a.send(pa, rtp(5, 800, 0x3333, payload=b"new call"))
        pump(engine)
        assert [g[12:] for g in new_b.recv_all(expect=1)] == [b"new call"]
        engine.remove_relay("new")
        assert open_fds() == fds


def test_out_of_descriptors_the_spares_are_given_up_for_a_new_relay():
    low, high = a_range(100)
    engine, epfd = new_engine(low, high)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    placeholders = []
    try:
        own = set(watched(epfd))
        engine.add_relay("old")
        engine.remove_relay("old")
        assert engine.spare_count == 2
        spares = set(watched(epfd)) - own
        assert len(spares) == 4
        placeholders += [os.dup(fd) for fd in spares]  # as a forked child would hold them
        inodes = {os.fstat(fd).st_ino for fd in spares}
        used = [int(fd) for fd in os.listdir("/proc/self/fd")]
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(used) + 1, hard))
        try:  # every descriptor below the limit taken: the next socket() fails with EMFILE
            while True:
                placeholders.append(os.dup(0))
        except OSError:
            pass
        pa, pb = engine.add_relay("new", low + 40, low + 42)  # new ports: four new sockets
        assert (pa, pb) == (low + 40, low + 42) and engine.spare_count == 0
        os.close(placeholders.pop())  # a descriptor to read the set's fdinfo with
        # the spares left the epoll set before they were closed (their numbers went to the new sockets)
        assert len(watched(epfd)) == len(own) + 4 and not inodes & set(watched(epfd, by_inode=True))
    finally:
        for fd in placeholders:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        engine.close()


def test_spare_pairs_must_not_be_negative():
    with pytest.raises(ValueError, match="spare_pairs"):
        Engine(*a_range(100), spare_pairs=-1)
