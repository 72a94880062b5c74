"""The media engine (core/_rtp.pyx Engine) with real UDP sockets on 127.0.0.1: two "phones" (plain
sockets) talk through a relay, as the caller and the agent of a bridged call do. What they receive is
checked on the wire: rewritten SSRC/seq/ts, symmetric latching (RFC 4961) and its resistance to a
stray source, RTCP on port + 1, RFC 4733 digits reported once, re-bridging (a transfer), figures, media
timeouts, and the engine running in its own thread while commands arrive."""

from __future__ import annotations

import random
import select
import socket
import struct
import threading
import time

import pytest

from core.media import Engine
from core.media.rtp import DtmfDigit, Latched, MediaTimeout, SsrcChanged
from tests.test_rtp import digit_packets, fields, rtp

pytestmark = pytest.mark.skipif(Engine is None, reason="core._rtp is not built")

HOST = "127.0.0.1"


class Phone:
    """A phone's RTP (and RTCP) socket on loopback."""

    def __init__(self, rtcp: bool = False):
        self.sock = self._bind(0)
        self.rtcp = None
        if rtcp:  # RTCP on the RTP port + 1 (RFC 3550 §11): look for a free pair
            for _ in range(50):
                self.rtcp = self._try_bind(self.port + 1)
                if self.rtcp:
                    break
                self.sock.close()
                self.sock = self._bind(0)
            assert self.rtcp, "no free port pair for the phone"

    @staticmethod
    def _bind(port):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((HOST, port))
        s.settimeout(1.0)
        return s

    def _try_bind(self, port):
        try:
            return self._bind(port)
        except OSError:
            return None

    @property
    def port(self) -> int:
        return self.sock.getsockname()[1]

    @property
    def addr(self):
        return self.sock.getsockname()

    def send(self, port, data, rtcp=False):
        (self.rtcp if rtcp else self.sock).sendto(data, (HOST, port))

    def recv_all(self, rtcp=False, wait=0.05, expect=0) -> list[bytes]:
        """What has arrived: waits up to 2 s for ``expect`` datagrams, then ``wait`` for any more."""
        s = self.rtcp if rtcp else self.sock
        out = []
        deadline = time.monotonic() + 2.0
        while len(out) < 10000:
            s.settimeout(wait if len(out) >= expect else max(0.001, deadline - time.monotonic()))
            try:
                out.append(s.recvfrom(4096)[0])
            except (socket.timeout, BlockingIOError):
                if len(out) >= expect or time.monotonic() >= deadline:
                    break
        return out

    def close(self):
        self.sock.close()
        if self.rtcp:
            self.rtcp.close()


@pytest.fixture
def engine():
    base = random.randrange(20000, 30000, 2)
    eng = Engine(base, base + 399)
    yield eng
    eng.close()


@pytest.fixture
def phones():
    made = []

    def make(rtcp=False):
        made.append(Phone(rtcp))
        return made[-1]

    yield make
    for p in made:
        p.close()


def pump(engine, rounds=3):
    """Let the engine move what the phones sent (loopback delivers at once; bounded waits)."""
    total = 0
    for _ in range(rounds):
        total += engine.run(20, 16)
    return total


def test_the_generator_of_the_ssrcs_is_siphash_2_4():
    # the reference's vector (Aumasson, Bernstein: vectors.h, 8-byte message): key 00..0f, message 00..07
    from core import _rtp

    key, message = bytes(range(16)), bytes(range(8))
    assert _rtp._siphash24(int.from_bytes(key[:8], "little"), int.from_bytes(key[8:], "little"),
                           int.from_bytes(message, "little")) == 0x93F5F5799A932462


def test_each_leg_sends_with_an_ssrc_of_its_own(engine, phones):
    # RFC 3550 §8.1: random, so that two sources hardly ever meet; here 40 legs, all different
    seen = set()
    for i in range(20):
        a, b = phones(), phones()
        pa, pb = engine.add_relay(i, options={"a": {"peer": a.addr}, "b": {"peer": b.addr}})
        a.send(pa, rtp(1, 160, 0x1111))
        b.send(pb, rtp(1, 160, 0x2222))
        pump(engine)
        seen.add(fields(b.recv_all(expect=1)[0])[2])
        seen.add(fields(a.recv_all(expect=1)[0])[2])
        engine.remove_relay(i)
    assert len(seen) == 40 and not seen & {0x1111, 0x2222}


def test_a_call_bridged_both_ways_with_latching(engine, phones):
    a, b = phones(), phones()
    pa, pb = engine.add_relay("call-1", options={"a": {"ssrc": 0xA0A0A0A0}, "b": {"ssrc": 0xB0B0B0B0}})
    assert pa != pb and pa % 2 == 0 and pb % 2 == 0

    a.send(pa, rtp(1, 160, 0x1111))  # B's address is not known yet: dropped, but A is latched
    pump(engine)
    assert b.recv_all() == []
    b.send(pb, rtp(7, 800, 0x2222, payload=b"agent"))
    pump(engine)
    got = a.recv_all(expect=1)
    assert len(got) == 1 and got[0][12:] == b"agent"
    assert fields(got[0]) == (7, 800, 0xA0A0A0A0, False)  # leaves leg a with leg a's SSRC

    a.send(pa, rtp(2, 320, 0x1111, payload=b"caller"))
    pump(engine)
    got = b.recv_all(expect=1)
    assert [g[12:] for g in got] == [b"caller"]
    assert fields(got[0])[2] == 0xB0B0B0B0

    events = engine.events()
    assert Latched("call-1", "a", HOST, a.port, False, False) in events
    assert Latched("call-1", "b", HOST, b.port, False, False) in events
    figures = engine.figures("call-1")
    assert (figures["a"].packets_received, figures["b"].packets_sent) == (2, 1)
    assert figures["a"].packets_dropped == 1  # the packet that had nowhere to go


def test_the_sdp_address_lets_media_flow_before_the_peer_speaks(engine, phones):
    a, b = phones(), phones()
    pa, pb = engine.add_relay("call", options={"b": {"peer": b.addr}})
    a.send(pa, rtp(1, 160, 0x1111))
    pump(engine)
    assert len(b.recv_all(expect=1)) == 1


def test_a_phone_behind_nat_replaces_the_sdp_address_with_its_first_packet(engine, phones):
    a, b = phones(), phones()
    pa, pb = engine.add_relay("call", options={"a": {"peer": (HOST, 9)}})  # the SDP's private address
    b.send(pb, rtp(1, 160, 0x2222))
    pump(engine)
    a.send(pa, rtp(1, 160, 0x1111))  # the real source: latched at once, nothing was heard from the SDP's
    pump(engine)
    b.send(pb, rtp(2, 320, 0x2222))
    pump(engine)
    assert len(a.recv_all(expect=1)) == 1
    assert Latched("call", "a", HOST, a.port, False, False) in engine.events()


def test_a_stray_source_is_dropped_until_it_sends_n_packets_in_a_row(engine, phones):
    a, b, stray = phones(), phones(), phones()
    pa, pb = engine.add_relay("call", options={"relatch_after": 3, "b": {"peer": b.addr}})
    a.send(pa, rtp(1, 160, 0x1111, payload=b"real"))
    pump(engine)
    engine.events()
    # interleaved with the real phone, the stray never takes over
    for k in range(4):
        stray.send(pa, rtp(100 + k, 0, 0x6666, payload=b"fake"))
        a.send(pa, rtp(2 + k, 320, 0x1111, payload=b"real"))
        pump(engine, 1)
    assert [g[12:] for g in b.recv_all(expect=5)] == [b"real"] * 5
    assert not [e for e in engine.events() if isinstance(e, Latched)]
    # three in a row: the leg moves (a phone whose NAT binding changed)
    for k in range(3):
        stray.send(pa, rtp(200 + k, 0, 0x7777, payload=b"moved"))
    pump(engine)
    assert [g[12:] for g in b.recv_all(expect=1)] == [b"moved"]  # the third one
    assert Latched("call", "a", HOST, stray.port, False, True) in engine.events()
    assert engine.figures("call")["a"].packets_dropped == 4 + 2
    b.send(pb, rtp(1, 160, 0x2222))
    pump(engine)
    assert len(stray.recv_all(expect=1)) == 1 and a.recv_all() == []  # the answer goes to the new source


def test_prompt_then_agent_the_caller_sees_one_continuous_stream(engine, phones):
    caller, switch_side = phones(), phones()
    pa, pb = engine.add_relay("call", options={"a": {"peer": caller.addr, "ssrc": 0x5EED}})
    for k in range(10):  # the IVR prompt, SSRC 0x1111
        switch_side.send(pb, rtp(3000 + k, 80000 + 160 * k, 0x1111))
    pump(engine)
    for k in range(5):  # then the agent, SSRC 0x2222, unrelated numbers
        switch_side.send(pb, rtp(50 + k, 7 + 160 * k, 0x2222))
    pump(engine)
    got = [fields(p) for p in caller.recv_all(expect=15)]
    assert [g[0] for g in got] == list(range(3000, 3015))
    assert {g[2] for g in got} == {0x5EED}
    assert [g[3] for g in got] == [False] * 10 + [True] + [False] * 4
    ts = [g[1] for g in got]
    assert ts[:10] == [80000 + 160 * k for k in range(10)]
    assert all(ts[k + 1] - ts[k] == 160 for k in range(10, 14))
    assert ts[10] - ts[9] >= 160  # at least one packet later (more if time passed between them)
    assert SsrcChanged("call", "b", 0x1111, 0x2222) in engine.events()


def test_rewrite_off_passes_packets_untouched(engine, phones):
    a, b = phones(), phones()
    pa, _ = engine.add_relay("call", options={"rewrite": False, "b": {"peer": b.addr}})
    sent = [rtp(10, 1600, 0x1111), rtp(11, 1760, 0x1111), rtp(5, 5, 0x2222)]
    for p in sent:
        a.send(pa, p)
    pump(engine)
    assert b.recv_all(expect=3) == sent


def test_transfer_rebridges_the_caller_to_another_agent(engine, phones):
    caller, agent1, agent2, other = phones(), phones(), phones(), phones()
    c_port, a1_port = engine.add_relay("r1", options={"a": {"peer": caller.addr, "ssrc": 0xC0C0},
                                                       "b": {"peer": agent1.addr}})
    o_port, a2_port = engine.add_relay("r2", options={"a": {"peer": other.addr}, "b": {"peer": agent2.addr}})
    for k in range(5):
        agent1.send(a1_port, rtp(100 + k, 160 * k, 0xA1A1))
    pump(engine)
    before = [fields(p) for p in caller.recv_all(expect=5)]
    assert len(before) == 5

    engine.patch_relay("r1", {"a": {"bridge": ("r2", "b")}})  # blind transfer: caller ↔ agent 2
    for k in range(5):
        agent2.send(a2_port, rtp(9000 + k, 77777 + 160 * k, 0xA2A2))
    agent1.send(a1_port, rtp(105, 800, 0xA1A1))  # agent 1 is unbridged now: dropped
    caller.send(c_port, rtp(1, 160, 0xCA11, payload=b"hello agent 2"))
    pump(engine)
    after = [fields(p) for p in caller.recv_all(expect=5)]
    assert [f[0] for f in after] == [105, 106, 107, 108, 109]  # agent 2's audio continues the caller's stream
    assert {f[2] for f in after} == {0xC0C0}
    assert [p[12:] for p in agent2.recv_all(expect=1)] == [b"hello agent 2"]
    assert agent1.recv_all() == [] and other.recv_all() == []
    assert engine.figures("r1")["b"].packets_dropped == 1

    engine.patch_relay("r1", {"a": {"bridge": None}})  # hold: nothing reaches the caller
    agent2.send(a2_port, rtp(9005, 0, 0xA2A2))
    pump(engine)
    assert caller.recv_all() == []


def test_rtcp_passes_on_port_plus_one(engine, phones):
    a, b = phones(rtcp=True), phones(rtcp=True)
    pa, pb = engine.add_relay("call", options={"b": {"peer": b.addr}})
    sr = struct.pack("!BBHI", 0x80, 200, 6, 0x1111) + bytes(20)
    a.send(pa + 1, sr, rtcp=True)  # B's RTCP was never heard: sent to B's RTP port + 1
    pump(engine)
    assert b.recv_all(rtcp=True, expect=1) == [sr]
    rr = struct.pack("!BBHI", 0x81, 201, 7, 0x2222) + bytes(24)
    b.send(pb + 1, rr, rtcp=True)
    pump(engine)
    assert a.recv_all(rtcp=True, expect=1) == [rr]  # latched from A's RTCP source
    f = engine.figures("call")
    assert (f["a"].rtcp_received, f["b"].rtcp_sent, f["a"].rtcp_sent) == (1, 1, 1)
    assert Latched("call", "a", HOST, a.rtcp.getsockname()[1], True, False) in engine.events()


def test_digits_are_reported_once_and_still_reach_the_other_side(engine, phones):
    caller, ivr = phones(), phones()
    pa, pb = engine.add_relay("call", options={"a": {"dtmf_pt": 101}, "b": {"peer": ivr.addr}})
    packets = digit_packets(1, 0, 0x1111, code=1) + digit_packets(20, 3200, 0x1111, code=11)
    for p in packets:
        caller.send(pa, p)
    pump(engine)
    digits = [e for e in engine.events() if isinstance(e, DtmfDigit)]
    assert digits == [DtmfDigit("call", "a", "1", 800, 10), DtmfDigit("call", "a", "#", 800, 10)]
    assert len(ivr.recv_all(expect=len(packets))) == len(packets)
    assert engine.figures("call")["a"].dtmf_digits == 2


def test_a_removed_relays_last_events_still_name_it(engine, phones):
    caller, ivr = phones(), phones()
    pa, _ = engine.add_relay("call", options={"a": {"dtmf_pt": 101}, "b": {"peer": ivr.addr}})
    for p in digit_packets(1, 0, 0x1111, code=5):
        caller.send(pa, p)
    pump(engine)
    assert engine.events_waiting
    engine.remove_relay("call")
    engine.add_relay("quiet")
    engine.remove_relay("quiet")  # nothing queued for it
    events = engine.events()
    assert DtmfDigit("call", "a", "5", 800, 10) in events
    assert {e.relay_id for e in events} == {"call"}
    assert engine.events_waiting == 0


def test_figures_of_a_lossy_leg(engine, phones):
    a, b = phones(), phones()
    pa, _ = engine.add_relay("call", options={"b": {"peer": b.addr}})
    for k in range(100):
        if k % 20 != 7:  # 5 of 100 lost
            a.send(pa, rtp(60000 + k, 160 * k, 0x1111))
    pump(engine, 5)
    assert len(b.recv_all(expect=95)) == 95
    final = engine.remove_relay("call")
    fa = final["a"]
    assert (fa.packets_received, fa.packets_expected, fa.packets_lost) == (95, 100, 5)
    assert fa.loss_percent == pytest.approx(5.0)
    assert fa.bytes_received == 95 * 172
    assert final["b"].packets_sent == 95 and final["b"].bytes_sent == 95 * 172
    assert 1.0 < fa.mos < 4.0  # 5% loss on G.711 costs about a point of MOS
    with pytest.raises(KeyError):
        engine.figures("call")


@pytest.mark.parametrize("options", [{}, {"a": {"codec": "G729", "ptime_ms": 30, "one_way_delay_ms": 40.0}}])
def test_the_engine_figures_are_those_of_leg_figures(engine, phones, options):
    """The engine makes a leg's figures from its C counters; core.media.quality.leg_figures makes them
    from a counters dict: both the same, for a leg with loss and jitter and for a leg that carried none."""
    import msgspec
    from core.media.quality import leg_figures

    a, b = phones(), phones()
    pa, _ = engine.add_relay("call", options={**options, "b": {"peer": b.addr}})
    for k in range(60):
        if k % 13 != 5:
            a.send(pa, rtp(100 + k, 160 * k + (k % 3) * 40, 0x1111))  # lost packets, uneven timestamps
            pump(engine, 1)
    final = engine.remove_relay("call")
    meta = {"codec": "PCMU", "ptime_ms": 20, "one_way_delay_ms": 0.0, **options.get("a", {})}
    for w, expect_packets in (("a", True), ("b", False)):
        f = final[w]
        assert (f.packets_received > 0) == expect_packets
        counters = msgspec.structs.asdict(f)
        counters["jitter_q4"] = round(f.jitter_ms * 8000 * 16 / 1000)
        assert leg_figures(counters, clock_rate=8000, **(meta if w == "a" else {})) == f


def test_a_silent_leg_raises_one_timeout(engine, phones):
    a, b = phones(), phones()
    pa, _ = engine.add_relay("call", options={"timeout_ms": 150, "b": {"peer": b.addr}})
    a.send(pa, rtp(1, 160, 0x1111))
    deadline = time.monotonic() + 2.0
    timeouts = []
    while time.monotonic() < deadline and len(timeouts) < 2:
        engine.run(50, 1)
        timeouts += [e for e in engine.events() if isinstance(e, MediaTimeout)]
    assert sorted(e.leg for e in timeouts) == ["a", "b"]
    assert all(e.idle_ms >= 150 for e in timeouts)
    for _ in range(4):
        engine.run(50, 1)
    assert not [e for e in engine.events() if isinstance(e, MediaTimeout)]  # once per silence


def test_commands_refuse_what_they_cannot_do(engine):
    engine.add_relay("r")
    with pytest.raises(ValueError, match="exists"):
        engine.add_relay("r")
    with pytest.raises(ValueError, match="unknown relay option 'colour'"):
        engine.add_relay("s", options={"colour": 1})
    with pytest.raises(ValueError, match="per leg"):
        engine.add_relay("s", options={"peer": (HOST, 4000)})
    with pytest.raises(KeyError):
        engine.patch_relay("nope", {})
    with pytest.raises(ValueError, match="even"):
        engine.add_relay("s", port_a=3)
    assert engine.relay_ids() == ["r"]


def test_a_removed_relay_frees_its_ports_when_no_spares_are_kept():
    base = random.randrange(20000, 30000, 2)
    with Engine(base, base + 399, spare_pairs=0) as engine:
        pa, pb = engine.add_relay("r")
        engine.remove_relay("r")
        assert engine.spare_count == 0
        for port in (pa, pa + 1, pb, pb + 1):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((HOST, port))  # would fail if the engine still held it
            s.close()
        assert engine.add_relay("r2", port_a=pa, port_b=pb) == (pa, pb)


def test_a_relay_that_cannot_be_added_leaves_its_first_port_free():
    base = random.randrange(20000, 59900, 2)
    blocker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    blocker.bind((HOST, base + 2))  # someone else holds leg b's port
    try:
        with Engine(base, base + 99) as engine:
            with pytest.raises(OSError):
                engine.add_relay("x", port_a=base, port_b=base + 2)
            assert engine.add_relay("y", port_a=base, port_b=base + 4) == (base, base + 4)
    finally:
        blocker.close()


def test_malformed_datagrams_are_counted_and_not_forwarded(engine, phones):
    a, b = phones(), phones()
    pa, _ = engine.add_relay("call", options={"b": {"peer": b.addr}})
    a.send(pa, b"\x40" + bytes(40))  # RTP version 1
    a.send(pa, b"\x80\x00")
    a.send(pa, rtp(1, 160, 1))
    pump(engine)
    assert len(b.recv_all(expect=1)) == 1
    f = engine.figures("call")["a"]
    assert (f.packets_invalid, f.packets_received) == (2, 1)


def test_the_engine_runs_in_its_own_thread_and_stops_on_command(engine, phones):
    a, b = phones(), phones()
    thread = threading.Thread(target=engine.serve, kwargs={"timeout_ms": 50}, daemon=True)
    thread.start()
    try:
        pa, pb = engine.add_relay("call", options={"a": {"dtmf_pt": 101}, "b": {"peer": b.addr}})
        for k in range(50):
            a.send(pa, rtp(k, 160 * k, 0x1111))
        for p in digit_packets(50, 8000, 0x1111, code=9):
            a.send(pa, p)
        got = []
        deadline = time.monotonic() + 3.0
        while len(got) < 58 and time.monotonic() < deadline:
            got += b.recv_all(wait=0.1, expect=58 - len(got))
        assert len(got) == 58
        # the events wake a reader through event_fd (what an asyncio loop's add_reader would watch)
        events = []
        while not any(isinstance(e, DtmfDigit) for e in events) and time.monotonic() < deadline:
            readable, _, _ = select.select([engine.event_fd], [], [], 0.5)
            if readable:
                events += engine.events()
        assert DtmfDigit("call", "a", "9", 800, 10) in events
        assert engine.remove_relay("call")["a"].packets_received == 58
    finally:
        engine.stop()
        thread.join(2.0)
    assert not thread.is_alive()
    assert engine.stopped


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_engine_relays_a_generated_stream_as_the_reference_specifies(engine, phones, seed):
    # The packet loop must use the transforms exactly as core/media/rtp.py does: the same counters for
    # what arrived (jitter aside: the arrival times are the engine's own), the same digits, and, for the
    # first source (whose rewrite does not depend on time), the same bytes out.
    from core.media import rtp as reference
    from tests.test_rtp import generated_stream

    a, b = phones(), phones()
    pa, _ = engine.add_relay("call", options={"a": {"dtmf_pt": 101}, "b": {"peer": b.addr, "ssrc": 0xFACE}})
    stream = generated_stream(seed)
    rx, w = reference.RtpReceiver(dtmf_pt=101), reference.RtpRewriter(0xFACE)
    expected_out, first_ssrc, kinds = [], None, []
    for packet, now in stream:
        kinds.append(rx.receive(packet, now))
        if kinds[-1] == reference.KIND_RTP:
            h = reference.parse_header(packet)
            first_ssrc = h.ssrc if first_ssrc is None else first_ssrc
            expected_out.append((w.rewrite(packet, now), h.ssrc == first_ssrc and w.source_changes == 0))
    got = []
    for start in range(0, len(stream), 100):  # within the sockets' buffers
        for packet, _ in stream[start:start + 100]:
            a.send(pa, packet)
        pump(engine, 2)
        got += b.recv_all(wait=0.02, expect=kinds[start:start + 100].count(reference.KIND_RTP))
    assert len(got) == len(expected_out)
    for out, (ref, comparable) in zip(got, expected_out):
        if comparable:
            assert out == ref
        else:  # later sources: same SSRC and payload, seq continuing (checked in the transform tests)
            assert out[8:12] == ref[8:12] and out[12:] == ref[12:]
    counters = rx.counters()
    f = engine.figures("call")["a"]
    assert (f.packets_received, f.packets_expected, f.packets_lost, f.packets_invalid, f.ssrc_changes,
            f.dtmf_digits) == (counters["packets_received"], counters["packets_expected"], counters["packets_lost"],
                               counters["packets_invalid"], counters["ssrc_changes"], counters["dtmf_digits"])
    digits = [e.digit for e in engine.events() if isinstance(e, DtmfDigit)]
    assert digits == [e.digit for e in rx.take_events() if isinstance(e, DtmfDigit)]


def test_a_datagram_that_is_not_rtp_does_not_latch_the_leg(engine, phones):
    a, b, noise = phones(), phones(), phones()
    pa, pb = engine.add_relay("call", options={"b": {"peer": b.addr}})
    noise.send(pa, b"GET / HTTP/1.0\r\n\r\n")  # a scanner's datagram first
    a.send(pa, rtp(1, 160, 0x1111))
    pump(engine)
    assert len(b.recv_all(expect=1)) == 1
    b.send(pb, rtp(1, 160, 0x2222))
    pump(engine)
    assert len(a.recv_all(expect=1)) == 1 and noise.recv_all() == []
