"""The RTP packet transforms of the media relay, in plain Python: the readable specification of what
core/_rtp.pyx does in C, and the oracle the tests hold it to (the same bytes, events and figures).

- ``parse_header``: the fixed header of RFC 3550 §5.1 (version 2, padding, extension, CSRC count,
  marker, payload type, sequence number, timestamp, SSRC) and the header validity checks of A.1.
- ``RtpReceiver``: what the relay learns from the packets arriving on one leg: reception statistics
  (``quality.ReceptionStats``: A.1 loss, A.8 jitter), a change of source (a new SSRC: an IVR prompt
  followed by an agent, a transfer), and RFC 4733 telephone-events (§2.3: event, E bit, volume,
  duration; one digit reported once, at its first end packet, the two redundant end packets of §2.5.1.4
  ignored; a digit whose end packets were all lost is reported when the next event or source starts).
- ``RtpRewriter``: what leaves one leg: one SSRC, and sequence numbers and timestamps that continue
  when the source behind them changes, so the far end sees one stream (RFC 3550 §8.2 lets a translator
  keep a source's identity; a B2BUA that re-bridges must also keep seq/ts monotonic, RFC 7667 §3.2.1.4).
  A new source continues at last_out_seq + 1 and last_out_ts + the time since the previous source's
  last packet (in timestamp units, rounded to whole packets, at least one packet), and its first packet
  carries the marker bit so the receiver resynchronises its playout.
- RTCP multiplexed on the RTP port (RFC 5761 §4: second octet 192–223) is recognised and left alone.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from core.media.quality import ReceptionStats

M16 = 0xFFFF
M32 = 0xFFFFFFFF

# receive() results
KIND_INVALID = 0
KIND_RTP = 1
KIND_RTCP = 2

# RFC 4733 §3.2: DTMF events 0-15, then flash (16).
DIGITS = "0123456789*#ABCD"


class RtpError(ValueError):
    """A datagram that is not a valid RTP packet (RFC 3550 §5.1, A.1 validity checks)."""


class RtpHeader(NamedTuple):
    version: int
    padding: bool
    extension: bool
    csrc_count: int
    marker: bool
    payload_type: int
    seq: int
    timestamp: int
    ssrc: int
    header_length: int   # fixed header + CSRCs + extension
    payload_length: int  # without the padding


# Events: the relay fills relay_id and leg; the transform classes leave them None.
class Latched(NamedTuple):
    relay_id: object
    leg: str
    host: str
    port: int
    rtcp: bool
    relatched: bool  # False: the first packets from the peer; True: moved to a new source address


class SsrcChanged(NamedTuple):
    relay_id: object
    leg: str | None
    old_ssrc: int
    new_ssrc: int


class DtmfDigit(NamedTuple):
    relay_id: object
    leg: str | None
    digit: str       # "0"-"9", "*", "#", "A"-"D", "flash"
    duration: int    # timestamp units (RFC 4733 §2.5.1.3)
    volume: int      # dBm0 below 0 (0-63)


class MediaTimeout(NamedTuple):
    relay_id: object
    leg: str
    idle_ms: int


def digit_name(code: int) -> str | None:
    if code < 16:
        return DIGITS[code]
    return "flash" if code == 16 else None


def is_rtcp(packet: bytes) -> bool:
    """RFC 5761 §4: on a port shared with RTP, a second octet of 192–223 is RTCP."""
    return len(packet) >= 2 and 192 <= packet[1] <= 223


def arrival_units(now: float, clock_rate: int) -> int:
    """The arrival time in timestamp units, modulo 2^32 (RFC 3550 A.8's ``arrival``)."""
    return int(now * clock_rate) & M32


def parse_header(packet: bytes) -> RtpHeader:
    """The RTP header of ``packet`` (RFC 3550 §5.1, §5.3.1); raises ``RtpError`` when it is not valid."""
    n = len(packet)
    if n < 12:
        raise RtpError(f"{n} bytes is shorter than the 12-byte RTP header")
    b0, b1, seq, ts, ssrc = struct.unpack_from("!BBHII", packet)
    version = b0 >> 6
    if version != 2:
        raise RtpError(f"RTP version {version}, not 2")
    cc = b0 & 0x0F
    hlen = 12 + 4 * cc
    if b0 & 0x10:
        if n < hlen + 4:
            raise RtpError("header extension cut short")
        hlen += 4 + 4 * ((packet[hlen + 2] << 8) | packet[hlen + 3])
    if hlen > n:
        raise RtpError(f"header of {hlen} bytes in a {n}-byte packet")
    pad = 0
    if b0 & 0x20:
        pad = packet[n - 1]
        if pad == 0 or hlen + pad > n:
            raise RtpError(f"padding count {pad} does not fit the packet")
    return RtpHeader(2, bool(b0 & 0x20), bool(b0 & 0x10), cc, bool(b1 & 0x80), b1 & 0x7F, seq, ts, ssrc,
                     hlen, n - hlen - pad)


class RtpReceiver:
    """The packets arriving on one leg: validity, source changes, statistics, telephone-events.

    ``receive(packet, now)`` returns KIND_RTP, KIND_RTCP (multiplexed) or KIND_INVALID; events
    (``SsrcChanged``, ``DtmfDigit``) collect until ``take_events()``."""

    def __init__(self, clock_rate: int = 8000, dtmf_pt: int | None = None):
        self.clock_rate = clock_rate
        self.dtmf_pt = -1 if dtmf_pt is None else dtmf_pt
        self.stats = ReceptionStats()
        self.ssrc = 0
        self.packets = self.bytes = self.invalid = self.rtcp = self.ssrc_changes = self.digits = 0
        self._events: list = []
        # RFC 4733 state: the event in progress is known by its RTP timestamp (§2.5.1.2)
        self._event_on = False
        self._event_reported = False
        self._event_ts = self._event_code = self._event_duration = self._event_volume = 0

    def receive(self, packet: bytes, now: float) -> int:
        if is_rtcp(packet):
            self.rtcp += 1
            return KIND_RTCP
        try:
            h = parse_header(packet)
        except RtpError:
            self.invalid += 1
            return KIND_INVALID
        self.packets += 1
        self.bytes += len(packet)
        stats = self.stats
        if not stats.sources:
            self.ssrc = h.ssrc
            stats.init_seq(h.seq)
            counted = True
        elif h.ssrc != self.ssrc:
            self._end_event()
            self._events.append(SsrcChanged(None, None, self.ssrc, h.ssrc))
            self.ssrc_changes += 1
            self.ssrc = h.ssrc
            stats.init_seq(h.seq)
            counted = True
        else:
            counted = stats.update_seq(h.seq)
        if h.payload_type == self.dtmf_pt:
            # Event packets repeat the event's start timestamp: no jitter from them (RFC 4733 §2.5.1.2).
            if h.payload_length >= 4:
                self._telephone_event(packet, h)
        elif counted:
            stats.update_jitter(h.timestamp, arrival_units(now, self.clock_rate))
        return KIND_RTP

    def _telephone_event(self, packet: bytes, h: RtpHeader) -> None:
        p = h.header_length
        code, flags, duration = packet[p], packet[p + 1], (packet[p + 2] << 8) | packet[p + 3]
        end = flags & 0x80
        if self._event_on and h.timestamp == self._event_ts:
            if self._event_reported:
                return  # a redundant end packet (§2.5.1.4) or a late one
            if duration > self._event_duration:
                self._event_duration = duration
        else:
            self._end_event()  # the previous event lost all its end packets
            self._event_on = True
            self._event_reported = False
            self._event_ts, self._event_code, self._event_duration = h.timestamp, code, duration
        self._event_volume = flags & 0x3F
        if end:
            self._report_event()

    def _end_event(self) -> None:
        if self._event_on and not self._event_reported:
            self._report_event()
        self._event_on = False

    def _report_event(self) -> None:
        self._event_reported = True
        name = digit_name(self._event_code)
        if name is not None:
            self.digits += 1
            self._events.append(DtmfDigit(None, None, name, self._event_duration, self._event_volume))

    def take_events(self) -> list:
        events, self._events = self._events, []
        return events

    def counters(self) -> dict:
        s = self.stats
        return {
            "packets_received": self.packets, "bytes_received": self.bytes,
            "packets_expected": s.expected, "packets_lost": s.lost, "jitter_q4": s.jitter_q4,
            "packets_invalid": self.invalid, "ssrc_changes": self.ssrc_changes,
            "rtcp_received": self.rtcp, "dtmf_digits": self.digits,
        }


class RtpRewriter:
    """What leaves one leg: SSRC ``ssrc``, sequence numbers and timestamps continuous across sources.

    The first source keeps its own sequence numbers and timestamps (offset 0); ``ts_step`` is one
    packet in timestamp units (clock rate × ptime), the least a new source advances the timestamp."""

    def __init__(self, ssrc: int, clock_rate: int = 8000, ts_step: int = 160):
        self.ssrc = ssrc & M32
        self.clock_rate = clock_rate
        self.ts_step = ts_step
        self.source_changes = 0
        self._has_source = False
        self._src = self._seq_off = self._ts_off = self._high_seq = self._high_ts = 0
        self._last_arrival = 0
        self._mark = False

    def rewrite(self, packet: bytes, now: float) -> bytes:
        h = parse_header(packet)
        arrival = arrival_units(now, self.clock_rate)
        if not self._has_source:
            self._has_source = True
            self._src, self._high_seq, self._high_ts = h.ssrc, h.seq, h.timestamp
        elif h.ssrc != self._src:
            step = self.ts_step
            gap = (arrival - self._last_arrival) & M32
            advance = step if gap >= 0x80000000 else max(step, (gap + step // 2) // step * step)
            last_seq = (self._high_seq + self._seq_off) & M16
            last_ts = (self._high_ts + self._ts_off) & M32
            self._seq_off = (last_seq + 1 - h.seq) & M16
            self._ts_off = (last_ts + advance - h.timestamp) & M32
            self._src, self._high_seq, self._high_ts = h.ssrc, h.seq, h.timestamp
            self._mark = True
            self.source_changes += 1
        elif 0 < ((h.seq - self._high_seq) & M16) < 0x8000:
            self._high_seq, self._high_ts = h.seq, h.timestamp
        self._last_arrival = arrival
        out = bytearray(packet)
        struct.pack_into("!HII", out, 2, (h.seq + self._seq_off) & M16, (h.timestamp + self._ts_off) & M32,
                         self.ssrc)
        if self._mark:
            out[1] |= 0x80
            self._mark = False
        return bytes(out)
