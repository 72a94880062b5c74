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
  line; the events of the matching path are read from their Struct slots directly; outputs go
  to a list read from a moving head.

With 10,000 agents and 100,000 callers the state does not fit in the caches, and a match is a
chain of dependent loads (id → agent → its entries → queue heads → member → heap). The layout
keeps that chain short (an agent's entries are contiguous, pool keys sit in the pool heaps,
each heap node's four children share a line) and the loads that do not depend on each other are
issued together (prefetches where the next addresses become known).

One object owns all of it; nothing is locked, no clock is read (``now`` is an argument).
"""

cimport cython
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.object cimport Py_EQ, PyObject_Hash, PyObject_RichCompareBool
from cpython.ref cimport PyObject
from libc.stdint cimport uint32_t, uint64_t
from libc.string cimport memcmp, memcpy, memset

from core.acd._pyacd import Plan
from core.acd.model import (
    AgentCallStarted, AgentPaused, AgentStats, AgentStatusChanged, CallEnded, MemberExited,
    MemberJoined, MemberLeft, NoAnswer, Offer, OfferAnswered, OfferCancelled, OfferRejected,
    OfferTimedOut, PhoneRegistered, PhoneUnregistered, QueueStats, STATUSES, STATES, STRATEGIES,
    EMPTY_RULES, MAX_LEVEL, CANCEL_ANSWERED_ELSEWHERE, CANCEL_MEMBER_EXITED, CANCEL_MEMBER_LEFT,
    EXIT_JOIN_EMPTY, EXIT_LEAVE_EMPTY, EXIT_MAX_WAIT, PAUSE_NO_ANSWER, MAX_PRIORITY,
)

__all__ = ["AutomaticCallDistributor"]

assert MAX_LEVEL == MAXL
assert sizeof(MemberKey) == 16  # mheap_grow lays four to a cache line

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
cdef object _S_ANSWERED_ELSEWHERE = CANCEL_ANSWERED_ELSEWHERE
cdef object _S_MEMBER_EXITED = CANCEL_MEMBER_EXITED
cdef object _S_MEMBER_LEFT = CANCEL_MEMBER_LEFT
cdef object _S_JOIN_EMPTY = EXIT_JOIN_EMPTY
cdef object _S_LEAVE_EMPTY = EXIT_LEAVE_EMPTY
cdef object _S_MAX_WAIT = EXIT_MAX_WAIT
cdef object _S_NO_ANSWER = PAUSE_NO_ANSWER


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
            while k:
                word &= word - 1
                k -= 1
            return (w << 6) + __builtin_ctzll(word)
        k -= c
    return -1


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
    t.slots = <IdSlot *>PyMem_Malloc(cap * sizeof(IdSlot))
    t.homes = <unsigned char *>PyMem_Malloc(cap)
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


cdef inline int idt_lookup(IdTable *t, list keys, object key, Py_hash_t h) except -2:
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
        if s.hash == h32:
            other = keys[s.value]
            if other is key or PyObject_RichCompareBool(other, key, Py_EQ):
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
        homes = <unsigned char *>PyMem_Malloc(cap)
        t.slots = <IdSlot *>PyMem_Malloc(cap * sizeof(IdSlot))
        if t.slots == NULL or homes == NULL:
            PyMem_Free(t.slots)
            PyMem_Free(homes)
            t.slots = old
            raise MemoryError()
        PyMem_Free(t.homes)
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
        PyMem_Free(old)
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


cdef inline void mheap_pop(MemberHeap *h) noexcept nogil:
    cdef int n, i, child, c, last_child
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
        last_child = child + 4 if child + 4 <= n else n
        for c in range(child + 1, last_child):
            if key_before(&h.items[c], &h.items[child]):
                child = c
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
        self.out = []
        self.out_head = 0
        self.rng = <uint64_t>(seed & 0xFFFFFFFFFFFFFFFF)
        self.member_seq = 0
        self.timer_seq = 0

        # agents
        self.n_agents = len(plan.agents)
        self.agents = <AgentRec *>PyMem_Malloc(max(self.n_agents, 1) * sizeof(AgentRec))
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
        self.entries = <EntryRec *>PyMem_Malloc(max(self.n_entries, 1) * sizeof(EntryRec))
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
            p.ring = <int *>PyMem_Malloc(p.n * sizeof(int))
            p.ring_agent = <int *>PyMem_Malloc(p.n * sizeof(int))
            if p.ring_agent == NULL:
                raise MemoryError()
            p.heap = <PoolItem *>PyMem_Malloc(p.n * sizeof(PoolItem))
            p.bits = <uint64_t *>PyMem_Malloc(max(p.nwords, 1) * sizeof(uint64_t))
            if p.ring == NULL or p.heap == NULL or p.bits == NULL:
                raise MemoryError()
            memset(p.bits, 0, max(p.nwords, 1) * sizeof(uint64_t))
            for i, e in enumerate(ring):
                p.ring[i] = renumbered[e]
                p.ring_agent[i] = self.entries[renumbered[e]].agent
                self.entries[renumbered[e]].ring = i

        # members (slots grow on demand) and timers
        self.members_cap = 0
        self.free_slot = -1
        self.member_ids = []
        idt_init(&self.member_by_id, 8)  # grows by doubling
        self.timers_cap = 64
        self.n_timers = 0
        self.timers = <TimerRec *>PyMem_Malloc(self.timers_cap * sizeof(TimerRec))
        if self.timers == NULL:
            raise MemoryError()

    def __dealloc__(self):
        cdef int qi, level
        if self.queues != NULL:
            for qi in range(self.n_queues):
                for level in range(NLEVELS):
                    PyMem_Free(self.queues[qi].pools[level].ring)
                    PyMem_Free(self.queues[qi].pools[level].ring_agent)
                    PyMem_Free(self.queues[qi].pools[level].heap)
                    PyMem_Free(self.queues[qi].pools[level].bits)
                    PyMem_Free(self.queues[qi].heaps[level].raw)
        PyMem_Free(self.queues)
        PyMem_Free(self.agents)
        PyMem_Free(self.entries)
        PyMem_Free(self.members)
        PyMem_Free(self.timers)
        PyMem_Free(self.phone_up)
        PyMem_Free(self.phone_agent)
        PyMem_Free(self.agent_by_id.slots)
        PyMem_Free(self.queue_by_name.slots)
        PyMem_Free(self.member_by_id.slots)
        PyMem_Free(self.member_by_id.homes)

    # --- the sans-IO face -------------------------------------------------------------------------

    def handle_event(self, event, double now):
        cdef object kind = type(event)
        cdef int a, status
        if kind is _MemberJoined:
            self._member_joined(field(event, _MJ_MEMBER), field(event, _MJ_QUEUE),
                                field(event, _MJ_PRIORITY), now)
        elif kind is _CallEnded:
            self._call_ended(self._agent_index(field(event, _CE_AGENT)), now)
        elif kind is _OfferAnswered:
            self._offer_answered(field(event, _OA_MEMBER), self._agent_index(field(event, _OA_AGENT)), now)
        elif kind is _OfferRejected or kind is _NoAnswer:
            a = self._agent_index(event.agent)
            if self.agents[a].offer_member >= 0 and \
                    self.member_ids[self.agents[a].offer_member] == event.member:
                self._missed(a, now, False)
        elif kind is _MemberLeft:
            self._member_left(event.member, now)
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

    def get_timer(self):
        while self.n_timers and not self._timer_valid(&self.timers[0]):
            self._timer_pop()
        return self.timers[0].deadline if self.n_timers else None

    def next_output(self):
        # A list read from a moving head: appending and taking are plain C-API list operations (a
        # deque's are method calls); the list is emptied when the reader catches up.
        cdef object item
        cdef Py_ssize_t n = len(self.out)
        if self.out_head >= n:
            return None
        item = self.out[self.out_head]
        self.out[self.out_head] = None
        self.out_head += 1
        if self.out_head == n:
            del self.out[:]
            self.out_head = 0
        elif self.out_head >= 1024 and 2 * self.out_head >= n:  # a reader that never catches up
            del self.out[:self.out_head]
            self.out_head = 0
        return item

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
        cdef int i, parent
        if self.n_timers == self.timers_cap:
            grown = <TimerRec *>PyMem_Realloc(self.timers, 2 * self.timers_cap * sizeof(TimerRec))
            if grown == NULL:
                raise MemoryError()
            self.timers = grown
            self.timers_cap *= 2
        t.deadline = deadline
        t.seq = self.timer_seq
        t.kind = kind
        t.target = target
        t.gen = gen
        self.timer_seq += 1
        i = self.n_timers
        self.n_timers += 1
        while i > 0:
            parent = (i - 1) >> 1
            if not timer_before(&t, &self.timers[parent]):
                break
            self.timers[i] = self.timers[parent]
            i = parent
        self.timers[i] = t
        return 0

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
            self._exit_member(target, _S_MAX_WAIT, t)
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
            grown = <MemberRec *>PyMem_Realloc(self.members, cap * sizeof(MemberRec))
            if grown == NULL:
                raise MemoryError()
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

    cdef int _member_joined(self, object member_id, object queue, object priority, double now) except -1:
        cdef Py_hash_t h = PyObject_Hash(member_id)
        cdef int qi
        cdef QueueRec *q
        cdef MemberRec *m
        cdef int slot, level
        cdef long long prio
        # The member table is the one structure here too big for the cache: start its lines on
        # their way before the queue lookup.
        idt_prefetch(&self.member_by_id, h)
        qi = kt_lookup(&self.queue_by_name, self.queue_names, queue)
        if qi < 0:
            raise KeyError(queue)
        q = &self.queues[qi]
        self._prefetch_likely_agent(q)
        if idt_lookup(&self.member_by_id, self.member_ids, member_id, h) >= 0:
            raise ValueError(f"member {member_id!r} is already queued")
        prio = priority
        if not -MAX_PRIORITY <= prio <= MAX_PRIORITY:
            raise ValueError(f"priority {prio} is outside -{MAX_PRIORITY}..{MAX_PRIORITY}")
        if rule_applies(q, q.join_empty):
            q.refused += 1
            self.out.append(_MemberExited(member_id, self.queue_names[qi], _S_JOIN_EMPTY))
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

    cdef int _member_left(self, object member_id, double now) except -1:
        cdef int m = idt_lookup(&self.member_by_id, self.member_ids, member_id, PyObject_Hash(member_id))
        cdef int a
        cdef QueueRec *q
        if m < 0:
            return 0  # already answered or exited: the hang-up raced the ACD
        q = &self.queues[self.members[m].queue]
        if now - self.members[m].joined < q.short_abandon:
            q.short_abandoned += 1
        else:
            q.abandoned += 1
        for a in self._remove_member(m, _S_MEMBER_LEFT, -1):
            self._refresh(a, now)
        return 0

    cdef int _exit_member(self, int m, object reason, double now) except -1:
        cdef int qi = self.members[m].queue
        cdef object member_id = self.member_ids[m]
        cdef list freed = self._remove_member(m, _S_MEMBER_EXITED, -1)
        cdef int a
        self.queues[qi].exited += 1
        self.out.append(_MemberExited(member_id, self.queue_names[qi], reason))
        for a in freed:
            self._refresh(a, now)
        return 0

    cdef list _remove_member(self, int m, object reason, int keep):
        """Take ``m`` out of its queue; cancel its offers but ``keep``'s; return the agents freed."""
        cdef MemberRec *rec = &self.members[m]
        cdef QueueRec *q = &self.queues[rec.queue]
        cdef object member_id = self.member_ids[m]
        cdef object queue_name = self.queue_names[rec.queue]
        cdef list freed = []
        cdef int a, nxt
        cdef AgentRec *ag
        if rec.waiting:
            self._stop_waiting(m)
        rec.alive = False
        idt_remove(&self.member_by_id, PyObject_Hash(member_id), m)
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
                self.out.append(_OfferCancelled(member_id, self.agent_ids[a], queue_name, reason))
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
        __builtin_prefetch(PyList_GET_ITEM_PTR(self.member_ids)[m])  # the ids, for the Offer
        __builtin_prefetch(a.id)
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
        self.out.append(_Offer(self.member_ids[m], <object>a.id, self.queue_names[qi]))
        return 0

    cdef int _offer_answered(self, object member_id, int ai, double now) except -1:
        cdef AgentRec *a = &self.agents[ai]
        cdef int m = a.offer_member
        cdef MemberRec *rec
        cdef QueueRec *q
        cdef double wait
        cdef list freed
        cdef int other
        if a.state != S_OFFERED or m < 0 or self.member_ids[m] != member_id:
            return 0  # the offer timed out or was cancelled first: the call layer drops that leg
        rec = &self.members[m]
        q = &self.queues[rec.queue]
        wait = now - rec.joined
        q.answered += 1
        q.wait_answered += wait
        if wait <= q.service_level:
            q.in_service_level += 1
        a.call_queue = rec.queue
        freed = self._remove_member(m, _S_ANSWERED_ELSEWHERE, ai)
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
            self.out.append(_OfferTimedOut(self.member_ids[m], self.agent_ids[ai], self.queue_names[qi]))
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
            self.out.append(_AgentPaused(self.agent_ids[ai], _S_NO_ANSWER))
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
        cdef int i, ai
        if found is None:
            return 0
        i = found
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
                        self._exit_member(m, _S_LEAVE_EMPTY, now)
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
                    found[k] = p.ring[r]
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

    cdef void _prefetch_likely_agent(self, QueueRec *q) noexcept:
        """Ask for the record and entries of the agent a new caller of ``q`` most likely goes to
        (the pick at level 1, computed without drawing from the generator), so that they arrive
        while the member table answers."""
        cdef Pool *p = &q.pools[1]
        cdef uint64_t state = self.rng
        cdef int r, ai, e
        if p.nfree == 0 or q.strategy == RINGALL:
            return
        if q.heap_pools:
            ai = p.heap[0].agent
            e = p.heap[0].entry
        else:
            if q.strategy == LINEAR_:
                r = bits_next(p, 0)
            elif q.strategy == RR:
                r = bits_next(p, p.rr_last + 1)
                if r < 0:
                    r = bits_next(p, 0)
            else:  # RANDOM_: the draw _choose will make, on a copy of the state
                r = bits_kth(p, <int>(splitmix64(&state) % <uint64_t>p.nfree))
            if r < 0:
                return
            ai = p.ring_agent[r]
            e = p.ring[r]
        __builtin_prefetch(&self.agents[ai])
        __builtin_prefetch(<char *>&self.agents[ai] + 64)
        __builtin_prefetch(&self.entries[e])

    cdef int _choose(self, int qi, int level) noexcept:
        cdef QueueRec *q = &self.queues[qi]
        cdef Pool *p = &q.pools[level]
        cdef int r
        if p.nfree == 0:
            return -1
        if q.heap_pools:
            return p.heap[0].entry
        if q.strategy == LINEAR_:
            r = bits_next(p, 0)
        elif q.strategy == RR:
            r = bits_next(p, p.rr_last + 1)
            if r < 0:
                r = bits_next(p, 0)
        else:  # RANDOM_
            r = bits_kth(p, <int>(splitmix64(&self.rng) % <uint64_t>p.nfree))
        return p.ring[r]
