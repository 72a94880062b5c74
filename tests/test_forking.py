"""Parallel forking (RFC 3261 §10: one AOR, several contacts; §16.7 as the UAC core of a B2BUA): a
call to user 1001, registered from Carol's desk phone and Dave's softphone, rings both at once, each
on an INVITE of its own. The first 2xx wins and the other leg is CANCELled with "Call completed
elsewhere" (RFC 3326); a 2xx that comes too late is ACKed and BYEd; when every leg fails the caller
gets the most useful failure, and a 6xx ends the call at once. A queue offer to an agent whose
phone has two contacts rings both the same way, the ACD seeing one offer per agent. In memory, with
the harness of test_b2bua.py."""
from __future__ import annotations

import pytest

from core.acd.log import QueueLogEntry
from core.call import CallSummary, MediaBridge
from core.call.b2bua import MediaPlay
from core.sip.addr import Peer
from core.sip.session import CONFIRMED, TERMINATED, CallCancelled, CallEnded, CallFailed, IncomingCall
from tests.test_b2bua import ANSWER, CONFIG, UA, Net, register, summary
from tests.test_hosted import DAVE as DAVE_1002
from tests.test_hosted import HOSTED as QUEUES

DAVE = Peer("udp", "127.0.4.4", 5064)  # user 1001's second phone
CAROL_ANSWER = ANSWER.replace(b"127.0.2.2", b"127.0.3.3")
DAVE_ANSWER = ANSWER.replace(b"127.0.2.2", b"127.0.4.4").replace(b"50000", b"52000")
EARLY = ANSWER.replace(b"127.0.2.2", b"127.0.4.4").replace(b"50000", b"54000")
ELSEWHERE = 'SIP;cause=200;text="Call completed elsewhere"'

HOSTED = CONFIG.replace('''[[ivr]]
name = "main"
prompt = "beep"
''', '''[[ivr]]
name = "main"
prompt = "beep"
choices = { "2" = "user:1001" }
''')


class ForkNet(Net):
    """The harness with a second phone, Dave; Carol and Dave both register as user 1001."""

    def __init__(self, tmp_path, text: str = CONFIG):
        super().__init__(tmp_path, text)
        self.dave = UA(DAVE, "dave")
        self.nodes[DAVE] = self.dave
        register(self, self.carol, "1001", "secret1001", call_id="reg-desk")
        register(self, self.dave, "1001", "secret1001", call_id="reg-soft")

    def forked_call(self):
        caller = self.dial("1001")
        return caller, self.incoming(self.carol), self.incoming(self.dave)


@pytest.fixture
def net(tmp_path):
    n = ForkNet(tmp_path)
    yield n
    n.close()


def test_both_phones_ring_each_on_an_invite_of_its_own(net):
    caller, desk, soft = net.forked_call()
    (to_desk,) = net.requests("carol", "INVITE")
    (to_soft,) = net.requests("dave", "INVITE")
    assert to_desk.uri == "sip:1001@127.0.3.3:5063" and to_soft.uri == "sip:1001@127.0.4.4:5064"
    assert to_desk.call_id != to_soft.call_id != caller.call_id
    # Each offer is the switch's own, anchored on the switch (its own o= line per leg).
    for invite in (to_desk, to_soft):
        assert b"c=IN IP4 127.0.0.5" in invite.body and b"o=switchcore" in invite.body
    o_lines = [next(line for line in i.body.split(b"\r\n") if line.startswith(b"o=")) for i in (to_desk, to_soft)]
    assert o_lines[0] != o_lines[1]
    # The caller is told of the first ringing once.
    desk.ring(net.now)
    net.flush()
    soft.ring(net.now)
    net.flush()
    assert net.trace("alice", "switch") == ["INVITE →", "← 100", "← 180"]


def test_second_phone_answers_the_first_is_cancelled_completed_elsewhere(net):
    caller, desk, soft = net.forked_call()
    desk.ring(net.now)
    soft.ring(net.now)
    net.flush()
    soft.answer(net.now + 4, DAVE_ANSWER)
    net.flush(net.now + 4)
    assert caller.state == CONFIRMED and soft.state == CONFIRMED
    assert net.trace("switch", "carol")[-4:] == ["CANCEL →", "← 200", "← 487", "ACK →"]
    (cancel,) = net.requests("carol", "CANCEL")
    assert cancel.header("Reason") == ELSEWHERE
    assert len(net.carol.take(CallCancelled)) == 1 and desk.state == TERMINATED
    assert "CANCEL" not in [label for label, _ in net.seen("dave")]
    (bridge,) = net.switch.take(MediaBridge)
    assert bridge.leg_b_remote == ("127.0.4.4", 52000)
    caller.bye(net.now + 10)
    net.flush(net.now + 10)
    s = summary(net)
    (to_soft,) = net.requests("dave", "INVITE")
    assert (s.disposition, s.status, s.user) == ("answered", 200, "1001")
    assert (s.leg_b_call_id, s.leg_b_uri, s.leg_b_status) == (to_soft.call_id, "sip:1001@127.0.4.4:5064", 200)
    assert s.leg_b_answered_at == 4.0
    calls = net.switch.calls
    assert calls.active_calls() == 0 and len(calls.ports) == 8 and not calls._by_session


def test_both_answer_at_once_the_late_one_is_acked_and_byed(net):
    caller, desk, soft = net.forked_call()
    desk.ring(net.now)
    soft.ring(net.now)
    net.flush()
    desk.answer(net.now, CAROL_ANSWER)
    soft.answer(net.now, DAVE_ANSWER)  # both 2xx are on the wire before the switch acts on either
    net.flush()
    assert caller.state == CONFIRMED
    # Carol's came first and won. Dave's leg was CANCELled as it lost; his 2xx, crossing the
    # CANCEL, is ACKed (RFC 3261 §13.2.2.4) and the dialog ended with a BYE.
    after = net.trace("switch", "dave")[net.trace("switch", "dave").index("← 200"):]
    assert [t for t in after if t.endswith("→")] == ["CANCEL →", "ACK →", "BYE →"]
    assert [e.reason for e in net.dave.take(CallEnded)] == ["BYE"] and soft.state == TERMINATED
    assert desk.state == CONFIRMED
    caller.bye(net.now)
    net.flush()
    s = summary(net)
    assert s.leg_b_uri == "sip:1001@127.0.3.3:5063" and s.disposition == "answered"
    assert not net.switch.calls._by_session


def test_one_busy_one_no_answer_the_caller_gets_486_once_the_other_gives_up(net):
    caller, desk, soft = net.forked_call()
    soft.ring(net.now)
    net.flush()
    desk.reject(net.now + 1, 486)
    net.flush(net.now + 1)
    assert net.trace("alice", "switch") == ["INVITE →", "← 100", "← 180"]  # Dave still rings
    soft.reject(net.now + 5, 480)  # the softphone gives up with no answer
    net.flush(net.now + 5)
    assert [e.status for e in net.alice.take(CallFailed)] == [486]
    s = summary(net)
    (to_desk,) = net.requests("carol", "INVITE")
    assert (s.status, s.disposition, s.hangup_by) == (486, "busy", "callee")
    assert (s.leg_b_call_id, s.leg_b_status) == (to_desk.call_id, 486)
    assert net.switch.calls.active_calls() == 0 and not net.switch.calls._by_session


def test_a_decline_on_one_phone_ends_the_call_at_once_and_cancels_the_other(net):
    caller, desk, soft = net.forked_call()
    desk.ring(net.now)
    soft.ring(net.now)
    net.flush()
    soft.reject(net.now + 2, 603, "Decline")
    net.flush(net.now + 2)
    assert [e.status for e in net.alice.take(CallFailed)] == [603]
    assert net.trace("switch", "carol")[-4:] == ["CANCEL →", "← 200", "← 487", "ACK →"]
    (cancel,) = net.requests("carol", "CANCEL")
    assert cancel.header("Reason") == "SIP;cause=603"
    s = summary(net)
    assert (s.status, s.disposition, s.leg_b_status) == (603, "rejected", 603)


def test_the_callers_cancel_cancels_both_phones(net):
    caller, desk, soft = net.forked_call()
    desk.ring(net.now)
    soft.ring(net.now)
    net.flush()
    caller.cancel(net.now + 3)
    net.flush(net.now + 3)
    assert net.trace("alice", "switch")[-4:] == ["CANCEL →", "← 200", "← 487", "ACK →"]
    for who in ("carol", "dave"):
        assert net.trace("switch", who)[-4:] == ["CANCEL →", "← 200", "← 487", "ACK →"]
        (cancel,) = net.requests(who, "CANCEL")
        assert cancel.header("Reason") is None  # a missed call on each phone
    assert desk.state == TERMINATED and soft.state == TERMINATED
    s = summary(net)
    assert (s.status, s.disposition, s.hangup_by) == (487, "cancelled", "caller")
    assert net.switch.calls.active_calls() == 0 and len(net.switch.calls.ports) == 8
    assert not net.switch.calls._by_session


def test_ring_timeout_cancels_both_phones(net):
    caller, desk, soft = net.forked_call()
    desk.ring(net.now)
    soft.ring(net.now)
    net.flush()
    net.run_until(31.0)
    assert net.trace("alice", "switch")[-2:] == ["← 480", "ACK →"]
    for who in ("carol", "dave"):
        assert net.trace("switch", who)[-4:] == ["CANCEL →", "← 200", "← 487", "ACK →"]
    s = summary(net)
    assert (s.status, s.disposition, s.hangup_by, s.ended_at) == (480, "no answer", "switch", 30.0)
    assert not net.switch.calls._by_session


def test_early_media_of_the_second_phone_is_relayed_then_the_first_answers(net):
    caller, desk, soft = net.forked_call()
    desk.ring(net.now)
    net.flush()
    soft.ring(net.now, 183, body=EARLY)
    net.flush()
    # The caller rang on Carol's 180, then hears Dave's early media (the first leg that sends any).
    assert net.trace("alice", "switch")[-2:] == ["← 180", "← 183"]
    (early,) = net.switch.take(MediaBridge)
    assert early.leg_b_remote == ("127.0.4.4", 54000)
    desk.answer(net.now, CAROL_ANSWER)
    net.flush()
    (bridge,) = net.switch.take(MediaBridge)
    assert bridge.leg_b_remote == ("127.0.3.3", 50000)
    (cancel,) = net.requests("dave", "CANCEL")
    assert cancel.header("Reason") == ELSEWHERE


def test_node_draining_cancels_both_phones(net):
    caller, desk, soft = net.forked_call()
    desk.ring(net.now)
    soft.ring(net.now)
    net.flush()
    net.switch.calls.drain(net.now)
    net.flush()
    assert [e.status for e in net.alice.take(CallFailed)] == [503]
    for who in ("carol", "dave"):
        assert "CANCEL →" in net.trace("switch", who)


def test_a_hosted_call_to_the_user_rings_both_phones(tmp_path):
    net = ForkNet(tmp_path, HOSTED)
    caller = net.dial("7")
    net.switch.calls.dtmf(caller.call_id, "2", net.now + 1)
    net.flush(net.now + 1)
    desk, soft = net.incoming(net.carol), net.incoming(net.dave)
    desk.ring(net.now)
    soft.ring(net.now)
    net.flush()
    soft.answer(net.now + 2, DAVE_ANSWER)
    net.flush(net.now + 2)
    (cancel,) = net.requests("carol", "CANCEL")
    assert cancel.header("Reason") == ELSEWHERE and desk.state == TERMINATED
    bridge = net.switch.take(MediaBridge)[-1]
    assert bridge.leg_b_remote == ("127.0.4.4", 52000)
    caller.bye(net.now + 5)
    net.flush(net.now + 5)
    s = summary(net)
    assert s.leg_b_uri == "sip:1001@127.0.4.4:5064" and s.disposition == "answered"
    net.close()


def test_a_hosted_call_hears_busy_when_both_phones_fail(tmp_path):
    net = ForkNet(tmp_path, HOSTED)
    caller = net.dial("7")
    net.switch.calls.dtmf(caller.call_id, "2", net.now + 1)
    net.flush(net.now + 1)
    desk, soft = net.incoming(net.carol), net.incoming(net.dave)
    net.switch.take(MediaPlay)
    desk.reject(net.now, 480)
    net.flush()
    assert net.switch.take(MediaPlay) == []  # Dave still rings: ringback goes on
    soft.reject(net.now, 486)
    net.flush()
    assert [p.prompt for p in net.switch.take(MediaPlay)] == ["busy"]
    (call,) = net.switch.calls.calls.values()
    assert call.b_status == 486
    net.close()


def test_one_contact_is_called_as_before(tmp_path):
    net = Net(tmp_path)
    register(net, net.carol, "1001", "secret1001")
    caller = net.dial("1001")
    assert len(net.carol.take(IncomingCall)) == 1
    (call,) = net.switch.calls.calls.values()
    assert call.forks is None
    caller.cancel(net.now)
    net.flush()
    (cancel,) = net.requests("carol", "CANCEL")
    assert cancel.header("Reason") is None
    net.close()


# -- queue offers: an agent whose phone has several contacts ------------------------------------------
SOFT = Peer("udp", "127.0.6.6", 5066)  # agent Carol's softphone, user 1001 like her desk phone
SOFT_ANSWER = ANSWER.replace(b"127.0.2.2", b"127.0.6.6").replace(b"50000", b"56000")


class QueueNet(Net):
    """The queue of test_hosted.py (linear: agent carol on user 1001, then dave on 1002), Carol's
    phone registered from her desk phone and her softphone."""

    def __init__(self, tmp_path, strategy: str = "linear"):
        super().__init__(tmp_path, QUEUES.replace('strategy = "linear"', f'strategy = "{strategy}"'))
        self.soft = UA(SOFT, "soft")
        self.nodes[SOFT] = self.soft
        self.dave = UA(DAVE_1002, "dave")
        self.nodes[DAVE_1002] = self.dave
        register(self, self.carol, "1001", "secret1001", call_id="reg-desk")
        register(self, self.soft, "1001", "secret1001", call_id="reg-soft")
        register(self, self.dave, "1002", "secret1002", call_id="reg-dave")

    def queued(self):
        caller = self.dial("800")
        return caller, self.incoming(self.carol), self.incoming(self.soft)

    def log(self):
        return [(e.kind, e.agent, e.reason) for e in self.switch.events
                if isinstance(e, QueueLogEntry) and e.kind not in ("status", "state")]


@pytest.fixture
def qnet(tmp_path):
    n = QueueNet(tmp_path)
    yield n
    n.close()


def test_an_offer_rings_every_contact_of_the_agent_and_the_softphone_answers(qnet):
    caller, desk, soft = qnet.queued()
    assert caller.state == CONFIRMED and qnet.dave.events == []  # linear: only carol is offered
    (to_desk,) = qnet.requests("carol", "INVITE")
    (to_soft,) = qnet.requests("soft", "INVITE")
    assert to_desk.uri == "sip:1001@127.0.3.3:5063" and to_soft.uri == "sip:1001@127.0.6.6:5066"
    assert to_desk.call_id != to_soft.call_id
    desk.ring(qnet.now)
    soft.ring(qnet.now)
    qnet.flush()
    soft.answer(qnet.now + 3, SOFT_ANSWER)
    qnet.flush(qnet.now + 3)
    assert soft.state == CONFIRMED and desk.state == TERMINATED
    assert qnet.trace("switch", "carol")[-4:] == ["CANCEL →", "← 200", "← 487", "ACK →"]
    (cancel,) = qnet.requests("carol", "CANCEL")
    assert cancel.header("Reason") == ELSEWHERE
    assert "CANCEL" not in [label for label, _ in qnet.seen("soft")]
    (bridge,) = [b for b in qnet.switch.take(MediaBridge) if b.leg_b_remote is not None]
    assert bridge.leg_b_remote == ("127.0.6.6", 56000)
    assert qnet.log() == [("join", "", ""), ("offer", "carol", ""), ("answer", "carol", "")]
    stats = qnet.switch.calls.acd.queue_stats("sales", qnet.now)
    assert (stats.answered, stats.waiting) == (1, 0)
    caller.bye(qnet.now + 20)
    qnet.flush(qnet.now + 20)
    (s,) = qnet.switch.take(CallSummary)
    assert (s.agent, s.disposition, s.leg_b_uri, s.leg_b_call_id) == (
        "carol", "answered", "sip:1001@127.0.6.6:5066", to_soft.call_id)
    (seg,) = s.segments
    assert (seg.answered_by, seg.agents_offered) == ("carol", ("carol",))
    calls = qnet.switch.calls
    assert calls.active_calls() == 0 and not calls._by_session


def test_both_contacts_failing_is_one_miss_of_the_agent_and_the_next_agent_is_offered(qnet):
    caller, desk, soft = qnet.queued()
    soft.ring(qnet.now)
    qnet.flush()
    desk.reject(qnet.now + 1, 486)
    qnet.flush(qnet.now + 1)
    # The softphone still rings: the agent has not missed the offer yet.
    assert qnet.log() == [("join", "", ""), ("offer", "carol", "")]
    assert qnet.dave.events == []
    soft.reject(qnet.now + 5, 480)
    qnet.flush(qnet.now + 5)
    # One miss, with the most useful failure (busy), and the caller goes on to dave.
    assert qnet.log()[2:] == [("noanswer", "carol", "status 486"), ("offer", "dave", "")]
    assert qnet.switch.calls.acd.agent_stats("carol", qnet.now).missed_offers == 1
    dave = qnet.incoming(qnet.dave)
    dave.answer(qnet.now + 1, ANSWER.replace(b"127.0.2.2", b"127.0.4.4"))
    qnet.flush(qnet.now + 1)
    assert caller.state == CONFIRMED and dave.state == CONFIRMED
    assert qnet.log()[-1] == ("answer", "dave", "")
    caller.bye(qnet.now + 5)
    qnet.flush(qnet.now + 5)
    (s,) = qnet.switch.take(CallSummary)
    assert s.agent == "dave" and s.segments[0].agents_offered == ("carol", "dave")
    assert not qnet.switch.calls._by_session


def test_the_offers_ring_timeout_cancels_every_contact_of_the_agent(qnet):
    caller, desk, soft = qnet.queued()
    desk.ring(qnet.now)
    soft.ring(qnet.now)
    qnet.flush()
    qnet.run_until(qnet.now + 15.5)  # the queue's ring timeout
    for who in ("carol", "soft"):
        assert qnet.trace("switch", who)[-4:] == ["CANCEL →", "← 200", "← 487", "ACK →"]
        (cancel,) = qnet.requests(who, "CANCEL")
        assert cancel.header("Reason") is None  # a missed call on each phone
    assert desk.state == TERMINATED and soft.state == TERMINATED
    assert [e for e in qnet.log() if e[0] == "noanswer"] == [("noanswer", "carol", "timeout")]
    assert qnet.switch.calls.acd.agent_stats("carol", qnet.now).missed_offers == 1
    assert caller.state == CONFIRMED  # still queued: dave is offered next
    assert qnet.incoming(qnet.dave)


def test_the_caller_hanging_up_cancels_every_contact_of_the_agent(qnet):
    caller, desk, soft = qnet.queued()
    desk.ring(qnet.now)
    soft.ring(qnet.now)
    qnet.flush()
    caller.bye(qnet.now + 2)
    qnet.flush(qnet.now + 2)
    for who in ("carol", "soft"):
        assert "CANCEL →" in qnet.trace("switch", who)
    assert desk.state == TERMINATED and soft.state == TERMINATED
    assert [e[0] for e in qnet.log()] == ["join", "offer", "abandon"]
    calls = qnet.switch.calls
    assert calls.active_calls() == 0 and not calls._by_session


def test_a_decline_on_one_contact_is_the_agents_refusal_and_cancels_the_other(qnet):
    caller, desk, soft = qnet.queued()
    desk.ring(qnet.now)
    soft.ring(qnet.now)
    qnet.flush()
    soft.reject(qnet.now + 1, 603, "Decline")
    qnet.flush(qnet.now + 1)
    (cancel,) = qnet.requests("carol", "CANCEL")
    assert cancel.header("Reason") == "SIP;cause=603" and desk.state == TERMINATED
    assert qnet.log()[2:] == [("noanswer", "carol", "status 603"), ("offer", "dave", "")]


def test_ring_all_another_agent_answering_cancels_every_contact_of_the_agent(tmp_path):
    qnet = QueueNet(tmp_path, "ring_all")
    caller, desk, soft = qnet.queued()
    dave = qnet.incoming(qnet.dave)
    for leg in (desk, soft, dave):
        leg.ring(qnet.now)
    qnet.flush()
    dave.answer(qnet.now + 2, ANSWER.replace(b"127.0.2.2", b"127.0.4.4"))
    qnet.flush(qnet.now + 2)
    assert caller.state == CONFIRMED and dave.state == CONFIRMED
    for who in ("carol", "soft"):
        assert qnet.trace("switch", who)[-4:] == ["CANCEL →", "← 200", "← 487", "ACK →"]
    assert desk.state == TERMINATED and soft.state == TERMINATED
    assert [e for e in qnet.log() if e[0] in ("answer", "noanswer")] == [("answer", "dave", "")]
    caller.bye(qnet.now + 5)
    qnet.flush(qnet.now + 5)
    (s,) = qnet.switch.take(CallSummary)
    assert s.agent == "dave"
    assert not qnet.switch.calls._by_session  # the losing agent's legs are forgotten with the call
    qnet.close()
