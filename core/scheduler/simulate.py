"""The campaign simulator: a campaign's real pacing code (``core.scheduler.pacing.Pacer``) on a fake clock
against a simulated population of agents and called parties.

A discrete-event simulation (a heap of timed events). Every agent is logged in from the start and free.
Each dialled call is drawn once: with ``answer_probability`` a live person answers after a ring time from
``ring``; a ring time beyond ``ring_cap`` (the no-answer timer) counts as no answer, and so does a call
not drawn to answer, which fails when the timer runs out; with ``busy_probability`` the line is busy after
``busy_after`` seconds. A live answer goes to the agent idle longest; with none free it waits, and takes
the first agent who frees up. The pacer owns the 2-second rule: an answer still waiting at its deadline
is abandoned by ``Pacer.handle_timer`` (the simulator hangs it up, as the call layer would after the
message). An agent who takes a call is busy for a handle time (talk + wrap-up) drawn from ``handle``.

Draws come from two streams spawned from the Generator passed in: one for the called parties (the i-th
call dialled), one for the handle times (the i-th call connected). Runs of different modes with the
same seed meet the same people in the same order, so their figures are paired.

Figures (``SimulationResult``): calls attempted, live answers, connects, abandons, abandon rate
(abandons / resolved live answers), occupancy (handle time / logged-in time over the run), connects
per agent-hour.
"""
from __future__ import annotations

import heapq
import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from core.scheduler.pacing import (
    AgentBusy, AgentFree, CallAbandoned, CallAnswered, CallConnected, CallDialled, CallFailed, Pacer,
    PacingConfig,
)

__all__ = ["Distribution", "Population", "SimulationResult", "simulate", "clairvoyant_baseline"]

DISTRIBUTIONS = ("gamma", "lognormal", "exponential", "fixed", "empirical")


@dataclass(frozen=True)
class Distribution:
    """A positive random duration in seconds: gamma (``mean``, ``shape``), lognormal (``mean``, ``sd``),
    exponential (``mean``), fixed (``mean``), or empirical (resampled from ``samples``)."""

    kind: str
    mean: float = 0.0
    sd: float = 0.0
    shape: float = 1.0
    samples: tuple[float, ...] = ()

    def __post_init__(self):
        if self.kind not in DISTRIBUTIONS:
            raise ValueError(f"distribution kind must be one of {', '.join(DISTRIBUTIONS)}, not {self.kind!r}")
        if self.kind == "empirical":
            if not self.samples or min(self.samples) < 0:
                raise ValueError("an empirical distribution needs samples, none negative")
        elif self.mean <= 0:
            raise ValueError(f"a {self.kind} distribution needs a positive mean")
        if self.kind == "lognormal" and self.sd <= 0:
            raise ValueError("a lognormal distribution needs a positive sd")
        if self.kind == "gamma" and self.shape <= 0:
            raise ValueError("a gamma distribution needs a positive shape")

    @classmethod
    def gamma(cls, mean: float, shape: float = 2.0) -> Distribution:
        return cls("gamma", mean=mean, shape=shape)

    @classmethod
    def lognormal(cls, mean: float, sd: float) -> Distribution:
        return cls("lognormal", mean=mean, sd=sd)

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        if self.kind == "gamma":
            return rng.gamma(self.shape, self.mean / self.shape, size)
        if self.kind == "lognormal":
            # The underlying normal's parameters from the mean and s.d. of the log-normal itself.
            sigma2 = math.log1p((self.sd / self.mean) ** 2)
            return rng.lognormal(math.log(self.mean) - sigma2 / 2, math.sqrt(sigma2), size)
        if self.kind == "exponential":
            return rng.exponential(self.mean, size)
        if self.kind == "fixed":
            return np.full(size, self.mean)
        return rng.choice(np.asarray(self.samples, dtype=float), size)


@dataclass(frozen=True)
class Population:
    """The agents and the people a campaign calls."""

    agents: int = 20
    answer_probability: float = 0.30
    ring: Distribution = field(default_factory=lambda: Distribution.gamma(8.0, 2.0))
    ring_cap: float = 20.0
    handle: Distribution = field(default_factory=lambda: Distribution.lognormal(150.0, 100.0))
    busy_probability: float = 0.0
    busy_after: float = 3.0

    def __post_init__(self):
        if self.agents < 1:
            raise ValueError("agents must be at least 1")
        if not 0 <= self.answer_probability <= 1 or not 0 <= self.busy_probability <= 1:
            raise ValueError("probabilities must be between 0 and 1")
        if self.answer_probability + self.busy_probability > 1:
            raise ValueError("answer_probability + busy_probability must not exceed 1")
        if self.ring_cap <= 0 or self.busy_after < 0:
            raise ValueError("ring_cap must be positive and busy_after not negative")


@dataclass(frozen=True)
class SimulationResult:
    mode: str
    agents: int
    duration: float
    attempted: int
    answered: int
    connected: int
    abandoned: int
    occupancy: float
    max_in_flight: int
    fallbacks: int
    abandons: tuple[CallAbandoned, ...] = ()

    @property
    def abandon_rate(self) -> float:
        resolved = self.connected + self.abandoned
        return self.abandoned / resolved if resolved else 0.0

    @property
    def connects_per_agent_hour(self) -> float:
        return self.connected / (self.agents * self.duration / 3600.0)


# Event kinds, in the order they are handled when they fall at the same time: an agent freeing up at
# the very moment an answer's 2 s run out still takes it.
_AGENT_FREE, _ANSWER, _FAIL, _PACER_TIMER, _TICK = range(5)


class _Draws:
    """Draws of one stream, made a block at a time."""

    def __init__(self, draw, block: int = 4096):
        self._draw, self._block = draw, block
        self._buf: list = []
        self._i = 0

    def next(self):
        if self._i >= len(self._buf):
            self._buf = self._draw(self._block)
            self._i = 0
        self._i += 1
        return self._buf[self._i - 1]


def simulate(
    population: Population,
    config: PacingConfig,
    duration: float,
    rng: np.random.Generator,
    tick: float = 1.0,
) -> SimulationResult:
    """Run one campaign for ``duration`` simulated seconds with ``config``'s pacing."""
    pop = population
    pacer = Pacer(config)
    call_rng, handle_rng = rng.spawn(2)

    def draw_calls(n):
        u = call_rng.random(n)
        ring = pop.ring.sample(call_rng, n)
        return list(zip(u.tolist(), ring.tolist()))

    calls = _Draws(draw_calls)
    handles = _Draws(lambda n: pop.handle.sample(handle_rng, n).tolist())

    heap: list = []
    seq = 0

    def push(when, kind, what=None):
        nonlocal seq
        seq += 1
        heapq.heappush(heap, (when, kind, seq, what))

    free: deque[int] = deque(range(pop.agents))  # idle agents, longest idle first
    waiting: dict[int, float] = {}  # answered calls without an agent, in answer order
    busy_since: dict[int, float] = {}
    busy_time = 0.0
    attempted = connected = abandoned = answered = max_in_flight = 0
    abandons: list[CallAbandoned] = []
    timer_at: float | None = None
    next_call = 0

    for agent in range(pop.agents):
        pacer.handle(AgentFree(agent), 0.0)

    def connect(call: int, agent: int, now: float) -> None:
        nonlocal connected
        connected += 1
        pacer.handle(CallConnected(call, agent), now)
        pacer.handle(AgentBusy(agent), now)
        busy_since[agent] = now
        push(now + handles.next(), _AGENT_FREE, agent)

    answer_cut = pop.answer_probability
    busy_cut = answer_cut + pop.busy_probability
    now = 0.0
    push(0.0, _TICK)
    while heap:
        now, kind, _, what = heapq.heappop(heap)
        if now > duration:
            break
        if kind == _AGENT_FREE:
            busy_time += now - busy_since.pop(what)
            pacer.handle(AgentFree(what), now)
            if waiting:
                call = next(iter(waiting))
                del waiting[call]
                connect(call, what, now)
            else:
                free.append(what)
        elif kind == _ANSWER:
            answered += 1
            pacer.handle(CallAnswered(what), now)
            if free:
                connect(what, free.popleft(), now)
            else:
                waiting[what] = now
        elif kind == _FAIL:
            pacer.handle(CallFailed(what[0], what[1]), now)
        elif kind == _PACER_TIMER:
            timer_at = None
            pacer.handle_timer(now)
            while (event := pacer.next_event()) is not None:
                waiting.pop(event.call, None)  # the message plays and the call is hung up
                abandoned += 1
                abandons.append(event)
        elif kind == _TICK:
            push(now + tick, _TICK)
        # Handle everything else due at this instant before deciding.
        if heap and heap[0][0] == now:
            continue
        deadline = pacer.get_timer()
        if deadline is not None and (timer_at is None or deadline < timer_at):
            timer_at = deadline
            push(deadline, _PACER_TIMER)
        for _ in range(pacer.decide(now)):
            call = next_call
            next_call += 1
            attempted += 1
            pacer.handle(CallDialled(call), now)
            u, ring = calls.next()
            if u < answer_cut and ring <= pop.ring_cap:
                push(now + ring, _ANSWER, call)
            elif u < answer_cut or u >= busy_cut:
                push(now + pop.ring_cap, _FAIL, (call, "no-answer"))
            else:
                push(now + pop.busy_after, _FAIL, (call, "busy"))
        max_in_flight = max(max_in_flight, pacer.in_flight)

    busy_time += sum(duration - since for since in busy_since.values())
    return SimulationResult(
        mode=config.mode,
        agents=pop.agents,
        duration=duration,
        attempted=attempted,
        answered=answered,
        connected=connected,
        abandoned=abandoned,
        occupancy=busy_time / (pop.agents * duration),
        max_in_flight=max_in_flight,
        fallbacks=pacer.fallbacks,
        abandons=tuple(abandons),
    )


def clairvoyant_baseline(population: Population, duration: float, rng: np.random.Generator,
                         connect_limit: float = 2.0) -> SimulationResult:
    """An upper bound, not a pacer: a dialler that knows in advance every call's outcome and ring time and
    every agent's handle time, run on the same draws as ``simulate`` (the same two streams from ``rng``: the
    i-th call dialled meets the i-th called party, the i-th connect gets the i-th handle time).

    Calls are dialled in order, as a real dialler must. One that will not be answered is dialled at once
    and costs no agent time (its line is not counted: no ceiling on lines). One that will be answered is
    given to the agent who frees up first and dialled so that its answer comes ``connect_limit`` before
    that agent frees up (the caller waits, as the rules allow) -- or as soon as the order of dialling lets
    it, which is the only idle time left besides the first ring of the run. It never abandons. No
    dialler that has to guess can keep agents busier on this population: a pacer's occupancy gain over
    progressive can be no larger than this one's.
    """
    pop = population
    call_rng, handle_rng = rng.spawn(2)
    ring_draws = _Draws(lambda n: list(zip(call_rng.random(n).tolist(), pop.ring.sample(call_rng, n).tolist())))
    handles = _Draws(lambda n: pop.handle.sample(handle_rng, n).tolist())
    free_at = [0.0] * pop.agents  # a heap: when each agent is next free
    heapq.heapify(free_at)
    dialled_at = 0.0  # calls go out in order: none before the one dialled last
    attempted = connected = 0
    busy_time = 0.0
    answer_cut = pop.answer_probability
    while free_at[0] < duration:
        u, ring = ring_draws.next()
        attempted += 1
        if not (u < answer_cut and ring <= pop.ring_cap):
            continue  # busy or no answer: dialled now, ends on its own, takes no agent
        agent_free = heapq.heappop(free_at)
        dialled_at = max(dialled_at, agent_free - connect_limit - ring)
        start = max(dialled_at + ring, agent_free)
        if start >= duration:
            heapq.heappush(free_at, duration)
            continue
        end = start + handles.next()
        connected += 1
        busy_time += min(end, duration) - start
        heapq.heappush(free_at, end)
    return SimulationResult(
        mode="clairvoyant",
        agents=pop.agents,
        duration=duration,
        attempted=attempted,
        answered=connected,
        connected=connected,
        abandoned=0,
        occupancy=busy_time / (pop.agents * duration),
        max_in_flight=0,
        fallbacks=0,
    )
