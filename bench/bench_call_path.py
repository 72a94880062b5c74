"""The switch's own work per B2BUA call, in one process, without the kernel or the load generator:

    python bench/bench_call_path.py [--calls 20000] [--media] [--profile out.prof]
    python -m pytest bench/bench_call_path.py --benchmark-enable

The node's SIP path (``core.sip.endpoint.Endpoint`` with its transactions and sessions, the B2BUA,
the SDP rewrite) is built as ``bindings/node.py`` builds it, from the config of the SIPp benches
(``sipp_node.b2bua_config``: a trunk to a callee, every number routed to it), and fed the datagrams
of the call flow SIPp plays in ``bench/compare_kamailio.py`` (``tests/interop/scenarios/uac_call.xml`` and
``uas_answer.xml``): INVITE with an SDP offer; 100, 180 and 200 with an answer from the callee;
ACK; BYE from the caller; 200. The callee's responses are made from the INVITE the switch sent, as a
UAS would. Only the switch's calls are timed (``receive_datagram`` and ``handle_timer``, draining
the call layer's events, ``datagrams_to_send``), not the making of the peers' messages; the time
is this thread's CPU time, so that other work on a shared machine does not count.

Simulated time runs at ``--rate`` calls a second, so that transactions time out (Timers J, K, L,
M) and leave as they would in a node, and the wheel carries the same load.

``--media`` also opens and closes each call's relay in the media engine (``bindings/media.py``'s
``MediaPlane.bridge`` / ``release``, real sockets, the engine's thread not running), as the node
does for every anchored call. Call records (LMDB) are not written here: ``bench/bench_cdr.py``
measures them.

``test_sdp_of_a_call`` (pytest only) times the call's SDP work alone: A's offer parsed, restricted and
anchored for B, B's answer parsed, intersected and anchored for A.

Printed: microseconds of the switch's work per call (median of ``--rounds``), and the number of
datagrams it sent per call (a check that every call went through whole).
"""
from __future__ import annotations

import argparse
import gc
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from core.config import decode_config  # noqa: E402
from bindings.storage import Storage  # noqa: E402
from core.memory import set_untracking, untracking as untracking_on  # noqa: E402
from core.registrar import Registrar  # noqa: E402
from core.sip.addr import Peer  # noqa: E402
from core.sip.endpoint import Endpoint  # noqa: E402
from core.sip.session import SessionLayer  # noqa: E402
from core.call import B2BUA  # noqa: E402
from core.call.b2bua import _restrict  # noqa: E402
from core.sdp import Originator, intersect, parse_sdp  # noqa: E402
from sipp_node import CALLEE as CALLEE_HOST, b2bua_config  # noqa: E402

SWITCH = Peer("udp", "127.0.0.5", 5060)
CALLER = Peer("udp", "127.0.0.1", 5061)
CALLEE = Peer("udp", CALLEE_HOST, 5062)
CONFIG = b2bua_config(CALLEE.port, 20000)

OFFER = (b"v=0\r\no=caller 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
         b"m=audio 49170 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
         b"a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=sendrecv\r\n")
ANSWER = (b"v=0\r\no=callee 53655765 2353687637 IN IP4 127.0.0.3\r\ns=-\r\nc=IN IP4 127.0.0.3\r\nt=0 0\r\n"
          b"m=audio 6000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
          b"a=fmtp:101 0-15\r\na=sendrecv\r\n")

_HEADER = {name: re.compile(rb"\r\n" + name + rb": ([^\r\n]*)") for name in
           (b"Via", b"From", b"To", b"Call-ID", b"CSeq", b"Contact")}


def _header(data: bytes, name: bytes) -> bytes:
    m = _HEADER[name].search(data)
    if m is None:
        raise AssertionError(f"no {name.decode()} in:\n{data.decode(errors='replace')}")
    return m.group(1)


def caller_invite(i: int) -> bytes:
    return (f"INVITE sip:0301234@{SWITCH.host}:{SWITCH.port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {CALLER.host}:{CALLER.port};branch=z9hG4bK-{i}-1;rport\r\n"
            f"From: sipp <sip:5550100@{CALLER.host}:{CALLER.port}>;tag={i}SIPpTag001\r\n"
            f"To: <sip:0301234@{SWITCH.host}:{SWITCH.port}>\r\n"
            f"Call-ID: {i}-bench@{CALLER.host}\r\nCSeq: 1 INVITE\r\n"
            f"Contact: <sip:5550100@{CALLER.host}:{CALLER.port}>\r\nMax-Forwards: 70\r\n"
            f"Content-Type: application/sdp\r\nContent-Length: {len(OFFER)}\r\n\r\n").encode() + OFFER


def caller_in_dialog(i: int, method: str, cseq: int, to: bytes) -> bytes:
    return (f"{method} sip:0301234@{SWITCH.host}:{SWITCH.port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {CALLER.host}:{CALLER.port};branch=z9hG4bK-{i}-{cseq}{method};rport\r\n"
            f"From: sipp <sip:5550100@{CALLER.host}:{CALLER.port}>;tag={i}SIPpTag001\r\n"
            f"To: {to.decode()}\r\nCall-ID: {i}-bench@{CALLER.host}\r\nCSeq: {cseq} {method}\r\n"
            f"Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode()


def callee_response(request: bytes, status: str, to_tag: str | None, body: bytes = b"") -> bytes:
    to = _header(request, b"To")
    if to_tag is not None:
        to += f";tag={to_tag}".encode()
    head = (b"SIP/2.0 " + status.encode() + b"\r\nVia: " + _header(request, b"Via") + b"\r\nFrom: "
            + _header(request, b"From") + b"\r\nTo: " + to + b"\r\nCall-ID: " + _header(request, b"Call-ID")
            + b"\r\nCSeq: " + _header(request, b"CSeq") + b"\r\n")
    if body:
        head += (f"Contact: <sip:callee@{CALLEE.host}:{CALLEE.port}>\r\nContent-Type: application/sdp\r\n"
                 ).encode()
    return head + f"Content-Length: {len(body)}\r\n\r\n".encode() + body


class Path_:
    """The switch as the node builds it, and the peers' side of each call."""

    def __init__(self, data_dir: str, media: bool):
        self.config = decode_config(CONFIG.encode(), "bench.toml")
        self.storage = Storage(data_dir)
        registrar = Registrar(self.config, self.storage.bindings(), b"k" * 32)
        self.endpoint = Endpoint(registrar)
        sessions = SessionLayer(self.endpoint.transactions, SWITCH, user="switchcore")
        self.calls = self.endpoint.calls = B2BUA(self.config, sessions, registrar)
        self.calls.start(0.0)
        self.media = None
        if media:
            from bindings.media import MediaPlane
            self.media = MediaPlane(self.config.media, calls=self.config.calls, data_dir=data_dir)
        self.busy = 0  # ns of the switch's own work
        self.sent = 0
        self.now = 1_000.0

    def close(self) -> None:
        if self.media is not None:
            self.media.engine.close()
        self.storage.close()

    def _step(self, data: bytes | None, peer: Peer | None) -> list[tuple[bytes, Peer]]:
        from core.call import MediaBridge, MediaRelease
        t0 = time.thread_time_ns()
        if data is None:
            self.endpoint.handle_timer(self.now)
        else:
            self.endpoint.receive_datagram(data, peer, self.now)
        calls, media = self.calls, self.media
        while (event := calls.next_event()) is not None:
            if media is not None:
                if type(event) is MediaBridge:
                    media.bridge(event)
                elif type(event) is MediaRelease:
                    media.release(event.call_id)
                    media.take_figures(event.call_id)
        out = self.endpoint.datagrams_to_send()
        self.busy += time.thread_time_ns() - t0
        self.sent += len(out)
        return out

    def _timers(self) -> None:
        deadline = self.endpoint.get_timer()
        if deadline is not None and deadline <= self.now:
            self._step(None, None)

    def call(self, i: int, step: float) -> None:
        out = self._step(caller_invite(i), CALLER)
        invite = next(d for d, p in out if p == CALLEE and d.startswith(b"INVITE "))
        tag = f"callee{i}"
        self._step(callee_response(invite, "100 Trying", None), CALLEE)
        self._step(callee_response(invite, "180 Ringing", tag), CALLEE)
        out = self._step(callee_response(invite, "200 OK", tag, ANSWER), CALLEE)
        ok = next(d for d, p in out if p == CALLER and d.startswith(b"SIP/2.0 200"))
        to = _header(ok, b"To")
        out = self._step(caller_in_dialog(i, "ACK", 1, to), CALLER)
        self.now += step
        self._timers()
        out = self._step(caller_in_dialog(i, "BYE", 2, to), CALLER)
        bye = next(d for d, p in out if p == CALLEE and d.startswith(b"BYE "))
        self._step(callee_response(bye, "200 OK", tag), CALLEE)
        self._timers()


def run(calls: int, rate: float, media: bool, profile: str | None = None) -> tuple[float, float]:
    """(µs of the switch's work per call, datagrams sent per call) over ``calls`` calls."""
    with tempfile.TemporaryDirectory(prefix="switchcore-callpath-") as tmp:
        path = Path_(tmp, media)
        untracking = untracking_on()
        try:
            for i in range(200):  # first use of every path: imports, msgspec tables, caches
                path.call(i, 1.0 / rate)
            path.busy, path.sent = 0, 0
            gc.collect()
            gc.freeze()
            gc.set_threshold(50_000, 20, 10)  # as the node runs (bindings/node.py GC_THRESHOLDS)
            set_untracking(True)  # as the node runs (core/memory.py)
            prof = None
            if profile:
                import cProfile
                prof = cProfile.Profile()
                prof.enable()
            for i in range(200, 200 + calls):
                path.call(i, 1.0 / rate)
            if prof is not None:
                prof.disable()
                prof.dump_stats(profile)
            return path.busy / calls / 1e3, path.sent / calls
        finally:
            gc.unfreeze()
            set_untracking(untracking)
            path.close()


def test_call_path(benchmark):
    """One round: 2,000 calls through the switch, the µs per call kept in the benchmark's extra info."""
    figures = benchmark.pedantic(run, args=(2000, 1000.0, False), rounds=5, iterations=1)
    us, sent = figures
    benchmark.extra_info["us_per_call"] = round(us, 1)
    assert sent == 7  # 100, 180, 200 and the BYE's 200 to the caller; INVITE, ACK and BYE to the callee


SUPPORTED = frozenset({"pcmu", "pcma", "telephone-event"})  # the trunk's codecs (media.codecs' default)


def sdp_of_a_call(offer: bytes = OFFER, answer: bytes = ANSWER) -> bytes:
    """The SDP work of one call as the B2BUA does it (``core/call/b2bua.py``), alone: A's offer
    parsed, cut to the trunk's codecs and anchored for B; B's answer parsed, checked against that
    offer and anchored for A. What is sent to A is returned."""
    offer_a = parse_sdp(offer)
    offer_a.rtp_address()
    offer_b, _ = Originator(1).anchor_wire(_restrict(offer_a, SUPPORTED), address=SWITCH.host, port=30002,
                                           in_place=True)
    answer_b = parse_sdp(answer)
    if not intersect(offer_b, answer_b):
        raise AssertionError("no codec in common")
    answer_b.rtp_address()
    answer_b.codecs()
    return Originator(2).anchor_wire(answer_b, address=SWITCH.host, port=30000, in_place=True)[1]


def test_sdp_of_a_call(benchmark):
    """The SDP kernel of a call (two parses, the restriction, the intersection, two anchorings)."""
    wire = benchmark(sdp_of_a_call)
    assert b"c=IN IP4 127.0.0.5\r\n" in wire and b"m=audio 30000 RTP/AVP 0 101\r\n" in wire


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=20_000)
    ap.add_argument("--rate", type=float, default=1000.0, help="simulated calls a second")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--media", action="store_true", help="open and close each call's relay too")
    ap.add_argument("--profile", help="write a cProfile of the last round to this file")
    args = ap.parse_args()
    results = []
    for r in range(args.rounds):
        us, sent = run(args.calls, args.rate, args.media, args.profile if r == args.rounds - 1 else None)
        results.append(us)
        print(f"round {r + 1}: {us:.1f} µs a call, {sent:.2f} datagrams sent a call", flush=True)
    results.sort()
    print(f"median {results[len(results) // 2]:.1f} µs a call ({args.calls:,} calls a round"
          f"{', with media relays' if args.media else ''})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
