"""The timer wheel: every timer of one worker (SIP timers A-M, 2xx retransmission, session and
registration expiry, campaign pacing) lives here, and the bindings re-arm a single OS timer at
``next_deadline()``.

A hashed timing wheel (Varghese & Lauck) with a coarse tick (10 ms by default): a timer is a small
handle dropped into the slot of its tick, so ``schedule`` and ``cancel`` are O(1) and 100,000 pending
timers cost one handle each. Slots only bucket timers for storage; a timer still fires at its exact
deadline (``pop_due(now)`` returns the items whose deadline is <= ``now``), so a fake clock in a test
sees RFC 3261's T1 doublings to the millisecond.

Layout. Ticks are absolute (``floor(deadline / tick)``) and grouped into rounds of ``slots // 2``
ticks. The wheel (``slots`` buckets) holds the timers of the current round and the next one; a
timer further out waits in an overflow bucket keyed by its round and moves into the wheel, once,
when the wheel reaches the round before it. Non-empty ticks are kept in a small heap (at most
``slots`` entries), which is what makes ``next_deadline`` cheap without walking empty slots.
The default 8,192 slots of 10 ms make rounds of 40.96 s, so the 64*T1 timers of RFC 3261 (32 s:
B, F, H, L, M, the 2xx give-up) go straight into their slot, not through the overflow.

Cancel is lazy: the handle is marked dead and dropped when its slot is next visited. A handle beyond
the wheel would wait for its round however far off (a call's 4-hour limit, cancelled when the call
ends a minute later): once as many handles have been cancelled as are pending, the overflow is swept
of its dead. The wheel is sans-IO like the rest of ``core``: it never reads a clock; ``now`` is always an argument.
"""
from __future__ import annotations

import heapq
import math
from typing import Any

from core.memory import untrack

# Cancels beyond the number of pending timers before the overflow is swept of its dead handles.
SWEEP_AFTER = 4096


class TimerHandle:
    """One pending timer, as returned by :meth:`TimerWheel.schedule`; pass it to ``cancel``."""

    __slots__ = ("deadline", "item", "alive")

    def __init__(self, deadline: float, item: Any):
        self.deadline = deadline
        self.item = item
        self.alive = True

    def __repr__(self) -> str:
        state = "" if self.alive else " cancelled"
        return f"<TimerHandle {self.deadline:.3f}{state} {self.item!r}>"


class TimerWheel:
    """Hashed timing wheel: ``schedule(deadline, item) -> handle``, ``cancel(handle)``,
    ``next_deadline()``, ``pop_due(now) -> [item, ...]`` (in deadline order)."""

    def __init__(self, tick: float = 0.01, slots: int = 8192, sweep_after: int = SWEEP_AFTER):
        if tick <= 0:
            raise ValueError("tick must be positive")
        if slots < 2 or slots & (slots - 1):
            raise ValueError("slots must be a power of two >= 2")
        self.tick = tick
        self._nslots = slots
        self._mask = slots - 1
        self._round_ticks = slots // 2
        self._slots: list[list[TimerHandle]] = [[] for _ in range(slots)]
        # Per slot: the handle with the smallest deadline put there (a lower bound once cancelled).
        self._slot_min: list[TimerHandle | None] = [None] * slots
        self._occupied: list[int] = []  # heap of absolute ticks whose slot is non-empty
        self._overflow: dict[int, list[TimerHandle]] = {}  # round -> handles beyond the wheel
        self._overflow_min: dict[int, float] = {}
        self._overflow_rounds: list[int] = []  # heap of the keys of _overflow
        self._cursor: int | None = None  # absolute tick: every earlier tick has been emptied
        self._live = 0
        self._cancelled = 0  # cancels since the overflow was last swept
        self._sweep_after = sweep_after

    def __len__(self) -> int:
        """The number of timers scheduled and neither fired nor cancelled."""
        return self._live

    # -- the face -------------------------------------------------------------------------------
    def schedule(self, deadline: float, item: Any) -> TimerHandle:
        """Arrange for ``item`` to come out of ``pop_due`` once ``now >= deadline``."""
        # Neither the handle nor its item is walked by the collector (core/memory.py): the handle
        # lets go of the item when it fires or is cancelled, and until then the wheel holds it.
        handle = untrack(TimerHandle(deadline, untrack(item)))
        self._live += 1
        # The usual case inline (a call schedules a dozen timers): a tick in the wheel's two rounds.
        # Anything else (the wheel not started, a deadline past or beyond) goes through ``_place``.
        cursor = self._cursor
        if cursor is not None:
            tick = math.floor(deadline / self.tick)
            if tick >= cursor and tick // self._round_ticks <= cursor // self._round_ticks + 1:
                index = tick & self._mask
                slot = self._slots[index]
                if not slot:
                    heapq.heappush(self._occupied, tick)
                    self._slot_min[index] = handle
                else:
                    first = self._slot_min[index]
                    if first is None or deadline < first.deadline:
                        self._slot_min[index] = handle
                slot.append(handle)
                return handle
        self._place(handle)
        return handle

    def cancel(self, handle: TimerHandle | None) -> None:
        """Forget a timer; cancelling one that fired or was cancelled already does nothing."""
        if handle is not None and handle.alive:
            handle.alive = False
            handle.item = None  # let go of what it referenced now, not when the slot is swept
            self._live -= 1
            self._cancelled += 1
            if self._cancelled > self._live + self._sweep_after and self._overflow:
                self._sweep_overflow()

    def next_deadline(self) -> float | None:
        """When ``pop_due`` has something to give next; None when no timer is pending.

        Never later than the earliest pending timer. After a cancel it may be earlier (the time of
        the cancelled timer when that sits in a crowded slot), which costs one empty wake-up.
        """
        if self._live == 0:
            return None
        best: float | None = None
        occupied = self._occupied
        while occupied:
            index = occupied[0] & self._mask
            slot = self._slots[index]
            first = self._slot_min[index]
            if first is not None and first.alive:
                best = first.deadline
                break
            if len(slot) <= 64:
                # Small slot: sweep the dead and find its true earliest deadline.
                live = [h for h in slot if h.alive]
                if live:
                    slot[:] = live
                    first = min(live, key=_deadline)
                    self._slot_min[index] = first
                    best = first.deadline
                    break
                slot.clear()
                self._slot_min[index] = None
                heapq.heappop(occupied)
                continue
            best = first.deadline if first is not None else None
            break
        if self._overflow_rounds:
            far = self._overflow_min[self._overflow_rounds[0]]
            if best is None or far < best:
                best = far
        return best

    def pop_due(self, now: float) -> list[Any]:
        """Remove and return the items of every timer with ``deadline <= now``, earliest first."""
        target = self._tick_of(now)
        if self._cursor is None:
            self._cursor = target
        due: list[TimerHandle] = []
        occupied = self._occupied
        slots = self._slots
        mask = self._mask
        # Timers scheduled in the past sit in the cursor's slot, which may be ahead of ``target``
        # when the first timers came in out of order before the first pop.
        limit = target if target > self._cursor else self._cursor
        while occupied and occupied[0] <= limit:
            tick = occupied[0]
            index = tick & mask
            slot = slots[index]
            if tick < target:
                heapq.heappop(occupied)
                due.extend(h for h in slot if h.alive)
                slot.clear()
                self._slot_min[index] = None
                continue
            # The tick ``now`` falls in (or the cursor's): take what is due, keep the rest.
            keep = []
            first = None
            for h in slot:
                if not h.alive:
                    continue
                if h.deadline <= now:
                    due.append(h)
                else:
                    keep.append(h)
                    if first is None or h.deadline < first.deadline:
                        first = h
            if keep:
                slot[:] = keep
                self._slot_min[index] = first
            else:
                heapq.heappop(occupied)
                slot.clear()
                self._slot_min[index] = None
            break
        if target > self._cursor:
            self._cursor = target
        self._pull_overflow(now, due)
        if not due:
            return []
        due.sort(key=_deadline)
        items = []
        for h in due:
            items.append(h.item)
            h.alive = False
            h.item = None
        self._live -= len(items)
        return items

    # -- internals ------------------------------------------------------------------------------
    def _tick_of(self, t: float) -> int:
        return math.floor(t / self.tick)

    def _place(self, handle: TimerHandle) -> None:
        tick = self._tick_of(handle.deadline)
        cursor = self._cursor
        if cursor is None:
            # Nothing has run yet: the first timer sets where the wheel stands.
            cursor = self._cursor = tick
        elif tick < cursor:
            tick = cursor  # already due: the current tick's slot will hand it out
        rnd = tick // self._round_ticks
        if rnd > cursor // self._round_ticks + 1:
            bucket = self._overflow.get(rnd)
            if bucket is None:
                self._overflow[rnd] = [handle]
                self._overflow_min[rnd] = handle.deadline
                heapq.heappush(self._overflow_rounds, rnd)
            else:
                bucket.append(handle)
                if handle.deadline < self._overflow_min[rnd]:
                    self._overflow_min[rnd] = handle.deadline
            return
        index = tick & self._mask
        slot = self._slots[index]
        if not slot:
            heapq.heappush(self._occupied, tick)
            self._slot_min[index] = handle
        else:
            first = self._slot_min[index]
            if first is None or handle.deadline < first.deadline:
                self._slot_min[index] = handle
        slot.append(handle)

    def _sweep_overflow(self) -> None:
        # Amortised O(1) a cancel: a sweep walks at most the pending handles and the cancelled ones,
        # and comes only after more cancels than there are pending handles.
        self._cancelled = 0
        overflow, lows = self._overflow, self._overflow_min
        for rnd in list(overflow):
            live = [h for h in overflow[rnd] if h.alive]
            if live:
                overflow[rnd] = live
                lows[rnd] = min(h.deadline for h in live)
            else:
                del overflow[rnd], lows[rnd]
        self._overflow_rounds = list(overflow)
        heapq.heapify(self._overflow_rounds)

    def _pull_overflow(self, now: float, due: list[TimerHandle]) -> None:
        # Move every round the wheel now covers (the cursor's round and the next) into the wheel;
        # whatever in them is already due goes straight out.
        horizon = self._cursor // self._round_ticks + 1
        rounds = self._overflow_rounds
        while rounds and rounds[0] <= horizon:
            rnd = heapq.heappop(rounds)
            bucket = self._overflow.pop(rnd)
            del self._overflow_min[rnd]
            for h in bucket:
                if not h.alive:
                    continue
                if h.deadline <= now:
                    due.append(h)
                else:
                    self._place(h)


def _deadline(handle: TimerHandle) -> float:
    return handle.deadline
