"""The ACD's matching hot loop in Cython: queues, agents, strategies, tiers, timers, counters.

Every rule, order and tie-break is that of ``core/acd/_pyacd.py`` (read its "Theory of operation"
first); this file keeps the same state in C arrays so that a match costs O(log n):

* each queue has, per tier level, a pool of its agents: free ones sit in an indexed min-heap keyed
  (strategy key, idle since, agent index), the keys inline, for longest-idle, fewest-calls,
  least-talk-time and skills, or in a bitset over the level's ring order (position, then configuration order) for
  round-robin (next set bit after the last offered), linear (first set bit), random (k-th set
  bit) and ring-all (every set bit). An agent's keys cannot change while it is free, so they are
  fixed when it enters the pools; an agent is in the pools of every queue it serves while free
  and in none while busy anywhere;
* each queue has, per open tier level, a 4-ary min-heap of its waiting members keyed
  -priority * 2**42 + arrival, the keys inline (a sift stays in one array), with lazy removal
  (an entry is valid while the member waits with the entry's ticket), and a linked list in join
  order for the longest wait;
* one timer heap keyed (deadline, order scheduled) with lazy cancellation by generation;
* ids (agents, queues, members) map to indexes through open-addressing tables that keep the hash
  (and, for agents and queues, a short ASCII id's text) in the slot, so a lookup reads one cache
  line; the events of the matching path are read from their Struct slots directly. A member
  named by an int is a token: its id lives in its record, no object;
* outputs are small C records in an array read from a moving head: next_output makes the Struct
  only when asked, take_records copies the ints out.

Two faces take the same events: ``handle_event`` (one Struct) and ``handle_records`` (a buffer of
int records, core.acd.model's layout: what a ring between processes carries). A batch lets the
core see what comes next: ``_warm`` reads, for eight events at once, the lines each will need, so
that their cache misses overlap instead of following one another.

With 10,000 agents and 100,000 callers the state does not fit in the caches, and a match is a
chain of dependent loads (id → agent → its entries → queue heads → member → heap). The layout
keeps that chain short (records on whole cache lines, the fields a match reads in an agent's
first line, an agent's entries contiguous, pool keys in the pool heaps, each heap node's four
children in one line, the big arrays on 2 MB pages) and the loads that do not depend on each
other are issued together (``_warm`` for a batch; prefetches for a single event).

One object owns all of it; nothing is locked, no clock is read (``now`` is an argument).
"""

cimport cython
from cpython.buffer cimport PyBUF_SIMPLE, PyBUF_WRITABLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.long cimport PyLong_AsLongLongAndOverflow, PyLong_CheckExact
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.object cimport Py_EQ, PyObject_Hash, PyObject_RichCompareBool
from cpython.ref cimport PyObject, Py_INCREF, Py_XDECREF
from libc.stdint cimport uint32_t, uint64_t
from libc.stdlib cimport free
from libc.string cimport memcmp, memcpy, memmove, memset
from posix.mman cimport MADV_HUGEPAGE, madvise
from posix.stdlib cimport posix_memalign

from core.acd._pyacd import Plan
from core.acd.model import (
    AgentCallStarted, AgentPaused, AgentStats, AgentStatusChanged, CallEnded, MemberExited,
    MemberJoined, MemberLeft, NoAnswer, Offer, OfferAnswered, OfferCancelled, OfferRejected,
    OfferTimedOut, PhoneRegistered, PhoneUnregistered, QueueStats, STATUSES, STATES, STRATEGIES,
    EMPTY_RULES, MAX_LEVEL, CANCEL_ANSWERED_ELSEWHERE, CANCEL_MEMBER_EXITED, CANCEL_MEMBER_LEFT,
    EXIT_JOIN_EMPTY, EXIT_LEAVE_EMPTY, EXIT_MAX_WAIT, PAUSE_NO_ANSWER, MAX_PRIORITY, REASONS,
    RECORD_WORDS,
)

__all__ = ["AutomaticCallDistributor"]

assert MAX_LEVEL == MAXL
assert RECORD_WORDS == RECORD_WORDS_
assert (Offer.kind, OfferCancelled.kind, OfferTimedOut.kind, MemberExited.kind, AgentPaused.kind) == \
    (O_OFFER, O_CANCELLED, O_TIMED_OUT, O_EXITED, O_PAUSED)
assert REASONS[RC_ANSWERED_ELSEWHERE] == CANCEL_ANSWERED_ELSEWHERE and \
    REASONS[RC_MEMBER_LEFT] == CANCEL_MEMBER_LEFT and REASONS[RC_MEMBER_EXITED] == CANCEL_MEMBER_EXITED \
    and REASONS[RC_MAX_WAIT] == EXIT_MAX_WAIT and REASONS[RC_JOIN_EMPTY] == EXIT_JOIN_EMPTY and \
    REASONS[RC_LEAVE_EMPTY] == EXIT_LEAVE_EMPTY and REASONS[RC_NO_ANSWER] == PAUSE_NO_ANSWER
assert sizeof(MemberKey) == 16  # mheap_grow lays four to a cache line
assert sizeof(AgentRec) == 192 and sizeof(EntryRec) == 32 and sizeof(MemberRec) == 64  # whole lines


cdef void *line_alloc(size_t size) noexcept:
    """``size`` bytes on a 64-byte boundary (a record never straddles a line it need not), freed
    with ``free``; NULL when out of memory. A big array (the agents, members, member table and
    timers of a large centre) is put on 2 MB pages where the kernel allows it: a match's reads
    land on random records of several such arrays, and with 4 kB pages most of them would also
    miss the TLB (a page walk, and the CPU drops a prefetch that needs one)."""
    cdef void *p = NULL
    if size >= HUGE_PAGE // 2:  # rounded up to whole huge pages: at most half of it unused
        size = (size + HUGE_PAGE - 1) & ~(<size_t>HUGE_PAGE - 1)
        if posix_memalign(&p, HUGE_PAGE, size) != 0:
            return NULL
        madvise(p, size, MADV_HUGEPAGE)  # advice only: refused, the array stays on small pages
        return p
    if posix_memalign(&p, 64, size if size else 64) != 0:
        return NULL
    return p

cdef extern from *:
    int __builtin_ctzll(unsigned long long) nogil
    int __builtin_popcountll(unsigned long long) nogil
    void __builtin_prefetch(const void *) nogil

# The classes the dispatcher compares against, held in C globals (no module-dict lookup per event).
cdef object _MemberJoined = MemberJoined
cdef object _MemberLeft = MemberLeft
cdef object _CallEnded = CallEnded
cdef object _OfferAnswered = OfferAnswered
cdef object _OfferRejected = OfferRejected
cdef object _NoAnswer = NoAnswer
cdef object _AgentStatusChanged = AgentStatusChanged
cdef object _PhoneRegistered = PhoneRegistered
cdef object _PhoneUnregistered = PhoneUnregistered
cdef object _AgentCallStarted = AgentCallStarted
cdef object _Offer = Offer
cdef object _OfferCancelled = OfferCancelled
cdef object _OfferTimedOut = OfferTimedOut
cdef object _MemberExited = MemberExited
cdef object _AgentPaused = AgentPaused
cdef tuple _STATUS_NAMES = STATUSES   # index = AgentStatus
cdef tuple _STATE_NAMES = STATES      # index = AgentState
cdef tuple _REASONS = REASONS         # index = Reason
cdef object _S_NO_ANSWER = PAUSE_NO_ANSWER

# Members are named by an int (a token) or by any other id. An exact int that fits in 64 bits is a
# token wherever it comes from (a record or a Struct), so the two forms name the same member; a
# token member keeps its id in its record, not as an object. Internal calls that take
# (member_id, token) pass _TOKEN as member_id when the token names the member.
cdef object _TOKEN = object()


cdef inline object as_token(object member_id, long long *token):
    """_TOKEN (and the value in ``token``) for an exact int id that fits in 64 bits; any other id
    as it is."""
    cdef int overflow = 0
    cdef long long value
    if PyLong_CheckExact(member_id):
        value = PyLong_AsLongLongAndOverflow(member_id, &overflow)
        if not overflow:
            token[0] = value
            return _TOKEN
    return member_id


cdef inline Py_hash_t token_hash(long long token) noexcept nogil:
    # A full mix (MurmurHash3's 64-bit finaliser), not Fibonacci hashing: multiples of the golden
    # ratio spread consecutive tokens evenly, so evenly that a new token lands beside an old one and a
    # duplicate check walks ~3 taken slots (a 3.2-slot walk at 100,000 members, against 0.8 with a
    # full mix), and the table's home counts rarely answer "absent" on their own.
    cdef uint64_t x = <uint64_t>token
    x ^= x >> 33
    x *= 0xFF51AFD7ED558CCDULL
    x ^= x >> 33
    x *= 0xC4CEB9FE1A85EC53ULL
    x ^= x >> 33
    return <Py_hash_t>(x >> 32)


# The fields of the events on the matching path are read straight from the Struct's slots, at the
# offsets its member descriptors give (what ``event.member`` does, without the attribute lookup).
# Only done for a type checked with ``type(event) is ...``, so the layout is that class's.

cdef extern from "structmember.h":
    ctypedef struct PyMemberDef:
        const char *name
        int type
        Py_ssize_t offset
    int T_OBJECT_EX

cdef extern from "Python.h":
    ctypedef struct PyMemberDescrObject:
        PyMemberDef *d_member

cdef object _member_descriptor = type(MemberJoined.__dict__["member"])


cdef Py_ssize_t field_offset(object cls, str name) except -1:
    descr = cls.__dict__[name]
    if type(descr) is not _member_descriptor or \
            (<PyMemberDescrObject *>descr).d_member.type != T_OBJECT_EX:
        raise TypeError(f"{cls.__name__}.{name} is not an object slot")
    return (<PyMemberDescrObject *>descr).d_member.offset


cdef inline object field(object obj, Py_ssize_t offset):
    cdef PyObject *value = (<PyObject **>(<char *><PyObject *>obj + offset))[0]
    if value == NULL:
        raise AttributeError(offset)
    return <object>value


cdef Py_ssize_t _MJ_MEMBER = field_offset(MemberJoined, "member")
cdef Py_ssize_t _MJ_QUEUE = field_offset(MemberJoined, "queue")
cdef Py_ssize_t _MJ_PRIORITY = field_offset(MemberJoined, "priority")
cdef Py_ssize_t _CE_AGENT = field_offset(CallEnded, "agent")
cdef Py_ssize_t _OA_MEMBER = field_offset(OfferAnswered, "member")
cdef Py_ssize_t _OA_AGENT = field_offset(OfferAnswered, "agent")


# --- splitmix64 (the twin's generator, draw for draw) ---------------------------------------------

cdef inline uint64_t splitmix64(uint64_t *state) noexcept nogil:
    state[0] += 0x9E3779B97F4A7C15ULL
    cdef uint64_t z = state[0]
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL
    return z ^ (z >> 31)


# --- agent pools: indexed heap of entries --------------------------------------------------------

cdef inline bint item_before(PoolItem *a, PoolItem *b) noexcept nogil:
    if a.key1 != b.key1:
        return a.key1 < b.key1
    if a.key2 != b.key2:
        return a.key2 < b.key2
    return a.agent < b.agent


cdef inline void pool_sift_up(Pool *p, EntryRec *entries, int i) noexcept nogil:
    cdef PoolItem item = p.heap[i]
    cdef int parent
    while i > 0:
        parent = (i - 1) >> 1
        if not item_before(&item, &p.heap[parent]):
            break
        p.heap[i] = p.heap[parent]
        entries[p.heap[i].entry].heap_pos = i
        i = parent
    p.heap[i] = item
    entries[item.entry].heap_pos = i


cdef inline void pool_sift_down(Pool *p, EntryRec *entries, int i) noexcept nogil:
    cdef int n = p.nfree
    cdef PoolItem item = p.heap[i]
    cdef int child
    while True:
        child = 2 * i + 1
        if child >= n:
            break
        if child + 1 < n and item_before(&p.heap[child + 1], &p.heap[child]):
            child += 1
        if not item_before(&p.heap[child], &item):
            break
        p.heap[i] = p.heap[child]
        entries[p.heap[i].entry].heap_pos = i
        i = child
    p.heap[i] = item
    entries[item.entry].heap_pos = i


cdef inline void pool_heap_remove(Pool *p, EntryRec *entries, int e) noexcept nogil:
    cdef int i = entries[e].heap_pos
    entries[e].heap_pos = -1
    p.nfree -= 1
    if i == p.nfree:
        return
    p.heap[i] = p.heap[p.nfree]
    entries[p.heap[i].entry].heap_pos = i
    pool_sift_up(p, entries, i)
    pool_sift_down(p, entries, entries[p.heap[p.nfree].entry].heap_pos)


# --- agent pools: bitset in ring order ------------------------------------------------------------

cdef inline int bits_next(Pool *p, int start) noexcept nogil:
    """The first set ring index >= start, or -1."""
    cdef int w, n
    cdef uint64_t word
    if start >= p.n:
        return -1
    w = start >> 6
    word = p.bits[w] & (~0ULL << (start & 63))
    while True:
        if word:
            n = (w << 6) + __builtin_ctzll(word)
            return n if n < p.n else -1
        w += 1
        if w >= p.nwords:
            return -1
        word = p.bits[w]


cdef inline int bits_kth(Pool *p, int k) noexcept nogil:
    """The ring index of the k-th set bit (0-based), or -1."""
    cdef int w, c
    cdef uint64_t word
    for w in range(p.nwords):
        word = p.bits[w]
        c = __builtin_popcountll(word)
        if k < c:
            return (w << 6) + select64(word, k)
        k -= c
    return -1


cdef inline int ring_pick(int strategy, Pool *p, uint64_t *rng) noexcept nogil:
    """The ring slot a ring-kept strategy picks among ``p``'s free entries (linear: the first;
    round-robin: the first after the last offered, wrapping; random: a uniform draw from ``rng``,
    which it advances, scaled by a multiply rather than a division). ``p`` has one free at
    least: the caller checks ``nfree``."""
    cdef int r
    if strategy == LINEAR_:
        return bits_next(p, 0)
    if strategy == RR:
        r = bits_next(p, p.rr_last + 1)
        return r if r >= 0 else bits_next(p, 0)
    return bits_kth(p, <int>(((splitmix64(rng) >> 32) * <uint64_t>p.nfree) >> 32))


cdef inline int select64(uint64_t word, int k) noexcept nogil:
    """The bit index of the k-th set bit of ``word`` (0-based; k < its popcount): halve the
    range three times by counting the low half's bits (arithmetic, no branch), then step over
    at most seven bits, instead of clearing up to 63 bits one at a time."""
    cdef int pos = 0, c, take
    c = __builtin_popcountll(word & 0xFFFFFFFFULL)
    take = k >= c
    k -= c & -take
    word >>= 32 * take
    pos += 32 * take
    c = __builtin_popcountll(word & 0xFFFFULL)
    take = k >= c
    k -= c & -take
    word >>= 16 * take
    pos += 16 * take
    c = __builtin_popcountll(word & 0xFFULL)
    take = k >= c
    k -= c & -take
    word >>= 8 * take
    pos += 8 * take
    while k:
        word &= word - 1
        k -= 1
    return pos + __builtin_ctzll(word)


# --- id tables: str id -> index, hash inline -----------------------------------------------------
# A dict keyed by fresh id strings, with members joining and leaving all the time, pays a cache miss
# per probe to read each candidate key's hash from the key object, and its deleted entries lengthen
# the probes of a miss (the duplicate check of every join) until the next resize. Here a probe reads
# the hash from the slot itself and a removal shifts the run back, so a miss stops at the first
# empty slot; the key is compared only on a full hash match.

cdef int idt_init(IdTable *t, Py_ssize_t expected) except -1:
    cdef Py_ssize_t cap = 16, i
    while cap < 2 * expected + 2:
        cap <<= 1
    t.slots = <IdSlot *>line_alloc(cap * sizeof(IdSlot))
    t.homes = <unsigned char *>line_alloc(cap)
    if t.slots == NULL or t.homes == NULL:
        raise MemoryError()
    for i in range(cap):
        t.slots[i].value = -1
    memset(t.homes, 0, cap)
    t.mask = cap - 1
    t.n = 0
    return 0


cdef inline void idt_prefetch(IdTable *t, Py_hash_t h) noexcept:
    __builtin_prefetch(&t.homes[<Py_ssize_t>(<uint32_t>h & <size_t>t.mask)])
    __builtin_prefetch(&t.slots[<Py_ssize_t>(<uint32_t>h & <size_t>t.mask)])


cdef inline int idt_lookup(IdTable *t, list keys, MemberRec *ms, object key, Py_hash_t h) except -2:
    """The value stored for ``key`` (whose hash is ``h``), or -1."""
    cdef uint32_t h32 = <uint32_t>h
    cdef Py_ssize_t i = <Py_ssize_t>(h32 & <size_t>t.mask)
    cdef IdSlot *s
    cdef object other
    if t.homes[i] == 0:  # no key starts its run here: absent, without reading the big table
        return -1
    while True:
        s = &t.slots[i]
        if s.value < 0:
            return -1
        if s.hash == h32 and not ms[s.value].by_token:
            other = keys[s.value]
            if other is key or PyObject_RichCompareBool(other, key, Py_EQ):
                return s.value
        i = (i + 1) & t.mask


cdef inline int idt_lookup_token(IdTable *t, MemberRec *ms, long long token, Py_hash_t h) noexcept:
    """The value stored for the token member ``token`` (whose hash is ``h``), or -1."""
    cdef uint32_t h32 = <uint32_t>h
    cdef Py_ssize_t i = <Py_ssize_t>(h32 & <size_t>t.mask)
    cdef IdSlot *s
    if t.homes[i] == 0:
        return -1
    while True:
        s = &t.slots[i]
        if s.value < 0:
            return -1
        if s.hash == h32 and ms[s.value].by_token and ms[s.value].token == token:
            return s.value
        i = (i + 1) & t.mask


cdef int idt_insert(IdTable *t, Py_hash_t h, int value) except -1:
    """Store ``value`` under hash ``h`` (the caller checked the key is absent)."""
    cdef IdSlot *old
    cdef unsigned char *homes
    cdef Py_ssize_t cap, i, j
    if 2 * (t.n + 1) > t.mask + 1:
        old = t.slots
        cap = (t.mask + 1) * 2
        homes = <unsigned char *>line_alloc(cap)
        t.slots = <IdSlot *>line_alloc(cap * sizeof(IdSlot))
        if t.slots == NULL or homes == NULL:
            free(t.slots)
            free(homes)
            t.slots = old
            raise MemoryError()
        free(t.homes)
        t.homes = homes
        memset(t.homes, 0, cap)
        for i in range(cap):
            t.slots[i].value = -1
        for j in range(t.mask + 1):
            if old[j].value >= 0:
                i = <Py_ssize_t>(old[j].hash & <size_t>(cap - 1))
                if t.homes[i] < 255:
                    t.homes[i] += 1
                while t.slots[i].value >= 0:
                    i = (i + 1) & (cap - 1)
                t.slots[i] = old[j]
        t.mask = cap - 1
        free(old)
    i = <Py_ssize_t>(<uint32_t>h & <size_t>t.mask)
    if t.homes[i] < 255:
        t.homes[i] += 1
    while t.slots[i].value >= 0:
        i = (i + 1) & t.mask
    t.slots[i].hash = <uint32_t>h
    t.slots[i].value = value
    t.n += 1
    return 0


cdef void idt_remove(IdTable *t, Py_hash_t h, int value) noexcept:
    """Take out the slot holding ``value`` (stored under hash ``h``); shift its run back."""
    cdef Py_ssize_t i = <Py_ssize_t>(<uint32_t>h & <size_t>t.mask)
    cdef Py_ssize_t j, k
    while t.slots[i].value != value:
        if t.slots[i].value < 0:
            return
        i = (i + 1) & t.mask
    k = <Py_ssize_t>(<uint32_t>h & <size_t>t.mask)
    if t.homes[k] < 255:  # a saturated count stays: "maybe here" is always safe
        t.homes[k] -= 1
    j = i
    while True:
        j = (j + 1) & t.mask
        if t.slots[j].value < 0:
            break
        k = <Py_ssize_t>(t.slots[j].hash & <size_t>t.mask)
        # slot j may move back to i unless its home k lies cyclically in (i, j]
        if (k > i and k <= j) if i <= j else (k > i or k <= j):
            continue
        t.slots[i] = t.slots[j]
        i = j
    t.slots[i].value = -1
    t.n -= 1


cdef extern from *:
    """
    #define PyList_GET_ITEM_PTR(list) (((PyListObject *)(list))->ob_item)
    """
    PyObject **PyList_GET_ITEM_PTR(list)

cdef extern from "Python.h":
    bint PyUnicode_CheckExact(object)
    bint PyUnicode_IS_COMPACT_ASCII(object)
    Py_ssize_t PyUnicode_GET_LENGTH(object)
    void *PyUnicode_DATA(object)


cdef int kt_build(KeyTable *t, list keys) except -1:
    """A fixed table of ``keys`` (distinct) -> their index; no insertion afterwards."""
    cdef Py_ssize_t cap = 16, i, n = len(keys)
    cdef KeySlot *s
    cdef object key
    cdef uint32_t h32
    while cap < 2 * n + 2:
        cap <<= 1
    t.slots = <KeySlot *>PyMem_Malloc(cap * sizeof(KeySlot))
    if t.slots == NULL:
        raise MemoryError()
    t.mask = cap - 1
    for i in range(cap):
        t.slots[i].value = -1
    for v in range(n):
        key = keys[v]
        h32 = <uint32_t>PyObject_Hash(key)
        i = <Py_ssize_t>(h32 & <size_t>t.mask)
        while t.slots[i].value >= 0:
            i = (i + 1) & t.mask
        s = &t.slots[i]
        s.hash = h32
        s.value = v
        s.length = -1
        s.aux = 0
        if PyUnicode_CheckExact(key) and PyUnicode_IS_COMPACT_ASCII(key) and \
                PyUnicode_GET_LENGTH(key) <= <Py_ssize_t>sizeof(s.text):
            s.length = <int>PyUnicode_GET_LENGTH(key)
            memcpy(s.text, PyUnicode_DATA(key), s.length)
    return 0


cdef int kt_lookup(KeyTable *t, list keys, object key) except -2:
    """The index of ``key``, or -1."""
    cdef KeySlot *s = kt_find(t, keys, key)
    return s.value if s != NULL else -1


cdef KeySlot *kt_find(KeyTable *t, list keys, object key) except? NULL:
    """The slot of ``key``, or NULL."""
    cdef uint32_t h32 = <uint32_t>PyObject_Hash(key)
    cdef Py_ssize_t i = <Py_ssize_t>(h32 & <size_t>t.mask)
    cdef bint ascii = PyUnicode_CheckExact(key) and PyUnicode_IS_COMPACT_ASCII(key)
    cdef Py_ssize_t n = PyUnicode_GET_LENGTH(key) if ascii else -1
    cdef KeySlot *s
    cdef object other
    while True:
        s = &t.slots[i]
        if s.value < 0:
            return NULL
        if s.hash == h32:
            if s.length >= 0 and ascii:
                # both exact ASCII str: equal exactly when the texts are
                if s.length == n and memcmp(s.text, PyUnicode_DATA(key), n) == 0:
                    return s
            else:
                other = keys[s.value]
                if other is key or PyObject_RichCompareBool(other, key, Py_EQ):
                    return s
        i = (i + 1) & t.mask


# --- member heaps ---------------------------------------------------------------------------------

cdef inline bint key_before(MemberKey *a, MemberKey *b) noexcept nogil:
    return a.rank < b.rank


cdef inline void mheap_sift_up(MemberHeap *h, int i) noexcept nogil:
    cdef MemberKey k = h.items[i]
    cdef int parent
    while i > 0:
        parent = (i - 1) >> 2
        if not key_before(&k, &h.items[parent]):
            break
        h.items[i] = h.items[parent]
        i = parent
    h.items[i] = k


cdef inline int min_child(MemberKey *items, int child, int n) noexcept nogil:
    """The smallest of the children items[child:child + 4] (those below ``n``). Which child wins
    is a coin toss a branch predictor cannot learn: with all four present (the usual case) it is
    picked with comparisons turned into arithmetic, no branch."""
    cdef int c, a, b
    if child + 4 <= n:
        a = child + (items[child + 1].rank < items[child].rank)
        b = child + 2 + (items[child + 3].rank < items[child + 2].rank)
        return b if items[b].rank < items[a].rank else a
    for c in range(child + 1, n):
        if key_before(&items[c], &items[child]):
            child = c
    return child


cdef inline void mheap_pop(MemberHeap *h) noexcept nogil:
    cdef int n, i, child
    cdef MemberKey last
    h.n -= 1
    n = h.n
    if n == 0:
        return
    last = h.items[n]
    i = 0
    while True:
        child = 4 * i + 1
        if child >= n:
            break
        child = min_child(h.items, child, n)
        if not key_before(&h.items[child], &last):
            break
        h.items[i] = h.items[child]
        i = child
    h.items[i] = last


cdef int mheap_grow(MemberHeap *h, int cap) except -1:
    """Move the heap to room for ``cap`` keys. MemberKey is 16 bytes, and the children of node i
    are 4i+1..4i+4: with items[1] on a 64-byte boundary, each node's children fill exactly one
    cache line, so a pop down the heap reads one line per level, not two."""
    cdef void *raw = PyMem_Malloc((cap + 3) * sizeof(MemberKey) + 64)
    cdef size_t line
    cdef MemberKey *items
    if raw == NULL:
        raise MemoryError()
    line = (<size_t>raw + 63) & ~(<size_t>63)
    items = <MemberKey *>(line + 64 - sizeof(MemberKey))  # items[1] at line + 64
    if h.n:
        memcpy(items, h.items, h.n * sizeof(MemberKey))
    PyMem_Free(h.raw)
    h.raw = raw
    h.items = items
    h.cap = cap
    return 0


cdef inline bint key_valid(MemberRec *ms, MemberKey *k) noexcept nogil:
    return ms[k.slot].waiting and ms[k.slot].ticket == k.ticket


cdef void mheap_compact(MemberHeap *h, MemberRec *ms) noexcept nogil:
    """Drop the stale entries and heapify again (Floyd): O(n), once the stale outnumber the live."""
    cdef int i, n = 0
    for i in range(h.n):
        if key_valid(ms, &h.items[i]):
            h.items[n] = h.items[i]
            n += 1
    h.n = 0
    for i in range(n):
        h.n += 1
        mheap_sift_up(h, i)
    h.stale = 0


# --- timers ---------------------------------------------------------------------------------------

cdef inline bint timer_before(TimerRec *a, TimerRec *b) noexcept nogil:
    if a.deadline != b.deadline:
        return a.deadline < b.deadline
    return a.seq < b.seq


cdef inline bint rule_applies(QueueRec *q, int rule) noexcept nogil:
    if rule == R_NO_AGENTS:
        return q.logged_in == 0
    if rule == R_NO_AVAILABLE:
        return q.ready == 0
    return False


@cython.final
cdef class AutomaticCallDistributor:
    """Queues, agents and the matching between them, for one owner (see core/acd/_pyacd.py)."""

    def __cinit__(self):
        self.agents = NULL
        self.entry_starts = NULL
        self.out = NULL
        self.out_head = self.out_tail = self.out_cap = 0
        self.entries = NULL
        self.queues = NULL
        self.members = NULL
        self.timers = NULL
        self.phone_up = NULL
        self.phone_agent = NULL
        self.n_queues = 0
        self.agent_by_id.slots = NULL
        self.queue_by_name.slots = NULL
        self.member_by_id.slots = NULL
        self.member_by_id.homes = NULL

    def __init__(self, queues, agents, *, seed=0):
        cdef int i, j, n, e, qi, level
        cdef AgentRec *a
        cdef QueueRec *q
        cdef Pool *p
        plan = Plan(queues, agents)
        self.out_cap = 64
        self.out = <OutRec *>PyMem_Malloc(self.out_cap * sizeof(OutRec))
        if self.out == NULL:
            raise MemoryError()
        self.rng = <uint64_t>(seed & 0xFFFFFFFFFFFFFFFF)
        self.member_seq = 0
        self.timer_seq = 0

        # agents
        self.n_agents = len(plan.agents)
        self.agents = <AgentRec *>line_alloc(max(self.n_agents, 1) * sizeof(AgentRec))
        if self.agents == NULL:
            raise MemoryError()
        memset(self.agents, 0, max(self.n_agents, 1) * sizeof(AgentRec))
        self.agent_ids = [agent.id for agent in plan.agents]
        self.agent_reasons = [""] * self.n_agents
        kt_build(&self.agent_by_id, self.agent_ids)
        for i, agent in enumerate(plan.agents):
            a = &self.agents[i]
            a.status = ST_LOGGED_OUT
            a.state = S_IDLE
            a.max_no_answer = agent.max_no_answer
            a.no_answer_delay = agent.no_answer_delay
            a.wrap_up = -1.0 if agent.wrap_up is None else agent.wrap_up
            a.offer_member = -1
            a.offer_queue = -1
            a.next_offer = -1
            a.call_queue = -1
            a.id = <PyObject *>self.agent_ids[i]

        # phones
        n = len(plan.phone_agent)
        self.n_phones = n
        self.phone_index = {}
        self.phone_up = <char *>PyMem_Malloc(max(n, 1))
        self.phone_agent = <int *>PyMem_Malloc(max(n, 1) * sizeof(int))
        if self.phone_up == NULL or self.phone_agent == NULL:
            raise MemoryError()
        for i, (phone, j) in enumerate(plan.phone_agent.items()):
            self.phone_index[phone] = i
            self.phone_up[i] = 0
            self.phone_agent[i] = j

        # tier entries, numbered agent by agent (each agent's in queue order, as the plan's), so
        # that an agent's entries are contiguous: entries[first_entry:first_entry + n_entries]
        self.n_entries = len(plan.entries)
        self.entries = <EntryRec *>line_alloc(max(self.n_entries, 1) * sizeof(EntryRec))
        if self.entries == NULL:
            raise MemoryError()
        renumbered = [0] * self.n_entries
        j = 0
        for i, ids in enumerate(plan.agent_entries):
            self.agents[i].first_entry = j
            self.agents[i].n_entries = len(ids)
            for e in ids:
                renumbered[e] = j
                qi, _agent, level, _position, skill = plan.entries[e]
                self.entries[j].agent = i
                self.entries[j].queue = qi
                self.entries[j].level = level
                self.entries[j].ring = 0
                self.entries[j].skill_level = skill
                self.entries[j].heap_pos = -1
                j += 1

        self.entry_starts = <int *>PyMem_Malloc((self.n_agents + 1) * sizeof(int))
        if self.entry_starts == NULL:
            raise MemoryError()
        for i in range(self.n_agents):
            self.entry_starts[i] = self.agents[i].first_entry
        self.entry_starts[self.n_agents] = self.n_entries

        for i in range(self.agent_by_id.mask + 1):
            if self.agent_by_id.slots[i].value >= 0:
                self.agent_by_id.slots[i].aux = self.agents[self.agent_by_id.slots[i].value].first_entry

        # queues and their pools
        n = len(plan.queues)
        self.queues = <QueueRec *>PyMem_Malloc(max(n, 1) * sizeof(QueueRec))
        if self.queues == NULL:
            raise MemoryError()
        memset(self.queues, 0, max(n, 1) * sizeof(QueueRec))
        self.n_queues = n
        self.queue_names = [queue.name for queue in plan.queues]
        self.queue_configs = list(plan.queues)
        kt_build(&self.queue_by_name, self.queue_names)
        for qi, queue in enumerate(plan.queues):
            q = &self.queues[qi]
            q.strategy = STRATEGIES.index(queue.strategy)
            q.heap_pools = q.strategy in (LIA, FEWEST, LEAST_TALK, SKILLS_)
            q.ring_timeout = queue.ring_timeout
            q.wrap_up = queue.wrap_up
            q.max_wait = queue.max_wait
            q.service_level = queue.service_level
            q.short_abandon = queue.short_abandon
            q.join_empty = EMPTY_RULES.index(queue.join_empty)
            q.leave_empty = EMPTY_RULES.index(queue.leave_when_empty)
            q.has_vip = queue.vip_priority is not None
            q.vip_priority = queue.vip_priority if q.has_vip else 0
            q.max_level = plan.max_level[qi]
            for level in range(MAXL + 2):
                q.open_after[level] = plan.open_after[qi][level]
            q.head = q.tail = -1
            for level in range(NLEVELS):
                q.pools[level].rr_last = -1
        for (qi, level), ring in plan.pools.items():
            p = &self.queues[qi].pools[level]
            p.n = len(ring)
            p.nwords = (p.n + 63) >> 6
            p.ring = <RingSlot *>PyMem_Malloc(p.n * sizeof(RingSlot))
            p.heap = <PoolItem *>PyMem_Malloc(p.n * sizeof(PoolItem))
            p.bits = <uint64_t *>PyMem_Malloc(max(p.nwords, 1) * sizeof(uint64_t))
            if p.ring == NULL or p.heap == NULL or p.bits == NULL:
                raise MemoryError()
            memset(p.bits, 0, max(p.nwords, 1) * sizeof(uint64_t))
            for i, e in enumerate(ring):
                p.ring[i].entry = renumbered[e]
                p.ring[i].agent = self.entries[renumbered[e]].agent
                self.entries[renumbered[e]].ring = i

        # members (slots grow on demand) and timers
        self.members_cap = 0
        self.free_slot = -1
        self.member_ids = []
        idt_init(&self.member_by_id, 8)  # grows by doubling
        self.timers_cap = 64
        self.n_timers = 0
        self.timers = <TimerRec *>line_alloc(self.timers_cap * sizeof(TimerRec))
        if self.timers == NULL:
            raise MemoryError()

    def __dealloc__(self):
        cdef int qi, level
        cdef Py_ssize_t i
        if self.out != NULL:
            for i in range(self.out_head, self.out_tail):
                Py_XDECREF(self.out[i].member)
            PyMem_Free(self.out)
        if self.queues != NULL:
            for qi in range(self.n_queues):
                for level in range(NLEVELS):
                    PyMem_Free(self.queues[qi].pools[level].ring)
                    PyMem_Free(self.queues[qi].pools[level].heap)
                    PyMem_Free(self.queues[qi].pools[level].bits)
                    PyMem_Free(self.queues[qi].heaps[level].raw)
        PyMem_Free(self.queues)
        free(self.agents)
        PyMem_Free(self.entry_starts)
        free(self.entries)
        free(self.members)
        free(self.timers)
        PyMem_Free(self.phone_up)
        PyMem_Free(self.phone_agent)
        PyMem_Free(self.agent_by_id.slots)
        PyMem_Free(self.queue_by_name.slots)
        free(self.member_by_id.slots)
        free(self.member_by_id.homes)

    # --- the sans-IO face -------------------------------------------------------------------------

    def handle_event(self, event, double now):
        cdef object kind = type(event)
        cdef int a, status, qi
        cdef long long token = 0
        cdef object member_id
        cdef object queue
        cdef Py_hash_t h
        if kind is _MemberJoined:
            member_id = as_token(field(event, _MJ_MEMBER), &token)
            h = token_hash(token) if member_id is _TOKEN else PyObject_Hash(member_id)
            # The member table is the one structure here too big for the cache: start its lines on
            # their way before the queue lookup.
            idt_prefetch(&self.member_by_id, h)
            queue = field(event, _MJ_QUEUE)
            qi = kt_lookup(&self.queue_by_name, self.queue_names, queue)
            if qi < 0:
                raise KeyError(queue)
            self._prefetch_likely_agent(&self.queues[qi])
            self._member_joined(member_id, token, h, qi, field(event, _MJ_PRIORITY), now)
        elif kind is _CallEnded:
            self._call_ended(self._agent_index(field(event, _CE_AGENT)), now)
        elif kind is _OfferAnswered:
            member_id = as_token(field(event, _OA_MEMBER), &token)
            self._offer_answered(member_id, token, self._agent_index(field(event, _OA_AGENT)), now)
        elif kind is _OfferRejected or kind is _NoAnswer:
            a = self._agent_index(event.agent)
            member_id = as_token(event.member, &token)
            if self.agents[a].offer_member >= 0 and \
                    self._is_member(self.agents[a].offer_member, member_id, token):
                self._missed(a, now, False)
        elif kind is _MemberLeft:
            member_id = as_token(event.member, &token)
            self._member_left(member_id, token, now)
        elif kind is _AgentStatusChanged:
            a = self._agent_index(event.agent)
            if event.status not in _STATUS_NAMES:
                raise ValueError(f"unknown agent status {event.status!r}")
            status = _STATUS_NAMES.index(event.status)
            if self._set_status(a, status, event.reason, now):
                self._refresh(a, now)
        elif kind is _PhoneRegistered:
            self._phone(event.phone, True, now)
        elif kind is _PhoneUnregistered:
            self._phone(event.phone, False, now)
        elif kind is _AgentCallStarted:
            self._agent_call_started(self._agent_index(event.agent), now)
        else:
            raise TypeError(f"not an ACD event: {event!r}")

    def handle_timer(self, double now):
        cdef TimerRec t
        while self.n_timers and self.timers[0].deadline <= now:
            t = self.timers[0]
            self._timer_pop()
            if self._timer_valid(&t):
                self._fire(t.kind, t.target, t.deadline)

    @property
    def timers_held(self):
        """How many timers the ACD holds, those that can no longer fire included."""
        return self.n_timers

    def get_timer(self):
        while self.n_timers and not self._timer_valid(&self.timers[0]):
            self._timer_pop()
        return self.timers[0].deadline if self.n_timers else None

    def handle_records(self, records, double now):
        """The events in ``records`` (any contiguous buffer of records, see core.acd.model), in
        order, as handle_event would take them one by one."""
        cdef Py_buffer view
        cdef Py_ssize_t i, j, g, n
        cdef long long r[RECORD_WORDS_]
        cdef const char *buf
        PyObject_GetBuffer(records, &view, PyBUF_SIMPLE)
        try:
            if view.len % sizeof(r):
                raise ValueError(f"records must be whole records of {sizeof(r)} bytes")
            n = view.len // sizeof(r)
            buf = <const char *>view.buf
            self.asked = False
            i = 0
            while i < n:
                g = min(WARM_GROUP, n - i)
                self._warm(buf + i * sizeof(r), g)
                if i + g < n:
                    self._ask(buf + (i + g) * sizeof(r), min(WARM_GROUP, n - i - g))
                for j in range(g):
                    memcpy(r, buf + (i + j) * sizeof(r), sizeof(r))
                    self._dispatch_record(r, now)
                i += g
        finally:
            PyBuffer_Release(&view)

    def take_records(self, out):
        """Move as many outputs as fit into the writable buffer ``out`` as records; return how
        many. An output about a member whose id is not an int stays for next_output (TypeError)."""
        cdef Py_buffer view
        cdef Py_ssize_t room, n = 0
        cdef long long r[RECORD_WORDS_]
        cdef OutRec *o
        cdef object member
        PyObject_GetBuffer(out, &view, PyBUF_SIMPLE | PyBUF_WRITABLE)
        try:
            room = view.len // sizeof(r)
            while n < room and self.out_head < self.out_tail:
                o = &self.out[self.out_head]
                if o.member == NULL:
                    r[1] = o.token
                else:
                    member = <object>o.member
                    if not PyLong_CheckExact(member):
                        raise TypeError(f"member {member!r} is not an int: take it with next_output")
                    r[1] = member
                r[0] = o.kind
                r[2] = o.agent
                r[3] = o.queue
                r[4] = o.reason
                memcpy(<char *>view.buf + n * sizeof(r), r, sizeof(r))
                self._pop_output()
                n += 1
        finally:
            PyBuffer_Release(&view)
        return n

    def next_output(self):
        cdef OutRec *o
        cdef object member, item
        if self.out_head == self.out_tail:
            return None
        o = &self.out[self.out_head]
        member = <object>o.member if o.member != NULL else o.token
        if o.kind == O_OFFER:
            item = _Offer(member, self.agent_ids[o.agent], self.queue_names[o.queue])
        elif o.kind == O_CANCELLED:
            item = _OfferCancelled(member, self.agent_ids[o.agent], self.queue_names[o.queue],
                                   _REASONS[o.reason])
        elif o.kind == O_TIMED_OUT:
            item = _OfferTimedOut(member, self.agent_ids[o.agent], self.queue_names[o.queue])
        elif o.kind == O_EXITED:
            item = _MemberExited(member, self.queue_names[o.queue], _REASONS[o.reason])
        else:
            item = _AgentPaused(self.agent_ids[o.agent], _REASONS[o.reason])
        self._pop_output()
        return item

    # --- outputs ------------------------------------------------------------------------------------
    # A C array read from a moving head: an output is a few ints and, for a member named by an
    # object, one reference; the Struct is made only if next_output asks for it.

    cdef int _emit(self, int kind, object member_id, long long token, int agent, int queue,
                   int reason) except -1:
        cdef OutRec *grown
        cdef OutRec *o
        if self.out_tail == self.out_cap:
            if 2 * self.out_head >= self.out_cap:  # a reader that lags: reuse the room it left
                memmove(self.out, &self.out[self.out_head],
                        (self.out_tail - self.out_head) * sizeof(OutRec))
                self.out_tail -= self.out_head
                self.out_head = 0
            else:
                grown = <OutRec *>PyMem_Realloc(self.out, 2 * self.out_cap * sizeof(OutRec))
                if grown == NULL:
                    raise MemoryError()
                self.out = grown
                self.out_cap *= 2
        o = &self.out[self.out_tail]
        self.out_tail += 1
        o.kind = kind
        o.agent = agent
        o.queue = queue
        o.reason = reason
        o.token = token
        if member_id is _TOKEN:
            o.member = NULL
        else:
            Py_INCREF(member_id)
            o.member = <PyObject *>member_id
        return 0

    cdef int _emit_member(self, int kind, int m, int agent, int queue, int reason) except -1:
        if self.members[m].by_token:
            return self._emit(kind, _TOKEN, self.members[m].token, agent, queue, reason)
        return self._emit(kind, self.member_ids[m], 0, agent, queue, reason)

    cdef void _pop_output(self) noexcept:
        Py_XDECREF(self.out[self.out_head].member)
        self.out[self.out_head].member = NULL
        self.out_head += 1
        if self.out_head == self.out_tail:
            self.out_head = self.out_tail = 0

    # --- records in -------------------------------------------------------------------------------

    cdef int _dispatch_record(self, long long *r, double now) except -1:
        cdef long long kind = r[0]
        cdef int a, m
        if kind == 4:  # MemberJoined (member, -, queue, priority)
            if r[3] < 0 or r[3] >= self.n_queues:
                raise KeyError(r[3])
            self._member_joined(_TOKEN, r[1], token_hash(r[1]), <int>r[3], r[4], now)
        elif kind == 10:  # CallEnded (-, agent)
            self._call_ended(self._agent_at(r[2]), now)
        elif kind == 6:  # OfferAnswered (member, agent)
            self._offer_answered(_TOKEN, r[1], self._agent_at(r[2]), now)
        elif kind == 7 or kind == 8:  # OfferRejected, NoAnswer (member, agent)
            a = self._agent_at(r[2])
            m = self.agents[a].offer_member
            if m >= 0 and self._is_member(m, _TOKEN, r[1]):
                self._missed(a, now, False)
        elif kind == 5:  # MemberLeft (member)
            self._member_left(_TOKEN, r[1], now)
        elif kind == 1:  # AgentStatusChanged (-, agent, -, status)
            a = self._agent_at(r[2])
            if r[4] < 0 or r[4] >= len(_STATUS_NAMES):
                raise ValueError(f"unknown agent status code {r[4]}")
            if self._set_status(a, <int>r[4], "", now):
                self._refresh(a, now)
        elif kind == 2 or kind == 3:  # PhoneRegistered, PhoneUnregistered (-, -, -, phone)
            if 0 <= r[4] < self.n_phones:  # like an unknown phone: not an agent's, ignored
                self._phone_at(<int>r[4], kind == 2, now)
        elif kind == 9:  # AgentCallStarted (-, agent)
            self._agent_call_started(self._agent_at(r[2]), now)
        else:
            raise TypeError(f"not an ACD event record: kind {kind}")
        return 0

    cdef void _ask(self, const char *records, Py_ssize_t g) noexcept:
        """Prefetch the first lines _warm will read for the next group, while this one runs (it
        gets ahead where the CPU acts on prefetches; _warm's loads make sure of them anyway)."""
        cdef long long r[RECORD_WORDS_]
        cdef Py_ssize_t j
        cdef size_t i, mask = <size_t>self.member_by_id.mask
        cdef long long kind
        cdef uint64_t rng = self.warm_rng  # the generator as it will be after this group
        cdef int e, ai = 0
        for j in range(g):
            memcpy(r, records + j * sizeof(r), sizeof(r))
            kind = r[0]
            if kind == 4 or kind == 5:
                i = <uint32_t>token_hash(r[1]) & mask
                __builtin_prefetch(&self.member_by_id.homes[i])
                __builtin_prefetch(&self.member_by_id.slots[i])
                e = -1
                if kind == 4 and 0 <= r[3] < self.n_queues:
                    self.ask_nfree[j] = self.queues[r[3]].pools[1].nfree  # what the guess assumed
                    self.ask_state[j] = rng
                    e = self._likely_entry(&self.queues[r[3]], &rng, &ai)
                    if e >= 0:
                        __builtin_prefetch(&self.agents[ai])
                        __builtin_prefetch(&self.entries[e])
                self.ask_entry[j] = e  # _warm loads these, rather than work them out again
                self.ask_agent[j] = ai
            elif 1 <= kind <= 10 and 0 <= r[2] < self.n_agents:
                __builtin_prefetch(&self.agents[r[2]])
                __builtin_prefetch(<char *>&self.agents[r[2]] + 64)
                __builtin_prefetch(&self.entries[self.entry_starts[r[2]]])
        self.asked = True

    cdef void _warm(self, const char *records, Py_ssize_t g) noexcept:
        """Read, for the ``g`` (<= WARM_GROUP) events of ``records`` together, the lines each will
        need, in rounds (a round's addresses come from what the round before read): the agent's
        record, the member table's slot, the agent a new caller most likely goes to; then the
        agent's tier entries; then the heads of the member heaps a freed agent is matched
        against; then the member it will be offered with its heap's last key and, one level a
        round, the path down that member's heap that taking it out will walk. The loads of one
        round do not depend on each other, so their cache misses overlap, instead of each event
        waiting for its own misses one after the other. (Prefetch instructions would say the
        same more politely, but on the machines measured they were not acted on; loads are.)
        Nothing is written."""
        cdef long long r[RECORD_WORDS_]
        cdef MemberHeap *heap[WARM_GROUP]   # the heap a freed agent's member will leave
        cdef int node[WARM_GROUP]           # how far down that heap's pop path the rounds are
        cdef Py_ssize_t j
        cdef uint64_t sink = 0
        cdef uint64_t rng = self.rng
        cdef size_t mask = <size_t>self.member_by_id.mask
        cdef size_t i
        cdef long long kind
        cdef AgentRec *a
        cdef EntryRec *entry
        cdef QueueRec *q
        cdef MemberHeap *h
        cdef int e, k, c, level, rnd, more
        for j in range(g):
            heap[j] = NULL
            node[j] = 0
        for rnd in range(2):
            for j in range(g):
                memcpy(r, records + j * sizeof(r), sizeof(r))
                kind = r[0]
                if kind == 4 or kind == 5:  # MemberJoined, MemberLeft
                    if rnd == 0:
                        i = <uint32_t>token_hash(r[1]) & mask
                        sink += self.member_by_id.homes[i] + <uint32_t>self.member_by_id.slots[i].value
                        e = -1
                        if kind == 4 and 0 <= r[3] < self.n_queues:
                            q = &self.queues[r[3]]
                            if self.asked and self.ask_nfree[j] == q.pools[1].nfree and \
                                    (q.strategy != RANDOM_ or self.ask_state[j] == rng):
                                # _ask's guess (made while the group before ran) still holds
                                e = self.ask_entry[j]
                                c = self.ask_agent[j]
                                if q.strategy == RANDOM_ and q.pools[1].nfree:
                                    splitmix64(&rng)  # the draw the guess made
                            else:
                                e = self._likely_entry(q, &rng, &c)
                        if e >= 0:
                            sink += self.agents[c].state + self.entries[e].queue
                    continue
                if kind < 1 or kind > 10 or r[2] < 0 or r[2] >= self.n_agents:
                    continue
                a = &self.agents[r[2]]
                if rnd == 0:  # the record and the entries (where those are: a small array)
                    sink += a.state + (<unsigned char *>a)[64]
                    if self.entry_starts[r[2] + 1] > self.entry_starts[r[2]]:
                        sink += self.entries[self.entry_starts[r[2]]].queue
                        sink += self.entries[self.entry_starts[r[2] + 1] - 1].queue
                elif kind == 10:  # CallEnded: the heads it is matched against; keep the first
                    for k in range(a.first_entry, a.first_entry + a.n_entries):
                        entry = &self.entries[k]
                        q = &self.queues[entry.queue]
                        for level in range(entry.level, q.max_level + 1):
                            h = &q.heaps[level]
                            if h.n and (heap[j] == NULL or key_before(&h.items[0], &heap[j].items[0])):
                                heap[j] = h
        # the members offered, then their heaps' pop paths, a level a round
        more = 1
        rnd = 0
        while more and rnd < 12:
            more = 0
            for j in range(g):
                h = heap[j]
                if h == NULL:
                    continue
                if rnd == 0:  # the member, and the heap's last key, which the pop moves down
                    sink += self.members[h.items[0].slot].ticket + <uint64_t>h.items[h.n - 1].rank
                c = 4 * node[j] + 1
                if c >= h.n:
                    heap[j] = NULL
                    continue
                node[j] = min_child(h.items, c, h.n)  # where the pop goes (reading is the load)
                more = 1
            rnd += 1
            # (reading the children to compare them is the load of the level)
        self.sink_ += sink
        self.warm_rng = rng
        self.asked = False

    cdef int _agent_at(self, long long index) except -1:
        if index < 0 or index >= self.n_agents:
            raise KeyError(index)
        return <int>index

    cdef int _find_member(self, object member_id, long long token) except -2:
        if member_id is _TOKEN:
            return idt_lookup_token(&self.member_by_id, self.members, token, token_hash(token))
        return idt_lookup(&self.member_by_id, self.member_ids, self.members, member_id,
                          PyObject_Hash(member_id))

    cdef bint _is_member(self, int m, object member_id, long long token) except -1:
        if member_id is _TOKEN:
            return self.members[m].by_token and self.members[m].token == token
        return not self.members[m].by_token and \
            PyObject_RichCompareBool(self.member_ids[m], member_id, Py_EQ)

    def queue_stats(self, queue, double now):
        cdef int qi = kt_lookup(&self.queue_by_name, self.queue_names, queue)
        cdef QueueRec *q
        if qi < 0:
            raise KeyError(queue)
        q = &self.queues[qi]
        return QueueStats(
            waiting=q.n_members,
            longest_wait=now - self.members[q.head].joined if q.head >= 0 else 0.0,
            offered=q.offered,
            answered=q.answered,
            abandoned=q.abandoned,
            short_abandoned=q.short_abandoned,
            answered_in_service_level=q.in_service_level,
            average_speed_of_answer=q.wait_answered / q.answered if q.answered else 0.0,
            exited=q.exited,
            refused=q.refused,
        )

    def agent_stats(self, agent, double now):
        cdef int i = self._agent_index(agent)
        cdef AgentRec *a = &self.agents[i]
        return AgentStats(
            status=_STATUS_NAMES[a.status],
            reason=self.agent_reasons[i],
            state=_STATE_NAMES[a.state],
            calls=a.calls,
            talk_time=a.talk_time + (now - a.state_since if a.state == S_TALKING else 0.0),
            wrap_up_time=a.wrap_time + (now - a.state_since if a.state == S_WRAP_UP else 0.0),
            logged_in_time=a.logged_in_time + (now - a.login_since if a.status != ST_LOGGED_OUT else 0.0),
            break_time=a.break_time + (now - a.break_since if a.status == ST_ON_BREAK else 0.0),
            missed_offers=a.missed,
        )

    cdef int _agent_index(self, object agent_id) except -1:
        cdef KeySlot *s = kt_find(&self.agent_by_id, self.agent_ids, agent_id)
        if s == NULL:
            raise KeyError(agent_id)
        # Whatever the event, the agent's record and its tier entries come next: ask for both now
        # rather than the entries only once the record (which says where they are) has arrived.
        __builtin_prefetch(&self.agents[s.value])
        __builtin_prefetch(<char *>&self.agents[s.value] + 64)
        __builtin_prefetch(&self.entries[s.aux])
        return s.value

    # --- timers -----------------------------------------------------------------------------------

    cdef int _schedule(self, double deadline, int kind, int target, uint32_t gen) except -1:
        cdef TimerRec *grown
        cdef TimerRec t
        if self.n_timers == self.timers_cap:
            self._sweep_timers()  # full: grow only if at least half of it is live
            if 2 * self.n_timers >= self.timers_cap:
                grown = <TimerRec *>line_alloc(2 * self.timers_cap * sizeof(TimerRec))
                if grown == NULL:
                    raise MemoryError()
                memcpy(grown, self.timers, self.n_timers * sizeof(TimerRec))
                free(self.timers)
                self.timers = grown
                self.timers_cap *= 2
        t.deadline = deadline
        t.seq = self.timer_seq
        t.kind = kind
        t.target = target
        t.gen = gen
        self.timer_seq += 1
        self._timer_push(t)
        return 0

    cdef void _timer_push(self, TimerRec t) noexcept:
        cdef int i = self.n_timers, parent
        self.n_timers += 1
        while i > 0:
            parent = (i - 1) >> 1
            if not timer_before(&t, &self.timers[parent]):
                break
            self.timers[i] = self.timers[parent]
            i = parent
        self.timers[i] = t

    cdef void _sweep_timers(self) noexcept:
        """Drop the timers that can never fire (their agent or member has moved on: an answered
        offer leaves its ring timeout behind), and heap the rest again, so that the heap holds
        about the live timers rather than every timer of the last ring-timeout's worth of calls.
        Timers are ordered by (deadline, seq), so the order they fire in does not change."""
        cdef int i, n = self.n_timers
        cdef TimerRec *t
        self.n_timers = 0
        for i in range(n):
            t = &self.timers[i]
            if t.kind >= T_MAX_WAIT:
                if not self.members[t.target].alive or self.members[t.target].gen != t.gen:
                    continue
            elif self.agents[t.target].gen != t.gen:
                continue
            self._timer_push(t[0])  # (a copy: the push may write over slot i itself)

    cdef void _timer_pop(self) noexcept:
        cdef int n, i, child
        cdef TimerRec last
        self.n_timers -= 1
        n = self.n_timers
        if n == 0:
            return
        last = self.timers[n]
        i = 0
        while True:
            child = 2 * i + 1
            if child >= n:
                break
            if child + 1 < n and timer_before(&self.timers[child + 1], &self.timers[child]):
                child += 1
            if not timer_before(&self.timers[child], &last):
                break
            self.timers[i] = self.timers[child]
            i = child
        self.timers[i] = last

    cdef bint _timer_valid(self, TimerRec *t) noexcept:
        if t.kind >= T_MAX_WAIT:
            return self.members[t.target].alive and self.members[t.target].gen == t.gen
        return self.agents[t.target].gen == t.gen and (t.kind != T_REST or self.agents[t.target].resting)

    cdef int _fire(self, int kind, int target, double t) except -1:
        cdef AgentRec *a
        cdef MemberRec *m
        cdef QueueRec *q
        cdef int level, old
        if kind == T_OFFER:
            self._missed(target, t, True)
        elif kind == T_WRAP:
            a = &self.agents[target]
            a.wrap_time += t - a.state_since
            a.state = S_IDLE
            a.idle_since = t
            a.gen += 1
            self._refresh(target, t)
        elif kind == T_REST:
            self.agents[target].resting = False
            self._refresh(target, t)
        elif kind == T_MAX_WAIT:
            self._exit_member(target, RC_MAX_WAIT, t)
        else:  # T_TIER
            m = &self.members[target]
            q = &self.queues[m.queue]
            old = m.level
            level = old + 1
            while level < q.max_level and q.open_after[level + 1] <= q.open_after[old + 1]:
                level += 1
            if m.waiting:
                self._stop_waiting(target)
            m.level = level
            if level < q.max_level:
                self._schedule(m.joined + q.open_after[level + 1], T_TIER, target, m.gen)
            if self.members[target].n_offers == 0:
                # The twin pushes, then matches; matching does not read the heaps, so matching
                # first and pushing only when no agent took the member gives the same answers.
                self._match_member(target, t)
                if self.members[target].n_offers == 0:
                    self._push_waiting(target)
        return 0

    # --- members ----------------------------------------------------------------------------------

    cdef int _new_slot(self) except -1:
        cdef int slot, i, cap
        cdef MemberRec *grown
        if self.free_slot < 0:
            cap = self.members_cap * 2 if self.members_cap else 1024
            grown = <MemberRec *>line_alloc(cap * sizeof(MemberRec))
            if grown == NULL:
                raise MemoryError()
            if self.members_cap:
                memcpy(grown, self.members, self.members_cap * sizeof(MemberRec))
            free(self.members)
            self.members = grown
            for i in range(cap - 1, self.members_cap - 1, -1):
                grown[i].alive = False
                grown[i].waiting = False
                grown[i].gen = 0
                grown[i].ticket = 0
                grown[i].next = self.free_slot
                self.free_slot = i
            self.member_ids.extend([None] * (cap - self.members_cap))
            self.members_cap = cap
        slot = self.free_slot
        self.free_slot = self.members[slot].next
        return slot

    cdef int _push_waiting(self, int m) except -1:
        cdef MemberRec *rec = &self.members[m]
        cdef MemberHeap *h = &self.queues[rec.queue].heaps[rec.level]
        cdef MemberKey *grown
        cdef int cap
        if h.n == h.cap:
            if h.stale > 64 and 2 * h.stale > h.n:
                mheap_compact(h, self.members)
            else:
                cap = h.cap * 2 if h.cap else 64
                mheap_grow(h, cap)
        rec.ticket += 1
        rec.waiting = True
        h.items[h.n].rank = -(<long long>rec.priority) * (1LL << 42) + rec.seq
        h.items[h.n].slot = m
        h.items[h.n].ticket = rec.ticket
        h.n += 1
        mheap_sift_up(h, h.n - 1)
        return 0

    cdef void _stop_waiting(self, int m) noexcept:
        """The member leaves its heap: popped when it is the head, else left there stale."""
        cdef MemberRec *rec = &self.members[m]
        cdef MemberHeap *h = &self.queues[rec.queue].heaps[rec.level]
        rec.waiting = False
        rec.ticket += 1
        if h.n and h.items[0].slot == m and h.items[0].ticket == rec.ticket - 1:
            mheap_pop(h)
        else:
            h.stale += 1

    cdef int _head(self, int q, int level) noexcept:
        """The first waiting member of (queue, level), dropping stale entries; -1 if none."""
        cdef MemberHeap *h = &self.queues[q].heaps[level]
        while h.n:
            if h.stale == 0 or key_valid(self.members, &h.items[0]):  # no stale entry: all valid
                return h.items[0].slot
            mheap_pop(h)
            h.stale -= 1
        return -1

    cdef int _member_joined(self, object member_id, long long token, Py_hash_t h, int qi,
                            long long prio, double now) except -1:
        """Member ``member_id`` (or ``token``; its hash ``h``) joins queue ``qi``."""
        cdef QueueRec *q = &self.queues[qi]
        cdef MemberRec *m
        cdef int slot, level, found
        if member_id is _TOKEN:
            found = idt_lookup_token(&self.member_by_id, self.members, token, h)
        else:
            found = idt_lookup(&self.member_by_id, self.member_ids, self.members, member_id, h)
        if found >= 0:
            raise ValueError(f"member {token if member_id is _TOKEN else member_id!r} is already queued")
        if not -MAX_PRIORITY <= prio <= MAX_PRIORITY:
            raise ValueError(f"priority {prio} is outside -{MAX_PRIORITY}..{MAX_PRIORITY}")
        if rule_applies(q, q.join_empty):
            q.refused += 1
            self._emit(O_EXITED, member_id, token, -1, qi, RC_JOIN_EMPTY)
            return 0
        slot = self._new_slot()
        m = &self.members[slot]
        m.queue = qi
        m.priority = <int>prio
        m.joined = now
        m.seq = self.member_seq
        self.member_seq += 1
        m.waiting = False
        m.n_offers = 0
        m.first_offer = m.last_offer = -1
        m.alive = True
        m.gen += 1
        m.by_token = member_id is _TOKEN
        m.token = token
        if not m.by_token:  # (a free slot's id is None already: a token member leaves it so)
            self.member_ids[slot] = member_id
        # join order: append to the queue's list
        m.prev = q.tail
        m.next = -1
        if q.tail >= 0:
            self.members[q.tail].next = slot
        else:
            q.head = slot
        q.tail = slot
        q.n_members += 1
        q.offered += 1
        if q.has_vip and prio >= q.vip_priority:
            m.level = q.max_level
        else:
            level = 1
            while level < q.max_level and q.open_after[level + 1] <= 0.0:
                level += 1
            m.level = level
        if q.max_wait > 0:
            self._schedule(now + q.max_wait, T_MAX_WAIT, slot, m.gen)
        if m.level < q.max_level:
            self._schedule(now + q.open_after[m.level + 1], T_TIER, slot, m.gen)
        # Match first, push only if no agent took the caller (the same answers as the twin's
        # push-then-match: matching a member does not read the heaps).
        self._match_member(slot, now)
        if self.members[slot].n_offers == 0:
            self._push_waiting(slot)
        # Entered in the id table last: nothing above looks members up by id, and by now the
        # table's line, asked for on entry, has arrived.
        idt_insert(&self.member_by_id, h, slot)
        return 0

    cdef int _member_left(self, object member_id, long long token, double now) except -1:
        cdef int m = self._find_member(member_id, token)
        cdef int a
        cdef QueueRec *q
        if m < 0:
            return 0  # already answered or exited: the hang-up raced the ACD
        q = &self.queues[self.members[m].queue]
        if now - self.members[m].joined < q.short_abandon:
            q.short_abandoned += 1
        else:
            q.abandoned += 1
        for a in self._remove_member(m, RC_MEMBER_LEFT, -1):
            self._refresh(a, now)
        return 0

    cdef int _exit_member(self, int m, int reason, double now) except -1:
        cdef int qi = self.members[m].queue
        cdef object member_id = _TOKEN if self.members[m].by_token else self.member_ids[m]
        cdef long long token = self.members[m].token
        cdef list freed = self._remove_member(m, RC_MEMBER_EXITED, -1)
        cdef int a
        self.queues[qi].exited += 1
        self._emit(O_EXITED, member_id, token, -1, qi, reason)
        for a in freed:
            self._refresh(a, now)
        return 0

    cdef list _remove_member(self, int m, int reason, int keep):
        """Take ``m`` out of its queue; cancel its offers but ``keep``'s; return the agents freed."""
        cdef MemberRec *rec = &self.members[m]
        cdef QueueRec *q = &self.queues[rec.queue]
        cdef int qi = rec.queue
        cdef object member_id = _TOKEN if rec.by_token else self.member_ids[m]
        cdef long long token = rec.token
        cdef list freed = []
        cdef int a, nxt
        cdef AgentRec *ag
        if rec.waiting:
            self._stop_waiting(m)
        rec.alive = False
        idt_remove(&self.member_by_id,
                   token_hash(token) if member_id is _TOKEN else PyObject_Hash(member_id), m)
        if member_id is not _TOKEN:
            self.member_ids[m] = None
        if rec.prev >= 0:
            self.members[rec.prev].next = rec.next
        else:
            q.head = rec.next
        if rec.next >= 0:
            self.members[rec.next].prev = rec.prev
        else:
            q.tail = rec.prev
        q.n_members -= 1
        a = rec.first_offer
        while a >= 0:
            ag = &self.agents[a]
            nxt = ag.next_offer
            ag.next_offer = -1
            if a != keep:
                self._emit(O_CANCELLED, member_id, token, a, qi, reason)
                ag.state = S_IDLE
                ag.offer_member = -1
                ag.gen += 1
                freed.append(a)
            a = nxt
        rec.first_offer = rec.last_offer = -1
        rec.n_offers = 0
        rec.next = self.free_slot
        self.free_slot = m
        return freed

    # --- offers -----------------------------------------------------------------------------------

    cdef int _offer(self, int m, int e, double now) except -1:
        cdef EntryRec *entry = &self.entries[e]
        cdef int ai = entry.agent
        cdef int qi = entry.queue
        cdef AgentRec *a = &self.agents[ai]
        cdef MemberRec *rec = &self.members[m]
        cdef QueueRec *q = &self.queues[qi]
        if not rec.by_token:
            __builtin_prefetch(PyList_GET_ITEM_PTR(self.member_ids)[m])  # the id, for the Offer
        if rec.waiting:
            self._stop_waiting(m)
        # append to the member's offers (order offered)
        a.next_offer = -1
        if rec.last_offer >= 0:
            self.agents[rec.last_offer].next_offer = ai
        else:
            rec.first_offer = ai
        rec.last_offer = ai
        rec.n_offers += 1
        a.state = S_OFFERED
        a.offer_member = m
        a.offer_queue = qi
        a.gen += 1
        if a.free:
            self._set_free(ai, False)
        q.pools[entry.level].rr_last = entry.ring
        self._schedule(now + q.ring_timeout, T_OFFER, ai, a.gen)
        self._emit_member(O_OFFER, m, ai, qi, RC_NONE)
        return 0

    cdef int _offer_answered(self, object member_id, long long token, int ai, double now) except -1:
        cdef AgentRec *a = &self.agents[ai]
        cdef int m = a.offer_member
        cdef MemberRec *rec
        cdef QueueRec *q
        cdef double wait
        cdef list freed
        cdef int other
        if a.state != S_OFFERED or m < 0 or not self._is_member(m, member_id, token):
            return 0  # the offer timed out or was cancelled first: the call layer drops that leg
        rec = &self.members[m]
        q = &self.queues[rec.queue]
        wait = now - rec.joined
        q.answered += 1
        q.wait_answered += wait
        if wait <= q.service_level:
            q.in_service_level += 1
        a.call_queue = rec.queue
        freed = self._remove_member(m, RC_ANSWERED_ELSEWHERE, ai)
        a = &self.agents[ai]
        a.state = S_TALKING
        a.offer_member = -1
        a.state_since = now
        a.calls += 1
        a.streak = 0
        a.gen += 1
        for other in freed:
            self._refresh(other, now)
        return 0

    cdef int _missed(self, int ai, double now, bint timed_out) except -1:
        """The offer to agent ``ai`` was rejected, rang out, or timed out (the ACD's ring timeout)."""
        cdef AgentRec *a = &self.agents[ai]
        cdef int m = a.offer_member
        cdef int qi = a.offer_queue
        cdef MemberRec *rec = &self.members[m]
        cdef int prev, cur
        if timed_out:
            self._emit_member(O_TIMED_OUT, m, ai, qi, RC_NONE)
        # unlink ai from the member's offers
        prev = -1
        cur = rec.first_offer
        while cur != ai:
            prev = cur
            cur = self.agents[cur].next_offer
        if prev >= 0:
            self.agents[prev].next_offer = a.next_offer
        else:
            rec.first_offer = a.next_offer
        if rec.last_offer == ai:
            rec.last_offer = prev
        a.next_offer = -1
        rec.n_offers -= 1
        a.state = S_IDLE
        a.offer_member = -1
        a.gen += 1
        a.missed += 1
        a.streak += 1
        if a.max_no_answer and a.streak >= a.max_no_answer:
            a.streak = 0
            self._set_status(ai, ST_ON_BREAK, _S_NO_ANSWER, now)
            self._emit(O_PAUSED, _TOKEN, -1, ai, -1, RC_NO_ANSWER)
        elif a.no_answer_delay > 0:
            a.resting = True
            self._schedule(now + a.no_answer_delay, T_REST, ai, a.gen)
        rec = &self.members[m]
        if rec.n_offers == 0:
            self._push_waiting(m)
        self._refresh(ai, now)
        rec = &self.members[m]
        if rec.alive and rec.waiting:
            self._match_member(m, now)
        return 0

    # --- agents -----------------------------------------------------------------------------------

    cdef bint _set_status(self, int ai, int status, object reason, double now) except -1:
        cdef AgentRec *a = &self.agents[ai]
        cdef int old = a.status
        if status != ST_ON_BREAK:
            reason = ""
        if old == status and self.agent_reasons[ai] == reason:
            return False
        if old == ST_LOGGED_OUT:
            a.login_since = now
        elif status == ST_LOGGED_OUT:
            a.logged_in_time += now - a.login_since
        if old == ST_ON_BREAK:
            a.break_time += now - a.break_since
        if status == ST_ON_BREAK:
            a.break_since = now
        a.status = status
        self.agent_reasons[ai] = reason
        if status == ST_AVAILABLE:
            a.idle_since = now
            a.streak = 0
            if a.resting:  # the agent says it is back: the rest after a miss ends
                a.resting = False
                a.gen += 1
        return True

    cdef int _phone(self, object phone, bint registered, double now) except -1:
        cdef object found = self.phone_index.get(phone)
        if found is None:
            return 0
        return self._phone_at(found, registered, now)

    cdef int _phone_at(self, int i, bint registered, double now) except -1:
        cdef int ai
        if (self.phone_up[i] != 0) == registered:
            return 0
        ai = self.phone_agent[i]
        self.phone_up[i] = registered
        self.agents[ai].reachable += 1 if registered else -1
        self._refresh(ai, now)
        return 0

    cdef int _agent_call_started(self, int ai, double now) except -1:
        cdef AgentRec *a = &self.agents[ai]
        if a.state == S_OFFERED or a.state == S_TALKING:
            return 0
        if a.state == S_WRAP_UP:
            a.wrap_time += now - a.state_since
        a.state = S_TALKING
        a.state_since = now
        a.call_queue = -1
        a.calls += 1
        a.resting = False
        a.gen += 1
        self._refresh(ai, now)
        return 0

    cdef int _call_ended(self, int ai, double now) except -1:
        cdef AgentRec *a = &self.agents[ai]
        cdef double wrap
        if a.state != S_TALKING:
            return 0
        a.talk_time += now - a.state_since
        if a.wrap_up >= 0:
            wrap = a.wrap_up
        else:
            wrap = self.queues[a.call_queue].wrap_up if a.call_queue >= 0 else 0.0
        a.gen += 1
        if wrap > 0:
            a.state = S_WRAP_UP
            a.state_since = now
            self._schedule(now + wrap, T_WRAP, ai, a.gen)
        else:
            a.state = S_IDLE
            a.idle_since = now
        self._refresh(ai, now)
        return 0

    cdef int _refresh(self, int ai, double now) except -1:
        """Bring the agent's flags, its queues' head counts and the free pools up to date; apply
        leave-when-empty if it dropped out; match it if it became free."""
        cdef AgentRec *a = &self.agents[ai]
        cdef bint logged_in = a.status != ST_LOGGED_OUT
        cdef bint ready = a.status == ST_AVAILABLE and a.reachable > 0
        cdef bint free = ready and a.state == S_IDLE and not a.resting
        cdef bint dropped = False
        cdef bint became_free
        cdef int j, step, m, nxt, first = a.first_entry, n = a.n_entries
        cdef QueueRec *q
        if logged_in != a.logged_in:
            a.logged_in = logged_in
            step = 1 if logged_in else -1
            for j in range(first, first + n):
                self.queues[self.entries[j].queue].logged_in += step
            dropped = not logged_in
        if ready != a.ready:
            a.ready = ready
            step = 1 if ready else -1
            for j in range(first, first + n):
                self.queues[self.entries[j].queue].ready += step
            dropped = dropped or not ready
        became_free = free and not a.free
        if free != a.free and not became_free:
            self._set_free(ai, False)
        if dropped:
            for j in range(first, first + n):
                q = &self.queues[self.entries[j].queue]
                if q.n_members and rule_applies(q, q.leave_empty):
                    m = q.head
                    while m >= 0:
                        nxt = self.members[m].next
                        self._exit_member(m, RC_LEAVE_EMPTY, now)
                        m = nxt
        if became_free:
            # The twin enters the agent in its pools, then matches it. Matching an agent does not
            # read the pools, so matching first and entering it only when no member took it
            # gives the same answers without touching the pools twice.
            self._match_agent(ai, now)
            if self.agents[ai].state == S_IDLE:
                self._set_free(ai, True)
        return 0

    cdef void _set_free(self, int ai, bint free) noexcept:
        """Put the agent in (or take it out of) the free pool of each of its queues."""
        cdef AgentRec *a = &self.agents[ai]
        cdef int j, e, strategy
        cdef EntryRec *entry
        cdef Pool *p
        cdef PoolItem *item
        a.free = free
        for j in range(a.first_entry, a.first_entry + a.n_entries):
            e = j
            entry = &self.entries[e]
            p = &self.queues[entry.queue].pools[entry.level]
            if self.queues[entry.queue].heap_pools:
                if free:
                    strategy = self.queues[entry.queue].strategy
                    item = &p.heap[p.nfree]
                    item.key2 = a.idle_since
                    if strategy == LIA:
                        item.key1 = a.idle_since
                        item.key2 = 0.0
                    elif strategy == FEWEST:
                        item.key1 = <double>a.calls
                    elif strategy == LEAST_TALK:
                        item.key1 = a.talk_time
                    else:
                        item.key1 = -<double>entry.skill_level
                    item.agent = ai
                    item.entry = e
                    p.nfree += 1
                    pool_sift_up(p, self.entries, p.nfree - 1)
                else:
                    pool_heap_remove(p, self.entries, e)
            else:
                if free:
                    p.bits[entry.ring >> 6] |= 1ULL << (entry.ring & 63)
                    p.nfree += 1
                else:
                    p.bits[entry.ring >> 6] &= ~(1ULL << (entry.ring & 63))
                    p.nfree -= 1

    # --- matching ---------------------------------------------------------------------------------

    cdef int _match_agent(self, int ai, double now) except -1:
        """A free agent takes the first waiting member (priority, then arrival) it may serve."""
        cdef AgentRec *a = &self.agents[ai]
        cdef int j, e, level, head
        cdef int best = -1, best_entry = -1, best_level = 0
        cdef MemberHeap *h
        cdef EntryRec *entry
        cdef QueueRec *q
        cdef MemberKey *k
        cdef MemberKey *best_key = NULL
        for j in range(a.first_entry, a.first_entry + a.n_entries):
            e = j
            entry = &self.entries[e]
            q = &self.queues[entry.queue]
            for level in range(entry.level, q.max_level + 1):
                head = self._head(entry.queue, level)
                if head >= 0:
                    k = &q.heaps[level].items[0]
                    if best_key == NULL or key_before(k, best_key):
                        best_key = k
                        best = head
                        best_entry = e
                        best_level = level
        if best >= 0:
            # The member's record and its id are far apart in memory and the offer needs both:
            # ask for them together rather than one after the other.
            __builtin_prefetch(&self.members[best])
            if not self.members[best].by_token:
                __builtin_prefetch(&PyList_GET_ITEM_PTR(self.member_ids)[best])
            # and the top of the heap it leaves (children of the root, then of those: five
            # lines), which the pop would otherwise read one level after the other
            h = &self.queues[self.entries[best_entry].queue].heaps[best_level]
            for j in range(1, min(h.n, 21), 4):
                __builtin_prefetch(&h.items[j])
            self._offer(best, best_entry, now)
        return 0

    cdef int _match_member(self, int m, double now) except -1:
        """A waiting member takes a free agent of its queue, chosen by the queue's strategy."""
        cdef int qi = self.members[m].queue
        cdef int top = self.members[m].level
        cdef QueueRec *q = &self.queues[qi]
        cdef int level, e, r, k, n
        cdef Pool *p
        cdef int *found
        if q.strategy == RINGALL:
            n = 0
            for level in range(1, top + 1):
                n += q.pools[level].nfree
            if n == 0:
                return 0
            found = <int *>PyMem_Malloc(n * sizeof(int))
            if found == NULL:
                raise MemoryError()
            k = 0
            for level in range(1, top + 1):
                p = &q.pools[level]
                r = bits_next(p, 0)
                while r >= 0:
                    found[k] = p.ring[r].entry
                    k += 1
                    r = bits_next(p, r + 1)
            try:
                for r in range(k):
                    self._offer(m, found[r], now)
            finally:
                PyMem_Free(found)
            return 0
        for level in range(1, top + 1):
            e = self._choose(qi, level)
            if e >= 0:
                self._offer(m, e, now)
                return 0
        return 0

    cdef int _likely_entry(self, QueueRec *q, uint64_t *rng, int *agent) noexcept:
        """The tier entry a new caller of ``q`` most likely goes to (the pick at level 1), or -1,
        and its agent in ``agent`` (read from the pool, so that the two can be loaded at once);
        ``rng`` is a copy of the generator's state, advanced as _choose would advance it."""
        cdef Pool *p = &q.pools[1]
        cdef int r
        if p.nfree == 0 or q.strategy == RINGALL:
            return -1
        if q.heap_pools:
            agent[0] = p.heap[0].agent
            return p.heap[0].entry
        r = ring_pick(q.strategy, p, rng)  # random: the draw _choose will make, on the copy
        if r < 0:
            return -1
        agent[0] = p.ring[r].agent
        return p.ring[r].entry

    cdef void _prefetch_likely_agent(self, QueueRec *q) noexcept:
        """Ask for the record and entry of the agent a new caller of ``q`` most likely goes to,
        so that they arrive while the member table answers."""
        cdef uint64_t rng = self.rng
        cdef int ai = 0
        cdef int e = self._likely_entry(q, &rng, &ai)
        if e >= 0:
            __builtin_prefetch(&self.agents[ai])
            __builtin_prefetch(&self.entries[e])

    cdef int _choose(self, int qi, int level) noexcept:
        cdef QueueRec *q = &self.queues[qi]
        cdef Pool *p = &q.pools[level]
        cdef int r
        if p.nfree == 0:
            return -1
        if q.heap_pools:
            return p.heap[0].entry
        r = ring_pick(q.strategy, p, &self.rng)
        return p.ring[r].entry
