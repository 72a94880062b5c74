"""Pacing of an outbound campaign: how many numbers to dial now.

Three dialling modes share one face (events in, ``decide(now)`` out):

* progressive: one call per free agent. Calls in flight never outnumber the free agents, so every live
  answer finds an agent and nothing is ever abandoned; agents wait through every ring and no-answer.
* ratio (a baseline): a fixed number of lines per free agent, blind to what happens next.
* predictive: more calls than free agents, paced so that the share of live answers that find no agent
  within ``connect_limit`` (2 s: the US TSR, 16 CFR 310.4(b)(4)(iv), and the UK Ofcom persistent-misuse
  policy) stays under the campaign's target (3% by both rules), measured over a rolling window (30 days
  per campaign for US rules, 24 hours for UK rules).

Theory of operation (predictive). Time ahead is cut into bins of ``resolution`` seconds over one ring
(``max_ring``, the no-answer timer: no call in flight outlives it). From what the pacer has seen it
knows, for a call that has been ringing for e seconds, the chance it is answered in each bin ahead
(the ring-time and answer model: answered and failed calls counted by the bin they ended in, a
discrete posterior with a prior and forgetting), and for an agent who has been handling a call for e
seconds, the chance to be free by each bin (the handle-time model: the empirical hazard of talk +
wrap-up). An answer in bin k finds no agent when the answers before it have used up the agents who
are free now plus those who free up by k + ``connect_limit``; both counts are sums of independent
Bernoulli trials, so their difference is taken as normal (mean and variance add up) and
``P(abandon in k)`` is its upper tail. Summed over the bins, weighted by the answers expected there,
that gives the expected abandons E(n) if n more calls start now. The pacer dials the largest n whose
last call still costs ``E(n) - E(n-1) <= theta * P(answer)``: theta is the price, in abandons, the
campaign pays for one more live answer.

theta is learned online (stochastic approximation of a Lagrange multiplier): every live answer that
reaches an agent raises it a little, every abandon cuts it, so that in the long run the abandon rate
settles on the aim, the target less a margin for chance. The margin is ``margin`` standard deviations
of the window's abandon count, as a rate: ``margin * sqrt(target / answers)``, so it shrinks as the window
fills (a window of 20,000 answers aims at 2.88% of a 3% cap) but never leaves less than ``aim`` x target
(a small window's count is too noisy to aim closer). The aim itself follows the window's remaining
budget: a window that has abandoned more than its share tightens it, one with abandons to spare loosens
it. When the window's rate nears the cap (``fallback_at`` x target for a small window; the threshold
keeps its place between the aim and the target as the margin shrinks) the pacer falls back to
progressive until it has moved away again. Progressive's count is always a floor: it can never cause
an abandon.

What a pacer that has to guess can reach (measured with ``core.scheduler.simulate``; the figures are in
tests/test_simulate.py): the price is the only lever, and a fixed ``price`` traces the frontier of
occupancy against abandons. Small teams and high answer rates sit low on it: with 5 agents, 3% of
abandons is worth about 83% occupancy on average, and the gain over progressive spreads over 2.6 points
from seed to seed; at an answer probability of 0.6, even 9% of abandons buys 94% against progressive's
87%. Exact Poisson-binomial tails instead of the normal one, or valuing a live answer by the agent idle
time it saves instead of 1, measured on the same frontier.

Sans-IO like the rest of ``core``: ``now`` is an argument; the pacer draws no random numbers.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Hashable, Union

import numpy as np

__all__ = [
    "PROGRESSIVE", "PREDICTIVE", "RATIO", "MODES", "RULES", "PacingConfig", "Pacer", "RollingWindow",
    "CallDialled", "CallAnswered", "CallFailed", "CallConnected", "AgentFree", "AgentBusy",
    "AgentLoggedOut", "CallAbandoned", "normal_cdf",
]

PROGRESSIVE = "progressive"
PREDICTIVE = "predictive"
RATIO = "ratio"
MODES = (PROGRESSIVE, PREDICTIVE, RATIO)

#: Rolling window over which the abandon rate is measured, by the rules a campaign follows: the US
#: TSR counts per campaign over 30 days, Ofcom over 24 hours.
RULES = {"us": 30 * 86_400.0, "uk": 86_400.0}


@dataclass(frozen=True, slots=True)
class PacingConfig:
    """A campaign's pacing settings."""

    mode: str = PREDICTIVE
    abandon_target: float = 0.03  # the cap on abandoned / live answers over the window
    window: float = RULES["us"]  # seconds
    connect_limit: float = 2.0  # a live answer must reach an agent within this (s), or it is abandoned
    max_ring: float = 20.0  # the no-answer timer: a call still ringing then counts as no answer
    dial_ratio: float = 2.0  # ratio mode: lines per free agent
    abandon_message: str = "abandon"  # the prompt an abandoned call hears (the caller's name for it)
    aim: float = 0.8  # least share of the target aimed at (small windows); the rest is the margin for chance
    margin: float = 1.0  # the margin under the target, in s.d. of the window's abandon count (shrinks as it fills)
    fallback_at: float = 0.9  # window rate / target from which predictive dials as progressive (small windows)
    fallback_min_answers: int = 50  # below this many answers in the window the rate is too noisy to act on
    budget_answers: float = 200.0  # the budget's horizon: a window this many answers ahead
    learning_rate: float = 0.3  # step of log(theta) per live answer
    price: float | None = None  # a fixed theta instead of the learned one: to measure the frontier, not to run
    max_lines_per_agent: float = 10.0  # calls in flight per logged-in agent, whatever the model says
    resolution: float = 0.5  # seconds per bin of the forecast
    max_handle: float = 1800.0  # handle times beyond this share the model's last bin
    handle_resolution: float = 2.0  # seconds per bin of the handle-time model
    memory: float = 5000.0  # observations after which an old one weighs 1/e (ring and handle models)
    refit_interval: float = 15.0  # seconds between refits of the ring forecast to what was learned
    handle_refit_interval: float = 60.0  # the same for the handle-time forecast (a bigger table)
    # Priors, worth a few observations each until the campaign's own figures take over.
    prior_answer_probability: float = 0.3
    prior_ring_mean: float = 8.0
    prior_handle_mean: float = 180.0
    prior_weight: float = 20.0

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        if not 0 < self.abandon_target < 1:
            raise ValueError("abandon_target must be between 0 and 1")
        if not 0 < self.aim < 1 or not self.aim <= self.fallback_at or self.margin < 0:
            raise ValueError("aim must be between 0 and 1, fallback_at at least aim, margin not negative")
        if self.price is not None and self.price <= 0:
            raise ValueError("price must be positive")
        for name in ("window", "connect_limit", "max_ring", "resolution", "max_handle", "dial_ratio"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")


# -- events in ------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class CallDialled:
    """A call of the campaign left the switch (one per call ``decide`` asked for)."""

    call: Hashable


@dataclass(frozen=True, slots=True)
class CallAnswered:
    """A live person answered: from now the call has ``connect_limit`` seconds to reach an agent."""

    call: Hashable


@dataclass(frozen=True, slots=True)
class CallFailed:
    """A call that ended without a live answer: ``result`` is busy, no-answer, invalid, failed, machine...
    After an answer (the called party hung up while waiting) it only leaves the waiting line."""

    call: Hashable
    result: str = "no-answer"


@dataclass(frozen=True, slots=True)
class CallConnected:
    """An answered call reached an agent."""

    call: Hashable
    agent: Hashable


@dataclass(frozen=True, slots=True)
class AgentFree:
    """The agent is idle and may take a campaign call (logged in and ready, wrap-up over)."""

    agent: Hashable


@dataclass(frozen=True, slots=True)
class AgentBusy:
    """The agent started handling a call (talk, then wrap-up) and is not free until AgentFree."""

    agent: Hashable


@dataclass(frozen=True, slots=True)
class AgentLoggedOut:
    """The agent no longer works this campaign."""

    agent: Hashable


PacingEvent = Union[CallDialled, CallAnswered, CallFailed, CallConnected, AgentFree, AgentBusy, AgentLoggedOut]


# -- events out -----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class CallAbandoned:
    """A live answer found no agent within ``connect_limit``: play ``message`` and hang up. Kept for audit
    (the rules ask for a record of every abandoned call)."""

    call: Hashable
    answered_at: float
    abandoned_at: float
    message: str


# -- the rolling window ---------------------------------------------------------------------------
class RollingWindow:
    """Live answers and abandons over the last ``length`` seconds, in ``buckets`` slices (what falls out
    of the window leaves a slice at a time)."""

    __slots__ = ("length", "width", "_slices", "answers", "abandons")

    def __init__(self, length: float, buckets: int = 720):
        self.length = length
        self.width = length / buckets
        self._slices: deque[list] = deque()  # [slice index, answers, abandons]
        self.answers = 0
        self.abandons = 0

    def add(self, now: float, answers: int = 0, abandons: int = 0) -> None:
        index = math.floor(now / self.width)
        if not self._slices or self._slices[-1][0] != index:
            self._slices.append([index, 0, 0])
        last = self._slices[-1]
        last[1] += answers
        last[2] += abandons
        self.answers += answers
        self.abandons += abandons

    def expire(self, now: float) -> None:
        oldest = math.floor((now - self.length) / self.width)
        slices = self._slices
        while slices and slices[0][0] <= oldest:
            _, answers, abandons = slices.popleft()
            self.answers -= answers
            self.abandons -= abandons

    def rate(self, now: float) -> float:
        """Abandons / live answers over the window (0 with no answers)."""
        self.expire(now)
        return self.abandons / self.answers if self.answers else 0.0


# -- the normal tail, vectorised (numpy has no erf) -----------------------------------------------
_P, _A1, _A2, _A3, _A4, _A5 = 0.3275911, 0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429


def normal_cdf(x: np.ndarray) -> np.ndarray:
    """Phi(x), from Abramowitz & Stegun 7.1.26 (absolute error under 1.5e-7)."""
    z = np.abs(x) * (1.0 / math.sqrt(2.0))
    t = 1.0 / (1.0 + _P * z)
    poly = t * (_A1 + t * (_A2 + t * (_A3 + t * (_A4 + t * _A5))))
    half_tail = 0.5 * poly * np.exp(-z * z)
    return np.where(x >= 0, 1.0 - half_tail, half_tail)


_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _upper_tail(mean: np.ndarray, sd: np.ndarray, k3: np.ndarray) -> np.ndarray:
    """P(X >= 0) for an integer X (a sum of independent Bernoulli trials, minus another) with this mean,
    s.d. and third cumulant: the normal tail with a continuity correction and the first Edgeworth term,
    which carries the skew of a few trials with small chances (the normal alone is too thin there)."""
    z = (-0.5 - mean) / sd
    gamma = k3 / (sd * sd * sd)
    tail = normal_cdf(-z) + gamma * (1.0 / 6.0) * (z * z - 1.0) * np.exp(-0.5 * z * z) * _INV_SQRT_2PI
    return np.clip(tail, 0.0, 1.0)


# -- slots: start times of calls in flight and busy agents, as one numpy array ---------------------
_EMPTY = 1e15  # start time of an empty slot: far in the future, so its elapsed time is negative


class _Starts:
    """Start times kept in a numpy array so a tick bins all of them in one call."""

    __slots__ = ("times", "slot", "_free")

    def __init__(self, capacity: int = 64):
        self.times = np.full(capacity, _EMPTY)
        self.slot: dict[Hashable, int] = {}
        self._free = list(range(capacity - 1, -1, -1))

    def __len__(self) -> int:
        return len(self.slot)

    def __contains__(self, key) -> bool:
        return key in self.slot

    def add(self, key: Hashable, now: float) -> None:
        if not self._free:
            old = len(self.times)
            self.times = np.concatenate([self.times, np.full(old, _EMPTY)])
            self._free = list(range(2 * old - 1, old - 1, -1))
        index = self._free.pop()
        self.slot[key] = index
        self.times[index] = now

    def pop(self, key: Hashable) -> float | None:
        index = self.slot.pop(key, None)
        if index is None:
            return None
        start = float(self.times[index])
        self.times[index] = _EMPTY
        self._free.append(index)
        return start

    def bins(self, now: float, width: float, nbins: int) -> np.ndarray:
        """How many started e bins ago, for e in 0..nbins-1 (the last bin takes everything older)."""
        if not self.slot:
            return np.zeros(nbins)
        elapsed = (now - self.times) * (1.0 / width)
        # Empty slots -> -1 (dropped below); older than the last bin -> the last bin.
        index = np.clip(elapsed, -1.0, nbins - 1).astype(np.int64)
        return np.bincount(index + 1, minlength=nbins + 1)[1:].astype(float)


# -- what the pacer learns -------------------------------------------------------------------------
class _Histogram:
    """Weighted counts by bin (one row per outcome), with exponential forgetting: a new observation
    weighs a little more than the last, instead of every old one being multiplied down. Outcomes
    share one clock, so a common outcome does not outweigh a rare one."""

    __slots__ = ("counts", "weight", "growth")

    def __init__(self, counts: np.ndarray, memory: float):
        self.counts = counts.astype(float)
        self.weight = 1.0
        self.growth = math.exp(1.0 / memory)

    def add(self, index) -> None:
        self.weight *= self.growth
        if self.weight > 1e12:
            self.counts /= self.weight
            self.weight = 1.0
        self.counts[index] += self.weight


def _gamma_pmf(mean: float, shape: float, width: float, nbins: int) -> np.ndarray:
    """A gamma density on the bin centres, normalised (the ring-time prior)."""
    x = (np.arange(nbins) + 0.5) * width
    scale = mean / shape
    density = x ** (shape - 1) * np.exp(-x / scale)
    return density / density.sum()


class Pacer:
    """Decides how many calls of one campaign to dial now. Feed it events with ``handle``; ask
    ``decide(now)``; call ``handle_timer(now)`` at ``get_timer()`` and play the message of every
    ``CallAbandoned`` that ``next_event()`` gives."""

    def __init__(self, config: PacingConfig = PacingConfig()):
        self.config = config
        c = config
        self._width = c.resolution
        # Ring bins: a call ends (answered or failed) in bin 0..J-1; the no-answer timer's failures
        # land in the last one. The forecast looks one ring ahead: K = J bins.
        self._J = int(math.ceil(c.max_ring / self._width)) + 1
        self._hwidth = c.handle_resolution
        self._H = int(math.ceil(c.max_handle / self._hwidth)) + 1

        prior = c.prior_weight
        answers = prior * c.prior_answer_probability * _gamma_pmf(c.prior_ring_mean, 2.0, self._width, self._J)
        failures = np.zeros(self._J)
        failures[-1] = prior * (1.0 - c.prior_answer_probability)
        self._ring = _Histogram(np.stack([answers, failures]), c.memory)  # rows: answered, failed
        handle = _gamma_pmf(c.prior_handle_mean, 2.0, self._hwidth, self._H) * prior
        self._handled = _Histogram(handle, c.memory)

        self._calls = _Starts()  # ringing calls: id -> dial time
        self._busy = _Starts()  # agents handling a call: id -> start time
        self._free: set = set()
        self._waiting: dict[Hashable, float] = {}  # answered, no agent yet: id -> answer time (FIFO)
        self._events: deque[CallAbandoned] = deque()
        self.window = RollingWindow(c.window)

        self._log_theta = math.log(c.price or c.abandon_target)
        self._ring_at: float | None = None
        self._handle_at: float | None = None
        self._ring_dirty = self._handle_dirty = True
        # Totals since the pacer started (the window keeps its own).
        self.dialled = self.answered = self.connected = self.abandoned = self.failed = 0
        self.fallbacks = 0  # decisions made as progressive because the window neared the cap

    # -- state the caller may read --------------------------------------------------------------
    @property
    def in_flight(self) -> int:
        return len(self._calls)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def free_agents(self) -> int:
        return len(self._free)

    @property
    def busy_agents(self) -> int:
        return len(self._busy)

    @property
    def theta(self) -> float:
        """Abandons the pacer accepts, at the margin, for one more live answer."""
        return math.exp(self._log_theta)

    @property
    def answer_probability(self) -> float:
        """Posterior mean of P(live answer) for a call just dialled (the Beta posterior of answered vs
        failed, prior included, old calls forgotten)."""
        answered, failed = self._ring.counts.sum(axis=1)
        return answered / (answered + failed)

    def mean_handle_time(self) -> float:
        counts = self._handled.counts
        return float(((np.arange(self._H) + 0.5) * self._hwidth * counts).sum() / counts.sum())

    # -- events in --------------------------------------------------------------------------------
    def handle(self, event: PacingEvent, now: float) -> None:
        kind = type(event)
        if kind is CallDialled:
            self._calls.add(event.call, now)
            self.dialled += 1
        elif kind is CallAnswered:
            start = self._calls.pop(event.call)
            if start is not None:
                self._ring.add((0, self._ring_bin(now - start)))
                self._ring_dirty = True
            self._waiting[event.call] = now
            self.answered += 1
            self.window.add(now, answers=1)
        elif kind is CallConnected:
            if self._waiting.pop(event.call, None) is not None:
                self.connected += 1
                self._settle(False, now)
        elif kind is CallFailed:
            start = self._calls.pop(event.call)
            if start is not None:
                self._ring.add((1, self._ring_bin(now - start)))
                self._ring_dirty = True
                self.failed += 1
            else:
                self._waiting.pop(event.call, None)  # hung up while waiting for an agent
        elif kind is AgentFree:
            start = self._busy.pop(event.agent)
            if start is not None:
                self._handled.add(min(int((now - start) / self._hwidth), self._H - 1))
                self._handle_dirty = True
            self._free.add(event.agent)
        elif kind is AgentBusy:
            self._free.discard(event.agent)
            if event.agent not in self._busy:
                self._busy.add(event.agent, now)
        elif kind is AgentLoggedOut:
            self._free.discard(event.agent)
            self._busy.pop(event.agent)
        else:
            raise TypeError(f"not a pacing event: {event!r}")

    def _ring_bin(self, elapsed: float) -> int:
        return min(max(int(elapsed / self._width), 0), self._J - 1)

    def _settle(self, abandoned: bool, now: float) -> None:
        """One live answer resolved: move theta towards the price at which the rate meets the aim."""
        c = self.config
        if c.price is not None:
            return
        aim = self._aim(now)
        if abandoned:
            self._log_theta -= c.learning_rate * (1.0 - aim)
        else:
            self._log_theta += c.learning_rate * aim
        self._log_theta = min(max(self._log_theta, math.log(1e-4)), 0.0)

    def _aim(self, now: float) -> float:
        """The abandon rate to aim at from here: the base aim (the target less the margin), corrected by
        what the window has spent (a window over its share tightens it, one under loosens it)."""
        c = self.config
        w = self.window
        w.expire(now)
        aim = self._base_aim()
        spare = aim * w.answers - w.abandons
        return min(max(aim + spare / c.budget_answers, 0.25 * aim), 2.0 * aim)

    def _base_aim(self) -> float:
        """The abandon rate aimed at before the budget's correction: the target less ``margin`` s.d. of
        the window's rate, sqrt(target / answers) (the abandon count is close to Poisson), and never
        less than ``aim`` x target. The caller expires the window first."""
        c = self.config
        target = c.abandon_target
        return max(target - c.margin * math.sqrt(target / max(self.window.answers, 1)), c.aim * target)

    def fallback_rate(self, now: float) -> float:
        """The window's abandon rate from which predictive dials as progressive: ``fallback_at`` x target
        while the margin is at its widest, then as far between the aim and the target as that."""
        c = self.config
        self.window.expire(now)
        share = (1.0 - c.fallback_at) / (1.0 - c.aim)
        return c.abandon_target - share * (c.abandon_target - self._base_aim())

    # -- the 2-second rule ------------------------------------------------------------------------
    def get_timer(self) -> float | None:
        """When the oldest answered call waiting for an agent runs out of time."""
        for answered_at in self._waiting.values():
            return answered_at + self.config.connect_limit
        return None

    def handle_timer(self, now: float) -> None:
        limit = self.config.connect_limit
        waiting = self._waiting
        while waiting:
            call, answered_at = next(iter(waiting.items()))
            if answered_at + limit > now:
                break
            del waiting[call]
            self.abandoned += 1
            self.window.add(now, abandons=1)
            self._settle(True, now)
            self._events.append(CallAbandoned(call, answered_at, now, self.config.abandon_message))

    def next_event(self) -> CallAbandoned | None:
        return self._events.popleft() if self._events else None

    # -- the decision -----------------------------------------------------------------------------
    def decide(self, now: float) -> int:
        """How many calls to dial now."""
        c = self.config
        free = len(self._free)
        staffed = free + len(self._busy)
        if staffed == 0:
            return 0
        ceiling = int(c.max_lines_per_agent * staffed) - len(self._calls)
        progressive = min(free - len(self._calls) - len(self._waiting), ceiling)
        if c.mode == PROGRESSIVE:
            return max(progressive, 0)
        if c.mode == RATIO:
            return max(min(math.ceil(c.dial_ratio * free) - len(self._calls), ceiling), 0)
        w = self.window
        if w.answers >= c.fallback_min_answers and w.rate(now) >= self.fallback_rate(now):
            self.fallbacks += 1
            return max(progressive, 0)
        n = self._predictive(now, free, max(ceiling, 0))
        return max(n, progressive, 0)

    def _predictive(self, now: float, free: int, ceiling: int) -> int:
        if ceiling <= 0:
            return 0
        c = self.config
        if self._ring_dirty and (self._ring_at is None or now - self._ring_at >= c.refit_interval):
            self._refit_ring()
            self._ring_at = now
        if self._handle_dirty and (self._handle_at is None or now - self._handle_at >= c.handle_refit_interval):
            self._refit_handle()
            self._handle_at = now
        calls = self._calls.bins(now, self._width, self._J)
        agents = self._busy.bins(now, self._hwidth, self._H)

        # Answers expected in each bin ahead from the calls in flight, and before each bin (mean, var).
        answers = calls @ self._ring_rate
        before = len(self._waiting) + calls @ self._ring_before
        var = calls @ self._ring_before_var
        skew = calls @ self._ring_before_k3
        # Agents who can take an answer of bin k: free now, or free by k + connect_limit.
        busy = np.flatnonzero(agents)
        if len(busy):
            counts = agents[busy]
            supply = free + counts @ self._handle_by[busy]
            var = var + counts @ self._handle_by_var[busy]
            skew = skew - counts @ self._handle_by_k3[busy]  # supply is subtracted: odd cumulants flip
        else:
            supply = np.full(self._J, float(free))

        r, b = self._ring_rate[0], self._ring_before[0]
        bv, bk3 = self._ring_before_var[0], self._ring_before_k3[0]
        p_new = self._p_new
        if p_new <= 0:
            return 0
        price = self.theta * p_new

        def affordable(n: np.ndarray) -> np.ndarray:
            """Whether the n-th new call's marginal expected abandons stay within the price, per n."""
            both = np.concatenate([n - 1.0, n])[:, None]
            mean = before - supply + both * b
            sd = np.sqrt(np.maximum(var + both * bv, 1e-9))
            expected = ((answers + both * r) * _upper_tail(mean, sd, skew + both * bk3)).sum(axis=1)
            return expected[len(n):] - expected[: len(n)] <= price

        # The marginal cost grows with n: find the last affordable n in [0, ceiling]. Probe at
        # 1, 2, 4, ... to bracket it, then narrow the bracket 32 candidates at a time.
        probes = np.unique(np.minimum(2.0 ** np.arange(int(math.log2(ceiling)) + 2), ceiling))
        ok = affordable(probes)
        if ok.all():
            return ceiling
        first = int(np.argmin(ok))
        hi = int(probes[first])
        lo = int(probes[first - 1]) if first else 0
        while hi - lo > 1:
            step = max(1, -(-(hi - lo - 1) // 32))
            candidates = np.arange(lo + step, hi, step, dtype=float)
            ok = affordable(candidates)
            if ok.all():
                lo = int(candidates[-1])
                if step == 1:
                    break
                continue
            first = int(np.argmin(ok))
            hi = int(candidates[first])
            lo = int(candidates[first - 1]) if first else lo
        return lo

    def _refit_ring(self) -> None:
        """Rebuild the ring forecast from the ring-time and answer model."""
        J = self._J
        answered, failed = self._ring.counts
        total = answered.sum() + failed.sum()
        p_answer, p_end = answered / total, (answered + failed) / total
        # Still ringing at the start of bin e.
        alive = 1.0 - np.concatenate([[0.0], np.cumsum(p_end)[:-1]])
        e = np.arange(J)[:, None]
        k = np.arange(J)[None, :]
        idx = e + k
        rate = np.where(idx < J, p_answer[np.minimum(idx, J - 1)], 0.0) / np.maximum(alive, 1e-12)[:, None]
        rate[alive < 1e-9] = 0.0
        # Answers before bin k: bins < k, and half of bin k (answers within a bin come in any order).
        before = np.minimum(np.cumsum(rate, axis=1) - 0.5 * rate, 1.0)
        self._ring_rate = rate
        self._ring_before = before
        self._ring_before_var = before * (1.0 - before)
        self._ring_before_k3 = self._ring_before_var * (1.0 - 2.0 * before)
        self._p_new = float(rate[0].sum())
        self._ring_dirty = False

    def _refit_handle(self) -> None:
        """Rebuild the agents' forecast: an agent a seconds into a call is free by t with
        P = (F(a + t) - F(a)) / (1 - F(a)), F the handle-time distribution; t = the answer's time ahead
        plus connect_limit."""
        H, hw = self._H, self._hwidth
        counts = self._handled.counts
        grid = np.arange(H + 1) * hw
        cdf = np.concatenate([[0.0], np.cumsum(counts) / counts.sum()])  # F at the bin edges
        a = (np.arange(H) + 0.5) * hw  # an agent in bin e is, on average, mid-bin
        # A call in ring bin e answers in ring bin e + k, i.e. about k bins from now (both mid-bin).
        t = np.arange(self._J) * self._width + self.config.connect_limit
        f_a = np.interp(a, grid, cdf)
        f_at = np.interp((a[:, None] + t[None, :]).ravel(), grid, cdf).reshape(H, self._J)
        alive = 1.0 - f_a
        by = (f_at - f_a[:, None]) / np.maximum(alive, 1e-12)[:, None]
        # Beyond what was seen (no mass left), or in the open last bin: a constant hazard at the mean.
        tail = 1.0 - np.exp(-t / self.mean_handle_time())
        stale = alive < 1e-6
        stale[-1] = True
        by[stale] = tail
        by = np.clip(by, 0.0, 1.0)
        self._handle_by = by
        self._handle_by_var = by * (1.0 - by)
        self._handle_by_k3 = self._handle_by_var * (1.0 - 2.0 * by)
        self._handle_dirty = False
