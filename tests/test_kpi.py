"""Call records and the KPIs computed from them (core/cdr/record.py, core/cdr/kpi.py, docs/kpis.md).

The first part builds one quarter-hour of a small call centre by hand — six inbound calls on a carrier trunk
into the queue "sales", five outbound campaign attempts on another trunk, one more inbound call in the next
quarter — and checks every KPI against numbers worked out by hand in the comments. The second part checks
that the live path (one record at a time, in any order) and the historical path (a batch as numpy columns,
from records or from their stored bytes) give identical counters on a random set.
"""
from __future__ import annotations

import bisect
import math
import random

import msgspec
import numpy as np
import pytest

from core.cdr.kpi import Columns, KpiBook, KpiConfig, decode_views
from core.cdr.record import (
    CallRecord,
    Direction,
    Disposition,
    HangupBy,
    Leg,
    QueueOutcome,
    QueueSegment,
    decode,
    encode,
    key_range,
    record_key,
    split_key,
)

T0 = 1_700_000_100.0  # 1,888,889 × 900: the start of a quarter-hour
IN, OUT = Direction.INBOUND, Direction.OUTBOUND
D, Q = Disposition, QueueOutcome


def inbound(call_id, offered, *, disposition=D.ANSWERED, answered=None, ended, segments=()):
    return CallRecord(call_id=call_id, direction=IN, offered=T0 + offered, ended=T0 + ended,
                      disposition=disposition, node="n1", trunk="carrier-a",
                      answered=None if answered is None else T0 + answered, queue_segments=tuple(segments))


def seg(queue, joined, left, outcome, *, offered=(), by="", agent_ended=None, acw=0.0):
    return QueueSegment(queue=queue, joined=T0 + joined, left=T0 + left, outcome=outcome,
                        agents_offered=tuple(offered), answered_by=by,
                        agent_ended=None if agent_ended is None else T0 + agent_ended, after_call_work=acw)


def outbound(call_id, offered, *, disposition, ended, pdd=None, answered=None, segments=()):
    return CallRecord(call_id=call_id, direction=OUT, offered=T0 + offered, ended=T0 + ended,
                      disposition=disposition, node="n1", trunk="carrier-b", campaign_id="spring",
                      contact_id=f"contact-{call_id}", post_dial_delay=pdd,
                      answered=None if answered is None else T0 + answered, queue_segments=tuple(segments))


HAND_BUILT = [
    # R1: answered by the switch after 1 s, waits 10 s, alice answers, talks 180 s, 30 s of wrap-up.
    inbound("r1", 0, answered=1, ended=192,
            segments=[seg("sales", 2, 12, Q.ANSWERED, offered=["alice"], by="alice", agent_ended=192, acw=30)]),
    # R2: waits 30 s (over T = 20 s); bob does not answer, alice does; talks until the call ends at 392.
    inbound("r2", 60, answered=61, ended=392,
            segments=[seg("sales", 62, 92, Q.ANSWERED, offered=["bob", "alice"], by="alice")]),
    # R3: hangs up after 3 s in the queue: a short abandon (< 5 s), and within T.
    inbound("r3", 120, answered=121, ended=125, segments=[seg("sales", 122, 125, Q.ABANDONED)]),
    # R4: hangs up after 40 s in the queue.
    inbound("r4", 200, answered=201, ended=242, segments=[seg("sales", 202, 242, Q.ABANDONED)]),
    # R5: refused for lack of a channel (503): call loss; never seized a channel.
    inbound("r5", 300, disposition=D.REFUSED_NO_CHANNEL, ended=300),
    # R6: the queue's maximum wait (60 s) runs out; the call leaves through the exit at 470.
    inbound("r6", 400, answered=401, ended=470, segments=[seg("sales", 402, 462, Q.TIMEOUT)]),
    # R7: next quarter-hour; waits 5 s, bob answers, talks 100 s.
    inbound("r7", 910, answered=911, ended=1017,
            segments=[seg("sales", 912, 917, Q.ANSWERED, offered=["bob"], by="bob", agent_ended=1017)]),
    # O1: the campaign's one live answer: rings after 2.5 s, answered at 20 s, carol answers 1 s later.
    outbound("o1", 10, disposition=D.ANSWERED, answered=20, ended=141, pdd=2.5,
             segments=[seg("spring-agents", 20, 21, Q.ANSWERED, offered=["carol"], by="carol",
                           agent_ended=141)]),
    outbound("o2", 30, disposition=D.BUSY, ended=33, pdd=1.5),
    outbound("o3", 40, disposition=D.NO_ANSWER, ended=70, pdd=3.0),
    outbound("o4", 50, disposition=D.FAILED, ended=51),
    outbound("o5", 55, disposition=D.REFUSED_NO_CHANNEL, ended=55),
]


@pytest.fixture(params=["live", "columns", "stored"])
def book(request) -> KpiBook:
    """The hand-built quarter-hour through each of the three paths; every KPI test runs on all three."""
    config = KpiConfig(interval=900, answer_within=20.0, short_abandon=5.0)
    if request.param == "live":
        b = KpiBook(config)
        for record in HAND_BUILT:
            b.add(record)
    elif request.param == "columns":
        b = KpiBook.from_records(HAND_BUILT, config)
    else:
        b = KpiBook(config)
        b.add_columns(Columns.from_encoded([encode(r) for r in HAND_BUILT]))
    b.add_agent_time("alice", T0, logged_in=900.0, available=300.0)
    return b


def test_inbound_trunk_connect_rate_loss_asr(book):
    f = book.figures("trunk", "carrier-a", T0)
    # R1-R6 offered in the first quarter (R7 is in the next); R1, R2, R3, R4, R6 answered by the switch.
    assert f.calls == 6
    assert f.connect_rate_inbound == pytest.approx(5 / 6)
    assert f.connect_rate_outbound is None  # no outbound attempt on this trunk
    # One refused for lack of a channel: call loss 1/6.
    assert f.call_loss_rate == pytest.approx(1 / 6)
    # Seizures = 6 − 1 refused = 5, all five answered: ASR = NER = 1.
    assert f.answer_seizure_ratio == pytest.approx(1.0)
    assert f.network_effectiveness_ratio == pytest.approx(1.0)
    # Connect time 1 s each; durations 191 + 331 + 4 + 41 + 69 = 636 s over 5 answered calls.
    assert f.average_connect_time == pytest.approx(1.0)
    assert f.average_call_duration == pytest.approx(636 / 5)
    assert f.post_dial_delay is None


def test_outbound_trunk_asr_ner_pdd(book):
    f = book.figures("trunk", "carrier-b", T0)
    # 5 attempts, 1 answered: connect rate 0.2; 1 refused for lack of channel: loss 0.2.
    assert f.connect_rate_outbound == pytest.approx(0.2)
    assert f.call_loss_rate == pytest.approx(0.2)
    # Seizures 4: ASR = 1/4; NER counts answered + busy + no-answer = 3/4 (the failure is the network's).
    assert f.answer_seizure_ratio == pytest.approx(0.25)
    assert f.network_effectiveness_ratio == pytest.approx(0.75)
    # PDD over the three attempts that rang: (2.5 + 1.5 + 3.0) / 3.
    assert f.post_dial_delay == pytest.approx(7 / 3)
    assert f.average_connect_time == pytest.approx(10.0)
    assert f.average_call_duration == pytest.approx(121.0)


def test_queue_service_level_three_ways_and_abandonment(book):
    f = book.figures("queue", "sales", T0)
    # Queued: R1 (10 s, answered), R2 (30 s, answered), R3 (3 s, abandoned), R4 (40 s, abandoned),
    # R6 (60 s, timeout). Answered within 20 s: R1 only. Abandoned within 20 s: R3.
    assert f.queued == 5
    assert f.queue_answer_rate == pytest.approx(2 / 5)
    assert f.service_level == pytest.approx(1 / 5)  # abandons counted against: 1 / 5
    assert f.service_level_ignoring_abandons == pytest.approx(1 / 3)  # 1 / (5 − 2 abandoned)
    assert f.service_level_abandons_met == pytest.approx(2 / 5)  # (1 + 1 abandoned within T) / 5
    assert f.abandonment_rate == pytest.approx(2 / 5)
    assert f.abandonment_rate_excluding_short == pytest.approx(1 / 4)  # (2 − 1 short) / (5 − 1 short)
    assert f.average_speed_of_answer == pytest.approx(20.0)  # (10 + 30) / 2
    assert f.average_queue_time == pytest.approx(143 / 5)  # (10 + 30 + 3 + 40 + 60) / 5
    assert f.average_time_to_abandon == pytest.approx(21.5)  # (3 + 40) / 2
    # Handle: R1 180 s talk + 30 s wrap-up = 210; R2 talks 392 − 92 = 300 → AHT 255 s.
    assert f.average_handle_time == pytest.approx(255.0)
    nxt = book.figures("queue", "sales", T0 + 900)
    assert (nxt.queued, nxt.service_level, nxt.average_speed_of_answer) == (1, 1.0, pytest.approx(5.0))


def test_agent_occupancy_utilisation_and_answer_rate(book):
    alice = book.figures("agent", "alice", T0)
    # Alice handled R1 (210 s) and R2 (300 s): 510 s; logged in 900 s of which 300 s available.
    assert alice.average_handle_time == pytest.approx(255.0)
    assert alice.occupancy == pytest.approx(510 / (510 + 300))
    assert alice.utilisation == pytest.approx(510 / 900)
    assert alice.agent_answer_rate == pytest.approx(1.0)  # rung twice, answered twice
    bob = book.figures("agent", "bob", T0)
    assert bob.agent_answer_rate == 0.0  # rung once (R2), did not answer
    assert bob.occupancy is None  # no logged-in time handed in
    assert book.figures("agent", "bob", T0 + 900).average_handle_time == pytest.approx(100.0)


def test_campaign_and_node(book):
    camp = book.figures("campaign", "spring", T0)
    assert camp.calls == 5 and camp.connect_rate_outbound == pytest.approx(0.2)
    assert (camp.queued, camp.service_level, camp.average_speed_of_answer) == (1, 1.0, pytest.approx(1.0))
    node = book.figures("node", "n1", T0)
    # 6 inbound + 5 outbound; 2 refused of 11: loss 2/11; queued 5 (sales) + 1 (spring-agents).
    assert node.calls == 11
    assert node.call_loss_rate == pytest.approx(2 / 11)
    assert node.queued == 6
    assert node.service_level == pytest.approx(2 / 6)  # R1 and O1 within 20 s


def test_rollup_to_an_hour_adds_the_quarters(book):
    hour = book.rollup(3600)
    f = hour.figures("queue", "sales", T0)
    # 5 + 1 queued, answered within T: R1 and R7.
    assert (f.queued, f.service_level) == (6, pytest.approx(2 / 6))
    with pytest.raises(ValueError):
        book.rollup(1000)


def test_report_lists_every_queue_interval(book):
    report = book.report("queue")
    assert set(report) == {("sales", int(T0)), ("sales", int(T0) + 900), ("spring-agents", int(T0))}
    with pytest.raises(ValueError):
        book.report("region")


# --------------------------------------------------------------------------------------------- records


def full_record() -> CallRecord:
    leg = Leg(leg_id="a", peer="sip:+4930123@carrier-a", offered=T0, ringing=T0 + 0.2, answered=T0 + 1,
              ended=T0 + 192, disposition=D.ANSWERED, sip_status=200, codec="PCMA",
              packets_received=9500, packets_lost=12, jitter_ms=3.5, mos=4.2)
    return CallRecord(call_id="abc@host", direction=IN, offered=T0, ended=T0 + 192, disposition=D.ANSWERED,
                      caller="+4930123", callee="+4930999", node="n1", trunk="carrier-a", answered=T0 + 1,
                      hangup_by=HangupBy.CALLEE, legs=(leg,), queue_segments=HAND_BUILT[0].queue_segments,
                      dtmf="12#", recording="rec/abc.wav", post_dial_delay=0.2)


def test_record_round_trips_and_is_an_array():
    record = full_record()
    data = encode(record)
    assert decode(data) == record
    assert isinstance(msgspec.msgpack.decode(data), list)  # array_like: no field names on disk
    with pytest.raises(AttributeError):
        record.ended = 0.0  # frozen


def test_record_written_by_an_older_version_still_decodes():
    # An older writer knew only the first fields; the newer ones take their defaults.
    old = msgspec.msgpack.encode(["old@host", "inbound", T0, T0 + 5, "abandoned", "+49301", "+49302"])
    record = decode(old)
    assert (record.call_id, record.disposition, record.callee) == ("old@host", D.ABANDONED, "+49302")
    assert record.queue_segments == () and record.post_dial_delay is None and record.campaign_id == ""


def test_keys_sort_by_end_time_and_a_range_is_one_scan():
    rng = random.Random(7)
    records = [CallRecord(call_id=f"c{i}", direction=IN, offered=T0, ended=T0 + rng.uniform(0, 7200),
                          disposition=D.ANSWERED) for i in range(500)]
    keys = sorted(record_key(r) for r in records)
    ends_in_key_order = [split_key(k)[0] for k in keys]
    assert ends_in_key_order == sorted(math.floor(r.ended * 1000) for r in records)
    lo, hi = key_range(T0 + 1800, T0 + 3600)
    scanned = {split_key(k)[1] for k in keys[bisect.bisect_left(keys, lo):bisect.bisect_left(keys, hi)]}
    assert scanned == {r.call_id for r in records if T0 + 1800 <= r.ended < T0 + 3600}


def test_kpi_view_reads_the_stored_record_without_its_legs():
    record = full_record()
    (view,) = decode_views([encode(record)])
    assert (view.call_id, view.offered, view.answered, view.trunk) == (record.call_id, record.offered,
                                                                      record.answered, record.trunk)
    assert view.queue_segments[0].answered_by == "alice"


# --------------------------------------------------------------------------------------------- live == historical


def synthetic_records(n: int, seed: int, start: float = T0, span: float = 86_400.0) -> list[CallRecord]:
    """``n`` varied records over ``span`` seconds: both directions, every disposition, 0-2 queue segments,
    ring-no-answers, wrap-up, missing times. Times carry sub-millisecond fractions so that rounding to
    milliseconds is exercised. Also used by bench/bench_kpi.py."""
    rng = np.random.default_rng(seed)
    offered = start + np.sort(rng.uniform(0.0, span, n))
    outbound_ = rng.random(n) < 0.3
    disp_codes = rng.choice(len(Disposition), size=n, p=[0.7, 0.05, 0.06, 0.02, 0.03, 0.03, 0.06, 0.04, 0.01])
    connect = rng.exponential(3.0, n)
    wait = rng.exponential(25.0, n)
    talk = rng.exponential(180.0, n)
    acw = np.where(rng.random(n) < 0.5, rng.uniform(0, 60, n), 0.0)
    nseg = rng.choice(3, size=n, p=[0.3, 0.6, 0.1])
    outcome_codes = rng.choice(len(QueueOutcome), size=n, p=[0.75, 0.15, 0.04, 0.03, 0.01, 0.01, 0.01])
    queue_ix = rng.integers(0, 8, n)
    agent_ix = rng.integers(0, 40, n)
    rings = rng.integers(0, 3, n)
    pdd = np.where(outbound_ & (rng.random(n) < 0.8), rng.uniform(0.5, 6.0, n), np.nan)
    dispositions = tuple(Disposition)
    outcomes = tuple(QueueOutcome)
    records = []
    for i in range(n):
        off = float(offered[i])
        disp = dispositions[disp_codes[i]]
        answered = off + float(connect[i]) if disp is D.ANSWERED else None
        segs = []
        t = answered if answered is not None else off
        if disp is D.ANSWERED:
            for k in range(int(nseg[i])):
                last = k == nseg[i] - 1
                outcome = outcomes[outcome_codes[i]] if last else Q.OVERFLOW
                left = t + float(wait[i]) / (k + 1)
                agents = tuple(f"agent{(agent_ix[i] + r) % 40}" for r in range(int(rings[i])))
                by = ""
                agent_end = None
                if outcome is Q.ANSWERED:
                    by = f"agent{agent_ix[i]}"
                    agents = agents + (by,)
                    agent_end = left + float(talk[i]) if i % 4 else None
                segs.append(QueueSegment(queue=f"q{(queue_ix[i] + k) % 8}", joined=t, left=left, outcome=outcome,
                                         agents_offered=agents, answered_by=by, agent_ended=agent_end,
                                         after_call_work=float(acw[i]) if by else 0.0))
                t = left
        ended = t + float(talk[i]) if disp is D.ANSWERED else off + float(connect[i])
        direction = OUT if outbound_[i] else IN
        records.append(CallRecord(
            call_id=f"call-{seed}-{i}", direction=direction, offered=off, ended=ended, disposition=disp,
            node=f"node{i % 2}", trunk=f"trunk{i % 5}" if i % 7 else "", answered=answered,
            queue_segments=tuple(segs), campaign_id=f"camp{i % 3}" if direction is OUT else "",
            post_dial_delay=None if math.isnan(pdd[i]) else float(pdd[i])))
    return records


@pytest.mark.parametrize("interval", [900, 1800, 3600])
def test_live_counters_equal_the_historical_report(interval):
    records = synthetic_records(3000, seed=interval)
    config = KpiConfig(interval=interval, answer_within=20.0, short_abandon=5.0)
    live = KpiBook(config)
    arrival = records[:]
    random.Random(interval).shuffle(arrival)  # calls end in another order than they started
    for record in arrival:
        live.add(record)
    historical = KpiBook.from_records(records, config)
    stored = KpiBook(config)
    half = len(records) // 2  # two scans, as a report over two time ranges would read them
    stored.add_columns(Columns.from_encoded([encode(r) for r in records[:half]]))
    stored.add_columns(Columns.from_encoded([encode(r) for r in records[half:]]))
    assert live == historical == stored
    # A queue-only book (what the queue report reads: no per-call columns, no agents) agrees too.
    queue_only = KpiBook(config, dimensions=("queue",))
    queue_only.add_encoded([encode(r) for r in records])
    assert queue_only.report("queue") == live.report("queue")
    # And the figures a manager sees, per dimension, are the same numbers, not merely close.
    for dim in ("node", "trunk", "queue", "agent", "campaign"):
        assert live.report(dim) == historical.report(dim)
        assert live.report(dim), f"no {dim} in the random set"


def test_fifteen_minute_books_roll_up_to_the_hour_book():
    records = synthetic_records(2000, seed=3)
    quarter = KpiBook.from_records(records, KpiConfig(interval=900))
    hour = KpiBook.from_records(records, KpiConfig(interval=3600))
    # Agent facts are binned by their own time, and an hour is whole quarters: the sums must agree.
    assert quarter.rollup(3600) == hour


def test_figures_without_calls_are_none_not_zero():
    f = KpiBook().figures("queue", "nobody")
    assert f.queued == 0 and f.service_level is None and f.average_speed_of_answer is None
