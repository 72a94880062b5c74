"""SIP transactions (RFC 3261 §17, with RFC 6026's Accepted state), sans-IO.

Implements: the four transaction machines of §17.1.1 (client INVITE), §17.1.2 (client non-INVITE),
§17.2.1 (server INVITE) and §17.2.2 (server non-INVITE); matching of §17.1.3 and §17.2.3 (with the
RFC 2543 fallback); CANCEL matching and its 200/481 (§9.2); the received/rport stamping and the
response address of §18.2.1, §18.2.2 and RFC 3581; timers A-K of §17 (Table 4) and L, M of RFC 6026.

Theory of operation
-------------------
The transport hands every parsed message to ``TransactionLayer.receive(msg, peer, now)``; the UA
core above (the "TU") calls ``send_request`` and ``send_response``; the bindings call
``handle_timer(now)`` when ``get_timer()`` comes due. After each call the layer has queued
*events* for the TU (``next_event()``) and *datagrams* for the transport (``datagrams_to_send()``).
Nothing here reads a clock or touches a socket.

Each transaction is a small state machine whose whole behaviour is the table ``TRANSITIONS``
mapping ``(state, input) -> (action, next state)``, as in h11. Inputs are what can happen to a
transaction: a response of a class arriving (``PROVISIONAL``, ``SUCCESS``, ``FAILURE``), a
retransmitted request or an ACK arriving, the TU sending a response, a timer firing (inputs are
named after the RFC's timers: ``"Timer A"`` ...), the transport failing. An action is the name of a
method; entering a state runs its ``ON_ENTER`` method (which starts and stops timers), so a state's
timers are set in one place whatever the way in. Each class resolves its two tables to functions
once, when it is defined (``_table``). An input with no entry for the current state is a
protocol error: ``RemoteProtocolError`` for something the peer sent (the layer drops that message:
a response cannot be answered), ``LocalProtocolError`` for something the TU asked (raised to it,
e.g. a second final response).

Retransmissions are absorbed here: a retransmitted request matches its server transaction and gets
the last response again (or nothing, §17.2.2 Trying), never a second ``RequestReceived``; a
retransmitted final response matches its client transaction and, for a non-2xx to an INVITE, gets
the ACK again (§17.1.1.3). The ACK of a 2xx is not part of any transaction (§13.2.2.4): the TU sends
it with ``send_stateless`` and the server side sees it as ``AckReceived``.

Why RFC 6026's Accepted state: with RFC 3261 alone an INVITE transaction ends on a 2xx, so a
retransmitted INVITE would start a second transaction and a retransmitted 2xx would match nothing.
In Accepted the server absorbs INVITE retransmissions and lets the TU retransmit its 2xx (§13.3.1.4)
for 64*T1 (Timer L); the client passes each 2xx up for 64*T1 (Timer M) so the TU can ACK it again.

Timers live on one ``TimerWheel`` (shared with the rest of the worker if one is passed in). Items
on the wheel are ``(owner, name)`` pairs; ``handle_timer`` calls ``owner.on_timer(name, now)``, so
other layers can put their own timers on the same wheel. Over a reliable transport (``Peer.reliable``)
Timers A, E and G never start and D, I, J and K are zero (§17.1.1.2, §17.1.2.2, §17.2.1, §17.2.2).
"""
from __future__ import annotations

from collections import deque
from sys import intern
from dataclasses import dataclass
from typing import Any

from core.errors import LocalProtocolError, RemoteProtocolError
from core.memory import untrack
from core.scheduler.wheel import TimerWheel
from core.sip.addr import Peer
from core.sip.ids import random_hex
from core.sip.message import build_request, build_response

# RFC 3261 §8.1.1.7: a branch starting with the magic cookie was made by an RFC 3261 element and is
# unique; anything else falls back to RFC 2543 matching (§17.2.3).
MAGIC_COOKIE = "z9hG4bK"

# States (RFC 3261 §17 figures 5-8; Accepted from RFC 6026, which amends figures 5 and 7).
CALLING = "Calling"
TRYING = "Trying"
PROCEEDING = "Proceeding"
COMPLETED = "Completed"
CONFIRMED = "Confirmed"
ACCEPTED = "Accepted"
TERMINATED = "Terminated"

# Inputs from the network.
PROVISIONAL = "1xx received"
SUCCESS = "2xx received"
FAILURE = "300-699 received"
FINAL = "200-699 received"  # non-INVITE client: every final response is the same input
REQUEST = "request retransmission"
ACK = "ACK received"
TRANSPORT_ERROR = "transport error"
# Inputs from the TU.
TU_PROVISIONAL = "1xx from TU"
TU_SUCCESS = "2xx from TU"
TU_FAILURE = "300-699 from TU"
TU_FINAL = "200-699 from TU"
# Timers, by their RFC names (RFC 3261 Table 4; L and M from RFC 6026). "Cancel guard" is the
# 64*T1 wait of §9.1 for the final response of an INVITE after its CANCEL went out.
TIMER_A, TIMER_B, TIMER_D = "Timer A", "Timer B", "Timer D"
TIMER_E, TIMER_F, TIMER_G, TIMER_H = "Timer E", "Timer F", "Timer G", "Timer H"
TIMER_I, TIMER_J, TIMER_K = "Timer I", "Timer J", "Timer K"
TIMER_L, TIMER_M = "Timer L", "Timer M"
CANCEL_GUARD = "Cancel guard"
# Retransmission timers share one slot on a transaction, every other timer the other slot.
_RETRANSMIT_TIMERS = frozenset((TIMER_A, TIMER_E, TIMER_G))


def new_tag() -> str:
    """A From/To tag: §19.3 asks for at least 32 random bits; this gives 64."""
    return random_hex(8)


@dataclass(frozen=True, slots=True)
class TimerConfig:
    """T1 (RTT estimate), T2 (longest retransmit interval), T4 (how long a message lives in the
    network), RFC 3261 §17.1.1.1 and Table 4; ``d`` is Timer D over UDP ("at least 32 s")."""

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    d: float = 32.0


# -- events ---------------------------------------------------------------------------------------
@dataclass(slots=True)
class RequestReceived:
    """A new request made a new server transaction; answer it with ``send_response(tx, ...)``."""

    tx: "ServerTransaction"
    msg: Any
    peer: Peer


@dataclass(slots=True)
class ResponseReceived:
    """A response for a client transaction. ``tx`` is None for a response that matched none
    (RFC 3261 §18.1.2 passes those to the core: e.g. a 2xx retransmitted after Timer M)."""

    tx: "ClientTransaction | None"
    msg: Any


@dataclass(slots=True)
class TransactionTimedOut:
    """Timer B or F (no final response: the TU treats it as a 408, §8.1.3.1), Timer H (no ACK came
    for our non-2xx, §17.2.1) or the §9.1 cancel guard fired."""

    tx: "Transaction"


@dataclass(slots=True)
class AckReceived:
    """An ACK that is not part of a transaction: the ACK of a 2xx (§17.2.3, §13.3.1.4)."""

    msg: Any
    peer: Peer


@dataclass(slots=True)
class CancelReceived:
    """A CANCEL matched ``invite_tx`` while it had no final response (§9.2). The layer has
    answered the CANCEL 200; the TU now answers the INVITE (487)."""

    invite_tx: "ServerInviteTransaction"
    msg: Any
    peer: Peer


@dataclass(slots=True)
class TransportError:
    """The transport could not deliver to the transaction's peer (§17.1.4, §17.2.4)."""

    tx: "Transaction"


@dataclass(slots=True)
class TransactionTerminated:
    """The transaction reached Terminated and is gone from the layer."""

    tx: "Transaction"


TransactionEvent = (RequestReceived | ResponseReceived | TransactionTimedOut | AckReceived
                    | CancelReceived | TransportError | TransactionTerminated)


# -- transactions ---------------------------------------------------------------------------------
class Transaction:
    """What the four machines share: the table walk, the two timer slots, termination."""

    __slots__ = ("layer", "key", "state", "msg", "peer", "_retransmit", "_timeout", "_interval",
                 "_timeout_at", "_timeout_name")

    TRANSITIONS: dict[tuple[str, str], tuple[str, str]] = {}
    ON_ENTER: dict[str, str] = {}
    INITIAL: str = ""  # the state a new transaction starts in
    # The kind of a method asked for when the TU sends something the table refuses.
    is_server = False
    # An INVITE machine tells a 2xx from other final responses; a non-INVITE one does not (FINAL).
    is_invite = True
    # TRANSITIONS and ON_ENTER with the method names resolved, made once per class:
    # (state, input) -> (action function, next state, that state's ON_ENTER function or None).
    _table: dict[tuple[str, str], tuple[Any, str, Any]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        enter = {state: getattr(cls, name) for state, name in cls.ON_ENTER.items()}
        cls._table = {key: (getattr(cls, action), next_state, enter.get(next_state))
                      for key, (action, next_state) in cls.TRANSITIONS.items()}

    def __init__(self, layer: "TransactionLayer", key: tuple, msg: Any, peer: Peer):
        self.layer = layer
        self.key = key
        self.msg = msg  # the request that created the transaction (see ServerTransaction)
        self.peer = peer  # where this transaction sends (the request's peer / the response address)
        self.state = self.INITIAL
        self._retransmit = None
        self._timeout = None
        self._interval = 0.0
        # A timeout kept off the wheel while the retransmission timer fires before it (see _start_timeout).
        self._timeout_at: float | None = None
        self._timeout_name = ""
        untrack(self)  # no cycles (core/memory.py)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.method} {self.key[0]} {self.state}>"

    @property
    def method(self) -> str:
        # From the key, which outlives ``msg`` (a server transaction lets go of it when Completed).
        key = self.key
        return key[-1] if len(key) != 7 else key[5]

    # The table walk -----------------------------------------------------------------------------
    def _input(self, event: str, now: float, data: Any = None, local: bool = False) -> None:
        entry = self._table.get((self.state, event))
        if entry is None:
            what = f"{type(self).__name__} in state {self.state} cannot take '{event}'"
            if local:
                raise LocalProtocolError(what, 500)
            raise RemoteProtocolError(what, 400)
        action, next_state, enter = entry
        action(self, now, data)
        if next_state is not self.state:
            self.state = next_state
            if enter is not None:
                enter(self, now)

    def on_timer(self, name: str, now: float) -> None:
        if name in _RETRANSMIT_TIMERS:
            self._retransmit = None
        else:
            self._timeout = None
        if self.state is not TERMINATED:
            self._input(name, now)
            timeout_at = self._timeout_at
            if timeout_at is not None and timeout_at <= now:
                # This retransmission timer fired late, past the timeout it kept off the wheel: the
                # timeout follows it at once, in the same handle_timer, as it would from the wheel.
                self._timeout_at = None
                self._input(self._timeout_name, now)

    # Timers ---------------------------------------------------------------------------------------
    # A state runs at most a retransmission timer (A, E, G) and a timeout (B, F, H, or one that ends
    # the state). While the retransmission timer is due first, the timeout stays off the wheel
    # (``_timeout_at``): each retransmission checks whether the next one would come before it, and
    # when not, puts the timeout on the wheel in its place, at the deadline it always had (it ends
    # the retransmissions: B, F and H terminate). RFC 3261 §17 timing is unchanged; a transaction
    # answered before its first retransmission, as most are, puts one timer on the wheel, not two.
    def _start_retransmit(self, name: str, interval: float, now: float) -> None:
        self._interval = interval
        deadline = now + interval
        timeout_at = self._timeout_at
        if timeout_at is None or deadline < timeout_at:
            self._retransmit = self.layer.wheel.schedule(deadline, (self, name))
        elif timeout_at > now:
            self._timeout_at = None
            self._timeout = self.layer.wheel.schedule(timeout_at, (self, self._timeout_name))
        # else: the timeout is due already (this timer fired late): on_timer fires it next.

    def _start_timeout(self, name: str, duration: float, now: float) -> None:
        wheel = self.layer.wheel
        wheel.cancel(self._timeout)
        self._timeout = self._timeout_at = None
        if duration <= 0:
            # A zero timer (reliable transport): fire it now, from inside the state entry.
            self._input(name, now)
            return
        deadline = now + duration
        retransmit = self._retransmit
        if retransmit is not None and retransmit.deadline < deadline:
            self._timeout_at, self._timeout_name = deadline, name
        else:
            self._timeout = wheel.schedule(deadline, (self, name))

    def _stop_timers(self, now: float = 0.0) -> None:
        wheel = self.layer.wheel
        wheel.cancel(self._retransmit)
        wheel.cancel(self._timeout)
        self._retransmit = self._timeout = self._timeout_at = None

    # Actions shared by the machines ---------------------------------------------------------------
    def absorb(self, now: float, data: Any) -> None:
        """Nothing to do: a retransmission this state swallows."""

    def none(self, now: float, data: Any) -> None:
        """Only the state changes."""

    def time_out(self, now: float, data: Any) -> None:
        self.layer._events.append(TransactionTimedOut(self))

    def report_transport_error(self, now: float, data: Any) -> None:
        self.layer._events.append(TransportError(self))

    def _terminate(self, now: float) -> None:
        self._stop_timers()
        self.layer._forget(self)
        self.layer._events.append(TransactionTerminated(self))


class ClientTransaction(Transaction):
    """Base of the client machines: holds the bytes it retransmits."""

    __slots__ = ("request",)

    def __init__(self, layer, key, msg, peer, request: bytes):
        super().__init__(layer, key, msg, peer)
        self.request = request

    def pass_up(self, now: float, response: Any) -> None:
        self.layer._events.append(ResponseReceived(self, response))


class ClientInviteTransaction(ClientTransaction):
    """RFC 3261 §17.1.1 (figure 5) with RFC 6026's Accepted state."""

    __slots__ = ("ack",)

    INITIAL = CALLING
    TRANSITIONS = {
        (CALLING, TIMER_A): ("retransmit_request", CALLING),
        (CALLING, TIMER_B): ("time_out", TERMINATED),
        (CALLING, PROVISIONAL): ("pass_up", PROCEEDING),
        (CALLING, SUCCESS): ("pass_up", ACCEPTED),
        (CALLING, FAILURE): ("ack_and_pass_up", COMPLETED),
        (CALLING, TRANSPORT_ERROR): ("report_transport_error", TERMINATED),
        (PROCEEDING, PROVISIONAL): ("pass_up", PROCEEDING),
        (PROCEEDING, SUCCESS): ("pass_up", ACCEPTED),
        (PROCEEDING, FAILURE): ("ack_and_pass_up", COMPLETED),
        (PROCEEDING, TRANSPORT_ERROR): ("report_transport_error", TERMINATED),
        (PROCEEDING, CANCEL_GUARD): ("time_out", TERMINATED),
        # §17.1.1.2: a retransmitted final response gets the ACK again and is not passed up.
        (COMPLETED, FAILURE): ("resend_ack", COMPLETED),
        (COMPLETED, PROVISIONAL): ("absorb", COMPLETED),  # a 1xx overtaken by the final
        (COMPLETED, TIMER_D): ("none", TERMINATED),
        (COMPLETED, TRANSPORT_ERROR): ("none", TERMINATED),
        # RFC 6026 (amending §17.1.1.2): every 2xx, retransmission or another fork, goes to the TU.
        (ACCEPTED, SUCCESS): ("pass_up", ACCEPTED),
        (ACCEPTED, PROVISIONAL): ("absorb", ACCEPTED),
        (ACCEPTED, TIMER_M): ("none", TERMINATED),
        (ACCEPTED, TRANSPORT_ERROR): ("none", TERMINATED),
    }
    ON_ENTER = {
        PROCEEDING: "_enter_proceeding",
        COMPLETED: "_enter_completed",
        ACCEPTED: "_enter_accepted",
        TERMINATED: "_terminate",
    }

    def __init__(self, layer, key, msg, peer, request):
        super().__init__(layer, key, msg, peer, request)
        self.ack: bytes | None = None

    def _start(self, now: float) -> None:
        t = self.layer.timers
        if not self.peer.reliable:
            self._start_retransmit(TIMER_A, t.t1, now)  # §17.1.1.2: only over UDP
        self._start_timeout(TIMER_B, 64 * t.t1, now)

    def retransmit_request(self, now: float, data: Any) -> None:
        self.layer._out.append((self.request, self.peer))
        # §17.1.1.2: Timer A doubles each time (T1, 2*T1, 4*T1 ...) until Timer B ends it.
        self._start_retransmit(TIMER_A, self._interval * 2, now)

    def ack_and_pass_up(self, now: float, response: Any) -> None:
        self.ack = self._build_ack(response)
        self.layer._out.append((self.ack, self.peer))
        self.pass_up(now, response)

    def resend_ack(self, now: float, response: Any) -> None:
        self.layer._out.append((self.ack, self.peer))

    def _build_ack(self, response: Any) -> bytes:
        # §17.1.1.3: same Request-URI, Call-ID, From, CSeq number and top Via (so the same branch)
        # as the INVITE, the To of the response (with its tag), and the INVITE's Route set.
        req = self.msg
        headers = [("Via", req.vias[0]), ("Max-Forwards", "70"), ("From", req.from_),
                   ("To", response.to), ("Call-ID", req.call_id), ("CSeq", f"{req.cseq} ACK")]
        headers += [("Route", route) for route in req.header_values("Route")]
        return build_request("ACK", req.uri, headers)

    def _enter_proceeding(self, now: float) -> None:
        # §17.1.1.2: no more retransmissions once a provisional arrived; Timer B only runs in Calling.
        self._stop_timers()

    def _enter_completed(self, now: float) -> None:
        self._stop_timers()
        self._start_timeout(TIMER_D, 0.0 if self.peer.reliable else self.layer.timers.d, now)

    def _enter_accepted(self, now: float) -> None:
        self._stop_timers()
        self._start_timeout(TIMER_M, 64 * self.layer.timers.t1, now)

    def _arm_cancel_guard(self, now: float) -> None:
        # §9.1: after a CANCEL, wait 64*T1 for the INVITE's final response, then give up on it.
        if self.state is PROCEEDING and self._timeout is None:
            self._start_timeout(CANCEL_GUARD, 64 * self.layer.timers.t1, now)


class ClientNonInviteTransaction(ClientTransaction):
    """RFC 3261 §17.1.2 (figure 6)."""

    __slots__ = ()

    INITIAL = TRYING
    is_invite = False
    TRANSITIONS = {
        (TRYING, TIMER_E): ("retransmit_request", TRYING),
        (TRYING, TIMER_F): ("time_out", TERMINATED),
        (TRYING, PROVISIONAL): ("pass_up", PROCEEDING),
        (TRYING, FINAL): ("pass_up", COMPLETED),
        (TRYING, TRANSPORT_ERROR): ("report_transport_error", TERMINATED),
        (PROCEEDING, TIMER_E): ("retransmit_request", PROCEEDING),
        (PROCEEDING, TIMER_F): ("time_out", TERMINATED),
        (PROCEEDING, PROVISIONAL): ("pass_up", PROCEEDING),
        (PROCEEDING, FINAL): ("pass_up", COMPLETED),
        (PROCEEDING, TRANSPORT_ERROR): ("report_transport_error", TERMINATED),
        # §17.1.2.2: Completed buffers response retransmissions for Timer K.
        (COMPLETED, PROVISIONAL): ("absorb", COMPLETED),
        (COMPLETED, FINAL): ("absorb", COMPLETED),
        (COMPLETED, TIMER_K): ("none", TERMINATED),
        (COMPLETED, TRANSPORT_ERROR): ("none", TERMINATED),
    }
    ON_ENTER = {COMPLETED: "_enter_completed", TERMINATED: "_terminate"}

    def _start(self, now: float) -> None:
        t = self.layer.timers
        if not self.peer.reliable:
            self._start_retransmit(TIMER_E, t.t1, now)
        self._start_timeout(TIMER_F, 64 * t.t1, now)

    def retransmit_request(self, now: float, data: Any) -> None:
        self.layer._out.append((self.request, self.peer))
        t2 = self.layer.timers.t2
        # §17.1.2.2: in Trying, E doubles up to T2; in Proceeding it is T2.
        interval = t2 if self.state is PROCEEDING else min(self._interval * 2, t2)
        self._start_retransmit(TIMER_E, interval, now)

    def _enter_completed(self, now: float) -> None:
        self._stop_timers()
        self._start_timeout(TIMER_K, 0.0 if self.peer.reliable else self.layer.timers.t4, now)


class ServerTransaction(Transaction):
    """Base of the server machines: the last response (resent to retransmitted requests) and the
    To tag the transaction's responses should carry.

    Once Completed, a server transaction only resends ``last_response`` for 64*T1, so it lets go of
    the request (``msg`` becomes None): a parsed message is several times the size of everything
    else a transaction holds, and 100,000 of them wait out Timer J at a few thousand requests a
    second. The TU has the request in its ``RequestReceived`` event."""

    __slots__ = ("last_response", "_local_tag", "_via_stamp")

    is_server = True

    def __init__(self, layer, key, msg, peer):
        super().__init__(layer, key, msg, peer)
        self.last_response: bytes | None = None
        self._local_tag: str | None = None
        # via_stamp of the request, worked out on the first response and kept until the final one
        # (_NO_STAMP when the Via needs none): an INVITE's 100, 18x and 2xx share it.
        self._via_stamp: tuple[bytes, bytes] | None = None

    @property
    def local_tag(self) -> str:
        """A To tag for this transaction's responses (made on first use). The layer's 200 to a
        CANCEL carries it, so a TU that uses it too answers both with the same tag (§9.2)."""
        if self._local_tag is None:
            self._local_tag = (self.msg.to_tag if self.msg is not None else None) or new_tag()
        return self._local_tag

    def _release_request(self) -> None:
        self.msg = None

    def send_response(self, now: float, data: bytes) -> None:
        self.last_response = data
        self.layer._out.append((data, self.peer))

    def resend_response(self, now: float, data: Any) -> None:
        if self.last_response is not None:
            self.layer._out.append((self.last_response, self.peer))


class ServerInviteTransaction(ServerTransaction):
    """RFC 3261 §17.2.1 (figure 7) with RFC 6026's Accepted state."""

    __slots__ = ()

    INITIAL = PROCEEDING
    TRANSITIONS = {
        # §17.2.1: a retransmitted INVITE gets the latest provisional response again.
        (PROCEEDING, REQUEST): ("resend_response", PROCEEDING),
        (PROCEEDING, TU_PROVISIONAL): ("send_response", PROCEEDING),
        (PROCEEDING, TU_SUCCESS): ("send_response", ACCEPTED),
        (PROCEEDING, TU_FAILURE): ("send_response", COMPLETED),
        (PROCEEDING, TRANSPORT_ERROR): ("report_transport_error", TERMINATED),
        (COMPLETED, REQUEST): ("resend_response", COMPLETED),
        (COMPLETED, ACK): ("absorb", CONFIRMED),
        (COMPLETED, TIMER_G): ("retransmit_response", COMPLETED),
        (COMPLETED, TIMER_H): ("time_out", TERMINATED),
        (COMPLETED, TRANSPORT_ERROR): ("report_transport_error", TERMINATED),
        (CONFIRMED, REQUEST): ("absorb", CONFIRMED),
        (CONFIRMED, ACK): ("absorb", CONFIRMED),
        (CONFIRMED, TIMER_I): ("none", TERMINATED),
        # RFC 6026 (amending §17.2.1): INVITE retransmissions are absorbed, the TU's 2xx sent,
        # an ACK that matches goes up to the TU.
        (ACCEPTED, REQUEST): ("absorb", ACCEPTED),
        (ACCEPTED, ACK): ("pass_ack_up", ACCEPTED),
        (ACCEPTED, TU_SUCCESS): ("send_response", ACCEPTED),
        (ACCEPTED, TIMER_L): ("none", TERMINATED),
        (ACCEPTED, TRANSPORT_ERROR): ("report_transport_error", TERMINATED),
    }
    ON_ENTER = {
        COMPLETED: "_enter_completed",
        CONFIRMED: "_enter_confirmed",
        ACCEPTED: "_enter_accepted",
        TERMINATED: "_terminate",
    }

    def retransmit_response(self, now: float, data: Any) -> None:
        self.layer._out.append((self.last_response, self.peer))
        # §17.2.1: Timer G doubles up to T2.
        self._start_retransmit(TIMER_G, min(self._interval * 2, self.layer.timers.t2), now)

    def pass_ack_up(self, now: float, ack: Any) -> None:
        self.layer._events.append(AckReceived(ack[0], ack[1]))

    def _enter_completed(self, now: float) -> None:
        self._release_request()
        t = self.layer.timers
        if not self.peer.reliable:
            self._start_retransmit(TIMER_G, t.t1, now)
        self._start_timeout(TIMER_H, 64 * t.t1, now)

    def _enter_confirmed(self, now: float) -> None:
        self._stop_timers()
        self._start_timeout(TIMER_I, 0.0 if self.peer.reliable else self.layer.timers.t4, now)

    def _enter_accepted(self, now: float) -> None:
        self._start_timeout(TIMER_L, 64 * self.layer.timers.t1, now)


class ServerNonInviteTransaction(ServerTransaction):
    """RFC 3261 §17.2.2 (figure 8)."""

    __slots__ = ()

    INITIAL = TRYING
    is_invite = False
    TRANSITIONS = {
        # §17.2.2: in Trying a retransmission is discarded (nothing to resend yet).
        (TRYING, REQUEST): ("absorb", TRYING),
        (TRYING, TU_PROVISIONAL): ("send_response", PROCEEDING),
        (TRYING, TU_FINAL): ("send_response", COMPLETED),
        (PROCEEDING, REQUEST): ("resend_response", PROCEEDING),
        (PROCEEDING, TU_PROVISIONAL): ("send_response", PROCEEDING),
        (PROCEEDING, TU_FINAL): ("send_response", COMPLETED),
        (PROCEEDING, TRANSPORT_ERROR): ("report_transport_error", TERMINATED),
        (COMPLETED, REQUEST): ("resend_response", COMPLETED),
        (COMPLETED, TIMER_J): ("none", TERMINATED),
        (COMPLETED, TRANSPORT_ERROR): ("report_transport_error", TERMINATED),
    }
    ON_ENTER = {COMPLETED: "_enter_completed", TERMINATED: "_terminate"}

    def _enter_completed(self, now: float) -> None:
        self._release_request()
        self._start_timeout(TIMER_J, 0.0 if self.peer.reliable else 64 * self.layer.timers.t1, now)


# -- matching and addressing ----------------------------------------------------------------------
def server_key(msg: Any) -> tuple | None:
    """The key a request matches a server transaction by (RFC 3261 §17.2.3).

    With a magic-cookie branch: (branch, sent-by host, sent-by port, method), the method of an ACK
    counted as INVITE. Without one (RFC 2543): Request-URI, From tag, Call-ID, CSeq number, method
    and the whole top Via. The To tag is left out: a retransmission carries the same one, and the ACK
    and CANCEL of §17.2.3 and §9.2 match whatever tag the response gave them.
    """
    # Interned: the key outlives the message, and 100,000 keys should share one "OPTIONS" and one
    # copy of each busy peer's host rather than hold their own (interned strings are freed with
    # their last reference).
    method = intern(msg.method)
    if method == "ACK":
        method = "INVITE"
    branch = msg.branch  # a branch comes from the top Via, so there is one
    if branch is not None and branch.startswith(MAGIC_COOKIE):
        via = msg.top_via
        return (branch, intern(via.host.lower()), via.port or 5060, method)
    vias = msg.vias
    if not vias:
        return None
    return (None, msg.uri, msg.from_tag, msg.call_id, msg.cseq, method, vias[0])


def response_peer(msg: Any, peer: Peer) -> Peer:
    """Where responses to a request from ``peer`` go (RFC 3261 §18.2.2, RFC 3581 §4).

    Always the packet's source address ("received"), never a name from the message. Over a stream,
    the connection it came on; over UDP the source port when the top Via asks for ``rport``, else
    the Via's sent-by port, 5060 by default.
    """
    return via_reply_peer(msg.top_via, peer)


def via_reply_peer(via: Any, peer: Peer) -> Peer:
    """``response_peer`` for a top ``Via`` already at hand (also used for the stateless answer to a
    request that failed to parse, whose Via is read on its own)."""
    if peer.reliable or "rport" in via.params:
        return peer
    port = via.port or 5060
    return peer if port == peer.port else Peer(peer.transport, peer.host, port)


def via_stamp(msg: Any, peer: Peer) -> tuple[bytes, bytes] | None:
    """The top Via as received and as it must read in our responses, or None if unchanged.

    §18.2.1: add ``received`` when the sent-by host is not the packet's source address; RFC 3581 §4:
    when ``rport`` is present (empty), add ``received`` always and fill in ``rport`` with the source
    port. ``peer`` may be the packet's source or the response address ``response_peer`` made of it:
    they share the host, and the port is the source's whenever ``rport`` asks for it. A server
    transaction keeps it only until its final response: 250 bytes a transaction saved while it
    waits out Timers J, L or H.
    """
    via = msg.top_via
    params = via.params
    wants_rport = "rport" in params and not params["rport"]
    if not wants_rport and via.host == peer.host:
        return None
    text = msg.vias[0]
    if "received" not in params:
        # The usual case, without splitting the parameters: ";rport" written as a bare flag
        # becomes ";received=HOST;rport=PORT", or ";received=HOST" goes at the end.
        if not wants_rport:
            return text.encode(), f"{text};received={peer.host}".encode()
        i = text.find(";rport")
        if i >= 0 and text[i + 6 : i + 7] in ("", ";", " ", "\t"):
            return text.encode(), f"{text[:i]};received={peer.host};rport={peer.port}{text[i + 6:]}".encode()
    parts = [p for p in text.split(";") if p.split("=", 1)[0].strip().lower() != "received"]
    if wants_rport:
        parts = [f"rport={peer.port}" if p.strip().lower() == "rport" else p for p in parts]
    parts.insert(1, f"received={peer.host}")
    return text.encode(), ";".join(parts).encode()


# -- the layer ------------------------------------------------------------------------------------
class TransactionLayer:
    """Every transaction of one worker, matched and timed (RFC 3261 §17). See the module's
    Theory of operation."""

    def __init__(self, timers: TimerConfig = TimerConfig(), *, max_transactions: int = 100_000,
                 wheel: TimerWheel | None = None, retry_after: int = 5):
        self.timers = timers
        self.max_transactions = max_transactions
        self.retry_after = retry_after
        self.wheel = wheel if wheel is not None else TimerWheel()
        self._server: dict[tuple, ServerTransaction] = {}
        self._client: dict[tuple, ClientTransaction] = {}
        self._events: deque = deque()
        self._out: list[tuple[bytes, Peer]] = []
        # How many requests were refused for lack of room (503), for the metrics.
        self.overloaded = 0
        # Set by the bindings while the worker is behind (its socket's backlog keeps growing): a new
        # call (an INVITE without a To tag) is refused at once, 503 with Retry-After and no state, while
        # everything of the calls already admitted (ACK, BYE, re-INVITE, responses) goes on, so that
        # load past capacity costs the excess calls and not the service of the others (MISSION.md,
        # "the avalanche"). ``shed`` counts the calls so refused.
        self.shedding = False
        self.shed = 0

    def __len__(self) -> int:
        return len(self._server) + len(self._client)

    # -- from the transport -------------------------------------------------------------------
    def receive(self, msg: Any, peer: Peer, now: float) -> None:
        """A parsed message from ``peer``. A response that breaks its transaction's machine (say a
        2xx after a 486) is dropped: a response cannot be answered."""
        try:
            if msg.is_request:
                self._receive_request(msg, peer, now)
            else:
                self._receive_response(msg, now)
        except RemoteProtocolError:
            pass

    def transport_error(self, peer: Peer, now: float) -> None:
        """The bindings could not send to ``peer`` (ICMP unreachable, a connection that failed):
        every transaction talking to it fails (§17.1.4, §17.2.4)."""
        for tx in [t for t in (*self._client.values(), *self._server.values()) if t.peer == peer]:
            try:
                tx._input(TRANSPORT_ERROR, now)
            except RemoteProtocolError:
                pass  # a state with nothing sent (server non-INVITE Trying)

    # -- from the TU ----------------------------------------------------------------------------
    def send_request(self, request_bytes: bytes, msg: Any, peer: Peer, now: float) -> ClientTransaction:
        """Start a client transaction for ``request_bytes`` (``msg`` is its parsed form) to ``peer``."""
        method = msg.method
        if method == "ACK":
            raise LocalProtocolError("an ACK is not a client transaction (RFC 3261 §17.1.1.3): use "
                                     "send_stateless", 500)
        branch = msg.branch
        if branch is None or not branch.startswith(MAGIC_COOKIE):
            raise LocalProtocolError("a request we send needs a top Via branch starting with "
                                     f"{MAGIC_COOKIE} (RFC 3261 §8.1.1.7)", 500)
        key = (branch, method)
        if key in self._client:
            raise LocalProtocolError(f"branch {branch} is already used by a {method} transaction", 500)
        if len(self) >= self.max_transactions:
            self.overloaded += 1
            raise LocalProtocolError("too many transactions", 503)
        cls = ClientInviteTransaction if method == "INVITE" else ClientNonInviteTransaction
        tx = cls(self, key, msg, peer, request_bytes)
        self._client[key] = tx
        self._out.append((request_bytes, peer))
        tx._start(now)
        if method == "CANCEL":
            invite = self._client.get((branch, "INVITE"))
            if isinstance(invite, ClientInviteTransaction):
                invite._arm_cancel_guard(now)
        return tx

    def send_response(self, server_tx: ServerTransaction, response_bytes: bytes, status: int,
                      now: float) -> None:
        """Send a response on ``server_tx``; raises ``LocalProtocolError`` where the machine has no
        room for it (a second final response, anything after Terminated)."""
        request = server_tx.msg
        if request is not None:  # None once Completed, where the table refuses any response
            stamp = server_tx._via_stamp
            if stamp is None:
                stamp = server_tx._via_stamp = via_stamp(request, server_tx.peer) or _NO_STAMP
            if stamp is not _NO_STAMP:
                response_bytes = _stamp(response_bytes, stamp)
        if status < 200:
            server_tx._input(TU_PROVISIONAL, now, response_bytes, local=True)
            return
        server_tx._via_stamp = None
        if not server_tx.is_invite:
            event = TU_FINAL
        else:
            event = TU_SUCCESS if status < 300 else TU_FAILURE
        server_tx._input(event, now, response_bytes, local=True)

    def send_stateless(self, data: bytes, peer: Peer) -> None:
        """Bytes that belong to no transaction: the ACK of a 2xx (§13.2.2.4) and a UAS's own 2xx
        retransmissions once the INVITE transaction is over."""
        self._out.append((data, peer))

    # -- shutting down --------------------------------------------------------------------------
    def awaiting_final(self) -> list[ServerTransaction]:
        """Server transactions whose request has had no final response from the TU yet."""
        return [tx for tx in self._server.values() if tx.state in (TRYING, PROCEEDING)]

    def pending_count(self) -> int:
        """Transactions still waiting on a final response, ours to send or the peer's to give:
        what a stopping node lets finish (or time out) before it closes its sockets."""
        client = sum(1 for tx in self._client.values() if tx.state in (CALLING, TRYING, PROCEEDING))
        return len(self.awaiting_final()) + client

    # -- time -----------------------------------------------------------------------------------
    def handle_timer(self, now: float) -> None:
        for owner, name in self.wheel.pop_due(now):
            owner.on_timer(name, now)

    def get_timer(self) -> float | None:
        return self.wheel.next_deadline()

    # -- output ---------------------------------------------------------------------------------
    def next_event(self) -> TransactionEvent | None:
        return self._events.popleft() if self._events else None

    def datagrams_to_send(self) -> list[tuple[bytes, Peer]]:
        out = self._out
        self._out = []
        return out

    # -- internals ------------------------------------------------------------------------------
    def _receive_request(self, msg: Any, peer: Peer, now: float) -> None:
        key = server_key(msg)
        if key is None:
            return  # no Via: nowhere to answer (the parser normally refuses it first)
        method = msg.method
        tx = self._server.get(key)
        if tx is not None:
            if method == "ACK":
                if isinstance(tx, ServerInviteTransaction):
                    tx._input(ACK, now, (msg, peer))
                return
            tx._input(REQUEST, now)  # a retransmission: absorbed, answered from the last response
            return
        if method == "ACK":
            self._events.append(AckReceived(msg, peer))
            return
        shed = self.shedding and method == "INVITE" and msg.to_tag is None
        if shed or len(self) >= self.max_transactions:
            # Over the limit, or a new call while behind: answer 503 and keep no state (RFC 3261 §21.5.4).
            if shed:
                self.shed += 1
            else:
                self.overloaded += 1
            reply = build_response(msg, 503, to_tag=msg.to_tag or new_tag(),
                                   headers=[("Retry-After", str(self.retry_after))])
            stamp = via_stamp(msg, peer)
            self._out.append((_stamp(reply, stamp) if stamp else reply, response_peer(msg, peer)))
            return
        cls = ServerInviteTransaction if method == "INVITE" else ServerNonInviteTransaction
        tx = cls(self, key, msg, response_peer(msg, peer))
        self._server[key] = tx
        if method == "INVITE":
            # §17.2.1: 100 Trying at once quenches the INVITE's retransmissions (no To tag: §8.2.6.1).
            self.send_response(tx, build_response(msg, 100), 100, now)
        elif method == "CANCEL":
            self._receive_cancel(tx, msg, peer, key, now)
            return
        self._events.append(RequestReceived(tx, msg, peer))

    def _receive_cancel(self, tx: ServerTransaction, msg: Any, peer: Peer, key: tuple,
                        now: float) -> None:
        # §9.2: the CANCEL matches the INVITE that has its branch and sent-by (or, RFC 2543, the
        # same fields but the method); the layer answers the CANCEL itself.
        invite = self._server.get(key[:-1] + ("INVITE",) if key[0] is not None
                                  else key[:5] + ("INVITE",) + key[6:])
        if not isinstance(invite, ServerInviteTransaction):
            self.send_response(tx, build_response(msg, 481, to_tag=msg.to_tag or new_tag()), 481, now)
            return
        # §9.2: the 200 to the CANCEL SHOULD carry the To tag of the INVITE's responses.
        self.send_response(tx, build_response(msg, 200, to_tag=invite.local_tag), 200, now)
        if invite.state is PROCEEDING:
            self._events.append(CancelReceived(invite, msg, peer))

    def _receive_response(self, msg: Any, now: float) -> None:
        tx = self._client.get((msg.branch, msg.cseq_method))
        if tx is None:
            self._events.append(ResponseReceived(None, msg))
            return
        status = msg.status
        if status < 200:
            event = PROVISIONAL
        elif not tx.is_invite:
            event = FINAL
        else:
            event = SUCCESS if status < 300 else FAILURE
        tx._input(event, now, msg)

    def _forget(self, tx: Transaction) -> None:
        table = self._server if tx.is_server else self._client
        if table.get(tx.key) is tx:
            del table[tx.key]


_NO_STAMP = (b"", b"")  # a ServerTransaction's _via_stamp when its request's Via needs no stamp


def _stamp(response: bytes, stamp: tuple[bytes, bytes]) -> bytes:
    # The response carries the request's Via values as they were (§8.2.6.2), so the top one is
    # found verbatim and gets received/rport (§18.2.1, RFC 3581) without parsing the response.
    received, stamped = stamp
    return response.replace(received, stamped, 1)
