"""Calls the switch answers itself, in memory with a fake clock (the harness of test_b2bua.py): IVR
menus driven by RFC 4733 digits (as the media plane reports them) and SIP INFO, queues served by the
ACD ringing agents' registered phones, and the agents' feature codes. What is checked is what the
caller and the agents see on the wire, what the media plane is told, and the call's summary and the
queue log."""
from __future__ import annotations

import pytest

from core.acd import AgentStatusChanged
from core.acd.log import QueueLogEntry, recompute
from core.call import CallSummary, MediaBridge
from core.call.b2bua import MediaPlay, MediaStop
from core.cdr.record import QueueOutcome
from core.sip.addr import Peer
from core.sip.message import parse
from core.sip.session import CONFIRMED, TERMINATED, CallEnded, IncomingCall, ReinviteReceived
from tests.test_b2bua import ANSWER, CONFIG, OFFER, SWITCH, UA, Net, register

DAVE = Peer("udp", "127.0.4.4", 5064)  # registers as user 1002
CAROL_ANSWER = ANSWER.replace(b"127.0.2.2", b"127.0.3.3")  # her phone's answer, from her own address

HOSTED = CONFIG.replace('''[[ivr]]
name = "main"
prompt = "beep"
''', "") + '''
[[users]]
name = "1002"
password = "secret1002"
[[ivr]]
name = "main"
prompt = "tone:440/1.0"
choices = { "1" = "queue:sales", "2" = "user:1001", "9" = "ivr:second", "0" = "hangup" }
timeout = 4.0
retries = 1
invalid_prompt = "busy"
on_timeout = "hangup"
[[ivr]]
name = "second"
prompt = "beep"
max_digits = 3
choices = { "123" = "user:1001" }
[[agents]]
id = "carol"
phones = ["1001"]
status = "available"
max_no_answer = 2
no_answer_delay = 10.0
[[agents]]
id = "dave"
phones = ["1002"]
status = "available"
max_no_answer = 2
no_answer_delay = 10.0
[[queues]]
name = "sales"
strategy = "linear"
agents = [{ agent = "carol", position = 1 }, { agent = "dave", position = 2 }]
ring_timeout = 15.0
wrap_up = 30.0
max_wait = 120.0
music = "ringback"
exit_key = "0"
exit_target = "user:1001"
vip_callers = ["vip"]
[[routes]]
name = "queue"
match = "exact"
pattern = "800"
target = "queue:sales"
'''


class HostedNet(Net):
    def __init__(self, tmp_path, text: str = HOSTED):
        super().__init__(tmp_path, text)
        self.dave = UA(DAVE, "dave")
        self.nodes[DAVE] = self.dave

    def call_id(self, ua_session) -> str:
        return ua_session.call_id

    def plays(self) -> list[str]:
        return [e.prompt for e in self.switch.take(MediaPlay)]


@pytest.fixture
def net(tmp_path):
    n = HostedNet(tmp_path)
    yield n
    n.close()


def log(net) -> list[QueueLogEntry]:
    return [e for e in net.switch.events if isinstance(e, QueueLogEntry)]


def digit(net, session, d: str, at: float) -> None:
    net.switch.calls.dtmf(session.call_id, d, at)
    net.flush(at)


def send_info(net, ua: UA, session, body: bytes, kind: str = "application/dtmf-relay") -> str:
    data = session.dialog.create_request("INFO", ua.sessions.via(), headers=[("Content-Type", kind)], body=body)
    ua.transactions.send_request(data, parse(data), SWITCH, net.now)
    net.flush()
    (status,) = [label for label, d in net.seen(ua.name, "switch") if label.isdigit() and parse(d).cseq_method == "INFO"][-1:]
    return status


# -- IVR ---------------------------------------------------------------------------------------------
def test_ivr_answers_plays_its_prompt_and_routes_an_rfc4733_digit_to_a_user(net):
    register(net, net.carol, "1001", "secret1001")
    caller = net.dial("7")
    # The switch answers itself, anchored on its own address, with one G.711 codec and telephone-event.
    assert caller.state == CONFIRMED
    (ok,) = [parse(d) for label, d in net.seen("alice", "switch") if label == "200"]
    assert b"c=IN IP4 127.0.0.5" in ok.body and b"RTP/AVP 0 101" in ok.body
    (relay,) = net.switch.take(MediaBridge)
    assert relay.leg_a_remote == ("127.0.1.1", 40000) and relay.leg_b_remote is None
    assert (relay.codec, relay.dtmf_pt) == ("PCMU", 101)
    assert net.plays() == ["tone:440/1.0"]
    net.switch.calls.playback_done(caller.call_id, "a", net.now + 1)
    net.switch.calls.dtmf(caller.call_id, "2", net.now + 2)
    net.flush()
    # The choice "2" rings user 1001's phone with the switch's offer; the caller hears ringback.
    callee = net.incoming(net.carol)
    assert net.plays() == ["ringback"]
    callee.answer(net.now, CAROL_ANSWER)
    net.flush()
    assert net.switch.take(MediaStop)
    (bridge,) = net.switch.take(MediaBridge)
    assert bridge.leg_b_remote == ("127.0.3.3", 50000) and bridge.leg_a_port == relay.leg_a_port
    callee.bye(net.now)
    net.flush()
    assert caller.state == TERMINATED
    (s,) = net.switch.take(CallSummary)
    assert (s.dtmf, s.user, s.disposition, s.hangup_by, s.hosted) == ("2", "1001", "answered", "callee", True)


def test_ivr_takes_a_digit_from_sip_info(net):
    caller = net.dial("7")
    net.switch.calls.playback_done(caller.call_id, "a", net.now)
    assert send_info(net, net.alice, caller, b"Signal=0\r\nDuration=160\r\n") == "200"
    # "0" is hangup: the switch ends the call.
    assert caller.state == TERMINATED
    assert net.trace("alice", "switch")[-2:] == ["← BYE", "200 →"]
    (s,) = net.switch.take(CallSummary)
    assert (s.dtmf, s.hangup_by) == ("0", "switch")


def test_ivr_info_with_a_bad_digit_gets_400(net):
    caller = net.dial("7")
    assert send_info(net, net.alice, caller, b"Signal=x\r\n") == "400"
    assert send_info(net, net.alice, caller, b"7", kind="application/dtmf") == "200"


def test_ivr_barge_in_stops_the_prompt_and_a_wrong_choice_replays_it_then_times_out(net):
    caller = net.dial("7")
    net.plays()
    digit(net, caller, "5", net.now + 0.3)  # during the prompt: barge-in
    assert net.switch.take(MediaStop)
    # "5" is no choice: the invalid prompt, then the menu's prompt again (retries = 1).
    assert net.plays() == ["busy"]
    net.switch.calls.playback_done(caller.call_id, "a", net.now + 1)
    net.flush(net.now + 1)
    assert net.plays() == ["tone:440/1.0"]
    net.switch.calls.playback_done(caller.call_id, "a", net.now + 1)
    net.flush(net.now + 1)
    # No digit within the timeout and no retry left: on_timeout ("hangup").
    net.run_until(net.now + 3.9)
    assert caller.state == CONFIRMED
    net.run_until(net.now + 0.2)
    assert caller.state == TERMINATED


def test_ivr_goes_to_a_second_menu_that_collects_three_digits(net):
    register(net, net.carol, "1001", "secret1001")
    caller = net.dial("7")
    digit(net, caller, "9", net.now)
    assert net.plays() == ["tone:440/1.0", "beep"]
    for d in "123":
        digit(net, caller, d, net.now + 0.5)
    assert net.incoming(net.carol).state != TERMINATED


# -- queues ------------------------------------------------------------------------------------------
def queued(net, number: str = "800", caller: UA | None = None):
    register(net, net.carol, "1001", "secret1001")
    register(net, net.dave, "1002", "secret1002")
    return net.dial(number, caller=caller)


def carol_answers(net, after: float):
    """Carol's phone (rung by the queue) answers ``after`` seconds from now; her session."""
    agent = net.incoming(net.carol)
    agent.answer(net.now + after, CAROL_ANSWER)
    net.flush(net.now + after)
    return agent


def test_queue_rings_the_first_agent_and_bridges_the_answer(net):
    caller = queued(net)
    assert caller.state == CONFIRMED  # the switch answered: music while waiting
    assert "ringback" in net.plays()
    carol_answers(net, 3)  # linear: carol first
    assert net.dave.events == []  # and only carol was rung
    (bridge,) = [b for b in net.switch.take(MediaBridge) if b.leg_b_remote is not None]
    assert bridge.leg_b_remote == ("127.0.3.3", 50000)
    stats = net.switch.calls.acd.queue_stats("sales", net.now)
    assert (stats.answered, stats.waiting) == (1, 0)
    caller.bye(net.now + 60)
    net.flush(net.now + 60)
    (s,) = net.switch.take(CallSummary)
    assert s.agent == "carol"
    (seg,) = s.segments
    assert (seg.queue, seg.outcome, seg.answered_by, seg.agents_offered) == ("sales", QueueOutcome.ANSWERED, "carol", ("carol",))
    assert seg.left - seg.joined == pytest.approx(3.0)
    kinds = [(e.kind, e.agent) for e in log(net) if e.kind not in ("status", "state")]
    assert kinds == [("join", ""), ("offer", "carol"), ("answer", "carol"), ("talk_end", "carol")]
    # Wrap-up: carol is not offered the next caller for 30 s; dave is.
    net.dial("800", caller=net.bob)
    assert net.incoming(net.dave)
    assert not net.carol.take(IncomingCall)


def test_agent_who_does_not_answer_is_skipped_and_paused_after_two_misses(net):
    caller = queued(net)
    net.incoming(net.carol).reject(net.now, 486)
    net.flush()
    net.incoming(net.dave).reject(net.now, 603)  # the next agent
    net.flush()
    # Both rest 10 s after a miss; then carol again, who lets it ring out: the ACD's ring timeout
    # CANCELs her phone, her second miss in a row puts her on break.
    net.run_until(net.now + 10.5)
    net.incoming(net.carol)
    net.run_until(net.now + 15.5)
    assert net.trace("switch", "carol")[-3:] == ["CANCEL →", "← 200", "← 487"] or "CANCEL →" in net.trace("switch", "carol")
    status = net.switch.calls.acd.agent_stats("carol", net.now)
    assert (status.status, status.reason, status.missed_offers) == ("on_break", "no_answer", 2)
    assert any(e.kind == "status" and e.agent == "carol" and e.detail == "no_answer" for e in log(net))
    assert caller.state == CONFIRMED


def test_caller_who_hangs_up_while_waiting_is_an_abandon_with_wait_and_position(net):
    caller = queued(net)
    agent = net.incoming(net.carol)
    caller.bye(net.now + 7)
    net.flush(net.now + 7)
    assert agent.state == TERMINATED  # the ringing agent got a CANCEL
    (s,) = net.switch.take(CallSummary)
    assert (s.disposition, s.hangup_by) == ("cancelled", "caller")
    assert s.segments[0].outcome == QueueOutcome.ABANDONED
    (abandon,) = [e for e in log(net) if e.kind == "abandon"]
    assert (abandon.wait, abandon.position) == (7.0, 1)
    stats = net.switch.calls.acd.queue_stats("sales", net.now)
    assert stats.abandoned == 1
    counted = recompute(log(net), "sales", service_level=20.0, short_abandon=5.0)
    assert (counted.offered, counted.abandoned, counted.answered) == (stats.offered, stats.abandoned, stats.answered)


def log_out_everyone(net) -> None:
    register(net, net.carol, "1001", "secret1001")
    register(net, net.dave, "1002", "secret1002")
    for agent in ("carol", "dave"):
        net.switch.calls.acd.handle_event(AgentStatusChanged(agent, "logged_out"), net.now)


def test_exit_key_takes_the_caller_out_of_the_queue_to_its_target(net):
    log_out_everyone(net)
    caller = net.dial("800")
    assert caller.state == CONFIRMED and "INVITE" not in [label for label, _ in net.seen("carol")]
    digit(net, caller, "0", net.now + 4)
    assert net.incoming(net.carol)  # exit_target user:1001 rings, outside the queue
    (exit_,) = [e for e in log(net) if e.kind == "exit"]
    assert (exit_.reason, exit_.wait) == ("exit_key", 4.0)


def test_vip_caller_overtakes_a_waiting_caller(net):
    log_out_everyone(net)
    caller = net.dial("800")
    vip = UA(Peer("udp", "127.0.1.1", 5070), "vip")
    net.nodes[vip.addr] = vip
    net.dial("800", caller=vip)
    net.switch.calls.acd.handle_event(AgentStatusChanged("carol", "available"), net.now)
    net.switch.calls.process(net.now)
    net.flush()
    (invite,) = [parse(d) for label, d in net.seen("carol") if label == "INVITE"]
    assert invite.from_.startswith("<sip:vip@")
    assert caller.state == CONFIRMED


def test_queue_with_max_wait_sends_the_caller_to_its_exit(net):
    log_out_everyone(net)
    caller = net.dial("800")
    net.run_until(net.now + 121)
    assert caller.state == TERMINATED  # on_exit = "hangup"
    (s,) = net.switch.take(CallSummary)
    assert s.segments[0].outcome == QueueOutcome.TIMEOUT
    assert [e.reason for e in log(net) if e.kind == "exit"] == ["max_wait"]


def dial_as(net, ua: UA, user: str, number: str):
    """``ua`` calls ``number`` as the registered user ``user`` (its From)."""
    session = ua.sessions.invite(f"sip:{number}@127.0.0.5:5060", f"sip:{user}@{ua.addr.host}", net.now,
                                 body=OFFER.replace(b"127.0.1.1", ua.addr.host.encode()), peer=SWITCH)
    net.flush()
    return session


# -- feature codes -----------------------------------------------------------------------------------
def test_feature_codes_change_the_agents_status(net):
    register(net, net.carol, "1001", "secret1001")
    for code, status, reason in (("*62", "logged_out", ""), ("*632", "on_break", "lunch"), ("*61", "available", "")):
        session = dial_as(net, net.carol, "1001", code)
        assert session.state == CONFIRMED  # answered; a beep; then the switch hangs up
        assert "beep" in net.plays()
        net.switch.calls.playback_done(session.call_id, "a", net.now)
        net.flush()
        assert session.state == TERMINATED
        stats = net.switch.calls.acd.agent_stats("carol", net.now)
        assert (stats.status, stats.reason) == (status, reason)
    changes = [(e.reason, e.detail) for e in log(net) if e.kind == "status" and e.agent == "carol"]
    assert changes[-3:] == [("logged_out", ""), ("on_break", "lunch"), ("available", "")]


def test_an_agent_whose_phone_is_not_registered_is_never_offered(net):
    register(net, net.dave, "1002", "secret1002")
    net.dial("800")
    assert net.incoming(net.dave)  # carol (first in line) has no registered phone
    assert net.carol.events == [] and net.seen("carol") == []


def test_agent_on_a_direct_call_is_not_offered(net):
    register(net, net.carol, "1001", "secret1001")
    register(net, net.dave, "1002", "secret1002")
    direct = net.dial("1001")  # to an agent's phone
    net.incoming(net.carol).answer(net.now, CAROL_ANSWER)
    net.flush()
    assert direct.state == CONFIRMED
    net.dial("800", caller=net.bob)
    assert net.incoming(net.dave)
    assert not any(isinstance(e, CallEnded) for e in net.carol.events)


# -- transfer (RFC 3515, RFC 3891) ---------------------------------------------------------------------
def refer(net, ua: UA, session, refer_to: str) -> str:
    data = session.dialog.create_request("REFER", ua.sessions.via(), headers=[
        ("Refer-To", refer_to), ("Contact", f"<sip:{ua.name}@{ua.addr.host}:{ua.addr.port}>")])
    ua.transactions.send_request(data, parse(data), SWITCH, net.now)
    net.flush()
    (status,) = [label for label, d in net.seen(ua.name, "switch")
                 if label.isdigit() and parse(d).cseq_method == "REFER"][-1:]
    return status


def notifies(net, who: str) -> list[tuple[str, bytes]]:
    return [(parse(d).header("Subscription-State"), parse(d).body) for label, d in net.seen(who, "switch")
            if label == "NOTIFY"]


def test_blind_transfer_by_the_callee_connects_the_caller_to_the_new_party(net):
    register(net, net.carol, "1001", "secret1001")
    caller, callee = net.answered_call()  # alice → bob (trunk)
    net.switch.take(MediaBridge)
    assert refer(net, net.bob, callee, "<sip:1001@127.0.0.5>") == "202"
    assert notifies(net, "bob")[0][1] == b"SIP/2.0 100 Trying\r\n"
    target = net.incoming(net.carol)
    target.answer(net.now + 2, CAROL_ANSWER)
    net.flush(net.now + 2)
    state, body = notifies(net, "bob")[-1]
    assert body == b"SIP/2.0 200 OK\r\n" and state.startswith("terminated")
    assert callee.state == TERMINATED  # the transferor is out
    assert caller.state == CONFIRMED and target.state == CONFIRMED
    (bridge,) = net.switch.take(MediaBridge)
    assert bridge.leg_b_remote == ("127.0.3.3", 50000) and bridge.leg_a_remote == ("127.0.1.1", 40000)
    caller.bye(net.now + 5)
    net.flush(net.now + 5)
    assert target.state == TERMINATED
    (s,) = net.switch.take(CallSummary)
    assert s.transferred_to.startswith("sip:1001@127.0.3.3") and s.hangup_by == "caller"


def test_blind_transfer_to_a_busy_party_keeps_the_call(net):
    register(net, net.carol, "1001", "secret1001")
    caller, callee = net.answered_call()
    assert refer(net, net.bob, callee, "<sip:1001@127.0.0.5>") == "202"
    net.incoming(net.carol).reject(net.now, 486)
    net.flush()
    assert notifies(net, "bob")[-1][1] == b"SIP/2.0 486 Busy Here\r\n"
    assert caller.state == CONFIRMED and callee.state == CONFIRMED


def test_refer_to_a_number_without_a_route_is_reported_404(net):
    caller, callee = net.answered_call()
    assert refer(net, net.alice, caller, "<sip:5559999@127.0.0.5>") == "202"
    assert notifies(net, "alice")[-1][1] == b"SIP/2.0 404 Not Found\r\n"
    assert caller.state == CONFIRMED


def test_attended_transfer_joins_the_two_far_parties(net):
    register(net, net.carol, "1001", "secret1001")
    # Alice talks to Bob, then calls Carol (user 1001), then transfers Bob to Carol.
    first, bob_leg = net.answered_call()
    second = net.dial("1001")
    carol_leg = net.incoming(net.carol)
    carol_leg.answer(net.now, CAROL_ANSWER)
    net.flush()
    net.switch.take(MediaBridge)
    d = second.dialog
    replaces = f"{d.call_id}%3Bto-tag%3D{d.remote_tag}%3Bfrom-tag%3D{d.local_tag}"
    assert refer(net, net.alice, first, f"<sip:1001@127.0.0.5?Replaces={replaces}>") == "202"
    # Carol's leg is re-INVITEd onto the first call's relay, in Alice's place.
    assert net.trace("switch", "carol").count("INVITE →") == 2
    (reinvite,) = net.carol.take(ReinviteReceived)
    assert b"m=audio %d " % net.switch.calls.calls[first.call_id].a.port in reinvite.msg.body
    carol_leg.accept_reinvite(net.now, CAROL_ANSWER)
    net.flush()
    assert notifies(net, "alice")[-1][1] == b"SIP/2.0 200 OK\r\n"
    assert first.state == TERMINATED and second.state == TERMINATED  # both of Alice's legs hung up
    assert bob_leg.state == CONFIRMED and carol_leg.state == CONFIRMED
    bridges = net.switch.take(MediaBridge)
    assert bridges[-1].leg_a_remote == ("127.0.3.3", 50000) and bridges[-1].leg_b_remote == ("127.0.2.2", 50000)
    bob_leg.bye(net.now + 1)
    net.flush(net.now + 1)
    assert carol_leg.state == TERMINATED


# -- outbound digest to a trunk (RFC 3261 §22.2) ------------------------------------------------------
def test_trunk_challenge_is_answered_with_the_trunk_credentials(tmp_path):
    from core.sip.digest import compute_ha1, compute_response, parse_authorization

    text = HOSTED.replace('''address = "127.0.2.2:5062"
channels = 2''', '''address = "127.0.2.2:5062"
channels = 2
username = "switch"
password = "trunk-secret"''')
    net = Net(tmp_path, text)
    try:
        caller = net.dial("0301234")
        first = net.incoming(net.bob)
        first.reject(net.now, 407, headers=[
            ("Proxy-Authenticate", 'Digest realm="carrier", nonce="n0nce", qop="auth", algorithm=MD5, opaque="op"')])
        net.flush()
        second = net.incoming(net.bob)  # the INVITE again, with the answer
        invites = [parse(d) for label, d in net.seen("bob") if label == "INVITE"]
        assert len(invites) == 2 and invites[1].cseq == invites[0].cseq + 1
        assert invites[1].call_id == invites[0].call_id and invites[1].from_tag == invites[0].from_tag
        creds = parse_authorization(invites[1].header("Proxy-Authorization"))
        ha1 = compute_ha1("MD5", "switch", "carrier", "trunk-secret")
        assert creds.response == compute_response("MD5", ha1, "n0nce", "INVITE", creds.uri, "auth", creds.nc, creds.cnonce)
        assert (creds.username, creds.opaque) == ("switch", "op")
        second.answer(net.now, ANSWER)
        net.flush()
        assert caller.state == CONFIRMED
        # A second challenge that is not stale means the credentials are wrong: the caller gets 503.
        caller2 = net.dial("0301234", caller=net.carol)
        for _ in range(2):
            net.incoming(net.bob).reject(net.now, 401, headers=[("WWW-Authenticate", 'Digest realm="carrier", nonce="x"')])
            net.flush()
        assert net.bob.take(IncomingCall) == []
        assert caller2.state == TERMINATED
    finally:
        net.close()


# -- an INVITE without SDP (RFC 3261 §13.2.1, RFC 3264 §5: the offer in the 2xx, the answer in the ACK)
def test_invite_without_sdp_gets_the_offer_in_the_200_and_media_follows_the_ack(net):
    caller = net.alice.sessions.invite("sip:0301234@127.0.0.5:5060", "sip:alice@127.0.1.1", net.now,
                                       body=b"", peer=SWITCH)
    caller.ack_body = OFFER.replace(b"RTP/AVP 0 8 18 101", b"RTP/AVP 8 101")  # the answer, sent in the ACK
    net.flush()
    callee = net.incoming(net.bob)
    (invite_b,) = [parse(d) for label, d in net.seen("bob") if label == "INVITE"]
    assert b"m=audio" in invite_b.body and b"c=IN IP4 127.0.0.5" in invite_b.body  # the switch offers
    callee.answer(net.now, ANSWER)
    net.flush()
    (ok,) = [parse(d) for label, d in net.seen("alice", "switch") if label == "200"]
    assert b"RTP/AVP 8 101" in ok.body and b"c=IN IP4 127.0.0.5" in ok.body
    assert caller.state == CONFIRMED
    (bridge,) = net.switch.take(MediaBridge)
    assert bridge.leg_a_remote == ("127.0.1.1", 40000) and bridge.leg_b_remote == ("127.0.2.2", 50000)


def test_invite_without_sdp_into_an_ivr_is_answered_with_the_switchs_offer(net):
    caller = net.alice.sessions.invite("sip:7@127.0.0.5:5060", "sip:alice@127.0.1.1", net.now, body=b"", peer=SWITCH)
    caller.ack_body = OFFER.replace(b"RTP/AVP 0 8 18 101", b"RTP/AVP 0 101")
    net.flush()
    assert caller.state == CONFIRMED
    bridges = net.switch.take(MediaBridge)
    assert bridges[0].leg_a_remote is None and bridges[-1].leg_a_remote == ("127.0.1.1", 40000)
    assert net.plays() == ["tone:440/1.0"]


# -- announcements while queued ------------------------------------------------------------------------
def test_waiting_callers_hear_their_position_at_intervals_then_the_music_again(tmp_path):
    text = HOSTED.replace('music = "ringback"', 'music = "ringback"\nannounce_every = 30.0\n'
                          'announce = ["beep", "tone:{position}00/0.5", "tone:{minutes}000/0.5"]')
    net = HostedNet(tmp_path, text)
    try:
        log_out_everyone(net)
        first = net.dial("800")
        vip = UA(Peer("udp", "127.0.1.1", 5070), "vip")
        net.nodes[vip.addr] = vip
        second = net.dial("800", caller=vip)  # a VIP: ahead of the first caller
        net.plays()
        net.run_until(net.now + 30.5)
        plays = net.switch.take(MediaPlay)
        by_call = {}
        for p in plays:
            by_call.setdefault(p.call_id, []).append(p.prompt)
        # Each hears its own position: the VIP is first, the earlier caller second; wait: 1 minute.
        assert by_call[second.call_id] == ["beep"] and by_call[first.call_id] == ["beep"]
        for session, position in ((second, 1), (first, 2)):
            for prompt in (f"tone:{position}00/0.5", "tone:1000/0.5"):
                net.switch.calls.playback_done(session.call_id, "a", net.now)
                net.flush()
                assert [p.prompt for p in net.switch.take(MediaPlay)] == [prompt]
            net.switch.calls.playback_done(session.call_id, "a", net.now)
            net.flush()
            (music,) = net.switch.take(MediaPlay)
            assert (music.prompt, music.loop) == ("ringback", True)
    finally:
        net.close()


# -- outbound calls the switch places ------------------------------------------------------------------
def test_an_outbound_call_answered_by_the_contact_reaches_an_agent_through_the_queue(net):
    register(net, net.carol, "1001", "secret1001")
    register(net, net.dave, "1002", "secret1002")
    call_id = net.switch.calls.originate("+4930555", net.now, trunk="carrier", target="queue:sales",
                                         caller_id="+4930999", campaign_id="spring", contact_id="c42")
    net.flush()
    contact = net.incoming(net.bob)
    (invite,) = [parse(d) for label, d in net.seen("bob") if label == "INVITE"]
    assert invite.uri == "sip:+4930555@127.0.2.2:5062" and invite.from_.startswith("<sip:+4930999@")
    assert b"c=IN IP4 127.0.0.5" in invite.body
    contact.ring(net.now + 1)
    net.flush(net.now + 1)
    contact.answer(net.now + 6, ANSWER)
    net.flush(net.now + 6)
    carol_answers(net, 1)  # the queue's first agent
    bridge = [b for b in net.switch.take(MediaBridge) if b.leg_b_remote is not None][-1]
    assert bridge.leg_a_remote == ("127.0.2.2", 50000) and bridge.leg_b_remote == ("127.0.3.3", 50000)
    contact.bye(net.now + 30)
    net.flush(net.now + 30)
    (s,) = net.switch.take(CallSummary)
    assert (s.call_id, s.direction, s.campaign_id, s.contact_id, s.agent) == (call_id, "outbound", "spring", "c42", "carol")
    assert (s.ringing_at, s.answered_at, s.trunk, s.callee) == (1.0, 7.0, "carrier", "+4930555")


@pytest.mark.parametrize("status, disposition", [(486, "busy"), (480, "no answer"), (404, "rejected"), (503, "failed")])
def test_an_outbound_call_that_fails_is_summed_up_with_its_result(net, status, disposition):
    net.switch.calls.originate("+4930555", net.now, trunk="carrier", target="queue:sales")
    net.flush()
    net.incoming(net.bob).reject(net.now, status)
    net.flush()
    (s,) = net.switch.take(CallSummary)
    assert (s.disposition, s.leg_b_status or s.status, s.direction) == (disposition, status, "outbound")


def test_an_outbound_call_not_answered_in_its_ring_time_is_cancelled(net):
    net.switch.calls.originate("+4930555", net.now, trunk="carrier", target="hangup", ring_timeout=20.0)
    net.flush()
    contact = net.incoming(net.bob)
    contact.ring(net.now)
    net.flush()
    net.run_until(20.5)
    assert contact.state == TERMINATED and "CANCEL →" in net.trace("switch", "bob")
    (s,) = net.switch.take(CallSummary)
    assert s.disposition == "no answer" and s.ended_at == pytest.approx(20.0)


def test_a_preview_call_rings_the_agent_with_the_contact_then_dials_the_contact_once_sent(net):
    register(net, net.carol, "1001", "secret1001")
    register(net, net.dave, "1002", "secret1002")
    call_id = net.switch.calls.originate("+4930555", net.now, user="1001", target=None, caller_id="+4930999",
                                         display='Jane "JJ" Doe', agent="carol", campaign_id="spring",
                                         contact_id="c42")
    net.flush()
    # The agent's phone sees whom the call is for, before anyone is dialled.
    (invite,) = [parse(d) for label, d in net.seen("carol") if label == "INVITE"]
    assert invite.from_.startswith('"Jane \\"JJ\\" Doe" <sip:+4930555@')
    assert (invite.header("X-Campaign"), invite.header("X-Contact")) == ("spring", "c42")
    assert not net.seen("bob")
    agent = net.incoming(net.carol)
    agent.answer(net.now + 3, CAROL_ANSWER)
    net.flush(net.now + 3)
    assert not net.seen("bob"), "the contact is dialled only when the binding sends the call on"
    # While the agent is on it, the queue does not offer her a caller.
    net.dial("800", caller=net.bob)
    assert net.incoming(net.dave) and not [d for label, d in net.seen("carol") if label == "INVITE"][1:]
    assert net.switch.calls.send(call_id, "trunk:carrier/+4930555", net.now, ring_timeout=25.0)
    assert not net.switch.calls.send(call_id, "hangup", net.now)  # only once
    net.flush()
    (to_contact,) = [parse(d) for label, d in net.seen("bob") if label == "INVITE" and b"+4930555" in d]
    assert to_contact.uri == "sip:+4930555@127.0.2.2:5062" and to_contact.from_.startswith("<sip:+4930999@")
    assert to_contact.header("X-Contact") is None  # the carrier is not told the campaign's ids
    contact = net.incoming(net.bob)
    contact.answer(net.now + 5, ANSWER)
    net.flush(net.now + 5)
    contact.bye(net.now + 60)
    net.flush(net.now + 60)
    (s,) = [s for s in net.switch.take(CallSummary) if s.call_id == call_id]
    assert (s.direction, s.campaign_id, s.contact_id, s.callee, s.user) == ("outbound", "spring", "c42", "+4930555", "1001")
    assert (s.answered_at, s.leg_b_answered_at) == (3.0, 8.0)
    talk = [e for e in log(net) if e.kind == "talk_end" and e.agent == "carol"]
    assert [e.member for e in talk] == [call_id]


def test_a_preview_calls_contact_rings_for_the_time_it_was_sent_with(net):
    register(net, net.carol, "1001", "secret1001")
    call_id = net.switch.calls.originate("+4930555", net.now, user="1001", target=None, agent="carol")
    net.flush()
    net.incoming(net.carol).answer(net.now, CAROL_ANSWER)
    net.flush()
    net.switch.calls.send(call_id, "trunk:carrier/+4930555", net.now, ring_timeout=25.0)
    net.flush()
    contact = net.incoming(net.bob)
    contact.ring(net.now)
    net.flush()
    net.run_until(24.5)
    assert contact.state != TERMINATED
    net.run_until(25.5)
    assert contact.state == TERMINATED and "CANCEL →" in net.trace("switch", "bob")


def test_a_preview_call_to_an_agent_whose_phone_is_not_registered_is_refused(net):
    assert net.switch.calls.originate("+4930555", net.now, user="1001", target=None) is None


def test_outbound_calls_over_the_trunk_channels_are_refused(net):
    ids = [net.switch.calls.originate(f"+49305550{i}", net.now, trunk="carrier", target="hangup") for i in range(3)]
    assert ids[2] is None and all(ids[:2])  # the trunk has 2 channels


# -- what the records make of it -----------------------------------------------------------------------
def test_a_queued_calls_record_has_its_segment_agent_and_talk_time(net):
    from bindings.records import record_of
    from core.cdr.record import Direction, Disposition

    caller = queued(net)
    carol_answers(net, 12)
    caller.bye(net.now + 100)
    net.flush(net.now + 100)
    (s,) = net.switch.take(CallSummary)
    rec = record_of(s, node="n")
    assert rec.agent == "carol" and rec.direction == Direction.INBOUND
    (seg,) = rec.queue_segments
    assert (seg.left - seg.joined, seg.agent_ended - seg.left) == (12.0, 100.0)
    caller_leg, agent_leg = rec.legs
    assert (caller_leg.answered, agent_leg.answered, agent_leg.peer) == (0.0, 12.0, "carol")
    assert rec.disposition == Disposition.ANSWERED


def test_an_outbound_calls_record_carries_its_campaign_and_contact(net):
    from bindings.records import record_of
    from core.cdr.record import Direction, Disposition

    net.switch.calls.originate("+4930555", net.now, trunk="carrier", target="hangup", campaign_id="spring",
                               contact_id="c7")
    net.flush()
    net.incoming(net.bob).reject(net.now, 486)
    net.flush()
    (s,) = net.switch.take(CallSummary)
    rec = record_of(s)
    assert (rec.direction, rec.campaign_id, rec.contact_id, rec.disposition) == (
        Direction.OUTBOUND, "spring", "c7", Disposition.BUSY)


def test_an_ivr_choice_can_make_the_caller_a_vip_in_the_queue(tmp_path):
    text = HOSTED.replace('"9" = "ivr:second"', '"9" = "ivr:second", "7" = "queue:sales/50"')
    net = HostedNet(tmp_path, text)
    try:
        log_out_everyone(net)
        first = net.dial("800")  # waits with priority 0
        vip = UA(Peer("udp", "127.0.1.1", 5070), "vip")
        net.nodes[vip.addr] = vip
        chooser = net.dial("7", caller=vip)
        digit(net, chooser, "7", net.now)
        net.switch.calls.acd.handle_event(AgentStatusChanged("carol", "available"), net.now)
        net.switch.calls.process(net.now)
        net.flush()
        (invite,) = [parse(d) for label, d in net.seen("carol") if label == "INVITE"]
        assert invite.from_.startswith("<sip:vip@") and first.state == CONFIRMED
        (join,) = [e for e in log(net) if e.kind == "join" and e.member == chooser.call_id]
        assert join.priority == 50
    finally:
        net.close()


def test_an_outbound_call_with_machine_detection_waits_for_the_verdict(net):
    from core.call.b2bua import LiveAnswer

    register(net, net.carol, "1001", "secret1001")
    human = net.switch.calls.originate("+4930555", net.now, trunk="carrier", target="queue:sales", amd=True)
    net.flush()
    net.incoming(net.bob).answer(net.now, ANSWER)
    net.flush()
    (bridge,) = net.switch.take(MediaBridge)
    assert bridge.amd and not net.switch.take(LiveAnswer)
    assert net.carol.take(IncomingCall) == []  # no agent rung while the detector listens
    net.switch.calls.amd_result(human, "HUMAN", net.now + 2.5)
    net.flush(net.now + 2.5)
    assert [e.call_id for e in net.switch.take(LiveAnswer)] == [human]
    assert net.incoming(net.carol)

    machine = net.switch.calls.originate("+4930556", net.now, trunk="carrier", target="queue:sales", amd=True)
    net.flush()
    callee = net.incoming(net.bob)
    callee.answer(net.now, ANSWER)
    net.flush()
    net.switch.calls.amd_result(machine, "MACHINE", net.now + 3)
    net.flush(net.now + 3)
    assert callee.state == TERMINATED
    (s,) = [s for s in net.switch.take(CallSummary) if s.call_id == machine]
    assert (s.amd, s.hangup_by) == ("machine", "switch")


def test_the_agent_log_has_every_state_the_switch_gives_the_agent(net):
    caller = queued(net)
    carol_answers(net, 2)
    caller.bye(net.now + 10)
    net.flush(net.now + 10)
    net.run_until(net.now + 31)  # the queue's wrap-up is 30 s
    states = [(e.at, e.reason) for e in log(net) if e.kind == "state" and e.agent == "carol"]
    assert states == [(0.0, "offered"), (2.0, "talking"), (12.0, "wrap_up"), (42.0, "idle")]
    assert net.switch.calls.acd.agent_stats("carol", net.now).state == "idle"
