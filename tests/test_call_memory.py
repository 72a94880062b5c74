"""What a call leaves behind in memory, and the identifiers it draws: a call's SDP, dialogs and
transactions are freed as soon as they are dropped (reference counting, no cyclic garbage for the
collector to find later, which cost the node a fifth of its CPU at a few hundred calls a second),
and tags, branches and Call-IDs stay unique and random while they come from a shared buffer.
"""
from __future__ import annotations

import gc
import os
import sys
from collections import Counter

import pytest

from core.call import b2bua
from core.memory import set_untracking
from core.sdp import (Connection, MediaDescription, Origin, Originator, SessionDescription, SessionLevel, anchor,
                      parse_sdp)
from core.sip import ids
from tests.test_b2bua import ANSWER, OFFER, Net

try:
    import core._memory  # noqa: F401
    untracking_built = True
except ImportError:  # plain Python: every object stays tracked
    untracking_built = False


@pytest.fixture
def no_automatic_gc():
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def test_a_description_and_its_anchored_copies_leave_no_cyclic_garbage(no_automatic_gc):
    for _ in range(50):
        offer = parse_sdp(OFFER)
        origin = Originator(1234)
        origin.anchor(offer, address="192.0.2.10", port=30000)
        anchor(parse_sdp(ANSWER), address="192.0.2.10", port=30002, session_id=5, version=5, in_place=True)
        del offer, origin
    assert gc.collect() == 0


def test_a_media_section_still_inherits_the_session_level_of_a_dropped_description():
    media = parse_sdp(OFFER.replace(b"a=sendrecv\r\n", b"") .replace(b"t=0 0\r\n", b"t=0 0\r\na=recvonly\r\n")).media[0]
    assert media.direction == "recvonly"
    assert media.rtp_address() == ("127.0.1.1", 40000)


def test_anchor_in_place_rewrites_the_description_it_is_given():
    sd = parse_sdp(ANSWER)
    out = anchor(sd, address="192.0.2.10", port=30002, session_id=5, version=5, in_place=True)
    assert out is sd
    assert sd.rtp_address() == ("192.0.2.10", 30002)
    # Without it the description given is left as it was.
    kept = parse_sdp(ANSWER)
    anchor(kept, address="192.0.2.10", port=30002, session_id=5, version=5)
    assert kept.serialize() == ANSWER


def _call(net: Net) -> None:
    caller, callee = net.answered_call()
    caller.bye(net.now)
    net.flush()
    net.run_until(net.now + 40)  # every transaction waits out Timer L/J/K/M and is gone


def test_a_whole_b2bua_call_leaves_no_cyclic_garbage(tmp_path):
    # With every object tracked, as a library user has it: the collector would see any cycle.
    net = Net(tmp_path)
    before = set_untracking(False)
    try:
        _call(net)  # first use of each record type builds msgspec's tables (cycles made once)
        gc.collect()
        gc.disable()
        try:
            for _ in range(3):
                _call(net)
            assert gc.collect() == 0
        finally:
            gc.enable()
    finally:
        set_untracking(before)
        net.close()


def _held_only_by(held: list) -> None:
    """Each object in ``held`` is referenced by the list, by getrefcount's argument and by the others in
    the list, and by nothing else."""
    inside = Counter(id(ref) for i in range(len(held)) for ref in gc.get_referents(held[i]))
    expected = [2 + inside[id(held[i])] for i in range(len(held))]
    assert [sys.getrefcount(held[i]) for i in range(len(held))] == expected


@pytest.mark.parametrize("untracked", [False, True], ids=["tracked", "untracked"])
def test_once_a_call_is_over_nothing_holds_its_transactions_sessions_or_dialogs(tmp_path, untracked):
    """The node takes these objects out of the cyclic collector (core/memory.py), which could then
    never free one caught in a cycle: reference counting alone must free them. Taken from the switch
    while the call is up; once it has ended and every timer has run out, the test's list is the one
    reference left to each."""
    net = Net(tmp_path)
    before = set_untracking(untracked)
    try:
        caller, _ = net.answered_call()
        layer = net.switch.endpoint.transactions
        sessions = list(net.switch.calls.sessions._dialogs.values())
        held = [*sessions, *(s.dialog for s in sessions), *layer._server.values(), *layer._client.values()]
        assert len(sessions) == 2 and len(held) == 6
        caller.bye(net.now)  # the caller hangs up: BYE through the switch to the callee
        net.flush()
        held += [tx for tx in (*layer._server.values(), *layer._client.values()) if tx not in held]
        assert len(held) == 8  # and the BYE's two transactions
        net.run_until(net.now + 40)  # Timers J, K, L, M, the 2xx give-up: all run out
        assert len(layer) == 0 and not net.switch.calls.sessions._dialogs
        if untracking_built:
            assert [gc.is_tracked(obj) for obj in held] == [not untracked] * len(held)
        del sessions, caller
        _held_only_by(held)  # (a session holds its dialog and INVITE transaction)
    finally:
        set_untracking(before)
        net.close()


# What an SDP object may hold: other SDP objects, lists and tuples of them, and str, int, None.
SDP_TYPES = (SessionDescription, SessionLevel, MediaDescription, Origin, Connection, Originator, list, tuple)


def _sdp_objects(roots: list) -> list:
    """The objects reachable from ``roots`` but str, int and None (and types: each object refers to its
    own); fails on one not of SDP_TYPES, or on a reference cycle among them."""
    found: dict[int, object] = {}
    walking: set[int] = set()

    def walk(obj):
        found[id(obj)] = obj
        walking.add(id(obj))
        for ref in gc.get_referents(obj):
            if ref is None or isinstance(ref, (type, str, int)):
                continue
            assert isinstance(ref, SDP_TYPES), f"a {type(ref).__name__} in a {type(obj).__name__}"
            assert id(ref) not in walking, f"a reference cycle through a {type(obj).__name__}"
            if id(ref) not in found:
                walk(ref)
        walking.discard(id(obj))

    for root in roots:
        walk(root)
    return list(found.values())


@pytest.mark.parametrize("untracked", [False, True], ids=["tracked", "untracked"])
def test_a_calls_sdp_makes_no_cycle_and_is_freed_with_the_call(tmp_path, monkeypatch, untracked):
    """The SDP objects of a call (the descriptions parsed, restricted and anchored, the legs' o=
    lines) are taken out of the cyclic collector too: they may hold only one another, lists, tuples,
    str, int and None, with no cycle, and nothing but the call may keep them."""
    parsed = []

    def recording(data):
        parsed.append(b2bua_parse(data))
        return parsed[-1]

    b2bua_parse = b2bua.parse_sdp
    monkeypatch.setattr(b2bua, "parse_sdp", recording)
    net = Net(tmp_path)
    before = set_untracking(untracked)
    try:
        caller, _ = net.answered_call()
        (call,) = net.switch.calls.calls.values()
        assert len(parsed) == 2  # A's offer, B's answer (anchored in place for A)
        held = _sdp_objects([*parsed, call.offer_b, call.a.origin, call.b.origin])
        assert {type(obj).__name__ for obj in held} == {t.__name__ for t in SDP_TYPES}
        if untracking_built:
            gc.collect()  # the collector untracks a tuple of str and None (a=name:value) at its first look
            tracked = [type(obj).__name__ for obj in held if gc.is_tracked(obj)]
            if untracked:
                assert tracked == []
            else:
                assert all(gc.is_tracked(obj) for obj in held if type(obj) is not tuple)
        del call, parsed[:]
        caller.bye(net.now)
        net.flush()
        net.run_until(net.now + 40)
        assert not net.switch.calls.calls
        del caller
        _held_only_by(held)
    finally:
        set_untracking(before)
        net.close()


def test_identifiers_are_unique_and_hex():
    seen = {ids.random_hex(8) for _ in range(5000)}  # more than one 4 KiB buffer's worth
    assert len(seen) == 5000
    assert all(len(t) == 16 and int(t, 16) >= 0 for t in seen)
    assert all(0 <= ids.random_below_2_31() < 2**31 for _ in range(100))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_does_not_repeat_its_parents_identifiers():
    ids.random_hex(8)  # the parent's buffer is filled
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: the next identifier, to the parent
        os.write(write, ids.random_hex(8).encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 64).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert child != ids.random_hex(8)


def test_anchor_wire_sends_what_anchor_and_serialize_send_with_the_same_versions():
    by_copy, by_wire = Originator(77), Originator(77)
    for body, port in ((OFFER, 30000), (OFFER, 30000), (ANSWER, 30000), (ANSWER, 30002)):
        expected = by_copy.anchor(parse_sdp(body), address="192.0.2.10", port=port).serialize()
        sd, wire = by_wire.anchor_wire(parse_sdp(body), address="192.0.2.10", port=port, in_place=True)
        assert wire == expected == sd.serialize()
    assert by_wire.version == by_copy.version == 79  # unchanged once, then two changes (RFC 3264 §8)
