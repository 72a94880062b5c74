"""A call from a trunk through an IVR menu to a real softphone: baresip, registered as user 1001 with
auto-answer, answers the call the menu's choice sends it.

SIPp (127.0.0.1) is the carrier: its call to the menu number matches a route open only to the trunk
"carrier". The switch answers and plays the prompt; the caller presses "2" — as RFC 4733 telephone-events
in its RTP (a pcap SIPp plays) or as a SIP INFO — and the choice ``"2" = "user:1001"`` makes the switch
INVITE baresip's registered contact. baresip answers on its own (account parameter ``answermode=auto``)
and talks: its source is ``ausine`` (a 440 Hz sine, no device), its player ``aubridge`` (no device), codec
PCMU from ``g711``. The caller then plays 2 s of PCMU into the bridged call and hangs up.

Checked as an operator would: SIPp completes its call; baresip's log shows the call coming in from the
switch, "Call established" and the call terminated, and its RTP statistics show it received most of what
the caller sent after the bridge (the switch relayed it); the call record holds the digit, the trunk, an
answered leg to baresip's contact and RTP packets that arrived from baresip on that leg. A key the menu
does not offer ends the call without ringing baresip.

baresip 1.0 (Debian bookworm) answers a digest challenge only when every one offered is MD5 (see
test_baresip.py); with such a baresip the node offers MD5 only.
"""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from core.cdr.record import Disposition, HangupBy
from tests.interop.sippcalls import (
    free_media_port, read_records, sipp_args, write_dtmf_pcap, write_rtp_pcap)
from tests.interop.test_baresip import MODULE_DIRS, Baresip, baresip_version
from tests.node import HOST, Node, contact_uri, free_port, registered_contacts, users_config

pytestmark = pytest.mark.interop

MEDIA = "127.0.0.10"  # the node's media address: no other test's node uses it
RTP_MIN, RTP_MAX = 26000, 26999
MENU_NUMBER = "8000"
USER, PASSWORD = "1001", "secret1001"
TALK_PACKETS = 100  # 2 s of 20 ms PCMU the caller plays once the call is bridged
# Modules baresip needs here, none of which opens a device.
MODULES = ("account.so", "g711.so", "ausine.so", "aubridge.so")


def node_config(trunk_port: int, algorithms: tuple[str, ...] | None) -> str:
    return users_config({USER: PASSWORD}, algorithms=algorithms) + f"""
[node]
name = "baresip-ivr"

[media]
address = "{MEDIA}"
rtp_port_min = {RTP_MIN}
rtp_port_max = {RTP_MAX}

[[trunks]]
name = "carrier"
address = "{HOST}:{trunk_port}"

[[ivr]]
name = "main"
prompt = "tone:440/1.0"
choices = {{ "2" = "user:{USER}" }}
timeout = 5.0
retries = 0
on_invalid = "hangup"

[[routes]]
name = "menu"
match = "exact"
pattern = "{MENU_NUMBER}"
from = "carrier"
target = "ivr:main"
"""


def write_phone_config(confdir: Path, module_dir: str, port: int, node: Node) -> None:
    confdir.mkdir(parents=True, exist_ok=True)
    (confdir / "config").write_text("\n".join([
        "poll_method\tepoll",
        f"sip_listen\t{HOST}:{port}",
        f"module_path\t{module_dir}",
        *(f"module\t{m}" for m in MODULES if m != "account.so"),
        "module_app\taccount.so",
        # ausine only produces 48 kHz stereo; baresip resamples it to the codec's 8 kHz mono.
        "audio_source\tausine,440",
        "ausrc_srate\t48000",
        "ausrc_channels\t2",
        # aubridge's player takes the decoded audio and needs no sound card.
        "audio_player\taubridge,phone",
        "audio_alert\taubridge,alert",
        # At the end of each call: "packets: <sent> <received>" for audio.
        "rtp_stats\tyes",
        "",
    ]))
    (confdir / "accounts").write_text(
        f"<sip:{USER}@{HOST}:{node.port};transport=udp>;auth_pass={PASSWORD};regint=600;answermode=auto\n")
    (confdir / "contacts").write_text("")


def rtp_stats(log: str) -> tuple[int, int] | None:
    """baresip's audio RTP packets (sent, received) of its last call, from its `rtp_stats` lines."""
    found = re.findall(r"^packets:\s+(\d+)\s+(\d+)\s*$", log, re.M)
    return (int(found[-1][0]), int(found[-1][1])) if found else None


@pytest.fixture
def module_dir() -> str:
    for d in MODULE_DIRS:
        if all((Path(d) / m).exists() for m in MODULES):
            return d
    pytest.fail(f"baresip is installed but none of {MODULE_DIRS} holds all of {MODULES}")


class Setup:
    """A node with the menu, baresip registered to it as user 1001, and the SIPp caller's files."""

    def __init__(self, tmp_path: Path, baresip: str, module_dir: str, sipp: str):
        self.sipp = sipp
        self.workdir = tmp_path / "sipp"
        self.workdir.mkdir()
        self.trunk_port = free_port()
        self.media_port = free_media_port(HOST)
        algorithms = None if baresip_version(baresip) >= (3, 12, 0) else ("MD5",)
        self.node = Node.start(tmp_path / "node", node_config(self.trunk_port, algorithms))
        self.phone: Baresip | None = None
        try:
            self.phone_port = free_port()
            confdir = tmp_path / "baresip"
            write_phone_config(confdir, module_dir, self.phone_port, self.node)
            self.phone = Baresip(baresip, confdir, self.phone_port)
            ok = self.phone.wait_for(rf"^{USER}@127\.0\.0\.1:.*\b200 OK\b", timeout=10)
            assert ok, f"baresip did not register:\n{self.phone.output()}"
        except BaseException:
            self.stop()
            raise

    def call(self, scenario: str, *args: str) -> subprocess.CompletedProcess:
        """One call from the trunk's address to the menu number; SIPp's own -timeout bounds it too."""
        cmd = [
            self.sipp, *sipp_args(self.workdir, "uac", scenario, HOST, self.trunk_port, self.media_port,
                               "-s", MENU_NUMBER, "-m", "1", *args, f"{HOST}:{self.node.port}")]
        return subprocess.run(cmd, cwd=self.workdir, capture_output=True, text=True, timeout=60)

    def sipp_errors(self) -> str:
        path = self.workdir / "uac-errors.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def stop(self) -> None:
        """baresip first (it unregisters), then the node; each bounded, each stopped even if one fails."""
        try:
            if self.phone is not None:
                self.phone.stop()
        finally:
            self.node.assert_clean_exit()


@pytest.fixture
def setup(tmp_path, baresip, module_dir, require_tool):
    s = Setup(tmp_path, baresip, module_dir, require_tool("sipp"))
    try:
        yield s
    finally:
        s.stop()


def call_through_menu(setup: Setup, how: str):
    """The caller presses "2" (RFC 4733 or INFO), baresip answers, both talk, the caller hangs up.
    Returns (SIPp's exit, baresip's log, the call's record) with baresip and the node stopped."""
    write_rtp_pcap(setup.workdir / "talk.pcap", packets=TALK_PACKETS)
    if how == "rfc4733":
        write_dtmf_pcap(setup.workdir / "dtmf.pcap", "2")
        proc = setup.call("uac_baresip_ivr_rfc4733.xml")
    else:
        write_rtp_pcap(setup.workdir / "silence.pcap", packets=25)
        proc = setup.call("uac_baresip_ivr_info.xml", "-key", "digit", "2")
    setup.stop()  # baresip prints its RTP statistics; the node writes the record and closes its store
    phone_log = setup.phone.output()
    assert proc.returncode == 0, (
        f"SIPp exit {proc.returncode}\n{setup.sipp_errors()}\nbaresip:\n{phone_log[-3000:]}\n"
        f"node:\n{setup.node.stderr()[-3000:]}")
    records = read_records(setup.node.data_dir)
    assert len(records) == 1, records
    return proc, phone_log, records[0]


@pytest.mark.parametrize("how", ["rfc4733", "info"])
def test_the_menu_choice_rings_baresip_which_answers_and_talks(setup, how):
    _, phone_log, rec = call_through_menu(setup, how)

    # baresip saw the call come in from the switch (the caller's identity carried over), answered it on
    # its own, and the call ended when the caller hung up.
    assert re.search(r"answering call .* from sip:5550100@127\.0\.0\.1", phone_log), phone_log
    assert re.search(rf"^{USER}@127\.0\.0\.1: Call established: sip:5550100@", phone_log, re.M), phone_log
    assert re.search(r"Call with sip:5550100@\S+ terminated", phone_log), phone_log
    assert re.search(rf"incoming rtp for 'audio' established, receiving from {re.escape(MEDIA)}:\d+",
                     phone_log), phone_log

    # Media both ways through the switch: baresip received most of what the caller played after the
    # bridge (more than the menu's tail could account for), and what baresip sent arrived on its leg.
    stats = rtp_stats(phone_log)
    assert stats is not None, f"baresip printed no RTP statistics:\n{phone_log}"
    sent, received = stats
    assert received >= 0.8 * TALK_PACKETS, f"baresip received {received} RTP packets\n{phone_log}"
    assert sent >= 50, phone_log  # it talked for about 4 s (200 packets); at least 1 s of it

    # The record: from the trunk, the digit, the caller hanging up, and the answered leg to baresip.
    assert rec.trunk == "carrier" and rec.callee == MENU_NUMBER
    assert rec.dtmf == "2"
    assert rec.disposition == Disposition.ANSWERED and rec.hangup_by == HangupBy.CALLER
    caller_leg, phone_leg = rec.legs
    assert caller_leg.packets_received > 0
    assert phone_leg.sip_status == 200 and phone_leg.disposition == Disposition.ANSWERED
    assert phone_leg.answered is not None
    assert re.match(rf"sip:{USER}[^@]*@127\.0\.0\.1:{setup.phone_port}(;|$)", contact_uri(phone_leg.peer)), \
        phone_leg.peer
    assert phone_leg.codec == "PCMU"
    assert phone_leg.packets_received >= 0.8 * sent, (phone_leg, sent)


def test_the_callee_leg_times_are_its_own(setup):
    _, _, rec = call_through_menu(setup, "rfc4733")
    caller_leg, phone_leg = rec.legs
    # The switch answers the caller, the caller presses a key, then baresip is offered, rings, answers.
    assert rec.answered < phone_leg.offered <= phone_leg.ringing <= phone_leg.answered <= phone_leg.ended
    # The caller's leg never rang: the switch answered it itself.
    assert caller_leg.ringing is None


def test_a_key_not_in_the_menu_does_not_ring_baresip(setup):
    write_dtmf_pcap(setup.workdir / "dtmf.pcap", "9")
    proc = setup.call("uac_baresip_ivr_wrong_digit.xml")
    # baresip stayed registered, so the switch could have rung it had the menu offered the key.
    listed = registered_contacts(setup.node.addr, USER, PASSWORD)
    assert any(f"@127.0.0.1:{setup.phone_port}" in contact_uri(c) for c in listed), listed
    setup.stop()
    phone_log = setup.phone.output()
    assert proc.returncode == 0, f"SIPp exit {proc.returncode}\n{setup.sipp_errors()}\n{setup.node.stderr()[-3000:]}"

    assert not re.search(r"answering call|Call established|incoming call", phone_log, re.I), phone_log
    (rec,) = read_records(setup.node.data_dir)
    assert rec.dtmf == "9"
    assert rec.hangup_by == HangupBy.SYSTEM  # the menu's on_invalid = "hangup"
    assert len(rec.legs) == 1, rec.legs  # no leg to baresip was ever offered
