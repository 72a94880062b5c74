"""The UA core of one worker (RFC 3261 §8.2): what the node does with each request it receives.

Sans-IO, in aioquic's shape: the transport feeds ``receive_datagram(data, peer, now)`` (or
``receive_message`` for a message a stream framer has cut out), then sends what
``datagrams_to_send()`` hands back and re-arms one timer at ``get_timer()``, calling
``handle_timer(now)`` when it fires.

Below it, the transaction layer (RFC 3261 §17) absorbs retransmissions and runs timers A-K; above
it, this module answers:
- a datagram that does not parse: 400 (505 for another SIP version) with a reason phrase naming the
  problem, sent to the packet's source (§18.2.2), or nothing where no answer can be addressed;
- OPTIONS: 200 with Allow, Accept and Supported (§11.2);
- REGISTER: the registrar (§10.3);
- INVITE, and every request, ACK, CANCEL and response of a call: the call layer (``core/call``)
  when one is attached as ``endpoint.calls``, else 404 to a new INVITE (nothing routes it);
- an unsupported Request-URI scheme: 416 (§8.2.2.1); an unknown Require option tag: 420 (§8.2.2.3);
- an INVITE whose body is not SDP: 415 with Accept (§8.2.3);
- a method we do not implement: 501 with Allow (§8.2.1); an in-dialog request for no dialog: 481.
"""
from __future__ import annotations

from core.errors import ProtocolError
from core.sip.addr import Peer
from core.sip.message import build_response, media_type, parse, reply_for_malformed
from core.sip.transaction import (
    RequestReceived,
    TimerConfig,
    TransactionLayer,
    via_reply_peer,
)
from core.sip.uri import GrammarError, parse_via

# What this node serves; OPTIONS advertises it (RFC 3261 §11.2) and 501/405 carry it (§8.2.1).
ALLOW = ("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "INFO", "REFER")
ACCEPT = "application/sdp"
# Option tags this UAS understands; a Require naming anything else gets 420 (§8.2.2.3).
SUPPORTED: tuple[str, ...] = ()
URI_SCHEMES = ("sip", "sips", "tel")
# Requests that only make sense inside a dialog (§12.2.2): without one they get 481.
IN_DIALOG_ONLY = ("BYE", "INFO", "UPDATE", "PRACK", "NOTIFY", "REFER")
# How often bindings past their expiry are swept.
HOUSEKEEPING_INTERVAL = 1.0


def _malformed_reply_peer(reply: bytes, peer: Peer) -> Peer:
    # reply_for_malformed writes the request's Via lines, as received, right after the status line.
    start = reply.find(b"\r\nVia: ") + 7
    end = reply.find(b"\r\n", start)
    try:
        via = parse_via(reply[start:end].decode("utf-8", "surrogateescape"))
    except (GrammarError, ValueError, IndexError):
        return peer
    return via_reply_peer(via, peer)


class Endpoint:
    """One worker's SIP endpoint: transaction layer below, registrar and call layer above."""

    def __init__(self, registrar, *, timers: TimerConfig | None = None, max_message_size: int = 65536,
                 user_agent: str = "Switchcore", max_transactions: int = 100_000):
        self.registrar = registrar
        self.max_message_size = max_message_size
        self.server_header = user_agent
        self.transactions = TransactionLayer(timers=timers or TimerConfig(),
                                             max_transactions=max_transactions)
        self._stateless_out: list[tuple[bytes, Peer]] = []
        self._next_housekeeping: float | None = None
        self.draining = False
        # The call layer (core.call.B2BUA), attached once the node knows its own address; it takes
        # INVITEs and every transaction event of their sessions.
        self.calls = None
        # Counters a person reads in the logs and the metrics.
        self.stats = {"received": 0, "malformed": 0, "dropped": 0, "answered_malformed": 0}

    # -- input ---------------------------------------------------------------------------------
    def receive_datagram(self, data: bytes, peer: Peer, now: float) -> None:
        """A whole datagram (UDP) or a message cut out of a stream (TCP) from ``peer``."""
        self.stats["received"] += 1
        try:
            msg = parse(data, self.max_message_size)
        except ProtocolError as exc:
            self._refuse_malformed(data, exc, peer)
            return
        self.receive_message(msg, peer, now)

    def receive_message(self, msg, peer: Peer, now: float) -> None:
        if self._next_housekeeping is None:
            self._next_housekeeping = now + HOUSEKEEPING_INTERVAL
        self.transactions.receive(msg, peer, now)
        self._process_events(now)

    def handle_timer(self, now: float) -> None:
        self.transactions.handle_timer(now)
        if self._next_housekeeping is not None and now >= self._next_housekeeping:
            self.registrar.expire(now)
            self._next_housekeeping = now + HOUSEKEEPING_INTERVAL
        self._process_events(now)

    def transport_error(self, peer: Peer, now: float) -> None:
        """The bindings could not reach ``peer`` (a TCP connection that could not be opened): the
        transactions talking to it fail (RFC 3261 §17.1.1.2, §17.1.2.2), and the call layer hears it
        (a 503 for a call whose leg it was)."""
        self.transactions.transport_error(peer, now)
        self._process_events(now)

    def get_timer(self) -> float | None:
        wheel = self.transactions.wheel.next_deadline()
        housekeeping = self._next_housekeeping
        if wheel is None or (housekeeping is not None and housekeeping < wheel):
            return housekeeping
        return wheel

    def datagrams_to_send(self) -> list[tuple[bytes, Peer]]:
        out = self.transactions.datagrams_to_send()
        if self._stateless_out:  # answers to malformed datagrams, rare: they go first
            out[:0] = self._stateless_out
            self._stateless_out = []
        return out

    # -- shutting down -------------------------------------------------------------------------
    def drain(self, now: float) -> None:
        """Stop taking new work: every request still unanswered, and from now on every new one,
        is answered 503 with Retry-After (RFC 3261 §21.5.4). Calls ringing get 503 too, answered
        ones a BYE on both legs; requests inside a dialog are still served."""
        self.draining = True
        if self.calls is not None:
            self.calls.drain(now)
        for tx in self.transactions.awaiting_final():
            self._refuse_draining(tx, tx.msg, now)
        self._process_events(now)

    # -- internals -----------------------------------------------------------------------------
    def _refuse_malformed(self, data: bytes, exc: ProtocolError, peer: Peer) -> None:
        self.stats["malformed"] += 1
        reply = reply_for_malformed(data, exc)
        if reply is None:
            self.stats["dropped"] += 1
            return
        self.stats["answered_malformed"] += 1
        # Stateless answer (§8.2.6 without a transaction: nothing in it can be trusted to match on),
        # addressed like any response: the packet's source address (§18.2.2 "received"), the port
        # by rport or the Via (RFC 3581 §4); the source port where the Via itself is unreadable.
        self._stateless_out.append((reply, _malformed_reply_peer(reply, peer)))

    def _process_events(self, now: float) -> None:
        events = self.transactions._events  # the layer's queue (its next_event), read in place
        calls = self.calls
        while True:
            if not events:
                if calls is None:
                    return
                calls.process(now)  # what the sessions' own timers queued
                if not events:
                    return
            event = events.popleft()
            if type(event) is RequestReceived:
                self._on_request(event, now)
            elif calls is not None:
                # Responses, ACKs of 2xx, CANCELs (answered 200 by the transaction layer),
                # time-outs and terminations: the sessions' business when they are about one.
                calls.handle_event(event, now)
            # Without a call layer no INVITE is served: a CANCEL finds its INVITE completed and an
            # ACK belongs to nothing.

    def _respond(self, tx, msg, status: int, reason: str | None = None, headers=(), now: float = 0.0) -> None:
        # The transaction's own tag, so that a 200 to a CANCEL and the 487 agree (§9.2).
        to_tag = tx.local_tag if status > 100 and msg.to_tag is None else None
        headers = [("Server", self.server_header), *headers]
        data = build_response(msg, status, reason, to_tag=to_tag, headers=headers)
        self.transactions.send_response(tx, data, status, now)

    def _on_request(self, event: RequestReceived, now: float) -> None:
        tx, msg, peer = event.tx, event.msg, event.peer
        method = msg.method
        calls = self.calls
        in_dialog = calls is not None and msg.to_tag and method not in ("OPTIONS", "REGISTER")
        if self.draining and not in_dialog:  # a BYE still ends a call while the node drains
            self._refuse_draining(tx, msg, now)
            return
        scheme, colon, _ = msg.uri.partition(":")
        if not colon or scheme.lower() not in URI_SCHEMES:
            # §8.2.2.1: a scheme we do not understand gets 416.
            self._respond(tx, msg, 416, "Unsupported URI Scheme", (), now)
            return
        unsupported = [tag for tag in msg.header_values("Require") if tag.strip().lower() not in SUPPORTED]
        if unsupported and method not in ("ACK", "CANCEL"):
            # §8.2.2.3: name every option tag we do not support.
            self._respond(tx, msg, 420, "Bad Extension",
                          [("Unsupported", ", ".join(t.strip() for t in unsupported))], now)
            return
        if in_dialog:
            # Inside a dialog (§12.2.2): the sessions know it, or answer 481.
            if not calls.handle_event(event, now):
                self._respond(tx, msg, 481, "Call/Transaction Does Not Exist", (), now)
        elif method == "OPTIONS":
            self._respond(tx, msg, 200, "OK", self._capabilities(), now)
        elif method == "REGISTER":
            reply = self.registrar.handle_register(msg, peer, now)
            self._respond(tx, msg, reply.status, reply.reason, reply.headers, now)
        elif method == "INVITE":
            if msg.body and media_type(msg.header("Content-Type")) != ACCEPT:
                # §8.2.3: a body we cannot read gets 415 with what we accept.
                self._respond(tx, msg, 415, "Unsupported Media Type", [("Accept", ACCEPT)], now)
            elif msg.to_tag:
                # A re-INVITE for a dialog this node does not have (§12.2.2).
                self._respond(tx, msg, 481, "Call/Transaction Does Not Exist", (), now)
            elif calls is not None:
                calls.handle_event(event, now)
            else:
                # Routes arrive with the call layer; until one matches, nothing serves the number.
                self._respond(tx, msg, 404, "No Route", (), now)
        elif method in IN_DIALOG_ONLY:
            self._respond(tx, msg, 481, "Call/Transaction Does Not Exist", (), now)
        else:
            # §8.2.1: a method we do not implement gets 501 with the ones we do.
            self._respond(tx, msg, 501, "Not Implemented", [("Allow", ", ".join(ALLOW))], now)

    def _refuse_draining(self, tx, msg, now: float) -> None:
        self._respond(tx, msg, 503, "Shutting Down", [("Retry-After", "5")], now)

    def _capabilities(self) -> list[tuple[str, str]]:
        return [
            ("Allow", ", ".join(ALLOW)),
            ("Accept", ACCEPT),
            ("Supported", ", ".join(SUPPORTED)),
            ("Accept-Language", "en"),
        ]
