"""The ACD's words: configuration (agents, queues, tiers), the events fed in, the events handed out, and
the live counters. Plain frozen msgspec Structs, shared by both implementations (``core/_acd.pyx``
and ``core/acd/_pyacd.py``), so a test can compare their outputs with ``==``.

Vocabulary (FreeSWITCH mod_callcenter's): a *queue* holds *members* (callers waiting); *agents* serve
them; a *tier* puts an agent in a queue with a level (1 is tried first) and a position (the order
inside a level for linear and round-robin). An agent's *status* is set by the agent (logged out,
available, on break with a reason); its *state* is set by the switch (idle, offered, talking,
wrap-up). The two are kept apart: an agent on break may still be talking.
"""

from __future__ import annotations

from typing import ClassVar

import msgspec

__all__ = [
    "LOGGED_OUT", "AVAILABLE", "ON_BREAK", "STATUSES", "IDLE", "OFFERED", "TALKING", "WRAP_UP", "STATES",
    "LONGEST_IDLE_AGENT", "ROUND_ROBIN", "FEWEST_CALLS", "LEAST_TALK_TIME", "RING_ALL", "LINEAR",
    "RANDOM", "SKILLS", "STRATEGIES", "NEVER", "NO_AGENTS", "NO_AVAILABLE", "EMPTY_RULES",
    "EXIT_MAX_WAIT", "EXIT_JOIN_EMPTY", "EXIT_LEAVE_EMPTY", "CANCEL_ANSWERED_ELSEWHERE",
    "CANCEL_MEMBER_LEFT", "CANCEL_MEMBER_EXITED", "PAUSE_NO_ANSWER", "MAX_LEVEL", "MAX_PRIORITY",
    "Agent", "Tier", "GroupTier", "Queue", "overflow_queue",
    "AgentStatusChanged", "PhoneRegistered", "PhoneUnregistered", "MemberJoined", "MemberLeft",
    "OfferAnswered", "OfferRejected", "NoAnswer", "AgentCallStarted", "CallEnded",
    "Offer", "OfferCancelled", "OfferTimedOut", "MemberExited", "AgentPaused",
    "QueueStats", "AgentStats",
    "RECORD_WORDS", "NO_ID", "REASONS",
]

# --- agent status (set by the agent) and state (set by the switch) ---------------------------------

LOGGED_OUT = "logged_out"
AVAILABLE = "available"
ON_BREAK = "on_break"
STATUSES = (LOGGED_OUT, AVAILABLE, ON_BREAK)

IDLE = "idle"
OFFERED = "offered"
TALKING = "talking"
WRAP_UP = "wrap_up"
STATES = (IDLE, OFFERED, TALKING, WRAP_UP)

# --- strategies: how a queue picks among its free agents ------------------------------------------

LONGEST_IDLE_AGENT = "longest_idle_agent"  # idle the longest (since its last call or since ready)
ROUND_ROBIN = "round_robin"                # the next one after the agent offered last, in tier order
FEWEST_CALLS = "fewest_calls"              # the fewest calls taken so far
LEAST_TALK_TIME = "least_talk_time"        # the least talk time so far
RING_ALL = "ring_all"                      # every free agent at once; the first to answer wins
LINEAR = "linear"                          # top-down: always the first free one in tier order
RANDOM = "random"                          # uniformly among the free ones (seeded: reproducible)
SKILLS = "skills"                          # the highest level in the queue's skill, then longest idle
STRATEGIES = (LONGEST_IDLE_AGENT, ROUND_ROBIN, FEWEST_CALLS, LEAST_TALK_TIME, RING_ALL, LINEAR,
              RANDOM, SKILLS)

# --- empty-queue rules (for join_empty and leave_when_empty) ---------------------------------------

NEVER = "never"                # the rule never applies
NO_AGENTS = "no_agents"        # applies when no agent of the queue is logged in (break counts as in)
NO_AVAILABLE = "no_available"  # applies when no agent is available with a registered phone
EMPTY_RULES = (NEVER, NO_AGENTS, NO_AVAILABLE)

# --- reasons carried by output events --------------------------------------------------------------

EXIT_MAX_WAIT = "max_wait"
EXIT_JOIN_EMPTY = "join_empty"
EXIT_LEAVE_EMPTY = "leave_empty"
CANCEL_ANSWERED_ELSEWHERE = "answered_elsewhere"  # ring-all: another agent answered first
CANCEL_MEMBER_LEFT = "member_left"                # the caller hung up
CANCEL_MEMBER_EXITED = "member_exited"            # max wait or leave-when-empty took the member out
PAUSE_NO_ANSWER = "no_answer"

# Reasons as record codes (index in this tuple; 0: none).
REASONS = ("", CANCEL_ANSWERED_ELSEWHERE, CANCEL_MEMBER_LEFT, CANCEL_MEMBER_EXITED, EXIT_MAX_WAIT,
           EXIT_JOIN_EMPTY, EXIT_LEAVE_EMPTY, PAUSE_NO_ANSWER)

MAX_LEVEL = 8  # tier levels run 1..MAX_LEVEL
MAX_PRIORITY = 1_000_000  # member priorities run -MAX_PRIORITY..MAX_PRIORITY


# --- configuration ----------------------------------------------------------------------------------


class Agent(msgspec.Struct, frozen=True, gc=False):
    """One agent. ``skills`` maps a skill name to a level (higher is better). ``groups`` names the
    agent groups it belongs to (e.g. "inbound", "blended", "outbound"); a queue may take whole
    groups. ``phones`` are the registrar users (AORs) that ring this agent: the agent is never
    offered a call while none of them is registered. ``wrap_up`` (seconds) overrides the queue's.
    After ``max_no_answer`` missed offers in a row (0: never) the agent is put on break with reason
    "no_answer"; after a single miss it rests ``no_answer_delay`` seconds, so the caller goes to
    the next agent."""

    id: str
    name: str = ""
    skills: dict[str, int] = {}
    groups: tuple[str, ...] = ()
    phones: tuple[str, ...] = ()
    wrap_up: float | None = None
    max_no_answer: int = 3
    no_answer_delay: float = 5.0


class Tier(msgspec.Struct, frozen=True, gc=False):
    """Agent ``agent`` serves the queue at ``level`` (1 first); ``position`` orders agents inside a
    level (linear and round-robin walk it; ties go to the agent configured first)."""

    agent: str
    level: int = 1
    position: int = 1


class GroupTier(msgspec.Struct, frozen=True, gc=False):
    """Every agent of ``group`` serves the queue at ``level`` (unless a Tier names it explicitly)."""

    group: str
    level: int = 1
    position: int = 1


class Queue(msgspec.Struct, frozen=True, gc=False):
    """One queue.

    Tier levels open with waiting time: level L is open to a member ``level_waits[L]`` seconds after
    it joined; a level not listed opens ``(L - 1) * tier_wait`` seconds after (tier_wait 0: every
    level at once; lower levels are still tried first), and never before the level below it. A member whose priority is at least ``vip_priority`` has every
    level open at once. Overflow between agent groups is levels: inbound at 1, blended at 2 after
    its wait, outbound at 3 after its own (see ``overflow_queue``).

    ``skill``: when set, only agents with at least ``min_skill_level`` in it serve the queue (the
    skills strategy then prefers the highest level). ``max_wait`` (0: none) takes a member out with
    reason "max_wait". ``join_empty`` refuses a caller and ``leave_when_empty`` takes every member
    out when their rule (NEVER, NO_AGENTS, NO_AVAILABLE) applies. ``service_level``: answered within
    this many seconds counts toward the service level; an abandon before ``short_abandon`` seconds
    is counted apart."""

    name: str
    strategy: str = LONGEST_IDLE_AGENT
    tiers: tuple[Tier, ...] = ()
    groups: tuple[GroupTier, ...] = ()
    tier_wait: float = 0.0
    level_waits: dict[int, float] = {}
    vip_priority: int | None = None
    skill: str | None = None
    min_skill_level: int = 1
    ring_timeout: float = 20.0
    wrap_up: float = 0.0
    max_wait: float = 0.0
    join_empty: str = NEVER
    leave_when_empty: str = NEVER
    service_level: float = 20.0
    short_abandon: float = 5.0


def overflow_queue(name: str, blended_after: float, outbound_after: float, **options) -> Queue:
    """A queue for inbound calls that overflow between agent groups: the "inbound" group at once,
    then also the "blended" group after ``blended_after`` seconds, then also the "outbound" group
    after ``outbound_after`` seconds (MISSION.md, agent groups)."""
    return Queue(
        name,
        groups=(GroupTier("inbound", 1), GroupTier("blended", 2), GroupTier("outbound", 3)),
        level_waits={2: blended_after, 3: outbound_after},
        **options,
    )


# --- events in (handle_event) -----------------------------------------------------------------------
# ``kind`` numbers the event types: the first word of an event's record (see "records" below).


class AgentStatusChanged(msgspec.Struct, frozen=True, gc=False):
    """The agent logs in/out or goes available / on break (``reason``: the break's reason code)."""

    agent: str
    status: str
    reason: str = ""
    kind: ClassVar[int] = 1


class PhoneRegistered(msgspec.Struct, frozen=True, gc=False):
    """The registrar has a binding for this phone (AOR); unknown phones are not agents' and ignored."""

    phone: str
    kind: ClassVar[int] = 2


class PhoneUnregistered(msgspec.Struct, frozen=True, gc=False):
    phone: str
    kind: ClassVar[int] = 3


class MemberJoined(msgspec.Struct, frozen=True, gc=False):
    """A caller enters ``queue``; higher ``priority`` is served first (-MAX_PRIORITY..MAX_PRIORITY),
    then earlier arrivals."""

    member: str
    queue: str
    priority: int = 0
    kind: ClassVar[int] = 4


class MemberLeft(msgspec.Struct, frozen=True, gc=False):
    """The caller hung up while queued (an abandon); any offer for it is cancelled."""

    member: str
    kind: ClassVar[int] = 5


class OfferAnswered(msgspec.Struct, frozen=True, gc=False):
    """The agent answered the offer: the member leaves the queue, the agent is talking."""

    member: str
    agent: str
    kind: ClassVar[int] = 6


class OfferRejected(msgspec.Struct, frozen=True, gc=False):
    """The agent declined the offer (or its phone was busy or failed): a missed offer."""

    member: str
    agent: str
    kind: ClassVar[int] = 7


class NoAnswer(msgspec.Struct, frozen=True, gc=False):
    """The call layer saw the agent's phone ring out before the ACD's ring timeout: a missed offer."""

    member: str
    agent: str
    kind: ClassVar[int] = 8


class AgentCallStarted(msgspec.Struct, frozen=True, gc=False):
    """The agent is on a call the ACD did not offer (direct, outbound campaign): busy everywhere."""

    agent: str
    kind: ClassVar[int] = 9


class CallEnded(msgspec.Struct, frozen=True, gc=False):
    """The agent's call ended: wrap-up (agent's or the queue's time), then idle."""

    agent: str
    kind: ClassVar[int] = 10


# --- events out (next_output) -----------------------------------------------------------------------


class Offer(msgspec.Struct, frozen=True, gc=False):
    """Ring ``agent`` for ``member`` of ``queue`` (the call layer dials the agent's phone)."""

    member: str
    agent: str
    queue: str
    kind: ClassVar[int] = 11


class OfferCancelled(msgspec.Struct, frozen=True, gc=False):
    """Stop ringing ``agent``: ``reason`` is answered_elsewhere, member_left or member_exited."""

    member: str
    agent: str
    queue: str
    reason: str
    kind: ClassVar[int] = 12


class OfferTimedOut(msgspec.Struct, frozen=True, gc=False):
    """The queue's ring timeout passed: stop ringing ``agent``; the member goes to the next agent."""

    member: str
    agent: str
    queue: str
    kind: ClassVar[int] = 13


class MemberExited(msgspec.Struct, frozen=True, gc=False):
    """The member leaves the queue unanswered (max_wait, join_empty, leave_empty): route it on."""

    member: str
    queue: str
    reason: str
    kind: ClassVar[int] = 14


class AgentPaused(msgspec.Struct, frozen=True, gc=False):
    """The switch put the agent on break (``reason`` "no_answer": missed offers in a row)."""

    agent: str
    reason: str
    kind: ClassVar[int] = 15


# --- records: the same events as plain ints ----------------------------------------------------------
# ``handle_records(records, now)`` takes, and ``take_records(out)`` writes, events as RECORD_WORDS
# signed 64-bit words each: (kind, member, agent, queue, value), NO_ID where a field is unused.
# Agents and queues are their index in the configuration handed to the constructor; a phone is its
# index among every agent's phones in configuration order (agent by agent, each agent's in order,
# a phone listed twice counted once). A member is an int (a token the caller chose): it is the
# same member as an int id in the Struct events, and next_output hands it out as that int.
#   in   MemberJoined     (4, member, -, queue, priority)    AgentStatusChanged (1, -, agent, -, status)
#        MemberLeft       (5, member, -, -, -)                 status: index in STATUSES; no break reason
#        OfferAnswered    (6, member, agent, -, -)           PhoneRegistered    (2, -, -, -, phone)
#        OfferRejected    (7, member, agent, -, -)           PhoneUnregistered  (3, -, -, -, phone)
#        NoAnswer         (8, member, agent, -, -)           AgentCallStarted   (9, -, agent, -, -)
#                                                           CallEnded          (10, -, agent, -, -)
#   out  Offer            (11, member, agent, queue, 0)      MemberExited       (14, member, -, queue, reason)
#        OfferCancelled   (12, member, agent, queue, reason) AgentPaused        (15, -, agent, -, reason)
#        OfferTimedOut    (13, member, agent, queue, 0)      reason: index in REASONS
# This is the form a ring between processes carries: fixed-size, no objects, no strings.

RECORD_WORDS = 5
NO_ID = -1


# --- live counters ----------------------------------------------------------------------------------


class QueueStats(msgspec.Struct, frozen=True, gc=False):
    """A queue's live counters. ``offered``: members that joined (refused ones are ``refused``);
    ``abandoned`` excludes the short abandons (``short_abandoned``, under the queue's threshold);
    ``answered_in_service_level``: answered within the queue's service-level threshold;
    ``average_speed_of_answer``: mean wait of the answered members (0.0 before the first)."""

    waiting: int
    longest_wait: float
    offered: int
    answered: int
    abandoned: int
    short_abandoned: int
    answered_in_service_level: int
    average_speed_of_answer: float
    exited: int
    refused: int


class AgentStats(msgspec.Struct, frozen=True, gc=False):
    """An agent's live status, state and counters (times in seconds, the current stretch included)."""

    status: str
    reason: str
    state: str
    calls: int
    talk_time: float
    wrap_up_time: float
    logged_in_time: float
    break_time: float
    missed_offers: int
