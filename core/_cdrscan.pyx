"""Stored call records (core.cdr.record) read straight from their MessagePack bytes, without a Python object
per record: into numpy columns for the KPIs (core.cdr.kpi.Columns), into CSV rows and into JSON lines for the
export (bindings.reports).

A stored ``CallRecord`` is a MessagePack array of its fields in declaration order (``array_like=True``);
nested Structs (``Leg``, ``QueueSegment``) are nested arrays, ``None`` is nil, an enumeration is its value
(a string). Fields are only ever appended with a default, so a record written by an older version is a
shorter array (the missing trailing fields take their defaults) and one written by a newer version a longer
one (the extra fields are skipped) — msgspec's rules for array-like structs, followed here. Where each field
sits is read from the Struct definitions when this module is imported, never written down twice.

Each reader here has a pure-Python twin that is its specification and its oracle in the tests:
``scan_columns`` ↔ ``core.cdr.kpi.Columns.from_records(decode_views(...))``, ``csv_rows`` ↔
``bindings.reports.write_csv``'s per-view rows, ``json_lines`` ↔ ``write_jsonl``'s msgspec conversion,
``tally`` (every dimension's KPI counters from the columns in one pass) ↔ ``KpiBook.add_columns``'s numpy. The
output is the same to the byte (the differential tests say so). Anything this reader does not handle exactly
as its twin would — a value of an unexpected type, a time numpy would print differently, a character the csv
module treats in an unforeseen way — raises ``Unsupported`` before anything of the batch is returned, and the
caller hands that batch to the twin, which gives the same output or the error msgspec gives.

Floats are formatted by the routines CPython and msgspec themselves use: ``PyOS_double_to_string`` (what
``f"{x:.3f}"`` calls) for CSV, and for JSON one ``msgspec.json.encode`` of all of a batch's floats at once,
split at the commas (so every float is written exactly as msgspec writes it, at the cost of two passes).
"""
import csv
import enum
import io
import typing

import msgspec
import numpy as np

from core.cdr.record import CallRecord, Direction, Disposition, Leg, QueueOutcome, QueueSegment

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.math cimport NAN, fabs, floor, isnan, rint
from libc.stdint cimport int8_t, int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcmp, memcpy, memset, strlen

cdef extern from "Python.h":
    char* PyOS_double_to_string(double val, char format_code, int precision, int flags, int* ptype) except NULL
    void PyMem_Free(void* p)

__all__ = ["Unsupported", "scan_columns", "tally", "TALLY_DIMENSIONS", "TALLY_FIELDS", "csv_rows", "json_lines",
           "CSV_QUOTED"]


class Unsupported(ValueError):
    """This batch is not one the compiled reader reproduces exactly: read it with the pure-Python twin."""


# ============================================================================================ MessagePack


cdef inline uint16_t _be16(const uint8_t* p) noexcept nogil:
    return (<uint16_t>p[0] << 8) | p[1]


cdef inline uint32_t _be32(const uint8_t* p) noexcept nogil:
    return (<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8) | p[3]


cdef inline uint64_t _be64(const uint8_t* p) noexcept nogil:
    return (<uint64_t>_be32(p) << 32) | _be32(p + 4)


cdef int _truncated() except -1:
    raise Unsupported("truncated MessagePack value")


cdef inline int _take(Cursor* c, Py_ssize_t n) except -1:
    if c.end - c.p < n:
        _truncated()
    return 0


cdef int read_value(Cursor* c, Value* v) except -1:
    """One MessagePack header; a string or binary is consumed whole, an array or map is only opened."""
    cdef uint8_t b
    cdef uint32_t bits32
    cdef uint64_t bits64
    cdef float f32
    cdef Py_ssize_t n
    if c.p >= c.end:
        _truncated()
    b = c.p[0]
    c.p += 1
    if b <= 0x7f:
        v.kind = K_UINT
        v.u = b
        return 0
    if b >= 0xe0:
        v.kind = K_INT
        v.i = <int8_t>b
        return 0
    if b >= 0xa0 and b <= 0xbf:
        n = b & 0x1f
        v.kind = K_STR
    elif b >= 0x90 and b <= 0x9f:
        v.kind = K_ARRAY
        v.n = b & 0x0f
        return 0
    elif b >= 0x80 and b <= 0x8f:
        v.kind = K_MAP
        v.n = b & 0x0f
        return 0
    elif b == 0xc0:
        v.kind = K_NIL
        return 0
    elif b == 0xc2 or b == 0xc3:
        v.kind = K_BOOL
        v.u = b - 0xc2
        return 0
    elif b == 0xcb:
        _take(c, 8)
        bits64 = _be64(c.p)
        memcpy(&v.f, &bits64, 8)
        c.p += 8
        v.kind = K_FLOAT
        return 0
    elif b == 0xca:
        _take(c, 4)
        bits32 = _be32(c.p)
        memcpy(&f32, &bits32, 4)
        v.f = f32
        c.p += 4
        v.kind = K_FLOAT
        return 0
    elif b >= 0xcc and b <= 0xcf:
        n = 1 << (b - 0xcc)
        _take(c, n)
        v.kind = K_UINT
        v.u = c.p[0] if n == 1 else _be16(c.p) if n == 2 else _be32(c.p) if n == 4 else _be64(c.p)
        c.p += n
        return 0
    elif b >= 0xd0 and b <= 0xd3:
        n = 1 << (b - 0xd0)
        _take(c, n)
        v.kind = K_INT
        v.i = (<int8_t>c.p[0] if n == 1 else <int16_t>_be16(c.p) if n == 2 else <int32_t>_be32(c.p) if n == 4
               else <int64_t>_be64(c.p))
        c.p += n
        if v.i >= 0:  # a non-negative int is an int whatever its encoding
            v.kind = K_UINT
            v.u = <uint64_t>v.i
        return 0
    elif b == 0xd9 or b == 0xc4:
        _take(c, 1)
        n = c.p[0]
        c.p += 1
        v.kind = K_STR if b == 0xd9 else K_BIN
    elif b == 0xda or b == 0xc5:
        _take(c, 2)
        n = _be16(c.p)
        c.p += 2
        v.kind = K_STR if b == 0xda else K_BIN
    elif b == 0xdb or b == 0xc6:
        _take(c, 4)
        n = _be32(c.p)
        c.p += 4
        v.kind = K_STR if b == 0xdb else K_BIN
    elif b == 0xdc or b == 0xde:
        _take(c, 2)
        v.n = _be16(c.p)
        c.p += 2
        v.kind = K_ARRAY if b == 0xdc else K_MAP
        return 0
    elif b == 0xdd or b == 0xdf:
        _take(c, 4)
        v.n = _be32(c.p)
        c.p += 4
        v.kind = K_ARRAY if b == 0xdd else K_MAP
        return 0
    elif b >= 0xd4 and b <= 0xd8:  # fixext 1..16: a type byte, then the data
        n = (1 << (b - 0xd4)) + 1
        _take(c, n)
        c.p += n
        v.kind = K_EXT
        return 0
    elif b >= 0xc7 and b <= 0xc9:  # ext 8/16/32
        n = 1 << (b - 0xc7)
        _take(c, n)
        n = c.p[0] if b == 0xc7 else _be16(c.p) if b == 0xc8 else _be32(c.p)
        c.p += (1 << (b - 0xc7))
        _take(c, n + 1)
        c.p += n + 1
        v.kind = K_EXT
        return 0
    else:  # 0xc1 is never used
        raise Unsupported(f"invalid MessagePack byte 0x{b:02x}")
    _take(c, n)
    v.s = c.p
    v.n = n
    c.p += n
    return 0


cdef int skip_value(Cursor* c, int depth) except -1:
    cdef Value v
    cdef Py_ssize_t i, n
    cdef uint8_t b
    if depth > 64:
        raise Unsupported("MessagePack nested too deep")
    if c.p < c.end:
        # The common shapes of a stored record, without filling a Value: short strings, doubles, nil,
        # small ints, short arrays.
        b = c.p[0]
        if 0xa0 <= b <= 0xbf:
            n = b & 0x1f
            if c.end - c.p > n:
                c.p += n + 1
                return 0
        elif b == 0xcb:
            if c.end - c.p > 8:
                c.p += 9
                return 0
        elif b <= 0x7f or b >= 0xe0 or b == 0xc0 or b == 0xc2 or b == 0xc3:
            c.p += 1
            return 0
        elif 0x90 <= b <= 0x9f:
            c.p += 1
            for i in range(b & 0x0f):
                skip_value(c, depth + 1)
            return 0
    read_value(c, &v)
    if v.kind == K_ARRAY:
        for i in range(v.n):
            skip_value(c, depth + 1)
    elif v.kind == K_MAP:
        for i in range(2 * v.n):
            skip_value(c, depth + 1)
    return 0


cdef inline int read_str(Cursor* c, Slice* s) except -1:
    cdef Value v
    cdef Py_ssize_t n
    if c.p < c.end and 0xa0 <= c.p[0] <= 0xbf:  # fixstr, the usual
        n = c.p[0] & 0x1f
        if c.end - c.p > n:
            s.p = c.p + 1
            s.n = n
            c.p += n + 1
            return 0
    read_value(c, &v)
    if v.kind != K_STR:
        raise Unsupported("expected a string")
    s.p = v.s
    s.n = v.n
    return 0


cdef int read_utf8(Cursor* c, Slice* s) except -1:
    # A string field that is read only to be checked, as msgspec checks it.
    cdef Py_ssize_t i
    read_str(c, s)
    for i in range(s.n):
        if s.p[i] >= 0x80:
            if not utf8_valid(s.p, s.n):
                raise Unsupported("a string that is not UTF-8")
            break
    return 0


cdef inline Py_ssize_t read_array(Cursor* c) except -1:
    cdef Value v
    if c.p < c.end and 0x90 <= c.p[0] <= 0x9f:  # fixarray, the usual
        c.p += 1
        return c.p[-1] & 0x0f
    read_value(c, &v)
    if v.kind != K_ARRAY:
        raise Unsupported("expected an array")
    return v.n


cdef inline int read_float(Cursor* c, double* x, bint optional) except -1:
    """A float field (msgspec takes an int for a float); 1 when nil (x is NaN then), else 0."""
    cdef Value v
    cdef uint64_t bits
    if c.end - c.p > 8 and c.p[0] == 0xcb:  # float 64, the usual
        bits = _be64(c.p + 1)
        memcpy(x, &bits, 8)
        c.p += 9
        return 0
    read_value(c, &v)
    if v.kind == K_FLOAT:
        x[0] = v.f
    elif v.kind == K_UINT:
        x[0] = <double>v.u
    elif v.kind == K_INT:
        x[0] = <double>v.i
    elif v.kind == K_NIL and optional:
        x[0] = NAN
        return 1
    else:
        raise Unsupported("expected a float")
    return 0


# ============================================================================================ buffers


cdef int vec_init(Vec* v, Py_ssize_t size) except -1:
    v.data = NULL
    v.n = 0
    v.cap = 0
    v.size = size
    return 0


cdef int vec_reserve(Vec* v, Py_ssize_t need) except -1:
    cdef Py_ssize_t cap
    cdef char* p
    if need <= v.cap:
        return 0
    cap = v.cap * 2
    if cap < need:
        cap = need
    if cap < 64:
        cap = 64
    p = <char*>realloc(v.data, cap * v.size)
    if p == NULL:
        raise MemoryError()
    v.data = p
    v.cap = cap
    return 0


cdef inline int push_f64(Vec* v, double x) except -1:
    if v.n == v.cap:
        vec_reserve(v, v.n + 1)
    (<double*>v.data)[v.n] = x
    v.n += 1
    return 0


cdef inline int push_i64(Vec* v, int64_t x) except -1:
    if v.n == v.cap:
        vec_reserve(v, v.n + 1)
    (<int64_t*>v.data)[v.n] = x
    v.n += 1
    return 0


cdef inline int push_i32(Vec* v, int32_t x) except -1:
    if v.n == v.cap:
        vec_reserve(v, v.n + 1)
    (<int32_t*>v.data)[v.n] = x
    v.n += 1
    return 0


cdef inline int push_i8(Vec* v, int8_t x) except -1:
    if v.n == v.cap:
        vec_reserve(v, v.n + 1)
    (<int8_t*>v.data)[v.n] = x
    v.n += 1
    return 0


cdef object vec_array(Vec* v, object dtype):
    arr = np.empty(v.n, dtype=dtype)
    cdef unsigned char[::1] raw
    if v.n:
        raw = arr.view(np.uint8)
        memcpy(&raw[0], v.data, v.n * v.size)
    return arr


cdef int buf_reserve(Buf* b, Py_ssize_t extra) except -1:
    cdef Py_ssize_t cap
    cdef char* p
    if b.n + extra <= b.cap:
        return 0
    cap = b.cap * 2
    if cap < b.n + extra:
        cap = b.n + extra
    if cap < 4096:
        cap = 4096
    p = <char*>realloc(b.data, cap)
    if p == NULL:
        raise MemoryError()
    b.data = p
    b.cap = cap
    return 0


cdef inline int put(Buf* b, const char* s, Py_ssize_t n) except -1:
    if b.n + n > b.cap:
        buf_reserve(b, n)
    memcpy(b.data + b.n, s, n)
    b.n += n
    return 0


cdef inline int putc(Buf* b, char ch) except -1:
    if b.n + 1 > b.cap:
        buf_reserve(b, 1)
    b.data[b.n] = ch
    b.n += 1
    return 0


cdef int put_uint(Buf* b, uint64_t x) except -1:
    cdef char tmp[24]
    cdef int i = 24
    while True:
        i -= 1
        tmp[i] = <char>(48 + x % 10)
        x //= 10
        if x == 0:
            break
    return put(b, tmp + i, 24 - i)


cdef int put_int(Buf* b, int64_t x) except -1:
    if x < 0:
        putc(b, b'-')
        return put_uint(b, (<uint64_t>0) - <uint64_t>x)
    return put_uint(b, <uint64_t>x)


cdef int put_fixed(Buf* b, double x, int precision) except -1:
    # Exactly f"{x:.{precision}f}": format() calls this with these arguments (Python/formatter_unicode.c).
    cdef char* s = PyOS_double_to_string(x, b'f', precision, 0, NULL)
    try:
        put(b, s, strlen(s))
    finally:
        PyMem_Free(s)
    return 0


cdef inline int put_digits(char* p, int64_t x, int width) noexcept nogil:
    cdef int i
    for i in range(width - 1, -1, -1):
        p[i] = <char>(48 + x % 10)
        x //= 10
    return 0


cdef int put_iso_ms(Buf* b, double t) except -1:
    """numpy's datetime_as_string(floor(t * 1000) as datetime64[ms], unit="ms", timezone="UTC")."""
    cdef double ms_f = floor(t * 1000.0)
    cdef int64_t ms, days, z, era, doe, yoe, y, doy, mp, d, m, rem
    cdef char out[24]
    if not (ms_f >= 0.0 and ms_f < 253402300800000.0):  # 1970 .. 9999: numpy's 4-digit years; NaN fails too
        raise Unsupported("time outside 1970-9999")
    ms = <int64_t>ms_f
    days = ms // 86400000
    rem = ms - days * 86400000
    # Civil date from days since 1970-01-01 (H. Hinnant's algorithm; proleptic Gregorian, as numpy).
    z = days + 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    y = yoe + era * 400
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    if m <= 2:
        y += 1
    put_digits(out, y, 4)
    out[4] = b'-'
    put_digits(out + 5, m, 2)
    out[7] = b'-'
    put_digits(out + 8, d, 2)
    out[10] = b'T'
    put_digits(out + 11, rem // 3600000, 2)
    out[13] = b':'
    put_digits(out + 14, (rem // 60000) % 60, 2)
    out[16] = b':'
    put_digits(out + 17, (rem // 1000) % 60, 2)
    out[19] = b'.'
    put_digits(out + 20, rem % 1000, 3)
    out[23] = b'Z'
    return put(b, out, 24)


cdef bint utf8_valid(const uint8_t* p, Py_ssize_t n) noexcept nogil:
    # Strict UTF-8 (no overlongs, no surrogates, nothing above U+10FFFF): what msgspec accepts in a str.
    cdef Py_ssize_t i = 0, k, j
    cdef uint8_t b, lo, hi
    while i < n:
        b = p[i]
        if b < 0x80:
            i += 1
            continue
        lo, hi = 0x80, 0xbf
        if 0xc2 <= b <= 0xdf:
            k = 1
        elif b == 0xe0:
            k, lo = 2, 0xa0
        elif 0xe1 <= b <= 0xec or 0xee <= b <= 0xef:
            k = 2
        elif b == 0xed:
            k, hi = 2, 0x9f
        elif b == 0xf0:
            k, lo = 3, 0x90
        elif 0xf1 <= b <= 0xf3:
            k = 3
        elif b == 0xf4:
            k, hi = 3, 0x8f
        else:
            return False
        if i + k >= n:
            return False
        if p[i + 1] < lo or p[i + 1] > hi:
            return False
        for j in range(2, k + 1):
            if p[i + j] < 0x80 or p[i + j] > 0xbf:
                return False
        i += k + 1
    return True


# ============================================================================================ names


cdef inline uint64_t _fnv1a(const uint8_t* s, Py_ssize_t n) noexcept nogil:
    cdef uint64_t h = 14695981039346656037ULL
    cdef Py_ssize_t i
    for i in range(n):
        h = (h ^ s[i]) * 1099511628211ULL
    return h


cdef class NameTable:
    """Codes for names, "" first (code 0): the ``names`` list of core.cdr.kpi.Columns, built without a
    Python string per record — only a new name becomes one."""

    def __cinit__(self, values=(), frozen=False):
        self.mask = 63
        self.slots = <Py_ssize_t*>malloc(64 * sizeof(Py_ssize_t))
        self.room = 16
        self.hashes = <uint64_t*>malloc(self.room * sizeof(uint64_t))
        self.offsets = <Py_ssize_t*>malloc(self.room * sizeof(Py_ssize_t))
        self.lengths = <Py_ssize_t*>malloc(self.room * sizeof(Py_ssize_t))
        if not (self.slots and self.hashes and self.offsets and self.lengths):
            raise MemoryError()
        memset(self.slots, 0xff, 64 * sizeof(Py_ssize_t))  # -1: empty
        self.count = 0
        self.arena.data = NULL
        self.arena.n = self.arena.cap = 0
        self.names = []
        self.frozen = False
        cdef bytes raw
        for value in values:
            raw = value.encode()
            self.code(<const uint8_t*>PyBytes_AS_STRING(raw), len(raw))
        self.frozen = frozen

    def __dealloc__(self):
        free(self.slots)
        free(self.hashes)
        free(self.offsets)
        free(self.lengths)
        free(self.arena.data)

    cdef int _grow(self) except -1:
        cdef Py_ssize_t size = (self.mask + 1) * 2, i, j
        cdef Py_ssize_t* slots = <Py_ssize_t*>malloc(size * sizeof(Py_ssize_t))
        if slots == NULL:
            raise MemoryError()
        memset(slots, 0xff, size * sizeof(Py_ssize_t))
        for i in range(self.count):
            j = self.hashes[i] & (size - 1)
            while slots[j] >= 0:
                j = (j + 1) & (size - 1)
            slots[j] = i
        free(self.slots)
        self.slots = slots
        self.mask = size - 1
        return 0

    cdef int32_t code(self, const uint8_t* s, Py_ssize_t n) except -1:
        cdef uint64_t h = _fnv1a(s, n)
        cdef Py_ssize_t j = h & self.mask, e
        while True:
            e = self.slots[j]
            if e < 0:
                break
            if self.hashes[e] == h and self.lengths[e] == n and memcmp(self.arena.data + self.offsets[e], s, n) == 0:
                return <int32_t>e
            j = (j + 1) & self.mask
        if self.frozen:
            raise Unsupported(f"unknown value {PyBytes_FromStringAndSize(<const char*>s, n)!r}")
        name = PyUnicode_DecodeUTF8(<const char*>s, n, "strict")  # a new name: once per name and batch
        if self.count == self.room:
            self.room *= 2
            self.hashes = <uint64_t*>realloc(self.hashes, self.room * sizeof(uint64_t))
            self.offsets = <Py_ssize_t*>realloc(self.offsets, self.room * sizeof(Py_ssize_t))
            self.lengths = <Py_ssize_t*>realloc(self.lengths, self.room * sizeof(Py_ssize_t))
            if not (self.hashes and self.offsets and self.lengths):
                raise MemoryError()
        e = self.count
        self.hashes[e] = h
        self.offsets[e] = self.arena.n
        self.lengths[e] = n
        put(&self.arena, <const char*>s, n)
        self.slots[j] = e
        self.count += 1
        self.names.append(name)
        if self.count * 2 > self.mask:
            self._grow()
        return <int32_t>e


# ============================================================================================ layout

# Roles of a record's fields for the column scan and the CSV rows, by field name; where each sits comes
# from the Struct definitions (fields are only appended, so the positions never change, but a record may
# be shorter or longer than this version's struct).
cdef enum:
    MAXF = 64
    F_SKIP = 0
    # strings: an index into a row's Slice array
    F_CALL_ID = 1
    F_DIRECTION = 2
    F_DISPOSITION = 3
    F_CALLER = 4
    F_CALLEE = 5
    F_NODE = 6
    F_TRUNK = 7
    F_HANGUP_BY = 8
    F_DTMF = 9
    F_RECORDING = 10
    F_CAMPAIGN = 11
    F_CONTACT = 12
    NSTR = 13
    # times
    F_OFFERED = 20
    F_ENDED = 21
    F_ANSWERED = 22
    F_PDD = 23
    # nested
    F_LEGS = 30
    F_SEGMENTS = 31
    # queue segment
    S_QUEUE = 40
    S_JOINED = 41
    S_LEFT = 42
    S_OUTCOME = 43
    S_AGENTS = 44
    S_BY = 45
    S_AGENT_ENDED = 46
    S_ACW = 47
    # leg
    L_MOS = 50

cdef int REC_ROLE[MAXF]
cdef int SEG_ROLE[MAXF]
cdef int LEG_ROLE[MAXF]
cdef Py_ssize_t REC_REQUIRED, SEG_REQUIRED, LEG_REQUIRED
cdef Slice STR_DEFAULT[NSTR]
_keep_alive = []


def _required(cls) -> int:
    fields = msgspec.structs.fields(cls)
    return max((i + 1 for i, f in enumerate(fields) if f.required), default=0)


cdef _positions(cls, dict roles, int* table):
    cdef int i
    for i in range(MAXF):
        table[i] = F_SKIP
    names = [f.name for f in msgspec.structs.fields(cls)]
    for name, role in roles.items():
        table[names.index(name)] = role


_positions(CallRecord, {
    "call_id": F_CALL_ID, "direction": F_DIRECTION, "offered": F_OFFERED, "ended": F_ENDED,
    "disposition": F_DISPOSITION, "caller": F_CALLER, "callee": F_CALLEE, "node": F_NODE, "trunk": F_TRUNK,
    "answered": F_ANSWERED, "hangup_by": F_HANGUP_BY, "legs": F_LEGS, "queue_segments": F_SEGMENTS,
    "dtmf": F_DTMF, "recording": F_RECORDING, "campaign_id": F_CAMPAIGN, "contact_id": F_CONTACT,
    "post_dial_delay": F_PDD,
}, REC_ROLE)
_positions(QueueSegment, {
    "queue": S_QUEUE, "joined": S_JOINED, "left": S_LEFT, "outcome": S_OUTCOME, "agents_offered": S_AGENTS,
    "answered_by": S_BY, "agent_ended": S_AGENT_ENDED, "after_call_work": S_ACW,
}, SEG_ROLE)
_positions(Leg, {"mos": L_MOS}, LEG_ROLE)
REC_REQUIRED = _required(CallRecord)
SEG_REQUIRED = _required(QueueSegment)
LEG_REQUIRED = _required(Leg)


def _string_defaults():
    # A string field missing from an older record reads as its default ("", or an enumeration's value).
    cdef int i
    cdef bytes raw
    for i in range(NSTR):
        STR_DEFAULT[i].p = <const uint8_t*>b""
        STR_DEFAULT[i].n = 0
    names = [f.name for f in msgspec.structs.fields(CallRecord)]
    for f in msgspec.structs.fields(CallRecord):
        role = REC_ROLE[names.index(f.name)]
        if 0 < role < NSTR and f.default is not msgspec.NODEFAULT:
            value = f.default.value if isinstance(f.default, enum.Enum) else f.default
            raw = value.encode()
            _keep_alive.append(raw)
            STR_DEFAULT[role].p = <const uint8_t*>PyBytes_AS_STRING(raw)
            STR_DEFAULT[role].n = len(raw)


_string_defaults()

# Codes, in the orders core.cdr.kpi counts them in.
_DIRECTIONS = (Direction.INBOUND.value, Direction.OUTBOUND.value)
_DISPOSITION_VALUES = tuple(d.value for d in Disposition)
_OUTCOME_VALUES = tuple(o.value for o in QueueOutcome)


cdef inline int open_value(object value, Py_buffer* view, Cursor* c) except -1:
    # bytes (the common case) without the buffer protocol (0); memoryviews of LMDB pages with it (1: release).
    if PyBytes_CheckExact(value):
        c.p = <const uint8_t*>PyBytes_AS_STRING(value)
        c.end = c.p + PyBytes_GET_SIZE(value)
        return 0
    PyObject_GetBuffer(value, view, PyBUF_SIMPLE)
    c.p = <const uint8_t*>view.buf
    c.end = c.p + view.len
    return 1


cdef inline void close_value(Py_buffer* view, int held) noexcept:
    if held:
        PyBuffer_Release(view)


# ============================================================================================ KPI columns


cdef class ColumnScan:
    """The columns of core.cdr.kpi.Columns, filled in C from a batch of stored records."""

    def __cinit__(self, bint calls, bint agents):
        self.calls = calls
        self.agents = agents
        self.names = NameTable(("",))
        self.directions = NameTable(_DIRECTIONS, True)
        self.dispositions = NameTable(_DISPOSITION_VALUES, True)
        self.outcomes = NameTable(_OUTCOME_VALUES, True)
        vec_init(&self.offered, 8)
        vec_init(&self.answered, 8)
        vec_init(&self.ended, 8)
        vec_init(&self.pdd, 8)
        vec_init(&self.direction, 1)
        vec_init(&self.disposition, 8)
        vec_init(&self.node, 4)
        vec_init(&self.trunk, 4)
        vec_init(&self.campaign, 4)
        vec_init(&self.seg_rec, 8)
        vec_init(&self.seg_queue, 4)
        vec_init(&self.seg_joined, 8)
        vec_init(&self.seg_left, 8)
        vec_init(&self.seg_outcome, 1)
        vec_init(&self.seg_agent, 4)
        vec_init(&self.seg_agent_ended, 8)
        vec_init(&self.seg_acw, 8)
        vec_init(&self.offer_agent, 4)
        vec_init(&self.offer_time, 8)
        self.n = 0

    def __dealloc__(self):
        free(self.offered.data); free(self.answered.data); free(self.ended.data); free(self.pdd.data)
        free(self.direction.data); free(self.disposition.data); free(self.node.data); free(self.trunk.data)
        free(self.campaign.data); free(self.seg_rec.data); free(self.seg_queue.data)
        free(self.seg_joined.data); free(self.seg_left.data); free(self.seg_outcome.data)
        free(self.seg_agent.data); free(self.seg_agent_ended.data); free(self.seg_acw.data)
        free(self.offer_agent.data); free(self.offer_time.data)

    cdef int _reserve(self, Py_ssize_t n) except -1:
        vec_reserve(&self.ended, n)
        if self.calls:
            vec_reserve(&self.offered, n)
            vec_reserve(&self.answered, n)
            vec_reserve(&self.pdd, n)
            vec_reserve(&self.direction, n)
            vec_reserve(&self.disposition, n)
            vec_reserve(&self.node, n)
            vec_reserve(&self.trunk, n)
            vec_reserve(&self.campaign, n)
        return 0

    cdef int _record(self, Cursor* c) except -1:
        # The twin decodes every field but the legs as typed values unless it reads only what a queue
        # report needs (calls=False, agents=False: the end time and the segments): the same fields are
        # checked here, so that a record the twin rejects is never counted.
        cdef Py_ssize_t n = read_array(c), i, rec = self.n
        cdef int role
        cdef bint full = self.calls or self.agents
        cdef double offered = NAN, ended = NAN, answered = NAN, pdd = NAN
        cdef int8_t direction = 0
        cdef int64_t disposition = 0
        cdef int32_t node = 0, trunk = 0, campaign = 0
        cdef Slice s
        if n < REC_REQUIRED:
            raise Unsupported("record lacks required fields")
        for i in range(n):
            role = REC_ROLE[i] if i < MAXF else F_SKIP
            if role == F_ENDED:
                read_float(c, &ended, False)
            elif role == F_SEGMENTS:
                self._segments(c, rec, full)
            elif not full or role == F_SKIP or role == F_LEGS:
                skip_value(c, 0)
            elif role == F_OFFERED:
                read_float(c, &offered, False)
            elif role == F_ANSWERED:
                read_float(c, &answered, True)
            elif role == F_PDD:
                read_float(c, &pdd, True)
            elif role == F_DIRECTION:
                read_str(c, &s)
                direction = <int8_t>self.directions.code(s.p, s.n)
            elif role == F_DISPOSITION:
                read_str(c, &s)
                disposition = self.dispositions.code(s.p, s.n)
            elif role == F_NODE:
                read_str(c, &s)
                node = self.names.code(s.p, s.n)
            elif role == F_TRUNK:
                read_str(c, &s)
                trunk = self.names.code(s.p, s.n)
            elif role == F_CAMPAIGN:
                read_str(c, &s)
                campaign = self.names.code(s.p, s.n)
            elif 0 < role < NSTR:  # call id, caller, callee ...: not counted, but they must be strings
                read_utf8(c, &s)
            else:
                skip_value(c, 0)
        push_f64(&self.ended, ended)
        if self.calls:
            push_f64(&self.offered, offered)
            push_f64(&self.answered, answered)
            push_f64(&self.pdd, pdd)
            push_i8(&self.direction, direction)
            push_i64(&self.disposition, disposition)
            push_i32(&self.node, node)
            push_i32(&self.trunk, trunk)
            push_i32(&self.campaign, campaign)
        self.n += 1
        return 0

    cdef int _segments(self, Cursor* c, Py_ssize_t rec, bint full) except -1:
        cdef Py_ssize_t m = read_array(c), j, k, i, a, na, first_offer
        cdef int role
        cdef double joined, left, agent_ended, acw
        cdef int32_t queue, by
        cdef int8_t outcome
        cdef Slice s
        for j in range(m):
            k = read_array(c)
            if k < SEG_REQUIRED:
                raise Unsupported("queue segment lacks required fields")
            joined = left = agent_ended = NAN
            acw = 0.0
            queue = by = 0
            outcome = 0
            first_offer = self.offer_agent.n
            for i in range(k):
                role = SEG_ROLE[i] if i < MAXF else F_SKIP
                if role == S_QUEUE:
                    read_str(c, &s)
                    queue = self.names.code(s.p, s.n)
                elif role == S_JOINED:
                    read_float(c, &joined, False)
                elif role == S_LEFT:
                    read_float(c, &left, False)
                elif role == S_OUTCOME:
                    read_str(c, &s)
                    outcome = <int8_t>self.outcomes.code(s.p, s.n)
                elif role == S_AGENT_ENDED:
                    read_float(c, &agent_ended, True)
                elif role == S_ACW:
                    read_float(c, &acw, False)
                elif role == S_AGENTS and self.agents:
                    na = read_array(c)
                    for a in range(na):
                        read_str(c, &s)
                        push_i32(&self.offer_agent, self.names.code(s.p, s.n))
                elif role == S_BY and self.agents:
                    read_str(c, &s)
                    by = self.names.code(s.p, s.n)
                elif role == S_AGENTS and full:
                    na = read_array(c)
                    for a in range(na):
                        read_utf8(c, &s)
                elif role == S_BY and full:
                    read_utf8(c, &s)
                else:
                    skip_value(c, 0)
            for a in range(first_offer, self.offer_agent.n):
                push_f64(&self.offer_time, left)  # a ring counts when the segment ended (core.cdr.kpi)
            push_i64(&self.seg_rec, rec)
            push_i32(&self.seg_queue, queue)
            push_f64(&self.seg_joined, joined)
            push_f64(&self.seg_left, left)
            push_i8(&self.seg_outcome, outcome)
            push_i32(&self.seg_agent, by)
            push_f64(&self.seg_agent_ended, agent_ended)
            push_f64(&self.seg_acw, acw)
        return 0

    def add(self, values) -> None:
        """Read a batch of stored records (bytes, or memoryviews valid for the duration of the call)."""
        cdef Py_buffer view
        cdef Cursor c
        self._reserve(self.n + len(values))
        for value in values:
            held = open_value(value, &view, &c)
            try:
                self._record(&c)
            finally:
                close_value(&view, held)

    def columns(self) -> dict:
        """The arrays, under core.cdr.kpi.Columns's attribute names."""
        out = {"n": self.n, "names": list(self.names.names), "empty": 0, "has_calls": self.calls,
               "has_agents": self.agents, "ended": vec_array(&self.ended, np.float64)}
        if self.calls:
            out.update(
                offered=vec_array(&self.offered, np.float64), answered=vec_array(&self.answered, np.float64),
                pdd=vec_array(&self.pdd, np.float64), direction=vec_array(&self.direction, np.int8),
                disposition=vec_array(&self.disposition, np.int64), node=vec_array(&self.node, np.int32),
                trunk=vec_array(&self.trunk, np.int32), campaign=vec_array(&self.campaign, np.int32))
        out.update(
            seg_rec=vec_array(&self.seg_rec, np.int64), seg_queue=vec_array(&self.seg_queue, np.int32),
            seg_joined=vec_array(&self.seg_joined, np.float64), seg_left=vec_array(&self.seg_left, np.float64),
            seg_outcome=vec_array(&self.seg_outcome, np.int8), seg_agent=vec_array(&self.seg_agent, np.int32),
            seg_agent_ended=vec_array(&self.seg_agent_ended, np.float64),
            seg_acw=vec_array(&self.seg_acw, np.float64), offer_agent=vec_array(&self.offer_agent, np.int32),
            offer_time=vec_array(&self.offer_time, np.float64))
        return out


def scan_columns(values, *, bint calls=True, bint agents=True) -> dict:
    """The KPI columns of a batch of stored records (see ``ColumnScan.columns``)."""
    scan = ColumnScan(calls, agents)
    scan.add(values)
    return scan.columns()


# ============================================================================================ KPI tally

# The counters of core.cdr.kpi.KpiBook summed in C from the columns, for every dimension in one pass over
# them (the twin is KpiBook.add_columns's numpy path: one bincount per counter and dimension). Each duration
# is rounded to milliseconds with rint (round-half-even, as np.rint) from the same IEEE expression, and the
# sums are exact int64, as the twin's float64 sums of whole numbers are below 2**53; a time that cannot be
# binned exactly (NaN, infinite, beyond 2**53) or a sum that the twin could not keep exact raises
# Unsupported, and the caller hands the batch to the twin.

TALLY_DIMENSIONS = ("node", "trunk", "queue", "agent", "campaign")
TALLY_FIELDS = (
    "inbound_offered", "inbound_answered", "outbound_attempted", "outbound_answered", "connect_ms", "talk_ms",
    "pdd_ms", "pdd_calls", "queued", "queue_answered", "queue_abandoned", "short_abandoned", "answered_within",
    "abandoned_within", "wait_ms", "answer_wait_ms", "abandon_wait_ms", "handled", "handle_ms", "offers",
) + tuple(d.name.lower() for d in Disposition)

cdef enum:
    D_NODE = 0
    D_TRUNK = 1
    D_QUEUE = 2
    D_AGENT = 3
    D_CAMPAIGN = 4
    T_IN_OFFERED = 0
    T_IN_ANSWERED = 1
    T_OUT_ATTEMPTED = 2
    T_OUT_ANSWERED = 3
    T_CONNECT = 4
    T_TALK = 5
    T_PDD = 6
    T_PDD_CALLS = 7
    T_QUEUED = 8
    T_Q_ANSWERED = 9
    T_Q_ABANDONED = 10
    T_SHORT = 11
    T_ANS_WITHIN = 12
    T_ABN_WITHIN = 13
    T_WAIT = 14
    T_ANS_WAIT = 15
    T_ABN_WAIT = 16
    T_HANDLED = 17
    T_HANDLE = 18
    T_OFFERS = 19
    T_DISP = 20  # + disposition code

cdef Py_ssize_t NFIELDS = len(TALLY_FIELDS)
cdef int64_t ANSWERED_CODE = _DISPOSITION_VALUES.index(Disposition.ANSWERED.value)
cdef int8_t Q_ANSWERED_CODE = _OUTCOME_VALUES.index(QueueOutcome.ANSWERED.value)
cdef int8_t Q_ABANDONED_CODE = _OUTCOME_VALUES.index(QueueOutcome.ABANDONED.value)
cdef double EXACT = 9007199254740992.0  # 2**53: whole numbers below it are exact in a double


cdef int tally_grow(Tally* t) except -1:
    cdef Py_ssize_t cap = t.cap * 2 if t.cap else 1024, i, j, size = (cap * 2)
    cdef Py_ssize_t* slots
    t.dim = <int8_t*>realloc(t.dim, cap * sizeof(int8_t))
    t.code = <int32_t*>realloc(t.code, cap * sizeof(int32_t))
    t.start = <int64_t*>realloc(t.start, cap * sizeof(int64_t))
    t.sums = <int64_t*>realloc(t.sums, cap * NFIELDS * sizeof(int64_t))
    slots = <Py_ssize_t*>malloc(size * sizeof(Py_ssize_t))
    if t.dim == NULL or t.code == NULL or t.start == NULL or t.sums == NULL or slots == NULL:
        free(slots)
        raise MemoryError()
    memset(slots, 0xff, size * sizeof(Py_ssize_t))
    free(t.slots)
    t.slots = slots
    t.mask = size - 1
    t.cap = cap
    for i in range(t.n):
        j = tally_hash(t.dim[i], t.code[i], t.start[i]) & t.mask
        while t.slots[j] >= 0:
            j = (j + 1) & t.mask
        t.slots[j] = i
    return 0


cdef inline uint64_t tally_hash(int8_t dim, int32_t code, int64_t start) noexcept nogil:
    cdef uint64_t h = <uint64_t>start * 0x9E3779B97F4A7C15ULL
    h ^= (<uint64_t>code << 3 | <uint64_t>dim) * 0xC2B2AE3D27D4EB4FULL
    return h ^ (h >> 29)


cdef inline Py_ssize_t tally_group(Tally* t, int8_t dim, int32_t code, int64_t start) except -1:
    # The group's index (its counters are t.sums[index * NFIELDS ...]; a pointer would not survive a grow).
    cdef Py_ssize_t j, i
    j = tally_hash(dim, code, start) & t.mask
    while True:
        i = t.slots[j]
        if i < 0:
            break
        if t.start[i] == start and t.code[i] == code and t.dim[i] == dim:
            return i
        j = (j + 1) & t.mask
    if (t.n + 1) * 2 > t.cap:  # keep the table at most a quarter full (slots = 2 × cap)
        tally_grow(t)
        return tally_group(t, dim, code, start)
    i = t.n
    t.n += 1
    t.slots[j] = i
    t.dim[i] = dim
    t.code[i] = code
    t.start[i] = start
    memset(t.sums + i * NFIELDS, 0, NFIELDS * sizeof(int64_t))
    return i


cdef inline int64_t bin_start(double t, int64_t interval) except? -1:
    # floor(t / interval) × interval, as the twin's np.floor(t / iv); only times it bins exactly.
    cdef double q = floor(t / <double>interval)
    if not (fabs(t) < EXACT):
        raise Unsupported("a time the report cannot bin exactly")
    return <int64_t>q * interval


cdef inline int64_t ms(double x) except? -1:
    cdef double r = rint(x)
    if not (fabs(r) < EXACT):
        raise Unsupported("a duration the report cannot sum exactly")
    return <int64_t>r


def tally(cols, int64_t interval, double answer_within_ms, double short_abandon_ms, dimensions):
    """Every counter of every (dimension, key code, interval start) group of one batch of KPI columns.

    ``cols`` has core.cdr.kpi.Columns's attributes; ``dimensions`` the names kept (of ``TALLY_DIMENSIONS``).
    Returns (dimension index int8, key code int32, start int64, counters int64 of shape (groups, fields)),
    the fields named by ``TALLY_FIELDS``.
    """
    cdef bint keep[5]
    cdef int d
    for d in range(5):
        keep[d] = TALLY_DIMENSIONS[d] in dimensions
    cdef bint has_calls = cols.has_calls, has_agents = cols.has_agents
    cdef int32_t empty = cols.empty
    cdef Tally t
    memset(&t, 0, sizeof(Tally))
    t.interval = interval
    cdef const double[::1] offered, answered, ended, pdd, seg_joined, seg_left, seg_agent_ended, seg_acw, offer_time
    cdef const int8_t[::1] direction, seg_outcome
    cdef const int64_t[::1] disposition, seg_rec
    cdef const int32_t[::1] node, trunk, campaign, seg_queue, seg_agent, offer_agent
    cdef Py_ssize_t i, n, r, k
    cdef int64_t start, connect, talk, pdd_ms, wait, handle, disp
    cdef int64_t* row
    cdef Py_ssize_t groups[3]
    cdef int nrows
    cdef bint inbound, ans, abn, timed, has_pdd
    cdef double agent_end
    cdef int8_t outcome
    cdef int32_t code
    cdef int8_t[::1] out_dim
    cdef int32_t[::1] out_code
    cdef int64_t[::1] out_start
    cdef int64_t[:, ::1] out_sums
    f64 = lambda name: np.ascontiguousarray(getattr(cols, name), dtype=np.float64)
    i32 = lambda name: np.ascontiguousarray(getattr(cols, name), dtype=np.int32)
    ended = f64("ended")
    seg_rec = np.ascontiguousarray(cols.seg_rec, dtype=np.int64)
    seg_queue = i32("seg_queue")
    seg_joined, seg_left = f64("seg_joined"), f64("seg_left")
    seg_agent_ended, seg_acw = f64("seg_agent_ended"), f64("seg_acw")
    seg_outcome = np.ascontiguousarray(cols.seg_outcome, dtype=np.int8)
    seg_agent = i32("seg_agent")
    offer_agent, offer_time = i32("offer_agent"), f64("offer_time")
    if has_calls:
        offered, answered, pdd = f64("offered"), f64("answered"), f64("pdd")
        direction = np.ascontiguousarray(cols.direction, dtype=np.int8)
        disposition = np.ascontiguousarray(cols.disposition, dtype=np.int64)
        node, trunk, campaign = i32("node"), i32("trunk"), i32("campaign")
    try:
        tally_grow(&t)
        # ---- calls: node, trunk and campaign, binned by offer time
        if has_calls and (keep[D_NODE] or keep[D_TRUNK] or keep[D_CAMPAIGN]):
            n = offered.shape[0]
            for i in range(n):
                start = bin_start(offered[i], interval)
                disp = disposition[i]
                if disp < 0 or T_DISP + disp >= NFIELDS:
                    raise Unsupported("disposition code out of range")
                ans = disp == ANSWERED_CODE
                timed = ans and not isnan(answered[i])
                inbound = direction[i] == 0
                connect = talk = pdd_ms = 0
                if timed:
                    connect = ms((answered[i] - offered[i]) * 1000.0)
                    talk = ms((ended[i] - answered[i]) * 1000.0)
                has_pdd = not isnan(pdd[i])
                if has_pdd:
                    pdd_ms = ms(pdd[i] * 1000.0)
                nrows = 0
                if keep[D_NODE]:
                    groups[nrows] = tally_group(&t, D_NODE, node[i], start); nrows += 1
                if keep[D_TRUNK] and trunk[i] != empty:
                    groups[nrows] = tally_group(&t, D_TRUNK, trunk[i], start); nrows += 1
                if keep[D_CAMPAIGN] and campaign[i] != empty:
                    groups[nrows] = tally_group(&t, D_CAMPAIGN, campaign[i], start); nrows += 1
                for k in range(nrows):
                    row = t.sums + groups[k] * NFIELDS
                    if inbound:
                        row[T_IN_OFFERED] += 1
                        row[T_IN_ANSWERED] += ans
                    else:
                        row[T_OUT_ATTEMPTED] += 1
                        row[T_OUT_ANSWERED] += ans
                    row[T_CONNECT] += connect
                    row[T_TALK] += talk
                    row[T_PDD] += pdd_ms
                    row[T_PDD_CALLS] += has_pdd
                    row[T_DISP + disp] += 1
        # ---- queue segments: queue, node and campaign by join time; the answering agent by leave time
        n = seg_rec.shape[0]
        for i in range(n):
            r = seg_rec[i]
            if r < 0 or r >= ended.shape[0]:
                raise Unsupported("segment of no record")
            outcome = seg_outcome[i]
            ans = outcome == Q_ANSWERED_CODE
            abn = outcome == Q_ABANDONED_CODE
            wait = ms((seg_left[i] - seg_joined[i]) * 1000.0)
            handle = 0
            if ans:
                agent_end = ended[r] if isnan(seg_agent_ended[i]) else seg_agent_ended[i]
                handle = ms((agent_end - seg_left[i]) * 1000.0)
                handle += ms(seg_acw[i] * 1000.0)
            nrows = 0
            if keep[D_QUEUE] and seg_queue[i] != empty:
                groups[nrows] = tally_group(&t, D_QUEUE, seg_queue[i], bin_start(seg_joined[i], interval)); nrows += 1
            if has_calls and keep[D_NODE]:
                groups[nrows] = tally_group(&t, D_NODE, node[r], bin_start(seg_joined[i], interval)); nrows += 1
            if has_calls and keep[D_CAMPAIGN] and campaign[r] != empty:
                groups[nrows] = tally_group(&t, D_CAMPAIGN, campaign[r], bin_start(seg_joined[i], interval)); nrows += 1
            for k in range(nrows):
                row = t.sums + groups[k] * NFIELDS
                row[T_QUEUED] += 1
                row[T_WAIT] += wait
                if ans:
                    row[T_Q_ANSWERED] += 1
                    row[T_ANS_WAIT] += wait
                    row[T_ANS_WITHIN] += wait <= answer_within_ms
                    row[T_HANDLED] += 1
                    row[T_HANDLE] += handle
                elif abn:
                    row[T_Q_ABANDONED] += 1
                    row[T_ABN_WAIT] += wait
                    row[T_SHORT] += wait < short_abandon_ms
                    row[T_ABN_WITHIN] += wait <= answer_within_ms
            if keep[D_AGENT] and has_agents and ans and seg_agent[i] != empty:
                row = t.sums + tally_group(&t, D_AGENT, seg_agent[i], bin_start(seg_left[i], interval)) * NFIELDS
                row[T_HANDLED] += 1
                row[T_HANDLE] += handle
        # ---- rings: the agent rung, by the segment's leave time
        if keep[D_AGENT] and has_agents:
            for i in range(offer_agent.shape[0]):
                code = offer_agent[i]
                if code != empty:
                    t.sums[tally_group(&t, D_AGENT, code, bin_start(offer_time[i], interval)) * NFIELDS + T_OFFERS] += 1
        for i in range(t.n * NFIELDS):
            if not (-EXACT < <double>t.sums[i] < EXACT):
                raise Unsupported("a sum beyond what the report keeps exactly")
        dims = np.empty(t.n, dtype=np.int8)
        codes = np.empty(t.n, dtype=np.int32)
        starts = np.empty(t.n, dtype=np.int64)
        sums = np.empty((t.n, NFIELDS), dtype=np.int64)
        if t.n:
            out_dim, out_code, out_start, out_sums = dims, codes, starts, sums
            memcpy(&out_dim[0], t.dim, t.n * sizeof(int8_t))
            memcpy(&out_code[0], t.code, t.n * sizeof(int32_t))
            memcpy(&out_start[0], t.start, t.n * sizeof(int64_t))
            memcpy(&out_sums[0, 0], t.sums, t.n * NFIELDS * sizeof(int64_t))
        return dims, codes, starts, sums
    finally:
        free(t.slots); free(t.dim); free(t.code); free(t.start); free(t.sums)


# ============================================================================================ CSV

# Which ASCII characters make Python's csv writer (excel dialect, lineterminator "\n") quote a field, asked
# of the csv module itself: 0 as is, 1 quoted (quotes doubled), 2 not reproduced here (the batch falls back).
cdef uint8_t CSV_CLASS[128]


def _csv_classes():
    quoted = []
    for ch in range(128):
        field = f"a{chr(ch)}b"
        out = io.StringIO()
        try:
            csv.writer(out, lineterminator="\n").writerow((field, "x"))
        except csv.Error:
            CSV_CLASS[ch] = 2
            continue
        text = out.getvalue()
        if text == field + ",x\n":
            CSV_CLASS[ch] = 0
        elif text == '"' + field.replace('"', '""') + '",x\n':
            CSV_CLASS[ch] = 1
            quoted.append(chr(ch))
        else:
            CSV_CLASS[ch] = 2
    return "".join(quoted)


CSV_QUOTED = _csv_classes()  # the characters that make a field quoted


cdef int csv_class(const uint8_t* p, Py_ssize_t n) except -1:
    cdef Py_ssize_t i
    cdef int worst = 0, k
    for i in range(n):
        if p[i] < 128:
            k = CSV_CLASS[p[i]]
            if k > worst:
                worst = k
    if worst == 2:
        raise Unsupported("a character the csv module treats specially")
    return worst


cdef int put_csv_quoted_body(Buf* b, const uint8_t* p, Py_ssize_t n) except -1:
    cdef Py_ssize_t i
    for i in range(n):
        if p[i] == 34:  # '"' doubled
            putc(b, b'"')
        putc(b, <char>p[i])
    return 0


cdef inline int put_csv(Buf* b, const uint8_t* p, Py_ssize_t n) except -1:
    if csv_class(p, n) == 0:
        return put(b, <const char*>p, n)
    putc(b, b'"')
    put_csv_quoted_body(b, p, n)
    return putc(b, b'"')


cdef int put_csv_time(Buf* b, double t, bint is_nil, bint epoch) except -1:
    if is_nil:
        return 0
    if epoch:
        return put_fixed(b, t, 3)
    if isnan(t):  # the twin prints "NaT" or "" for a NaN depending on the batch: leave it to the twin
        raise Unsupported("NaN time")
    return put_iso_ms(b, t)


cdef int csv_row(Cursor* c, Buf* b, Vec* queues, bint epoch) except -1:
    cdef Slice strs[NSTR]
    cdef Py_ssize_t n = read_array(c), i, i2, j, k, m, a, na, nlegs = 0, offers = 0, nq
    cdef int role
    cdef double offered = NAN, ended = NAN, answered = NAN, pdd = NAN, mos, min_mos = NAN
    cdef double joined, left, queued = 0.0
    cdef bint no_answer = True, no_pdd = True, has_mos = False, quote
    cdef Slice s, outcome, agent, by
    cdef Slice* qs
    memcpy(strs, STR_DEFAULT, sizeof(strs))
    outcome.n = agent.n = 0
    outcome.p = agent.p = NULL
    queues.n = 0
    m = 0
    if n < REC_REQUIRED:
        raise Unsupported("record lacks required fields")
    for i in range(n):
        role = REC_ROLE[i] if i < MAXF else F_SKIP
        if 0 < role < NSTR:
            read_str(c, &strs[role])
        elif role == F_OFFERED:
            read_float(c, &offered, False)
        elif role == F_ENDED:
            read_float(c, &ended, False)
        elif role == F_ANSWERED:
            no_answer = read_float(c, &answered, True)
        elif role == F_PDD:
            no_pdd = read_float(c, &pdd, True)
        elif role == F_LEGS:
            nlegs = read_array(c)
            for j in range(nlegs):
                k = read_array(c)
                if k < LEG_REQUIRED:
                    raise Unsupported("leg lacks required fields")
                for i2 in range(k):
                    if i2 < MAXF and LEG_ROLE[i2] == L_MOS:
                        if not read_float(c, &mos, True):
                            # min() over the legs' MOS, as the twin: the first, then any smaller one.
                            if not has_mos or mos < min_mos:
                                min_mos = mos
                            has_mos = True
                    else:
                        skip_value(c, 0)
        elif role == F_SEGMENTS:
            m = read_array(c)
            for j in range(m):
                k = read_array(c)
                if k < SEG_REQUIRED:
                    raise Unsupported("queue segment lacks required fields")
                by.n = 0
                for i2 in range(k):
                    role = SEG_ROLE[i2] if i2 < MAXF else F_SKIP
                    if role == S_QUEUE:
                        read_str(c, &s)
                        vec_reserve(queues, queues.n + 1)
                        (<Slice*>queues.data)[queues.n] = s
                        queues.n += 1
                    elif role == S_JOINED:
                        read_float(c, &joined, False)
                    elif role == S_LEFT:
                        read_float(c, &left, False)
                    elif role == S_OUTCOME:
                        read_str(c, &outcome)
                    elif role == S_AGENTS:
                        na = read_array(c)
                        for a in range(na):
                            read_str(c, &s)
                        offers += na
                    elif role == S_BY:
                        read_str(c, &by)
                    elif role == S_AGENT_ENDED:
                        read_float(c, &mos, True)
                    elif role == S_ACW:
                        read_float(c, &mos, False)
                    else:
                        skip_value(c, 0)
                queued += left - joined
                if by.n:
                    agent = by
        else:
            skip_value(c, 0)
    # call_id, direction, disposition, hangup_by, offered, answered, ended, connect_seconds, talk_seconds
    put_csv(b, strs[F_CALL_ID].p, strs[F_CALL_ID].n)
    putc(b, b',')
    put_csv(b, strs[F_DIRECTION].p, strs[F_DIRECTION].n)
    putc(b, b',')
    put_csv(b, strs[F_DISPOSITION].p, strs[F_DISPOSITION].n)
    putc(b, b',')
    put_csv(b, strs[F_HANGUP_BY].p, strs[F_HANGUP_BY].n)
    putc(b, b',')
    put_csv_time(b, offered, False, epoch)
    putc(b, b',')
    put_csv_time(b, answered, no_answer, epoch)
    putc(b, b',')
    put_csv_time(b, ended, False, epoch)
    putc(b, b',')
    if not no_answer:
        put_fixed(b, answered - offered, 3)
        putc(b, b',')
        put_fixed(b, ended - answered, 3)
        putc(b, b',')
    else:
        put(b, b",,", 2)
    # caller, callee, node, trunk
    put_csv(b, strs[F_CALLER].p, strs[F_CALLER].n)
    putc(b, b',')
    put_csv(b, strs[F_CALLEE].p, strs[F_CALLEE].n)
    putc(b, b',')
    put_csv(b, strs[F_NODE].p, strs[F_NODE].n)
    putc(b, b',')
    put_csv(b, strs[F_TRUNK].p, strs[F_TRUNK].n)
    putc(b, b',')
    # queues (">"-joined), queue_outcome, queue_seconds, agent, agents_offered
    qs = <Slice*>queues.data
    nq = queues.n
    quote = csv_class(<const uint8_t*>b">", 1) == 1
    for j in range(nq):
        if csv_class(qs[j].p, qs[j].n):
            quote = True
    if quote:
        putc(b, b'"')
    for j in range(nq):
        if j:
            putc(b, b'>')
        if quote:
            put_csv_quoted_body(b, qs[j].p, qs[j].n)
        else:
            put(b, <const char*>qs[j].p, qs[j].n)
    if quote:
        putc(b, b'"')
    putc(b, b',')
    if m:
        put_csv(b, outcome.p, outcome.n)
    putc(b, b',')
    if m:
        put_fixed(b, queued, 3)
    putc(b, b',')
    put_csv(b, agent.p, agent.n)
    putc(b, b',')
    put_uint(b, <uint64_t>offers)
    putc(b, b',')
    # campaign_id, contact_id, post_dial_delay, dtmf, recording, legs, mos
    put_csv(b, strs[F_CAMPAIGN].p, strs[F_CAMPAIGN].n)
    putc(b, b',')
    put_csv(b, strs[F_CONTACT].p, strs[F_CONTACT].n)
    putc(b, b',')
    if not no_pdd:
        put_fixed(b, pdd, 3)
    putc(b, b',')
    put_csv(b, strs[F_DTMF].p, strs[F_DTMF].n)
    putc(b, b',')
    put_csv(b, strs[F_RECORDING].p, strs[F_RECORDING].n)
    putc(b, b',')
    put_uint(b, <uint64_t>nlegs)
    putc(b, b',')
    if has_mos:
        put_fixed(b, min_mos, 2)
    putc(b, b'\n')
    return 0


def csv_rows(values, *, bint epoch=False) -> str:
    """The CSV rows (bindings.reports.CSV_COLUMNS, no header) of a batch of stored records, as one string."""
    cdef Buf b
    cdef Vec queues, floats
    cdef Py_buffer view
    cdef Cursor c, check
    cdef int held
    cdef FieldLayout lay = _RECORD_LAYOUT
    if lay is None:
        raise Unsupported("CallRecord has a field type this reader does not know")
    b.data = NULL
    b.n = b.cap = 0
    vec_init(&queues, sizeof(Slice))
    vec_init(&floats, 8)
    try:
        buf_reserve(&b, 256 * len(values))
        for value in values:
            held = open_value(value, &view, &c)
            try:
                # First every field's type, as the twin's typed decode checks them (legs included).
                check = c
                floats.n = 0
                transcode(&check, lay, NULL, &floats, NULL)
                csv_row(&c, &b, &queues, epoch)
            finally:
                close_value(&view, held)
        try:
            return PyUnicode_DecodeUTF8(b.data, b.n, "strict")
        except UnicodeDecodeError:
            raise Unsupported("a string that is not UTF-8") from None
    finally:
        free(b.data)
        free(queues.data)
        free(floats.data)


# ============================================================================================ JSON lines

cdef enum:
    J_STR = 1
    J_FLOAT = 2
    J_INT = 3
    J_BOOL = 4
    J_ARRAY = 5
    J_STRUCT = 6


cdef class FieldLayout:
    pass


def _layout(tp) -> FieldLayout:
    """How a value of type ``tp`` (as bindings.reports's views declare it: enumerations as their values)
    becomes JSON; Unsupported for a type this transcoder does not know (the export then uses the twin)."""
    cdef FieldLayout lay = FieldLayout()
    args = typing.get_args(tp)
    if args and type(None) in args and typing.get_origin(tp) is not tuple:
        rest = [a for a in args if a is not type(None)]
        if len(rest) != 1:
            raise Unsupported(f"no JSON layout for {tp!r}")
        lay = _layout(rest[0])
        lay.optional = True
        return lay
    lay.optional = False
    if tp is str or (isinstance(tp, type) and issubclass(tp, enum.Enum)
                     and all(isinstance(m.value, str) for m in tp)):
        lay.kind = J_STR
    elif tp is float:
        lay.kind = J_FLOAT
    elif tp is bool:
        lay.kind = J_BOOL
    elif tp is int:
        lay.kind = J_INT
    elif typing.get_origin(tp) is tuple and len(args) == 2 and args[1] is Ellipsis:
        lay.kind = J_ARRAY
        lay.item = _layout(args[0])
    elif isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        config = tp.__struct_config__
        if not config.array_like or config.tag is not None or config.omit_defaults:
            raise Unsupported(f"no JSON layout for {tp!r}")
        lay.kind = J_STRUCT
        lay.fields, lay.keys, lay.defaults = [], [], []
        for i, f in enumerate(msgspec.structs.fields(tp)):
            lay.fields.append(_layout(f.type))
            lay.keys.append((b"," if i else b"") + msgspec.json.encode(f.encode_name) + b":")
            if f.default is not msgspec.NODEFAULT:
                default = f.default.value if isinstance(f.default, enum.Enum) else f.default
                lay.defaults.append(msgspec.json.encode(default))
            elif f.default_factory is not msgspec.NODEFAULT:
                lay.defaults.append(msgspec.json.encode(f.default_factory()))
            else:
                lay.defaults.append(None)
        lay.required = _required(tp)
    else:
        raise Unsupported(f"no JSON layout for {tp!r}")
    return lay


try:
    _RECORD_LAYOUT = _layout(CallRecord)
except Unsupported:  # a field type added to CallRecord that this transcoder does not know: the twin exports
    _RECORD_LAYOUT = None

JSON_SUPPORTED = _RECORD_LAYOUT is not None

cdef const char* JSON_ESCAPE_SHORT = b"btn\x00fr"  # \b \t \n (\v has none) \f \r for 0x08..0x0d
cdef const char* HEX = b"0123456789abcdef"


cdef int put_json_str(Buf* b, const uint8_t* p, Py_ssize_t n) except -1:
    # msgspec's escaping: '"', '\\' and the C0 controls (short forms \b \t \n \f \r, else \u00xx);
    # everything else as is, after checking it is UTF-8 (msgspec rejects a string that is not).
    cdef Py_ssize_t i, start = 0
    cdef uint8_t ch
    cdef bint high = False
    cdef char esc[6]
    putc(b, b'"')
    for i in range(n):
        ch = p[i]
        if ch >= 0x80:
            high = True
            continue
        if ch >= 0x20 and ch != 34 and ch != 92:
            continue
        put(b, <const char*>p + start, i - start)
        start = i + 1
        if ch == 34 or ch == 92:
            putc(b, b'\\')
            putc(b, <char>ch)
        elif 0x08 <= ch <= 0x0d and ch != 0x0b:
            putc(b, b'\\')
            putc(b, JSON_ESCAPE_SHORT[ch - 0x08])
        else:
            esc[0] = b'\\'; esc[1] = b'u'; esc[2] = b'0'; esc[3] = b'0'
            esc[4] = HEX[ch >> 4]; esc[5] = HEX[ch & 15]
            put(b, esc, 6)
    put(b, <const char*>p + start, n - start)
    if high and not utf8_valid(p, n):
        raise Unsupported("a string that is not UTF-8")
    return putc(b, b'"')


cdef struct FloatTexts:
    const char* p       # the next float in msgspec's JSON array of the batch's floats
    const char* end


cdef int transcode(Cursor* c, FieldLayout lay, Buf* out, Vec* floats, FloatTexts* texts) except -1:
    """One stored value as JSON. With ``out`` NULL only collect the floats (the first pass)."""
    cdef Value v
    cdef Py_ssize_t i, nf
    cdef double x
    cdef const char* q
    cdef bytes key, default
    read_value(c, &v)
    if v.kind == K_NIL:
        if not lay.optional:
            raise Unsupported("None where a value is required")
        if out != NULL:
            put(out, b"null", 4)
        return 0
    if lay.kind == J_STR:
        if v.kind != K_STR:
            raise Unsupported("expected a string")
        if out != NULL:
            put_json_str(out, v.s, v.n)
        else:
            for i in range(v.n):
                if v.s[i] >= 0x80:
                    if not utf8_valid(v.s, v.n):
                        raise Unsupported("a string that is not UTF-8")
                    break
    elif lay.kind == J_FLOAT:
        if v.kind == K_FLOAT:
            x = v.f
        elif v.kind == K_UINT:
            x = <double>v.u
        elif v.kind == K_INT:
            x = <double>v.i
        else:
            raise Unsupported("expected a float")
        if out == NULL:
            push_f64(floats, x)
        else:
            q = texts.p
            while texts.p < texts.end and texts.p[0] != b',' and texts.p[0] != b']':
                texts.p += 1
            put(out, q, texts.p - q)
            texts.p += 1
    elif lay.kind == J_INT:
        if v.kind == K_UINT:
            if out != NULL:
                put_uint(out, v.u)
        elif v.kind == K_INT:
            if out != NULL:
                put_int(out, v.i)
        else:
            raise Unsupported("expected an int")
    elif lay.kind == J_BOOL:
        if v.kind != K_BOOL:
            raise Unsupported("expected a bool")
        if out != NULL:
            if v.u:
                put(out, b"true", 4)
            else:
                put(out, b"false", 5)
    elif lay.kind == J_ARRAY:
        if v.kind != K_ARRAY:
            raise Unsupported("expected an array")
        if out != NULL:
            putc(out, b'[')
        for i in range(v.n):
            if i and out != NULL:
                putc(out, b',')
            transcode(c, lay.item, out, floats, texts)
        if out != NULL:
            putc(out, b']')
    else:  # J_STRUCT: an array in field order → an object with every field, defaults for the missing ones
        if v.kind != K_ARRAY:
            raise Unsupported("expected an array-like struct")
        if v.n < lay.required:
            raise Unsupported("struct lacks required fields")
        nf = len(lay.fields)
        if out != NULL:
            putc(out, b'{')
        for i in range(nf):
            if out != NULL:
                key = <bytes>lay.keys[i]
                put(out, PyBytes_AS_STRING(key), PyBytes_GET_SIZE(key))
            if i < v.n:
                transcode(c, <FieldLayout>lay.fields[i], out, floats, texts)
            elif out != NULL:
                default = <bytes>lay.defaults[i]
                put(out, PyBytes_AS_STRING(default), PyBytes_GET_SIZE(default))
        for i in range(nf, v.n):
            skip_value(c, 0)
        if out != NULL:
            putc(out, b'}')
    return 0


_float_list_encoder = msgspec.json.Encoder()


def json_lines(values) -> bytes:
    """Every record of a batch as one JSON object a line, as bindings.reports.write_jsonl writes them."""
    cdef Buf b
    cdef Vec floats
    cdef Py_buffer view
    cdef Cursor c
    cdef int held
    cdef FloatTexts texts
    cdef FieldLayout lay = _RECORD_LAYOUT
    cdef bytes encoded
    if lay is None:
        raise Unsupported("CallRecord has a field type the JSON transcoder does not know")
    b.data = NULL
    b.n = b.cap = 0
    vec_init(&floats, 8)
    try:
        # Pass 1: every float of the batch, in order; msgspec formats them all in one call.
        for value in values:
            held = open_value(value, &view, &c)
            try:
                transcode(&c, lay, NULL, &floats, NULL)
            finally:
                close_value(&view, held)
        encoded = _float_list_encoder.encode(vec_array(&floats, np.float64).tolist())
        texts.p = PyBytes_AS_STRING(encoded) + 1
        texts.end = PyBytes_AS_STRING(encoded) + PyBytes_GET_SIZE(encoded)
        # Pass 2: the JSON, floats taken from msgspec's text in the same order.
        buf_reserve(&b, 400 * len(values))
        for value in values:
            held = open_value(value, &view, &c)
            try:
                transcode(&c, lay, &b, NULL, &texts)
            finally:
                close_value(&view, held)
            putc(&b, b'\n')
        return PyBytes_FromStringAndSize(b.data, b.n)
    finally:
        free(b.data)
        free(floats.data)
