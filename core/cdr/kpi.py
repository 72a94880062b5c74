"""Call-centre KPIs from call records: per node, trunk, queue, agent and campaign, per 15/30/60-minute
interval; live (a record added as each call ends) and historical (a batch of records turned into numpy
columns) through the same ``KpiBook``, so the two agree exactly.

Every definition, with its formula and the standard it follows, is in docs/kpis.md; the names here are the
ones used there. In short: connect rate, call-loss rate, abandonment (with and without short abandons),
service level in three variants, ASA, average queue time, AHT, occupancy and utilisation per agent,
answer-seizure ratio and network effectiveness ratio (ITU-T E.411/E.425), post-dial delay (ITU-T E.721),
average call duration.

How "exactly" is kept: a ``KpiBook`` holds only counts and sums of durations in whole milliseconds
(``Counters``), and every figure is a ratio of those, computed in one place (``Counters.figures``).
Durations become milliseconds by the same IEEE operations in both paths — ``round(d * 1000.0)`` per record,
``np.rint(d * 1000.0)`` per column, both round-half-even — and integer sums do not depend on the order of
addition, so a book fed one record at a time equals a book fed the same records as columns.

Binning: call facts (connect rate, call loss, ASR/NER, PDD, duration) count in the interval in which the
call was offered (``CallRecord.offered``); queue facts in the interval in which the caller joined the queue
(``QueueSegment.joined``); agent facts in the interval in which the segment ended (the agent answered).
Agents' logged-in and available time come from the agent state log, handed in with ``add_agent_time``.
Counters add, so a 15-minute book rolls up into 30 or 60 minutes exactly (``rollup``).
"""
from __future__ import annotations

import gc
import math
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, fields
from itertools import repeat
from operator import attrgetter, itemgetter
from typing import Iterable, Iterator, Sequence

import msgspec
import numpy as np

from core.cdr.record import CallRecord, Direction, Disposition, QueueOutcome

try:  # the compiled reader of stored records (core/_cdrscan.pyx); this module's readers are its twin
    from core import _cdrscan
except ImportError:  # not built: the pure-Python path does everything
    _cdrscan = None

COMPILED = _cdrscan is not None  # whether add_encoded / Columns.from_encoded read records in C by default

__all__ = [
    "DIMENSIONS",
    "KpiConfig",
    "Counters",
    "Figures",
    "KpiBook",
    "Columns",
    "KpiView",
    "decode_views",
    "COMPILED",
]

DIMENSIONS = ("node", "trunk", "queue", "agent", "campaign")

# Disposition codes, in a fixed order: the columnar path counts them with one bincount.
_DISPOSITIONS = tuple(Disposition)
_DISP_FIELD = {d: d.name.lower() for d in _DISPOSITIONS}
_DISP_CODE = {d: i for i, d in enumerate(_DISPOSITIONS)}
_DISP_CODE.update({d.value: i for i, d in enumerate(_DISPOSITIONS)})
_OUTCOMES = tuple(QueueOutcome)
_OUTCOME_CODE = {o: i for i, o in enumerate(_OUTCOMES)}
_OUTCOME_CODE.update({o.value: i for i, o in enumerate(_OUTCOMES)})
_ANSWERED = _DISP_CODE[Disposition.ANSWERED]
_Q_ANSWERED = _OUTCOME_CODE[QueueOutcome.ANSWERED]
_Q_ABANDONED = _OUTCOME_CODE[QueueOutcome.ABANDONED]
_INBOUND = {Direction.INBOUND: 0, Direction.OUTBOUND: 1, "inbound": 0, "outbound": 1}


class KpiConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Thresholds that decide what is counted; a book keeps one for its whole life."""

    interval: int = 900  # seconds: 900, 1800 or 3600 (any positive whole number of seconds works)
    answer_within: float = 20.0  # service-level threshold T (the 80/20 rule's 20 s)
    short_abandon: float = 5.0  # abandons quicker than this are "short" (excluded in one variant)

    def __post_init__(self) -> None:
        if self.interval <= 0:
            raise ValueError(f"interval must be a positive number of seconds, not {self.interval!r}")
        if self.answer_within < 0 or self.short_abandon < 0:
            raise ValueError("thresholds must be >= 0 seconds")


def _ms(seconds: float) -> int:
    # The one rounding rule (half-even, like np.rint) shared with the columnar path.
    return round(seconds * 1000.0)


# --------------------------------------------------------------------------------------------- counters

_CALL_FIELDS = (
    "inbound_offered",
    "inbound_answered",
    "outbound_attempted",
    "outbound_answered",
    *(_DISP_FIELD[d] for d in _DISPOSITIONS),  # calls by disposition: answered, busy, no_answer, ...
    "connect_ms",  # Σ (answered − offered) of answered calls
    "talk_ms",  # Σ (ended − answered) of answered calls
    "pdd_ms",  # Σ post-dial delay, over the calls that have one
    "pdd_calls",
)
_QUEUE_FIELDS = (
    "queued",  # queue segments entered
    "queue_answered",
    "queue_abandoned",
    "short_abandoned",  # abandoned after waiting less than short_abandon
    "answered_within",  # answered after waiting <= answer_within
    "abandoned_within",  # abandoned after waiting <= answer_within
    "wait_ms",  # Σ queue time of every segment
    "answer_wait_ms",  # Σ queue time of answered segments
    "abandon_wait_ms",  # Σ queue time of abandoned segments
)
_AGENT_FIELDS = (
    "handled",  # calls answered by an agent (queue: from this queue; agent: by this agent)
    "handle_ms",  # Σ talk time + after-call work of those calls
    "offers",  # agent: times the agent's phone was rung
    "logged_in_ms",  # agent: time logged in (input, from the agent state log)
    "available_ms",  # agent: time idle and ready (input)
)
COUNTER_FIELDS = _CALL_FIELDS + _QUEUE_FIELDS + _AGENT_FIELDS


class Counters:
    """Counts and millisecond sums for one (dimension, key, interval). Everything here adds."""

    __slots__ = COUNTER_FIELDS

    def __init__(self) -> None:
        for name in COUNTER_FIELDS:
            setattr(self, name, 0)

    def __iadd__(self, other: Counters) -> Counters:
        for name in COUNTER_FIELDS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        return self

    def as_tuple(self) -> tuple[int, ...]:
        return tuple(getattr(self, name) for name in COUNTER_FIELDS)

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in COUNTER_FIELDS}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Counters) and self.as_tuple() == other.as_tuple()

    def __repr__(self) -> str:
        nonzero = ", ".join(f"{k}={v}" for k, v in self.as_dict().items() if v)
        return f"Counters({nonzero})"

    def figures(self) -> Figures:
        """Every KPI of docs/kpis.md; None where the denominator is zero (no call to measure).

        Each ratio is written out as ``num / den if den else None`` (a time: ``ms / den / 1000.0``) rather than
        through a helper: a report computes this for every group, and the calls were half of its time.
        """
        inbound_offered, outbound_attempted = self.inbound_offered, self.outbound_attempted
        answered, queued, handled = self.answered, self.queued, self.handled
        queue_answered, queue_abandoned = self.queue_answered, self.queue_abandoned
        answered_within, short_abandoned = self.answered_within, self.short_abandoned
        refused, pdd_calls, offers = self.refused_no_channel, self.pdd_calls, self.offers
        logged_in_ms, busy_ms = self.logged_in_ms, self.handle_ms
        calls = inbound_offered + outbound_attempted
        seizures = calls - refused
        # ITU-T E.425: answer, user busy, ring-no-answer and terminal rejection are network successes.
        effective = answered + self.busy + self.no_answer + self.declined
        answered_or_other = queued - queue_abandoned
        not_short = queued - short_abandoned
        ready_ms = busy_ms + self.available_ms
        return Figures(
            calls,
            self.inbound_answered / inbound_offered if inbound_offered else None,  # connect_rate_inbound
            self.outbound_answered / outbound_attempted if outbound_attempted else None,  # connect_rate_outbound
            refused / calls if calls else None,  # call_loss_rate
            answered / seizures if seizures else None,  # answer_seizure_ratio
            effective / seizures if seizures else None,  # network_effectiveness_ratio
            self.pdd_ms / pdd_calls / 1000.0 if pdd_calls else None,  # post_dial_delay
            self.connect_ms / answered / 1000.0 if answered else None,  # average_connect_time
            self.talk_ms / answered / 1000.0 if answered else None,  # average_call_duration
            queued,
            queue_answered / queued if queued else None,  # queue_answer_rate
            queue_abandoned / queued if queued else None,  # abandonment_rate
            (queue_abandoned - short_abandoned) / not_short if not_short else None,  # ..._excluding_short
            answered_within / answered_or_other if answered_or_other else None,  # service_level_ignoring_abandons
            answered_within / queued if queued else None,  # service_level
            (answered_within + self.abandoned_within) / queued if queued else None,  # service_level_abandons_met
            self.answer_wait_ms / queue_answered / 1000.0 if queue_answered else None,  # average_speed_of_answer
            self.wait_ms / queued / 1000.0 if queued else None,  # average_queue_time
            self.abandon_wait_ms / queue_abandoned / 1000.0 if queue_abandoned else None,  # ..._time_to_abandon
            busy_ms / handled / 1000.0 if handled else None,  # average_handle_time
            (busy_ms / ready_ms if ready_ms else None) if logged_in_ms else None,  # occupancy
            busy_ms / logged_in_ms if logged_in_ms else None,  # utilisation
            handled / offers if offers else None,  # agent_answer_rate
        )


@dataclass(frozen=True, slots=True)
class Figures:
    """The KPIs of one (dimension, key, interval); ratios in [0, 1], times in seconds."""

    calls: int
    connect_rate_inbound: float | None
    connect_rate_outbound: float | None
    call_loss_rate: float | None
    answer_seizure_ratio: float | None
    network_effectiveness_ratio: float | None
    post_dial_delay: float | None
    average_connect_time: float | None
    average_call_duration: float | None
    queued: int
    queue_answer_rate: float | None
    abandonment_rate: float | None
    abandonment_rate_excluding_short: float | None
    service_level_ignoring_abandons: float | None
    service_level: float | None  # abandons counted against: the default
    service_level_abandons_met: float | None
    average_speed_of_answer: float | None
    average_queue_time: float | None
    average_time_to_abandon: float | None
    average_handle_time: float | None
    occupancy: float | None
    utilisation: float | None
    agent_answer_rate: float | None

    def as_dict(self) -> dict[str, float | int | None]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


# --------------------------------------------------------------------------------------------- the book

Group = tuple[str, str, int]  # (dimension, key, interval start in seconds)


class KpiBook:
    """Counters per (dimension, key, interval start). Feed it records as calls end (``add``), or a batch
    as columns (``add_columns`` / ``from_records``); read figures with ``figures`` or ``report``."""

    def __init__(self, config: KpiConfig | None = None, dimensions: Iterable[str] = DIMENSIONS):
        self.config = config or KpiConfig()
        self.dimensions = frozenset(dimensions)
        for dim in self.dimensions:
            _check_dimension(dim)
        self._groups: dict[Group, Counters] = {}
        self._t_ms = _ms(self.config.answer_within)
        self._short_ms = _ms(self.config.short_abandon)

    # ------------------------------------------------------------------ reading

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, KpiBook) and self.config == other.config
                and self.dimensions == other.dimensions and self._nonzero() == other._nonzero())

    def _nonzero(self) -> dict[Group, tuple[int, ...]]:
        return {g: c.as_tuple() for g, c in self._groups.items() if any(c.as_tuple())}

    def groups(self, dimension: str | None = None) -> Iterator[tuple[Group, Counters]]:
        items = self._groups.items()
        if dimension is not None:  # only that dimension's groups are sorted
            items = [item for item in items if item[0][0] == dimension]
        yield from sorted(items, key=itemgetter(0))

    def counters(self, dimension: str, key: str, start: float | None = None) -> Counters:
        """The counters of one key in one interval (the one holding ``start``), or over all intervals."""
        if start is not None:
            found = self._groups.get((dimension, key, self._start(start)))
            return found if found is not None else Counters()
        total = Counters()
        for (dim, k, _), c in self._groups.items():
            if dim == dimension and k == key:
                total += c
        return total

    def figures(self, dimension: str, key: str, start: float | None = None) -> Figures:
        return self.counters(dimension, key, start).figures()

    def report(self, dimension: str) -> dict[tuple[str, int], Figures]:
        """Every KPI of every key of one dimension, per interval: (key, interval start) → Figures."""
        _check_dimension(dimension)
        with _gc_paused():  # one Figures per group, none in a cycle: no collection needs to rescan the process
            return {(key, start): c.figures() for (dim, key, start), c in self.groups(dimension)}

    def rollup(self, interval: int) -> KpiBook:
        """The same counters in coarser intervals (a multiple of this book's interval)."""
        if interval % self.config.interval:
            raise ValueError(f"{interval} s is not a multiple of the book's {self.config.interval} s")
        book = KpiBook(msgspec.structs.replace(self.config, interval=interval), self.dimensions)
        for (dim, key, start), c in self._groups.items():
            book._get(dim, key, start - start % interval).__iadd__(c)
        return book

    # ------------------------------------------------------------------ writing, one record at a time

    def _start(self, t: float) -> int:
        iv = self.config.interval
        return math.floor(t / iv) * iv

    def _get(self, dimension: str, key: str, start: int) -> Counters:
        if dimension not in self.dimensions:
            return _DISCARD
        group = (dimension, key, start)
        c = self._groups.get(group)
        if c is None:
            c = self._groups[group] = Counters()
        return c

    def add_agent_time(self, agent: str, start: float, *, logged_in: float, available: float) -> None:
        """Seconds the agent was logged in and available (idle, ready) within the interval holding ``start``."""
        if available > logged_in or available < 0:
            raise ValueError("available time must lie between 0 and the logged-in time")
        c = self._get("agent", agent, self._start(start))
        c.logged_in_ms += _ms(logged_in)
        c.available_ms += _ms(available)

    def add(self, record: CallRecord) -> None:
        """Count one finished call (the live path, called as each record is committed)."""
        start = self._start(record.offered)
        targets = [self._get("node", record.node, start)]
        if record.trunk:
            targets.append(self._get("trunk", record.trunk, start))
        if record.campaign_id:
            targets.append(self._get("campaign", record.campaign_id, start))
        # Records made here hold the enums already; one read back from storage may hold their values
        # (an Enum's call, the conversion, is a Python-level function: skipped when not needed).
        disposition = record.disposition
        if type(disposition) is not Disposition:
            disposition = Disposition(disposition)
        answered = disposition is Disposition.ANSWERED
        direction = record.direction
        inbound = (direction if type(direction) is Direction else Direction(direction)) is Direction.INBOUND
        disp_field = _DISP_FIELD[disposition]
        connect = talk = 0
        timed = answered and record.answered is not None
        if timed:
            connect = _ms(record.answered - record.offered)
            talk = _ms(record.ended - record.answered)
        pdd = record.post_dial_delay
        for c in targets:
            if inbound:
                c.inbound_offered += 1
                c.inbound_answered += answered
            else:
                c.outbound_attempted += 1
                c.outbound_answered += answered
            setattr(c, disp_field, getattr(c, disp_field) + 1)
            if timed:
                c.connect_ms += connect
                c.talk_ms += talk
            if pdd is not None:
                c.pdd_ms += _ms(pdd)
                c.pdd_calls += 1
        for seg in record.queue_segments:
            self._add_segment(record, seg)

    def _add_segment(self, record: CallRecord, seg) -> None:
        start = self._start(seg.joined)
        targets = [self._get("node", record.node, start)]
        if seg.queue:
            targets.append(self._get("queue", seg.queue, start))
        if record.campaign_id:
            targets.append(self._get("campaign", record.campaign_id, start))
        outcome = QueueOutcome(seg.outcome)
        wait = _ms(seg.left - seg.joined)
        answered = outcome is QueueOutcome.ANSWERED
        abandoned = outcome is QueueOutcome.ABANDONED
        handle = 0
        if answered:
            agent_end = seg.agent_ended if seg.agent_ended is not None else record.ended
            handle = _ms(agent_end - seg.left) + _ms(seg.after_call_work)
        for c in targets:
            c.queued += 1
            c.wait_ms += wait
            if answered:
                c.queue_answered += 1
                c.answer_wait_ms += wait
                c.answered_within += wait <= self._t_ms
                c.handled += 1
                c.handle_ms += handle
            elif abandoned:
                c.queue_abandoned += 1
                c.abandon_wait_ms += wait
                c.short_abandoned += wait < self._short_ms
                c.abandoned_within += wait <= self._t_ms
        agent_start = self._start(seg.left)
        for agent in seg.agents_offered:
            if agent:
                self._get("agent", agent, agent_start).offers += 1
        if answered and seg.answered_by:
            c = self._get("agent", seg.answered_by, agent_start)
            c.handled += 1
            c.handle_ms += handle

    # ------------------------------------------------------------------ writing, a batch as columns

    @classmethod
    def from_records(cls, records: Iterable[CallRecord], config: KpiConfig | None = None,
                     dimensions: Iterable[str] = DIMENSIONS) -> KpiBook:
        """The historical path: a batch of records (or of ``decode_views`` views) → columns → one book."""
        book = cls(config, dimensions)
        book.add_columns(Columns.from_records(records, calls=book.needs_call_columns,
                                              agents=book.needs_agent_columns))
        return book

    def add_encoded(self, blobs: Sequence[bytes | memoryview], *, compiled: bool | None = None) -> None:
        """Add stored records (the values of one LMDB cursor scan), decoding only what this book reads.

        ``compiled`` picks the reader (``Columns.from_encoded``): by default the C one when it is built.
        The cyclic garbage collector is paused while the batch is decoded and added: a million short-lived
        views, or tens of thousands of new counters, would otherwise trigger collections that rescan every
        object of the process (a third of the time, measured).
        """
        with _gc_paused():
            cols = Columns.from_encoded(blobs, calls=self.needs_call_columns, agents=self.needs_agent_columns,
                                        compiled=compiled)
            self.add_columns(cols, compiled=COMPILED if compiled is None else compiled)

    @property
    def needs_agent_columns(self) -> bool:
        return "agent" in self.dimensions

    @property
    def needs_call_columns(self) -> bool:
        """Whether this book reads per-call columns (node, trunk and campaign figures do)."""
        return bool(self.dimensions & {"node", "trunk", "campaign"})

    def add_columns(self, cols: Columns, *, compiled: bool = False) -> None:
        """Add a batch: per dimension, group ids (key code × interval) and one bincount per counter.

        ``compiled=True`` sums every dimension in one pass in C (``core._cdrscan.tally``); the numpy code
        below is its twin and takes any batch the C tally declines (a time it cannot bin exactly).
        """
        if compiled:
            if _cdrscan is None:
                raise RuntimeError("core._cdrscan is not built (python setup.py build_ext --inplace)")
            try:
                self._add_tally(cols)
                return
            except _cdrscan.Unsupported:
                pass
        names = cols.names
        iv = self.config.interval
        if (self.needs_call_columns and not cols.has_calls) or (self.needs_agent_columns and not cols.has_agents):
            raise ValueError("these columns lack what this book keeps (calls=True for node, trunk and campaign "
                             "figures, agents=True for agent figures)")
        # ---- calls
        if cols.n and cols.has_calls:
            start = np.floor(cols.offered / iv)
            answered = cols.disposition == _ANSWERED
            timed = answered & ~np.isnan(cols.answered)
            inbound = cols.direction == 0
            connect = np.where(timed, np.rint((cols.answered - cols.offered) * 1000.0), 0.0)
            talk = np.where(timed, np.rint((cols.ended - cols.answered) * 1000.0), 0.0)
            has_pdd = ~np.isnan(cols.pdd)
            pdd = np.where(has_pdd, np.rint(np.where(has_pdd, cols.pdd, 0.0) * 1000.0), 0.0)
            sums = {
                "inbound_offered": inbound,
                "inbound_answered": inbound & answered,
                "outbound_attempted": ~inbound,
                "outbound_answered": ~inbound & answered,
                "connect_ms": connect,
                "talk_ms": talk,
                "pdd_ms": pdd,
                "pdd_calls": has_pdd,
            }
            for dim, codes, keep in (
                ("node", cols.node, None),
                ("trunk", cols.trunk, cols.trunk != cols.empty),
                ("campaign", cols.campaign, cols.campaign != cols.empty),
            ):
                self._scatter(dim, names, codes, start, keep, sums, cols.disposition)
        # ---- queue segments
        if cols.seg_rec.size:
            rec = cols.seg_rec
            start = np.floor(cols.seg_joined / iv)
            wait = np.rint((cols.seg_left - cols.seg_joined) * 1000.0)
            answered = cols.seg_outcome == _Q_ANSWERED
            abandoned = cols.seg_outcome == _Q_ABANDONED
            agent_end = np.where(np.isnan(cols.seg_agent_ended), cols.ended[rec], cols.seg_agent_ended)
            handle = np.where(
                answered,
                np.rint((agent_end - cols.seg_left) * 1000.0) + np.rint(cols.seg_acw * 1000.0),
                0.0,
            )
            sums = {
                "queued": np.ones(rec.size, dtype=bool),
                "wait_ms": wait,
                "queue_answered": answered,
                "answer_wait_ms": np.where(answered, wait, 0.0),
                "answered_within": answered & (wait <= self._t_ms),
                "handled": answered,
                "handle_ms": handle,
                "queue_abandoned": abandoned,
                "abandon_wait_ms": np.where(abandoned, wait, 0.0),
                "short_abandoned": abandoned & (wait < self._short_ms),
                "abandoned_within": abandoned & (wait <= self._t_ms),
            }
            self._scatter("queue", names, cols.seg_queue, start, cols.seg_queue != cols.empty, sums)
            if cols.has_calls:
                self._scatter("node", names, cols.node[rec], start, None, sums)
                campaign = cols.campaign[rec]
                self._scatter("campaign", names, campaign, start, campaign != cols.empty, sums)
            agent_start = np.floor(cols.seg_left / iv)
            keep = answered & (cols.seg_agent != cols.empty)
            self._scatter("agent", names, cols.seg_agent, agent_start, keep,
                          {"handled": answered, "handle_ms": handle})
        if cols.offer_agent.size:
            self._scatter("agent", names, cols.offer_agent, np.floor(cols.offer_time / iv),
                          cols.offer_agent != cols.empty, {"offers": np.ones(cols.offer_agent.size, dtype=bool)})

    def _add_tally(self, cols: Columns) -> None:
        if (self.needs_call_columns and not cols.has_calls) or (self.needs_agent_columns and not cols.has_agents):
            raise ValueError("these columns lack what this book keeps (calls=True for node, trunk and campaign "
                             "figures, agents=True for agent figures)")
        dims, codes, starts, sums = _cdrscan.tally(cols, self.config.interval, float(self._t_ms),
                                                   float(self._short_ms), self.dimensions)
        # The tally's columns in COUNTER_FIELDS order (the agent-time inputs are never in a record: zeros).
        order = [_cdrscan.TALLY_FIELDS.index(name) if name in _cdrscan.TALLY_FIELDS else -1
                 for name in COUNTER_FIELDS]
        sums = np.concatenate([sums, np.zeros((sums.shape[0], 1), dtype=sums.dtype)], axis=1)[:, order]
        names, groups = cols.names, self._groups
        for d, code, start, row in zip(dims.tolist(), codes.tolist(), starts.tolist(), sums.tolist()):
            group = (DIMENSIONS[d], names[code], start)
            c = groups.get(group)
            if c is None:  # most groups are new: set every counter at once (a loop in C, not in bytecode)
                c = groups[group] = Counters.__new__(Counters)
                deque(map(setattr, repeat(c, len(row)), COUNTER_FIELDS, row), maxlen=0)
            else:
                for name, v in zip(COUNTER_FIELDS, row):
                    if v:
                        setattr(c, name, getattr(c, name) + v)

    def _scatter(self, dim, names, codes, start, keep, sums, disposition=None) -> None:
        if dim not in self.dimensions:
            return
        if keep is not None:
            codes, start = codes[keep], start[keep]
            sums = {k: v[keep] for k, v in sums.items()}
            if disposition is not None:
                disposition = disposition[keep]
        if codes.size == 0:
            return
        s0 = int(start.min())
        rel = (start - s0).astype(np.int64)
        span = int(rel.max()) + 1
        gid = codes.astype(np.int64) * span + rel
        if span * (int(codes.max()) + 1) <= 4 * gid.size + 65536:
            size = span * (int(codes.max()) + 1)
            used = np.nonzero(np.bincount(gid, minlength=size))[0]
            index = None
        else:
            used, index = np.unique(gid, return_inverse=True)
            gid, size = index, used.size
        totals = {}
        for name, weights in sums.items():
            if weights.dtype == bool:
                totals[name] = np.bincount(gid[weights], minlength=size)
            else:
                totals[name] = np.bincount(gid, weights=weights, minlength=size)
        if disposition is not None:
            nd = len(_DISPOSITIONS)
            by_disp = np.bincount(gid * nd + disposition, minlength=size * nd).reshape(size, nd)
            for i, d in enumerate(_DISPOSITIONS):
                totals[_DISP_FIELD[d]] = by_disp[:, i]
        iv = self.config.interval
        rows = used if index is None else np.arange(used.size)
        columns = {name: arr[rows].tolist() for name, arr in totals.items()}
        for pos, g in enumerate(used.tolist()):
            code, r = divmod(g, span)
            c = self._get(dim, names[code], (s0 + r) * iv)
            for name, values in columns.items():
                v = values[pos]
                if v:
                    setattr(c, name, getattr(c, name) + int(v))


@contextmanager
def _gc_paused():
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


_DISCARD = Counters()  # where the facts of a dimension the book does not keep go (never read)


def _check_dimension(dimension: str) -> None:
    if dimension not in DIMENSIONS:
        raise ValueError(f"unknown dimension {dimension!r}: one of {', '.join(DIMENSIONS)}")


# --------------------------------------------------------------------------------------------- columns


class Columns:
    """A batch of records as numpy columns: one row per call, one per queue segment, one per ring offer.

    Names (node, trunk, campaign, queue, agent) are codes into ``names``; ``empty`` is the code of "".
    Missing times are NaN. ``calls=False`` skips the per-call columns a queue or agent report does not
    read (``ended`` is always kept: an answered segment without an agent end time ends with the call).
    """

    __slots__ = (
        "n", "names", "empty", "has_calls", "has_agents",
        "offered", "answered", "ended", "direction", "disposition", "pdd", "node", "trunk", "campaign",
        "seg_rec", "seg_queue", "seg_joined", "seg_left", "seg_outcome", "seg_agent", "seg_agent_ended",
        "seg_acw", "offer_agent", "offer_time",
    )

    @classmethod
    def from_records(cls, records: Iterable, *, calls: bool = True, agents: bool = True) -> Columns:
        """From CallRecords, or from any objects with the same attribute names (``KpiView``)."""
        rows = records if isinstance(records, (list, tuple)) else list(records)
        self = cls()
        n = self.n = len(rows)
        table: dict[str, int] = {"": 0}
        self.empty = 0
        self.has_calls = calls
        self.has_agents = agents
        if calls:
            times = _floats(rows, "offered", "answered", "ended", "post_dial_delay")
            self.offered, self.answered, self.ended, self.pdd = times
            self.direction = _lookup(map(attrgetter("direction"), rows), _INBOUND, n, np.int8)
            self.disposition = _lookup(map(attrgetter("disposition"), rows), _DISP_CODE, n, np.int64)
            self.node = _codes(list(map(attrgetter("node"), rows)), table)
            self.trunk = _codes(list(map(attrgetter("trunk"), rows)), table)
            self.campaign = _codes(list(map(attrgetter("campaign_id"), rows)), table)
        else:
            self.ended = np.fromiter(map(attrgetter("ended"), rows), dtype=np.float64, count=n)
        seg_lists = list(map(attrgetter("queue_segments"), rows))
        counts = np.fromiter(map(len, seg_lists), dtype=np.int64, count=n)
        segs = [s for group in seg_lists for s in group]
        m = len(segs)
        self.seg_rec = np.repeat(np.arange(n, dtype=np.int64), counts)
        self.seg_queue = _codes(list(map(attrgetter("queue"), segs)), table)
        self.seg_joined, self.seg_left, self.seg_agent_ended, self.seg_acw = _floats(
            segs, "joined", "left", "agent_ended", "after_call_work")
        self.seg_outcome = _lookup(map(attrgetter("outcome"), segs), _OUTCOME_CODE, m, np.int8)
        if agents:
            self.seg_agent = _codes(list(map(attrgetter("answered_by"), segs)), table)
            offers = list(map(attrgetter("agents_offered"), segs))
            per_seg = np.fromiter(map(len, offers), dtype=np.int64, count=m)
            self.offer_agent = _codes([a for group in offers for a in group], table)
            self.offer_time = np.repeat(self.seg_left, per_seg)
        else:
            self.seg_agent = np.zeros(m, dtype=np.int32)  # every segment's agent reads as ""
            self.offer_agent, self.offer_time = np.empty(0, dtype=np.int32), np.empty(0)
        names = [""] * len(table)
        for name, code in table.items():
            names[code] = name
        self.names = names
        return self

    @classmethod
    def from_encoded(cls, blobs: Sequence[bytes | memoryview], *, calls: bool = True, agents: bool = True,
                     compiled: bool | None = None) -> Columns:
        """From stored records (the values of an LMDB scan), decoding only what the KPIs read.

        ``compiled=True`` (the default when core/_cdrscan is built) reads the bytes in C straight into the
        columns, with no Python object per record; ``False`` decodes views (``decode_views``) and builds the
        columns from them — the readable twin, which also takes any batch the C reader declines (a record it
        does not reproduce exactly, or a broken one: the twin then raises msgspec's error). Either way the
        columns hold the same values (names may be coded in another order), so books built from them are equal.
        """
        if compiled is None:
            compiled = COMPILED
        if compiled:
            if _cdrscan is None:
                raise RuntimeError("core._cdrscan is not built (python setup.py build_ext --inplace)")
            try:
                scanned = _cdrscan.scan_columns(blobs, calls=calls, agents=agents)
            except _cdrscan.Unsupported:
                pass
            else:
                self = cls()
                for name, value in scanned.items():
                    setattr(self, name, value)
                return self
        return cls.from_records(decode_views(blobs, calls=calls, agents=agents), calls=calls, agents=agents)


def _floats(rows: list, *attrs: str) -> list[np.ndarray]:
    # One pass for several attributes; None (a time that did not happen) becomes NaN.
    if not rows:
        return [np.empty(0) for _ in attrs]
    table = np.array(list(map(attrgetter(*attrs), rows)), dtype=np.float64)
    return [np.ascontiguousarray(table[:, i]) for i in range(len(attrs))]


def _lookup(values: Iterable, codes: dict, count: int, dtype) -> np.ndarray:
    return np.fromiter(map(codes.__getitem__, values), dtype=dtype, count=count)


def _codes(values: list[str], table: dict[str, int]) -> np.ndarray:
    # Names repeat (a few queues, trunks, agents): add the new ones, then one C-level lookup per row.
    for name in set(values).difference(table):
        table[name] = len(table)
    return np.fromiter(map(table.__getitem__, values), dtype=np.int32, count=len(values))


# --------------------------------------------------------------------------------------------- views


class _SegmentView(msgspec.Struct, array_like=True, gc=False):
    # The QueueSegment prefix the KPIs read (same field order; trailing fields are skipped on decode).
    queue: str
    joined: float
    left: float
    outcome: str
    agents_offered: tuple[str, ...] = ()
    answered_by: str = ""
    agent_ended: float | None = None
    after_call_work: float = 0.0


class KpiView(msgspec.Struct, array_like=True, gc=False):
    """The CallRecord prefix the KPIs read: same field order, legs left undecoded (``msgspec.Raw``)."""

    call_id: str
    direction: str
    offered: float
    ended: float
    disposition: str
    caller: str = ""
    callee: str = ""
    node: str = ""
    trunk: str = ""
    answered: float | None = None
    hangup_by: str = ""
    legs: msgspec.Raw = msgspec.Raw(b"\x90")
    queue_segments: tuple[_SegmentView, ...] = ()
    dtmf: str = ""
    recording: str = ""
    campaign_id: str = ""
    contact_id: str = ""
    post_dial_delay: float | None = None


class _QueueSegmentView(msgspec.Struct, array_like=True, gc=False):
    # What a queue report reads of a segment; Raw fields are sliced over, not decoded.
    queue: str
    joined: float
    left: float
    outcome: str
    agents_offered: msgspec.Raw = msgspec.Raw(b"\x90")
    answered_by: msgspec.Raw = msgspec.Raw(b"\xa0")
    agent_ended: float | None = None
    after_call_work: float = 0.0


class _QueueView(msgspec.Struct, array_like=True, gc=False):
    # What a queue report reads of a record: its end time and its queue segments.
    call_id: msgspec.Raw
    direction: msgspec.Raw
    offered: msgspec.Raw
    ended: float
    disposition: msgspec.Raw
    caller: msgspec.Raw = msgspec.Raw(b"\xa0")
    callee: msgspec.Raw = msgspec.Raw(b"\xa0")
    node: msgspec.Raw = msgspec.Raw(b"\xa0")
    trunk: msgspec.Raw = msgspec.Raw(b"\xa0")
    answered: msgspec.Raw = msgspec.Raw(b"\xc0")
    hangup_by: msgspec.Raw = msgspec.Raw(b"\xa0")
    legs: msgspec.Raw = msgspec.Raw(b"\x90")
    queue_segments: tuple[_QueueSegmentView, ...] = ()


_view_decoder = msgspec.msgpack.Decoder(list[KpiView])
_queue_view_decoder = msgspec.msgpack.Decoder(list[_QueueView])


def decode_views(blobs: Sequence[bytes], *, calls: bool = True, agents: bool = True) -> list:
    """Decode many stored records at once: their bytes joined under one MessagePack array header.

    With ``calls=False, agents=False`` only what a queue report reads is decoded (end time and queue
    segments without their agents); everything else is skipped over as ``msgspec.Raw``.
    """
    header = b"\xdd" + len(blobs).to_bytes(4, "big")  # array 32
    decoder = _view_decoder if calls or agents else _queue_view_decoder
    return decoder.decode(header + b"".join(blobs))
