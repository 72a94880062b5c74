"""SDP (RFC 4566) and the offer/answer model (RFC 3264), as the B2BUA uses them: parse and serialize
byte for byte, answer an offer, find the codecs both sides agreed on, read hold and resume, and anchor
a description so that media flows through the switch.

The offers and answers are RFC 4317's §2.1–§2.5 and RFC 3264's §10.1–§10.2, written out from the RFCs'
text (RFC 4317 §1: "the subject line (s=) contains a single space character"); the two SDP bodies of
RFC 5118 are read in place from ../shared/vectors.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import RemoteProtocolError
from core.sdp import (
    Codec,
    OfferAnswerError,
    Originator,
    anchor,
    answer,
    hold_direction,
    intersect,
    is_hold,
    parse_sdp,
)

VECTORS = Path(__file__).resolve().parents[1].parent / "shared" / "vectors" / "sip"


def wire(text: str) -> bytes:
    """RFC text → wire form: one line per line, each ended by CRLF."""
    lines = [line.strip() for line in text.strip().splitlines()]
    return ("\r\n".join(lines) + "\r\n").encode()


def rfc4317(text: str) -> bytes:
    # RFC 4317 §1: the s= line of every example holds a single space.
    return wire(text).replace(b"\r\ns=\r\n", b"\r\ns= \r\n")


# ---------------------------------------------------------------------------------------------------
# RFC 4317 §2.1–§2.5 and RFC 3264 §10.1–§10.2
# ---------------------------------------------------------------------------------------------------

ALICE_AV = rfc4317("""
    v=0
    o=alice 2890844526 2890844526 IN IP4 host.atlanta.example.com
    s=
    c=IN IP4 host.atlanta.example.com
    t=0 0
    m=audio 49170 RTP/AVP 0 8 97
    a=rtpmap:0 PCMU/8000
    a=rtpmap:8 PCMA/8000
    a=rtpmap:97 iLBC/8000
    m=video 51372 RTP/AVP 31 32
    a=rtpmap:31 H261/90000
    a=rtpmap:32 MPV/90000
""")

RFC4317 = {
    # §2.1 Audio and Video 1 (offer is ALICE_AV)
    "2.1-answer": rfc4317("""
        v=0
        o=bob 2808844564 2808844564 IN IP4 host.biloxi.example.com
        s=
        c=IN IP4 host.biloxi.example.com
        t=0 0
        m=audio 49174 RTP/AVP 0
        a=rtpmap:0 PCMU/8000
        m=video 49170 RTP/AVP 32
        a=rtpmap:32 MPV/90000
    """),
    # §2.2 Audio and Video 2
    "2.2-answer": rfc4317("""
        v=0
        o=bob 2808844564 2808844564 IN IP4 host.biloxi.example.com
        s=
        c=IN IP4 host.biloxi.example.com
        t=0 0
        m=audio 49172 RTP/AVP 0 8
        a=rtpmap:0 PCMU/8000
        a=rtpmap:8 PCMA/8000
        m=video 0 RTP/AVP 31
        a=rtpmap:31 H261/90000
    """),
    "2.2-offer-2": rfc4317("""
        v=0
        o=alice 2890844526 2890844527 IN IP4 host.atlanta.example.com
        s=
        c=IN IP4 host.atlanta.example.com
        t=0 0
        m=audio 51372 RTP/AVP 0
        a=rtpmap:0 PCMU/8000
        m=video 0 RTP/AVP 31
        a=rtpmap:31 H261/90000
    """),
    "2.2-answer-2": rfc4317("""
        v=0
        o=bob 2808844564 2808844565 IN IP4 host.biloxi.example.com
        s=
        c=IN IP4 host.biloxi.example.com
        t=0 0
        m=audio 49172 RTP/AVP 0
        a=rtpmap:0 PCMU/8000
        m=video 0 RTP/AVP 31
        a=rtpmap:31 H261/90000
    """),
    # §2.3 Audio and Video 3: Bob renumbers iLBC from 97 to 99
    "2.3-answer": rfc4317("""
        v=0
        o=bob 2808844564 2808844564 IN IP4 host.biloxi.example.com
        s=
        c=IN IP4 host.biloxi.example.com
        t=0 0
        m=audio 49172 RTP/AVP 99
        a=rtpmap:99 iLBC/8000
        m=video 51374 RTP/AVP 31
        a=rtpmap:31 H261/90000
    """),
    # §2.4 Two Audio Streams
    "2.4-offer": rfc4317("""
        v=0
        o=alice 2890844526 2890844526 IN IP4 host.atlanta.example.com
        s=
        c=IN IP4 host.atlanta.example.com
        t=0 0
        m=audio 49170 RTP/AVP 0 97
        a=rtpmap:0 PCMU/8000
        a=rtpmap:97 iLBC/8000
        m=audio 49172 RTP/AVP 98
        a=rtpmap:98 telephone-event/8000
        a=sendonly
    """),
    "2.4-answer": rfc4317("""
        v=0
        o=bob 2808844564 2808844564 IN IP4 host.biloxi.example.com
        s=
        c=IN IP4 host.biloxi.example.com
        t=0 0
        m=audio 49172 RTP/AVP 97
        a=rtpmap:97 iLBC/8000
        m=audio 49174 RTP/AVP 98
        a=rtpmap:98 telephone-event/8000
        a=recvonly
    """),
    # §2.5 Audio and Video 4: Bob moves his media to a new host
    "2.5-offer": rfc4317("""
        v=0
        o=alice 2890844526 2890844526 IN IP4 host.atlanta.example.com
        s=
        c=IN IP4 host.atlanta.example.com
        t=0 0
        m=audio 49170 RTP/AVP 97
        a=rtpmap:97 iLBC/8000
        m=video 51372 RTP/AVP 31
        a=rtpmap:31 H261/90000
    """),
    "2.5-answer": rfc4317("""
        v=0
        o=bob 2808844564 2808844564 IN IP4 host.biloxi.example.com
        s=
        c=IN IP4 host.biloxi.example.com
        t=0 0
        m=audio 49174 RTP/AVP 97
        a=rtpmap:97 iLBC/8000
        m=video 49170 RTP/AVP 31
        a=rtpmap:31 H261/90000
    """),
    "2.5-offer-2": rfc4317("""
        v=0
        o=bob 2808844564 2808844565 IN IP4 host.biloxi.example.com
        s=
        c=IN IP4 newhost.biloxi.example.com
        t=0 0
        m=audio 49178 RTP/AVP 97
        a=rtpmap:97 iLBC/8000
        m=video 49188 RTP/AVP 31
        a=rtpmap:31 H261/90000
    """),
}
RFC4317["2.1-offer"] = RFC4317["2.2-offer"] = RFC4317["2.3-offer"] = ALICE_AV
# §2.5's second answer is Alice's first offer again, version unchanged.
RFC4317["2.5-answer-2"] = RFC4317["2.5-offer"]

# RFC 3264 §10.1 Basic Exchange ("telephone-events" is the RFC's own spelling)
RFC3264 = {
    "10.1-offer": wire("""
        v=0
        o=alice 2890844526 2890844526 IN IP4 host.anywhere.com
        s=
        c=IN IP4 host.anywhere.com
        t=0 0
        m=audio 49170 RTP/AVP 0
        a=rtpmap:0 PCMU/8000
        m=video 51372 RTP/AVP 31
        a=rtpmap:31 H261/90000
        m=video 53000 RTP/AVP 32
        a=rtpmap:32 MPV/90000
    """),
    "10.1-answer": wire("""
        v=0
        o=bob 2890844730 2890844730 IN IP4 host.example.com
        s=
        c=IN IP4 host.example.com
        t=0 0
        m=audio 49920 RTP/AVP 0
        a=rtpmap:0 PCMU/8000
        m=video 0 RTP/AVP 31
        m=video 53000 RTP/AVP 32
        a=rtpmap:32 MPV/90000
    """),
    "10.1-offer-2": wire("""
        v=0
        o=bob 2890844730 2890844731 IN IP4 host.example.com
        s=
        c=IN IP4 host.example.com
        t=0 0
        m=audio 65422 RTP/AVP 0
        a=rtpmap:0 PCMU/8000
        m=video 0 RTP/AVP 31
        m=video 53000 RTP/AVP 32
        a=rtpmap:32 MPV/90000
        m=audio 51434 RTP/AVP 110
        a=rtpmap:110 telephone-events/8000
        a=recvonly
    """),
    "10.1-answer-2": wire("""
        v=0
        o=alice 2890844526 2890844527 IN IP4 host.anywhere.com
        s=
        c=IN IP4 host.anywhere.com
        t=0 0
        m=audio 49170 RTP/AVP 0
        a=rtpmap:0 PCMU/8000
        m=video 0 RTP/AVP 31
        a=rtpmap:31 H261/90000
        m=video 53000 RTP/AVP 32
        a=rtpmap:32 MPV/90000
        m=audio 53122 RTP/AVP 110
        a=rtpmap:110 telephone-events/8000
        a=sendonly
    """),
    # §10.2 One of N Codec Selection
    "10.2-offer": wire("""
        v=0
        o=alice 2890844526 2890844526 IN IP4 host.anywhere.com
        s=
        c=IN IP4 host.anywhere.com
        t=0 0
        m=audio 62986 RTP/AVP 0 4 18
        a=rtpmap:0 PCMU/8000
        a=rtpmap:4 G723/8000
        a=rtpmap:18 G729/8000
        a=inactive
    """),
    "10.2-answer": wire("""
        v=0
        o=bob 2890844730 2890844731 IN IP4 host.example.com
        s=
        c=IN IP4 host.example.com
        t=0 0
        m=audio 54344 RTP/AVP 0 4
        a=rtpmap:0 PCMU/8000
        a=rtpmap:4 G723/8000
        a=inactive
    """),
    "10.2-offer-2": wire("""
        v=0
        o=alice 2890844526 2890844527 IN IP4 host.anywhere.com
        s=
        c=IN IP4 host.anywhere.com
        t=0 0
        m=audio 62986 RTP/AVP 4
        a=rtpmap:4 G723/8000
        a=sendrecv
    """),
}

ALL_EXAMPLES = {f"rfc4317-{k}": v for k, v in RFC4317.items()}
ALL_EXAMPLES |= {f"rfc3264-{k}": v for k, v in RFC3264.items()}


@pytest.mark.parametrize("name", sorted(ALL_EXAMPLES))
def test_rfc_examples_round_trip_byte_for_byte(name):
    data = ALL_EXAMPLES[name]
    sd = parse_sdp(data)
    assert bytes(sd) == data
    assert sd.serialize() == data
    # and a re-parse of the output reads the same
    assert bytes(parse_sdp(bytes(sd))) == data


def test_rfc4317_offer_fields():
    sd = parse_sdp(ALICE_AV)
    assert sd.version == 0
    o = sd.origin
    assert (o.username, o.sess_id, o.sess_version, o.nettype, o.addrtype, o.address) == (
        "alice", "2890844526", "2890844526", "IN", "IP4", "host.atlanta.example.com")
    assert sd.name == " "
    assert (sd.connection.nettype, sd.connection.addrtype, sd.connection.address) == (
        "IN", "IP4", "host.atlanta.example.com")
    assert sd.time == (0, 0)
    assert [m.media for m in sd.media] == ["audio", "video"]
    audio, video = sd.media
    assert (audio.port, audio.port_count, audio.proto) == (49170, None, "RTP/AVP")
    assert audio.formats == ["0", "8", "97"]
    assert audio.connection is None  # inherits the session's
    assert audio.rtp_address() == ("host.atlanta.example.com", 49170)
    assert video.rtp_address() == ("host.atlanta.example.com", 51372)
    assert audio.codecs() == [Codec(0, "PCMU", 8000), Codec(8, "PCMA", 8000), Codec(97, "iLBC", 8000)]
    assert [c.name for c in video.codecs()] == ["H261", "MPV"]
    assert audio.direction == video.direction == "sendrecv"
    assert audio.attribute_values("rtpmap") == ["0 PCMU/8000", "8 PCMA/8000", "97 iLBC/8000"]


def test_rfc4317_2_4_second_stream_is_sendonly_and_dtmf_only():
    sd = parse_sdp(RFC4317["2.4-offer"])
    assert [m.direction for m in sd.media] == ["sendrecv", "sendonly"]
    assert sd.media[1].codecs() == [Codec(98, "telephone-event", 8000)]
    assert sd.media[1].rtp_address() == ("host.atlanta.example.com", 49172)


def test_rfc3264_10_2_inactive_then_sendrecv():
    assert parse_sdp(RFC3264["10.2-offer"]).media[0].direction == "inactive"
    assert parse_sdp(RFC3264["10.2-offer-2"]).media[0].direction == "sendrecv"
    # G729 on static type 18 is named by a=rtpmap here and by RFC 3551 when that line is absent.
    assert parse_sdp(RFC3264["10.2-offer"]).media[0].codecs()[2] == Codec(18, "G729", 8000)


# ---------------------------------------------------------------------------------------------------
# Parsing details
# ---------------------------------------------------------------------------------------------------

RICH = wire("""
    v=0
    o=- 20518 0 IN IP4 203.0.113.1
    s=Call centre
    i=A session with every kind of line
    u=http://www.example.com/seminars/sdp.pdf
    e=j.doe@example.com (Jane Doe)
    c=IN IP4 203.0.113.1
    b=CT:128
    t=2873397496 2873404696
    r=7d 1h 0 25h
    z=2882844526 -1h 2898848070 0
    a=recvonly
    a=tool:switchcore-test
    m=audio 54400/2 RTP/SAVP 0 8 18 101 96
    i=voice
    c=IN IP4 198.51.100.7
    b=AS:64
    a=rtpmap:101 telephone-event/8000
    a=fmtp:101 0-16
    a=rtpmap:96 opus/48000/2
    a=fmtp:18 annexb=no
    a=ptime:20
    a=rtcp:54403 IN IP4 198.51.100.8
    a=x-vendor:something odd
    a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz
    m=video 0 RTP/AVP 31
    m=image 54402 udptl t38
    a=T38FaxVersion:0
    a=sendrecv
""")


def test_every_kind_of_line_round_trips():
    assert bytes(parse_sdp(RICH)) == RICH


def test_codecs_static_table_rtpmap_fmtp_and_channels():
    sd = parse_sdp(RICH)
    audio = sd.media[0]
    assert audio.port_count == 2
    assert audio.codecs() == [
        Codec(0, "PCMU", 8000, 1, None),
        Codec(8, "PCMA", 8000, 1, None),
        Codec(18, "G729", 8000, 1, "annexb=no"),
        Codec(101, "telephone-event", 8000, 1, "0-16"),
        Codec(96, "opus", 48000, 2, None),
    ]
    assert audio.ptime == 20
    assert audio.rtcp_address() == ("198.51.100.8", 54403)
    # a T.38 stream has no RTP payload types
    assert sd.media[2].codecs() == []
    assert sd.media[2].formats == ["t38"]
    assert sd.time == (2873397496, 2873404696)


def test_media_connection_overrides_session_connection():
    sd = parse_sdp(RICH)
    assert sd.media[0].rtp_address() == ("198.51.100.7", 54400)
    assert sd.media[2].rtp_address() == ("203.0.113.1", 54402)


def test_direction_session_level_is_inherited_and_media_level_overrides():
    sd = parse_sdp(RICH)
    assert sd.direction == "recvonly"
    assert sd.media[0].direction == "recvonly"  # no attribute of its own
    assert sd.media[2].direction == "sendrecv"  # its own a=sendrecv wins


def test_bare_lf_is_accepted_and_written_back_with_crlf():
    sd = parse_sdp(RFC4317["2.1-answer"].replace(b"\r\n", b"\n"))
    assert bytes(sd) == RFC4317["2.1-answer"]


def test_non_utf8_octets_survive():
    data = ALICE_AV.replace(b"s= ", b"s=Caf\xe9")
    assert bytes(parse_sdp(data)) == data


# ---------------------------------------------------------------------------------------------------
# RFC 5118 vectors, read in place
# ---------------------------------------------------------------------------------------------------

def vector_body(name: str) -> bytes:
    path = VECTORS / "rfc5118" / "valid" / name
    if not VECTORS.is_dir():
        pytest.skip(f"the shared SIP vectors are not at {VECTORS}")
    data = path.read_bytes()
    # index.tsv: both Content-Lengths are wrong (ipv6-in-sdp says 268 for 251 octets); the SDP is
    # everything after the blank line.
    return data.split(b"\r\n\r\n", 1)[1]


def test_vector_ipv6_in_sdp():
    body = vector_body("ipv6-in-sdp.sip")
    sd = parse_sdp(body)
    assert bytes(sd) == body
    assert (sd.origin.addrtype, sd.origin.address) == ("IP6", "2001:db8::20")
    assert (sd.connection.addrtype, sd.connection.address) == ("IP6", "2001:db8::20")
    assert sd.name == "Live video feed for today's meeting"
    assert [m.rtp_address() for m in sd.media] == [("2001:db8::20", 6000), ("2001:db8::20", 6024)]
    assert sd.media[0].codecs() == [Codec(2, "G726-32", 8000)]
    assert sd.media[1].codecs() == [Codec(107, "H263-1998", 90000)]


def test_vector_mult_ip_in_sdp():
    body = vector_body("mult-ip-in-sdp.sip")
    sd = parse_sdp(body)
    assert bytes(sd) == body
    assert sd.connection is None
    assert sd.name == ""
    assert [m.rtp_address() for m in sd.media] == [("192.0.2.1", 22334), ("2001:db8::1", 6024)]
    assert [m.connection.addrtype for m in sd.media] == ["IP4", "IP6"]


# ---------------------------------------------------------------------------------------------------
# Offer / answer
# ---------------------------------------------------------------------------------------------------

OURS = dict(address="192.0.2.10", port=30000, session_id=777, version=777)


def test_answer_keeps_m_lines_in_order_and_rejects_what_it_cannot_do():
    offer = parse_sdp(ALICE_AV)
    ans = answer(offer, ["PCMA", "PCMU", "telephone-event"], **OURS)
    assert [m.media for m in ans.media] == ["audio", "video"]
    audio, video = ans.media
    # the offerer's order (0 before 8), not ours
    assert audio.formats == ["0", "8"]
    assert audio.port == 30000
    assert audio.rtp_address() == ("192.0.2.10", 30000)
    assert (video.port, video.formats) == (0, ["31", "32"])
    assert ans.origin.username == "switchcore"
    assert (ans.origin.sess_id, ans.origin.sess_version, ans.origin.address) == ("777", "777", "192.0.2.10")
    assert ans.time == offer.time
    # it is itself valid SDP that round-trips
    assert bytes(parse_sdp(bytes(ans))) == bytes(ans)
    assert intersect(offer, ans) == [Codec(0, "PCMU", 8000), Codec(8, "PCMA", 8000)]


def test_answer_keeps_the_offers_dynamic_numbering_and_fmtp():
    offer = parse_sdp(wire("""
        v=0
        o=trunk 1 1 IN IP4 198.51.100.1
        s=-
        c=IN IP4 198.51.100.1
        t=0 0
        m=audio 20000 RTP/AVP 18 8 119
        a=rtpmap:119 telephone-event/8000
        a=fmtp:119 0-15
        a=ptime:30
    """))
    ans = answer(offer, ["PCMA", "telephone-event"], **OURS)
    m = ans.media[0]
    assert m.formats == ["8", "119"]
    assert m.codecs() == [Codec(8, "PCMA", 8000), Codec(119, "telephone-event", 8000, 1, "0-15")]
    assert m.ptime == 30
    assert m.direction == "sendrecv"


def test_telephone_event_is_never_accepted_alone_for_a_voice_stream():
    offer = parse_sdp(wire("""
        v=0
        o=trunk 1 1 IN IP4 198.51.100.1
        s=-
        c=IN IP4 198.51.100.1
        t=0 0
        m=audio 20000 RTP/AVP 18 101
        a=rtpmap:101 telephone-event/8000
    """))
    with pytest.raises(OfferAnswerError) as info:
        answer(offer, ["PCMU", "PCMA", "telephone-event"], **OURS)
    assert info.value.status == 488
    assert isinstance(info.value, RemoteProtocolError)
    assert "no common codec" in info.value.reason


def test_rfc4317_2_4_dtmf_stream_accepted_on_its_own_port():
    offer = parse_sdp(RFC4317["2.4-offer"])
    ans = answer(offer, ["iLBC", "telephone-event"], **OURS)
    bob = parse_sdp(RFC4317["2.4-answer"])
    # Same streams, formats and directions as Bob's answer in the RFC.
    assert [m.formats for m in ans.media] == [m.formats for m in bob.media] == [["97"], ["98"]]
    assert [m.direction for m in ans.media] == [m.direction for m in bob.media] == ["sendrecv", "recvonly"]
    assert [m.port for m in ans.media] == [30000, 30002]
    assert intersect(offer, ans) == intersect(offer, bob)


def test_no_common_codec_is_488():
    offer = parse_sdp(RFC3264["10.2-offer"])  # PCMU, G723, G729
    with pytest.raises(OfferAnswerError) as info:
        answer(offer, ["PCMA", "G722"], **OURS)
    assert info.value.status == 488
    assert "G729" in info.value.reason


def test_offer_with_only_rejected_streams_is_answered_not_refused():
    offer = parse_sdp(RFC4317["2.2-answer-2"].replace(b"m=audio 49172", b"m=audio 0"))
    ans = answer(offer, ["PCMU"], **OURS)
    assert [m.port for m in ans.media] == [0, 0]


def test_explicit_ports_per_stream():
    offer = parse_sdp(ALICE_AV)
    ans = answer(offer, ["PCMU", "H261"], **OURS, ports=[31000, 0])
    assert [m.port for m in ans.media] == [31000, 0]


@pytest.mark.parametrize("offered, expected", [
    ("sendrecv", "sendrecv"),
    ("sendonly", "recvonly"),
    ("recvonly", "sendonly"),
    ("inactive", "inactive"),
])
def test_answer_mirrors_direction(offered, expected):
    offer = parse_sdp(ALICE_AV.replace(b"m=video", f"a={offered}\r\nm=video".encode()))
    assert answer(offer, ["PCMU"], **OURS).media[0].direction == expected


def test_answer_mirrors_a_session_level_direction():
    offer = parse_sdp(ALICE_AV.replace(b"t=0 0\r\n", b"t=0 0\r\na=sendonly\r\n"))
    assert offer.media[0].direction == "sendonly"
    assert answer(offer, ["PCMU"], **OURS).media[0].direction == "recvonly"


@pytest.mark.parametrize("offered, ours, expected", [
    ("sendrecv", "sendonly", "sendonly"),   # we put them on hold
    ("sendonly", "sendonly", "inactive"),   # both on hold
    ("recvonly", "inactive", "inactive"),
    ("sendrecv", "sendrecv", "sendrecv"),   # resume
    ("sendonly", "sendrecv", "recvonly"),   # a limit never raises what the offer allows
])
def test_answer_direction_is_lowered_for_hold(offered, ours, expected):
    offer = parse_sdp(ALICE_AV.replace(b"m=video", f"a={offered}\r\nm=video".encode()))
    assert answer(offer, ["PCMU"], **OURS, direction=ours).media[0].direction == expected


def test_intersect_matches_renumbered_dynamic_types():
    # RFC 4317 §2.3: Bob answers iLBC as 99 where Alice offered 97; both agreed on iLBC and H261.
    agreed = intersect(parse_sdp(ALICE_AV), parse_sdp(RFC4317["2.3-answer"]))
    assert agreed == [Codec(99, "iLBC", 8000), Codec(31, "H261", 90000)]


def test_intersect_skips_rejected_streams_and_keeps_answer_order():
    assert intersect(parse_sdp(ALICE_AV), parse_sdp(RFC4317["2.2-answer"])) == [
        Codec(0, "PCMU", 8000), Codec(8, "PCMA", 8000)]
    assert intersect(parse_sdp(ALICE_AV), parse_sdp(RFC4317["2.1-answer"])) == [
        Codec(0, "PCMU", 8000), Codec(32, "MPV", 90000)]
    reordered = parse_sdp(RFC4317["2.2-answer"].replace(b"RTP/AVP 0 8", b"RTP/AVP 8 0"))
    assert [c.name for c in intersect(parse_sdp(ALICE_AV), reordered)] == ["PCMA", "PCMU"]


# ---------------------------------------------------------------------------------------------------
# Hold and resume
# ---------------------------------------------------------------------------------------------------

HOLD_2543 = wire("""
    v=0
    o=agent 5 6 IN IP4 192.0.2.77
    s=-
    c=IN IP4 0.0.0.0
    t=0 0
    m=audio 4000 RTP/AVP 0
""")


@pytest.mark.parametrize("attribute, direction, hold", [
    ("a=sendonly", "sendonly", True),
    ("a=inactive", "inactive", True),
    ("a=sendrecv", "sendrecv", False),
    ("a=recvonly", "recvonly", False),
    ("", "sendrecv", False),
])
def test_hold_and_resume(attribute, direction, hold):
    text = RFC4317["2.5-offer-2"]
    if attribute:
        text = text.replace(b"m=video", f"{attribute}\r\nm=video".encode())
    sd = parse_sdp(text)
    assert hold_direction(sd) == direction
    assert is_hold(sd) is hold


def test_rfc2543_hold_with_unspecified_address():
    sd = parse_sdp(HOLD_2543)
    assert hold_direction(sd) == "sendonly"
    assert is_hold(sd)
    assert hold_direction(parse_sdp(HOLD_2543 + b"a=recvonly\r\n")) == "inactive"


def test_hold_reads_the_first_active_audio_stream():
    # RFC 4317 §3.1: Bob answers sendonly, then resumes in his second offer.
    answer_on_hold = parse_sdp(wire("""
        v=0
        o=bob 2808844564 2808844564 IN IP4 host.biloxi.example.com
        s=
        c=IN IP4 placeholder.biloxi.example.com
        t=0 0
        m=audio 49172 RTP/AVP 97
        a=rtpmap:97 iLBC/8000
        a=sendonly
    """))
    assert is_hold(answer_on_hold)
    rejected_first = parse_sdp(RFC4317["2.4-offer"].replace(b"m=audio 49170", b"m=audio 0"))
    assert hold_direction(rejected_first) == "sendonly"  # the DTMF stream is the first active one


# ---------------------------------------------------------------------------------------------------
# Anchoring
# ---------------------------------------------------------------------------------------------------

WEBRTC_ISH = wire("""
    v=0
    o=phone 4242 1 IN IP4 10.1.2.3
    s=-
    c=IN IP4 10.1.2.3
    t=0 0
    a=ice-lite
    m=audio 49170 RTP/AVP 0 101
    c=IN IP4 10.1.2.4
    a=rtpmap:101 telephone-event/8000
    a=rtcp:49171 IN IP4 10.1.2.4
    a=candidate:1 1 UDP 2130706431 10.1.2.4 49170 typ host
    a=ice-ufrag:abcd
    a=ice-pwd:0123456789abcdefghijkl
    a=sendrecv
    m=video 51372 RTP/AVP 31
    c=IN IP4 10.1.2.5
    a=rtpmap:31 H261/90000
""")


def test_anchor_rewrites_every_address_and_the_audio_port():
    leg = parse_sdp(WEBRTC_ISH)
    out = anchor(leg, address="192.0.2.10", port=30000, session_id=900, version=901)
    text = bytes(out)
    # Nothing of the leg's addresses is left for the other leg to see.
    assert b"10.1.2." not in text
    assert out.connection.address == "192.0.2.10"
    assert [m.connection.address for m in out.media] == ["192.0.2.10", "192.0.2.10"]
    assert out.media[0].rtp_address() == ("192.0.2.10", 30000)
    assert out.media[0].rtcp_address() == ("192.0.2.10", 30001)
    assert out.media[1].port == 0  # the relay carries the first audio stream only
    assert not out.media[0].has_attribute("candidate") and not out.has_attribute("ice-lite")
    o = out.origin
    assert (o.username, o.sess_id, o.sess_version, o.addrtype, o.address) == (
        "switchcore", "900", "901", "IP4", "192.0.2.10")
    # Codecs and direction pass through untouched, and the leg's own description is unchanged.
    assert out.media[0].codecs() == leg.media[0].codecs()
    assert out.media[0].direction == "sendrecv"
    assert bytes(leg) == WEBRTC_ISH
    assert bytes(parse_sdp(text)) == text


def test_anchor_ipv6_and_version_bump():
    body = RFC4317["2.1-answer"]
    first = anchor(parse_sdp(body), address="2001:db8::53", port=40000, session_id=5, version=5)
    assert (first.origin.addrtype, first.connection.addrtype) == ("IP6", "IP6")
    assert b"c=IN IP6 2001:db8::53\r\n" in bytes(first)
    assert first.media[0].rtp_address() == ("2001:db8::53", 40000)
    again = anchor(parse_sdp(RFC4317["2.2-answer-2"]), address="2001:db8::53", port=40002, session_id=5,
                   version=6)
    assert (again.origin.sess_id, again.origin.sess_version) == ("5", "6")


def test_anchor_of_the_mult_ip_vector():
    sd = parse_sdp(vector_body("mult-ip-in-sdp.sip"))
    out = anchor(sd, address="192.0.2.10", port=30000, session_id=1, version=1, ports=[30000, 30002])
    assert [m.rtp_address() for m in out.media] == [("192.0.2.10", 30000), ("192.0.2.10", 30002)]
    assert [m.connection.addrtype for m in out.media] == ["IP4", "IP4"]


def test_anchor_keeps_an_rfc2543_hold_address():
    out = anchor(parse_sdp(HOLD_2543), address="192.0.2.10", port=30000, session_id=1, version=2)
    assert out.connection.address == "0.0.0.0"
    assert is_hold(out)
    assert b"192.0.2.77" not in bytes(out)


def test_originator_raises_the_version_only_when_the_description_changes():
    leg = Originator(session_id=3000)
    first = leg.anchor(parse_sdp(ALICE_AV), address="192.0.2.10", port=30000)
    same = leg.anchor(parse_sdp(ALICE_AV), address="192.0.2.10", port=30000)
    held = leg.anchor(parse_sdp(ALICE_AV.replace(b"m=video", b"a=sendonly\r\nm=video")),
                      address="192.0.2.10", port=30000)
    assert [d.origin.sess_version for d in (first, same, held)] == ["3000", "3000", "3001"]
    assert {d.origin.sess_id for d in (first, same, held)} == {"3000"}


# ---------------------------------------------------------------------------------------------------
# Malformed SDP → 400 with a reason
# ---------------------------------------------------------------------------------------------------

GOOD = RFC4317["2.1-answer"]


@pytest.mark.parametrize("data, words", [
    (b"", "empty"),
    (GOOD.replace(b"v=0\r\n", b""), "v="),
    (GOOD.replace(b"v=0", b"v=1"), "version"),
    (GOOD.replace(b"m=audio 49174 RTP/AVP 0", b"m=audio"), "m= line"),
    (GOOD.replace(b"m=audio 49174 RTP/AVP 0", b"m=audio 49174 RTP/AVP"), "no formats"),
    (GOOD.replace(b"m=audio 49174", b"m=audio 49x74"), "port"),
    (GOOD.replace(b"m=audio 49174", b"m=audio 70000"), "port"),
    (GOOD.replace(b"m=audio 49174", b"m=audio 49174/x"), "port count"),
    (GOOD.replace(b"o=bob 2808844564 2808844564 IN IP4 host.biloxi.example.com\r\n", b""), "o="),
    (GOOD.replace(b"o=bob 2808844564", b"o=bob"), "o="),
    (GOOD.replace(b"c=IN IP4 host.biloxi.example.com", b"c=IN IP4"), "c="),
    (GOOD.replace(b"c=IN IP4 host.biloxi.example.com\r\n", b""), "no c="),
    (GOOD.replace(b"a=rtpmap:0 PCMU/8000", b"a=rtpmap:0 PCMU"), "rtpmap"),
    (GOOD.replace(b"t=0 0", b"t=now"), "t="),
    (GOOD.replace(b"s= \r\n", b"s= \r\nthis is not sdp\r\n"), "line 4"),
    (GOOD + b"x=unknown\r\n", "unknown type"),
])
def test_malformed_sdp_is_400_with_a_reason(data, words):
    with pytest.raises(RemoteProtocolError) as info:
        parse_sdp(data)
    assert info.value.status == 400
    assert not isinstance(info.value, OfferAnswerError)
    assert words in info.value.reason
