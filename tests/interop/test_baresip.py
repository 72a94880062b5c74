"""baresip, a real softphone, registering to a running node as user 1001.

baresip runs headless from a config dir under tmp_path: no audio device, no UI module, only the account
loader; it listens on its own loopback port. The test waits for baresip to report "200 OK" for its
registration, checks that the node lists baresip's contact, stops baresip with SIGTERM (it unregisters on
the way out, RFC 3261 §10.2.2) and checks that the binding is gone.

baresip before 3.12 (libre before SHA-256 support, baresip/re#1103; Debian bookworm ships 1.0) gives up on
a 401 as soon as one WWW-Authenticate names an algorithm other than MD5 ("Register: Function not
implemented"), even when an MD5 challenge is there too. With such a baresip the node is configured to offer
MD5 only, as an operator with these phones would have to.
"""

from __future__ import annotations

import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.node import HOST, contact_uri, free_port, registered_contacts, users_config

pytestmark = pytest.mark.interop

MODULE_DIRS = [
    "/usr/lib/baresip/modules",
    "/usr/lib/x86_64-linux-gnu/baresip/modules",
    "/usr/lib/aarch64-linux-gnu/baresip/modules",
    "/usr/local/lib/baresip/modules",
]


def baresip_version(baresip: str) -> tuple[int, int, int]:
    proc = subprocess.run([baresip, "-h"], capture_output=True, text=True, timeout=10)
    m = re.search(r"baresip v(\d+)\.(\d+)\.(\d+)", proc.stdout + proc.stderr)
    assert m, f"cannot read baresip's version from: {proc.stdout + proc.stderr!r}"
    return tuple(int(x) for x in m.groups())  # type: ignore[return-value]


class Baresip:
    """One headless baresip process; its stdout and stderr go to a file we poll."""

    def __init__(self, binary: str, confdir: Path, port: int):
        self.port = port
        self.log = confdir / "baresip.log"
        self._log_file = open(self.log, "wb")
        self.proc = subprocess.Popen(
            [binary, "-f", str(confdir), "-4", "-n", HOST],
            stdin=subprocess.DEVNULL, stdout=self._log_file, stderr=subprocess.STDOUT,
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, pattern: str, timeout: float) -> re.Match | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = re.search(pattern, self.output(), re.M)
            if m or self.proc.poll() is not None:
                return m or re.search(pattern, self.output(), re.M)
            time.sleep(0.05)
        return None

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM (baresip unregisters, then exits); SIGKILL if it is still there after `timeout`."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log_file.close()
        return self.proc.returncode


@pytest.fixture
def module_dir() -> str:
    for d in MODULE_DIRS:
        if (Path(d) / "account.so").exists():
            return d
    pytest.fail(f"baresip is installed but its account.so module is in none of {MODULE_DIRS}")


def write_baresip_config(confdir: Path, module_dir: str, port: int, account: str) -> None:
    confdir.mkdir(parents=True, exist_ok=True)
    (confdir / "config").write_text(
        "\n".join([
            "poll_method\tepoll",
            f"sip_listen\t{HOST}:{port}",
            f"module_path\t{module_dir}",
            # Only the account loader: no audio/video device, no UI; registration needs nothing else.
            "module_app\taccount.so",
            "audio_player\tnone",
            "audio_source\tnone",
            "audio_alert\tnone",
            "",
        ])
    )
    (confdir / "accounts").write_text(account + "\n")
    (confdir / "contacts").write_text("")


def test_baresip_registers_and_unregisters(baresip, module_dir, start_node, users, tmp_path):
    version = baresip_version(baresip)
    algorithms = None if version >= (3, 12, 0) else ("MD5",)
    node = start_node(users_config(users, algorithms=algorithms))

    port = free_port()
    confdir = tmp_path / "baresip"
    write_baresip_config(
        confdir, module_dir, port,
        f"<sip:1001@{HOST}:{node.port};transport=udp>;auth_pass={users['1001']};regint=600",
    )
    phone = Baresip(baresip, confdir, port)
    try:
        # baresip prints e.g. "1001@127.0.0.1: {0/UDP/v4} 200 OK () [1 binding]" once registered.
        ok = phone.wait_for(r"^1001@127\.0\.0\.1:.*\b200 OK\b", timeout=10)
        assert ok, f"baresip {version} did not report a successful registration:\n{phone.output()}"

        listed = registered_contacts(node.addr, "1001", users["1001"])
        mine = [c for c in listed if re.match(rf"sip:1001[^@]*@127\.0\.0\.1:{port}(;|$)", contact_uri(c))]
        assert mine, f"the node does not list baresip's contact (port {port}): {listed}"
    finally:
        code = phone.stop()
    assert code is not None and code >= 0, f"baresip had to be killed:\n{phone.output()}"

    # On its way out baresip sent REGISTER with expires=0; the node no longer lists that contact.
    listed = registered_contacts(node.addr, "1001", users["1001"])
    assert not any(f"@127.0.0.1:{port}" in contact_uri(c) for c in listed), listed
