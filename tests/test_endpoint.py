"""The endpoint's answers (RFC 3261 §8.2), driven in memory: datagrams in, datagrams out.

Each test feeds bytes as the transport would and reads what the endpoint sends back, and to whom.
Vectors from ../shared/vectors are used byte for byte where they fit.
"""
from pathlib import Path

import pytest

from bindings.storage import Storage
from core.config import default_config
from core.registrar import Registrar
from core.sip.addr import Peer
from core.sip.endpoint import ALLOW, Endpoint
from core.sip.message import parse

VECTORS = Path(__file__).resolve().parents[1].parent / "shared" / "vectors" / "sip"
PHONE = Peer("udp", "127.0.0.1", 5999)


@pytest.fixture
def endpoint(tmp_path):
    storage = Storage(tmp_path)
    yield Endpoint(Registrar(default_config(), storage.bindings(), b"k" * 32))
    storage.close()


def request(method: str, *, cseq_method: str | None = None, branch: str = "z9hG4bKep1",
            extra: str = "", to_tag: str = "") -> bytes:
    return (
        f"{method} sip:service@127.0.0.1:5060 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5999;branch={branch};rport\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:alice@127.0.0.1>;tag=a1\r\n"
        f"To: <sip:service@127.0.0.1>{to_tag}\r\n"
        f"Call-ID: {branch}@127.0.0.1\r\n"
        f"CSeq: 1 {cseq_method or method}\r\n"
        f"{extra}"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def exchange(endpoint, data: bytes, peer: Peer = PHONE, now: float = 1000.0):
    endpoint.receive_datagram(data, peer, now)
    return [(parse(out), to) for out, to in endpoint.datagrams_to_send()]


def vector(name: str) -> bytes:
    path = VECTORS / name
    if not path.is_file():
        pytest.skip(f"the SIP vectors are not at {VECTORS} (../shared/vectors/sip beside the repo)")
    return path.read_bytes()


def test_options_is_answered_with_what_the_node_serves(endpoint):
    [(resp, to)] = exchange(endpoint, request("OPTIONS"))
    assert (resp.status, to) == (200, PHONE)
    assert resp.header_values("Allow") == list(ALLOW)
    assert resp.header("Accept") == "application/sdp"
    # No option tags yet: the header is there, empty (§20.37 allows an empty list).
    assert b"\r\nSupported: \r\n" in resp.raw
    assert resp.to_tag  # a final response carries a To tag (§8.2.6.2)
    # RFC 3581: rport filled in, received stamped on the top Via.
    assert resp.top_via.params["rport"] == "5999"
    assert resp.top_via.params["received"] == "127.0.0.1"


def test_a_retransmitted_request_gets_the_same_answer_again(endpoint):
    [(first, _)] = exchange(endpoint, request("OPTIONS"))
    [(again, _)] = exchange(endpoint, request("OPTIONS"), now=1000.5)
    assert again.raw == first.raw


@pytest.mark.parametrize("name, status", [
    ("rfc4475/valid/intmeth.sip", 501),   # an unknown method: 501 with Allow (§8.2.1)
    ("rfc4475/valid/unkscm.sip", 416),    # unknown Request-URI scheme (§8.2.2.1)
    ("rfc4475/valid/novelsc.sip", 416),   # soap.beep: is not a scheme we serve
    ("rfc4475/valid/bext01.sip", 420),    # Require with unknown option tags (§8.2.2.3)
    ("rfc4475/valid/invut.sip", 415),     # a body of type application/unknownformat (§8.2.3)
])
def test_torture_vectors_get_the_rfc_answer(endpoint, name, status):
    *provisional, (resp, to) = exchange(endpoint, vector(name))
    assert [r.status for r, _ in provisional] == ([100] if resp.cseq_method == "INVITE" else [])
    assert resp.status == status
    # The packet's source address, never a host named in the message (§18.2.2); with no rport,
    # the Via's port, 5060 by default (RFC 3581 §4).
    assert to == PHONE._replace(port=5060)
    if status == 501:
        assert "OPTIONS" in resp.header_values("Allow")
    if status == 415:
        assert resp.header("Accept") == "application/sdp"
    if status == 420:
        assert resp.header_values("Unsupported") == ["nothingSupportsThis", "nothingSupportsThisEither"]


def test_malformed_request_gets_400_naming_the_problem(endpoint):
    [(resp, to)] = exchange(endpoint, request("OPTIONS", cseq_method="INVITE"))
    assert (resp.status, to) == (400, PHONE)
    assert "CSeq" in resp.reason
    assert endpoint.stats["answered_malformed"] == 1


def test_malformed_response_is_dropped(endpoint):
    assert exchange(endpoint, vector("rfc4475/invalid/bigcode.sip")) == []
    assert endpoint.stats["dropped"] == 1


def test_version_other_than_2_0_gets_505(endpoint):
    endpoint.receive_datagram(vector("rfc4475/invalid/badvers.sip"), PHONE, 1000.0)
    [(data, to)] = endpoint.datagrams_to_send()
    # The Via is echoed as received (SIP/7.0), so the answer is read by its status line.
    assert data.startswith(b"SIP/2.0 505 ") and to == PHONE


def test_bye_outside_a_dialog_gets_481(endpoint):
    [(resp, _)] = exchange(endpoint, request("BYE", to_tag=";tag=nobody"))
    assert resp.status == 481


def test_invite_with_no_route_gets_trying_then_404_and_the_ack_is_absorbed(endpoint):
    out = exchange(endpoint, request("INVITE", branch="z9hG4bKinv1"))
    assert [resp.status for resp, _ in out] == [100, 404]
    final = out[1][0]
    ack = (
        "ACK sip:service@127.0.0.1:5060 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKinv1;rport\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:alice@127.0.0.1>;tag=a1\r\n"
        f"To: <sip:service@127.0.0.1>;tag={final.to_tag}\r\n"
        "Call-ID: z9hG4bKinv1@127.0.0.1\r\n"
        "CSeq: 1 ACK\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    # The ACK ends Timer G's retransmissions of the 404 (§17.2.1): nothing more is sent.
    assert exchange(endpoint, ack, now=1000.1) == []
    endpoint.handle_timer(1002.0)
    assert endpoint.datagrams_to_send() == []


def test_unacknowledged_404_is_retransmitted_on_timer_g(endpoint):
    exchange(endpoint, request("INVITE", branch="z9hG4bKinv2"))
    endpoint.handle_timer(1000.0 + 0.5)
    [(data, to)] = endpoint.datagrams_to_send()
    assert parse(data).status == 404 and to == PHONE


def test_a_draining_endpoint_refuses_new_requests_with_503(endpoint):
    endpoint.drain(1000.0)
    [(resp, _)] = exchange(endpoint, request("OPTIONS"))
    assert resp.status == 503
    assert resp.header("Retry-After") == "5"


def test_register_without_credentials_is_challenged(endpoint):
    [(resp, _)] = exchange(endpoint, request("REGISTER", extra="Contact: <sip:1001@127.0.0.1:5999>\r\n"))
    assert resp.status == 401
    algorithms = [v.split("algorithm=")[1].split(",")[0] for v in resp.header_values("WWW-Authenticate")]
    assert algorithms == ["SHA-256", "MD5"]
