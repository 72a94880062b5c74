"""SIP messages: parse datagrams, frame streams, build and edit messages (RFC 3261 §7, §8.2.6, §18.3).

The face is in docs/internals.md. Two implementations share it: ``core._sip`` (Cython, scanning the
receive buffer in place) and ``core.sip._pysip`` (plain Python, the readable specification). This
module exports the Cython one when it is built and the Python one otherwise; ``IMPLEMENTATIONS``
names both for the tests that hold them to the same answers.
"""

from __future__ import annotations

from core.errors import ProtocolError, RemoteProtocolError
from core.sip import _pysip
from core.sip.uri import URI, NameAddr, Via, parse_name_addr, parse_uri

try:
    from core import _sip
except ImportError:  # the extension is not built: `python setup.py build_ext --inplace`
    _sip = None

IMPLEMENTATIONS = {"py": _pysip, "c": _sip}
_impl = _sip if _sip is not None else _pysip

parse = _impl.parse
StreamFramer = _impl.StreamFramer
Message = _impl.Message
build_response = _impl.build_response
build_request = _impl.build_request
reply_for_malformed = _impl.reply_for_malformed
canonical_name = _pysip.canonical_name
MAX_SIZE = _pysip.MAX_SIZE


def media_type(content_type: str | None) -> str:
    """A Content-Type's type/subtype, its parameters dropped and in lower case (RFC 3261 §20.15:
    "application/SDP; charset=x" is "application/sdp"); "" for none."""
    return (content_type or "").split(";", 1)[0].strip().lower()


__all__ = [
    "IMPLEMENTATIONS", "MAX_SIZE", "Message", "NameAddr", "ProtocolError", "RemoteProtocolError",
    "StreamFramer", "URI", "Via", "build_request", "build_response", "canonical_name", "media_type", "parse",
    "parse_name_addr", "parse_uri", "reply_for_malformed",
]
