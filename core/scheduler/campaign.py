"""An outbound campaign: who to dial next, and what happens to a contact after each result.

MISSION.md ("Outbound campaigns"). A campaign dials its contact list through one trunk with one caller
ID and hands answered calls to one queue. Modes: preview (an agent sees the contact and starts the call:
``preview``/``preview_dial``), progressive and predictive (the binding asks ``next_dials(now, count)``
with the count from ``core.scheduler.pacing.Pacer.decide``; ``pacing_config`` builds the pacer's config).

Theory of operation. Every contact is in one state: ``pending`` (due at ``due``), ``previewing`` (shown
to an agent), ``dialling`` (an attempt is open) or ``done`` (its last ``result`` says why: answered,
invalid, dnc, attempts, no_window, interrupted, a final disposition...). ``next_dials`` takes due
call-backs first (the times contacts asked for), then due contacts in (due, list order); before each
dial it checks, in this order:

* the do-not-call list (``DoNotCall``, shared by the node's campaigns; a number added at any time is
  never dialled afterwards, a call-back included);
* the calling window, judged in the contact's own time zones (every zone its number may be in: the
  window must be open in all of them), DST included because local time is computed by ``zoneinfo``
  for the instant ``now``. A contact outside its window waits for the next opening (call-backs too: the
  hours rule is kept even for a time the contact asked for; the call is made at the next opening);
* the attempt limit (``max_attempts``; a call-back the contact asked for is always made once more,
  up to ``max_callbacks`` call-backs per contact).

A result closes the attempt and decides the contact's next step from ``retry`` (result -> delay and an
optional limit of attempts ending that way): no rule means final. ``invalid`` and ``rejected`` have no
rule by default: a number that does not exist or a person who declined is not called again.

Write-ahead (the rule that nobody is dialled twice). Every state change queues a record (``records()``
drains them: ``ContactRecord``, ``Attempt``, ``CampaignStatus``, ``DncEntry``); the binding writes them
durably BEFORE it acts on what the call returned, so an attempt is on disk as ``dialling`` before its
INVITE leaves. One attempt record = at most one INVITE. After a crash, ``Campaign.restore`` closes every
attempt still ``dialling`` as ``interrupted``: it counts as an attempt (the INVITE may have rung the
person, who may have answered), and ``interrupted`` has no retry rule by default, so the contact is not
dialled again automatically. An operator may ``requeue`` it, or give ``interrupted`` a retry rule (a
delay: the person is then called again on purpose, after it, never by accident at once).

Sans-IO like the rest of ``core``: ``now`` (wall-clock seconds) is an argument everywhere.
"""
from __future__ import annotations

import heapq
import re
import zoneinfo
from datetime import datetime, time as clock_time, timedelta
from typing import Annotated, Iterable, Literal, Union

import msgspec
import phonenumbers

from core.scheduler.contacts import ColumnMapping, Contact, ImportProblem, valid_timezone
from core.scheduler.pacing import RULES, PacingConfig

__all__ = [
    "MODES", "RESULTS", "RETRYABLE", "DISPOSITION_CALLBACK", "DISPOSITION_DNC",
    "RetryRule", "CampaignConfig", "campaign_problems", "pacing_config",
    "ContactRecord", "Attempt", "CampaignStatus", "DncEntry", "Dial", "Preview", "CampaignError",
    "DoNotCall", "Campaign", "window_opening",
]

MODES = ("preview", "progressive", "predictive")

#: Results of a dial, as the call layer reports them.
RESULTS = ("answered", "busy", "no_answer", "rejected", "invalid", "failed", "abandoned", "machine")
#: What may come after a result: the contact asked for a call back at a time ("callback", ``at=``), or
#: the agent closed the call with a disposition code ("disposition", ``disposition=``).
FOLLOW_UPS = ("callback", "disposition")
#: Names a retry rule may have: the results that can fail to reach anyone, the agent's "call back"
#: without a time, and an attempt cut off by a restart.
RETRYABLE = ("busy", "no_answer", "rejected", "invalid", "failed", "abandoned", "machine", "callback",
             "interrupted")
DISPOSITION_CALLBACK = "callback"
DISPOSITION_DNC = "dnc"

# Contact states.
PENDING, PREVIEWING, DIALLING, DONE = "pending", "previewing", "dialling", "done"
# Campaign states.
NEW, RUNNING, PAUSED, STOPPED = "new", "running", "paused", "stopped"

_HHMM = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])$|^24:00$")


# -- configuration ---------------------------------------------------------------------------------
class RetryRule(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Try the contact again ``delay`` seconds after an attempt ended this way, while it has had fewer
    than ``limit`` attempts ending this way (and fewer than the campaign's ``max_attempts`` in all)."""

    delay: Annotated[float, msgspec.Meta(ge=0)]
    limit: Annotated[int, msgspec.Meta(ge=1)] | None = None


def _default_retry() -> dict[str, RetryRule]:
    return {
        "busy": RetryRule(300.0),
        "no_answer": RetryRule(3600.0),
        "failed": RetryRule(900.0),
        "machine": RetryRule(4 * 3600.0),
        "abandoned": RetryRule(3600.0),  # a person answered and heard the message: try again later
        "callback": RetryRule(3600.0),  # the agent's "call back" with no time given
    }


class CampaignConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """[[campaigns]]: one outbound campaign."""

    name: str
    trunk: str  # the [[trunks]] name calls go out through
    caller_id: str  # the number presented (From user part)
    queue: str  # the queue (agent group) answered calls are handed to
    mode: Literal["preview", "progressive", "predictive"] = "progressive"
    # The contact list (CSV, first line the header) read at the campaign's first start, and its columns.
    contacts: str | None = None
    columns: ColumnMapping = ColumnMapping()
    # Calling window, local time of the contact: dials start at or after window_start, before window_end.
    window_start: str = "08:00"
    window_end: str = "21:00"
    default_country: str = "US"  # ISO 3166 alpha-2, for numbers written without a country code
    default_timezone: str = "America/New_York"  # for numbers whose zone cannot be told from the prefix
    retry: dict[str, RetryRule] = msgspec.field(default_factory=_default_retry)
    max_attempts: Annotated[int, msgspec.Meta(ge=1)] = 3
    max_callbacks: Annotated[int, msgspec.Meta(ge=0)] = 3
    min_ring: Annotated[float, msgspec.Meta(gt=0)] = 15.0  # never give up on a ringing call before this
    max_ring: Annotated[float, msgspec.Meta(gt=0)] = 30.0  # the no-answer timer
    abandon_target: Annotated[float, msgspec.Meta(gt=0, lt=1)] = 0.03
    abandon_window: str | float = "us"  # "us" (30 days), "uk" (24 hours) or seconds
    connect_limit: Annotated[float, msgspec.Meta(gt=0)] = 2.0
    # The prompt an abandoned call hears (telemarketing rules ask for a recording naming the caller: a WAV).
    abandon_message: str = "beep"
    dnc: str | None = None  # a do-not-call list file (one number a line, or CSV) added to the node's list
    # Listen for an answering machine on each answered call before it goes to an agent (core.media.amd):
    # machines are hung up and counted "machine" (their retry rule applies).
    amd: bool = False


def _minutes(text: str) -> int:
    hours, minutes = text.split(":")
    return int(hours) * 60 + int(minutes)


def campaign_problems(config: CampaignConfig) -> list[tuple[str, str]]:
    """What is wrong with one campaign on its own, as (key under the campaign, problem); the config's
    rule adds the ``campaigns[i].`` prefix and checks trunk and queue names against the rest."""
    problems: list[tuple[str, str]] = []
    for key in ("window_start", "window_end"):
        if not _HHMM.match(getattr(config, key)):
            problems.append((key, f"expected HH:MM (00:00-24:00), got {getattr(config, key)!r}"))
    if not problems and _minutes(config.window_start) >= _minutes(config.window_end):
        problems.append(("window_end", f"the window ends ({config.window_end}) at or before it starts "
                                       f"({config.window_start})"))
    if config.default_country.upper() not in phonenumbers.SUPPORTED_REGIONS:
        problems.append(("default_country", f"not a country code (ISO 3166 alpha-2): {config.default_country!r}"))
    if not valid_timezone(config.default_timezone):
        problems.append(("default_timezone", f"not an IANA time zone: {config.default_timezone!r}"))
    for name in config.retry:
        if name not in RETRYABLE:
            problems.append((f"retry.{name}", f"not a result that can be retried (one of {', '.join(RETRYABLE)})"))
    if config.min_ring > config.max_ring:
        problems.append(("min_ring", f"min_ring ({config.min_ring:g} s) is longer than max_ring ({config.max_ring:g} s)"))
    window = config.abandon_window
    if isinstance(window, str) and window not in RULES:
        problems.append(("abandon_window", f'expected "us", "uk" or seconds, got {window!r}'))
    elif not isinstance(window, str) and window <= 0:
        problems.append(("abandon_window", "expected a positive number of seconds"))
    if not config.caller_id.strip():
        problems.append(("caller_id", "empty"))
    return problems


def pacing_config(config: CampaignConfig) -> PacingConfig:
    """The pacer's settings for this campaign (preview campaigns pace nothing: progressive is returned
    so a pacer, if made, never over-dials)."""
    window = config.abandon_window
    return PacingConfig(
        mode="predictive" if config.mode == "predictive" else "progressive",
        abandon_target=config.abandon_target,
        window=RULES[window] if isinstance(window, str) else float(window),
        connect_limit=config.connect_limit,
        max_ring=config.max_ring,
        abandon_message=config.abandon_message,
    )


# -- records (what the binding persists) -----------------------------------------------------------
class ContactRecord(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """A contact and where it stands in its campaign."""

    campaign: str
    contact: Contact
    order: int  # place in the list (a skipped preview goes to the end)
    state: str = PENDING
    due: float = 0.0  # not dialled before this (a retry's or call-back's time)
    attempts: int = 0
    allowance: int = 0  # attempts it may have (max_attempts, raised by a call-back asked for)
    callback: bool = False  # due is a time the contact asked for: goes before ordinary contacts
    callbacks: int = 0
    result: str = ""  # last result (for a done contact: why it is done)
    tally: dict[str, int] = {}  # attempts ending with each result
    agent: str = ""  # previewing agent, or the agent a call-back was promised by
    disposition: str = ""


class Attempt(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """One dial. Written as ``dialling`` before its INVITE leaves; closed with its result."""

    campaign: str
    seq: int
    contact: str
    phone: str
    started: float
    state: str = DIALLING  # dialling | closed
    result: str = ""
    ended: float = 0.0
    agent: str = ""
    disposition: str = ""
    callback: bool = False  # this dial kept a call-back promise


class CampaignStatus(msgspec.Struct, frozen=True, array_like=True, gc=False):
    name: str
    state: str
    changed: float
    next_seq: int = 1


class DncEntry(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """A number never to dial again, where it came from (file:NAME, api, disposition) and when."""

    number: str
    added: float
    source: str
    campaign: str = ""
    agent: str = ""


CampaignRecord = Union[ContactRecord, Attempt, CampaignStatus, DncEntry]


# -- what the binding acts on -----------------------------------------------------------------------
class Dial(msgspec.Struct, frozen=True, gc=False):
    """Place this call now (its attempt is recorded first). ``id`` is unique on the node and is the
    key of ``result`` and of the pacer's events."""

    id: str
    campaign: str
    contact: Contact
    number: str  # E.164
    trunk: str
    caller_id: str
    queue: str
    min_ring: float
    max_ring: float
    attempt: int  # this contact's attempt number, from 1
    callback: bool = False
    agent: str = ""  # preview: the agent who starts it; call-back: the agent who promised it


class Preview(msgspec.Struct, frozen=True, gc=False):
    """A contact shown to an agent before the call (preview mode)."""

    campaign: str
    agent: str
    contact: Contact
    attempts: int
    callback: bool
    last_result: str


class CampaignError(ValueError):
    """A request the campaign cannot honour in its state (unknown dial id, wrong state...)."""


class DoNotCall:
    """The node's do-not-call numbers (E.164), shared by every campaign; checked before every dial."""

    def __init__(self, entries: Iterable[DncEntry] = ()):
        self._entries: dict[str, DncEntry] = {e.number: e for e in entries}

    def __contains__(self, number: str) -> bool:
        return number in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, number: str) -> DncEntry | None:
        return self._entries.get(number)

    def add(self, number: str, now: float, source: str, *, campaign: str = "", agent: str = "") -> DncEntry | None:
        """Add an E.164 number; the new entry to persist, or None when it was listed already."""
        if number in self._entries:
            return None
        entry = self._entries[number] = DncEntry(number, now, source, campaign, agent)
        return entry

    def remove(self, number: str) -> DncEntry | None:
        """Take an E.164 number off the list (one put there by mistake); the entry it had, or None."""
        return self._entries.pop(number, None)


# -- calling windows -------------------------------------------------------------------------------
def _zone_opening(zone: zoneinfo.ZoneInfo, t: float, start: int, end: int) -> float:
    """The first instant >= t at which the window [start, end) (seconds of the local day) is open."""
    local = datetime.fromtimestamp(t, zone)
    second = local.hour * 3600 + local.minute * 60 + local.second + local.microsecond / 1e6
    if start <= second < end:
        return t
    day = local.date() if second < start else local.date() + timedelta(days=1)
    for _ in range(3):  # a day whose opening falls in a DST gap: the next wall time that exists
        opening = datetime.combine(day, clock_time(start // 3600, start // 60 % 60), tzinfo=zone).timestamp()
        if opening > t:
            return opening
        day += timedelta(days=1)
    return opening


def window_opening(zones: Iterable[str], now: float, start: str = "08:00", end: str = "21:00") -> float | None:
    """``now`` when the window is open in every zone at ``now``, else the next instant it is; None
    when the zones' windows never overlap (checked over a few days)."""
    infos = [zoneinfo.ZoneInfo(z) for z in zones]
    s, e = _minutes(start) * 60, _minutes(end) * 60
    t = now
    for _ in range(16):  # each pass moves t to a later opening or confirms it; bounded
        moved = False
        for zone in infos:
            opening = _zone_opening(zone, t, s, e)
            if opening > t:
                t, moved = opening, True
        if not moved:
            return t
        if t - now > 7 * 86_400:
            break
    return None


# -- the campaign ----------------------------------------------------------------------------------
class Campaign:
    """One campaign's state machine; see the module doc. One owner mutates it (no locks)."""

    def __init__(self, config: CampaignConfig, dnc: DoNotCall | None = None):
        self.config = config
        self.name = config.name
        self.dnc = dnc if dnc is not None else DoNotCall()
        self.state = NEW
        self.changed = 0.0
        self.contacts: dict[str, ContactRecord] = {}
        self.attempts: dict[int, Attempt] = {}  # seq -> attempt (every attempt of the campaign)
        self.counters: dict[str, int] = {}  # attempts closed per result
        self.dispositions: dict[str, int] = {}
        self._phones: dict[str, str] = {}  # E.164 -> contact id
        self._next_seq = 1
        self._next_order = 0
        self._version: dict[str, int] = {}  # contact id -> version of its heap entry
        self._callbacks: list[tuple[float, int, int, str]] = []  # (due, order, version, id)
        self._queue: list[tuple[float, int, int, str]] = []
        self._previews: dict[str, str] = {}  # agent -> contact id
        self._records: list[CampaignRecord] = []

    # -- records out --------------------------------------------------------------------------------
    def records(self) -> list[CampaignRecord]:
        """Every state change since the last call, in order; persist them before acting on a result."""
        out, self._records = self._records, []
        return out

    def status(self) -> CampaignStatus:
        return CampaignStatus(self.name, self.state, self.changed, self._next_seq)

    # -- lifecycle ------------------------------------------------------------------------------------
    def _set_state(self, state: str, allowed: tuple[str, ...], now: float) -> None:
        if self.state not in allowed:
            raise CampaignError(f"campaign {self.name!r} is {self.state}: cannot go {state}")
        self.state, self.changed = state, now
        self._records.append(self.status())

    def start(self, now: float) -> None:
        self._set_state(RUNNING, (NEW,), now)

    def pause(self, now: float) -> None:
        """No new dials; calls already out run to their end and their results are taken."""
        self._set_state(PAUSED, (RUNNING,), now)

    def resume(self, now: float) -> None:
        self._set_state(RUNNING, (PAUSED,), now)

    def stop(self, now: float) -> None:
        """For good: no dial afterwards; results of calls already out are still taken."""
        self._set_state(STOPPED, (NEW, RUNNING, PAUSED), now)

    # -- contacts in ----------------------------------------------------------------------------------
    def add_contacts(self, contacts: Iterable[Contact], now: float) -> list[ImportProblem]:
        """Add contacts to the list (pending, due now); one already in the campaign (same id or number)
        is kept out and reported by its line."""
        problems = []
        for contact in contacts:
            if contact.id in self.contacts:
                problems.append(ImportProblem(contact.line, f"contact id {contact.id!r} is already in the campaign"))
                continue
            if contact.phone in self._phones:
                problems.append(ImportProblem(contact.line, f"{contact.phone} is already in the campaign "
                                                            f"(contact {self._phones[contact.phone]!r})"))
                continue
            record = ContactRecord(self.name, contact, self._next_order, due=now, allowance=self.config.max_attempts)
            self._next_order += 1
            self._phones[contact.phone] = contact.id
            self._put(record)
        return problems

    def _put(self, record: ContactRecord, persist: bool = True) -> None:
        """Make ``record`` the contact's state: queue it if pending, and emit it."""
        cid = record.contact.id
        self.contacts[cid] = record
        version = self._version.get(cid, 0) + 1
        self._version[cid] = version
        if record.state == PENDING:
            heap = self._callbacks if record.callback else self._queue
            heapq.heappush(heap, (record.due, record.order, version, cid))
        if persist:
            self._records.append(record)

    def _update(self, record: ContactRecord, **changes) -> ContactRecord:
        new = msgspec.structs.replace(record, **changes)
        self._put(new)
        return new

    # -- choosing whom to dial ---------------------------------------------------------------------
    def next_due(self, now: float) -> float | None:
        """When the next pending contact may be dialled (its time and its window): ``now`` or earlier
        when one may be dialled now; None when nobody is pending. The binding's timer for the next
        ``next_dials`` (a lower bound: a contact found on the DNC list at the dial is closed instead)."""
        c = self.config
        openings: dict[tuple[str, ...], float | None] = {}
        due = None
        for heap in (self._callbacks, self._queue):
            while heap:
                entry = heap[0]
                if self._stale(entry):
                    heapq.heappop(heap)
                    continue
                if entry[0] <= now:
                    # Move a contact whose window is shut to its opening, so the timer sleeps until then.
                    zones = self.contacts[entry[3]].contact.timezones
                    if zones not in openings:
                        openings[zones] = window_opening(zones, now, c.window_start, c.window_end)
                    opening = openings[zones]
                    if opening is not None and opening > now:
                        heapq.heapreplace(heap, (opening,) + entry[1:])
                        continue
                break
            if heap and (due is None or heap[0][0] < due):
                due = heap[0][0]
        return due

    def _stale(self, entry) -> bool:
        _, _, version, cid = entry
        return self._version.get(cid) != version or self.contacts[cid].state != PENDING

    def _take(self, now: float, count: int) -> list[ContactRecord]:
        """Up to ``count`` contacts that may be dialled now, taken off the queues (call-backs first).
        Contacts on the DNC list or without a window are closed on the way; those outside their
        window wait for its opening."""
        taken: list[ContactRecord] = []
        c = self.config
        openings: dict[tuple[str, ...], float | None] = {}  # contacts share zones: one look-up per zone set
        for heap in (self._callbacks, self._queue):
            while heap and len(taken) < count and heap[0][0] <= now:
                entry = heapq.heappop(heap)
                if self._stale(entry):
                    continue
                record = self.contacts[entry[3]]
                if record.contact.phone in self.dnc:
                    self._update(record, state=DONE, result="dnc")
                    continue
                zones = record.contact.timezones
                if zones not in openings:
                    openings[zones] = window_opening(zones, now, c.window_start, c.window_end)
                opening = openings[zones]
                if opening is None:
                    self._update(record, state=DONE, result="no_window")
                    continue
                if opening > now:
                    # Not persisted: the opening is recomputed from the zones after a restart.
                    heapq.heappush(heap, (opening,) + entry[1:])
                    continue
                if record.attempts >= record.allowance:
                    self._update(record, state=DONE, result="attempts")
                    continue
                taken.append(record)
        return taken

    def _dial(self, record: ContactRecord, now: float, agent: str = "") -> Dial:
        """Open an attempt for ``record`` (the write-ahead records are queued) and describe the dial."""
        c = self.config
        seq = self._next_seq
        self._next_seq += 1
        attempt = Attempt(self.name, seq, record.contact.id, record.contact.phone, now, agent=agent or record.agent,
                          callback=record.callback)
        self.attempts[seq] = attempt
        self._records.append(attempt)  # attempts are never deleted: restore resumes after the highest seq
        record = self._update(record, state=DIALLING, attempts=record.attempts + 1, agent=agent or record.agent)
        return Dial(self.dial_id(seq), self.name, record.contact, record.contact.phone, c.trunk, c.caller_id,
                    c.queue, c.min_ring, c.max_ring, record.attempts, record.callback, attempt.agent)

    def dial_id(self, seq: int) -> str:
        return f"{self.name}:{seq}"

    def next_dials(self, now: float, count: int) -> list[Dial]:
        """Up to ``count`` calls to place now (progressive and predictive modes, while running)."""
        if self.state != RUNNING or count <= 0 or self.config.mode == "preview":
            return []
        return [self._dial(record, now) for record in self._take(now, count)]

    # -- preview mode -------------------------------------------------------------------------------
    def preview(self, agent: str, now: float) -> Preview | None:
        """The next contact for ``agent`` to look at (the same one again if the agent has one); None
        when nobody is due or the campaign is not running."""
        if agent not in self._previews:
            if self.state != RUNNING:
                return None
            taken = self._take(now, 1)
            if not taken:
                return None
            record = self._update(taken[0], state=PREVIEWING, agent=agent)
            self._previews[agent] = record.contact.id
        return self.shown(agent)

    def preview_dial(self, agent: str, now: float) -> Dial | None:
        """The agent starts the call of their preview. None (the contact goes back, or is closed) when
        it may no longer be dialled: put on the DNC list meanwhile, or its window shut."""
        cid = self._previews.pop(agent, None)
        if cid is None:
            raise CampaignError(f"agent {agent!r} has no contact in preview")
        record = self.contacts[cid]
        if self.state == STOPPED:
            self._update(record, state=PENDING, agent="")
            return None
        if record.contact.phone in self.dnc:
            self._update(record, state=DONE, result="dnc", agent="")
            return None
        c = self.config
        opening = window_opening(record.contact.timezones, now, c.window_start, c.window_end)
        if opening is None:
            self._update(record, state=DONE, result="no_window", agent="")
            return None
        if opening > now:
            self._update(record, state=PENDING, agent="", due=max(record.due, opening))
            return None
        return self._dial(record, now, agent)

    def shown(self, agent: str) -> Preview | None:
        """The preview ``agent`` has now, if any (nothing is taken: see ``preview``)."""
        cid = self._previews.get(agent)
        if cid is None:
            return None
        record = self.contacts[cid]
        return Preview(self.name, agent, record.contact, record.attempts, record.callback, record.result)

    def preview_release(self, agent: str, now: float) -> None:
        """The preview was never looked at (the agent's phone did not answer): the contact goes back
        to its place in the list."""
        cid = self._previews.pop(agent, None)
        if cid is None:
            raise CampaignError(f"agent {agent!r} has no contact in preview")
        self._update(self.contacts[cid], state=PENDING, agent="")

    def preview_skip(self, agent: str, now: float) -> None:
        """The agent passes: the contact goes to the end of the list."""
        cid = self._previews.pop(agent, None)
        if cid is None:
            raise CampaignError(f"agent {agent!r} has no contact in preview")
        record = self.contacts[cid]
        order = self._next_order
        self._next_order += 1
        self._update(record, state=PENDING, agent="", order=order)

    # -- results --------------------------------------------------------------------------------------
    def _attempt(self, dial_id: str) -> Attempt:
        name, _, seq = dial_id.rpartition(":")
        attempt = self.attempts.get(int(seq)) if name == self.name and seq.isdigit() else None
        if attempt is None:
            raise CampaignError(f"no attempt {dial_id!r} in campaign {self.name!r}")
        return attempt

    def result(self, dial_id: str, result: str, now: float, *, at: float | None = None,
               disposition: str | None = None, agent: str = "") -> bool:
        """The outcome of a dial (one of RESULTS), or a follow-up (``"callback"`` with ``at``, the time
        the contact asked for; ``"disposition"`` with the agent's code). A second result for a closed
        attempt is ignored (False); a follow-up may come after ``answered``."""
        attempt = self._attempt(dial_id)
        if result not in RESULTS and result not in FOLLOW_UPS:
            raise CampaignError(f"unknown result {result!r}")
        if result == "callback" and at is None:
            raise CampaignError("a callback needs the time asked for (at=)")
        if result == "disposition" and not disposition:
            raise CampaignError("a disposition needs its code (disposition=)")
        if attempt.state != DIALLING:
            if result not in FOLLOW_UPS:
                return False
        else:
            closed_as = result if result in RESULTS else "answered"  # a follow-up means someone answered
            attempt = msgspec.structs.replace(attempt, state="closed", result=closed_as, ended=now,
                                              agent=agent or attempt.agent)
            self.attempts[attempt.seq] = attempt
            self.counters[closed_as] = self.counters.get(closed_as, 0) + 1
            self._records.append(attempt)
            record = self.contacts[attempt.contact]
            tally = dict(record.tally)
            tally[closed_as] = tally.get(closed_as, 0) + 1
            if result in RESULTS:
                record = msgspec.structs.replace(record, tally=tally, result=closed_as)
                self._next_step(record, result, now)
                return True
            # Someone answered and the follow-up decides what comes next.
            self._update(record, tally=tally, result=closed_as, state=DONE, callback=False)
        if result == "callback":
            self._callback(self.contacts[attempt.contact], at, now, agent or attempt.agent)
        else:
            self._dispose(attempt, disposition, now, at, agent)
        return True

    def _dispose(self, attempt: Attempt, code: str, now: float, at: float | None, agent: str) -> None:
        attempt = msgspec.structs.replace(attempt, disposition=code, agent=agent or attempt.agent)
        self.attempts[attempt.seq] = attempt
        self._records.append(attempt)
        self.dispositions[code] = self.dispositions.get(code, 0) + 1
        record = self.contacts[attempt.contact]
        if code == DISPOSITION_DNC:
            entry = self.dnc.add(record.contact.phone, now, "disposition", campaign=self.name, agent=attempt.agent)
            if entry is not None:
                self._records.append(entry)
        if record.state in (DIALLING, PREVIEWING):
            # A late disposition: the contact has moved on to a newer attempt, which owns its state
            # (the DNC entry above still stops every dial after this one).
            return
        if code == DISPOSITION_DNC:
            self._update(record, state=DONE, result="dnc", disposition=code)
        elif code == DISPOSITION_CALLBACK:
            if at is not None:
                self._callback(record, at, now, attempt.agent, disposition=code)
            else:
                self._next_step(msgspec.structs.replace(record, disposition=code), "callback", now)
        else:
            self._update(record, state=DONE, disposition=code)

    def _callback(self, record: ContactRecord, at: float, now: float, agent: str, disposition: str = "") -> None:
        """A call back at ``at``, the time the contact asked for: always made once (within
        ``max_callbacks``), ahead of ordinary contacts."""
        if record.state in (DIALLING, PREVIEWING):
            raise CampaignError(f"contact {record.contact.id!r} is {record.state}")
        if record.callbacks >= self.config.max_callbacks:
            self._update(record, state=DONE, result="callbacks", disposition=disposition or record.disposition)
            return
        self._update(record, state=PENDING, due=at, callback=True, callbacks=record.callbacks + 1,
                     allowance=max(record.allowance, record.attempts + 1), agent=agent,
                     disposition=disposition or record.disposition)

    def _next_step(self, record: ContactRecord, result: str, now: float) -> None:
        """After an attempt ended with ``result``: retry per rule, or done."""
        rule = self.config.retry.get(result)
        if result == "answered" or rule is None:
            self._update(record, state=DONE, result=result, callback=False)
            return
        if record.attempts >= record.allowance or (rule.limit is not None and record.tally.get(result, 0) >= rule.limit):
            self._update(record, state=DONE, result=result, callback=False)
            return
        # A call-back that was busy or unanswered keeps its priority for its retries.
        self._update(record, state=PENDING, due=now + rule.delay, result=result)

    # -- operator actions -------------------------------------------------------------------------------
    def callback(self, contact_id: str, at: float, now: float, agent: str = "") -> None:
        """Schedule a call back asked for outside a call (the API, a CRM)."""
        record = self.contacts.get(contact_id)
        if record is None:
            raise CampaignError(f"no contact {contact_id!r}")
        self._callback(record, at, now, agent)

    def requeue(self, contact_id: str, now: float) -> None:
        """Put a done contact (an interrupted one, say) back in the list, due now, with one more attempt
        allowed: the operator's decision, never taken automatically."""
        record = self.contacts.get(contact_id)
        if record is None:
            raise CampaignError(f"no contact {contact_id!r}")
        if record.state != DONE:
            raise CampaignError(f"contact {contact_id!r} is {record.state}, not done")
        self._update(record, state=PENDING, due=now, allowance=max(record.allowance, record.attempts + 1))

    def add_dnc(self, number: str, now: float, source: str = "api", agent: str = "") -> DncEntry | None:
        """Put an E.164 number on the node's DNC list (the entry is also in ``records()``)."""
        entry = self.dnc.add(number, now, source, campaign=self.name, agent=agent)
        if entry is not None:
            self._records.append(entry)
        return entry

    # -- figures ----------------------------------------------------------------------------------------
    @property
    def in_flight(self) -> int:
        return sum(1 for a in self.attempts.values() if a.state == DIALLING)

    def pending(self) -> int:
        return sum(1 for r in self.contacts.values() if r.state in (PENDING, PREVIEWING))

    @property
    def finished(self) -> bool:
        """Every contact is done and no call is out."""
        return all(r.state == DONE for r in self.contacts.values())

    def snapshot(self) -> dict:
        """Everything that defines the campaign (for comparisons: a restored campaign equals the one
        that was saved)."""
        return {
            "status": self.status(),
            "contacts": dict(sorted(self.contacts.items())),
            "attempts": dict(sorted(self.attempts.items())),
            "counters": dict(sorted(self.counters.items())),
            "dispositions": dict(sorted(self.dispositions.items())),
            "dnc": sorted(self.dnc._entries),
        }

    # -- restart --------------------------------------------------------------------------------------
    @classmethod
    def restore(cls, config: CampaignConfig, dnc: DoNotCall, status: CampaignStatus | None,
                contacts: Iterable[ContactRecord], attempts: Iterable[Attempt], now: float) -> "Campaign":
        """The campaign as it was persisted. Attempts still ``dialling`` are closed as ``interrupted``
        (counted; retried only by an ``interrupted`` rule or ``requeue``), previews are released; the
        records of those changes are in ``records()`` for the binding to write."""
        campaign = cls(config, dnc)
        if status is not None:
            campaign.state, campaign.changed, campaign._next_seq = status.state, status.changed, status.next_seq
        max_order = -1
        for record in contacts:
            campaign._phones[record.contact.phone] = record.contact.id
            max_order = max(max_order, record.order)
            campaign._put(record, persist=False)
        campaign._next_order = max_order + 1
        for attempt in sorted(attempts, key=lambda a: a.seq):
            campaign.attempts[attempt.seq] = attempt
            campaign._next_seq = max(campaign._next_seq, attempt.seq + 1)
            if attempt.state != DIALLING:
                campaign.counters[attempt.result] = campaign.counters.get(attempt.result, 0) + 1
                if attempt.disposition:
                    campaign.dispositions[attempt.disposition] = campaign.dispositions.get(attempt.disposition, 0) + 1
        for attempt in [a for a in campaign.attempts.values() if a.state == DIALLING]:
            closed = msgspec.structs.replace(attempt, state="closed", result="interrupted", ended=now)
            campaign.attempts[attempt.seq] = closed
            campaign.counters["interrupted"] = campaign.counters.get("interrupted", 0) + 1
            campaign._records.append(closed)
            record = campaign.contacts.get(attempt.contact)
            if record is not None and record.state == DIALLING:
                tally = dict(record.tally)
                tally["interrupted"] = tally.get("interrupted", 0) + 1
                record = msgspec.structs.replace(record, tally=tally, result="interrupted")
                campaign._next_step(record, "interrupted", now)
        for record in list(campaign.contacts.values()):
            if record.state == PREVIEWING:
                campaign._update(record, state=PENDING, agent="")
            elif record.state == DIALLING:
                # Dialling with no open attempt (the contact's record reached the disk, its attempt's
                # close did too, but not the contact's next step): settle it from the last attempt.
                last = max((a for a in campaign.attempts.values() if a.contact == record.contact.id),
                           key=lambda a: a.seq, default=None)
                campaign._next_step(record, last.result if last else "interrupted", now)
        return campaign
