"""Calls to a phone registered over TCP, through a real node on loopback (RFC 3261 §18.1.1, §18.2.2).

The phone registers over a TCP connection and closes it, as many phones do between requests. A call
to it then makes the node open a connection of its own to the phone's registered Contact; every
request of the dialog goes over TCP with a TCP Via and the node's Contact asks for TCP back
(§8.1.1.7, §8.1.1.8); the phone answers over the connection the INVITE came on. The caller is on
UDP and is bridged as usual. A Contact nobody listens on fails the call at once (a transport error,
§17.1.1.2), not after Timer B.
"""
from __future__ import annotations

import re
import secrets
import socket
import time

from tests.node import (
    HOST,
    UdpClient,
    digest_authorization,
    new_branch,
    new_call_id,
    parse_challenge,
    read_response,
)

USERS = {"1001": "secret1001"}
CONFIG = """
[sip]
realm = "switchcore"

[[users]]
name = "1001"
password = "secret1001"

[[routes]]
name = "phone"
match = "exact"
pattern = "1001"
target = "user:1001"
"""
OFFER = (b"v=0\r\no=caller 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
         b"m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")
ANSWER = (b"v=0\r\no=phone 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
          b"m=audio 41000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")


class Stream:
    """One end of a SIP TCP connection: messages written whole, read back framed by Content-Length
    (§18.3), independently of the node's framer."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read(self, timeout: float = 5.0) -> bytes | None:
        deadline = time.monotonic() + timeout
        while True:
            head, sep, rest = self.buffer.partition(b"\r\n\r\n")
            if sep:
                m = re.search(rb"\r\n(?:Content-Length|l)\s*:\s*(\d+)", head, re.I)
                length = int(m.group(1)) if m else 0
                if len(rest) >= length:
                    self.buffer = rest[length:]
                    return head + sep + rest[:length]
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                return None
            if not chunk:
                return None
            self.buffer += chunk


def headers_of(message: bytes) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in message.split(b"\r\n\r\n", 1)[0].decode().split("\r\n")[1:]:
        name, _, value = line.partition(":")
        out.setdefault(name.strip().lower(), []).append(value.strip())
    return out


def request(method: str, uri: str, via: str, call_id: str, cseq: int, from_: str, to: str,
            headers=(), body: bytes = b"") -> bytes:
    lines = [f"{method} {uri} SIP/2.0", f"Via: {via}", "Max-Forwards: 70", f"From: {from_}", f"To: {to}",
             f"Call-ID: {call_id}", f"CSeq: {cseq} {method}", *[f"{n}: {v}" for n, v in headers],
             f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def response_to(req: bytes, status: int, reason: str, to_tag: str, headers=(), body: bytes = b"") -> bytes:
    """The phone's response to ``req`` (§8.2.6: Via, From, To, Call-ID and CSeq copied)."""
    h = headers_of(req)
    to = h["to"][0] if ";tag=" in h["to"][0] else f"{h['to'][0]};tag={to_tag}"
    lines = [f"SIP/2.0 {status} {reason}", *[f"Via: {v}" for v in h["via"]], f"From: {h['from'][0]}",
             f"To: {to}", f"Call-ID: {h['call-id'][0]}", f"CSeq: {h['cseq'][0]}",
             *[f"{n}: {v}" for n, v in headers], f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def register_over_tcp(node, contact_port: int) -> None:
    """REGISTER 1001 over a TCP connection of its own with a TCP Contact (digest answered), then close
    the connection."""
    uri, aor, call_id = f"sip:{HOST}:{node.port}", f"sip:1001@{HOST}", new_call_id()
    contact = f"<sip:1001@{HOST}:{contact_port};transport=tcp>"
    with socket.create_connection(node.addr, timeout=5) as conn:
        stream = Stream(conn)
        port = conn.getsockname()[1]
        extra = [("Contact", contact), ("Expires", "600")]
        for cseq in (1, 2):
            stream.send(request("REGISTER", uri, f"SIP/2.0/TCP {HOST}:{port};branch={new_branch()}", call_id,
                                cseq, f"<{aor}>;tag=r1", f"<{aor}>", extra))
            answer = read_response(stream.read())
            if answer.status != 401:
                break
            auth = digest_authorization(parse_challenge(answer.header("www-authenticate")), "REGISTER", uri,
                                        "1001", USERS["1001"])
            extra = [*extra, ("Authorization", auth)]
        assert answer.status == 200, answer.raw
        # The phone closes the connection and waits for the node's end of it: from then on the node
        # has no connection left to the phone (a request written before it saw the close is lost).
        conn.shutdown(socket.SHUT_WR)
        conn.settimeout(5)
        assert conn.recv(1) == b""


def invite_from_caller(caller: UdpClient, node, call_id: str) -> bytes:
    return request("INVITE", f"sip:1001@{HOST}:{node.port}",
                   f"SIP/2.0/UDP {HOST}:{caller.port};branch={new_branch()};rport", call_id, 1,
                   f"<sip:caller@{HOST}>;tag=c1", f"<sip:1001@{HOST}>",
                   [("Contact", f"<sip:caller@{HOST}:{caller.port}>"), ("Content-Type", "application/sdp")],
                   OFFER)


def test_a_call_to_a_phone_registered_over_tcp_opens_a_connection_to_its_contact(start_node):
    node = start_node(CONFIG)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener, UdpClient() as caller:
        listener.bind((HOST, 0))
        listener.listen()
        phone_port = listener.getsockname()[1]
        register_over_tcp(node, phone_port)

        call_id = new_call_id()
        caller.send(invite_from_caller(caller, node, call_id), node.addr)
        # §18.1.1: no connection to the phone is left, so the node opens one to its Contact.
        listener.settimeout(5)
        conn, _ = listener.accept()
        with conn:
            phone = Stream(conn)
            invite = phone.read()
            assert invite is not None and invite.startswith(f"INVITE sip:1001@{HOST}:{phone_port};transport=tcp ".encode())
            h = headers_of(invite)
            # The Via names TCP and the node's TCP listener (§18.1.1); the Contact asks for TCP (§8.1.1.8).
            assert re.fullmatch(rf"SIP/2\.0/TCP {HOST}:{node.port};branch=z9hG4bK\w+;rport", h["via"][0]), h["via"]
            assert h["contact"] == [f"<sip:switchcore@{HOST}:{node.port};transport=tcp>"], h["contact"]

            # The phone answers over the connection the INVITE came on (§18.2.2).
            tag = secrets.token_hex(4)
            phone.send(response_to(invite, 180, "Ringing", tag,
                                   [("Contact", f"<sip:1001@{HOST}:{phone_port};transport=tcp>")]))
            phone.send(response_to(invite, 200, "OK", tag,
                                   [("Contact", f"<sip:1001@{HOST}:{phone_port};transport=tcp>"),
                                    ("Content-Type", "application/sdp")], ANSWER))
            ack = phone.read()
            assert ack is not None and ack.startswith(b"ACK "), ack
            assert headers_of(ack)["via"][0].startswith(f"SIP/2.0/TCP {HOST}:{node.port};branch=")

            # The caller (UDP) is answered, with the node's SDP, and ACKs.
            ok = caller.response(call_id, 5)
            assert ok is not None and ok.status == 200, ok
            assert ok.body.startswith(b"v=0")
            to = ok.header("to")
            route = ok.header("contact").strip("<>")
            caller.send(request("ACK", route, f"SIP/2.0/UDP {HOST}:{caller.port};branch={new_branch()};rport",
                                call_id, 1, f"<sip:caller@{HOST}>;tag=c1", to), node.addr)

            # The caller hangs up: the BYE reaches the phone over TCP, with a TCP Via.
            caller.send(request("BYE", route, f"SIP/2.0/UDP {HOST}:{caller.port};branch={new_branch()};rport",
                                call_id, 2, f"<sip:caller@{HOST}>;tag=c1", to), node.addr)
            bye = phone.read()
            assert bye is not None and bye.startswith(f"BYE sip:1001@{HOST}:{phone_port};transport=tcp ".encode()), bye
            assert headers_of(bye)["via"][0].startswith(f"SIP/2.0/TCP {HOST}:{node.port};branch=")
            phone.send(response_to(bye, 200, "OK", tag))
            done = caller.response(call_id, 5)
            assert done is not None and done.status == 200 and "BYE" in done.header("cseq")
            # Nothing else came to the phone over UDP or a second connection: one stream, in order.
            listener.settimeout(0.2)
            try:
                extra, _ = listener.accept()
            except socket.timeout:
                extra = None
            assert extra is None, "the node opened a second connection to the phone"
    assert "Traceback" not in node.stderr()


def test_a_phone_whose_contact_refuses_the_connection_fails_the_call_at_once(start_node):
    node = start_node(CONFIG)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as closed, UdpClient() as caller:
        closed.bind((HOST, 0))  # bound, never listening: a connection to it is refused
        register_over_tcp(node, closed.getsockname()[1])
        call_id = new_call_id()
        started = time.monotonic()
        caller.send(invite_from_caller(caller, node, call_id), node.addr)
        final = caller.response(call_id, 10)
        # §17.1.1.2: the transport error fails the INVITE transaction now, not after Timer B (32 s).
        assert final is not None and final.status == 503, final
        assert time.monotonic() - started < 5
        caller.send(request("ACK", f"sip:1001@{HOST}:{node.port}",
                            final.header("via"), call_id, 1, f"<sip:caller@{HOST}>;tag=c1", final.header("to")),
                    node.addr)
    assert "Traceback" not in node.stderr()
