"""Whole-node throughput: SIPp drives a running node over loopback UDP and counts what comes back.

    python bench/sipp_node.py --scenario options --rate 5000 --calls 50000

Starts ``python -m bindings.cli run`` on a free loopback port with a temporary data folder, runs SIPp
(bounded by --calls and a time limit) with the given scenario from tests/interop/scenarios, and prints
the successful and failed counts and the achieved rate (successful / elapsed wall time). The node is
pinned to CPU 0 and SIPp to CPU 1 where the machine has two, so that they do not share a core.
"""
from __future__ import annotations

import argparse
import os
import re
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


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_node(workdir: Path, port: int) -> subprocess.Popen:
    cpu = ["taskset", "-c", "0"] if os.cpu_count() and os.cpu_count() > 1 and shutil.which("taskset") else []
    proc = subprocess.Popen(
        [*cpu, sys.executable, "-m", "bindings.cli", "run", "--listen", f"127.0.0.1:{port}",
         "--data", str(workdir / "data"), "--log-level", "warning"],
        cwd=REPO, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if line.startswith("listening on tcp:"):
            return proc
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise SystemExit("the node did not start")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", default="options", help="a scenario in tests/interop/scenarios (no .xml)")
    ap.add_argument("--rate", type=int, default=5000, help="new calls (requests) per second")
    ap.add_argument("--calls", type=int, default=50000, help="total calls, then SIPp stops")
    ap.add_argument("--limit", type=int, default=2000, help="most calls open at once (-l)")
    args = ap.parse_args()
    sipp = shutil.which("sipp")
    if sipp is None:
        raise SystemExit("sipp is not installed (Debian: apt-get install sip-tester)")
    with tempfile.TemporaryDirectory(prefix="switchcore-bench-") as tmp:
        workdir = Path(tmp)
        port = free_port()
        node = start_node(workdir, port)
        cpu = ["taskset", "-c", "1"] if os.cpu_count() and os.cpu_count() > 1 and shutil.which("taskset") else []
        started = time.monotonic()
        try:
            run = subprocess.run(
                [*cpu, sipp, "-sf", str(SCENARIOS / f"{args.scenario}.xml"), f"127.0.0.1:{port}",
                 "-i", "127.0.0.1", "-p", str(free_port()), "-r", str(args.rate), "-m", str(args.calls),
                 "-l", str(args.limit), "-buff_size", "4194304", "-timeout", "120s", "-nostdin",
                 "-trace_stat", "-stf", str(workdir / "stat.csv")],
                cwd=workdir, capture_output=True, text=True, timeout=180)
        finally:
            elapsed = time.monotonic() - started
            node.send_signal(signal.SIGTERM)
            node.wait(timeout=15)
        counts = {}
        for label in ("Successful call", "Failed call"):
            found = re.findall(rf"{label}\s*\|\s*\d+\s*\|\s*(\d+)", run.stdout)
            counts[label] = int(found[-1]) if found else None
        ok, failed = counts["Successful call"], counts["Failed call"]
        print(f"scenario={args.scenario} rate={args.rate}/s calls={args.calls} sipp_exit={run.returncode}")
        print(f"successful={ok} failed={failed} elapsed={elapsed:.2f}s "
              f"achieved={ok / elapsed if ok else 0:,.0f}/s node_exit={node.returncode}")
        return 0 if run.returncode == 0 and node.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
