"""The ACD (core/_acd.pyx and its twin core/acd/_pyacd.py): every strategy and rule on a fake clock,
run against both implementations, and a differential test feeding both the same random streams.

Each test reads as a call-centre flow: agents log in and register phones, callers join queues, and
the test asserts the offers, exits and pauses the ACD hands the call layer, and the counters a
supervisor would see.
"""

from __future__ import annotations

import random

import pytest

from core.acd import IMPLEMENTATIONS
from core.acd.model import (
    AVAILABLE, FEWEST_CALLS, IDLE, LEAST_TALK_TIME, LINEAR, LOGGED_OUT, LONGEST_IDLE_AGENT,
    NO_AGENTS, NO_AVAILABLE, OFFERED, ON_BREAK, RANDOM, RING_ALL, ROUND_ROBIN, SKILLS, STRATEGIES,
    TALKING, WRAP_UP, Agent, AgentCallStarted, AgentPaused, AgentStatusChanged, CallEnded,
    GroupTier, MemberExited, MemberJoined, MemberLeft, NoAnswer, Offer, OfferAnswered,
    OfferCancelled, OfferRejected, OfferTimedOut, PhoneRegistered, PhoneUnregistered, Queue, Tier,
    overflow_queue,
)

IMPLS = ["py", "c"]


@pytest.fixture(params=IMPLS)
def impl(request):
    module = IMPLEMENTATIONS[request.param]
    if module is None:
        pytest.skip("core._acd is not built (python setup.py build_ext --inplace)")
    return module


class Desk:
    """An ACD on a fake clock: ``feed`` an event at the current time, ``run_until`` a later time
    (timers fire on the way); both return the outputs handed out meanwhile."""

    def __init__(self, impl, queues, agents, seed=0):
        self.acd = impl.AutomaticCallDistributor(queues, agents, seed=seed)
        self.now = 0.0

    def drain(self):
        out = []
        while (item := self.acd.next_output()) is not None:
            out.append(item)
        return out

    def feed(self, *events):
        for event in events:
            self.acd.handle_event(event, self.now)
        return self.drain()

    def run_until(self, t):
        assert t >= self.now
        out = []
        for _ in range(100_000):  # bounded: every timer moves time forward
            deadline = self.acd.get_timer()
            if deadline is None or deadline > t:
                break
            self.acd.handle_timer(deadline)
            self.now = deadline
            out += self.drain()
        self.now = t
        return out

    def ready(self, *agents):
        """Agents log in available and register their phone (phone name = agent id)."""
        out = []
        for agent in agents:
            out += self.feed(AgentStatusChanged(agent, AVAILABLE), PhoneRegistered(agent))
        return out

    def stats(self, agent):
        return self.acd.agent_stats(agent, self.now)

    def queue(self, name):
        return self.acd.queue_stats(name, self.now)


def agents(*ids, **options):
    return [Agent(i, phones=(i,), **options) for i in ids]


def queue(name="sales", members=(), **options):
    return Queue(name, tiers=tuple(Tier(a, position=n + 1) for n, a in enumerate(members)), **options)


def offered_agents(outputs):
    return [o.agent for o in outputs if isinstance(o, Offer)]


# --- availability: status, phone, state -------------------------------------------------------------


def test_agent_without_registered_phone_is_never_offered(impl):
    desk = Desk(impl, [queue(members=["a1"])], agents("a1"))
    assert desk.feed(AgentStatusChanged("a1", AVAILABLE)) == []
    assert desk.feed(MemberJoined("c1", "sales")) == []
    # The phone registers: the waiting caller is offered at once.
    assert desk.feed(PhoneRegistered("a1")) == [Offer("c1", "a1", "sales")]
    assert desk.stats("a1").state == OFFERED


def test_phone_unregistered_takes_agent_out_and_other_phone_keeps_it_in(impl):
    desk = Desk(impl, [queue(members=["a1"])], [Agent("a1", phones=("desk", "soft"))])
    desk.feed(AgentStatusChanged("a1", AVAILABLE), PhoneRegistered("desk"), PhoneRegistered("soft"))
    desk.feed(PhoneUnregistered("desk"))
    assert desk.feed(MemberJoined("c1", "sales")) == [Offer("c1", "a1", "sales")]
    desk.feed(OfferAnswered("c1", "a1"), CallEnded("a1"), PhoneUnregistered("soft"))
    assert desk.feed(MemberJoined("c2", "sales")) == []
    # A phone the ACD does not know (a user who is not an agent) changes nothing.
    assert desk.feed(PhoneRegistered("someone-else")) == []
    assert desk.feed(PhoneRegistered("soft")) == [Offer("c2", "a1", "sales")]


def test_agent_on_break_or_logged_out_is_not_offered(impl):
    desk = Desk(impl, [queue(members=["a1", "a2"], strategy=LINEAR)], agents("a1", "a2"))
    desk.ready("a1", "a2")
    desk.feed(AgentStatusChanged("a1", ON_BREAK, "lunch"), AgentStatusChanged("a2", LOGGED_OUT))
    assert desk.feed(MemberJoined("c1", "sales")) == []
    assert desk.stats("a1").reason == "lunch"
    assert desk.feed(AgentStatusChanged("a2", AVAILABLE)) == [Offer("c1", "a2", "sales")]


def test_agent_busy_in_another_queue_is_not_offered(impl):
    desk = Desk(impl, [queue("sales", ["a1"]), queue("support", ["a1"])], agents("a1"))
    desk.ready("a1")
    assert desk.feed(MemberJoined("c1", "sales")) == [Offer("c1", "a1", "sales")]
    assert desk.feed(MemberJoined("c2", "support")) == []
    desk.feed(OfferAnswered("c1", "a1"))
    assert desk.stats("a1").state == TALKING
    assert desk.feed(MemberJoined("c3", "support")) == []
    # The call ends: the agent takes the support caller who waited longest.
    assert desk.feed(CallEnded("a1")) == [Offer("c2", "a1", "support")]


def test_agent_on_a_direct_call_is_busy_everywhere(impl):
    desk = Desk(impl, [queue(members=["a1"])], agents("a1"))
    desk.ready("a1")
    desk.feed(AgentCallStarted("a1"))
    assert desk.feed(MemberJoined("c1", "sales")) == []
    desk.now = 30.0
    assert desk.feed(CallEnded("a1")) == [Offer("c1", "a1", "sales")]
    assert desk.stats("a1").calls == 1
    assert desk.stats("a1").talk_time == 30.0


# --- strategies ---------------------------------------------------------------------------------------


def _answer_and_hang_up(desk, outputs, talk=1.0):
    """Answer every offer in ``outputs``, talk ``talk`` seconds, hang up."""
    for o in outputs:
        if isinstance(o, Offer):
            desk.feed(OfferAnswered(o.member, o.agent))
    desk.now += talk
    for o in outputs:
        if isinstance(o, Offer):
            desk.feed(CallEnded(o.agent))


def test_longest_idle_agent(impl):
    desk = Desk(impl, [queue(members=["a1", "a2", "a3"], strategy=LONGEST_IDLE_AGENT)], agents("a1", "a2", "a3"))
    desk.now = 1.0
    desk.ready("a2")
    desk.now = 2.0
    desk.ready("a3")
    desk.now = 3.0
    desk.ready("a1")
    desk.now = 10.0
    first = desk.feed(MemberJoined("c1", "sales"))
    assert offered_agents(first) == ["a2"]
    _answer_and_hang_up(desk, first)
    # a2 is now the most recently idle: a3 (idle since 2.0), then a1 (since 3.0), then a2.
    order = []
    for n in range(3):
        out = desk.feed(MemberJoined(f"d{n}", "sales"))
        order += offered_agents(out)
        _answer_and_hang_up(desk, out)
    assert order == ["a3", "a1", "a2"]


def test_round_robin_remembers_the_last_agent(impl):
    ids = ["a1", "a2", "a3"]
    desk = Desk(impl, [queue(members=ids, strategy=ROUND_ROBIN)], agents(*ids))
    desk.ready(*ids)
    order = []
    for n in range(4):
        out = desk.feed(MemberJoined(f"c{n}", "sales"))
        order += offered_agents(out)
        _answer_and_hang_up(desk, out)
    assert order == ["a1", "a2", "a3", "a1"]
    # a2 is busy: the ring skips it and goes on from where it stopped (a1 → a3).
    desk.feed(AgentCallStarted("a2"))
    out = desk.feed(MemberJoined("c9", "sales"))
    assert offered_agents(out) == ["a3"]


def test_linear_always_starts_from_the_top(impl):
    ids = ["a1", "a2", "a3"]
    desk = Desk(impl, [queue(members=["a3", "a1", "a2"], strategy=LINEAR)], agents(*ids))
    desk.ready(*ids)
    out = desk.feed(MemberJoined("c1", "sales"), MemberJoined("c2", "sales"))
    assert offered_agents(out) == ["a3", "a1"]
    _answer_and_hang_up(desk, out)
    assert offered_agents(desk.feed(MemberJoined("c3", "sales"))) == ["a3"]


def test_fewest_calls(impl):
    ids = ["a1", "a2"]
    desk = Desk(impl, [queue(members=ids, strategy=FEWEST_CALLS)], agents(*ids))
    desk.ready(*ids)
    # a1 has taken two calls (direct ones count), a2 none.
    for _ in range(2):
        desk.feed(AgentCallStarted("a1"), CallEnded("a1"))
    desk.now = 5.0
    out = desk.feed(MemberJoined("c1", "sales"))
    assert offered_agents(out) == ["a2"]
    _answer_and_hang_up(desk, out)
    assert offered_agents(desk.feed(MemberJoined("c2", "sales"))) == ["a2"]  # 1 call < 2 calls


def test_least_talk_time(impl):
    ids = ["a1", "a2"]
    desk = Desk(impl, [queue(members=ids, strategy=LEAST_TALK_TIME)], agents(*ids))
    desk.ready(*ids)
    out = desk.feed(MemberJoined("c1", "sales"))
    assert offered_agents(out) == ["a1"]  # both 0 s: longest idle, then configuration order
    _answer_and_hang_up(desk, out, talk=300.0)
    out = desk.feed(MemberJoined("c2", "sales"))
    assert offered_agents(out) == ["a2"]
    _answer_and_hang_up(desk, out, talk=10.0)
    assert offered_agents(desk.feed(MemberJoined("c3", "sales"))) == ["a2"]  # 10 s < 300 s


def test_ring_all_rings_everyone_and_first_answer_wins(impl):
    ids = ["a1", "a2", "a3"]
    desk = Desk(impl, [queue(members=ids, strategy=RING_ALL)], agents(*ids))
    desk.ready(*ids)
    desk.feed(AgentCallStarted("a3"))
    out = desk.feed(MemberJoined("c1", "sales"))
    assert out == [Offer("c1", "a1", "sales"), Offer("c1", "a2", "sales")]
    assert desk.feed(OfferAnswered("c1", "a2")) == [OfferCancelled("c1", "a1", "sales", "answered_elsewhere")]
    assert desk.stats("a1").state == IDLE
    assert desk.stats("a1").missed_offers == 0
    # a1 is free again and takes the next caller alone.
    assert desk.feed(MemberJoined("c2", "sales")) == [Offer("c2", "a1", "sales")]


def test_random_is_seeded_and_reproducible(impl):
    ids = [f"a{n}" for n in range(8)]

    def picks(seed):
        desk = Desk(impl, [queue(members=ids, strategy=RANDOM)], agents(*ids), seed=seed)
        desk.ready(*ids)
        chosen = []
        for n in range(40):
            out = desk.feed(MemberJoined(f"c{n}", "sales"))
            chosen += offered_agents(out)
            _answer_and_hang_up(desk, out)
        return chosen

    first = picks(7)
    assert first == picks(7)
    assert len(first) == 40
    assert len(set(first)) > 1  # not a fixed agent
    assert first != picks(8)


def test_skills_best_level_first_then_longest_idle(impl):
    staff = [
        Agent("novice", phones=("novice",), skills={"french": 2}),
        Agent("fluent1", phones=("fluent1",), skills={"french": 9}),
        Agent("fluent2", phones=("fluent2",), skills={"french": 9}),
        Agent("none", phones=("none",), skills={"german": 9}),
    ]
    q = Queue("fr", strategy=SKILLS, skill="french", min_skill_level=2,
              groups=(GroupTier("all"),), tiers=tuple(Tier(a.id) for a in staff))
    desk = Desk(impl, [q], staff)
    desk.now = 1.0
    desk.ready("fluent2", "none")
    desk.now = 2.0
    desk.ready("fluent1", "novice")
    out = desk.feed(MemberJoined("c1", "fr"), MemberJoined("c2", "fr"), MemberJoined("c3", "fr"))
    assert offered_agents(out) == ["fluent2", "fluent1", "novice"]
    # The agent without the skill is not in the queue at all.
    assert desk.feed(MemberJoined("c4", "fr")) == []


# --- members: priority, tiers, overflow --------------------------------------------------------------


def test_members_by_priority_then_join_time(impl):
    desk = Desk(impl, [queue(members=["a1"])], agents("a1"))
    desk.now = 1.0
    desk.feed(MemberJoined("early", "sales"))
    desk.now = 2.0
    desk.feed(MemberJoined("late", "sales"))
    desk.now = 3.0
    desk.feed(MemberJoined("vip", "sales", priority=5))
    order = []
    out = desk.ready("a1")
    for _ in range(3):
        order += [o.member for o in out if isinstance(o, Offer)]
        desk.feed(OfferAnswered(order[-1], "a1"))
        out = desk.feed(CallEnded("a1"))
    assert order == ["vip", "early", "late"]


def test_long_queue_with_many_abandons_keeps_its_order(impl):
    """Hundreds of callers, most of whom hang up while queued: the ones left are served by priority,
    then arrival (the C heaps drop departed callers lazily and compact; the order must not show it)."""
    desk = Desk(impl, [queue(members=["a1"])], agents("a1"))
    desk.ready("a1")
    desk.feed(AgentCallStarted("a1"))
    rng = random.Random(5)
    priority = {}
    for n in range(400):
        member = f"c{n}"
        priority[member] = rng.choice([0, 0, 0, 1, 2])
        desk.feed(MemberJoined(member, "sales", priority[member]))
        if n % 3 and n > 20:  # two of every three callers leave again, from the middle of the queue
            gone = f"c{n - 20}"
            if gone in priority:
                desk.feed(MemberLeft(gone))
                del priority[gone]
    expected = sorted(priority, key=lambda m: (-priority[m], int(m[1:])))
    assert desk.queue("sales").waiting == len(expected)
    served = []
    for _ in range(len(expected)):
        out = desk.feed(CallEnded("a1"))
        served += [o.member for o in out]
        desk.feed(OfferAnswered(served[-1], "a1"))
    assert served == expected


def test_caller_reaches_next_tier_after_waiting(impl):
    q = Queue("sales", tiers=(Tier("first", level=1), Tier("backup", level=2)), tier_wait=30.0)
    desk = Desk(impl, [q], agents("first", "backup"))
    desk.ready("backup")
    desk.feed(AgentCallStarted("first"))
    desk.ready("first")
    desk.now = 100.0
    assert desk.feed(MemberJoined("c1", "sales")) == []
    assert desk.run_until(129.9) == []
    assert desk.run_until(130.0) == [Offer("c1", "backup", "sales")]


def test_lower_tier_level_is_preferred_once_both_are_open(impl):
    q = Queue("sales", tiers=(Tier("backup", level=2), Tier("first", level=1)))  # tier_wait 0: all open
    desk = Desk(impl, [q], agents("first", "backup"))
    desk.now = 1.0
    desk.ready("backup")
    desk.now = 2.0
    desk.ready("first")  # idle less long, but level 1
    assert offered_agents(desk.feed(MemberJoined("c1", "sales"))) == ["first"]


def test_vip_caller_jumps_ahead_and_reaches_every_tier(impl):
    q = Queue("sales", tiers=(Tier("first", level=1), Tier("backup", level=2)), tier_wait=60.0,
              vip_priority=10)
    desk = Desk(impl, [q], agents("first", "backup"))
    desk.ready("first", "backup")
    desk.feed(AgentCallStarted("first"))
    assert desk.feed(MemberJoined("regular", "sales")) == []
    assert desk.feed(MemberJoined("vip", "sales", priority=10)) == [Offer("vip", "backup", "sales")]


def test_overflow_inbound_then_blended_then_outbound(impl):
    staff = [
        Agent("in1", groups=("inbound",), phones=("in1",)),
        Agent("bl1", groups=("blended",), phones=("bl1",)),
        Agent("out1", groups=("outbound",), phones=("out1",)),
    ]
    desk = Desk(impl, [overflow_queue("support", blended_after=20.0, outbound_after=45.0)], staff)
    desk.ready("in1", "bl1", "out1")
    desk.feed(AgentCallStarted("in1"), AgentCallStarted("bl1"))
    assert desk.feed(MemberJoined("c1", "support")) == []
    assert desk.run_until(44.0) == []  # blended opened at 20 s but is busy
    assert desk.run_until(45.0) == [Offer("c1", "out1", "support")]
    # A second caller: the blended agent frees up at 50 s, inside the caller's 20 s window.
    desk.now = 30.0
    desk.feed(MemberJoined("c2", "support"))
    desk.run_until(50.0)
    assert desk.feed(CallEnded("bl1")) == [Offer("c2", "bl1", "support")]


# --- offers: timeouts, misses, wrap-up ---------------------------------------------------------------


def test_ring_timeout_moves_caller_to_next_agent_and_rests_the_first(impl):
    ids = ["a1", "a2"]
    desk = Desk(impl, [queue(members=ids, strategy=LINEAR, ring_timeout=15.0)],
                agents(*ids, no_answer_delay=60.0))
    desk.ready(*ids)
    assert desk.feed(MemberJoined("c1", "sales")) == [Offer("c1", "a1", "sales")]
    assert desk.run_until(15.0) == [OfferTimedOut("c1", "a1", "sales"), Offer("c1", "a2", "sales")]
    assert desk.stats("a1").missed_offers == 1
    # a1 rests 60 s after the miss: a caller arriving meanwhile waits for it.
    desk.feed(OfferAnswered("c1", "a2"))
    assert desk.feed(MemberJoined("c2", "sales")) == []
    assert desk.run_until(75.0) == [Offer("c2", "a1", "sales")]


def test_answered_offers_do_not_pile_up_their_ring_timeouts(impl):
    """A busy queue with a long ring timeout: every answered offer leaves its timeout behind, and
    the ACD must not keep them all until they would have expired (memory grows with live timers,
    not with calls per ring timeout); the one offer still ringing times out on time."""
    desk = Desk(impl, [queue(members=["a1", "a2"], strategy=LINEAR, ring_timeout=3600.0)],
                agents("a1", "a2"))
    desk.ready("a1", "a2")
    for n in range(5_000):
        desk.now = n * 0.01
        assert desk.feed(MemberJoined(f"c{n}", "sales")) == [Offer(f"c{n}", "a1", "sales")]
        desk.feed(OfferAnswered(f"c{n}", "a1"), CallEnded("a1"))
    assert desk.acd.timers_held <= 128
    desk.now = 60.0
    assert desk.feed(MemberJoined("late", "sales")) == [Offer("late", "a1", "sales")]
    assert desk.run_until(3659.0) == []
    assert desk.run_until(3660.0) == [OfferTimedOut("late", "a1", "sales"), Offer("late", "a2", "sales")]


def test_rejected_and_no_answer_go_to_the_next_agent(impl):
    ids = ["a1", "a2", "a3"]
    desk = Desk(impl, [queue(members=ids, strategy=LINEAR)], agents(*ids))
    desk.ready(*ids)
    desk.feed(MemberJoined("c1", "sales"))
    assert desk.feed(OfferRejected("c1", "a1")) == [Offer("c1", "a2", "sales")]
    assert desk.feed(NoAnswer("c1", "a2")) == [Offer("c1", "a3", "sales")]
    # A rejection for an offer that is no longer there is a race, and ignored.
    assert desk.feed(OfferRejected("c1", "a1")) == []


def test_missed_offers_in_a_row_put_the_agent_on_break(impl):
    desk = Desk(impl, [queue(members=["a1"], ring_timeout=10.0)],
                agents("a1", max_no_answer=3, no_answer_delay=5.0))
    desk.ready("a1")
    desk.feed(MemberJoined("c1", "sales"))
    out = desk.run_until(100.0)
    timeouts = [o for o in out if isinstance(o, OfferTimedOut)]
    assert len(timeouts) == 3
    assert out[-1] == AgentPaused("a1", "no_answer")
    stats = desk.stats("a1")
    assert (stats.status, stats.reason, stats.missed_offers) == (ON_BREAK, "no_answer", 3)
    # Back from the break, the streak starts over: the caller is offered again.
    assert desk.feed(AgentStatusChanged("a1", AVAILABLE)) == [Offer("c1", "a1", "sales")]


def test_an_answer_resets_the_no_answer_streak(impl):
    desk = Desk(impl, [queue(members=["a1"])], agents("a1", max_no_answer=2, no_answer_delay=0.0))
    desk.ready("a1")
    desk.feed(MemberJoined("c1", "sales"))
    desk.feed(OfferRejected("c1", "a1"))  # miss 1; no rest: offered again at once
    desk.feed(OfferAnswered("c1", "a1"), CallEnded("a1"))
    desk.feed(MemberJoined("c2", "sales"))
    out = desk.feed(OfferRejected("c2", "a1"))  # miss 1 of a new streak
    assert AgentPaused("a1", "no_answer") not in out
    assert desk.feed(OfferRejected("c2", "a1")) == [AgentPaused("a1", "no_answer")]


@pytest.mark.parametrize("agent_wrap, expected", [(None, 30.0), (5.0, 5.0)])
def test_wrap_up_per_queue_or_per_agent(impl, agent_wrap, expected):
    desk = Desk(impl, [queue(members=["a1"], wrap_up=30.0)], agents("a1", wrap_up=agent_wrap))
    desk.ready("a1")
    desk.feed(MemberJoined("c1", "sales"), OfferAnswered("c1", "a1"))
    desk.now = 60.0
    desk.feed(CallEnded("a1"))
    assert desk.stats("a1").state == WRAP_UP
    assert desk.feed(MemberJoined("c2", "sales")) == []
    assert desk.run_until(60.0 + expected - 0.5) == []
    assert desk.run_until(60.0 + expected) == [Offer("c2", "a1", "sales")]
    assert desk.stats("a1").wrap_up_time == expected


# --- exits ----------------------------------------------------------------------------------------


def test_max_wait_exit(impl):
    desk = Desk(impl, [queue(members=["a1"], max_wait=120.0, ring_timeout=30.0)], agents("a1"))
    assert desk.feed(MemberJoined("c1", "sales")) == []
    desk.now = 100.0
    desk.ready("a1")  # offered at 100 s, still ringing at 120 s
    assert desk.run_until(200.0) == [
        OfferCancelled("c1", "a1", "sales", "member_exited"),
        MemberExited("c1", "sales", "max_wait"),
    ]
    assert desk.queue("sales").exited == 1
    assert desk.stats("a1").state == IDLE


@pytest.mark.parametrize("rule", [NO_AGENTS, NO_AVAILABLE])
def test_join_empty_refuses_the_caller(impl, rule):
    desk = Desk(impl, [queue(members=["a1"], join_empty=rule)], agents("a1"))
    assert desk.feed(MemberJoined("c1", "sales")) == [MemberExited("c1", "sales", "join_empty")]
    desk.feed(AgentStatusChanged("a1", ON_BREAK, "meeting"))  # logged in, not available
    out = desk.feed(MemberJoined("c2", "sales"))
    assert out == ([] if rule == NO_AGENTS else [MemberExited("c2", "sales", "join_empty")])
    assert desk.queue("sales").refused == (1 if rule == NO_AGENTS else 2)


def test_leave_when_empty_takes_everyone_out(impl):
    desk = Desk(impl, [queue(members=["a1", "a2"], leave_when_empty=NO_AVAILABLE)], agents("a1", "a2"))
    desk.ready("a1", "a2")
    desk.feed(AgentCallStarted("a1"), AgentCallStarted("a2"))
    desk.feed(MemberJoined("c1", "sales"), MemberJoined("c2", "sales"))
    assert desk.feed(AgentStatusChanged("a1", LOGGED_OUT)) == []  # a2 is busy but still available
    assert desk.feed(PhoneUnregistered("a2")) == [
        MemberExited("c1", "sales", "leave_empty"),
        MemberExited("c2", "sales", "leave_empty"),
    ]
    assert desk.queue("sales").waiting == 0


def test_abandon_cancels_the_offer_and_counts_short_abandons_apart(impl):
    desk = Desk(impl, [queue(members=["a1"], short_abandon=5.0)], agents("a1"))
    desk.ready("a1")
    desk.feed(MemberJoined("c1", "sales"))
    desk.now = 3.0
    assert desk.feed(MemberLeft("c1")) == [OfferCancelled("c1", "a1", "sales", "member_left")]
    desk.feed(AgentCallStarted("a1"))
    desk.feed(MemberJoined("c2", "sales"))
    desk.now = 60.0
    assert desk.feed(MemberLeft("c2")) == []
    assert desk.feed(MemberLeft("c2")) == []  # the second hang-up of a gone caller is ignored
    stats = desk.queue("sales")
    assert (stats.abandoned, stats.short_abandoned) == (1, 1)


# --- counters -------------------------------------------------------------------------------------


def test_queue_counters_service_level_and_speed_of_answer(impl):
    desk = Desk(impl, [queue(members=["a1"], service_level=20.0)], agents("a1"))
    desk.ready("a1")
    desk.feed(AgentCallStarted("a1"))
    desk.feed(MemberJoined("c1", "sales"))
    desk.now = 10.0
    desk.feed(MemberJoined("c2", "sales"))
    desk.now = 15.0
    assert desk.queue("sales").longest_wait == 15.0
    desk.feed(CallEnded("a1"), OfferAnswered("c1", "a1"))  # waited 15 s
    desk.now = 50.0
    desk.feed(CallEnded("a1"), OfferAnswered("c2", "a1"))  # waited 40 s
    stats = desk.queue("sales")
    assert (stats.offered, stats.answered, stats.answered_in_service_level) == (2, 2, 1)
    assert stats.average_speed_of_answer == pytest.approx(27.5)
    assert (stats.waiting, stats.longest_wait) == (0, 0.0)


def test_agent_counters(impl):
    desk = Desk(impl, [queue(members=["a1"], wrap_up=10.0)], agents("a1"))
    desk.ready("a1")
    desk.now = 100.0
    desk.feed(MemberJoined("c1", "sales"), OfferAnswered("c1", "a1"))
    desk.now = 160.0
    desk.feed(CallEnded("a1"))
    desk.run_until(200.0)
    desk.feed(AgentStatusChanged("a1", ON_BREAK, "coffee"))
    desk.now = 500.0
    stats = desk.stats("a1")
    assert (stats.calls, stats.talk_time, stats.wrap_up_time) == (1, 60.0, 10.0)
    assert (stats.logged_in_time, stats.break_time) == (500.0, 300.0)
    desk.feed(AgentStatusChanged("a1", LOGGED_OUT))
    desk.now = 900.0
    assert desk.stats("a1").logged_in_time == 500.0


def test_a_late_answer_after_the_timeout_is_ignored(impl):
    desk = Desk(impl, [queue(members=["a1"], ring_timeout=5.0)], agents("a1", no_answer_delay=30.0))
    desk.ready("a1")
    desk.feed(MemberJoined("c1", "sales"))
    desk.run_until(6.0)
    assert desk.feed(OfferAnswered("c1", "a1")) == []
    assert desk.stats("a1").state == IDLE
    assert desk.queue("sales").answered == 0


def test_fake_clock_runs_hours_of_timers(impl):
    desk = Desk(impl, [queue(members=["a1"], ring_timeout=10.0)],
                agents("a1", max_no_answer=0, no_answer_delay=20.0))
    desk.ready("a1")
    desk.feed(MemberJoined("c1", "sales"))
    out = desk.run_until(3 * 3600.0)
    # Offer at 0, time out at 10, rest until 30, offer again...: one miss every 30 s.
    assert sum(isinstance(o, OfferTimedOut) for o in out) == 3 * 3600 // 30
    assert desk.acd.get_timer() is not None


def test_bad_configuration_is_refused(impl):
    with pytest.raises(ValueError, match="strategy"):
        impl.AutomaticCallDistributor([Queue("q", strategy="sometimes")], [])
    with pytest.raises(ValueError, match="level 9"):
        impl.AutomaticCallDistributor([Queue("q", tiers=(Tier("a", level=9),))], agents("a"))
    with pytest.raises(KeyError):
        impl.AutomaticCallDistributor([Queue("q", tiers=(Tier("ghost"),))], [])
    acd = impl.AutomaticCallDistributor([queue(members=["a1"])], agents("a1"))
    with pytest.raises(KeyError):
        acd.handle_event(MemberJoined("c1", "nowhere"), 0.0)
    acd.handle_event(MemberJoined("c1", "sales"), 0.0)
    with pytest.raises(ValueError, match="already queued"):
        acd.handle_event(MemberJoined("c1", "sales"), 0.0)
    with pytest.raises(ValueError, match="priority"):
        acd.handle_event(MemberJoined("c2", "sales", priority=10**9), 0.0)


# --- differential: the same random streams into both ------------------------------------------------


def _random_setup(rng: random.Random):
    n_agents = rng.randint(1, 12)
    groups = ("inbound", "blended", "outbound")
    staff = [
        Agent(
            f"a{i}",
            phones=(f"a{i}",) if rng.random() < 0.9 else (f"a{i}", f"a{i}-soft"),
            skills={"fr": rng.randint(0, 5)},
            groups=(rng.choice(groups),),
            wrap_up=rng.choice([None, None, 0.0, 3.0]),
            max_no_answer=rng.choice([0, 1, 2, 3]),
            no_answer_delay=rng.choice([0.0, 2.0, 7.0]),
        )
        for i in range(n_agents)
    ]
    queues = []
    for qn in range(rng.randint(1, 4)):
        members = rng.sample(staff, rng.randint(0, n_agents))
        queues.append(Queue(
            f"q{qn}",
            strategy=rng.choice(STRATEGIES),
            tiers=tuple(Tier(a.id, level=rng.randint(1, 3), position=rng.randint(1, 3)) for a in members),
            groups=(GroupTier(rng.choice(groups), level=rng.randint(1, 4)),) if rng.random() < 0.5 else (),
            tier_wait=rng.choice([0.0, 5.0, 12.0]),
            vip_priority=rng.choice([None, 3]),
            skill=rng.choice([None, None, "fr"]),
            min_skill_level=rng.randint(0, 3),
            ring_timeout=rng.choice([4.0, 9.0]),
            wrap_up=rng.choice([0.0, 2.0, 6.0]),
            max_wait=rng.choice([0.0, 40.0, 90.0]),
            join_empty=rng.choice(["never", "never", NO_AGENTS, NO_AVAILABLE]),
            leave_when_empty=rng.choice(["never", NO_AGENTS, NO_AVAILABLE]),
            short_abandon=rng.choice([0.0, 5.0]),
        ))
    return queues, staff


def _random_event(rng, queues, staff, outstanding, members, counter):
    agent = rng.choice(staff).id
    roll = rng.random()
    if roll < 0.08:
        return rng.choice([AgentStatusChanged(agent, AVAILABLE), PhoneRegistered(agent)])
    if roll < 0.30:
        counter[0] += 1
        member = f"m{counter[0]}"
        members.append(member)
        return MemberJoined(member, rng.choice(queues).name, priority=rng.choice([0, 0, 1, 3, 5]))
    if roll < 0.50 and outstanding:
        offer = rng.choice(outstanding)
        return rng.choice([OfferAnswered, OfferAnswered, OfferRejected, NoAnswer])(offer.member, offer.agent)
    if roll < 0.55 and members:
        return MemberLeft(rng.choice(members))
    if roll < 0.70:
        return CallEnded(agent)
    if roll < 0.80:
        return AgentStatusChanged(agent, rng.choice([AVAILABLE, AVAILABLE, ON_BREAK, LOGGED_OUT]),
                                  rng.choice(["", "lunch"]))
    if roll < 0.90:
        phone = rng.choice([agent, agent + "-soft", "stranger"])
        return rng.choice([PhoneRegistered, PhoneRegistered, PhoneUnregistered])(phone)
    if roll < 0.95:
        return AgentCallStarted(agent)
    return OfferAnswered(rng.choice(members) if members else "m0", agent)  # mostly stale


def _snapshot(acd, queues, staff, now):
    return ([acd.queue_stats(q.name, now) for q in queues], [acd.agent_stats(a.id, now) for a in staff],
            acd.get_timer())


def _drive(seed: int, acds: list) -> set[str]:
    """Feed one seeded random stream (events and clock jumps) to every ACD in ``acds``; after each
    step assert they handed out the same outputs, and every few steps the same counters and next
    timer. Returns the kinds of output seen."""
    rng = random.Random(seed)
    queues, staff = _random_setup(rng)
    for n, impl in enumerate(acds):
        acds[n] = impl.AutomaticCallDistributor(queues, staff, seed=seed)
    now = 0.0
    outstanding: list[Offer] = []
    members: list[str] = []
    counter = [0]
    kinds: set[str] = set()
    for agent in staff:  # most agents start the stream logged in and reachable
        if rng.random() < 0.7:
            for acd in acds:
                acd.handle_event(AgentStatusChanged(agent.id, AVAILABLE), now)
                acd.handle_event(PhoneRegistered(agent.id), now)
    for step in range(600):
        if rng.random() < 0.3:
            now += rng.choice([0.0, 0.5, 1.0, 3.0, 10.0])
            for acd in acds:
                acd.handle_timer(now)
        else:
            event = _random_event(rng, queues, staff, outstanding, members, counter)
            for acd in acds:
                acd.handle_event(event, now)
        outs = []
        for acd in acds:
            out = []
            while (item := acd.next_output()) is not None:
                out.append(item)
            outs.append(out)
        assert all(out == outs[0] for out in outs), f"seed {seed} step {step}"
        for item in outs[0]:
            kinds.add(type(item).__name__)
            if isinstance(item, Offer):
                outstanding.append(item)
            elif isinstance(item, (OfferCancelled, OfferTimedOut)):
                outstanding[:] = [o for o in outstanding if (o.member, o.agent) != (item.member, item.agent)]
        if step % 10 == 0 or step == 599:
            snaps = [_snapshot(acd, queues, staff, now) for acd in acds]
            assert all(snap == snaps[0] for snap in snaps), f"seed {seed} step {step}"
    return kinds


@pytest.mark.parametrize("seed", range(150))
def test_differential_random_streams(seed):
    if IMPLEMENTATIONS["c"] is None:
        pytest.skip("core._acd is not built (python setup.py build_ext --inplace)")
    _drive(seed, [IMPLEMENTATIONS["py"], IMPLEMENTATIONS["c"]])


def test_differential_streams_reach_every_output_kind():
    """The random streams are worth something only if they drive every rule: across the seeds,
    every kind of output appears."""
    kinds = set()
    for seed in range(60):
        kinds |= _drive(seed, [IMPLEMENTATIONS["py"]])
    assert kinds == {"Offer", "OfferCancelled", "OfferTimedOut", "MemberExited", "AgentPaused"}


class _SameHash(str):
    """An id whose hash is shared by every other: every lookup walks one long run of collisions."""

    def __hash__(self):
        return 7


def _churn(impl, seed: int, make_id) -> tuple[list, list, list]:
    """Thousands of callers join and leave two ring-all and linear queues while agents answer and
    hang up; ids come from ``make_id`` (so their text and hashes vary). Returns every output, the
    final counters, and the errors raised by a duplicate join and by unknown names."""
    rng = random.Random(seed)
    staff = [Agent(make_id(f"agent-{i}"), phones=(f"p{i}",), max_no_answer=0) for i in range(40)]
    queues = [
        Queue(make_id("sales"), strategy=LINEAR, tiers=tuple(Tier(a.id) for a in staff[:20])),
        Queue(make_id("support"), strategy=RING_ALL, tiers=tuple(Tier(a.id) for a in staff[15:])),
    ]
    acd = impl.AutomaticCallDistributor(queues, staff, seed=seed)
    for i, agent in enumerate(staff):
        acd.handle_event(AgentStatusChanged(make_id(f"agent-{i}"), AVAILABLE), 0.0)  # equal, not identical
        acd.handle_event(PhoneRegistered(f"p{i}"), 0.0)
    outputs, waiting, offers, talking = [], [], [], []
    for step in range(6000):  # a rush (the queues grow past 2,000 callers), then they drain
        now = step * 0.1
        roll = rng.random()
        if roll < (0.8 if step < 3000 else 0.25) or not waiting:
            member = make_id(f"caller-{rng.randrange(8000)}")
            if member in waiting:
                continue
            waiting.append(member)
            event = MemberJoined(member, make_id(rng.choice(["sales", "support"])), rng.randint(0, 2))
        elif roll < 0.65:
            event = MemberLeft(waiting.pop(rng.randrange(len(waiting))))
        elif roll < 0.85 and offers:
            offer = offers.pop(rng.randrange(len(offers)))
            event = OfferAnswered(offer.member, offer.agent)
            talking.append(offer.agent)
        elif talking:
            event = CallEnded(talking.pop(rng.randrange(len(talking))))
        else:
            continue
        acd.handle_event(event, now)
        while (item := acd.next_output()) is not None:
            outputs.append(item)
            if isinstance(item, Offer):
                offers.append(item)
            elif isinstance(item, OfferCancelled):
                offers[:] = [o for o in offers if (o.member, o.agent) != (item.member, item.agent)]
        if isinstance(event, OfferAnswered) and event.member in waiting:
            waiting.remove(event.member)
    errors = []
    for bad in (lambda: acd.handle_event(MemberJoined(waiting[0], make_id("sales")), now),
                lambda: acd.handle_event(CallEnded(make_id("nobody")), now),
                lambda: acd.handle_event(MemberJoined(make_id("new caller"), make_id("no such queue")), now),
                lambda: acd.agent_stats(make_id("nobody"), now)):
        with pytest.raises((ValueError, KeyError)) as caught:
            bad()
        errors.append(type(caught.value))
    stats = [acd.queue_stats(q.name, now) for q in queues] + [acd.agent_stats(a.id, now) for a in staff]
    return outputs, stats, errors


@pytest.mark.parametrize("make_id", [
    lambda text: "".join(text),                      # short ASCII, equal but never the same object
    lambda text: f"{text}-with-a-name-longer-than-twenty-characters",
    lambda text: f"{text}-é",                        # not ASCII
    _SameHash,                                       # every id collides
], ids=["ascii", "long", "non-ascii", "colliding"])
def test_differential_member_churn_with_any_kind_of_id(make_id):
    """Callers come and go by the thousand (a member may come back under the same id): the C
    core's id tables must find, refuse and forget ids exactly as the twin's dicts do, whatever the
    ids look like."""
    if IMPLEMENTATIONS["c"] is None:
        pytest.skip("core._acd is not built (python setup.py build_ext --inplace)")
    py = _churn(IMPLEMENTATIONS["py"], 5, make_id)
    c = _churn(IMPLEMENTATIONS["c"], 5, make_id)
    assert len([o for o in py[0] if isinstance(o, Offer)]) > 500, "the churn must drive many offers"
    assert c == py
    assert py[2] == [ValueError, KeyError, KeyError, KeyError]


def test_a_reader_that_lags_gets_every_output_in_order(impl):
    """The call layer may take one output per step while ring-all queues produce dozens: nothing is
    lost or reordered however far behind it falls."""
    staff = agents(*[f"a{i}" for i in range(30)])
    desk = Desk(impl, [queue("hunt", [a.id for a in staff], strategy=RING_ALL)], staff)
    desk.ready(*[a.id for a in staff])
    acd = desk.acd
    taken = []
    for n in range(200):
        acd.handle_event(MemberJoined(f"m{n}", "hunt"), float(n))
        acd.handle_event(MemberLeft(f"m{n}"), float(n))  # 30 offers, then 30 cancellations
        taken.append(acd.next_output())
    taken += desk.drain()
    assert len(taken) == 200 * 60
    assert [type(o) for o in taken[:30]] == [Offer] * 30
    assert taken[-1] == OfferCancelled("m199", "a29", "hunt", "member_left")
    assert [o.member for o in taken] == [f"m{n}" for n in range(200) for _ in range(60)]
