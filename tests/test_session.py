"""INVITE sessions (RFC 3261 §13-§15) between a UAC and a UAS wired in memory, no sockets, with a
fake clock; the call flows are RFC 3665's, asserted as the messages on the wire."""
from __future__ import annotations

import pytest

from core.errors import LocalProtocolError
from core.sip.addr import Peer
from core.sip.message import parse
from core.sip.session import (
    CONFIRMED,
    CONNECTING,
    EARLY,
    TERMINATED,
    CallAnswered,
    CallCancelled,
    CallConfirmed,
    CallEnded,
    CallFailed,
    IncomingCall,
    InDialogRequest,
    ProvisionalReceived,
    ReinviteAnswered,
    ReinviteConfirmed,
    ReinviteReceived,
    SessionLayer,
)
from core.sip.transaction import ResponseReceived, TransactionLayer

ALICE = Peer("udp", "127.0.0.1", 5061)
BOB = Peer("udp", "127.0.0.2", 5062)
OFFER = b"v=0\r\no=alice 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\n"
ANSWER = b"v=0\r\no=bob 1 1 IN IP4 127.0.0.2\r\ns=-\r\nc=IN IP4 127.0.0.2\r\nt=0 0\r\nm=audio 41000 RTP/AVP 0\r\n"


class UA:
    """A transaction layer with a session layer on top: what an endpoint would be for calls."""

    def __init__(self, addr: Peer, name: str, listeners=()):
        self.addr = addr
        self.transactions = TransactionLayer()
        self.sessions = SessionLayer(self.transactions, addr, user=name, listeners=listeners)
        self.events: list = []
        self.unclaimed: list = []  # transaction events no session took

    def pump(self, now: float) -> None:
        for _ in range(1000):
            event = self.transactions.next_event()
            if event is None:
                break
            if not self.sessions.handle_event(event, now):
                self.unclaimed.append(event)
        while (event := self.sessions.next_event()) is not None:
            self.events.append(event)

    def take(self, kind) -> list:
        found = [e for e in self.events if isinstance(e, kind)]
        self.events = [e for e in self.events if not isinstance(e, kind)]
        return found


class Net:
    """Alice (UAC) and Bob (UAS) joined in memory. ``trace`` notes each datagram the way RFC 3665
    draws it: "INVITE →" from Alice, "← 180" from Bob."""

    def __init__(self, alice_listeners=(), bob_listeners=()):
        self.alice = UA(ALICE, "alice", alice_listeners)
        self.bob = UA(BOB, "bob", bob_listeners)
        self.trace: list[str] = []
        self.wire: list[tuple[str, bytes]] = []
        self.transports: list[str] = []  # each datagram's transport, as the sender chose it
        self.now = 0.0

    def flush(self, now: float | None = None, drop=lambda label: False) -> None:
        if now is not None:
            self.now = now
        for _ in range(100):
            self.alice.pump(self.now)
            self.bob.pump(self.now)
            moved = False
            for src, dst, arrow in ((self.alice, self.bob, "→"), (self.bob, self.alice, "←")):
                for data, peer in src.transactions.datagrams_to_send():
                    assert peer.host == dst.addr.host, f"{data[:40]!r} sent to {peer}"
                    moved = True
                    words = data.split(b"\r\n", 1)[0].decode().split()
                    label = words[0] if not data.startswith(b"SIP/2.0") else words[1]
                    if drop(label):
                        continue
                    self.trace.append(f"{label} →" if arrow == "→" else f"← {label}")
                    self.wire.append((label, data))
                    self.transports.append(peer.transport)
                    # It arrives over the transport it was sent by, from the sender's address.
                    source = Peer(peer.transport, src.addr.host, src.addr.port)
                    dst.transactions.receive(parse(data), source, self.now)
            if not moved:
                return

    def run_until(self, until: float, drop=lambda label: False) -> None:
        """Fire both sides' timers in time order up to ``until``, delivering what they send."""
        for _ in range(10_000):
            deadlines = [d for d in (self.alice.transactions.get_timer(), self.bob.transactions.get_timer())
                         if d is not None and d <= until]
            if not deadlines:
                break
            self.now = min(deadlines)
            self.alice.transactions.handle_timer(self.now)
            self.bob.transactions.handle_timer(self.now)
            self.flush(drop=drop)
        self.now = until

    def call(self, ring: bool = True):
        """Alice calls Bob; Bob rings. Returns (alice's session, bob's session)."""
        caller = self.alice.sessions.invite("sip:bob@127.0.0.2:5062", "sip:alice@127.0.0.1", self.now,
                                            body=OFFER)
        self.flush()
        (incoming,) = self.bob.take(IncomingCall)
        if ring:
            incoming.session.ring(self.now)
            self.flush()
        return caller, incoming.session

    def answered_call(self):
        caller, callee = self.call()
        callee.answer(self.now, ANSWER)
        self.flush()
        return caller, callee


def sent(net: Net, label: str) -> list:
    return [parse(data) for lab, data in net.wire if lab == label]


# -- RFC 3665 §3.1: successful session establishment, and its end -------------------------------------
def test_successful_session_and_bye_from_the_caller():
    net = Net()
    caller, callee = net.call()
    assert caller.state == EARLY and callee.state == EARLY
    assert [e.msg.status for e in net.alice.take(ProvisionalReceived)] == [180]
    callee.answer(net.now, ANSWER)
    net.flush()
    assert net.trace == ["INVITE →", "← 100", "← 180", "← 200", "ACK →"]
    (answered,) = net.alice.take(CallAnswered)
    assert answered.msg.body == ANSWER
    assert [type(e) for e in net.bob.events] == [CallConfirmed]
    assert caller.state == CONFIRMED and callee.state == CONFIRMED
    # §13.2.2.4: the ACK of the 2xx is a new transaction (new branch) with the INVITE's CSeq, sent
    # to the remote target (Bob's Contact), inside the dialog (Bob's tag).
    (invite,), (ack,) = sent(net, "INVITE"), sent(net, "ACK")
    assert ack.uri == "sip:bob@127.0.0.2:5062" and ack.branch != invite.branch
    assert (ack.cseq, ack.cseq_method, ack.to_tag) == (1, "ACK", callee.local_tag)
    assert caller.dialog.id == (invite.call_id, caller.local_tag, callee.local_tag)
    assert callee.dialog.id == (invite.call_id, callee.local_tag, caller.local_tag)

    caller.bye(net.now)
    net.flush()
    assert net.trace[-2:] == ["BYE →", "← 200"]
    (bye,) = sent(net, "BYE")
    assert (bye.cseq, bye.from_tag, bye.to_tag) == (2, caller.local_tag, callee.local_tag)
    assert [e.reason for e in net.bob.take(CallEnded)] == ["BYE"]
    assert caller.state == TERMINATED and callee.state == TERMINATED


def test_bye_from_the_callee():
    net = Net()
    caller, callee = net.answered_call()
    net.bob.events.clear()
    callee.bye(net.now)
    net.flush()
    assert net.trace[-2:] == ["← BYE", "200 →"]
    (bye,) = sent(net, "BYE")
    # Bob's BYE: From carries Bob's tag, To Alice's, CSeq starts Bob's own sequence.
    assert (bye.from_tag, bye.to_tag, bye.uri) == (callee.local_tag, caller.local_tag, "sip:alice@127.0.0.1:5061")
    assert [e.reason for e in net.alice.take(CallEnded)] == ["BYE"]
    assert caller.state == TERMINATED


# -- §13.3.1.4: the UAS retransmits its 2xx until the ACK ---------------------------------------------
def test_the_2xx_is_retransmitted_until_the_ack_arrives():
    net = Net()
    caller, callee = net.call()
    net.flush(drop=lambda label: label == "ACK")
    callee.answer(0.0, ANSWER)
    net.flush(drop=lambda label: label == "ACK")  # the ACKs are lost until t = 3
    net.run_until(3.0, drop=lambda label: label == "ACK")
    assert callee.state == CONNECTING
    net.run_until(10.0)
    oks = [i for i, line in enumerate(net.trace) if line == "← 200"]
    # the 2xx at 0, then at T1 (0.5), 1.5, 3.5: each retransmission gets an ACK (§13.2.2.4)
    assert len(oks) == 4
    assert net.trace[-2:] == ["← 200", "ACK →"]
    assert callee.state == CONFIRMED
    assert len(net.bob.take(CallConfirmed)) == 1


def test_no_ack_for_64_t1_ends_the_session_with_a_bye():
    net = Net()
    caller, callee = net.call()
    callee.answer(0.0, ANSWER)
    net.flush(drop=lambda label: label == "ACK")
    times = []
    for _ in range(100):
        deadline = net.bob.transactions.get_timer()
        if deadline is None or deadline > 40:
            break
        before = len(net.trace)
        net.run_until(deadline, drop=lambda label: label == "ACK")
        times += [deadline for line in net.trace[before:] if line == "← 200"]
    # T1 doubling, capped at T2 (§13.3.1.4), for 64*T1.
    assert times == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert [e.reason for e in net.bob.take(CallEnded)] == ["no ACK"]
    assert "← BYE" in net.trace and callee.state == TERMINATED


def test_the_no_ack_bye_leaves_at_exactly_64_t1_with_one_timer_on_the_wheel_until_then():
    net = Net()
    caller, callee = net.call()
    callee.answer(0.0, ANSWER)
    net.flush(drop=lambda label: label == "ACK")
    wheel = net.bob.transactions.wheel
    # The give-up cannot come before the retransmissions: only the next one is on the wheel
    # (with Timer L of the INVITE transaction), until its interval would reach past 64*T1.
    assert len(wheel) == 2  # the first retransmission and the transaction's Timer L
    net.run_until(31.5, drop=lambda label: label == "ACK")
    assert callee.state == CONNECTING and net.bob.take(CallEnded) == []
    assert net.bob.transactions.get_timer() == 32.0
    before = len(net.trace)
    net.run_until(32.0, drop=lambda label: label == "ACK")
    assert "← BYE" in net.trace[before:] and callee.state == TERMINATED
    assert [e.reason for e in net.bob.take(CallEnded)] == ["no ACK"]


def test_a_late_2xx_timer_retransmits_once_then_gives_up_in_the_same_call():
    net = Net()
    caller, callee = net.call()
    callee.answer(0.0, ANSWER)
    net.flush(drop=lambda label: label == "ACK")
    net.bob.transactions.datagrams_to_send()
    net.bob.transactions.handle_timer(40.0)
    net.bob.pump(40.0)
    labels = [data.split(b"\r\n", 1)[0] for data, _ in net.bob.transactions.datagrams_to_send()]
    assert labels[0] == b"SIP/2.0 200 OK" and labels[1].startswith(b"BYE ")
    assert [e.reason for e in net.bob.take(CallEnded)] == ["no ACK"]


# -- RFC 3665 §3.4: busy; §3.8: no answer, CANCEL ------------------------------------------------------
def test_busy_callee():
    net = Net()
    caller, callee = net.call(ring=False)
    callee.reject(net.now, 486)
    net.flush()
    assert net.trace == ["INVITE →", "← 100", "← 486", "ACK →"]
    (failed,) = net.alice.take(CallFailed)
    assert failed.status == 486 and caller.state == TERMINATED


def test_unanswered_call_cancelled_by_the_caller():
    net = Net()
    caller, callee = net.call()
    net.flush(10.0)
    caller.cancel(net.now)
    net.flush()
    assert net.trace == ["INVITE →", "← 100", "← 180", "CANCEL →", "← 200", "← 487", "ACK →"]
    (cancel,) = sent(net, "CANCEL")
    (invite,) = sent(net, "INVITE")
    assert cancel.branch == invite.branch and cancel.uri == invite.uri and cancel.cseq == invite.cseq
    assert [e.status for e in net.alice.take(CallFailed)] == [487]
    assert len(net.bob.take(CallCancelled)) == 1
    assert caller.state == TERMINATED and callee.state == TERMINATED


def test_cancel_waits_for_a_provisional_response():
    net = Net()
    caller = net.alice.sessions.invite("sip:bob@127.0.0.2:5062", "sip:alice@127.0.0.1", 0.0, body=OFFER)
    net.flush(0.0, drop=lambda label: label == "INVITE")  # the INVITE is lost
    caller.cancel(0.1)
    net.flush(0.1)
    assert net.trace == []  # §9.1: no CANCEL before a provisional response
    net.run_until(0.5)  # Timer A: the INVITE again, 100 Trying, and now the CANCEL
    assert net.trace[:4] == ["INVITE →", "← 100", "CANCEL →", "← 200"]
    assert [e.status for e in net.alice.take(CallFailed)] == [487]


def test_a_cancel_carries_the_headers_it_was_asked_with_also_when_it_waited_for_a_provisional():
    net = Net()
    caller = net.alice.sessions.invite("sip:bob@127.0.0.2:5062", "sip:alice@127.0.0.1", 0.0, body=OFFER)
    net.flush(0.0, drop=lambda label: label == "INVITE")  # the INVITE is lost: the CANCEL must wait
    reason = 'SIP;cause=200;text="Call completed elsewhere"'
    caller.cancel(0.1, headers=[("Reason", reason)])
    net.run_until(0.5)
    (cancel,) = sent(net, "CANCEL")
    assert cancel.header("Reason") == reason  # RFC 3326: the phone logs no missed call
    assert [e.status for e in net.alice.take(CallFailed)] == [487]


def test_bye_before_the_call_is_answered_cancels_it():
    net = Net()
    caller, callee = net.call()
    caller.bye(net.now)
    net.flush()
    assert "CANCEL →" in net.trace and "← 487" in net.trace


def test_invite_to_nobody_fails_with_408():
    net = Net()
    caller = net.alice.sessions.invite("sip:bob@127.0.0.2:5062", "sip:alice@127.0.0.1", 0.0)
    net.run_until(40.0, drop=lambda label: label == "INVITE")
    (failed,) = net.alice.take(CallFailed)
    assert failed.status == 408 and failed.msg is None and caller.state == TERMINATED


# -- re-INVITE (§14) ---------------------------------------------------------------------------------
def test_reinvite_offer_answer_and_ack():
    net = Net()
    caller, callee = net.answered_call()
    net.bob.events.clear()
    new_offer = OFFER.replace(b"40000", b"40002")
    caller.reinvite(net.now, new_offer)
    net.flush()
    (received,) = net.bob.take(ReinviteReceived)
    assert received.msg.body == new_offer and received.msg.cseq == 2
    callee.accept_reinvite(net.now, ANSWER)
    net.flush()
    assert net.trace[-4:] == ["INVITE →", "← 100", "← 200", "ACK →"]
    (answered,) = net.alice.take(ReinviteAnswered)
    assert answered.status == 200
    assert len(net.bob.take(ReinviteConfirmed)) == 1
    acks = sent(net, "ACK")
    assert acks[-1].cseq == 2
    assert caller.state == CONFIRMED and callee.state == CONFIRMED


def test_reinvite_glare_gets_491_on_both_sides():
    net = Net()
    caller, callee = net.answered_call()
    caller.reinvite(net.now, OFFER)
    callee.reinvite(net.now, ANSWER)  # both at once: the INVITEs cross
    net.flush()
    assert sorted(e.status for e in net.alice.take(ReinviteAnswered)) == [491]
    assert sorted(e.status for e in net.bob.take(ReinviteAnswered)) == [491]
    assert net.alice.take(ReinviteReceived) == [] and net.bob.take(ReinviteReceived) == []
    assert caller.state == CONFIRMED and callee.state == CONFIRMED


def test_second_reinvite_while_one_is_pending_is_refused_locally():
    net = Net()
    caller, _ = net.answered_call()
    caller.reinvite(net.now, OFFER)
    with pytest.raises(LocalProtocolError):
        caller.reinvite(net.now, OFFER)


# -- requests inside dialogs (§12.2.2) ---------------------------------------------------------------
def test_request_inside_an_unknown_dialog_gets_481():
    net = Net()
    caller, callee = net.answered_call()
    dialog = caller.dialog
    data = dialog.create_request("BYE", net.alice.sessions.via())
    forged = data.replace(f"tag={callee.local_tag}".encode(), b"tag=nosuchtag")
    msg = parse(forged)
    net.alice.transactions.send_request(forged, msg, BOB, net.now)
    net.flush()
    assert net.trace[-2:] == ["BYE →", "← 481"]
    assert callee.state == CONFIRMED


def test_lower_cseq_inside_the_dialog_gets_500():
    net = Net()
    caller, callee = net.answered_call()
    caller.reinvite(net.now, OFFER)  # CSeq 2
    net.flush()
    callee.accept_reinvite(net.now, ANSWER)
    net.flush()
    data = caller.dialog.create_request("INFO", net.alice.sessions.via(), cseq=1)
    net.alice.transactions.send_request(data, parse(data), BOB, net.now)
    net.flush()
    assert net.trace[-2:] == ["INFO →", "← 500"]
    assert net.bob.take(InDialogRequest) == []


def test_other_requests_inside_the_dialog_go_to_the_tu():
    net = Net()
    caller, callee = net.answered_call()
    data = caller.dialog.create_request("INFO", net.alice.sessions.via(), body=b"Signal=5\r\n")
    net.alice.transactions.send_request(data, parse(data), BOB, net.now)
    net.flush()
    (info,) = net.bob.take(InDialogRequest)
    assert info.session is callee and info.msg.body == b"Signal=5\r\n"


def test_retransmitted_2xx_after_the_invite_transaction_ended_is_acked_again():
    net = Net()
    caller, callee = net.answered_call()
    (ok,) = sent(net, "200")
    net.run_until(40.0)  # Timer M ends Alice's INVITE transaction
    acks_before = len(sent(net, "ACK"))
    net.alice.transactions.receive(ok, BOB, 41.0)
    net.flush(41.0)
    assert len(sent(net, "ACK")) == acks_before + 1
    assert not [e for e in net.alice.unclaimed if isinstance(e, ResponseReceived)]


# -- the transport a session runs over (RFC 3261 §18.1.1, §8.1.1.7, §8.1.1.8) ------------------------
ALICE_TCP = Peer("tcp", "127.0.0.1", 5071)  # Alice's TCP listener, on a port of its own
BOB_TCP = Peer("tcp", "127.0.0.2", 5072)


def tcp_session(net: Net, target: str = "sip:bob@127.0.0.2:5062;transport=tcp", peer: Peer | None = None):
    caller = net.alice.sessions.invite(target, "sip:alice@127.0.0.1", net.now, body=OFFER, peer=peer)
    net.flush()
    (incoming,) = net.bob.take(IncomingCall)
    incoming.session.answer(net.now, ANSWER)
    net.flush()
    return caller, incoming.session


def test_a_session_over_tcp_sends_a_tcp_via_and_a_contact_with_transport_tcp():
    net = Net(alice_listeners=[ALICE_TCP], bob_listeners=[BOB_TCP])
    caller, callee = tcp_session(net)
    caller.reinvite(net.now, OFFER.replace(b"40000", b"40002"))
    net.flush()
    callee.accept_reinvite(net.now, ANSWER)
    net.flush()
    caller.bye(net.now)
    net.flush()
    assert net.trace == ["INVITE →", "← 100", "← 200", "ACK →", "INVITE →", "← 100", "← 200", "ACK →",
                         "BYE →", "← 200"]
    assert set(net.transports) == {"tcp"}
    invites, acks, (bye,) = sent(net, "INVITE"), sent(net, "ACK"), sent(net, "BYE")
    for request in (*invites, *acks, bye):
        # The Via names TCP and the TCP listener's address (§18.1.1), with a branch and rport.
        assert request.vias[0].startswith("SIP/2.0/TCP 127.0.0.1:5071;branch=z9hG4bK"), request.vias[0]
        assert request.vias[0].endswith(";rport")
    # The Contacts ask for the dialog's requests over TCP (§8.1.1.8, §12.1.1), both ways.
    assert [i.header("Contact") for i in invites] == ["<sip:alice@127.0.0.1:5071;transport=tcp>"] * 2
    oks = [m for m in sent(net, "200") if m.cseq_method == "INVITE"]
    assert [m.header("Contact") for m in oks] == ["<sip:bob@127.0.0.2:5072;transport=tcp>"] * 2
    assert caller.dialog.remote_target.params["transport"] == "tcp"


def test_the_callees_bye_in_a_tcp_session_comes_back_over_tcp_to_the_callers_contact():
    net = Net(alice_listeners=[ALICE_TCP], bob_listeners=[BOB_TCP])
    caller, callee = tcp_session(net)
    callee.bye(net.now)
    net.flush()
    assert net.trace[-2:] == ["← BYE", "200 →"] and net.transports[-2:] == ["tcp", "tcp"]
    (bye,) = sent(net, "BYE")
    assert bye.uri == "sip:alice@127.0.0.1:5071;transport=tcp"
    assert bye.vias[0].startswith("SIP/2.0/TCP 127.0.0.2:5072;branch=")


def test_a_session_sent_to_a_tcp_peer_stays_on_tcp_when_the_contact_names_no_transport():
    # A phone registered over TCP: the INVITE goes to its binding's received Peer (TCP) and its
    # Contact has no transport parameter (Bob has no TCP listener here, so his Contact is plain).
    net = Net(alice_listeners=[ALICE_TCP])
    caller, callee = tcp_session(net, "sip:bob@127.0.0.2:5062", peer=Peer("tcp", "127.0.0.2", 40001))
    (invite,) = sent(net, "INVITE")
    assert invite.vias[0].startswith("SIP/2.0/TCP 127.0.0.1:5071;branch=")
    assert invite.header("Contact") == "<sip:alice@127.0.0.1:5071;transport=tcp>"
    assert caller.dialog.remote_target.params.get("transport") is None
    caller.bye(net.now)
    net.flush()
    (ack,), (bye,) = sent(net, "ACK"), sent(net, "BYE")
    assert ack.vias[0].startswith("SIP/2.0/TCP ") and bye.vias[0].startswith("SIP/2.0/TCP ")
    assert set(net.transports) == {"tcp"}


def test_a_tcp_session_without_a_tcp_listener_names_tcp_at_the_default_address():
    net = Net()
    caller, _ = tcp_session(net)
    (invite,) = sent(net, "INVITE")
    assert invite.vias[0].startswith("SIP/2.0/TCP 127.0.0.1:5061;branch=")
    assert invite.header("Contact") == "<sip:alice@127.0.0.1:5061>"


def test_a_udp_session_is_unchanged_by_a_tcp_listener():
    net = Net(alice_listeners=[ALICE_TCP], bob_listeners=[BOB_TCP])
    caller, callee = net.answered_call()
    caller.bye(net.now)
    net.flush()
    assert set(net.transports) == {"udp"}
    (invite,), (ack,), (bye,) = sent(net, "INVITE"), sent(net, "ACK"), sent(net, "BYE")
    for request in (invite, ack, bye):
        via = request.vias[0]
        assert via.startswith("SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK") and via.endswith(";rport")
        assert len(via) == len("SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK;rport") + 16
    assert invite.header("Contact") == "<sip:alice@127.0.0.1:5061>"
    (ok,) = [m for m in sent(net, "200") if m.cseq_method == "INVITE"]
    assert ok.header("Contact") == "<sip:bob@127.0.0.2:5062>"
    assert net.alice.sessions.via().startswith("SIP/2.0/UDP 127.0.0.1:5061;branch=")
