"""The media engine: an RTP/RTCP relay that owns its UDP sockets and moves packets in C without the GIL.

This is the one part of ``core`` that does I/O (docs: DESIGN.md, "the exception that proves the rule"):
to come near the kernel's packet rate the loop batches system calls, ``epoll_wait`` then one
``recvmmsg`` per ready socket and one ``sendmmsg`` to the bridged leg, and touches no Python object
per packet. Signalling drives it only by commands (``add_relay``, ``patch_relay``, ``remove_relay``,
``stop``) and reads what happened from ``events()``; the commands and the loop share a mutex, so the
loop may run in its own thread (``serve()``, or ``run()`` in a loop) while the call layer commands it.

Per packet, the loop does what core/media/rtp.py specifies in Python (the tests hold both to the same
bytes, events and figures): RFC 3550 §5.1 header checks, A.1 loss and A.8 jitter of what arrives on a
leg, RFC 4733 digits, and the SSRC/sequence/timestamp rewrite of what leaves a leg, so that the far
end sees one continuous stream when the source behind it changes. Around it, the relay:

- symmetric RTP latching (RFC 4961: each leg sends to where its peer sends from): a leg learns its
  peer from the first packet, or starts from the SDP's address and takes the first source that sends;
  once packets have come from the peer, moving to another source needs ``relatch_after`` packets in a
  row from it, so a stray or spoofed packet is dropped, not obeyed;
- RTCP on port + 1 (RFC 3550 §11) latched and passed through the same way; RTCP multiplexed on the RTP
  port (RFC 5761 §4) passes through untouched;
- a leg that receives nothing for ``timeout_ms`` raises ``MediaTimeout`` once (until media resumes);
- warm ports: a removed relay's port pairs stay open and bound as spares (up to ``spare_pairs``), and stay
  in the epoll set, but deaf: one-shot and without EPOLLIN, so that nothing that reaches them wakes the
  loop or goes anywhere; a new relay on such a port takes the pair, discards what queued on it
  meanwhile (one poll() tells which sockets have something) and starts afresh, without the
  socket/setsockopt/bind/close that opening a pair costs nor taking its sockets out of the epoll set and
  back in.

Playback and recording (core/media/prompts.py, core/media/recording.py):

- ``play`` sends a prompt's G.711 frames to a leg's peer every ptime, paced by a timerfd in the same epoll
  set (frame k leaves when k·ptime has passed since the start, so pacing does not drift). The prompt is a
  source of its own behind the leg's rewrite, so the far end sees one stream across prompt → bridged
  audio → prompt (RFC 7667 §3.2.1.4), the first frame of each prompt marked (RFC 3551 §4.1). While a prompt
  plays to a leg, the audio bridged towards that leg is held back: the prompt replaces it.
  ``PlaybackDone`` says when and why it ended.
- ``record_start`` makes the loop copy each RTP packet arriving on either leg, with its arrival time,
  into a ring (a memcpy: nothing else happens per packet); every 100 ms the loop returns to Python and
  the recording's jitter buffers and WAV writer take the ring's contents (``serve``/``run`` do this
  themselves). Relays that are not recorded pay one pointer test per packet.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
cimport cython
from libc.errno cimport EAGAIN, EINTR, EMFILE, ENFILE, errno
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free
from libc.string cimport memcpy, memset
from posix.time cimport CLOCK_MONOTONIC, clock_gettime, itimerspec, timespec
from posix.unistd cimport close, read, write

import os

import numpy as np

from core.media.prompts import PAYLOAD_TYPES, PlaybackDone, Prompt
from core.media.quality import LegFigures, reception_quality
from core.media.recording import CAPTURE_DTYPE, CallRecording
from core.media.rtp import (
    DtmfDigit,
    Latched,
    MediaTimeout,
    RtpError,
    RtpHeader,
    SsrcChanged,
    digit_name,
)

__all__ = ["Engine", "RtpReceiver", "RtpRewriter", "parse_header"]

cdef uint64_t WAKE_TOKEN = 0xFFFFFFFFFFFFFFFFULL
cdef uint64_t TIMER_TOKEN = 0xFFFFFFFFFFFFFFFEULL
# A spare socket's token: SPARE_TOKEN | (pair << 1) | rtcp. A leg's token is (gen << 32) | (leg << 1) |
# rtcp with leg < 32768: bit 31 tells them apart (WAKE and TIMER, which have it too, are looked for first).
cdef uint64_t SPARE_TOKEN = 0x80000000ULL
cdef int64_t TICK_NS = 5000000           # the playback timer: frames leave within 5 ms of their time
cdef int64_t DRAIN_EVERY_NS = 100000000  # recordings are handed to Python every 100 ms
cdef uint32_t CAPTURE_RING = 1024        # packets a recording's ring holds between two drains
PLAY_REASONS = ("done", "stopped", "replaced", "removed")
cdef int64_t SCAN_EVERY_NS = 100000000  # media timeouts are checked every 100 ms
cdef int DRAIN_ROUNDS = 1024            # recvmmsg batches a reused socket is emptied with, at most
cdef enum:
    # Engine._release_pair: where a pair that leaves a relay (or never made one) stands with epoll
    PAIR_FRESH = 0  # bound for a relay that was not added: in no epoll set
    PAIR_SPARE = 1  # taken from the spares for a relay that was not added: in the set as that spare
    PAIR_LEG = 2    # a removed relay's: in the set under its leg's token
cdef uint32_t MAX_DROPOUT = 3000        # RFC 3550 A.1
cdef uint32_t MAX_MISORDER = 100
cdef uint32_t RTP_SEQ_MOD = 65536
LEGS = ("a", "b")

# --- packet transforms (twins of core/media/rtp.py and core/media/quality.py) ----------------------

cdef inline uint32_t _be16(const uint8_t *p) noexcept nogil:
    return (<uint32_t>p[0] << 8) | p[1]

cdef inline uint32_t _be32(const uint8_t *p) noexcept nogil:
    return (<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8) | p[3]

cdef inline void _put16(uint8_t *p, uint32_t v) noexcept nogil:
    p[0] = (v >> 8) & 0xFF
    p[1] = v & 0xFF

cdef inline void _put32(uint8_t *p, uint32_t v) noexcept nogil:
    p[0] = v >> 24
    p[1] = (v >> 16) & 0xFF
    p[2] = (v >> 8) & 0xFF
    p[3] = v & 0xFF


cdef int rtp_parse(const uint8_t *p, Py_ssize_t n, RtpHdr *h) noexcept nogil:
    """RFC 3550 §5.1 and the A.1 validity checks; 0 when valid, else the problem's code (1-5)."""
    cdef int hlen, pad = 0
    if n < 12:
        return 1
    if (p[0] >> 6) != 2:
        return 2
    h.csrc_count = p[0] & 0x0F
    hlen = 12 + 4 * h.csrc_count
    if p[0] & 0x10:
        if n < hlen + 4:
            return 3
        hlen += 4 + 4 * <int>_be16(p + hlen + 2)
    if hlen > n:
        return 4
    if p[0] & 0x20:
        pad = p[n - 1]
        if pad == 0 or hlen + pad > n:
            return 5
    h.version = 2
    h.padding = (p[0] & 0x20) != 0
    h.extension = (p[0] & 0x10) != 0
    h.marker = (p[1] & 0x80) != 0
    h.payload_type = p[1] & 0x7F
    h.seq = _be16(p + 2)
    h.timestamp = _be32(p + 4)
    h.ssrc = _be32(p + 8)
    h.header_length = hlen
    h.payload_length = <int>n - hlen - pad
    return 0


cdef void stats_init(RecvStats *s, uint32_t seq) noexcept nogil:
    if s.sources:
        s.expected_prior += <uint64_t>(<int64_t>s.cycles + s.max_seq - s.base_seq + 1)
        s.received_prior += s.received
    s.sources += 1
    s.base_seq = seq
    s.max_seq = seq
    s.bad_seq = RTP_SEQ_MOD + 1
    s.cycles = 0
    s.received = 1
    s.have_transit = 0


cdef int stats_update_seq(RecvStats *s, uint32_t seq) noexcept nogil:
    cdef uint32_t udelta = (seq - s.max_seq) & 0xFFFF
    if udelta < MAX_DROPOUT:
        if seq < s.max_seq:
            s.cycles += RTP_SEQ_MOD
        s.max_seq = seq
    elif udelta <= RTP_SEQ_MOD - MAX_MISORDER:
        if seq == s.bad_seq:
            stats_init(s, seq)
            return 1
        s.bad_seq = (seq + 1) & 0xFFFF
        return 0
    s.received += 1
    return 1


cdef void stats_jitter(RecvStats *s, uint32_t timestamp, uint32_t arrival) noexcept nogil:
    cdef int32_t transit = <int32_t>(arrival - timestamp)
    cdef int64_t d
    if s.have_transit:
        d = <int32_t>(<uint32_t>transit - <uint32_t>s.transit)
        if d < 0:
            d = -d
        s.jitter_q4 += d - ((s.jitter_q4 + 8) >> 4)
    s.transit = transit
    s.have_transit = 1


cdef void queue_push(EventQueue *q, int kind, uint64_t serial, int leg, uint32_t a, uint32_t b,
                     uint32_t c, uint32_t d) noexcept nogil:
    cdef MediaEventC *e
    if q.count >= q.cap:
        q.dropped += 1
        return
    e = &q.items[(q.head + q.count) % q.cap]
    q.count += 1
    e.kind = kind
    e.serial = serial
    e.leg = leg
    e.a = a
    e.b = b
    e.c = c
    e.d = d


cdef inline void _rx_report(Receiver *r, EventQueue *q, uint64_t serial, int leg) noexcept nogil:
    r.event_reported = 1
    if r.event_code <= 16:  # DTMF 0-15 and flash (RFC 4733 §3.2); other events are not digits
        r.digits += 1
        queue_push(q, EV_DTMF, serial, leg, r.event_code, r.event_duration, r.event_volume, 0)


cdef inline void _rx_end_event(Receiver *r, EventQueue *q, uint64_t serial, int leg) noexcept nogil:
    if r.event_on and not r.event_reported:
        _rx_report(r, q, serial, leg)
    r.event_on = 0


cdef int rx_receive(Receiver *r, const uint8_t *p, Py_ssize_t n, uint32_t arrival, RtpHdr *h,
                    EventQueue *q, uint64_t serial, int leg) noexcept nogil:
    cdef int counted, duration
    cdef const uint8_t *e
    if n >= 2 and p[1] >= 192 and p[1] <= 223:  # RFC 5761 §4: RTCP on the RTP port
        r.rtcp += 1
        return KIND_RTCP
    if rtp_parse(p, n, h) != 0:
        r.invalid += 1
        return KIND_INVALID
    r.packets += 1
    r.bytes += <uint64_t>n
    if r.stats.sources == 0:
        r.ssrc = h.ssrc
        stats_init(&r.stats, h.seq)
        counted = 1
    elif h.ssrc != r.ssrc:
        _rx_end_event(r, q, serial, leg)
        queue_push(q, EV_SSRC, serial, leg, r.ssrc, h.ssrc, 0, 0)
        r.ssrc_changes += 1
        r.ssrc = h.ssrc
        stats_init(&r.stats, h.seq)
        counted = 1
    else:
        counted = stats_update_seq(&r.stats, h.seq)
    if h.payload_type == r.dtmf_pt:
        if h.payload_length >= 4:  # RFC 4733 §2.3
            e = p + h.header_length
            duration = <int>_be16(e + 2)
            if r.event_on and h.timestamp == r.event_ts:
                if r.event_reported:
                    return KIND_RTP  # a redundant end packet (§2.5.1.4) or a late one
                if duration > r.event_duration:
                    r.event_duration = duration
            else:
                _rx_end_event(r, q, serial, leg)
                r.event_on = 1
                r.event_reported = 0
                r.event_ts = h.timestamp
                r.event_code = e[0]
                r.event_duration = duration
            r.event_volume = e[1] & 0x3F
            if e[1] & 0x80:
                _rx_report(r, q, serial, leg)
    elif counted:
        stats_jitter(&r.stats, h.timestamp, arrival)
    return KIND_RTP


cdef void tx_rewrite(Rewriter *w, uint8_t *p, const RtpHdr *h, uint32_t arrival) noexcept nogil:
    cdef uint32_t gap, advance, step, last_seq, last_ts, delta
    if not w.has_source:
        w.has_source = 1
        w.src = h.ssrc
        w.high_seq = h.seq
        w.high_ts = h.timestamp
    elif h.ssrc != w.src:
        step = w.ts_step
        gap = arrival - w.last_arrival
        if gap >= 0x80000000U:
            advance = step
        else:
            advance = <uint32_t>((<uint64_t>gap + step // 2) // step * step)
            if advance < step:
                advance = step
        last_seq = (w.high_seq + w.seq_off) & 0xFFFF
        last_ts = w.high_ts + w.ts_off
        w.seq_off = (last_seq + 1 - h.seq) & 0xFFFF
        w.ts_off = last_ts + advance - h.timestamp
        w.src = h.ssrc
        w.high_seq = h.seq
        w.high_ts = h.timestamp
        w.mark = 1
        w.source_changes += 1
    else:
        delta = (h.seq - w.high_seq) & 0xFFFF
        if 0 < delta < 0x8000:
            w.high_seq = h.seq
            w.high_ts = h.timestamp
    w.last_arrival = arrival
    _put16(p + 2, (h.seq + w.seq_off) & 0xFFFF)
    _put32(p + 4, h.timestamp + w.ts_off)
    _put32(p + 8, w.ssrc)
    if w.mark:
        p[1] |= 0x80
        w.mark = 0


cdef inline uint32_t _arrival_float(double now, uint32_t clock_rate) noexcept:
    return <uint32_t>(<int64_t>(now * clock_rate))


cdef inline uint32_t _arrival_ns(int64_t now_ns, uint32_t clock_rate) noexcept nogil:
    return <uint32_t>((now_ns // 1000000000) * clock_rate + (now_ns % 1000000000) * clock_rate // 1000000000)


cdef inline int64_t _monotonic_ns() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <int64_t>ts.tv_sec * 1000000000 + ts.tv_nsec


def parse_header(packet: bytes) -> RtpHeader:
    """The RTP header of ``packet`` (RFC 3550 §5.1); raises ``RtpError`` when it is not valid."""
    cdef RtpHdr h
    cdef const uint8_t *p = <const uint8_t *>PyBytes_AS_STRING(packet)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(packet)
    cdef int code = rtp_parse(p, n, &h)
    if code:
        # the twin words the reason (this path is rare); it raises RtpError for every code above
        from core.media.rtp import parse_header as py_parse
        py_parse(packet)
        raise RtpError(f"not a valid RTP packet (code {code})")  # only if the twins disagreed
    return RtpHeader(2, bool(h.padding), bool(h.extension), h.csrc_count, bool(h.marker), h.payload_type,
                     h.seq, h.timestamp, h.ssrc, h.header_length, h.payload_length)


cdef object _make_event(const MediaEventC *e, object relay_id, object leg):
    cdef char text[16]
    if e.kind == EV_DTMF:
        return DtmfDigit(relay_id, leg, digit_name(e.a), e.b, e.c)
    if e.kind == EV_SSRC:
        return SsrcChanged(relay_id, leg, e.a, e.b)
    if e.kind == EV_LATCHED:
        inet_ntop(AF_INET, &e.a, text, sizeof(text))
        return Latched(relay_id, leg, text.decode("ascii"), e.b, bool(e.c), bool(e.d))
    if e.kind == EV_TIMEOUT:
        return MediaTimeout(relay_id, leg, e.a)
    if e.kind == EV_PLAYBACK:
        return PlaybackDone(relay_id, leg, e.a, e.b, PLAY_REASONS[e.c])
    return None


cdef inline void _capture(Capture *c, int which, const uint8_t *buf, const RtpHdr *h, int64_t now_ns) noexcept nogil:
    """Keep a copy of a packet of a recorded relay for the recording's jitter buffer."""
    cdef CaptureRec *rec
    cdef int n = h.payload_length
    if c.count >= c.cap:
        c.dropped += 1
        return
    rec = &c.items[(c.head + c.count) % c.cap]
    c.count += 1
    if n > CAPTURE_BYTES:
        n = CAPTURE_BYTES
    rec.arrival_ns = now_ns
    rec.timestamp = h.timestamp
    rec.ssrc = h.ssrc
    rec.seq = <uint16_t>h.seq
    rec.length = <uint16_t>n
    rec.payload_type = <uint8_t>h.payload_type
    rec.marker = <uint8_t>h.marker
    rec.leg = <uint8_t>which
    rec.pad = 0
    memcpy(rec.payload, buf + h.header_length, n)


cdef class CaptureRing:
    """The ring of packets of one recorded relay (the loop fills it, the recording empties it)."""

    def __cinit__(self, uint32_t capacity):
        self.c.items = <CaptureRec *>calloc(capacity, sizeof(CaptureRec))
        if self.c.items == NULL:
            raise MemoryError()
        self.c.cap = capacity
        self.c.head = self.c.count = 0
        self.c.dropped = 0

    def __dealloc__(self):
        free(self.c.items)

    cdef bytes take(self):
        """The packets held, oldest first, as CAPTURE_DTYPE records; the ring is emptied (mutex held)."""
        cdef Capture *c = &self.c
        cdef uint32_t first = c.count if c.head + c.count <= c.cap else c.cap - c.head
        out = PyBytes_FromStringAndSize(NULL, c.count * sizeof(CaptureRec))
        cdef char *p = PyBytes_AS_STRING(out)
        memcpy(p, &c.items[c.head], first * sizeof(CaptureRec))
        memcpy(p + first * sizeof(CaptureRec), c.items, (c.count - first) * sizeof(CaptureRec))
        c.head = (c.head + c.count) % c.cap
        c.count = 0
        return out


if sizeof(CaptureRec) != CAPTURE_DTYPE.itemsize:
    raise ImportError(f"CaptureRec is {sizeof(CaptureRec)} bytes, CAPTURE_DTYPE {CAPTURE_DTYPE.itemsize}")


cdef inline int64_t _expected(const RecvStats *s) noexcept:
    """RFC 3550 A.3: the packets expected over every source the leg has had."""
    if not s.sources:
        return 0
    return <int64_t>s.expected_prior + <int64_t>s.cycles + s.max_seq - s.base_seq + 1


cdef dict _receiver_counters(const Receiver *r):
    cdef const RecvStats *s = &r.stats
    cdef int64_t expected = _expected(s)
    return {
        "packets_received": r.packets, "bytes_received": r.bytes,
        "packets_expected": expected, "packets_lost": expected - <int64_t>(s.received_prior + s.received),
        "jitter_q4": s.jitter_q4, "packets_invalid": r.invalid, "ssrc_changes": r.ssrc_changes,
        "rtcp_received": r.rtcp, "dtmf_digits": r.digits,
    }


cdef class RtpReceiver:
    """The packets arriving on one leg (the C twin of ``core.media.rtp.RtpReceiver``)."""

    def __cinit__(self, clock_rate: int = 8000, dtmf_pt=None):
        memset(&self.r, 0, sizeof(Receiver))
        self.r.clock_rate = clock_rate
        self.r.dtmf_pt = -1 if dtmf_pt is None else dtmf_pt
        self.q.items = self.items
        self.q.cap = 16
        self.q.head = self.q.count = 0
        self.q.dropped = 0
        self._pending = []

    def receive(self, packet: bytes, now: float) -> int:
        cdef RtpHdr h
        cdef int kind = rx_receive(&self.r, <const uint8_t *>PyBytes_AS_STRING(packet),
                                   PyBytes_GET_SIZE(packet), _arrival_float(now, self.r.clock_rate), &h,
                                   &self.q, 0, 0)
        while self.q.count:
            self._pending.append(_make_event(&self.q.items[self.q.head], None, None))
            self.q.head = (self.q.head + 1) % self.q.cap
            self.q.count -= 1
        return kind

    def take_events(self) -> list:
        events, self._pending = self._pending, []
        return events

    def counters(self) -> dict:
        return _receiver_counters(&self.r)

    @property
    def ssrc(self) -> int:
        return self.r.ssrc


cdef class RtpRewriter:
    """What leaves one leg (the C twin of ``core.media.rtp.RtpRewriter``)."""

    def __cinit__(self, ssrc: int, clock_rate: int = 8000, ts_step: int = 160):
        if ts_step < 1:
            raise ValueError("ts_step must be at least 1")
        memset(&self.w, 0, sizeof(Rewriter))
        self.w.ssrc = ssrc & 0xFFFFFFFF
        self.w.clock_rate = clock_rate
        self.w.ts_step = ts_step

    def rewrite(self, packet: bytes, now: float) -> bytes:
        cdef RtpHdr h
        cdef Py_ssize_t n = PyBytes_GET_SIZE(packet)
        if rtp_parse(<const uint8_t *>PyBytes_AS_STRING(packet), n, &h):
            parse_header(packet)  # raises RtpError with the reason
        out = PyBytes_FromStringAndSize(PyBytes_AS_STRING(packet), n)
        tx_rewrite(&self.w, <uint8_t *>PyBytes_AS_STRING(out), &h, _arrival_float(now, self.w.clock_rate))
        return out

    @property
    def ssrc(self) -> int:
        return self.w.ssrc

    @property
    def source_changes(self) -> int:
        return self.w.source_changes


# --- the engine -------------------------------------------------------------------------------------

# Options a command may give, for both legs or per leg ({"a": {...}, "b": {...}}).
_SHARED_OPTIONS = {"rewrite", "dtmf_pt", "clock_rate", "ptime_ms", "codec", "relatch_after", "timeout_ms",
                   "one_way_delay_ms"}
_LEG_OPTIONS = _SHARED_OPTIONS | {"peer", "rtcp_peer", "ssrc", "bridge"}
# A new leg's settings until its options say otherwise: ``Engine._init_leg`` sets the leg's fields to
# them (rewriting on, no DTMF payload type, no timeout), and the leg's meta dict, what the figures
# read, starts as a copy of _META_DEFAULTS.
_DEFAULTS = {"rewrite": True, "dtmf_pt": None, "clock_rate": 8000, "ptime_ms": 20, "codec": "PCMU",
             "relatch_after": 3, "timeout_ms": 0, "one_way_delay_ms": 0.0}
_META_DEFAULTS = {name: _DEFAULTS[name] for name in ("clock_rate", "ptime_ms", "codec", "one_way_delay_ms")}
cdef uint32_t DEFAULT_CLOCK_RATE = _DEFAULTS["clock_rate"]
cdef uint32_t DEFAULT_TS_STEP = _DEFAULTS["clock_rate"] * _DEFAULTS["ptime_ms"] // 1000
cdef int DEFAULT_RELATCH_AFTER = _DEFAULTS["relatch_after"]


def _split_options(options) -> tuple:
    """Per-leg option dicts from a command's options; unknown names are refused by name."""
    if not options:
        return {}, {}
    per_leg = ({}, {})
    for key, leg_options in zip(LEGS, per_leg):
        given = options.get(key)
        if given:
            for name in given:
                if name not in _LEG_OPTIONS:
                    raise ValueError(f"unknown relay option {key}.{name!r}")
            leg_options.update(given)
    for name, value in options.items():
        if name == "a" or name == "b":
            continue
        if name not in _SHARED_OPTIONS:
            raise ValueError(f"unknown relay option {name!r}" + (
                " (give it per leg: {'a': {...}, 'b': {...}})" if name in _LEG_OPTIONS else ""))
        for leg_options in per_leg:
            leg_options.setdefault(name, value)
    return per_leg


cdef inline uint64_t _rotl(uint64_t x, int b) noexcept nogil:
    return (x << b) | (x >> (64 - b))


cdef uint64_t siphash24(uint64_t k0, uint64_t k1, uint64_t m) noexcept nogil:
    """SipHash-2-4 (Aumasson, Bernstein 2012) of one 8-byte message, ``m`` read little-endian, under the
    key ``k0 | k1 << 64``: a pseudorandom function, so its values at 0, 1, 2... are random numbers that
    cannot be told from the CSPRNG's without the key (RFC 3550 §5.1 would have a stream's first seq and
    timestamp unpredictable, §8.1 its SSRC random), for tens of nanoseconds instead of a getrandom call."""
    cdef uint64_t v0 = k0 ^ 0x736f6d6570736575ULL
    cdef uint64_t v1 = k1 ^ 0x646f72616e646f6dULL
    cdef uint64_t v2 = k0 ^ 0x6c7967656e657261ULL
    cdef uint64_t v3 = k1 ^ 0x7465646279746573ULL
    cdef uint64_t last = (<uint64_t>8) << 56  # the final block: the message's length, no bytes left
    cdef int i
    v3 ^= m
    for i in range(8):  # 2 rounds for m, 2 for the final block, 4 to finish
        if i == 2:
            v0 ^= m
            v3 ^= last
        elif i == 4:
            v0 ^= last
            v2 ^= 0xff
        v0 += v1
        v1 = _rotl(v1, 13)
        v1 ^= v0
        v0 = _rotl(v0, 32)
        v2 += v3
        v3 = _rotl(v3, 16)
        v3 ^= v2
        v0 += v3
        v3 = _rotl(v3, 21)
        v3 ^= v0
        v2 += v1
        v1 = _rotl(v1, 17)
        v1 ^= v2
        v2 = _rotl(v2, 32)
    return v0 ^ v1 ^ v2 ^ v3


def _siphash24(uint64_t k0, uint64_t k1, uint64_t m) -> int:
    """``siphash24`` for the tests (the reference's vectors)."""
    return siphash24(k0, k1, m)


cdef void _drain(int fd) noexcept nogil:
    """Discard the datagrams queued on ``fd`` (a spare socket being reused): each is read into one
    byte, and a UDP socket drops what does not fit. Stops at the first short batch; bounded, so a peer
    sending faster than it is read cannot hold the command up."""
    cdef mmsghdr msgs[BATCH]
    cdef iovec iov
    cdef uint8_t byte
    cdef int i, n
    iov.iov_base = &byte
    iov.iov_len = 1
    memset(msgs, 0, sizeof(msgs))
    for i in range(BATCH):
        msgs[i].msg_hdr.msg_iov = &iov
        msgs[i].msg_hdr.msg_iovlen = 1
    for i in range(DRAIN_ROUNDS):
        n = recvmmsg(fd, msgs, BATCH, MSG_DONTWAIT, NULL)
        if n < 0 and errno == EAGAIN:
            return
        if 0 <= n < BATCH:
            return
        # a full batch (more may wait), EINTR, or an error the socket held (now cleared): again


@cython.no_gc_clear  # __dealloc__ closes the spares' sockets, so their dict must still be there
cdef class Engine:
    """A relay of RTP/RTCP between pairs of UDP ports taken from ``[port_min, port_max]`` on ``host``.

    Ports are even (RTP) with RTCP on the next odd port (RFC 3550 §11). ``socket_buffer`` sets
    SO_RCVBUF/SO_SNDBUF of every socket (0: the system's default). ``spare_pairs``: how many released
    port pairs stay open for the next relay on the same port (two descriptors each; 0: every pair is
    closed with its relay)."""

    def __cinit__(self):
        self.legs = NULL
        self.rbuf = NULL
        self.epfd = self.wakefd = self.evfd = self.timerfd = -1
        self.queue.items = NULL
        pthread_mutex_init(&self.mutex, NULL)
        pthread_mutex_init(&self.rec_mutex, NULL)

    def __init__(self, int port_min, int port_max, str host="127.0.0.1", int socket_buffer=0,
                 int event_capacity=65536, *, int spare_pairs=4096):
        cdef epoll_event ev
        cdef int i
        if port_min < 1024 or port_max > 65535 or port_max - port_min < 3:
            raise ValueError(f"port range {port_min}-{port_max}: need at least 4 ports within 1024-65535")
        if spare_pairs < 0:
            raise ValueError(f"spare_pairs {spare_pairs} must be 0 or more")
        self.spare_pairs = spare_pairs
        self.spares = {}
        if port_min & 1:
            port_min += 1
        self.port_min, self.port_max = port_min, port_max
        if inet_pton(AF_INET, host.encode("ascii"), &self.bind_addr) != 1:
            raise ValueError(f"{host!r} is not an IPv4 address")
        self.host = host
        self.socket_buffer = socket_buffer
        self.nlegs = (port_max - port_min + 1) // 2
        self.legs = <Leg *>calloc(self.nlegs, sizeof(Leg))
        self.rbuf = <uint8_t *>calloc(BATCH, SLOT)
        self.queue.items = <MediaEventC *>calloc(event_capacity, sizeof(MediaEventC))
        if self.legs == NULL or self.rbuf == NULL or self.queue.items == NULL:
            raise MemoryError()
        self.queue.cap = event_capacity
        for i in range(self.nlegs):
            self.legs[i].fd[0] = self.legs[i].fd[1] = -1
            self.legs[i].partner = -1
        for i in range(BATCH):
            self.riov[i].iov_base = self.rbuf + i * SLOT
            self.riov[i].iov_len = SLOT
            memset(&self.rmsgs[i], 0, sizeof(mmsghdr))
            self.rmsgs[i].msg_hdr.msg_name = &self.rnames[i]
            self.rmsgs[i].msg_hdr.msg_namelen = sizeof(sockaddr_in)
            self.rmsgs[i].msg_hdr.msg_iov = &self.riov[i]
            self.rmsgs[i].msg_hdr.msg_iovlen = 1
            memset(&self.smsgs[i], 0, sizeof(mmsghdr))
            self.smsgs[i].msg_hdr.msg_iov = &self.siov[i]
            self.smsgs[i].msg_hdr.msg_iovlen = 1
        self.epfd = epoll_create1(EPOLL_CLOEXEC)
        self.wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)
        self.evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)
        self.timerfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC)
        if self.epfd < 0 or self.wakefd < 0 or self.evfd < 0 or self.timerfd < 0:
            raise OSError(errno, os.strerror(errno))
        ev.events = EPOLLIN
        ev.data.u64 = WAKE_TOKEN
        epoll_ctl(self.epfd, EPOLL_CTL_ADD, self.wakefd, &ev)
        ev.data.u64 = TIMER_TOKEN
        epoll_ctl(self.epfd, EPOLL_CTL_ADD, self.timerfd, &ev)
        key = os.urandom(16)  # once per engine: the relays' SSRCs are drawn from it (_random64)
        self.rng_key[0] = int.from_bytes(key[:8], "little")
        self.rng_key[1] = int.from_bytes(key[8:], "little")
        self.rng_count = 0
        self.next_playback_id = 1
        self.prompts = {}
        self.play_refs = {}
        self.recordings = {}
        self.next_serial = 1
        self.relays = {}
        self.by_serial = {}
        self.retired = {}
        self.meta = [None] * (self.nlegs // 2)
        self.free_slots = list(range(self.nlegs // 2 - 1, -1, -1))
        self.ports = set()
        self.alloc_cursor = 0

    def __dealloc__(self):
        self._close_all()
        free(self.legs)
        free(self.rbuf)
        free(self.queue.items)
        pthread_mutex_destroy(&self.mutex)
        pthread_mutex_destroy(&self.rec_mutex)

    cdef void _lock(self) noexcept:
        # The GIL is let go only when the loop holds the mutex: a command is not held up by a
        # thread that wants the GIL while the mutex is free.
        if pthread_mutex_trylock(&self.mutex) == 0:
            return
        with nogil:
            pthread_mutex_lock(&self.mutex)

    cdef void _unlock(self) noexcept:
        pthread_mutex_unlock(&self.mutex)

    def _rec_lock(self):
        with nogil:
            pthread_mutex_lock(&self.rec_mutex)

    def _rec_unlock(self):
        pthread_mutex_unlock(&self.rec_mutex)

    cdef void _close_all(self) noexcept:
        # every socket is deleted from the epoll set before it is closed: a copy of the set's descriptor
        # in a forked child would keep the set, and a copy of a socket would keep it in the set
        cdef int i, r
        self._close_spares()
        if self.legs != NULL:
            for i in range(self.nlegs):
                for r in range(2):
                    if self.legs[i].fd[r] >= 0:
                        if self.epfd >= 0:
                            epoll_ctl(self.epfd, EPOLL_CTL_DEL, self.legs[i].fd[r], NULL)
                        close(self.legs[i].fd[r])
                        self.legs[i].fd[r] = -1
                self.legs[i].active = 0
        if self.epfd >= 0:
            close(self.epfd)
        if self.wakefd >= 0:
            close(self.wakefd)
        if self.evfd >= 0:
            close(self.evfd)
        if self.timerfd >= 0:
            close(self.timerfd)
        self.epfd = self.wakefd = self.evfd = self.timerfd = -1

    # -- commands --------------------------------------------------------------------------------

    def add_relay(self, relay_id, port_a=None, port_b=None, options=None) -> tuple:
        """Bridge two new legs a and b: what arrives on a leaves from b to b's peer, and back.

        A port left None is taken from the range. Returns ``(port_a, port_b)`` (the RTP ports).

        The sockets are opened and bound (or spares taken) before the mutex is taken: the loop waits only
        for the legs' fields to be set and their sockets watched (spares looked at, and emptied of what
        reached them while they rested, first)."""
        cdef int fds[4]
        cdef int pa = -1, pb = -1, w, slot
        cdef bint reused[2]
        cdef uint64_t ssrc
        per_leg = _split_options(options)
        self._check_new(relay_id)
        fds[0] = fds[1] = fds[2] = fds[3] = -1
        reused[0] = reused[1] = False
        try:
            pa = self._open_pair(port_a, fds, &reused[0])
            pb = self._open_pair(port_b, fds + 2, &reused[1])
        except BaseException:
            self._release_pair(pa, fds, PAIR_SPARE if reused[0] else PAIR_FRESH)
            raise
        self._lock()
        try:
            try:
                self._check_new(relay_id)  # again: another thread may have run while the mutex was awaited
            except BaseException:
                self._release_pair(pa, fds, PAIR_SPARE if reused[0] else PAIR_FRESH)
                self._release_pair(pb, fds + 2, PAIR_SPARE if reused[1] else PAIR_FRESH)
                raise
            slot = self.free_slots.pop()
            serial = self.next_serial
            self.next_serial += 1
            self.relays[relay_id] = slot
            self.by_serial[serial] = relay_id
            self.meta[slot] = (dict(_META_DEFAULTS), dict(_META_DEFAULTS))
            ssrc = self._random64()  # RFC 3550 §8.1: each leg's outgoing SSRC is random
            self._empty_spares(fds, reused)
            self._init_leg(2 * slot, serial, 0, pa, fds, <uint32_t>(ssrc >> 32), reused[0])
            self._init_leg(2 * slot + 1, serial, 1, pb, fds + 2, <uint32_t>ssrc, reused[1])
            self.legs[2 * slot].partner = 2 * slot + 1
            self.legs[2 * slot + 1].partner = 2 * slot
            for w in range(2):
                if per_leg[w]:
                    self._apply(slot, w, per_leg[w])
            return pa, pb
        finally:
            self._unlock()

    cdef int _check_new(self, object relay_id) except -1:
        """Refuse a relay that cannot be added."""
        if self.closed:
            raise RuntimeError("the engine is closed")
        if relay_id in self.relays:
            raise ValueError(f"relay {relay_id!r} exists already")
        if not self.free_slots:
            raise RuntimeError("no free relay slot: the port range is used up")
        return 0

    def patch_relay(self, relay_id, options) -> None:
        """Change a relay's options: a new SDP address (``peer``: the leg latches anew), the DTMF
        payload type, timeouts, ... and ``bridge``: ``{"a": {"bridge": (other_relay_id, "b")}}`` bridges
        leg a with another relay's leg (their former partners are left unbridged: what they receive is
        dropped); ``None`` unbridges (hold)."""
        per_leg = _split_options(options)
        self._lock()
        try:
            slot = self._slot(relay_id)
            for w in range(2):
                if per_leg[w]:
                    self._apply(slot, w, per_leg[w])
        finally:
            self._unlock()

    def remove_relay(self, relay_id) -> dict:
        """Remove a relay; returns its final figures ``{"a": LegFigures, "b": LegFigures}``. Its port
        pairs become spares (or are closed when ``spare_pairs`` are kept already).

        Under the mutex the legs are only copied and retired; after it is given back, their pairs'
        sockets are turned into spares in the epoll set (or taken out of it and closed) and their figures
        computed."""
        cdef Leg *leg
        cdef Leg final[2]
        cdef int fds[4]
        cdef int i, w, slot
        if self.recordings:
            self._rec_lock()
            try:
                if self.relays.get(relay_id) in self.recordings:
                    self._finish_recording(self.relays[relay_id])
            finally:
                self._rec_unlock()
        self._lock()
        try:
            slot = self._slot(relay_id)
            for w in range(2):
                i = 2 * slot + w
                leg = &self.legs[i]
                final[w] = leg[0]
                if leg.playing:
                    self._end_playback(leg, PLAY_REMOVED)
                self.play_refs.pop(i, None)
                if leg.partner >= 0 and self.legs[leg.partner].partner == i:
                    self.legs[leg.partner].partner = -1
                fds[2 * w], fds[2 * w + 1] = leg.fd[0], leg.fd[1]
                leg.fd[0] = leg.fd[1] = -1
                leg.active = 0
                leg.partner = -1
            del self.relays[relay_id]
            serial = final[0].serial
            relay_id = self.by_serial.pop(serial)
            if self.queue.count:
                self.retired[serial] = relay_id  # named by the events still queued for it
            meta = self.meta[slot]
            self.meta[slot] = None
            self.free_slots.append(slot)
        finally:
            self._unlock()
        self._release_pair(final[0].port, fds, PAIR_LEG)
        self._release_pair(final[1].port, fds + 2, PAIR_LEG)
        return {"a": self._leg_figures(&final[0], meta[0]), "b": self._leg_figures(&final[1], meta[1])}

    def figures(self, relay_id) -> dict:
        """The relay's figures so far: ``{"a": LegFigures, "b": LegFigures}``; a leg's loss, jitter and
        MOS are those of the media arriving on it, ``packets_sent`` what left it."""
        self._lock()
        try:
            slot = self._slot(relay_id)
            return {"a": self._leg_figures(&self.legs[2 * slot], self.meta[slot][0]),
                    "b": self._leg_figures(&self.legs[2 * slot + 1], self.meta[slot][1])}
        finally:
            self._unlock()

    # -- playback --------------------------------------------------------------------------------

    def add_prompt(self, prompt_id, prompt) -> None:
        """Keep a prompt (a ``core.media.prompts.Prompt``, or 8 kHz int16 samples) under ``prompt_id``
        for ``play``; its G.711 frames are computed once per codec."""
        if not isinstance(prompt, Prompt):
            prompt = Prompt(prompt, name=str(prompt_id))
        self.prompts[prompt_id] = prompt

    def remove_prompt(self, prompt_id) -> None:
        """Forget a prompt (playbacks of it go on to their end)."""
        self.prompts.pop(prompt_id, None)

    def _leg_index(self, relay_id, leg) -> int:
        if leg not in LEGS:
            raise ValueError(f"leg {leg!r} is not 'a' or 'b'")
        return 2 * self._slot(relay_id) + LEGS.index(leg)

    def play(self, relay_id, leg, prompt, loop=False) -> int:
        """Play to ``leg``'s peer (the phone of that leg): ``prompt`` is a prompt id given to
        ``add_prompt``, a ``Prompt``, G.711 bytes in the leg's codec, or a list of such frames. One frame
        every ptime, the first at once; a playback already running on the leg is replaced. Returns the
        playback's id, which its ``PlaybackDone`` event carries."""
        cdef Leg *l
        cdef Playback *p
        cdef int64_t now, gap
        cdef int i, fb
        cdef uint64_t advance, first
        self._lock()
        try:
            i = self._leg_index(relay_id, leg)
            l = &self.legs[i]
            codec = self.meta[i // 2][i % 2].get("codec", "PCMU")
            if codec not in PAYLOAD_TYPES:
                raise ValueError(f"cannot play to a leg whose codec is {codec!r} (G.711 only)")
            fb = <int>l.tx.ts_step
            if fb > MAX_FRAME:
                raise ValueError(f"frames of {fb} bytes exceed {MAX_FRAME}")
            if not isinstance(prompt, (Prompt, bytes, bytearray, list, tuple)):
                try:
                    prompt = self.prompts[prompt]
                except (KeyError, TypeError):
                    raise KeyError(f"no prompt {prompt!r}") from None
            if isinstance(prompt, Prompt):
                data = prompt.payload(codec)
            elif isinstance(prompt, (list, tuple)):
                data = b"".join(bytes(f) for f in prompt)
            else:
                data = bytes(prompt)
            if not data:
                raise ValueError("nothing to play")
            pad = (-len(data)) % fb
            if pad:
                data += bytes([0xFF if codec == "PCMU" else 0xD5]) * pad  # G.711 silence
            if l.playing:
                self._end_playback(l, PLAY_REPLACED)
            now = _monotonic_ns()
            p = &l.play
            if p.last_ns == 0:  # the leg's first prompt: a new source (RFC 3550 §5.1, §8.1)
                first = self._random64()
                p.src = <uint32_t>(first >> 32)
                p.ts = <uint32_t>first
                p.seq = <uint32_t>(self._random64() & 0xFFFF)
            else:
                # the same source goes on: its timestamps advance by the time since its last frame
                gap = now - p.last_ns
                advance = <uint64_t>((gap + p.frame_ns // 2) // p.frame_ns) if gap > 0 else 1
                if advance > 1:
                    p.ts += <uint32_t>((advance - 1) * <uint64_t>fb)
            self.play_refs[i] = data
            p.data = <const uint8_t *>PyBytes_AS_STRING(data)
            p.frames = len(data) // fb
            p.frame_bytes = fb
            p.payload_type = PAYLOAD_TYPES[codec]
            p.loop = 1 if loop else 0
            p.id = self.next_playback_id
            self.next_playback_id += 1
            p.frame_ns = <int64_t>fb * 1000000000 // l.tx.clock_rate
            p.start_ns = now
            p.base = p.index = p.sent = 0
            l.playing = 1
            self.playing_count += 1
            self._arm_timer(1)
            if self.queue.count and not self.ev_signalled:
                self._signal()
            return p.id
        finally:
            self._unlock()

    def stop_playback(self, relay_id, leg) -> bool:
        """Stop the prompt playing to ``leg`` (its ``PlaybackDone`` says "stopped"); False if none was."""
        cdef Leg *l
        self._lock()
        try:
            l = &self.legs[self._leg_index(relay_id, leg)]
            if not l.playing:
                return False
            self._end_playback(l, PLAY_STOPPED)
            if not self.ev_signalled:
                self._signal()
            return True
        finally:
            self._unlock()

    def playing(self, relay_id, leg) -> bool:
        cdef Leg *l
        self._lock()
        try:
            l = &self.legs[self._leg_index(relay_id, leg)]
            return bool(l.playing)
        finally:
            self._unlock()

    # -- recording -------------------------------------------------------------------------------

    def record_start(self, relay_id, path, **jitter) -> None:
        """Record the relay into a stereo WAV at ``path`` (left: what arrives on leg a, right: leg b),
        through an adaptive jitter buffer per leg; ``jitter`` are ``core.media.jitter.JitterBuffer``'s
        options (min_delay, max_delay, ...). The file is readable at any moment, even if the process dies."""
        self.capture_start(relay_id, lambda rate: CallRecording(path, _monotonic_ns(), clock_rate=rate, **jitter))

    def capture_start(self, relay_id, make) -> None:
        """Hand the packets arriving on the relay's legs to a consumer, every 100 ms, in the engine's
        thread: ``make(clock_rate)`` builds it; it has ``feed(records, now_ns)`` (a numpy array of
        ``CAPTURE_DTYPE``), ``finish(now_ns) -> dict``, ``summary() -> dict`` and the attributes
        ``closed``, ``dropped`` and ``error`` (what ``core.media.recording.CallRecording`` has; an
        answering-machine detector is another). One consumer per relay; ``record_stop`` ends it."""
        cdef CaptureRing ring
        cdef int slot
        self._rec_lock()
        try:
            self._lock()
            try:
                slot = self._slot(relay_id)
                if slot in self.recordings:
                    raise ValueError(f"relay {relay_id!r} is being recorded already")
                rate = self.legs[2 * slot].rx.clock_rate
            finally:
                self._unlock()
            ring = CaptureRing(CAPTURE_RING)
            recording = make(rate)
            self._lock()
            try:
                if self.relays.get(relay_id) != slot:
                    recording.finish(_monotonic_ns())
                    raise KeyError(f"no relay {relay_id!r}")
                self.recordings[slot] = (ring, recording)
                self.legs[2 * slot].rec = &ring.c
                self.legs[2 * slot + 1].rec = &ring.c
                if self.recording_count == 0:
                    self.last_drain_ns = _monotonic_ns()
                self.recording_count += 1
                self._arm_timer(1)
            finally:
                self._unlock()
        finally:
            self._rec_unlock()

    def record_stop(self, relay_id) -> dict:
        """Stop recording the relay: what the buffers hold is played out and the file closed. Returns
        a summary: path, frames, seconds, and per leg the jitter buffer's counters (played, late,
        duplicate, concealed, ...)."""
        self._rec_lock()
        try:
            slot = self._slot(relay_id)
            if slot not in self.recordings:
                raise ValueError(f"relay {relay_id!r} is not being recorded")
            return self._finish_recording(slot)
        finally:
            self._rec_unlock()

    def recording(self, relay_id) -> dict | None:
        """The summary so far of the relay's recording, or None."""
        self._rec_lock()
        try:
            entry = self.recordings.get(self.relays.get(relay_id, -1))
            return None if entry is None else entry[1].summary()
        finally:
            self._rec_unlock()

    def _finish_recording(self, int slot) -> dict:
        """(rec_mutex held) Detach the ring from the legs, hand its last packets over, close the file."""
        cdef CaptureRing ring
        self._lock()
        try:
            ring, recording = self.recordings.pop(slot)
            self.legs[2 * slot].rec = NULL
            self.legs[2 * slot + 1].rec = NULL
            self.recording_count -= 1
            data = ring.take()
            recording.dropped = ring.c.dropped
            now = _monotonic_ns()
        finally:
            self._unlock()
        if not recording.closed:
            recording.feed(np.frombuffer(data, dtype=CAPTURE_DTYPE), now)
            return recording.finish(now)
        return recording.summary()

    def _drain_recordings(self) -> None:
        """The packets the loop kept for each recording go through its jitter buffers into its file."""
        cdef CaptureRing ring
        self._rec_lock()
        try:
            taken = []
            self._lock()
            try:
                self.rec_due = 0
                now = _monotonic_ns()
                self.last_drain_ns = now
                for slot, (ring, recording) in self.recordings.items():
                    recording.dropped = ring.c.dropped
                    taken.append((slot, recording, ring.take()))
            finally:
                self._unlock()
            for slot, recording, data in taken:
                try:
                    recording.feed(np.frombuffer(data, dtype=CAPTURE_DTYPE), now)
                except Exception as exc:  # a full disk must not take the relay down: stop this recording
                    recording.error = repr(exc)
                    try:
                        self._finish_recording(slot)
                    except Exception:
                        pass  # the error is in the summary; the file is as complete as it could be
        finally:
            self._rec_unlock()

    def events(self) -> list:
        """Every event since the last call: ``Latched``, ``SsrcChanged``, ``DtmfDigit``, ``MediaTimeout``
        (core.media.rtp), in the order they happened."""
        cdef uint64_t value
        cdef const MediaEventC *e
        out = []
        self._lock()
        try:
            while self.queue.count:
                e = &self.queue.items[self.queue.head]
                relay_id = self.by_serial.get(e.serial, None)
                if relay_id is None:
                    relay_id = self.retired.get(e.serial)
                out.append(_make_event(e, relay_id, LEGS[e.leg]))
                self.queue.head = (self.queue.head + 1) % self.queue.cap
                self.queue.count -= 1
            self.retired.clear()
            if self.ev_signalled:
                read(self.evfd, &value, 8)
                self.ev_signalled = 0
        finally:
            self._unlock()
        return out

    def stop(self) -> None:
        """Make ``run()``/``serve()`` return now (from any thread); the engine stays stopped."""
        cdef uint64_t one = 1
        self.stopping = 1
        if self.wakefd >= 0:
            write(self.wakefd, &one, 8)

    def close(self) -> None:
        """Stop, and close every socket, spares included (recordings are finished first: their files
        are complete).
        Call it after the thread running the loop has returned."""
        self.stop()
        self._rec_lock()
        try:
            for slot in list(self.recordings):
                self._finish_recording(slot)
        finally:
            self._rec_unlock()
        self._lock()
        try:
            self.closed = 1
            self._close_all()
            self.relays.clear()
            self.ports.clear()
        finally:
            self._unlock()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def event_fd(self) -> int:
        """An eventfd readable while events wait (for an event loop's add_reader)."""
        return self.evfd

    @property
    def stopped(self) -> bool:
        return bool(self.stopping)

    @property
    def packets_forwarded(self) -> int:
        return self.forwarded

    @property
    def spare_count(self) -> int:
        """Released port pairs kept open for reuse."""
        return len(self.spares) if self.spares is not None else 0

    @property
    def events_waiting(self) -> int:
        """Events queued and not yet taken by ``events()``."""
        return self.queue.count

    @property
    def events_dropped(self) -> int:
        """Events lost because nobody drained the queue (it holds ``event_capacity``)."""
        return self.queue.dropped

    def relay_ids(self) -> list:
        return list(self.relays)

    # -- the loop --------------------------------------------------------------------------------

    def run(self, int timeout_ms=0, long max_batches=1) -> int:
        """Wait up to ``timeout_ms`` for packets, then move them: up to ``max_batches`` rounds of
        epoll_wait + recvmmsg/sendmmsg per ready socket, ending early at the first idle round.
        Returns the number of packets forwarded. The GIL is released throughout."""
        cdef long n
        if self.closed:
            raise RuntimeError("the engine is closed")
        with nogil:
            n = self._run(timeout_ms, max_batches)
        if self.rec_due:
            self._drain_recordings()
        return n

    def serve(self, int timeout_ms=100) -> None:
        """Run the loop until ``stop()``: the body of the engine's thread."""
        cdef long forever = 1 << 30
        if self.closed:
            raise RuntimeError("the engine is closed")
        while not self.stopping:
            with nogil:
                self._run(timeout_ms, forever, True)
            if self.rec_due:
                self._drain_recordings()

    cdef long _run(self, int timeout_ms, long max_batches, bint serving=False) noexcept nogil:
        """Rounds of epoll_wait and the packets of each ready socket. ``run()`` waits only in its first
        round and returns at the first idle one; ``serving`` (the engine's thread) waits up to
        ``timeout_ms`` in every round and returns only to stop or to hand the recordings to Python:
        a thread that came back for the GIL after each idle moment would wait for it behind the
        signalling thread (up to its switch interval, 5 ms, with packets queueing meanwhile)."""
        cdef long total = 0, b
        cdef int n, i
        cdef int64_t now
        cdef uint64_t value
        for b in range(max_batches):
            if self.stopping:
                break
            n = epoll_wait(self.epfd, self.evs, MAX_EVENTS, timeout_ms if b == 0 or serving else 0)
            if n < 0:
                if errno == EINTR:
                    continue
                break
            now = _monotonic_ns()
            pthread_mutex_lock(&self.mutex)
            if not self.closed:
                for i in range(n):
                    if self.evs[i].data.u64 == WAKE_TOKEN:
                        read(self.wakefd, &value, 8)
                        continue
                    if self.evs[i].data.u64 == TIMER_TOKEN:
                        read(self.timerfd, &value, 8)
                        self._tick(now)
                        continue
                    if self.evs[i].data.u64 & SPARE_TOKEN:
                        continue  # an error on a resting spare (once: one-shot); its next relay clears it
                    total += self._process(self.evs[i].data.u64, now)
                if now - self.last_scan_ns >= SCAN_EVERY_NS:
                    self._scan_timeouts(now)
            pthread_mutex_unlock(&self.mutex)
            if self.rec_due or (n == 0 and not serving):
                break  # the recordings are due in Python, or idle
        return total

    cdef uint64_t _random64(self) noexcept nogil:
        """(mutex held) 64 random bits: SipHash-2-4 of the next count under the engine's key. (A child
        forked from the process would draw the same; the engine does not outlive a fork: its thread and
        mutex do not.)"""
        self.rng_count += 1
        return siphash24(self.rng_key[0], self.rng_key[1], self.rng_count)

    cdef long _process(self, uint64_t token, int64_t now_ns) noexcept nogil:
        """One recvmmsg on a ready socket, each datagram checked, counted and rewritten in place,
        then one sendmmsg from the partner leg's socket to its peer."""
        cdef int li = <int>((<uint32_t>token) >> 1), r = <int>(token & 1)
        cdef Leg *leg
        cdef Leg *out = NULL
        cdef int n, i, k = 0, kind, sent, s
        cdef unsigned int length
        cdef uint8_t *buf
        cdef RtpHdr h
        cdef uint32_t arrival_in = 0, arrival_out = 0
        cdef sockaddr_in dest
        cdef int have_dest = 0
        if li >= self.nlegs:
            return 0
        leg = &self.legs[li]
        if not leg.active or leg.gen != <uint32_t>(token >> 32):
            return 0  # an event for a relay removed since epoll_wait returned
        n = recvmmsg(leg.fd[r], self.rmsgs, BATCH, MSG_DONTWAIT, NULL)
        if n <= 0:
            return 0
        if leg.partner >= 0:
            out = &self.legs[leg.partner]
            if out.has_peer[r]:
                dest = out.peer[r]
                have_dest = 1
            elif r == 1 and out.has_peer[0]:
                dest = out.peer[0]  # RTCP goes to the RTP port + 1 until the peer's RTCP is heard
                dest.sin_port = htons(ntohs(dest.sin_port) + 1)
                have_dest = 1
            arrival_out = _arrival_ns(now_ns, out.tx.clock_rate)
        arrival_in = _arrival_ns(now_ns, leg.rx.clock_rate)
        for i in range(n):
            length = self.rmsgs[i].msg_len
            self.rmsgs[i].msg_hdr.msg_namelen = sizeof(sockaddr_in)
            if self.rmsgs[i].msg_hdr.msg_flags & MSG_TRUNC or self.rnames[i].sin_family != AF_INET:
                leg.dropped += 1
                continue
            buf = self.rbuf + i * SLOT
            if r == 0 and not (length >= 2 and buf[1] >= 192 and buf[1] <= 223) and rtp_parse(buf, length, &h):
                leg.rx.invalid += 1  # not RTP: it neither latches the leg nor goes anywhere
                leg.dropped += 1
                continue
            if not self._accept_source(leg, r, &self.rnames[i]):
                leg.dropped += 1
                continue
            leg.last_rx_ns = now_ns
            leg.timed_out = 0
            if r:
                leg.rx.rtcp += 1
                kind = KIND_RTCP
            else:
                kind = rx_receive(&leg.rx, buf, length, arrival_in, &h, &self.queue, leg.serial, leg.which)
                if kind == KIND_INVALID:
                    leg.dropped += 1
                    continue
                if leg.rec != NULL and kind == KIND_RTP:
                    _capture(leg.rec, leg.which, buf, &h, now_ns)
            if not have_dest:
                leg.dropped += 1
                continue
            if kind == KIND_RTP and out.playing:
                out.held += 1  # a prompt plays to that leg: it replaces the bridged audio
                continue
            if kind == KIND_RTP and out.rewrite:
                tx_rewrite(&out.tx, buf, &h, arrival_out)
            self.siov[k].iov_base = buf
            self.siov[k].iov_len = length
            self.smsgs[k].msg_hdr.msg_name = &dest
            self.smsgs[k].msg_hdr.msg_namelen = sizeof(sockaddr_in)
            k += 1
        if self.queue.count and not self.ev_signalled:
            self._signal()
        if k == 0:
            return 0
        sent = 0
        while sent < k:
            s = sendmmsg(out.fd[r], self.smsgs + sent, k - sent, MSG_DONTWAIT)
            if s > 0:
                for i in range(sent, sent + s):
                    out.bytes_sent += self.siov[i].iov_len
                sent += s
            elif s < 0 and errno == EINTR:
                continue
            elif s < 0 and errno != EAGAIN:
                out.dropped += 1  # this datagram was refused (e.g. an ICMP error pending): skip it
                k -= 1
                if sent < k:
                    memcpy(&self.siov[sent], &self.siov[sent + 1], (k - sent) * sizeof(iovec))
            else:
                break
        if k > sent:
            out.dropped += k - sent  # the socket's send buffer is full: drop, never block
        if r:
            out.rtcp_sent += sent
        else:
            out.sent += sent
        self.forwarded += sent
        return sent

    cdef void _signal(self) noexcept nogil:
        cdef uint64_t one = 1
        self.ev_signalled = 1
        write(self.evfd, &one, 8)

    cdef int _accept_source(self, Leg *leg, int r, sockaddr_in *src) noexcept nogil:
        """Symmetric latching (RFC 4961 §3): may a datagram from ``src`` come in on this leg?"""
        cdef int same = (leg.peer[r].sin_addr.s_addr == src.sin_addr.s_addr
                         and leg.peer[r].sin_port == src.sin_port)
        if leg.has_peer[r] and same:
            leg.cand_count[r] = 0
            if not leg.confirmed[r]:
                leg.confirmed[r] = 1
                self._push(EV_LATCHED, leg, src.sin_addr.s_addr, ntohs(src.sin_port), r, 0)
            return 1
        if not leg.has_peer[r] or not leg.confirmed[r]:
            # nothing heard yet: the first source that sends is the peer (behind a NAT it is not the SDP's)
            leg.peer[r] = src[0]
            leg.has_peer[r] = 1
            leg.confirmed[r] = 1
            leg.cand_count[r] = 0
            self._push(EV_LATCHED, leg, src.sin_addr.s_addr, ntohs(src.sin_port), r, 0)
            return 1
        if (leg.cand_count[r] and leg.cand[r].sin_addr.s_addr == src.sin_addr.s_addr
                and leg.cand[r].sin_port == src.sin_port):
            leg.cand_count[r] += 1
        else:
            leg.cand[r] = src[0]
            leg.cand_count[r] = 1
        if leg.cand_count[r] >= leg.relatch_after:
            leg.peer[r] = src[0]
            leg.cand_count[r] = 0
            self._push(EV_LATCHED, leg, src.sin_addr.s_addr, ntohs(src.sin_port), r, 1)
            return 1
        return 0

    cdef void _scan_timeouts(self, int64_t now_ns) noexcept nogil:
        cdef int i
        cdef Leg *leg
        self.last_scan_ns = now_ns
        for i in range(self.nlegs):
            leg = &self.legs[i]
            if leg.active and leg.timeout_ns > 0 and not leg.timed_out and now_ns - leg.last_rx_ns >= leg.timeout_ns:
                leg.timed_out = 1
                self._push(EV_TIMEOUT, leg, <uint32_t>((now_ns - leg.last_rx_ns) // 1000000), 0, 0, 0)
        if self.queue.count and not self.ev_signalled:
            self._signal()

    cdef void _tick(self, int64_t now_ns) noexcept nogil:
        """The timer: frames of the prompts that are due, and the recordings' turn in Python."""
        cdef int i
        if self.playing_count:
            for i in range(self.nlegs):
                if self.legs[i].active and self.legs[i].playing:
                    self._play_leg(&self.legs[i], now_ns)
        if self.recording_count and now_ns - self.last_drain_ns >= DRAIN_EVERY_NS:
            self.rec_due = 1
        if not self.playing_count and not self.recording_count:
            self._arm_timer(0)
        if self.queue.count and not self.ev_signalled:
            self._signal()

    cdef void _play_leg(self, Leg *leg, int64_t now_ns) noexcept nogil:
        """Send the frames of the leg's prompt that are due by ``now_ns`` (frame k at start + k·ptime)."""
        cdef Playback *p = &leg.play
        cdef uint8_t pkt[12 + MAX_FRAME]
        cdef RtpHdr h
        cdef uint64_t due, skip
        cdef Py_ssize_t pos
        cdef ssize_t r
        cdef int n = 12 + p.frame_bytes
        if now_ns < p.start_ns:
            return
        due = p.base + <uint64_t>((now_ns - p.start_ns) // p.frame_ns) + 1
        if due > p.index + MAX_BURST:
            # the loop was held up: skip what is too late to send; the timestamps still mark the time
            skip = due - p.index - MAX_BURST
            p.index += skip
            p.ts += <uint32_t>(skip * <uint64_t>p.frame_bytes)
        while p.index < due:
            if p.index >= <uint64_t>p.frames and not p.loop:
                break
            pos = <Py_ssize_t>(p.index % <uint64_t>p.frames)
            pkt[0] = 0x80
            pkt[1] = <uint8_t>(p.payload_type | (0x80 if p.sent == 0 else 0))  # RFC 3551 §4.1: a talkspurt starts
            _put16(pkt + 2, p.seq & 0xFFFF)
            _put32(pkt + 4, p.ts)
            _put32(pkt + 8, p.src)
            memcpy(pkt + 12, p.data + pos * p.frame_bytes, p.frame_bytes)
            if leg.rewrite:
                h.ssrc = p.src
                h.seq = p.seq & 0xFFFF
                h.timestamp = p.ts
                tx_rewrite(&leg.tx, pkt, &h, _arrival_ns(now_ns, leg.tx.clock_rate))
            else:
                _put32(pkt + 8, leg.tx.ssrc)
            if leg.has_peer[0]:
                r = sendto(leg.fd[0], pkt, n, MSG_DONTWAIT, <sockaddr *>&leg.peer[0], sizeof(sockaddr_in))
                if r < 0:
                    leg.dropped += 1
                else:
                    leg.sent += 1
                    leg.bytes_sent += <uint64_t>n
            else:
                leg.dropped += 1  # no peer known yet: the prompt's time passes all the same
            p.index += 1
            p.sent += 1
            p.seq += 1
            p.ts += <uint32_t>p.frame_bytes
            p.last_ns = now_ns
        if p.index >= <uint64_t>p.frames and not p.loop:
            self._end_playback(leg, PLAY_DONE)

    cdef void _end_playback(self, Leg *leg, int reason) noexcept nogil:
        if not leg.playing:
            return
        leg.playing = 0
        self.playing_count -= 1
        self._push(EV_PLAYBACK, leg, leg.play.id, <uint32_t>leg.play.sent, reason, 0)

    cdef void _arm_timer(self, int on) noexcept nogil:
        cdef itimerspec spec
        if on == self.timer_armed or self.timerfd < 0:
            return
        memset(&spec, 0, sizeof(spec))
        if on:
            spec.it_value.tv_nsec = 1  # at once, then every tick
            spec.it_interval.tv_nsec = TICK_NS
        timerfd_settime(self.timerfd, 0, &spec, NULL)
        self.timer_armed = on

    cdef void _push(self, int kind, Leg *leg, uint32_t a, uint32_t b, uint32_t c, uint32_t d) noexcept nogil:
        queue_push(&self.queue, kind, leg.serial, leg.which, a, b, c, d)

    # -- helpers for the commands (GIL and mutex held) -------------------------------------------

    def _slot(self, relay_id) -> int:
        try:
            return self.relays[relay_id]
        except KeyError:
            raise KeyError(f"no relay {relay_id!r}") from None

    cdef int _open_pair(self, object port, int *fds, bint *reused) except -1:
        """Bind RTP on an even port and RTCP on the next one (their sockets into ``fds[0:2]``), or take
        the port's spare pair (``reused`` is set); a port None is searched for. Returns the RTP port."""
        cdef int span = (self.port_max - self.port_min + 1) // 2
        cdef int candidate
        if port is not None:
            if port & 1 or not (self.port_min <= port < self.port_max):
                raise ValueError(f"RTP port {port} must be even and within {self.port_min}-{self.port_max}")
            if port in self.ports:
                raise ValueError(f"port {port} is in use by another relay")
            reused[0] = self._take_spare(port, fds)
            if not reused[0]:
                self._bind_pair(port, fds, True)
            return port
        for _ in range(span):
            candidate = self.port_min + 2 * self.alloc_cursor
            self.alloc_cursor = (self.alloc_cursor + 1) % span
            if candidate + 1 > self.port_max or candidate in self.ports:
                continue
            if self._take_spare(candidate, fds):
                reused[0] = True
                return candidate
            if self._bind_pair(candidate, fds, False):
                return candidate
        raise RuntimeError(f"no free port pair in {self.port_min}-{self.port_max}")

    cdef bint _bind_pair(self, int port, int *fds, bint must) except -1:
        """Open and bind the pair's two sockets into ``fds[0:2]``; False (nothing left open) when a
        port is taken and ``must`` is not set."""
        cdef int fd, r, err, size = self.socket_buffer
        cdef sockaddr_in addr
        memset(&addr, 0, sizeof(addr))
        addr.sin_family = AF_INET
        addr.sin_addr = self.bind_addr
        for r in range(2):
            fd = self._new_socket()
            if fd < 0:
                err = errno
                if r:
                    close(fds[0])
                    fds[0] = -1
                raise OSError(err, os.strerror(err))
            if size > 0:
                setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof(int))
                setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof(int))
            addr.sin_port = htons(port + r)
            if bind(fd, <sockaddr *>&addr, sizeof(addr)) != 0:
                err = errno
                close(fd)
                if r:
                    close(fds[0])
                    fds[0] = -1
                if must:
                    raise OSError(err, f"{os.strerror(err)}: {self.host}:{port + r}")
                return False
            fds[r] = fd
        self.ports.add(port)
        return True

    cdef int _new_socket(self) noexcept:
        """A UDP socket, or -1 (errno set). Out of descriptors (EMFILE, ENFILE), the spare pairs are
        closed and the socket is asked for once more: they are a saving, not a need."""
        cdef int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)
        if fd < 0 and (errno == EMFILE or errno == ENFILE) and self.spares:
            self._close_spares()
            fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)
        return fd

    # Warm ports. A removed relay's pair stays bound and stays in the epoll set: its sockets are
    # modified (EPOLL_CTL_MOD; DEL then ADD cost nearly three times as much) to EPOLLONESHOT alone,
    # under a spare token. Without EPOLLIN a datagram that reaches a resting spare does not wake the
    # loop; an error would (epoll always reports them), once. A relay that takes the pair looks at its
    # sockets with one poll() under the mutex, empties those that are readable (_drain) and modifies
    # them to its legs' tokens (_empty_spares, then _init_leg). What queued while the pair rested never
    # reaches the new legs, but for what arrives between the poll() and the MODs, a microsecond or two
    # apart under the same mutex (or during a drain, after its last batch). The drain-then-ADD this
    # replaces let through what arrived between the drain, made before the mutex was awaited, and the
    # ADD. Marking spares from the loop's events instead of the poll() missed what the loop had not
    # handled yet: with serve() running, a datagram sent just before add_relay reached the new relay
    # one time in two. Stale tokens, returned by epoll_wait before a MOD and handled after it, do
    # nothing: a leg's fails its generation check, a spare's is never acted on. A pair closed instead
    # of kept (more than spare_pairs, out of descriptors, close()) is deleted from the set first: a copy
    # of the socket in a forked child would keep it there.

    cdef bint _take_spare(self, int port, int *fds) except -1:
        """The port's spare pair into ``fds[0:2]``; False when the port has none. It is still in the epoll
        set as a spare: ``_empty_spares`` discards what queued on it while it rested, ``_init_leg``
        watches it for the leg."""
        pair = self.spares.pop(port, None)
        if pair is None:
            return False
        fds[0], fds[1] = pair
        self.ports.add(port)
        return True

    cdef void _empty_spares(self, const int *fds, const bint *reused) noexcept:
        """(mutex held) Discard what reached the reused pairs among ``fds[0:4]`` (``reused[w]``: pair w)
        while they rested: one poll() of their sockets, a drain of each readable one (or holding an
        error, which the drain clears); of every one if poll() fails."""
        cdef pollfd p[4]
        cdef int n = 0, i, w, ready
        for w in range(2):
            if reused[w]:
                for i in range(2 * w, 2 * w + 2):
                    p[n].fd = fds[i]
                    p[n].events = POLLIN
                    p[n].revents = 0
                    n += 1
        if n == 0:
            return
        ready = poll(p, n, 0)
        while ready < 0 and errno == EINTR:
            ready = poll(p, n, 0)
        for i in range(n):
            if ready < 0 or p[i].revents:
                _drain(p[i].fd)

    cdef void _release_pair(self, int port, const int *fds, int how):
        """Free the port (-1: none) and the sockets ``fds[0:2]`` (-1: nothing) of a relay that is gone or
        was never added, as ``how`` says where they stand (PAIR_FRESH, PAIR_SPARE, PAIR_LEG). While there
        is room among the spares a removed relay's pair becomes one (the spares kept are the oldest,
        those a port allocator handing out the longest-released port first takes next), and a spare
        taken for a relay that was not added goes back; any other pair is taken out of the epoll set
        (if in it) and closed."""
        cdef epoll_event ev
        cdef int r
        if port >= 0:
            self.ports.discard(port)
        if port >= 0 and fds[0] >= 0 and fds[1] >= 0 and len(self.spares) < self.spare_pairs:
            if how == PAIR_SPARE:
                self.spares[port] = (fds[0], fds[1])  # as it was: in the set, under its spare token
                return
            if how == PAIR_LEG:
                ev.events = EPOLLONESHOT
                for r in range(2):
                    ev.data.u64 = SPARE_TOKEN | (<uint64_t>((port - self.port_min) >> 1) << 1) | <uint64_t>r
                    if epoll_ctl(self.epfd, EPOLL_CTL_MOD, fds[r], &ev) != 0:
                        break  # cannot happen (the socket is in the set): close the pair rather
                else:
                    self.spares[port] = (fds[0], fds[1])
                    return
        for r in range(2):
            if fds[r] >= 0:
                if how != PAIR_FRESH:
                    epoll_ctl(self.epfd, EPOLL_CTL_DEL, fds[r], NULL)
                close(fds[r])

    cdef void _close_spares(self) noexcept:
        """Close every spare pair, each socket deleted from the epoll set first."""
        cdef int fd
        if self.spares is None:
            return
        for pair in self.spares.values():
            for fd in pair:
                if self.epfd >= 0:
                    epoll_ctl(self.epfd, EPOLL_CTL_DEL, fd, NULL)
                close(fd)
        self.spares.clear()

    cdef int _init_leg(self, int i, uint64_t serial, int which, int port, const int *fds, uint32_t ssrc,
                       bint reused) except -1:
        """A leg on the sockets ``fds`` (RTP, RTCP) with the settings of _DEFAULTS, watched by epoll: added
        to the set, or, ``reused`` spares (emptied already), modified from their spare token to the leg's."""
        cdef Leg *leg = &self.legs[i]
        cdef uint32_t gen = leg.gen + 1
        cdef epoll_event ev
        cdef int r
        cdef int op = EPOLL_CTL_MOD if reused else EPOLL_CTL_ADD
        memset(leg, 0, sizeof(Leg))
        leg.gen = gen
        leg.serial = serial
        leg.which = which
        leg.port = port
        leg.fd[0] = fds[0]
        leg.fd[1] = fds[1]
        leg.partner = -1
        leg.rx.dtmf_pt = -1
        leg.rx.clock_rate = leg.tx.clock_rate = DEFAULT_CLOCK_RATE
        leg.tx.ts_step = DEFAULT_TS_STEP
        leg.tx.ssrc = ssrc
        leg.rewrite = 1
        leg.relatch_after = DEFAULT_RELATCH_AFTER
        leg.last_rx_ns = _monotonic_ns()
        leg.active = 1
        for r in range(2):
            ev.events = EPOLLIN
            ev.data.u64 = (<uint64_t>gen << 32) | (<uint64_t>i << 1) | <uint64_t>r
            if epoll_ctl(self.epfd, op, leg.fd[r], &ev) != 0:
                raise OSError(errno, os.strerror(errno))

    def _apply(self, int slot, int w, dict values):
        cdef Leg *leg = &self.legs[2 * slot + w]
        cdef int r
        meta = self.meta[slot][w]
        for name, value in values.items():
            if name == "peer" or name == "rtcp_peer":
                r = 0 if name == "peer" else 1
                if value is None:
                    leg.has_peer[r] = 0
                else:
                    self._address(value, &leg.peer[r])
                    leg.has_peer[r] = 1
                leg.confirmed[r] = 0  # the SDP's word: the first source that sends may replace it
                leg.cand_count[r] = 0
            elif name == "bridge":
                self._bridge(2 * slot + w, value)
            elif name == "ssrc":
                leg.tx.ssrc = int(value) & 0xFFFFFFFF
            elif name == "rewrite":
                leg.rewrite = 1 if value else 0
            elif name == "dtmf_pt":
                if value is not None and not 0 <= value <= 127:
                    raise ValueError(f"dtmf_pt {value} is not an RTP payload type (0-127)")
                leg.rx.dtmf_pt = -1 if value is None else value
            elif name == "clock_rate" or name == "ptime_ms":
                meta[name] = value
                rate = meta.get("clock_rate", 8000)
                step = int(rate * meta.get("ptime_ms", 20) // 1000)
                if rate < 1 or step < 1:
                    raise ValueError(f"clock_rate {rate} and ptime_ms {meta.get('ptime_ms')} give no packet")
                leg.rx.clock_rate = leg.tx.clock_rate = rate
                leg.tx.ts_step = step
            elif name == "relatch_after":
                leg.relatch_after = max(1, int(value))
            elif name == "timeout_ms":
                leg.timeout_ns = int(value or 0) * 1000000
                leg.timed_out = 0
            else:  # codec, one_way_delay_ms: used by the figures
                meta[name] = value

    cdef int _address(self, object value, sockaddr_in *out) except -1:
        host, port = value
        memset(out, 0, sizeof(sockaddr_in))
        out.sin_family = AF_INET
        if inet_pton(AF_INET, str(host).encode("ascii"), &out.sin_addr) != 1:
            raise ValueError(f"{host!r} is not an IPv4 address")
        if not 0 < int(port) < 65536:
            raise ValueError(f"port {port} is out of range")
        out.sin_port = htons(int(port))
        return 0

    def _bridge(self, int i, value):
        cdef Leg *leg = &self.legs[i]
        cdef int j
        if leg.partner >= 0 and self.legs[leg.partner].partner == i:
            self.legs[leg.partner].partner = -1
        leg.partner = -1
        if value is None:
            return
        other_id, other_leg = value
        if other_leg not in LEGS:
            raise ValueError(f"leg {other_leg!r} is not 'a' or 'b'")
        j = 2 * self._slot(other_id) + LEGS.index(other_leg)
        if j == i:
            raise ValueError("a leg cannot be bridged to itself")
        if self.legs[j].partner >= 0 and self.legs[j].partner != i:
            self.legs[self.legs[j].partner].partner = -1
        leg.partner = j
        self.legs[j].partner = i

    cdef object _leg_figures(self, const Leg *leg, dict meta):
        """The leg's ``LegFigures`` (as ``core.media.quality.leg_figures`` makes them from counters)."""
        cdef const Receiver *r = &leg.rx
        cdef int64_t expected = _expected(&r.stats)
        cdef int64_t lost = expected - <int64_t>(r.stats.received_prior + r.stats.received)
        loss, jitter_ms, r_factor, mos = reception_quality(
            expected, lost, r.stats.jitter_q4, r.clock_rate, meta["ptime_ms"], meta["codec"], meta["one_way_delay_ms"])
        return LegFigures(
            packets_received=r.packets, bytes_received=r.bytes, packets_expected=expected, packets_lost=lost,
            loss_percent=loss, jitter=r.stats.jitter_q4 >> 4, jitter_ms=jitter_ms, r_factor=r_factor, mos=mos,
            packets_sent=leg.sent, bytes_sent=leg.bytes_sent, packets_dropped=leg.dropped,
            packets_invalid=r.invalid, ssrc_changes=r.ssrc_changes, rtcp_received=r.rtcp,
            rtcp_sent=leg.rtcp_sent, dtmf_digits=r.digits)
