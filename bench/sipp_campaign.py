"""Dialling throughput: calls a campaign launches per second on one node, beside the node's plain call rate.

    python bench/sipp_campaign.py --contacts 3000 --agents 1000 --rate 1000

Two runs, one after the other, in one invocation (so their ratio compares like with like on a shared
machine):

1. campaign: a node with one progressive campaign of ``--contacts`` contacts and ``--agents`` agents,
   available, whose phones are registered (digest, by a first node without the campaign on the same data
   folder) at one SIPp UAS on 127.0.0.3 (uas_agent_campaign.xml: answers, waits for the BYE). Each called
   party, a SIPp UAS on 127.0.0.2 playing uas_campaign_callee.xml, answers at once and hangs up after
   ``--talk`` ms (200 by default, the plain run's call length). The node imports the CSV, and every
   0.25 s its dialler asks the pacer how many to dial, writes each attempt to LMDB (synced) before its
   INVITE leaves, hands each answered call to an agent through the queue, and takes the results back.
   Launched per second = attempts / (last attempt's start - first attempt's start), from the attempts
   the node left in LMDB; also the wall time until the UAS had every call, and how many calls reached
   an agent (their records name one).
2. plain: SIPp UAC (uac_call.xml, -r --rate) -> the same kind of node (no campaign) -> SIPp UAS
   (uas_answer.xml): the call rate without any campaign bookkeeping, successful / elapsed.

Prints both and their ratio. Every run is bounded (SIPp -m and -timeout, subprocess time limits). The
node is pinned to CPU 0 and SIPp to CPU 1 where the machine has two.
"""
from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.sipp_node import CALLEE, cpu_seconds, free_port, last_counts, start_node, sipp, stop  # noqa: E402
from bindings.campaigns import CampaignStore  # noqa: E402
from bindings.cdr import CdrReader  # noqa: E402
from bindings.storage import Storage  # noqa: E402
from core.config import decode_config  # noqa: E402
from tests.node import UdpClient, register  # noqa: E402

MEDIA = "127.0.0.5"
AGENTS_HOST = "127.0.0.3"


def campaign_config(workdir: Path, callee_port: int, contacts: int, agents: int, limit: int) -> str:
    csv = workdir / "contacts.csv"
    # Berlin numbers ending in 1 (the callee scenario answers those), in a zone where the window is open.
    csv.write_text("phone,timezone\n" + "".join(f"+4930{2000000 + i:07d}1,Etc/GMT\n" for i in range(contacts)))
    text = (f'[media]\naddress = "{MEDIA}"\nrtp_port_min = 20000\nrtp_port_max = 60000\n'
            f'[limits]\nmax_calls = {limit}\n'
            f'[[trunks]]\nname = "carrier"\naddress = "{CALLEE}:{callee_port}"\n')
    text += '[registrar]\nalgorithms = ["MD5"]\n'
    for i in range(agents):
        text += f'[[users]]\nname = "{7000 + i}"\npassword = "pw{7000 + i}"\n'
    for i in range(agents):
        text += (f'[[agents]]\nid = "a{i}"\nphones = ["{7000 + i}"]\nstatus = "available"\n'
                 f'max_no_answer = 0\ngroups = ["outbound"]\n')
    text += ('[[queues]]\nname = "sales"\ngroups = [{ group = "outbound", level = 1, position = 1 }]\n'
             f'[[campaigns]]\nname = "bench"\ntrunk = "carrier"\ncaller_id = "+4930123400"\nqueue = "sales"\n'
             f'mode = "progressive"\ncontacts = "{csv}"\nwindow_start = "00:00"\nwindow_end = "24:00"\n'
             'default_country = "DE"\nretry = {}\nmax_attempts = 1\n')
    return text


def register_agents(workdir: Path, config: str, agents: int, phone_port: int) -> None:
    """Register every agent's phone at the agents' SIPp, through a node without the campaign on the
    same data folder (the bindings are kept in LMDB for the campaign's node)."""
    port = free_port()
    node = start_node(workdir, port, config[:config.index("[[campaigns]]")])
    try:
        with UdpClient((AGENTS_HOST, phone_port)) as client:  # the node rings the address it was sent from
            for i in range(agents):
                user = str(7000 + i)
                _, final = register(client, ("127.0.0.1", port), user, f"pw{user}",
                                    contact=f"sip:{user}@{AGENTS_HOST}:{phone_port}", expires=3600)
                if final is None or final.status != 200:
                    raise SystemExit(f"REGISTER of {user} failed: {final and final.status}")
    finally:
        stop(node)


def run_campaign(sipp_bin: str, workdir: Path, contacts: int, agents: int, limit: int, timeout: float,
                 talk_ms: int) -> dict:
    workdir.mkdir()
    port, callee_port, phone_port = free_port(), free_port(CALLEE), free_port(AGENTS_HOST)
    config = campaign_config(workdir, callee_port, contacts, agents, limit)
    register_agents(workdir, config, agents, phone_port)
    phones = subprocess.Popen(
        sipp(sipp_bin, "uas_agent_campaign", "-i", AGENTS_HOST, "-p", str(phone_port), stat=workdir / "agents.csv"),
        cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    uas = subprocess.Popen(
        sipp(sipp_bin, "uas_campaign_callee", "-i", CALLEE, "-p", str(callee_port), "-m", str(contacts),
             "-d", str(talk_ms), stat=workdir / "uas.csv"),
        cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    started = time.monotonic()
    node = start_node(workdir, port, config)
    cpu_before = cpu_seconds(node.pid)
    try:
        try:
            uas.wait(timeout)
        except subprocess.TimeoutExpired:
            uas.send_signal(signal.SIGINT)
            uas.wait(10)
        wall = time.monotonic() - started
        node_cpu = cpu_seconds(node.pid) - cpu_before
    finally:
        if uas.poll() is None:
            uas.kill()
        stop(node)
        phones.send_signal(signal.SIGINT)
        try:
            phones.wait(10)
        except subprocess.TimeoutExpired:
            phones.kill()
    (cfg,) = decode_config(config.encode(), "bench.toml").campaigns
    with Storage(workdir / "data") as storage:
        store = CampaignStore(storage)
        campaign = store.load(cfg, store.load_dnc(), time.time())
        reached = sum(1 for record in CdrReader(storage).records() if record.agent)
    attempts = sorted(campaign.attempts.values(), key=lambda a: a.started)
    span = attempts[-1].started - attempts[0].started if len(attempts) > 1 else 0.0
    ok, failed = last_counts(workdir / "uas.csv")
    return {"reached": reached, "attempts": len(attempts), "span": span, "rate": (len(attempts) - 1) / span if span else 0.0,
            "wall": wall, "counters": dict(sorted(campaign.counters.items())), "uas_ok": ok, "uas_failed": failed,
            "node_cpu": node_cpu, "node_exit": node.returncode}


def run_plain(sipp_bin: str, workdir: Path, count: int, rate: int, limit: int) -> dict:
    workdir.mkdir()
    port, callee_port = free_port(), free_port(CALLEE)
    config = (f'[media]\naddress = "{MEDIA}"\nrtp_port_min = 20000\nrtp_port_max = 60000\n'
              f'[limits]\nmax_calls = {limit}\n'
              f'[[trunks]]\nname = "callee"\naddress = "{CALLEE}:{callee_port}"\n'
              f'[[routes]]\nname = "all"\npattern = "0"\ntarget = "trunk:callee"\n')
    node = start_node(workdir, port, config)
    uas = subprocess.Popen(
        sipp(sipp_bin, "uas_answer", "-i", CALLEE, "-p", str(callee_port), "-m", str(count), stat=workdir / "uas.csv"),
        cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    cpu_before = cpu_seconds(node.pid)
    started = time.monotonic()
    try:
        run = subprocess.run(
            sipp(sipp_bin, "uac_call", f"127.0.0.1:{port}", "-s", "0301234", "-i", "127.0.0.1", "-p", str(free_port()),
                 "-r", str(rate), "-m", str(count), "-l", str(limit), stat=workdir / "uac.csv"),
            cwd=workdir, capture_output=True, text=True, timeout=300)
        elapsed = time.monotonic() - started
        node_cpu = cpu_seconds(node.pid) - cpu_before
    finally:
        try:
            uas.wait(30)
        except subprocess.TimeoutExpired:
            uas.kill()
        stop(node)
    ok, failed = last_counts(workdir / "uac.csv")
    return {"ok": ok, "failed": failed, "elapsed": elapsed, "rate": ok / elapsed if elapsed else 0.0,
            "sipp_exit": run.returncode, "node_cpu": node_cpu, "node_exit": node.returncode}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--contacts", type=int, default=2000, help="contacts in the campaign (= calls it places)")
    ap.add_argument("--agents", type=int, default=300, help="agents available to the progressive campaign")
    ap.add_argument("--talk", type=int, default=200, help="ms each called party stays on before hanging up")
    ap.add_argument("--rate", type=int, default=400, help="SIPp UAC's offered call rate in the plain run")
    ap.add_argument("--count", type=int, default=0, help="calls in the plain run (default: --contacts)")
    ap.add_argument("--limit", type=int, default=5000, help="the node's max_calls and SIPp's -l")
    ap.add_argument("--timeout", type=float, default=180.0, help="longest the campaign run may take (s)")
    args = ap.parse_args()

    sipp_bin = shutil.which("sipp")
    if sipp_bin is None:
        raise SystemExit("sipp is not installed (Debian: apt-get install sip-tester)")
    with tempfile.TemporaryDirectory(prefix="switchcore-campaign-bench-") as tmp:
        c = run_campaign(sipp_bin, Path(tmp) / "campaign", args.contacts, args.agents, args.limit, args.timeout, args.talk)
        p = run_plain(sipp_bin, Path(tmp) / "plain", args.count or args.contacts, args.rate, args.limit)
    print(f"campaign: contacts={args.contacts} agents={args.agents} attempts={c['attempts']} "
          f"results={c['counters']} uas_ok={c['uas_ok']} uas_failed={c['uas_failed']} reached_an_agent={c['reached']} node_exit={c['node_exit']}")
    print(f"campaign: launched={c['rate']:,.0f} calls/s (attempts over {c['span']:.2f} s; "
          f"{c['wall']:.2f} s wall from node start to the last call, import included) "
          f"node_cpu={c['node_cpu']:.2f}s ({c['node_cpu'] / max(c['attempts'], 1) * 1e3:.3f} ms per call)")
    print(f"plain:    offered={args.rate}/s successful={p['ok']} failed={p['failed']} elapsed={p['elapsed']:.2f}s "
          f"achieved={p['rate']:,.0f} calls/s node_cpu={p['node_cpu']:.2f}s "
          f"({p['node_cpu'] / max(p['ok'], 1) * 1e3:.3f} ms per call) sipp_exit={p['sipp_exit']} node_exit={p['node_exit']}")
    ratio = c["rate"] / p["rate"] if p["rate"] else 0.0
    print(f"ratio campaign/plain = {ratio:.2f}")
    good = c["attempts"] == args.contacts and c["node_exit"] == 0 and p["node_exit"] == 0 and p["failed"] == 0
    return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main())
