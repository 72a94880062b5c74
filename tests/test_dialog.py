"""Dialogs (RFC 3261 §12): how they are made from an INVITE and its response, the route set, and
the requests built inside them."""
import pytest

from core.errors import LocalProtocolError, RemoteProtocolError
from core.sip.addr import Peer
from core.sip.dialog import CONFIRMED, EARLY, TERMINATED, Dialog
from core.sip.message import build_request, build_response, parse

VIA = "SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bKnew;rport"


def invite(record_route=(), contact="<sip:alice@127.0.0.1:5061>", cseq=314159) -> object:
    headers = [("Via", "SIP/2.0/UDP 127.0.0.10:5060;branch=z9hG4bKp1"),
               ("Via", "SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bKa1"),
               ("Max-Forwards", "69"), ("From", '"Alice" <sip:alice@atlanta.example.com>;tag=1928301774'),
               ("To", "<sip:bob@biloxi.example.com>"), ("Call-ID", "a84b4c76e66710@pc33"),
               ("CSeq", f"{cseq} INVITE"), ("Contact", contact)]
    headers += [("Record-Route", rr) for rr in record_route]
    return parse(build_request("INVITE", "sip:bob@biloxi.example.com", headers))


def response_to(request, status=200, record_route=(), contact="<sip:bob@127.0.0.2:5062>", tag="a6c85cf"):
    headers = [("Contact", contact)] if contact else []
    headers += [("Record-Route", rr) for rr in record_route]
    return parse(build_response(request, status, to_tag=tag, headers=headers))


RR = ("<sip:p2.example.com;lr>", "<sip:p1.example.com;lr>")  # as the response lists them


def test_uac_dialog_from_a_2xx():
    req = invite()
    dialog = Dialog.for_uac(req, response_to(req, record_route=RR))
    assert dialog.state == CONFIRMED
    assert dialog.id == ("a84b4c76e66710@pc33", "1928301774", "a6c85cf")
    assert str(dialog.remote_target) == "sip:bob@127.0.0.2:5062"
    # §12.1.2: Record-Route of the response in reverse order.
    assert dialog.route_set == ["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"]
    assert (dialog.local_seq, dialog.remote_seq) == (314159, None)
    assert str(dialog.local_uri) == "sip:alice@atlanta.example.com"
    assert str(dialog.remote_uri) == "sip:bob@biloxi.example.com"


def test_early_dialog_from_a_provisional_response():
    req = invite()
    dialog = Dialog.for_uac(req, response_to(req, 180))
    assert dialog.state == EARLY
    dialog.confirm()
    assert dialog.state == CONFIRMED


def test_a_response_without_to_tag_or_contact_makes_no_dialog():
    req = invite()
    with pytest.raises(RemoteProtocolError):
        Dialog.for_uac(req, parse(build_response(req, 180)))
    with pytest.raises(RemoteProtocolError):
        Dialog.for_uac(req, response_to(req, contact=None))


def test_uas_dialog_keeps_record_route_in_order():
    req = invite(record_route=("<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"))
    dialog = Dialog.for_uas(req, "bobtag", confirmed=True)
    assert dialog.id == ("a84b4c76e66710@pc33", "bobtag", "1928301774")
    assert dialog.route_set == ["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"]
    assert (dialog.local_seq, dialog.remote_seq) == (None, 314159)
    assert str(dialog.remote_target) == "sip:alice@127.0.0.1:5061"


def test_request_with_loose_routing():
    req = invite()
    dialog = Dialog.for_uac(req, response_to(req, record_route=RR))
    bye = parse(dialog.create_request("BYE", VIA))
    # §12.2.1.1: first route loose: Request-URI is the remote target, Route is the route set.
    assert bye.uri == "sip:bob@127.0.0.2:5062"
    assert bye.header_values("Route") == ["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"]
    assert (bye.cseq, bye.cseq_method) == (314160, "BYE")
    assert (bye.call_id, bye.from_tag, bye.to_tag) == dialog.id
    assert bye.from_ == req.from_
    assert dialog.next_hop() == Peer("udp", "p1.example.com", 5060)


def test_request_with_strict_routing():
    req = invite()
    dialog = Dialog.for_uac(req, response_to(req, record_route=("<sip:p2.example.com>", "<sip:p1.example.com:5070>")))
    bye = parse(dialog.create_request("BYE", VIA))
    # §12.2.1.1: strict first route: it becomes the Request-URI; the remote target goes last in Route.
    assert bye.uri == "sip:p1.example.com:5070"
    assert bye.header_values("Route") == ["<sip:p2.example.com>", "<sip:bob@127.0.0.2:5062>"]
    assert dialog.next_hop() == Peer("udp", "p1.example.com", 5070)


def test_without_route_set_the_request_goes_to_the_remote_target():
    req = invite()
    dialog = Dialog.for_uac(req, response_to(req, contact="<sip:bob@127.0.0.2:5062;transport=tcp>"))
    bye = parse(dialog.create_request("BYE", VIA))
    assert bye.header_values("Route") == []
    assert dialog.next_hop() == Peer("tcp", "127.0.0.2", 5062)


def test_remote_cseq_must_not_go_down():
    req = invite()
    dialog = Dialog.for_uas(req, "bobtag", confirmed=True)
    info = parse(build_request("INFO", "sip:bob@127.0.0.2", [
        ("Via", VIA), ("From", req.from_), ("To", f"{req.to};tag=bobtag"),
        ("Call-ID", req.call_id), ("CSeq", "314158 INFO")]))
    with pytest.raises(RemoteProtocolError) as caught:
        dialog.receive_request(info)
    assert caught.value.status == 500
    higher = parse(build_request("INFO", "sip:bob@127.0.0.2", [
        ("Via", VIA), ("From", req.from_), ("To", f"{req.to};tag=bobtag"),
        ("Call-ID", req.call_id), ("CSeq", "314170 INFO")]))
    dialog.receive_request(higher)
    assert dialog.remote_seq == 314170


def test_reinvite_refreshes_the_remote_target():
    req = invite()
    dialog = Dialog.for_uas(req, "bobtag", confirmed=True)
    reinvite = parse(build_request("INVITE", "sip:bob@127.0.0.2", [
        ("Via", VIA), ("From", req.from_), ("To", f"{req.to};tag=bobtag"), ("Call-ID", req.call_id),
        ("CSeq", "314160 INVITE"), ("Contact", "<sip:alice@127.0.0.7:5099>")]))
    dialog.receive_request(reinvite)
    assert str(dialog.remote_target) == "sip:alice@127.0.0.7:5099"


def test_uas_starts_its_own_cseq_and_target_refresh_needs_a_contact():
    dialog = Dialog.for_uas(invite(), "bobtag", confirmed=True)
    bye = parse(dialog.create_request("BYE", VIA))
    assert bye.cseq == 1 and bye.from_tag == "bobtag" and bye.to_tag == "1928301774"
    with pytest.raises(LocalProtocolError):
        dialog.create_request("INVITE", VIA)
    dialog.terminate()
    assert dialog.state == TERMINATED
    with pytest.raises(LocalProtocolError):
        dialog.create_request("BYE", VIA)
