# What C sees of the recording's jitter buffer (core/_jitter.pyx, the twin of core/media/jitter.py):
# the packets held as structs in insertion order (the order the twin's dict keeps), each with its own
# sample buffer; sequence numbers in the buffer and recently played as bitmaps of the 16-bit space;
# the window of transit times kept sorted, so its minimum and quantile are array reads.

from libc.stdint cimport int16_t, int64_t, uint8_t, uint16_t

cdef enum FrameKind:
    K_AUDIO = 0
    K_CONCEALED = 1
    K_SILENCE = 2
    K_IDLE = 3

cdef enum:
    PLAYED_KEEP = 256       # recently played sequence numbers remembered (the twin's deque maxlen)
    SEQ_BYTES = 8192        # 65536 bits

cdef struct Packet:
    int64_t ext             # extended timestamp
    int seq
    Py_ssize_t length       # samples
    Py_ssize_t cap          # room in samples
    int16_t* samples

cdef class JitterBuffer:
    cdef readonly int rate
    cdef readonly int n
    cdef readonly double frame_seconds
    cdef readonly double min_delay, max_delay, initial_delay, quantile, margin, drop_excess
    cdef readonly int adapt_every, conceal_frames, idle_frames, capacity, window
    cdef readonly object silence
    cdef double _delay
    # the window of transits: in arrival order (a ring) and sorted
    cdef double* _ring
    cdef double* _sorted
    cdef Py_ssize_t _ring_head, _ntransits
    # the buffer: _packets[0:_count] in insertion order, _packets[_count:_slots] spare (their buffers kept)
    cdef Packet* _packets
    cdef Py_ssize_t _count, _slots
    cdef uint8_t* _seqs           # bitmap: in the buffer
    cdef uint8_t* _played_set     # bitmap: recently played
    cdef uint16_t _played[PLAYED_KEEP]
    cdef Py_ssize_t _played_head, _nplayed
    cdef bint _has_ssrc, _has_ts_last, _started, _has_last
    cdef int64_t _ssrc, _ts_last, _ext_last, _next
    cdef int16_t* _last
    cdef int16_t* _scratch
    cdef int _missing_run, _since_adapt, _empty_ticks
    cdef readonly long long c_received, c_played, c_late, c_duplicate, c_overflow, c_concealed, c_silent
    cdef readonly long long c_stretched, c_compressed, c_discarded, c_resyncs

    cdef int push_c(self, int64_t seq, int64_t timestamp, const int16_t* samples, Py_ssize_t length,
                    double now, int64_t ssrc) except -1
    cdef int pop_c(self, double now, int16_t* out, Py_ssize_t stride) except -1
    cdef int _take(self, bint have, int16_t* out, Py_ssize_t stride) except -1
    cdef int _play(self, const int16_t* samples, int16_t* out, Py_ssize_t stride) noexcept
    cdef int _conceal(self, int16_t* out, Py_ssize_t stride) noexcept
    cdef void _retire(self, int seq) noexcept
    cdef void _remove(self, Py_ssize_t j) noexcept
    cdef Py_ssize_t _find(self, int64_t ext) noexcept
    cdef void _drop_before(self, int64_t limit) noexcept
    cdef double _target_delay(self) noexcept
    cdef void _add_transit(self, double value) noexcept
    cdef void _resync(self) noexcept
