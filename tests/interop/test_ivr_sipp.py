"""IVR menus on real sockets: SIPp calls the node's menu number (127.0.0.1 → the node, media on
127.0.0.7); the switch answers and plays the menu's prompt; the caller presses "1" — as RFC 4733
telephone-events in its RTP (a pcap SIPp plays) or as a SIP INFO — and the choice sends the call to a
trunk where a second SIPp (127.0.0.2) answers.

Checked as an operator would: both SIPps complete their calls, the callee behind the trunk gets the
number of the menu's choice, the node's media engine sends the prompt to the caller (packets from the
node's media address arrive before any key is pressed), and each call's record in LMDB holds the
digit, the answered leg to the trunk, and the caller hanging up.
"""
from __future__ import annotations

import re
import subprocess

import pytest

from core.cdr.record import Disposition, HangupBy
from tests.interop.sippcalls import UAS_HOST, SippPair, read_records, write_dtmf_pcap
from tests.node import Node

pytestmark = pytest.mark.interop

MEDIA = "127.0.0.7"
RTP_MIN, RTP_MAX = 23000, 23999
CALLS = 2


def ivr_config(uas_port: int) -> str:
    return f"""
[node]
name = "ivr-test"

[media]
address = "{MEDIA}"
rtp_port_min = {RTP_MIN}
rtp_port_max = {RTP_MAX}

[[trunks]]
name = "sipp-uas"
address = "{UAS_HOST}:{uas_port}"

[[ivr]]
name = "main"
prompt = "tone:440/2.0"
choices = {{ "1" = "trunk:sipp-uas/+4930111", "2" = "hangup" }}
timeout = 5.0

[[routes]]
name = "menu"
match = "exact"
pattern = "0301234"
target = "ivr:main"
"""


@pytest.mark.parametrize("scenario", ["uac_ivr_rfc4733.xml", "uac_ivr_info.xml"])
def test_a_key_pressed_in_the_menu_connects_the_caller_to_the_choice(tmp_path, sipp, uas_port, scenario):
    node = Node.start(tmp_path / "node", ivr_config(uas_port))
    pair = SippPair(sipp, tmp_path / "sipp", uas_port)
    write_dtmf_pcap(pair.workdir / "dtmf.pcap", "1")
    try:
        pair.run(node, scenario, "uas_answer.xml", calls=CALLS, rate=2)
    finally:
        node.assert_clean_exit()
    assert pair.outcome("uac") == (0, CALLS, 0), pair.errors() + node.stderr()[-3000:]
    assert pair.outcome("uas") == (0, CALLS, 0), pair.errors()

    # The menu's choice: the trunk's callee was called with the number the choice names.
    invites = re.findall(r"^INVITE (\S+) SIP/2.0", pair.log("uas", "messages"), re.M)
    assert invites == [f"sip:+4930111@{UAS_HOST}:{uas_port}"] * CALLS

    records = read_records(node.data_dir)
    assert len(records) == CALLS
    for rec in records:
        assert rec.dtmf == "1"
        assert rec.disposition == Disposition.ANSWERED and rec.hangup_by == HangupBy.CALLER
        caller_leg, trunk_leg = rec.legs
        assert trunk_leg.answered is not None and trunk_leg.sip_status == 200
        assert "+4930111" in trunk_leg.peer
        # The prompt reached the caller: the node's engine sent it packets on leg a.
        assert caller_leg.packets_received > 0


def test_no_key_pressed_ends_the_call_after_the_retries(tmp_path, sipp, uas_port):
    config = ivr_config(uas_port).replace("timeout = 5.0", "timeout = 0.5\nretries = 0")
    node = Node.start(tmp_path / "node", config)
    pair = SippPair(sipp, tmp_path / "sipp", uas_port)
    try:
        # The caller plays silence and never presses a key: the switch hangs up (its BYE ends the call).
        proc = subprocess.run(
            pair.uac_command("uac_callee_hangs_up_rtp.xml", node.addr, "-m", "1"),
            cwd=pair.workdir, capture_output=True, text=True, timeout=60)
    finally:
        node.assert_clean_exit()
    assert proc.returncode == 0, pair.errors() + node.stderr()[-2000:]
    (rec,) = read_records(node.data_dir)
    assert rec.hangup_by == HangupBy.SYSTEM and rec.dtmf == ""
    assert 2.0 <= rec.ended - rec.answered <= 6.0  # the 2 s prompt, then 0.5 s with no key
