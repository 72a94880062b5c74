"""How long a packet spends in the relay while the signalling thread is busy:

    python bench/bench_relay_busy.py [--packets 2000] [--interval-ms 1]

The media engine (``core/_rtp.pyx``) runs in its own thread and moves packets without the GIL, while
the node's signalling thread holds the GIL nearly all the time under load. This bench makes that
case on purpose: one relay served by ``Engine.serve()`` in a thread, beside a Python thread that
never blocks (it holds the GIL but for the interpreter's switch interval), the process pinned to CPU 0.
A peer process pinned to CPU 1 sends ``--packets`` RTP packets, one every ``--interval-ms``, to leg
a, each stamped with the monotonic clock, and reads them back from leg b's peer address.

Printed: the time from send to receipt, median, 99th percentile and maximum, in milliseconds. An
engine thread that came back for the GIL whenever it found nothing to do would hold the packets that
arrive meanwhile until it got the GIL: the median would be about a millisecond or more, not tens of
microseconds. Compare versions in the same run; the machine's scheduler adds its own milliseconds
to the tail (the busy thread and the engine's thread share CPU 0).
"""
from __future__ import annotations

import argparse
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

HOST = "127.0.0.1"
STAMP = struct.Struct("!BBHIId")  # an RTP header, then the send time


def peer(port_a: int, port_b: int, relay_port: int, packets: int, interval: float) -> None:
    """Send to the relay from ``port_a``, receive on ``port_b``, print the delays."""
    a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    a.bind((HOST, port_a))
    b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    b.bind((HOST, port_b))
    b.settimeout(1.0)
    delays: list[float] = []

    def receive() -> None:
        while len(delays) < packets:
            try:
                data = b.recv(2048)
            except socket.timeout:
                return
            delays.append((time.monotonic() - STAMP.unpack_from(data)[5]) * 1e3)

    reader = threading.Thread(target=receive)
    reader.start()
    for i in range(packets):
        a.sendto(STAMP.pack(0x80, 0, i & 0xFFFF, i * 160, 1234, time.monotonic()) + bytes(152), (HOST, relay_port))
        time.sleep(interval)
    reader.join()
    delays.sort()
    if not delays:
        print("no packet came through")
        return
    print(f"{len(delays)} of {packets} packets: median {delays[len(delays) // 2]:.3f} ms, "
          f"p99 {delays[int(len(delays) * 0.99)]:.3f} ms, max {delays[-1]:.3f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--packets", type=int, default=2000)
    ap.add_argument("--interval-ms", type=float, default=1.0)
    ap.add_argument("--peer", nargs=3, type=int, metavar=("PORT_A", "PORT_B", "RELAY_PORT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.peer:
        peer(*args.peer, args.packets, args.interval_ms / 1e3)
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from core._rtp import Engine

    os.sched_setaffinity(0, {0})
    ports = []
    for _ in range(2):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((HOST, 0))
        ports.append(s.getsockname()[1])
        s.close()
    with Engine(45000, 45999) as engine:
        relay_port, _ = engine.add_relay("busy", options={"a": {"peer": (HOST, ports[0])},
                                                          "b": {"peer": (HOST, ports[1])}})
        server = threading.Thread(target=engine.serve, daemon=True)
        server.start()
        stop = False

        def spin() -> None:
            count = 0
            while not stop:
                count += 1

        busy = threading.Thread(target=spin, daemon=True)
        busy.start()
        try:
            subprocess.run(["taskset", "-c", "1", sys.executable, __file__, "--peer", str(ports[0]), str(ports[1]),
                            str(relay_port), "--packets", str(args.packets), "--interval-ms", str(args.interval_ms)],
                           check=True, timeout=60 + args.packets * args.interval_ms / 1e3)
        finally:
            stop = True
            engine.stop()
            server.join(5)


if __name__ == "__main__":
    main()
