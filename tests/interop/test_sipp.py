"""SIPp (Debian sip-tester) against a running node: REGISTER with digest auth, and a burst of OPTIONS.

Digest here is MD5 only: SIPp before the upstream change of 2023 (SIPp/sipp#676; Debian ships 3.6) answers
only MD5 and AKAv1-MD5 challenges, and it takes the first WWW-Authenticate of a 401: with the node's default
order (SHA-256 first, RFC 8760 §2.4) it stops with "authentication must use MD5 or AKAv1-MD5". So the node
is configured with `[registrar] algorithms` listing MD5 first, as an operator with such phones would.

SIPp is the load tool operators use against SIP servers; what it reports (exit code, successful and failed
call counts) is what they would see. Every run is bounded: `-m` calls, `-timeout 30s`, and a subprocess
timeout above that.
"""

from __future__ import annotations

import csv
import re
import subprocess
from pathlib import Path

import pytest

from tests.node import HOST, free_port, lists_contact, registered_contacts, users_config

pytestmark = pytest.mark.interop

SCENARIOS = Path(__file__).resolve().parent / "scenarios"


def run_sipp(sipp: str, workdir: Path, scenario: str, target: tuple[str, int], *args: str,
             transport: str = "udp") -> tuple[int, dict[str, int], str]:
    """Run one SIPp scenario; return (exit code, cumulative call counters, text of its error log)."""
    workdir.mkdir(parents=True, exist_ok=True)
    stats = workdir / "stats.csv"
    errors = workdir / "errors.log"
    messages = workdir / "messages.log"
    cmd = [
        sipp, "-sf", str(SCENARIOS / scenario),
        "-t", {"udp": "u1", "tcp": "t1"}[transport],
        "-i", HOST, "-p", str(free_port()),
        "-buff_size", "4194304", "-timeout", "30s", "-timeout_error", "-nostdin",
        "-trace_err", "-error_file", str(errors),
        "-trace_msg", "-message_file", str(messages),
        "-trace_stat", "-stf", str(stats),
        *args,
        f"{target[0]}:{target[1]}",
    ]
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=60)
    (workdir / "sipp.stdout").write_text(proc.stdout)
    counters: dict[str, int] = {}
    if stats.exists():
        rows = list(csv.reader(stats.open(), delimiter=";"))
        if len(rows) >= 2:
            counters = {name: int(value) for name, value in zip(rows[0], rows[-1]) if name.endswith("(C)")
                        and value.isdigit()}
    error_text = errors.read_text(errors="replace") if errors.exists() else ""
    return proc.returncode, counters, error_text + proc.stderr


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_options_burst_all_answered_200(sipp, node, tmp_path, transport):
    """100 OPTIONS at 50 per second, at most 20 outstanding: SIPp counts 100 successful calls, 0 failed."""
    code, counters, errors = run_sipp(
        sipp, tmp_path / "sipp", "options.xml", node.addr,
        "-m", "100", "-r", "50", "-l", "20", transport=transport,
    )
    assert (code, counters.get("SuccessfulCall(C)"), counters.get("FailedCall(C)")) == (0, 100, 0), errors


@pytest.mark.parametrize("algorithms", [("MD5",), ("MD5", "SHA-256")], ids=["md5-only", "md5-then-sha256"])
def test_register_with_digest_md5(sipp, start_node, users, tmp_path, algorithms):
    """SIPp registers 1001 answering the node's 401 with MD5 digest; the node then holds SIPp's contact."""
    node = start_node(users_config(users, algorithms=algorithms))
    user = "1001"
    code, counters, errors = run_sipp(
        sipp, tmp_path / "sipp", "register_digest.xml", node.addr,
        "-m", "1", "-key", "user", user, "-au", user, "-ap", users[user],
    )
    assert (code, counters.get("SuccessfulCall(C)"), counters.get("FailedCall(C)")) == (0, 1, 0), errors

    # The scenario's own Contact is sip:1001@127.0.0.1:<its port>; a REGISTER query must list it.
    sent = (tmp_path / "sipp" / "messages.log").read_text(errors="replace")
    contact = re.search(r"^Contact: <(sip:1001@127\.0\.0\.1:\d+)>", sent, re.M)
    assert contact, "SIPp's message log shows no Contact it sent"
    listed = registered_contacts(node.addr, user, users[user])
    assert lists_contact(listed, contact.group(1)), listed


def test_register_with_wrong_password_fails(sipp, start_node, users, tmp_path):
    """With a wrong password the second REGISTER is challenged again, so SIPp's call fails."""
    node = start_node(users_config(users, algorithms=("MD5",)))
    code, counters, _ = run_sipp(
        sipp, tmp_path / "sipp", "register_digest.xml", node.addr,
        "-m", "1", "-key", "user", "1001", "-au", "1001", "-ap", "not-the-password",
    )
    assert (code, counters.get("SuccessfulCall(C)"), counters.get("FailedCall(C)")) == (1, 0, 1)

