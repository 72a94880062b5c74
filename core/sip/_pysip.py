"""The SIP message scanner and serializer in plain Python: the readable specification.

RFC 3261 §7 (message format: start line, headers, folding, compact forms, comma lists, body framing),
§18.3 (framing on datagrams and streams), §20 (the header fields whose values the scanner checks),
§25 (the grammar, in ``core/sip/uri.py``), §8.2.6 (building responses), with the torture tests of
RFC 4475 and RFC 5118 as the judge of liberal-versus-strict.

``core/_sip.pyx`` is the fast twin; both give the same answers, value for value and reason for reason
(``tests/test_vectors.py`` checks it). The rules the two share:

* A datagram is one message; leading CRLFs are skipped (§7.5); the header section ends at the first
  empty line; every line ends with CRLF (a bare CR or LF is refused); a line starting with SP or HTAB
  continues the previous one (folding, §7.3.1), and unfolding removes the CRLF (RFC 5322 §2.2.3).
* Headers are checked in the order they come, so the first problem in the message is the one
  reported: Via (every via-parm), From, To, Contact (the name-addr grammar), Call-ID, CSeq (32-bit
  number, method equal to the Request-Line's), Max-Forwards (0-255), Content-Length, Date (GMT).
  From, To, Call-ID, CSeq, Max-Forwards and Content-Length may appear once (§7.3.1, §20).
  Via, From, To, Call-ID and CSeq are mandatory (§8.1.1) in requests and responses; Max-Forwards is
  not, for RFC 2543 peers (RFC 4475 §3.4.1).
* Body framing (§18.3): Content-Length bytes after the empty line; absent, the rest of the datagram;
  more than is left, an error; bytes after the body are ignored (RFC 4475 §3.1.1.8).
* Every refusal is a ``RemoteProtocolError(reason, status)``: the reason says what was wrong in words
  that fit a Reason-Phrase; the status is 400, 505 for a SIP version other than 2.0, 513 over
  ``max_size``.
"""

from __future__ import annotations

import hashlib
from typing import Iterable

from core.errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from core.sip.uri import (
    DIGITS,
    REASON_SAFE,
    TOKEN_CHARS,
    WSP,
    GrammarError,
    Via,
    check_request_uri,
    is_sip_date,
    parse_via_list,
    scan_name_addr,
    scan_token,
    show,
    skip_ws,
    split_list,
)

__all__ = ["Message", "StreamFramer", "Via", "build_request", "build_response", "parse",
           "reply_for_malformed", "canonical_name"]

MAX_SIZE = 65536

# RFC 3261 §7.3.3 compact forms, and those registered since (RFC 3265, 3515, 3841, 3892, 4028, 4474).
COMPACT = {
    "i": "call-id", "m": "contact", "e": "content-encoding", "l": "content-length", "c": "content-type",
    "f": "from", "s": "subject", "k": "supported", "t": "to", "v": "via", "o": "event", "r": "refer-to",
    "u": "allow-events", "a": "accept-contact", "j": "reject-contact", "d": "request-disposition",
    "b": "referred-by", "x": "session-expires", "y": "identity", "n": "identity-info",
}
LONG_TO_COMPACT = {long: short for short, long in COMPACT.items()}

# Headers whose grammar is a comma-separated list (§7.3.1): only these are split by header_values();
# any other value (Date, WWW-Authenticate, an unknown header) is one opaque value even with commas.
LIST_HEADERS = frozenset({
    "via", "contact", "route", "record-route", "path", "service-route", "accept", "accept-encoding",
    "accept-language", "allow", "supported", "require", "proxy-require", "unsupported",
    "content-encoding", "content-language", "alert-info", "call-info", "error-info", "in-reply-to",
    "warning", "allow-events", "p-asserted-identity", "p-preferred-identity", "accept-contact",
    "reject-contact", "request-disposition", "security-client", "security-server", "security-verify",
    "history-info", "diversion", "reason",
})

# Headers that may appear only once (§7.3.1: only list headers may be repeated); mcl01 and multi01
# of RFC 4475 are refused for breaking it.
SINGLE_HEADERS = ("from", "to", "call-id", "cseq", "max-forwards", "content-length")
REQUIRED_HEADERS = ("via", "from", "to", "call-id", "cseq")  # §8.1.1, §20 table 2
DISPLAY_NAMES = {
    "via": "Via", "from": "From", "to": "To", "call-id": "Call-ID", "cseq": "CSeq", "contact": "Contact",
    "max-forwards": "Max-Forwards", "content-length": "Content-Length", "route": "Route",
    "record-route": "Record-Route", "date": "Date",
}

# §21: the reason phrases used when build_response() is given none.
REASON_PHRASES = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued",
    183: "Session Progress", 199: "Early Dialog Terminated", 200: "OK", 202: "Accepted",
    204: "No Notification", 300: "Multiple Choices", 301: "Moved Permanently",
    302: "Moved Temporarily", 305: "Use Proxy", 380: "Alternative Service", 400: "Bad Request",
    401: "Unauthorized", 402: "Payment Required", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 406: "Not Acceptable", 407: "Proxy Authentication Required",
    408: "Request Timeout", 410: "Gone", 412: "Conditional Request Failed",
    413: "Request Entity Too Large", 414: "Request-URI Too Long", 415: "Unsupported Media Type",
    416: "Unsupported URI Scheme", 417: "Unknown Resource-Priority", 420: "Bad Extension",
    421: "Extension Required", 422: "Session Interval Too Small", 423: "Interval Too Brief",
    428: "Use Identity Header", 429: "Provide Referrer Identity", 433: "Anonymity Disallowed",
    436: "Bad Identity-Info", 437: "Unsupported Certificate", 438: "Invalid Identity Header",
    439: "First Hop Lacks Outbound Support", 440: "Max-Breadth Exceeded", 469: "Bad Info Package",
    470: "Consent Needed", 480: "Temporarily Unavailable", 481: "Call/Transaction Does Not Exist",
    482: "Loop Detected", 483: "Too Many Hops", 484: "Address Incomplete", 485: "Ambiguous",
    486: "Busy Here", 487: "Request Terminated", 488: "Not Acceptable Here", 489: "Bad Event",
    491: "Request Pending", 493: "Undecipherable", 494: "Security Agreement Required",
    500: "Server Internal Error", 501: "Not Implemented", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Server Time-out", 505: "Version Not Supported",
    513: "Message Too Large", 555: "Push Notification Service Not Supported",
    580: "Precondition Failure", 600: "Busy Everywhere", 603: "Decline",
    604: "Does Not Exist Anywhere", 606: "Not Acceptable", 607: "Unwanted", 608: "Rejected",
}


def canonical_name(name: str) -> str:
    """The lower-case long form of a header name: "v", "VIA" and "Via" are all "via" (§7.3.3)."""
    low = name.lower()
    return COMPACT.get(low, low)


def show_number(digits: str) -> str:
    """A run of digits for a reason phrase: leading zeros dropped, at most 20 digits."""
    digits = digits.lstrip("0") or "0"
    return digits if len(digits) <= 20 else digits[:20] + "..."


def _text(raw: bytes) -> str:
    # Header bytes as text: UTF-8 (§7.3.1: TEXT-UTF8), any other octet kept as a surrogate escape.
    return raw.decode("utf-8", "surrogateescape")


def _refuse(reason: str, status: int = 400) -> RemoteProtocolError:
    return RemoteProtocolError(reason, status)


class _HeaderLine:
    """One header as received: name as sent, canonical name, unfolded value, and where its bytes are."""

    __slots__ = ("name", "canonical", "value", "start", "end")

    def __init__(self, name: str, canonical: str, value: str, start: int, end: int):
        self.name = name
        self.canonical = canonical
        self.value = value
        self.start = start
        self.end = end


class Message:
    """A parsed SIP message (read-only); see docs/internals.md for the face."""

    __slots__ = ("_data", "_start", "_head_end", "_body_start", "_body_end", "_lines", "is_request",
                 "method", "uri", "status", "reason", "call_id", "cseq", "cseq_method", "from_", "to",
                 "from_tag", "to_tag", "max_forwards", "content_length", "branch", "vias", "top_via")

    def __setattr__(self, name, value):
        raise AttributeError("Message is read-only")

    def _set(self, **fields) -> None:
        for name, value in fields.items():
            object.__setattr__(self, name, value)

    @property
    def body(self) -> bytes:
        return self._data[self._body_start : self._body_end]

    @property
    def raw(self) -> bytes:
        return self._data[self._start : self._body_end]

    def header(self, name: str) -> str | None:
        values = self.header_values(name)
        return values[0] if values else None

    def header_values(self, name: str) -> list[str]:
        wanted = canonical_name(name)
        values: list[str] = []
        for line in self._lines:
            if line.canonical == wanted:
                if wanted in LIST_HEADERS:
                    values.extend(split_list(line.value))
                else:
                    values.append(line.value)
        return values

    def headers(self) -> list[tuple[str, str]]:
        return [(line.name, line.value) for line in self._lines]

    def serialize(self, prepend: Iterable[tuple[str, str]] = (), remove: Iterable[str] = (),
                  replace: dict[str, str] | None = None, body: bytes | None = None) -> bytes:
        """The message with edits applied, as Kamailio applies "lumps" when it forwards:

        ``prepend`` header lines go first, every header named in ``remove`` is dropped, the first
        occurrence of each header named in ``replace`` takes the new value (a name not present is
        added after the others), and ``body`` replaces the body. Content-Length always follows the
        body: the original line is kept while the body is unchanged, else a new one is written; it
        cannot be edited by name. Untouched header lines are copied byte for byte.
        """
        prepend = list(prepend)
        removed = {canonical_name(name) for name in remove}
        replacements = {canonical_name(name): (name, value) for name, value in (replace or {}).items()}
        for name, value in prepend + list(replacements.values()):
            _check_header_line(name, value)
        if "content-length" in removed or "content-length" in replacements or any(
            canonical_name(name) == "content-length" for name, _ in prepend
        ):
            raise LocalProtocolError("Content-Length follows the body: pass body= instead of editing it")
        data = self._data
        out = [data[self._start : self._lines[0].start]]  # the start line and its CRLF
        for name, value in prepend:
            out.append(f"{name}: {value}\r\n".encode("utf-8", "surrogateescape"))
        kept_length = False
        for line in self._lines:
            if line.canonical in removed:
                continue
            if line.canonical == "content-length":
                if body is not None:
                    continue
                kept_length = True
            replacement = replacements.pop(line.canonical, None)
            if replacement is not None:
                out.append(f"{replacement[0]}: {replacement[1]}\r\n".encode("utf-8", "surrogateescape"))
            else:
                out.append(data[line.start : line.end] + b"\r\n")
        for name, value in replacements.values():
            out.append(f"{name}: {value}\r\n".encode("utf-8", "surrogateescape"))
        new_body = self.body if body is None else bytes(body)
        if not kept_length:
            out.append(b"Content-Length: %d\r\n" % len(new_body))
        out.append(b"\r\n")
        out.append(new_body)
        return b"".join(out)

    def __repr__(self) -> str:
        if self.is_request:
            return f"<Message {self.method} {self.uri} call_id={self.call_id!r} cseq={self.cseq}>"
        return f"<Message {self.status} {self.reason} call_id={self.call_id!r} cseq={self.cseq}>"


def _check_header_line(name: str, value: str) -> None:
    # A header added by the caller must stay one header line: no CR/LF smuggled in.
    if not name or any(c not in TOKEN_CHARS for c in name):
        raise LocalProtocolError(f"header name {name!r} is not a token")
    if "\r" in value or "\n" in value:
        raise LocalProtocolError(f"header {name} value contains CR or LF")


# ---------------------------------------------------------------------------------------------------
# Parsing


def parse(data: bytes, max_size: int = MAX_SIZE) -> Message:
    """Parse one whole datagram (RFC 3261 §7, §18.3); raises RemoteProtocolError."""
    data = bytes(data)
    if len(data) > max_size:
        raise _refuse(f"message of {len(data)} bytes exceeds the limit of {max_size} bytes", 513)
    # §7.5: CRLFs before the start-line are ignored.
    start = 0
    while data.startswith(b"\r\n", start):
        start += 2
    if start == len(data):
        raise _refuse("empty message")
    head_end = data.find(b"\r\n\r\n", start)
    if head_end < 0:
        raise _refuse("header section is not terminated by an empty line")

    msg = Message.__new__(Message)
    line_end = data.find(b"\r\n", start)
    start_line = data[start:line_end]
    _check_line_ends(start_line)
    if start_line[:4].upper() == b"SIP/":
        status, reason = _parse_status_line(_text(start_line))
        msg._set(is_request=False, method="", uri="", status=status, reason=reason)
    else:
        method, uri = _parse_request_line(_text(start_line))
        msg._set(is_request=True, method=method, uri=uri, status=0, reason="")

    fields: dict[str, object] = {}
    lines: list[_HeaderLine] = []
    vias: list[str] = []
    pos = line_end + 2
    while pos < head_end + 2:
        # One header: its first physical line, then every line that starts with SP or HTAB.
        if data[pos : pos + 1] in (b" ", b"\t"):
            raise _refuse("start line is folded")
        first_end = data.find(b"\r\n", pos)
        end = first_end
        while data[end + 2 : end + 3] in (b" ", b"\t"):
            end = data.find(b"\r\n", end + 2)
        for physical in data[pos:end].split(b"\r\n"):
            _check_line_ends(physical)
        colon = data.find(b":", pos, first_end)
        if colon < 0:
            raise _refuse(f"header line {show(_text(data[pos:first_end]))} has no colon")
        name = _text(data[pos:colon].rstrip(b" \t"))
        if not name:
            raise _refuse(f"header line {show(_text(data[pos:first_end]))} has an empty name")
        if any(c not in TOKEN_CHARS for c in name):
            raise _refuse(f"header name {show(name)} is not a token")
        value = _text(data[colon + 1 : end].replace(b"\r\n", b"")).strip(WSP)
        canonical = canonical_name(name)
        lines.append(_HeaderLine(name, canonical, value, pos, end))
        _check_header(msg, canonical, value, fields, vias)
        pos = end + 2

    missing = [DISPLAY_NAMES[name] for name in REQUIRED_HEADERS if name not in fields]
    if missing:
        raise _refuse("message lacks required header(s) " + ", ".join(missing))

    # §18.3: the body is Content-Length bytes; without one, the rest of the datagram.
    body_start = head_end + 4
    available = len(data) - body_start
    if "content-length" in fields:
        digits = fields["content-length"]
        if len(digits.lstrip("0")) > 10 or int(digits) > available:
            raise _refuse(f"Content-Length {show_number(digits)} exceeds the {available} bytes of body")
        length = int(digits)
    else:
        length = available
    top_via = fields["via"]
    msg._set(
        _data=data, _start=start, _head_end=head_end, _body_start=body_start, _body_end=body_start + length,
        _lines=lines, call_id=fields["call-id"], cseq=fields["cseq"][0], cseq_method=fields["cseq"][1],
        from_=fields["from"][0], from_tag=fields["from"][1], to=fields["to"][0], to_tag=fields["to"][1],
        max_forwards=fields.get("max-forwards", -1), content_length=length,
        branch=top_via.params.get("branch"), vias=vias, top_via=top_via,
    )
    return msg


def _check_line_ends(line: bytes) -> None:
    # §7: every line ends with CRLF; a lone CR or LF is neither a line end nor header text.
    if b"\r" in line or b"\n" in line:
        raise _refuse("bare CR or LF in the header section")


def _check_version(version: str, where: str) -> None:
    # §7.1: SIP-Version = "SIP" "/" 1*DIGIT "." 1*DIGIT (the literal is case-insensitive, §25);
    # §8.2.2 / §21.5.6: any version but 2.0 is answered 505.
    name, slash, number = version.partition("/")
    major, dot, minor = number.partition(".")
    if (not name.isascii() or name.upper() != "SIP" or not slash or not dot or not major or not minor
            or any(c not in DIGITS for c in major + minor)):
        raise _refuse(f"{where} has a malformed SIP version {show(version)}")
    if major != "2" or minor != "0":
        raise _refuse(f"SIP version {show(version)} is not supported", 505)


def _parse_status_line(line: str) -> tuple[int, str]:
    """Status-Line = SIP-Version SP Status-Code SP Reason-Phrase (§7.2); the Reason-Phrase may be
    empty (RFC 4475 §3.1.1.13) and may be UTF-8 (§3.1.1.12)."""
    version, _, rest = line.partition(" ")
    _check_version(version, "Status-Line")
    code, _, reason = rest.partition(" ")
    if len(code) != 3 or any(c not in DIGITS for c in code):
        raise _refuse(f"status code {show(code)} is not three digits")
    status = int(code)
    if not 100 <= status <= 699:
        raise _refuse(f"status code {code} is out of the range 100-699")
    return status, reason


def _parse_request_line(line: str) -> tuple[str, str]:
    """Request-Line = Method SP Request-URI SP SIP-Version (§7.1): exactly one SP between the three
    elements and none after them (RFC 4475 §3.1.2.8-10 may be accepted by a liberal parser; this one
    refuses them, each with its own reason)."""
    if line[-1:] in (" ", "\t"):
        raise _refuse("Request-Line has trailing whitespace")
    if "  " in line or "\t" in line:
        raise _refuse("Request-Line elements must be separated by single spaces")
    parts = line.split(" ")
    if len(parts) == 1:
        raise _refuse("Request-Line has no Request-URI")
    if len(parts) == 2:
        raise _refuse("Request-Line has no SIP version")
    if len(parts) > 3:
        raise _refuse("Request-URI contains whitespace")
    method, uri, version = parts
    _check_version(version, "Request-Line")
    if not method or any(c not in TOKEN_CHARS for c in method):
        raise _refuse(f"method {show(method)} is not a token")
    try:
        check_request_uri(uri)
    except GrammarError as error:
        raise _refuse(error.problem) from None
    return method, uri


def _check_header(msg: Message, canonical: str, value: str, fields: dict, vias: list) -> None:
    """Check one header of the first-occurrence set as it comes (§20) and record what it gives."""
    display = DISPLAY_NAMES.get(canonical)
    if display is None:
        return
    if canonical in SINGLE_HEADERS and canonical in fields:
        raise _refuse(f"message has more than one {display} header")
    try:
        if canonical == "via":
            parsed = parse_via_list(value)
            fields.setdefault("via", parsed[0])
            vias.extend(split_list(value))
        elif canonical in ("from", "to"):
            _, _, params, _ = scan_name_addr(value, 0, in_list=False)
            fields[canonical] = (value, params.get("tag"))
        elif canonical == "contact":
            if value != "*":
                i = 0
                while True:
                    _, _, _, i = scan_name_addr(value, i, in_list=True)
                    if i == len(value):
                        break
                    i += 1
        elif canonical == "call-id":
            # callid = word [ "@" word ] (§25.1): not empty, no whitespace.
            if not value:
                raise GrammarError("is empty")
            if any(c in WSP for c in value):
                raise GrammarError("contains whitespace")
            fields["call-id"] = value
        elif canonical == "cseq":
            fields["cseq"] = _parse_cseq(msg, value)
        elif canonical == "max-forwards":
            # Max-Forwards = 1*DIGIT, 0-255 (§20.22)
            if not value or any(c not in DIGITS for c in value):
                raise GrammarError(f"{show(value)} is not a number")
            if len(value.lstrip("0")) > 3 or int(value) > 255:
                raise GrammarError(f"{show_number(value)} exceeds 255")
            fields["max-forwards"] = int(value)
        elif canonical == "content-length":
            # Content-Length = 1*DIGIT (§20.14); a sign makes it no number (RFC 4475 §3.1.2.3).
            if not value or any(c not in DIGITS for c in value):
                raise GrammarError(f"{show(value)} is not a number")
            fields["content-length"] = value
        elif canonical == "date":
            if not is_sip_date(value):
                raise GrammarError(f"{show(value)} is not an RFC 1123 date in GMT")
    except GrammarError as error:
        raise _refuse(f"{display} {error.problem}") from None


def _parse_cseq(msg: Message, value: str) -> tuple[int, str]:
    """CSeq = 1*DIGIT LWS Method (§20.16); the number fits 32 bits (§8.1.1.5; RFC 4475 §3.1.2.4) and
    the method is the Request-Line's (§8.1.1.5; RFC 4475 §3.1.2.17-18)."""
    n = len(value)
    j = 0
    while j < n and value[j] in DIGITS:
        j += 1
    k = skip_ws(value, j)
    m = scan_token(value, k)
    if j == 0 or k == j or m == k or m != n:
        raise GrammarError(f"{show(value)} is not a number and a method")
    digits, method = value[:j], value[k:m]
    if len(digits.lstrip("0")) > 10 or int(digits) > 0xFFFFFFFF:
        raise GrammarError(f"number {show_number(digits)} exceeds 2**32-1")
    if msg.is_request and method != msg.method:
        raise GrammarError(f"method {show(method)} does not match the Request-Line method {show(msg.method)}")
    return int(digits), method


# ---------------------------------------------------------------------------------------------------
# Streams (TCP): RFC 3261 §18.3


class StreamFramer:
    """Cut a TCP byte stream into whole messages. ``feed(data)`` returns every message completed so
    far; partial reads are kept, pipelined messages split, CRLF keep-alives (§7.5, RFC 5626 §3.5.1)
    skipped. Content-Length is mandatory on a stream (§18.3, §20.14). A framing error raises
    RemoteProtocolError and the framer stays broken: the connection must be closed."""

    def __init__(self, max_size: int = MAX_SIZE):
        self.max_size = max_size
        self._buffer = bytearray()
        self._error: RemoteProtocolError | None = None

    def feed(self, data: bytes) -> list[bytes]:
        if self._error is not None:
            raise self._error
        self._buffer += data
        try:
            return self._take_messages()
        except RemoteProtocolError as error:
            self._error = error
            raise

    def _take_messages(self) -> list[bytes]:
        buffer = self._buffer
        messages = []
        while True:
            skip = 0
            while buffer.startswith(b"\r\n", skip):
                skip += 2
            if skip:
                del buffer[:skip]
            head_end = buffer.find(b"\r\n\r\n")
            if head_end < 0:
                if len(buffer) > self.max_size:
                    raise _refuse(f"header section exceeds the limit of {self.max_size} bytes", 513)
                return messages
            length = _stream_content_length(bytes(buffer[:head_end]))
            total = head_end + 4 + length
            if total > self.max_size:
                raise _refuse(f"message of {total} bytes exceeds the limit of {self.max_size} bytes", 513)
            if len(buffer) < total:
                return messages
            messages.append(bytes(buffer[:total]))
            del buffer[:total]


def _stream_content_length(head: bytes) -> int:
    """The Content-Length of a header section on a stream, where it is mandatory (§18.3)."""
    found = None
    for line in head.split(b"\r\n")[1:]:
        if line[:1] in (b" ", b"\t"):
            continue  # Content-Length is never folded in practice; a continuation is not a header
        name, colon, value = line.partition(b":")
        if colon and canonical_name(_text(name.rstrip(b" \t"))) == "content-length":
            digits = _text(value).strip(WSP)
            if not digits or any(c not in DIGITS for c in digits):
                raise _refuse(f"Content-Length {show(digits)} is not a number")
            if found is not None and found != int(digits):
                raise _refuse("message has more than one Content-Length header")
            found = int(digits)
    if found is None:
        raise _refuse("Content-Length is mandatory on a stream transport")
    return found


# ---------------------------------------------------------------------------------------------------
# Building messages


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def build_response(request: Message, status: int, reason: str | None = None, *, to_tag: str | None = None,
                   headers: Iterable[tuple[str, str]] = (), body: bytes = b"") -> bytes:
    """A response to ``request`` (RFC 3261 §8.2.6): Via (every one, in order), From, To (with
    ``;tag=to_tag`` added when the request's To has no tag, §8.2.6.2), Call-ID and CSeq copied,
    then ``headers`` and Content-Length."""
    if reason is None:
        reason = REASON_PHRASES.get(status, "Unknown")
    to = request.to
    if to_tag is not None and request.to_tag is None:
        to = f"{to};tag={to_tag}"
    out = [f"SIP/2.0 {status} {reason}"]
    out += [f"Via: {value}" for name, value in request.headers() if canonical_name(name) == "via"]
    out += [f"From: {request.from_}", f"To: {to}", f"Call-ID: {request.call_id}",
            f"CSeq: {request.cseq} {request.cseq_method}"]
    for name, value in headers:
        _check_header_line(name, value)
        out.append(f"{name}: {value}")
    out.append(f"Content-Length: {len(body)}\r\n\r\n")
    return _encode("\r\n".join(out)) + bytes(body)


def build_request(method: str, uri: str, headers: Iterable[tuple[str, str]], body: bytes = b"") -> bytes:
    """A request from its parts (§8.1.1); Content-Length is computed from ``body`` (one given in
    ``headers`` is refused)."""
    out = [f"{method} {uri} SIP/2.0"]
    for name, value in headers:
        _check_header_line(name, value)
        if canonical_name(name) == "content-length":
            raise LocalProtocolError("Content-Length follows the body: do not pass it in headers")
        out.append(f"{name}: {value}")
    out.append(f"Content-Length: {len(body)}\r\n\r\n")
    return _encode("\r\n".join(out)) + bytes(body)


def reply_for_malformed(data: bytes, error: ProtocolError) -> bytes | None:
    """The response to a datagram that failed to parse (RFC 3261 §8.2.1-§8.2.6, RFC 4475 §3.1.2):
    ``error.status`` with ``error.reason`` as the Reason-Phrase, addressed with the Via, From, To,
    Call-ID and CSeq lines lifted leniently from the text. None for a response (§18.1.2: responses
    are never answered) or when one of those headers cannot be found."""
    lines = _lenient_header_lines(data)
    if not lines or lines[0][:4].upper() == "SIP/":
        return None
    vias: list[str] = []
    found: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon:
            continue
        canonical = canonical_name(name.strip(WSP))
        value = value.strip(WSP)
        if canonical == "via":
            vias.append(value)
        elif canonical in ("from", "to", "call-id", "cseq"):
            found.setdefault(canonical, value)
    if not vias or len(found) < 4:
        return None
    to = found["to"]
    try:
        has_tag = "tag" in scan_name_addr(to, 0, in_list=False)[2]
    except GrammarError:
        has_tag = ";tag=" in to.lower().replace(" ", "")  # the To is broken: a best guess will do
    if not has_tag:
        # §8.2.6.2: a To tag on every final response; derived from the datagram so that a
        # retransmission gets the same one.
        to = f"{to};tag={hashlib.sha1(data).hexdigest()[:16]}"
    status = error.status if 400 <= error.status <= 699 else 400
    reason = "".join(c if c in REASON_SAFE else "?" for c in error.reason) or REASON_PHRASES.get(status, "Bad Request")
    out = [f"SIP/2.0 {status} {reason}"]
    out += [f"Via: {via}" for via in vias]
    out += [f"From: {found['from']}", f"To: {to}", f"Call-ID: {found['call-id']}", f"CSeq: {found['cseq']}",
            "Content-Length: 0\r\n\r\n"]
    return _encode("\r\n".join(out))


def _lenient_header_lines(data: bytes) -> list[str]:
    """The start line and unfolded header lines of a message that may be malformed: lines end at
    LF (with or without CR), the header section at the first empty line or the end of the data."""
    text = _text(data).lstrip("\r\n")
    lines: list[str] = []
    for line in text.split("\n"):
        line = line.rstrip("\r")
        if not line:
            break
        if line[:1] in (" ", "\t") and lines:
            lines[-1] += line
        else:
            lines.append(line)
    return lines
