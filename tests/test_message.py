"""The message face of docs/internals.md, on both implementations (Cython and the Python twin):
parsing a datagram, framing a TCP stream, editing and building messages, answering malformed ones.

The typical messages below (an RFC 3665 §3.1-style INVITE with SDP, its 200 OK, the BYE) are also
what bench/bench_parse.py measures.
"""

from __future__ import annotations

import pytest

from core.errors import LocalProtocolError, RemoteProtocolError
from core.sip.message import IMPLEMENTATIONS

SDP = (
    b"v=0\r\n"
    b"o=alice 2890844526 2890844526 IN IP4 client.atlanta.example.com\r\n"
    b"s=-\r\n"
    b"c=IN IP4 192.0.2.101\r\n"
    b"t=0 0\r\n"
    b"m=audio 49172 RTP/AVP 0\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
)

INVITE = (
    b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP client.atlanta.example.com:5060;branch=z9hG4bK74bf9\r\n"
    b"Max-Forwards: 70\r\n"
    b"Route: <sip:ss1.atlanta.example.com;lr>\r\n"
    b"From: Alice <sip:alice@atlanta.example.com>;tag=9fxced76sl\r\n"
    b"To: Bob <sip:bob@biloxi.example.com>\r\n"
    b"Call-ID: 3848276298220188511@atlanta.example.com\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Contact: <sip:alice@client.atlanta.example.com;transport=udp>\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: " + str(len(SDP)).encode() + b"\r\n"
    b"\r\n" + SDP
)

OK_200 = (
    b"SIP/2.0 200 OK\r\n"
    b"Via: SIP/2.0/UDP ss1.atlanta.example.com:5060;branch=z9hG4bK2d4790.1;received=192.0.2.111\r\n"
    b"Via: SIP/2.0/UDP client.atlanta.example.com:5060;branch=z9hG4bK74bf9;received=192.0.2.101\r\n"
    b"Record-Route: <sip:ss1.atlanta.example.com;lr>\r\n"
    b"From: Alice <sip:alice@atlanta.example.com>;tag=9fxced76sl\r\n"
    b"To: Bob <sip:bob@biloxi.example.com>;tag=314159\r\n"
    b"Call-ID: 3848276298220188511@atlanta.example.com\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Contact: <sip:bob@client.biloxi.example.com>\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)

BYE = (
    b"BYE sip:alice@client.atlanta.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/TCP client.biloxi.example.com:5060;branch=z9hG4bKnashds7\r\n"
    b"Max-Forwards: 70\r\n"
    b"From: Bob <sip:bob@biloxi.example.com>;tag=8321234356\r\n"
    b"To: Alice <sip:alice@atlanta.example.com>;tag=9fxced76sl\r\n"
    b"Call-ID: 3848276298220188511@atlanta.example.com\r\n"
    b"CSeq: 1 BYE\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)

TYPICAL = {"invite": INVITE, "ok": OK_200, "bye": BYE}


@pytest.fixture(params=["py", "c"])
def sip(request):
    impl = IMPLEMENTATIONS[request.param]
    if impl is None:
        pytest.skip("core._sip is not built: run `python setup.py build_ext --inplace`")
    return impl


def refusal(sip, data: bytes, **kwargs) -> RemoteProtocolError:
    with pytest.raises(RemoteProtocolError) as caught:
        sip.parse(data, **kwargs)
    return caught.value


# --- parsing ---------------------------------------------------------------------------------------


def test_invite_start_line_and_slots(sip):
    msg = sip.parse(INVITE)
    assert msg.is_request and msg.method == "INVITE" and msg.status == 0
    assert msg.uri == "sip:bob@biloxi.example.com"
    assert msg.call_id == "3848276298220188511@atlanta.example.com"
    assert (msg.cseq, msg.cseq_method) == (1, "INVITE")
    assert msg.from_ == "Alice <sip:alice@atlanta.example.com>;tag=9fxced76sl"
    assert msg.from_tag == "9fxced76sl" and msg.to_tag is None
    assert msg.max_forwards == 70
    assert msg.branch == "z9hG4bK74bf9"
    assert msg.top_via == ("UDP", "client.atlanta.example.com", 5060, {"branch": "z9hG4bK74bf9"})
    assert msg.body == SDP and msg.content_length == len(SDP)
    assert msg.raw == INVITE


def test_response_status_line_and_vias(sip):
    msg = sip.parse(OK_200)
    assert not msg.is_request and msg.method == "" and msg.uri == ""
    assert (msg.status, msg.reason) == (200, "OK")
    assert msg.to_tag == "314159"
    assert msg.vias == [
        "SIP/2.0/UDP ss1.atlanta.example.com:5060;branch=z9hG4bK2d4790.1;received=192.0.2.111",
        "SIP/2.0/UDP client.atlanta.example.com:5060;branch=z9hG4bK74bf9;received=192.0.2.101",
    ]
    assert msg.top_via.params["received"] == "192.0.2.111"
    assert msg.max_forwards == -1
    assert msg.body == b""


def test_compact_forms_folding_and_comma_lists(sip):
    data = (
        b"OPTIONS sip:carol@chicago.example.com SIP/2.0\r\n"
        b"v: SIP/2.0/UDP a.example.com;branch=z9hG4bK1 ,\r\n"
        b"   SIP/2.0/TCP b.example.com:5070;branch=z9hG4bK2\r\n"
        b"f: <sip:alice@example.com>;tag=1\r\n"
        b"t: <sip:carol@example.com>\r\n"
        b"i: abc@example.com\r\n"
        b"CSeq: 7\r\n  OPTIONS\r\n"
        b"m: \"A, B\" <sip:a@example.com>, <sip:b@example.com;x=\"1,2\">\r\n"
        b"Accept: application/sdp, text/plain\r\n"
        b"Date: Sat, 13 Nov 2010 23:29:00 GMT\r\n"
        b"l: 0\r\n"
        b"\r\n"
    )
    msg = sip.parse(data)
    assert msg.call_id == "abc@example.com" and msg.header("Call-ID") == "abc@example.com"
    assert (msg.cseq, msg.cseq_method) == (7, "OPTIONS")
    assert msg.header("cseq") == "7  OPTIONS"  # folding undone: the CRLF goes, the whitespace stays
    assert msg.vias == ["SIP/2.0/UDP a.example.com;branch=z9hG4bK1",
                        "SIP/2.0/TCP b.example.com:5070;branch=z9hG4bK2"]
    assert msg.header_values("Contact") == ['"A, B" <sip:a@example.com>', '<sip:b@example.com;x="1,2">']
    assert msg.header("m") == '"A, B" <sip:a@example.com>'
    assert msg.header_values("accept") == ["application/sdp", "text/plain"]
    # Date is not a list: its comma stays inside the one value.
    assert msg.header_values("Date") == ["Sat, 13 Nov 2010 23:29:00 GMT"]
    assert msg.header("X-Absent") is None and msg.header_values("X-Absent") == []
    assert [name for name, _ in msg.headers()] == ["v", "f", "t", "i", "CSeq", "m", "Accept", "Date", "l"]
    assert msg.headers()[0][1] == ("SIP/2.0/UDP a.example.com;branch=z9hG4bK1 ,"
                                   "   SIP/2.0/TCP b.example.com:5070;branch=z9hG4bK2")


def test_ipv6_via_and_leading_crlf(sip):
    data = b"\r\n\r\n" + BYE.replace(b"client.biloxi.example.com:5060", b"[2001:db8::10]:5070")
    msg = sip.parse(data)
    assert msg.top_via.host == "2001:db8::10" and msg.top_via.port == 5070
    assert msg.raw == data[4:]


def test_datagram_body_framing(sip):
    # Bytes after Content-Length are ignored (RFC 3261 §18.3); without it the body runs to the end.
    assert sip.parse(INVITE + b"garbage").body == SDP
    without = INVITE.replace(b"Content-Length: %d\r\n" % len(SDP), b"")
    assert sip.parse(without).body == SDP
    short = INVITE[:-10]
    error = refusal(sip, short)
    assert error.status == 400
    assert error.reason == f"Content-Length {len(SDP)} exceeds the {len(SDP) - 10} bytes of body"


def test_size_limit(sip):
    big = INVITE.replace(b"Content-Type", b"X-Pad: " + b"a" * 70000 + b"\r\nContent-Type")
    error = refusal(sip, big)
    assert error.status == 513 and "exceeds the limit of 65536 bytes" in error.reason
    assert refusal(sip, INVITE, max_size=100).status == 513
    assert sip.parse(INVITE, max_size=len(INVITE)).call_id


@pytest.mark.parametrize(
    "edit, words",
    [
        ((b"CSeq: 1 INVITE", b"CSeq: 1 BYE"), "CSeq method 'BYE' does not match"),
        ((b"Max-Forwards: 70", b"Max-Forwards: 256"), "Max-Forwards 256 exceeds 255"),
        ((b"Call-ID: 3848276298220188511@atlanta.example.com\r\n", b""), "lacks required header(s) Call-ID"),
        ((b"SIP/2.0/UDP client", b"SIP/3.0/UDP client"), "Via protocol 'SIP/3.0' is not SIP/2.0"),
        ((b"Via: SIP/2.0/UDP client.atlanta.example.com:5060", b"Via: SIP/2.0/UDP client:99999"),
         "Via has an invalid port '99999'"),
        ((b"To: Bob <sip:bob@biloxi.example.com>", b"To: Bob <bob@biloxi.example.com>"), "To URI"),
        ((b"Max-Forwards: 70\r\n", b"Max-Forwards: 70\nX: y\r\n"), "bare CR or LF"),
        ((b"Content-Type", b"Content Type"), "header name 'Content Type' is not a token"),
        ((b"Content-Type: application/sdp", b"Content-Type application/sdp"), "has no colon"),
        ((b"INVITE sip:bob@biloxi.example.com SIP/2.0", b"INVITE sip:bob@biloxi.example.com SIP/2.1"),
         "SIP version 'SIP/2.1' is not supported"),
    ],
)
def test_refusals_name_the_problem(sip, edit, words):
    error = refusal(sip, INVITE.replace(*edit))
    assert words in error.reason
    assert error.status == (505 if "version" in words else 400)


def test_unterminated_header_section(sip):
    assert "not terminated by an empty line" in refusal(sip, BYE[:-2]).reason
    assert refusal(sip, b"\r\n\r\n").reason == "empty message"


def test_message_is_read_only(sip):
    msg = sip.parse(BYE)
    with pytest.raises(AttributeError):
        msg.call_id = "other"


# --- streams ---------------------------------------------------------------------------------------


def test_stream_framer_partial_and_pipelined(sip):
    framer = sip.StreamFramer()
    stream = b"\r\n\r\n" + INVITE + b"\r\n" + BYE + OK_200
    out = []
    for i in range(0, len(stream), 37):  # reads cut anywhere, headers and bodies alike
        out += framer.feed(stream[i : i + 37])
    assert out == [INVITE, BYE, OK_200]
    assert [sip.parse(m).cseq_method for m in out] == ["INVITE", "BYE", "INVITE"]
    assert framer.feed(b"") == []


def test_stream_framer_requires_content_length(sip):
    framer = sip.StreamFramer()
    with pytest.raises(RemoteProtocolError, match="Content-Length is mandatory"):
        framer.feed(BYE.replace(b"Content-Length: 0\r\n", b""))
    with pytest.raises(RemoteProtocolError):  # the connection is broken for good
        framer.feed(BYE)


def test_stream_framer_limits(sip):
    with pytest.raises(RemoteProtocolError) as caught:
        sip.StreamFramer(max_size=200).feed(INVITE)
    assert caught.value.status == 513
    with pytest.raises(RemoteProtocolError) as caught:
        sip.StreamFramer(max_size=200).feed(b"INVITE sip:a@b SIP/2.0\r\nX: " + b"y" * 300)
    assert caught.value.status == 513
    with pytest.raises(RemoteProtocolError, match="Content-Length '-1' is not a number"):
        sip.StreamFramer().feed(BYE.replace(b"Content-Length: 0", b"Content-Length: -1"))


# --- editing and building --------------------------------------------------------------------------


def test_serialize_proxy_edits(sip):
    msg = sip.parse(INVITE)
    out = msg.serialize(
        prepend=[("Via", "SIP/2.0/UDP ss1.atlanta.example.com:5060;branch=z9hG4bK2d4790.1")],
        remove=["Route"],
        replace={"Max-Forwards": str(msg.max_forwards - 1)},
    )
    again = sip.parse(out)
    assert again.branch == "z9hG4bK2d4790.1"
    assert again.vias[1] == msg.vias[0]
    assert again.max_forwards == 69
    assert again.header("Route") is None
    assert again.body == SDP and again.call_id == msg.call_id and again.from_tag == msg.from_tag
    assert out.count(b"Content-Length") == 1


def test_serialize_without_edits_is_the_message(sip):
    for data in TYPICAL.values():
        assert sip.parse(data).serialize() == data


def test_serialize_new_body_and_missing_length(sip):
    msg = sip.parse(INVITE)
    out = msg.serialize(body=b"v=0\r\n", replace={"Subject": "added"})
    again = sip.parse(out)
    assert again.body == b"v=0\r\n" and again.content_length == 5
    assert again.header("Subject") == "added"
    no_length = sip.parse(INVITE.replace(b"Content-Length: %d\r\n" % len(SDP), b""))
    assert sip.parse(no_length.serialize()).content_length == len(SDP)
    assert b"Content-Length: %d\r\n" % len(SDP) in no_length.serialize()
    with pytest.raises(LocalProtocolError):
        msg.serialize(replace={"l": "3"})
    with pytest.raises(LocalProtocolError):
        msg.serialize(prepend=[("X-Evil", "a\r\nVia: SIP/2.0/UDP evil")])


def test_serialize_removes_every_occurrence_by_any_name(sip):
    msg = sip.parse(OK_200)
    out = sip.parse(msg.serialize(remove=["v"], prepend=[("Via", "SIP/2.0/UDP x.example.com;branch=z9hG4bKx")]))
    assert out.vias == ["SIP/2.0/UDP x.example.com;branch=z9hG4bKx"]


def test_build_response_copies_the_dialog_headers(sip):
    request = sip.parse(INVITE)
    data = sip.build_response(request, 180, to_tag="bob1", headers=[("Contact", "<sip:bob@192.0.2.4>")])
    response = sip.parse(data)
    assert (response.status, response.reason) == (180, "Ringing")
    assert response.vias == request.vias
    assert response.from_ == request.from_ and response.call_id == request.call_id
    assert (response.cseq, response.cseq_method) == (1, "INVITE")
    assert response.to_tag == "bob1"
    assert response.header("Contact") == "<sip:bob@192.0.2.4>"
    # A To that already has a tag keeps it.
    bye = sip.parse(BYE)
    assert sip.parse(sip.build_response(bye, 200, "Fine", to_tag="other")).to_tag == "9fxced76sl"
    assert sip.build_response(bye, 200, "Fine").startswith(b"SIP/2.0 200 Fine\r\n")


def test_build_request(sip):
    data = sip.build_request(
        "OPTIONS", "sip:carol@chicago.example.com",
        [("Via", "SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bKhjhs8ass877"),
         ("Max-Forwards", "70"), ("To", "<sip:carol@chicago.example.com>"),
         ("From", "Alice <sip:alice@atlanta.example.com>;tag=1928301774"),
         ("Call-ID", "a84b4c76e66710"), ("CSeq", "63104 OPTIONS")],
        body=b"hello",
    )
    msg = sip.parse(data)
    assert msg.method == "OPTIONS" and msg.body == b"hello" and msg.content_length == 5
    assert msg.branch == "z9hG4bKhjhs8ass877"


# --- answering what does not parse -----------------------------------------------------------------


def test_reply_for_malformed_request(sip):
    data = INVITE.replace(b"Max-Forwards: 70", b"Max-Forwards: 7000")
    error = refusal(sip, data)
    reply = sip.reply_for_malformed(data, error)
    response = sip.parse(reply)
    assert response.status == 400 and response.reason == "Max-Forwards 7000 exceeds 255"
    assert response.vias == sip.parse(INVITE).vias
    assert response.call_id == "3848276298220188511@atlanta.example.com"
    assert response.to_tag is not None
    assert sip.reply_for_malformed(data, error) == reply  # a retransmission gets the same answer


def test_reply_for_malformed_needs_an_address(sip):
    data = OK_200.replace(b"CSeq: 1 INVITE", b"CSeq: x INVITE")
    assert sip.reply_for_malformed(data, refusal(sip, data)) is None  # responses are never answered
    data = BYE.replace(b"Via: SIP/2.0/TCP client.biloxi.example.com:5060;branch=z9hG4bKnashds7\r\n", b"")
    assert sip.reply_for_malformed(data, refusal(sip, data)) is None
