"""The RTP packet transforms (core/media/rtp.py and its C twin core/_rtp.pyx): RFC 3550 §5.1 headers,
A.1 loss and A.8 jitter of what arrives on a leg, RFC 4733 digits, and the SSRC/seq/ts rewrite that keeps
the stream leaving a leg continuous when its source changes. Every behaviour test runs on both
implementations; the differential tests feed both the same generated streams (loss, reordering,
duplicates, SSRC changes, sequence and timestamp wrap) and require the same bytes, events and figures."""

from __future__ import annotations

import random
import struct

import pytest

from core.media import IMPLEMENTATIONS
from core.media.rtp import KIND_INVALID, KIND_RTCP, KIND_RTP, DtmfDigit, RtpError, SsrcChanged

IMPLS = [pytest.param(name, marks=pytest.mark.skipif(impl is None, reason="core._rtp is not built"))
         for name, impl in IMPLEMENTATIONS.items()]


@pytest.fixture(params=IMPLS)
def impl(request):
    return IMPLEMENTATIONS[request.param]


def rtp(seq, ts, ssrc, pt=0, marker=False, payload=b"\xff" * 160, csrcs=(), ext=None, pad=0):
    """One RTP packet (RFC 3550 §5.1); ``ext`` is the extension's list of 32-bit words."""
    b0 = 0x80 | (0x20 if pad else 0) | (0x10 if ext is not None else 0) | len(csrcs)
    out = struct.pack("!BBHII", b0, (0x80 if marker else 0) | pt, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc)
    out += b"".join(struct.pack("!I", c) for c in csrcs)
    if ext is not None:
        out += struct.pack("!HH", 0xBEDE, len(ext)) + b"".join(struct.pack("!I", w) for w in ext)
    out += payload
    if pad:
        out += b"\x00" * (pad - 1) + bytes([pad])
    return out


def event(seq, ts, ssrc, code, duration, end=False, volume=10, pt=101, marker=False):
    """An RFC 4733 §2.3 telephone-event packet."""
    return rtp(seq, ts, ssrc, pt=pt, marker=marker,
               payload=struct.pack("!BBH", code, (0x80 if end else 0) | volume, duration))


def digit_packets(seq, ts, ssrc, code, pt=101, steps=5, step=160):
    """A digit as a phone sends it (RFC 4733 §2.5.1): a marked start, updates, three end packets."""
    packets = [event(seq, ts, ssrc, code, step, marker=True, pt=pt)]
    for k in range(2, steps + 1):
        packets.append(event(seq + k - 1, ts, ssrc, code, step * k, pt=pt))
    for k in range(3):
        packets.append(event(seq + steps + k, ts, ssrc, code, step * steps, end=True, pt=pt))
    return packets


# --- the header ------------------------------------------------------------------------------------

def test_parse_reads_every_field_of_the_fixed_header(impl):
    h = impl.parse_header(rtp(0xBEEF, 0xDEADBEEF, 0x12345678, pt=8, marker=True, csrcs=(1, 2),
                              ext=[7, 8, 9], pad=4))
    assert (h.version, h.padding, h.extension, h.csrc_count, h.marker) == (2, True, True, 2, True)
    assert (h.payload_type, h.seq, h.timestamp, h.ssrc) == (8, 0xBEEF, 0xDEADBEEF, 0x12345678)
    assert h.header_length == 12 + 8 + 4 + 12
    assert h.payload_length == 160


@pytest.mark.parametrize("packet, why", [
    (b"\x80\x00\x00\x01", "shorter than the 12-byte header"),
    (bytes([0x40]) + bytes(171), "version 1"),
    (bytes([0x83]) + bytes(15), "3 CSRCs announced, 1 present"),
    (bytes([0x90]) + bytes(13), "extension header cut"),
    (bytes([0x90]) + bytes(11) + b"\xbe\xde\x00\x09" + bytes(8), "extension longer than the packet"),
    (bytes([0xA0]) + bytes(11) + b"\x01\x02\x00", "padding count 0"),
    (bytes([0xA0]) + bytes(11) + b"\x01\x02\x09", "padding past the header"),
])
def test_parse_refuses_what_is_not_rtp(impl, packet, why):
    with pytest.raises(RtpError):
        impl.parse_header(packet)


def test_receiver_counts_invalid_packets_and_lets_muxed_rtcp_by(impl):
    rx = impl.RtpReceiver()
    assert rx.receive(bytes([0x40]) + bytes(171), 0.0) == KIND_INVALID
    rr = struct.pack("!BBHI", 0x80, 201, 1, 0x1234)  # an RTCP RR on the RTP port (RFC 5761 §4)
    assert rx.receive(rr, 0.0) == KIND_RTCP
    assert rx.receive(rtp(1, 160, 7), 0.0) == KIND_RTP
    c = rx.counters()
    assert (c["packets_invalid"], c["rtcp_received"], c["packets_received"]) == (1, 1, 1)


# --- loss and jitter (RFC 3550 A.1, A.8) -----------------------------------------------------------

def feed(rx, packets, times):
    for packet, now in zip(packets, times):
        rx.receive(packet, now)


def test_loss_is_expected_minus_received_across_the_sequence_wrap(impl):
    rx = impl.RtpReceiver()
    seqs = [(65500 + k) & 0xFFFF for k in range(100)]  # crosses 65535 → 0
    dropped = {3, 40, 41, 70}
    feed(rx, [rtp(s, 160 * k, 9) for k, s in enumerate(seqs) if k not in dropped],
         [0.02 * k for k in range(100) if k not in dropped])
    c = rx.counters()
    assert c["packets_expected"] == 100
    assert c["packets_lost"] == 4
    assert c["packets_received"] == 96


def test_reordering_is_not_loss_and_duplicates_make_loss_negative(impl):
    rx = impl.RtpReceiver()
    order = [0]  # the first packet sets the base (A.1: what comes before it is not expected)
    for k in range(1, 49, 2):
        order += [k + 1, k]  # every pair after it swapped
    order += [49, 10, 11]  # and two duplicates
    feed(rx, [rtp(1000 + k, 160 * k, 9) for k in order], [0.02 * i for i in range(len(order))])
    c = rx.counters()
    assert c["packets_expected"] == 50
    assert c["packets_lost"] == -2


def test_a_big_jump_seen_twice_restarts_the_count(impl):
    # RFC 3550 A.1: one packet far ahead is ignored; a second in sequence after it is a restart.
    rx = impl.RtpReceiver()
    packets = [rtp(100 + k, 160 * k, 9) for k in range(10)]
    packets += [rtp(30000, 99999, 9), rtp(30001, 100159, 9), rtp(30002, 100319, 9)]
    feed(rx, packets, [0.02 * k for k in range(len(packets))])
    c = rx.counters()
    assert c["packets_received"] == 13
    # first run 100..109 (10 of 10), second run starts at 30001 (2 of 2); 30000 never counted
    assert c["packets_expected"] == 12
    assert c["packets_lost"] == 0


def test_jitter_follows_the_variation_of_transit_time(impl):
    # Packets sent every 20 ms arrive alternately 0 and 5 ms late: |D| is 5 ms = 40 timestamp units
    # every time, and J → |D| (RFC 3550 A.8: J += (|D| − J)/16).
    rx = impl.RtpReceiver()
    n = 600
    feed(rx, [rtp(k, 160 * k, 9) for k in range(n)], [0.02 * k + (0.005 if k % 2 else 0.0) for k in range(n)])
    c = rx.counters()
    assert abs((c["jitter_q4"] >> 4) - 40) <= 1
    steady = impl.RtpReceiver()
    feed(steady, [rtp(k, 160 * k, 9) for k in range(n)], [100.0 + 0.02 * k for k in range(n)])
    assert steady.counters()["jitter_q4"] >> 4 <= 1  # float rounding of the arrival times only


def test_a_new_ssrc_is_reported_once_and_loss_spans_both_sources(impl):
    rx = impl.RtpReceiver()
    first = [rtp(500 + k, 160 * k, 0xAAAA) for k in range(50) if k not in (10, 20)]
    second = [rtp(9000 + k, 777 + 160 * k, 0xBBBB) for k in range(50) if k not in (5, 6, 7)]
    feed(rx, first + second, [0.02 * k for k in range(len(first) + len(second))])
    assert rx.take_events() == [SsrcChanged(None, None, 0xAAAA, 0xBBBB)]
    c = rx.counters()
    assert (c["packets_expected"], c["packets_lost"], c["ssrc_changes"]) == (100, 5, 1)


# --- RFC 4733 telephone-events ---------------------------------------------------------------------

def test_a_digit_is_reported_once_at_its_end_packet(impl):
    rx = impl.RtpReceiver(dtmf_pt=101)
    packets = digit_packets(10, 8000, 5, code=5, steps=6)
    for i, packet in enumerate(packets):
        rx.receive(packet, 0.02 * i)
        if i < 6:
            assert rx.take_events() == [], "reported before its end packet"
        if i == 6:
            assert rx.take_events() == [DtmfDigit(None, None, "5", 960, 10)]
    assert rx.take_events() == []  # the two redundant end packets say nothing new
    assert rx.counters()["dtmf_digits"] == 1


def test_digits_in_a_row_and_the_special_keys(impl):
    rx = impl.RtpReceiver(dtmf_pt=96)
    packets, seq, ts = [], 1, 0
    for code in (1, 10, 11, 12, 16):
        packets += digit_packets(seq, ts, 5, code, pt=96, steps=3)
        seq += 6
        ts += 1600
    feed(rx, packets, [0.02 * i for i in range(len(packets))])
    assert [e.digit for e in rx.take_events()] == ["1", "*", "#", "A", "flash"]


def test_a_digit_whose_end_packets_were_lost_is_reported_when_the_next_starts(impl):
    rx = impl.RtpReceiver(dtmf_pt=101)
    first = digit_packets(1, 0, 5, code=7, steps=4)[:4]  # all three end packets lost
    second = digit_packets(9, 3200, 5, code=8, steps=4)
    feed(rx, first + second, [0.02 * i for i in range(12)])
    assert [(e.digit, e.duration) for e in rx.take_events()] == [("7", 640), ("8", 640)]


def test_events_on_another_payload_type_and_non_digit_events_are_not_digits(impl):
    rx = impl.RtpReceiver(dtmf_pt=101)
    feed(rx, digit_packets(1, 0, 5, code=3, pt=100) + digit_packets(20, 4000, 5, code=32),
         [0.02 * i for i in range(16)])
    assert rx.take_events() == []
    assert impl.RtpReceiver().receive(digit_packets(1, 0, 5, code=3)[0], 0.0) == KIND_RTP  # no PT: plain RTP


# --- rewriting what leaves a leg ------------------------------------------------------------------

def fields(packet):
    b1, seq, ts, ssrc = struct.unpack_from("!xBHII", packet)
    return seq, ts, ssrc, bool(b1 & 0x80)


def test_the_first_source_keeps_its_numbers_under_the_legs_ssrc(impl):
    w = impl.RtpRewriter(0xCAFE0001)
    out = w.rewrite(rtp(4242, 123456, 0x1111, payload=b"voice"), 1.0)
    assert fields(out) == (4242, 123456, 0xCAFE0001, False)
    assert out[12:] == b"voice"


def test_a_new_source_continues_the_stream_the_far_end_sees(impl):
    # IVR prompt (SSRC 0x1111) for 10 packets, then the agent (0x2222) 20 ms after the prompt's last
    # packet: the far end sees seq last+1, timestamp last+160, the marker bit, and one SSRC.
    w = impl.RtpRewriter(0xCAFE0001, ts_step=160)
    for k in range(10):
        last = fields(w.rewrite(rtp(100 + k, 5000 + 160 * k, 0x1111), 1.0 + 0.02 * k))
    first_agent = fields(w.rewrite(rtp(31000, 999999, 0x2222), 1.0 + 0.02 * 10))
    assert first_agent == ((last[0] + 1) & 0xFFFF, last[1] + 160, 0xCAFE0001, True)
    second_agent = fields(w.rewrite(rtp(31001, 999999 + 160, 0x2222), 1.0 + 0.02 * 11))
    assert second_agent == (last[0] + 2, last[1] + 320, 0xCAFE0001, False)
    assert w.source_changes == 1


def test_after_a_silence_the_timestamp_advances_by_the_time_that_passed(impl):
    # Transfer: the agent's audio starts 2 s after the last prompt packet: 2 s = 16000 units at 8 kHz.
    w = impl.RtpRewriter(7, clock_rate=8000, ts_step=160)
    last = fields(w.rewrite(rtp(65535, 0xFFFFFF00, 0x1111), 10.0))  # seq and timestamp about to wrap
    out = fields(w.rewrite(rtp(5, 40, 0x2222), 12.0))
    assert out[:2] == (0, (0xFFFFFF00 + 16000) & 0xFFFFFFFF)


def test_a_late_packet_of_the_source_keeps_its_place(impl):
    # Reordering inside one source: the continuation after a change is counted from the highest seq.
    w = impl.RtpRewriter(7)
    for seq in (10, 12, 11):
        w.rewrite(rtp(seq, 160 * seq, 0x1111), 0.02 * seq)
    out = fields(w.rewrite(rtp(500, 0, 0x2222), 0.02 * 13))
    assert out[0] == 13


# --- the two implementations agree ----------------------------------------------------------------

def generated_stream(seed: int) -> list[tuple[bytes, float]]:
    """A leg's incoming packets with what networks and call flows do to them: loss, reordering,
    duplicates, jittered arrival, sources that change (prompt → agent → transfer), sequence numbers and
    timestamps that wrap, digits, and a few datagrams that are not RTP."""
    rnd = random.Random(seed)
    out = []
    now = rnd.uniform(0, 5000)
    for _ in range(rnd.randint(1, 4)):  # sources
        ssrc = rnd.getrandbits(32)
        seq = rnd.choice([rnd.getrandbits(16), 65535 - rnd.randint(0, 40)])
        ts = rnd.choice([rnd.getrandbits(32), 0xFFFFFFFF - rnd.randint(0, 4000)])
        now += rnd.choice([0.0, 0.02, rnd.uniform(0, 3)])
        pending = []
        for k in range(rnd.randint(20, 300)):
            if rnd.random() < 0.04:
                code = rnd.randint(0, 17)
                for p in digit_packets(seq, ts, ssrc, code, steps=rnd.randint(1, 6)):
                    if rnd.random() > 0.2:
                        pending.append(p)
                    seq += 1
                ts += 160 * 7
            packet = rtp(seq, ts, ssrc, marker=k == 0)
            seq += 1
            ts += 160
            roll = rnd.random()
            if roll < 0.05:
                continue  # lost
            pending.append(packet)
            if roll < 0.08:
                pending.append(packet)  # duplicated
            if roll > 0.97:
                pending.append(bytes([0x40]) + bytes(20))  # not RTP
            if roll > 0.99:
                seq += rnd.randint(3000, 40000)  # the sender jumps
        # reorder a little
        for i in range(len(pending) - 1):
            if rnd.random() < 0.05:
                pending[i], pending[i + 1] = pending[i + 1], pending[i]
        for p in pending:
            now += 0.02 + rnd.gauss(0, 0.004)
            out.append((p, now))
    return out


@pytest.mark.skipif(IMPLEMENTATIONS["c"] is None, reason="core._rtp is not built")
@pytest.mark.parametrize("seed", range(60))
def test_cython_and_python_receivers_agree(seed):
    py, c = IMPLEMENTATIONS["py"], IMPLEMENTATIONS["c"]
    rx_py, rx_c = py.RtpReceiver(dtmf_pt=101), c.RtpReceiver(dtmf_pt=101)
    for packet, now in generated_stream(seed):
        assert rx_py.receive(packet, now) == rx_c.receive(packet, now)
        assert rx_py.take_events() == rx_c.take_events()
    assert rx_py.counters() == rx_c.counters()
    assert rx_py.counters()["packets_received"] > 0


@pytest.mark.skipif(IMPLEMENTATIONS["c"] is None, reason="core._rtp is not built")
@pytest.mark.parametrize("seed", range(60))
def test_cython_and_python_rewriters_give_the_same_bytes(seed):
    py, c = IMPLEMENTATIONS["py"], IMPLEMENTATIONS["c"]
    ssrc = random.Random(seed).getrandbits(32)
    w_py, w_c = py.RtpRewriter(ssrc, ts_step=160), c.RtpRewriter(ssrc, ts_step=160)
    changes = 0
    for packet, now in generated_stream(seed):
        try:
            py.parse_header(packet)
        except RtpError:
            with pytest.raises(RtpError):
                c.parse_header(packet)
            continue
        assert w_py.rewrite(packet, now) == w_c.rewrite(packet, now)
        changes = w_py.source_changes
    assert w_c.source_changes == changes


def test_the_rewritten_stream_has_one_ssrc_and_no_seq_gap_at_a_source_change():
    # Whatever the sources did, what leaves the leg changes SSRC never and seq by +1 at each change.
    for seed in range(20):
        w = IMPLEMENTATIONS["py"].RtpRewriter(0xFEED)
        prev = None
        for packet, now in generated_stream(seed):
            try:
                before = IMPLEMENTATIONS["py"].parse_header(packet)
            except RtpError:
                continue
            changed = prev is not None and before.ssrc != prev
            seq, _, ssrc, marker = fields(w.rewrite(packet, now))
            assert ssrc == 0xFEED
            if changed:
                assert seq == (high + 1) & 0xFFFF and marker
                high = seq
            elif prev is None or 0 < ((seq - high) & 0xFFFF) < 0x8000:
                high = seq
            prev = before.ssrc
