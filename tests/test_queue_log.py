"""The queue log's own arithmetic: counters recomputed from entries, and each agent's logged-in and
available time per interval (the inputs of occupancy), from hand-built entries."""
from __future__ import annotations

import pytest

from core.acd.log import QueueLogEntry as E
from core.acd.log import agent_times, decode, encode, log_key, recompute


def test_entries_round_trip_and_keys_sort_in_time_order():
    a, b = E(at=10.5, kind="join", queue="q", member="m1"), E(at=9.0, kind="status", agent="x", reason="available")
    assert decode(encode(a)) == a
    assert sorted([log_key(a, 0), log_key(b, 1)]) == [log_key(b, 1), log_key(a, 0)]


def test_counters_from_the_log():
    log = [
        E(at=0, kind="join", queue="q", member="1"), E(at=1, kind="join", queue="q", member="2"),
        E(at=2, kind="join", queue="q", member="3"), E(at=3, kind="join", queue="q", member="4"),
        E(at=4, kind="join", queue="other", member="5"),
        E(at=10, kind="answer", queue="q", member="1", agent="a", wait=10.0),
        E(at=31, kind="answer", queue="q", member="2", agent="b", wait=30.0),
        E(at=5, kind="abandon", queue="q", member="3", wait=3.0, position=1),
        E(at=3.5, kind="exit", queue="q", member="4", reason="join_empty"),
    ]
    c = recompute(log, "q", service_level=20.0, short_abandon=5.0)
    assert (c.offered, c.answered, c.short_abandoned, c.abandoned, c.refused) == (3, 2, 1, 0, 1)
    assert c.answered_in_service_level == 1 and c.average_speed_of_answer == pytest.approx(20.0)


def test_agent_time_splits_by_interval_and_takes_talk_and_wrap_up_out_of_available():
    log = [
        E(at=100, kind="status", agent="a", reason="available"),
        E(at=1000, kind="talk_end", agent="a", wait=300.0, detail="60"),  # busy 700..1060
        E(at=1500, kind="status", agent="a", reason="on_break", detail="lunch"),
        E(at=2000, kind="status", agent="a", reason="available"),
        E(at=2500, kind="status", agent="a", reason="logged_out"),
    ]
    t = agent_times(log, 900, end=3600)
    # [0, 900): logged in 100..900 = 800 s, available 100..700 = 600 s
    assert t[("a", 0)] == pytest.approx((800.0, 600.0))
    # [900, 1800): logged in 900..1800 = 900 s; available 1060..1500 = 440 s (break is logged in, not available)
    assert t[("a", 900)] == pytest.approx((900.0, 440.0))
    # [1800, 2700): logged in 1800..2500 = 700 s; available 2000..2500 = 500 s
    assert t[("a", 1800)] == pytest.approx((700.0, 500.0))
    assert ("a", 2700) not in t
