"""Per-leg media quality: reception statistics (RFC 3550 §6.4.1, Appendix A.1 and A.8) and a listening
quality estimate from the ITU-T G.107 E-model (simplified), for the call record and the live figures.

- ``ReceptionStats`` follows one leg's incoming RTP across source changes: RFC 3550 A.1 sequence tracking
  (extended highest sequence number, 16-bit wrap counted in ``cycles``, restart after a large jump seen
  twice) gives packets expected and lost; A.8 gives the interarrival jitter, kept as in the RFC's integer
  form (``jitter_q4`` is the jitter scaled by 16, so the shifts stay exact). The Cython engine
  (core/_rtp.pyx) keeps the same figures in C with the same arithmetic; tests hold them equal.
- ``r_factor`` and ``mos``: R = 93.2 − Id − Ie,eff (G.107 §7 with the default values for everything the
  relay cannot see), Ie,eff from the codec's Ie and Bpl (G.113 Appendix I) and the packet loss (G.107
  §7.4, random loss: BurstR = 1), Id from the one-way delay by the Cole–Rosenbluth fit of G.107's delay
  curve, MOS from R by G.107 Annex B.
"""

from __future__ import annotations

import functools

import msgspec

RTP_SEQ_MOD = 1 << 16
MAX_DROPOUT = 3000  # RFC 3550 A.1: a jump forward under this is loss, not a restart
MAX_MISORDER = 100  # ... and a step back under this is reordering

# G.113 Appendix I (11/2007): equipment impairment Ie and packet-loss robustness Bpl per codec
# (with the codec's packet loss concealment; G.711 uses the Appendix I PLC of G.711).
CODECS: dict[str, tuple[float, float]] = {
    "PCMU": (0.0, 25.1),
    "PCMA": (0.0, 25.1),
    "G729": (11.0, 19.0),
    "G723": (15.0, 16.1),
    "GSM-EFR": (5.0, 10.0),
}


def _int32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


class ReceptionStats:
    """RFC 3550 A.1 (sequence numbers, loss) and A.8 (jitter) for the packets arriving on one leg.

    A leg outlives its sources (an IVR prompt, then an agent): each new SSRC or A.1 restart folds the
    run so far into ``expected_prior``/``received_prior``, so the leg's loss covers every source.
    """

    __slots__ = ("sources", "base_seq", "max_seq", "cycles", "bad_seq", "received", "expected_prior",
                 "received_prior", "transit", "have_transit", "jitter_q4")

    def __init__(self) -> None:
        self.sources = 0
        self.base_seq = self.max_seq = self.cycles = 0
        self.bad_seq = RTP_SEQ_MOD + 1
        self.received = self.expected_prior = self.received_prior = 0
        self.transit = 0
        self.have_transit = False
        self.jitter_q4 = 0

    def init_seq(self, seq: int) -> None:
        """Start a run at ``seq`` (a new source, or A.1's restart); the packet itself is then counted."""
        if self.sources:
            self.expected_prior += self.cycles + self.max_seq - self.base_seq + 1
            self.received_prior += self.received
        self.sources += 1
        self.base_seq = self.max_seq = seq
        self.bad_seq = RTP_SEQ_MOD + 1
        self.cycles = 0
        self.received = 1
        self.have_transit = False

    def update_seq(self, seq: int) -> bool:
        """RFC 3550 A.1 ``update_seq`` (no probation: the relay starts counting at the first packet).
        False when the packet is outside the run (a jump seen once); it is then not counted."""
        udelta = (seq - self.max_seq) & 0xFFFF
        if udelta < MAX_DROPOUT:
            if seq < self.max_seq:  # in order, with permissible gap, wrapped
                self.cycles += RTP_SEQ_MOD
            self.max_seq = seq
        elif udelta <= RTP_SEQ_MOD - MAX_MISORDER:
            if seq == self.bad_seq:  # two in a row after a big jump: the sender restarted
                self.init_seq(seq)
                return True
            self.bad_seq = (seq + 1) & 0xFFFF
            return False
        # else: a duplicate or a reordered packet; counted, max_seq kept
        self.received += 1
        return True

    def update_jitter(self, timestamp: int, arrival: int) -> None:
        """RFC 3550 A.8, integer form: J += |D| − J/16, with D the change in transit time; ``arrival``
        is the arrival time in the same timestamp units (modulo 2^32)."""
        transit = _int32(arrival - timestamp)
        if self.have_transit:
            d = abs(_int32(transit - self.transit))
            self.jitter_q4 += d - ((self.jitter_q4 + 8) >> 4)
        self.transit = transit
        self.have_transit = True

    @property
    def expected(self) -> int:
        if not self.sources:
            return 0
        return self.expected_prior + self.cycles + self.max_seq - self.base_seq + 1

    @property
    def counted(self) -> int:
        return self.received_prior + self.received

    @property
    def lost(self) -> int:
        """Expected minus received (RFC 3550 A.3): negative when duplicates outnumber losses."""
        return self.expected - self.counted

    @property
    def jitter(self) -> int:
        """Interarrival jitter in timestamp units, as an RTCP report block carries it."""
        return self.jitter_q4 >> 4


def delay_impairment(delay_ms: float) -> float:
    """Id from the one-way mouth-to-ear delay: Cole & Rosenbluth's fit of the G.107 curve (echo
    cancelled): 0.024·d + 0.11·(d − 177.3)·H(d − 177.3)."""
    d = max(0.0, delay_ms)
    return 0.024 * d + (0.11 * (d - 177.3) if d > 177.3 else 0.0)


def effective_equipment_impairment(codec: str, loss_percent: float, burst_r: float = 1.0) -> float:
    """Ie,eff = Ie + (95 − Ie) · Ppl / (Ppl / BurstR + Bpl)  (G.107 §7.4)."""
    ie, bpl = CODECS.get(codec, CODECS["PCMU"])
    ppl = min(100.0, max(0.0, loss_percent))
    return ie + (95.0 - ie) * ppl / (ppl / burst_r + bpl)


def r_factor(loss_percent: float, delay_ms: float, codec: str = "PCMU") -> float:
    """The transmission rating R = 93.2 − Id − Ie,eff (G.107 with default values elsewhere)."""
    return 93.2 - delay_impairment(delay_ms) - effective_equipment_impairment(codec, loss_percent)


def mos_from_r(r: float) -> float:
    """G.107 Annex B: MOS_CQE from R (the cubic dips under 1 for R < 6.5: held at 1)."""
    if r <= 0:
        return 1.0
    if r >= 100:
        return 4.5
    return max(1.0, 1.0 + 0.035 * r + r * (r - 60.0) * (100.0 - r) * 7e-6)


class LegFigures(msgspec.Struct, frozen=True, gc=False):
    """One leg's figures for the call record: what arrived on the leg (loss, jitter, MOS of the
    incoming audio) and what the relay sent out of it."""

    packets_received: int = 0
    bytes_received: int = 0
    packets_expected: int = 0
    packets_lost: int = 0
    loss_percent: float = 0.0
    jitter: int = 0            # timestamp units (RFC 3550 A.8)
    jitter_ms: float = 0.0
    r_factor: float = 0.0
    mos: float = 0.0
    packets_sent: int = 0
    bytes_sent: int = 0
    packets_dropped: int = 0   # from an unlatched source, unbridged, malformed or not sent
    packets_invalid: int = 0
    ssrc_changes: int = 0
    rtcp_received: int = 0
    rtcp_sent: int = 0
    dtmf_digits: int = 0


@functools.lru_cache(maxsize=1024)
def reception_quality(expected: int, lost: int, jitter_q4: int, clock_rate: int = 8000, ptime_ms: float = 20.0,
                      codec: str = "PCMU", one_way_delay_ms: float = 0.0) -> tuple[float, float, float, float]:
    """``(loss_percent, jitter_ms, r_factor, mos)`` of the packets a leg received: ``expected`` and
    ``lost`` as RFC 3550 A.3 counts them, ``jitter_q4`` the A.8 jitter scaled by 16.

    The relay cannot see mouth-to-ear delay; it is estimated as the given network delay + one packet
    (packetisation) + a jitter buffer of twice the measured jitter (at least one packet).
    Remembered: many legs come out alike (every leg that carried no packet, with the same codec and
    packet time), and the E-model was the larger part of a released relay's figures."""
    loss = 100.0 * max(0, lost) / expected if expected > 0 else 0.0
    jitter_ms = jitter_q4 / 16.0 * 1000.0 / clock_rate
    delay = one_way_delay_ms + ptime_ms + max(ptime_ms, 2.0 * jitter_ms)
    r = r_factor(loss, delay, codec)
    return loss, jitter_ms, r, mos_from_r(r)


def leg_figures(counters: dict, *, clock_rate: int = 8000, ptime_ms: float = 20.0, codec: str = "PCMU",
                one_way_delay_ms: float = 0.0) -> LegFigures:
    """Figures from raw counters (the keys of ``RtpReceiver.counters()``; the engine's legs give the
    same figures from their C counters)."""
    get = counters.get
    expected = get("packets_expected", 0)
    lost = get("packets_lost", 0)
    jitter_q4 = get("jitter_q4", 0)
    loss, jitter_ms, r, mos = reception_quality(expected, lost, jitter_q4, clock_rate, ptime_ms, codec,
                                                one_way_delay_ms)
    return LegFigures(
        packets_received=get("packets_received", 0),
        bytes_received=get("bytes_received", 0),
        packets_expected=expected,
        packets_lost=lost,
        loss_percent=loss,
        jitter=jitter_q4 >> 4,
        jitter_ms=jitter_ms,
        r_factor=r,
        mos=mos,
        packets_sent=get("packets_sent", 0),
        bytes_sent=get("bytes_sent", 0),
        packets_dropped=get("packets_dropped", 0),
        packets_invalid=get("packets_invalid", 0),
        ssrc_changes=get("ssrc_changes", 0),
        rtcp_received=get("rtcp_received", 0),
        rtcp_sent=get("rtcp_sent", 0),
        dtmf_digits=get("dtmf_digits", 0),
    )
