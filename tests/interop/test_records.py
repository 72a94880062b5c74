"""Call records written by the running node, read back from its data folder after it stopped.

SIPp as the caller (127.0.0.1) → the node → SIPp as the callee behind a trunk (127.0.0.2), in the cases
of the "Calls" issue — caller hangs up, callee hangs up, CANCEL before the answer, busy callee — and a
call refused over the trunk's channel limit: each call leaves exactly one record, with the disposition,
who hung up, the times in order and both legs' SIP outcome. Then the crash test of the CDR issue: calls
at a steady rate, the node SIGKILLed mid-load and restarted on the same data folder: every call SIPp saw
complete has its record, every call cut off after its answer is closed as "interrupted", none twice.
"""
from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest

from core.cdr.kpi import KpiBook
from core.cdr.record import Disposition, HangupBy
from tests.interop.sippcalls import SippPair, node_config, read_records, stop_process
from tests.node import Node

pytestmark = pytest.mark.interop

CALLS = 4
MEDIA = "127.0.0.7"
RTP_MIN, RTP_MAX = 23000, 23999


def config(uas_port: int, channels: int | None = None) -> str:
    text = node_config(uas_port, MEDIA, RTP_MIN, RTP_MAX)
    if channels is not None:
        text = text.replace('address = "127.0.0.2', f'channels = {channels}\naddress = "127.0.0.2')
    return text


@pytest.mark.parametrize("uac, uas, disposition, hangup_by, status_a, status_b, rings", [
    ("uac_call.xml", "uas_answer.xml", Disposition.ANSWERED, HangupBy.CALLER, 200, 200, True),
    ("uac_callee_hangs_up.xml", "uas_hangup.xml", Disposition.ANSWERED, HangupBy.CALLEE, 200, 200, True),
    ("uac_cancel.xml", "uas_ring.xml", Disposition.ABANDONED, HangupBy.CALLER, 487, 487, True),
    ("uac_busy.xml", "uas_busy.xml", Disposition.BUSY, HangupBy.CALLEE, 486, 486, False),
], ids=["caller-hangs-up", "callee-hangs-up", "cancel", "busy"])
def test_each_call_leaves_one_record(sipp, start_node, tmp_path, uas_port, uac, uas, disposition, hangup_by,
                                     status_a, status_b, rings):
    node = start_node(config(uas_port))
    pair = SippPair(sipp, tmp_path / "sipp", uas_port, media=False).run(node, uac, uas, calls=CALLS, rate=10)
    assert pair.outcome("uac") == (0, CALLS, 0), pair.errors()
    assert pair.outcome("uas") == (0, CALLS, 0), pair.errors()
    node.assert_clean_exit()

    records = read_records(node.data_dir)
    assert len(records) == CALLS and len({r.call_id for r in records}) == CALLS, records
    answered = disposition is Disposition.ANSWERED
    for rec in records:
        assert rec.disposition is disposition, rec
        assert rec.hangup_by is hangup_by, rec
        assert rec.caller == "5550100" and rec.callee == "0301234" and rec.trunk == "sipp-uas", rec
        assert (rec.answered is not None) == answered, rec
        assert rec.offered <= (rec.answered or rec.offered) <= rec.ended, rec
        a, b = rec.legs
        assert (a.sip_status, b.sip_status) == (status_a, status_b), rec
        assert a.leg_id == rec.call_id and b.peer.startswith("sip:+49301234@127.0.0.2:"), rec
        assert b.disposition is disposition, rec
        if rings:  # the callee sent 180: ringing time and post-dial delay are known
            assert a.ringing is not None and a.offered <= a.ringing <= a.ended, rec
            assert rec.post_dial_delay is not None and 0 <= rec.post_dial_delay < 5, rec
        else:
            assert a.ringing is None and rec.post_dial_delay is None, rec
        assert a.packets_received == 0 and a.mos is None, rec  # these scenarios send no RTP

    # The live KPIs the node kept as calls ended are those a report computes from its records.
    live = json.loads((node.data_dir / "live-kpis.json").read_text())
    book = KpiBook.from_records(records)
    rows = {(r["dimension"], r["key"], r["interval_start"]): r for r in live["rows"]}
    for (dim, key, start), counters in book.groups():
        expected = counters.figures().as_dict()
        got = {k: v for k, v in rows.pop((dim, key, start)).items() if k in expected}
        assert got == pytest.approx(expected, nan_ok=True), (dim, key)
    assert not rows


def test_a_call_over_the_channel_limit_is_recorded_as_refused(sipp, start_node, tmp_path, uas_port):
    # One channel on the trunk; the first call holds it for 1.5 s while three more arrive.
    node = start_node(config(uas_port, channels=1))
    pair = SippPair(sipp, tmp_path / "sipp", uas_port)
    uas = pair.start_uas("uas_answer_rtp.xml", 1)
    try:
        uac = subprocess.run(pair.uac_command("uac_call_rtp.xml", node.addr, "-m", "4", "-r", "10"),
                             cwd=pair.workdir, capture_output=True, text=True, timeout=60)
        pair.uac_code, pair.uas_code = uac.returncode, uas.wait(timeout=30)
    finally:
        stop_process(uas)
    assert pair.counters("uac").get("SuccessfulCall(C)") == 1, pair.errors()
    assert pair.counters("uac").get("FailedCall(C)") == 3, pair.errors()
    node.assert_clean_exit()

    records = read_records(node.data_dir)
    by_disposition = sorted(r.disposition.value for r in records)
    assert by_disposition == ["answered", "refused-no-channel", "refused-no-channel", "refused-no-channel"]
    for rec in records:
        if rec.disposition is Disposition.REFUSED_NO_CHANNEL:
            assert rec.hangup_by is HangupBy.SYSTEM and rec.answered is None, rec
            (a,) = rec.legs  # no leg B was ever opened
            assert a.sip_status == 503 and a.ended == rec.ended, rec


def test_crash_mid_load_loses_no_completed_call_and_closes_the_cut_off_ones(sipp, tmp_path, uas_port):
    """The CDR issue's crash test: SIGKILL under load, restart on the same data folder."""
    workdir = tmp_path / "node"
    pair = SippPair(sipp, tmp_path / "sipp", uas_port)
    node = Node.start(workdir, config(uas_port))
    uas = pair.start_uas("uas_answer_rtp.xml", None)
    uac = None
    try:
        # 20 calls a second, each up for ~1.5 s: about 30 calls up at any moment.
        uac = subprocess.Popen(pair.uac_command("uac_call_rtp.xml", node.addr, "-m", "200", "-r", "20"),
                               cwd=pair.workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(4.0)
        node.proc.send_signal(signal.SIGKILL)
        node.proc.wait(5)
        time.sleep(0.5)
    finally:
        for proc in (uac, uas):
            if proc is not None:
                stop_process(proc)
        node.kill()
    answered = set(pair.logged("answered"))
    completed = set(pair.logged("completed"))
    assert completed and answered - completed, "the kill should fall among completed and live calls"

    restarted = Node.start(workdir, config(uas_port))
    restarted.assert_clean_exit()
    assert "closed as interrupted" in restarted.stderr()

    records = read_records(workdir / "data")
    ids = [r.call_id for r in records]
    assert len(ids) == len(set(ids)), "a call was recorded twice"
    by_id = {r.call_id: r for r in records}
    # Every call SIPp saw complete (its BYE answered) is recorded as answered.
    missing = completed - by_id.keys()
    assert not missing, f"completed calls with no record: {sorted(missing)}"
    # The 200 to a BYE leaves the node only after the call's record is committed.
    late = [c for c in completed if by_id[c].disposition is not Disposition.ANSWERED]
    assert not late, [by_id[c] for c in late]
    # Every call cut off after its answer is closed as interrupted, by the system, legs ended.
    cut_off = answered - completed
    recorded_cut = cut_off & by_id.keys()
    for call_id in recorded_cut:
        rec = by_id[call_id]
        assert rec.disposition is Disposition.INTERRUPTED, rec
        assert rec.hangup_by is HangupBy.SYSTEM and rec.answered is not None and rec.ended >= rec.answered, rec
        assert all(leg.ended is not None for leg in rec.legs), rec
    # The 200 to the caller leaves the node only after the call's journal entry is committed.
    assert not cut_off - by_id.keys(), sorted(cut_off - by_id.keys())
    # Nothing else: every record is of a call SIPp placed.
    assert all("@127.0.0.1" in call_id for call_id in by_id), sorted(by_id)
