"""The B2BUA in memory: a caller's UA (Alice) → the switch (Endpoint with its call layer) → a
callee's UA (Bob behind the "carrier" trunk, or Carol, registered user 1001), wired by handing each
side's datagrams to the other, with a fake clock. The flows are RFC 3665's as a B2BUA plays them:
each leg is a call of its own, and each leg sees only the switch (its address in SIP and in SDP).
"""
from __future__ import annotations

import re

import pytest

from bindings.storage import Storage
from core.call import B2BUA, CallSummary, MediaBridge, MediaRelease
from core.config import decode_config
from core.registrar import Registrar
from core.sip.addr import Peer
from core.sip.endpoint import Endpoint
from core.sip.message import build_request, parse
from core.sip.session import (
    CONFIRMED,
    TERMINATED,
    CallCancelled,
    CallEnded,
    CallFailed,
    IncomingCall,
    ProvisionalReceived,
    ReinviteAnswered,
    ReinviteReceived,
    SessionLayer,
)
from core.sip.transaction import TransactionLayer
from tests.node import digest_authorization, parse_challenge

SWITCH = Peer("udp", "127.0.0.5", 5060)
ALICE = Peer("udp", "127.0.1.1", 5061)  # the caller's phone, a registered user or a PBX
BOB = Peer("udp", "127.0.2.2", 5062)  # behind the trunk "carrier"
CAROL = Peer("udp", "127.0.3.3", 5063)  # registers as user 1001

CONFIG = """
[media]
address = "127.0.0.5"
rtp_port_min = 20000
rtp_port_max = 20015
[limits]
max_calls = 3
[calls]
ring_timeout = 30.0
max_duration = 600.0
[[users]]
name = "1001"
password = "secret1001"
[[trunks]]
name = "carrier"
address = "127.0.2.2:5062"
channels = 2
[[routes]]
name = "agent"
match = "exact"
pattern = "1001"
target = "user:1001"
[[routes]]
name = "menu"
pattern = "7"
target = "ivr:main"
[[ivr]]
name = "main"
prompt = "beep"
[[routes]]
name = "outbound"
pattern = "0"
strip = 1
prepend = "+49"
target = "trunk:carrier"
"""

OFFER = (b"v=0\r\no=alice 100 100 IN IP4 127.0.1.1\r\ns=-\r\nc=IN IP4 127.0.1.1\r\nt=0 0\r\n"
         b"m=audio 40000 RTP/AVP 0 8 18 101\r\na=rtpmap:101 telephone-event/8000\r\n"
         b"a=fmtp:101 0-15\r\na=sendrecv\r\n")
ANSWER = (b"v=0\r\no=bob 200 200 IN IP4 127.0.2.2\r\ns=-\r\nc=IN IP4 127.0.2.2\r\nt=0 0\r\n"
          b"m=audio 50000 RTP/AVP 8 101\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n")


def sdp_of(body: bytes) -> dict:
    """The facts of a description a test checks, read with a regex rather than the switch's parser."""
    text = body.decode()
    return {
        "c": re.findall(r"^c=IN IP4 (\S+)", text, re.M),
        "port": int(re.search(r"^m=audio (\d+)", text, re.M).group(1)),
        "formats": re.search(r"^m=audio \d+ RTP/AVP ([\d ]+)", text, re.M).group(1).split(),
        "o": re.search(r"^o=(.*)$", text, re.M).group(1).split(),
        "direction": (re.findall(r"^a=(sendrecv|sendonly|recvonly|inactive)", text, re.M) or ["sendrecv"])[0],
    }


class UA:
    """A phone: a transaction layer and a session layer (what test_session.py uses)."""

    def __init__(self, addr: Peer, name: str):
        self.addr = addr
        self.name = name
        self.transactions = TransactionLayer()
        self.sessions = SessionLayer(self.transactions, addr, user=name)
        self.events: list = []
        self.unclaimed: list = []

    def receive(self, data: bytes, src: Peer, now: float) -> None:
        self.transactions.receive(parse(data), src, now)

    def pump(self, now: float) -> None:
        for _ in range(1000):
            event = self.transactions.next_event()
            if event is None:
                break
            if not self.sessions.handle_event(event, now):
                self.unclaimed.append(event)
        while (event := self.sessions.next_event()) is not None:
            self.events.append(event)

    def out(self):
        return self.transactions.datagrams_to_send()

    def timer(self):
        return self.transactions.get_timer()

    def fire(self, now: float) -> None:
        self.transactions.handle_timer(now)

    def take(self, kind) -> list:
        found = [e for e in self.events if isinstance(e, kind)]
        self.events = [e for e in self.events if not isinstance(e, kind)]
        return found


class Switch:
    """The node's endpoint with the B2BUA attached, as bindings/node.py wires it."""

    def __init__(self, config, registrar):
        self.addr = SWITCH
        self.name = "switch"
        self.endpoint = Endpoint(registrar)
        self.calls = B2BUA(config, SessionLayer(self.endpoint.transactions, SWITCH), registrar)
        self.endpoint.calls = self.calls
        self.events: list = []

    def receive(self, data: bytes, src: Peer, now: float) -> None:
        self.endpoint.receive_datagram(data, src, now)

    def pump(self, now: float) -> None:
        while (event := self.calls.next_event()) is not None:
            self.events.append(event)

    def out(self):
        return self.endpoint.datagrams_to_send()

    def timer(self):
        return self.endpoint.get_timer()

    def fire(self, now: float) -> None:
        self.endpoint.handle_timer(now)

    def take(self, kind) -> list:
        found = [e for e in self.events if isinstance(e, kind)]
        self.events = [e for e in self.events if not isinstance(e, kind)]
        return found


class Net:
    """Alice, the switch, Bob and Carol on one in-memory network. ``wire`` keeps every datagram
    as (from, to, label, bytes), the label being the method or the status code."""

    def __init__(self, tmp_path, config_text: str = CONFIG):
        self.config = decode_config(config_text.encode(), "test.toml")
        self.storage = Storage(tmp_path)
        self.registrar = Registrar(self.config, self.storage.bindings(), b"k" * 32)
        self.switch = Switch(self.config, self.registrar)
        self.alice = UA(ALICE, "alice")
        self.bob = UA(BOB, "bob")
        self.carol = UA(CAROL, "carol")
        self.nodes = {n.addr: n for n in (self.switch, self.alice, self.bob, self.carol)}
        self.wire: list[tuple[str, str, str, bytes]] = []
        self.now = 0.0

    def close(self):
        self.storage.close()

    def flush(self, now: float | None = None, drop=lambda src, dst, label: False) -> None:
        if now is not None:
            self.now = now
        for _ in range(200):
            for node in self.nodes.values():
                node.pump(self.now)
            moved = False
            for src in list(self.nodes.values()):
                for data, peer in src.out():
                    dst = self.nodes[Peer(peer.transport, peer.host, peer.port)]
                    moved = True
                    first = data.split(b"\r\n", 1)[0].decode().split()
                    label = first[1] if data.startswith(b"SIP/2.0") else first[0]
                    if drop(src.name, dst.name, label):
                        continue
                    self.wire.append((src.name, dst.name, label, data))
                    dst.receive(data, src.addr, self.now)
            if not moved:
                for node in self.nodes.values():
                    node.pump(self.now)
                return
        raise AssertionError("the network did not settle")

    def run_until(self, until: float, drop=lambda src, dst, label: False) -> None:
        for _ in range(10_000):
            deadlines = [d for d in (n.timer() for n in self.nodes.values()) if d is not None and d <= until]
            if not deadlines:
                break
            self.now = max(self.now, min(deadlines))
            for node in self.nodes.values():
                node.fire(self.now)
            self.flush(drop=drop)
        self.now = until

    def seen(self, by: str, src: str | None = None) -> list[tuple[str, bytes]]:
        """(label, bytes) of every datagram ``by`` received (from ``src`` if given)."""
        return [(label, data) for s, d, label, data in self.wire if d == by and (src is None or s == src)]

    def requests(self, who: str, method: str, src: str = "switch") -> list:
        """Every ``method`` request ``who`` received from ``src``, parsed."""
        return [parse(d) for label, d in self.seen(who, src) if label == method]

    def trace(self, a: str, b: str) -> list[str]:
        """The flow between two parties, RFC 3665 style: "INVITE →" from a, "← 180" from b."""
        out = []
        for s, d, label, _ in self.wire:
            if (s, d) == (a, b):
                out.append(f"{label} →")
            elif (s, d) == (b, a):
                out.append(f"← {label}")
        return out

    # -- scenes --------------------------------------------------------------------------------
    def dial(self, number: str, body: bytes = OFFER, caller: UA | None = None,
             drop=lambda src, dst, label: False):
        caller = caller or self.alice
        session = caller.sessions.invite(f"sip:{number}@127.0.0.5:5060", f"sip:{caller.name}@{caller.addr.host}",
                                         self.now, body=body, peer=SWITCH)
        self.flush(drop=drop)
        return session

    def incoming(self, ua: UA):
        (event,) = ua.take(IncomingCall)
        return event.session

    def ringing_call(self, number: str = "0301234"):
        caller = self.dial(number)
        callee = self.incoming(self.bob)
        callee.ring(self.now)
        self.flush()
        return caller, callee

    def answered_call(self, number: str = "0301234"):
        caller, callee = self.ringing_call(number)
        callee.answer(self.now, ANSWER)
        self.flush()
        return caller, callee


@pytest.fixture
def net(tmp_path):
    n = Net(tmp_path)
    yield n
    n.close()


def summary(net: Net) -> CallSummary:
    (s,) = net.switch.take(CallSummary)
    return s


def final_statuses(net: Net, who: str) -> list[int]:
    return [int(label) for label, data in net.seen(who, "switch") if label.isdigit() and int(label) >= 200
            and b" INVITE\r\n" in data.split(b"\r\nCSeq: ", 1)[1].split(b"\r\n", 1)[0] + b"\r\n"]


# -- RFC 3665 §3.1 through the B2BUA: the basic call ------------------------------------------------
def test_basic_call_through_the_switch_with_media_anchored(net):
    caller, callee = net.ringing_call()
    assert [e.msg.status for e in net.alice.take(ProvisionalReceived)] == [180]
    callee.answer(net.now, ANSWER)
    net.flush()
    # Two calls, one on each side of the switch (RFC 3665 §3.1 flow on each leg).
    assert net.trace("alice", "switch") == ["INVITE →", "← 100", "← 180", "← 200", "ACK →"]
    assert net.trace("switch", "bob") == ["INVITE →", "← 100", "← 180", "← 200", "ACK →"]
    assert caller.state == CONFIRMED and callee.state == CONFIRMED

    # Leg B's INVITE: the number normalised by the route (strip 1, prepend +49), a new Call-ID,
    # the caller's number as From user, the switch's Contact.
    (invite_b,) = [parse(d) for label, d in net.seen("bob") if label == "INVITE"]
    (invite_a,) = [parse(d) for label, d in net.seen("switch", "alice") if label == "INVITE"]
    assert invite_b.uri == "sip:+49301234@127.0.2.2:5062"
    assert invite_b.call_id != invite_a.call_id
    assert invite_b.from_.startswith("<sip:alice@127.0.0.5>")
    assert "127.0.0.5:5060" in invite_b.header("Contact")

    (bridge,) = net.switch.take(MediaBridge)
    assert bridge.call_id == invite_a.call_id
    assert bridge.leg_a_remote == ("127.0.1.1", 40000) and bridge.leg_b_remote == ("127.0.2.2", 50000)
    assert {bridge.leg_a_port, bridge.leg_b_port} == {20000, 20002}

    # Bob's offer is Alice's, anchored: the switch's address and leg B's port, the switch's o=, and
    # only the codecs the switch serves (G.729, pt 18, is not in media.codecs).
    offer_b = sdp_of(invite_b.body)
    assert offer_b["c"] == ["127.0.0.5"] and offer_b["port"] == bridge.leg_b_port
    assert offer_b["formats"] == ["0", "8", "101"] and offer_b["o"][0] == "switchcore"
    # Alice's 200 carries Bob's answer, anchored on leg A's port.
    (ok_a,) = [parse(d) for label, d in net.seen("alice") if label == "200"]
    answer_a = sdp_of(ok_a.body)
    assert answer_a["c"] == ["127.0.0.5"] and answer_a["port"] == bridge.leg_a_port
    assert answer_a["formats"] == ["8", "101"]
    assert "127.0.0.5:5060" in ok_a.header("Contact")
    # Neither leg ever sees the other's address.
    assert not any(b"127.0.1.1" in data for _, data in net.seen("bob"))
    assert not any(b"127.0.2.2" in data for _, data in net.seen("alice"))

    caller.bye(net.now + 10)
    net.flush(net.now + 10)
    assert net.trace("alice", "switch")[-2:] == ["BYE →", "← 200"]
    assert net.trace("switch", "bob")[-2:] == ["BYE →", "← 200"]
    assert [e.reason for e in net.bob.take(CallEnded)] == ["BYE"]
    assert net.switch.take(MediaRelease) == [MediaRelease(invite_a.call_id)]
    s = summary(net)
    assert (s.caller, s.callee, s.route, s.target, s.trunk, s.user) == (
        "alice", "0301234", "outbound", "trunk:carrier", "carrier", None)
    assert (s.offered_at, s.answered_at, s.ended_at) == (0.0, 0.0, 10.0)
    assert (s.disposition, s.hangup_by, s.status) == ("answered", "caller", 200)
    # Everything freed: the ports are back and the next call can take them.
    assert net.switch.calls.active_calls() == 0 and len(net.switch.calls.ports) == 8


def test_bye_from_the_callee_reaches_the_caller(net):
    caller, callee = net.answered_call()
    callee.bye(net.now + 5)
    net.flush(net.now + 5)
    assert net.trace("switch", "bob")[-2:] == ["← BYE", "200 →"]
    assert net.trace("alice", "switch")[-2:] == ["← BYE", "200 →"]
    assert [e.reason for e in net.alice.take(CallEnded)] == ["BYE"]
    assert caller.state == TERMINATED
    s = summary(net)
    assert (s.disposition, s.hangup_by, s.status, s.ended_at) == ("answered", "callee", 200, 5.0)


def test_the_2xx_to_the_caller_is_retransmitted_until_its_ack(net):
    caller, callee = net.ringing_call()
    callee.answer(net.now, ANSWER)
    net.flush(drop=lambda src, dst, label: (src, label) == ("alice", "ACK"))
    net.run_until(2.0, drop=lambda src, dst, label: (src, label) == ("alice", "ACK"))
    oks = [label for label, _ in net.seen("alice") if label == "200"]
    assert len(oks) == 3  # at 0, 0.5 and 1.5 s (RFC 3261 §13.3.1.4)
    net.run_until(4.0)
    assert len(net.switch.calls.calls) == 1
    (call,) = net.switch.calls.calls.values()
    assert call.state == "Confirmed"


# -- failures of leg B, as the caller sees them --------------------------------------------------------
@pytest.mark.parametrize(
    "status_b, status_a, disposition",
    [(486, 486, "busy"), (600, 486, "busy"), (404, 404, "rejected"), (500, 503, "failed"),
     (503, 503, "failed"), (603, 603, "rejected"), (480, 480, "no answer"), (302, 480, "no answer")],
)
def test_failure_of_leg_b_is_mapped_for_the_caller(net, status_b, status_a, disposition):
    caller = net.dial("0301234")
    callee = net.incoming(net.bob)
    callee.reject(net.now, status_b)
    net.flush()
    assert net.trace("switch", "bob") == ["INVITE →", "← 100", f"← {status_b}", "ACK →"]
    assert net.trace("alice", "switch") == ["INVITE →", "← 100", f"← {status_a}", "ACK →"]
    assert [e.status for e in net.alice.take(CallFailed)] == [status_a]
    s = summary(net)
    assert (s.status, s.disposition, s.answered_at) == (status_a, disposition, None)
    assert net.switch.take(MediaRelease) == []  # never bridged
    assert net.switch.calls.active_calls() == 0 and len(net.switch.calls.ports) == 8


def test_ring_timeout_gives_480_to_the_caller_and_cancels_the_callee(net):
    caller, callee = net.ringing_call()
    net.run_until(31.0)
    assert net.trace("alice", "switch")[-2:] == ["← 480", "ACK →"]
    assert net.trace("switch", "bob")[-4:] == ["CANCEL →", "← 200", "← 487", "ACK →"]
    assert len(net.bob.take(CallCancelled)) == 1
    assert caller.state == TERMINATED and callee.state == TERMINATED
    s = summary(net)
    assert (s.status, s.disposition, s.hangup_by, s.ended_at) == (480, "no answer", "switch", 30.0)


def test_callee_that_never_answers_times_out_as_480(tmp_path):
    net = Net(tmp_path, CONFIG.replace("ring_timeout = 30.0", "ring_timeout = 100.0"))
    gone = lambda src, dst, label: dst == "bob"  # noqa: E731 - Bob is gone: nothing reaches him
    net.dial("0301234", drop=gone)
    net.run_until(40.0, drop=gone)
    # Timer B (64*T1 = 32 s) fails leg B with 408, which the caller gets as 480 (§8.1.3.1).
    assert [e.status for e in net.alice.take(CallFailed)] == [480]
    assert summary(net).status == 480
    net.close()


def test_cancel_from_the_caller_before_the_answer(net):
    caller, callee = net.ringing_call()
    caller.cancel(net.now + 3)
    net.flush(net.now + 3)
    assert net.trace("alice", "switch")[-4:] == ["CANCEL →", "← 200", "← 487", "ACK →"]
    assert net.trace("switch", "bob")[-4:] == ["CANCEL →", "← 200", "← 487", "ACK →"]
    assert [e.status for e in net.alice.take(CallFailed)] == [487]
    assert len(net.bob.take(CallCancelled)) == 1
    s = summary(net)
    assert (s.status, s.disposition, s.hangup_by, s.ended_at) == (487, "cancelled", "caller", 3.0)
    assert net.switch.calls.active_calls() == 0 and len(net.switch.calls.ports) == 8


def test_cancel_before_leg_b_said_anything_is_sent_once_it_does(net):
    # Bob's 100 Trying is lost: the switch has had no provisional response from him yet.
    caller = net.dial("0301234", drop=lambda src, dst, label: (src, label) == ("bob", "100"))
    callee = net.incoming(net.bob)
    caller.cancel(net.now)
    net.flush()
    assert net.trace("alice", "switch")[-2:] == ["← 487", "ACK →"]
    assert "CANCEL →" not in net.trace("switch", "bob")  # RFC 3261 §9.1: not before a provisional
    callee.ring(net.now)
    net.flush()
    assert net.trace("switch", "bob")[-4:] == ["CANCEL →", "← 200", "← 487", "ACK →"]
    # The 180 of a cancelled call is not relayed to Alice.
    assert "← 180" not in net.trace("alice", "switch")


def test_answer_crossing_the_cancel_is_hung_up(net):
    caller, callee = net.ringing_call()
    caller.cancel(net.now)
    callee.answer(net.now, ANSWER)  # Bob answers before the switch's CANCEL reaches him
    net.flush()
    assert caller.state == TERMINATED
    assert [e.reason for e in net.bob.take(CallEnded)] == ["BYE"]
    assert net.switch.calls.active_calls() == 0


# -- limits: 503 with Retry-After, counted as refused ---------------------------------------------------
def test_trunk_channel_limit_refuses_the_third_call(net):
    net.answered_call()
    net.answered_call()
    net.dial("0301234")
    assert net.trace("alice", "switch")[-3:] == ["← 100", "← 503", "ACK →"]
    (refusal,) = [parse(d) for label, d in net.seen("alice") if label == "503"]
    assert refusal.header("Retry-After") == "5" and refusal.reason == "Trunk Busy"
    assert net.switch.calls.stats["refused"] == 1
    assert [s.disposition for s in net.switch.take(CallSummary)] == ["refused"]
    assert len([1 for label, _ in net.seen("bob") if label == "INVITE"]) == 2  # Bob never saw it


def test_node_call_limit_refuses_calls_over_max_calls(tmp_path):
    net = Net(tmp_path, CONFIG.replace("max_calls = 3", "max_calls = 1"))
    net.answered_call()
    net.dial("0301234")
    (refusal,) = [parse(d) for label, d in net.seen("alice") if label == "503"]
    assert refusal.reason == "Too Many Calls" and refusal.header("Retry-After") == "5"
    assert net.switch.calls.stats["refused"] == 1
    net.close()


def test_channel_freed_at_hangup_is_usable_again(net):
    first, _ = net.answered_call()
    net.answered_call()
    first.bye(net.now)
    net.flush()
    net.dial("0301234")
    assert net.trace("alice", "switch")[-1] != "← 503"
    assert len(net.bob.take(IncomingCall)) == 1


# -- routes ------------------------------------------------------------------------------------------
def test_number_without_a_route_gets_404(net):
    net.dial("5551234")
    assert net.trace("alice", "switch") == ["INVITE →", "← 100", "← 404", "ACK →"]
    assert net.seen("bob") == []
    s = summary(net)
    assert (s.status, s.disposition, s.route) == (404, "no route", None)


def test_call_to_a_registered_user_goes_to_the_phone_that_registered(net):
    register(net, net.carol, "1001", "secret1001")
    caller = net.dial("1001")
    callee = net.incoming(net.carol)
    callee.answer(net.now, ANSWER.replace(b"127.0.2.2", b"127.0.3.3"))
    net.flush()
    (invite,) = [parse(d) for label, d in net.seen("carol") if label == "INVITE"]
    assert invite.uri == "sip:1001@127.0.3.3:5063"
    assert caller.state == CONFIRMED
    (bridge,) = net.switch.take(MediaBridge)
    assert bridge.leg_b_remote == ("127.0.3.3", 50000)
    caller.bye(net.now)
    net.flush()
    s = summary(net)
    assert (s.user, s.trunk, s.target, s.disposition) == ("1001", None, "user:1001", "answered")


def test_call_to_a_user_with_no_phone_registered_gets_480(net):
    net.dial("1001")
    assert net.trace("alice", "switch")[-2:] == ["← 480", "ACK →"]
    assert net.seen("carol") == []


def register(net: Net, ua: UA, user: str, password: str, call_id: str | None = None) -> None:
    """REGISTER ``ua`` as ``user``, answering the switch's digest challenge (RFC 3261 §10.2); a
    second phone of the same user registers with a Call-ID of its own (§10.2.4)."""
    contact = f"<sip:{user}@{ua.addr.host}:{ua.addr.port}>"
    uri = "sip:127.0.0.5"
    for cseq, auth in ((1, None), (2, "answer")):
        headers = [("Via", ua.sessions.via()), ("Max-Forwards", "70"),
                   ("From", f"<sip:{user}@127.0.0.5>;tag=r{user}"), ("To", f"<sip:{user}@127.0.0.5>"),
                   ("Call-ID", call_id or f"reg-{user}"), ("CSeq", f"{cseq} REGISTER"), ("Contact", contact)]
        if auth:
            (challenge,) = [parse(d) for label, d in net.seen(ua.name) if label == "401"][-1:]
            offer = parse_challenge(challenge.header("WWW-Authenticate"))
            headers.append(("Authorization", digest_authorization(offer, "REGISTER", uri, user, password)))
        data = build_request("REGISTER", uri, headers)
        ua.transactions.send_request(data, parse(data), SWITCH, net.now)
        net.flush()
    assert net.seen(ua.name)[-1][0] == "200"


# -- SDP -----------------------------------------------------------------------------------------------
def test_offer_with_no_common_codec_gets_488(net):
    g729_only = OFFER.replace(b"RTP/AVP 0 8 18 101", b"RTP/AVP 18")
    net.dial("0301234", body=g729_only)
    assert net.trace("alice", "switch") == ["INVITE →", "← 100", "← 488", "ACK →"]
    assert net.seen("bob") == []
    assert len(net.switch.calls.ports) == 8


def test_answer_with_no_codec_of_the_offer_fails_the_call(net):
    net.dial("0301234")
    callee = net.incoming(net.bob)
    callee.answer(net.now, ANSWER.replace(b"RTP/AVP 8 101", b"RTP/AVP 18"))
    net.flush()
    assert net.trace("switch", "bob")[-2:] == ["BYE →", "← 200"]
    assert net.trace("alice", "switch")[-2:] == ["← 488", "ACK →"]


def test_early_media_183_is_relayed_anchored_and_bridged(net):
    caller = net.dial("0301234")
    callee = net.incoming(net.bob)
    callee.ring(net.now, 183, body=ANSWER)
    net.flush()
    (early,) = [parse(d) for label, d in net.seen("alice") if label == "183"]
    (bridge,) = net.switch.take(MediaBridge)
    assert sdp_of(early.body)["c"] == ["127.0.0.5"] and sdp_of(early.body)["port"] == bridge.leg_a_port
    callee.answer(net.now, ANSWER)
    net.flush()
    (ok,) = [parse(d) for label, d in net.seen("alice") if label == "200"]
    # The same answer in the 2xx: same o= version (RFC 3264 §8), and no second bridge.
    assert sdp_of(ok.body)["o"] == sdp_of(early.body)["o"]
    assert net.switch.take(MediaBridge) == []


# -- re-INVITE: hold and resume (RFC 3264 §8.4) -------------------------------------------------------
@pytest.mark.parametrize("holder", ["caller", "callee"])
def test_hold_and_resume_are_passed_across_anchored(net, holder):
    caller, callee = net.answered_call()
    (bridge,) = net.switch.take(MediaBridge)
    first_b = sdp_of([parse(d) for label, d in net.seen("bob") if label == "INVITE"][0].body)
    first_a = sdp_of([parse(d) for label, d in net.seen("alice") if label == "200"][0].body)
    if holder == "caller":
        holding, held, held_ua, holding_ua, own, far = caller, callee, net.bob, net.alice, OFFER, ANSWER
        held_name, holding_name, held_first, held_port = "bob", "alice", first_b, bridge.leg_b_port
        holding_port = bridge.leg_a_port
    else:
        holding, held, held_ua, holding_ua, own, far = callee, caller, net.alice, net.bob, ANSWER, OFFER
        held_name, holding_name, held_first, held_port = "alice", "bob", first_a, bridge.leg_a_port
        holding_port = bridge.leg_b_port
    for direction, reply in ((b"sendonly", b"recvonly"), (b"sendrecv", b"sendrecv")):
        holding.reinvite(net.now, own.replace(b"a=sendrecv", b"a=" + direction))
        net.flush()
        (offer,) = held_ua.take(ReinviteReceived)
        seen = sdp_of(offer.msg.body)
        assert seen["direction"] == direction.decode()
        assert seen["c"] == ["127.0.0.5"] and seen["port"] == held_port
        assert seen["o"][1] == held_first["o"][1] and int(seen["o"][2]) > int(held_first["o"][2])
        held.accept_reinvite(net.now, far.replace(b"a=sendrecv", b"a=" + reply))
        net.flush()
        (answered,) = holding_ua.take(ReinviteAnswered)
        assert answered.status == 200
        got = sdp_of(answered.msg.body)
        assert got["direction"] == reply.decode()
        assert got["c"] == ["127.0.0.5"] and got["port"] == holding_port
    assert caller.state == CONFIRMED and callee.state == CONFIRMED
    assert not any(b"127.0.1.1" in data for _, data in net.seen("bob"))
    assert not any(b"127.0.2.2" in data for _, data in net.seen("alice"))
    assert net.switch.take(MediaBridge) == []  # the media path did not move
    assert net.switch.calls.active_calls() == 1


def test_offerless_reinvite_is_answered_by_the_switch_with_its_last_description(net):
    caller, callee = net.answered_call()
    (ok,) = [parse(d) for label, d in net.seen("alice") if label == "200"]
    caller.reinvite(net.now)  # a session refresh without SDP: the 200 must carry an offer
    net.flush()
    (answered,) = net.alice.take(ReinviteAnswered)
    assert answered.status == 200 and answered.msg.body == ok.body  # same o= version: nothing changed
    assert net.bob.take(ReinviteReceived) == []  # nothing to relay
    assert caller.state == CONFIRMED and net.switch.calls.active_calls() == 1


def test_reinvite_that_moves_the_media_rebridges(net):
    caller, callee = net.answered_call()
    net.switch.take(MediaBridge)
    caller.reinvite(net.now, OFFER.replace(b"40000", b"40010"))
    net.flush()
    (offer,) = net.bob.take(ReinviteReceived)
    callee.accept_reinvite(net.now, ANSWER)
    net.flush()
    (bridge,) = net.switch.take(MediaBridge)
    assert bridge.leg_a_remote == ("127.0.1.1", 40010) and bridge.leg_b_remote == ("127.0.2.2", 50000)


def test_reinvite_refused_by_the_other_leg_is_refused_to_the_offerer(net):
    caller, callee = net.answered_call()
    caller.reinvite(net.now, OFFER.replace(b"a=sendrecv", b"a=sendonly"))
    net.flush()
    net.bob.take(ReinviteReceived)
    callee.reject_reinvite(net.now, 488)
    net.flush()
    assert [e.status for e in net.alice.take(ReinviteAnswered)] == [488]
    assert caller.state == CONFIRMED and callee.state == CONFIRMED


# -- time limits and stopping ----------------------------------------------------------------------
def test_max_duration_hangs_up_both_legs(net):
    caller, callee = net.answered_call()
    net.run_until(601.0)
    assert net.trace("alice", "switch")[-2:] == ["← BYE", "200 →"]
    assert net.trace("switch", "bob")[-2:] == ["BYE →", "← 200"]
    s = summary(net)
    assert (s.disposition, s.hangup_by, s.ended_at) == ("answered", "switch", 600.0)


def test_draining_node_ends_calls_and_refuses_new_ones(net):
    answered, _ = net.answered_call()
    ringing, _ = net.ringing_call()
    net.switch.endpoint.drain(net.now)
    net.flush()
    assert answered.state == TERMINATED and ringing.state == TERMINATED
    assert sorted(s.status for s in net.switch.take(CallSummary)) == [200, 503]
    net.dial("0301234")
    assert net.trace("alice", "switch")[-2:] == ["← 503", "ACK →"]
    assert net.switch.calls.active_calls() == 0


def test_in_dialog_request_for_an_unknown_dialog_gets_481(net):
    caller, callee = net.answered_call()
    data = caller.dialog.create_request("BYE", net.alice.sessions.via())
    forged = data.replace(f"tag={caller.dialog.remote_tag}".encode(), b"tag=nosuchtag")
    net.alice.transactions.send_request(forged, parse(forged), SWITCH, net.now)
    net.flush()
    assert net.trace("alice", "switch")[-2:] == ["BYE →", "← 481"]
    assert net.switch.calls.active_calls() == 1


@pytest.mark.parametrize("from_, tag, caller", [
    ("Alice <sip:alice@127.0.1.1:5061>;tag=a1", "a1", ("alice", "sip:alice@127.0.1.1:5061")),
    ("<sip:alice@127.0.1.1;tag=a1>;tag=a1", "a1", ("alice", "sip:alice@127.0.1.1;tag=a1")),
    ("sip:alice@127.0.1.1;tag=a1", "a1", ("alice", "sip:alice@127.0.1.1")),
    ("<sip:alice@127.0.1.1>;tag=a1;x=y", "a1", ("alice", "sip:alice@127.0.1.1")),
    ("<sip:127.0.1.1>;tag=a1", "a1", ("", "sip:127.0.1.1")),
    ("no uri here;tag=a1", "a1", ("", "")),
])
def test_the_caller_is_the_from_uri_whatever_its_tag(net, from_, tag, caller):
    calls = net.switch.calls
    assert calls._caller(from_, tag) == caller
    # The same phone's next call (a new tag) reads the same, from the remembered answer or not.
    head, _, rest = from_.rpartition(f";tag={tag}")
    again = f"{head};tag=b2{rest}"
    assert calls._caller(again, "b2") == caller
