"""Parallel forking on real sockets: user 1001 registered from two SIPp phones (RFC 3261 §10: one AOR,
two contacts, each REGISTER with a Call-ID of its own), a SIPp caller dialling 1001 through the node.
Both phones get an INVITE; the desk phone answers a moment after ringing, and the softphone must get a
CANCEL saying the call was completed elsewhere (RFC 3326; its scenario fails the call otherwise). The
call record the stopped node left in LMDB names the phone that answered as leg B.
"""
from __future__ import annotations

import subprocess

import pytest

from core.cdr.record import Disposition, HangupBy
from tests.interop.sippcalls import (UAS_HOST, counters_of, read_records, register_phone, sipp_command,
                                     stop_process, user_config, wait_bound)
from tests.node import HOST, free_port

pytestmark = pytest.mark.interop

MEDIA = "127.0.0.8"
RTP_MIN, RTP_MAX = 24000, 24999
SOFT_HOST = "127.0.0.3"  # the second phone, on an address of its own


def test_both_phones_ring_one_answers_the_other_is_cancelled_completed_elsewhere(sipp, start_node, tmp_path):
    node = start_node(user_config("forking-test", MEDIA, RTP_MIN, RTP_MAX))
    workdir = tmp_path / "sipp"
    workdir.mkdir()
    phones = {"desk": (UAS_HOST, free_port(UAS_HOST), "uas_fork_answer.xml"),
              "soft": (SOFT_HOST, free_port(SOFT_HOST), "uas_fork_cancelled.xml")}
    for name, (host, port, _) in phones.items():
        register_phone(sipp, workdir, name, "1001", "secret1001", host, port, node)
    procs = {}
    try:
        for name, (host, port, scenario) in phones.items():
            procs[name] = subprocess.Popen(
                sipp_command(sipp, workdir, name, scenario, host, port, "-m", "1"),
                cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wait_bound(host, port)
        caller = subprocess.run(
            sipp_command(sipp, workdir, "caller", "uac_call.xml", HOST, free_port(), "-m", "1", "-s", "1001",
                         f"{node.host}:{node.port}"),
            cwd=workdir, capture_output=True, text=True, timeout=60)
        codes = {name: proc.wait(timeout=40) for name, proc in procs.items()}
    finally:
        for proc in procs.values():
            stop_process(proc)

    def errors(name: str) -> str:
        path = workdir / f"{name}-errors.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    for name, code in [("caller", caller.returncode), *codes.items()]:
        counters = counters_of(workdir / f"{name}-stats.csv")
        assert (code, counters.get("SuccessfulCall(C)"), counters.get("FailedCall(C)")) == (0, 1, 0), \
            f"{name}: {errors(name)}"
    messages = {name: (workdir / f"{name}-messages.log").read_text(errors="replace") for name in phones}
    assert "CANCEL sip:" not in messages["desk"]  # the phone that answered was never cancelled
    node.assert_clean_exit()

    (record,) = read_records(node.data_dir)
    assert (record.disposition, record.hangup_by, record.callee) == (Disposition.ANSWERED, HangupBy.CALLER, "1001")
    leg_a, leg_b = record.legs
    desk_host, desk_port, _ = phones["desk"]
    assert leg_b.peer == f"sip:1001@{desk_host}:{desk_port}", record
    assert leg_b.sip_status == 200 and leg_b.answered is not None, record
    # Leg B's Call-ID is the one the desk phone was called with, not the softphone's.
    assert f"Call-ID: {leg_b.leg_id}" in messages["desk"] and leg_b.leg_id not in messages["soft"]
