"""Calls through the node on real sockets: SIPp as the caller (UAC, 127.0.0.1) → the node → SIPp as
the callee behind a trunk (UAS, 127.0.0.2). Signalling only: no RTP flows, but the SDP each side
receives must carry the node's media address (127.0.0.5 here, which nobody else uses) and a port of
its range, never the other side's.

Each test checks what an operator would see: both SIPp exit codes and call counters, the SDP on the
wire from SIPp's own message logs, and the node's call summaries in its log. Every run is bounded
(`-m`, `-timeout`, subprocess timeouts).
"""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.interop.sippcalls import UAS_HOST, counters_of, node_config, sipp_command, wait_bound
from tests.node import HOST, free_port

pytestmark = pytest.mark.interop

SCENARIOS = Path(__file__).resolve().parent / "scenarios"
MEDIA = "127.0.0.5"
RTP_MIN, RTP_MAX = 20000, 20999
CALLS = 5








class Run:
    def __init__(self, workdir: Path, uac_code: int, uas_code: int):
        self.workdir = workdir
        self.uac_code, self.uas_code = uac_code, uas_code
        self.uac = counters_of(workdir / "uac-stats.csv")
        self.uas = counters_of(workdir / "uas-stats.csv")

    def log(self, name: str, what: str) -> str:
        path = self.workdir / f"{name}-{what}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def received(self, name: str) -> list[str]:
        """Every message SIPp ``name`` received, as text."""
        out = []
        for part in re.split(r"^-{20,} .*$", self.log(name, "messages"), flags=re.M):
            head, sep, message = part.strip("\n").partition(":\n")
            if sep and "message received" in head:
                out.append(message.strip())
        return out

    def outcome(self, side: str) -> tuple[int, int | None, int | None]:
        counters = self.uac if side == "uac" else self.uas
        code = self.uac_code if side == "uac" else self.uas_code
        return code, counters.get("SuccessfulCall(C)"), counters.get("FailedCall(C)")

    def errors(self) -> str:
        return "UAC errors:\n" + self.log("uac", "errors") + "\nUAS errors:\n" + self.log("uas", "errors")


def run_call(sipp: str, node, workdir: Path, uac: str, uas: str, uas_port: int, calls: int = CALLS,
             rate: int = 10) -> Run:
    """SIPp UAS waiting on ``uas_port``, then ``calls`` calls from a SIPp UAC through ``node``."""
    workdir.mkdir(parents=True, exist_ok=True)
    uas_proc = subprocess.Popen(
        sipp_command(sipp, workdir, "uas", uas, UAS_HOST, uas_port, "-m", str(calls)),
        cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        # SIPp binds its socket at start; give it a moment before the first INVITE reaches it.
        wait_bound(UAS_HOST, uas_port)
        uac_proc = subprocess.run(
            sipp_command(sipp, workdir, "uac", uac, HOST, free_port(), "-m", str(calls), "-r", str(rate),
                         "-s", "0301234", f"{node.addr[0]}:{node.addr[1]}"),
            cwd=workdir, capture_output=True, text=True, timeout=60)
        uas_code = uas_proc.wait(timeout=40)
    finally:
        if uas_proc.poll() is None:
            uas_proc.kill()
            uas_proc.wait(5)
    return Run(workdir, uac_proc.returncode, uas_code)




def invite_or_its_2xx(start: str):
    """Messages that start with ``start`` and belong to the INVITE transaction (CSeq ... INVITE)."""
    return lambda text: text.startswith(start) and re.search(r"^CSeq: *\d+ INVITE$", text, re.M) is not None


def assert_sdp_anchored(messages: list[str], kind, hidden: tuple[str, ...]) -> int:
    """Every message of that kind carries SDP with the node's address and a port of its range, and
    none of ``hidden`` (the other side's address and media port); returns how many there were."""
    found = [m for m in messages if kind(m)]
    assert found, "no such message received"
    for text in found:
        body = text.split("\n\n", 1)[1]
        assert re.findall(r"^c=IN IP4 (\S+)", body, re.M) == [MEDIA], body
        port = int(re.search(r"^m=audio (\d+) ", body, re.M).group(1))
        assert RTP_MIN <= port <= RTP_MAX and port % 2 == 0, body
        assert re.search(r"^o=switchcore ", body, re.M), body
        for secret in hidden:
            # In the description only: a Call-ID or branch is random hex that may hold any digits.
            assert secret.strip() not in body, f"{secret} leaked into: {text}"
    return len(found)


def summaries(node) -> list[str]:
    return re.findall(r"CallSummary\((.*)\)$", node.stderr(), re.M)






def test_call_answered_and_ended_by_the_caller(sipp, start_node, tmp_path, uas_port):
    node = start_node(node_config(uas_port, MEDIA, RTP_MIN, RTP_MAX))
    run = run_call(sipp, node, tmp_path / "sipp", "uac_call.xml", "uas_answer.xml", uas_port)
    assert run.outcome("uac") == (0, CALLS, 0), run.errors()
    assert run.outcome("uas") == (0, CALLS, 0), run.errors()
    # The callee saw the node's media address and port, not the caller's (127.0.0.1, port 49170);
    # the caller saw the node's, not the callee's (127.0.0.2, port 39000).
    uas_in = run.received("uas")
    assert assert_sdp_anchored(uas_in, invite_or_its_2xx("INVITE "), ("127.0.0.1 ", "49170")) >= CALLS
    assert all(m.startswith("INVITE sip:+49301234@127.0.0.2:") for m in uas_in if m.startswith("INVITE"))
    assert assert_sdp_anchored(run.received("uac"), invite_or_its_2xx("SIP/2.0 200 "),
                               ("127.0.0.2", "39000")) >= CALLS
    done = summaries(node)
    assert len(done) == CALLS
    assert all("disposition='answered', hangup_by='caller', status=200" in s for s in done), done


def test_call_answered_and_ended_by_the_callee(sipp, start_node, tmp_path, uas_port):
    node = start_node(node_config(uas_port, MEDIA, RTP_MIN, RTP_MAX))
    run = run_call(sipp, node, tmp_path / "sipp", "uac_callee_hangs_up.xml", "uas_hangup.xml", uas_port)
    assert run.outcome("uac") == (0, CALLS, 0), run.errors()
    assert run.outcome("uas") == (0, CALLS, 0), run.errors()
    assert len([m for m in run.received("uac") if m.startswith("BYE ")]) >= CALLS
    done = summaries(node)
    assert len(done) == CALLS
    assert all("disposition='answered', hangup_by='callee', status=200" in s for s in done), done


def test_cancel_before_the_answer_gives_the_caller_487(sipp, start_node, tmp_path, uas_port):
    node = start_node(node_config(uas_port, MEDIA, RTP_MIN, RTP_MAX))
    run = run_call(sipp, node, tmp_path / "sipp", "uac_cancel.xml", "uas_ring.xml", uas_port)
    assert run.outcome("uac") == (0, CALLS, 0), run.errors()
    assert run.outcome("uas") == (0, CALLS, 0), run.errors()
    assert len([m for m in run.received("uas") if m.startswith("CANCEL ")]) >= CALLS
    done = summaries(node)
    assert len(done) == CALLS
    assert all("disposition='cancelled', hangup_by='caller', status=487" in s for s in done), done


def test_busy_callee_gives_the_caller_486(sipp, start_node, tmp_path, uas_port):
    node = start_node(node_config(uas_port, MEDIA, RTP_MIN, RTP_MAX))
    run = run_call(sipp, node, tmp_path / "sipp", "uac_busy.xml", "uas_busy.xml", uas_port)
    assert run.outcome("uac") == (0, CALLS, 0), run.errors()
    assert run.outcome("uas") == (0, CALLS, 0), run.errors()
    done = summaries(node)
    assert len(done) == CALLS
    assert all("disposition='busy', hangup_by='callee', status=486" in s for s in done), done
