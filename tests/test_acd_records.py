"""The ACD's records face (``handle_records`` / ``take_records``): the same events as plain int
records, in batches, the form a ring between worker processes and the ACD's owner carries.

Both implementations (core/_acd.pyx and its twin core/acd/_pyacd.py) are driven through it and
through the Struct face with the same streams, and must hand out the same outputs, in the same
order, with the same counters: a batch of records is exactly those events one by one.
"""

from __future__ import annotations

import random
from array import array

import pytest

from core.acd import IMPLEMENTATIONS
from core.acd.model import (
    AVAILABLE, LINEAR, NO_ID, ON_BREAK, RANDOM, REASONS, RECORD_WORDS, RING_ALL, STATUSES, Agent,
    AgentCallStarted, AgentPaused, AgentStatusChanged, CallEnded, MemberExited, MemberJoined,
    MemberLeft, NoAnswer, Offer, OfferAnswered, OfferCancelled, OfferRejected, OfferTimedOut,
    PhoneRegistered, PhoneUnregistered, Queue, Tier,
)
from tests.test_acd import _random_event, _random_setup, _snapshot

IMPLS = ["py", "c"]


def _module(name):
    module = IMPLEMENTATIONS[name]
    if module is None:
        pytest.skip("core._acd is not built (python setup.py build_ext --inplace)")
    return module


@pytest.fixture(params=IMPLS)
def impl(request):
    return _module(request.param)


class Numbering:
    """Agents, queues and phones by their index in the configuration (core.acd.model, records)."""

    def __init__(self, queues, agents):
        self.agents = {agent.id: i for i, agent in enumerate(agents)}
        self.agent_ids = [agent.id for agent in agents]
        self.queues = {queue.name: i for i, queue in enumerate(queues)}
        self.queue_names = [queue.name for queue in queues]
        self.phones: dict[str, int] = {}
        for agent in agents:
            for phone in agent.phones:
                self.phones.setdefault(phone, len(self.phones))

    def record(self, event) -> tuple | None:
        """The record of a Struct event, or None when it has no record (a break with a reason)."""
        kind = type(event).kind
        if isinstance(event, MemberJoined):
            return (kind, event.member, NO_ID, self.queues[event.queue], event.priority)
        if isinstance(event, MemberLeft):
            return (kind, event.member, NO_ID, NO_ID, NO_ID)
        if isinstance(event, (OfferAnswered, OfferRejected, NoAnswer)):
            return (kind, event.member, self.agents[event.agent], NO_ID, NO_ID)
        if isinstance(event, (CallEnded, AgentCallStarted)):
            return (kind, NO_ID, self.agents[event.agent], NO_ID, NO_ID)
        if isinstance(event, AgentStatusChanged):
            if event.status == ON_BREAK and event.reason:
                return None
            return (kind, NO_ID, self.agents[event.agent], NO_ID, STATUSES.index(event.status))
        assert isinstance(event, (PhoneRegistered, PhoneUnregistered))
        return (kind, NO_ID, NO_ID, NO_ID, self.phones.get(event.phone, len(self.phones) + 7))

    def output(self, item) -> tuple:
        """The record of an output Struct."""
        if isinstance(item, (Offer, OfferTimedOut)):
            return (item.kind, item.member, self.agents[item.agent], self.queues[item.queue], 0)
        if isinstance(item, OfferCancelled):
            return (item.kind, item.member, self.agents[item.agent], self.queues[item.queue],
                    REASONS.index(item.reason))
        if isinstance(item, MemberExited):
            return (item.kind, item.member, NO_ID, self.queues[item.queue], REASONS.index(item.reason))
        assert isinstance(item, AgentPaused)
        return (item.kind, NO_ID, self.agents[item.agent], NO_ID, REASONS.index(item.reason))


def records(rows) -> array:
    return array("q", [word for row in rows for word in row])


def take_all(acd, room: int = 64) -> list[tuple]:
    """Every output waiting, as records, taken ``room`` at a time."""
    taken = []
    out = array("q", bytes(8 * RECORD_WORDS * room))
    for _ in range(100_000):
        n = acd.take_records(out)
        taken += [tuple(out[i:i + RECORD_WORDS]) for i in range(0, n * RECORD_WORDS, RECORD_WORDS)]
        if n < room:
            return taken
    raise AssertionError("the outputs never ran out")


def drain(acd) -> list:
    out = []
    while (item := acd.next_output()) is not None:
        out.append(item)
    return out


def _int_ids(event):
    """The same event with its member named by an int (m17 -> 17): records carry ints."""
    member = getattr(event, "member", None)
    if isinstance(member, str):
        fields = {f: getattr(event, f) for f in event.__struct_fields__}
        fields["member"] = int(member[1:])
        return type(event)(**fields)
    return event


def _drive(seed: int) -> tuple[set[int], int]:
    """One seeded random stream into four ACDs: each implementation through Structs (one event at
    a time, next_output) and through records (batches of up to 8 events at one instant,
    take_records, the events a record cannot carry as Structs in between). After each batch the
    four must have handed out the same outputs, and every few steps the same counters."""
    rng = random.Random(seed)
    queues, staff = _random_setup(rng)
    numbering = Numbering(queues, staff)
    py, c = _module("py"), _module("c")
    by_struct = [impl.AutomaticCallDistributor(queues, staff, seed=seed) for impl in (py, c)]
    by_record = [impl.AutomaticCallDistributor(queues, staff, seed=seed) for impl in (py, c)]
    now = 0.0
    outstanding: list[Offer] = []
    members: list[str] = []
    counter = [0]
    kinds: set[int] = set()
    pending: list[tuple] = []      # records not yet handed to the record-fed ACDs
    seen = [[], []]                # outputs so far: Struct-fed (as records), record-fed
    batches = 0

    def flush():
        nonlocal batches
        if pending:
            batch = records(pending)
            for acd in by_record:
                acd.handle_records(batch, now)
            pending.clear()
            batches += 1
        outs = [take_all(acd, room=rng.choice([1, 3, 64])) for acd in by_record]
        assert outs[0] == outs[1], f"seed {seed}: the two implementations differ on records"
        seen[1].extend(outs[0])
        assert seen[0] == seen[1], f"seed {seed}: records and Structs differ"

    for agent in staff:
        if rng.random() < 0.7:
            for event in (AgentStatusChanged(agent.id, AVAILABLE), PhoneRegistered(agent.id)):
                for acd in by_struct:
                    acd.handle_event(event, now)
                pending.append(numbering.record(event))
    for step in range(400):
        if rng.random() < 0.3:
            flush()
            now += rng.choice([0.0, 0.5, 1.0, 3.0, 10.0])
            for acd in by_struct + by_record:
                acd.handle_timer(now)
        else:
            event = _int_ids(_random_event(rng, queues, staff, outstanding, members, counter))
            record = numbering.record(event)
            if record is None:  # a break with a reason: a Struct event on the record-fed ACDs too
                flush()
                for acd in by_record:
                    acd.handle_event(event, now)
            else:
                pending.append(record)
            for acd in by_struct:
                acd.handle_event(event, now)
        outs = [drain(acd) for acd in by_struct]
        assert outs[0] == outs[1], f"seed {seed} step {step}: the two implementations differ"
        seen[0].extend(numbering.output(item) for item in outs[0])
        for item in outs[0]:
            kinds.add(item.kind)
            if isinstance(item, Offer):
                outstanding.append(item)
            elif isinstance(item, (OfferCancelled, OfferTimedOut)):
                outstanding[:] = [o for o in outstanding if (o.member, o.agent) != (item.member, item.agent)]
        if len(pending) >= 8 or rng.random() < 0.2:
            flush()
        if step % 25 == 0:
            flush()
            snaps = [_snapshot(acd, queues, staff, now) for acd in by_struct + by_record]
            assert all(snap == snaps[0] for snap in snaps), f"seed {seed} step {step}"
    flush()
    return kinds, batches


@pytest.mark.parametrize("seed", range(80))
def test_records_and_structs_agree_on_random_streams(seed):
    _drive(seed)


def test_record_streams_reach_every_output_kind_in_real_batches():
    """The streams are worth something only if they drive every rule through batches of several
    events: across the seeds every kind of output is seen."""
    kinds, batches = set(), 0
    for seed in range(30):
        seen, n = _drive(seed)
        kinds |= seen
        batches += n
    assert kinds == {Offer.kind, OfferCancelled.kind, OfferTimedOut.kind, MemberExited.kind, AgentPaused.kind}
    assert batches > 30 * 20


def _desk(impl, strategy=LINEAR, n=3):
    staff = [Agent(f"a{i}", phones=(f"a{i}",), max_no_answer=0) for i in range(n)]
    queues = [Queue("sales", strategy=strategy, tiers=tuple(Tier(a.id) for a in staff))]
    acd = impl.AutomaticCallDistributor(queues, staff)
    acd.handle_records(records(
        [(AgentStatusChanged.kind, NO_ID, i, NO_ID, STATUSES.index(AVAILABLE)) for i in range(n)]
        + [(PhoneRegistered.kind, NO_ID, NO_ID, NO_ID, i) for i in range(n)]
    ), 0.0)
    return acd


def test_a_batch_of_callers_goes_to_free_agents_in_order(impl):
    acd = _desk(impl)
    acd.handle_records(records([(MemberJoined.kind, 100 + m, NO_ID, 0, 0) for m in range(4)]), 1.0)
    assert take_all(acd) == [(Offer.kind, 100 + i, i, 0, 0) for i in range(3)], "the fourth waits"
    acd.handle_records(records([(OfferAnswered.kind, 100, 0, NO_ID, NO_ID),
                                (CallEnded.kind, NO_ID, 0, NO_ID, NO_ID)]), 2.0)
    assert take_all(acd) == [(Offer.kind, 103, 0, 0, 0)], "the agent freed takes the caller who waited"
    assert acd.queue_stats("sales", 2.0).answered == 1


def test_an_int_member_is_the_same_member_in_records_and_structs(impl):
    acd = _desk(impl)
    acd.handle_records(records([(MemberJoined.kind, 7, NO_ID, 0, 0)]), 1.0)
    assert acd.next_output() == Offer(7, "a0", "sales")
    acd.handle_event(MemberLeft(7), 2.0)
    assert take_all(acd) == [(OfferCancelled.kind, 7, 0, 0, REASONS.index("member_left"))]
    acd.handle_event(MemberJoined(8, "sales"), 3.0)
    with pytest.raises(ValueError):  # 8 is queued (by its Struct): the record cannot queue it again
        acd.handle_records(records([(MemberJoined.kind, 8, NO_ID, 0, 0)]), 3.0)


def test_a_reader_with_little_room_takes_outputs_in_order_and_the_rest_as_structs(impl):
    acd = _desk(impl, strategy=RING_ALL, n=5)
    acd.handle_records(records([(MemberJoined.kind, 1, NO_ID, 0, 0),
                                (MemberLeft.kind, 1, NO_ID, NO_ID, NO_ID)]), 1.0)
    out = array("q", bytes(8 * RECORD_WORDS * 3))
    assert acd.take_records(out) == 3
    assert [out[i] for i in range(0, 15, 5)] == [Offer.kind] * 3
    assert acd.take_records(bytearray(8 * RECORD_WORDS - 1)) == 0, "no room for one record"
    rest = drain(acd)
    assert rest == [Offer(1, "a3", "sales"), Offer(1, "a4", "sales")] + [
        OfferCancelled(1, f"a{i}", "sales", "member_left") for i in range(5)]


def test_an_output_about_a_named_member_stays_for_next_output(impl):
    acd = _desk(impl)
    acd.handle_event(MemberJoined("call-1@switch", "sales"), 1.0)
    with pytest.raises(TypeError):
        acd.take_records(array("q", bytes(8 * RECORD_WORDS)))
    assert acd.next_output() == Offer("call-1@switch", "a0", "sales")


def test_bad_records_are_refused_and_those_before_them_are_applied(impl):
    acd = _desk(impl)
    with pytest.raises(ValueError):
        acd.handle_records(bytes(8 * RECORD_WORDS + 8), 1.0)  # not whole records
    with pytest.raises(KeyError):
        acd.handle_records(records([(MemberJoined.kind, 1, NO_ID, 0, 0),
                                    (CallEnded.kind, NO_ID, 3, NO_ID, NO_ID)]), 1.0)
    assert take_all(acd) == [(Offer.kind, 1, 0, 0, 0)]
    with pytest.raises(KeyError):
        acd.handle_records(records([(MemberJoined.kind, 2, NO_ID, -1, 0)]), 1.0)
    with pytest.raises(ValueError):
        acd.handle_records(records([(AgentStatusChanged.kind, NO_ID, 1, NO_ID, len(STATUSES))]), 1.0)
    with pytest.raises(TypeError):
        acd.handle_records(records([(Offer.kind, 1, 0, 0, 0)]), 1.0)  # an output is not an input
    acd.handle_records(records([(PhoneUnregistered.kind, NO_ID, NO_ID, NO_ID, 99)]), 1.0)  # no such phone
    assert take_all(acd) == []


@pytest.mark.parametrize("strategy", [RANDOM, RING_ALL, LINEAR])
def test_large_pools_give_the_same_picks_in_both(strategy):
    """Pools wider than one 64-bit word (150 agents): the random pick's bit selection, ring-all
    and linear's scans cross words; callers come and go in batches."""
    py, c = _module("py"), _module("c")
    acds = [_desk(impl, strategy=strategy, n=150) for impl in (py, c)]
    rng = random.Random(3)
    member = 0
    ringing: list[tuple] = []
    for step in range(300):
        rows, answered = [], []
        for _ in range(rng.randint(1, 12)):
            member += 1
            rows.append((MemberJoined.kind, member, NO_ID, 0, rng.randint(0, 2)))
        batch = records(rows)
        outs = []
        for acd in acds:
            acd.handle_records(batch, float(step))
            outs.append(take_all(acd, room=rng.choice([5, 400])))
        assert outs[0] == outs[1], f"step {step}"
        ringing += [o for o in outs[0] if o[0] == Offer.kind]
        answered, rejected = {}, []
        for kind, m, agent, _queue, _reason in ringing:
            if kind == Offer.kind:
                if m not in answered and rng.random() < 0.7:
                    answered[m] = agent
                else:  # rung but declined: the agent rests, the caller goes to the next one
                    rejected.append((OfferRejected.kind, m, agent, NO_ID, NO_ID))
        end = records([(OfferAnswered.kind, m, a, NO_ID, NO_ID) for m, a in answered.items()]
                      + rejected + [(CallEnded.kind, NO_ID, a, NO_ID, NO_ID) for a in answered.values()])
        outs = []
        for acd in acds:
            acd.handle_records(end, float(step) + 0.5)
            acd.handle_timer(float(step) + 0.9)
            outs.append(take_all(acd))
        assert outs[0] == outs[1], f"step {step}"
        ringing = [o for o in outs[0] if o[0] == Offer.kind]  # the declined callers' next agents
    stats = [acd.queue_stats("sales", 400.0) for acd in acds]
    assert stats[0] == stats[1]
    assert stats[0].answered > 0.9 * stats[0].offered, "the callers are served: the test drove matches"
