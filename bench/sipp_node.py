"""Whole-node throughput: SIPp drives a running node over loopback UDP and counts what comes back.

    python bench/sipp_node.py --rate 5000 --count 50000               # OPTIONS answered by the node
    python bench/sipp_node.py --b2bua --rate 200 --count 2000         # calls: SIPp UAC -> node -> SIPp UAS

Starts ``python -m bindings.cli run`` on a free loopback port with a temporary data folder, runs SIPp
(bounded by --count and a time limit) with scenarios from tests/interop/scenarios, and prints the
successful and failed counts, the achieved rate (successful / elapsed wall time) and the node's CPU
time per request or call. With --b2bua the node routes every call over a trunk to a SIPp UAS on
127.0.0.2 (signalling only: INVITE, 100, 180, 200, ACK, BYE, 200 on both legs, SDP anchored). The
node is pinned to CPU 0 and SIPp to CPU 1 where the machine has two, so that they do not share a core.
"""
from __future__ import annotations

import argparse
import csv
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCENARIOS = REPO / "tests" / "interop" / "scenarios"
CALLEE = "127.0.0.2"


def b2bua_config(callee_port: int, limit: int) -> str:
    """The node of every B2BUA bench (this one with --b2bua, compare_kamailio, bench_call_path): media
    anchored on 127.0.0.5, a trunk to the callee at CALLEE:callee_port, every number "0..." routed to
    it, at most ``limit`` calls at once."""
    return (f'[media]\naddress = "127.0.0.5"\nrtp_port_min = 20000\nrtp_port_max = 60000\n'
            f'[limits]\nmax_calls = {limit}\n'
            f'[[trunks]]\nname = "callee"\naddress = "{CALLEE}:{callee_port}"\n'
            f'[[routes]]\nname = "all"\npattern = "0"\ntarget = "trunk:callee"\n')


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def pinned(cpu: int) -> list[str]:
    return ["taskset", "-c", str(cpu)] if (os.cpu_count() or 1) > 1 and shutil.which("taskset") else []


def start_node(workdir: Path, port: int, config: str, *, pin: bool = True) -> subprocess.Popen:
    """The node on CPU 0 (unless ``pin`` is off), its log in ``workdir/node.log``: a pipe nobody reads
    would stall a node that logs under load once the pipe is full."""
    (workdir / "switchcore.toml").write_text(config)
    log = workdir / "node.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [*(pinned(0) if pin else []), sys.executable, "-m", "bindings.cli", "run",
             "--config", str(workdir / "switchcore.toml"), "--listen", f"127.0.0.1:{port}",
             "--data", str(workdir / "data"), "--log-level", "warning"],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=err)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if "listening on tcp:" in log.read_text(errors="replace"):
            return proc
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise SystemExit("the node did not start:\n" + log.read_text(errors="replace")[-2000:])


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
    """Ask ``proc`` to stop with ``sig`` (the node: SIGTERM; SIPp: SIGINT), kill it after ``timeout``."""
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def last_counts(stat_file: Path) -> tuple[int, int]:
    rows = list(csv.reader(stat_file.open(), delimiter=";"))
    last = dict(zip(rows[0], rows[-1]))
    return int(last["SuccessfulCall(C)"]), int(last["FailedCall(C)"])


def sipp(sipp_bin: str, scenario: str, *args: str, stat: Path) -> list[str]:
    return [*pinned(1), sipp_bin, "-sf", str(SCENARIOS / f"{scenario}.xml"), *args,
            "-buff_size", "4194304", "-timeout", "120s", "-nostdin", "-trace_stat", "-stf", str(stat)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--b2bua", action="store_true", help="calls through the node to a SIPp UAS, not OPTIONS")
    ap.add_argument("--rate", type=int, default=5000, help="new calls (or requests) per second")
    ap.add_argument("--count", type=int, default=50000, help="total calls (or requests), then SIPp stops")
    ap.add_argument("--limit", type=int, default=20000, help="most calls open at once (-l)")
    args = ap.parse_args()
    sipp_bin = shutil.which("sipp")
    if sipp_bin is None:
        raise SystemExit("sipp is not installed (Debian: apt-get install sip-tester)")
    with tempfile.TemporaryDirectory(prefix="switchcore-bench-") as tmp:
        workdir = Path(tmp)
        port, callee_port = free_port(), free_port(CALLEE)
        config = b2bua_config(callee_port, args.limit) if args.b2bua else ""
        node = start_node(workdir, port, config)
        uas = None
        if args.b2bua:
            uas = subprocess.Popen(
                sipp(sipp_bin, "uas_answer", "-i", CALLEE, "-p", str(callee_port), "-m", str(args.count),
                     stat=workdir / "uas.csv"),
                cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.5)
        scenario, extra = ("uac_call", ["-s", "0301234"]) if args.b2bua else ("options", [])
        cpu_before = cpu_seconds(node.pid)
        started = time.monotonic()
        try:
            run = subprocess.run(
                sipp(sipp_bin, scenario, f"127.0.0.1:{port}", *extra, "-i", "127.0.0.1", "-p", str(free_port()),
                     "-r", str(args.rate), "-m", str(args.count), "-l", str(args.limit), stat=workdir / "uac.csv"),
                cwd=workdir, capture_output=True, text=True, timeout=300)
            elapsed = time.monotonic() - started
            node_cpu = cpu_seconds(node.pid) - cpu_before
        finally:
            if uas is not None:
                try:
                    uas.wait(30)
                except subprocess.TimeoutExpired:
                    uas.kill()
            node.send_signal(signal.SIGTERM)
            node.wait(15)
        ok, failed = last_counts(workdir / "uac.csv")
        what = "calls" if args.b2bua else "requests"
        print(f"{what}: rate={args.rate}/s count={args.count} sipp_exit={run.returncode} "
              f"node_exit={node.returncode}")
        print(f"successful={ok} failed={failed} elapsed={elapsed:.2f}s achieved={ok / elapsed:,.0f}/s "
              f"node_cpu={node_cpu:.2f}s ({node_cpu / ok * 1e3 if ok else 0:.3f} ms per {what[:-1]})")
        return 0 if run.returncode == 0 and node.returncode == 0 and failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
