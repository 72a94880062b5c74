"""Calls with RTP both ways through the node, on real sockets: SIPp as the caller (127.0.0.1) → the node
(media on 127.0.0.6) → SIPp as the callee behind a trunk (127.0.0.2). Each side plays one second of
PCMU (50 packets, a pcap written by the test) with SIPp's ``play_pcap_audio`` once the call is up.

What an operator would see is checked three ways: SIPp's own counters (every call completed), the
packets on the wire when loopback can be captured (RTP reaches each SIPp from the node's media
address, never from the other SIPp), and the call records the node wrote (read back from its data
folder after it stopped): disposition, who hung up, times in order, and per leg the packets that
arrived from that side with no loss.

Helpers here (the pcap, the SIPp pair, reading records) are shared with test_records.py.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import time
from pathlib import Path

import pytest

from bindings.cdr import CdrReader
from bindings.storage import Storage
from core.cdr.record import CallRecord, Disposition, HangupBy
from tests.interop.test_calls_sipp import counters_of
from tests.node import HOST, free_port

pytestmark = pytest.mark.interop

SCENARIOS = Path(__file__).resolve().parent / "scenarios"
UAS_HOST = "127.0.0.2"
MEDIA = "127.0.0.6"  # the node's media address: nobody else sends from it
RTP_MIN, RTP_MAX = 22000, 22999
PACKETS = 50  # per side and call: 1 s of 20 ms PCMU
CALLS = 3


def node_config(uas_port: int, media: str = MEDIA, rtp_min: int = RTP_MIN, rtp_max: int = RTP_MAX) -> str:
    return f"""
[node]
name = "media-test"

[media]
address = "{media}"
rtp_port_min = {rtp_min}
rtp_port_max = {rtp_max}

[[trunks]]
name = "sipp-uas"
address = "{UAS_HOST}:{uas_port}"

[[routes]]
name = "national"
pattern = "0"
strip = 1
prepend = "+49"
target = "trunk:sipp-uas"
"""


# --- a pcap of RTP for SIPp's play_pcap_audio -------------------------------------------------------

def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def write_rtp_pcap(path: Path, packets: int = PACKETS, ptime: float = 0.020, ssrc: int = 0x5EED0001) -> Path:
    """A libpcap file (Ethernet) of ``packets`` RTP/UDP/IPv4 datagrams of PCMU silence, ``ptime`` apart,
    sequence numbers and timestamps in order (RFC 3550 §5.1). SIPp rewrites the addresses when it plays it."""
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    src, dst = socket.inet_aton("10.0.0.1"), socket.inet_aton("10.0.0.2")
    for i in range(packets):
        rtp = struct.pack("!BBHII", 0x80, 0, (1000 + i) & 0xFFFF, (160 * i) & 0xFFFFFFFF, ssrc) + b"\xff" * 160
        udp = struct.pack("!HHHH", 40000, 40002, 8 + len(rtp), 0) + rtp
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), i & 0xFFFF, 0, 64, 17, 0, src, dst)
        ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
        frame = b"\x02\0\0\0\0\x02" + b"\x02\0\0\0\0\x01" + b"\x08\x00" + ip + udp
        t = 1_700_000_000 + i * ptime
        out.append(struct.pack("<IIII", int(t), int(round((t % 1) * 1e6)) % 1_000_000, len(frame), len(frame)))
        out.append(frame)
    path.write_bytes(b"".join(out))
    return path


# --- SIPp on both sides -----------------------------------------------------------------------------

def sipp_args(workdir: Path, name: str, scenario: str, host: str, port: int, media_port: int | None,
              *args: str) -> list[str]:
    cmd = [
        "-sf", str(SCENARIOS / scenario), "-t", "u1", "-i", host, "-p", str(port),
        "-buff_size", "4194304", "-timeout", "60s", "-timeout_error", "-nostdin",
        "-trace_err", "-error_file", str(workdir / f"{name}-errors.log"),
        "-trace_msg", "-message_file", str(workdir / f"{name}-messages.log"),
        "-trace_stat", "-stf", str(workdir / f"{name}-stats.csv"),
        "-trace_logs", "-log_file", str(workdir / f"{name}-logs.log"),
    ]
    if media_port is not None:
        cmd += ["-mi", host, "-mp", str(media_port)]
    return cmd + list(args)


def free_media_port(host: str) -> int:
    """An even UDP port with the next three free on ``host`` (SIPp's media port, +2 for video)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind((host, 0))
            port = probe.getsockname()[1] & ~1
        if port + 3 > 65535:
            continue
        socks = []
        try:
            for p in range(port, port + 4):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind((host, p))
            return port
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no four free UDP ports in a row on {host}")


def wait_bound(host: str, port: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                probe.bind((host, port))
            except OSError:
                return  # taken: SIPp is listening
        time.sleep(0.05)
    raise AssertionError(f"SIPp did not bind {host}:{port} within {timeout} s")


class SippPair:
    """A SIPp UAS on ``UAS_HOST`` and a SIPp UAC on 127.0.0.1 calling through ``node``."""

    def __init__(self, sipp: str, workdir: Path, uas_port: int, *, media: bool = True):
        self.sipp, self.workdir, self.uas_port = sipp, workdir, uas_port
        workdir.mkdir(parents=True, exist_ok=True)
        self.media = media
        if media:
            write_rtp_pcap(workdir / "rtp.pcap")
        self.uac_media = free_media_port(HOST) if media else None
        self.uas_media = free_media_port(UAS_HOST) if media else None
        self.uac_code: int | None = None
        self.uas_code: int | None = None

    def start_uas(self, scenario: str, calls: int | None) -> subprocess.Popen:
        extra = ["-m", str(calls)] if calls is not None else []
        proc = subprocess.Popen(
            [self.sipp, *sipp_args(self.workdir, "uas", scenario, UAS_HOST, self.uas_port, self.uas_media, *extra)],
            cwd=self.workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_bound(UAS_HOST, self.uas_port)
        return proc

    def uac_command(self, scenario: str, node_addr: tuple[str, int], *args: str) -> list[str]:
        return [self.sipp, *sipp_args(self.workdir, "uac", scenario, HOST, free_port(), self.uac_media,
                                      "-s", "0301234", *args, f"{node_addr[0]}:{node_addr[1]}")]

    def run(self, node, uac: str, uas: str, calls: int = CALLS, rate: int = 5) -> "SippPair":
        uas_proc = self.start_uas(uas, calls)
        try:
            uac_proc = subprocess.run(self.uac_command(uac, node.addr, "-m", str(calls), "-r", str(rate)),
                                      cwd=self.workdir, capture_output=True, text=True, timeout=90)
            self.uac_code = uac_proc.returncode
            self.uas_code = uas_proc.wait(timeout=60)
        finally:
            stop_process(uas_proc)
        return self

    def counters(self, side: str) -> dict[str, int]:
        return counters_of(self.workdir / f"{side}-stats.csv")

    def outcome(self, side: str) -> tuple[int | None, int | None, int | None]:
        c = self.counters(side)
        return (self.uac_code if side == "uac" else self.uas_code), c.get("SuccessfulCall(C)"), c.get("FailedCall(C)")

    def log(self, name: str, what: str) -> str:
        path = self.workdir / f"{name}-{what}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def errors(self) -> str:
        return "UAC errors:\n" + self.log("uac", "errors")[-3000:] + "\nUAS errors:\n" + self.log("uas", "errors")[-3000:]

    def logged(self, what: str) -> list[str]:
        """Call-IDs the UAC's scenario logged with ``<log message="WHAT [call_id]"/>``."""
        return re.findall(rf"^{what} (\S+)\s*$", self.log("uac", "logs"), re.M)


def stop_process(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def read_records(data_dir: Path) -> list[CallRecord]:
    """Every record in a stopped node's data folder, in end-time order."""
    with Storage(data_dir) as storage:
        return list(CdrReader(storage).records())


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


@pytest.fixture
def sipp(require_tool) -> str:
    return require_tool("sipp")


@pytest.fixture
def uas_port() -> int:
    return free_port(UAS_HOST)


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
    node = start_node(node_config(uas_port))
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
