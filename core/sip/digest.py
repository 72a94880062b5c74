"""HTTP Digest authentication for SIP, server side (sans-IO).

Implements RFC 7616 (Digest, with SHA-256) as RFC 8760 applies it to SIP, staying compatible with
RFC 2617 (MD5, ``qop=auth``) and RFC 2069 (no ``qop``: old phones). RFC 3261 §22.4 gives the SIP
rules: the ``uri`` parameter is the Request-URI, the method is the request's.

Nonces are stateless-verifiable: ``base64url(time_ms ‖ random ‖ HMAC(secret, time_ms ‖ random))``,
so a node can check a nonce it issued without remembering it, and tell an expired one (401 with
``stale=true``, RFC 7616 §3.3: the client retries with the new nonce without asking the user)
from a forged one. Replays are refused: a ``(nonce, nc)`` pair is accepted once (RFC 7616 §3.4 /
§5.10); the table of seen counts is bounded and pruned as nonces expire.

An unknown user and a wrong password are indistinguishable (RFC 7616 §5.8 warns about user
enumeration): both get a fresh challenge of the same shape, and the response of an unknown user
is still computed, against a stand-in HA1, so both take the same path and time. Every secret
comparison is constant-time (``hmac.compare_digest``).
"""
from __future__ import annotations

import base64
import hashlib
import heapq
import hmac
import secrets
from typing import Callable, Iterable, NamedTuple

from core.errors import RemoteProtocolError

__all__ = [
    "ALGORITHMS",
    "AuthResult",
    "Credentials",
    "DigestAuthenticator",
    "compute_ha1",
    "compute_response",
    "parse_authorization",
]

# RFC 7616 §6.1 / RFC 8760 §2.1 names → hash constructors. Names compare case-insensitively.
ALGORITHMS: dict[str, Callable[..., "hashlib._Hash"]] = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}
_CANONICAL = {name.upper(): name for name in ALGORITHMS}

_TIME_BYTES, _RANDOM_BYTES, _MAC_BYTES = 8, 8, 16
# How far in the future a nonce's time may lie (a clock stepped back a little) before it is
# taken for a forgery.
_FUTURE_SLACK = 2.0
# nc values kept per nonce; a client needing more is sent a fresh nonce (stale=true).
_MAX_COUNTS_PER_NONCE = 1024


def _h(algorithm: str, text: str) -> str:
    return ALGORITHMS[algorithm](text.encode("utf-8")).hexdigest()


def compute_ha1(algorithm: str, username: str, realm: str, password: str) -> str:
    """HA1 = H(username ":" realm ":" password) (RFC 7616 §3.4.2), lower-case hex."""
    return _h(algorithm, f"{username}:{realm}:{password}")


def compute_response(
    algorithm: str,
    ha1: str,
    nonce: str,
    method: str,
    uri: str,
    qop: str | None = None,
    nc: str | None = None,
    cnonce: str | None = None,
) -> str:
    """The ``response`` parameter (RFC 7616 §3.4.1; without qop, RFC 2069 §2.1.2)."""
    ha2 = _h(algorithm, f"{method}:{uri}")
    if qop is None:
        return _h(algorithm, f"{ha1}:{nonce}:{ha2}")
    return _h(algorithm, f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


class Credentials(NamedTuple):
    """The parameters of one ``Authorization: Digest ...`` header (RFC 7616 §3.4)."""

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str  # canonical name when known ("MD5" when absent, RFC 2617 §3.2.2); else as sent
    qop: str | None
    nc: str | None
    cnonce: str | None
    opaque: str | None


class AuthResult(NamedTuple):
    """``ok``: the request is authenticated as ``username``. Otherwise answer 401 with a fresh
    challenge, passing ``stale`` (the answer was right but its nonce is used up or expired)."""

    ok: bool
    username: str | None
    stale: bool


_FAIL = AuthResult(False, None, False)

# RFC 3261 §25.1 token characters.
_TOKEN = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~")
_LWS = " \t\r\n"
_HEX = frozenset("0123456789abcdefABCDEF")


def _malformed(problem: str) -> RemoteProtocolError:
    return RemoteProtocolError(f"Malformed Authorization header: {problem}", 400)


def _auth_params(text: str, start: int) -> dict[str, str]:
    """auth-param *(COMMA auth-param) from ``text[start:]`` (RFC 7616 §3.4, RFC 3261 §25.1)."""
    params: dict[str, str] = {}
    i, n = start, len(text)
    while True:
        while i < n and text[i] in _LWS:
            i += 1
        j = i
        while j < n and text[j] in _TOKEN:
            j += 1
        if j == i:
            raise _malformed("expected a parameter name" if i < n else "no parameters")
        name = text[i:j].lower()
        i = j
        while i < n and text[i] in _LWS:
            i += 1
        if i >= n or text[i] != "=":
            raise _malformed(f'expected "=" after {name}')
        i += 1
        while i < n and text[i] in _LWS:
            i += 1
        if i < n and text[i] == '"':
            i += 1
            chars = []
            while i < n and text[i] != '"':
                if text[i] == "\\" and i + 1 < n:  # quoted-pair
                    i += 1
                chars.append(text[i])
                i += 1
            if i >= n:
                raise _malformed(f"unterminated quoted value of {name}")
            i += 1
            value = "".join(chars)
        else:
            j = i
            while j < n and text[j] in _TOKEN:
                j += 1
            if j == i:
                raise _malformed(f"empty value of {name}")
            value, i = text[i:j], j
        if name in params:
            raise _malformed(f"{name} given twice")
        params[name] = value
        while i < n and text[i] in _LWS:
            i += 1
        if i >= n:
            return params
        if text[i] != ",":
            raise _malformed(f"expected a comma after {name}")
        i += 1


def parse_authorization(value: str) -> Credentials | None:
    """One Authorization header value → Credentials; None when the scheme is not Digest (the
    caller then challenges with the schemes it knows, RFC 4475 §3.3.7); RemoteProtocolError(400)
    when a Digest header lacks what RFC 7616 §3.4 requires."""
    text = value.strip(_LWS)
    scheme_end = 0
    while scheme_end < len(text) and text[scheme_end] in _TOKEN:
        scheme_end += 1
    if text[:scheme_end].lower() != "digest":
        return None
    params = _auth_params(text, scheme_end)
    for required in ("username", "realm", "nonce", "uri", "response"):
        if required not in params:
            raise _malformed(f"no {required} parameter")
    qop = params.get("qop")
    nc = params.get("nc")
    cnonce = params.get("cnonce")
    if qop is not None:
        qop = qop.lower()
        if nc is None or len(nc) != 8 or not set(nc) <= _HEX:
            raise _malformed("nc must be 8 hexadecimal digits when qop is given")
        if not cnonce:
            raise _malformed("no cnonce parameter although qop is given")
    algorithm = params.get("algorithm", "MD5")
    return Credentials(
        username=params["username"],
        realm=params["realm"],
        nonce=params["nonce"],
        uri=params["uri"],
        response=params["response"],
        algorithm=_CANONICAL.get(algorithm.upper(), algorithm),
        qop=qop,
        nc=nc,
        cnonce=cnonce,
        opaque=params.get("opaque"),
    )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes | None:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError):
        return None


class DigestAuthenticator:
    """Issues challenges and checks answers for one realm.

    ``ha1_for(username, algorithm)`` (passed to ``verify``) returns the stored HA1 in hex, or None
    for an unknown user. ``random_bytes`` is injectable so tests can be deterministic.
    """

    def __init__(
        self,
        realm: str,
        secret: bytes,
        algorithms: Iterable[str] = ("SHA-256", "MD5"),
        nonce_ttl: float = 300.0,
        max_nonces: int = 65536,
        random_bytes: Callable[[int], bytes] = secrets.token_bytes,
    ):
        self.realm = realm
        self.algorithms = tuple(_CANONICAL[a.upper()] for a in algorithms)
        self.nonce_ttl = nonce_ttl
        self.max_nonces = max_nonces
        self._secret = secret
        self._random_bytes = random_bytes
        # nonce → nc values accepted; heap of (issue time, nonce) to prune in time order.
        self._seen: dict[str, set[int]] = {}
        self._by_time: list[tuple[float, str]] = []
        # Nonces issued at or before this time are treated as stale: their entries may have been
        # dropped to keep the table bounded, so a replay could no longer be recognised.
        self._floor = float("-inf")

    # --- nonces ------------------------------------------------------------------------------

    def _mac(self, label: bytes, data: bytes) -> bytes:
        return hmac.new(self._secret, label + data, hashlib.sha256).digest()

    def new_nonce(self, now: float) -> str:
        raw = int(now * 1000).to_bytes(_TIME_BYTES, "big", signed=True) + self._random_bytes(_RANDOM_BYTES)
        return _b64(raw + self._mac(b"nonce:", raw)[:_MAC_BYTES])

    def _opaque(self, nonce: str) -> str:
        return _b64(self._mac(b"opaque:", nonce.encode("ascii"))[:12])

    def _nonce_time(self, nonce: str) -> float | None:
        """The time a nonce was issued, or None when we did not issue it."""
        try:
            data = _unb64(nonce)
        except UnicodeEncodeError:
            return None
        if data is None or len(data) != _TIME_BYTES + _RANDOM_BYTES + _MAC_BYTES:
            return None
        raw, mac = data[: _TIME_BYTES + _RANDOM_BYTES], data[_TIME_BYTES + _RANDOM_BYTES :]
        if not hmac.compare_digest(mac, self._mac(b"nonce:", raw)[:_MAC_BYTES]):
            return None
        return int.from_bytes(raw[:_TIME_BYTES], "big", signed=True) / 1000.0

    # --- challenge ---------------------------------------------------------------------------

    def challenge(self, now: float, stale: bool = False) -> list[str]:
        """WWW-Authenticate values, one per algorithm in preference order (RFC 8760 §2.4), all
        with the same fresh nonce."""
        nonce = self.new_nonce(now)
        opaque = self._opaque(nonce)
        tail = ", stale=true" if stale else ""
        return [
            f'Digest realm="{self.realm}", nonce="{nonce}", opaque="{opaque}", '
            f'algorithm={algorithm}, qop="auth"{tail}'
            for algorithm in self.algorithms
        ]

    # --- verification ------------------------------------------------------------------------

    def _stand_in_ha1(self, username: str, algorithm: str) -> str:
        # Same length as a real HA1, unknowable without the secret, stable per user.
        size = ALGORITHMS[algorithm]().digest_size
        return self._mac(b"unknown-user:", username.encode("utf-8", "surrogatepass"))[:size].hex()

    def verify(
        self,
        credentials: Credentials,
        method: str,
        ha1_for: Callable[[str, str], str | None],
        now: float,
    ) -> AuthResult:
        """Check ``credentials`` for a request with ``method``. The caller has checked that the
        ``uri`` parameter names the Request-URI (RFC 3261 §22.4) and picked the credentials
        for our realm."""
        if credentials.realm != self.realm or credentials.algorithm not in self.algorithms:
            return _FAIL
        if credentials.qop not in (None, "auth"):  # we never offer auth-int
            return _FAIL
        issued = self._nonce_time(credentials.nonce)
        if issued is None or issued > now + _FUTURE_SLACK:
            return _FAIL
        if credentials.opaque is not None and not hmac.compare_digest(
            credentials.opaque.encode("utf-8", "surrogatepass"), self._opaque(credentials.nonce).encode("ascii")
        ):
            return _FAIL
        algorithm = credentials.algorithm
        ha1 = ha1_for(credentials.username, algorithm)
        known = ha1 is not None
        if not known:
            ha1 = self._stand_in_ha1(credentials.username, algorithm)
        expected = compute_response(
            algorithm, ha1, credentials.nonce, method, credentials.uri, credentials.qop, credentials.nc, credentials.cnonce
        )
        answer = credentials.response.lower().encode("utf-8", "surrogatepass")
        if not hmac.compare_digest(expected.encode("ascii"), answer) or not known:
            return _FAIL
        # A right answer from here on: anything wrong with the nonce is staleness.
        self.prune(now)
        if now - issued > self.nonce_ttl or issued <= self._floor:
            return AuthResult(False, None, True)
        nc = int(credentials.nc, 16) if credentials.nc is not None else 0
        seen = self._seen.get(credentials.nonce)
        if seen is None:
            if len(self._seen) >= self.max_nonces:
                self._evict_oldest()
                if issued <= self._floor:
                    return AuthResult(False, None, True)
            seen = self._seen[credentials.nonce] = set()
            heapq.heappush(self._by_time, (issued, credentials.nonce))
        if nc in seen or len(seen) >= _MAX_COUNTS_PER_NONCE:
            return AuthResult(False, None, True)  # a replay, or a nonce worn out
        seen.add(nc)
        return AuthResult(True, credentials.username, False)

    def _evict_oldest(self) -> None:
        issued, nonce = heapq.heappop(self._by_time)
        del self._seen[nonce]
        self._floor = max(self._floor, issued)

    def prune(self, now: float) -> None:
        """Forget the counts of nonces that have expired (they are refused as stale anyway)."""
        horizon = now - self.nonce_ttl
        while self._by_time and self._by_time[0][0] < horizon:
            _, nonce = heapq.heappop(self._by_time)
            del self._seen[nonce]

    @property
    def tracked_nonces(self) -> int:
        """How many nonces have counts in the replay table."""
        return len(self._seen)


# --- the client's side: answering a challenge to our own requests (RFC 3261 §22.2, RFC 7616 §3.4) ---

def answer_challenge(challenges: list[str], method: str, uri: str, username: str, password: str,
                     cnonce: str) -> tuple[str, bool] | None:
    """The Authorization value answering the strongest challenge we can (SHA-256 before MD5, RFC 8760
    §2.4), and whether it was marked stale; None when no challenge is one we can answer. ``challenges``
    are WWW-Authenticate or Proxy-Authenticate values; qop "auth" is used when offered (nc 1)."""
    best: dict[str, str] | None = None
    for value in challenges:
        scheme, _, rest = value.strip().partition(" ")
        if scheme.lower() != "digest":
            continue
        try:
            params = _auth_params(value.strip(), len(scheme))
        except RemoteProtocolError:
            continue
        algorithm = _CANONICAL.get(params.get("algorithm", "MD5").upper())
        if algorithm is None or "nonce" not in params or "realm" not in params:
            continue
        qops = [q.strip() for q in params.get("qop", "").split(",") if q.strip()]
        if qops and "auth" not in qops:
            continue
        params["algorithm"] = algorithm
        if best is None or (algorithm == "SHA-256" and best["algorithm"] != "SHA-256"):
            best = params
    if best is None:
        return None
    algorithm, realm, nonce = best["algorithm"], best["realm"], best["nonce"]
    ha1 = compute_ha1(algorithm, username, realm, password)
    fields = [f'username="{username}"', f'realm="{realm}"', f'nonce="{nonce}"', f'uri="{uri}"']
    if "qop" in best:
        response = compute_response(algorithm, ha1, nonce, method, uri, "auth", "00000001", cnonce)
        fields += [f'response="{response}"', "qop=auth", "nc=00000001", f'cnonce="{cnonce}"']
    else:
        response = compute_response(algorithm, ha1, nonce, method, uri)
        fields.append(f'response="{response}"')
    fields.append(f"algorithm={algorithm}")
    if "opaque" in best:
        fields.append(f'opaque="{best["opaque"]}"')
    return "Digest " + ", ".join(fields), best.get("stale", "").lower() == "true"
