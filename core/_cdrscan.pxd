# What C sees of the stored-record scanner (core/_cdrscan.pyx): a cursor over MessagePack bytes,
# (pointer, length) slices into the record being read, growable C columns, an interning table of names,
# an output buffer, and the compiled field layout of a record for the JSON transcoder.

from libc.stdint cimport int8_t, int32_t, int64_t, uint8_t, uint64_t

cdef struct Cursor:
    const uint8_t* p        # next byte to read
    const uint8_t* end      # one past the record's last byte

cdef struct Value:
    int kind                # one of the K_* below
    int64_t i               # K_INT (negative MessagePack ints)
    uint64_t u              # K_UINT
    double f                # K_FLOAT
    const uint8_t* s        # K_STR, K_BIN: the bytes, inside the record
    Py_ssize_t n            # K_STR, K_BIN: length; K_ARRAY, K_MAP: element count

cdef enum:
    K_NIL = 0
    K_BOOL = 1
    K_INT = 2
    K_UINT = 3
    K_FLOAT = 4
    K_STR = 5
    K_BIN = 6
    K_ARRAY = 7
    K_MAP = 8
    K_EXT = 9

cdef struct Slice:
    const uint8_t* p
    Py_ssize_t n

cdef struct Vec:              # a growable C array of `size`-byte items, one column
    char* data
    Py_ssize_t n
    Py_ssize_t cap
    Py_ssize_t size

cdef struct Buf:              # a growable byte buffer (export output)
    char* data
    Py_ssize_t n
    Py_ssize_t cap


cdef struct Tally:             # KPI counters per (dimension, key code, interval start), summed in one pass
    Py_ssize_t* slots       # open addressing over groups, linear probing; -1 is empty
    Py_ssize_t mask
    int8_t* dim             # per group
    int32_t* code
    int64_t* start          # interval start, seconds
    int64_t* sums           # per group, len(TALLY_FIELDS) counters
    Py_ssize_t n
    Py_ssize_t cap
    int64_t interval


cdef class NameTable:
    """Names (queues, agents, trunks ...) → small int codes, looked up by their UTF-8 bytes."""
    cdef Py_ssize_t* slots      # open addressing, linear probing; -1 is empty
    cdef Py_ssize_t mask
    cdef uint64_t* hashes       # per code
    cdef Py_ssize_t* offsets    # per code, into arena
    cdef Py_ssize_t* lengths
    cdef Py_ssize_t count
    cdef Py_ssize_t room
    cdef Buf arena
    cdef bint frozen            # an enumeration: unknown names are an error, not a new code
    cdef readonly list names    # code → str

    cdef int32_t code(self, const uint8_t* s, Py_ssize_t n) except -1
    cdef int _grow(self) except -1


cdef class FieldLayout:
    """One msgspec Struct type as the JSON transcoder walks it (kinds, keys, defaults, nested layouts)."""
    cdef int kind               # L_* (what JSON value a stored value becomes)
    cdef bint optional          # None allowed
    cdef FieldLayout item       # L_ARRAY: the layout of each element
    cdef list fields            # L_STRUCT: FieldLayout per field
    cdef list keys              # L_STRUCT: b'"name":' per field (with the leading comma after the first)
    cdef list defaults          # L_STRUCT: the JSON of each field's default (None when required)
    cdef Py_ssize_t required    # L_STRUCT: how many leading elements a stored array must have


cdef class ColumnScan:
    """The columns of core.cdr.kpi.Columns, filled from stored records."""
    cdef bint calls, agents
    cdef NameTable names, directions, dispositions, outcomes
    cdef Vec offered, answered, ended, pdd, direction, disposition, node, trunk, campaign
    cdef Vec seg_rec, seg_queue, seg_joined, seg_left, seg_outcome, seg_agent, seg_agent_ended, seg_acw
    cdef Vec offer_agent, offer_time
    cdef Py_ssize_t n

    cdef int _reserve(self, Py_ssize_t n) except -1
    cdef int _record(self, Cursor* c) except -1
    cdef int _segments(self, Cursor* c, Py_ssize_t rec, bint full) except -1
