"""Shared by the call tests: SIPp as the caller (127.0.0.1) → a node → SIPp as the callee behind a trunk
(``UAS_HOST``), the node's trunk and route config, SIPp's statistics, the RTP pcap SIPp plays, and the call
records a stopped node left in its data folder."""
from __future__ import annotations

import csv
import re
import signal
import socket
import struct
import subprocess
import time
from pathlib import Path

from bindings.cdr import CdrReader
from bindings.storage import Storage
from core.cdr.record import CallRecord
from tests.node import HOST, free_port

SCENARIOS = Path(__file__).resolve().parent / "scenarios"
UAS_HOST = "127.0.0.2"
PACKETS = 50  # per side and call: 1 s of 20 ms PCMU
CALLS = 3


def user_config(name: str, media: str, rtp_min: int, rtp_max: int) -> str:
    """A node named ``name`` whose media is on ``media`` (ports rtp_min..rtp_max), with user 1001
    (password secret1001, MD5 digest as SIPp answers it) and the number 1001 routed to that user."""
    return f"""
[node]
name = "{name}"

[registrar]
algorithms = ["MD5", "SHA-256"]  # SIPp answers MD5 challenges only

[media]
address = "{media}"
rtp_port_min = {rtp_min}
rtp_port_max = {rtp_max}

[[users]]
name = "1001"
password = "secret1001"

[[routes]]
name = "user"
match = "exact"
pattern = "1001"
target = "user:1001"
"""


def node_config(uas_port: int, media: str, rtp_min: int, rtp_max: int) -> str:
    """A node whose media is on ``media`` (ports rtp_min..rtp_max) and whose route "0…" goes to the SIPp UAS."""
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


def counters_of(stats: Path) -> dict[str, int]:
    if not stats.exists():
        return {}
    rows = list(csv.reader(stats.open(), delimiter=";"))
    if len(rows) < 2:
        return {}
    return {name: int(value) for name, value in zip(rows[0], rows[-1]) if name.endswith("(C)") and value.isdigit()}


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
    return write_pcap(path, [(0, False, 160 * i, b"\xff" * 160) for i in range(packets)], ptime, ssrc)


def write_dtmf_pcap(path: Path, digits: str, ptime: float = 0.020, ssrc: int = 0x5EED0002,
                    event_pt: int = 101) -> Path:
    """PCMU silence with the RFC 4733 telephone-events of ``digits`` in it: each digit 100 ms (the first
    packet marked, one timestamp, the duration growing), its end packet sent three times (§2.5.1.4),
    then 200 ms of silence."""
    events = {d: i for i, d in enumerate("0123456789*#ABCD")}
    rows: list[tuple[int, bool, int, bytes]] = []
    ts = 0
    for _ in range(10):  # a little audio first, as a phone sends before a key is pressed
        rows.append((0, False, ts, b"\xff" * 160))
        ts += 160
    for d in digits:
        for i in range(1, 6):
            end = i == 5
            payload = struct.pack("!BBH", events[d], (0x80 if end else 0) | 10, 160 * i)
            for _ in range(3 if end else 1):
                rows.append((event_pt, i == 1, ts, payload))
        ts += 800
        for _ in range(10):
            rows.append((0, False, ts, b"\xff" * 160))
            ts += 160
    return write_pcap(path, rows, ptime, ssrc)


def write_pcap(path: Path, rows, ptime: float, ssrc: int) -> Path:
    """RTP packets ``(payload type, marker, timestamp, payload)`` one ``ptime`` apart, sequence numbers in
    order, as a libpcap file of Ethernet/IPv4/UDP frames."""
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    src, dst = socket.inet_aton("10.0.0.1"), socket.inet_aton("10.0.0.2")
    for i, (pt, marker, ts, payload) in enumerate(rows):
        rtp = struct.pack("!BBHII", 0x80, pt | (0x80 if marker else 0), (1000 + i) & 0xFFFF,
                          ts & 0xFFFFFFFF, ssrc) + payload
        udp = struct.pack("!HHHH", 40000, 40002, 8 + len(rtp), 0) + rtp
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), i & 0xFFFF, 0, 64, 17, 0, src, dst)
        ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
        frame = b"\x02\0\0\0\0\x02" + b"\x02\0\0\0\0\x01" + b"\x08\x00" + ip + udp
        t = 1_700_000_000 + i * ptime
        out.append(struct.pack("<IIII", int(t), int(round((t % 1) * 1e6)) % 1_000_000, len(frame), len(frame)))
        out.append(frame)
    path.write_bytes(b"".join(out))
    return path


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


def sipp_command(sipp: str, workdir: Path, name: str, scenario: str, host: str, port: int, *args: str,
                 timeout: str = "30s") -> list[str]:
    """A SIPp run of ``scenario`` on HOST:PORT over UDP, its errors, messages and statistics logged in
    ``workdir`` under ``name``; bounded by ``timeout`` (a failed call past it)."""
    return [
        sipp, "-sf", str(SCENARIOS / scenario), "-t", "u1", "-i", host, "-p", str(port),
        "-buff_size", "4194304", "-timeout", timeout, "-timeout_error", "-nostdin",
        "-trace_err", "-error_file", str(workdir / f"{name}-errors.log"),
        "-trace_msg", "-message_file", str(workdir / f"{name}-messages.log"),
        "-trace_stat", "-stf", str(workdir / f"{name}-stats.csv"),
        *args,
    ]


def register_phone(sipp: str, workdir: Path, name: str, user: str, password: str, host: str, port: int,
                   node) -> None:
    """REGISTER ``user`` with digest from HOST:PORT, the address a SIPp UAS will then listen on as that
    user's phone (RFC 3261 §10.2); fails the test with SIPp's errors if it is not accepted."""
    proc = subprocess.run(
        sipp_command(sipp, workdir, f"{name}-register", "register_digest.xml", host, port, "-m", "1",
                     "-key", "user", user, "-au", user, "-ap", password, f"{node.host}:{node.port}"),
        cwd=workdir, capture_output=True, text=True, timeout=30)
    errors = workdir / f"{name}-register-errors.log"
    assert proc.returncode == 0, errors.read_text(errors="replace") if errors.exists() else proc.stderr


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
