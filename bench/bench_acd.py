"""Matching speed of the two ACD implementations (core/_acd.pyx and its Python twin).

Run:  python -m pytest bench/bench_acd.py --benchmark-enable
      (add --benchmark-json=acd.json to keep the figures; the "c" and "py" rows of one group, from
      the same run, give the ratio)
Target (the issue "ACD: agents, queues, strategies, overflow between groups"): with 10,000 agents
across 100 queues and 100,000 waiting members, an agent becoming free is matched to the right
member, and a new member to the right free agent, in under 5 µs median on one core with the
Cython core, and at least 20 times the twin.

The call centre: agent i serves queue i % 100 at tier level 1 and a neighbouring queue of the same
half at level 2 (every level open at once), so a match looks at two queues and two levels.
* "agent free": all 10,000 agents are talking and 100,000 callers wait (1,000 per queue, priorities
  0-2); one round is one CallEnded → the Offer to the first caller the agent may serve. Between
  rounds (not timed) the offer is answered and a new caller joins, so the queues stay full.
* "member joins": callers 0-49 hold the 100,000 waiting callers with their agents talking; the
  5,000 agents of queues 50-99 are free; one round is one MemberJoined in a staffed queue → the
  Offer to the agent the queue's strategy picks (ring-all: to every free agent of the queue).
  Between rounds the call is answered and ended, so the agent is free again.
Each round's outputs are checked: one round that matched nothing would be a wrong figure.

The same two cases again through the records face (``handle_records`` / ``take_records``, the plain
int form a ring between processes carries; callers are int tokens): one round is a batch of
BATCH events in one buffer and the outputs taken into another, so the per-event figure is the
round's median / BATCH (``per_event_us`` in the extra info). Ring-all: a batch of RING_ALL_BATCH
callers in queues that share no agent, each ringing its 200 free agents.
"""

from __future__ import annotations

import itertools
import random
from array import array

import pytest

from core.acd import IMPLEMENTATIONS
from core.acd.model import (
    AVAILABLE, LONGEST_IDLE_AGENT, RING_ALL, STRATEGIES, Agent, AgentCallStarted, AgentStatusChanged,
    CallEnded, MemberJoined, Offer, OfferAnswered, PhoneRegistered, Queue, RECORD_WORDS, Tier,
)

IMPLS = [name for name, impl in IMPLEMENTATIONS.items() if impl is not None]
N_AGENTS = 10_000
N_QUEUES = 100
N_MEMBERS = 100_000
ROUNDS = {"c": 20_000, "py": 2_000}
BATCH = 100
RING_ALL_BATCH = 10
BATCH_ROUNDS = {"c": 2_000, "py": 200}


def call_centre(impl: str, strategy: str):
    """The ACD with its agents in their queues, every agent available with a registered phone."""
    half = N_QUEUES // 2
    tiers: list[list[Tier]] = [[] for _ in range(N_QUEUES)]
    staff = []
    for i in range(N_AGENTS):
        agent = f"agent{i}"
        staff.append(Agent(agent, phones=(agent,), skills={"support": 1 + i % 10}, max_no_answer=0))
        q = i % N_QUEUES
        tiers[q].append(Tier(agent, level=1, position=i // N_QUEUES))
        neighbour = (q + 1) % half + (q // half) * half
        tiers[neighbour].append(Tier(agent, level=2, position=i // N_QUEUES))
    queues = [
        Queue(f"q{n}", strategy=strategy, tiers=tuple(tiers[n]), skill="support", ring_timeout=3600.0)
        for n in range(N_QUEUES)
    ]
    acd = IMPLEMENTATIONS[impl].AutomaticCallDistributor(queues, staff, seed=1)
    for agent in staff:
        acd.handle_event(AgentStatusChanged(agent.id, AVAILABLE), 0.0)
        acd.handle_event(PhoneRegistered(agent.id), 0.0)
    return acd


def drain(acd) -> list:
    out = []
    while (item := acd.next_output()) is not None:
        out.append(item)
    return out


def fill(acd, queues: range, rng: random.Random, ids) -> None:
    """100,000 callers waiting in ``queues``, whose agents are all made busy first."""
    for i in range(N_AGENTS):
        if i % N_QUEUES in queues:
            acd.handle_event(AgentCallStarted(f"agent{i}"), 0.0)
    for n in range(N_MEMBERS):
        acd.handle_event(MemberJoined(next(ids), f"q{rng.choice(queues)}", rng.randint(0, 2)), n * 1e-5)
    assert drain(acd) == [], "the waiting callers must find every agent of their queues busy"


@pytest.mark.parametrize("impl", IMPLS)
def test_agent_free_matched_to_member(benchmark, impl):
    benchmark.group = "agent becomes free → first waiting member (10k agents, 100 queues, 100k waiting)"
    rng = random.Random(1)
    ids = (f"m{n}" for n in itertools.count())
    acd = call_centre(impl, LONGEST_IDLE_AGENT)
    fill(acd, range(N_QUEUES), rng, ids)
    agents = itertools.cycle(f"agent{i}" for i in rng.sample(range(N_AGENTS), N_AGENTS))
    clock = itertools.count(1)
    last: list = []
    freed: list[str] = []
    matched = [0]

    def setup():
        now = 1.0 + next(clock) * 1e-3
        for offer in last:  # the previous round's offer is answered; a new caller takes its place
            matched[0] += isinstance(offer, Offer) and offer.agent == freed[-1]
            acd.handle_event(OfferAnswered(offer.member, offer.agent), now)
            acd.handle_event(MemberJoined(next(ids), f"q{rng.randrange(N_QUEUES)}", rng.randint(0, 2)), now)
        last.clear()
        freed.append(next(agents))
        return (CallEnded(freed[-1]), now), {}

    def agent_free(event, now):
        acd.handle_event(event, now)
        last.append(acd.next_output())

    rounds = ROUNDS[impl]
    benchmark.pedantic(agent_free, setup=setup, rounds=rounds, warmup_rounds=100)
    setup()
    assert matched[0] == rounds + 100, "every freed agent must be offered a waiting caller"


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_member_matched_to_free_agent(benchmark, impl, strategy):
    benchmark.group = f"member joins → free agent by {strategy} (10k agents, 100 queues, 100k waiting)"
    rng = random.Random(2)
    ids = (f"m{n}" for n in itertools.count())
    acd = call_centre(impl, strategy)
    fill(acd, range(N_QUEUES // 2), rng, ids)
    clock = itertools.count(1)
    last: list = []
    matched = [0]

    def setup():
        now = 1.0 + next(clock) * 1e-3
        offers = [o for o in last if isinstance(o, Offer)]
        matched[0] += bool(offers)
        if offers:  # answer the first offer (ring-all: the others are cancelled) and hang up
            acd.handle_event(OfferAnswered(offers[0].member, offers[0].agent), now)
            acd.handle_event(CallEnded(offers[0].agent), now)
            drain(acd)
        last.clear()
        queue = f"q{N_QUEUES // 2 + rng.randrange(N_QUEUES // 2)}"
        return (MemberJoined(next(ids), queue), now), {}

    def member_joins(event, now):
        acd.handle_event(event, now)
        last.extend(drain(acd))

    rounds = ROUNDS[impl] // (10 if strategy == RING_ALL else 1)
    benchmark.pedantic(member_joins, setup=setup, rounds=rounds, warmup_rounds=10)
    assert matched[0] >= rounds, "every new caller must be offered to a free agent"
    benchmark.extra_info["offers_per_round"] = len([o for o in last if isinstance(o, Offer)])


# --- the harness floor ----------------------------------------------------------------------------
# What a round costs with an ACD that does nothing: the same round code as above (the timer, the
# call of the round, handle_event, next_output until None), around a stand-in whose handle_event
# and next_output are C builtins handing back outputs prepared before the round. The figures above
# include this floor on both sides, so the ratio c/py can never exceed py / floor, however fast the
# core: read the target's ratio against it.


class _Idle:
    """Stands in for the ACD: accepts the event, hands back ``outputs`` then None."""

    def prepare(self, outputs: list) -> None:
        self.handle_event = {}.get  # a C call taking (event, now) and doing nothing
        self.next_output = iter([*outputs, None]).__next__


def test_harness_floor_agent_free(benchmark):
    benchmark.group = "harness floor: agent becomes free (one output, no ACD work)"
    acd = _Idle()
    offer = Offer("m1", "agent1", "q1")
    last: list = []

    def setup():
        last.clear()
        acd.prepare([offer])
        return (CallEnded("agent1"), 1.0), {}

    def agent_free(event, now):
        acd.handle_event(event, now)
        last.append(acd.next_output())

    benchmark.pedantic(agent_free, setup=setup, rounds=ROUNDS["c"], warmup_rounds=100)
    assert last == [offer]


@pytest.mark.parametrize("offers", [1, 200], ids=["one offer", "ring-all 200 offers"])
def test_harness_floor_member_joins(benchmark, offers):
    benchmark.group = f"harness floor: member joins ({offers} output(s), no ACD work)"
    acd = _Idle()
    outputs = [Offer("m1", f"agent{i}", "q1") for i in range(offers)]
    last: list = []

    def setup():
        last.clear()
        acd.prepare(outputs)
        return (MemberJoined("m1", "q1"), 1.0), {}

    def member_joins(event, now):
        acd.handle_event(event, now)
        last.extend(drain(acd))

    benchmark.pedantic(member_joins, setup=setup, rounds=ROUNDS["c"] // (10 if offers > 1 else 1), warmup_rounds=10)
    assert last == outputs


# --- the records face: batches of plain int events -----------------------------------------------

JOINED, ANSWERED, CALL_ENDED = MemberJoined.kind, OfferAnswered.kind, CallEnded.kind
NO = -1


def records(rows) -> array:
    """One buffer of records from (kind, member, agent, queue, value) rows."""
    return array("q", [word for row in rows for word in row])


def take(acd, room: int) -> list[tuple]:
    """The outputs waiting, as (kind, member, agent, queue, reason) tuples."""
    out = array("q", bytes(8 * RECORD_WORDS * room))
    n = acd.take_records(out)
    return [tuple(out[i:i + RECORD_WORDS]) for i in range(0, n * RECORD_WORDS, RECORD_WORDS)]


def per_event(benchmark, batch: int) -> None:
    benchmark.extra_info["batch"] = batch
    benchmark.extra_info["per_event_us"] = benchmark.stats.stats.median / batch * 1e6


@pytest.mark.parametrize("impl", IMPLS)
def test_records_agent_free_matched_to_member(benchmark, impl):
    benchmark.group = f"records: {BATCH} agents become free → first waiting members (one batch)"
    rng = random.Random(1)
    tokens = itertools.count()
    acd = call_centre(impl, LONGEST_IDLE_AGENT)
    fill(acd, range(N_QUEUES), rng, tokens)  # int ids: the callers are tokens
    order = rng.sample(range(N_AGENTS), N_AGENTS)
    agents = itertools.cycle(order)
    clock = itertools.count(1)
    out = array("q", bytes(8 * RECORD_WORDS * BATCH))
    freed: list[list[int]] = []
    taken: list[int] = []
    matched = [0]

    def setup():
        now = 1.0 + next(clock) * 1e-3
        if taken:  # the previous batch's offers are answered; as many new callers join
            n = taken.pop()
            offers = [tuple(out[i:i + RECORD_WORDS]) for i in range(0, n * RECORD_WORDS, RECORD_WORDS)]
            matched[0] += [(o[0], o[2]) for o in offers] == [(Offer.kind, a) for a in freed[-1]]
            acd.handle_records(records(
                [(ANSWERED, o[1], o[2], NO, NO) for o in offers]
                + [(JOINED, next(tokens), NO, rng.randrange(N_QUEUES), rng.randint(0, 2)) for _ in offers]
            ), now)
            assert take(acd, 1) == [], "every agent is talking: the new callers wait"
        freed.append([next(agents) for _ in range(BATCH)])
        return (records([(CALL_ENDED, NO, a, NO, NO) for a in freed[-1]]), now), {}

    def agents_free(batch, now):
        acd.handle_records(batch, now)
        taken.append(acd.take_records(out))

    rounds = BATCH_ROUNDS[impl]
    benchmark.pedantic(agents_free, setup=setup, rounds=rounds, warmup_rounds=10)
    setup()
    assert matched[0] == rounds + 10, "every freed agent must be offered a waiting caller"
    per_event(benchmark, BATCH)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_records_member_matched_to_free_agent(benchmark, impl, strategy):
    batch = RING_ALL_BATCH if strategy == RING_ALL else BATCH
    benchmark.group = f"records: {batch} members join → free agents by {strategy} (one batch)"
    rng = random.Random(2)
    tokens = itertools.count()
    acd = call_centre(impl, strategy)
    fill(acd, range(N_QUEUES // 2), rng, tokens)
    clock = itertools.count(1)
    out = array("q", bytes(8 * RECORD_WORDS * batch * 2 * N_AGENTS // N_QUEUES))
    taken: list[int] = []
    joined: list[list[int]] = []
    matched = [0]
    half = N_QUEUES // 2

    def setup():
        now = 1.0 + next(clock) * 1e-3
        if taken:  # answer each caller's first offer (ring-all: the others are cancelled), hang up
            n = taken.pop()
            first = {}
            for i in range(0, n * RECORD_WORDS, RECORD_WORDS):
                if out[i] == Offer.kind:
                    first.setdefault(out[i + 1], out[i + 2])
            matched[0] += sorted(first) == sorted(joined[-1])
            acd.handle_records(records(
                [(ANSWERED, m, a, NO, NO) for m, a in first.items()]
                + [(CALL_ENDED, NO, a, NO, NO) for a in first.values()]
            ), now)
            take(acd, len(out) // RECORD_WORDS)
        if strategy == RING_ALL:  # queues two apart share no agent (a level 2 is the left neighbour's)
            start = rng.randrange(half)
            queues = [half + (start + 2 * k) % half for k in range(batch)]
        else:
            queues = [half + rng.randrange(half) for _ in range(batch)]
        joined.append([next(tokens) for _ in queues])
        return (records([(JOINED, m, NO, q, 0) for m, q in zip(joined[-1], queues)]), now), {}

    def members_join(batch_records, now):
        acd.handle_records(batch_records, now)
        taken.append(acd.take_records(out))

    rounds = BATCH_ROUNDS[impl] // (10 if strategy == RING_ALL else 1)
    benchmark.pedantic(members_join, setup=setup, rounds=rounds, warmup_rounds=10)
    benchmark.extra_info["offers_per_batch"] = taken[-1]
    setup()
    assert matched[0] == rounds + 10, "every new caller must be offered to a free agent"
    per_event(benchmark, batch)
