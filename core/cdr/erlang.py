"""Erlang planning: trunks for a target loss rate, agents for a target service level, staffing per interval.

Three classic models of a group of servers fed by Poisson arrivals with exponential holding times:

- Erlang B (M/M/N/N, Erlang 1917; the loss formula of ITU-T E.520/E.521 trunk dimensioning): a call that
  finds every trunk busy is lost. ``erlang_b`` is the blocking probability, ``trunks_for_blocking`` the
  trunks needed for a grade of service, ``traffic_for_blocking`` the traffic N trunks carry at a grade of
  service (the Erlang B table read the other way).
- Erlang C (M/M/N, infinite patience): a call that finds every agent busy waits. ``erlang_c`` is the
  probability of wait; ``erlang_c_performance`` adds average speed of answer and service level.
- Erlang A (Palm's M/M/N+M, 1943; Mandelbaum & Zeltyn's name): waiting callers hang up after an
  exponential patience. ``erlang_a`` gives probability of wait, of abandonment, service level (three
  variants, as in docs/kpis.md), ASA and occupancy.

``agents_for_service_level`` and ``staff_intervals`` turn a forecast into agents (Erlang C, or Erlang A
when a mean patience is given).

Numerics (nothing here computes a factorial or a power that can overflow; N = 5000 at 4900 E is routine):

- Erlang B by the forward recurrence B(0) = 1, B(n) = A·B(n−1) / (n + A·B(n−1)): every step is a ratio of
  positive numbers in [0, 1], so it neither overflows nor cancels; Erlang A keeps the same recurrence in
  log space so that a blocking probability below 1e-308 still carries its exponent.
- Erlang C from Erlang B: C = N·B / (N − A·(1 − B)).
- Erlang A from the birth–death chain of the queue, summed in log space. With x = Nμ/θ and y = λ/θ
  (μ service rate, θ = 1/mean patience), the stationary weights of "all agents busy and j callers
  waiting", relative to "N busy, none waiting", are t_j = Π_{i=1..j} y/(x+i) — the terms of the series
  that defines the lower incomplete gamma function (A(x, y) = Σ t_j = x·e^y·y^(−x)·γ(x, y) in Mandelbaum
  & Zeltyn's notation). The terms are built as cumulative sums of log1p((y − x − i)/(x + i)) in numpy
  chunks and added with a log-sum-exp, until they have fallen e^40 below the largest one.
  A caller who finds j waiting ahead waits V_j, a sum of exponential phases with rates Nμ + iθ
  (i = j..0), and is answered if V_j is shorter than its own patience. Because the rates form an
  arithmetic progression, V_j has the density Π(Nμ+iθ)/(θ^j j!) · e^(−Nμv) (1 − e^(−θv))^j, so that
  "answered after waiting more than T" and "still waiting at T", summed over j with the weights t_j,
  are again incomplete-gamma series (argument y·e^(−θT)), summed the same way. The derivation is written
  out in docs/kpis.md ("Erlang A").
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

__all__ = [
    "erlang_b",
    "trunks_for_blocking",
    "traffic_for_blocking",
    "erlang_c",
    "erlang_c_performance",
    "erlang_a",
    "QueuePerformance",
    "agents_for_service_level",
    "IntervalStaffing",
    "staff_intervals",
]

# Terms of a series are dropped once they are this far (natural log) below the largest: e^-40 ≈ 4e-18.
_LOG_NEGLIGIBLE = 40.0
# Bounded work: a series longer than this means a load no call centre has (y − x beyond 5e7 callers).
_MAX_TERMS = 50_000_000
_MAX_AGENTS = 10_000_000


def _check_load(servers: int, erlangs: float) -> None:
    if not isinstance(servers, (int, np.integer)) or servers < 0:
        raise ValueError(f"the number of servers must be a whole number >= 0, not {servers!r}")
    if not (erlangs >= 0.0) or math.isinf(erlangs):
        raise ValueError(f"offered traffic must be a finite number of erlangs >= 0, not {erlangs!r}")


# --------------------------------------------------------------------------------------------- Erlang B


def erlang_b(trunks: int, erlangs: float) -> float:
    """Probability that a call offered to ``trunks`` circuits carrying ``erlangs`` of traffic is lost."""
    _check_load(trunks, erlangs)
    b = 1.0
    for n in range(1, trunks + 1):
        ab = erlangs * b
        b = ab / (n + ab)
    return b


def _log_erlang_b(servers: int, erlangs: float) -> float:
    """log B(servers, erlangs), the same recurrence in log space (B may be far below 1e-308)."""
    if erlangs == 0.0:
        return 0.0 if servers == 0 else -math.inf
    log_a = math.log(erlangs)
    lb = 0.0
    for n in range(1, servers + 1):
        # B(n) = A·B / (n + A·B); A·B may underflow to 0 here, which is then exactly what it is worth.
        lb = log_a + lb - math.log(n + erlangs * math.exp(lb))
    return lb


def trunks_for_blocking(erlangs: float, blocking: float) -> int:
    """The fewest trunks whose blocking probability at ``erlangs`` is at most ``blocking``."""
    _check_load(0, erlangs)
    if not 0.0 < blocking < 1.0:
        raise ValueError(f"the target blocking must lie strictly between 0 and 1, not {blocking!r}")
    n, b = 0, 1.0
    while b > blocking:
        n += 1
        if n > _max_trunks(erlangs):
            raise ValueError(f"no trunk count up to {n - 1} reaches blocking {blocking} at {erlangs} E")
        ab = erlangs * b
        b = ab / (n + ab)
    return n


def _max_trunks(erlangs: float) -> int:
    # Far beyond any answer: past N ≈ A + 40·sqrt(A) + 100 the blocking is below 1e-300.
    return int(erlangs + 40.0 * math.sqrt(erlangs) + 1000)


def traffic_for_blocking(trunks: int, blocking: float) -> float:
    """The offered traffic (erlangs) at which ``trunks`` circuits block exactly ``blocking`` of the calls.

    This is how the printed Erlang B tables are laid out (a row per N, a column per grade of service).
    """
    _check_load(trunks, 0.0)
    if trunks == 0 or not 0.0 < blocking < 1.0:
        raise ValueError("needs trunks >= 1 and a blocking strictly between 0 and 1")
    # B rises with the traffic; B(N, A) >= 1 − N/A, so at A = N/(1 − blocking) + 1 it is above target.
    lo, hi = 0.0, trunks / (1.0 - blocking) + 1.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if erlang_b(trunks, mid) > blocking:
            hi = mid
        else:
            lo = mid
        if hi - lo <= 1e-13 * hi:
            break
    return 0.5 * (lo + hi)


# --------------------------------------------------------------------------------------------- Erlang C


def erlang_c(agents: int, erlangs: float) -> float:
    """Probability that a call waits (finds every agent busy) with infinite patience; 1 when A >= N."""
    _check_load(agents, erlangs)
    if erlangs >= agents:
        return 1.0
    b = erlang_b(agents, erlangs)
    return agents * b / (agents - erlangs * (1.0 - b))


@dataclass(frozen=True, slots=True)
class QueuePerformance:
    """What a queue with ``agents`` agents does with ``erlangs`` of offered traffic (steady state).

    Shares are of calls offered to the queue. "Answered within T" counts calls answered at once too.
    """

    agents: int
    erlangs: float
    aht: float
    patience: float  # mean patience in seconds; math.inf for Erlang C
    answer_within: float  # T, the service-level threshold in seconds
    p_wait: float  # finds every agent busy
    p_abandon: float  # hangs up before an agent answers
    service_level: float  # answered within T / offered (abandons counted against)
    service_level_ignoring_abandons: float  # answered within T / answered
    service_level_abandons_met: float  # (answered within T + abandoned within T) / offered
    asa: float  # average speed of answer: mean wait of answered calls (zero waits included), seconds
    mean_wait: float  # average queue time of every caller, answered or abandoned, seconds
    occupancy: float  # carried traffic / agents

    @property
    def p_answer(self) -> float:
        return 1.0 - self.p_abandon


def erlang_c_performance(agents: int, erlangs: float, aht: float, answer_within: float = 20.0) -> QueuePerformance:
    """Erlang C: probability of wait, ASA = C·AHT/(N − A), SL = 1 − C·e^(−(N−A)·T/AHT)."""
    _check_load(agents, erlangs)
    _check_times(aht, answer_within)
    if erlangs >= agents:
        # No steady state: the queue grows without bound, nobody is answered within any T.
        return QueuePerformance(agents, erlangs, aht, math.inf, answer_within, 1.0, 0.0, 0.0, 0.0, 0.0,
                                math.inf, math.inf, 1.0 if agents else 0.0)
    c = erlang_c(agents, erlangs)
    spare = agents - erlangs
    asa = c * aht / spare
    sl = 1.0 - c * math.exp(-spare * answer_within / aht)
    occupancy = erlangs / agents if agents else 0.0
    return QueuePerformance(agents, erlangs, aht, math.inf, answer_within, c, 0.0, sl, sl, sl, asa, asa,
                            occupancy)


def _check_times(aht: float, answer_within: float) -> None:
    if not (aht > 0.0) or math.isinf(aht):
        raise ValueError(f"the average handle time must be a positive number of seconds, not {aht!r}")
    if not (answer_within >= 0.0) or math.isinf(answer_within):
        raise ValueError(f"the service-level threshold must be >= 0 seconds, not {answer_within!r}")


# --------------------------------------------------------------------------------------------- Erlang A


def _log_terms(x: float, z: float, first: int) -> np.ndarray:
    """log Π_{i=first..first+k−1} z/(x+i) for k = 0, 1, ... until the terms are negligible.

    The terms rise while z > x + i and fall after; summing stops once they fall and the last is
    ``_LOG_NEGLIGIBLE`` below the largest. Built in numpy chunks, each a cumulative sum of logs.
    """
    parts = [np.zeros(1)]
    last, peak, done, chunk = 0.0, 0.0, 0, 256
    while True:
        i = (first + done) + np.arange(chunk, dtype=np.float64)
        d = x + i
        logs = np.log1p((z - d) / d)  # log(z/d), precise when z/d is near 1
        seg = last + np.cumsum(logs)
        parts.append(seg)
        done += chunk
        last = float(seg[-1])
        peak = max(peak, float(seg.max()))
        if logs[-1] < 0.0 and last < peak - _LOG_NEGLIGIBLE:
            break
        if done > _MAX_TERMS:
            raise ValueError(f"Erlang A series did not converge in {_MAX_TERMS} terms (x={x}, y={z})")
        chunk = min(chunk * 2, 1 << 20)
    terms = np.concatenate(parts)
    keep = np.nonzero(terms >= peak - _LOG_NEGLIGIBLE)[0]
    return terms[: keep[-1] + 1]


def _logsumexp(logs: np.ndarray, weights: np.ndarray | None = None) -> float:
    peak = float(logs.max())
    w = np.exp(logs - peak)
    total = float(w.sum() if weights is None else (w * weights).sum())
    return peak + math.log(total) if total > 0.0 else -math.inf


def _logaddexp(a: float, b: float) -> float:
    return float(np.logaddexp(a, b))


def erlang_a(agents: int, erlangs: float, aht: float, patience: float, answer_within: float = 20.0) -> QueuePerformance:
    """Erlang A (Palm's M/M/N+M): callers abandon after an exponential patience with mean ``patience`` s.

    ``patience = math.inf`` is Erlang C. See the module docstring for the method.
    """
    _check_load(agents, erlangs)
    _check_times(aht, answer_within)
    if not (patience > 0.0):
        raise ValueError(f"the mean patience must be a positive number of seconds, not {patience!r}")
    if math.isinf(patience):
        return erlang_c_performance(agents, erlangs, aht, answer_within)
    if agents == 0:
        raise ValueError("Erlang A needs at least one agent")
    if erlangs == 0.0:
        return QueuePerformance(agents, 0.0, aht, patience, answer_within, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0,
                                0.0)
    n, a, T = agents, erlangs, answer_within
    x = n * patience / aht  # Nμ/θ
    y = a * patience / aht  # λ/θ
    # Weight of "answered at once" (arrival finds k < N busy), relative to the state "N busy, none waiting":
    # Σ_{k<N} π_k / π_N = 1/B − 1.
    log_b = _log_erlang_b(n, a)
    log_immediate = -log_b + math.log(-math.expm1(log_b)) if log_b > -700.0 else -log_b

    logt = _log_terms(x, y, 1)  # t_j, j = 0..J: j callers waiting
    j = np.arange(logt.size, dtype=np.float64)
    log_wait = _logsumexp(logt)  # S = Σ t_j: arrival finds every agent busy
    # Of those who wait, the caller finding j ahead is answered with probability x/(x+j+1).
    served_share = x / (x + j + 1.0)
    log_served = _logsumexp(logt, served_share)
    # P(Ab) = θ·E[queue]/λ (abandonment rate over arrival rate): weight Σ j·t_j / y.
    log_abandon = _logsumexp(logt, j) - math.log(y) if logt.size > 1 else -math.inf
    # Mean wait of a caller answered after finding j ahead: Σ_{i=1..j+1} 1/(x+i) / θ, times its share.
    h = np.cumsum(1.0 / (x + j + 1.0))
    log_served_wait = _logsumexp(logt, served_share * h) + math.log(patience)  # / θ

    log_z = _logaddexp(log_immediate, log_wait)

    # Answered after waiting more than T, and still waiting (neither answered nor gone) at T.
    theta_t = T / patience
    u_log = -theta_t
    rise = y * -math.expm1(-theta_t)  # y·(1 − e^(−θT))
    zt = y * math.exp(u_log)
    log_late = math.log(x / (x + 1.0)) + rise + (x + 1.0) * u_log + _logsumexp(_log_terms(x, zt, 2))
    log_still = rise + (x + 1.0) * u_log + _logsumexp(_log_terms(x, zt, 1))

    def share(log_weight: float) -> float:
        return math.exp(log_weight - log_z)

    p_wait = share(log_wait)
    p_abandon = share(log_abandon)
    p_immediate = share(log_immediate)
    p_served_queue = share(log_served)
    p_late = min(share(log_late), p_served_queue)
    p_still = share(log_still)
    answered_within = p_immediate + p_served_queue - p_late
    abandoned_within = min(max(p_wait - (p_served_queue - p_late) - p_still, 0.0), p_abandon)
    p_answer = p_immediate + p_served_queue
    asa = share(log_served_wait) / p_answer if p_answer > 0.0 else math.inf
    return QueuePerformance(
        agents=n,
        erlangs=a,
        aht=aht,
        patience=patience,
        answer_within=T,
        p_wait=p_wait,
        p_abandon=p_abandon,
        service_level=answered_within,
        service_level_ignoring_abandons=answered_within / p_answer if p_answer > 0.0 else 0.0,
        service_level_abandons_met=min(answered_within + abandoned_within, 1.0),
        asa=asa,
        mean_wait=p_abandon * patience,  # Little: E[W] = E[Q]/λ = P(Ab)/θ
        occupancy=a * (1.0 - p_abandon) / n,
    )


# --------------------------------------------------------------------------------------------- staffing


def _performance(agents: int, erlangs: float, aht: float, answer_within: float, patience: float | None):
    if patience is None or math.isinf(patience):
        return erlang_c_performance(agents, erlangs, aht, answer_within)
    return erlang_a(agents, erlangs, aht, patience, answer_within)


def agents_for_service_level(
    erlangs: float,
    aht: float,
    target: float = 0.8,
    answer_within: float = 20.0,
    *,
    patience: float | None = None,
    max_occupancy: float | None = None,
) -> int:
    """The fewest agents that answer ``target`` of the offered calls within ``answer_within`` seconds.

    Erlang C without ``patience``, Erlang A with it. ``max_occupancy`` (e.g. 0.85) adds the floor
    N >= A·(1 − P(Ab))/max_occupancy. The service level rises with N, so the answer is found by doubling
    then bisection.
    """
    _check_load(0, erlangs)
    _check_times(aht, answer_within)
    if not 0.0 < target < 1.0:
        raise ValueError(f"the service-level target must lie strictly between 0 and 1, not {target!r}")
    if max_occupancy is not None and not 0.0 < max_occupancy <= 1.0:
        raise ValueError(f"max_occupancy must lie in (0, 1], not {max_occupancy!r}")
    if erlangs == 0.0:
        return 0

    def enough(n: int) -> bool:
        perf = _performance(n, erlangs, aht, answer_within, patience)
        if perf.service_level < target:
            return False
        return max_occupancy is None or perf.occupancy <= max_occupancy

    # Agents carry at most N erlangs, so SL >= target needs N >= target·A (and N > A in Erlang C).
    lo = max(1, math.floor(target * erlangs)) if patience is not None else math.floor(erlangs) + 1
    if enough(lo):
        # Only reachable with abandonment; walk down is not needed: lo is already the lower bound.
        return lo
    step, hi = max(1, int(math.sqrt(erlangs))), lo
    while not enough(hi):
        lo = hi
        hi += step
        step *= 2
        if hi > _MAX_AGENTS:
            raise ValueError(f"no staffing up to {_MAX_AGENTS} agents reaches the target")
    while hi - lo > 1:  # invariant: lo fails, hi succeeds
        mid = (lo + hi) // 2
        if enough(mid):
            hi = mid
        else:
            lo = mid
    return hi


@dataclass(frozen=True, slots=True)
class IntervalStaffing:
    """The agents one interval needs, and what they achieve."""

    index: int
    calls: float
    erlangs: float
    agents: int
    performance: QueuePerformance | None  # None when no call is forecast


def staff_intervals(
    calls: Sequence[float],
    aht: float | Sequence[float],
    *,
    interval: float = 1800.0,
    target: float = 0.8,
    answer_within: float = 20.0,
    patience: float | None = None,
    max_occupancy: float | None = None,
) -> list[IntervalStaffing]:
    """Agents per interval from the calls forecast for each interval (e.g. the busy-hour figures).

    ``calls[i]`` calls of mean handle time ``aht`` (one figure, or one per interval) offered in an interval
    of ``interval`` seconds make A = calls·AHT/interval erlangs; each interval is staffed on its own
    (steady state within the interval, the usual workforce-management assumption).
    """
    if interval <= 0.0:
        raise ValueError(f"the interval must be a positive number of seconds, not {interval!r}")
    counts = np.asarray(calls, dtype=np.float64)
    handle = np.broadcast_to(np.asarray(aht, dtype=np.float64), counts.shape)
    if np.any(counts < 0.0) or not np.all(np.isfinite(counts)):
        raise ValueError("call counts must be finite and >= 0")
    load = counts * handle / interval
    rows = []
    for i, (c, h, a) in enumerate(zip(counts.tolist(), handle.tolist(), load.tolist())):
        if c == 0.0:
            rows.append(IntervalStaffing(i, 0.0, 0.0, 0, None))
            continue
        n = agents_for_service_level(a, h, target, answer_within, patience=patience, max_occupancy=max_occupancy)
        rows.append(IntervalStaffing(i, c, a, n, _performance(n, a, h, answer_within, patience)))
    return rows
