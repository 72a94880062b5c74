"""Call records from the running node: the call layer's events become ``CallRecord``s in LMDB.

DESIGN.md ("A call's way through", step 4; "Storage"): every call leaves exactly one record — answered,
busy, cancelled, failed, refused over a channel limit alike — written through the node's one
``CdrWriter``. At the answer (``CallConnected``) the call's record so far goes to the active-call
journal (``writer.answered``), so a crash from then on leaves it to be closed as "interrupted" when the
node reopens its data folder; at the end (``CallSummary``, with the media plane's per-leg figures and
the digits the legs carried) the final record is written (``writer.record``), which removes the
journal entry in the same transaction. Long calls have their journal entry re-written every
``refresh`` seconds, so an interrupted call's end is known to within that.

``record_of(summary, ...)`` is the pure mapping from the call layer's summary to the record: the
B2BUA's dispositions onto ``core.cdr.record.Disposition`` (a caller's CANCEL is "abandoned", a refusal
over a limit "refused-no-channel", a 404 or no route "invalid-number", 403/603 "declined"), who hung
up, and two legs: leg A (the caller's dialog, keyed by the call's Call-ID) and leg B (the dialog the
switch opened, keyed by its own Call-ID), each with the RTP figures of what arrived on it, and the
call's recording (a WAV's path relative to the data folder, ``bindings/media.py``) when it was recorded:
named in the journal entry already, so that a call cut off by a crash still points at its file.
"""
from __future__ import annotations

import asyncio
import logging
import time

import msgspec

from bindings.cdr import CdrWriter, CommitError
from core.call.b2bua import CallConnected, CallSummary
from core.cdr.kpi import KpiBook
from core.cdr.record import CallRecord, Direction, Disposition, HangupBy, Leg
from core.media.quality import LegFigures

__all__ = ["CallRecords", "record_of", "status_disposition"]

log = logging.getLogger("switchcore.cdr")

# Seconds between re-writes of a live call's journal entry (the bound on an interrupted call's end).
JOURNAL_REFRESH = 30.0

_DISPOSITIONS = {
    "answered": Disposition.ANSWERED,
    "busy": Disposition.BUSY,
    "no answer": Disposition.NO_ANSWER,
    "cancelled": Disposition.ABANDONED,
    "failed": Disposition.FAILED,
    "refused": Disposition.REFUSED_NO_CHANNEL,
    "no route": Disposition.INVALID_NUMBER,
}
_HANGUP = {"caller": HangupBy.CALLER, "callee": HangupBy.CALLEE}


def status_disposition(status: int) -> Disposition:
    """What a final SIP status means for a leg (the values of ``Disposition`` follow RFC 3261 §21)."""
    if 200 <= status < 300:
        return Disposition.ANSWERED
    if status in (486, 600):
        return Disposition.BUSY
    if status in (408, 480):
        return Disposition.NO_ANSWER
    if status in (403, 603):
        return Disposition.DECLINED
    if status in (404, 484, 604):
        return Disposition.INVALID_NUMBER
    if status == 487:
        return Disposition.ABANDONED  # the INVITE was CANCELled (RFC 3261 §9.2)
    return Disposition.FAILED


def _leg(leg_id: str, peer: str, summary: CallSummary, disposition: Disposition, status: int,
         figures: LegFigures | None, live: bool, times: tuple | None = None) -> Leg:
    media = {}
    if figures is not None:
        media = dict(packets_received=figures.packets_received, packets_lost=max(0, figures.packets_lost),
                     jitter_ms=round(figures.jitter_ms, 3),
                     mos=round(figures.mos, 2) if figures.packets_received else None)
    offered, ringing, answered = times if times is not None else (
        summary.offered_at, summary.ringing_at, summary.answered_at)
    return Leg(leg_id=leg_id, peer=peer, offered=offered, ringing=ringing,
               answered=answered if disposition is Disposition.ANSWERED else None,
               ended=None if live else summary.ended_at, disposition=disposition, sip_status=status, codec=summary.codec,
               **media)


def record_of(summary: CallSummary, *, node: str = "", figures: dict[str, LegFigures] | None = None,
              dtmf: str = "", live: bool = False, recording: str = "") -> CallRecord:
    """The call record of a finished call; with ``live`` (a ``CallConnected``'s summary) the record so
    far, its legs not yet ended (the recovery ends them at the journal entry's time)."""
    disposition = _DISPOSITIONS.get(summary.disposition)
    if disposition is None:  # "rejected": by the status the caller got
        disposition = status_disposition(summary.status)
    figures = figures or {}
    legs = [_leg(summary.call_id, summary.caller_uri or summary.caller, summary, disposition, summary.status,
                 figures.get("a"), live)]
    segments = tuple(summary.segments)
    if segments and segments[-1].answered_by and not live:
        # The agent's leg ended with the call: its talk time runs from the answer to here.
        segments = segments[:-1] + (msgspec.structs.replace(segments[-1], agent_ended=summary.ended_at),)
    if summary.leg_b_call_id is not None:
        status_b = summary.leg_b_status
        times = None
        if summary.leg_b_offered_at is not None:
            times = (summary.leg_b_offered_at, summary.leg_b_ringing_at, summary.leg_b_answered_at)
        leg_b = _leg(summary.leg_b_call_id, summary.leg_b_uri or summary.target or "", summary,
                     status_disposition(status_b) if status_b else Disposition.FAILED, status_b,
                     figures.get("b"), live, times)
        if segments and segments[-1].answered_by:
            leg_b = msgspec.structs.replace(leg_b, peer=segments[-1].answered_by)
        legs.append(leg_b)
    outbound = summary.direction == "outbound" or (
        summary.source == "users" and (summary.target or "").startswith("trunk:"))
    return CallRecord(
        call_id=summary.call_id,
        direction=Direction.OUTBOUND if outbound else Direction.INBOUND,
        offered=summary.offered_at,
        ended=summary.ended_at,
        disposition=disposition,
        caller=summary.caller,
        callee=summary.callee,
        node=node,
        trunk=summary.trunk or "",
        answered=summary.answered_at,
        hangup_by=_HANGUP.get(summary.hangup_by or "", HangupBy.SYSTEM),
        legs=tuple(legs),
        queue_segments=segments,
        dtmf=dtmf,
        recording=recording,
        campaign_id=summary.campaign_id,
        contact_id=summary.contact_id,
        post_dial_delay=(summary.ringing_at - summary.offered_at) if summary.ringing_at is not None else None,
    )


class CallRecords:
    """The node's side of the CDR writer: journal at the answer, record at the end; see the module doc."""

    def __init__(self, writer: CdrWriter, node: str = "", *, refresh: float = JOURNAL_REFRESH):
        self.writer = writer
        self.node = node
        self.refresh = refresh
        self._live: dict[str, CallRecord] = {}  # answered, not ended: their record so far
        self._pending: set[asyncio.Future] = set()
        self._refresher: asyncio.Task | None = None
        self.written = 0
        self.failed = 0
        # Live KPIs: every recorded call, counted as it ends (docs/kpis.md); the same counters a
        # report computes from the stored records of the same calls.
        self.kpis = KpiBook()

    def start(self) -> None:
        """Begin re-writing live calls' journal entries (call on the running loop)."""
        if self.refresh > 0:
            self._refresher = asyncio.get_running_loop().create_task(self._refresh_loop())

    def connected(self, event: CallConnected, recording: str = "") -> asyncio.Future:
        """The call was answered: journal its record so far (naming the recording being made, if
        any). The future is done when the entry is committed; the node holds the answer to the
        caller until then."""
        record = record_of(event.summary, node=self.node, live=True, recording=recording)
        self._live[event.call_id] = record
        fut = self.writer.answered_future(record, event.summary.answered_at)
        return self._track(fut, event.call_id, "journal")

    def ended(self, summary: CallSummary, figures: dict[str, LegFigures] | None = None,
              dtmf: str = "", recording: str = "") -> asyncio.Future:
        """The call is over: write its record (with its recording's path, "" when none). The future
        is done when the record is committed (then the call counts in the live KPIs); the node holds
        the final answers of the call (the 200 to a BYE) until then."""
        self._live.pop(summary.call_id, None)
        record = record_of(summary, node=self.node, figures=figures, dtmf=dtmf, recording=recording)
        return self._track(self.writer.record_future(record), summary.call_id, "record", record)

    def live_kpis(self, now: float, keep: float = 86400.0) -> dict:
        """The live counters as a document (``switchcore report --live`` reads it): per dimension, key
        and interval, every figure; intervals older than ``keep`` seconds are dropped from the book."""
        horizon = now - keep
        stale = [g for g in self.kpis._groups if g[2] + self.kpis.config.interval < horizon]
        for group in stale:
            del self.kpis._groups[group]
        rows = [{"dimension": dim, "key": key, "interval_start": start, **c.figures().as_dict()}
                for (dim, key, start), c in self.kpis.groups()]
        return {"node": self.node, "at": now, "interval": self.kpis.config.interval, "rows": rows}

    def _track(self, fut: asyncio.Future, call_id: str, what: str,
               record: CallRecord | None = None) -> asyncio.Future:
        # A future, not a task per write: the writer resolves it on this loop when its group commits.
        self._pending.add(fut)
        fut.add_done_callback(lambda t: self._done(t, call_id, what, record))
        return fut

    def _done(self, task: asyncio.Future, call_id: str, what: str, record: CallRecord | None) -> None:
        """A write's commit returned; a final ``record`` committed counts in the live KPIs."""
        self._pending.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self.failed += 1
            level = logging.ERROR if isinstance(exc, (CommitError, RuntimeError)) else logging.CRITICAL
            log.log(level, "cdr: %s of call %s not written: %r", what, call_id, exc)
        elif record is not None:
            self.written += 1
            self.kpis.add(record)

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self.refresh)
            if self._live:
                now = time.time()
                for record in list(self._live.values()):
                    self.writer.call_answered(record, now)

    def live(self) -> int:
        return len(self._live)

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop the refresher and wait (bounded) for every record handed to the writer to commit."""
        if self._refresher is not None:
            self._refresher.cancel()
            try:
                await self._refresher
            except asyncio.CancelledError:
                pass
            self._refresher = None
        if self._pending:
            done, left = await asyncio.wait(set(self._pending), timeout=timeout)
            if left:
                log.error("cdr: %d writes still pending after %.1f s", len(left), timeout)
