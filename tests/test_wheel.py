"""The timer wheel: timers fire at their deadline, in order, once; cancel works; far timers wait."""
import heapq
import random
import tracemalloc

import pytest

from core.scheduler.wheel import TimerWheel


def test_a_timer_fires_at_its_deadline_not_before():
    wheel = TimerWheel()
    wheel.schedule(100.5, "A")
    assert wheel.pop_due(100.0) == []
    assert wheel.pop_due(100.499) == []
    assert wheel.pop_due(100.5) == ["A"]
    assert wheel.pop_due(200.0) == []  # once only
    assert len(wheel) == 0


def test_due_items_come_out_earliest_first_even_within_one_tick():
    wheel = TimerWheel(tick=0.01)
    wheel.schedule(10.009, "late")
    wheel.schedule(10.001, "early")
    wheel.schedule(9.5, "earlier")
    assert wheel.pop_due(10.02) == ["earlier", "early", "late"]


def test_next_deadline_is_the_earliest_pending_timer():
    wheel = TimerWheel()
    assert wheel.next_deadline() is None
    wheel.schedule(5.0, "x")
    h = wheel.schedule(3.25, "y")
    assert wheel.next_deadline() == 3.25
    wheel.cancel(h)
    assert wheel.next_deadline() == 5.0
    wheel.pop_due(5.0)
    assert wheel.next_deadline() is None


def test_cancelled_timer_never_fires_and_cancel_twice_is_harmless():
    wheel = TimerWheel()
    h = wheel.schedule(1.0, "gone")
    wheel.schedule(1.0, "kept")
    wheel.cancel(h)
    wheel.cancel(h)
    wheel.cancel(None)
    assert len(wheel) == 1
    assert wheel.pop_due(2.0) == ["kept"]


def test_far_timers_wait_in_overflow_and_fire_on_time():
    wheel = TimerWheel(tick=0.01, slots=256)  # the wheel spans 2.56 s; 3600 s is far beyond
    wheel.pop_due(0.0)
    wheel.schedule(3600.0, "registration expiry")
    wheel.schedule(0.5, "timer A")
    assert wheel.next_deadline() == 0.5
    assert wheel.pop_due(0.5) == ["timer A"]
    assert wheel.next_deadline() == 3600.0
    now = 0.5
    fired = []
    while now < 3599.0:  # walk the clock in 1.7 s steps: the far timer must not fire early
        now += 1.7
        fired += wheel.pop_due(min(now, 3599.99))
    assert fired == []
    assert wheel.pop_due(3600.0) == ["registration expiry"]


def test_timer_in_the_past_fires_on_the_next_pop():
    wheel = TimerWheel()
    wheel.pop_due(50.0)
    wheel.schedule(10.0, "late")
    assert wheel.next_deadline() == 10.0
    assert wheel.pop_due(50.0) == ["late"]


def test_out_of_order_timers_before_the_first_pop():
    wheel = TimerWheel()
    wheel.schedule(10.0, "b")
    wheel.schedule(5.0, "a")
    assert wheel.next_deadline() == 5.0
    assert wheel.pop_due(6.0) == ["a"]
    assert wheel.pop_due(10.0) == ["b"]


def test_a_large_jump_of_the_clock_fires_everything_in_between():
    wheel = TimerWheel(tick=0.01, slots=64)
    wheel.pop_due(0.0)
    for i in range(1000):
        wheel.schedule(i * 0.37, i)
    assert wheel.pop_due(1000.0) == list(range(1000))


@pytest.mark.parametrize("sweep_after", [4096, 0])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_schedules_and_cancels_match_a_heap(seed, sweep_after):
    """Differential check against the simplest correct scheduler (a heap), with a fake clock; with
    ``sweep_after=0`` the overflow is swept of cancelled timers at nearly every cancel."""
    rng = random.Random(seed)
    wheel = TimerWheel(tick=0.01, slots=128, sweep_after=sweep_after)
    model: list[tuple[float, int]] = []
    cancelled: set[int] = set()
    handles = {}
    now = 1000.0
    wheel.pop_due(now)
    fired_wheel, fired_model = [], []
    for n in range(20_000):
        r = rng.random()
        if r < 0.5:
            deadline = now + rng.choice([rng.uniform(0, 0.05), rng.uniform(0, 5), rng.uniform(0, 60)])
            handles[n] = wheel.schedule(deadline, n)
            heapq.heappush(model, (deadline, n))
        elif r < 0.65 and handles:
            key = rng.choice(list(handles))
            wheel.cancel(handles.pop(key))
            cancelled.add(key)
        else:
            expected = wheel.next_deadline()
            live = [d for d, k in model if k not in cancelled]
            if live:
                # Never later than the earliest live timer (earlier only after a cancel).
                assert expected is not None and expected <= min(live)
            else:
                assert expected is None
            now += rng.choice([0.0, 0.003, 0.02, 0.7, 3.0])
            fired_wheel += wheel.pop_due(now)
            while model and model[0][0] <= now:
                _, k = heapq.heappop(model)
                if k not in cancelled:
                    fired_model.append(k)
                    handles.pop(k, None)
    assert fired_wheel == fired_model
    assert len(wheel) == len([k for _, k in model if k not in cancelled])


def test_timers_scheduled_once_running_keep_order_and_next_deadline_in_any_slot():
    # Once the wheel runs, schedule files a timer itself: into an empty slot, ahead of a later
    # timer in its slot, or behind an earlier one; 32 s (64*T1) lands in the wheel, not the overflow.
    wheel = TimerWheel()
    wheel.pop_due(100.0)
    wheel.schedule(100.508, "late in slot")
    assert wheel.next_deadline() == 100.508
    wheel.schedule(100.501, "early in slot")
    assert wheel.next_deadline() == 100.501
    wheel.schedule(100.505, "middle")
    wheel.schedule(132.0, "64*T1")
    assert wheel._overflow == {}
    assert wheel.pop_due(100.506) == ["early in slot", "middle"]
    assert wheel.next_deadline() == 100.508
    assert wheel.pop_due(131.999) == ["late in slot"]
    assert wheel.next_deadline() == 132.0
    assert wheel.pop_due(132.0) == ["64*T1"] and len(wheel) == 0


def test_cancelled_far_timers_do_not_pile_up_in_memory():
    # A call's 4-hour limit is cancelled when the call ends: 100,000 calls must not leave 100,000
    # dead handles waiting four hours for their round.
    wheel = TimerWheel()
    wheel.pop_due(1000.0)
    keep = [wheel.schedule(1000.0 + 3600 * (1 + i), ("kept", i)) for i in range(3)]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(100_000):
            wheel.cancel(wheel.schedule(1000.0 + 4 * 3600 + i * 0.001, ("call", i)))
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 1_000_000  # 100,000 handles kept would be several megabytes
    assert len(wheel) == 3
    assert wheel.next_deadline() == pytest.approx(4600.0)
    assert wheel.pop_due(1000.0 + 5 * 3600) == [("kept", 0), ("kept", 1), ("kept", 2)]
    assert wheel.next_deadline() is None
    del keep
