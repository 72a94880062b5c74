"""INVITE sessions (RFC 3261 §13-§15) for a UAC and a UAS, on top of the transaction layer.

Implements: the initial INVITE and its responses (§13.2, §13.3), the UAS's 2xx retransmission
until the ACK (§13.3.1.4: T1 doubling to T2, given up after 64*T1 with a BYE), the UAC's ACK for
each 2xx (§13.2.2.4, one per 2xx retransmission), CANCEL (§9: sent by the UAC only once a
provisional arrived, answered 487 by the UAS), re-INVITE (§14: 491 on glare, 500 to an INVITE
that overlaps one still being answered), BYE (§15) and 481 for requests inside a dialog we do not
know (§12.2.2). Dialog state is in ``core/sip/dialog.py``.

The ``SessionLayer`` is fed the transaction layer's events (``handle_event(event, now)`` returns
True for the ones it consumed) and queues its own (``next_event()``): ``IncomingCall``,
``ProvisionalReceived``, ``CallAnswered``, ``CallConfirmed``, ``CallFailed``, ``CallCancelled``,
``CallEnded``, ``ReinviteReceived``, ``ReinviteAnswered``, ``ReinviteConfirmed``,
``InDialogRequest``. Its timers sit on the transaction layer's wheel as ``(session, name)`` items,
so ``TransactionLayer.handle_timer`` fires them too; bytes leave through the transaction layer's
``datagrams_to_send``. Sans-IO: no socket, no clock.

Session states follow pjsip's INVITE session: Calling (UAC, INVITE sent), Incoming (UAS, INVITE
received), Early (a provisional response with a To tag), Connecting (UAS: 2xx sent, no ACK yet),
Confirmed, Terminated.
"""
from __future__ import annotations

import secrets
from collections import deque
from dataclasses import dataclass
from typing import Any

from core.errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from core.memory import untrack
from core.sip.addr import Peer
from core.sip.dialog import Dialog, new_branch, next_hop
from core.sip.digest import answer_challenge
from core.sip.ids import random_hex
from core.sip.message import build_request, build_response, parse
from core.sip.transaction import (
    AckReceived,
    CancelReceived,
    ClientTransaction,
    RequestReceived,
    ResponseReceived,
    ServerTransaction,
    TransactionLayer,
    TransactionTerminated,
    TransactionTimedOut,
    TransportError,
    new_tag,
)
from core.sip.uri import parse_uri

CALLING = "Calling"
INCOMING = "Incoming"
EARLY = "Early"
CONNECTING = "Connecting"
CONFIRMED = "Confirmed"
TERMINATED = "Terminated"

UAC = "UAC"
UAS = "UAS"

# Session timers (on the shared wheel).
RETRANSMIT_2XX = "2xx retransmission"  # §13.3.1.4
NO_ACK = "2xx not acknowledged"  # §13.3.1.4: 64*T1


# -- events ---------------------------------------------------------------------------------------
@dataclass(slots=True)
class IncomingCall:
    """A new INVITE (UAS): answer with ``ring``/``answer``/``reject``."""

    session: "InviteSession"
    msg: Any


@dataclass(slots=True)
class ProvisionalReceived:
    """A 1xx other than 100 for our INVITE (UAC)."""

    session: "InviteSession"
    msg: Any


@dataclass(slots=True)
class CallAnswered:
    """A 2xx for our INVITE (UAC); the session has sent the ACK."""

    session: "InviteSession"
    msg: Any


@dataclass(slots=True)
class CallConfirmed:
    """The ACK of our 2xx arrived (UAS); ``msg`` is the ACK (it may carry the answer)."""

    session: "InviteSession"
    msg: Any


@dataclass(slots=True)
class CallFailed:
    """Our INVITE got no session: ``status`` is the final response's, or 408 for a timeout (§8.1.3.1)
    and 503 for a transport error (§8.1.3.1); ``msg`` is None then."""

    session: "InviteSession"
    status: int
    msg: Any


@dataclass(slots=True)
class CallCancelled:
    """The caller CANCELled our INVITE before we answered it; we have sent 487 (UAS, §9.2)."""

    session: "InviteSession"
    msg: Any


@dataclass(slots=True)
class CallEnded:
    """The session is over: the peer's BYE (``reason="BYE"``) or our 2xx never ACKed ("no ACK")."""

    session: "InviteSession"
    reason: str


@dataclass(slots=True)
class ReinviteReceived:
    """A re-INVITE (a new offer) inside the dialog: ``accept_reinvite`` or ``reject_reinvite``."""

    session: "InviteSession"
    msg: Any


@dataclass(slots=True)
class ReinviteAnswered:
    """The final response to our re-INVITE (a 2xx has been ACKed; 491 means glare, §14.1)."""

    session: "InviteSession"
    status: int
    msg: Any


@dataclass(slots=True)
class ReinviteConfirmed:
    """The ACK of our 2xx to the peer's re-INVITE arrived."""

    session: "InviteSession"
    msg: Any


@dataclass(slots=True)
class InDialogRequest:
    """Another request inside the dialog (INFO, UPDATE, ...): answer it with
    ``TransactionLayer.send_response(tx, ...)``."""

    session: "InviteSession"
    tx: ServerTransaction
    msg: Any


class InviteSession:
    """One call leg's signalling: the INVITE, its dialog, re-INVITEs and the BYE."""

    __slots__ = ("layer", "role", "state", "invite", "invite_tx", "peer", "dialog", "local_tag",
                 "final_status", "_ack", "_ack_cseq", "_provisional_seen", "_cancel_requested",
                 "_cancel_headers", "_bye_pending", "_ok", "_ok_cseq", "_ok_peer", "_ok_initial", "_ok_timer",
                 "_no_ack_timer", "_no_ack_at", "_ok_interval", "credentials", "_auth_tries",
                 "_extra_headers", "ack_body", "_reinvite_out", "_reinvite_in")

    def __init__(self, layer: "SessionLayer", role: str, state: str, invite: Any,
                 invite_tx: Any, peer: Peer):
        self.layer = layer
        self.role = role
        self.state = state
        self.invite = invite  # the initial INVITE (parsed)
        self.invite_tx = invite_tx
        self.peer = peer  # UAC: where the INVITE went; UAS: where responses go
        self.dialog: Dialog | None = None
        self.local_tag = invite.from_tag if role == UAC else invite_tx.local_tag
        self.final_status: int | None = None
        # UAC: the ACK of the last 2xx, resent for each retransmission of it (§13.2.2.4).
        self._ack: bytes | None = None
        self._ack_cseq = 0
        self._provisional_seen = False
        self._cancel_requested = False
        self._cancel_headers: tuple = ()
        self._bye_pending = False
        # UAS: the 2xx being retransmitted until its ACK (§13.3.1.4).
        self._ok: bytes | None = None
        self._ok_cseq = 0
        self._ok_peer = peer
        self._ok_initial = False
        self._ok_timer = None
        self._no_ack_timer = None
        self._no_ack_at: float | None = None  # the give-up, while a retransmission comes first
        self._ok_interval = 0.0
        # UAC: digest credentials for a challenge to the INVITE, and the answers sent so far.
        self.credentials: tuple[str, str] | None = None
        self._auth_tries = 0
        self._extra_headers: tuple = ()
        # UAC whose INVITE had no offer: the answer its ACK carries (§13.2.1), set before the 2xx.
        self.ack_body = b""
        # re-INVITEs in flight: ours (client transaction) and the peer's (server transaction).
        self._reinvite_out: ClientTransaction | None = None
        self._reinvite_in: ServerTransaction | None = None
        untrack(self)  # no cycles (core/memory.py)

    def __repr__(self) -> str:
        return f"<InviteSession {self.role} {self.invite.call_id} {self.state}>"

    @property
    def call_id(self) -> str:
        return self.invite.call_id

    # -- UAS: answering the INVITE ----------------------------------------------------------------
    def ring(self, now: float, status: int = 180, *, body: bytes = b"", headers=()) -> None:
        """Send a provisional response with our tag: the dialog becomes early (§12.1.1)."""
        self._require(UAS, INCOMING, EARLY)
        if not 100 < status < 200:
            raise LocalProtocolError(f"{status} is not a provisional response", 500)
        self._respond_invite(status, body, headers, now)
        if self.dialog is None:
            self._make_uas_dialog(confirmed=False)
        self.state = EARLY

    def answer(self, now: float, body: bytes = b"", *, status: int = 200, headers=()) -> None:
        """Send the 2xx and retransmit it until the ACK (§13.3.1.4)."""
        self._require(UAS, INCOMING, EARLY)
        if self.dialog is None:
            self._make_uas_dialog(confirmed=True)
        self.dialog.confirm()
        self._respond_invite(status, body, headers, now)
        self._start_2xx(self.invite_tx, self.invite.cseq, True, now)
        self.state = CONNECTING

    def reject(self, now: float, status: int = 486, reason: str | None = None, *, headers=()) -> None:
        """Refuse the INVITE with a final non-2xx response; the transaction waits for the ACK."""
        self._require(UAS, INCOMING, EARLY)
        if status < 300:
            raise LocalProtocolError(f"{status} does not reject a call", 500)
        data = build_response(self.invite, status, reason, to_tag=self.local_tag, headers=headers)
        self.layer.transactions.send_response(self.invite_tx, data, status, now)
        self.final_status = status
        self._end()

    # -- UAC: the INVITE's fate -------------------------------------------------------------------
    def cancel(self, now: float, *, headers=()) -> None:
        """CANCEL our INVITE (§9.1): at once if a provisional arrived, else as soon as one does.
        ``headers`` are added to it (a Reason, RFC 3326, for a fork another phone answered)."""
        self._require(UAC, CALLING, EARLY)
        if self._cancel_requested:
            return
        self._cancel_requested = True
        self._cancel_headers = tuple(headers)
        if self._provisional_seen:
            self._send_cancel(now)

    # -- both: inside the dialog ------------------------------------------------------------------
    def bye(self, now: float) -> None:
        """End the session (§15.1.1). A UAC still calling CANCELs instead; a UAS whose 2xx is not
        yet ACKed waits for the ACK (or its give-up) before the BYE (§15)."""
        if self.state in (CALLING, EARLY) and self.role == UAC:
            self.cancel(now)
            return
        if self.state == CONNECTING:
            self._bye_pending = True
            return
        self._require(None, CONFIRMED)
        self._send_bye(now)

    def request(self, method: str, now: float, *, headers=(), body: bytes = b"") -> ClientTransaction:
        """Another request inside the confirmed dialog (a NOTIFY of a REFER's progress, RFC 3515 §2.4.4;
        an INFO ...). Its responses are taken and dropped: nothing in the session depends on them."""
        self._require(None, CONFIRMED)
        layer = self.layer
        hop = self._hop(self.dialog)
        data = self.dialog.create_request(method, layer.via(hop.transport), headers=headers, body=body)
        return layer._send_request(self, method.lower(), data, hop, now)

    def reinvite(self, now: float, body: bytes = b"", *, headers=()) -> ClientTransaction:
        """Send a new offer inside the dialog (§14.1); only one INVITE at a time each way."""
        self._require(None, CONFIRMED)
        if self._reinvite_out is not None or self._reinvite_in is not None or self._ok is not None:
            raise LocalProtocolError("an INVITE of this dialog is still in progress (RFC 3261 §14.1)", 491)
        layer = self.layer
        extra = [("Content-Type", "application/sdp")] if body else []
        hop = self._hop(self.dialog)
        data = self.dialog.create_request("INVITE", layer.via(hop.transport),
                                          contact=layer.contact_for(hop.transport),
                                          headers=[*extra, *headers], body=body)
        tx = layer._send_request(self, "reinvite", data, hop, now)
        self._reinvite_out = tx
        return tx

    def accept_reinvite(self, now: float, body: bytes = b"", *, headers=()) -> None:
        """2xx to the peer's re-INVITE, retransmitted until its ACK."""
        tx = self._reinvite_in
        if tx is None:
            raise LocalProtocolError("no re-INVITE to answer", 500)
        headers = [("Contact", self.layer.contact_for(tx.peer.transport)), *headers]
        if body:
            headers.append(("Content-Type", "application/sdp"))
        data = build_response(tx.msg, 200, to_tag=self.local_tag, headers=headers, body=body)
        self.layer.transactions.send_response(tx, data, 200, now)
        self._reinvite_in = None
        self._start_2xx(tx, tx.msg.cseq, False, now)

    def reject_reinvite(self, now: float, status: int = 488, *, headers=()) -> None:
        """Refuse the peer's re-INVITE; the session stays as it was (§14.2)."""
        tx = self._reinvite_in
        if tx is None:
            raise LocalProtocolError("no re-INVITE to answer", 500)
        data = build_response(tx.msg, status, to_tag=self.local_tag, headers=headers)
        self.layer.transactions.send_response(tx, data, status, now)
        self._reinvite_in = None

    # -- timers (on the shared wheel) -------------------------------------------------------------
    def on_timer(self, name: str, now: float) -> None:
        if name == RETRANSMIT_2XX:
            self._ok_timer = None
            if self._ok is None:
                return
            self.layer.transactions.send_stateless(self._ok, self._ok_peer)
            t = self.layer.transactions.timers
            self._ok_interval = min(self._ok_interval * 2, t.t2)
            self._retransmit_2xx_at(now + self._ok_interval, now)
        elif name == NO_ACK:
            self._no_ack_timer = None
            self._give_up_2xx(now)

    def _retransmit_2xx_at(self, deadline: float, now: float) -> None:
        # The 64*T1 give-up stays off the wheel while a retransmission comes before it (from
        # _start_2xx), and takes the retransmission's place, at the deadline it always had, once the
        # next one would not: one timer on the wheel for a 2xx ACKed in time, not two; §13.3.1.4's
        # timing unchanged.
        no_ack_at = self._no_ack_at
        if no_ack_at is None or deadline < no_ack_at:
            self._ok_timer = self.layer.wheel.schedule(deadline, (self, RETRANSMIT_2XX))
            return
        self._no_ack_at = None
        if no_ack_at > now:
            self._no_ack_timer = self.layer.wheel.schedule(no_ack_at, (self, NO_ACK))
        else:
            self._give_up_2xx(now)  # this retransmission fired late, past the give-up: it follows

    def _give_up_2xx(self, now: float) -> None:
        if self._ok is None:
            return
        # §13.3.1.4: no ACK in 64*T1: the dialog is confirmed but the session ends with a BYE.
        self._stop_2xx()
        if self.state != TERMINATED:
            self.state = CONFIRMED
            self._send_bye(now)
            self.layer._events.append(CallEnded(self, "no ACK"))

    # -- internals --------------------------------------------------------------------------------
    def _hop(self, dialog: Dialog) -> Peer:
        """Where a request inside ``dialog`` goes: its first Route or remote target, over the
        transport the session runs on (the INVITE's) unless that URI names another (§12.2.1.1,
        §18.1.1). The request's Via is then built for that hop's transport."""
        return dialog.next_hop(self.peer.transport)

    def _require(self, role: str | None, *states: str) -> None:
        if (role is not None and self.role != role) or self.state not in states:
            raise LocalProtocolError(f"{self!r} cannot do that in state {self.state}", 500)

    def _respond_invite(self, status: int, body: bytes, headers, now: float) -> None:
        extra = [("Contact", self.layer.contact_for(self.peer.transport)), *headers]
        if body:
            extra.append(("Content-Type", "application/sdp"))
        data = build_response(self.invite, status, to_tag=self.local_tag, headers=extra, body=body)
        self.layer.transactions.send_response(self.invite_tx, data, status, now)

    def _make_uas_dialog(self, confirmed: bool) -> None:
        self.dialog = Dialog.for_uas(self.invite, self.local_tag, confirmed=confirmed)
        self.layer._dialogs[self.dialog.id] = self

    def _start_2xx(self, tx: ServerTransaction, cseq: int, initial: bool, now: float) -> None:
        # The bytes as sent (with received/rport stamped), retransmitted by us, not the
        # transaction: the 2xx is the TU's to repeat (§13.3.1.4, §17.2.1).
        self._ok = tx.last_response
        self._ok_peer = tx.peer
        self._ok_cseq = cseq
        self._ok_initial = initial
        t = self.layer.transactions.timers
        wheel = self.layer.wheel
        if not tx.peer.reliable:
            self._ok_interval = t.t1
            self._ok_timer = wheel.schedule(now + t.t1, (self, RETRANSMIT_2XX))
            self._no_ack_at = now + 64 * t.t1  # off the wheel behind the retransmissions
        else:
            self._no_ack_timer = wheel.schedule(now + 64 * t.t1, (self, NO_ACK))

    def _stop_2xx(self) -> None:
        wheel = self.layer.wheel
        wheel.cancel(self._ok_timer)
        wheel.cancel(self._no_ack_timer)
        self._ok_timer = self._no_ack_timer = self._no_ack_at = None
        self._ok = None

    def _send_cancel(self, now: float) -> None:
        # §9.1: Request-URI, Call-ID, To, From, CSeq number and the top Via (so the branch) of the
        # INVITE, and its Route headers.
        inv = self.invite
        headers = [("Via", inv.vias[0]), ("Max-Forwards", "70"), ("From", inv.from_), ("To", inv.to),
                   ("Call-ID", inv.call_id), ("CSeq", f"{inv.cseq} CANCEL")]
        headers += [("Route", r) for r in inv.header_values("Route")]
        headers += self._cancel_headers
        data = build_request("CANCEL", inv.uri, headers)
        self.layer._send_request(self, "cancel", data, self.peer, now)

    def _send_bye(self, now: float) -> None:
        layer = self.layer
        hop = self._hop(self.dialog)
        data = self.dialog.create_request("BYE", layer.via(hop.transport))
        layer._send_request(self, "bye", data, hop, now)
        self._end()

    def _send_ack(self, response: Any, dialog: Dialog) -> None:
        # §13.2.2.4: the ACK of a 2xx is built by the UA core, a new transaction of its own (new
        # branch), with the INVITE's CSeq number and the dialog's route set.
        layer = self.layer
        body = self.ack_body if dialog is self.dialog else b""
        headers = [("Content-Type", "application/sdp")] if body else []
        hop = self._hop(dialog)
        ack = dialog.create_request("ACK", layer.via(hop.transport), cseq=response.cseq, headers=headers, body=body)
        layer.transactions.send_stateless(ack, hop)
        if dialog is self.dialog:
            self._ack, self._ack_cseq = ack, response.cseq

    def _end(self) -> None:
        self.state = TERMINATED
        self._stop_2xx()
        if self.dialog is not None:
            self.dialog.terminate()
            self.layer._dialogs.pop(self.dialog.id, None)

    # Events from the transaction layer ---------------------------------------------------------------
    def _invite_response(self, msg: Any, now: float) -> None:
        status = msg.status
        layer = self.layer
        if status < 200:
            self._provisional_seen = True
            if self._cancel_requested:
                self._send_cancel(now)
            if status == 100:
                return
            if self.dialog is None and msg.to_tag is not None:
                contact = msg.header("Contact")
                if contact:
                    self.dialog = Dialog.for_uac(self.invite, msg, contact)
                    layer._dialogs[self.dialog.id] = self
            if self.state == CALLING:
                self.state = EARLY
            layer._events.append(ProvisionalReceived(self, msg))
            return
        if status in (401, 407) and self.state in (CALLING, EARLY) and self._answer_challenge(msg, now):
            return
        if status >= 300:
            if self.state in (CALLING, EARLY):
                self.final_status = status
                self._end()
                layer._events.append(CallFailed(self, status, msg))
            return
        self._invite_2xx(msg, now)

    def _answer_challenge(self, msg: Any, now: float) -> bool:
        """§22.2: send the INVITE again with an Authorization (401) or Proxy-Authorization (407) that
        answers the challenge: same Call-ID, From tag and body, CSeq one up, a new branch. Once per
        INVITE, again only for a challenge marked stale (RFC 7616 §3.3); False when not answered."""
        if self.credentials is None or self._cancel_requested or self._auth_tries >= 3:
            return False
        inv = self.invite
        asked, answer = (("WWW-Authenticate", "Authorization") if msg.status == 401
                         else ("Proxy-Authenticate", "Proxy-Authorization"))
        result = answer_challenge(msg.header_values(asked), "INVITE", str(inv.uri), *self.credentials,
                                  secrets.token_hex(8))
        if result is None or (self._auth_tries and not result[1]):
            return False  # nothing we can answer, or our answer was refused: the call fails
        self._auth_tries += 1
        layer = self.layer
        transport = self.peer.transport
        lines = [("Via", layer.via(transport)), ("Max-Forwards", "70"), ("From", inv.from_), ("To", inv.to),
                 ("Call-ID", inv.call_id), ("CSeq", f"{inv.cseq + 1} INVITE"),
                 ("Contact", layer.contact_for(transport))]
        if inv.body:
            lines.append(("Content-Type", "application/sdp"))
        lines.extend(self._extra_headers)
        lines.append((answer, result[0]))
        data = build_request("INVITE", str(inv.uri), lines, inv.body)
        self.invite = parse(data)
        self.invite_tx = layer.transactions.send_request(data, self.invite, self.peer, now)
        layer._by_tx[self.invite_tx] = untrack((self, "invite"))
        self._provisional_seen = False
        return True

    def _invite_2xx(self, msg: Any, now: float) -> None:
        layer = self.layer
        if self.dialog is not None and self.dialog.remote_tag == msg.to_tag:
            if self.state == CONFIRMED or self.state == TERMINATED:
                # A retransmission of the 2xx we have: the same ACK again (§13.2.2.4).
                if self._ack is not None and self._ack_cseq == msg.cseq:
                    layer.transactions.send_stateless(self._ack, self._hop(self.dialog))
                return
            self.dialog.confirm()
            self.dialog.refresh_from_response(msg)
        elif self.state in (CONFIRMED, TERMINATED):
            # A second fork answered (§13.2.2.4): ACK it, then end that dialog with a BYE.
            try:
                other = Dialog.for_uac(self.invite, msg)
            except RemoteProtocolError:
                return
            self._send_ack(msg, other)
            hop = self._hop(other)
            bye = other.create_request("BYE", layer.via(hop.transport))
            layer._send_request(self, "bye", bye, hop, now)
            return
        else:
            if self.dialog is not None:
                layer._dialogs.pop(self.dialog.id, None)
            try:
                self.dialog = Dialog.for_uac(self.invite, msg)
            except RemoteProtocolError:
                return  # a 2xx without To tag or Contact cannot make a dialog
            layer._dialogs[self.dialog.id] = self
        self.final_status = msg.status
        self._send_ack(msg, self.dialog)
        self.state = CONFIRMED
        layer._events.append(CallAnswered(self, msg))
        if self._cancel_requested:
            # The 2xx crossed our CANCEL (§9.1): the call was answered, so hang it up.
            self._send_bye(now)

    def _reinvite_response(self, tx: Any, msg: Any, now: float) -> None:
        status = msg.status
        if status < 200:
            return
        layer = self.layer
        if self._reinvite_out is tx:
            self._reinvite_out = None
        if 200 <= status < 300:
            if self.dialog is None or self.state == TERMINATED:
                return
            self.dialog.refresh_from_response(msg)
            self._send_ack(msg, self.dialog)
            layer._events.append(ReinviteAnswered(self, status, msg))
            return
        layer._events.append(ReinviteAnswered(self, status, msg))
        if status in (408, 481) and self.state == CONFIRMED:
            self._send_bye(now)  # §14.1: the dialog is gone or the peer unreachable

    def _ack_received(self, msg: Any, now: float) -> None:
        if self._ok is None or msg.cseq != self._ok_cseq:
            return  # an ACK we already had, or for nothing we sent
        initial = self._ok_initial
        self._stop_2xx()
        if initial:
            self.state = CONFIRMED
            self.layer._events.append(CallConfirmed(self, msg))
            if self._bye_pending:
                self._send_bye(now)
        else:
            self.layer._events.append(ReinviteConfirmed(self, msg))


def _sent_by(local: Peer) -> str:
    host = f"[{local.host}]" if ":" in local.host else local.host
    return f"{host}:{local.port}"


def _via_start(transport: str, sent_by: str) -> str:
    return f"SIP/2.0/{transport.upper()} {sent_by};branch="


def _contact(user: str, local: Peer) -> str:
    transport = "" if local.transport == "udp" else f";transport={local.transport}"
    return f"<sip:{user}@{_sent_by(local)}{transport}>"


def _quoted(text: str) -> str:
    """``text`` as the inside of a quoted-string (RFC 3261 §25.1): a backslash and a double quote
    become quoted-pairs; control characters, which qdtext does not allow, are dropped."""
    text = "".join(ch for ch in text if ch >= " " and ch != "\x7f")
    return text.replace("\\", "\\\\").replace('"', '\\"')


class SessionLayer:
    """Every INVITE session of one worker: fed the transaction layer's events, it keeps dialogs
    and answers what belongs to them."""

    def __init__(self, transactions: TransactionLayer, local: Peer, *, contact: str | None = None,
                 user: str = "switchcore", listeners=()):
        """``local`` is the switch's own address (the first UDP listener): Call-IDs, and the Via and
        Contact of sessions over its transport. ``listeners`` are its addresses on other transports
        (the TCP listener): a session over one of them names it in its Via and Contact (RFC 3261
        §18.1.1, §8.1.1.8), with ``;transport=tcp`` so that the peer's requests come back over TCP."""
        self.transactions = transactions
        self.wheel = transactions.wheel
        self.local = local
        self._user = user
        self._sent_by = _sent_by(local)
        self.contact = contact or _contact(user, local)
        self._via_start = _via_start(local.transport, self._sent_by)
        # Per transport: the Via start and Contact of a session over it (the transport -> local
        # address mapping, never a socket). A transport without a listener of its own (TCP out of
        # a node that only listens on UDP) gets the default address under its own name in the Via.
        self._via_starts = {local.transport: self._via_start}
        self._contacts = {local.transport: self.contact}
        for other in listeners:
            if other.transport not in self._via_starts:
                self._via_starts[other.transport] = _via_start(other.transport, _sent_by(other))
                self._contacts[other.transport] = _contact(user, other)
        self._by_tx: dict[Any, tuple[InviteSession, str]] = {}
        self._dialogs: dict[tuple[str, str, str], InviteSession] = {}
        self._events: deque = deque()

    def via(self, transport: str | None = None) -> str:
        """A top Via for a new request from us, sent over ``transport`` (the default: ``local``'s),
        naming it and our address on it (RFC 3261 §18.1.1): a fresh branch and ``rport`` (RFC 3581)."""
        start = self._via_start if transport is None else self._via_starts.get(transport)
        if start is None:
            start = self._via_starts[transport] = _via_start(transport, self._sent_by)
        return f"{start}{new_branch()};rport"

    def contact_for(self, transport: str) -> str:
        """Our Contact for a dialog over ``transport`` (§8.1.1.8, §12.1.1): the peer's requests
        inside it are sent to this URI, so it names the transport (``;transport=tcp``)."""
        return self._contacts.get(transport, self.contact)

    def next_event(self):
        return self._events.popleft() if self._events else None

    def session_for(self, call_id: str, local_tag: str, remote_tag: str) -> InviteSession | None:
        return self._dialogs.get((call_id, local_tag, remote_tag))

    # -- UAC ------------------------------------------------------------------------------------
    def invite(self, target: str, from_uri: str, now: float, *, body: bytes = b"",
               peer: Peer | None = None, headers=(), credentials: tuple[str, str] | None = None,
               display: str = "") -> InviteSession:
        """Call ``target`` (a SIP URI) from ``from_uri`` (§8.1.1, §13.2.1); ``peer`` overrides the
        next hop taken from the target. ``credentials`` (username, password) answer a 401/407
        challenge to the INVITE (§22.2): the INVITE is sent again with the answer, CSeq one up.
        ``display`` goes in the From as its display-name (a quoted-string, §25.1)."""
        if peer is None:
            peer = next_hop(parse_uri(target), self.local.transport)
        # §18.1.1: the Via names the transport the INVITE goes over; the Contact, the same one.
        transport = peer.transport
        tag = new_tag()
        call_id = f"{random_hex(12)}@{self._sent_by}"
        name = f'"{_quoted(display)}" ' if display else ""
        lines = [("Via", self.via(transport)), ("Max-Forwards", "70"), ("From", f"{name}<{from_uri}>;tag={tag}"),
                 ("To", f"<{target}>"), ("Call-ID", call_id), ("CSeq", "1 INVITE"),
                 ("Contact", self.contact_for(transport))]
        if body:
            lines.append(("Content-Type", "application/sdp"))
        lines.extend(headers)
        data = build_request("INVITE", target, lines, body)
        msg = parse(data)
        tx = self.transactions.send_request(data, msg, peer, now)
        session = InviteSession(self, UAC, CALLING, msg, tx, peer)
        session.credentials = credentials
        session._extra_headers = tuple(headers)
        self._by_tx[tx] = untrack((session, "invite"))
        return session

    # -- events from the transaction layer ------------------------------------------------------
    def handle_event(self, event: Any, now: float) -> bool:
        """Take a transaction-layer event; False when it is none of the sessions' business (an
        OPTIONS, a REGISTER, a response to someone else's request ...)."""
        handler = self._EVENT_HANDLERS.get(type(event))
        return handler(self, event, now) if handler is not None else False

    def _on_terminated(self, event: TransactionTerminated, now: float) -> bool:
        return self._by_tx.pop(event.tx, None) is not None

    def _on_ack(self, event: AckReceived, now: float) -> bool:
        msg = event.msg
        session = self._dialogs.get((msg.call_id, msg.to_tag, msg.from_tag))
        if session is None:
            return False
        session._ack_received(msg, now)
        return True

    def _on_cancel(self, event: CancelReceived, now: float) -> bool:
        entry = self._by_tx.get(event.invite_tx)
        if entry is None:
            return False
        session = entry[0]
        if entry[1] == "invite" and session.state in (INCOMING, EARLY):
            # §9.2: the INVITE gets 487 once its CANCEL was answered 200.
            data = build_response(session.invite, 487, to_tag=session.local_tag)
            self.transactions.send_response(session.invite_tx, data, 487, now)
            session.final_status = 487
            session._end()
            self._events.append(CallCancelled(session, event.msg))
        return True

    def _on_failure(self, event: TransactionTimedOut | TransportError, now: float) -> bool:
        entry = self._by_tx.get(event.tx)
        if entry is None:
            return False
        session, kind = entry
        status = 408 if type(event) is TransactionTimedOut else 503
        if kind == "invite" and session.role == UAC and session.state in (CALLING, EARLY):
            session.final_status = status
            session._end()
            self._events.append(CallFailed(session, status, None))
        elif kind == "reinvite":
            session._reinvite_out = None
            self._events.append(ReinviteAnswered(session, status, None))
            if session.state == CONFIRMED:
                session._send_bye(now)
        return True

    def _on_request(self, event: RequestReceived, now: float) -> bool:
        tx, msg = event.tx, event.msg
        method = msg.method
        if msg.to_tag is None:
            if method != "INVITE":
                return False  # out-of-dialog OPTIONS, REGISTER, ...: the endpoint's
            session = InviteSession(self, UAS, INCOMING, msg, tx, tx.peer)
            self._by_tx[tx] = untrack((session, "invite"))
            self._events.append(IncomingCall(session, msg))
            return True
        session = self._dialogs.get((msg.call_id, msg.to_tag, msg.from_tag))
        if session is None:
            # §12.2.2: a request inside a dialog we do not have.
            self._reply(tx, msg, 481, "Call/Transaction Does Not Exist", now)
            return True
        try:
            session.dialog.receive_request(msg)
        except ProtocolError as exc:
            self._reply(tx, msg, exc.status, exc.reason, now)
            return True
        if method == "BYE":
            self._reply(tx, msg, 200, None, now, to_tag=session.local_tag)
            pending = session._reinvite_in
            if pending is not None:
                # §15.1.2: requests still unanswered in the dialog get 487.
                self._reply(pending, pending.msg, 487, None, now, to_tag=session.local_tag)
                session._reinvite_in = None
            session._end()
            self._events.append(CallEnded(session, "BYE"))
        elif method == "INVITE":
            if session._reinvite_out is not None:
                # §14.2: glare: our own re-INVITE is still waiting for its final response.
                self._reply(tx, msg, 491, None, now, to_tag=session.local_tag)
            elif session._reinvite_in is not None or session._ok is not None:
                # §14.2: an INVITE while the previous one is still being answered.
                self._reply(tx, msg, 500, None, now, to_tag=session.local_tag,
                            headers=[("Retry-After", str(1 + secrets.randbelow(10)))])
            else:
                session._reinvite_in = tx
                self._by_tx[tx] = untrack((session, "reinvite-in"))
                self._events.append(ReinviteReceived(session, msg))
        else:
            self._events.append(InDialogRequest(session, tx, msg))
        return True

    def _on_response(self, event: ResponseReceived, now: float) -> bool:
        tx, msg = event.tx, event.msg
        if tx is None:
            # A 2xx retransmitted after its transaction ended: ACK it again (§13.2.2.4).
            if msg.cseq_method != "INVITE" or not 200 <= msg.status < 300:
                return False
            session = self._dialogs.get((msg.call_id, msg.from_tag, msg.to_tag))
            if session is None or session.role != UAC:
                return False
            session._invite_2xx(msg, now)
            return True
        entry = self._by_tx.get(tx)
        if entry is None:
            return False
        session, kind = entry
        if kind == "invite":
            session._invite_response(msg, now)
        elif kind == "reinvite":
            session._reinvite_response(tx, msg, now)
        return True

    # The transaction layer's events by their type: four a call are TransactionTerminated.
    _EVENT_HANDLERS = {
        TransactionTerminated: _on_terminated,
        RequestReceived: _on_request,
        ResponseReceived: _on_response,
        AckReceived: _on_ack,
        CancelReceived: _on_cancel,
        TransactionTimedOut: _on_failure,
        TransportError: _on_failure,
    }

    def _send_request(self, session: InviteSession, kind: str, data: bytes, peer: Peer,
                      now: float) -> ClientTransaction:
        tx = self.transactions.send_request(data, parse(data), peer, now)
        self._by_tx[tx] = untrack((session, kind))
        return tx

    def _reply(self, tx, msg, status, reason, now, *, to_tag=None, headers=()) -> None:
        data = build_response(msg, status, reason, to_tag=to_tag or msg.to_tag or new_tag(),
                              headers=headers)
        self.transactions.send_response(tx, data, status, now)
