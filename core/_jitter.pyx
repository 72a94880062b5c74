"""The adaptive jitter buffer of call recordings in C (the twin of core/media/jitter.py, whose text is the
specification: playout by RTP timestamp, identity by sequence number, late/duplicate/overflow drops,
fading-repeat concealment, delay adapted to the transit spread of a window; RFC 3550 §6.4.1, A.8), and
``feed_records``: the recorder's per-packet and per-frame loop (core/media/recording.py
``CallRecording.feed``) over the engine's capture records, G.711 decoded by table (RFC 3551 §4.5.14)
straight into the buffers, frames written interleaved into the stereo block the WAV file gets.

Both do exactly what the Python twin does, bit for bit (tests/test_jitter_differential.py): the same
float expressions in the same order, the packets kept in the order the twin's dict keeps them, the
concealment ramp computed as numpy.linspace computes it. What is faster: no Python objects per packet or
frame (the samples live in per-packet C buffers, the window of transits is kept sorted, so its minimum
and quantile are reads rather than a sort per frame).
"""

from libc.stdint cimport int16_t, int64_t, uint8_t, uint16_t
from libc.string cimport memcpy, memmove, memset
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc

import numpy as np

from core.media.jitter import AUDIO, CONCEALED, IDLE, SILENCE, Frame

cdef int64_t M32 = 0xFFFFFFFF
_KINDS = (AUDIO, CONCEALED, SILENCE, IDLE)
_RESULTS = ("queued", "duplicate", "late", "overflow")
cdef object _tuple_new = tuple.__new__


cdef inline int64_t _signed32(int64_t value) noexcept:
    value &= M32
    return value - (<int64_t>1 << 32) if value & 0x80000000 else value


cdef inline bint _bit(const uint8_t* bits, int i) noexcept:
    return (bits[i >> 3] >> (i & 7)) & 1


cdef inline void _set(uint8_t* bits, int i) noexcept:
    bits[i >> 3] |= <uint8_t>(1 << (i & 7))


cdef inline void _clear(uint8_t* bits, int i) noexcept:
    bits[i >> 3] &= <uint8_t>~(1 << (i & 7))


cdef inline void _fill(int16_t* out, Py_ssize_t stride, const int16_t* samples, Py_ssize_t n) noexcept:
    cdef Py_ssize_t i
    if samples == NULL:
        for i in range(n):
            out[i * stride] = 0
    elif stride == 1:
        memcpy(out, samples, n * sizeof(int16_t))
    else:
        for i in range(n):
            out[i * stride] = samples[i]


cdef class JitterBuffer:
    """One leg's packets in, frames out (core/media/jitter.py's JitterBuffer, in C)."""

    def __cinit__(self):
        self._ring = self._sorted = NULL
        self._packets = NULL
        self._seqs = self._played_set = NULL
        self._last = self._scratch = NULL
        self._slots = 0

    def __init__(self, clock_rate=8000, frame_samples=160, *, min_delay=0.02, max_delay=0.3,
                 initial_delay=0.06, window=100, quantile=0.95, margin=0.01, adapt_every=10,
                 conceal_frames=3, idle_frames=50, drop_excess=0.08, capacity=512):
        if not 0 < min_delay <= initial_delay <= max_delay:
            raise ValueError("need 0 < min_delay <= initial_delay <= max_delay")
        if frame_samples <= 0 or clock_rate <= 0:
            raise ValueError("need a positive clock rate and frame size")
        self.rate = clock_rate
        self.n = frame_samples
        self.frame_seconds = frame_samples / clock_rate
        self.min_delay, self.max_delay, self.initial_delay = min_delay, max_delay, initial_delay
        self.quantile, self.margin, self.drop_excess = quantile, margin, drop_excess
        self._delay = initial_delay
        self.adapt_every, self.conceal_frames, self.idle_frames = adapt_every, conceal_frames, idle_frames
        self.capacity = capacity
        self.window = max(window, 0)
        self.silence = np.zeros(frame_samples, dtype=np.int16)
        self._ring = <double*>PyMem_Malloc(max(self.window, 1) * sizeof(double))
        self._sorted = <double*>PyMem_Malloc(max(self.window, 1) * sizeof(double))
        self._slots = max(capacity, 1)
        self._packets = <Packet*>PyMem_Malloc(self._slots * sizeof(Packet))
        self._seqs = <uint8_t*>PyMem_Malloc(SEQ_BYTES)
        self._played_set = <uint8_t*>PyMem_Malloc(SEQ_BYTES)
        self._last = <int16_t*>PyMem_Malloc(frame_samples * sizeof(int16_t))
        self._scratch = <int16_t*>PyMem_Malloc(frame_samples * sizeof(int16_t))
        if (self._ring == NULL or self._sorted == NULL or self._packets == NULL or self._seqs == NULL
                or self._played_set == NULL or self._last == NULL or self._scratch == NULL):
            raise MemoryError()
        memset(self._packets, 0, self._slots * sizeof(Packet))
        memset(self._seqs, 0, SEQ_BYTES)
        memset(self._played_set, 0, SEQ_BYTES)
        self._ring_head = self._ntransits = 0
        self._count = 0
        self._played_head = self._nplayed = 0
        self._has_ssrc = self._has_ts_last = self._started = self._has_last = False
        self._ssrc = self._ts_last = self._ext_last = self._next = 0
        self._missing_run = self._since_adapt = self._empty_ticks = 0
        self.c_received = self.c_played = self.c_late = self.c_duplicate = self.c_overflow = 0
        self.c_concealed = self.c_silent = self.c_stretched = self.c_compressed = 0
        self.c_discarded = self.c_resyncs = 0

    def __dealloc__(self):
        cdef Py_ssize_t i
        if self._packets != NULL:
            for i in range(self._slots):
                PyMem_Free(self._packets[i].samples)
            PyMem_Free(self._packets)
        PyMem_Free(self._ring)
        PyMem_Free(self._sorted)
        PyMem_Free(self._seqs)
        PyMem_Free(self._played_set)
        PyMem_Free(self._last)
        PyMem_Free(self._scratch)

    # -- in --------------------------------------------------------------------------------------

    def push(self, seq, timestamp, samples, now, ssrc=0):
        """A packet of ``samples`` (decoded, int16) that arrived at ``now``; returns what became of it:
        "queued", "duplicate", "late", "overflow"."""
        cdef const int16_t[::1] view = np.ascontiguousarray(samples, dtype=np.int16).reshape(-1)
        cdef const int16_t* data = &view[0] if view.shape[0] else NULL
        return _RESULTS[self.push_c(seq, timestamp, data, view.shape[0], now, ssrc)]

    cdef int push_c(self, int64_t seq, int64_t timestamp, const int16_t* samples, Py_ssize_t length,
                    double now, int64_t ssrc) except -1:
        cdef int64_t ext
        cdef double ahead
        cdef Py_ssize_t j
        cdef Packet* p
        cdef int16_t* grown
        self.c_received += 1
        seq &= 0xFFFF
        if self._has_ssrc and ssrc != self._ssrc:
            self._resync()
        self._ssrc = ssrc
        self._has_ssrc = True
        if not self._has_ts_last:
            ext = timestamp & M32
        else:
            ext = self._ext_last + _signed32(timestamp - self._ts_last)
        if self._started:
            ahead = <double>(ext - self._next) / <double>self.rate
            if ahead > self.max_delay + 1.0 or ahead < -(self.max_delay + 1.0):
                self._resync()  # another timeline (a jump of the sender's clock): start over
                ext = timestamp & M32
        if not self._has_ts_last or ext > self._ext_last:
            self._ts_last, self._ext_last = timestamp & M32, ext
            self._has_ts_last = True
        if _bit(self._seqs, <int>seq) or _bit(self._played_set, <int>seq):
            self.c_duplicate += 1
            return 1
        self._add_transit(now - <double>ext / <double>self.rate)  # a late packet counts: the delay must grow
        if self._started and ext + length <= self._next:
            self.c_late += 1
            return 2
        if self._count >= self.capacity:
            self.c_overflow += 1
            return 3
        j = self._find(ext)
        if j < 0:  # a new key goes last, as in a dict; the same timestamp again replaces in place
            j = self._count
            self._count += 1
        p = &self._packets[j]
        if p.cap < length:
            grown = <int16_t*>PyMem_Realloc(p.samples, length * sizeof(int16_t))
            if grown == NULL:
                raise MemoryError()
            p.samples, p.cap = grown, length
        p.ext, p.seq, p.length = ext, <int>seq, length
        if length:
            memcpy(p.samples, samples, length * sizeof(int16_t))
        _set(self._seqs, <int>seq)
        return 0

    # -- out -------------------------------------------------------------------------------------

    def pop(self, double now):
        """The frame to play at ``now`` (call it once per frame time)."""
        out = np.empty(self.n, dtype=np.int16)
        cdef int16_t[::1] view = out
        cdef int kind = self.pop_c(now, &view[0], 1)
        if kind >= K_SILENCE:
            return _tuple_new(Frame, (_KINDS[kind], self.silence))
        return _tuple_new(Frame, (_KINDS[kind], out))

    cdef int pop_c(self, double now, int16_t* out, Py_ssize_t stride) except -1:
        """The frame at ``now`` into out[0], out[stride], ...; its kind (K_AUDIO ...)."""
        cdef int64_t first
        cdef Py_ssize_t j
        cdef bint have
        cdef double delay, target, excess
        cdef int kind
        if not self._started:
            if self._count == 0:
                _fill(out, stride, NULL, self.n)
                return K_IDLE
            first = self._packets[0].ext
            for j in range(1, self._count):
                if self._packets[j].ext < first:
                    first = self._packets[j].ext
            if self._ntransits == 0:
                raise ValueError("min() arg is an empty sequence")  # what the twin says (window=0)
            if now < self._sorted[0] + <double>first / <double>self.rate + self._target_delay():
                _fill(out, stride, NULL, self.n)
                return K_IDLE
            self._started = True
            self._next = first
            self._since_adapt = 0
            self._empty_ticks = 0
        self._since_adapt += 1
        have = self._find(self._next) >= 0
        if self._since_adapt >= self.adapt_every and self._ntransits >= 10:
            delay = now - <double>self._next / <double>self.rate - self._sorted[0]
            self._delay = delay
            target = self._target_delay()
            if delay < target - self.frame_seconds / 2:
                self._since_adapt = 0
                self.c_stretched += 1
                return self._conceal(out, stride)  # the playout point stays: one frame more of delay
            excess = delay - target
            if self._find(self._next + self.n) >= 0 and (
                    (not have and excess > self.frame_seconds) or (have and excess > self.drop_excess)):
                self._since_adapt = 0
                self.c_compressed += 1
                self._drop_before(self._next + self.n)
                self._next += self.n
                have = self._find(self._next) >= 0
        kind = self._take(have, out, stride)
        self._next += self.n
        self._drop_before(self._next)
        if self._count == 0:
            self._empty_ticks += 1
            if self._empty_ticks >= self.idle_frames:
                self._started = False  # a long pause: the next packet starts a new talkspurt
                self._has_last = False
                self._missing_run = 0
        else:
            self._empty_ticks = 0
        return kind

    cdef int _take(self, bint have, int16_t* out, Py_ssize_t stride) except -1:
        cdef Py_ssize_t n = self.n, j, lo, hi, covered = 0
        cdef int64_t start = self._next, end
        cdef Packet* p
        cdef int seq, kind
        if have:
            j = self._find(start)
            p = &self._packets[j]
            if p.length == n:
                seq = p.seq
                kind = self._play(p.samples, out, stride)
                self._remove(j)
                self._retire(seq)
                return kind
        # packets of another size than a frame: gather the samples of [start, start + n), in the
        # order the twin's dict holds them (a later one overwrites an overlap)
        memset(self._scratch, 0, n * sizeof(int16_t))
        j = 0
        while j < self._count:
            p = &self._packets[j]
            end = p.ext + p.length
            lo = <Py_ssize_t>(p.ext if p.ext > start else start)
            hi = <Py_ssize_t>(end if end < start + n else start + n)
            if lo < hi:
                memcpy(self._scratch + (lo - start), p.samples + (lo - p.ext), (hi - lo) * sizeof(int16_t))
                covered += hi - lo
                if end <= start + n:
                    seq = p.seq
                    self._remove(j)
                    self._retire(seq)
                    continue
            j += 1
        if covered == 0:
            return self._conceal(out, stride)
        return self._play(self._scratch, out, stride)

    cdef int _play(self, const int16_t* samples, int16_t* out, Py_ssize_t stride) noexcept:
        self.c_played += 1
        if samples != self._last:
            memcpy(self._last, samples, self.n * sizeof(int16_t))
        self._has_last = True
        self._missing_run = 0
        _fill(out, stride, self._last, self.n)
        return K_AUDIO

    cdef int _conceal(self, int16_t* out, Py_ssize_t stride) noexcept:
        cdef int k, m = self.conceal_frames
        cdef double start, stop, step, ramp
        cdef Py_ssize_t i
        self._missing_run += 1
        k = self._missing_run
        if not self._has_last or k > m:
            self.c_silent += 1
            _fill(out, stride, NULL, self.n)
            return K_SILENCE
        self.c_concealed += 1
        # numpy.linspace(start, stop, n, endpoint=False) is arange(n) * ((stop - start) / n) + start
        start = 1.0 - <double>(k - 1) / <double>m
        stop = 1.0 - <double>k / <double>m
        step = (stop - start) / <double>self.n
        for i in range(self.n):
            ramp = <double>i * step
            ramp = ramp + start
            out[i * stride] = <int16_t>(<double>self._last[i] * ramp)
        return K_CONCEALED

    # -- helpers ---------------------------------------------------------------------------------

    cdef Py_ssize_t _find(self, int64_t ext) noexcept:
        cdef Py_ssize_t j
        for j in range(self._count):
            if self._packets[j].ext == ext:
                return j
        return -1

    cdef void _remove(self, Py_ssize_t j) noexcept:
        """Take packet j out of the order; its buffer goes to the spare end to be reused."""
        cdef Packet gone = self._packets[j]
        memmove(&self._packets[j], &self._packets[j + 1], (self._count - j - 1) * sizeof(Packet))
        self._count -= 1
        self._packets[self._count] = gone

    cdef void _retire(self, int seq) noexcept:
        _clear(self._seqs, seq)
        if self._nplayed == PLAYED_KEEP:
            _clear(self._played_set, self._played[self._played_head])
            self._played[self._played_head] = <uint16_t>seq
            self._played_head = (self._played_head + 1) % PLAYED_KEEP
        else:
            self._played[(self._played_head + self._nplayed) % PLAYED_KEEP] = <uint16_t>seq
            self._nplayed += 1
        _set(self._played_set, seq)

    cdef void _drop_before(self, int64_t limit) noexcept:
        cdef Py_ssize_t j = 0
        cdef int seq
        while j < self._count:
            if self._packets[j].ext + self._packets[j].length <= limit:
                seq = self._packets[j].seq
                self._remove(j)
                self._retire(seq)
                self.c_discarded += 1
            else:
                j += 1

    cdef void _add_transit(self, double value) noexcept:
        """The window (the twin's deque with maxlen) as a ring, and its values kept sorted."""
        cdef Py_ssize_t w = self.window, i, lo, hi, mid
        cdef double old
        if w == 0:
            return
        if self._ntransits == w:
            old = self._ring[self._ring_head]
            self._ring[self._ring_head] = value
            self._ring_head = (self._ring_head + 1) % w
            lo, hi = 0, w - 1
            while lo < hi:  # the first sorted value not below old: old itself
                mid = (lo + hi) >> 1
                if self._sorted[mid] < old:
                    lo = mid + 1
                else:
                    hi = mid
            memmove(&self._sorted[lo], &self._sorted[lo + 1], (w - lo - 1) * sizeof(double))
            self._ntransits -= 1
        else:
            self._ring[(self._ring_head + self._ntransits) % w] = value
        lo, hi = 0, self._ntransits
        while lo < hi:
            mid = (lo + hi) >> 1
            if self._sorted[mid] <= value:
                lo = mid + 1
            else:
                hi = mid
        memmove(&self._sorted[lo + 1], &self._sorted[lo], (self._ntransits - lo) * sizeof(double))
        self._sorted[lo] = value
        self._ntransits += 1

    cdef double _target_delay(self) noexcept:
        cdef Py_ssize_t count = self._ntransits, i
        cdef double value
        if count < 10:
            return self.initial_delay
        i = <Py_ssize_t>(self.quantile * count)
        if i > count - 1:
            i = count - 1
        if i < 0:
            i += count  # what a negative index does in the twin
        value = self._sorted[i] - self._sorted[0] + self.margin
        if self.min_delay > value:
            value = self.min_delay
        if value > self.max_delay:
            value = self.max_delay
        return value

    cdef void _resync(self) noexcept:
        self.c_resyncs += 1
        self._count = 0
        memset(self._seqs, 0, SEQ_BYTES)
        memset(self._played_set, 0, SEQ_BYTES)
        self._played_head = self._nplayed = 0
        self._ring_head = self._ntransits = 0
        self._has_ts_last = False
        self._started = False
        self._has_last = False
        self._missing_run = 0

    # -- figures ---------------------------------------------------------------------------------

    @property
    def counters(self):
        """The counters (a fresh dict; the twin's names and order)."""
        return {"received": self.c_received, "played": self.c_played, "late": self.c_late,
                "duplicate": self.c_duplicate, "overflow": self.c_overflow, "concealed": self.c_concealed,
                "silent": self.c_silent, "stretched": self.c_stretched, "compressed": self.c_compressed,
                "discarded": self.c_discarded, "resyncs": self.c_resyncs}

    @property
    def delay(self):
        """The playout delay (seconds) at the last adaptation check."""
        return self._delay

    @property
    def target_delay(self):
        """The delay the measured jitter asks for, within [min_delay, max_delay]."""
        return self._target_delay()

    @property
    def buffered(self):
        return self._count

    @property
    def started(self):
        return self._started


# The engine's capture records (core/media/recording.py CAPTURE_DTYPE, core/_rtp.pxd CaptureRec),
# little-endian: arrival_ns i8 @0, timestamp u4 @8, ssrc u4 @12, seq u2 @16, length u2 @18,
# payload_type u1 @20, marker @21, leg @22, pad @23, payload @24.
cdef enum:
    RECORD_BYTES = 512
    PAYLOAD_AT = 24
    PAYLOAD_BYTES = 488


cdef inline uint16_t _u16(const uint8_t* p) noexcept:
    return <uint16_t>(p[0] | (p[1] << 8))


cdef inline int64_t _u32(const uint8_t* p) noexcept:
    return <int64_t>p[0] | (<int64_t>p[1] << 8) | (<int64_t>p[2] << 16) | (<int64_t>p[3] << 24)


cdef inline int64_t _i64(const uint8_t* p) noexcept:
    return <int64_t>(<unsigned long long>_u32(p) | (<unsigned long long>_u32(p + 4) << 32))


cdef int64_t _play_until(JitterBuffer a, JitterBuffer b, int64_t next_tick_ns, int64_t until_ns,
                         int64_t tick_ns, int16_t[:, ::1] frames, Py_ssize_t* t) except? -1:
    """Pop both legs at every tick up to ``until_ns``, their frames side by side from row ``t[0]`` on;
    returns the next tick."""
    cdef double now
    while next_tick_ns <= until_ns:
        now = <double>next_tick_ns / 1e9
        next_tick_ns += tick_ns
        a.pop_c(now, &frames[t[0], 0], 2)
        b.pop_c(now, &frames[t[0], 1], 2)
        t[0] += a.n
    return next_tick_ns


def feed_records(JitterBuffer a, JitterBuffer b, records, long long next_tick_ns, long long tick_ns,
                 long long now_ns, ulaw, alaw):
    """``CallRecording.feed`` in C: push the capture ``records`` (in arrival order) into the buffers
    of leg a and leg b, payload type 0 decoded by ``ulaw``, 8 by ``alaw`` (int16[256] tables), and
    pop both buffers at every tick (``next_tick_ns``, then every ``tick_ns``) up to each packet's
    arrival and then up to ``now_ns``. Returns (samples: int16 array (ticks × frame samples, 2), the next
    tick, packets of other payload types)."""
    cdef const uint8_t[::1] raw = np.ascontiguousarray(records).view(np.uint8).reshape(-1)
    cdef const int16_t[::1] mu = np.ascontiguousarray(ulaw, dtype=np.int16)
    cdef const int16_t[::1] al = np.ascontiguousarray(alaw, dtype=np.int16)
    cdef Py_ssize_t count, i, t = 0, ticks, k, length
    cdef const uint8_t* rec
    cdef const int16_t* table
    cdef int16_t decoded[PAYLOAD_BYTES]
    cdef int64_t arrival, last = now_ns
    cdef long long other = 0
    cdef JitterBuffer leg
    cdef Py_ssize_t n = a.n
    if tick_ns <= 0:
        raise ValueError("tick_ns must be positive")
    if b.n != n:
        raise ValueError("both legs' buffers must have the same frame size")
    if mu.shape[0] < 256 or al.shape[0] < 256:
        raise ValueError("G.711 tables have 256 entries")
    if raw.shape[0] % RECORD_BYTES:
        raise ValueError("records are of 512 bytes (core/_rtp.pxd CaptureRec)")
    count = raw.shape[0] // RECORD_BYTES
    for i in range(count):
        arrival = _i64(&raw[i * RECORD_BYTES])
        if arrival > last:
            last = arrival
    ticks = (last - next_tick_ns) // tick_ns + 1 if last >= next_tick_ns else 0
    out = np.empty((ticks * n, 2), dtype=np.int16)
    cdef int16_t[:, ::1] frames = out
    for i in range(count):
        rec = &raw[i * RECORD_BYTES]
        arrival = _i64(rec)
        next_tick_ns = _play_until(a, b, next_tick_ns, arrival, tick_ns, frames, &t)
        if rec[20] == 0:
            table = &mu[0]
        elif rec[20] == 8:
            table = &al[0]
        else:
            other += 1
            continue
        length = _u16(rec + 18)
        if length > PAYLOAD_BYTES:
            length = PAYLOAD_BYTES
        for k in range(length):
            decoded[k] = table[rec[PAYLOAD_AT + k]]
        if rec[22] == 0:
            leg = a
        elif rec[22] == 1:
            leg = b
        else:
            raise IndexError("tuple index out of range")
        leg.push_c(_u16(rec + 16), _u32(rec + 8), decoded, length, <double>arrival / 1e9, _u32(rec + 12))
    next_tick_ns = _play_until(a, b, next_tick_ns, now_ns, tick_ns, frames, &t)
    return out, next_tick_ns, other
