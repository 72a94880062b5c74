# What C sees of the ACD (core/_acd.pyx): agents, tier entries, members and timers as structs in
# C arrays, indexed by small ints; the per-(queue, level) agent pools (an indexed heap or a bitset
# in ring order, by strategy) and member heaps that make a match O(log n); outputs as C records.

from cpython.ref cimport PyObject
from libc.stdint cimport uint32_t, uint64_t

cdef enum:
    MAXL = 8            # tier levels 1..MAXL (core.acd.model.MAX_LEVEL)
    NLEVELS = 9         # MAXL + 1: per-queue arrays are indexed by level directly

cdef enum AgentStatus:
    ST_LOGGED_OUT = 0
    ST_AVAILABLE = 1
    ST_ON_BREAK = 2

cdef enum AgentState:
    S_IDLE = 0
    S_OFFERED = 1
    S_TALKING = 2
    S_WRAP_UP = 3

cdef enum Strategy:
    LIA = 0             # longest idle agent
    RR = 1              # round robin
    FEWEST = 2          # fewest calls
    LEAST_TALK = 3      # least talk time
    RINGALL = 4
    LINEAR_ = 5
    RANDOM_ = 6
    SKILLS_ = 7

cdef enum EmptyRule:
    R_NEVER = 0
    R_NO_AGENTS = 1
    R_NO_AVAILABLE = 2

cdef enum TimerKind:
    T_OFFER = 1
    T_WRAP = 2
    T_REST = 3
    T_MAX_WAIT = 4
    T_TIER = 5

cdef enum OutputKind:        # the record kinds of core.acd.model (Offer.kind ...)
    O_OFFER = 11
    O_CANCELLED = 12
    O_TIMED_OUT = 13
    O_EXITED = 14
    O_PAUSED = 15

cdef enum Reason:            # index in core.acd.model.REASONS
    RC_NONE = 0
    RC_ANSWERED_ELSEWHERE = 1
    RC_MEMBER_LEFT = 2
    RC_MEMBER_EXITED = 3
    RC_MAX_WAIT = 4
    RC_JOIN_EMPTY = 5
    RC_LEAVE_EMPTY = 6
    RC_NO_ANSWER = 7

cdef enum:
    RECORD_WORDS_ = 5        # core.acd.model.RECORD_WORDS
    WARM_GROUP = 8           # handle_records reads ahead for this many events at once
    HUGE_PAGE = 2097152      # arrays this big go on transparent huge pages

cdef struct OutRec:
    # One output, waiting to be handed out as a Struct (next_output) or a record (take_records).
    int kind, agent, queue, reason
    long long token         # the member, when ``member`` is NULL
    PyObject *member        # the member's id (a reference the queue owns), NULL: ``token``

cdef struct AgentRec:
    # 192 bytes, three cache lines (the array is line-aligned), by how often they are read.
    # Line 1, what every event and every match reads:
    unsigned char status, state
    char resting, free, ready, logged_in
    int reachable           # registered phones
    int offer_member        # member slot being offered, -1 none
    int offer_queue
    int next_offer          # next agent offered the same member (ring-all), -1 end
    int call_queue          # queue of the current/last ACD call, -1 a direct call
    int first_entry, n_entries   # its entries: entries[first_entry:first_entry + n_entries]
    int streak, max_no_answer
    uint32_t gen
    double idle_since
    long long calls
    # Line 2, what the end of a call, a miss, and entering the pools read:
    double state_since, talk_time
    double wrap_up          # < 0: none (the queue's applies)
    double no_answer_delay
    PyObject *id            # its id (borrowed: agent_ids holds it for the object's life)
    long long missed
    double wrap_time, break_time
    # Line 3, log-in and break bookkeeping:
    double login_since, break_since, logged_in_time
    char pad_[40]

cdef struct EntryRec:
    # An agent's place in one queue; 32 bytes, so that an agent's two entries share a line.
    int agent, queue, level, ring, skill_level
    int heap_pos            # in the pool's heap, -1 when absent
    int pad_[2]

cdef struct PoolItem:
    # A free agent in a pool's heap, its keys inline (set when it enters the pool; they do not
    # change while it is free), so that a sift compares within the heap's own array.
    double key1, key2
    int agent, entry

cdef struct RingSlot:
    # One place in a pool's ring: the tier entry and its agent side by side, so that a pick reads
    # both in one cache line without touching the entry.
    int entry, agent

cdef struct Pool:
    # The agents of one tier level of one queue: ``ring`` lists entries in ring order; free
    # agents are a bitset over ring indexes (round robin, linear, random, ring-all) or an indexed
    # min-heap of PoolItems (longest idle, fewest calls, least talk time, skills).
    int n
    RingSlot *ring
    uint64_t *bits
    int nwords
    int nfree
    PoolItem *heap
    int rr_last

cdef struct MemberKey:
    # A waiting member's place in its queue's heap, the key inline so that a sift stays in one
    # contiguous array. Valid while the member is waiting with the same ticket (lazy removal).
    long long rank          # -priority * 2**42 + arrival: priority first, then arrival
    int slot
    uint32_t ticket

cdef struct MemberHeap:
    MemberKey *items        # 4-ary min-heap by rank (a sift touches half the cache lines); placed
                            # so that each node's four children share one 64-byte line
    void *raw               # the allocation items lies in
    int n, cap
    int stale               # invalid entries still in items

cdef struct MemberRec:
    # 64 bytes: one cache line (the array is line-aligned).
    int queue, priority
    unsigned char level
    char waiting            # in its queue's heap (not being offered)
    char alive
    char by_token           # its id is the int ``token`` (member_ids holds None), else member_ids'
    uint32_t ticket         # bumped on every push and removal: older heap entries are stale
    uint32_t gen
    int n_offers, first_offer, last_offer
    int prev, next          # the queue's members in join order; next is also the free-slot list
    double joined
    long long seq
    long long token

cdef struct QueueRec:
    int strategy
    bint heap_pools
    double ring_timeout, wrap_up, max_wait, service_level, short_abandon
    int join_empty, leave_empty
    bint has_vip
    long long vip_priority
    int max_level
    double open_after[10]   # [level], MAXL + 2 entries
    int logged_in, ready
    long long offered, answered, abandoned, short_abandoned, in_service_level, exited, refused
    double wait_answered
    int head, tail, n_members
    Pool pools[9]           # [level]
    MemberHeap heaps[9]     # [level]

cdef struct IdSlot:
    uint32_t hash           # the low 32 bits of the key's hash (8-byte slots: twice the slots a line)
    int value               # -1: empty

cdef struct IdTable:
    # An id (str) -> index map with the hash inline: linear probing, load <= 1/2, deletion by
    # backward shift (no tombstones). The keys themselves live in a Python list indexed by value.
    IdSlot *slots
    Py_ssize_t mask
    Py_ssize_t n
    unsigned char *homes    # [slot]: how many keys have it as their home (255: at least that);
                            # 0 answers "absent" from a table an eighth of the size

cdef struct KeySlot:
    # A slot of a fixed id table (agents, queues): the key's text inline when it is a short ASCII
    # str, so that a lookup reads one cache line and not the key object.
    uint32_t hash
    int value               # -1: empty
    int length              # -1: not inline (compare the key objects)
    int aux                 # agents: the first tier entry (fetched alongside the agent's record)
    char text[16]

cdef struct KeyTable:
    KeySlot *slots
    Py_ssize_t mask

cdef struct TimerRec:
    double deadline
    long long seq
    int kind, target
    uint32_t gen


cdef class AutomaticCallDistributor:
    cdef AgentRec *agents
    cdef int n_agents
    cdef EntryRec *entries
    cdef int *entry_starts      # [agent]: its first entry, [n_agents]: n_entries (read ahead of the record)
    cdef int n_entries
    cdef QueueRec *queues
    cdef int n_queues
    cdef MemberRec *members
    cdef int members_cap
    cdef int free_slot
    cdef long long member_seq
    cdef TimerRec *timers
    cdef int n_timers, timers_cap
    cdef long long timer_seq
    cdef uint64_t rng
    cdef char *phone_up
    cdef int *phone_agent

    cdef list agent_ids
    cdef list agent_reasons
    cdef KeyTable agent_by_id
    cdef list queue_names
    cdef list queue_configs
    cdef KeyTable queue_by_name
    cdef dict phone_index
    cdef int n_phones
    cdef uint64_t sink_         # what _warm read (kept, so that the reads are not optimised away)
    cdef uint64_t warm_rng      # the generator's state _warm expects after its group
    cdef int ask_entry[WARM_GROUP]   # _ask's guesses for the next group's callers (entry, agent)
    cdef int ask_agent[WARM_GROUP]
    cdef int ask_nfree[WARM_GROUP]   # the free agents the guess saw in the caller's queue
    cdef uint64_t ask_state[WARM_GROUP]   # the generator's state the guess drew from
    cdef bint asked
    cdef list member_ids
    cdef IdTable member_by_id
    cdef OutRec *out            # outputs in order: out[out_head:out_tail]
    cdef Py_ssize_t out_head, out_tail, out_cap

    cdef int _schedule(self, double deadline, int kind, int target, uint32_t gen) except -1
    cdef bint _timer_valid(self, TimerRec *t) noexcept
    cdef void _timer_pop(self) noexcept
    cdef void _timer_push(self, TimerRec t) noexcept
    cdef void _sweep_timers(self) noexcept
    cdef int _fire(self, int kind, int target, double t) except -1

    cdef int _emit(self, int kind, object member_id, long long token, int agent, int queue,
                   int reason) except -1
    cdef int _emit_member(self, int kind, int m, int agent, int queue, int reason) except -1
    cdef void _pop_output(self) noexcept
    cdef int _dispatch_record(self, long long *r, double now) except -1
    cdef void _warm(self, const char *records, Py_ssize_t g) noexcept
    cdef void _ask(self, const char *records, Py_ssize_t g) noexcept
    cdef int _likely_entry(self, QueueRec *q, uint64_t *rng, int *agent) noexcept
    cdef int _agent_at(self, long long index) except -1
    cdef int _find_member(self, object member_id, long long token) except -2
    cdef bint _is_member(self, int m, object member_id, long long token) except -1

    cdef int _agent_index(self, object agent_id) except -1
    cdef int _member_joined(self, object member_id, long long token, Py_hash_t h, int qi,
                            long long prio, double now) except -1
    cdef int _new_slot(self) except -1
    cdef int _push_waiting(self, int m) except -1
    cdef void _stop_waiting(self, int m) noexcept
    cdef int _head(self, int q, int level) noexcept
    cdef int _member_left(self, object member_id, long long token, double now) except -1
    cdef int _exit_member(self, int m, int reason, double now) except -1
    cdef list _remove_member(self, int m, int reason, int keep)

    cdef int _offer(self, int m, int e, double now) except -1
    cdef int _offer_answered(self, object member_id, long long token, int a, double now) except -1
    cdef int _missed(self, int a, double now, bint timed_out) except -1

    cdef bint _set_status(self, int a, int status, object reason, double now) except -1
    cdef int _phone(self, object phone, bint registered, double now) except -1
    cdef int _phone_at(self, int i, bint registered, double now) except -1
    cdef int _agent_call_started(self, int a, double now) except -1
    cdef int _call_ended(self, int a, double now) except -1
    cdef int _refresh(self, int a, double now) except -1
    cdef void _set_free(self, int a, bint free) noexcept

    cdef int _match_agent(self, int a, double now) except -1
    cdef int _match_member(self, int m, double now) except -1
    cdef int _choose(self, int q, int level) noexcept
    cdef void _prefetch_likely_agent(self, QueueRec *q) noexcept
