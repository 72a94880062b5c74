"""The SIP message scanner in Cython: RFC 3261 §7 (message format), §18.3 (framing), §20 (the header
fields checked on arrival), §25 (grammar), over the receive buffer without copies.

The rules, the reasons and every answer are those of ``core/sip/_pysip.py``, the readable twin; this
file re-writes its grammar as C loops over a ``const unsigned char *``. Kamailio's parser is the
model: a message is (offset, length) spans into the datagram; the header table records every line;
Via, From, To, Call-ID, CSeq, Contact, Max-Forwards, Content-Length, Route and Record-Route have a
first-occurrence slot; Python text is made only when asked for (a proxy that reads the branch, the
Call-ID and Max-Forwards pays for three small strings); everything else is parsed on demand.
"""

cimport cython
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.string cimport memchr, memcmp, memcpy

from core.errors import LocalProtocolError, RemoteProtocolError
from core.sip.uri import Via, is_sip_date, show

# The twin's tables and the parts that are not on the per-packet path are shared, not copied.
from core.sip._pysip import (
    COMPACT,
    LIST_HEADERS,
    LONG_TO_COMPACT,
    MAX_SIZE,
    REASON_PHRASES,
    canonical_name,
    reply_for_malformed,
    show_number,
)

__all__ = ["Message", "StreamFramer", "Via", "build_request", "build_response", "parse",
           "reply_for_malformed", "canonical_name"]

# --- character classes (RFC 3261 §25.1), filled at import ------------------------------------------

cdef unsigned char TOKEN[256]
cdef unsigned char HOSTC[256]
cdef unsigned char SCHEMEC[256]
cdef unsigned char HEXC[256]
cdef unsigned char PARAM_STOP[256]  # ends a parameter value
cdef unsigned char LWS[256]         # SP, HTAB, and the CR LF of a fold
cdef unsigned char LOWER[256]       # ASCII lower-casing

cdef void _fill(unsigned char *table, str chars):
    cdef Py_ssize_t k
    for k in range(256):
        table[k] = 0
    for ch in chars.encode("ascii"):
        table[<unsigned char>ch] = 1

_ALPHA = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_fill(TOKEN, _ALPHA + "0123456789-.!%*_+`'~")
_fill(HOSTC, _ALPHA + "0123456789-._")
_fill(SCHEMEC, _ALPHA + "0123456789+-.")
_fill(HEXC, "0123456789abcdefABCDEF")
_fill(PARAM_STOP, " \t;,\"\r\n")
_fill(LWS, " \t\r\n")
for _k in range(256):
    LOWER[_k] = _k + 32 if 65 <= _k <= 90 else _k

# Problems a scanner reports (ScanError.code); _problem() words them as the twin does.
cdef enum:
    E_NONE = 0
    E_UNTERMINATED_QUOTE
    E_UNTERMINATED_IPV6
    E_BAD_IPV6
    E_NO_HOST
    E_BAD_PORT
    E_UNEXPECTED
    E_EMPTY_PARAM
    E_PARAM_NO_VALUE
    E_EMPTY_VALUE
    E_SENT_PROTOCOL
    E_PROTOCOL
    E_NO_SENT_BY
    E_DISPLAY_FOLLOW
    E_URI_HEADERS
    E_URI_NO_SCHEME
    E_DISPLAY_TOKENS
    E_NO_ANGLE_URI
    E_WS_IN_ANGLE
    E_UNCLOSED_ANGLE

_DISPLAY = ["", "Via", "From", "To", "Call-ID", "CSeq", "Contact", "Max-Forwards", "Content-Length",
            "Route", "Record-Route", "Date"]


# --- scanners: (buffer, position, end) -> new position, or -1 with ScanError filled ----------------

cdef inline Py_ssize_t skip_ws(const unsigned char *b, Py_ssize_t i, Py_ssize_t n) noexcept nogil:
    while i < n and LWS[b[i]]:
        i += 1
    return i

cdef inline Py_ssize_t scan_token(const unsigned char *b, Py_ssize_t i, Py_ssize_t n) noexcept nogil:
    while i < n and TOKEN[b[i]]:
        i += 1
    return i

cdef inline bint lower_eq(const unsigned char *p, const char *lit, Py_ssize_t n) noexcept nogil:
    # Does p[:n], ASCII-lower-cased, equal the lower-case literal?
    cdef Py_ssize_t k
    for k in range(n):
        if LOWER[p[k]] != <unsigned char>lit[k]:
            return False
    return True

cdef inline Py_ssize_t fail(ScanError *e, int code, Py_ssize_t a0, Py_ssize_t a1) noexcept nogil:
    e.code = code
    e.a0 = a0
    e.a1 = a1
    return -1

cdef Py_ssize_t scan_quoted(const unsigned char *b, Py_ssize_t i, Py_ssize_t n, ScanError *e) noexcept nogil:
    i += 1
    while i < n:
        if b[i] == 34:  # '"'
            return i + 1
        i += 2 if b[i] == 92 else 1  # a backslash escapes the next octet
    return fail(e, E_UNTERMINATED_QUOTE, 0, 0)

cdef bint is_ipv4(const unsigned char *b, Py_ssize_t s, Py_ssize_t t) noexcept nogil:
    cdef int parts = 0, digits = 0, value = 0
    cdef Py_ssize_t k
    for k in range(s, t + 1):
        if k == t or b[k] == 46:  # end or '.'
            if digits == 0 or value > 255:
                return False
            parts += 1
            digits = 0
            value = 0
        elif 48 <= b[k] <= 57:
            digits += 1
            if digits > 3:
                return False
            value = value * 10 + (b[k] - 48)
        else:
            return False
    return parts == 4

cdef int ipv6_groups(const unsigned char *b, Py_ssize_t s, Py_ssize_t t, bint is_tail) noexcept nogil:
    # Width (in 16-bit groups) of "g:g:...:g" over [s, t), -1 if malformed; an IPv4 address may end
    # the tail.
    cdef int width = 0
    cdef Py_ssize_t g = s, k
    cdef bint dotted
    while True:
        k = g
        dotted = False
        while k < t and b[k] != 58:
            if b[k] == 46:
                dotted = True
            k += 1
        if dotted:
            if k != t or not is_tail or not is_ipv4(b, g, k):
                return -1
            width += 2
        else:
            if k - g < 1 or k - g > 4:
                return -1
            while g < k:
                if not HEXC[b[g]]:
                    return -1
                g += 1
            width += 1
        if k == t:
            return width
        g = k + 1

cdef bint is_ipv6(const unsigned char *b, Py_ssize_t s, Py_ssize_t t) noexcept nogil:
    # The twin's is_ipv6 (RFC 3261 §25.1 as corrected by RFC 5954 §4.1).
    cdef Py_ssize_t k = s, double = -1
    cdef int count = 0, head = 0, tail = 0
    while k + 1 < t:
        if b[k] == 58 and b[k + 1] == 58:
            count += 1
            if double < 0:
                double = k
            k += 2
        else:
            k += 1
    if count > 1:
        return False
    if count == 0:
        return ipv6_groups(b, s, t, True) == 8
    if double > s:
        head = ipv6_groups(b, s, double, False)
        if head < 0:
            return False
    if double + 2 < t:
        tail = ipv6_groups(b, double + 2, t, True)
        if tail < 0:
            return False
    return head + tail <= 7

cdef Py_ssize_t scan_host(const unsigned char *b, Py_ssize_t i, Py_ssize_t n, Span *host,
                          ScanError *e) noexcept nogil:
    cdef const unsigned char *close
    cdef Py_ssize_t j
    if i < n and b[i] == 91:  # '['
        close = <const unsigned char *>memchr(b + i, 93, n - i)
        if close == NULL:
            return fail(e, E_UNTERMINATED_IPV6, 0, 0)
        j = close - b
        if not is_ipv6(b, i + 1, j):
            return fail(e, E_BAD_IPV6, i + 1, j)
        host.start = i + 1
        host.end = j
        return j + 1
    j = i
    while j < n and HOSTC[b[j]]:
        j += 1
    if j == i:
        return fail(e, E_NO_HOST, 0, 0)
    host.start = i
    host.end = j
    return j

cdef Py_ssize_t scan_port(const unsigned char *b, Py_ssize_t i, Py_ssize_t n, int *port,
                          ScanError *e) noexcept nogil:
    cdef Py_ssize_t j = i, end
    cdef long value = 0
    while j < n and 48 <= b[j] <= 57:
        if j - i < 6:
            value = value * 10 + (b[j] - 48)
        j += 1
    if j == i or j - i > 5 or value > 65535:
        end = j
        while end < n and not (LWS[b[end]] or b[end] == 59 or b[end] == 44 or b[end] == 63 or b[end] == 62):
            end += 1
        return fail(e, E_BAD_PORT, i, end)
    port[0] = <int>value
    return j

cdef Py_ssize_t scan_params(const unsigned char *b, Py_ssize_t i, Py_ssize_t n, bint in_list,
                            const char *wanted, Py_ssize_t wanted_len, Span *found, bint *seen,
                            ScanError *e) noexcept nogil:
    # *( SEMI generic-param ); records the first parameter named ``wanted`` (its value span, start
    # -1 for a flag). Stops at the end or, in a list, at ",".
    cdef Py_ssize_t j, name_start, name_end, value_start, value_end
    seen[0] = False
    while True:
        i = skip_ws(b, i, n)
        if i == n or (in_list and b[i] == 44):
            return i
        if b[i] != 59:
            return fail(e, E_UNEXPECTED, i, n)
        i = skip_ws(b, i + 1, n)
        j = scan_token(b, i, n)
        if j == i:
            return fail(e, E_EMPTY_PARAM, 0, 0)
        name_start = i
        name_end = j
        i = skip_ws(b, j, n)
        value_start = -1
        value_end = -1
        if i < n and b[i] == 61:  # '='
            i = skip_ws(b, i + 1, n)
            if i < n and b[i] == 34:
                j = scan_quoted(b, i, n, e)
                if j < 0:
                    return -1
            else:
                j = i
                while j < n and not PARAM_STOP[b[j]]:
                    j += 1
            if j == i:
                return fail(e, E_PARAM_NO_VALUE, name_start, name_end)
            value_start = i
            value_end = j
            i = j
        if (not seen[0] and wanted_len and name_end - name_start == wanted_len
                and lower_eq(b + name_start, wanted, wanted_len)):
            seen[0] = True
            found.start = value_start
            found.end = value_end

cdef Py_ssize_t scan_via(const unsigned char *b, Py_ssize_t i, Py_ssize_t n, ViaSpans *via,
                         ScanError *e) noexcept nogil:
    # via-parm = sent-protocol LWS sent-by *( SEMI via-params ) (RFC 3261 §20.42)
    cdef Py_ssize_t j = 0, k
    cdef Py_ssize_t part_start[3]
    cdef Py_ssize_t part_end[3]
    cdef int index
    i = skip_ws(b, i, n)
    if i == n or b[i] == 44:
        return fail(e, E_EMPTY_VALUE, 0, 0)
    for index in range(3):
        j = scan_token(b, i, n)
        if j == i:
            return fail(e, E_SENT_PROTOCOL, 0, 0)
        part_start[index] = i
        part_end[index] = j
        i = skip_ws(b, j, n)
        if index < 2:
            if i == n or b[i] != 47:
                return fail(e, E_SENT_PROTOCOL, 0, 0)
            i = skip_ws(b, i + 1, n)
    if not (part_end[0] - part_start[0] == 3 and lower_eq(b + part_start[0], "sip", 3)
            and part_end[1] - part_start[1] == 3 and memcmp(b + part_start[1], b"2.0", 3) == 0):
        e.b0 = part_start[1]
        e.b1 = part_end[1]
        return fail(e, E_PROTOCOL, part_start[0], part_end[0])
    via.transport.start = part_start[2]
    via.transport.end = part_end[2]
    if i == j or i == n or b[i] == 59 or b[i] == 44:
        return fail(e, E_NO_SENT_BY, 0, 0)
    i = scan_host(b, i, n, &via.host, e)
    if i < 0:
        return -1
    via.port = -1
    k = skip_ws(b, i, n)
    if k < n and b[k] == 58:
        k = skip_ws(b, k + 1, n)
        i = scan_port(b, k, n, &via.port, e)
        if i < 0:
            return -1
    if i < n and not (LWS[b[i]] or b[i] == 59 or b[i] == 44):
        return fail(e, E_UNEXPECTED, i, n)
    via.params.start = i
    i = scan_params(b, i, n, True, "branch", 6, &via.branch, &via.has_branch, e)
    via.params.end = i
    return i

cdef inline bint is_scheme(const unsigned char *b, Py_ssize_t s, Py_ssize_t t) noexcept nogil:
    cdef Py_ssize_t k
    if t <= s or not ((65 <= b[s] <= 90) or (97 <= b[s] <= 122)):
        return False
    for k in range(s, t):
        if not SCHEMEC[b[k]]:
            return False
    return True

cdef Py_ssize_t scan_name_addr(const unsigned char *b, Py_ssize_t i, Py_ssize_t n, bint in_list,
                               Span *tag, bint *has_tag, ScanError *e) noexcept nogil:
    # ( name-addr / addr-spec ) *( SEMI param ), the twin's scan_name_addr.
    cdef Py_ssize_t j, k, colon
    i = skip_ws(b, i, n)
    if i == n or (in_list and b[i] == 44):
        return fail(e, E_EMPTY_VALUE, 0, 0)
    if b[i] == 34:
        j = scan_quoted(b, i, n, e)
        if j < 0:
            return -1
        i = skip_ws(b, j, n)
        if i == n or b[i] != 60:
            return fail(e, E_DISPLAY_FOLLOW, 0, 0)
    elif b[i] != 60:
        j = scan_token(b, i, n)
        if j > i and j < n and b[j] == 58:
            k = j
            while k < n and not (LWS[b[k]] or b[k] == 59 or (in_list and b[k] == 44)):
                k += 1
            if memchr(b + i, 63, k - i) != NULL:
                return fail(e, E_URI_HEADERS, 0, 0)
            if not is_scheme(b, i, j):
                return fail(e, E_URI_NO_SCHEME, i, k)
            return scan_params(b, k, n, in_list, "tag", 3, tag, has_tag, e)
        while True:
            if j == i:
                return fail(e, E_DISPLAY_TOKENS, 0, 0)
            k = skip_ws(b, j, n)
            if k < n and b[k] == 60:
                i = k
                break
            if k == n:
                return fail(e, E_NO_ANGLE_URI, 0, 0)
            i = k
            j = scan_token(b, i, n)
    j = i + 1
    while j < n and b[j] != 62:
        if LWS[b[j]]:
            return fail(e, E_WS_IN_ANGLE, 0, 0)
        j += 1
    if j == n:
        return fail(e, E_UNCLOSED_ANGLE, 0, 0)
    colon = i + 1
    while colon < j and b[colon] != 58:
        colon += 1
    if colon == j or colon == i + 1 or not is_scheme(b, i + 1, colon):
        return fail(e, E_URI_NO_SCHEME, i + 1, j)
    return scan_params(b, j + 1, n, in_list, "tag", 3, tag, has_tag, e)

cdef Py_ssize_t find_line_end(const unsigned char *b, Py_ssize_t i, Py_ssize_t n) noexcept nogil:
    # The CR of the first CRLF at or after i; -2 when a bare CR or LF comes first; -1 if none.
    cdef const unsigned char *cr = <const unsigned char *>memchr(b + i, 13, n - i)
    cdef Py_ssize_t at
    if cr == NULL:
        return -1
    at = cr - b
    if memchr(b + i, 10, at - i) != NULL:
        return -2
    if at + 1 >= n or b[at + 1] != 10:
        return -2
    return at

cdef Py_ssize_t find_head_end(const unsigned char *b, Py_ssize_t i, Py_ssize_t n) noexcept nogil:
    # The first CRLF CRLF at or after i, or -1.
    cdef const unsigned char *cr
    while i + 3 < n:
        cr = <const unsigned char *>memchr(b + i, 13, n - 3 - i)
        if cr == NULL:
            return -1
        i = cr - b
        if b[i + 1] == 10 and b[i + 2] == 13 and b[i + 3] == 10:
            return i
        i += 1
    return -1

cdef int header_kind(const unsigned char *p, Py_ssize_t n) noexcept nogil:
    cdef unsigned char c = LOWER[p[0]]
    if n == 1:
        if c == b"v": return H_VIA
        if c == b"f": return H_FROM
        if c == b"t": return H_TO
        if c == b"i": return H_CALL_ID
        if c == b"m": return H_CONTACT
        if c == b"l": return H_CONTENT_LENGTH
    elif n == 2:
        if lower_eq(p, "to", 2): return H_TO
    elif n == 3:
        if lower_eq(p, "via", 3): return H_VIA
    elif n == 4:
        if lower_eq(p, "from", 4): return H_FROM
        if lower_eq(p, "cseq", 4): return H_CSEQ
        if lower_eq(p, "date", 4): return H_DATE
    elif n == 5:
        if lower_eq(p, "route", 5): return H_ROUTE
    elif n == 7:
        if lower_eq(p, "call-id", 7): return H_CALL_ID
        if lower_eq(p, "contact", 7): return H_CONTACT
    elif n == 12:
        if lower_eq(p, "max-forwards", 12): return H_MAX_FORWARDS
        if lower_eq(p, "record-route", 12): return H_RECORD_ROUTE
    elif n == 14:
        if lower_eq(p, "content-length", 14): return H_CONTENT_LENGTH
    return H_OTHER

_KIND_OF = {"via": H_VIA, "from": H_FROM, "to": H_TO, "call-id": H_CALL_ID, "cseq": H_CSEQ,
            "contact": H_CONTACT, "max-forwards": H_MAX_FORWARDS, "content-length": H_CONTENT_LENGTH,
            "route": H_ROUTE, "record-route": H_RECORD_ROUTE, "date": H_DATE}
cdef dict _REASONS = REASON_PHRASES  # a response's default reason phrase, looked up per response


# --- text ------------------------------------------------------------------------------------------

cdef str decode(const unsigned char *b, Py_ssize_t start, Py_ssize_t end):
    # UTF-8 with surrogateescape (any octet survives); a folded value loses its CRLFs (RFC 5322 §2.2.3).
    cdef bytes unfolded
    if start >= end:
        return ""
    if memchr(b + start, 13, end - start) == NULL:
        return PyUnicode_DecodeUTF8(<const char *>b + start, end - start, "surrogateescape")
    unfolded = (<const char *>b)[start:end].replace(b"\r\n", b"")
    return unfolded.decode("utf-8", "surrogateescape")


cdef refuse(str reason, int status=400):
    return RemoteProtocolError(reason, status)


cdef str problem(const unsigned char *b, ScanError *e):
    """The twin's GrammarError wording for ``e``."""
    cdef int code = e.code
    if code == E_UNTERMINATED_QUOTE: return "has an unterminated quoted string"
    if code == E_UNTERMINATED_IPV6: return "has an unterminated IPv6 reference"
    if code == E_BAD_IPV6: return f"has an invalid IPv6 reference {show(decode(b, e.a0, e.a1))}"
    if code == E_NO_HOST: return "has no host"
    if code == E_BAD_PORT: return f"has an invalid port {show(decode(b, e.a0, e.a1))}"
    if code == E_UNEXPECTED: return f"has unexpected text {show(decode(b, e.a0, e.a1))}"
    if code == E_EMPTY_PARAM: return "has an empty parameter"
    if code == E_PARAM_NO_VALUE: return f"parameter {show(decode(b, e.a0, e.a1).lower())} has no value"
    if code == E_EMPTY_VALUE: return "has an empty value"
    if code == E_SENT_PROTOCOL: return "has a malformed sent-protocol"
    if code == E_PROTOCOL:
        return f"protocol {show(decode(b, e.a0, e.a1) + '/' + decode(b, e.b0, e.b1))} is not SIP/2.0"
    if code == E_NO_SENT_BY: return "has no sent-by host"
    if code == E_DISPLAY_FOLLOW: return "display name is not followed by an angle-bracketed URI"
    if code == E_URI_HEADERS: return "URI with headers must be enclosed in angle brackets"
    if code == E_URI_NO_SCHEME: return f"URI {show(decode(b, e.a0, e.a1))} has no scheme"
    if code == E_DISPLAY_TOKENS: return "display name must be a quoted string or tokens"
    if code == E_NO_ANGLE_URI: return "has no angle-bracketed URI"
    if code == E_WS_IN_ANGLE: return "has whitespace inside the angle brackets"
    if code == E_UNCLOSED_ANGLE: return "has an unclosed angle bracket"
    return "is malformed"


cdef inline bint all_digits(const unsigned char *b, Py_ssize_t s, Py_ssize_t t) noexcept nogil:
    cdef Py_ssize_t k
    if t <= s:
        return False
    for k in range(s, t):
        if not (48 <= b[k] <= 57):
            return False
    return True

cdef inline int significant_digits(const unsigned char *b, Py_ssize_t s, Py_ssize_t t,
                                   unsigned long long *value) noexcept nogil:
    # How many digits follow the leading zeros; their value when there are at most 19 of them.
    cdef unsigned long long v = 0
    cdef Py_ssize_t k
    while s < t and b[s] == 48:
        s += 1
    if t - s <= 19:
        for k in range(s, t):
            v = v * 10 + (b[k] - 48)
    value[0] = v
    return <int>(t - s)


cdef int check_version(const unsigned char *b, Py_ssize_t s, Py_ssize_t t, str where) except -1:
    # The twin's _check_version: "SIP" "/" 1*DIGIT "." 1*DIGIT, then only 2.0 (else 505).
    cdef Py_ssize_t slash = s, dot
    while slash < t and b[slash] != 47:
        slash += 1
    dot = slash + 1
    while dot < t and b[dot] != 46:
        dot += 1
    if (slash - s != 3 or not lower_eq(b + s, "sip", 3) or slash >= t or dot >= t
            or not all_digits(b, slash + 1, dot) or not all_digits(b, dot + 1, t)):
        raise refuse(f"{where} has a malformed SIP version {show(decode(b, s, t))}")
    if dot - slash != 2 or b[slash + 1] != 50 or t - dot != 2 or b[dot + 1] != 48:
        raise refuse(f"SIP version {show(decode(b, s, t))} is not supported", 505)
    return 0


cdef int check_request_uri(const unsigned char *b, Py_ssize_t s, Py_ssize_t t) except -1:
    # The twin's uri.check_request_uri.
    cdef Py_ssize_t colon = s, at, i, end
    cdef const unsigned char *found
    cdef Span host
    cdef ScanError e
    cdef int port
    if t > s and b[s] == 60:
        raise refuse("Request-URI must not be enclosed in angle brackets")
    while colon < t and b[colon] != 58:
        colon += 1
    if colon == t or colon == s or not is_scheme(b, s, colon):
        raise refuse(f"Request-URI {show(decode(b, s, t))} has no scheme")
    if not ((colon - s == 3 and lower_eq(b + s, "sip", 3)) or (colon - s == 4 and lower_eq(b + s, "sips", 4))):
        return 0
    i = colon + 1
    found = <const unsigned char *>memchr(b + i, 64, t - i)
    if found != NULL:
        at = found - b
        if memchr(b + at + 1, 64, t - at - 1) != NULL:
            raise refuse("Request-URI has more than one unescaped @")
        if at == i:
            raise refuse("Request-URI has an empty user part")
        i = at + 1
    i = scan_host(b, i, t, &host, &e)
    if i >= 0 and i < t and b[i] == 58:
        end = i + 1
        while end < t and b[end] != 59 and b[end] != 63:
            end += 1
        if memchr(b + i + 1, 58, end - i - 1) != NULL:
            raise refuse("Request-URI has an IPv6 address outside brackets")
        i = scan_port(b, i + 1, t, &port, &e)
    if i < 0:
        raise refuse("Request-URI " + problem(b, &e))
    if i < t and b[i] != 59 and b[i] != 63:
        raise refuse(f"Request-URI has unexpected text {show(decode(b, i, t))} after the host")
    if memchr(b + i, 63, t - i) != NULL:
        raise refuse("Request-URI must not carry headers")
    return 0


# --- the message -----------------------------------------------------------------------------------

@cython.freelist(64)
@cython.final
@cython.no_gc
cdef class Message:
    """A parsed SIP message (read-only); the face is in docs/internals.md."""

    def __cinit__(self):
        self._lines = self._small
        self._capacity = SMALL_TABLE
        self._count = 0

    def __dealloc__(self):
        if self._lines != self._small:
            PyMem_Free(self._lines)

    cdef HeaderLine *_add_line(self) except NULL:
        cdef HeaderLine *grown
        if self._count == self._capacity:
            grown = <HeaderLine *>PyMem_Malloc(2 * self._capacity * sizeof(HeaderLine))
            if grown == NULL:
                raise MemoryError()
            memcpy(grown, self._lines, self._count * sizeof(HeaderLine))
            if self._lines != self._small:
                PyMem_Free(self._lines)
            self._lines = grown
            self._capacity *= 2
        self._count += 1
        return &self._lines[self._count - 1]

    cdef int _scan(self, bytes data, Py_ssize_t max_size) except -1:
        cdef const unsigned char *b = <const unsigned char *>PyBytes_AS_STRING(data)
        cdef Py_ssize_t n = PyBytes_GET_SIZE(data), start = 0, head_end, pos, first_end, end, colon
        cdef Py_ssize_t name_end, value_start, value_end, body_start, available, k
        cdef HeaderLine *line
        cdef unsigned long long length = 0
        cdef int kind, digits
        self._data = data
        self._buf = b
        self.max_forwards = -1
        self._from_tag.start = self._to_tag.start = -1
        if n > max_size or n > 0x7FFFFFFF:
            raise refuse(f"message of {n} bytes exceeds the limit of {max_size} bytes", 513)
        # §7.5: CRLFs before the start-line are ignored.
        while start + 1 < n and b[start] == 13 and b[start + 1] == 10:
            start += 2
        if start == n:
            raise refuse("empty message")
        head_end = find_head_end(b, start, n)
        if head_end < 0:
            raise refuse("header section is not terminated by an empty line")
        self._start = start
        self._head_end = head_end
        self._line_end = find_line_end(b, start, n)
        if self._line_end < 0:
            raise refuse("bare CR or LF in the header section")
        self._scan_start_line()
        for k in range(H_KINDS):
            self._first[k] = -1
        pos = self._line_end + 2
        while pos < head_end + 2:
            if b[pos] == 32 or b[pos] == 9:
                raise refuse("start line is folded")
            first_end = find_line_end(b, pos, n)
            if first_end < 0:
                raise refuse("bare CR or LF in the header section")
            end = first_end
            while b[end + 2] == 32 or b[end + 2] == 9:
                end = find_line_end(b, end + 2, n)
                if end < 0:
                    raise refuse("bare CR or LF in the header section")
            colon = pos
            while colon < first_end and b[colon] != 58:
                colon += 1
            if colon == first_end:
                raise refuse(f"header line {show(decode(b, pos, first_end))} has no colon")
            name_end = colon
            while name_end > pos and (b[name_end - 1] == 32 or b[name_end - 1] == 9):
                name_end -= 1
            if name_end == pos:
                raise refuse(f"header line {show(decode(b, pos, first_end))} has an empty name")
            for k in range(pos, name_end):
                if not TOKEN[b[k]]:
                    raise refuse(f"header name {show(decode(b, pos, name_end))} is not a token")
            value_start = skip_ws(b, colon + 1, end)
            value_end = end
            while value_end > value_start and LWS[b[value_end - 1]]:
                value_end -= 1
            line = self._add_line()
            line.start = <int>pos
            line.name_end = <int>name_end
            line.value_start = <int>value_start
            line.value_end = <int>value_end
            line.end = <int>end
            line.kind = header_kind(b + pos, name_end - pos)
            line.folded = end != first_end
            if line.kind != H_OTHER:
                self._check_header(line)
            pos = end + 2

        missing = []
        for kind in (H_VIA, H_FROM, H_TO, H_CALL_ID, H_CSEQ):  # §8.1.1
            if self._first[kind] < 0:
                missing.append(_DISPLAY[kind])
        if missing:
            raise refuse("message lacks required header(s) " + ", ".join(missing))

        # §18.3: the body is Content-Length bytes; without one, the rest of the datagram.
        body_start = head_end + 4
        available = n - body_start
        if self._first[H_CONTENT_LENGTH] >= 0:
            line = &self._lines[self._first[H_CONTENT_LENGTH]]
            digits = significant_digits(b, line.value_start, line.value_end, &length)
            if digits > 10 or length > <unsigned long long>available:
                raise refuse(f"Content-Length {show_number(decode(b, line.value_start, line.value_end))} "
                             f"exceeds the {available} bytes of body")
            self.content_length = <Py_ssize_t>length
        else:
            self.content_length = available
        self._body_start = body_start
        self._body_end = body_start + self.content_length
        return 0

    cdef int _scan_start_line(self) except -1:
        cdef const unsigned char *b = self._buf
        cdef Py_ssize_t s = self._start, t = self._line_end, k, sp1, sp2, spaces = 0
        cdef Py_ssize_t code
        if t - s >= 4 and lower_eq(b + s, "sip", 3) and b[s + 3] == 47:
            # Status-Line = SIP-Version SP Status-Code SP Reason-Phrase (§7.2)
            self.is_request = False
            sp1 = s
            while sp1 < t and b[sp1] != 32:
                sp1 += 1
            check_version(b, s, sp1, "Status-Line")
            code = sp1 + 1 if sp1 < t else t
            sp2 = code
            while sp2 < t and b[sp2] != 32:
                sp2 += 1
            if sp2 - code != 3 or not all_digits(b, code, sp2):
                raise refuse(f"status code {show(decode(b, code, sp2))} is not three digits")
            self.status = (b[code] - 48) * 100 + (b[code + 1] - 48) * 10 + (b[code + 2] - 48)
            if not 100 <= self.status <= 699:
                raise refuse(f"status code {decode(b, code, sp2)} is out of the range 100-699")
            self._reason.start = sp2 + 1 if sp2 < t else t
            self._reason.end = t
            self._method.start = self._method.end = self._uri.start = self._uri.end = s
            return 0
        # Request-Line = Method SP Request-URI SP SIP-Version (§7.1)
        self.is_request = True
        self.status = 0
        self._reason.start = self._reason.end = s
        if t > s and (b[t - 1] == 32 or b[t - 1] == 9):
            raise refuse("Request-Line has trailing whitespace")
        for k in range(s, t):
            if b[k] == 9 or (b[k] == 32 and k + 1 < t and b[k + 1] == 32):
                raise refuse("Request-Line elements must be separated by single spaces")
            if b[k] == 32:
                spaces += 1
                if spaces == 1:
                    sp1 = k
                elif spaces == 2:
                    sp2 = k
        if spaces == 0:
            raise refuse("Request-Line has no Request-URI")
        if spaces == 1:
            raise refuse("Request-Line has no SIP version")
        if spaces > 2:
            raise refuse("Request-URI contains whitespace")
        check_version(b, sp2 + 1, t, "Request-Line")
        if sp1 == s or scan_token(b, s, sp1) != sp1:
            raise refuse(f"method {show(decode(b, s, sp1))} is not a token")
        check_request_uri(b, sp1 + 1, sp2)
        self._method.start = s
        self._method.end = sp1
        self._uri.start = sp1 + 1
        self._uri.end = sp2
        return 0

    cdef int _check_header(self, HeaderLine *line) except -1:
        # The twin's _check_header, for one header of the first-occurrence set, as it comes.
        cdef const unsigned char *b = self._buf
        cdef int kind = line.kind
        cdef Py_ssize_t s = line.value_start, t = line.value_end, i, j, k, m
        cdef ScanError e
        cdef ViaSpans via
        cdef Span tag
        cdef bint has_tag
        cdef unsigned long long number = 0
        cdef int index = <int>(line - self._lines)
        if (kind == H_FROM or kind == H_TO or kind == H_CALL_ID or kind == H_CSEQ
                or kind == H_MAX_FORWARDS or kind == H_CONTENT_LENGTH) and self._first[kind] >= 0:
            raise refuse(f"message has more than one {_DISPLAY[kind]} header")
        e.code = E_NONE
        if kind == H_VIA:
            i = s
            while True:
                i = scan_via(b, i, t, &via, &e)
                if i < 0:
                    break
                if self._first[H_VIA] < 0:
                    self._top_via = via
                    self._first[H_VIA] = index
                if i == t:
                    break
                i += 1
        elif kind == H_FROM or kind == H_TO:
            tag.start = tag.end = -1
            i = scan_name_addr(b, s, t, False, &tag, &has_tag, &e)
            if i >= 0 and has_tag:
                if kind == H_FROM:
                    self._from_tag = tag
                else:
                    self._to_tag = tag
        elif kind == H_CONTACT:
            if not (t - s == 1 and b[s] == 42):  # "*"
                i = s
                while True:
                    i = scan_name_addr(b, i, t, True, &tag, &has_tag, &e)
                    if i < 0 or i == t:
                        break
                    i += 1
        elif kind == H_CALL_ID:
            # callid = word [ "@" word ] (§25.1): not empty, no whitespace.
            if s == t:
                raise refuse("Call-ID is empty")
            for k in range(s, t):
                if LWS[b[k]]:
                    raise refuse("Call-ID contains whitespace")
        elif kind == H_CSEQ:
            # CSeq = 1*DIGIT LWS Method (§20.16), 32-bit, the Request-Line's method (§8.1.1.5)
            j = s
            while j < t and 48 <= b[j] <= 57:
                j += 1
            k = skip_ws(b, j, t)
            m = scan_token(b, k, t)
            if j == s or k == j or m == k or m != t:
                raise refuse(f"CSeq {show(decode(b, s, t))} is not a number and a method")
            if significant_digits(b, s, j, &number) > 10 or number > 0xFFFFFFFF:
                raise refuse(f"CSeq number {show_number(decode(b, s, j))} exceeds 2**32-1")
            if self.is_request and (m - k != self._method.end - self._method.start
                                    or memcmp(b + k, b + self._method.start, m - k) != 0):
                raise refuse(f"CSeq method {show(decode(b, k, m))} does not match the Request-Line "
                             f"method {show(decode(b, self._method.start, self._method.end))}")
            self.cseq = <long long>number
            self._cseq_method.start = k
            self._cseq_method.end = m
        elif kind == H_MAX_FORWARDS:
            # Max-Forwards = 1*DIGIT, 0-255 (§20.22)
            if not all_digits(b, s, t):
                raise refuse(f"Max-Forwards {show(decode(b, s, t))} is not a number")
            if significant_digits(b, s, t, &number) > 3 or number > 255:
                raise refuse(f"Max-Forwards {show_number(decode(b, s, t))} exceeds 255")
            self.max_forwards = <int>number
        elif kind == H_CONTENT_LENGTH:
            # Content-Length = 1*DIGIT (§20.14); checked against the body once the headers are read.
            if not all_digits(b, s, t):
                raise refuse(f"Content-Length {show(decode(b, s, t))} is not a number")
        elif kind == H_DATE:
            text = decode(b, s, t)
            if not is_sip_date(text):
                raise refuse(f"Date {show(text)} is not an RFC 1123 date in GMT")
        if e.code != E_NONE:
            raise refuse(f"{_DISPLAY[kind]} {problem(b, &e)}")
        if self._first[kind] < 0:
            self._first[kind] = index
        return 0

    # --- text on demand ----------------------------------------------------------------------------

    cdef str _text(self, Py_ssize_t start, Py_ssize_t end):
        return decode(self._buf, start, end)

    cdef str _span_text(self, Span span):
        if span.start < 0:
            return None
        return decode(self._buf, span.start, span.end)

    cdef object _line_value(self, HeaderLine *line):
        return decode(self._buf, line.value_start, line.value_end)

    @property
    def method(self):
        if self._method_text is None:
            self._method_text = self._text(self._method.start, self._method.end)
        return self._method_text

    @property
    def uri(self):
        if self._uri_text is None:
            self._uri_text = self._text(self._uri.start, self._uri.end)
        return self._uri_text

    @property
    def reason(self):
        if self._reason_text is None:
            self._reason_text = self._text(self._reason.start, self._reason.end)
        return self._reason_text

    @property
    def call_id(self):
        if self._call_id_text is None:
            self._call_id_text = self._line_value(&self._lines[self._first[H_CALL_ID]])
        return self._call_id_text

    @property
    def cseq_method(self):
        if self._cseq_method_text is None:
            self._cseq_method_text = self._text(self._cseq_method.start, self._cseq_method.end)
        return self._cseq_method_text

    @property
    def from_(self):
        if self._from_text is None:
            self._from_text = self._line_value(&self._lines[self._first[H_FROM]])
        return self._from_text

    @property
    def to(self):
        if self._to_text is None:
            self._to_text = self._line_value(&self._lines[self._first[H_TO]])
        return self._to_text

    @property
    def from_tag(self):
        if self._from_tag_text is None and self._from_tag.start >= 0:
            self._from_tag_text = self._span_text(self._from_tag)
        return self._from_tag_text

    @property
    def to_tag(self):
        if self._to_tag_text is None and self._to_tag.start >= 0:
            self._to_tag_text = self._span_text(self._to_tag)
        return self._to_tag_text

    @property
    def branch(self):
        if self._branch_text is None and self._top_via.has_branch and self._top_via.branch.start >= 0:
            self._branch_text = self._span_text(self._top_via.branch)
        return self._branch_text

    @property
    def body(self):
        return self._data[self._body_start:self._body_end]

    @property
    def raw(self):
        if self._start == 0 and self._body_end == PyBytes_GET_SIZE(self._data):
            return self._data
        return self._data[self._start:self._body_end]

    @property
    def vias(self):
        cdef Py_ssize_t k
        cdef HeaderLine *line
        if self._vias is None:
            vias = []
            for k in range(self._count):
                line = &self._lines[k]
                if line.kind == H_VIA:
                    split_list_into(self._buf, line.value_start, line.value_end, vias)
            self._vias = vias
        return self._vias

    @property
    def top_via(self):
        cdef ViaSpans *via = &self._top_via
        if self._top_via_obj is None:
            self._top_via_obj = Via(
                self._text(via.transport.start, via.transport.end).upper(),
                self._text(via.host.start, via.host.end),
                None if via.port < 0 else via.port,
                collect_params(self._buf, via.params.start, via.params.end),
            )
        return self._top_via_obj

    # --- headers on demand -------------------------------------------------------------------------

    cdef bint _line_matches(self, HeaderLine *line, int kind, bytes canonical, int compact):
        cdef Py_ssize_t length
        if kind != H_OTHER:
            return line.kind == kind
        if line.kind != H_OTHER:
            return False
        length = line.name_end - line.start
        if length == 1 and LOWER[self._buf[line.start]] == compact:
            return True
        return (length == PyBytes_GET_SIZE(canonical)
                and lower_eq(self._buf + line.start, PyBytes_AS_STRING(canonical), length))

    def header_values(self, str name):
        cdef Py_ssize_t k
        cdef HeaderLine *line
        cdef int kind, compact
        cdef bytes canonical
        kind, canonical, compact = _name_info(name)
        cdef bint is_list = _is_list(name)
        values = []
        for k in range(self._count):
            line = &self._lines[k]
            if self._line_matches(line, kind, canonical, compact):
                if is_list:
                    split_list_into(self._buf, line.value_start, line.value_end, values)
                else:
                    values.append(self._line_value(line))
        return values

    def header(self, str name):
        values = self.header_values(name)
        return values[0] if values else None

    def headers(self):
        cdef Py_ssize_t k
        cdef HeaderLine *line
        out = []
        for k in range(self._count):
            line = &self._lines[k]
            out.append((self._text(line.start, line.name_end), self._line_value(line)))
        return out

    # --- editing -----------------------------------------------------------------------------------

    def serialize(self, prepend=(), remove=(), replace=None, body=None):
        """The message with edits applied ("lumps"); the rules are the twin's Message.serialize."""
        cdef const unsigned char *b = self._buf
        cdef Py_ssize_t k, total, at
        cdef HeaderLine *line
        cdef unsigned int removed_kinds = 0, replaced_kinds = 0
        cdef bint kept_length = False, has_replacements
        cdef bytes new_body, piece, out
        cdef char *w
        added = [_encoded_line(name, value) for name, value in prepend]
        removed_other = None
        replacements = None
        for name in remove:
            kind, canonical, compact = _name_info(name)
            if kind == H_CONTENT_LENGTH:
                raise LocalProtocolError("Content-Length follows the body: pass body= instead of editing it")
            if kind != H_OTHER:
                removed_kinds |= 1u << kind
            else:
                if removed_other is None:
                    removed_other = []
                removed_other.append((canonical, compact))
        if replace:
            replacements = {}
            for name, value in replace.items():
                kind, canonical, compact = _name_info(name)
                if kind == H_CONTENT_LENGTH:
                    raise LocalProtocolError("Content-Length follows the body: pass body= instead of editing it")
                replacements[canonical] = [kind, compact, _encoded_line(name, value)]
                if kind != H_OTHER:
                    replaced_kinds |= 1u << kind
        for name, value in prepend:
            if _name_info(name)[0] == H_CONTENT_LENGTH:
                raise LocalProtocolError("Content-Length follows the body: pass body= instead of editing it")
        new_body = self._data[self._body_start:self._body_end] if body is None else bytes(body)

        # Which lines go out, and as what: None = copied as received.
        has_replacements = replacements is not None
        plan = []  # (index, replacement bytes or None)
        total = self._lines[0].start - self._start
        for piece in added:
            total += PyBytes_GET_SIZE(piece)
        for k in range(self._count):
            line = &self._lines[k]
            if line.kind != H_OTHER and (removed_kinds >> line.kind) & 1:
                continue
            if line.kind == H_OTHER and removed_other is not None and _matches_any(self, line, removed_other):
                continue
            if line.kind == H_CONTENT_LENGTH:
                if body is not None:
                    continue
                kept_length = True
            if has_replacements and (line.kind == H_OTHER or (replaced_kinds >> line.kind) & 1):
                replacement = _take_replacement(self, line, replacements)
                if replacement is not None:
                    plan.append((k, replacement))
                    total += PyBytes_GET_SIZE(replacement)
                    continue
            plan.append((k, None))
            total += line.end - line.start + 2
        tail = [entry[2] for entry in replacements.values()] if has_replacements else []
        if not kept_length:
            tail.append(b"Content-Length: %d\r\n" % PyBytes_GET_SIZE(new_body))
        tail.append(b"\r\n")
        for piece in tail:
            total += PyBytes_GET_SIZE(piece)
        total += PyBytes_GET_SIZE(new_body)

        out = PyBytes_FromStringAndSize(NULL, total)
        w = PyBytes_AS_STRING(out)
        at = self._lines[0].start - self._start
        memcpy(w, b + self._start, at)
        for piece in added:
            memcpy(w + at, PyBytes_AS_STRING(piece), PyBytes_GET_SIZE(piece))
            at += PyBytes_GET_SIZE(piece)
        for index, replacement in plan:
            if replacement is None:
                line = &self._lines[<Py_ssize_t>index]
                memcpy(w + at, b + line.start, line.end - line.start + 2)
                at += line.end - line.start + 2
            else:
                piece = replacement
                memcpy(w + at, PyBytes_AS_STRING(piece), PyBytes_GET_SIZE(piece))
                at += PyBytes_GET_SIZE(piece)
        for piece in tail:
            memcpy(w + at, PyBytes_AS_STRING(piece), PyBytes_GET_SIZE(piece))
            at += PyBytes_GET_SIZE(piece)
        memcpy(w + at, PyBytes_AS_STRING(new_body), PyBytes_GET_SIZE(new_body))
        return out

    def __repr__(self):
        if self.is_request:
            return f"<Message {self.method} {self.uri} call_id={self.call_id!r} cseq={self.cseq}>"
        return f"<Message {self.status} {self.reason} call_id={self.call_id!r} cseq={self.cseq}>"


cdef bint _matches_any(Message msg, HeaderLine *line, list names):
    for canonical, compact in names:
        if msg._line_matches(line, H_OTHER, canonical, compact):
            return True
    return False


cdef object _take_replacement(Message msg, HeaderLine *line, dict replacements):
    # The replacement for this line if its header is being replaced and this is its first occurrence.
    for canonical, entry in replacements.items():
        if msg._line_matches(line, entry[0], canonical, entry[1]):
            piece = entry[2]
            del replacements[canonical]
            return piece
    return None


cdef dict _NAME_INFO = {}  # typed: .get() is a C call, not a bound method made per lookup
cdef dict _IS_LIST = {}


cdef bint _is_list(str name):
    # Whether the header is a comma-separated list (§7.3.1), cached per spelling like _name_info.
    is_list = _IS_LIST.get(name)
    if is_list is None:
        is_list = canonical_name(name) in LIST_HEADERS
        if len(_IS_LIST) < 1024:
            _IS_LIST[name] = is_list
    return is_list


cdef tuple _name_info(str name):
    # (slot kind, canonical name as bytes, its compact letter or 0), cached per spelling.
    info = _NAME_INFO.get(name)
    if info is None:
        wanted = canonical_name(name)
        info = (_KIND_OF.get(wanted, H_OTHER), wanted.encode("utf-8", "surrogateescape"),
                ord(LONG_TO_COMPACT.get(wanted, "\0")))
        if len(_NAME_INFO) < 1024:
            _NAME_INFO[name] = info
    return info


cdef bytes _encoded_line(str name, str value):
    # A header added by the caller must stay one header line: a token name, no CR/LF smuggled in.
    cdef Py_UCS4 c
    cdef bint token = len(name) > 0
    for c in name:
        if c > 127 or not TOKEN[<unsigned char>c]:
            token = False
    if not token:
        raise LocalProtocolError(f"header name {name!r} is not a token")
    if "\r" in value or "\n" in value:
        raise LocalProtocolError(f"header {name} value contains CR or LF")
    return f"{name}: {value}\r\n".encode("utf-8", "surrogateescape")


cdef int split_list_into(const unsigned char *b, Py_ssize_t s, Py_ssize_t t, list out) except -1:
    # The twin's uri.split_list over raw bytes: commas outside quoted strings and <...>.
    cdef Py_ssize_t i = s, start = s, depth = 0
    while i < t:
        if b[i] == 34:
            i += 1
            while i < t and b[i] != 34:
                i += 2 if b[i] == 92 else 1
        elif b[i] == 60:
            depth += 1
        elif b[i] == 62 and depth:
            depth -= 1
        elif b[i] == 44 and not depth:
            _append_trimmed(b, start, i, out)
            start = i + 1
        i += 1
    _append_trimmed(b, start, t, out)
    return 0


cdef inline int _append_trimmed(const unsigned char *b, Py_ssize_t s, Py_ssize_t t, list out) except -1:
    s = skip_ws(b, s, t)
    while t > s and LWS[b[t - 1]]:
        t -= 1
    if t > s:
        out.append(decode(b, s, t))
    return 0


cdef dict collect_params(const unsigned char *b, Py_ssize_t i, Py_ssize_t n):
    # The twin's scan_params result for a span already checked: lower-cased names, first one wins.
    cdef Py_ssize_t j, name_start, name_end
    cdef ScanError e
    params = {}
    while True:
        i = skip_ws(b, i, n)
        if i >= n or b[i] == 44:
            return params
        i = skip_ws(b, i + 1, n)
        j = scan_token(b, i, n)
        name_start = i
        name_end = j
        i = skip_ws(b, j, n)
        value = None
        if i < n and b[i] == 61:
            i = skip_ws(b, i + 1, n)
            if i < n and b[i] == 34:
                j = scan_quoted(b, i, n, &e)
            else:
                j = i
                while j < n and not PARAM_STOP[b[j]]:
                    j += 1
            value = decode(b, i, j)
            i = j
        params.setdefault(decode(b, name_start, name_end).lower(), value)


# --- the module face -------------------------------------------------------------------------------

def parse(data, Py_ssize_t max_size=MAX_SIZE):
    """Parse one whole datagram (RFC 3261 §7, §18.3); raises RemoteProtocolError."""
    if type(data) is not bytes:
        data = bytes(data)
    cdef Message msg = Message.__new__(Message)
    msg._scan(<bytes>data, max_size)
    return msg


def build_response(Message request, int status, reason=None, *, to_tag=None, headers=(), body=b""):
    """A response to ``request`` (RFC 3261 §8.2.6); see the twin's build_response."""
    cdef Py_ssize_t k
    cdef HeaderLine *line
    cdef const unsigned char *b = request._buf
    if reason is None:
        reason = _REASONS.get(status, "Unknown")
    out = [f"SIP/2.0 {status} {reason}\r\n".encode("utf-8", "surrogateescape")]
    for k in range(request._count):
        line = &request._lines[k]
        if line.kind == H_VIA:
            if line.folded:
                out.append(b"Via: " + request._line_value(line).encode("utf-8", "surrogateescape") + b"\r\n")
            else:
                out.append(b"Via: " + (<const char *>b)[line.value_start:line.value_end] + b"\r\n")
    out.append(_copied_line(request, b"From: ", H_FROM))
    line = &request._lines[request._first[H_TO]]
    if to_tag is not None and request._to_tag.start < 0:
        out.append(b"To: " + request._line_value(line).encode("utf-8", "surrogateescape")
                   + b";tag=" + to_tag.encode("utf-8", "surrogateescape") + b"\r\n")
    else:
        out.append(_copied_line(request, b"To: ", H_TO))
    out.append(_copied_line(request, b"Call-ID: ", H_CALL_ID))
    out.append(b"CSeq: %d " % request.cseq + (<const char *>b)[request._cseq_method.start:request._cseq_method.end]
               + b"\r\n")
    for name, value in headers:
        out.append(_encoded_line(name, value))
    out.append(b"Content-Length: %d\r\n\r\n" % len(body))
    out.append(bytes(body))
    return b"".join(out)


cdef bytes _copied_line(Message msg, bytes name, int kind):
    cdef HeaderLine *line = &msg._lines[msg._first[kind]]
    if line.folded:
        return name + msg._line_value(line).encode("utf-8", "surrogateescape") + b"\r\n"
    return name + (<const char *>msg._buf)[line.value_start:line.value_end] + b"\r\n"


def build_request(str method, str uri, headers, body=b""):
    """A request from its parts (§8.1.1); Content-Length is computed from ``body``."""
    out = [f"{method} {uri} SIP/2.0\r\n".encode("utf-8", "surrogateescape")]
    for name, value in headers:
        if _name_info(name)[0] == H_CONTENT_LENGTH:
            raise LocalProtocolError("Content-Length follows the body: do not pass it in headers")
        out.append(_encoded_line(name, value))
    out.append(b"Content-Length: %d\r\n\r\n" % len(body))
    out.append(bytes(body))
    return b"".join(out)


# --- streams (TCP): RFC 3261 §18.3 -----------------------------------------------------------------

@cython.final
cdef class StreamFramer:
    """Cut a TCP byte stream into whole messages; the rules are the twin's StreamFramer: partial
    reads kept, pipelined messages split, CRLF keep-alives skipped (§7.5, RFC 5626 §3.5.1),
    Content-Length mandatory (§18.3); after a framing error the framer stays broken."""

    cdef bytearray _buffer
    cdef readonly Py_ssize_t max_size
    cdef object _error

    def __init__(self, Py_ssize_t max_size=MAX_SIZE):
        self.max_size = max_size
        self._buffer = bytearray()
        self._error = None

    def feed(self, data):
        if self._error is not None:
            raise self._error
        self._buffer += data
        try:
            return self._take_messages()
        except RemoteProtocolError as error:
            self._error = error
            raise

    cdef list _take_messages(self):
        cdef bytearray buffer = self._buffer
        cdef const unsigned char *b
        cdef Py_ssize_t n, skip, head_end, length
        messages = []
        while True:
            b = <const unsigned char *>PyByteArray_AS_STRING(buffer)
            n = PyByteArray_GET_SIZE(buffer)
            skip = 0
            while skip + 1 < n and b[skip] == 13 and b[skip + 1] == 10:
                skip += 2
            if skip:
                del buffer[:skip]
                continue
            head_end = find_head_end(b, 0, n)
            if head_end < 0:
                if n > self.max_size:
                    raise refuse(f"header section exceeds the limit of {self.max_size} bytes", 513)
                return messages
            length = stream_content_length(b, head_end)
            if length < 0 or head_end + 4 + length > self.max_size:
                total = head_end + 4 + (length if length >= 0 else _huge_length)
                raise refuse(f"message of {total} bytes exceeds the limit of {self.max_size} bytes", 513)
            if n < head_end + 4 + length:
                return messages
            messages.append(PyBytes_FromStringAndSize(<const char *>b, head_end + 4 + length))
            del buffer[:head_end + 4 + length]


_huge_length = 0

cdef Py_ssize_t stream_content_length(const unsigned char *b, Py_ssize_t head_end) except -2:
    # The twin's _stream_content_length over the header section b[:head_end]; -1 when the value is
    # too large for a Py_ssize_t (left in _huge_length for the error).
    global _huge_length
    cdef Py_ssize_t pos, end, colon, name_end, s, t
    cdef const unsigned char *found
    cdef unsigned long long value
    cdef long long result = -3
    cdef int digits
    cdef bint first = True
    pos = 0
    while pos <= head_end:
        found = <const unsigned char *>memchr(b + pos, 13, head_end - pos)
        end = head_end
        while found != NULL:
            end = found - b
            if end + 1 < head_end and b[end + 1] == 10:
                break
            found = <const unsigned char *>memchr(b + end + 1, 13, head_end - end - 1)
            end = head_end
        if first or (end > pos and (b[pos] == 32 or b[pos] == 9)):
            first = False
            pos = end + 2
            continue
        colon = pos
        while colon < end and b[colon] != 58:
            colon += 1
        if colon < end:
            name_end = colon
            while name_end > pos and (b[name_end - 1] == 32 or b[name_end - 1] == 9):
                name_end -= 1
            if ((name_end - pos == 14 and lower_eq(b + pos, "content-length", 14))
                    or (name_end - pos == 1 and LOWER[b[pos]] == 108)):
                s = colon + 1
                t = end
                while s < t and (b[s] == 32 or b[s] == 9):
                    s += 1
                while t > s and (b[t - 1] == 32 or b[t - 1] == 9):
                    t -= 1
                if not all_digits(b, s, t):
                    raise refuse(f"Content-Length {show(decode_raw(b, s, t))} is not a number")
                digits = significant_digits(b, s, t, &value)
                if digits > 15:
                    huge = int(decode_raw(b, s, t))
                    if result != -3 and (result != -1 or huge != _huge_length):
                        raise refuse("message has more than one Content-Length header")
                    _huge_length = huge
                    result = -1
                else:
                    if result != -3 and result != <long long>value:
                        raise refuse("message has more than one Content-Length header")
                    result = <long long>value
        pos = end + 2
    if result == -3:
        raise refuse("Content-Length is mandatory on a stream transport")
    return <Py_ssize_t>result


cdef str decode_raw(const unsigned char *b, Py_ssize_t start, Py_ssize_t end):
    # Text as the octets are, CR and LF included.
    return PyUnicode_DecodeUTF8(<const char *>b + start, end - start, "surrogateescape")
