"""Calls with RTP both ways through the node, on real sockets: SIPp as the caller (127.0.0.1) → the node
(media on 127.0.0.6) → SIPp as the callee behind a trunk (127.0.0.2). Each side plays one second of
PCMU (50 packets, a pcap written by the test) with SIPp's ``play_pcap_audio`` once the call is up.

What an operator would see is checked three ways: SIPp's own counters (every call completed), the
packets on the wire when loopback can be captured (RTP reaches each SIPp from the node's media
address, never from the other SIPp), and the call records the node wrote (read back from its data
folder after it stopped): disposition, who hung up, times in order, and per leg the packets that
arrived from that side with no loss.

The SIPp pair, the pcap and reading records are in sippcalls.py, shared with the other call tests.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from core.cdr.record import CallRecord, Disposition, HangupBy
from tests.interop.sippcalls import CALLS, PACKETS, UAS_HOST, SippPair, node_config, read_records
from tests.node import HOST

pytestmark = pytest.mark.interop

MEDIA = "127.0.0.6"  # the node's media address: nobody else sends from it
RTP_MIN, RTP_MAX = 22000, 22999




# --- a pcap of RTP for SIPp's play_pcap_audio -------------------------------------------------------





# --- SIPp on both sides -----------------------------------------------------------------------------













# --- capturing the wire (when loopback can be captured) ---------------------------------------------

class Capture:
    """tshark on loopback, UDP to or from the node's media address; None when capture is not possible."""

    def __init__(self, workdir: Path, media: str):
        self.path = workdir / "media.pcapng"
        self.proc = subprocess.Popen(
            ["tshark", "-i", "lo", "-q", "-w", str(self.path), "-f", f"udp and host {media}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not self.path.exists() and self.proc.poll() is None:
            time.sleep(0.05)
        time.sleep(0.3)

    @classmethod
    def start(cls, workdir: Path, media: str) -> "Capture | None":
        if shutil.which("tshark") is None or os.geteuid() != 0:
            if os.environ.get("CI"):  # CI runs as root and .ci/run installs tshark: the check must run
                pytest.fail("the wire check needs tshark, run as root")
            return None
        cap = cls(workdir, media)
        if cap.proc.poll() is not None:
            if os.environ.get("CI"):
                pytest.fail(f"tshark could not capture on lo: {cap.proc.stderr.read()}")
            return None
        return cap

    def flows(self) -> dict[tuple[str, int, str, int], int]:
        """Packets per (src, sport, dst, dport)."""
        time.sleep(0.3)
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        out = subprocess.run(
            ["tshark", "-r", str(self.path), "-T", "fields", "-e", "ip.src", "-e", "udp.srcport",
             "-e", "ip.dst", "-e", "udp.dstport"], capture_output=True, text=True, timeout=60).stdout
        flows: dict[tuple[str, int, str, int], int] = {}
        for line in out.splitlines():
            parts = line.split("\t")
            if len(parts) == 4 and all(parts):
                key = (parts[0], int(parts[1]), parts[2], int(parts[3]))
                flows[key] = flows.get(key, 0) + 1
        return flows






def check_media_record(rec: CallRecord, hangup_by: HangupBy) -> None:
    assert rec.disposition is Disposition.ANSWERED, rec
    assert rec.hangup_by is hangup_by, rec
    assert rec.node == "media-test" and rec.trunk == "sipp-uas"
    assert rec.caller == "5550100" and rec.callee == "0301234"
    assert rec.offered <= rec.answered < rec.ended, rec
    # Each call lasts the 1 s the pcap plays plus the pause, well under a minute.
    assert 1.0 <= rec.ended - rec.answered < 60, rec
    a, b = rec.legs
    assert a.leg_id == rec.call_id and b.leg_id != rec.call_id
    assert b.peer.startswith("sip:+49301234@127.0.0.2:"), b
    for leg in (a, b):
        assert leg.disposition is Disposition.ANSWERED and leg.sip_status == 200, leg
        assert leg.codec == "PCMA", leg  # the callee's answer chose PCMA
        # RTP arrived from each side: every packet of the pcap, none lost, a MOS for the audio.
        assert leg.packets_received == PACKETS, leg
        assert leg.packets_lost == 0, leg
        assert leg.mos is not None and leg.mos > 4.0, leg


def media_flows(flows, node_ports: set[int]) -> tuple[int, int, int]:
    """(packets node→caller, node→callee, caller↔callee direct) among the captured flows."""
    to_caller = sum(n for (src, sport, dst, _), n in flows.items() if src == MEDIA and sport in node_ports and dst == HOST)
    to_callee = sum(n for (src, sport, dst, _), n in flows.items()
                    if src == MEDIA and sport in node_ports and dst == UAS_HOST)
    direct = sum(n for (src, _, dst, _), n in flows.items() if {src, dst} == {HOST, UAS_HOST})
    return to_caller, to_callee, direct


@pytest.mark.parametrize("uac, uas, hangup_by", [
    ("uac_call_rtp.xml", "uas_answer_rtp.xml", HangupBy.CALLER),
    ("uac_callee_hangs_up_rtp.xml", "uas_hangup_rtp.xml", HangupBy.CALLEE),
], ids=["caller-hangs-up", "callee-hangs-up"])
def test_rtp_both_ways_through_the_node(sipp, start_node, tmp_path, uas_port, uac, uas, hangup_by):
    node = start_node(node_config(uas_port, MEDIA, RTP_MIN, RTP_MAX))
    pair = SippPair(sipp, tmp_path / "sipp", uas_port)
    capture = Capture.start(tmp_path, MEDIA)
    pair.run(node, uac, uas)
    flows = capture.flows() if capture is not None else None
    assert pair.outcome("uac") == (0, CALLS, 0), pair.errors()
    assert pair.outcome("uas") == (0, CALLS, 0), pair.errors()
    node.assert_clean_exit()

    records = read_records(node.data_dir)
    assert len(records) == CALLS
    assert len({r.call_id for r in records}) == CALLS
    for rec in records:
        check_media_record(rec, hangup_by)
    if flows is not None:
        # On the wire: each SIPp got RTP from the node's media address (from a port of its range),
        # at least what the other side played, and nothing went straight between the two SIPps.
        ports = {sport for (src, sport, _, _) in flows if src == MEDIA and RTP_MIN <= sport <= RTP_MAX}
        to_caller, to_callee, direct = media_flows(flows, ports)
        assert to_caller >= CALLS * PACKETS and to_callee >= CALLS * PACKETS, flows
        assert direct == 0, flows
