"""Every RFC 4475 / RFC 5118 torture message, byte for byte, to a running node over UDP, in a private network
namespace with only loopback.

Why a namespace: the vectors' Via headers name port 5060 (and 5050, 6050, 19823); the node answers a datagram
at its source address and, without `rport`, at the Via's sent-by port, 5060 when it has none (RFC 3261
§18.2.2, RFC 3581 §4). Inside a fresh namespace those ports are certainly ours, so the test binds them all
(and sends from 127.0.0.1:5060) and sees every answer, whatever else runs on the machine. The work runs in a
child process started under `unshare -n` (as root; `unshare -rn` maps an ordinary user to root in a user
namespace), which brings `lo` up with `ip link set lo up`, starts the node on port 15060, and writes what it
observed as JSON for the assertions here.

Run 0 sends every vector in a row to one node. Some vectors share a branch, sent-by and method (RFC 4475
reuses z9hG4bKkdjuw, RFC 5118 z9hG4bKas3-111), so that node rightly takes the later ones for retransmissions
of the first (RFC 3261 §17.2.3); those are sent again, each to a fresh node, in runs 1..n, and their answers
are the ones from there.

What a user of the node would notice, and what is asserted:
- the node survives every vector and answers an ordinary OPTIONS with 200 after each and at the end, then
  exits cleanly on SIGTERM;
- the malformed requests RFC 4475/5118 say to reject get 400 (505 for the SIP/7.0 request, badvers) with a
  reason phrase that says what was wrong, not just "Bad Request" (that holds for every 400 the node sends);
- every request that carries the headers a response needs gets a final answer;
- each answer arrives where the request's Via and rport say it should;
- a response (bigcode, scalarlg, noreason, unreason, bcast) is never answered (RFC 3261 §18.1.2: a
  response is matched to a client transaction or dropped).

Answers that cannot be observed, and why: `insuf` has no From, To or Call-ID, and `rfc4475/unlisted/test.sip`
has no SIP-Version and no Via, so no response can be built for them (RFC 3261 §8.2.6 copies those headers);
nothing is required of them but that the node lives on. Vectors RFC 4475 lets a parser accept liberally
(lwsstart, trws, escruri, baddate, regbadct, badaspec, baddn, quotbal, ltgtruri, the IPv6 3-colon URI) may
get any answer, still checked by the rules above.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
VECTORS = REPO.parent / "shared" / "vectors" / "sip"
SENDER_PORT = 5060  # the port the vectors are sent from; most Vias name it, and rport answers come back here

pytestmark = [pytest.mark.interop, pytest.mark.netns]

# Requests RFC 4475/5118 say must be rejected, and the status each must get.
MUST_REJECT = {
    "rfc4475/invalid/badinv01.sip": {400},
    "rfc4475/invalid/clerr.sip": {400},
    "rfc4475/invalid/ncl.sip": {400},
    "rfc4475/invalid/scalar02.sip": {400},
    "rfc4475/invalid/lwsruri.sip": {400},
    "rfc4475/invalid/badvers.sip": {505},
    "rfc4475/invalid/mismatch01.sip": {400},
    "rfc4475/invalid/mismatch02.sip": {400, 501},
    "rfc4475/invalid/multi01.sip": {400},
    "rfc4475/invalid/mcl01.sip": {400},
    "rfc5118/invalid/ipv6-bad.sip": {400},
}
UNADDRESSABLE = {"rfc4475/invalid/insuf.sip", "rfc4475/unlisted/test.sip"}


def read_index() -> dict[str, dict[str, str]]:
    lines = (VECTORS / "index.tsv").read_text().splitlines()
    header = lines[0].split("\t")
    return {row[0]: dict(zip(header, row)) for row in (line.split("\t") for line in lines[1:] if line)}


def vector_files() -> list[str]:
    return sorted(str(p.relative_to(VECTORS)) for sub in ("rfc4475", "rfc5118") for p in (VECTORS / sub).rglob("*.sip"))


# --- what runs inside the namespace -------------------------------------------------------------------

def _unfold(data: bytes) -> str:
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").replace("\r\n", "\n")
    return re.sub(r"\n[ \t]+", " ", head)


def top_via(data: bytes) -> tuple[str | None, int | None, bool]:
    """(transport, sent-by port, has rport) of the first Via, read liberally; (None, None, False) if none."""
    head = _unfold(data)
    m = re.search(r"^(?:via|v)[ \t]*:[ \t]*(.*)$", head, re.I | re.M)
    if not m:
        return None, None, False
    value = m.group(1).split(",", 1)[0]
    sm = re.match(r"SIP\s*/\s*[\d.]+\s*/\s*(\w+)\s+(\[[^\]]*\]|[^\s:;]+)(?:\s*:\s*(\d+))?(.*)", value, re.I)
    if not sm:
        return None, None, False
    transport, _host, port, rest = sm.groups()
    return transport.upper(), int(port) if port else None, bool(re.search(r";\s*rport\b", rest, re.I))


def expected_reply_port(data: bytes) -> int:
    """Where the node must answer a datagram we sent from SENDER_PORT (RFC 3261 §18.2.2, RFC 3581 §4):
    our port when the top Via has rport, else its sent-by port, else 5060."""
    _transport, port, rport = top_via(data)
    if rport:
        return SENDER_PORT
    return port if port is not None else 5060


def call_id_of(data: bytes) -> str | None:
    m = re.search(r"^(?:call-id|i)[ \t]*:[ \t]*(.*?)[ \t]*$", _unfold(data), re.I | re.M)
    return m.group(1) if m else None


def transaction_key(data: bytes) -> tuple | None:
    """The server transaction a request would match (RFC 3261 §17.2.3: branch, sent-by, method), read
    liberally; None for a response. Several vectors reuse one branch, sent-by and method (z9hG4bKkdjuw,
    z9hG4bKas3-111): sent to one node within Timer J they are, rightly, retransmissions of the first."""
    if data.startswith(b"SIP/"):
        return None
    head = _unfold(data)
    method = head.split(" ", 1)[0].upper()
    m = re.search(r"^(?:via|v)[ \t]*:[ \t]*(.*)$", head, re.I | re.M)
    value = m.group(1).split(",", 1)[0] if m else ""
    branch = re.search(r"branch\s*=\s*([^;,\s]+)", value, re.I)
    sent_by = re.match(r"SIP\s*/\s*[\d.]+\s*/\s*\w+\s+(\[[^\]]*\]|[^\s:;]+)(?:\s*:\s*(\d+))?", value, re.I)
    if branch is None:  # RFC 2543 matching: count it as its own transaction, Call-IDs differ anyway
        return ("no-branch", call_id_of(data), method)
    return (branch.group(1).lower(), sent_by.groups() if sent_by else None, "INVITE" if method == "ACK" else method)


def plan_rounds(names: list[str], vectors: dict[str, bytes]) -> dict[str, int]:
    """Round of each vector: how many earlier vectors share its transaction key. Round 0 is every vector."""
    counts: dict[tuple, int] = {}
    rounds = {}
    for name in names:
        key = transaction_key(vectors[name])
        rounds[name] = counts.get(key, 0) if key is not None else 0
        if key is not None:
            counts[key] = rounds[name] + 1
    return rounds


def run_in_namespace(out_path: Path) -> None:
    """The child's work. Writes what it saw as JSON to out_path.

    Run 0: one node gets every vector in a row (each followed by an OPTIONS whose 200 fences it), then a
    last OPTIONS. Runs 1..n: a fresh node each, getting again the vectors that run 0 could only see as
    retransmissions of an earlier vector's transaction, so that every vector's own answer is observed.
    """
    from tests.node import HOST, Node, UdpClient, new_call_id, read_response, sip_request, users_config

    names = vector_files()
    vectors = {name: (VECTORS / name).read_bytes() for name in names}
    rounds = plan_rounds(names, vectors)
    call_ids = {name: call_id_of(data) for name, data in vectors.items()}
    # 5061 too: a node that wrongly took a TLS Via's default port would answer bext01 there, and the
    # routing test should say so rather than the answer vanish.
    ports = {SENDER_PORT, 5060, 5061} | {expected_reply_port(data) for data in vectors.values()}
    listeners = {port: UdpClient((HOST, port)) for port in sorted(ports)}
    sender = listeners[SENDER_PORT]
    probe = UdpClient()
    node_port = next(p for p in range(15060, 16000) if p not in ports)
    result: dict = {"node_port": node_port, "listen_ports": sorted(ports), "vectors": {}, "runs": [], "stray": []}

    def one_run(run: int, batch: list[str]) -> None:
        # The previous run's node has exited; its last Timer G retransmissions may still be queued here.
        for sock in listeners.values():
            while sock.recv(0.001) is not None:
                pass
        workdir = Path(tempfile.mkdtemp(prefix=f"switchcore-vectors-{run}-"))
        node = Node.start(workdir, users_config(), port=node_port)
        info: dict = {"run": run, "sent": []}
        result["runs"].append(info)
        seen: set[bytes] = set()
        current: dict = {}

        def drain(grace: float) -> None:
            """Read what waits on the listeners; give each datagram to the vector whose answer it is."""
            deadline = time.monotonic() + grace
            while True:
                got_any = False
                for port, sock in listeners.items():
                    while (data := sock.recv(0.001)) is not None:
                        got_any = True
                        if data in seen:  # a retransmission (Timer G resends an INVITE's final answer)
                            continue
                        seen.add(data)
                        resp = read_response(data)
                        reply = {
                            "run": run,
                            "port": port,
                            "status": resp.status if resp else None,
                            "reason": resp.reason if resp else None,
                            "call_id": resp.header("call-id") if resp else None,
                            "first_line": data.split(b"\r\n", 1)[0].decode("utf-8", "replace"),
                        }
                        # The vector just sent when the Call-ID agrees (or it has none); else the latest one
                        # sent with that Call-ID (a late answer); else nobody asked for it.
                        owners = [n for n in reversed(info["sent"]) if call_ids[n] == reply["call_id"]]
                        if current and current["call_id"] in (None, reply["call_id"]):
                            owner = current["name"]
                        elif owners:
                            owner = owners[0]
                        else:
                            result["stray"].append(reply)
                            continue
                        # A vector's answers count in the run it was planned for; earlier runs saw a retransmission.
                        if rounds[owner] == run:
                            result["vectors"][owner]["replies"].append(reply)
                if not got_any and time.monotonic() >= deadline:
                    return

        def options_status(timeout: float = 5.0) -> int | None:
            call_id = new_call_id()
            req = sip_request("OPTIONS", node.uri, local_port=probe.port, call_id=call_id)
            resp = probe.request(req, node.addr, call_id, timeout)
            return resp.status if resp else None

        try:
            for name in batch:
                entry = result["vectors"].setdefault(
                    name,
                    {"round": rounds[name], "expected_port": expected_reply_port(vectors[name]),
                     "via": top_via(vectors[name])[:2], "replies": []},
                )
                current.update(name=name, call_id=call_ids[name])
                info["sent"].append(name)
                sender.send(vectors[name], node.addr)
                # The probe's 200 fences the vector: the node read the vector's datagram before the probe's.
                status = options_status()
                if run == rounds[name]:
                    entry["probe_after"] = status
                drain(0.1)
                if status != 200 or not node.alive():
                    info["stopped_after"] = name
                    break
            current.clear()
            drain(0.5)
            info["final_options"] = options_status()
            info["alive_at_end"] = node.alive()
        finally:
            info["exit_code"] = node.stop()
            node.kill()
            stderr = node.stderr()
            info["traceback"] = "Traceback (most recent call last)" in stderr
            info["stderr_tail"] = stderr[-4000:]
            shutil.rmtree(workdir, ignore_errors=True)

    try:
        for run in range(max(rounds.values()) + 1):
            one_run(run, names if run == 0 else [n for n in names if rounds[n] == run])
    finally:
        for sock in [*listeners.values(), probe]:
            sock.close()
        out_path.write_text(json.dumps(result, indent=1))


# --- the test, outside the namespace ----------------------------------------------------------------

def namespace_command() -> list[str] | None:
    """`unshare -n` (root) or `unshare -rn` (user namespace), whichever works here; None if neither does."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return None
    for cmd in (["unshare", "-n"], ["unshare", "-r", "-n"]):
        try:
            probe = subprocess.run([*cmd, "ip", "link", "set", "lo", "up"], capture_output=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if probe.returncode == 0:
            return cmd
    return None


@pytest.fixture(scope="module")
def observed(tmp_path_factory) -> dict:
    from tests.conftest import missing_requirement  # a function: a module-scoped fixture cannot take require_tool

    if not VECTORS.is_dir():
        pytest.skip(f"the SIP vectors are not at {VECTORS}")
    cmd = namespace_command()
    if cmd is None:
        missing_requirement("cannot create a network namespace (needs unshare and ip, and root or user namespaces)")
    out = tmp_path_factory.mktemp("netns") / "observed.json"
    script = f"ip link set lo up && exec {sys.executable} -m tests.interop.test_wire_vectors {out}"
    proc = subprocess.run(
        [*cmd, "sh", "-c", script], cwd=REPO, capture_output=True, text=True, timeout=180,
        env=dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))),
    )
    assert proc.returncode == 0 and out.exists(), f"the namespace run failed:\n{proc.stdout}\n{proc.stderr}"
    return json.loads(out.read_text())


def test_vectors_are_the_published_bytes():
    """Guard: what is sent is exactly the vector set index.tsv describes (sha256 of every file)."""
    if not VECTORS.is_dir():
        pytest.skip(f"the SIP vectors are not at {VECTORS}")
    index = read_index()
    files = vector_files()
    assert set(files) == set(index), set(files) ^ set(index)
    for name in files:
        assert hashlib.sha256((VECTORS / name).read_bytes()).hexdigest() == index[name]["sha256"], name


def test_node_survives_every_vector_and_still_answers_options(observed):
    runs = observed["runs"]
    assert runs and runs[0]["sent"] == vector_files(), f"run 0 stopped after {runs[0].get('stopped_after')}"
    for run in runs:
        assert "stopped_after" not in run, f"run {run['run']}: no 200 to OPTIONS right after {run['stopped_after']}"
        assert (run["final_options"], run["alive_at_end"]) == (200, True), run
        assert (run["exit_code"], run["traceback"]) == (0, False), run["stderr_tail"]
    dead_after = [name for name, v in observed["vectors"].items() if v.get("probe_after") != 200]
    assert not dead_after, f"OPTIONS not answered 200 right after {dead_after}"


def test_malformed_requests_are_rejected_with_a_reason(observed):
    problems = {}
    for name, statuses in MUST_REJECT.items():
        finals = [r for r in observed["vectors"][name]["replies"] if r["status"] and r["status"] >= 200]
        if not finals or finals[0]["status"] not in statuses:
            problems[name] = (sorted(statuses), [r["first_line"] for r in finals] or "no answer")
    assert not problems, problems


def test_every_400_says_what_was_wrong(observed):
    bare = {
        name: r["first_line"]
        for name, v in observed["vectors"].items()
        for r in v["replies"]
        if r["status"] == 400 and r["reason"].strip().lower() in ("", "bad request")
    }
    assert not bare, bare


def test_every_addressable_request_is_answered(observed):
    """Each request with the headers a response needs gets a final answer of its own, whatever it is."""
    silent = [
        name for name, v in observed["vectors"].items()
        if not (VECTORS / name).read_bytes().startswith(b"SIP/") and name not in UNADDRESSABLE
        and not any(r["status"] and r["status"] >= 200 for r in v["replies"])
    ]
    assert not silent, silent


def test_answers_go_where_via_and_rport_say(observed):
    misrouted = {
        name: (v["expected_port"], [(r["port"], r["first_line"]) for r in v["replies"]])
        for name, v in observed["vectors"].items()
        if any(r["port"] != v["expected_port"] for r in v["replies"])
    }
    assert not misrouted, f"answered on another port than the Via/rport one (expected, [(got, answer)]): {misrouted}"
    # Nothing answered where nobody asked: every datagram is attributed to the vector it answers.
    assert not observed["stray"], observed["stray"]


def test_responses_are_never_answered(observed):
    responses = [n for n in vector_files() if (VECTORS / n).read_bytes().startswith(b"SIP/")]
    assert len(responses) == 5, responses  # bigcode, scalarlg, noreason, unreason, bcast
    answered = {n: [r["first_line"] for r in observed["vectors"][n]["replies"]] for n in responses}
    assert not any(answered.values()), answered


if __name__ == "__main__":
    run_in_namespace(Path(sys.argv[1]))
