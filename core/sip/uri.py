"""SIP addresses, parsed on demand: URIs, name-addr values and Via values.

Implements the grammar of RFC 3261 §25.1 for SIP-URI/SIPS-URI (§19.1.1), name-addr / addr-spec
(§20.10, §20.20, §20.39), via-parm (§20.42), generic parameters and quoted strings, with the IPv6
references of RFC 5118 (and the corrected IPv6 ABNF of RFC 5954). Everything here is plain Python:
the message scanners (``core/sip/_pysip.py`` and ``core/_sip.pyx``) use the same grammar, the Cython
one re-written over bytes; ``tests/test_vectors.py`` holds the two to the same answers.

Scanners take ``(text, i)`` and return the position after what they read; a malformed value raises
``GrammarError(problem)`` where ``problem`` completes a sentence that starts with the header's name
("Via" + " has an empty parameter").

Values are text: header bytes decoded as UTF-8 with ``surrogateescape`` so that any octet survives.
"""

from __future__ import annotations

import re
from typing import NamedTuple
from urllib.parse import quote, unquote

# The character classes of RFC 3261 §25.1, as sets and as patterns: a pattern scans a run of them
# in one call rather than a Python loop a character (ASCII ranges only: no Unicode digit slips in).
# token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~")
ALPHA = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
DIGITS = "0123456789"
TOKEN_CHARS = frozenset(ALPHA + DIGITS + "-.!%*_+`'~")
_TOKEN_RUN = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]*")
_DIGIT_RUN = re.compile(r"[0-9]*")
# hostname = *( domainlabel "." ) toplabel [ "." ] and IPv4address; "_" is not in the ABNF but is common
# in deployed names, so it is accepted (as Kamailio and pjsip do).
_HOST_RUN = re.compile(r"[A-Za-z0-9\-._]*")
# scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*")
HEX = frozenset("0123456789abcdefABCDEF")
WSP = " \t"
_WS_RUN = re.compile(r"[ \t]*")
# A parameter value ends at whitespace or at the next separator (gen-value = token / host / quoted-string;
# host may carry ":" "[" "]" for IPv6, RFC 5118 §4.5).
_PARAM_VALUE_RUN = re.compile(r'[^ \t;,"]*')
# Characters a Reason-Phrase may carry unescaped (RFC 3261 §25.1: reserved / unreserved / SP).
REASON_SAFE = frozenset(ALPHA + DIGITS + "-_.!~*'()" + ";/?:@&=+$," + " ")


class GrammarError(ValueError):
    """A value breaks the grammar; ``problem`` reads after the header's name ("has an empty parameter")."""

    def __init__(self, problem: str):
        super().__init__(problem)
        self.problem = problem


def show(text: str, limit: int = 40) -> str:
    """``text`` made safe to quote inside a Reason-Phrase: printable, short, no characters the
    Reason-Phrase grammar forbids (they become "?")."""
    cut = text[:limit]
    safe = "".join(c if c in REASON_SAFE else "?" for c in cut)
    return "'" + safe + ("...'" if len(text) > limit else "'")


# ---------------------------------------------------------------------------------------------------
# Small scanners over text


def skip_ws(text: str, i: int) -> int:
    """Past any SP / HTAB (LWS; folding has already been undone)."""
    if i < len(text) and text[i] in WSP:
        return _WS_RUN.match(text, i).end()
    return i  # the usual case: nothing to skip


def scan_token(text: str, i: int) -> int:
    return _TOKEN_RUN.match(text, i).end()


def scan_quoted(text: str, i: int) -> int:
    """``text[i]`` is the opening DQUOTE; returns the index after the closing one.

    RFC 3261 §25.1: quoted-string = SWS DQUOTE *(qdtext / quoted-pair) DQUOTE; a backslash
    escapes the next character whatever it is.
    """
    n = len(text)
    i += 1
    while i < n:
        c = text[i]
        if c == '"':
            return i + 1
        i += 2 if c == "\\" else 1
    raise GrammarError("has an unterminated quoted string")


def is_scheme(text: str) -> bool:
    """scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )  (RFC 3261 §25.1)."""
    return _SCHEME.fullmatch(text) is not None


def is_ipv4(text: str) -> bool:
    """IPv4address = 1*3DIGIT "." 1*3DIGIT "." 1*3DIGIT "." 1*3DIGIT, each at most 255."""
    parts = text.split(".")
    if len(parts) != 4:
        return False
    for part in parts:
        if not (1 <= len(part) <= 3) or any(c not in DIGITS for c in part) or int(part) > 255:
            return False
    return True


def is_ipv6(text: str) -> bool:
    """IPv6address of RFC 3261 §25.1 as corrected by RFC 5954 §4.1: eight groups of 1-4 hex digits,
    at most one "::" standing for one or more zero groups, the last two groups optionally written as
    an IPv4 address. "2001:db8:::192.0.2.1" (RFC 5118 §4.10) is refused: its ":::" leaves an empty group.
    """
    if text.count("::") > 1:
        return False
    if "::" in text:
        head, tail = text.split("::")
        groups = (head.split(":") if head else []) + (tail.split(":") if tail else [])
        most = 7  # "::" stands for at least one group
    else:
        groups = text.split(":")
        most = 8
    if not groups and most == 7:
        return True  # "::"
    width = 0
    for index, group in enumerate(groups):
        if index == len(groups) - 1 and "." in group:
            if not is_ipv4(group):
                return False
            width += 2
        elif 1 <= len(group) <= 4 and all(c in HEX for c in group):
            width += 1
        else:
            return False
    return width <= most if most == 7 else width == 8


def scan_host(text: str, i: int) -> tuple[str, int]:
    """host = hostname / IPv4address / IPv6reference; returns the host without brackets."""
    n = len(text)
    if i < n and text[i] == "[":
        close = text.find("]", i)
        if close < 0:
            raise GrammarError("has an unterminated IPv6 reference")
        address = text[i + 1 : close]
        if not is_ipv6(address):
            raise GrammarError(f"has an invalid IPv6 reference {show(address)}")
        return address, close + 1
    j = _HOST_RUN.match(text, i).end()
    if j == i:
        raise GrammarError("has no host")
    return text[i:j], j


def scan_port(text: str, i: int) -> tuple[int, int]:
    """port = 1*DIGIT, at most 65535; ``text[i]`` is the first digit."""
    j = _DIGIT_RUN.match(text, i).end()
    if j == i or j - i > 5 or int(text[i:j]) > 65535:
        n = len(text)
        end = j
        while end < n and text[end] not in " \t;,?>":
            end += 1
        raise GrammarError(f"has an invalid port {show(text[i:end])}")
    return int(text[i:j]), j


def scan_params(text: str, i: int, in_list: bool) -> tuple[dict[str, str | None], int]:
    """*( SEMI generic-param ) with LWS around ";" and "="; stops at the end or, in a list, at ",".

    Names are lower-cased (parameter names are case-insensitive, RFC 3261 §7.3.1); the first
    occurrence of a name wins; a flag parameter maps to None.
    """
    n = len(text)
    params: dict[str, str | None] = {}
    while True:
        i = skip_ws(text, i)
        if i == n or (in_list and text[i] == ","):
            return params, i
        if text[i] != ";":
            raise GrammarError(f"has unexpected text {show(text[i:])}")
        i = skip_ws(text, i + 1)
        j = scan_token(text, i)
        if j == i:
            raise GrammarError("has an empty parameter")
        name = text[i:j].lower()
        i = skip_ws(text, j)
        value = None
        if i < n and text[i] == "=":
            i = skip_ws(text, i + 1)
            if i < n and text[i] == '"':
                j = scan_quoted(text, i)
            else:
                j = _PARAM_VALUE_RUN.match(text, i).end()
            if j == i:
                raise GrammarError(f"parameter {show(name)} has no value")
            value = text[i:j]
            i = j
        params.setdefault(name, value)


def split_list(text: str) -> list[str]:
    """Split a comma-separated header value (RFC 3261 §7.3.1) outside quoted strings and <...>;
    elements are stripped and empty ones dropped."""
    values = []
    start = 0
    depth = 0
    i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if c == '"':
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
        elif c == "<":
            depth += 1
        elif c == ">" and depth:
            depth -= 1
        elif c == "," and not depth:
            values.append(text[start:i])
            start = i + 1
        i += 1
    values.append(text[start:])
    return [v for v in (value.strip(WSP) for value in values) if v]


# ---------------------------------------------------------------------------------------------------
# Via (RFC 3261 §20.42)


class Via(NamedTuple):
    """One via-parm: ``port`` is None when the sent-by has none (§18.2.2 then uses 5060)."""

    transport: str
    host: str
    port: int | None
    params: dict[str, str | None]

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")


def scan_via(text: str, i: int) -> tuple[Via, int]:
    """via-parm = sent-protocol LWS sent-by *( SEMI via-params ); stops at "," or the end.

    sent-protocol = protocol-name SLASH protocol-version SLASH transport, with SWS around each "/"
    (RFC 4475 §3.1.1.1 folds inside it).
    """
    n = len(text)
    i = skip_ws(text, i)
    if i == n or text[i] == ",":
        raise GrammarError("has an empty value")
    parts = []
    for index in range(3):
        j = scan_token(text, i)
        if j == i:
            raise GrammarError("has a malformed sent-protocol")
        parts.append(text[i:j])
        i = skip_ws(text, j)
        if index < 2:
            if i == n or text[i] != "/":
                raise GrammarError("has a malformed sent-protocol")
            i = skip_ws(text, i + 1)
    name, version, transport = parts
    if name.upper() != "SIP" or version != "2.0":
        raise GrammarError(f"protocol {show(name + '/' + version)} is not SIP/2.0")
    if i == j or i == n or text[i] in ";,":
        raise GrammarError("has no sent-by host")
    host, i = scan_host(text, i)
    port = None
    k = skip_ws(text, i)
    if k < n and text[k] == ":":
        k = skip_ws(text, k + 1)
        port, i = scan_port(text, k)
    if i < n and text[i] not in " \t;,":
        raise GrammarError(f"has unexpected text {show(text[i:])}")
    params, i = scan_params(text, i, in_list=True)
    return Via(transport.upper(), host, port, params), i


def parse_via_list(text: str) -> list[Via]:
    """Every via-parm of one Via header value, in order (a comma list, RFC 3261 §7.3.1)."""
    vias = []
    i = 0
    n = len(text)
    while True:
        via, i = scan_via(text, i)
        vias.append(via)
        if i == n:
            return vias
        i += 1  # the ","


def parse_via(text: str) -> Via:
    """The first via-parm of a Via header value."""
    return parse_via_list(text)[0]


# ---------------------------------------------------------------------------------------------------
# URIs (RFC 3261 §19.1, RFC 3966 for tel)


def _decode(text: str) -> str:
    # §19.1.4: escaped characters are equivalent to themselves; decode once, never recursively.
    return unquote(text, errors="surrogateescape") if "%" in text else text


def _decode_params(text: str) -> dict[str, str | None]:
    params: dict[str, str | None] = {}
    for item in text.split(";"):
        if not item:
            continue
        name, eq, value = item.partition("=")
        params.setdefault(_decode(name).lower(), _decode(value) if eq else None)
    return params


class URI:
    """A parsed URI. ``user``/``password``/params/headers are %-decoded; ``host`` has no brackets;
    ``port`` is None when absent. For a scheme other than sip, sips and tel, ``opaque`` keeps what
    follows the colon. ``str()`` gives the wire form back (the text as received, when parsed)."""

    __slots__ = ("scheme", "user", "password", "host", "port", "params", "headers", "opaque", "_text")

    def __init__(self, scheme: str, user: str | None = None, password: str | None = None, host: str = "",
                 port: int | None = None, params: dict | None = None, headers: dict | None = None,
                 opaque: str | None = None, *, text: str | None = None):
        self.scheme = scheme
        self.user = user
        self.password = password
        self.host = host
        self.port = port
        self.params = params if params is not None else {}
        self.headers = headers if headers is not None else {}
        self.opaque = opaque
        self._text = text

    def __str__(self) -> str:
        if self._text is not None:
            return self._text
        if self.opaque is not None:
            return f"{self.scheme}:{self.opaque}"
        out = [self.scheme, ":"]
        if self.user is not None:
            out.append(quote(self.user, safe="-_.!~*'()&=+$,;?/", errors="surrogateescape"))
            if self.password is not None:
                out += [":", quote(self.password, safe="-_.!~*'()&=+$,", errors="surrogateescape")]
            if self.scheme != "tel":
                out.append("@")
        if self.host:
            out.append(f"[{self.host}]" if ":" in self.host else self.host)
        if self.port is not None:
            out.append(f":{self.port}")
        for name, value in self.params.items():
            out.append(f";{name}" if value is None else f";{name}={value}")
        if self.headers:
            out.append("?" + "&".join(f"{name}={value}" for name, value in self.headers.items()))
        return "".join(out)

    def __repr__(self) -> str:
        return f"URI({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, URI):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def _key(self) -> tuple:
        # §19.1.4 comparison, simplified: scheme and host case-insensitive, user case-sensitive.
        return (self.scheme.lower(), self.user, self.password, self.host.lower(), self.port,
                tuple(sorted(self.params.items())), tuple(sorted(self.headers.items())), self.opaque)


def parse_uri(text: str) -> URI:
    """Parse a URI: sip/sips fully (userinfo, hostport with IPv6 references, params, headers),
    tel as number + params, any other scheme as opaque text. Raises GrammarError."""
    colon = text.find(":")
    scheme = text[:colon] if colon > 0 else ""
    if not is_scheme(scheme):
        raise GrammarError(f"URI {show(text)} has no scheme")
    rest = text[colon + 1 :]
    low = scheme.lower()
    if low == "tel":
        number, _, params = rest.partition(";")
        if not number:
            raise GrammarError(f"URI {show(text)} has no telephone number")
        return URI(scheme, user=_decode(number), params=_decode_params(params), text=text)
    if low not in ("sip", "sips"):
        if not rest:
            raise GrammarError(f"URI {show(text)} is empty after the scheme")
        return URI(scheme, opaque=rest, text=text)
    user = password = None
    if "@" in rest:
        # No "@" is allowed unescaped in userinfo, params or headers (§25.1), so the first one ends
        # the userinfo: "sip:user;par=u%40example.net@example.com" has user "user;par=u@example.net".
        userinfo, _, rest = rest.partition("@")
        if not userinfo:
            raise GrammarError(f"URI {show(text)} has an empty user part")
        user_text, has_password, password_text = userinfo.partition(":")
        user = _decode(user_text)
        password = _decode(password_text) if has_password else None
    host, i = scan_host(rest, 0)
    port = None
    if i < len(rest) and rest[i] == ":":
        port, i = scan_port(rest, i + 1)
    params: dict[str, str | None] = {}
    headers: dict[str, str] = {}
    tail = rest[i:]
    if tail[:1] not in ("", ";", "?"):
        raise GrammarError(f"URI {show(text)} has unexpected text after the host")
    if tail.startswith(";"):
        param_text, _, header_text = tail[1:].partition("?")
        params = _decode_params(param_text)
    else:
        header_text = tail[1:]
    for item in header_text.split("&") if header_text else ():
        name, _, value = item.partition("=")
        headers.setdefault(_decode(name), _decode(value))
    return URI(scheme, user, password, host, port, params, headers, text=text)


# ---------------------------------------------------------------------------------------------------
# name-addr / addr-spec (RFC 3261 §20.10, §20.20, §20.39, §25.1)


class NameAddr:
    """``display`` is the display name (unquoted, backslash escapes undone) or None; ``uri`` a URI;
    ``params`` the header parameters (lower-cased names). ``str()`` gives the wire form back."""

    __slots__ = ("display", "uri", "params", "_text")

    def __init__(self, display: str | None, uri: URI, params: dict | None = None, *, text: str | None = None):
        self.display = display
        self.uri = uri
        self.params = params if params is not None else {}
        self._text = text

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    def __str__(self) -> str:
        if self._text is not None:
            return self._text
        out = []
        if self.display is not None:
            escaped = self.display.replace("\\", "\\\\").replace('"', '\\"')
            out.append(f'"{escaped}" ')
        out.append(f"<{self.uri}>")
        for name, value in self.params.items():
            out.append(f";{name}" if value is None else f";{name}={value}")
        return "".join(out)

    def __repr__(self) -> str:
        return f"NameAddr({str(self)!r})"


def scan_name_addr(text: str, i: int, in_list: bool) -> tuple[str | None, str, dict, int]:
    """( name-addr / addr-spec ) *( SEMI param ): returns (display as written or None, URI text,
    params, end). In a list (Contact, Route) it stops at ","; elsewhere a "," is unexpected.

    A display name is a quoted string or tokens separated by LWS (RFC 4475 §3.1.2.15: "Bell,
    Alexander" unquoted is refused); no LWS may stand inside <...> (§3.1.2.14); an addr-spec
    outside <...> may not carry "?" headers (§20.10; RFC 4475 §3.1.2.13), and what follows its
    first ";" is header parameters, not URI parameters (§20.10; RFC 4475 §3.3.12).
    """
    n = len(text)
    i = skip_ws(text, i)
    if i == n or (in_list and text[i] == ","):
        raise GrammarError("has an empty value")
    display = None
    if text[i] == '"':
        j = scan_quoted(text, i)
        display = text[i:j]
        i = skip_ws(text, j)
        if i == n or text[i] != "<":
            raise GrammarError("display name is not followed by an angle-bracketed URI")
    elif text[i] != "<":
        j = scan_token(text, i)
        if j > i and j < n and text[j] == ":":
            # scheme ":" — an addr-spec; it ends at ";" (header params), LWS or, in a list, ","
            k = j
            while k < n and text[k] not in " \t;" and not (in_list and text[k] == ","):
                k += 1
            uri = text[i:k]
            if "?" in uri:
                raise GrammarError("URI with headers must be enclosed in angle brackets")
            if not is_scheme(text[i:j]):
                raise GrammarError(f"URI {show(uri)} has no scheme")
            params, k = scan_params(text, k, in_list)
            return None, uri, params, k
        start = i
        while True:
            if j == i:
                raise GrammarError("display name must be a quoted string or tokens")
            k = skip_ws(text, j)
            if k < n and text[k] == "<":
                display = text[start:j]
                i = k
                break
            if k == n:
                raise GrammarError("has no angle-bracketed URI")
            i = k
            j = scan_token(text, i)
    # text[i] == "<"
    j = text.find(">", i + 1)
    uri = text[i + 1 : j] if j >= 0 else text[i + 1 :]
    if " " in uri or "\t" in uri:
        raise GrammarError("has whitespace inside the angle brackets")
    if j < 0:
        raise GrammarError("has an unclosed angle bracket")
    colon = uri.find(":")
    if colon <= 0 or not is_scheme(uri[:colon]):
        raise GrammarError(f"URI {show(uri)} has no scheme")
    params, j = scan_params(text, j + 1, in_list)
    return display, uri, params, j


def _unquote_display(display: str | None) -> str | None:
    if display is None or not display.startswith('"'):
        return display
    inner = display[1:-1]
    out = []
    i = 0
    while i < len(inner):
        if inner[i] == "\\" and i + 1 < len(inner):
            i += 1
        out.append(inner[i])
        i += 1
    return "".join(out)


def parse_name_addr(text: str) -> NameAddr:
    """One From / To / Contact / Route value (name-addr or addr-spec, with parameters)."""
    display, uri, params, end = scan_name_addr(text, 0, in_list=False)
    if skip_ws(text, end) != len(text):
        raise GrammarError(f"has unexpected text {show(text[end:])}")
    return NameAddr(_unquote_display(display), parse_uri(uri), params, text=text.strip(WSP))


def parse_name_addr_list(text: str) -> list[NameAddr]:
    """Every value of a comma-separated Contact / Route / Record-Route header value."""
    values = []
    i = 0
    n = len(text)
    while True:
        start = skip_ws(text, i)
        display, uri, params, i = scan_name_addr(text, start, in_list=True)
        values.append(NameAddr(_unquote_display(display), parse_uri(uri), params,
                               text=text[start:i].strip(WSP)))
        if i == n:
            return values
        i += 1


def check_request_uri(uri: str) -> None:
    """The Request-URI checks of RFC 3261 §7.1 / §19.1.1 made when a request is parsed.

    Any scheme is accepted (§8.2.2.1 answers an unknown one with 416, not 400); sip and sips URIs
    must have a valid host (IPv6 in brackets, RFC 5118 §4.2) and port, and no headers (§19.1.1:
    headers are not allowed in a Request-URI; RFC 4475 §3.1.2.11). The problem reads on its own.
    """
    if uri.startswith("<"):
        raise GrammarError("Request-URI must not be enclosed in angle brackets")
    colon = uri.find(":")
    if colon <= 0 or not is_scheme(uri[:colon]):
        raise GrammarError(f"Request-URI {show(uri)} has no scheme")
    if uri[:colon].lower() not in ("sip", "sips"):
        return
    rest = uri[colon + 1 :]
    at = rest.find("@")
    if at >= 0:
        if rest.find("@", at + 1) >= 0:
            raise GrammarError("Request-URI has more than one unescaped @")
        if at == 0:
            raise GrammarError("Request-URI has an empty user part")
        rest = rest[at + 1 :]
    try:
        host, i = scan_host(rest, 0)
        if i < len(rest) and rest[i] == ":":
            end = i + 1
            while end < len(rest) and rest[end] not in ";?":
                end += 1
            if ":" in rest[i + 1 : end]:
                raise GrammarError("has an IPv6 address outside brackets")
            _, i = scan_port(rest, i + 1)
    except GrammarError as error:
        raise GrammarError(f"Request-URI {error.problem}") from None
    if i < len(rest) and rest[i] not in ";?":
        raise GrammarError(f"Request-URI has unexpected text {show(rest[i:])} after the host")
    if "?" in rest[i:]:
        raise GrammarError("Request-URI must not carry headers")


_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def is_sip_date(text: str) -> bool:
    """SIP-date = rfc1123-date (RFC 3261 §20.17, RFC 2616 §3.3.1): "Sat, 13 Nov 2010 23:29:00 GMT",
    always in GMT (RFC 4475 §3.1.2.12 refuses "EST")."""
    if len(text) != 29:
        return False
    digit_positions = (5, 6, 12, 13, 14, 15, 17, 18, 20, 21, 23, 24)
    return (text[0:3] in _WEEKDAYS and text[3:5] == ", " and text[7] == " " and text[8:11] in _MONTHS
            and text[11] == " " and text[16] == " " and text[19] == ":" and text[22] == ":"
            and text[25:29] == " GMT" and all(text[p] in DIGITS for p in digit_positions))
