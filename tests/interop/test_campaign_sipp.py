"""Outbound campaigns on real sockets: the node dials a campaign's contacts through its trunk to a SIPp
UAS (127.0.0.2) that plays every called party — what each does is decided by the last digit of the
dialled number (``uas_campaign_callee.xml``: 1 answers and hangs up after a moment, 2 is busy, 3 rings
until cancelled) — and hands the answered calls to agents whose phones are SIPp UASs on their own
loopback addresses (127.0.42.N) that first registered as the agents' users with digest.

Checked as an operator would: on the wire (the Request-URIs the trunk's side was sent, in E.164, when
each came, the X-Contact the agent's phone was sent), in the call records (campaign and contact ids,
direction outbound) and in the campaign's own records (``CampaignStore``: attempts, results, counters),
read from the data folder after the node stopped. The calling window is computed here from the current
UTC hour, so the contact in "Etc/GMT" is inside it and the one in "Etc/GMT-12" (UTC+12) outside it.
Every SIPp run and every wait is bounded.
"""
from __future__ import annotations

import json
import re
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pytest

from bindings.acdlog import read_queue_log
from bindings.campaigns import CampaignStore
from bindings.storage import Storage
from core.cdr.record import Direction
from core.config import decode_config
from tests.interop.sippcalls import (UAS_HOST, read_records, register_phone, sipp_command,
                                     stop_process, wait_bound)
from tests.node import Node, free_port

pytestmark = pytest.mark.interop

MEDIA = "127.0.0.10"  # the node's media address: no other test's node uses it
RTP_MIN, RTP_MAX = 26000, 26999
WAIT = 20.0  # the longest any single step may take on a loaded machine
CAMPAIGN = "spring"

# Contacts: (id, number, zone). Last digit: 1 answers, 2 busy, 3 rings until cancelled.
OPEN, CLOSED = "Etc/GMT", "Etc/GMT-12"
ANSWERS, BUSY, RINGS = ("c-ans", "+49301110001", OPEN), ("c-busy", "+49301110002", OPEN), ("c-ring", "+49301110003", OPEN)
ASLEEP = ("c-night", "+49301110011", CLOSED)  # would answer, but it is night where it lives
BARRED = ("c-dnc", "+49301110021", OPEN)  # would answer, but the number is on the DNC list


def window_now() -> tuple[str, str]:
    """A calling window open now in UTC and closed now in UTC+12: from this UTC hour to the next
    (two hours when the next is minutes away, so it does not close during the test)."""
    t = datetime.now(timezone.utc)
    end = min(t.hour + (2 if t.minute >= 55 else 1), 24)
    return f"{t.hour:02d}:00", f"{end:02d}:00"




@dataclass
class Logged:
    """One SIP message a SIPp logged, read with regular expressions (not the node's parser)."""
    at: float  # wall-clock time SIPp logged it
    received: bool
    start: str
    headers: dict[str, str]

    @property
    def method(self) -> str:
        return "" if self.start.startswith("SIP/2.0") else self.start.split(" ", 1)[0]

    @property
    def uri(self) -> str:
        return self.start.split(" ")[1]


def logged(path: Path) -> list[Logged]:
    """Every message in a SIPp ``-trace_msg`` log, in order."""
    if not path.exists():
        return []
    out = []
    text = path.read_text(errors="replace")
    for m in re.finditer(r"^-+ (\d{4}-\d\d-\d\d\s+\d\d:\d\d:\d\d\.\d+)\s*\n(UDP message (received|sent)[^\n]*)\n\s*\n?"
                         r"(.*?)(?=^-{10,} \d{4}-|\Z)", text, re.S | re.M):
        stamp = datetime.strptime(m.group(1).split(".")[0], "%Y-%m-%d %H:%M:%S").timestamp() + float("0." + m.group(1).split(".")[1])
        lines = m.group(4).lstrip("\r\n").replace("\r\n", "\n").split("\n")
        headers = {}
        for line in lines[1:]:
            if not line.strip():
                break
            key, _, value = line.partition(":")
            headers.setdefault(key.strip().lower(), value.strip())
        out.append(Logged(stamp, m.group(3) == "received", lines[0].strip(), headers))
    return out


class Phone:
    """An agent's phone: SIPp registering as ``user`` from HOST:PORT, then the campaign-agent UAS there."""

    def __init__(self, sipp: str, workdir: Path, name: str, user: str, host: str):
        self.sipp, self.workdir, self.name, self.user, self.host = sipp, workdir, name, user, host
        self.password = f"secret{user}"
        self.port = free_port(host)
        self.proc: subprocess.Popen | None = None
        workdir.mkdir(parents=True, exist_ok=True)

    def register(self, node: Node) -> None:
        register_phone(self.sipp, self.workdir, self.name, self.user, self.password, self.host, self.port, node)

    def start(self, scenario: str = "uas_agent_campaign.xml") -> None:
        self.proc = subprocess.Popen(
            sipp_command(self.sipp, self.workdir, self.name, scenario, self.host, self.port, timeout="60s"),
            cwd=self.workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_bound(self.host, self.port)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)

    def received(self, method: str) -> list[Logged]:
        return [m for m in logged(self.workdir / f"{self.name}-messages.log") if m.received and m.method == method]

    def invites(self) -> list[Logged]:
        return self.received("INVITE")

    def errors(self) -> str:
        path = self.workdir / f"{self.name}-errors.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""


class Setup:
    """One test's called parties, agents and node (torn down in reverse)."""

    def __init__(self, sipp: str, tmp: Path, uas_port: int, agents: int):
        self.sipp, self.tmp, self.uas_port = sipp, tmp, uas_port
        self.phones = [Phone(sipp, tmp / f"a{i + 1}", f"a{i + 1}", str(1001 + i), f"127.0.42.{i + 1}")
                       for i in range(agents)]
        self.node: Node | None = None
        self.callee: subprocess.Popen | None = None
        (tmp / "callee").mkdir(parents=True, exist_ok=True)

    def config(self, contacts: list[tuple[str, str, str]], campaign: str) -> str:
        csv = self.tmp / "contacts.csv"
        csv.write_text("customer_id,phone,name,timezone\n" + "".join(
            f"{cid},{number},Contact {cid},{zone}\n" for cid, number, zone in contacts))
        dnc = self.tmp / "dnc.txt"
        dnc.write_text(BARRED[1] + "\n")
        start, end = window_now()
        text = f"""
[node]
name = "campaign-test"

[media]
address = "{MEDIA}"
rtp_port_min = {RTP_MIN}
rtp_port_max = {RTP_MAX}

[registrar]
algorithms = ["MD5", "SHA-256"]

[[trunks]]
name = "carrier"
address = "{UAS_HOST}:{self.uas_port}"
"""
        for p in self.phones:
            text += f'\n[[users]]\nname = "{p.user}"\npassword = "{p.password}"\n'
        for p in self.phones:
            text += f'\n[[agents]]\nid = "{p.name}"\nphones = ["{p.user}"]\nstatus = "available"\nmax_no_answer = 0\n'
        tiers = ", ".join(f'{{ agent = "{p.name}", level = 1, position = {i + 1} }}' for i, p in enumerate(self.phones))
        text += f'\n[[queues]]\nname = "sales"\nstrategy = "linear"\nring_timeout = 5.0\nwrap_up = 0.0\nagents = [{tiers}]\n'
        text += f"""
[[campaigns]]
name = "{CAMPAIGN}"
trunk = "carrier"
caller_id = "+4930123400"
queue = "sales"
contacts = {json.dumps(str(csv))}
dnc = {json.dumps(str(dnc))}
columns = {{ phone = "phone", name = "name", timezone = "timezone", id = "customer_id" }}
window_start = "{start}"
window_end = "{end}"
default_country = "DE"
default_timezone = "Europe/Berlin"
min_ring = 1.0
max_ring = 1.5
{campaign}
"""
        (self.tmp / "switchcore.toml").write_text(text)
        return text

    def start_callee(self, talk_ms: int = 800, scenario: str = "uas_campaign_callee.xml") -> None:
        self.callee = subprocess.Popen(
            sipp_command(self.sipp, self.tmp / "callee", "callee", scenario, UAS_HOST,
                         self.uas_port, "-d", str(talk_ms), timeout="60s"),
            cwd=self.tmp / "callee", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_bound(UAS_HOST, self.uas_port)

    def register_phones(self, text: str, scenario: str = "uas_agent_campaign.xml") -> None:
        """Register the agents' phones with a node that has no campaign yet (same data folder: the
        bindings stay for the campaign's node), then start their UASs on the registered ports. Done
        first so that no answered call can be offered to a phone that is not listening yet."""
        node = Node.start(self.tmp / "node", text[:text.index("[[campaigns]]")])
        try:
            for p in self.phones:
                p.register(node)
        finally:
            node.assert_clean_exit()
        for p in self.phones:
            p.start(scenario)

    def start_node(self, text: str) -> Node:
        self.node = Node.start(self.tmp / "node", text)
        return self.node

    def callee_log(self) -> list[Logged]:
        return logged(self.tmp / "callee" / "callee-messages.log")

    def dialled(self) -> list[Logged]:
        """The INVITEs the called parties got, in order."""
        return [m for m in self.callee_log() if m.received and m.method == "INVITE"]

    def numbers(self) -> list[str]:
        out = []
        for m in self.dialled():
            found = re.match(r"sip:([^@]+)@", m.uri)
            out.append(found.group(1) if found else m.uri)
        return out

    def records_so_far(self) -> int:
        return len(read_records(self.node.data_dir))

    def context(self) -> str:
        err = self.tmp / "callee" / "callee-errors.log"
        text = "callee errors:\n" + (err.read_text(errors="replace")[-2000:] if err.exists() else "")
        for p in self.phones:
            text += f"\n{p.name} errors:\n{p.errors()}"
        return text + "\nnode:\n" + (self.node.stderr()[-4000:] if self.node else "")

    def close(self) -> None:
        try:
            if self.node is not None and self.node.alive():
                self.node.assert_clean_exit()
        finally:
            for p in self.phones:
                p.stop()
            if self.callee is not None:
                stop_process(self.callee)


@pytest.fixture
def setup(sipp, tmp_path, uas_port):
    made: list[Setup] = []

    def make(agents: int) -> Setup:
        s = Setup(sipp, tmp_path, uas_port, agents)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


def until(predicate, timeout: float = WAIT, what: str = "", context=lambda: "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"not seen within {timeout} s: {what}\n{context()}")


def campaign_state(data_dir: Path, config_text: str):
    """The campaign as the stopped node left it in its data folder."""
    config = decode_config(config_text.encode(), "switchcore.toml")
    (cfg,) = config.campaigns
    with Storage(data_dir) as storage:
        store = CampaignStore(storage)
        return store.load(cfg, store.load_dnc(), time.time())


# -- progressive ---------------------------------------------------------------------------------------
def test_a_progressive_campaign_dials_who_it_may_retries_busy_and_hands_answers_to_agents(setup):
    s = setup(2)
    contacts = [ANSWERS, BUSY, RINGS, ASLEEP, BARRED]
    text = s.config(contacts, 'mode = "progressive"\nmax_attempts = 2\nretry = { busy = { delay = 2 } }')
    s.start_callee()
    s.register_phones(text)
    node = s.start_node(text)
    # Four calls in all: the answer, busy twice (one retry), the ring-out.
    until(lambda: len(s.dialled()) >= 4 and s.records_so_far() >= 4, what="four dials, four records",
          context=s.context)
    time.sleep(1.0)  # a few ticks more: nothing else may be dialled
    node.assert_clean_exit()

    # Who was dialled, in E.164, at the trunk's address: never the contact outside its window, never
    # the one on the DNC list; the busy one twice.
    numbers = s.numbers()
    assert sorted(numbers) == sorted([ANSWERS[1], BUSY[1], BUSY[1], RINGS[1]]), numbers
    assert all(m.uri.endswith(f"@{UAS_HOST}:{s.uas_port}") for m in s.dialled())
    # The busy retry came no sooner than its 2 s after the first attempt ended (the 486 is at once).
    busy = [m.at for m in s.dialled() if BUSY[1] in m.uri]
    assert busy[1] - busy[0] >= 2.0 - 0.05, busy
    assert busy[1] - busy[0] < 2.0 + 2.0, "the retry came far later than its rule"

    # The answered contact reached an agent, whose INVITE named the campaign and the contact.
    invites = [m for p in s.phones for m in p.invites()]
    assert [(m.headers.get("x-campaign"), m.headers.get("x-contact")) for m in invites] == [(CAMPAIGN, "c-ans")], \
        s.context()

    # The records: one per dial, outbound, with the campaign and contact ids.
    records = read_records(node.data_dir)
    assert sorted(r.contact_id for r in records) == ["c-ans", "c-busy", "c-busy", "c-ring"]
    assert all(r.campaign_id == CAMPAIGN and r.direction == Direction.OUTBOUND for r in records)
    (answered,) = [r for r in records if r.contact_id == "c-ans"]
    assert answered.agent in ("a1", "a2") and answered.answered is not None

    # The campaign's own books.
    campaign = campaign_state(node.data_dir, text)
    assert campaign.counters == {"answered": 1, "busy": 2, "no_answer": 1}
    by_contact = {}
    for a in campaign.attempts.values():
        by_contact.setdefault(a.contact, []).append(a.result)
    assert by_contact == {"c-ans": ["answered"], "c-busy": ["busy", "busy"], "c-ring": ["no_answer"]}
    assert {cid: r.state for cid, r in campaign.contacts.items()} == {
        "c-ans": "done", "c-busy": "done", "c-ring": "done", "c-night": "pending", "c-dnc": "done"}
    assert campaign.contacts["c-dnc"].result == "dnc"
    # The contact outside its window was never tried: it waits, with every attempt still to come.
    night = campaign.contacts["c-night"]
    assert (night.attempts, night.tally, night.result) == (0, {}, "")


def test_a_restarted_node_continues_the_campaign_without_dialling_anyone_twice(setup):
    s = setup(1)
    contacts = [BUSY, ANSWERS, RINGS]  # one agent: one call at a time, in list order
    text = s.config(contacts, 'mode = "progressive"\nmax_attempts = 3\nretry = { busy = { delay = 2 } }')
    s.start_callee()
    s.register_phones(text)
    node = s.start_node(text)
    # Stop once the busy contact's first attempt is recorded: its retry is due 2 s later; the next
    # contact may be in its call right then (the stop cuts it off).
    until(lambda: any(r.contact_id == "c-busy" for r in read_records(node.data_dir)),
          what="the busy contact's first attempt recorded", context=s.context)
    node.assert_clean_exit()
    assert s.numbers().count(BUSY[1]) == 1, s.numbers()

    node = s.start_node(text)  # the same data folder; the phone's binding is kept there
    until(lambda: s.numbers().count(BUSY[1]) >= 3, what="the busy contact's two retries", context=s.context)
    until(lambda: set(s.numbers()) >= {ANSWERS[1], RINGS[1]}, what="every contact dialled", context=s.context)
    time.sleep(2.5)  # the last call's ring-out (1.5 s) or talk (0.8 s), and a few ticks more
    node.assert_clean_exit()

    # Nobody was dialled twice: not a contact the first run finished, nor one whose call the stop cut
    # off (its attempt was on disk before its INVITE left: closed as interrupted, not redialled); the
    # busy contact went on with its retries where the first run left it, each 2 s after the last.
    numbers = s.numbers()
    assert (numbers.count(BUSY[1]), numbers.count(ANSWERS[1]), numbers.count(RINGS[1]), len(numbers)) == (3, 1, 1, 5), \
        numbers
    busy = [m.at for m in s.dialled() if BUSY[1] in m.uri]
    assert all(later - earlier >= 2.0 - 0.05 for earlier, later in zip(busy, busy[1:])), busy
    campaign = campaign_state(node.data_dir, text)
    attempts = sorted(campaign.attempts.values(), key=lambda a: a.seq)
    assert [a.seq for a in attempts] == [1, 2, 3, 4, 5]
    by_contact: dict[str, list[str]] = {}
    for a in attempts:
        by_contact.setdefault(a.contact, []).append(a.result)
    assert by_contact["c-busy"] == ["busy"] * 3
    assert by_contact["c-ans"] in (["answered"], ["interrupted"]), by_contact
    assert by_contact["c-ring"] in (["no_answer"], ["interrupted"]), by_contact
    assert all(r.state == "done" for r in campaign.contacts.values())


# -- predictive ----------------------------------------------------------------------------------------
def test_a_predictive_campaign_dials_each_contact_once_and_every_answer_reaches_an_agent_or_is_abandoned(setup):
    s = setup(2)
    contacts = [(f"p{i}", f"+4930112{i:03d}1", OPEN) for i in range(1, 9)]
    text = s.config(contacts, 'mode = "predictive"\nconnect_limit = 2.0\nmax_attempts = 1\nretry = {}')
    s.start_callee(talk_ms=500)
    s.register_phones(text)
    node = s.start_node(text)
    until(lambda: s.records_so_far() >= len(contacts), what="every contact's call ended",
          context=s.context)
    time.sleep(0.8)
    node.assert_clean_exit()

    numbers = s.numbers()
    assert sorted(numbers) == sorted(c[1] for c in contacts), numbers  # each once
    records = read_records(node.data_dir)
    assert sorted(r.contact_id for r in records) == sorted(c[0] for c in contacts)
    campaign = campaign_state(node.data_dir, text)
    assert set(campaign.counters) <= {"answered", "abandoned"} and sum(campaign.counters.values()) == len(contacts)
    # Every call that reached an agent: its phone was sent the contact in X-Contact.
    reached = sorted(m.headers.get("x-contact") for p in s.phones for m in p.invites())
    assert reached == sorted(a.contact for a in campaign.attempts.values() if a.result == "answered")
    assert campaign.counters.get("answered", 0) >= 1


def test_an_answered_call_no_agent_takes_within_connect_limit_hears_the_message_and_is_hung_up(setup):
    s = setup(1)
    text = s.config([("c-solo", "+49301130001", OPEN)],
                    'mode = "predictive"\nconnect_limit = 1.0\nmax_attempts = 1\nretry = {}')
    s.start_callee(scenario="uas_campaign_abandoned.xml")  # answers, waits for the switch's BYE
    s.register_phones(text, scenario="uas_ring.xml")  # the agent's phone rings and rings
    node = s.start_node(text)
    until(lambda: s.records_so_far() >= 1, what="the call's record", context=s.context)
    time.sleep(0.5)
    node.assert_clean_exit()

    # The contact answered; the switch hung up on it (its BYE) after connect_limit and the message, not
    # at once and not after the agent's 5 s ring timeout.
    log = s.callee_log()
    answered = next(m.at for m in log if not m.received and m.start.startswith("SIP/2.0 200"))
    (bye,) = [m for m in log if m.received and m.method == "BYE"]
    assert 1.0 <= bye.at - answered < 4.0, bye.at - answered
    # The agent was rung with the contact, and the offer was taken back (CANCEL) when the call was abandoned.
    (phone,) = s.phones
    assert [m.headers.get("x-contact") for m in phone.invites()] == ["c-solo"]
    assert len(phone.received("CANCEL")) == 1
    (record,) = read_records(node.data_dir)
    assert (record.campaign_id, record.contact_id, record.direction) == (CAMPAIGN, "c-solo", Direction.OUTBOUND)
    assert record.agent == ""
    campaign = campaign_state(node.data_dir, text)
    assert campaign.counters == {"abandoned": 1}
    assert campaign.contacts["c-solo"].state == "done"


# -- preview -------------------------------------------------------------------------------------------
def test_a_preview_campaign_rings_the_agent_with_the_contact_and_dials_it_once_the_agent_answers(setup):
    s = setup(1)
    text = s.config([ANSWERS, BUSY], 'mode = "preview"\nmax_attempts = 1\nretry = {}')
    s.start_callee()
    s.register_phones(text)
    node = s.start_node(text)
    until(lambda: s.records_so_far() >= 2, what="both previews' calls ended", context=s.context)
    time.sleep(1.0)  # a few ticks more: nothing else may be shown or dialled
    node.assert_clean_exit()

    # The agent's phone was shown each contact (display-name and ids) before anyone was dialled, in
    # list order, one at a time.
    (phone,) = s.phones
    shown = phone.invites()
    assert [m.headers.get("x-contact") for m in shown] == ["c-ans", "c-busy"], s.context()
    assert all(m.headers.get("x-campaign") == CAMPAIGN for m in shown)
    assert shown[0].headers["from"].startswith(f'"Contact c-ans {ANSWERS[1]}" <sip:{ANSWERS[1]}@')
    # Each contact was dialled once, through the trunk with the campaign's caller ID, only after the
    # agent's phone answered its preview.
    answered = [m.at for m in logged(phone.workdir / f"{phone.name}-messages.log")
                if not m.received and m.start.startswith("SIP/2.0 200") and "INVITE" in m.headers.get("cseq", "")]
    dialled = s.dialled()
    assert s.numbers() == [ANSWERS[1], BUSY[1]]
    assert all(m.headers["from"].startswith("<sip:+4930123400@") for m in dialled)
    assert "x-contact" not in dialled[0].headers  # the carrier is not told the campaign's ids
    assert len(answered) == 2 and all(a <= d.at for a, d in zip(answered, dialled)), (answered, [d.at for d in dialled])

    records = sorted(read_records(node.data_dir), key=lambda r: r.offered)
    assert [(r.contact_id, r.campaign_id, r.direction) for r in records] == [
        ("c-ans", CAMPAIGN, Direction.OUTBOUND), ("c-busy", CAMPAIGN, Direction.OUTBOUND)]
    campaign = campaign_state(node.data_dir, text)
    assert campaign.counters == {"answered": 1, "busy": 1}
    assert {a.contact: (a.result, a.agent) for a in campaign.attempts.values()} == {
        "c-ans": ("answered", "a1"), "c-busy": ("busy", "a1")}


def test_a_preview_the_agent_declines_is_never_dialled_and_goes_to_the_end_of_the_list(setup):
    s = setup(1)
    text = s.config([ANSWERS, BUSY], 'mode = "preview"\nmax_attempts = 1\nretry = {}')
    s.start_callee()
    s.register_phones(text, scenario="uas_busy.xml")  # the agent declines every preview (486)
    node = s.start_node(text)
    (phone,) = s.phones
    until(lambda: len(phone.invites()) >= 3, what="three previews shown", context=s.context)
    node.assert_clean_exit()

    # Shown in turn, each going to the end of the list when declined; nobody dialled.
    contacts = [m.headers.get("x-contact") for m in phone.invites()]
    assert contacts[:3] == ["c-ans", "c-busy", "c-ans"], contacts
    assert s.dialled() == []
    campaign = campaign_state(node.data_dir, text)
    assert campaign.attempts == {} and campaign.counters == {}
    assert {cid: (r.state, r.attempts) for cid, r in campaign.contacts.items()} == {
        "c-ans": ("pending", 0), "c-busy": ("pending", 0)}


def test_an_agent_who_misses_previews_keeps_the_contact_in_its_place_and_goes_on_break(setup):
    s = setup(1)
    text = s.config([ANSWERS, BUSY], 'mode = "preview"\nmax_attempts = 1\nretry = {}')
    text = text.replace("max_no_answer = 0", "max_no_answer = 2").replace("ring_timeout = 5.0", "ring_timeout = 1.0")
    (s.tmp / "switchcore.toml").write_text(text)
    s.start_callee()
    s.register_phones(text, scenario="uas_ring.xml")  # the agent's phone rings and rings
    node = s.start_node(text)
    (phone,) = s.phones
    until(lambda: len(phone.received("CANCEL")) >= 2, what="two previews rung out", context=s.context)
    time.sleep(1.5)  # more than a ring time and a few ticks: a third preview would have come
    node.assert_clean_exit()

    # The same contact both times (a preview nobody looked at keeps its place), then no more: the
    # agent is on break with reason "no_answer".
    assert [m.headers.get("x-contact") for m in phone.invites()] == ["c-ans", "c-ans"], s.context()
    assert s.dialled() == []
    campaign = campaign_state(node.data_dir, text)
    assert campaign.attempts == {} and campaign.contacts["c-ans"].state == "pending"
    with Storage(node.data_dir) as storage:
        entries = list(read_queue_log(storage))
    assert [(e.kind, e.agent, e.reason, e.detail) for e in entries if e.kind == "status"][-1] == (
        "status", "a1", "on_break", "no_answer")


# -- the agent's disposition -----------------------------------------------------------------------------
def test_an_agents_dnc_disposition_from_the_phone_lands_on_the_attempt_and_the_dnc_list(setup):
    s = setup(1)
    text = s.config([ANSWERS], 'mode = "progressive"\nmax_attempts = 2\nretry = {}')
    s.start_callee()
    s.register_phones(text)
    node = s.start_node(text)
    until(lambda: s.records_so_far() >= 1, what="the contact's call ended", context=s.context)
    (phone,) = s.phones

    def dial(code: str) -> int:
        # From the agent's phone (its registered address, another port): answered, a tone, hung up.
        return subprocess.run(
            sipp_command(s.sipp, phone.workdir, f"code{code.lstrip('*')}", "uac_queue_caller.xml", phone.host,
                         free_port(phone.host), "-m", "1", "-s", code, "-key", "caller", phone.user,
                         f"{node.host}:{node.port}"),
            cwd=phone.workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30).returncode

    assert dial("*652") == 0, s.context()  # the second disposition: "dnc"
    assert dial("*659") != 0  # no ninth disposition: not a feature code, no route (404)
    node.assert_clean_exit()

    campaign = campaign_state(node.data_dir, text)
    (attempt,) = campaign.attempts.values()
    assert (attempt.result, attempt.disposition, attempt.agent) == ("answered", "dnc", "a1")
    assert campaign.contacts["c-ans"].result == "dnc"
    with Storage(node.data_dir) as storage:
        dnc = CampaignStore(storage).load_dnc()
    assert ANSWERS[1] in dnc


# -- the control API -------------------------------------------------------------------------------------
def control(port: int, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    """One request to the node's control API; (status, the JSON answer)."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                     data=json.dumps(body).encode() if body is not None else None)
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_the_control_api_pauses_and_resumes_a_campaign_takes_dispositions_and_dnc_numbers(setup):
    s = setup(1)
    later = ("c-later", "+49301110031", OPEN)  # answers; taken off by the API before its turn
    text = s.config([ANSWERS, BUSY, later], 'mode = "progressive"\nmax_attempts = 1\nretry = {}')
    port = free_port()
    text += f'\n[control]\nlisten = "127.0.0.1:{port}"\n'
    s.start_callee(talk_ms=1500)
    s.register_phones(text)
    node = s.start_node(text)
    until(lambda: len(s.dialled()) >= 1, what="the first contact dialled", context=s.context)
    status, paused = control(port, "POST", f"/campaigns/{CAMPAIGN}/pause")
    assert (status, paused["state"]) == (200, "paused"), paused
    assert control(port, "POST", f"/campaigns/{CAMPAIGN}/pause")[0] == 409  # already paused
    status, added = control(port, "POST", "/dnc", {"number": "030 1110031"})  # a German number, written locally
    assert (status, added) == (201, {"number": later[1], "added": True})
    assert control(port, "GET", f"/dnc/{later[1]}")[1]["listed"] is True
    mistaken = "+49301110099"  # put there by mistake, then taken off
    assert control(port, "POST", "/dnc", {"number": mistaken})[0] == 201
    assert control(port, "DELETE", f"/dnc/{mistaken}") == (200, {"number": mistaken, "removed": True})
    assert control(port, "DELETE", f"/dnc/{mistaken}")[1]["removed"] is False
    assert control(port, "GET", f"/dnc/{mistaken}")[1]["listed"] is False
    assert control(port, "GET", f"/dnc/%2B{later[1][1:]}")[1]["listed"] is True  # "+" percent-encoded
    assert control(port, "POST", "/dnc", {"number": "12"})[0] == 400
    # Paused: the call out runs to its end (1.5 s of talk), nothing new is dialled.
    until(lambda: s.records_so_far() >= 1, what="the first call ended", context=s.context)
    time.sleep(1.0)
    assert s.numbers() == [ANSWERS[1]]

    # The agent's disposition of that call: the contact asked to be called back in an hour.
    back_at = round(time.time()) + 3600
    assert control(port, "POST", "/agents/a1/disposition", {"code": "sale", "at": back_at})[0] == 400
    status, _ = control(port, "POST", "/agents/a1/disposition", {"code": "callback", "at": back_at})
    assert status == 200

    # The agent's status, set through the API as the phone's feature codes would.
    status, agent = control(port, "POST", "/agents/a1/status", {"status": "on_break", "reason": "lunch"})
    assert (status, agent["status"], agent["reason"]) == (200, "on_break", "lunch")
    assert control(port, "POST", "/agents/a1/status", {"status": "asleep"})[0] == 400
    assert control(port, "POST", "/agents/a1/status", {"status": "available"})[1]["status"] == "available"

    assert control(port, "POST", f"/campaigns/{CAMPAIGN}/resume")[1]["state"] == "running"
    until(lambda: s.records_so_far() >= 2, what="the busy contact dialled after the resume", context=s.context)
    time.sleep(1.0)
    status, seen = control(port, "GET", f"/campaigns/{CAMPAIGN}")
    node.assert_clean_exit()

    # The contact put on the DNC list was never dialled; the API's figures are the campaign's.
    assert s.numbers() == [ANSWERS[1], BUSY[1]]
    assert (status, seen["state"], seen["results"], seen["pending"]) == (200, "running", {"answered": 1, "busy": 1}, 1)
    assert seen["dispositions"] == {"callback": 1}
    campaign = campaign_state(node.data_dir, text)
    assert campaign.contacts["c-later"].result == "dnc"
    with Storage(node.data_dir) as storage:
        dnc = CampaignStore(storage).load_dnc()
    assert later[1] in dnc and mistaken not in dnc  # as the API left it, on disk
    called_back = campaign.contacts["c-ans"]
    assert (called_back.state, called_back.due, called_back.callback) == ("pending", back_at, True)
    assert control_is_closed(port)


def control_is_closed(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return True
    return False
