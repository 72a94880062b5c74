"""sipsak against a running node: an OPTIONS ping, and REGISTER in usrloc mode with digest auth.

sipsak is the "SIP Swiss army knife" admins use to check a server by hand; its exit code is 0 only when the
final answer is 2xx. sipsak 0.9.8 answers only MD5 challenges and reads only the first WWW-Authenticate of a
401 ("error: unsupported authentication algorithm" when that one is SHA-256, the node's default first
offer), so the node here offers MD5 first, then SHA-256.
"""

from __future__ import annotations

import subprocess

import pytest

from tests.node import free_port, lists_contact, registered_contacts, users_config

pytestmark = pytest.mark.interop


@pytest.fixture
def sipsak(require_tool) -> str:
    return require_tool("sipsak")


@pytest.fixture
def node(start_node, users):
    """A node offering MD5 first (see the module's docstring), SHA-256 second."""
    return start_node(users_config(users, algorithms=("MD5", "SHA-256")))


def run_sipsak(sipsak: str, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    # sipsak's own retransmissions end after 64*T1 = 32 s at worst (RFC 3261 §17.1.2.2): -D caps them lower.
    return subprocess.run([sipsak, *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_options_ping_answered_200(sipsak, node, transport):
    """`sipsak -s sip:127.0.0.1:PORT` exits 0 and shows the node's 200 OK."""
    proc = run_sipsak(sipsak, "-vv", "-D", "4", f"--transport={transport}", "-s", node.uri)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "SIP/2.0 200 OK" in out, out


def test_usrloc_register_with_password(sipsak, node, users):
    """`sipsak -U -u 1001 -a secret1001` registers; the node then lists sipsak's contact for 1001."""
    port = free_port()
    # -x 600: sipsak's default Expires (15 s) is below the node's Min-Expires and would get 423 (RFC 3261 §10.3).
    proc = run_sipsak(
        sipsak, "-U", "-i", "-vv", "-D", "4", "-x", "600", "-l", str(port), "-E", "udp",
        "-s", f"sip:1001@{node.host}:{node.port}", "-u", "1001", "-a", users["1001"],
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    # Read back with SHA-256, the other algorithm the node offers: both reach the same bindings.
    listed = registered_contacts(node.addr, "1001", users["1001"], algorithm="SHA-256")
    assert lists_contact(listed, f"sip:1001@127.0.0.1:{port}"), (listed, out)


def test_usrloc_register_with_wrong_password_fails(sipsak, node, users):
    """A wrong password is challenged again; sipsak reports the failure and no binding is created."""
    port = free_port()
    proc = run_sipsak(
        sipsak, "-U", "-i", "-vv", "-D", "4", "-x", "600", "-l", str(port), "-E", "udp",
        "-s", f"sip:1001@{node.host}:{node.port}", "-u", "1001", "-a", "not-the-password",
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "authorization failed" in out, out
    listed = registered_contacts(node.addr, "1001", users["1001"])
    assert not lists_contact(listed, f"sip:1001@127.0.0.1:{port}"), listed
