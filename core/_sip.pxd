# What C sees of the SIP message scanner (core/_sip.pyx): spans into the receive buffer, the header
# table and the first-occurrence slots, in Kamailio's shape (struct hdr_field, msg->callid, ...).

cdef enum:
    # Header kinds with a first-occurrence slot (RFC 3261 §7.3.3 compact forms resolve to these).
    H_OTHER = 0
    H_VIA = 1
    H_FROM = 2
    H_TO = 3
    H_CALL_ID = 4
    H_CSEQ = 5
    H_CONTACT = 6
    H_MAX_FORWARDS = 7
    H_CONTENT_LENGTH = 8
    H_ROUTE = 9
    H_RECORD_ROUTE = 10
    H_DATE = 11
    H_KINDS = 12
    SMALL_TABLE = 24

cdef struct HeaderLine:
    # Offsets into Message._data. The value span is trimmed of LWS; it still holds any folding
    # CRLFs (``folded``), which come out when the value becomes text.
    int start         # first byte of the name
    int name_end      # end of the name (before any SP/HTAB and the colon)
    int value_start
    int value_end
    int end           # end of the logical line, before its CRLF
    int kind
    int folded

cdef struct Span:
    Py_ssize_t start  # -1: absent (or a parameter without a value)
    Py_ssize_t end

cdef struct ScanError:
    # What a scanner found wrong: a code naming the problem and up to two spans to quote.
    int code
    Py_ssize_t a0, a1, b0, b1

cdef struct ViaSpans:
    Span transport
    Span host
    int port          # -1: no port
    Span params       # from after the sent-by to the end of the via-parm
    Span branch
    bint has_branch


cdef class Message:
    cdef bytes _data
    cdef const unsigned char *_buf
    cdef Py_ssize_t _start, _line_end, _head_end, _body_start, _body_end
    cdef HeaderLine _small[SMALL_TABLE]
    cdef HeaderLine *_lines
    cdef Py_ssize_t _count, _capacity
    cdef int _first[H_KINDS]
    cdef readonly bint is_request
    cdef readonly int status
    cdef readonly long long cseq
    cdef readonly int max_forwards
    cdef readonly Py_ssize_t content_length
    cdef Span _method, _uri, _reason, _cseq_method, _from_tag, _to_tag
    cdef ViaSpans _top_via
    # Python objects made on first access
    cdef object _method_text, _uri_text, _reason_text, _call_id_text, _cseq_method_text
    cdef object _from_text, _to_text, _from_tag_text, _to_tag_text, _branch_text, _vias, _top_via_obj

    cdef int _scan(self, bytes data, Py_ssize_t max_size) except -1
    cdef int _scan_start_line(self) except -1
    cdef int _check_header(self, HeaderLine *line) except -1
    cdef HeaderLine *_add_line(self) except NULL
    cdef str _text(self, Py_ssize_t start, Py_ssize_t end)
    cdef str _span_text(self, Span span)
    cdef object _line_value(self, HeaderLine *line)
    cdef bint _line_matches(self, HeaderLine *line, int kind, bytes canonical, int compact)
