"""The ACD in plain Python: the readable specification of ``core/_acd.pyx`` and its differential oracle.

Sans-IO in aioquic's shape: ``handle_event(event, now)`` takes the events of ``core.acd.model``,
``handle_timer(now)`` runs what is due, ``get_timer()`` says when to call it next and
``next_output()`` hands out Offer, OfferCancelled, OfferTimedOut, MemberExited and AgentPaused one
at a time. The same events also travel as plain ints, in batches (``handle_records(records,
now)`` and ``take_records(out)``, the layout in ``core.acd.model``): the form a ring between
processes carries. No clock is read; one owner mutates the object, so nothing is locked.

Theory of operation
-------------------
*Free agent*: status available, a phone registered, state idle, not resting after a missed offer.
*Waiting member*: in a queue and not being offered. The invariant kept after every event and timer:
no waiting member has a free agent it may be offered to. So an event can only create matches
around the one agent or member it touched:

* an agent becomes free → among the waiting members of all its queues that may reach it (the
  member's open tier level >= the agent's level in that queue) the first by (priority high first,
  then arrival: the clock never runs backwards, so arrival order is join-time order) is offered
  to it; a member who missed an offer keeps its place;
* a member starts waiting (joins, misses an offer, reaches the next tier level) → the queue's
  strategy picks among the free agents of the lowest open level that has one (ring-all: every free
  agent of every open level).

An agent is offered one call at a time, whatever the queue: an agent busy anywhere is not free.
A miss (rejected, no answer, ring timeout) sends the member back to its place in the queue and the
agent to rest ``no_answer_delay`` seconds (so the member goes to the next agent), or on break with
reason "no_answer" after ``max_no_answer`` misses in a row. Each timer's work happens at the
timer's own deadline, so a fake clock jumping an hour runs the hour's timers exactly.

Ties are broken the same way in both implementations: agents by (strategy key, idle since, order
of configuration), members by arrival order, timers by (deadline, order scheduled); the random
strategy draws from a splitmix64 generator seeded by ``seed``.
"""

from __future__ import annotations

import heapq
import struct
from collections import deque
from typing import Iterable

from core.acd.model import (
    AVAILABLE, CANCEL_ANSWERED_ELSEWHERE, CANCEL_MEMBER_EXITED, CANCEL_MEMBER_LEFT, EMPTY_RULES,
    EXIT_JOIN_EMPTY, EXIT_LEAVE_EMPTY, EXIT_MAX_WAIT, FEWEST_CALLS, IDLE, LEAST_TALK_TIME, LINEAR,
    LOGGED_OUT, LONGEST_IDLE_AGENT, MAX_LEVEL, MAX_PRIORITY, NO_AGENTS, NO_AVAILABLE, NO_ID, OFFERED,
    ON_BREAK, PAUSE_NO_ANSWER, REASONS, RECORD_WORDS, RING_ALL, ROUND_ROBIN, SKILLS, STATUSES,
    STRATEGIES, TALKING, WRAP_UP,
    Agent, AgentCallStarted, AgentPaused, AgentStats, AgentStatusChanged, CallEnded, MemberExited,
    MemberJoined, MemberLeft, NoAnswer, Offer, OfferAnswered, OfferCancelled, OfferRejected,
    OfferTimedOut, PhoneRegistered, PhoneUnregistered, Queue, QueueStats,
)

__all__ = ["AutomaticCallDistributor", "Plan"]

# Timer kinds. Agent timers carry the agent's generation (bumped on every state change), member
# timers the member's; a timer whose generation is stale is dropped unseen.
T_OFFER, T_WRAP, T_REST, T_MAX_WAIT, T_TIER = 1, 2, 3, 4, 5

MASK64 = (1 << 64) - 1

# Records (core.acd.model): RECORD_WORDS native-endian signed 64-bit words.
RECORD = struct.Struct(f"={RECORD_WORDS}q")
REASON_CODES = {reason: code for code, reason in enumerate(REASONS)}
(STATUS_CHANGED, PHONE_UP, PHONE_DOWN, JOINED, LEFT, ANSWERED, REJECTED, NO_ANSWER, CALL_STARTED,
 CALL_ENDED) = range(1, 11)
OFFER, CANCELLED, TIMED_OUT, EXITED, PAUSED = (Offer.kind, OfferCancelled.kind, OfferTimedOut.kind,
                                               MemberExited.kind, AgentPaused.kind)


def splitmix64(state: int) -> tuple[int, int]:
    """One draw of splitmix64 (Steele, Lea & Flood 2014): (new state, output)."""
    state = (state + 0x9E3779B97F4A7C15) & MASK64
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return state, z ^ (z >> 31)


class Plan:
    """The configuration checked and numbered, shared by both implementations so that they agree
    on every order: agents and queues by their index, tier entries (one per agent per queue),
    each (queue, level) pool's entries in ring order (position, then agent index), each agent's
    entries in queue order, and each queue's level opening times."""

    def __init__(self, queues: Iterable[Queue], agents: Iterable[Agent]):
        self.agents: list[Agent] = list(agents)
        self.queues: list[Queue] = list(queues)
        self.agent_index: dict[str, int] = {}
        self.phone_agent: dict[str, int] = {}
        for i, agent in enumerate(self.agents):
            if agent.id in self.agent_index:
                raise ValueError(f"agent {agent.id!r} is configured twice")
            self.agent_index[agent.id] = i
            if agent.max_no_answer < 0 or agent.no_answer_delay < 0:
                raise ValueError(f"agent {agent.id!r}: max_no_answer and no_answer_delay must be >= 0")
            if agent.wrap_up is not None and agent.wrap_up < 0:
                raise ValueError(f"agent {agent.id!r}: wrap_up must be >= 0")
            for phone in agent.phones:
                if self.phone_agent.setdefault(phone, i) != i:
                    raise ValueError(f"phone {phone!r} belongs to two agents")
        self.queue_index: dict[str, int] = {}
        # entries[e] = (queue, agent, level, position, skill level)
        self.entries: list[tuple[int, int, int, int, int]] = []
        self.agent_entries: list[list[int]] = [[] for _ in self.agents]
        self.pools: dict[tuple[int, int], list[int]] = {}
        self.open_after: list[list[float]] = []
        self.max_level: list[int] = []
        for qi, queue in enumerate(self.queues):
            self._check_queue(queue)
            if queue.name in self.queue_index:
                raise ValueError(f"queue {queue.name!r} is configured twice")
            self.queue_index[queue.name] = qi
            placed: dict[int, tuple[int, int]] = {}
            for tier in queue.tiers:
                if tier.agent not in self.agent_index:
                    raise KeyError(f"queue {queue.name!r}: no agent {tier.agent!r}")
                _check_level(queue, tier.level)
                placed.setdefault(self.agent_index[tier.agent], (tier.level, tier.position))
            for group in queue.groups:
                _check_level(queue, group.level)
                for ai, agent in enumerate(self.agents):
                    if group.group in agent.groups:
                        placed.setdefault(ai, (group.level, group.position))
            top = 1
            for ai, (level, position) in placed.items():
                skill_level = self.agents[ai].skills.get(queue.skill, 0) if queue.skill else 0
                if queue.skill and skill_level < queue.min_skill_level:
                    continue
                e = len(self.entries)
                self.entries.append((qi, ai, level, position, skill_level))
                self.pools.setdefault((qi, level), []).append(e)
                top = max(top, level)
            self.max_level.append(top)
            opens = [0.0] * (MAX_LEVEL + 2)
            for level in range(2, MAX_LEVEL + 1):
                if level not in queue.level_waits:  # not listed: with the level below, at the earliest
                    opens[level] = max(opens[level - 1], (level - 1) * queue.tier_wait)
                    continue
                opens[level] = float(queue.level_waits[level])
                if opens[level] < opens[level - 1]:
                    raise ValueError(f"queue {queue.name!r}: level {level} opens before level {level - 1}")
            self.open_after.append(opens)
        for pool in self.pools.values():
            pool.sort(key=lambda e: (self.entries[e][3], self.entries[e][1]))
        for e, (qi, ai, *_rest) in enumerate(self.entries):
            self.agent_entries[ai].append(e)

    @staticmethod
    def _check_queue(queue: Queue) -> None:
        if queue.strategy not in STRATEGIES:
            raise ValueError(f"queue {queue.name!r}: unknown strategy {queue.strategy!r}")
        for rule in (queue.join_empty, queue.leave_when_empty):
            if rule not in EMPTY_RULES:
                raise ValueError(f"queue {queue.name!r}: unknown empty rule {rule!r}")
        if queue.ring_timeout <= 0:
            raise ValueError(f"queue {queue.name!r}: ring_timeout must be > 0")
        if min(queue.wrap_up, queue.max_wait, queue.tier_wait, queue.service_level,
               queue.short_abandon) < 0:
            raise ValueError(f"queue {queue.name!r}: times must be >= 0")
        for level, wait in queue.level_waits.items():
            _check_level(queue, level)
            if wait < 0 or (level == 1 and wait != 0):
                raise ValueError(f"queue {queue.name!r}: level {level} wait {wait} is not allowed")


def _check_level(queue: Queue, level: int) -> None:
    if not 1 <= level <= MAX_LEVEL:
        raise ValueError(f"queue {queue.name!r}: tier level {level} is outside 1..{MAX_LEVEL}")


# --- the live records ----------------------------------------------------------------------------


class _Agent:
    __slots__ = (
        "index", "id", "wrap_up", "max_no_answer", "no_answer_delay", "entries", "status", "reason",
        "state", "reachable", "resting", "free", "ready", "logged_in", "idle_since", "login_since",
        "break_since", "state_since", "talk_time", "wrap_time", "logged_in_time", "break_time",
        "calls", "missed", "streak", "offer_member", "offer_queue", "call_queue", "gen",
    )

    def __init__(self, index: int, config: Agent):
        self.index = index
        self.id = config.id
        self.wrap_up = config.wrap_up
        self.max_no_answer = config.max_no_answer
        self.no_answer_delay = config.no_answer_delay
        self.entries: list[_Entry] = []
        self.status = LOGGED_OUT
        self.reason = ""
        self.state = IDLE
        self.reachable = 0          # registered phones
        self.resting = False        # after a miss, until no_answer_delay has passed
        self.free = False           # may be offered a call now
        self.ready = False          # available with a registered phone (whatever its state)
        self.logged_in = False
        self.idle_since = 0.0
        self.login_since = self.break_since = self.state_since = 0.0
        self.talk_time = self.wrap_time = self.logged_in_time = self.break_time = 0.0
        self.calls = self.missed = self.streak = 0
        self.offer_member: _Member | None = None
        self.offer_queue: _Queue | None = None
        self.call_queue: _Queue | None = None
        self.gen = 0


class _Entry:
    """An agent's place in one queue: its tier level and its index in the level's ring order."""

    __slots__ = ("agent", "queue", "level", "ring", "skill_level")

    def __init__(self, agent: _Agent, queue: _Queue, level: int, skill_level: int):
        self.agent, self.queue, self.level, self.skill_level = agent, queue, level, skill_level
        self.ring = 0


class _Queue:
    __slots__ = (
        "index", "name", "config", "strategy", "max_level", "open_after", "pools", "rr_last",
        "heaps", "members", "logged_in", "ready", "offered", "answered", "abandoned",
        "short_abandoned", "in_service_level", "wait_answered", "exited", "refused",
    )

    def __init__(self, index: int, config: Queue, max_level: int, open_after: list[float]):
        self.index = index
        self.name = config.name
        self.config = config
        self.strategy = config.strategy
        self.max_level = max_level
        self.open_after = open_after
        self.pools: list[list[_Entry]] = [[] for _ in range(MAX_LEVEL + 1)]  # [level] in ring order
        self.rr_last = [-1] * (MAX_LEVEL + 1)                                  # round-robin memory
        self.heaps: list[list] = [[] for _ in range(MAX_LEVEL + 1)]            # waiting, by open level
        self.members: dict[int, _Member] = {}                                  # by arrival: join order
        self.logged_in = self.ready = 0
        self.offered = self.answered = self.abandoned = self.short_abandoned = 0
        self.in_service_level = self.exited = self.refused = 0
        self.wait_answered = 0.0


class _Member:
    __slots__ = ("id", "queue", "priority", "joined", "seq", "level", "waiting", "ticket", "offers",
                 "alive")

    def __init__(self, member_id: str, queue: _Queue, priority: int, joined: float, seq: int):
        self.id, self.queue, self.priority, self.joined, self.seq = member_id, queue, priority, joined, seq
        self.level = 1
        self.waiting = False
        self.ticket = 0                      # a heap entry is valid while its ticket is the member's
        self.offers: list[_Agent] = []       # agents ringing for it, in the order offered
        self.alive = True


# --- the distributor --------------------------------------------------------------------------------


class AutomaticCallDistributor:
    """Queues, agents and the matching between them, for one owner (see the module's theory)."""

    def __init__(self, queues: Iterable[Queue], agents: Iterable[Agent], *, seed: int = 0):
        plan = Plan(queues, agents)
        self._agents = [_Agent(i, a) for i, a in enumerate(plan.agents)]
        self._agent_by_id = {a.id: a for a in self._agents}
        self._queues = [_Queue(i, q, plan.max_level[i], plan.open_after[i]) for i, q in enumerate(plan.queues)]
        self._queue_by_name = {q.name: q for q in self._queues}
        self._phone_agent = {phone: self._agents[i] for phone, i in plan.phone_agent.items()}
        self._phones = list(plan.phone_agent)  # [phone index] (records name phones by index)
        self._phones_up: set[str] = set()
        entries = [
            _Entry(self._agents[ai], self._queues[qi], level, skill)
            for qi, ai, level, _position, skill in plan.entries
        ]
        for (qi, level), pool in plan.pools.items():
            ring = self._queues[qi].pools[level]
            for e in pool:
                entries[e].ring = len(ring)
                ring.append(entries[e])
        for ai, ids in enumerate(plan.agent_entries):
            self._agents[ai].entries = [entries[e] for e in ids]
        self._members: dict[str, _Member] = {}
        self._member_seq = 0
        self._timers: list[tuple] = []
        self._timers_room = 64
        self._timer_seq = 0
        self._rng = seed & MASK64
        # outputs as records (kind, member, agent index, queue index, reason code); next_output
        # dresses each as its Struct, take_records copies it out as it is
        self._out: deque[tuple] = deque()

    # --- the sans-IO face -------------------------------------------------------------------------

    def handle_event(self, event, now: float) -> None:
        kind = type(event)
        if kind is MemberJoined:
            self._member_joined(event.member, self._queue_by_name[event.queue], event.priority, now)
        elif kind is CallEnded:
            self._call_ended(self._agent_by_id[event.agent], now)
        elif kind is OfferAnswered:
            self._offer_answered(event.member, self._agent_by_id[event.agent], now)
        elif kind is OfferRejected or kind is NoAnswer:
            agent = self._agent_by_id[event.agent]
            member = agent.offer_member
            if member is not None and member.id == event.member:
                self._missed(agent, now, timed_out=False)
        elif kind is MemberLeft:
            self._member_left(event.member, now)
        elif kind is AgentStatusChanged:
            agent = self._agent_by_id[event.agent]
            if event.status not in STATUSES:
                raise ValueError(f"unknown agent status {event.status!r}")
            if self._set_status(agent, event.status, event.reason, now):
                self._refresh(agent, now)
        elif kind is PhoneRegistered or kind is PhoneUnregistered:
            self._phone(event.phone, kind is PhoneRegistered, now)
        elif kind is AgentCallStarted:
            self._agent_call_started(self._agent_by_id[event.agent], now)
        else:
            raise TypeError(f"not an ACD event: {event!r}")

    def handle_timer(self, now: float) -> None:
        timers = self._timers
        while timers and timers[0][0] <= now:
            deadline, _seq, kind, target, gen = heapq.heappop(timers)
            if self._timer_valid(kind, target, gen):
                self._fire(kind, target, deadline)

    def get_timer(self) -> float | None:
        timers = self._timers
        while timers and not self._timer_valid(*timers[0][2:]):
            heapq.heappop(timers)
        return timers[0][0] if timers else None

    def handle_records(self, records, now: float) -> None:
        """The events in ``records`` (any contiguous buffer of records, see core.acd.model), in
        order, as handle_event would take them one by one."""
        if memoryview(records).nbytes % RECORD.size:
            raise ValueError(f"records must be whole records of {RECORD.size} bytes")
        for kind, member, agent, queue, value in RECORD.iter_unpack(records):
            if kind == JOINED:
                self._member_joined(member, self._queue_at(queue), value, now)
            elif kind == CALL_ENDED:
                self._call_ended(self._agent_at(agent), now)
            elif kind == ANSWERED:
                self._offer_answered(member, self._agent_at(agent), now)
            elif kind == REJECTED or kind == NO_ANSWER:
                a = self._agent_at(agent)
                if a.offer_member is not None and a.offer_member.id == member:
                    self._missed(a, now, timed_out=False)
            elif kind == LEFT:
                self._member_left(member, now)
            elif kind == STATUS_CHANGED:
                a = self._agent_at(agent)
                if not 0 <= value < len(STATUSES):
                    raise ValueError(f"unknown agent status code {value}")
                if self._set_status(a, STATUSES[value], "", now):
                    self._refresh(a, now)
            elif kind == PHONE_UP or kind == PHONE_DOWN:
                if 0 <= value < len(self._phones):  # like an unknown phone: not an agent's, ignored
                    self._phone(self._phones[value], kind == PHONE_UP, now)
            elif kind == CALL_STARTED:
                self._agent_call_started(self._agent_at(agent), now)
            else:
                raise TypeError(f"not an ACD event record: kind {kind}")

    def _agent_at(self, index: int) -> _Agent:
        if not 0 <= index < len(self._agents):
            raise KeyError(index)
        return self._agents[index]

    def _queue_at(self, index: int) -> _Queue:
        if not 0 <= index < len(self._queues):
            raise KeyError(index)
        return self._queues[index]

    def next_output(self):
        if not self._out:
            return None
        kind, member, agent, queue, reason = self._out.popleft()
        if kind == OFFER:
            return Offer(member, self._agents[agent].id, self._queues[queue].name)
        if kind == CANCELLED:
            return OfferCancelled(member, self._agents[agent].id, self._queues[queue].name, REASONS[reason])
        if kind == TIMED_OUT:
            return OfferTimedOut(member, self._agents[agent].id, self._queues[queue].name)
        if kind == EXITED:
            return MemberExited(member, self._queues[queue].name, REASONS[reason])
        return AgentPaused(self._agents[agent].id, REASONS[reason])

    def take_records(self, out) -> int:
        """Move as many outputs as fit into the writable buffer ``out`` as records; return how
        many. An output about a member whose id is not an int stays for next_output (TypeError)."""
        room = memoryview(out).nbytes // RECORD.size
        n = 0
        while n < room and self._out:
            record = self._out[0]
            if type(record[1]) is not int:
                raise TypeError(f"member {record[1]!r} is not an int: take it with next_output")
            RECORD.pack_into(out, n * RECORD.size, *record)
            self._out.popleft()
            n += 1
        return n

    def queue_stats(self, queue: str, now: float) -> QueueStats:
        q = self._queue_by_name[queue]
        oldest = next(iter(q.members.values()), None)
        return QueueStats(
            waiting=len(q.members),
            longest_wait=now - oldest.joined if oldest is not None else 0.0,
            offered=q.offered,
            answered=q.answered,
            abandoned=q.abandoned,
            short_abandoned=q.short_abandoned,
            answered_in_service_level=q.in_service_level,
            average_speed_of_answer=q.wait_answered / q.answered if q.answered else 0.0,
            exited=q.exited,
            refused=q.refused,
        )

    def agent_stats(self, agent: str, now: float) -> AgentStats:
        a = self._agent_by_id[agent]
        return AgentStats(
            status=a.status,
            reason=a.reason,
            state=a.state,
            calls=a.calls,
            talk_time=a.talk_time + (now - a.state_since if a.state == TALKING else 0.0),
            wrap_up_time=a.wrap_time + (now - a.state_since if a.state == WRAP_UP else 0.0),
            logged_in_time=a.logged_in_time + (now - a.login_since if a.status != LOGGED_OUT else 0.0),
            break_time=a.break_time + (now - a.break_since if a.status == ON_BREAK else 0.0),
            missed_offers=a.missed,
        )

    # --- timers -----------------------------------------------------------------------------------

    def _schedule(self, deadline: float, kind: int, target, gen: int) -> None:
        if len(self._timers) >= self._timers_room:  # sweep before growing, as core/_acd.pyx does
            self._timers = [t for t in self._timers if t[2] >= T_MAX_WAIT and t[3].alive
                            or t[2] < T_MAX_WAIT and t[3].gen == t[4]]
            heapq.heapify(self._timers)
            if 2 * len(self._timers) >= self._timers_room:
                self._timers_room *= 2
        heapq.heappush(self._timers, (deadline, self._timer_seq, kind, target, gen))
        self._timer_seq += 1

    @property
    def timers_held(self) -> int:
        """How many timers the ACD holds, those that can no longer fire included."""
        return len(self._timers)

    @staticmethod
    def _timer_valid(kind: int, target, gen: int) -> bool:
        if kind >= T_MAX_WAIT:
            return target.alive
        return target.gen == gen and (kind != T_REST or target.resting)

    def _fire(self, kind: int, target, t: float) -> None:
        if kind == T_OFFER:
            self._missed(target, t, timed_out=True)
        elif kind == T_WRAP:
            target.wrap_time += t - target.state_since
            target.state = IDLE
            target.idle_since = t
            target.gen += 1
            self._refresh(target, t)
        elif kind == T_REST:
            target.resting = False
            self._refresh(target, t)
        elif kind == T_MAX_WAIT:
            self._exit_member(target, EXIT_MAX_WAIT, t)
        else:  # T_TIER: the member reaches the next tier level (and any opening at the same time)
            m = target
            q = m.queue
            level = m.level + 1
            while level < q.max_level and q.open_after[level + 1] <= q.open_after[m.level + 1]:
                level += 1
            m.level = level
            if level < q.max_level:
                self._schedule(m.joined + q.open_after[level + 1], T_TIER, m, 0)
            if m.waiting:
                self._push_waiting(m)
                self._match_member(m, t)

    # --- members ----------------------------------------------------------------------------------

    def _member_joined(self, member_id, q: _Queue, priority: int, now: float) -> None:
        if member_id in self._members:
            raise ValueError(f"member {member_id!r} is already queued")
        if not -MAX_PRIORITY <= priority <= MAX_PRIORITY:
            raise ValueError(f"priority {priority} is outside -{MAX_PRIORITY}..{MAX_PRIORITY}")
        if self._empty_rule_applies(q, q.config.join_empty):
            q.refused += 1
            self._out.append((EXITED, member_id, NO_ID, q.index, REASON_CODES[EXIT_JOIN_EMPTY]))
            return
        m = _Member(member_id, q, priority, now, self._member_seq)
        self._member_seq += 1
        self._members[member_id] = m
        q.members[m.seq] = m
        q.offered += 1
        vip = q.config.vip_priority
        if vip is not None and priority >= vip:
            m.level = q.max_level
        else:
            level = 1
            while level < q.max_level and q.open_after[level + 1] <= 0.0:
                level += 1
            m.level = level
        if q.config.max_wait > 0:
            self._schedule(now + q.config.max_wait, T_MAX_WAIT, m, 0)
        if m.level < q.max_level:
            self._schedule(now + q.open_after[m.level + 1], T_TIER, m, 0)
        m.waiting = True
        self._push_waiting(m)
        self._match_member(m, now)

    def _push_waiting(self, m: _Member) -> None:
        m.ticket += 1
        heapq.heappush(m.queue.heaps[m.level], (-m.priority, m.seq, m.ticket, m))

    def _head(self, q: _Queue, level: int) -> _Member | None:
        heap = q.heaps[level]
        while heap:
            m, ticket = heap[0][3], heap[0][2]
            if m.alive and m.waiting and m.ticket == ticket and m.level == level:
                return m
            heapq.heappop(heap)
        return None

    def _member_left(self, member_id: str, now: float) -> None:
        m = self._members.get(member_id)
        if m is None:
            return  # already answered or exited: the hang-up raced the ACD
        q = m.queue
        if now - m.joined < q.config.short_abandon:
            q.short_abandoned += 1
        else:
            q.abandoned += 1
        for agent in self._remove_member(m, CANCEL_MEMBER_LEFT, None):
            self._refresh(agent, now)

    def _exit_member(self, m: _Member, reason: str, now: float) -> None:
        freed = self._remove_member(m, CANCEL_MEMBER_EXITED, None)
        m.queue.exited += 1
        self._out.append((EXITED, m.id, NO_ID, m.queue.index, REASON_CODES[reason]))
        for agent in freed:
            self._refresh(agent, now)

    def _remove_member(self, m: _Member, reason: str, keep: _Agent | None) -> list[_Agent]:
        """Take ``m`` out of its queue; cancel its offers but ``keep``'s; return the agents freed."""
        q = m.queue
        m.alive = False
        m.waiting = False
        del self._members[m.id]
        del q.members[m.seq]
        freed = []
        for agent in m.offers:
            if agent is keep:
                continue
            self._out.append((CANCELLED, m.id, agent.index, q.index, REASON_CODES[reason]))
            agent.state = IDLE
            agent.offer_member = None
            agent.gen += 1
            freed.append(agent)
        m.offers = []
        return freed

    # --- offers -----------------------------------------------------------------------------------

    def _offer(self, m: _Member, entry: _Entry, now: float) -> None:
        agent, q = entry.agent, entry.queue
        m.waiting = False
        m.offers.append(agent)
        agent.state = OFFERED
        agent.offer_member = m
        agent.offer_queue = q
        agent.gen += 1
        agent.free = False
        q.rr_last[entry.level] = entry.ring
        self._schedule(now + q.config.ring_timeout, T_OFFER, agent, agent.gen)
        self._out.append((OFFER, m.id, agent.index, q.index, 0))

    def _offer_answered(self, member_id: str, agent: _Agent, now: float) -> None:
        m = agent.offer_member
        if agent.state != OFFERED or m is None or m.id != member_id:
            return  # the offer timed out or was cancelled first: the call layer drops that leg
        q = m.queue
        wait = now - m.joined
        q.answered += 1
        q.wait_answered += wait
        if wait <= q.config.service_level:
            q.in_service_level += 1
        freed = self._remove_member(m, CANCEL_ANSWERED_ELSEWHERE, agent)
        agent.state = TALKING
        agent.offer_member = None
        agent.call_queue = q
        agent.state_since = now
        agent.calls += 1
        agent.streak = 0
        agent.gen += 1
        for other in freed:
            self._refresh(other, now)

    def _missed(self, agent: _Agent, now: float, timed_out: bool) -> None:
        """The offer to ``agent`` was rejected, rang out, or timed out (the ACD's ring timeout)."""
        m, q = agent.offer_member, agent.offer_queue
        if timed_out:
            self._out.append((TIMED_OUT, m.id, agent.index, q.index, 0))
        m.offers.remove(agent)
        agent.state = IDLE
        agent.offer_member = None
        agent.gen += 1
        agent.missed += 1
        agent.streak += 1
        if agent.max_no_answer and agent.streak >= agent.max_no_answer:
            agent.streak = 0
            self._set_status(agent, ON_BREAK, PAUSE_NO_ANSWER, now)
            self._out.append((PAUSED, NO_ID, agent.index, NO_ID, REASON_CODES[PAUSE_NO_ANSWER]))
        elif agent.no_answer_delay > 0:
            agent.resting = True
            self._schedule(now + agent.no_answer_delay, T_REST, agent, agent.gen)
        if not m.offers:
            m.waiting = True
            self._push_waiting(m)
        self._refresh(agent, now)
        if m.alive and m.waiting:
            self._match_member(m, now)

    # --- agents -----------------------------------------------------------------------------------

    def _set_status(self, a: _Agent, status: str, reason: str, now: float) -> bool:
        reason = reason if status == ON_BREAK else ""
        if a.status == status and a.reason == reason:
            return False
        old = a.status
        if old == LOGGED_OUT:
            a.login_since = now
        elif status == LOGGED_OUT:
            a.logged_in_time += now - a.login_since
        if old == ON_BREAK:
            a.break_time += now - a.break_since
        if status == ON_BREAK:
            a.break_since = now
        a.status = status
        a.reason = reason
        if status == AVAILABLE:
            a.idle_since = now
            a.streak = 0
            if a.resting:  # the agent says it is back: the rest after a miss ends
                a.resting = False
                a.gen += 1
        return True

    def _phone(self, phone: str, registered: bool, now: float) -> None:
        agent = self._phone_agent.get(phone)
        if agent is None or (phone in self._phones_up) == registered:
            return
        if registered:
            self._phones_up.add(phone)
            agent.reachable += 1
        else:
            self._phones_up.discard(phone)
            agent.reachable -= 1
        self._refresh(agent, now)

    def _agent_call_started(self, a: _Agent, now: float) -> None:
        if a.state == OFFERED or a.state == TALKING:
            return
        if a.state == WRAP_UP:
            a.wrap_time += now - a.state_since
        a.state = TALKING
        a.state_since = now
        a.call_queue = None
        a.calls += 1
        a.resting = False
        a.gen += 1
        self._refresh(a, now)

    def _call_ended(self, a: _Agent, now: float) -> None:
        if a.state != TALKING:
            return
        a.talk_time += now - a.state_since
        if a.wrap_up is not None:
            wrap = a.wrap_up
        else:
            wrap = a.call_queue.config.wrap_up if a.call_queue is not None else 0.0
        a.gen += 1
        if wrap > 0:
            a.state = WRAP_UP
            a.state_since = now
            self._schedule(now + wrap, T_WRAP, a, a.gen)
        else:
            a.state = IDLE
            a.idle_since = now
        self._refresh(a, now)

    def _refresh(self, a: _Agent, now: float) -> None:
        """Bring the agent's flags, its queues' head counts and the free indexes up to date; apply
        leave-when-empty if it dropped out; match it if it became free."""
        logged_in = a.status != LOGGED_OUT
        ready = a.status == AVAILABLE and a.reachable > 0
        free = ready and a.state == IDLE and not a.resting
        dropped = False
        if logged_in != a.logged_in:
            a.logged_in = logged_in
            step = 1 if logged_in else -1
            for entry in a.entries:
                entry.queue.logged_in += step
            dropped = not logged_in
        if ready != a.ready:
            a.ready = ready
            step = 1 if ready else -1
            for entry in a.entries:
                entry.queue.ready += step
            dropped = dropped or not ready
        became_free = free and not a.free
        a.free = free
        if dropped:
            for entry in a.entries:
                q = entry.queue
                if q.members and self._empty_rule_applies(q, q.config.leave_when_empty):
                    for m in list(q.members.values()):
                        self._exit_member(m, EXIT_LEAVE_EMPTY, now)
        if became_free:
            self._match_agent(a, now)

    @staticmethod
    def _empty_rule_applies(q: _Queue, rule: str) -> bool:
        if rule == NO_AGENTS:
            return q.logged_in == 0
        if rule == NO_AVAILABLE:
            return q.ready == 0
        return False

    # --- matching ---------------------------------------------------------------------------------

    def _match_agent(self, a: _Agent, now: float) -> None:
        """A free agent takes the first waiting member (priority, then arrival) it may serve."""
        best = best_entry = None
        for entry in a.entries:
            q = entry.queue
            for level in range(entry.level, q.max_level + 1):
                m = self._head(q, level)
                if m is not None and (best is None or (-m.priority, m.seq) < (-best.priority, best.seq)):
                    best, best_entry = m, entry
        if best is not None:
            self._offer(best, best_entry, now)

    def _match_member(self, m: _Member, now: float) -> None:
        """A waiting member takes a free agent of its queue, chosen by the queue's strategy."""
        q = m.queue
        if q.strategy == RING_ALL:
            free = [e for level in range(1, m.level + 1) for e in q.pools[level] if e.agent.free]
            for entry in free:
                self._offer(m, entry, now)
            return
        for level in range(1, m.level + 1):
            entry = self._choose(q, level)
            if entry is not None:
                self._offer(m, entry, now)
                return

    def _choose(self, q: _Queue, level: int) -> _Entry | None:
        free = [e for e in q.pools[level] if e.agent.free]  # in ring order
        if not free:
            return None
        strategy = q.strategy
        if strategy == LONGEST_IDLE_AGENT:
            return min(free, key=lambda e: (e.agent.idle_since, e.agent.index))
        if strategy == FEWEST_CALLS:
            return min(free, key=lambda e: (e.agent.calls, e.agent.idle_since, e.agent.index))
        if strategy == LEAST_TALK_TIME:
            return min(free, key=lambda e: (e.agent.talk_time, e.agent.idle_since, e.agent.index))
        if strategy == SKILLS:
            return min(free, key=lambda e: (-e.skill_level, e.agent.idle_since, e.agent.index))
        if strategy == LINEAR:
            return free[0]
        if strategy == ROUND_ROBIN:
            last = q.rr_last[level]
            return next((e for e in free if e.ring > last), free[0])
        # RANDOM
        self._rng, draw = splitmix64(self._rng)
        return free[(draw >> 32) * len(free) >> 32]  # the top 32 bits, scaled
