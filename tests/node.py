"""A running Switchcore node for tests that talk to it over real sockets.

`Node.start()` launches `python -m bindings.cli run` as a subprocess on a free loopback port (UDP and TCP),
waits for its "listening on" lines, and `Node.stop()` ends it with SIGTERM and reports how it exited.
`UdpClient` sends datagrams and reads replies with a timeout; `read_response()` and `DigestClient` are a
small, independent reading of RFC 3261 §7 responses and RFC 7616/RFC 8760 digest, written here so that the
tests never check the node with the node's own parser.

Every wait is bounded; nothing here blocks longer than the timeout it is given.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"

DEFAULT_USERS = {"1001": "secret1001", "1002": "secret1002"}


def users_config(
    users: dict[str, str] = DEFAULT_USERS, realm: str = "switchcore", algorithms: tuple[str, ...] | None = None
) -> str:
    """The TOML text of a config file declaring these users (and the digest algorithms offered, in order)."""
    lines = ["[sip]", f'realm = "{realm}"', ""]
    if algorithms is not None:
        lines += ["[registrar]", "algorithms = [" + ", ".join(f'"{a}"' for a in algorithms) + "]", ""]
    for name, password in users.items():
        lines += ["[[users]]", f'name = "{name}"', f'password = "{password}"', ""]
    return "\n".join(lines)


def free_port(host: str = HOST, attempts: int = 50) -> int:
    """A port free for both UDP and TCP on `host` right now (the node needs both)."""
    for _ in range(attempts):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((host, 0))
            port = udp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((host, port))
                except OSError:
                    continue
                return port
    raise RuntimeError(f"no port free for both UDP and TCP on {host} after {attempts} tries")


def node_command() -> list[str]:
    """How to run the node: `python -m bindings.cli`, or the command in SWITCHCORE_NODE_CMD (e.g. the
    installed `switchcore` console script), split on spaces."""
    override = os.environ.get("SWITCHCORE_NODE_CMD", "").split()
    return override or [sys.executable, "-m", "bindings.cli"]


class NodeError(AssertionError):
    """The node did not start or did not stop the way its contract says."""


@dataclass
class Node:
    proc: subprocess.Popen
    port: int
    data_dir: Path
    stderr_path: Path
    config_path: Path | None = None
    host: str = HOST
    returncode: int | None = field(default=None, init=False)

    @property
    def addr(self) -> tuple[str, int]:
        return (self.host, self.port)

    @property
    def uri(self) -> str:
        return f"sip:{self.host}:{self.port}"

    @classmethod
    def start(
        cls,
        workdir: Path,
        config_text: str | None = None,
        *,
        port: int | None = None,
        timeout: float = 10.0,
    ) -> "Node":
        """Start a node with a data dir and stderr log under `workdir`; wait until it listens."""
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        data_dir = workdir / "data"
        data_dir.mkdir(exist_ok=True)
        config_path = None
        if config_text is not None:
            config_path = workdir / "switchcore.toml"
            config_path.write_text(config_text)
        # The port is free when chosen but another process may take it before the node binds; try a few.
        last_error = None
        for attempt in range(3):
            chosen = port if port is not None else free_port()
            stderr_path = workdir / f"node-{chosen}-{attempt}.stderr"
            node = cls._spawn(chosen, data_dir, config_path, stderr_path)
            try:
                node._wait_listening(timeout)
                return node
            except NodeError as exc:
                last_error = exc
                node.kill()
                if port is not None or not re.search(r"in use|cannot listen|bind", node.stderr(), re.I):
                    raise
        raise last_error  # type: ignore[misc]

    @classmethod
    def _spawn(cls, port: int, data_dir: Path, config_path: Path | None, stderr_path: Path) -> "Node":
        cmd = node_command() + ["run", "--listen", f"{HOST}:{port}", "--data", str(data_dir)]
        if config_path is not None:
            cmd += ["--config", str(config_path)]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        # The checkout comes first so the tests exercise this tree even when an older copy is installed.
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
        with open(stderr_path, "wb") as err:
            proc = subprocess.Popen(
                cmd, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err
            )
        return cls(proc=proc, port=port, data_dir=data_dir, stderr_path=stderr_path, config_path=config_path)

    def stderr(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def _wait_listening(self, timeout: float) -> None:
        wanted = {f"listening on udp:{HOST}:{self.port}", f"listening on tcp:{HOST}:{self.port}"}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            lines = {line.strip() for line in self.stderr().splitlines()}
            if wanted <= lines:
                return
            if self.proc.poll() is not None:
                raise NodeError(
                    f"node exited with code {self.proc.returncode} before listening; stderr:\n{self.stderr()}"
                )
            time.sleep(0.05)
        raise NodeError(f"node did not print {sorted(wanted)} within {timeout} s; stderr:\n{self.stderr()}")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM, wait up to `timeout`; SIGKILL if it hangs. Returns the exit code (negative: killed)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                raise NodeError(f"node ignored SIGTERM for {timeout} s; stderr:\n{self.stderr()}")
        self.returncode = self.proc.returncode
        return self.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def assert_clean_exit(self, timeout: float = 10.0) -> None:
        """Stop the node and check it left as its contract says: exit code 0 and no traceback."""
        code = self.stop(timeout)
        text = self.stderr()
        if code != 0:
            raise NodeError(f"node exited with code {code} after SIGTERM; stderr:\n{text}")
        if "Traceback (most recent call last)" in text:
            raise NodeError(f"node printed a traceback; stderr:\n{text}")


# --- SIP on the wire ---------------------------------------------------------------------------------


@dataclass
class Response:
    """A SIP response read independently of the node's parser (RFC 3261 §7.2; folding undone, §7.3.1)."""

    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes
    raw: bytes

    _COMPACT = {"v": "via", "f": "from", "t": "to", "i": "call-id", "m": "contact", "l": "content-length",
                "c": "content-type", "k": "supported", "e": "content-encoding", "s": "subject"}

    def values(self, name: str) -> list[str]:
        name = name.lower()
        return [v for n, v in self.headers if self._COMPACT.get(n.lower(), n.lower()) == name]

    def header(self, name: str) -> str | None:
        found = self.values(name)
        return found[0] if found else None


def read_response(data: bytes) -> Response | None:
    """Parse `data` as a SIP response; None if it is not one."""
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("utf-8", "replace").split("\r\n")
    m = re.match(r"SIP/2\.0 (\d{3}) ?(.*)$", lines[0])
    if not m:
        return None
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and headers:
            name, value = headers[-1]
            headers[-1] = (name, f"{value} {line.strip()}")
        elif ":" in line:
            name, value = line.split(":", 1)
            headers.append((name.strip(), value.strip()))
    return Response(int(m.group(1)), m.group(2), headers, body, data)


def split_header_list(value: str) -> list[str]:
    """Split a comma-separated header value, respecting quoted strings and <...> (RFC 3261 §7.3.1)."""
    out, cur, quoted, angle = [], [], False, False
    i = 0
    while i < len(value):
        ch = value[i]
        if quoted and ch == "\\" and i + 1 < len(value):
            cur.append(value[i : i + 2])
            i += 2
            continue
        if ch == '"' and not angle:
            quoted = not quoted
        elif ch == "<" and not quoted:
            angle = True
        elif ch == ">" and not quoted:
            angle = False
        elif ch == "," and not quoted and not angle:
            out.append("".join(cur).strip())
            cur = []
            i += 1
            continue
        cur.append(ch)
        i += 1
    if "".join(cur).strip():
        out.append("".join(cur).strip())
    return out


def contacts(resp: Response) -> list[str]:
    """Every Contact value in a response (each a name-addr with its parameters)."""
    return [c for v in resp.values("contact") for c in split_header_list(v)]


class UdpClient:
    """A UDP socket on loopback that sends requests and collects whatever comes back."""

    def __init__(self, bind: tuple[str, int] = (HOST, 0)):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(bind)

    @property
    def port(self) -> int:
        return self.sock.getsockname()[1]

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "UdpClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def send(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sock.sendto(data, addr)

    def recv(self, timeout: float) -> bytes | None:
        """One datagram, or None if none arrives within `timeout` seconds."""
        self.sock.settimeout(max(timeout, 0.001))
        try:
            data, _ = self.sock.recvfrom(65536)
            return data
        except socket.timeout:
            return None

    def response(self, call_id: str, timeout: float, final: bool = True) -> Response | None:
        """The first response (final one if `final`) whose Call-ID is `call_id`, within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            data = self.recv(left)
            if data is None:
                return None
            resp = read_response(data)
            if resp is None or resp.header("call-id") != call_id:
                continue
            if final and resp.status < 200:
                continue
            return resp
        return None

    def request(self, data: bytes, addr: tuple[str, int], call_id: str, timeout: float = 2.0) -> Response | None:
        """Send a request and wait for its final response, retransmitting as RFC 3261 §17.1.2.2 does."""
        deadline = time.monotonic() + timeout
        interval = 0.5
        while time.monotonic() < deadline:
            self.send(data, addr)
            resp = self.response(call_id, min(interval, deadline - time.monotonic()))
            if resp is not None:
                return resp
            interval = min(interval * 2, 4.0)
        return None


def new_call_id() -> str:
    return f"{secrets.token_hex(8)}@switchcore-test"


def new_branch() -> str:
    return f"z9hG4bK-{secrets.token_hex(6)}"


def sip_request(
    method: str,
    uri: str,
    *,
    local_port: int,
    call_id: str,
    cseq: int = 1,
    from_uri: str = "sip:test@127.0.0.1",
    to_uri: str | None = None,
    headers: list[tuple[str, str]] = (),
    body: bytes = b"",
    rport: bool = True,
) -> bytes:
    """A request as a UA would send it over UDP from 127.0.0.1:`local_port` (RFC 3261 §8.1.1)."""
    via = f"SIP/2.0/UDP {HOST}:{local_port};branch={new_branch()}" + (";rport" if rport else "")
    lines = [
        f"{method} {uri} SIP/2.0",
        f"Via: {via}",
        "Max-Forwards: 70",
        f"From: <{from_uri}>;tag={secrets.token_hex(4)}",
        f"To: <{to_uri or from_uri}>",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} {method}",
        *[f"{n}: {v}" for n, v in headers],
        f"Content-Length: {len(body)}",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


# --- Digest (RFC 7616 §3.4, as RFC 8760 applies it to SIP) ------------------------------------------------

_HASHES = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}


def parse_challenge(value: str) -> dict[str, str]:
    """The parameters of a `Digest ...` WWW-Authenticate value, lower-cased names, quotes removed."""
    scheme, _, rest = value.strip().partition(" ")
    params = {"scheme": scheme}
    for m in re.finditer(r'([A-Za-z0-9_-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^,\s]+)', rest):
        v = m.group(2)
        if v.startswith('"'):
            v = re.sub(r"\\(.)", r"\1", v[1:-1])
        params[m.group(1).lower()] = v
    return params


def digest_authorization(
    challenge: dict[str, str], method: str, uri: str, username: str, password: str, nc: int = 1
) -> str:
    """An Authorization value answering `challenge` with qop=auth."""
    algorithm = challenge.get("algorithm", "MD5")

    def h(text: str) -> str:
        return _HASHES[algorithm.upper()](text.encode()).hexdigest()

    realm, nonce = challenge["realm"], challenge["nonce"]
    cnonce = secrets.token_hex(8)
    ha1 = h(f"{username}:{realm}:{password}")
    ha2 = h(f"{method}:{uri}")
    ncv = f"{nc:08x}"
    response = h(f"{ha1}:{nonce}:{ncv}:{cnonce}:auth:{ha2}")
    parts = [
        f'username="{username}"', f'realm="{realm}"', f'nonce="{nonce}"', f'uri="{uri}"',
        f'response="{response}"', f"algorithm={algorithm}", f'cnonce="{cnonce}"', "qop=auth", f"nc={ncv}",
    ]
    if "opaque" in challenge:
        parts.append(f'opaque="{challenge["opaque"]}"')
    return "Digest " + ", ".join(parts)


def register(
    client: UdpClient,
    node_addr: tuple[str, int],
    user: str,
    password: str,
    *,
    contact: str | None = None,
    expires: int | None = None,
    algorithm: str | None = None,
    timeout: float = 3.0,
) -> tuple[Response | None, Response | None]:
    """REGISTER `user` (a query when `contact` is None), answering the node's challenge for `algorithm`.

    `algorithm` None answers the first challenge offered (the node's preferred one, RFC 8760 §2.4).
    Returns (challenge response, final response); either is None if nothing came back in time.
    """
    host, port = node_addr
    uri = f"sip:{host}:{port}"
    aor = f"sip:{user}@{host}"
    call_id = new_call_id()
    extra: list[tuple[str, str]] = []
    if contact is not None:
        extra.append(("Contact", contact))
    if expires is not None:
        extra.append(("Expires", str(expires)))
    first = client.request(
        sip_request("REGISTER", uri, local_port=client.port, call_id=call_id, cseq=1, from_uri=aor, headers=extra),
        node_addr, call_id, timeout,
    )
    if first is None or first.status != 401:
        return first, None
    # RFC 7616 §3.3: no algorithm parameter means MD5. Answer the wanted one, or the first we can compute.
    offers = [(c.get("algorithm", "MD5").upper(), c) for c in map(parse_challenge, first.values("www-authenticate"))]
    chosen = [c for alg, c in offers if alg in _HASHES and alg == (algorithm or alg).upper()]
    if not chosen:
        return first, None
    auth = digest_authorization(chosen[0], "REGISTER", uri, user, password)
    final = client.request(
        sip_request(
            "REGISTER", uri, local_port=client.port, call_id=call_id, cseq=2, from_uri=aor,
            headers=extra + [("Authorization", auth)],
        ),
        node_addr, call_id, timeout,
    )
    return first, final


def contact_uri(value: str) -> str:
    """The URI of one Contact value: what is inside <...>, or the addr-spec before any parameter."""
    m = re.search(r"<([^>]*)>", value)
    return m.group(1) if m else value.split(";", 1)[0].strip()


def lists_contact(listed: list[str], uri: str) -> bool:
    """Whether a Contact list holds `uri` (URI parameters the registrar may add are allowed)."""
    return any(contact_uri(c) == uri or contact_uri(c).startswith(uri + ";") for c in listed)


def registered_contacts(
    node_addr: tuple[str, int], user: str, password: str, algorithm: str | None = None
) -> list[str]:
    """The contacts the node holds for `user`, read with an authenticated REGISTER query (RFC 3261 §10.2.3)."""
    with UdpClient() as client:
        challenge, final = register(client, node_addr, user, password, algorithm=algorithm)
    if final is None or final.status != 200:
        got = final or challenge
        raise AssertionError(
            f"REGISTER query for {user} was not answered 200: "
            f"{(got.status, got.reason) if got else 'no answer'}"
        )
    return contacts(final)
