"""Queue calls against direct calls on one node: does the ACD add to a call's cost?

    python bench/sipp_queue.py --rate 150 --count 1000 --agents 100 --rounds 2

One node (``python -m bindings.cli run``, its own temporary data folder) and one SIPp UAS on 127.0.0.42
that is every agent's phone and a plain user's phone at once: before it starts, the bench registers
users 1001… (the agents' phones) and 2000 (a user) from that address and port with digest, so the node
sends both kinds of call there. Then, in the same run and in turn (direct, hosted, queue, direct …),
a SIPp UAC on 127.0.0.1 places --count calls at --rate per second to

- "2000", routed straight to the user's phone (``target = "user:2000"``): the switch relays the INVITE;
- "900", hosted without the ACD (``target = "ivr:hosted"``): the switch answers the caller itself,
  plays a 20 ms prompt, then (no digit: ``on_timeout = "user:2000"``) rings the user's phone and
  bridges the answer — the cost of a call the switch hosts, apart from the queue's;
- "800", the queue (``target = "queue:sales"``, longest idle agent, no wrap-up): the switch answers the
  caller itself, starts the queue's music, the ACD offers the call to a free agent, the switch INVITEs
  that agent's phone and bridges the answer; every member and agent event goes to the queue log.

First --warmup calls of each kind (not counted: the first calls after a start are slower). The phone
answers at once and hangs up after --talk-ms (``uas_agent_answer.xml``); the caller waits for
that BYE (``uac_queue_caller.xml``), so both kinds of call have the same SIP shape on the phone's side.
Printed per run: successful and failed calls, the achieved rate (successful / wall time of the SIPp
run), the node's CPU time per call, and the caller's mean INVITE→200 and call length as SIPp measured
them (a queue call's 200 is the switch's own; a direct call's is the phone's, relayed); then the medians and the ratios queue/direct (what a queue
call costs beside a plain one) and queue/hosted (what the ACD itself adds: agents' state, offers, the
queue log); and the setup time the records give (INVITE in → the phone's 200 in), direct against
queue. The node is
pinned to CPU 0 and the SIPps to CPU 1 where there are two. Every run is bounded by --count, SIPp's
-timeout and a subprocess timeout.
"""
from __future__ import annotations

import argparse
import csv
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.sipp_node import cpu_seconds, pinned, start_node, stop  # noqa: E402
from bindings.acdlog import read_queue_log  # noqa: E402
from bindings.cdr import CdrReader  # noqa: E402
from bindings.storage import Storage  # noqa: E402
from tests.node import UdpClient, free_port, register  # noqa: E402

SCENARIOS = REPO / "tests" / "interop" / "scenarios"
PHONE = "127.0.0.42"
MEDIA = "127.0.0.43"
USER = "2000"
KINDS = ("direct", "hosted", "queue")


def config(agents: int, limit: int) -> str:
    text = (f'[media]\naddress = "{MEDIA}"\nrtp_port_min = 30000\nrtp_port_max = 60000\n'
            f'[limits]\nmax_calls = {limit}\n[registrar]\nalgorithms = ["MD5", "SHA-256"]\n')
    users = [str(1001 + i) for i in range(agents)] + [USER]
    for u in users:
        text += f'[[users]]\nname = "{u}"\npassword = "secret{u}"\n'
    for i in range(agents):
        text += (f'[[agents]]\nid = "a{i + 1}"\nphones = ["{1001 + i}"]\nstatus = "available"\n'
                 f"max_no_answer = 0\nno_answer_delay = 0.0\n")
    tiers = ", ".join(f'{{ agent = "a{i + 1}", level = 1, position = {i + 1} }}' for i in range(agents))
    text += (f'[[queues]]\nname = "sales"\nstrategy = "longest_idle_agent"\nagents = [{tiers}]\n'
             f"ring_timeout = 5.0\nwrap_up = 0.0\n")
    # A hosted call without the ACD: answered by the switch, a 20 ms prompt, then the user's phone.
    text += (f'[[ivr]]\nname = "hosted"\nprompt = "tone:440/0.02"\ntimeout = 0.001\nretries = 0\n'
             f'on_timeout = "user:{USER}"\n')
    text += ('[[routes]]\nname = "queue"\nmatch = "exact"\npattern = "800"\ntarget = "queue:sales"\n'
             '[[routes]]\nname = "hosted"\nmatch = "exact"\npattern = "900"\ntarget = "ivr:hosted"\n'
             f'[[routes]]\nname = "user"\nmatch = "exact"\npattern = "{USER}"\ntarget = "user:{USER}"\n')
    return text


def last_counts(stat_file: Path) -> tuple[int, int, float, float]:
    """Successful and failed calls, and the caller's mean INVITE→200 and call length (ms)."""
    rows = list(csv.reader(stat_file.open(), delimiter=";"))
    last = dict(zip(rows[0], rows[-1]))

    def ms(value: str) -> float:  # SIPp's "HH:MM:SS:microseconds"
        h, m, sec, us = (int(x) for x in value.split(":"))
        return ((h * 60 + m) * 60 + sec) * 1e3 + us / 1e3

    return (int(last["SuccessfulCall(C)"]), int(last["FailedCall(C)"]), ms(last["ResponseTime1(C)"]),
            ms(last["CallLength(C)"]))


def sipp(sipp_bin: str, scenario: str, *args: str, timeout: float = 600.0) -> list[str]:
    return [*pinned(1), sipp_bin, "-sf", str(SCENARIOS / scenario), *args,
            "-buff_size", "4194304", "-timeout", f"{int(timeout)}s", "-nostdin"]


def register_phones(node_port: int, phone_port: int, users: list[str]) -> None:
    """Each user registers with digest from the phone's address and port (its contact: the UAS)."""
    with UdpClient((PHONE, phone_port)) as client:
        for user in users:
            _, final = register(client, ("127.0.0.1", node_port), user, f"secret{user}",
                                contact=f"<sip:{user}@{PHONE}:{phone_port}>", expires=3600)
            if final is None or final.status != 200:
                raise SystemExit(f"registering {user} failed: {final.status if final else 'no answer'}")


def one_run(sipp_bin: str, workdir: Path, node: subprocess.Popen, port: int, number: str, name: str,
            args) -> dict:
    stat = workdir / f"{name}.csv"
    cpu_before = cpu_seconds(node.pid)
    started = time.monotonic()
    # Bounded: SIPp gives up 30 s after the last call should have started (an overloaded node), and
    # is stopped 10 s after that; the counts then are what completed.
    limit = args.count / args.rate + 30
    proc = subprocess.Popen(
        sipp(sipp_bin, "uac_queue_caller.xml", f"127.0.0.1:{port}", "-s", number, "-key", "caller", "5550100",
             "-i", "127.0.0.1", "-p", str(free_port()), "-r", str(args.rate), "-m", str(args.count),
             "-l", str(args.limit), "-trace_stat", "-stf", str(stat), timeout=limit),
        cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        code = proc.wait(limit + 10)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait(5)
    elapsed = time.monotonic() - started
    node_cpu = cpu_seconds(node.pid) - cpu_before
    ok, failed, answer_ms, length_ms = last_counts(stat)
    return {"name": name, "ok": ok, "failed": failed, "exit": code, "elapsed": elapsed,
            "answer_ms": answer_ms, "length_ms": length_ms,
            "rate": ok / elapsed if elapsed else 0.0, "cpu_ms": node_cpu / ok * 1e3 if ok else float("nan")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=int, default=150, help="new calls per second")
    ap.add_argument("--count", type=int, default=1000, help="calls per run")
    ap.add_argument("--agents", type=int, default=100, help="agents in the queue (each a registered phone)")
    ap.add_argument("--rounds", type=int, default=2, help="rounds of the three runs, in turn")
    ap.add_argument("--talk-ms", type=int, default=10, help="how long the phone talks before its BYE")
    ap.add_argument("--limit", type=int, default=2000, help="most calls open at once (-l and max_calls)")
    ap.add_argument("--warmup", type=int, default=100, help="calls of each kind first, not counted")
    ap.add_argument("--keep", metavar="DIR", help="work in DIR and keep the node's log, data and SIPp's stats")
    ap.add_argument("--kinds", default=",".join(KINDS), help="which runs, of direct,hosted,queue")
    args = ap.parse_args()
    sipp_bin = shutil.which("sipp")
    if sipp_bin is None:
        raise SystemExit("sipp is not installed (Debian: apt-get install sip-tester)")
    with tempfile.TemporaryDirectory(prefix="switchcore-queue-bench-") as tmp:
        workdir = Path(args.keep or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        port, phone_port = free_port(), free_port(PHONE)
        node = start_node(workdir, port, config(args.agents, args.limit))
        uas = None
        results = []
        try:
            register_phones(port, phone_port, [str(1001 + i) for i in range(args.agents)] + [USER])
            uas = subprocess.Popen(
                sipp(sipp_bin, "uas_agent_answer.xml", "-i", PHONE, "-p", str(phone_port), "-d", str(args.talk_ms)),
                cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.5)
            if args.warmup:
                warm = argparse.Namespace(**{**vars(args), "count": args.warmup})
                for number, name in ((USER, "direct"), ("900", "hosted"), ("800", "queue")):
                    r = one_run(sipp_bin, workdir, node, port, number, f"warmup-{name}", warm)
                    print(f"warm-up {name}: successful={r['ok']} failed={r['failed']}", flush=True)
                time.sleep(1.0)
            counted_from = time.time()
            for i in range(args.rounds):
                for number, name in ((USER, "direct"), ("900", "hosted"), ("800", "queue")):
                    if name not in args.kinds.split(","):
                        continue
                    results.append(one_run(sipp_bin, workdir, node, port, number, f"{name}{i + 1}", args))
                    r = results[-1]
                    print(f"{r['name']:8} successful={r['ok']} failed={r['failed']} sipp_exit={r['exit']} "
                          f"elapsed={r['elapsed']:.2f}s achieved={r['rate']:,.1f}/s "
                          f"node_cpu={r['cpu_ms']:.3f} ms/call caller_invite_to_200={r['answer_ms']:.1f} ms "
                          f"call_length={r['length_ms']:.0f} ms", flush=True)
                    time.sleep(1.0)  # the last calls' records and queue log entries are written
        finally:
            if uas is not None:
                stop(uas, signal.SIGINT, 10)
            node.send_signal(signal.SIGTERM)
            node.wait(30)
        with Storage(workdir / "data") as storage:
            answers = sum(1 for e in read_queue_log(storage) if e.kind == "answer")
            records = list(CdrReader(storage).records())
        # Setup time as the switch saw it: the caller's INVITE to the phone's 200 (for a queue call,
        # the end of its queue stay: the agent answered).
        setup = {
            "direct": [r.answered - r.offered for r in records
                       if r.callee == USER and r.answered is not None and r.offered >= counted_from],
            "queue": [r.queue_segments[-1].left - r.offered for r in records
                      if r.callee == "800" and r.queue_segments and r.queue_segments[-1].answered_by
                      and r.offered >= counted_from],
        }
        for kind, values in setup.items():
            values.sort()
            if values:
                print(f"setup time {kind}: calls={len(values)} median={statistics.median(values) * 1e3:.2f} ms "
                      f"p95={values[int(0.95 * (len(values) - 1))] * 1e3:.2f} ms")
        if setup["direct"] and setup["queue"]:
            print(f"setup time median queue/direct = "
                  f"{statistics.median(setup['queue']) / statistics.median(setup['direct']):.3f}")
        queued = sum(r["ok"] for r in results if r["name"].startswith("queue")) + (
            args.warmup if "queue" in args.kinds.split(",") else 0)
        print(f"queue log: {answers} calls answered by agents; {queued} queue calls (warm-up included) "
              f"sent by SIPp")
        ran = [k for k in KINDS if any(r["name"].startswith(k) for r in results)]
        med = {kind: {key: statistics.median(r[key] for r in results if r["name"].startswith(kind))
                      for key in ("rate", "cpu_ms")} for kind in ran}
        for key, label, unit in (("rate", "achieved calls/s", "/s"), ("cpu_ms", "node CPU per call", " ms")):
            ratios = [f"queue/{k} = {med['queue'][key] / med[k][key]:.3f}" for k in ("direct", "hosted")
                      if "queue" in med and k in med]
            print(f"median {label}: " + ", ".join(f"{k} {med[k][key]:,.3f}{unit}" for k in ran)
                  + ("; " + ", ".join(ratios) if ratios else ""))
        warnings = (workdir / "node.log").read_text(errors="replace").splitlines()
        print(f"node log: {len(warnings)} lines" + (f"; last: {warnings[-1][:200]}" if warnings else ""))
        clean = all(r["exit"] == 0 and r["failed"] == 0 for r in results) and node.returncode == 0
        return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
