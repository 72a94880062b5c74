"""Transactions (RFC 3261 §17) driven with a fake clock: retransmission schedules, timeouts,
absorption of retransmissions, CANCEL, ACK, reliable transports, matching, and the RFC 3665 flows
between two transaction layers wired in memory."""
from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import LocalProtocolError
from core.sip.addr import Peer
from core.sip.message import build_request, build_response, parse
from core.sip.transaction import (
    ACCEPTED,
    COMPLETED,
    CONFIRMED,
    PROCEEDING,
    TERMINATED,
    AckReceived,
    CancelReceived,
    RequestReceived,
    ResponseReceived,
    TimerConfig,
    TransactionLayer,
    TransactionTerminated,
    TransactionTimedOut,
    TransportError,
)

VECTORS = Path(__file__).resolve().parents[1].parent / "shared" / "vectors"

ALICE = Peer("udp", "127.0.0.1", 5061)  # the UAC's address
BOB = Peer("udp", "127.0.0.2", 5062)  # the UAS's address


def request(method: str, *, branch: str = "z9hG4bKbranch1", cseq: int = 1, cseq_method: str | None = None,
            sent_by: str = "127.0.0.1:5061", transport: str = "UDP", rport: bool = False,
            to_tag: str | None = None, uri: str = "sip:bob@127.0.0.2:5062", body: bytes = b"") -> bytes:
    via = f"SIP/2.0/{transport} {sent_by};branch={branch}" + (";rport" if rport else "")
    to = "<sip:bob@127.0.0.2>" + (f";tag={to_tag}" if to_tag else "")
    headers = [("Via", via), ("Max-Forwards", "70"), ("From", "<sip:alice@127.0.0.1>;tag=a1"),
               ("To", to), ("Call-ID", "call-1@127.0.0.1"), ("CSeq", f"{cseq} {cseq_method or method}"),
               ("Contact", "<sip:alice@127.0.0.1:5061>")]
    return build_request(method, uri, headers, body)


def events(layer: TransactionLayer) -> list:
    out = []
    while (event := layer.next_event()) is not None:
        out.append(event)
    return out


def first_lines(datagrams) -> list[str]:
    return [data.split(b"\r\n", 1)[0].decode() for data, _ in datagrams]


def run_timers(layer: TransactionLayer, until: float) -> list[tuple[float, bytes, Peer]]:
    """Fire every timer up to ``until``; returns (time, datagram, peer) for what was sent."""
    sent = []
    for _ in range(10_000):
        deadline = layer.get_timer()
        if deadline is None or deadline > until:
            break
        layer.handle_timer(deadline)
        sent += [(deadline, data, peer) for data, peer in layer.datagrams_to_send()]
    return sent


def client_send(layer, data: bytes, peer: Peer = BOB, now: float = 0.0):
    return layer.send_request(data, parse(data), peer, now)


def server_receive(layer, data: bytes, peer: Peer = ALICE, now: float = 0.0) -> list:
    layer.receive(parse(data), peer, now)
    return events(layer)


# -- client retransmissions and timeouts ------------------------------------------------------------
def test_timer_a_doubles_from_t1_and_timer_b_times_out_after_64_t1():
    layer = TransactionLayer()
    tx = client_send(layer, request("INVITE"))
    assert first_lines(layer.datagrams_to_send()) == ["INVITE sip:bob@127.0.0.2:5062 SIP/2.0"]
    sent = run_timers(layer, 100.0)
    # RFC 3261 §17.1.1.2: retransmissions at T1, then each interval doubled: 0.5, 1.5, 3.5 ...
    assert [t for t, _, _ in sent] == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert all(data == tx.request and peer == BOB for _, data, peer in sent)
    evs = events(layer)
    assert [type(e) for e in evs] == [TransactionTimedOut, TransactionTerminated]
    assert tx.state == TERMINATED and len(layer) == 0


def test_timer_b_follows_a_configured_t1():
    layer = TransactionLayer(TimerConfig(t1=0.1))
    client_send(layer, request("INVITE"))
    layer.datagrams_to_send()
    run_timers(layer, 6.3)
    assert events(layer) == []
    run_timers(layer, 6.4)  # 64 * 0.1
    assert isinstance(events(layer)[0], TransactionTimedOut)


def test_timer_b_waits_behind_timer_a_and_comes_at_exactly_64_t1():
    layer = TransactionLayer()
    client_send(layer, request("INVITE"))
    layer.datagrams_to_send()
    # Timer B cannot fire before Timer A does: only A is on the wheel until its next interval
    # would reach past B (§17.1.1.2 timing unchanged).
    assert len(layer.wheel) == 1 and layer.get_timer() == 0.5
    run_timers(layer, 31.5)
    assert events(layer) == []
    assert layer.get_timer() == 32.0  # after the retransmission at 31.5: B, not A at 63.5
    run_timers(layer, 32.0)
    assert [type(e) for e in events(layer)] == [TransactionTimedOut, TransactionTerminated]
    assert len(layer.wheel) == 0


def test_a_provisional_leaves_no_timer_b_behind():
    layer = TransactionLayer()
    tx = client_send(layer, request("INVITE"))
    layer.receive(parse(build_response(parse(tx.request), 100)), BOB, 0.1)
    assert tx.state == PROCEEDING and len(layer.wheel) == 0 and layer.get_timer() is None


def test_timers_handled_late_retransmit_once_then_time_out_in_the_same_call():
    # One handle_timer long after every deadline: as when both timers sat on the wheel, the
    # retransmission timer fires (one retransmission), then the timeout.
    for method, final in (("INVITE", None), ("OPTIONS", None), ("INVITE", 486)):
        layer = TransactionLayer()
        if final is None:
            tx = client_send(layer, request(method))
        else:
            (event,) = server_receive(layer, request(method))
            tx = event.tx
            layer.send_response(tx, build_response(event.msg, final, to_tag="b1"), final, 0.0)
        layer.datagrams_to_send()
        events(layer)
        layer.handle_timer(40.0)
        assert len(layer.datagrams_to_send()) == 1, method
        assert [type(e) for e in events(layer)] == [TransactionTimedOut, TransactionTerminated]
        assert tx.state == TERMINATED and layer.get_timer() is None


def test_timer_f_comes_at_64_t1_when_timer_e_fired_late_just_before_it():
    layer = TransactionLayer()
    client_send(layer, request("OPTIONS"))
    layer.datagrams_to_send()
    layer.handle_timer(31.8)  # E is late; its next interval (T2) would end after F: F goes on the wheel
    assert len(layer.datagrams_to_send()) == 1 and events(layer) == []
    assert layer.get_timer() == 32.0
    layer.handle_timer(32.0)
    assert isinstance(events(layer)[0], TransactionTimedOut)


def test_timer_e_doubles_up_to_t2_and_timer_f_times_out():
    layer = TransactionLayer()
    client_send(layer, request("OPTIONS"))
    layer.datagrams_to_send()
    sent = run_timers(layer, 100.0)
    # §17.1.2.2: E doubles from T1 and is capped at T2 (4 s).
    assert [t for t, _, _ in sent] == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert isinstance(events(layer)[0], TransactionTimedOut)


def test_timer_e_is_t2_once_a_provisional_arrived():
    layer = TransactionLayer()
    tx = client_send(layer, request("OPTIONS"))
    layer.datagrams_to_send()
    layer.receive(parse(build_response(parse(tx.request), 100)), BOB, 0.2)
    assert tx.state == PROCEEDING
    sent = run_timers(layer, 13.0)
    assert [t for t, _, _ in sent] == [0.5, 4.5, 8.5, 12.5]


def test_a_final_response_stops_retransmissions_and_timer_k_ends_the_transaction():
    layer = TransactionLayer()
    tx = client_send(layer, request("OPTIONS"))
    layer.datagrams_to_send()
    ok = build_response(parse(tx.request), 200, to_tag="b1")
    layer.receive(parse(ok), BOB, 0.3)
    layer.receive(parse(ok), BOB, 0.4)  # a retransmission: absorbed in Completed
    evs = events(layer)
    assert [type(e) for e in evs] == [ResponseReceived]
    assert tx.state == COMPLETED
    assert run_timers(layer, 5.29) == []
    assert tx.state == COMPLETED
    assert run_timers(layer, 5.3) == []
    assert tx.state == TERMINATED  # Timer K = T4 = 5 s after the response
    assert isinstance(events(layer)[0], TransactionTerminated)


# -- client INVITE: ACK for non-2xx, 2xx in Accepted ------------------------------------------------
def test_non_2xx_final_is_acked_by_the_transaction_with_the_same_branch():
    layer = TransactionLayer()
    tx = client_send(layer, request("INVITE"))
    layer.datagrams_to_send()
    busy = build_response(parse(tx.request), 486, to_tag="b1")
    layer.receive(parse(busy), BOB, 0.1)
    (ack_bytes, peer), = layer.datagrams_to_send()
    ack = parse(ack_bytes)
    # §17.1.1.3: same Request-URI, branch, Call-ID, From; To from the response; CSeq number, ACK.
    assert (ack.method, ack.uri, peer) == ("ACK", "sip:bob@127.0.0.2:5062", BOB)
    assert ack.branch == "z9hG4bKbranch1" and ack.vias == [parse(tx.request).vias[0]]
    assert (ack.cseq, ack.cseq_method, ack.to_tag, ack.from_tag) == (1, "ACK", "b1", "a1")
    assert [type(e) for e in events(layer)] == [ResponseReceived]
    # A retransmitted 486 gets the ACK again and is not passed up (§17.1.1.2).
    layer.receive(parse(busy), BOB, 1.0)
    assert layer.datagrams_to_send() == [(ack_bytes, BOB)]
    assert events(layer) == []
    run_timers(layer, 32.1)  # Timer D: 32 s over UDP
    assert tx.state == TERMINATED


def test_each_2xx_is_passed_up_in_accepted_until_timer_m():
    layer = TransactionLayer()
    tx = client_send(layer, request("INVITE"))
    layer.datagrams_to_send()
    ok = build_response(parse(tx.request), 200, to_tag="b1")
    layer.receive(parse(ok), BOB, 0.1)
    layer.receive(parse(ok), BOB, 0.6)
    assert tx.state == ACCEPTED
    assert [type(e) for e in events(layer)] == [ResponseReceived, ResponseReceived]
    assert layer.datagrams_to_send() == []  # the ACK of a 2xx is the TU's (§13.2.2.4)
    run_timers(layer, 32.2)  # Timer M = 64*T1
    assert tx.state == TERMINATED
    events(layer)
    # After that a 2xx matches nothing and still goes up (§18.1.2), with no transaction.
    layer.receive(parse(ok), BOB, 40.0)
    (event,) = events(layer)
    assert isinstance(event, ResponseReceived) and event.tx is None


def test_client_matching_uses_branch_and_cseq_method():
    layer = TransactionLayer()
    invite = client_send(layer, request("INVITE"))
    cancel = client_send(layer, request("CANCEL", cseq_method="CANCEL"), now=1.0)
    layer.datagrams_to_send()
    layer.receive(parse(build_response(parse(cancel.request), 200, to_tag="b1")), BOB, 1.1)
    (event,) = events(layer)
    assert event.tx is cancel and invite.state != COMPLETED


def test_ack_cannot_be_sent_as_a_transaction_and_a_branch_needs_the_cookie():
    layer = TransactionLayer()
    with pytest.raises(LocalProtocolError):
        client_send(layer, request("ACK"))
    with pytest.raises(LocalProtocolError):
        client_send(layer, request("OPTIONS", branch="oldstyle"))


# -- server side: absorption, last response, Timer J ------------------------------------------------
def test_retransmitted_request_is_absorbed_then_answered_with_the_last_response():
    layer = TransactionLayer()
    options = request("OPTIONS")
    (event,) = server_receive(layer, options)
    assert isinstance(event, RequestReceived)
    # §17.2.2 Trying: a retransmission before any response is discarded.
    assert server_receive(layer, options, now=0.5) == []
    assert layer.datagrams_to_send() == []
    ok = build_response(event.msg, 200, to_tag="b1")
    layer.send_response(event.tx, ok, 200, 0.6)
    assert layer.datagrams_to_send() == [(ok, ALICE)]
    assert server_receive(layer, options, now=1.5) == []
    assert layer.datagrams_to_send() == [(ok, ALICE)]  # the same response again
    run_timers(layer, 0.6 + 32.0)  # Timer J = 64*T1
    assert [type(e) for e in events(layer)] == [TransactionTerminated]
    # Now the same request is new again.
    assert [type(e) for e in server_receive(layer, options, now=40.0)] == [RequestReceived]


def test_invite_gets_100_trying_and_retransmissions_get_the_latest_provisional():
    layer = TransactionLayer()
    invite = request("INVITE")
    (event,) = server_receive(layer, invite)
    assert first_lines(layer.datagrams_to_send()) == ["SIP/2.0 100 Trying"]
    assert server_receive(layer, invite, now=0.5) == []
    assert first_lines(layer.datagrams_to_send()) == ["SIP/2.0 100 Trying"]
    ringing = build_response(event.msg, 180, to_tag=event.tx.local_tag)
    layer.send_response(event.tx, ringing, 180, 1.0)
    layer.datagrams_to_send()
    server_receive(layer, invite, now=1.5)
    assert layer.datagrams_to_send() == [(ringing, ALICE)]


def test_timer_g_retransmits_the_final_response_until_the_ack():
    layer = TransactionLayer()
    (event,) = server_receive(layer, request("INVITE"))
    layer.datagrams_to_send()
    busy = build_response(event.msg, 486, to_tag=event.tx.local_tag)
    layer.send_response(event.tx, busy, 486, 0.0)
    layer.datagrams_to_send()
    sent = run_timers(layer, 12.0)
    # §17.2.1: G starts at T1 and doubles up to T2.
    assert [t for t, _, _ in sent] == [0.5, 1.5, 3.5, 7.5, 11.5]
    assert all(data == busy for _, data, _ in sent)
    ack = request("ACK", to_tag=event.tx.local_tag)
    assert server_receive(layer, ack, now=12.0) == []  # absorbed: the ACK of a non-2xx
    assert event.tx.state == CONFIRMED
    assert server_receive(layer, ack, now=12.5) == []
    assert run_timers(layer, 16.9) == []
    assert event.tx.state == CONFIRMED
    run_timers(layer, 17.0)  # Timer I = T4
    assert event.tx.state == TERMINATED


def test_timer_h_reports_a_missing_ack():
    layer = TransactionLayer()
    (event,) = server_receive(layer, request("INVITE"))
    layer.send_response(event.tx, build_response(event.msg, 603, to_tag="b1"), 603, 0.0)
    run_timers(layer, 32.0)
    assert [type(e) for e in events(layer)] == [TransactionTimedOut, TransactionTerminated]


def test_ack_of_a_2xx_goes_up_and_invite_retransmissions_are_absorbed_in_accepted():
    layer = TransactionLayer()
    invite = request("INVITE")
    (event,) = server_receive(layer, invite)
    layer.send_response(event.tx, build_response(event.msg, 200, to_tag="b1"), 200, 0.1)
    layer.datagrams_to_send()
    assert event.tx.state == ACCEPTED
    assert server_receive(layer, invite, now=0.5) == []
    assert layer.datagrams_to_send() == []  # RFC 6026: the TU retransmits its 2xx, not us
    ack = request("ACK", branch="z9hG4bKnewbranch", to_tag="b1")
    (ack_event,) = server_receive(layer, ack, now=0.6)
    assert isinstance(ack_event, AckReceived) and ack_event.peer == ALICE
    run_timers(layer, 32.2)  # Timer L
    assert event.tx.state == TERMINATED


def test_a_second_final_response_is_a_local_protocol_error():
    layer = TransactionLayer()
    (event,) = server_receive(layer, request("OPTIONS"))
    layer.send_response(event.tx, build_response(event.msg, 200, to_tag="b1"), 200, 0.0)
    with pytest.raises(LocalProtocolError):
        layer.send_response(event.tx, build_response(event.msg, 500, to_tag="b1"), 500, 0.1)


def test_server_matching_uses_sent_by_as_well_as_branch():
    layer = TransactionLayer()
    server_receive(layer, request("OPTIONS"))
    other = request("OPTIONS", sent_by="127.0.0.9:5070")  # same branch, another sender
    assert [type(e) for e in server_receive(layer, other, Peer("udp", "127.0.0.9", 5070))] == [RequestReceived]
    assert len(layer) == 2


def test_rfc2543_request_without_branch_cookie_is_matched_by_its_fields():
    path = VECTORS / "sip" / "rfc4475" / "valid" / "inv2543.sip"
    if not path.exists():
        pytest.skip(f"SIP vectors not found at {path}")
    data = path.read_bytes()
    layer = TransactionLayer()
    gateway = Peer("udp", "127.0.0.5", 5060)
    (event,) = server_receive(layer, data, gateway)
    assert isinstance(event, RequestReceived) and event.msg.branch is None
    layer.datagrams_to_send()
    assert server_receive(layer, data, gateway, now=0.5) == []  # matched by RFC 2543 rules
    assert first_lines(layer.datagrams_to_send()) == ["SIP/2.0 100 Trying"]
    busy = build_response(event.msg, 486, to_tag="b9")
    layer.send_response(event.tx, busy, 486, 1.0)
    # The RFC 2543 ACK: same Request-URI, From, Call-ID, CSeq number and top Via (§17.2.3).
    msg = event.msg
    ack = build_request("ACK", msg.uri, [("Via", msg.vias[0]), ("From", msg.from_),
                                          ("To", f"{msg.to};tag=b9"), ("Call-ID", msg.call_id),
                                          ("CSeq", f"{msg.cseq} ACK")])
    assert server_receive(layer, ack, gateway, now=1.1) == []
    assert event.tx.state == CONFIRMED


# -- CANCEL (§9.2) ----------------------------------------------------------------------------------
def test_cancel_is_answered_200_and_reported_then_the_invite_gets_487():
    layer = TransactionLayer()
    (inv,) = server_receive(layer, request("INVITE"))
    layer.datagrams_to_send()
    (event,) = server_receive(layer, request("CANCEL"), now=2.0)
    assert isinstance(event, CancelReceived) and event.invite_tx is inv.tx
    (ok, peer), = layer.datagrams_to_send()
    ok = parse(ok)
    assert (ok.status, ok.cseq_method, peer) == (200, "CANCEL", ALICE)
    assert ok.to_tag == inv.tx.local_tag  # §9.2: the same tag as the INVITE's responses
    # A retransmitted CANCEL gets the 200 again and no second event.
    assert server_receive(layer, request("CANCEL"), now=2.5) == []
    assert first_lines(layer.datagrams_to_send()) == ["SIP/2.0 200 OK"]
    terminated = build_response(inv.msg, 487, to_tag=inv.tx.local_tag)
    layer.send_response(inv.tx, terminated, 487, 2.1)
    assert layer.datagrams_to_send() == [(terminated, ALICE)]
    assert server_receive(layer, request("ACK", to_tag=inv.tx.local_tag), now=2.2) == []
    assert inv.tx.state == CONFIRMED


def test_cancel_matching_nothing_gets_481():
    layer = TransactionLayer()
    assert server_receive(layer, request("CANCEL")) == []
    assert first_lines(layer.datagrams_to_send()) == ["SIP/2.0 481 Call/Transaction Does Not Exist"]


def test_cancel_after_the_final_response_is_answered_but_not_reported():
    layer = TransactionLayer()
    (inv,) = server_receive(layer, request("INVITE"))
    layer.send_response(inv.tx, build_response(inv.msg, 200, to_tag="b1"), 200, 0.5)
    layer.datagrams_to_send()
    assert server_receive(layer, request("CANCEL"), now=1.0) == []
    assert first_lines(layer.datagrams_to_send()) == ["SIP/2.0 200 OK"]


# -- reliable transports ----------------------------------------------------------------------------
def test_no_retransmissions_over_tcp_but_timer_b_still_runs():
    layer = TransactionLayer()
    tcp = Peer("tcp", "127.0.0.2", 5062)
    tx = client_send(layer, request("INVITE", transport="TCP"), tcp)
    layer.datagrams_to_send()
    assert run_timers(layer, 31.9) == []
    run_timers(layer, 32.0)
    assert tx.state == TERMINATED
    assert isinstance(events(layer)[0], TransactionTimedOut)


def test_zero_timers_over_tcp_end_transactions_at_once():
    layer = TransactionLayer()
    tcp_alice = Peer("tcp", "127.0.0.1", 40001)
    (event,) = server_receive(layer, request("OPTIONS", transport="TCP"), tcp_alice)
    layer.send_response(event.tx, build_response(event.msg, 200, to_tag="b1"), 200, 0.0)
    assert event.tx.state == TERMINATED  # Timer J = 0
    assert layer.datagrams_to_send()[0][1] == tcp_alice  # the same connection
    (inv,) = [e for e in server_receive(layer, request("INVITE", branch="z9hG4bKi2", transport="TCP"),
                                        tcp_alice) if isinstance(e, RequestReceived)]
    layer.send_response(inv.tx, build_response(inv.msg, 486, to_tag="b1"), 486, 0.0)
    layer.datagrams_to_send()
    assert run_timers(layer, 10.0) == []  # no Timer G
    server_receive(layer, request("ACK", branch="z9hG4bKi2", transport="TCP", to_tag="b1"), tcp_alice, 1.0)
    assert inv.tx.state == TERMINATED  # Timer I = 0


def test_transport_error_fails_the_transactions_to_that_peer():
    layer = TransactionLayer()
    tx = client_send(layer, request("INVITE"))
    layer.transport_error(BOB, 0.1)
    assert [type(e) for e in events(layer)] == [TransportError, TransactionTerminated]
    assert tx.state == TERMINATED


# -- where responses go, and the Via they carry (§18.2, RFC 3581) -----------------------------------
def test_response_goes_to_the_source_port_and_via_gets_received_and_rport():
    layer = TransactionLayer()
    nat = Peer("udp", "127.0.0.3", 40000)
    (event,) = server_receive(layer, request("OPTIONS", sent_by="192.0.2.1:5070", rport=True), nat)
    layer.send_response(event.tx, build_response(event.msg, 200, to_tag="b1"), 200, 0.0)
    (data, peer), = layer.datagrams_to_send()
    assert peer == nat
    via = parse(data).top_via
    assert via.params["received"] == "127.0.0.3" and via.params["rport"] == "40000"
    assert (via.host, via.port, via.params["branch"]) == ("192.0.2.1", 5070, "z9hG4bKbranch1")


def test_without_rport_the_response_goes_to_the_via_port_of_the_source_address():
    layer = TransactionLayer()
    (event,) = server_receive(layer, request("OPTIONS", sent_by="gw.example.com"),
                              Peer("udp", "127.0.0.3", 40000))
    layer.send_response(event.tx, build_response(event.msg, 200, to_tag="b1"), 200, 0.0)
    (data, peer), = layer.datagrams_to_send()
    assert peer == Peer("udp", "127.0.0.3", 5060)  # received address, default port
    via = parse(data).top_via
    assert via.params["received"] == "127.0.0.3" and "rport" not in via.params


def test_a_via_that_matches_the_source_is_left_as_it_is():
    layer = TransactionLayer()
    (event,) = server_receive(layer, request("OPTIONS"))
    ok = build_response(event.msg, 200, to_tag="b1")
    layer.send_response(event.tx, ok, 200, 0.0)
    assert layer.datagrams_to_send() == [(ok, ALICE)]


# -- the bounded table ------------------------------------------------------------------------------
def test_over_max_transactions_a_new_request_gets_503_and_no_state():
    layer = TransactionLayer(max_transactions=2)
    server_receive(layer, request("OPTIONS", branch="z9hG4bK1"))
    server_receive(layer, request("OPTIONS", branch="z9hG4bK2"))
    layer.datagrams_to_send()
    assert server_receive(layer, request("OPTIONS", branch="z9hG4bK3")) == []
    (data, peer), = layer.datagrams_to_send()
    reply = parse(data)
    assert reply.status == 503 and reply.header("Retry-After") and peer == ALICE
    assert len(layer) == 2 and layer.overloaded == 1


def test_while_shedding_a_new_call_gets_503_and_the_calls_admitted_go_on():
    layer = TransactionLayer()
    server_receive(layer, request("INVITE", branch="z9hG4bKold"))  # admitted before the node fell behind
    layer.datagrams_to_send()
    layer.shedding = True
    assert server_receive(layer, request("INVITE", branch="z9hG4bKnew")) == []
    (data, peer), = layer.datagrams_to_send()
    reply = parse(data)
    assert reply.status == 503 and reply.header("Retry-After") == "5" and reply.to_tag and peer == ALICE
    assert len(layer) == 1 and layer.shed == 1 and layer.overloaded == 0
    # In the calls already up: a re-INVITE, a BYE and an ACK are taken as always.
    reinvite = server_receive(layer, request("INVITE", branch="z9hG4bKre", cseq=2, to_tag="b1"))
    bye = server_receive(layer, request("BYE", branch="z9hG4bKbye", cseq=3, to_tag="b1"))
    ack = server_receive(layer, request("ACK", branch="z9hG4bKack", to_tag="b1"))
    assert [type(e).__name__ for e in (*reinvite, *bye, *ack)] == ["RequestReceived", "RequestReceived", "AckReceived"]
    assert layer.shed == 1 and len(layer) == 3
    layer.shedding = False  # caught up: new calls are taken again
    assert [type(e).__name__ for e in server_receive(layer, request("INVITE", branch="z9hG4bKlater"))] == [
        "RequestReceived"]


# -- RFC 3665 flows between two transaction layers --------------------------------------------------
class Wire:
    """Two transaction layers joined in memory; every datagram moved is noted as the RFC's
    call flows draw it ("INVITE →", "← 180")."""

    def __init__(self):
        self.uac = TransactionLayer()
        self.uas = TransactionLayer()
        self.trace: list[str] = []

    def flush(self, now: float, drop=lambda line: False) -> None:
        for _ in range(100):
            moved = False
            for src, dst, addr, arrow in ((self.uac, self.uas, ALICE, "→"), (self.uas, self.uac, BOB, "←")):
                for data, _peer in src.datagrams_to_send():
                    moved = True
                    line = data.split(b"\r\n", 1)[0].decode()
                    label = line.split()[0] if arrow == "→" else line.split()[1]
                    if drop(label):
                        continue
                    self.trace.append(f"{label} {arrow}" if arrow == "→" else f"{arrow} {label}")
                    dst.receive(parse(data), addr, now)
            if not moved:
                return


def test_rfc3665_2_1_registration_with_a_challenge():
    wire = Wire()
    register = request("REGISTER", uri="sip:127.0.0.2", branch="z9hG4bKr1")
    client_send(wire.uac, register)
    wire.flush(0.0)
    (req,) = events(wire.uas)
    wire.uas.send_response(req.tx, build_response(req.msg, 401, to_tag="r1",
                                                  headers=[("WWW-Authenticate", 'Digest realm="x", nonce="n"')]),
                           401, 0.01)
    wire.flush(0.01)
    assert [e.msg.status for e in events(wire.uac) if isinstance(e, ResponseReceived)] == [401]
    client_send(wire.uac, request("REGISTER", uri="sip:127.0.0.2", branch="z9hG4bKr2", cseq=2), now=0.02)
    wire.flush(0.02)
    (req,) = events(wire.uas)
    wire.uas.send_response(req.tx, build_response(req.msg, 200, to_tag="r2"), 200, 0.03)
    wire.flush(0.03)
    assert [e.msg.status for e in events(wire.uac) if isinstance(e, ResponseReceived)] == [200]
    assert wire.trace == ["REGISTER →", "← 401", "REGISTER →", "← 200"]


def test_rfc3665_3_1_successful_session_with_a_lost_200():
    wire = Wire()
    tx = client_send(wire.uac, request("INVITE"))
    wire.flush(0.0)
    (inv,) = events(wire.uas)
    wire.uas.send_response(inv.tx, build_response(inv.msg, 180, to_tag="b1"), 180, 0.1)
    wire.flush(0.1)
    wire.uas.send_response(inv.tx, build_response(inv.msg, 200, to_tag="b1"), 200, 2.0)
    wire.flush(2.0, drop=lambda label: label == "200")  # the 200 is lost once
    assert tx.state == PROCEEDING  # no retransmission of the INVITE after the 180
    assert run_timers(wire.uac, 3.0) == []
    wire.uas.send_response(inv.tx, build_response(inv.msg, 200, to_tag="b1"), 200, 2.5)  # TU resends
    wire.flush(2.5)
    statuses = [e.msg.status for e in events(wire.uac) if isinstance(e, ResponseReceived)]
    assert statuses == [100, 180, 200]
    ack = request("ACK", branch="z9hG4bKack1", to_tag="b1")
    wire.uac.send_stateless(ack, BOB)
    wire.flush(2.6)
    assert [type(e) for e in events(wire.uas)] == [AckReceived]
    assert wire.trace == ["INVITE →", "← 100", "← 180", "← 200", "ACK →"]


def test_rfc3665_3_4_busy():
    wire = Wire()
    tx = client_send(wire.uac, request("INVITE"))
    wire.flush(0.0)
    (inv,) = events(wire.uas)
    wire.uas.send_response(inv.tx, build_response(inv.msg, 486, to_tag="b1"), 486, 0.1)
    wire.flush(0.1)
    assert wire.trace == ["INVITE →", "← 100", "← 486", "ACK →"]
    assert (tx.state, inv.tx.state) == (COMPLETED, CONFIRMED)
    assert [e.msg.status for e in events(wire.uac) if isinstance(e, ResponseReceived)] == [100, 486]
    assert events(wire.uas) == []  # the ACK of the 486 stayed in the transaction


def test_rfc3665_3_8_unsuccessful_no_answer_with_cancel():
    wire = Wire()
    invite = client_send(wire.uac, request("INVITE"))
    wire.flush(0.0)
    (inv,) = events(wire.uas)
    wire.uas.send_response(inv.tx, build_response(inv.msg, 180, to_tag="b1"), 180, 0.1)
    wire.flush(0.1)
    client_send(wire.uac, request("CANCEL"), now=10.0)
    wire.flush(10.0)
    (cancel,) = events(wire.uas)
    assert isinstance(cancel, CancelReceived)
    wire.uas.send_response(inv.tx, build_response(inv.msg, 487, to_tag="b1"), 487, 10.1)
    wire.flush(10.1)
    assert wire.trace == ["INVITE →", "← 100", "← 180", "CANCEL →", "← 200", "← 487", "ACK →"]
    assert invite.state == COMPLETED and inv.tx.state == CONFIRMED


def test_invite_that_never_answers_its_cancel_is_given_up_after_64_t1():
    layer = TransactionLayer()
    invite = client_send(layer, request("INVITE"))
    layer.receive(parse(build_response(parse(invite.request), 180, to_tag="b1")), BOB, 0.1)
    client_send(layer, request("CANCEL"), now=5.0)
    layer.receive(parse(build_response(parse(request("CANCEL")), 200, to_tag="b1")), BOB, 5.1)
    events(layer)
    run_timers(layer, 36.9)
    assert invite.state == PROCEEDING  # §9.1: the 487 may still come
    run_timers(layer, 37.0)  # 5.0 + 64*T1
    assert invite.state == TERMINATED
    assert [e.tx for e in events(layer) if isinstance(e, TransactionTimedOut)] == [invite]


@pytest.mark.parametrize("via,expected", [
    ("SIP/2.0/UDP 192.0.2.1:5070;rport;branch=z9hG4bKx",
     {"rport": "40000", "received": "127.0.0.3", "branch": "z9hG4bKx"}),
    ("SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bKx;received=192.0.2.9;rport",
     {"rport": "40000", "received": "127.0.0.3", "branch": "z9hG4bKx"}),
    ("SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bKx;rport=5070",  # rport with a value: not a request
     {"rport": "5070", "received": "127.0.0.3", "branch": "z9hG4bKx"}),
])
def test_received_and_rport_wherever_the_parameters_stand(via, expected):
    layer = TransactionLayer()
    data = request("OPTIONS").replace(b"SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bKbranch1", via.encode())
    (event,) = server_receive(layer, data, Peer("udp", "127.0.0.3", 40000))
    layer.send_response(event.tx, build_response(event.msg, 200, to_tag="b1"), 200, 0.0)
    (out, _), = layer.datagrams_to_send()
    reply = parse(out)
    assert reply.top_via.params == expected
    assert reply.vias[1:] == event.msg.vias[1:]
