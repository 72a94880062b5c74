"""A call to a phone registered over TCP, on real sockets: a SIPp phone registers user 1001 over TCP
(``-t t1``, its own connection, closed when that SIPp exits), then a SIPp UAS in TCP mode listens on the
registered address and a SIPp caller dials 1001 over UDP. The node has no connection to the phone left,
so it opens one to the registered Contact (RFC 3261 §18.1.1); the INVITE, ACK and BYE reach the phone
over TCP with a TCP Via (§18.1.1) and a Contact asking for TCP (§8.1.1.8); the phone's responses go
back over that connection (§18.2.2).
"""
from __future__ import annotations

import re
import socket
import subprocess
import time

import pytest

from tests.interop.sippcalls import UAS_HOST, counters_of, sipp_command, stop_process, user_config
from tests.node import HOST, free_port

pytestmark = pytest.mark.interop

MEDIA = "127.0.0.9"
RTP_MIN, RTP_MAX = 25000, 25999


def over_tcp(command: list[str]) -> list[str]:
    """``sipp_command``'s run, over TCP (one connection) instead of UDP."""
    command = list(command)
    command[command.index("-t") + 1] = "t1"
    return command


def wait_listening(host: str, port: int, timeout: float = 5.0) -> None:
    """Until SIPp's TCP socket holds HOST:PORT (``wait_bound`` is for UDP)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _taken(host, port):
            return
        time.sleep(0.05)
    raise AssertionError(f"SIPp did not listen on tcp {host}:{port} within {timeout} s")


def _taken(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


def test_a_sipp_phone_registered_over_tcp_answers_a_udp_caller(sipp, start_node, tmp_path):
    node = start_node(user_config("tcp-test", MEDIA, RTP_MIN, RTP_MAX))
    workdir = tmp_path / "sipp"
    workdir.mkdir()
    port = free_port(UAS_HOST)
    register = subprocess.run(
        over_tcp(sipp_command(sipp, workdir, "register", "register_digest.xml", UAS_HOST, port, "-m", "1",
                              "-key", "user", "1001", "-au", "1001", "-ap", "secret1001",
                              f"{node.host}:{node.port}")),
        cwd=workdir, capture_output=True, text=True, timeout=30)
    assert register.returncode == 0, (workdir / "register-errors.log").read_text(errors="replace") \
        if (workdir / "register-errors.log").exists() else register.stderr
    phone = subprocess.Popen(over_tcp(sipp_command(sipp, workdir, "phone", "uas_answer.xml", UAS_HOST, port, "-m", "1")),
                             cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_listening(UAS_HOST, port)
        caller = subprocess.run(
            sipp_command(sipp, workdir, "caller", "uac_call.xml", HOST, free_port(), "-m", "1", "-s", "1001",
                         f"{node.host}:{node.port}"),
            cwd=workdir, capture_output=True, text=True, timeout=60)
        phone_code = phone.wait(timeout=40)
    finally:
        stop_process(phone)

    def errors(name: str) -> str:
        path = workdir / f"{name}-errors.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    for name, code in (("caller", caller.returncode), ("phone", phone_code)):
        counters = counters_of(workdir / f"{name}-stats.csv")
        assert (code, counters.get("SuccessfulCall(C)"), counters.get("FailedCall(C)")) == (0, 1, 0), \
            f"{name}: {errors(name)}"
    received = (workdir / "phone-messages.log").read_text(errors="replace")
    for method in ("INVITE", "ACK", "BYE"):
        request = re.search(rf"^{method} sip:\S+ SIP/2\.0\r?\n(?:.+\r?\n)*", received, re.M)
        assert request is not None, f"no {method} reached the phone:\n{received[-3000:]}"
        assert re.search(rf"^Via: SIP/2\.0/TCP {node.host}:{node.port};branch=", request.group(0), re.M), \
            request.group(0)
        if method == "INVITE":
            assert re.search(rf"^Contact: <sip:[^@>]+@{node.host}:{node.port};transport=tcp>", request.group(0),
                             re.M), request.group(0)
    node.assert_clean_exit()
