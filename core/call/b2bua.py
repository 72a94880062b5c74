"""The B2BUA: a call is two INVITE sessions, leg A (we are its UAS) and leg B (we are its UAC),
bridged by the switch, with the media of both anchored on the switch. Sans-IO, on the session layer.

What it does with a new INVITE (leg A): routes it (``core/call/routes.py``) to a registered user's
phone (the registrar's first binding) or a trunk; checks the channel limits (per trunk and per node:
over a limit the caller gets 503 with Retry-After and the call counts as refused, the call-loss of
the KPIs); takes a pair of RTP ports for each leg; and sends leg B's INVITE with A's offer anchored
on the switch (RFC 3264 §8 through ``core/sdp.py``: our address, leg B's port, our own o= line).
Then it relays: provisional responses (180, 183 with its SDP anchored on leg A's port), the 2xx
(B's answer anchored for A; both legs ACKed: the session layer ACKs B, A ACKs us), failures mapped
for the caller (486/600 → 486, 408 and the ring timeout → 480, 404 → 404, 5xx and transport
failures → 503, 3xx and 401/407 — which name B's side — → 480 and 503, others as they are),
CANCEL (RFC 3261 §9: CANCEL to B, 487 to A), BYE either way (§15), re-INVITEs (§14: hold and
resume, the offer anchored each way; an offer-less re-INVITE is answered from the switch's side with
the description it last sent, RFC 3264 §8) and the call's time limits (ring timeout: 480 and a
CANCEL; maximum duration: BYE both ways).

For the media engine it emits ``MediaBridge`` (ports of both legs and where each leg's far end
receives, from the SDP) when the media path is known — B's first answer, in a 183 or the 2xx — and
again when a re-INVITE moves it (with the codec and the telephone-event payload type of B's answer,
which the engine needs for its figures and RFC 4733 digits); ``MediaRelease`` when the call ends.
``CallConnected`` when the caller has been sent the 2xx (the CDR journal's entry: what a crash from
then on leaves to recover). ``CallSummary`` closes every call (the CDR writer's input): who called
whom, through which route, trunk or user, the times of offer, first ringing, answer and end,
disposition, who hung up, the status the caller got, and leg B's Call-ID, request-URI and final
status.

Events the B2BUA consumes come from the session layer (``SessionLayer.next_event``); it is fed the
transaction layer's events through ``handle_event(event, now)`` and drains the session layer's queue
itself. Its timers sit on the transaction layer's wheel as ``(call, name)`` items.
"""
from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass
from typing import AbstractSet, Any, Callable, Sequence

import msgspec

from core import acd as acd_model
from core.acd.log import QueueLogEntry
from core.call.ivr import MenuRun, Play, Route, StopPrompt
from core.call.routes import Router, RouteMatch, TrunkSources, dialled_number
from core.cdr.record import QueueOutcome, QueueSegment
from core.config import HANGUP, Config, parse_host_port, parse_target
from core.errors import LocalProtocolError, ProtocolError
from core.sdp import (
    AUXILIARY_FORMATS,
    OfferAnswerError,
    Originator,
    SessionDescription,
    intersect,
    parse_sdp,
)
from core.sip.addr import Peer
from core.sip.ids import random_below_2_31
from core.sip.session import (
    CALLING as SESSION_CALLING,
    CONFIRMED,
    EARLY as SESSION_EARLY,
    TERMINATED,
    CallAnswered,
    CallCancelled,
    CallConfirmed,
    CallEnded,
    CallFailed,
    IncomingCall,
    InDialogRequest,
    InviteSession,
    ProvisionalReceived,
    ReinviteAnswered,
    ReinviteConfirmed,
    ReinviteReceived,
    SessionLayer,
)
from core.sip.message import build_response, media_type
from core.sip.uri import parse_name_addr

__all__ = [
    "B2BUA",
    "Call",
    "CallConnected",
    "CallSummary",
    "MediaBridge",
    "MediaRelease",
    "MediaPlay",
    "MediaStop",
    "LiveAnswer",
    "PortAllocator",
    "map_failure",
]

# Call states.
ROUTING = "Routing"  # leg A arrived, leg B not yet sent
CALLING = "Calling"  # leg B's INVITE sent
EARLY = "Early"  # B sent a provisional response
ANSWERED = "Answered"  # B answered, A's ACK not yet in
HOSTED = "Hosted"  # the switch answered A itself: an IVR menu, a queue, a prompt; no B bridged
CONFIRMED_CALL = "Confirmed"
ENDED = "Ended"

# Dispositions of a call, as the CDR and the KPIs count them.
ANSWERED_D = "answered"
BUSY = "busy"
NO_ANSWER = "no answer"
CANCELLED = "cancelled"  # the caller hung up before the answer
FAILED = "failed"  # B's side failed (5xx, timeout, transport, bad SDP)
REFUSED = "refused"  # over a channel limit, or no media ports: the call-loss of Erlang B
NO_ROUTE = "no route"
REJECTED = "rejected"  # any other final status (403, 488, 603 ...)

# Who hung up.
CALLER = "caller"
CALLEE = "callee"
SWITCH = "switch"

# Timers on the wheel.
RING_TIMEOUT = "ring timeout"
MAX_DURATION = "max duration"
MENU = "menu"  # the IVR menu's digit deadline
PROMPT_GUARD = "prompt guard"  # a prompt whose end the media engine never reported
ACD_TIMER = "acd"
ANNOUNCE = "announce"  # a queued caller's next announcement of position and expected wait
IDLE_AFTER = "idle after wrap-up: "  # + agent id: the agent log's note that wrap-up is over
AMD_GUARD = "amd guard"  # an answering-machine verdict that never came
AMD_GUARD_SECONDS = 6.0
# A prompt the engine never reports finished (no media plane) is taken as done after this.
PROMPT_GUARD_SECONDS = 120.0

# Seconds a refused caller is told to wait (RFC 3261 §20.33).
RETRY_AFTER = "5"

# Seconds a released RTP port rests before a new call is given it while never-used ports remain:
# well past a finished call's last packets in flight (its peers stop sending at its BYE; a packet
# crosses a network in tens of milliseconds), so what they still send is not relayed into the next
# call (the media engine also empties a reused socket). Short enough that the ports resting at a few
# thousand calls a second (two pairs a call) fit among the engine's spare pairs: 3,000 calls/s rest
# 3,000 pairs, under the 4,096 kept by default.
PORT_QUARANTINE = 0.5


# -- events for the media engine and the CDR writer ------------------------------------------------
# Frozen Structs (msgspec): several are made per call, and a frozen dataclass sets each of its fields
# through object.__setattr__ (the summary's 30-odd took microseconds). No cycles: not GC-tracked.
class MediaBridge(msgspec.Struct, frozen=True, gc=False):
    """Relay between the legs: the switch receives leg A's RTP on ``leg_a_port`` and sends it to
    ``leg_b_remote``; leg B's on ``leg_b_port``, sent to ``leg_a_remote``. Emitted again when a
    re-INVITE changes where a leg receives."""

    call_id: str
    leg_a_port: int
    leg_a_remote: tuple[str, int]
    leg_b_port: int
    leg_b_remote: tuple[str, int]
    codec: str = ""  # the voice codec of B's answer ("PCMU" ...), "" when unknown
    dtmf_pt: int | None = None  # the telephone-event payload type (RFC 4733), None when not agreed
    amd: bool = False  # listen for an answering machine on leg a (``B2BUA.amd_result`` takes the verdict)


class LiveAnswer(msgspec.Struct, frozen=True, gc=False):
    """A call the switch placed was answered by a person (or the detector could not tell): it goes on
    to its target now (a campaign's 2-second clock starts here)."""

    call_id: str


class MediaPlay(msgspec.Struct, frozen=True, gc=False):
    """Play ``prompt`` (as the config names it: core.config.parse_prompt) to ``leg``'s phone, looped
    or once; the media plane reports its end with ``B2BUA.playback_done``."""

    call_id: str
    leg: str
    prompt: str
    loop: bool = False


class MediaStop(msgspec.Struct, frozen=True, gc=False):
    """Stop what plays to ``leg``."""

    call_id: str
    leg: str


class MediaRelease(msgspec.Struct, frozen=True, gc=False):
    """The call is over: stop relaying and free its ports."""

    call_id: str


class CallSummary(msgspec.Struct, frozen=True, gc=False):
    """One call, at its end (what the CDR writer records). Times are the ``now`` of each moment;
    ``answered_at`` is None for a call never answered. ``status`` is the final status leg A got."""

    call_id: str
    caller: str
    callee: str
    route: str | None
    target: str | None  # "user:1001", "trunk:carrier", ...
    trunk: str | None  # the trunk the call came in or went out on (outbound wins for a hairpin)
    user: str | None  # the registered user called
    source: str | None  # trunk name, "users" or None
    offered_at: float
    answered_at: float | None
    ended_at: float
    disposition: str
    hangup_by: str | None
    status: int
    # Appended fields (each with a default): what the call record's legs need.
    ringing_at: float | None = None  # B's first provisional response (relayed to A)
    codec: str = ""  # the voice codec of B's answer
    caller_uri: str = ""  # leg A's From URI
    leg_b_call_id: str | None = None  # None when leg B was never sent
    leg_b_uri: str = ""  # leg B's Request-URI
    leg_b_status: int = 0  # B's final status (487 once we CANCELled it), 0 when none
    segments: tuple[QueueSegment, ...] = ()  # the call's stays in queues, in order
    dtmf: str = ""  # digits the switch collected (IVR entries, SIP INFO), in order
    hosted: bool = False  # the switch answered the caller itself (IVR, queue, feature code)
    agent: str = ""  # the agent the call was bridged to, "" when none
    transferred_to: str = ""  # where a transfer (REFER) sent the call, "" when none
    direction: str = "inbound"  # "outbound" for a call the switch placed
    leg_b_offered_at: float | None = None  # leg B's own times (a hosted call's B leg starts later)
    leg_b_ringing_at: float | None = None
    leg_b_answered_at: float | None = None
    amd: str = ""  # an outbound call's answering-machine verdict: "human", "machine", "notsure"
    campaign_id: str = ""
    contact_id: str = ""


class CallConnected(msgspec.Struct, frozen=True, gc=False):
    """B answered and A was sent the 2xx: the call is up. ``summary`` is the call as it stands
    (disposition "answered", ``ended_at`` the answer time, ``hangup_by`` None): what the CDR
    journal keeps so that a crash from now on leaves an "interrupted" record."""

    call_id: str
    summary: CallSummary


def map_failure(status: int) -> tuple[int, str | None]:
    """What the caller gets for leg B's final failure ``status`` (408: timeout, 503: transport)."""
    if status in (486, 600):
        return 486, "Busy Here"
    if status == 408:
        return 480, "Temporarily Unavailable"
    if status == 404:
        return 404, "Not Found"
    if 500 <= status < 600:
        return 503, "Service Unavailable"
    if 300 <= status < 400:
        # A redirect names B's side of the switch; the caller could not follow it.
        return 480, "Temporarily Unavailable"
    if status in (401, 407):
        # B challenged the switch, not the caller.
        return 503, "Service Unavailable"
    return status, None


_STATIC_PT = {"pcmu": (0, 8000), "pcma": (8, 8000), "g722": (9, 8000), "g729": (18, 8000)}


def own_offer(codecs, address: str) -> SessionDescription:
    """An offer of the switch's own (for a leg whose caller sent none): ``codecs`` by name, static
    payload types where RFC 3551 has them, dynamic ones from 101; the port is set when anchored."""
    formats, maps, dynamic = [], [], 101
    for name in codecs:
        pt, rate = _STATIC_PT.get(name.lower(), (None, 8000))
        if pt is None:
            pt, dynamic = dynamic, dynamic + 1
        formats.append(str(pt))
        maps.append(f"a=rtpmap:{pt} {name}/{rate}\r\n")
        if name.lower() == "telephone-event":
            maps.append(f"a=fmtp:{pt} 0-15\r\n")
    kind = "IP6" if ":" in address else "IP4"
    text = (f"v=0\r\no=switchcore 1 1 IN {kind} {address}\r\ns=-\r\nc=IN {kind} {address}\r\nt=0 0\r\n"
            f"m=audio 9 RTP/AVP {' '.join(formats)}\r\n{''.join(maps)}a=sendrecv\r\n")
    return parse_sdp(text.encode())


# Queue-log kinds that change the agent's state (set by the switch).
_AGENT_STATE = {"offer": "offered", "answer": "talking", "noanswer": "idle"}


def _numbered(number: str, code: str, names: tuple[str, ...]) -> str | None:
    """The name a feature code followed by its number picks ("*632": the second), None when
    ``number`` is not ``code`` and one of those numbers."""
    rest = number[len(code):] if number.startswith(code) else ""
    if rest.isdigit() and 1 <= int(rest) <= len(names):
        return names[int(rest) - 1]
    return None


def _credentials(trunk) -> tuple[str, str] | None:
    """A trunk's digest credentials for its challenges to our INVITEs (RFC 3261 §22.2)."""
    return (trunk.username, trunk.password) if trunk is not None and trunk.username is not None else None


def _hop(host: str, port: int) -> tuple[str, Peer]:
    """A trunk's hostport as its URIs write it (an IPv6 address in brackets), and the next hop."""
    return (f"[{host}]:{port}" if ":" in host else f"{host}:{port}"), Peer("udp", host, port)


def _disposition(status: int) -> str:
    if status == 486:
        return BUSY
    if status == 480:
        return NO_ANSWER
    if status == 503:
        return FAILED
    return REJECTED


# RFC 3326: the CANCEL of a forked leg another leg answered, so that the phone logs no missed call.
COMPLETED_ELSEWHERE = 'SIP;cause=200;text="Call completed elsewhere"'


def _fork_rank(status: int) -> int:
    """How useful a forked leg's final failure is to the caller, lower better (RFC 3261 §16.7.6,
    read for phones behind a B2BUA): busy says the most, then no answer, then any other refusal,
    then a redirect (which names the switch's side), then a server or transport failure. A 6xx
    never waits to be compared: it ends the call at once."""
    if status in (486, 600):
        return 0
    if status in (408, 480, 487):
        return 1
    if 400 <= status < 500:
        return 2
    if 300 <= status < 400:
        return 3
    return 4


class Forks:
    """Legs ringing every contact of one user at once (a call's leg b, or one agent's queue offer):
    those still ringing, and the most useful final failure so far as (status, leg) (RFC 3261 §16.7.6)."""

    __slots__ = ("legs", "best")

    def __init__(self, legs: list["Leg"]):
        self.legs = legs
        self.best: tuple[int, Leg] | None = None

    def leg_of(self, session: InviteSession) -> "Leg | None":
        return next((leg for leg in self.legs if leg.session is session), None)

    def failed(self, leg: "Leg", status: int) -> bool:
        """``leg`` gave up with ``status``; True when that decides the whole: a 6xx (§16.7.6: it wins
        at once) or the last leg, ``best`` then the failure to report."""
        self.legs.remove(leg)
        best = self.best
        if best is None or status >= 600 or _fork_rank(status) < _fork_rank(best[0]):
            self.best = (status, leg)
        return status >= 600 or not self.legs


def _cancel_leg(session: InviteSession, now: float, reason: str | None) -> None:
    """Give up a leg the switch called: CANCEL it while it rings (RFC 3261 §9.1), with a Reason
    header (RFC 3326) when given; BYE it once answered (a 2xx that beat the CANCEL, §13.2.2.4)."""
    state = session.state
    if state == CONFIRMED:
        session.bye(now)
        return
    if state != SESSION_CALLING and state != SESSION_EARLY:
        return
    # Before any provisional the session sends the CANCEL once one arrives (§9.1), Reason and all; a
    # 2xx crossing it is ACKed and BYEd by the session.
    session.cancel(now, headers=(("Reason", reason),) if reason is not None else ())


class PortAllocator:
    """RTP ports of one worker: an even port (RTP) and the odd one above (RTCP, RFC 3550 §11) per
    leg, from ``[low, high]``.

    A port released more than ``quarantine`` seconds ago is handed out before a never-used one: the
    media engine keeps a released port's sockets open for a while (warm ports), and a port given
    again soon finds them open and bound. Within its quarantine a released port waits, so that
    packets its last call's peers still send do not reach the next call; only when every never-used
    port is taken is the longest-released port handed out even so (a full range: better a port that
    may hear a stray packet than a call refused). Released ports are taken oldest first."""

    def __init__(self, low: int, high: int, quarantine: float = PORT_QUARANTINE):
        first = low + (low % 2)
        self.quarantine = quarantine
        self._cold: deque[int] = deque(range(first, high, 2))  # never used; port + 1 <= high
        self._released: deque[tuple[int, float]] = deque()  # (port, when), oldest first
        self._taken: set[int] = set()

    def __len__(self) -> int:
        return len(self._cold) + len(self._released)

    def allocate(self, now: float) -> int | None:
        released = self._released
        if released and (released[0][1] <= now - self.quarantine or not self._cold):
            port = released.popleft()[0]
        elif self._cold:
            port = self._cold.popleft()
        else:
            return None
        self._taken.add(port)
        return port

    def allocate_pair(self, now: float) -> tuple[int, int] | None:
        """Ports for a call's two legs, or None (nothing kept) when the range has not two left."""
        port_a, port_b = self.allocate(now), self.allocate(now)
        if port_a is None or port_b is None:
            self.release(port_a, now)
            self.release(port_b, now)
            return None
        return port_a, port_b

    def release(self, port: int | None, now: float) -> None:
        if port is not None and port in self._taken:
            self._taken.remove(port)
            self._released.append((port, now))


def _restrict(offer: SessionDescription, supported: set[str]) -> SessionDescription:
    """The offer with each RTP stream's formats cut to the codecs we support (RFC 3264 §5.1); a
    stream left with nothing, or with only telephone-event/CN where voice was offered, is disabled
    (port 0). Raises OfferAnswerError (488) when no active stream is left."""
    out = offer.copy()
    active = 0
    for m in out.media:
        if m.port == 0 or not m.is_rtp:
            continue
        if not m.restrict_codecs(supported):
            m.port = 0
            continue
        active += 1
    if not active:
        names = sorted({c.name for m in offer.media for c in m.codecs()}) or ["no known codec"]
        raise OfferAnswerError(f"Not Acceptable Here: no common codec (offered {', '.join(names)})")
    return out


class Leg:
    """One side of a call: its INVITE session, its RTP port on the switch, where its far end
    receives, and the switch's o= line towards it."""

    __slots__ = ("session", "port", "remote", "origin", "last_sdp", "uri", "port_before", "offered", "ringing",
                 "answered")

    def __init__(self, session: InviteSession | None, port: int, offered: float | None = None):
        self.uri = ""  # the Request-URI of a leg the switch called
        # The leg's own times: INVITE sent (or received), first provisional, answer.
        self.offered = offered
        self.ringing: float | None = None
        self.answered: float | None = None
        self.port_before = 0  # a leg moved to another call's relay: its port there
        self.session = session
        self.port = port
        self.remote: tuple[str, int] | None = None
        self.origin = Originator(random_below_2_31())
        self.last_sdp: bytes = b""  # the description the switch last sent this leg


@dataclass(slots=True)
class Outbound:
    """A call the switch placed: where it goes once answered, the offer it made, the campaign."""

    target: str | None  # None: hold once answered, until ``B2BUA.send``
    offer: SessionDescription
    campaign_id: str = ""
    contact_id: str = ""
    detect: bool = False  # answering-machine detection before the call goes on
    amd: str = ""  # "pending" while listening, then the verdict
    agent: str = ""  # the agent whose phone leg A rings (a preview call), busy once answered
    agent_first: bool = False  # leg A is an agent's phone and leg B the party the call is for
    ring_timeout: float | None = None  # how long leg B may ring once ``send`` dials it


@dataclass(slots=True)
class Transfer:
    """A transfer under way: ``referrer`` asked for it; ``target`` is the leg taking its place (a new
    INVITE for a blind transfer, another call's far party re-INVITEd for an attended one)."""

    referrer: "Leg"
    target: "Leg"
    kind: str  # "blind" or "attended"
    offer: SessionDescription
    other_call: "Call | None"


class Call:
    """Two legs bridged by the switch; see the module's description."""

    __slots__ = ("b2bua", "id", "state", "a", "b", "route", "source", "trunks", "user", "caller",
                 "callee", "offered_at", "answered_at", "timer", "offer_b", "bridged",
                 "reinvite_from", "reinvite_offer", "cancelled", "hangup_by", "supported",
                 "ringing_at", "codec", "dtmf_pt", "caller_uri", "b_uri", "b_status", "hosted",
                 "menu", "prompts", "queue", "joined", "priority", "offers", "segments", "offered_to",
                 "agent", "dtmf", "hosted_sd", "busy_agents", "guard", "menu_timer", "after_prompt",
                 "transfer", "detached", "transferred_to", "announce_timer", "outbound", "forks",
                 "offer_forks")

    def __init__(self, b2bua: "B2BUA", a: InviteSession, now: float):
        self.b2bua = b2bua
        self.id = a.call_id
        self.state = ROUTING
        self.a: Leg | None = None
        self.b: Leg | None = None
        self.route: RouteMatch | None = None
        self.source: str | None = None
        self.trunks: Sequence[str] = ()  # trunks this call holds a channel of (replaced, never changed)
        self.user: str | None = None
        self.caller = ""
        self.callee = ""
        self.offered_at = now
        self.answered_at: float | None = None
        self.timer = None
        self.offer_b: SessionDescription | None = None  # the offer we sent B (anchored)
        self.bridged: tuple | None = None  # the last MediaBridge's remotes
        self.reinvite_from: Leg | None = None  # the leg whose re-INVITE is being relayed
        self.reinvite_offer: SessionDescription | None = None  # the offer we relayed (anchored)
        self.cancelled = False
        self.hangup_by: str | None = None
        self.supported: AbstractSet[str] = frozenset()  # replaced, never changed
        self.ringing_at: float | None = None
        self.codec = ""
        self.dtmf_pt: int | None = None
        self.caller_uri = ""
        self.b_uri = ""
        self.b_status = 0
        self.hosted = False  # the switch answered leg A itself
        self.hosted_sd: SessionDescription | None = None  # the answer the switch gave A
        self.menu: MenuRun | None = None
        self.prompts: deque[str] = deque()  # prompts still to play after the current one
        self.after_prompt: str | None = None  # a target to go to once the prompts end
        self.queue: str | None = None  # the queue the caller waits in
        self.joined = 0.0
        self.priority = 0
        self.offers: dict[str, Leg] = {}  # agent → the leg ringing its phone
        self.offered_to: list[str] = []  # agents rung in the current queue stay
        self.segments: list[QueueSegment] = []
        self.agent = ""
        self.dtmf = ""
        self.busy_agents: list[str] = []  # agents this call keeps busy (a direct call to or from one)
        self.guard = None
        self.menu_timer = None
        self.transfer: Transfer | None = None
        self.detached: list[Leg] = []  # legs that left the call (a transfer's referrer)
        self.transferred_to = ""
        self.announce_timer = None
        self.outbound: Outbound | None = None  # set for a call the switch placed
        # A user with several contacts: the legs ringing them (``b`` among them); None for one contact.
        self.forks: Forks | None = None
        # An agent offered the call whose phone has several contacts: the legs ringing them
        # (``offers[agent]`` among them); no entry for one.
        self.offer_forks: dict[str, Forks] = {}

    def __repr__(self) -> str:
        return f"<Call {self.id} {self.state}>"

    def on_timer(self, name: str, now: float) -> None:
        if name == MENU:
            self.menu_timer = None
        elif name == ANNOUNCE:
            self.announce_timer = None
        elif name in (PROMPT_GUARD, AMD_GUARD):
            self.guard = None
        else:
            self.timer = None
        self.b2bua._call_timer(self, name, now)


class B2BUA:
    """Every call of one worker. ``config`` gives routes, trunks, limits and media settings;
    ``registrar`` answers where a user's phones are (``lookup(user, now)``)."""

    def __init__(self, config: Config, sessions: SessionLayer, registrar: Any, *,
                 ports: PortAllocator | None = None):
        self.config = config
        self.sessions = sessions
        self.registrar = registrar
        self.wheel = sessions.wheel
        self._session_events = sessions._events  # the session layer's queue, looked at before draining it
        self.router = Router(config.routes)
        self.sources = TrunkSources(config.trunks)
        self._trunk_of_host: dict = {}  # source host -> its trunk or None (see _trunk_from)
        self._trunks = {t.name: t for t in config.trunks}  # by name (unique: core.config checks)
        self._callers: dict[str, tuple[str, str]] = {}  # a From without its tag -> (user, URI) (see _caller)
        # Where each trunk's calls go (parsed once: the hostport of its URIs and the next hop), and
        # our host as From and Contact name it.
        self._trunk_hops = {t.name: _hop(*parse_host_port(t.address)) for t in config.trunks}
        # The codec names (lower case) a call may use, by its outbound trunk (None: the node's list).
        media = config.media
        self._supported = {t.name: frozenset(c.lower() for c in t.codecs or media.codecs) for t in config.trunks}
        self._supported[None] = frozenset(c.lower() for c in media.codecs)
        local = sessions.local.host
        self._from_host = f"[{local}]" if ":" in local else local
        self.address = media.address
        self.ports = ports or PortAllocator(media.rtp_port_min, media.rtp_port_max)
        self.calls: dict[str, Call] = {}  # live calls by leg A's Call-ID
        self._by_session: dict[InviteSession, Call] = {}
        self._trunk_calls: Counter[str] = Counter()
        self._events: deque = deque()
        self.draining = False
        # Counters for the logs and the KPIs: calls offered, answered, refused for lack of
        # channels (call loss), and ended otherwise.
        self.stats = Counter(offered=0, answered=0, refused=0, failed=0, cancelled=0)
        # The ACD: one owner (this call layer) feeds it plain events and acts on what it hands out.
        self.acd = None
        self.members: dict[str, Call] = {}  # queued callers by Call-ID
        self.phone_agent: dict[str, str] = {}  # a phone (user name) → its agent
        self._acd_timer = None
        self._acd_deadline: float | None = None
        self._acd_started = False
        self._acd_inbox: deque = deque()  # phone registrations, fed to the ACD at the next step
        # An agent's disposition code (agent, code, now) -> whether a campaign took it (the dialler's).
        self.on_disposition: Callable[[str, str, float], bool] | None = None
        if config.agents or config.queues:
            self._start_acd(now=0.0)

    # -- the face ---------------------------------------------------------------------------------
    def handle_event(self, event: Any, now: float) -> bool:
        """A transaction-layer event: the session layer's if it is about an INVITE session (False
        otherwise); what the sessions then report is acted on at once."""
        taken = self.sessions.handle_event(event, now)
        if self._session_events or self.acd is not None:
            self.process(now)
        return taken

    def process(self, now: float) -> None:
        """Act on every event the session layer has queued (its own timers queue some too), and on
        what the ACD hands out."""
        if self.acd is not None:
            if not self._acd_started:
                self.start(now)
            while self._acd_inbox:
                self.acd.handle_event(self._acd_inbox.popleft(), now)
        elif not self._session_events:
            return  # the usual case: the endpoint's call once its queue is empty, with nothing queued
        events = self._session_events  # drained in place, as SessionLayer.next_event would
        for _ in range(100_000):
            if not events:
                if self.acd is not None and self._acd_step(now):
                    continue
                return
            try:
                self._session_event(events.popleft(), now)
            except ProtocolError:
                # A leg in a state where the relayed action no longer fits (a race with the peer):
                # the sessions have already answered what the protocol requires.
                pass

    # -- inputs from the media plane --------------------------------------------------------------
    def dtmf(self, call_id: str, digit: str, now: float) -> None:
        """A DTMF digit from the caller's leg (an RFC 4733 event the media engine detected)."""
        call = self.calls.get(call_id)
        if call is not None:
            self._digit(call, digit, now)
        self.process(now)

    def playback_done(self, call_id: str, leg: str, now: float, reason: str = "done") -> None:
        """What played to ``leg`` ended (``reason`` "done"; "stopped"/"replaced" are our own doing)."""
        call = self.calls.get(call_id)
        if call is not None and leg == "a" and reason == "done" and call.hosted:
            self._prompt_ended(call, now)
        self.process(now)

    def next_event(self):
        """MediaBridge, MediaRelease and CallSummary events, in order."""
        return self._events.popleft() if self._events else None

    def active_calls(self) -> int:
        return len(self.calls)

    def drain(self, now: float) -> None:
        """The node is stopping: unanswered calls get 503 (and their B legs a CANCEL), answered ones
        a BYE on both legs; new calls are refused 503."""
        self.draining = True
        for call in list(self.calls.values()):
            if call.hosted:
                self._end_hosted(call, now, SWITCH)
            elif call.outbound is not None and call.state == CALLING:
                call.a.session.bye(now)  # CANCEL the call still ringing
                self._finish(call, now, FAILED, 503, SWITCH)
            elif call.state in (ROUTING, CALLING, EARLY):
                self._fail_a(call, now, 503, "Shutting Down", FAILED, SWITCH,
                             headers=[("Retry-After", RETRY_AFTER)])
            else:
                self._hang_up(call, now, SWITCH)
        self.process(now)

    # -- session events ---------------------------------------------------------------------------
    def _session_event(self, event: Any, now: float) -> None:
        # Dispatch on the event's exact type (the session layer's events are final dataclasses).
        kind = type(event)
        if kind is IncomingCall:
            self._incoming(event.session, event.msg, now)
            return
        session = event.session
        call = self._by_session.get(session)
        if call is None:
            if kind is InDialogRequest:
                self._reply(event.tx, event.msg, 481, now)
            return
        if call.state == ENDED:
            # What a leg still says after the call ended (a 2xx crossing our CANCEL is ACKed and
            # BYEd by the session itself): nothing to relay.
            if session.state == TERMINATED:
                self._by_session.pop(session, None)
            if kind is InDialogRequest:
                self._reply(event.tx, event.msg, 481, now)
            return
        if call.transfer is not None and self._transfer_event(call, session, event, now):
            return
        if call.detached and any(leg.session is session for leg in call.detached):
            # A leg that left the call (a transfer's referrer, a forked leg that lost).
            if session.state == TERMINATED:
                self._by_session.pop(session, None)
            if kind is InDialogRequest:
                self._reply(event.tx, event.msg, 481, now)
            return
        is_a = call.a is not None and session is call.a.session
        if call.outbound is not None and is_a and call.state == CALLING:
            self._outbound_event(call, event, now)
            return
        if call.hosted:
            self._hosted_event(call, session, is_a, event, now)
            return
        if call.forks and not is_a and self._fork_event(call, session, kind, event, now):
            return
        if kind is ProvisionalReceived:
            self._provisional(call, event.msg, now)
        elif kind is CallAnswered:
            self._answered(call, event.msg, now)
        elif kind is CallConfirmed:
            if is_a and call.state == ANSWERED:
                call.state = CONFIRMED_CALL
                if call.a.remote is None and event.msg is not None and event.msg.body:
                    # A's answer to the offer in our 2xx (an INVITE without SDP).
                    try:
                        call.a.remote = parse_sdp(event.msg.body).rtp_address()
                    except ProtocolError:
                        pass
                    self._bridge(call)
        elif kind is CallEnded:
            other = call.b if is_a else call.a
            by = (CALLER if is_a else CALLEE) if event.reason == "BYE" else SWITCH
            if other is not None and other.session is not None:
                other.session.bye(now)
            self._finish(call, now, ANSWERED_D, 200, by)
        elif kind is CallFailed:
            self._b_failed(call, event.status, now)
        elif kind is CallCancelled:
            self._cancelled(call, now)
        elif kind is ReinviteReceived:
            self._reinvite(call, call.a if is_a else call.b, event.msg, now)
        elif kind is ReinviteAnswered:
            self._reinvite_answered(call, call.a if is_a else call.b, event.status, event.msg, now)
        elif kind is ReinviteConfirmed:
            pass
        elif kind is InDialogRequest:
            method = event.msg.method
            if method == "REFER":
                self._refer(call, call.a if is_a else call.b, event, now)
            elif method == "INFO" and is_a:
                self._info(call, event, now)
            else:
                # INFO, UPDATE, ...: not relayed yet (RFC 3261 §8.2.1 names what we serve).
                self._reply(event.tx, event.msg, 501, now)

    # -- a new call -------------------------------------------------------------------------------
    def _incoming(self, a: InviteSession, msg: Any, now: float) -> None:
        call = Call(self, a, now)
        self.stats["offered"] += 1
        call.callee = dialled_number(msg.uri)
        call.caller, call.caller_uri = self._caller(msg.from_, msg.from_tag)
        call.a = Leg(a, 0)
        if self.draining:
            self._refuse(call, now, 503, "Shutting Down")
            return
        if len(self.calls) >= self.config.limits.max_calls:
            self._refuse(call, now, 503, "Too Many Calls")
            return
        host = a.invite_tx.peer.host  # the packet's source address (RFC 3261 §18.2.2 received)
        trunk_in = self._trunk_from(host)
        if trunk_in is not None:
            call.source = trunk_in.name
        elif call.caller and any(b.received.host == host for b in self.registrar.lookup(call.caller, now)):
            call.source = "users"
        if call.source == "users" and self.acd is not None and call.caller in self.phone_agent:
            code = self._disposition_code(call.callee)
            if code is not None:
                # Taken: a beep; nothing to give it to (no campaign call of this agent's): busy tone.
                taken = self.on_disposition is not None and self.on_disposition(
                    self.phone_agent[call.caller], code, now)
                self._host(call, msg, now, HANGUP, prompt="beep" if taken else "busy")
                return
            change = self._feature_code(call.callee)
            if change is not None:
                self._agent_status(self.phone_agent[call.caller], *change, now)
                # Answered, a beep to confirm, then the switch hangs up.
                self._host(call, msg, now, HANGUP, prompt="beep")
                return
        match = self.router.lookup(call.callee, call.source)
        call.route = match
        if match is None:
            self._reject_new(call, now, 404, "No Route", NO_ROUTE)
            return
        trunks = [trunk_in] if trunk_in is not None else []
        trunk_out = self._trunks.get(match.name) if match.kind == "trunk" else None
        if trunk_out is not None:
            trunks.append(trunk_out)
        for trunk in trunks:
            if trunk.channels is not None and self._trunk_calls[trunk.name] >= trunk.channels:
                self._refuse(call, now, 503, "Trunk Busy")
                return
        codecs = (trunk_out.codecs if trunk_out is not None and trunk_out.codecs
                  else self.config.media.codecs)
        call.supported = self._supported[trunk_out.name if trunk_out is not None else None]
        if match.kind in ("ivr", "queue"):
            call.trunks = [t.name for t in trunks]
            self._host(call, msg, now, match.route.target)
            return
        if match.kind == "user":
            call.user = match.name
            bindings = self.registrar.lookup(match.name, now)
            if not bindings:
                self._reject_new(call, now, 480, "Temporarily Unavailable", NO_ANSWER)
                return
            binding = bindings[0]
            target = binding.contact
            peer = binding.received  # behind NAT, where the REGISTER came from is what works
        else:
            bindings = None
            target, peer = self._trunk_target(trunk_out, match.number)
        # SDP: A's offer cut to our codecs, anchored on leg B's port (RFC 3264 §8). An INVITE without
        # an offer (RFC 3261 §13.2.1: the offer comes in our 2xx, the answer in A's ACK): leg B is
        # offered the switch's own codecs; B's answer becomes A's offer, A's ACK its answer.
        try:
            if msg.body:
                offer_a = parse_sdp(msg.body)
                call.a.remote = offer_a.rtp_address()
            else:
                codecs = [c for c in codecs if c.lower() in ("pcmu", "pcma", "telephone-event")] or list(codecs)
                offer_a = own_offer(codecs, self.address)
            restricted = _restrict(offer_a, call.supported)
        except ProtocolError as exc:
            self._reject_new(call, now, exc.status if exc.status != 400 else 488, exc.reason, REJECTED)
            return
        ports = self.ports.allocate_pair(now)
        if ports is None:
            self._refuse(call, now, 503, "No Media Ports")
            return
        port_a, port_b = ports
        call.a.port = port_a
        call.b = Leg(None, port_b)
        call.offer_b, body = call.b.origin.anchor_wire(restricted, address=self.address, port=port_b,
                                                       in_place=True)
        call.b.last_sdp = body
        try:
            b = self.sessions.invite(target, self._from_uri(call), now, body=body, peer=peer,
                                     credentials=_credentials(trunk_out))
        except (ProtocolError, ValueError):
            self.ports.release(port_a, now)
            self.ports.release(port_b, now)
            self._reject_new(call, now, 503, "Service Unavailable", FAILED)
            return
        call.b.session = b
        call.b.offered = now
        call.b_uri = target
        call.trunks = [t.name for t in trunks]
        for name in call.trunks:
            self._trunk_calls[name] += 1
        self.calls[call.id] = call
        self._by_session[a] = call
        self._by_session[b] = call
        if bindings is not None and len(bindings) > 1:
            self._fork(call, bindings, now, call.offer_b)
        call.state = CALLING
        call.timer = self.wheel.schedule(now + self.config.calls.ring_timeout, (call, RING_TIMEOUT))

    def _trunk_from(self, host: str):
        """The trunk whose addresses include ``host`` (None when none does), remembered per host: the
        same carriers and phones call again and again, and the answer depends on the config only."""
        cache = self._trunk_of_host
        trunk = cache.get(host, cache)
        if trunk is cache:
            if len(cache) >= 4096:
                cache.clear()
            trunk = cache[host] = self.sources.trunk_for(host)
        return trunk

    def _caller(self, from_: str, tag: str | None) -> tuple[str, str]:
        """The user and the URI (as text) of leg A's From; ("", "") when it does not parse.
        Remembered per From without its tag where the tag is its last parameter (§20.20: a header
        parameter, outside the URI): a phone calls again and again with the same From but a new tag."""
        suffix = f";tag={tag}"
        key = from_[:-len(suffix)] if tag and from_.endswith(suffix) else None
        cache = self._callers
        found = cache.get(key) if key is not None else None
        if found is None:
            try:
                uri = parse_name_addr(from_).uri
                found = (uri.user or "", str(uri))
            except ValueError:
                found = ("", "")
            if key is not None:
                if len(cache) >= 4096:
                    cache.clear()
                cache[key] = found
        return found

    def _refuse(self, call: Call, now: float, status: int, reason: str) -> None:
        """Over a limit: 503 with Retry-After, counted as refused (call loss)."""
        self.stats["refused"] += 1
        self._reject_new(call, now, status, reason, REFUSED, headers=[("Retry-After", RETRY_AFTER)])

    def _reject_new(self, call: Call, now: float, status: int, reason: str, disposition: str,
                    headers=()) -> None:
        try:
            call.a.session.reject(now, status, reason, headers=headers)
        except ProtocolError:
            pass
        self._summary(call, now, disposition, status, SWITCH)

    # -- outbound calls the switch places (campaigns, click-to-call) ------------------------------
    def originate(self, number: str, now: float, *, trunk: str | None = None, user: str | None = None,
                  target: str | None, caller_id: str = "", display: str = "", agent: str = "",
                  ring_timeout: float | None = None, campaign_id: str = "", contact_id: str = "",
                  amd: bool = False) -> str | None:
        """Place a call: to ``number`` through ``trunk``, or to ``user``'s registered phone (a preview
        campaign rings the agent first, ``display`` naming the contact in the From, and ``number`` is
        the contact the call is for). Once answered the switch hosts the call and sends it to
        ``target`` (a campaign's queue: the ACD connects an agent; "prompt:…" a message); with no
        target it holds until ``send`` names one. ``agent`` is the agent on ``user``'s phone: busy in
        the ACD from the answer to the end. Returns the call's id (leg A's Call-ID), or None when a
        channel limit, the ports or an unregistered user refuse it (counted as refused). The call ends
        with a ``CallSummary`` like any other (direction "outbound")."""
        config = self._trunks.get(trunk) if trunk is not None else None
        bindings = self.registrar.lookup(user, now) if user is not None else ()
        if self.draining or len(self.calls) >= self.config.limits.max_calls or (
                config is not None and config.channels is not None and self._trunk_calls[trunk] >= config.channels
        ) or (config is None and not bindings):
            self.stats["refused"] += 1
            return None
        ports = self.ports.allocate_pair(now)
        if ports is None:
            self.stats["refused"] += 1
            return None
        port_a, port_b = ports
        codecs = [c for c in ((config.codecs if config is not None else None) or self.config.media.codecs)
                  if c.lower() in ("pcmu", "pcma", "telephone-event")] or ["PCMU", "telephone-event"]
        a = Leg(None, port_a)
        offer, a.last_sdp = a.origin.anchor_wire(own_offer(codecs, self.address), address=self.address,
                                                 port=port_a, in_place=True)
        headers: tuple[tuple[str, str], ...] = ()
        if config is not None:
            uri, peer = self._trunk_target(config, number)
            from_uri = f"sip:{caller_id or 'switch'}@{self._from_host}"
        else:
            uri, peer = bindings[0].contact, bindings[0].received
            # The agent's phone shows whom the call is for before anyone is dialled (RFC 3261 §20.20:
            # the display-name), and a CRM behind it gets the ids.
            from_uri = f"sip:{number or 'switch'}@{self._from_host}"
            if campaign_id:
                headers = (("X-Campaign", campaign_id), ("X-Contact", contact_id))
        try:
            a.session = self.sessions.invite(uri, from_uri, now, body=a.last_sdp, peer=peer,
                                             credentials=_credentials(config), headers=headers,
                                             display=display)
        except (ProtocolError, ValueError):
            self.ports.release(port_a, now)
            self.ports.release(port_b, now)
            return None
        call = Call(self, a.session, now)
        self.stats["offered"] += 1
        call.a, call.b = a, Leg(None, port_b)
        a.uri = call.b_uri = uri
        call.outbound = Outbound(target, offer, campaign_id, contact_id, amd, agent=agent, agent_first=config is None)
        call.caller, call.callee = caller_id, number
        if config is not None:
            call.source = trunk
            call.trunks = [trunk]
            self._trunk_calls[trunk] += 1
        else:
            call.user = user
        call.supported = {c.lower() for c in codecs}
        call.state = CALLING
        self.calls[call.id] = call
        self._by_session[a.session] = call
        call.timer = self.wheel.schedule(now + (ring_timeout or self.config.calls.ring_timeout), (call, RING_TIMEOUT))
        return call.id

    def send(self, call_id: str, target: str, now: float, *, ring_timeout: float | None = None) -> bool:
        """Send an answered outbound call that holds with no target (``originate`` without one) on
        to ``target`` (a user or trunk there rings for ``ring_timeout``, else the node's ring timeout).
        False when there is no such call waiting."""
        call = self.calls.get(call_id)
        if call is None or call.outbound is None or not call.hosted or call.outbound.target is not None:
            return False
        call.outbound.target = target
        call.outbound.ring_timeout = ring_timeout
        self._go(call, target, now)
        self.process(now)
        return True

    def abandon(self, call_id: str, prompt: str, now: float) -> bool:
        """An answered outbound call that found no agent in time (the predictive dialler's 2-second
        rule): out of its queue, ``prompt`` played, then hung up. False when it is not waiting."""
        call = self.calls.get(call_id)
        if call is None or not call.hosted or call.queue is None:
            return False
        self._log(now, "exit", queue=call.queue, member=call.id, wait=now - call.joined, reason="abandoned")
        self.acd.handle_event(acd_model.MemberLeft(call.id), now)
        self._leave_queue(call, now, QueueOutcome.ABANDONED)
        call.after_prompt = HANGUP
        self._play(call, [prompt], now)
        self.process(now)
        return True

    def _outbound_event(self, call: Call, event: Any, now: float) -> None:
        """Leg A of a call the switch placed, before its answer."""
        if isinstance(event, ProvisionalReceived):
            if call.ringing_at is None:
                call.ringing_at = now
        elif isinstance(event, CallAnswered):
            self._cancel_timer(call)
            out = call.outbound
            try:
                answer = parse_sdp(event.msg.body or b"")
                agreed = intersect(out.offer, answer)
                if not agreed:
                    raise OfferAnswerError("no codec of the offer in the answer")
                call.a.remote = answer.rtp_address()
            except ProtocolError:
                call.a.session.bye(now)
                call.b_status = 488
                self._finish(call, now, REJECTED, 488, SWITCH)
                return
            for codec in agreed:
                name = codec.name.lower()
                if name == "telephone-event" and call.dtmf_pt is None:
                    call.dtmf_pt = codec.pt
                elif name not in AUXILIARY_FORMATS and not call.codec:
                    call.codec = codec.name.upper()
            # What the switch offers the agent: the codec the contact chose, and telephone-event.
            call.hosted_sd = _restrict(out.offer, {call.codec.lower(), "telephone-event"})
            call.b_status = event.msg.status
            call.hosted, call.state = True, HOSTED
            call.answered_at = now
            self.stats["answered"] += 1
            call.bridged = (call.a.port, call.a.remote, call.b.port, None)
            self._events.append(MediaBridge(call.id, call.a.port, call.a.remote, call.b.port, None,
                                            call.codec, call.dtmf_pt, out.detect))
            self._events.append(CallConnected(call.id, self._make_summary(call, now, ANSWERED_D, 200, None)))
            call.timer = self.wheel.schedule(now + self.config.calls.max_duration, (call, MAX_DURATION))
            if out.detect:
                # The detector listens first; a verdict that never comes counts as "not sure".
                out.amd = "pending"
                call.guard = self.wheel.schedule(now + AMD_GUARD_SECONDS, (call, AMD_GUARD))
            else:
                self._live(call, now)

        elif isinstance(event, CallFailed):
            self._cancel_timer(call)
            call.b_status = event.status
            mapped, _ = map_failure(event.status)
            disposition = _disposition(mapped) if event.status not in (404, 484, 604) else REJECTED
            if event.status in (486, 600):
                disposition = BUSY
            elif event.status in (408, 480, 487):
                disposition = NO_ANSWER
            self._finish(call, now, disposition, event.status, CALLEE if event.status < 500 else None)

    def _live(self, call: Call, now: float) -> None:
        agent = call.outbound.agent
        if agent and self.acd is not None and agent not in call.busy_agents:
            call.busy_agents.append(agent)  # the end of the call gives the agent back (and wrap-up)
            self.acd.handle_event(acd_model.AgentCallStarted(agent), now)
            self._log(now, "state", agent=agent, reason=acd_model.TALKING, member=call.id)
        self._events.append(LiveAnswer(call.id))
        if call.outbound.target is not None:
            self._go(call, call.outbound.target, now)

    def amd_result(self, call_id: str, verdict: str, now: float) -> None:
        """The answering-machine detector's verdict on an outbound call (HUMAN, MACHINE, NOTSURE): a
        machine is hung up (the campaign counts it), anything else goes on to its target."""
        call = self.calls.get(call_id)
        if call is None or call.outbound is None or call.outbound.amd != "pending":
            return
        call.outbound.amd = verdict.lower()
        if call.guard is not None:
            self.wheel.cancel(call.guard)
            call.guard = None
        if call.outbound.amd == "machine":
            self._end_hosted(call, now, SWITCH)
        else:
            self._live(call, now)
        self.process(now)

    # -- calls the switch answers itself: IVR menus, queues, feature codes ------------------------
    def _host(self, call: Call, msg: Any, now: float, target: str, prompt: str | None = None) -> None:
        """Answer leg A from the switch — an RFC 3264 answer with one G.711 codec of A's offer (the
        prompts are G.711) and telephone-event, anchored on the switch — then send the call to
        ``target`` (after ``prompt`` when given)."""
        supported = call.supported or {c.lower() for c in self.config.media.codecs}
        try:
            if msg.body:
                offer = parse_sdp(msg.body)
                remote = offer.rtp_address()
            else:
                # No offer in the INVITE: ours goes in the 200, A's answer comes in its ACK (RFC 3264 §5).
                offer = own_offer(["PCMU", "PCMA", "telephone-event"], self.address)
                remote = None
            voice = next((c.name for c in offer.codecs()
                          if c.name.lower() in ("pcmu", "pcma") and c.name.lower() in supported), None)
            if voice is None:
                raise OfferAnswerError("Not Acceptable Here: prompts are played in PCMU or PCMA only")
        except ProtocolError as exc:
            self._reject_new(call, now, exc.status if exc.status != 400 else 488, exc.reason, REJECTED)
            return
        ports = self.ports.allocate_pair(now)
        if ports is None:
            self._refuse(call, now, 503, "No Media Ports")
            return
        port_a, port_b = ports
        wanted = [voice] + (["telephone-event"] if "telephone-event" in supported else [])
        if msg.body:
            sd = call.a.origin.answer(offer, wanted, address=self.address, port=port_a)
        else:
            sd = call.a.origin.anchor(own_offer(wanted, self.address), address=self.address, port=port_a)
        for codec in sd.codecs():
            if codec.name.lower() == "telephone-event" and call.dtmf_pt is None:
                call.dtmf_pt = codec.pt
            elif codec.name.lower() not in AUXILIARY_FORMATS and not call.codec:
                call.codec = codec.name.upper()
        call.supported = supported
        call.a.port, call.a.remote = port_a, remote
        call.b = Leg(None, port_b)
        call.hosted, call.hosted_sd, call.state = True, sd, HOSTED
        call.a.last_sdp = sd.serialize()
        call.a.session.answer(now, call.a.last_sdp)
        call.answered_at = now
        self.stats["answered"] += 1
        self.calls[call.id] = call
        self._by_session[call.a.session] = call
        for name in call.trunks:
            self._trunk_calls[name] += 1
        # The relay exists from now on: the switch plays to A on leg a; leg b has no far end yet.
        call.bridged = (port_a, remote, port_b, None)
        self._events.append(MediaBridge(call.id, port_a, remote, port_b, None, call.codec, call.dtmf_pt))
        self._events.append(CallConnected(call.id, self._make_summary(call, now, ANSWERED_D, 200, None)))
        call.timer = self.wheel.schedule(now + self.config.calls.max_duration, (call, MAX_DURATION))
        if prompt is not None:
            call.after_prompt = target
            self._play(call, [prompt], now)
        else:
            self._go(call, target, now)

    def _go(self, call: Call, target: str, now: float) -> None:
        """Send a hosted call on: another menu, a queue, a user or trunk, or the end."""
        kind, name, number = parse_target(target)
        if kind == HANGUP:
            self._end_hosted(call, now, SWITCH)
        elif kind == "prompt":
            call.after_prompt = HANGUP
            self._play(call, [name], now)
        elif kind == "ivr":
            call.menu = MenuRun(self.config.menu(name))
            self._menu_actions(call, call.menu.start(now), now)
        elif kind == "queue":
            self._join(call, name, now, int(number) if number else None)
        else:
            self._connect(call, kind, name, number, now)

    def _play(self, call: Call, prompts: list[str], now: float, loop: bool = False) -> None:
        call.prompts = deque(prompts[1:])
        self._events.append(MediaPlay(call.id, "a", prompts[0], loop))
        if call.guard is not None:
            self.wheel.cancel(call.guard)
            call.guard = None
        if not loop:
            call.guard = self.wheel.schedule(now + PROMPT_GUARD_SECONDS, (call, PROMPT_GUARD))

    def _stop_prompt(self, call: Call) -> None:
        call.prompts.clear()
        if call.guard is not None:
            self.wheel.cancel(call.guard)
            call.guard = None
        self._events.append(MediaStop(call.id, "a"))

    def _prompt_ended(self, call: Call, now: float) -> None:
        if call.prompts:
            self._play(call, [call.prompts.popleft(), *call.prompts], now)
            return
        if call.guard is not None:
            self.wheel.cancel(call.guard)
            call.guard = None
        if call.after_prompt is not None:
            target, call.after_prompt = call.after_prompt, None
            self._go(call, target, now)
        elif call.queue is not None:
            # An announcement ended: the music again until the next one.
            queue = self.config.queue(call.queue)
            self._play(call, [queue.music], now, loop=True)
            call.announce_timer = self.wheel.schedule(now + queue.announce_every, (call, ANNOUNCE))
        elif call.menu is not None:
            self._menu_actions(call, call.menu.prompt_done(now), now)

    def _menu_actions(self, call: Call, actions: list, now: float) -> None:
        plays = []
        for action in actions:
            if isinstance(action, StopPrompt):
                self._stop_prompt(call)
            elif isinstance(action, Play):
                plays.append(action.prompt)
            elif isinstance(action, Route):
                call.menu = None
                if call.menu_timer is not None:
                    self.wheel.cancel(call.menu_timer)
                    call.menu_timer = None
                self._go(call, action.target, now)
                return
        if plays:
            self._play(call, plays, now)
        menu = call.menu
        if call.menu_timer is not None:
            self.wheel.cancel(call.menu_timer)
            call.menu_timer = None
        if menu is not None and menu.deadline is not None:
            call.menu_timer = self.wheel.schedule(menu.deadline, (call, MENU))

    def _digit(self, call: Call, digit: str, now: float) -> None:
        call.dtmf += digit
        if not call.hosted:
            return
        if call.menu is not None:
            self._menu_actions(call, call.menu.digit(digit, now), now)
        elif call.queue is not None:
            queue = self.config.queue(call.queue)
            if queue.exit_key and digit == queue.exit_key:
                self._log(now, "exit", queue=call.queue, member=call.id, wait=now - call.joined,
                          reason="exit_key")
                self.acd.handle_event(acd_model.MemberLeft(call.id), now)
                self._leave_queue(call, now, QueueOutcome.EXIT_KEY)
                self._go(call, queue.exit_target, now)

    def _info(self, call: Call, event: InDialogRequest, now: float) -> None:
        """SIP INFO carrying a digit (application/dtmf-relay "Signal=5", or application/dtmf)."""
        msg = event.msg
        kind = media_type(msg.header("Content-Type"))
        digit = None
        text = msg.body.decode("ascii", "replace")
        if kind == "application/dtmf-relay":
            for line in text.splitlines():
                key, _, value = line.partition("=")
                if key.strip().lower() == "signal":
                    digit = value.strip().upper()
        elif kind == "application/dtmf":
            digit = text.strip().upper()
        if digit is not None and (len(digit) != 1 or digit not in "0123456789*#ABCD"):
            digit = None
        if digit is None and kind in ("application/dtmf-relay", "application/dtmf"):
            self._reply(event.tx, msg, 400, now)
            return
        self._reply(event.tx, msg, 200, now)
        if digit is not None:
            self._digit(call, digit, now)

    def _from_uri(self, call: Call) -> str:
        # The caller's number goes on as B's From user (caller ID); the host is ours (RFC 3261 §8.1.1.3).
        # For a call the switch placed, the agent sees whom it reached.
        who = call.callee if call.outbound is not None and not call.outbound.agent_first else call.caller
        return f"sip:{who}@{self._from_host}" if who else "sip:anonymous@anonymous.invalid"

    def _trunk_target(self, trunk, number: str) -> tuple[str, Peer]:
        """The Request-URI for ``number`` on ``trunk`` (the trunk's own URI when there is none) and
        the next hop."""
        hostport, peer = self._trunk_hops[trunk.name]
        return (f"sip:{number}@{hostport}" if number else f"sip:{hostport}"), peer

    def _dial(self, call: Call, target: str, peer: Peer, now: float, trunk=None,
              offer: SessionDescription | None = None) -> Leg | None:
        """A new leg to ``target``, offering ``offer`` (by default what a hosted call's A was answered
        with) anchored on leg b's port with the leg's own o= line; None when it cannot be sent."""
        leg = Leg(None, call.b.port, now)
        sd, leg.last_sdp = leg.origin.anchor_wire(offer or call.hosted_sd, address=self.address,
                                                  port=call.b.port)
        if call.offer_b is None:
            call.offer_b = sd
        headers = ()
        if call.outbound is not None and call.outbound.campaign_id and not call.outbound.agent_first:
            # The agent's phone (and a CRM behind it) learns which contact this is.
            headers = (("X-Campaign", call.outbound.campaign_id), ("X-Contact", call.outbound.contact_id))
        try:
            leg.session = self.sessions.invite(target, self._from_uri(call), now, body=leg.last_sdp, peer=peer,
                                               credentials=_credentials(trunk), headers=headers)
        except (ProtocolError, ValueError):
            return None
        leg.uri = target
        self._by_session[leg.session] = call
        return leg

    def _connect(self, call: Call, kind: str, name: str, number: str, now: float) -> None:
        """A hosted call to a user or a trunk; the caller hears ringback meanwhile."""
        if kind == "user":
            bindings = self.registrar.lookup(name, now)
            if not bindings:
                call.after_prompt = HANGUP
                self._play(call, ["busy"], now)
                return
            target, peer = bindings[0].contact, bindings[0].received
            call.user = name
        else:
            bindings = None
            target, peer = self._trunk_target(self._trunks.get(name), number or call.callee)
        leg = self._dial(call, target, peer, now, self._trunks.get(name) if kind == "trunk" else None)
        if leg is None:
            call.after_prompt = HANGUP
            self._play(call, ["busy"], now)
            return
        call.b = leg
        call.b_uri = target
        if bindings is not None and len(bindings) > 1:
            self._fork(call, bindings, now)
        self._play(call, ["ringback"], now, loop=True)
        self._cancel_timer(call)
        limit = call.outbound.ring_timeout if call.outbound is not None else None
        call.timer = self.wheel.schedule(now + (limit or self.config.calls.ring_timeout), (call, RING_TIMEOUT))

    # -- forking: one leg to each of a user's contacts (RFC 3261 §10, §16.7 as a B2BUA's UAC) -------
    def _fork(self, call: Call, bindings: list, now: float, offer: SessionDescription | None = None) -> None:
        """Leg b rings the user's first contact; ring every other one too, each leg an INVITE session
        of its own (own Call-ID, own o= line) offering ``offer`` on leg b's port. All of them are
        ``call.forks`` until one answers or all fail (``_fork_event``)."""
        call.b.uri = call.b_uri
        forks = [call.b]
        for binding in bindings[1:]:
            leg = self._dial(call, binding.contact, binding.received, now, offer=offer)
            if leg is not None:
                forks.append(leg)
        if len(forks) > 1:
            call.forks = Forks(forks)

    def _fork_event(self, call: Call, session: InviteSession, kind: type, event: Any, now: float) -> bool:
        """An event of one of several legs ringing a user's contacts. True when it is dealt with here;
        False when the caller's side goes on as for a single leg, ``call.b`` now the leg it is about:
        the first ringing (or the first early media) is relayed, the first 2xx wins and the others
        are CANCELled with "Call completed elsewhere"; a failure waits for the other legs, unless it
        is a 6xx (§16.7.6: it wins at once) or the last, and the caller gets the most useful one."""
        forks = call.forks
        leg = forks.leg_of(session)
        if leg is None:
            return False
        if kind is ProvisionalReceived:
            if leg.ringing is None:
                leg.ringing = now
            if call.hosted or leg is call.b:
                return call.hosted
            # The caller rings once; the first leg with early media is the one it hears.
            if call.b.remote is None and (event.msg.body or call.ringing_at is None):
                call.b, call.b_uri = leg, leg.uri
                return False
            return True
        if kind is CallAnswered:
            if leg is not call.b:
                call.b, call.b_uri = leg, leg.uri
                if not call.hosted:
                    call.codec, call.dtmf_pt = "", None  # the answer's codec, not the early media's
            self._drop_forks(call, leg, now, COMPLETED_ELSEWHERE)
            return False
        if kind is not CallFailed:
            return False
        status = event.status
        self._by_session.pop(session, None)
        if not forks.failed(leg, status):
            if leg is call.b:
                call.b, call.b_uri = forks.legs[0], forks.legs[0].uri
            return True
        # Decided: a 6xx (the rest are CANCELled, saying why), or the last leg failed.
        best_status, best_leg = forks.best
        call.b, call.b_uri = best_leg, best_leg.uri
        self._drop_forks(call, None, now, f"SIP;cause={status}" if status >= 600 else None)
        if call.hosted:
            self._hosted_b_failed(call, best_status, now)
        else:
            self._b_failed(call, best_status, now)
        return True

    def _drop_forks(self, call: Call, keep: Leg | None, now: float, reason: str | None) -> None:
        """Give up every leg ringing the user's contacts but ``keep`` (see ``_drop_legs``)."""
        self._drop_legs(call, call.forks, keep, now, reason)
        call.forks = None

    @staticmethod
    def _drop_legs(call: Call, forks: Forks, keep: Leg | None, now: float, reason: str | None) -> None:
        """Give up every leg of ``forks`` but ``keep``: CANCELled while ringing (with ``reason`` as an
        RFC 3326 Reason), BYEd if it answered too; they leave the call, what they still say is absorbed."""
        for leg in forks.legs:
            if leg is not keep:
                _cancel_leg(leg.session, now, reason)
                call.detached.append(leg)

    def _hosted_event(self, call: Call, session: InviteSession, is_a: bool, event: Any, now: float) -> None:
        if is_a:
            if isinstance(event, CallConfirmed):
                if call.a.remote is None and event.msg is not None and event.msg.body:
                    try:  # A's answer to the offer in our 200 (an INVITE without SDP)
                        call.a.remote = parse_sdp(event.msg.body).rtp_address()
                    except ProtocolError:
                        return
                    call.bridged = (call.a.port, call.a.remote, call.b.port, None)
                    self._events.append(MediaBridge(call.id, call.a.port, call.a.remote, call.b.port, None,
                                                    call.codec, call.dtmf_pt))
            elif isinstance(event, CallEnded):
                by = CALLER if event.reason == "BYE" else SWITCH
                self._end_hosted(call, now, by)
            elif isinstance(event, ReinviteReceived):
                session.accept_reinvite(now, call.a.last_sdp)  # the switch's side does not move
            elif isinstance(event, InDialogRequest):
                if event.msg.method == "INFO":
                    self._info(call, event, now)
                else:
                    self._reply(event.tx, event.msg, 501, now)
            return
        if call.forks and self._fork_event(call, session, type(event), event, now):
            return
        agent = next((a for a, leg in call.offers.items() if leg.session is session), None)
        if agent is None and call.offer_forks:
            agent = next((a for a, forks in call.offer_forks.items() if forks.leg_of(session) is not None), None)
        if agent is not None and agent in call.offer_forks and self._offer_fork_event(call, agent, session, event, now):
            return
        direct = agent is None and call.b is not None and session is call.b.session
        if agent is None and not direct:
            return  # a leg already given up (a 2xx crossing our CANCEL: the session BYEs it)
        leg = call.offers.get(agent) if agent is not None else call.b
        if isinstance(event, ProvisionalReceived):
            if leg.ringing is None:
                leg.ringing = now
        elif isinstance(event, CallAnswered):
            leg = call.offers.pop(agent) if agent is not None else call.b
            leg.answered = now
            try:
                if not event.msg.body:
                    raise OfferAnswerError("answered without SDP")
                answer = parse_sdp(event.msg.body)
                if not intersect(call.offer_b, answer):
                    raise OfferAnswerError("no codec of the offer in the answer")
                leg.remote = answer.rtp_address()
            except ProtocolError:
                leg.session.bye(now)
                if agent is not None:
                    self._log(now, "noanswer", queue=call.queue, member=call.id, agent=agent, reason="bad answer")
                    self.acd.handle_event(acd_model.OfferRejected(call.id, agent), now)
                else:
                    call.b_status = 488
                    call.after_prompt = HANGUP
                    self._play(call, ["busy"], now)
                return
            if agent is not None:
                self._log(now, "answer", queue=call.queue, member=call.id, agent=agent, wait=now - call.joined)
                self.acd.handle_event(acd_model.OfferAnswered(call.id, agent), now)
                self._leave_queue(call, now, QueueOutcome.ANSWERED, agent)
                call.agent = agent
            call.b = leg
            call.b_status = event.msg.status
            call.b_uri = leg.uri
            call.hosted = False
            call.state = CONFIRMED_CALL
            self._stop_prompt(call)
            self._cancel_timer(call)
            call.timer = self.wheel.schedule(now + self.config.calls.max_duration, (call, MAX_DURATION))
            self._bridge(call)
        elif isinstance(event, CallFailed):
            if agent is not None:
                call.offers.pop(agent, None)
                self._offer_missed(call, agent, event.status, now)
            else:
                self._hosted_b_failed(call, event.status, now)

    def _offer_missed(self, call: Call, agent: str, status: int, now: float) -> None:
        """``agent``'s phone did not take the offer (its final failure ``status``): the ACD hears of
        a no answer (408, 480) or a refusal."""
        reason = "timeout" if status in (408, 480) else f"status {status}"
        self._log(now, "noanswer", queue=call.queue, member=call.id, agent=agent, reason=reason)
        missed = acd_model.NoAnswer if status in (408, 480) else acd_model.OfferRejected
        self.acd.handle_event(missed(call.id, agent), now)

    def _offer_fork_event(self, call: Call, agent: str, session: InviteSession, event: Any, now: float) -> bool:
        """An event of one of the legs ringing ``agent``'s contacts for an offer; the ACD sees one
        offer per agent. True when it is dealt with here; False when it goes on as the agent's one
        leg, ``call.offers[agent]`` now the leg it is about: the first 2xx answers for the agent (the
        other legs CANCELled, "Call completed elsewhere"); a failure waits for the other legs unless
        it is a 6xx or the last, and the agent missed the offer with the most useful one."""
        forks = call.offer_forks[agent]
        leg = forks.leg_of(session)
        if leg is None:
            return False
        kind = type(event)
        if kind is ProvisionalReceived:
            if leg.ringing is None:
                leg.ringing = now
            return True
        if kind is CallAnswered:
            call.offers[agent] = leg
            self._drop_offer_legs(call, agent, leg, now, COMPLETED_ELSEWHERE)
            return False
        if kind is not CallFailed:
            return False
        status = event.status
        self._by_session.pop(session, None)
        if not forks.failed(leg, status):
            if call.offers.get(agent) is leg:
                call.offers[agent] = forks.legs[0]
            return True
        # Decided: a 6xx (the rest are CANCELled, saying why), or the agent's last leg failed.
        self._drop_offer_legs(call, agent, None, now, f"SIP;cause={status}" if status >= 600 else None)
        call.offers.pop(agent, None)
        self._offer_missed(call, agent, forks.best[0], now)
        return True

    def _drop_offer_legs(self, call: Call, agent: str, keep: Leg | None, now: float, reason: str | None) -> None:
        """Give up every leg ringing ``agent``'s contacts but ``keep`` (see ``_drop_legs``)."""
        forks = call.offer_forks.pop(agent, None)
        if forks is not None:
            self._drop_legs(call, forks, keep, now, reason)

    def _hosted_b_failed(self, call: Call, status: int, now: float) -> None:
        """The user or trunk a hosted call went on to did not answer: the caller hears busy."""
        call.b_status = status
        self._cancel_timer(call)
        call.after_prompt = HANGUP
        self._play(call, ["busy"], now)

    def _end_hosted(self, call: Call, now: float, by: str) -> None:
        """A hosted call ends: its queue stay as an abandon (the caller hung up) or an exit, every
        leg ringing for it cancelled, leg A hung up."""
        disposition = ANSWERED_D
        if call.queue is not None:
            if by == CALLER:
                self._log(now, "abandon", queue=call.queue, member=call.id, wait=now - call.joined,
                          position=self._position(call))
                disposition = CANCELLED
            else:
                self._log(now, "exit", queue=call.queue, member=call.id, wait=now - call.joined, reason=by)
            self.acd.handle_event(acd_model.MemberLeft(call.id), now)
            self._leave_queue(call, now, QueueOutcome.ABANDONED if by == CALLER else QueueOutcome.INTERRUPTED)
        for leg in (call.a, call.b):
            if leg is not None and leg.session is not None and leg.session.state != TERMINATED:
                try:
                    leg.session.bye(now)  # a leg still ringing gets a CANCEL (RFC 3261 §9.1)
                except ProtocolError:
                    pass
        self._finish(call, now, disposition, 200, by)

    # -- queues -----------------------------------------------------------------------------------
    def _join(self, call: Call, name: str, now: float, priority: int | None = None) -> None:
        """The caller waits in queue ``name``: its priority is the target's (an IVR's VIP choice), else
        the queue's ``vip`` for a caller number or trunk it lists, else 0."""
        queue = self.config.queue(name)
        vip = call.caller in queue.vip_callers or (call.source is not None and call.source in queue.vip_trunks)
        if priority is None:
            priority = queue.vip if vip else 0
        call.queue, call.joined, call.priority = name, now, priority
        call.offered_to = []
        self.members[call.id] = call
        self._log(now, "join", queue=name, member=call.id, priority=call.priority)
        self._play(call, [queue.music], now, loop=True)
        if queue.announce_every and queue.announce:
            call.announce_timer = self.wheel.schedule(now + queue.announce_every, (call, ANNOUNCE))
        self.acd.handle_event(acd_model.MemberJoined(call.id, name, call.priority), now)

    def _leave_queue(self, call: Call, now: float, outcome: QueueOutcome, agent: str = "") -> None:
        for other_agent in list(call.offer_forks):  # an agent's other contacts still ringing
            self._drop_offer_legs(call, other_agent, call.offers.get(other_agent), now, None)
        for other in call.offers.values():
            if other.session is not None and other.session.state != TERMINATED:
                other.session.bye(now)
                # It leaves the call: what it still says (the 487 of its CANCEL) is absorbed, and its
                # session is forgotten once it ends rather than kept for the life of the node.
                call.detached.append(other)
        call.offers.clear()
        call.segments.append(QueueSegment(queue=call.queue, joined=call.joined, left=now, outcome=outcome,
                                          agents_offered=tuple(call.offered_to), answered_by=agent))
        self.members.pop(call.id, None)
        call.queue = None
        if call.announce_timer is not None:
            self.wheel.cancel(call.announce_timer)
            call.announce_timer = None

    def _announce(self, call: Call, now: float) -> None:
        """Tell a waiting caller its position and expected wait: the queue's announce prompts, with
        the numbers put in their names. The expected wait is the queue's average speed of answer so
        far (what Asterisk's announce-holdtime says), at least a minute."""
        if call.offers:  # an agent's phone rings: the caller is about to be served
            call.announce_timer = self.wheel.schedule(now + self.config.queue(call.queue).announce_every,
                                                      (call, ANNOUNCE))
            return
        stats = self.acd.queue_stats(call.queue, now)
        minutes = max(1, -(-int(stats.average_speed_of_answer) // 60))
        position = self._position(call)
        prompts = [p.replace("{position}", str(position)).replace("{minutes}", str(minutes))
                   for p in self.config.queue(call.queue).announce]
        self._play(call, prompts, now)

    def _position(self, call: Call) -> int:
        """The caller's place in its queue (1: next to be served): higher priority first, then earlier."""
        ahead = sum(1 for m in self.members.values()
                    if m is not call and m.queue == call.queue and not m.offers
                    and (m.priority, -m.joined) > (call.priority, -call.joined))
        return ahead + 1

    def _offer(self, call: Call, agent: str, now: float) -> None:
        """Ring ``agent``'s phone for the queued ``call`` (the ACD's Offer): every contact of its first
        registered phone, one leg each, the first in ``call.offers`` and all of them in
        ``call.offer_forks`` when there are several (``_offer_fork_event``)."""
        config = self.config.agent(agent)
        bindings = next((bs for phone in config.phones if (bs := self.registrar.lookup(phone, now))), ())
        call.offered_to.append(agent)
        self._log(now, "offer", queue=call.queue, member=call.id, agent=agent)
        legs = [leg for binding in bindings
                if (leg := self._dial(call, binding.contact, binding.received, now)) is not None]
        if not legs:
            self._log(now, "noanswer", queue=call.queue, member=call.id, agent=agent, reason="unreachable")
            self.acd.handle_event(acd_model.OfferRejected(call.id, agent), now)
            return
        call.offers[agent] = legs[0]
        if len(legs) > 1:
            call.offer_forks[agent] = Forks(legs)

    def _acd_step(self, now: float) -> bool:
        """Act on what the ACD handed out; False when there was nothing. Re-arms its timer."""
        acd = self.acd
        did = False
        while (out := acd.next_output()) is not None:
            did = True
            call = self.members.get(getattr(out, "member", None) or "")
            if isinstance(out, acd_model.Offer):
                if call is not None:
                    self._offer(call, out.agent, now)
                else:
                    acd.handle_event(acd_model.OfferRejected(out.member, out.agent), now)
            elif isinstance(out, (acd_model.OfferCancelled, acd_model.OfferTimedOut)):
                leg = call.offers.pop(out.agent, None) if call is not None else None
                if leg is not None and out.agent in call.offer_forks:
                    self._drop_offer_legs(call, out.agent, None, now, None)  # every contact ringing
                elif leg is not None and leg.session is not None and leg.session.state != TERMINATED:
                    leg.session.bye(now)  # CANCEL while it rings
                if isinstance(out, acd_model.OfferTimedOut) and call is not None:
                    self._log(now, "noanswer", queue=out.queue, member=out.member, agent=out.agent, reason="timeout")
                elif isinstance(out, acd_model.OfferCancelled):
                    self._log(now, "state", agent=out.agent, reason=acd_model.IDLE, detail=out.reason)
            elif isinstance(out, acd_model.MemberExited):
                if call is not None:
                    self._log(now, "exit", queue=out.queue, member=out.member, wait=now - call.joined,
                              reason=out.reason)
                    outcome = QueueOutcome.TIMEOUT if out.reason == acd_model.EXIT_MAX_WAIT else QueueOutcome.NO_AGENTS
                    self._leave_queue(call, now, outcome)
                    self._go(call, self.config.queue(out.queue).on_exit, now)
            elif isinstance(out, acd_model.AgentPaused):
                self._log(now, "status", agent=out.agent, reason=acd_model.ON_BREAK, detail=out.reason)
        deadline = acd.get_timer()
        if deadline != self._acd_deadline:
            if self._acd_timer is not None:
                self.wheel.cancel(self._acd_timer)
                self._acd_timer = None
            self._acd_deadline = deadline
            if deadline is not None:
                self._acd_timer = self.wheel.schedule(deadline, (self, ACD_TIMER))
        return did

    def on_timer(self, name: str, now: float) -> None:
        """The ACD's timer (ring timeouts, tiers, wrap-up, maximum waits), and an agent's wrap-up end
        for the agent log."""
        if name.startswith(IDLE_AFTER):
            self._log(now, "state", agent=name[len(IDLE_AFTER):], reason=acd_model.IDLE)
            self.process(now)
            return
        self._acd_timer = None
        self._acd_deadline = None
        self.acd.handle_timer(now)
        self.process(now)

    # -- agents -----------------------------------------------------------------------------------
    def _start_acd(self, now: float) -> None:
        cfg = self.config
        agents = [acd_model.Agent(a.id, a.name, dict(a.skills), tuple(a.groups), tuple(a.phones), a.wrap_up,
                                  a.max_no_answer, a.no_answer_delay) for a in cfg.agents]
        queues = [acd_model.Queue(
            q.name, q.strategy,
            tiers=tuple(acd_model.Tier(t.agent, t.level, t.position) for t in q.agents),
            groups=tuple(acd_model.GroupTier(g.group, g.level, g.position) for g in q.groups),
            tier_wait=q.tier_wait, level_waits=dict(q.level_waits), vip_priority=q.vip_priority,
            skill=q.skill, min_skill_level=q.min_skill_level, ring_timeout=q.ring_timeout,
            wrap_up=q.wrap_up, max_wait=q.max_wait, join_empty=q.join_empty,
            leave_when_empty=q.leave_when_empty, service_level=q.service_level,
            short_abandon=q.short_abandon) for q in cfg.queues]
        self.acd = acd_model.AutomaticCallDistributor(queues, agents, seed=cfg.acd.seed)
        self.phone_agent = {phone: a.id for a in cfg.agents for phone in a.phones}
        self._acd_started = False
        self.registrar.on_change = self._phone_changed

    def start(self, now: float) -> None:
        """The node is up: agents configured "available" log in, registered phones are known."""
        if self.acd is None or self._acd_started:
            return
        self._acd_started = True
        for phone in self.phone_agent:
            if self.registrar.lookup(phone, now):
                self.acd.handle_event(acd_model.PhoneRegistered(phone), now)
        for agent in self.config.agents:
            if agent.status == "available":
                self._agent_status(agent.id, acd_model.AVAILABLE, "", now)
        self.process(now)

    def _phone_changed(self, user: str, registered: bool) -> None:
        if user in self.phone_agent and self.acd is not None:
            event = acd_model.PhoneRegistered(user) if registered else acd_model.PhoneUnregistered(user)
            self._acd_inbox.append(event)

    def agent_status(self, agent: str, status: str, reason: str, now: float) -> None:
        """Set ``agent``'s status from outside the phone (a preview the agent missed too often puts
        them on break with reason "no_answer"), logged like a feature code's change."""
        if self.acd is None:
            return
        self._agent_status(agent, status, reason, now)
        self.process(now)

    def _agent_status(self, agent: str, status: str, reason: str, now: float) -> None:
        self.acd.handle_event(acd_model.AgentStatusChanged(agent, status, reason), now)
        self._log(now, "status", agent=agent, reason=status, detail=reason)

    def _wrap_up(self, agent: str, call: Call) -> float:
        """The wrap-up the ACD gives ``agent`` after ``call``: the agent's own, else the queue's."""
        own = self.config.agent(agent).wrap_up
        if own is not None:
            return own
        if call.agent == agent and call.segments:
            return self.config.queue(call.segments[-1].queue).wrap_up
        return 0.0

    def _feature_code(self, number: str) -> tuple[str, str] | None:
        """The agent status a dialled feature code asks for (RFC-less: the config's [acd] codes)."""
        codes = self.config.acd
        if number == codes.login or number == codes.available:
            return acd_model.AVAILABLE, ""
        if number == codes.logout:
            return acd_model.LOGGED_OUT, ""
        if number == codes.pause:
            return acd_model.ON_BREAK, codes.break_reasons[0]
        reason = _numbered(number, codes.pause, codes.break_reasons)
        return (acd_model.ON_BREAK, reason) if reason is not None else None

    def _disposition_code(self, number: str) -> str | None:
        """The disposition a dialled code gives (the [acd] disposition code and the code's number)."""
        return _numbered(number, self.config.acd.disposition, self.config.acd.dispositions)

    def _log(self, now: float, kind: str, **fields) -> None:
        self._events.append(QueueLogEntry(at=now, kind=kind, **fields))
        # The agent's state (set by the switch) as it changes: the agent log's other half.
        state = _AGENT_STATE.get(kind)
        if state is not None and fields.get("agent"):
            self._events.append(QueueLogEntry(at=now, kind="state", agent=fields["agent"], reason=state))

    # -- leg B's answers --------------------------------------------------------------------------
    def _answer_for_a(self, call: Call, body: bytes) -> bytes:
        """B's answer anchored for A, leg B's remote noted; raises ProtocolError (488: nothing in
        common with what we offered)."""
        answer = parse_sdp(body)
        if not intersect(call.offer_b, answer):
            raise OfferAnswerError("Not Acceptable Here: B's answer has no codec of the offer")
        call.b.remote = answer.rtp_address()
        for codec in answer.codecs():
            name = codec.name.lower()
            if name == "telephone-event" and codec.clock == 8000 and call.dtmf_pt is None:
                call.dtmf_pt = codec.pt
            elif name not in AUXILIARY_FORMATS and not call.codec:
                call.codec = codec.name.upper()
        _, call.a.last_sdp = call.a.origin.anchor_wire(answer, address=self.address, port=call.a.port,
                                                       in_place=True)
        return call.a.last_sdp

    def _provisional(self, call: Call, msg: Any, now: float) -> None:
        if call.state not in (CALLING, EARLY):
            return
        call.state = EARLY
        if call.ringing_at is None:
            call.ringing_at = call.b.ringing = now
        status = msg.status
        body = b""
        if msg.body:
            try:
                body = self._answer_for_a(call, msg.body)
            except ProtocolError:
                body = b""  # early media we cannot read: ring without it
        if status == 183 and not body:
            status = 180
        call.a.session.ring(now, status, body=body)
        if body:
            self._bridge(call)  # early media (ringback, announcements) flows before the answer

    def _answered(self, call: Call, msg: Any, now: float) -> None:
        if call.state not in (CALLING, EARLY):
            return
        self._cancel_timer(call)
        call.b_status = msg.status
        call.b.answered = now
        body = msg.body
        try:
            if body:
                sdp = self._answer_for_a(call, body)
            elif call.b.remote is not None:
                sdp = call.a.last_sdp  # the answer came in a 183 (RFC 3261 §13.2.1: the same one)
            else:
                raise OfferAnswerError("B answered without SDP", 488)
        except ProtocolError as exc:
            call.b.session.bye(now)
            status = exc.status if exc.status != 400 else 488
            self._fail_a(call, now, status, exc.reason, REJECTED, SWITCH)
            return
        call.a.session.answer(now, sdp)
        call.state = ANSWERED
        call.answered_at = now
        self.stats["answered"] += 1
        if self.acd is not None:
            # An agent on a call the ACD did not offer (called directly, or calling out) is busy.
            for phone in (call.user, call.caller if call.source == "users" else None):
                agent = self.phone_agent.get(phone) if phone else None
                if agent is not None and agent not in call.busy_agents:
                    call.busy_agents.append(agent)
                    self.acd.handle_event(acd_model.AgentCallStarted(agent), now)
                    self._log(now, "state", agent=agent, reason=acd_model.TALKING, member=call.id)
        self._bridge(call)
        self._events.append(CallConnected(call.id, self._make_summary(call, now, ANSWERED_D, 200, None)))
        call.timer = self.wheel.schedule(now + self.config.calls.max_duration, (call, MAX_DURATION))

    def _b_failed(self, call: Call, status: int, now: float) -> None:
        if call.state not in (CALLING, EARLY):
            return
        call.b_status = status
        mapped, reason = map_failure(status)
        # A final answer from B is B's decision; a timeout or a server failure is nobody's.
        by = CALLEE if status < 500 and status != 408 else None
        self._fail_a(call, now, mapped, reason, _disposition(mapped), by)

    def _fail_a(self, call: Call, now: float, status: int, reason: str | None, disposition: str,
                by: str | None, headers=()) -> None:
        a = call.a.session
        if call.forks:
            self._drop_forks(call, call.b, now, None)  # every other contact ringing: CANCEL
        if call.b is not None and call.b.session is not None and call.b.session.state != TERMINATED:
            call.b.session.bye(now)  # a UAC still calling CANCELs (RFC 3261 §9.1)
            if not call.b_status:
                call.b_status = 487  # what a CANCELled INVITE ends with (RFC 3261 §9.2)
        try:
            a.reject(now, status, reason, headers=headers)
        except ProtocolError:
            pass
        if disposition == FAILED:
            self.stats["failed"] += 1
        self._finish(call, now, disposition, status, by)

    def _cancelled(self, call: Call, now: float) -> None:
        # RFC 3261 §9.2: the session layer has answered the CANCEL 200 and the INVITE 487; B gets
        # a CANCEL of its own (sent when its first provisional arrives, §9.1).
        if call.state not in (CALLING, EARLY):
            return
        call.cancelled = True
        if call.forks:
            self._drop_forks(call, call.b, now, None)  # a missed call on each phone: no Reason
        call.b.session.cancel(now)
        call.b_status = call.b_status or 487
        self.stats["cancelled"] += 1
        self._finish(call, now, CANCELLED, 487, CALLER)

    # -- transfer (RFC 3515 REFER, RFC 3891 Replaces) ---------------------------------------------
    def _refer(self, call: Call, leg: Leg, event: InDialogRequest, now: float) -> None:
        """A leg asks the switch to transfer the other party: blind (Refer-To a number or user) or
        attended (Refer-To carrying Replaces: the dialog of a second call the referrer has with the
        switch, whose other party takes the referrer's place). Answered 202; the progress goes to the
        referrer as NOTIFYs with a message/sipfrag status line (RFC 3515 §2.4.4, §2.4.5)."""
        msg = event.msg
        other = call.b if leg is call.a else call.a
        refer_to = msg.header("Refer-To") or msg.header("r")
        try:
            if not refer_to:
                raise ValueError("no Refer-To")
            target_uri = parse_name_addr(refer_to).uri
        except ValueError:
            self._reply(event.tx, msg, 400, now)
            return
        if call.transfer is not None or call.reinvite_from is not None or call.state != CONFIRMED_CALL:
            self._reply(event.tx, msg, 491, now)  # one offer or transfer at a time (§14.2 in spirit)
            return
        replaces = target_uri.headers.get("Replaces") if target_uri.headers else None
        # The slot the new party takes: the referrer's, so that its port (and the relay) stay.
        if replaces:
            found = self._replaced_leg(replaces)
            if found is None or found[0] is call:
                self._reply(event.tx, msg, 481 if found is None else 403, now)
                return
            other_call, target = found
        else:
            target = None
            other_call = None
        self._reply(event.tx, msg, 202, now)
        self._notify(leg, now, "100 Trying", active=True)
        offer = parse_sdp(leg.last_sdp) if leg.last_sdp else None
        if offer is not None and call.codec:
            keep = {call.codec.lower(), "telephone-event"}
            try:
                offer = _restrict(offer, keep)
            except ProtocolError:
                pass
        if target is None:
            number = target_uri.user or ""
            source = call.source if leg is call.a else ("users" if call.user else None)
            dest = self._resolve(number, source, now)
            if dest is None or offer is None:
                self._notify(leg, now, "404 Not Found", active=False)
                return
            uri, peer, trunk = dest
            new = Leg(None, leg.port, now)
            sd, new.last_sdp = new.origin.anchor_wire(offer, address=self.address, port=leg.port)
            try:
                new.session = self.sessions.invite(uri, self._from_uri(call), now, body=new.last_sdp, peer=peer,
                                                   credentials=_credentials(trunk))
            except (ProtocolError, ValueError):
                self._notify(leg, now, "503 Service Unavailable", active=False)
                return
            new.uri = uri
            call.transfer = Transfer(leg, new, "blind", sd, None)
            self._by_session[new.session] = call
            # The transferee hears ringback meanwhile (the relay stays up: a failure resumes the call).
            self._events.append(MediaPlay(call.id, "a" if other is call.a else "b", "ringback", True))
        else:
            # Attended: the other call's far party is re-INVITEd onto this call's relay, in the
            # referrer's slot; the referrer's leg in the other call is hung up.
            sd, body = target.origin.anchor_wire(offer, address=self.address, port=leg.port)
            try:
                target.session.reinvite(now, body)
            except ProtocolError:
                self._notify(leg, now, "500 Server Internal Error", active=False)
                return
            call.transfer = Transfer(leg, target, "attended", sd, other_call)
            self._by_session[target.session] = call
            target.port_before = target.port
            target.port = leg.port

    def _replaced_leg(self, replaces: str) -> tuple[Call, Leg] | None:
        """The call holding the dialog a Replaces value names (RFC 3891 §3: call-id;to-tag;from-tag,
        tags as the referrer sees them: to-tag is ours) and its other party's leg."""
        call_id, *params = replaces.split(";")
        tags = dict(p.strip().split("=", 1) for p in params if "=" in p)
        session = self.sessions.session_for(call_id.strip(), tags.get("to-tag", ""), tags.get("from-tag", ""))
        other_call = self._by_session.get(session) if session is not None else None
        if other_call is None or other_call.state != CONFIRMED_CALL:
            return None
        if other_call.a.session is session:
            return other_call, other_call.b
        if other_call.b is not None and other_call.b.session is session:
            return other_call, other_call.a
        return None

    def _resolve(self, number: str, source: str | None, now: float) -> tuple[str, Peer, Any] | None:
        """Where a number goes (a route to a registered user's phone or a trunk): (URI, next hop,
        the trunk or None)."""
        match = self.router.lookup(number, source) or self.router.lookup(number, None)
        if match is None:
            return None
        if match.kind == "user":
            bindings = self.registrar.lookup(match.name, now)
            if not bindings:
                return None
            return bindings[0].contact, bindings[0].received, None
        if match.kind == "trunk":
            trunk = self._trunks.get(match.name)
            return (*self._trunk_target(trunk, match.number), trunk)
        return None

    def _notify(self, leg: Leg, now: float, status_line: str, *, active: bool) -> None:
        state = "active;expires=60" if active else "terminated;reason=noresource"
        try:
            leg.session.request("NOTIFY", now, headers=[
                ("Event", "refer"), ("Subscription-State", state),
                ("Contact", self.sessions.contact_for(leg.session.peer.transport)),
                ("Content-Type", "message/sipfrag;version=2.0")],
                body=f"SIP/2.0 {status_line}\r\n".encode())
        except ProtocolError:
            pass  # the referrer's dialog is gone: nobody to tell

    def _transfer_event(self, call: Call, session: InviteSession, event: Any, now: float) -> bool:
        """An event of the leg a transfer brings in; False when the event is not about it."""
        t = call.transfer
        if t is None or session is not t.target.session:
            return False
        if t.kind == "blind":
            if isinstance(event, CallAnswered):
                try:
                    answer = parse_sdp(event.msg.body or b"")
                    if not intersect(t.offer, answer):
                        raise OfferAnswerError("no codec of the offer in the answer")
                    t.target.remote = answer.rtp_address()
                except ProtocolError:
                    t.target.session.bye(now)
                    self._transfer_failed(call, now, "488 Not Acceptable Here")
                    return True
                self._transfer_done(call, now)
            elif isinstance(event, CallFailed):
                reason = {486: "Busy Here", 480: "Temporarily Unavailable", 408: "Request Timeout",
                          404: "Not Found", 603: "Decline"}.get(event.status, "Failed")
                self._transfer_failed(call, now, f"{event.status} {reason}")
            return True
        # attended: the re-INVITE's answer
        if isinstance(event, ReinviteAnswered):
            if 200 <= event.status < 300 and event.msg is not None and event.msg.body:
                try:
                    answer = parse_sdp(event.msg.body)
                    t.target.remote = answer.rtp_address()
                except ProtocolError:
                    self._transfer_failed(call, now, "488 Not Acceptable Here")
                    return True
                self._transfer_done(call, now)
            else:
                self._transfer_failed(call, now, f"{event.status} Failed")
            return True
        return False

    def _transfer_done(self, call: Call, now: float) -> None:
        t, call.transfer = call.transfer, None
        referrer, new = t.referrer, t.target
        slot = "a" if referrer is call.a else "b"
        if slot == "a":
            call.a = new
        else:
            call.b = new
            call.b_uri = new.uri or call.b_uri
        new.last_sdp = t.offer.serialize()
        call.transferred_to = new.uri or (t.other_call.callee if t.other_call else "")
        self._events.append(MediaStop(call.id, "b" if slot == "a" else "a"))
        self._bridge(call)
        self._notify(referrer, now, "200 OK", active=False)
        # The referrer is out of the call: its leg is hung up (RFC 5589 §6 has the transferor do it;
        # the switch does not wait on that).
        self._detach(call, referrer, now)
        if t.other_call is not None:
            other_call = t.other_call
            # The other call loses its far party to this one; its referrer leg is hung up too.
            if other_call.a is new:
                other_call.a = None
            else:
                other_call.b = None
            if new.port_before:
                self.ports.release(new.port_before, now)
            self._hang_up(other_call, now, SWITCH)

    def _transfer_failed(self, call: Call, now: float, status_line: str) -> None:
        t, call.transfer = call.transfer, None
        other = call.b if t.referrer is call.a else call.a
        self._events.append(MediaStop(call.id, "a" if other is call.a else "b"))
        if t.kind == "attended":
            t.target.port = t.target.port_before
            self._by_session[t.target.session] = t.other_call
        self._notify(t.referrer, now, status_line, active=False)

    def _detach(self, call: Call, leg: Leg, now: float) -> None:
        """A leg that has left the call: hung up; what it still says is absorbed."""
        call.detached.append(leg)
        if leg.session is not None and leg.session.state != TERMINATED:
            try:
                leg.session.bye(now)
            except ProtocolError:
                pass

    # -- re-INVITE (RFC 3261 §14, RFC 3264 §8) ----------------------------------------------------
    def _reinvite(self, call: Call, leg: Leg, msg: Any, now: float) -> None:
        other = call.b if leg is call.a else call.a
        session = leg.session
        if not msg.body:
            # An offer-less re-INVITE (a session refresh): we offer what we last sent this leg;
            # its answer comes in the ACK and changes nothing on the other leg.
            session.accept_reinvite(now, leg.last_sdp)
            return
        if call.state != CONFIRMED_CALL or other.session.state != CONFIRMED or call.reinvite_from:
            session.reject_reinvite(now, 491)  # §14.2: another offer is in progress
            return
        try:
            offer = parse_sdp(msg.body)
            restricted = _restrict(offer, call.supported)
            remote = offer.rtp_address()
        except ProtocolError as exc:
            session.reject_reinvite(now, exc.status if exc.status != 400 else 488)
            return
        relayed, body = other.origin.anchor_wire(restricted, address=self.address, port=other.port, in_place=True)
        try:
            other.session.reinvite(now, body)
        except LocalProtocolError:
            session.reject_reinvite(now, 491)
            return
        other.last_sdp = body
        call.reinvite_from = leg
        call.reinvite_offer = relayed
        leg.remote = remote

    def _reinvite_answered(self, call: Call, leg: Leg, status: int, msg: Any, now: float) -> None:
        origin = call.reinvite_from
        if origin is None or origin is leg:
            return
        call.reinvite_from = None
        offer, call.reinvite_offer = call.reinvite_offer, None
        if 200 <= status < 300 and msg is not None and msg.body:
            try:
                answer = parse_sdp(msg.body)
                if not intersect(offer, answer):
                    raise OfferAnswerError("no codec of the offer in the answer")
                leg.remote = answer.rtp_address()
                _, body = origin.origin.anchor_wire(answer, address=self.address, port=origin.port, in_place=True)
            except ProtocolError:
                origin.session.reject_reinvite(now, 488)
                return
            origin.last_sdp = body
            origin.session.accept_reinvite(now, origin.last_sdp)
            self._bridge(call)
            return
        origin.session.reject_reinvite(now, status if status >= 300 else 500)
        if leg.session.state == TERMINATED:
            # 408/481 to a re-INVITE ends that leg's dialog (§14.1); the session has sent its BYE.
            origin.session.bye(now)
            self._finish(call, now, ANSWERED_D, 200, SWITCH)

    # -- timers -----------------------------------------------------------------------------------
    def _call_timer(self, call: Call, name: str, now: float) -> None:
        if call.state == ENDED:
            return
        if call.hosted:
            if name == MENU and call.menu is not None:
                self._menu_actions(call, call.menu.timer(now), now)
            elif name == PROMPT_GUARD:
                self._prompt_ended(call, now)
            elif name == AMD_GUARD:
                self.amd_result(call.id, "NOTSURE", now)
            elif name == ANNOUNCE and call.queue is not None:
                self._announce(call, now)
            elif name == RING_TIMEOUT and call.b is not None and call.b.session is not None:
                call.b.session.bye(now)  # CANCEL the leg that rings out; the caller hears busy
                if call.forks:
                    self._drop_forks(call, None, now, None)  # and every other contact ringing
                call.b_status = 480
                call.after_prompt = HANGUP
                self._play(call, ["busy"], now)
            elif name == MAX_DURATION:
                self._end_hosted(call, now, SWITCH)
            self.process(now)
            return
        if name == RING_TIMEOUT and call.outbound is not None and call.state == CALLING:
            call.a.session.bye(now)  # CANCEL (RFC 3261 §9.1)
            call.b_status = 487
            self._finish(call, now, NO_ANSWER, 487, SWITCH)
            self.process(now)
            return
        if name == RING_TIMEOUT and call.state in (CALLING, EARLY):
            self._fail_a(call, now, 480, "No Answer", NO_ANSWER, SWITCH)
        elif name == MAX_DURATION:
            self._hang_up(call, now, SWITCH)
        self.process(now)

    def _hang_up(self, call: Call, now: float, by: str) -> None:
        for leg in (call.a, call.b):
            if leg is not None and leg.session is not None and leg.session.state != TERMINATED:
                try:
                    leg.session.bye(now)
                except ProtocolError:
                    pass
        self._finish(call, now, ANSWERED_D, 200, by)

    def _cancel_timer(self, call: Call) -> None:
        if call.timer is not None:
            self.wheel.cancel(call.timer)
            call.timer = None

    # -- media and the end ------------------------------------------------------------------------
    def _bridge(self, call: Call) -> None:
        a, b = call.a, call.b
        if a.remote is None or b.remote is None:
            return
        key = (a.port, a.remote, b.port, b.remote)
        if key == call.bridged:
            return
        call.bridged = key
        self._events.append(MediaBridge(call.id, a.port, a.remote, b.port, b.remote, call.codec, call.dtmf_pt))

    def _finish(self, call: Call, now: float, disposition: str, status: int, by: str | None) -> None:
        if call.state == ENDED:
            return
        call.state = ENDED
        self._cancel_timer(call)
        for handle in (call.guard, call.menu_timer, call.announce_timer):
            if handle is not None:
                self.wheel.cancel(handle)
        call.guard = call.menu_timer = call.announce_timer = None
        if call.transfer is not None:
            t, call.transfer = call.transfer, None
            if t.kind == "blind" and t.target.session is not None and t.target.session.state != TERMINATED:
                t.target.session.bye(now)  # CANCEL the transfer's target still ringing
        self.calls.pop(call.id, None)
        if self.acd is not None:
            for agent in ([call.agent] if call.agent else []) + call.busy_agents:
                talk = now - (call.segments[-1].left if call.agent == agent and call.segments else call.answered_at or now)
                self.acd.handle_event(acd_model.CallEnded(agent), now)
                wrap = self._wrap_up(agent, call)
                self._log(now, "talk_end", agent=agent, member=call.id, wait=talk,
                          queue=call.segments[-1].queue if call.agent == agent and call.segments else "",
                          detail=f"{wrap:g}")
                if wrap > 0:
                    self._log(now, "state", agent=agent, reason=acd_model.WRAP_UP, detail=f"{wrap:g}")
                    self.wheel.schedule(now + wrap, (self, f"{IDLE_AFTER}{agent}"))
                else:
                    self._log(now, "state", agent=agent, reason=acd_model.IDLE)
        for name in call.trunks:
            self._trunk_calls[name] -= 1
            if self._trunk_calls[name] <= 0:
                del self._trunk_calls[name]
        if call.forks:
            self._drop_forks(call, call.b, now, None)
        for leg in (call.a, call.b):
            if leg is None:
                continue
            if leg.port:
                self.ports.release(leg.port, now)
            if leg.session is not None and leg.session.state == TERMINATED:
                self._by_session.pop(leg.session, None)
        for leg in call.detached:
            if leg.session is not None and leg.session.state == TERMINATED:
                self._by_session.pop(leg.session, None)
        if call.bridged is not None:
            self._events.append(MediaRelease(call.id))
        self._summary(call, now, disposition, status, by)

    def _summary(self, call: Call, now: float, disposition: str, status: int, by: str | None) -> None:
        self._events.append(self._make_summary(call, now, disposition, status, by))

    def _make_summary(self, call: Call, now: float, disposition: str, status: int,
                      by: str | None) -> CallSummary:
        route = call.route
        trunk = None
        if route is not None and route.kind == "trunk":
            trunk = route.name
        elif call.source not in (None, "users"):
            trunk = call.source
        b, outbound, segments = call.b, call.outbound, call.segments
        b_session = b.session if b is not None else None
        return CallSummary(
            call_id=call.id, caller=call.caller, callee=call.callee,
            route=route.route.name if route is not None else None,
            target=route.route.target if route is not None else None,
            trunk=trunk, user=call.user, source=call.source,
            offered_at=call.offered_at, answered_at=call.answered_at, ended_at=now,
            disposition=disposition, hangup_by=by, status=status,
            ringing_at=call.ringing_at, codec=call.codec, caller_uri=call.caller_uri,
            leg_b_call_id=b_session.call_id if b_session is not None else None, leg_b_uri=call.b_uri,
            leg_b_status=call.b_status, segments=tuple(segments), dtmf=call.dtmf,
            hosted=call.hosted or bool(segments) or call.hosted_sd is not None, agent=call.agent,
            transferred_to=call.transferred_to,
            direction="outbound" if outbound is not None else "inbound",
            leg_b_offered_at=b.offered if b is not None else None,
            leg_b_ringing_at=b.ringing if b is not None else None,
            leg_b_answered_at=b.answered if b is not None else None,
            amd=outbound.amd if outbound is not None else "",
            campaign_id=outbound.campaign_id if outbound is not None else "",
            contact_id=outbound.contact_id if outbound is not None else "",
        )

    def _reply(self, tx, msg, status: int, now: float) -> None:
        headers = [("Allow", "INVITE, ACK, BYE, CANCEL, OPTIONS, REGISTER, INFO, REFER")] if status == 501 else []
        data = build_response(msg, status, to_tag=msg.to_tag, headers=headers)
        try:
            self.sessions.transactions.send_response(tx, data, status, now)
        except ProtocolError:
            pass
