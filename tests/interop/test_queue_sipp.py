"""The ACD on real sockets: SIPp callers (127.0.0.1) dial a queue's number, the node answers them
itself and plays the queue's music, and the ACD rings the agents' phones — each a SIPp UAS on its own
loopback address (127.0.41.N) that first registered as the agent's user with digest (the same address
and port, so the registered contact is the UAS) and then answers, answers busy, or rings until
cancelled.

Checked as an operator would: on the wire (which agent's SIPp got each caller's INVITE, who got the
CANCEL), in the queue log the node keeps in LMDB (``bindings.acdlog.read_queue_log``: offers,
answers, misses, abandons with their wait, agents' status changes) and in the call records (the
agent's leg, who hung up). Every SIPp run is bounded (``-m``, ``-timeout``, a subprocess timeout) and
the callers are started one after the other on events seen on the wire, not on guessed delays, so the
order the strategies give is what is tested.
"""
from __future__ import annotations

import json
import re
import subprocess
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pytest

from bindings.acdlog import read_queue_log
from bindings.storage import Storage
from core.acd.log import QueueLogEntry, recompute
from core.cdr.record import Disposition, HangupBy, QueueOutcome
from tests.interop.sippcalls import read_records, register_phone, sipp_command, stop_process, wait_bound
from tests.node import HOST, Node, free_port

pytestmark = pytest.mark.interop

MEDIA = "127.0.0.9"  # the node's media address: no other test's node uses it
RTP_MIN, RTP_MAX = 25000, 25999
QUEUE_NUMBER = "800"
WAIT = 15.0  # the longest any single step may take on a loaded machine


# -- the node's config -------------------------------------------------------------------------------
def queue_config(agents: list["AgentPhone"], queue: str, *, acd: str = "", node: str = "") -> str:
    """Users 1001…, one [[agents]] per phone (available from the start, never paused for missed
    offers unless its ``extra`` lines say so), the queue table ``queue`` (named "sales"), the route
    "800" to it, ``node`` (more lines of [node]) and ``acd`` (more TOML) at the end."""
    text = f"""
[node]
name = "queue-test"
{node}

[media]
address = "{MEDIA}"
rtp_port_min = {RTP_MIN}
rtp_port_max = {RTP_MAX}

[registrar]
algorithms = ["MD5", "SHA-256"]
"""
    for a in agents:
        text += f'\n[[users]]\nname = "{a.user}"\npassword = "{a.password}"\n'
    for a in agents:
        groups = f"groups = {json.dumps(list(a.groups))}\n" if a.groups else ""
        misses = "" if "max_no_answer" in a.extra else "max_no_answer = 0\n"
        text += (f'\n[[agents]]\nid = "{a.name}"\nphones = ["{a.user}"]\nstatus = "available"\n'
                 f"{misses}{groups}{a.extra}")
    text += f"\n[[queues]]\nname = \"sales\"\n{queue}\n"
    text += f'\n[[routes]]\nname = "queue"\nmatch = "exact"\npattern = "{QUEUE_NUMBER}"\ntarget = "queue:sales"\n'
    return text + acd


def tiers(agents: list["AgentPhone"]) -> str:
    return "agents = [" + ", ".join(
        f'{{ agent = "{a.name}", level = 1, position = {i + 1} }}' for i, a in enumerate(agents)) + "]"


# -- SIPp as an agent's phone ------------------------------------------------------------------------


@dataclass
class Message:
    """One SIP message a SIPp logged, read with a few regular expressions (not the node's parser)."""
    received: bool
    start: str
    call_id: str
    from_user: str
    cseq_method: str
    at: float = 0.0  # when SIPp logged it (its log's clock: the machine's, shared by every SIPp)

    @property
    def method(self) -> str:
        return "" if self.start.startswith("SIP/2.0") else self.start.split(" ", 1)[0]


def logged_at(stamp: str) -> float:
    """SIPp's separator-line time ("2026-11-23 19:20:25.289497") as seconds since the epoch."""
    try:
        return datetime.strptime(stamp.strip(), "%Y-%m-%d %H:%M:%S.%f").timestamp()
    except ValueError:
        return 0.0


def logged_messages(path: Path) -> list[Message]:
    """Every message in a SIPp ``-trace_msg`` log, in order."""
    if not path.exists():
        return []
    text = path.read_text(errors="replace")
    out = []
    parts = re.split(r"^-{10,} *(.*)$", text, flags=re.M)  # [before, stamp, block, stamp, block, ...]
    for stamp, block in zip(parts[1::2], parts[2::2]):
        m = re.search(r"^(UDP message received|UDP message sent)[^\n]*\n\s*\n?(.*)", block, re.S | re.M)
        if not m:
            continue
        body = m.group(2).lstrip("\r\n")
        lines = body.replace("\r\n", "\n").split("\n")

        def header(name: str, short: str) -> str:
            for line in lines[1:]:
                if not line.strip():
                    break
                key, _, value = line.partition(":")
                if key.strip().lower() in (name, short):
                    return value.strip()
            return ""

        from_user = re.search(r"sips?:([^@;>]+)@", header("from", "f"))
        cseq = header("cseq", "").split()
        out.append(Message(m.group(1).endswith("received"), lines[0].strip(), header("call-id", "i"),
                           from_user.group(1) if from_user else "", cseq[1] if len(cseq) > 1 else "",
                           logged_at(stamp)))
    return out


@dataclass
class AgentPhone:
    """An agent's phone: SIPp registering as ``user`` from HOST:PORT, then a SIPp UAS there."""
    sipp: str
    workdir: Path
    name: str
    user: str
    host: str
    groups: tuple[str, ...] = ()
    extra: str = ""  # more lines of the agent's [[agents]] table
    password: str = ""
    port: int = 0
    proc: subprocess.Popen | None = field(default=None, repr=False)

    def __post_init__(self):
        self.password = self.password or f"secret{self.user}"
        self.port = free_port(self.host)
        self.workdir.mkdir(parents=True, exist_ok=True)

    @property
    def contact(self) -> str:
        return f"sip:{self.user}@{self.host}:{self.port}"

    def register(self, node: Node) -> None:
        """REGISTER with digest from the address the UAS will listen on (RFC 3261 §10.2)."""
        register_phone(self.sipp, self.workdir, self.name, self.user, self.password, self.host, self.port, node)

    def start(self, scenario: str, talk_ms: int = 100) -> "AgentPhone":
        """The phone's UAS from now on: ``scenario`` for every call it is offered."""
        self.proc = subprocess.Popen(
            sipp_command(self.sipp, self.workdir, self.name, scenario, self.host, self.port, "-d", str(talk_ms)),
            cwd=self.workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_bound(self.host, self.port)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)

    def messages(self) -> list[Message]:
        return logged_messages(self.workdir / f"{self.name}-messages.log")

    def received(self, method: str) -> list[Message]:
        return [m for m in self.messages() if m.received and m.method == method]

    def callers(self) -> list[str]:
        """The caller number of every INVITE this phone was sent, in order (the switch's From user
        is the caller's number, RFC 3261 §8.1.1.3)."""
        return [m.from_user for m in self.received("INVITE")]

    def answered(self) -> list[str]:
        """The Call-IDs of the INVITEs this phone answered 200."""
        return [m.call_id for m in self.messages()
                if not m.received and m.start.startswith("SIP/2.0 200") and m.cseq_method == "INVITE"]


def phones(sipp: str, workdir: Path, count: int, **kwargs) -> list[AgentPhone]:
    return [AgentPhone(sipp, workdir / f"a{i + 1}", f"a{i + 1}", str(1001 + i), f"127.0.41.{i + 1}", **kwargs)
            for i in range(count)]


# -- SIPp as a caller -------------------------------------------------------------------------------
class Callers:
    """Callers into the queue, one SIPp process each (so each has its own number and start time)."""

    def __init__(self, sipp: str, workdir: Path, node: Node):
        self.sipp, self.workdir, self.node = sipp, workdir, node
        workdir.mkdir(parents=True, exist_ok=True)
        self.procs: dict[str, subprocess.Popen] = {}

    def call(self, number: str, scenario: str = "uac_queue_caller.xml", *, host: str = HOST,
             dialled: str = QUEUE_NUMBER, wait_ms: int = 0) -> subprocess.Popen:
        name = f"caller-{len(self.procs)}-{number.lstrip('+*')}"
        proc = subprocess.Popen(
            sipp_command(self.sipp, self.workdir, name, scenario, host, free_port(host), "-m", "1",
                         "-s", dialled, "-key", "caller", number, "-d", str(wait_ms),
                         "-trace_stat", "-stf", str(self.workdir / f"{name}-stats.csv"),
                         f"{self.node.host}:{self.node.port}"),
            cwd=self.workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs[name] = proc
        return proc

    def finish(self, proc: subprocess.Popen, timeout: float = WAIT) -> int:
        """Wait for one caller's SIPp to end its call; its exit code (0: the call went as scripted)."""
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            stop_process(proc)
            raise AssertionError(f"a caller's SIPp did not finish within {timeout} s")

    def finish_all(self) -> dict[str, int]:
        return {name: self.finish(p) for name, p in self.procs.items()}

    def errors(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-1500:] for p in self.workdir.glob("*-errors.log"))

    def stop(self) -> None:
        for proc in self.procs.values():
            stop_process(proc)


def until(predicate, timeout: float = WAIT, what: str = "") -> None:
    """Poll ``predicate`` every 20 ms until true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"not seen within {timeout} s: {what}")


def queue_log(node: Node) -> list[QueueLogEntry]:
    with Storage(node.data_dir) as storage:
        return list(read_queue_log(storage))


def queue_log_kinds(node: Node, kind: str) -> list[QueueLogEntry]:
    """The entries of one kind so far, read from the running node's LMDB (a reader beside its writer)."""
    with Storage(node.data_dir) as storage:
        return [e for e in read_queue_log(storage) if e.kind == kind]


@dataclass
class Run:
    """One test's node, agents and callers, torn down in order (callers, agents, node)."""
    sipp: str
    tmp: Path
    agents: list[AgentPhone]
    node: Node | None = None
    callers: Callers | None = None

    def start(self, queue: str, *, acd: str = "", node: str = "") -> Node:
        self.node = Node.start(self.tmp / "node", queue_config(self.agents, queue, acd=acd, node=node))
        self.callers = Callers(self.sipp, self.tmp / "callers", self.node)
        for a in self.agents:
            a.register(self.node)
        return self.node

    def close(self) -> None:
        try:
            if self.callers is not None:
                self.callers.stop()
        finally:
            for a in self.agents:
                a.stop()
            if self.node is not None:
                self.node.assert_clean_exit()

    def context(self) -> str:
        calls = self.callers.errors() if self.callers else ""
        return calls + "\n" + (self.node.stderr()[-3000:] if self.node else "")


@pytest.fixture
def run(sipp, tmp_path):
    holder: list[Run] = []

    def make(agents: list[AgentPhone]) -> Run:
        r = Run(sipp, tmp_path, agents)
        holder.append(r)
        return r

    yield make
    for r in holder:
        r.close()


def offered_agents(log: list[QueueLogEntry]) -> list[str]:
    return [e.agent for e in log if e.kind == "offer"]


def answered_by(log: list[QueueLogEntry]) -> dict[str, str]:
    """Member (the caller's Call-ID) → the agent who answered it."""
    return {e.member: e.agent for e in log if e.kind == "answer"}


# -- strategies ----------------------------------------------------------------------------------------
# One script for every strategy: a1 talks long (1.5 s), a2 and a3 briefly. Caller 1 arrives; once an agent
# talks to it caller 2 arrives; once caller 2 is done caller 3; once callers 1 and 3 are done caller 4.
# With idle times a2 < a3 < a1 (a1 ended last) at caller 4, each strategy picks differently.
EXPECTED = {
    "linear": ["a1", "a2", "a2", "a1"],  # always the first free in position order
    "round_robin": ["a1", "a2", "a3", "a1"],  # the next after the last rung, wrapping around
    "longest_idle_agent": ["a1", "a2", "a3", "a2"],  # a2's call ended first: idle the longest
}


@pytest.mark.parametrize("strategy", list(EXPECTED))
def test_each_call_goes_to_the_agent_the_strategy_names(run, sipp, tmp_path, strategy):
    agents = phones(sipp, tmp_path, 3)
    r = run(agents)
    node = r.start(f'strategy = "{strategy}"\n{tiers(agents)}\nring_timeout = 5.0')
    agents[0].start("uas_agent_answer.xml", talk_ms=1500)
    for a in agents[1:]:
        a.start("uas_agent_answer.xml", talk_ms=100)

    def invited() -> int:
        return sum(len(a.answered()) for a in agents)

    c1 = r.callers.call("5550101")
    until(lambda: invited() == 1, what="caller 1 answered by an agent")
    c2 = r.callers.call("5550102")
    until(lambda: invited() == 2, what="caller 2 answered by an agent")
    assert r.callers.finish(c2) == 0, r.context()
    c3 = r.callers.call("5550103")
    assert r.callers.finish(c3) == 0, r.context()
    assert c1.poll() is None, "caller 1's agent hung up before caller 3 was served: the script needs a1 busy"
    assert r.callers.finish(c1) == 0, r.context()
    c4 = r.callers.call("5550104")
    assert r.callers.finish(c4) == 0, r.context()

    # On the wire: which phone got which caller's INVITE.
    got = {number: a.name for a in agents for number in a.callers()}
    seen = [got.get(f"555010{i}") for i in range(1, 5)]
    assert seen == EXPECTED[strategy], {a.name: a.callers() for a in agents}
    r.node.assert_clean_exit()
    log = queue_log(node)
    assert offered_agents(log) == EXPECTED[strategy]
    assert [e.agent for e in log if e.kind == "answer"] == EXPECTED[strategy]
    records = sorted(read_records(node.data_dir), key=lambda rec: rec.offered)
    assert [rec.caller for rec in records] == [f"555010{i}" for i in range(1, 5)]
    assert [rec.agent for rec in records] == EXPECTED[strategy]
    assert all(rec.disposition == Disposition.ANSWERED and rec.hangup_by == HangupBy.CALLEE for rec in records)


def test_ring_all_rings_every_free_agent_and_cancels_the_others_when_one_answers(run, sipp, tmp_path):
    agents = phones(sipp, tmp_path, 3)
    r = run(agents)
    node = r.start(f'strategy = "ring_all"\n{tiers(agents)}\nring_timeout = 5.0')
    agents[0].start("uas_ring.xml")
    agents[1].start("uas_agent_answer_late.xml", talk_ms=200)  # answers after 600 ms of ringing
    agents[2].start("uas_ring.xml")
    assert r.callers.finish(r.callers.call("5550101")) == 0, r.context()
    r.node.assert_clean_exit()

    # Every phone got the INVITE; the two that only rang got a CANCEL for it (RFC 3261 §9.1).
    assert [a.callers() for a in agents] == [["5550101"]] * 3
    assert [len(a.received("CANCEL")) for a in agents] == [1, 0, 1]
    assert len(agents[1].answered()) == 1 and not agents[0].answered() and not agents[2].answered()
    log = queue_log(node)
    assert sorted(offered_agents(log)) == ["a1", "a2", "a3"]
    assert list(answered_by(log).values()) == ["a2"]
    # The offers the ACD took back are not misses of the agents who did not answer.
    assert not [e for e in log if e.kind == "noanswer"]
    (rec,) = read_records(node.data_dir)
    assert rec.agent == "a2" and rec.hangup_by == HangupBy.CALLEE
    (segment,) = rec.queue_segments
    assert sorted(segment.agents_offered) == ["a1", "a2", "a3"] and segment.outcome == QueueOutcome.ANSWERED


def test_a_vip_caller_overtakes_a_caller_who_waited_longer(run, sipp, tmp_path):
    (agent,) = agents = phones(sipp, tmp_path, 1)
    r = run(agents)
    node = r.start(f'strategy = "linear"\n{tiers(agents)}\nvip_callers = ["+4930123456"]\nvip = 10')
    agent.start("uas_agent_answer.xml", talk_ms=1000)
    first = r.callers.call("5550101")
    until(lambda: len(agent.answered()) == 1, what="the first caller answered")
    r.callers.call("5550102")  # waits: the only agent talks
    until(lambda: len(queue_log_kinds(node, "join")) == 2, what="the second caller queued")
    r.callers.call("+4930123456")  # the VIP, later
    assert set(r.callers.finish_all().values()) == {0}, r.context()
    assert r.callers.finish(first) == 0
    r.node.assert_clean_exit()

    # The agent's phone was offered the VIP before the caller who had waited longer.
    assert agent.callers() == ["5550101", "+4930123456", "5550102"]
    log = queue_log(node)
    first_join, normal, vip = [e for e in log if e.kind == "join"]
    assert (first_join.priority, normal.priority, vip.priority) == (0, 0, 10)
    answers = {e.member: e.at for e in log if e.kind == "answer"}
    assert normal.at < vip.at < answers[vip.member] < answers[normal.member]
    # In the records: all three answered by a1 (their queue segments), the VIP's call ended first.
    records = {rec.caller: rec for rec in read_records(node.data_dir)}
    assert [records[n].agent for n in ("5550101", "+4930123456", "5550102")] == ["a1"] * 3
    assert records["5550101"].ended < records["+4930123456"].ended < records["5550102"].ended



# -- agents who miss offers, wrap-up -------------------------------------------------------------------
@pytest.mark.parametrize("scenario, reason, cancels", [
    ("uas_ring.xml", "timeout", 1),  # rings until the ACD's ring timeout CANCELs it
    ("uas_busy.xml", "status 486", 0),  # answers 486 Busy Here at once
], ids=["rings-out", "busy"])
def test_an_agent_who_misses_is_skipped_and_paused_after_max_no_answer(run, sipp, tmp_path, scenario, reason,
                                                                       cancels):
    agents = phones(sipp, tmp_path, 2)
    agents[0].extra = "max_no_answer = 2\nno_answer_delay = 0.3\n"
    r = run(agents)
    node = r.start(f'strategy = "linear"\n{tiers(agents)}\nring_timeout = 0.6')
    agents[0].start(scenario)
    agents[1].start("uas_agent_answer.xml", talk_ms=100)
    for i in range(1, 4):
        assert r.callers.finish(r.callers.call(f"555010{i}")) == 0, r.context()
        if i == 1:
            time.sleep(0.4)  # past a1's rest after its miss (no_answer_delay): a1 is first in line again
    r.node.assert_clean_exit()

    # a1 was tried for the first two callers, then paused; a2 answered all three.
    assert agents[0].callers() == ["5550101", "5550102"]
    assert len(agents[0].received("CANCEL")) == 2 * cancels
    assert agents[1].callers() == ["5550101", "5550102", "5550103"]
    log = queue_log(node)
    assert [(e.agent, e.reason) for e in log if e.kind == "noanswer"] == [("a1", reason)] * 2
    paused = [e for e in log if e.kind == "status" and e.agent == "a1" and e.reason == "on_break"]
    assert [e.detail for e in paused] == ["no_answer"]
    second_miss = [e for e in log if e.kind == "noanswer"][1]
    assert paused[0].at == pytest.approx(second_miss.at, abs=0.05)
    assert list(answered_by(log).values()) == ["a2"] * 3


def test_an_agent_in_wrap_up_is_not_offered_a_call(run, sipp, tmp_path):
    agents = phones(sipp, tmp_path, 2)
    agents[0].extra = "wrap_up = 2.0\n"
    r = run(agents)
    node = r.start(f'strategy = "linear"\n{tiers(agents)}\nwrap_up = 0.0')
    for a in agents:
        a.start("uas_agent_answer.xml", talk_ms=100)
    assert r.callers.finish(r.callers.call("5550101")) == 0, r.context()
    ended = time.monotonic()
    assert r.callers.finish(r.callers.call("5550102")) == 0, r.context()  # a1 wraps up: a2 gets it
    assert time.monotonic() - ended < 1.5, "the second call took too long to tell wrap-up apart"
    time.sleep(max(0.0, ended + 2.3 - time.monotonic()))
    assert r.callers.finish(r.callers.call("5550103")) == 0, r.context()  # wrap-up over: a1 again
    r.node.assert_clean_exit()

    assert agents[0].callers() == ["5550101", "5550103"]
    assert agents[1].callers() == ["5550102"]
    log = queue_log(node)
    (talk_end, *_) = [e for e in log if e.kind == "talk_end" and e.agent == "a1"]
    assert float(talk_end.detail) == 2.0
    offers = [e for e in log if e.kind == "offer"]
    assert [e.agent for e in offers] == ["a1", "a2", "a1"]
    assert offers[1].at < talk_end.at + 2.0 <= offers[2].at


# -- callers who leave, overflow -----------------------------------------------------------------------
def test_a_caller_who_hangs_up_while_waiting_is_counted_abandoned_with_its_wait(run, sipp, tmp_path):
    (agent,) = agents = phones(sipp, tmp_path, 1)
    r = run(agents)
    node = r.start(f'strategy = "linear"\n{tiers(agents)}\nring_timeout = 10.0\nshort_abandon = 1.0')
    agent.start("uas_ring.xml")  # rings and rings: nobody answers
    assert r.callers.finish(r.callers.call("5550101", "uac_queue_abandon.xml", wait_ms=1500)) == 0, r.context()
    until(lambda: agent.received("CANCEL"), timeout=5, what="the CANCEL to the ringing agent")
    r.node.assert_clean_exit()

    assert agent.callers() == ["5550101"] and len(agent.received("CANCEL")) == 1
    log = queue_log(node)
    (abandon,) = [e for e in log if e.kind == "abandon"]
    assert 1.4 <= abandon.wait <= 3.0 and abandon.position == 1
    (join,) = [e for e in log if e.kind == "join"]
    assert abandon.at - join.at == pytest.approx(abandon.wait, abs=0.01)
    counted = recompute(log, "sales", service_level=20.0, short_abandon=1.0)
    assert (counted.offered, counted.answered, counted.abandoned, counted.short_abandoned) == (1, 0, 1, 0)
    # The ring-out was the caller's doing, not the agent's miss.
    assert not [e for e in log if e.kind == "noanswer"]
    (rec,) = read_records(node.data_dir)
    assert (rec.disposition, rec.hangup_by) == (Disposition.ABANDONED, HangupBy.CALLER)
    (segment,) = rec.queue_segments
    assert (segment.outcome, segment.agents_offered, segment.answered_by) == (QueueOutcome.ABANDONED, ("a1",), "")
    assert segment.left - segment.joined == pytest.approx(abandon.wait, abs=0.01)


def test_overflow_moves_a_waiting_caller_to_the_blended_group_after_its_level_wait(run, sipp, tmp_path):
    inbound, blended = agents = phones(sipp, tmp_path, 2)
    inbound.groups, blended.groups = ("inbound",), ("blended",)
    r = run(agents)
    node = r.start('strategy = "longest_idle_agent"\n'
                   'groups = [{ group = "inbound", level = 1, position = 1 }, '
                   '{ group = "blended", level = 2, position = 1 }]\n'
                   'level_waits = { 2 = 1.5 }\nring_timeout = 5.0')
    inbound.start("uas_agent_answer.xml", talk_ms=2500)
    blended.start("uas_agent_answer.xml", talk_ms=100)
    first = r.callers.call("5550101")
    until(lambda: inbound.answered(), what="the first caller answered by the inbound agent")
    assert r.callers.finish(r.callers.call("5550102")) == 0, r.context()
    assert r.callers.finish(first) == 0, r.context()
    r.node.assert_clean_exit()

    # Level 1 first: the free blended agent was not rung for the first caller, nor for the second
    # until its 1.5 s at level 1 were over (the inbound agent still talking).
    assert inbound.callers() == ["5550101"] and blended.callers() == ["5550102"]
    log = queue_log(node)
    joins = {e.member: e.at for e in log if e.kind == "join"}
    (offer,) = [e for e in log if e.kind == "offer" and e.agent == "a2"]
    (talk_end,) = [e for e in log if e.kind == "talk_end" and e.agent == "a1"]
    assert 1.45 <= offer.at - joins[offer.member] < 2.5 and offer.at < talk_end.at
    records = {rec.caller: rec for rec in read_records(node.data_dir)}
    assert (records["5550101"].agent, records["5550102"].agent) == ("a1", "a2")


# -- agents' feature codes -----------------------------------------------------------------------------
def test_feature_codes_log_an_agent_out_and_back_in(run, sipp, tmp_path):
    agents = phones(sipp, tmp_path, 2)
    r = run(agents)
    node = r.start(f'strategy = "linear"\n{tiers(agents)}')
    for a in agents:
        a.start("uas_agent_answer.xml", talk_ms=100)
    a1 = agents[0]

    def dial_code(code: str) -> None:
        # From a1's phone (its registered address, another port; From its user): answered, a beep,
        # then the switch hangs up.
        assert r.callers.finish(r.callers.call(a1.user, host=a1.host, dialled=code)) == 0, r.context()

    dial_code("*62")
    assert r.callers.finish(r.callers.call("5550101")) == 0, r.context()  # a1 logged out: a2
    dial_code("*61")
    assert r.callers.finish(r.callers.call("5550102")) == 0, r.context()  # a1 back: first in line
    r.node.assert_clean_exit()

    assert a1.callers() == ["5550102"] and agents[1].callers() == ["5550101"]
    log = queue_log(node)
    changes = [e.reason for e in log if e.kind == "status" and e.agent == "a1"]
    assert changes == ["available", "logged_out", "available"]
    assert offered_agents(log) == ["a2", "a1"]
    codes = [rec for rec in read_records(node.data_dir) if rec.callee.startswith("*")]
    assert sorted((rec.callee, rec.caller, rec.hangup_by) for rec in codes) == [
        ("*61", "1001", HangupBy.SYSTEM), ("*62", "1001", HangupBy.SYSTEM)]


# -- the call record ---------------------------------------------------------------------------------
def test_the_call_record_names_the_queue_and_the_agent(run, sipp, tmp_path):
    agents = phones(sipp, tmp_path, 2)
    agents[0].extra = "max_no_answer = 3\nno_answer_delay = 5.0\n"
    r = run(agents)
    node = r.start(f'strategy = "linear"\n{tiers(agents)}\nring_timeout = 5.0')
    agents[0].start("uas_busy.xml")
    agents[1].start("uas_agent_answer.xml", talk_ms=100)
    assert r.callers.finish(r.callers.call("5550101")) == 0, r.context()
    r.node.assert_clean_exit()
    (rec,) = read_records(node.data_dir)
    (segment,) = rec.queue_segments
    assert (segment.queue, segment.outcome, segment.agents_offered, segment.answered_by) == (
        "sales", QueueOutcome.ANSWERED, ("a1", "a2"), "a2")
    assert rec.agent == "a2"



def test_the_agents_invite_does_not_wait_for_the_commit_that_holds_the_callers_answer(run, sipp, tmp_path):
    """The node answers a queued caller itself and holds that 200 until the call's journal entry is
    committed; the offer to the agent, made in the same step, goes out at once, so the agent's phone
    rings while the caller's 200 is held (a queued call's setup does not wait for the disk). A
    commit delay of 0.5 s ([node] commit_delay) makes the order plain in the two SIPps' logs."""
    agents = phones(sipp, tmp_path, 1)
    r = run(agents)
    r.start(f'strategy = "linear"\n{tiers(agents)}', node="commit_delay = 0.5")
    agents[0].start("uas_agent_answer.xml", talk_ms=100)
    assert r.callers.finish(r.callers.call("5550101")) == 0, r.context()
    (invite,) = agents[0].received("INVITE")
    (caller_log,) = (tmp_path / "callers").glob("caller-*-messages.log")
    (answer,) = [m for m in logged_messages(caller_log)
                 if m.received and m.start.startswith("SIP/2.0 200") and m.cseq_method == "INVITE"]
    # The 200 waited for the commit (about 0.5 s); the INVITE, sent in the same step, did not.
    assert answer.at - invite.at > 0.25, "the agent's INVITE waited for the commit of the caller's answer"
    r.node.assert_clean_exit()
    (rec,) = read_records(r.node.data_dir)
    assert rec.agent == "a1" and rec.answered is not None
