"""The registrar: agents' phones tell the switch where they can be reached (RFC 3261 §10.3).

Sans-IO. ``handle_register(msg, peer, now)`` runs the steps of RFC 3261 §10.3 on one REGISTER and
returns a ``Reply`` (status, reason, extra headers) for the endpoint to send; ``lookup(user, now)``
gives the contacts to call; ``expire(now)`` drops bindings whose time is up. Every change goes
through the store (``bindings/storage.py`` keeps it in LMDB), so registrations survive a restart;
``now`` is therefore wall-clock seconds, as stored expiry times are.

Where a step lives:
- §10.3 steps 1-2 for every request (416 for a Request-URI scheme, 420 for Require) are the
  endpoint's (§8.2.2); step 1's domain check is here, against ``registrar.domains``.
- Before authentication, what is wrong with the request itself (not who sends it) is answered
  400: a To that is not a SIP/SIPS AOR (RFC 4475 §3.3.4), a Contact that does not parse, a ``*``
  misused (§10.3 step 6). It is the same for every sender, so it tells a scanner nothing.
- Step 3: digest authentication (``core.sip.digest``); an unknown user and a wrong password get
  the same 401. Step 4: the authenticated user may only change its own AOR (403). Step 5: an AOR
  outside our domains is 404.
- Steps 6-7: expiry from the Contact's ``expires`` parameter, else the Expires header, else the
  default (§10.2.1.1); over the maximum it is shortened; under the minimum it is refused with 423
  and Min-Expires (§10.3 step 7, §20.23). A binding is found by URI comparison (§19.1.4); one
  with the same Call-ID and a CSeq not higher than the stored one aborts the whole request (500,
  nothing changed). All changes of one request are committed together, or none (step 7's last
  paragraph).
- Step 8: the 200 lists every current binding with its remaining ``expires`` and a Date.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Protocol

import msgspec

from core.config import Config
from core.errors import ProtocolError
from core.sip.addr import Peer
from core.sip.digest import DigestAuthenticator, compute_ha1, parse_authorization
from core.sip.uri import URI, GrammarError, parse_name_addr, parse_uri

__all__ = ["Binding", "BindingStore", "Registrar", "Reply"]


class Binding(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """One contact of one user: where to send that user's calls, until ``expires_at``.

    Stored as is in LMDB: new fields are only appended, with defaults (DESIGN.md, "Storage").
    """

    contact: str  # the Contact URI as registered, URI parameters and headers kept (RFC 4475 §3.3.13-14)
    expires_at: float  # wall-clock seconds
    received: Peer  # where the REGISTER came from: behind NAT, the only address that works
    call_id: str
    cseq: int
    q: float | None = None  # the contact's preference (§20.10), None when not given
    user_agent: str | None = None


class Reply(NamedTuple):
    """What to answer a REGISTER with; the endpoint adds Via/From/To/Call-ID/CSeq (§8.2.6)."""

    status: int
    reason: str
    headers: list[tuple[str, str]]


class BindingStore(Protocol):
    def load(self) -> dict[str, list[Binding]]: ...

    def save(self, aor: str, bindings: list[Binding]) -> None: ...


class _Refusal(Exception):
    def __init__(self, status: int, reason: str, headers: list[tuple[str, str]] | None = None):
        super().__init__(reason)
        self.reply = Reply(status, reason, headers or [])


class _ContactRequest(NamedTuple):
    uri: URI  # compared by §19.1.4
    text: str
    expires: int
    q: float | None


_SIP_SCHEMES = ("sip", "sips")
# §19.1.4: these URI parameters must match when either URI has them.
_SIGNIFICANT_PARAMS = ("user", "ttl", "method", "maddr", "transport")
# delta-seconds is 32 bits (§20.19, RFC 4475 §3.1.2.4); larger values are read as the largest.
_MAX_DELTA = 2**32 - 1


def uri_equal(a: URI, b: URI) -> bool:
    """RFC 3261 §19.1.4 URI equality for SIP/SIPS URIs: what makes two Contacts one binding.

    ``URI.__eq__`` is stricter (every parameter must match); here a parameter other than user,
    ttl, method, maddr and transport counts only when both URIs carry it, as §19.1.4 says.
    The parsed fields are already %-decoded.
    """
    if a.scheme.lower() != b.scheme.lower() or a.user != b.user or a.password != b.password:
        return False
    # An absent port is not the default port written out (§19.1.4).
    if a.host.lower() != b.host.lower() or a.port != b.port:
        return False
    for name in a.params.keys() | b.params.keys():
        if name in a.params and name in b.params:
            if (a.params[name] or "").lower() != (b.params[name] or "").lower():
                return False
        elif name in _SIGNIFICANT_PARAMS:
            return False
    # Headers: all of them, names case-insensitive, values as they are.
    return {k.lower(): v for k, v in a.headers.items()} == {k.lower(): v for k, v in b.headers.items()}


_DAY_NAMES = ("Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed")  # 1970-01-01 was a Thursday
_MONTH_NAMES = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def sip_date(now: float) -> str:
    """``now`` (seconds since the epoch) as a SIP-date: "Tue, 14 Nov 2023 22:13:20 GMT"
    (RFC 3261 §20.17, the rfc1123-date of RFC 2616 §3.3.1). Computed here rather than with
    email.utils, which would bring the socket module into core."""
    seconds = int(now)
    days, second_of_day = divmod(seconds, 86400)
    # Civil date from a day count (H. Hinnant's days_from_civil, inverted): eras of 400 years
    # starting on 1 March so that the leap day falls at the end of a year.
    z = days + 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + 3 if mp < 10 else mp - 9
    year = yoe + era * 400 + (1 if month <= 2 else 0)
    hour, rest = divmod(second_of_day, 3600)
    minute, second = divmod(rest, 60)
    return (
        f"{_DAY_NAMES[days % 7]}, {day:02d} {_MONTH_NAMES[month - 1]} {year:04d} "
        f"{hour:02d}:{minute:02d}:{second:02d} GMT"
    )


def _delta_seconds(text: str | None) -> int | None:
    """An Expires value; None when absent or not a number (then the next source applies)."""
    if text is None:
        return None
    text = text.strip()
    if not text.isdigit() or not text.isascii():
        return None
    return min(int(text), _MAX_DELTA)


class Registrar:
    """The location service of one node: AOR (a configured user) → contacts."""

    def __init__(
        self,
        config: Config,
        store: BindingStore,
        secret: bytes,
        *,
        random_bytes: Callable[[int], bytes] | None = None,
    ):
        settings = config.registrar
        self.settings = settings
        self.realm = config.sip.realm
        self.domains = frozenset(d.lower() for d in settings.domains)
        self.store = store
        extra = {} if random_bytes is None else {"random_bytes": random_bytes}
        self.digest = DigestAuthenticator(
            self.realm, secret, algorithms=settings.algorithms, nonce_ttl=settings.nonce_ttl, **extra
        )
        # HA1 per user and algorithm, computed once (RFC 7616 §3.4.2: H(user:realm:password)).
        self._ha1: dict[str, dict[str, str]] = {}
        for user in config.users:
            self._ha1[user.name] = {
                alg: user.ha1(alg) or compute_ha1(alg, user.name, self.realm, user.password or "")
                for alg in settings.algorithms
            }
        # Called with (user, registered) after every change of a user's bindings: the ACD learns
        # which agents' phones can be rung.
        self.on_change: Callable[[str, bool], None] | None = None
        self._bindings: dict[str, list[Binding]] = {}
        for aor, bindings in store.load().items():
            if aor in self._ha1 and bindings:
                self._bindings[aor] = list(bindings)
            else:
                store.save(aor, [])  # a user no longer configured: forget where they were

    # --- the location service ---------------------------------------------------------------

    def lookup(self, user: str, now: float) -> list[Binding]:
        """The live contacts of ``user``, most preferred first (§20.10: q, higher first)."""
        live = [b for b in self._bindings.get(user, ()) if b.expires_at > now]
        live.sort(key=lambda b: -(1.0 if b.q is None else b.q))
        return live

    def expire(self, now: float) -> list[tuple[str, Binding]]:
        """Drop every binding whose time is up; returns the (user, binding) pairs dropped."""
        dropped: list[tuple[str, Binding]] = []
        for user in list(self._bindings):
            bindings = self._bindings[user]
            live = [b for b in bindings if b.expires_at > now]
            if len(live) != len(bindings):
                dropped.extend((user, b) for b in bindings if b.expires_at <= now)
                self._commit(user, live)
        return dropped

    def get_timer(self) -> float | None:
        """When the next binding expires (None when there is none)."""
        return min((b.expires_at for bs in self._bindings.values() for b in bs), default=None)

    def _ha1_for(self, username: str, algorithm: str) -> str | None:
        table = self._ha1.get(username)
        return None if table is None else table.get(algorithm)

    def _commit(self, user: str, bindings: list[Binding]) -> None:
        self.store.save(user, bindings)  # first, so a failed write changes nothing
        had = user in self._bindings
        if bindings:
            self._bindings[user] = bindings
        else:
            self._bindings.pop(user, None)
        if self.on_change is not None and had != bool(bindings):
            self.on_change(user, bool(bindings))

    # --- REGISTER ---------------------------------------------------------------------------

    def handle_register(self, msg, peer: Peer, now: float) -> Reply:
        """Process one REGISTER (RFC 3261 §10.3) and say what to answer."""
        try:
            return self._register(msg, peer, now)
        except _Refusal as refusal:
            return refusal.reply
        except ProtocolError as exc:  # e.g. a malformed Authorization header
            return Reply(exc.status, exc.reason, [])

    def _register(self, msg, peer: Peer, now: float) -> Reply:
        # Step 1: are we the registrar of the Request-URI's domain?
        ruri = self._parse(parse_uri, msg.uri, "Request-URI")
        if self.domains and (ruri.host or "").lower() not in self.domains:
            raise _Refusal(404, "Domain Not Served Here")
        to = self._parse(parse_name_addr, msg.to or "", "To")
        aor = to.uri
        if aor.scheme.lower() not in _SIP_SCHEMES:
            # RFC 4475 §3.3.4 (unksm2): a registrar only holds SIP/SIPS AORs.
            raise _Refusal(400, "To Must Be a SIP or SIPS URI")
        contacts, wildcard = self._read_contacts(msg)
        expires_header = msg.header("Expires")

        # Step 3: authenticate. Step 4: only the user itself may change its bindings.
        username = self._authenticate(msg, now)
        if (aor.user or "") != username:  # the URI's user part is already %-decoded
            raise _Refusal(403, "Forbidden")
        # Step 5: the AOR must be one of ours.
        if self.domains and (aor.host or "").lower() not in self.domains:
            raise _Refusal(404, "Not Found")

        current = [b for b in self._bindings.get(username, ()) if b.expires_at > now]
        if wildcard:
            updated = self._remove_all(msg, current, expires_header)
        else:
            updated = self._apply(msg, peer, now, current, contacts, _delta_seconds(expires_header))
        if updated != self._bindings.get(username, []):
            try:
                self._commit(username, updated)
            except Exception as exc:  # the store's failure: step 7 says nothing changes, 500
                raise _Refusal(500, f"Bindings Not Stored ({type(exc).__name__})") from exc
        return Reply(200, "OK", self._binding_list(username, now))

    def _parse(self, parser, text: str, what: str):
        try:
            return parser(text)
        except GrammarError as exc:
            # The problem completes a sentence that starts with the header's name (core.sip.uri).
            raise _Refusal(400, f"{what} {exc.problem}") from None

    def _read_contacts(self, msg) -> tuple[list[tuple[URI, str, str | None, float | None]], bool]:
        """Each Contact as (uri, uri text, expires param, q); and whether it was ``*``."""
        values = [v.strip() for v in msg.header_values("Contact")]
        if "*" in values:
            if len(values) != 1:
                raise _Refusal(400, "Contact * Must Stand Alone")  # §10.3 step 6
            return [], True
        contacts = []
        for value in values:
            name_addr = self._parse(parse_name_addr, value, "Contact")
            uri = name_addr.uri
            if uri.scheme.lower() not in _SIP_SCHEMES:
                raise _Refusal(400, "Contact Must Be a SIP or SIPS URI")
            params = name_addr.params  # names lower-cased by the parser
            q = params.get("q")
            if q is not None:
                try:
                    q_value = float(q)
                except ValueError:
                    q_value = -1.0
                if not 0.0 <= q_value <= 1.0:
                    raise _Refusal(400, "Contact q Must Be Between 0 and 1")  # §20.10
                q = q_value
            contacts.append((uri, str(uri), params.get("expires"), q))
        return contacts, False

    def _authenticate(self, msg, now: float) -> str:
        """The authenticated user name, or a refusal: 401 with a fresh challenge."""
        credentials = None
        for name, value in msg.headers():
            if name.lower() == "authorization":
                parsed = parse_authorization(value)  # RemoteProtocolError(400) when malformed
                if parsed is not None and parsed.realm == self.realm:
                    credentials = parsed
                    break
        if credentials is not None:
            if credentials.uri != msg.uri:
                # RFC 7616 §3.4.6, RFC 3261 §22.4: the answer must be for this Request-URI.
                raise _Refusal(400, "Digest uri Does Not Match the Request-URI")
            result = self.digest.verify(credentials, msg.method, self._ha1_for, now)
            if result.ok:
                return result.username
            stale = result.stale
        else:
            stale = False
        # Unknown user, wrong password, no credentials: the same answer with a fresh nonce.
        raise _Refusal(401, "Unauthorized", [("WWW-Authenticate", v) for v in self.digest.challenge(now, stale)])

    def _remove_all(self, msg, current: list[Binding], expires_header: str | None) -> list[Binding]:
        # §10.3 step 6: "*" only with Expires: 0.
        if _delta_seconds(expires_header) != 0:
            raise _Refusal(400, "Contact * Requires Expires: 0")
        for binding in current:
            self._check_order(msg, binding)
        return []

    def _check_order(self, msg, binding: Binding) -> None:
        # §10.3 steps 6-7: the same Call-ID with a CSeq not higher is an old or repeated request;
        # the update is aborted and the request fails.
        if binding.call_id == msg.call_id and msg.cseq <= binding.cseq:
            raise _Refusal(500, "Out of Order REGISTER (CSeq Not Higher)", [("Retry-After", "1")])

    def _apply(self, msg, peer, now, current, contacts, header_expires) -> list[Binding]:
        settings = self.settings
        requests: list[_ContactRequest] = []
        for uri, text, param, q in contacts:
            expires = _delta_seconds(param)
            if expires is None:
                expires = header_expires if header_expires is not None else settings.default_expires
            # §10.3 step 7: refuse too short (only below an hour), shorten too long.
            if 0 < expires < settings.min_expires and expires < 3600:
                raise _Refusal(423, "Interval Too Brief", [("Min-Expires", str(settings.min_expires))])
            requests.append(_ContactRequest(uri, text, min(expires, settings.max_expires), q))

        updated = list(current)
        user_agent = msg.header("User-Agent")
        for request in requests:
            index = self._find(updated, request.uri)
            if index is not None:
                self._check_order(msg, updated[index])
            if request.expires == 0:
                if index is not None:
                    del updated[index]
                continue
            binding = Binding(
                contact=request.text,
                expires_at=now + request.expires,
                received=peer,
                call_id=msg.call_id,
                cseq=msg.cseq,
                q=request.q,
                user_agent=user_agent,
            )
            if index is None:
                updated.append(binding)
            else:
                updated[index] = binding
        return updated

    def _find(self, bindings: list[Binding], uri: URI) -> int | None:
        for i, binding in enumerate(bindings):
            try:
                stored = parse_uri(binding.contact)
            except GrammarError:  # written by an older version with other rules: never matches
                continue
            if uri_equal(stored, uri):
                return i
        return None

    def _binding_list(self, user: str, now: float) -> list[tuple[str, str]]:
        headers = []
        for b in self.lookup(user, now):
            remaining = max(0, round(b.expires_at - now))
            q = f";q={b.q:g}" if b.q is not None else ""
            headers.append(("Contact", f"<{b.contact}>;expires={remaining}{q}"))
        # §10.3 step 8: a Date lets a phone without a clock learn the time.
        headers.append(("Date", sip_date(now)))
        return headers
