"""B2BUA calls per second beside Kamailio as a stateful proxy, in one run on one machine.

    python bench/compare_kamailio.py                        # rates 250 500 750 1000 1500 2000 ...
    python bench/compare_kamailio.py --rates 100 200 300 400 600 800 1000 1500 2000 3000 --seconds 8
    SWITCHCORE_BENCH_CPROFILE=/tmp/prof python bench/compare_kamailio.py --only switch --rates 150 --tries 1

For each offered rate, in turn: SIPp UAC -> Kamailio (bench/kamailio/kamailio.cfg: tm, t_relay of every
request to the UAS, --kam-children UDP workers) -> SIPp UAS, and SIPp UAC -> switchcore node (the B2BUA as
``bench/sipp_node.py --b2bua`` sets it up: a trunk to the UAS, SDP anchored on both legs) -> SIPp UAS.
Both sides use the same scenarios (tests/interop/scenarios/uac_call.xml and uas_answer.xml: INVITE, 100,
180, 200, ACK, 200 ms hold, BYE, 200), the server under test pinned to CPU 0 and both SIPp instances to
CPU 1, SIPp with 4 MiB buffers, Kamailio with ``-x tlsf -m 1024``, a fresh server and temporary folder for
every run. Each run offers ``rate x seconds`` calls. A server stops being stepped up once it fails a call
or its achieved rate falls below --follow of the rate it was offered; the other goes on.

Printed per rate and server: successful and failed calls, achieved rate (successful calls over the UAC's
wall time, which includes the 200 ms call hold), the server's CPU seconds per call (every process of its
session: Kamailio's workers and timers, the node's threads), and the two SIPp instances' CPU share (SIPp
is the load generator: near 100% of CPU 1 the figures say more about SIPp than about the server). Then the
highest rate each server sustained with zero failed calls, and the ratio switch / Kamailio. A rate a
server fails is run again (--tries) before it counts as its knee, since the machine is shared; "others on
CPU 0" says how much of the server's core went elsewhere while it ran (other jobs, interrupts). Only
ratios from the same run mean anything.

Every process (server, SIPp) leads its own session and is stopped by this script - SIGTERM to the
server, SIGINT to SIPp, then SIGKILL to the group - after each run and on Ctrl-C, SIGTERM or an error.
With SWITCHCORE_BENCH_CPROFILE set to a folder the switch node runs under cProfile (a .prof per run, the
top functions printed); a profiled node is several times slower, so its rates are not comparable.
"""
from __future__ import annotations

import argparse
import errno
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sipp_node import CALLEE, REPO, b2bua_config, free_port, last_counts, pinned, sipp  # noqa: E402

KAMAILIO_CFG = REPO / "bench" / "kamailio" / "kamailio.cfg"
SERVICE = "0301234"  # the number the UAC dials; the node's route sends it to the trunk
# SIPp options beyond sipp_node's: a call that waits 5 s for a message fails rather than hanging the run
# (the scenarios have no timeouts of their own once a 180 stops the INVITE's retransmissions), and the
# statistics file is written every second, so a run stopped early still has its counts.
BOUNDS = ("-recv_timeout", "5000", "-fd", "1")
# Set to a folder, this runs every switch node under cProfile and leaves one .prof file per run there
# (with its top functions printed): a profiled node is several times slower, so its rates mean nothing.
PROFILE_ENV = "SWITCHCORE_BENCH_CPROFILE"
# Every process this script started and has not yet seen exit; each leads its own session (process
# group), so that a Ctrl-C in the terminal reaches only this script and it stops them itself, in order.
LIVE: list[subprocess.Popen] = []
# How a profiled node starts: cProfile timed by the main thread's CPU clock, not the wall clock (which
# would charge the event loop's idle waits to whatever Python frame is outermost), stats dumped on exit.
PROFILED_NODE = """\
import cProfile, runpy, sys, time
out, sys.argv = sys.argv[1], ["switchcore", *sys.argv[2:]]
profiler = cProfile.Profile(time.thread_time)
try:
    profiler.runcall(runpy.run_module, "bindings.cli", run_name="__main__", alter_sys=True)
except SystemExit:
    pass
finally:
    profiler.dump_stats(out)
"""


@dataclass
class Run:
    server: str
    rate: int
    calls: int
    ok: int
    failed: int
    elapsed: float
    server_cpu: float
    sipp_cpu: float
    sipp_exit: int
    others_cpu0: float  # CPU 0 seconds spent on anything but the server (other jobs, interrupts)

    @property
    def achieved(self) -> float:
        return self.ok / self.elapsed if self.elapsed else 0.0

    @property
    def cpu_per_call_ms(self) -> float:
        return self.server_cpu / self.ok * 1e3 if self.ok else float("nan")

    def sustained(self, follow: float) -> bool:
        return self.failed == 0 and self.ok == self.calls and self.achieved >= follow * self.rate


def session_cpu_seconds(sid: int) -> float:
    """User + system CPU seconds of every live process in session ``sid``: the server we started as a
    session leader and whatever it forked (Kamailio's workers). /proc/PID/task/*/children needs a kernel
    option this machine lacks, so the session is found by scanning /proc."""
    total, tick = 0.0, os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if int(fields[3]) == sid:
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def cpu_busy_seconds(cpu: int) -> float:
    """Seconds CPU ``cpu`` has spent busy since boot (user, nice, system, irq, softirq, steal)."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{cpu} "):
            user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, line.split()[1:9])
            return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
    return 0.0


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def udp_port_taken(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind((host, port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
        return False


def spawn(cmd: list[str], cwd: Path, log: Path | None = None) -> subprocess.Popen:
    """Start ``cmd`` as the leader of a new session, remembered in LIVE until it is seen to exit."""
    with (log.open("w") if log is not None else open(os.devnull, "w")) as err:
        proc = subprocess.Popen(cmd, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                                start_new_session=True)
    LIVE.append(proc)
    return proc


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, grace: float = 10.0) -> int:
    """``sig`` to the process, then SIGKILL to its whole session (process group) if it has not exited
    within ``grace`` seconds; bounded in time. Returns its exit status."""
    if proc.poll() is None:
        try:
            proc.send_signal(sig)
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            pass
    # Whatever it left in its group (a Kamailio worker that outlived its main process) goes too.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        pass
    if proc.poll() is not None and proc in LIVE:
        LIVE.remove(proc)
    return proc.returncode if proc.returncode is not None else -signal.SIGKILL


def wait_started(proc: subprocess.Popen, log: Path, ready, what: str, timeout: float = 15.0) -> None:
    """Wait (bounded) until ``ready()``; if the process exits first or time runs out, stop it and fail
    with the end of its log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if ready():
            return
        time.sleep(0.05)
    stop(proc, signal.SIGKILL, 0)
    tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
    raise RuntimeError(f"{what} did not start (exit {proc.returncode}):\n{tail}")


def start_kamailio(kamailio: str, workdir: Path, port: int, callee_port: int, children: int) -> subprocess.Popen:
    rundir, log = workdir / "kamailio-run", workdir / "kamailio.log"
    rundir.mkdir(exist_ok=True)
    proc = spawn([*pinned(0), kamailio, "-f", str(KAMAILIO_CFG), "-DD", "-E", "-x", "tlsf", "-m", "1024",
                  "-Y", str(rundir), "-w", str(rundir), "-A", f"KAM_LISTEN=udp:127.0.0.1:{port}",
                  "-A", f'UAS_URI="sip:{CALLEE}:{callee_port}"', "-A", f"KAM_CHILDREN={children}"],
                 workdir, log)
    wait_started(proc, log, lambda: udp_port_taken("127.0.0.1", port), "kamailio")
    time.sleep(0.5)  # the socket is bound before the main process has forked its workers
    return proc


def start_switch(workdir: Path, port: int, config: str, profile: Path | None) -> subprocess.Popen:
    """``python -m bindings.cli run`` as ``bench/sipp_node.py`` starts it, but in its own session with its
    stderr in a file (a pipe nobody reads would stall a node that logs under load), under cProfile
    when ``profile`` names the output file."""
    (workdir / "switchcore.toml").write_text(config)
    log = workdir / "switch.log"
    start = ["-c", PROFILED_NODE, str(profile)] if profile is not None else ["-m", "bindings.cli"]
    proc = spawn([*pinned(0), sys.executable, *start, "run",
                  "--config", str(workdir / "switchcore.toml"), "--listen", f"127.0.0.1:{port}",
                  "--data", str(workdir / "data"), "--log-level", "warning"], REPO, log)
    wait_started(proc, log, lambda: "listening on tcp:" in log.read_text(errors="replace"), "the switch node")
    return proc


def one_run(server: str, rate: int, calls: int, args: argparse.Namespace, tools: dict[str, str],
            profile: Path | None) -> Run:
    """One fresh server, one SIPp UAS, one SIPp UAC offering ``calls`` at ``rate``; everything stopped
    and the temporary folder removed before it returns, also on an error or Ctrl-C."""
    with tempfile.TemporaryDirectory(prefix=f"switchcore-cmp-{server}-") as tmp:
        workdir = Path(tmp)
        port, callee_port = free_port(), free_port(CALLEE)
        procs: list[subprocess.Popen] = []  # stopped in reverse order: UAC, UAS, then the server
        try:
            if server == "kamailio":
                proc = start_kamailio(tools["kamailio"], workdir, port, callee_port, args.kam_children)
            else:
                proc = start_switch(workdir, port, b2bua_config(callee_port, args.limit), profile)
            procs.append(proc)
            sipp_before = children_cpu_seconds()
            uas = spawn(sipp(tools["sipp"], "uas_answer", "-i", CALLEE, "-p", str(callee_port), "-m", str(calls),
                             *BOUNDS, stat=workdir / "uas.csv"), workdir, workdir / "uas.err")
            procs.append(uas)
            wait_started(uas, workdir / "uas.err", lambda: udp_port_taken(CALLEE, callee_port), "the SIPp UAS", 5)
            cpu_before, cpu0_before = session_cpu_seconds(proc.pid), cpu_busy_seconds(0)
            started = time.monotonic()
            uac = spawn(sipp(tools["sipp"], "uac_call", f"127.0.0.1:{port}", "-s", SERVICE, "-i", "127.0.0.1",
                             "-p", str(free_port()), "-r", str(rate), "-m", str(calls), "-l", str(args.limit),
                             *BOUNDS, stat=workdir / "uac.csv"), workdir, workdir / "uac.err")
            procs.append(uac)
            try:
                uac.wait(calls / rate + 30)
            except subprocess.TimeoutExpired:  # calls hang: stop SIPp, the unfinished ones count as failed
                stop(uac, signal.SIGINT, 5)
            elapsed = time.monotonic() - started
            server_cpu = session_cpu_seconds(proc.pid) - cpu_before
            others_cpu0 = max(0.0, cpu_busy_seconds(0) - cpu0_before - server_cpu)
            try:
                uas.wait(15)
            except subprocess.TimeoutExpired:  # calls failed: the UAS waits for ones that never come
                stop(uas, signal.SIGINT, 5)
            sipp_cpu = children_cpu_seconds() - sipp_before
        finally:
            for p in reversed(procs):
                stop(p, signal.SIGINT if p is not procs[0] else signal.SIGTERM, 5 if p is not procs[0] else 15)
        if server == "switch" and proc.returncode != 0:
            print(f"  (switch node exited {proc.returncode}: "
                  f"{(workdir / 'switch.log').read_text(errors='replace')[-500:]!r})", flush=True)
        ok, failed = last_counts(workdir / "uac.csv") if (workdir / "uac.csv").exists() else (0, calls)
        failed = max(failed, calls - ok)  # calls SIPp never finished are failures too
        return Run(server, rate, calls, ok, failed, elapsed, server_cpu, sipp_cpu, uac.returncode, others_cpu0)


def show_profile(path: Path, top: int = 25) -> None:
    import pstats

    if not path.exists():
        print(f"  (no profile written to {path})")
        return
    stats = pstats.Stats(str(path))
    total = stats.total_tt or 1.0
    rows = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:top]
    print(f"  profile {path} - {total:.2f} CPU s in the node's main thread; top {top} by own time:")
    for (file, line, func), (_cc, ncalls, tt, ct, _callers) in rows:
        where = f"{Path(file).name}:{line}" if line else file
        print(f"    {tt / total:6.1%} own {ct / total:6.1%} cum {ncalls:>9,} calls  {func}  ({where})")


def show(run: Run, follow: float) -> None:
    verdict = "ok" if run.sustained(follow) else "KNEE"
    print(f"  {run.server:9} {run.rate:>7,}/s  calls={run.calls:>7,}  successful={run.ok:>7,}  failed={run.failed:>6,}  "
          f"achieved={run.achieved:>8,.0f}/s  server_cpu/call={run.cpu_per_call_ms:6.3f} ms  "
          f"sipp_cpu={run.sipp_cpu / run.elapsed:4.0%}  cpu0_others={run.others_cpu0 / run.elapsed:4.0%}  {verdict}",
          flush=True)


def _interrupt(signum, _frame) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rates", type=int, nargs="+", default=[250, 500, 750, 1000, 1500, 2000, 3000, 4000, 6000, 8000, 12000],
                    help="offered call rates, stepped up in this order")
    ap.add_argument("--seconds", type=float, default=10.0, help="each run offers rate x seconds calls (at most 15)")
    ap.add_argument("--limit", type=int, default=20000, help="most calls open at once (-l)")
    ap.add_argument("--follow", type=float, default=0.9,
                    help="a rate is sustained if no call fails and achieved >= this share of the offered rate")
    ap.add_argument("--tries", type=int, default=2,
                    help="runs of a rate before a server counts as not sustaining it (the machine is shared)")
    ap.add_argument("--only", choices=["kamailio", "switch"], help="run one server only")
    ap.add_argument("--kam-children", type=int, default=1,
                    help="Kamailio's UDP worker processes (all pinned to CPU 0 with the rest of it, as the "
                         "switch's one process is)")
    args = ap.parse_args()
    tools = {name: shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin") for name in ("sipp", "kamailio")}
    if tools["sipp"] is None:
        raise SystemExit("sipp is not installed (Debian: apt-get install sip-tester)")
    servers = [s for s in ("kamailio", "switch") if args.only in (None, s)]
    if "kamailio" in servers and tools["kamailio"] is None:
        raise SystemExit("kamailio is not installed (Debian: apt-get install kamailio)")
    seconds = min(args.seconds, 15.0)
    print(f"calls: SIPp UAC -> server -> SIPp UAS; server on CPU 0, SIPp on CPU 1; {seconds:g} s of calls a run; "
          f"sustained = 0 failed and achieved >= {args.follow:.0%} of offered")
    results: dict[str, list[Run]] = {s: [] for s in servers}
    profile_dir = Path(os.environ[PROFILE_ENV]) if os.environ.get(PROFILE_ENV) else None
    if profile_dir is not None:
        profile_dir.mkdir(parents=True, exist_ok=True)
        print(f"{PROFILE_ENV}: the switch runs under cProfile, profiles in {profile_dir} (its rates are not comparable)")
    # SIGTERM or SIGHUP end the ramp the way Ctrl-C does: every process stopped, every temp folder removed.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    interrupted = False
    try:
        active = list(servers)
        for i, rate in enumerate(sorted(args.rates)):
            if not active:
                break
            print(f"rate {rate:,}/s", flush=True)
            # Alternate which server goes first, so that neither always runs on a machine warmed by the other.
            order = active if i % 2 == 0 else active[::-1]
            passed = {s: False for s in order}
            for attempt in range(max(1, args.tries)):
                for server in (s for s in order if not passed[s]):
                    profile = (profile_dir / f"switch-{rate}-{attempt}.prof"
                               if profile_dir is not None and server == "switch" else None)
                    run = one_run(server, rate, max(1, int(rate * seconds)), args, tools, profile)
                    results[server].append(run)
                    passed[server] = run.sustained(args.follow)
                    show(run, args.follow)
                    if profile is not None:
                        show_profile(profile)
                    time.sleep(1.0)  # let the kernel's socket buffers drain
                if all(passed.values()):
                    break
            active = [s for s in active if passed[s]]
    except KeyboardInterrupt:
        interrupted = True
        print("\ninterrupted: the figures below are those of the runs that finished", flush=True)
    finally:
        for proc in list(LIVE):  # only if a stop itself was interrupted
            stop(proc, signal.SIGKILL, 0)
    print()
    print("| server | offered | calls | successful | failed | achieved | server CPU per call | SIPp CPU (CPU 1) "
          "| others on CPU 0 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for server in servers:
        for r in results[server]:
            print(f"| {server} | {r.rate:,}/s | {r.calls:,} | {r.ok:,} | {r.failed:,} | {r.achieved:,.0f}/s | "
                  f"{r.cpu_per_call_ms:.3f} ms | {r.sipp_cpu / r.elapsed:.0%} | {r.others_cpu0 / r.elapsed:.0%} |")
    best = {s: max((r.rate for r in results[s] if r.sustained(args.follow)), default=0) for s in servers}
    print()
    top = max(args.rates)
    for server in servers:
        # A server that sustained the highest rate offered was not pushed to its knee: its figure is a floor.
        floor = " (the top of the ramp: at least)" if best[server] == top else ""
        print(f"highest rate sustained with zero failed calls: {server} {best[server]:,}/s{floor}")
    if len(servers) == 2:
        k, s = best["kamailio"], best["switch"]
        print(f"ratio switch / kamailio: {s / k:.2f}" if k else "ratio: kamailio sustained none of the rates")
        common = [(a, b) for a in results["kamailio"] for b in results["switch"]
                  if a.rate == b.rate and a.sustained(args.follow) and b.sustained(args.follow)]
        if common:
            a, b = common[-1]
            print(f"CPU per call at {a.rate:,}/s: kamailio {a.cpu_per_call_ms:.3f} ms, switch {b.cpu_per_call_ms:.3f} ms "
                  f"(kamailio / switch = {a.cpu_per_call_ms / b.cpu_per_call_ms:.2f})")
        print("target (switch >= 50% of kamailio's rate):", "met" if k and s >= 0.5 * k else "NOT met")
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
