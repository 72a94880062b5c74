"""Concurrent calls with G.711 media both ways through one node: how many, lost where, at what CPU and memory.

    python bench/concurrent_media.py                          # 1,000 calls, 20 s of RTP both ways
    python bench/concurrent_media.py --calls 1000,1500,2000   # one fresh node per count, in turn

For each count N: a node (``python -m bindings.cli run``, started as bench/sipp_node.py starts it) with a
trunk to a SIPp UAS and a route to it; a SIPp UAC places N calls (``--rate`` a second) through it, each
offering PCMU on its own port, and holds them. SIPp carries the signalling only; the media comes from
bench/baselines/rtp_load.c (built here with ``cc``), which binds every leg's SDP port on both sides,
connects it to the relay port the node answered with, and sends one 20 ms PCMU packet every 20 ms on
each of the 2N legs (50 packets/s per direction, 100 N packets/s into the relay and as many out of it)
for ``--seconds``, counting what comes back. Nothing is pinned unless ``--pin`` (node on CPU 0, SIPp and
the generator on CPU 1): on a machine shared with other jobs a pinned node waits for its one core while
the other is idle.

Once every call is up (both SIPp's logged the node's relay port for each of their legs) the node's RSS
and PSS are read (memory per call = (RSS with N calls up − idle RSS) / N), the generator runs, the node's
CPU over that window is read, and the kernel's drop counter of every UDP socket (/proc/net/udp: the
relay's sockets on the media address, the generator's on its two addresses) is read before the
generator closes its sockets. The calls then hang up, the node stops, and ``switchcore cdr export``
gives each call's per-leg ``packets_received`` (what the relay took in on leg A from the caller's side,
on leg B from the callee's side). So, per direction:

- sent: what the generator handed to the kernel on one side;
- kernel drops before the relay: drops counted on the relay's sockets (full receive buffers), which
  should equal sent − relay received;
- relay received: the records' per-leg packets_received;
- relay lost: relay received − (what the generator received on the far side + the drops counted on
  the generator's far-side sockets) — packets the relay took in but did not deliver to the kernel;
- sink kernel drops: drops on the generator's far-side sockets (the sink was late, not the relay).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

import sipp_node  # noqa: E402
from sipp_node import cpu_seconds, free_port, last_counts, start_node, stop  # noqa: E402

HERE = Path(__file__).resolve().parent
SCENARIOS = HERE / "scenarios"
GENERATOR_SOURCE = HERE / "baselines" / "rtp_load.c"
# Addresses of their own, so that no other bench on the machine shares a port with this one.
UAC_SIGNAL = "127.0.0.1"
UAS_SIGNAL = "127.0.0.52"
UAC_MEDIA = "127.0.0.51"
UAS_MEDIA = "127.0.0.53"
RELAY = "127.0.0.55"
LEG_PORTS = (10000, 30000)  # the generator's ports: below the kernel's ephemeral range


PIN = False  # --pin: node on CPU 0, SIPp and the generator on CPU 1


def pinned(cpu: int) -> list[str]:
    return sipp_node.pinned(cpu) if PIN else []


def build_generator(workdir: Path) -> Path:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise SystemExit("no C compiler (cc) to build bench/baselines/rtp_load.c")
    out = workdir / "rtp_load"
    subprocess.run([cc, "-O2", "-o", str(out), str(GENERATOR_SOURCE)], check=True)
    return out


def free_ports(host: str, count: int) -> list[int]:
    """``count`` even ports on ``host`` that are free now (each probed by a bind)."""
    ports: list[int] = []
    for port in range(LEG_PORTS[0], LEG_PORTS[1], 2):
        if len(ports) == count:
            break
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                probe.bind((host, port))
            except OSError:
                continue
        ports.append(port)
    if len(ports) < count:
        raise SystemExit(f"only {len(ports)} free ports on {host} in {LEG_PORTS}")
    return ports


def injection(path: Path, host: str, ports: list[int]) -> Path:
    path.write_text("SEQUENTIAL\n" + "".join(f"{p};{host};\n" for p in ports))
    return path


def media_lines(log: Path) -> list[tuple[str, int, str, int]]:
    """The legs a SIPp logged: (own address, own port, relay address, relay port)."""
    if not log.exists():
        return []
    rows = []
    for line in log.read_text(errors="replace").splitlines():
        parts = line.split()
        if len(parts) == 5 and parts[0] == "MEDIA":
            rows.append((parts[1], int(parts[2]), parts[3], int(parts[4])))
    return rows


def thread_cpu(pid: int) -> tuple[float, float]:
    """(main thread, other threads) CPU seconds of a process: in the node the other threads are the
    media engine's (bindings/media.py) and LMDB's."""
    main = other = 0.0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        seconds = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        if task.name == str(pid):
            main += seconds
        else:
            other += seconds
    return main, other


def memory(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of a process in bytes."""
    rss = pss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                pss = int(line.split()[1]) * 1024
    except OSError:
        pass
    return rss, pss


def udp_drops(hosts: set[str]) -> dict[str, tuple[int, int]]:
    """Per local address in ``hosts``: (sockets, kernel drops summed) from /proc/net/udp."""
    found = {h: [0, 0] for h in hosts}
    for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
        fields = line.split()
        addr = socket.inet_ntoa(struct.pack("<I", int(fields[1].split(":")[0], 16)))
        if addr in found:
            found[addr][0] += 1
            found[addr][1] += int(fields[-1])
    return {h: (n, d) for h, (n, d) in found.items()}


def sipp_cmd(sipp: str, scenario: str, host: str, port: int, workdir: Path, name: str, inf: Path,
             *args: str) -> list[str]:
    return [*pinned(1), sipp, "-sf", str(SCENARIOS / scenario), "-t", "u1", "-i", host, "-p", str(port),
            "-inf", str(inf), "-buff_size", "4194304", "-timeout", "300s", "-nostdin",
            "-trace_stat", "-stf", str(workdir / f"{name}.csv"), "-trace_err", "-error_file",
            str(workdir / f"{name}-errors.log"), "-trace_logs", "-log_file", str(workdir / f"{name}-logs.log"),
            *args]


def run_one(n: int, args, sipp: str, generator: Path, workdir: Path) -> dict:
    """One count of calls through a fresh node; the figures as a dict."""
    workdir.mkdir()
    ramp = n / args.rate
    # Every call still up until the generator has drained (15 s at most) and the counters are read.
    hold_ms = int((ramp + args.seconds + 45) * 1000)
    port, uas_port = free_port(), free_port(UAS_SIGNAL)
    config = (f'[node]\nname = "media-bench"\n'
              f'[media]\naddress = "{RELAY}"\nrtp_port_min = 20000\nrtp_port_max = 60000\n'
              f'[limits]\nmax_calls = {n + 100}\n'
              f'[[trunks]]\nname = "callee"\naddress = "{UAS_SIGNAL}:{uas_port}"\n'
              f'[[routes]]\nname = "all"\npattern = "0"\ntarget = "trunk:callee"\n')
    uac_inf = injection(workdir / "uac.csv", UAC_MEDIA, free_ports(UAC_MEDIA, n))
    uas_inf = injection(workdir / "uas.csv", UAS_MEDIA, free_ports(UAS_MEDIA, n))
    node = start_node(workdir, port, config, pin=PIN)
    procs: list[subprocess.Popen] = []
    gen = None
    result: dict = {"calls": n}
    try:
        time.sleep(1.0)
        idle_rss, idle_pss = memory(node.pid)
        uas = subprocess.Popen(sipp_cmd(sipp, "uas_media_answer.xml", UAS_SIGNAL, uas_port, workdir, "uas", uas_inf,
                                        "-m", str(n)), cwd=workdir, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
        procs.append(uas)
        time.sleep(0.5)
        uac = subprocess.Popen(sipp_cmd(sipp, "uac_media_hold.xml", UAC_SIGNAL, free_port(), workdir, "uac", uac_inf,
                                        "-s", "0301234", "-r", str(args.rate), "-m", str(n), "-l", str(n),
                                        "-d", str(hold_ms), f"127.0.0.1:{port}"),
                               cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(uac)
        # Every call up: both sides logged their leg (the UAC at the 200, the UAS at the INVITE).
        deadline = time.monotonic() + ramp + 20
        uac_legs = uas_legs = []
        while time.monotonic() < deadline:
            uac_legs, uas_legs = media_lines(workdir / "uac-logs.log"), media_lines(workdir / "uas-logs.log")
            if len(uac_legs) >= n and len(uas_legs) >= n:
                break
            if uac.poll() is not None:
                break
            time.sleep(0.25)
        result["calls_up"] = min(len(uac_legs), len(uas_legs))
        time.sleep(1.0)  # the last ACKs
        up_rss, up_pss = memory(node.pid)
        legs_file = workdir / "legs.txt"
        legs_file.write_text("".join(f"uac {a} {p} {ra} {rp}\n" for a, p, ra, rp in uac_legs)
                             + "".join(f"uas {a} {p} {ra} {rp}\n" for a, p, ra, rp in uas_legs))
        load_before = os.getloadavg()[0]
        node_cpu0, wall0 = cpu_seconds(node.pid), time.monotonic()
        threads0 = thread_cpu(node.pid)
        sipp_cpu0 = sum(cpu_seconds(p.pid) for p in procs)
        gen = subprocess.Popen([*pinned(1), str(generator), str(args.seconds), str(legs_file)],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        time.sleep(args.seconds / 2)
        media_rss, media_pss = memory(node.pid)
        line = gen.stdout.readline()  # after SECONDS of sending and the drain
        wall = time.monotonic() - wall0
        node_cpu = cpu_seconds(node.pid) - node_cpu0
        threads = thread_cpu(node.pid)
        result["node_threads"] = (threads[0] - threads0[0], threads[1] - threads0[1])
        sipp_cpu = sum(cpu_seconds(p.pid) for p in procs) - sipp_cpu0
        drops = udp_drops({RELAY, UAC_MEDIA, UAS_MEDIA})
        result["load"] = (load_before, os.getloadavg()[0])
        gen.stdin.close()
        gen.wait(10)
        figures = json.loads(line)
        result.update(
            idle_rss=idle_rss, idle_pss=idle_pss, up_rss=up_rss, up_pss=up_pss, media_rss=media_rss,
            media_pss=media_pss, generator=figures, node_cpu=node_cpu, window=wall, sipp_cpu=sipp_cpu,
            drops={k: list(v) for k, v in drops.items()})
        # The calls hang up at the end of their hold; then the node stops and its records are read.
        uac.wait(ramp + args.seconds + 90)
        uas.wait(30)
        result["uac"] = last_counts(workdir / "uac.csv")
        result["uas"] = last_counts(workdir / "uas.csv")
    finally:
        if gen is not None and gen.poll() is None:
            gen.kill()
        for p in procs:
            stop(p, signal.SIGINT, 10)
        stop(node, signal.SIGTERM, 30)
    export = subprocess.run([sys.executable, "-m", "bindings.cli", "cdr", "export", "--data",
                             str(workdir / "data"), "--format", "jsonl"],
                            cwd=REPO, capture_output=True, text=True, timeout=120, check=True)
    records = [json.loads(line) for line in export.stdout.splitlines() if line.strip()]
    result["records"] = records_summary(records)
    return result


def records_summary(records: list[dict]) -> dict:
    """Per leg (a: the caller's side, b: the callee's): packets the relay received and the loss it saw
    in the sequence numbers (upstream of the relay), over every answered call."""
    out = {"records": len(records), "answered": 0, "a_rx": 0, "b_rx": 0, "a_lost": 0, "b_lost": 0,
           "a_min": None, "b_min": None}
    for rec in records:
        if rec.get("disposition") != "answered":
            continue
        out["answered"] += 1
        for name, leg in zip("ab", rec.get("legs", [])[:2]):
            rx = int(leg.get("packets_received") or 0)
            out[f"{name}_rx"] += rx
            out[f"{name}_lost"] += int(leg.get("packets_lost") or 0)
            out[f"{name}_min"] = rx if out[f"{name}_min"] is None else min(out[f"{name}_min"], rx)
    return out


def report(r: dict) -> None:
    n, g, rec, d = r["calls"], r["generator"], r["records"], r["drops"]
    cores = r["window"]
    relay_drops = d[RELAY][1]
    print(f"\n== {n} calls: up at once {r['calls_up']}, answered records {rec['answered']}/{rec['records']}, "
          f"UAC ok/failed {r['uac']}, UAS ok/failed {r['uas']}")
    print(f"generator: {g['legs']} legs, {g['seconds']:.0f} s, late 1 ms slots {g['late_slots']}, received after "
          f"its last send {g['received_after_end']:,}; relay sockets {d[RELAY][0]}; machine load average "
          f"before/after {r['load'][0]:.2f}/{r['load'][1]:.2f} (others' jobs share the 2 cores)")
    head = ("direction", "sent", "send_err", "relay_rx", "kern_drop_in", "sink_rx", "sink_drop", "relay_lost",
            "seq_loss")
    print("  ".join(f"{h:>12}" for h in head))
    for label, src, dst, leg, dst_host in (("caller→callee", "uac", "uas", "a", UAS_MEDIA),
                                           ("callee→caller", "uas", "uac", "b", UAC_MEDIA)):
        sent, rx = g[src]["sent"], rec[f"{leg}_rx"]
        sink, sink_drop = g[dst]["received"], d[dst_host][1]
        row = (label, sent, g[src]["send_eagain"] + g[src]["send_errors"], rx, sent - rx, sink, sink_drop,
               rx - sink - sink_drop, rec[f"{leg}_lost"])
        print("  ".join(f"{v:>12}" if isinstance(v, str) else f"{v:>12,}" for v in row))
    print(f"kernel drops on the relay's sockets (/proc/net/udp): {relay_drops:,}")
    if "delay_ms_buckets" in g:
        got = sum(g["delay_ms_buckets"].values()) or 1
        print("delay send→receive (relay and kernels), ms: " + ", ".join(
            f"{k} {v / got:.1%}" for k, v in g["delay_ms_buckets"].items()) + f"; max {g['max_delay_ms']:,.1f}")
    total = g["uac"]["sent"] + g["uas"]["sent"]
    print(f"packets/s into the relay: {total / g['seconds']:,.0f} (and as many out)")
    print(f"CPU over the {cores:.1f} s window: node {r['node_cpu']:.2f} s ({r['node_cpu'] / cores:.0%} of a core, "
          f"{r['node_cpu'] / max(total, 1) * 1e6:.2f} µs per packet in and out), generator {g['cpu']:.2f} s "
          f"({g['cpu'] / cores:.0%}), SIPp (both) {r['sipp_cpu']:.2f} s; node's main thread "
          f"{r['node_threads'][0]:.2f} s, its other threads (media engine) {r['node_threads'][1]:.2f} s")
    mib = 1 / 1048576
    print(f"node memory: idle RSS {r['idle_rss'] * mib:.1f} MiB, PSS {r['idle_pss'] * mib:.1f} MiB; {n} calls up "
          f"RSS {r['up_rss'] * mib:.1f} MiB, PSS {r['up_pss'] * mib:.1f} MiB; with media RSS "
          f"{r['media_rss'] * mib:.1f} MiB")
    print(f"memory per call: RSS {(r['up_rss'] - r['idle_rss']) / n / 1024:.1f} KiB (with media "
          f"{(r['media_rss'] - r['idle_rss']) / n / 1024:.1f} KiB), PSS {(r['up_pss'] - r['idle_pss']) / n / 1024:.1f} KiB")


def verdicts(r: dict) -> dict[str, bool]:
    """relay: every packet the relay took in went out to the far side's socket (the issue's "no packet
    lost in the relay"); end_to_end: besides, nothing dropped by any kernel and every packet delivered
    within 100 ms (a relay that falls behind and lets its socket buffers absorb the backlog loses
    nothing, yet delays the audio by seconds)."""
    g, rec, d = r["generator"], r["records"], r["drops"]
    calls = r["calls_up"] >= r["calls"] and rec["answered"] >= r["calls"]
    relay = calls
    end_to_end = calls and d[RELAY][1] == 0
    for src, dst, leg, dst_host in (("uac", "uas", "a", UAS_MEDIA), ("uas", "uac", "b", UAC_MEDIA)):
        relay = relay and rec[f"{leg}_rx"] == g[dst]["received"] + d[dst_host][1]
        end_to_end = end_to_end and not (g[src]["send_eagain"] or g[src]["send_errors"])
        end_to_end = end_to_end and g[src]["sent"] == rec[f"{leg}_rx"] == g[dst]["received"]
    buckets = g.get("delay_ms_buckets", {})
    late = buckets.get("<500", 0) + buckets.get(">=500", 0)
    return {"relay_lossless": relay, "end_to_end_lossless_under_100ms": end_to_end and late == 0}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", default="1000", help="concurrent calls; a comma list runs each in turn")
    ap.add_argument("--rate", type=int, default=100, help="new calls per second while they are set up")
    ap.add_argument("--seconds", type=float, default=20.0, help="seconds of RTP both ways, all calls up")
    ap.add_argument("--pin", action="store_true",
                    help="node on CPU 0, SIPp and generator on CPU 1 (on a machine nobody else uses)")
    ap.add_argument("--stop-at-loss", action="store_true", help="stop the list at the first count that loses")
    args = ap.parse_args()
    global PIN
    PIN = args.pin
    counts = [int(c) for c in args.calls.split(",")]
    if not all(1 <= c <= 5000 for c in counts) or not 1 <= args.seconds <= 120 or not 1 <= args.rate <= 1000:
        raise SystemExit("bounds: 1..5000 calls, 1..120 s, 1..1000 calls/s")
    sipp = shutil.which("sipp")
    if sipp is None:
        raise SystemExit("sipp is not installed (Debian: apt-get install sip-tester)")
    ok = True
    with tempfile.TemporaryDirectory(prefix="switchcore-media-") as tmp:
        generator = build_generator(Path(tmp))
        for n in counts:
            r = run_one(n, args, sipp, generator, Path(tmp) / f"n{n}")
            report(r)
            v = verdicts(r)
            print("  ".join(f"{k}: {b}" for k, b in v.items()))
            clean = all(v.values())
            ok = ok and clean
            if not clean and args.stop_at_loss:
                break
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
