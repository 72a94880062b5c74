"""A running node's life: what it keeps across a restart, and its TCP framing on a real socket."""
import signal
import socket
import subprocess
import sys
import time

from tests.node import (
    HOST,
    REPO,
    Node,
    UdpClient,
    free_port,
    lists_contact,
    new_branch,
    new_call_id,
    read_response,
    register,
    registered_contacts,
    users_config,
)

USERS = {"1001": "secret1001"}


def test_binding_survives_sigint_and_restart(tmp_path):
    node = Node.start(tmp_path / "node", users_config(USERS))
    contact = f"<sip:1001@{HOST}:5999>"
    with UdpClient() as phone:
        _, ok = register(phone, node.addr, "1001", USERS["1001"], contact=contact, expires=600,
                         algorithm="SHA-256")
    assert ok is not None and ok.status == 200
    # SIGINT (Ctrl-C) stops the node as cleanly as SIGTERM: exit 0, LMDB synced.
    node.proc.send_signal(signal.SIGINT)
    assert node.proc.wait(10) == 0
    assert "Traceback" not in node.stderr()

    again = Node.start(tmp_path / "node", users_config(USERS))
    try:
        listed = registered_contacts(again.addr, "1001", USERS["1001"])
        assert lists_contact(listed, f"sip:1001@{HOST}:5999")
        [value] = [c for c in listed if "5999" in c]
        remaining = int(value.split("expires=")[1].split(";")[0])
        assert 0 < remaining <= 600  # the expiry kept its wall-clock deadline across the restart
    finally:
        again.assert_clean_exit()


def options(branch: str, call_id: str) -> bytes:
    return (
        f"OPTIONS sip:{HOST} SIP/2.0\r\n"
        f"Via: SIP/2.0/TCP {HOST}:5999;branch={branch}\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:probe@{HOST}>;tag=p1\r\n"
        f"To: <sip:{HOST}>\r\n"
        f"Call-ID: {call_id}\r\n"
        "CSeq: 1 OPTIONS\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def read_responses(conn: socket.socket, count: int, timeout: float = 5.0) -> list[bytes]:
    """Read until `count` whole responses (all without a body) have arrived on the stream."""
    data = b""
    deadline = time.monotonic() + timeout
    while data.count(b"\r\n\r\n") < count and time.monotonic() < deadline:
        conn.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = conn.recv(65536)
        except socket.timeout:
            break
        if not chunk:
            break
        data += chunk
    return [part + b"\r\n\r\n" for part in data.split(b"\r\n\r\n") if part]


def test_tcp_split_and_pipelined_messages_are_each_answered(start_node):
    node = start_node()
    call_ids = [new_call_id() for _ in range(3)]
    first, second, third = (options(new_branch(), call_id) for call_id in call_ids)
    with socket.create_connection(node.addr, timeout=5) as conn:
        # One message cut in three writes, then two in one write (RFC 3261 §18.3 framing).
        for piece in (first[:10], first[10:70], first[70:]):
            conn.sendall(piece)
            time.sleep(0.05)
        conn.sendall(second + third)
        answers = [read_response(r) for r in read_responses(conn, 3)]
    assert [(a.status, a.header("call-id")) for a in answers] == [(200, c) for c in call_ids]


def test_tcp_framing_error_gets_400_and_the_connection_closes(start_node):
    node = start_node()
    bad = options(new_branch(), new_call_id()).replace(b"Content-Length: 0", b"Content-Length: -5")
    with socket.create_connection(node.addr, timeout=5) as conn:
        conn.sendall(bad)
        [answer] = read_responses(conn, 1)
        assert read_response(answer).status == 400
        conn.settimeout(5)
        assert conn.recv(1) == b""  # §18.3: the framing is lost, so the node closes the stream
    # and keeps serving others
    with socket.create_connection(node.addr, timeout=5) as conn:
        conn.sendall(options(new_branch(), new_call_id()))
        [answer] = read_responses(conn, 1)
        assert read_response(answer).status == 200


def test_a_port_in_use_is_one_clear_line_and_exit_1(tmp_path):
    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind((HOST, port))
        taken.listen()
        proc = subprocess.run(
            [sys.executable, "-m", "bindings.cli", "run", "--listen", f"{HOST}:{port}", "--data", str(tmp_path / "d")],
            cwd=REPO, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1
    assert "switchcore: cannot listen:" in proc.stderr and "address already in use" in proc.stderr.lower()
    assert "Traceback" not in proc.stderr
