"""SDP session descriptions and the offer/answer model, with media anchoring for the B2BUA.

- ``parse_sdp`` / ``SessionDescription.serialize``: the text format of RFC 4566 (§5 fields, §6
  attributes). A parsed description serializes back to the same bytes when it was well formed: lines
  this module does not model (i=, u=, e=, p=, b=, t=, r=, z=, k=, extra media c=) are kept as sent, in
  their place in the grammar.
- ``answer``: what a UA that supports a list of codec names answers to an offer (RFC 3264 §6): one m=
  line per offered line in order, unsupported streams rejected with port 0, payload types numbered as
  the offer numbered them, direction mirrored (§6.1).
- ``anchor``: the same description pointing every address at the switch, so that each leg of a call
  sees only the switch's address and media flows through its relay (the B2BUA's half of RFC 3264 §8:
  a changed description carries the next o= version).
- ``intersect``: the codecs both sides of an exchange agreed on; ``hold_direction`` / ``is_hold``: what
  a re-offer means for hold and resume (RFC 3264 §8.4, and RFC 2543's c=0.0.0.0).

Pure Python and sans-IO. Text is decoded as UTF-8 with ``surrogateescape``, so any octet survives a
round trip. Malformed SDP raises ``RemoteProtocolError(reason, 400)``; an offer with nothing in common
raises ``OfferAnswerError`` (488, RFC 3264 §6 and RFC 3261 §13.3.1.1).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from operator import itemgetter
from typing import Iterable, NamedTuple, Sequence

from core.errors import RemoteProtocolError
from core.memory import untrack

__all__ = [
    "Codec",
    "Connection",
    "MediaDescription",
    "OfferAnswerError",
    "Origin",
    "Originator",
    "SessionDescription",
    "STATIC_PAYLOAD_TYPES",
    "SessionLevel",
    "anchor",
    "answer",
    "hold_direction",
    "intersect",
    "intersect_media",
    "is_hold",
    "mirror_direction",
    "parse_sdp",
]

# The switch's username in o= (RFC 4566 §5.2 allows any non-space token).
ORIGIN_USERNAME = "switchcore"

# RFC 3551 §6, Tables 4 and 5: static payload types an m= line may list without a=rtpmap.
# (name, clock rate, channels)
STATIC_PAYLOAD_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("PCMU", 8000, 1),
    3: ("GSM", 8000, 1),
    4: ("G723", 8000, 1),
    5: ("DVI4", 8000, 1),
    6: ("DVI4", 16000, 1),
    7: ("LPC", 8000, 1),
    8: ("PCMA", 8000, 1),
    9: ("G722", 8000, 1),
    10: ("L16", 44100, 2),
    11: ("L16", 44100, 1),
    12: ("QCELP", 8000, 1),
    13: ("CN", 8000, 1),
    14: ("MPA", 90000, 1),
    15: ("G728", 8000, 1),
    16: ("DVI4", 11025, 1),
    17: ("DVI4", 22050, 1),
    18: ("G729", 8000, 1),
    25: ("CelB", 90000, 1),
    26: ("JPEG", 90000, 1),
    28: ("nv", 90000, 1),
    31: ("H261", 90000, 1),
    32: ("MPV", 90000, 1),
    33: ("MP2T", 90000, 1),
    34: ("H263", 90000, 1),
}

# RFC 3264 §6.1 / RFC 4566 §6: the four direction attributes, as (we send, we receive).
DIRECTIONS: dict[str, tuple[bool, bool]] = {
    "sendrecv": (True, True),
    "sendonly": (True, False),
    "recvonly": (False, True),
    "inactive": (False, False),
}
_DIRECTION_OF = {bits: name for name, bits in DIRECTIONS.items()}

# Payload formats that carry no voice: an answer never accepts a stream with only these when the offer
# gave it a voice codec too (a DTMF-only answer to a voice stream would be a call without audio).
AUXILIARY_FORMATS = frozenset({"telephone-event", "cn"})

# Attributes that carry the leg's own transport addresses (ICE, RFC 8839 §5): dropped when anchoring,
# since the relay does not run ICE and the other leg must see only the switch.
_ICE_ATTRIBUTES = frozenset(
    {"candidate", "remote-candidates", "end-of-candidates", "ice-ufrag", "ice-pwd", "ice-lite",
     "ice-options", "ice-mismatch"}
)

# RFC 4566 §5: the order of the lines in a session section and in a media section. A serialized
# description puts its lines in this order; lines of the same rank stay in the order they came in.
_SESSION_RANK = {"v": 0, "o": 1, "s": 2, "i": 3, "u": 4, "e": 5, "p": 6, "c": 7, "b": 8, "t": 9, "r": 9,
                 "z": 10, "k": 11, "a": 12}
_MEDIA_RANK = {"m": 0, "i": 1, "c": 2, "b": 3, "k": 4, "a": 5}
# Their ``get``, bound once (a compiled module would otherwise look the method up at each call), and
# the ranks every description asks for.
_session_rank = _SESSION_RANK.get
_media_rank = _MEDIA_RANK.get
_SESSION_C_RANK = _SESSION_RANK["c"]
_SESSION_T_RANK = _SESSION_RANK["t"]
_MEDIA_C_RANK = _MEDIA_RANK["c"]


class OfferAnswerError(RemoteProtocolError):
    """The offer cannot be answered: nothing in it is acceptable (answer ``488 Not Acceptable Here``)."""

    def __init__(self, reason: str, status: int = 488):
        super().__init__(reason, status)


class Codec(NamedTuple):
    """One payload format of a media stream: ``a=rtpmap`` (or the static table) and its ``a=fmtp``."""

    pt: int
    name: str
    clock: int
    channels: int = 1
    fmtp: str | None = None

    @property
    def format_key(self) -> tuple[str, int, int]:
        """What names the encoding whatever payload type number it was given: the name in lower
        case (RFC 3264 §6.1: encoding names compare without regard to case), clock and channels."""
        return self.name.lower(), self.clock, self.channels

    def same_format(self, other: "Codec") -> bool:
        """Whether ``other`` is the same encoding, whatever payload type number it was given."""
        return self.format_key == other.format_key


# The objects of a description (SessionDescription, SessionLevel, MediaDescription, Origin,
# Connection; Originator and the codec tables too) hold only str, int, None, tuples and lists of
# those, and one another, a section holding its SessionLevel, never the description: they can make
# no reference cycle (tests/test_call_memory.py). So each is given to ``untrack`` (core/memory.py)
# where it is made, and so is each list they hold where the list is made, so that the collector does
# not walk the descriptions of every live call. An (a=name, value) tuple is left as it is: the
# collector untracks a tuple of str and None itself the first time it looks at it.


@dataclass(slots=True, init=False)
class Origin:
    """``o=<username> <sess-id> <sess-version> <nettype> <addrtype> <unicast-address>`` (RFC 4566 §5.2).
    ``sess_id`` and ``sess_version`` are kept as the digits that were sent."""

    username: str
    sess_id: str
    sess_version: str
    nettype: str
    addrtype: str
    address: str

    # Written out rather than made by ``dataclass``, whose generated __init__ is not compiled.
    def __init__(self, username: str, sess_id: str, sess_version: str, nettype: str, addrtype: str,
                 address: str):
        self.username = username
        self.sess_id = sess_id
        self.sess_version = sess_version
        self.nettype = nettype
        self.addrtype = addrtype
        self.address = address
        untrack(self)

    def __str__(self) -> str:
        return (f"{self.username} {self.sess_id} {self.sess_version} {self.nettype} {self.addrtype} "
                f"{self.address}")


@dataclass(slots=True, init=False)
class Connection:
    """``c=<nettype> <addrtype> <connection-address>`` (RFC 4566 §5.7); a multicast address keeps its
    ``/ttl/count`` suffix in ``address``."""

    nettype: str
    addrtype: str
    address: str

    def __init__(self, nettype: str, addrtype: str, address: str):
        self.nettype = nettype
        self.addrtype = addrtype
        self.address = address
        untrack(self)

    def __str__(self) -> str:
        return f"{self.nettype} {self.addrtype} {self.address}"

    @property
    def host(self) -> str:
        """The address without a multicast ``/ttl`` or ``/count`` suffix."""
        return _host_of(self.address)

    @property
    def is_unspecified(self) -> bool:
        """``0.0.0.0`` (or ``::``): RFC 2543's way to put a call on hold (RFC 3264 §8.4)."""
        return _is_unspecified(self.address)

    @classmethod
    def for_address(cls, address: str) -> "Connection":
        """``IN IP4`` or ``IN IP6`` (RFC 4566 §5.7, RFC 4291 text form) according to the address."""
        return cls("IN", _addrtype(address), address)


def _is_unspecified(address: str) -> bool:
    """Whether a c= address (perhaps with a multicast suffix) is ``0.0.0.0`` or ``::``."""
    return _host_of(address) in ("0.0.0.0", "::")


def _host_of(address: str) -> str:
    """A c= address without its multicast ``/ttl`` or ``/count`` suffix."""
    slash = address.find("/")
    return address if slash < 0 else address[:slash]


def _addrtype(address: str) -> str:
    return "IP6" if ":" in address else "IP4"


# The o= and c= lines of a description, written from the fields (not through ``__str__``, a method
# call more on the way every description is written).
def _o_line(o: Origin) -> str:
    return f"o={o.username} {o.sess_id} {o.sess_version} {o.nettype} {o.addrtype} {o.address}"


def _c_line(conn: Connection) -> str:
    return f"c={conn.nettype} {conn.addrtype} {conn.address}"


def _add_attribute_lines(out: list[str], attributes: list[tuple[str, str | None]]) -> None:
    for name, value in attributes:
        out.append(f"a={name}" if value is None else f"a={name}:{value}")


def _in_rank_order(ranked: list[tuple[int, str]]) -> list[str]:
    """The lines of ``ranked`` sorted by rank; lines of the same rank keep their order."""
    ranked.sort(key=_rank_of)
    return [line for _, line in ranked]


_rank_of = itemgetter(0)


class _Attributes:
    """Look-ups over an ``attributes`` list of ``(name, value or None)`` in the order sent."""

    __slots__ = ()
    attributes: list[tuple[str, str | None]]

    def attribute(self, name: str) -> str | None:
        """The value of the first ``a=name`` (``""`` for a flag such as ``a=recvonly``), or None."""
        for key, value in self.attributes:
            if key == name:
                return "" if value is None else value
        return None

    def attribute_values(self, name: str) -> list[str]:
        return ["" if value is None else value for key, value in self.attributes if key == name]

    def has_attribute(self, name: str) -> bool:
        return any(key == name for key, _ in self.attributes)

    def _own_direction(self) -> str | None:
        for key, _ in self.attributes:
            if key in DIRECTIONS:
                return key
        return None

    def set_direction(self, direction: str | None) -> None:
        """Replace every direction attribute with ``a=<direction>`` (None: leave none, i.e. inherit)."""
        if direction is not None and direction not in DIRECTIONS:
            raise ValueError(f"{direction!r} is not a direction")
        kept = [(k, v) for k, v in self.attributes if k not in DIRECTIONS]
        if direction is not None:
            kept.append((direction, None))
        self.attributes[:] = kept


@dataclass(slots=True, eq=False, init=False)
class MediaDescription(_Attributes):
    """One ``m=`` section (RFC 4566 §5.14) and the lines under it."""

    media: str
    port: int
    proto: str
    formats: list[str]
    port_count: int | None = None
    connection: Connection | None = None
    attributes: list[tuple[str, str | None]] = field(default_factory=list)
    # i=, b=, k= and any further c= lines, as (type, value) in the order sent.
    other_lines: list[tuple[str, str]] = field(default_factory=list)
    # The session level of the description this section belongs to (its c= and attributes, which
    # the section inherits): a ``SessionLevel`` shared with that description, not the description
    # itself, so that a description and its sections make no reference cycle and are freed the
    # moment they are dropped rather than by the cyclic garbage collector.
    session: "SessionLevel | None" = field(default=None, repr=False)

    def __init__(self, media: str, port: int, proto: str, formats: list[str], port_count: int | None = None,
                 connection: Connection | None = None, attributes: list[tuple[str, str | None]] | None = None,
                 other_lines: list[tuple[str, str]] | None = None, session: "SessionLevel | None" = None):
        self.media = media
        self.port = port
        self.proto = proto
        self.formats = formats
        self.port_count = port_count
        self.connection = connection
        self.attributes = untrack([]) if attributes is None else attributes
        self.other_lines = untrack([]) if other_lines is None else other_lines
        self.session = session
        untrack(self)

    # --- what the section says -------------------------------------------------------------------
    @property
    def is_rtp(self) -> bool:
        """Whether the formats are RTP payload types (RTP/AVP, RTP/SAVP, RTP/AVPF, UDP/TLS/RTP/SAVPF)."""
        proto = self.proto
        return "RTP/" in proto or "RTP/" in proto.upper()

    def codecs(self) -> list[Codec]:
        """The payload formats in the m= line's order: a=rtpmap when present, else RFC 3551's static
        table. A dynamic type without a=rtpmap, or a format of a non-RTP protocol, is left out: it
        cannot be matched by name (RFC 3264 §5.1)."""
        return list(self._codec_table().codecs)

    def _codec_table(self) -> "_CodecTable":
        if not self.is_rtp:
            return _NO_CODECS
        return _codec_table(self.formats, self.attributes)

    def restrict_codecs(self, names: "set[str] | frozenset[str]") -> bool:
        """Cut the formats of this RTP stream to its codecs named in ``names`` (in lower case), with
        the a=rtpmap and a=fmtp lines of those alone (the offerer's choice, RFC 3264 §5.1). False,
        with nothing changed, when none is left, or only telephone-event/CN where voice was offered:
        the stream is then better disabled."""
        table = self._codec_table()
        offered = table.names
        chosen = [i for i in range(len(offered)) if offered[i] in names]
        if not chosen:
            return False
        if len(chosen) == len(offered):  # every codec stays
            if table.tidy:  # and nothing else was there: nothing to cut
                return True
        elif table.voice and not any(offered[i] not in AUXILIARY_FORMATS for i in chosen):
            return False
        pts = table.pts
        keep = {pts[i] for i in chosen}
        self.formats = untrack([f for f in self.formats if f in keep])
        self.attributes = untrack([
            (k, v) for k, v in self.attributes
            if (k != "rtpmap" and k != "fmtp") or (v or "").split(" ", 1)[0] in keep
        ])
        return True

    @property
    def direction(self) -> str:
        """sendrecv, sendonly, recvonly or inactive: this section's attribute, else the session's,
        else sendrecv (RFC 3264 §5.1)."""
        own = self._own_direction()
        if own is not None:
            return own
        if self.session is not None:
            return self.session.direction
        return "sendrecv"

    @property
    def effective_connection(self) -> Connection | None:
        """The media-level c= if any, else the session-level one (RFC 4566 §5.7)."""
        if self.connection is not None:
            return self.connection
        return self.session.connection if self.session is not None else None

    def rtp_address(self) -> tuple[str, int]:
        """Where RTP for this stream goes: (host, port)."""
        conn = self.connection
        if conn is None and self.session is not None:
            conn = self.session.connection
        if conn is None:
            raise RemoteProtocolError(f"SDP m={self.media} has no c= line", 400)
        return _host_of(conn.address), self.port

    def rtcp_address(self) -> tuple[str, int]:
        """Where RTCP goes: a=rtcp (RFC 3605) when present, else the RTP port + 1 (RFC 3550 §11)."""
        host, port = self.rtp_address()
        value = self.attribute("rtcp")
        if value:
            parts = value.split()
            if len(parts) >= 4:
                host = parts[3]
            return host, int(parts[0])
        return host, port + 1

    @property
    def ptime(self) -> int | None:
        value = self.attribute("ptime")
        return int(value) if value and value.isdigit() else None

    @property
    def is_rejected(self) -> bool:
        """Port 0: the stream is declined or disabled (RFC 3264 §6, §8.2)."""
        return self.port == 0

    # --- wire form -------------------------------------------------------------------------------
    def m_line(self) -> str:
        formats = self.formats
        port_count = self.port_count
        if port_count is None:
            if formats:
                return f"m={self.media} {self.port} {self.proto} {' '.join(formats)}"
            return f"m={self.media} {self.port} {self.proto}"
        if formats:
            return f"m={self.media} {self.port}/{port_count} {self.proto} {' '.join(formats)}"
        return f"m={self.media} {self.port}/{port_count} {self.proto}"

    def lines(self) -> list[str]:
        out: list[str] = []
        self._add_lines(out)
        return out

    def _add_lines(self, out: list[str]) -> None:
        """Append the section's lines to ``out``."""
        conn = self.connection
        other_lines = self.other_lines
        if not other_lines:  # the usual section: m=, perhaps c=, attributes; already in order
            out.append(self.m_line())
            if conn is not None:
                out.append(_c_line(conn))
        else:
            ranked: list[tuple[int, str]] = [(0, self.m_line())]
            if conn is not None:
                ranked.append((_MEDIA_C_RANK, _c_line(conn)))
            for kind, value in other_lines:
                ranked.append((_media_rank(kind, 5), f"{kind}={value}"))
            out += _in_rank_order(ranked)
        _add_attribute_lines(out, self.attributes)

    def copy(self) -> "MediaDescription":
        conn = self.connection
        return MediaDescription(
            self.media, self.port, self.proto, untrack(list(self.formats)), self.port_count,
            None if conn is None else Connection(conn.nettype, conn.addrtype, conn.address),
            untrack(list(self.attributes)), untrack(list(self.other_lines)), None,
        )


@lru_cache(maxsize=1024)
def _codec(fmt: str, encoding: str | None, fmtp: str | None) -> Codec | None:
    """The codec of format ``fmt`` given its a=rtpmap encoding (None: none sent) and a=fmtp
    parameters, or None when it has no name. Memoised: the same few codecs come in every call."""
    if not fmt.isdigit():
        return None
    pt = int(fmt)
    if encoding is not None:
        parts = encoding.strip().split("/")
        name, clock = parts[0], int(parts[1])
        channels = int(parts[2]) if len(parts) > 2 and parts[2] else 1
    elif pt in STATIC_PAYLOAD_TYPES:
        name, clock, channels = STATIC_PAYLOAD_TYPES[pt]
    else:
        return None
    return Codec(pt, name, clock, channels, None if fmtp is None else fmtp.strip())


class _CodecTable:
    """What a stream's formats and a=rtpmap / a=fmtp lines say about its codecs, in the m= line's
    order, worked out once for each different set of them (``_codec_table``) and shared."""

    __slots__ = ("codecs", "names", "pts", "keys", "key_set", "voice", "tidy")

    def __init__(self, codecs: tuple[Codec, ...], tidy: bool):
        self.codecs = codecs
        self.names = tuple([c.name.lower() for c in codecs])  # RFC 3264 §6.1: case does not count
        self.pts = tuple([str(c.pt) for c in codecs])
        self.keys = tuple([c.format_key for c in codecs])
        self.key_set = frozenset(self.keys)
        # Whether a codec carries voice (not only telephone-event or CN).
        self.voice = any(name not in AUXILIARY_FORMATS for name in self.names)
        # Whether the formats are the codecs' payload types and no a=rtpmap or a=fmtp names another.
        self.tidy = tidy
        untrack(self)


_NO_CODECS = _CodecTable((), True)  # a stream that is not RTP

# Memoised by the formats and the a=rtpmap and a=fmtp lines (not the other attributes, which may
# change from call to call: a=rtcp, a=crypto, a=ssrc ...): a phone or a trunk sends the same codec
# lines call after call, and a call asks a stream for its codecs several times (restriction,
# intersection, the codec and DTMF type of the record). At most _CODEC_TABLES_SIZE, emptied when full.
_CODEC_TABLES: dict[tuple, _CodecTable] = {}
_CODEC_TABLES_SIZE = 1024
_codec_tables_get = _CODEC_TABLES.get


def _codec_table(formats: list[str], attributes: list[tuple[str, str | None]]) -> _CodecTable:
    # The key: the formats, and the a=rtpmap and a=fmtp lines as name, value, name, value ... (their
    # strings, not the description's tuples, which the memo would otherwise keep).
    maps: list[str | None] = []
    for key, value in attributes:
        if key == "rtpmap" or key == "fmtp":
            maps.append(key)
            maps.append(value)
    memo = (tuple(formats), tuple(maps))
    table = _codec_tables_get(memo)
    if table is not None:
        return table
    rtpmap: dict[str, str] = {}
    fmtp: dict[str, str] = {}
    named: set[str] = set()
    for index in range(0, len(maps), 2):
        key, value = maps[index], maps[index + 1]
        pt = (value or "").split(" ", 1)[0]
        named.add(pt)
        if key == "rtpmap":
            if value:
                pt, _, encoding = value.partition(" ")
                if pt not in rtpmap:
                    rtpmap[pt] = encoding
        elif value:
            pt, _, params = value.partition(" ")
            if pt not in fmtp:
                fmtp[pt] = params
    result = []
    for fmt in formats:
        codec = _codec(fmt, rtpmap.get(fmt), fmtp.get(fmt))
        if codec is not None:
            result.append(codec)
    pts = {str(c.pt) for c in result}
    tidy = len(result) == len(formats) and all(fmt in pts for fmt in formats) and named <= pts
    table = _CodecTable(tuple(result), tidy)
    if len(_CODEC_TABLES) >= _CODEC_TABLES_SIZE:
        _CODEC_TABLES.clear()
    _CODEC_TABLES[memo] = table
    return table


class SessionLevel(_Attributes):
    """The session-level ``c=`` and attributes of a description, which its media sections inherit
    (RFC 4566 §5.7, RFC 3264 §5.1): held by the description and by each of its sections."""

    __slots__ = ("connection", "attributes")

    def __init__(self, connection: Connection | None, attributes: list[tuple[str, str | None]]):
        self.connection = connection
        self.attributes = attributes
        untrack(self)

    @property
    def direction(self) -> str:
        """The session-level direction attribute, else sendrecv (RFC 3264 §5.1)."""
        return self._own_direction() or "sendrecv"


class SessionDescription(_Attributes):
    """A whole description (RFC 4566 §5): session-level fields, then ``media`` in m= line order.

    ``connection`` and ``attributes`` live in a ``SessionLevel`` the media sections share (see
    ``MediaDescription.session``)."""

    __slots__ = ("version", "origin", "name", "_level", "media", "other_lines")

    def __init__(self, version: int = 0, origin: Origin | None = None, name: str | None = "-",
                 connection: Connection | None = None, attributes: list[tuple[str, str | None]] | None = None,
                 media: list[MediaDescription] | None = None, other_lines: list[tuple[str, str]] | None = None):
        self.version = version
        self.origin = Origin("-", "0", "0", "IN", "IP4", "0.0.0.0") if origin is None else origin
        self.name = name
        self._level = level = SessionLevel(connection, untrack([]) if attributes is None else attributes)
        self.media = untrack([]) if media is None else media
        # i=, u=, e=, p=, b=, t=, r=, z=, k= lines as (type, value) in the order sent.
        self.other_lines = untrack([("t", "0 0")]) if other_lines is None else other_lines
        for m in self.media:
            m.session = level
        untrack(self)

    def __repr__(self) -> str:
        return (f"SessionDescription(version={self.version!r}, origin={self.origin!r}, name={self.name!r}, "
                f"connection={self.connection!r}, attributes={self.attributes!r}, media={self.media!r}, "
                f"other_lines={self.other_lines!r})")

    @property
    def connection(self) -> Connection | None:
        return self._level.connection

    @connection.setter
    def connection(self, value: Connection | None) -> None:
        self._level.connection = value

    @property
    def attributes(self) -> list[tuple[str, str | None]]:
        return self._level.attributes

    @attributes.setter
    def attributes(self, value: list[tuple[str, str | None]]) -> None:
        self._level.attributes = value

    # --- what the description says ---------------------------------------------------------------
    @property
    def time(self) -> tuple[int, int] | None:
        """The first ``t=<start> <stop>`` (RFC 4566 §5.9); ``(0, 0)`` for the unbounded sessions of SIP."""
        for kind, value in self.other_lines:
            if kind == "t":
                start, _, stop = value.partition(" ")
                return int(start), int(stop)
        return None

    @property
    def direction(self) -> str:
        """The session-level direction attribute, else sendrecv (RFC 3264 §5.1)."""
        return self._own_direction() or "sendrecv"

    def add_media(self, m: MediaDescription) -> MediaDescription:
        m.session = self._level
        self.media.append(m)
        return m

    def audio(self) -> MediaDescription | None:
        """The first audio stream that is not rejected, else None."""
        for m in self.media:
            if m.media == "audio" and m.port != 0:
                return m
        return None

    def codecs(self) -> list[Codec]:
        """The codecs of the first active audio stream (what a voice switch negotiates)."""
        m = self.audio()
        return m.codecs() if m is not None else []

    def rtp_address(self) -> tuple[str, int]:
        """Where the first active audio stream's RTP goes."""
        m = self.audio()
        if m is None:
            raise RemoteProtocolError("SDP has no active audio stream", 488)
        return m.rtp_address()

    # --- wire form -------------------------------------------------------------------------------
    def lines(self) -> list[str]:
        level = self._level
        o = self.origin
        conn = level.connection
        other_lines = self.other_lines
        if _after_connection_in_order(other_lines):  # as parsed from a well-formed description
            out = [f"v={self.version}", _o_line(o)]
            if self.name is not None:
                out.append(f"s={self.name}")
            if conn is not None:
                out.append(_c_line(conn))
            for kind, value in other_lines:
                out.append(f"{kind}={value}")
        else:
            ranked: list[tuple[int, str]] = [(0, f"v={self.version}"), (1, _o_line(o))]
            if self.name is not None:
                ranked.append((2, f"s={self.name}"))
            if conn is not None:
                ranked.append((_SESSION_C_RANK, _c_line(conn)))
            for kind, value in other_lines:
                ranked.append((_session_rank(kind, 11), f"{kind}={value}"))
            out = _in_rank_order(ranked)
        _add_attribute_lines(out, level.attributes)
        for m in self.media:
            m._add_lines(out)
        return out

    def serialize(self) -> bytes:
        """The wire form: every line ended by CRLF (RFC 4566 §5)."""
        return _wire(self.lines())

    def __bytes__(self) -> bytes:
        return self.serialize()

    def copy(self) -> "SessionDescription":
        """An independent copy (the media sections and their lists too)."""
        o = self.origin
        level = self._level
        conn = level.connection
        return SessionDescription(
            self.version, Origin(o.username, o.sess_id, o.sess_version, o.nettype, o.addrtype, o.address),
            self.name, None if conn is None else Connection(conn.nettype, conn.addrtype, conn.address),
            untrack(list(level.attributes)), untrack([m.copy() for m in self.media]),
            untrack(list(self.other_lines)),
        )

    def same_content(self, other: "SessionDescription") -> bool:
        """Whether the two say the same thing apart from o='s version (RFC 3264 §8: an unchanged
        description keeps its version)."""
        a, b = self.lines(), other.lines()
        return a[2:] == b[2:] and a[0] == b[0] and _origin_without_version(self.origin) == \
            _origin_without_version(other.origin)


def _after_connection_in_order(other_lines: list[tuple[str, str]]) -> bool:
    """Whether session-level ``other_lines`` all rank after c= and are in rank order (the usual
    t= alone, or b= then t=): v=, o=, s=, c= and they are then in order as they stand."""
    last = _SESSION_C_RANK
    for kind, _ in other_lines:
        if kind == "t":  # the usual one
            rank = _SESSION_T_RANK
        else:
            rank = _session_rank(kind, 11)
        if rank < last:
            return False
        last = rank
    return True


def _wire(lines: list[str]) -> bytes:
    """The wire form of ``lines`` (each ended by CRLF); ``lines`` is the caller's to lose: it ends
    with an empty line added."""
    lines.append("")
    return "\r\n".join(lines).encode("utf-8", "surrogateescape")


def _origin_without_version(o: Origin) -> tuple[str, ...]:
    return o.username, o.sess_id, o.nettype, o.addrtype, o.address


# ------------------------------------------------------------------------------------------------
# Parsing (RFC 4566 §5, §9)
# ------------------------------------------------------------------------------------------------

def _bad(reason: str) -> RemoteProtocolError:
    return RemoteProtocolError(reason, 400)


def _parse_connection(value: str) -> Connection:
    parts = value.split(" ")
    if len(parts) != 3 or "" in parts:
        raise _bad(f"SDP c= line needs 3 fields, got {value!r}")
    return Connection(parts[0], parts[1], parts[2])


def _parse_port(text: str, line: str) -> tuple[int, int | None]:
    slash = text.find("/")
    port_text = text if slash < 0 else text[:slash]
    # isascii() as well: str.isdigit() also takes other scripts' digits.
    if not (port_text.isascii() and port_text.isdigit()) or len(port_text) > 5 or int(port_text) > 65535:
        raise _bad(f"SDP m= port {port_text!r} is not a number from 0 to 65535 in {line!r}")
    if slash < 0:
        return int(port_text), None
    count_text = text[slash + 1:]
    if not (count_text.isascii() and count_text.isdigit()) or len(count_text) > 5:
        raise _bad(f"SDP m= port count {count_text!r} is not a number in {line!r}")
    return int(port_text), int(count_text)


# The a=rtpmap values found well formed, not looked at again: the same few come in call after call.
# At most _GOOD_RTPMAPS_SIZE, emptied when full.
_GOOD_RTPMAPS: set[str] = set()
_GOOD_RTPMAPS_SIZE = 1024


def _check_rtpmap(value: str | None) -> None:
    # a=rtpmap:<payload type> <encoding name>/<clock rate>[/<encoding parameters>]
    pt, _, encoding = (value or "").partition(" ")
    bits = encoding.strip().split("/")
    if (not pt.isdigit() or len(bits) not in (2, 3) or not bits[0] or not bits[1].isdigit()
            or (len(bits) == 3 and bits[2] and not bits[2].isdigit())):
        raise _bad(f"SDP a=rtpmap:{value} is not <pt> <name>/<clock>[/<channels>]")
    if len(_GOOD_RTPMAPS) >= _GOOD_RTPMAPS_SIZE:
        _GOOD_RTPMAPS.clear()
    _GOOD_RTPMAPS.add(value)


def _check_rtcp(value: str | None) -> None:
    port = (value or "").split(" ", 1)[0]
    if not port.isdigit():
        raise _bad(f"SDP a=rtcp:{value} does not start with a port")


# The types a line after v= may have (RFC 4566 §5); ``_bad_line`` says why any other is refused.
_LINE_TYPES = frozenset(_SESSION_RANK.keys() | _MEDIA_RANK.keys()) - {"v"}


def _bad_line(number: int, line: str) -> RemoteProtocolError:
    if len(line) < 2 or line[1] != "=" or not ("a" <= line[0] <= "z"):
        return _bad(f"SDP line {number} is not <type>=<value>: {line[:40]!r}")
    if line[0] == "v":
        return _bad(f"SDP line {number} repeats v=")
    # RFC 4566 §5: a parser "MUST completely ignore any session description that contains a type
    # letter that it does not understand"; for an offer that means refusing it.
    return _bad(f"SDP line {number}: unknown type {line[0]}=")


def parse_sdp(data: bytes) -> SessionDescription:
    """Parse a session description (RFC 4566 §5). Lines may end in CRLF or a bare LF (§5: "a
    parser SHOULD accept" LF); a CR at the very end counts as one too. Raises
    ``RemoteProtocolError(reason, 400)`` when malformed."""
    # Written for the compiler as much as for the reader: ``str(...)`` tells it that the text and
    # each line are str (``str()`` of a str is that same str), so that it indexes, slices and
    # searches them in C; a line's type letter is then a character and its index a C integer.
    text = str(data, "utf-8", "surrogateescape")
    lines = text.split("\r\n")
    if text.count("\n") != len(lines) - 1:  # some line ends in a bare LF
        lines = text.split("\n")
        lines[:-1] = [ln[:-1] if ln.endswith("\r") else ln for ln in lines[:-1]]
    last = lines[-1]
    if last == "" or last == "\r":
        lines.pop()
    elif last.endswith("\r"):
        lines[-1] = last[:-1]
    count = len(lines)
    if not count:
        raise _bad("SDP body is empty")
    first = str(lines[0])
    if first != "v=0":
        if not first.startswith("v="):
            raise _bad(f"SDP does not start with v= (first line {first[:40]!r})")
        raise _bad(f"SDP version {first[2:]!r} is not 0")

    # The session level is gathered in locals and the description made at the end. Each line is
    # looked at in place: its type letter and "=" by index, an attribute's name and value cut from
    # the line itself.
    origin: Origin | None = None
    name: str | None = None
    connection: Connection | None = None
    attributes: list[tuple[str, str | None]] = untrack([])
    media: list[MediaDescription] = untrack([])
    other_lines: list[tuple[str, str]] = untrack([])
    current: MediaDescription | None = None
    section_attributes = attributes  # those of the section being read
    for index in range(1, count):
        line = str(lines[index])
        if len(line) < 2 or line[1] != "=":
            raise _bad_line(index + 1, line)
        kind = line[0]
        if kind == "a":
            # The two attributes every audio offer repeats, named by the module's own strings.
            if line.startswith("a=rtpmap:"):
                attr_name = "rtpmap"
                attr = line[9:]
                if attr not in _GOOD_RTPMAPS:
                    _check_rtpmap(attr)
            elif line.startswith("a=fmtp:"):
                attr_name = "fmtp"
                attr = line[7:]
                if not attr or attr[0] == " ":
                    raise _bad(f"SDP a=fmtp:{attr} names no format")
            else:
                colon = line.find(":", 2)
                if colon < 0:
                    attr_name = line[2:]
                    attr = None
                else:
                    attr_name = line[2:colon]
                    attr = line[colon + 1:]
                if not attr_name:
                    raise _bad(f"SDP line {index + 1} has an attribute with no name: {line[:40]!r}")
                if attr_name == "rtpmap":  # with no value
                    _check_rtpmap(attr)
                elif attr_name == "fmtp":
                    raise _bad(f"SDP a=fmtp:{attr} names no format")
                elif attr_name == "rtcp":
                    _check_rtcp(attr)
            section_attributes.append((attr_name, attr))
            continue
        if kind == "m":
            # m=<media> <port>[/<count>] <proto> <fmt> ... (RFC 4566 §5.14)
            parts = line[2:].split(" ")
            if len(parts) < 3 or "" in parts:
                raise _bad(f"SDP m= line needs <media> <port> <proto> <fmt>..., got {line!r}")
            port_text = str(parts[1])
            # isascii() as well: str.isdigit() also takes other scripts' digits.
            if len(port_text) <= 5 and port_text.isascii() and port_text.isdigit() and int(port_text) <= 65535:
                port = int(port_text)
                port_count = None
            else:  # a port count, or not a port
                port, port_count = _parse_port(port_text, line)
            formats = untrack(parts[3:])
            # RFC 4566 §5.14 requires at least one format; a declined stream written without any is
            # tolerated.
            if not formats and port != 0:
                raise _bad(f"SDP m= line lists no formats: {line!r}")
            current = MediaDescription(parts[0], port, parts[2], formats, port_count)
            media.append(current)
            section_attributes = current.attributes
            continue
        if kind not in _LINE_TYPES:
            raise _bad_line(index + 1, line)
        value = line[2:]
        if current is not None:
            if kind == "c":
                conn = _parse_connection(value)
                if current.connection is None:
                    current.connection = conn
                else:
                    current.other_lines.append((kind, value))
            elif kind in _MEDIA_RANK:
                current.other_lines.append((kind, value))
            else:
                raise _bad(f"SDP line {index + 1}: {kind}= is not allowed in a media section")
        elif kind == "o":
            if origin is not None:
                raise _bad(f"SDP line {index + 1} repeats o=")
            parts = value.split(" ")
            if len(parts) != 6 or "" in parts:
                raise _bad(f"SDP o= line needs 6 fields, got {value!r}")
            if not (str(parts[1]).isdigit() and str(parts[2]).isdigit()):
                raise _bad(f"SDP o= session id and version must be numbers, got {value!r}")
            origin = Origin(parts[0], parts[1], parts[2], parts[3], parts[4], parts[5])
        elif kind == "s":
            if name is not None:
                raise _bad(f"SDP line {index + 1} repeats s=")
            name = value
        elif kind == "c":
            if connection is not None:
                raise _bad(f"SDP line {index + 1} repeats the session-level c=")
            connection = _parse_connection(value)
        elif kind == "t":
            if value != "0 0":  # the usual one: no need to take it apart
                start, _, stop = value.partition(" ")
                if not (start.isdigit() and stop.isdigit()):
                    raise _bad(f"SDP t= line needs <start> <stop> times, got {value!r}")
            other_lines.append((kind, value))
        else:
            other_lines.append((kind, value))
    if origin is None:
        raise _bad("SDP has no o= line")
    if connection is None:
        for m in media:
            if m.connection is None and m.port != 0:
                raise _bad(f"SDP m={m.media} {m.port} has no c= line, at media or session level")
    return SessionDescription(0, origin, name, connection, attributes, media, other_lines)


# ------------------------------------------------------------------------------------------------
# Offer / answer (RFC 3264)
# ------------------------------------------------------------------------------------------------

def _lower_direction(direction: str, limit: str | None) -> str:
    if limit is None:
        return direction
    if limit not in DIRECTIONS:
        raise ValueError(f"{limit!r} is not a direction")
    a, b = DIRECTIONS[direction], DIRECTIONS[limit]
    return _DIRECTION_OF[(a[0] and b[0], a[1] and b[1])]


def mirror_direction(direction: str) -> str:
    """The answer's direction for an offered one (RFC 3264 §6.1): sendonly ↔ recvonly."""
    send, recv = DIRECTIONS[direction]
    return _DIRECTION_OF[(recv, send)]


def _session_header(address: str, session_id: int, version: int, times: Iterable[tuple[str, str]]
                    ) -> SessionDescription:
    # RFC 4566 §5.3: s= must not be empty; "-" is the conventional "no name".
    return SessionDescription(
        0, Origin(ORIGIN_USERNAME, str(session_id), str(version), "IN", _addrtype(address), address),
        "-", Connection.for_address(address), None, None, untrack(list(times) or [("t", "0 0")]),
    )


def _accepted_codecs(offered: MediaDescription, supported: set[str]) -> list[Codec]:
    chosen = [c for c in offered.codecs() if c.name.lower() in supported]
    if not any(c.name.lower() not in AUXILIARY_FORMATS for c in chosen):
        # Only telephone-event / CN in common. Accepting them alone is right for a stream that offers
        # nothing else (RFC 4317 §2.4's DTMF stream); for a voice stream it would be a silent call.
        if any(c.name.lower() not in AUXILIARY_FORMATS for c in offered.codecs()):
            return []
    return chosen


def answer(offer: SessionDescription, supported: Sequence[str], *, address: str, port: int,
           session_id: int, version: int, direction: str | None = None,
           ports: Sequence[int] | None = None) -> SessionDescription:
    """The answer (RFC 3264 §6) of a UA that supports the codec names ``supported``, receiving media
    at ``address``.

    - One m= line per offered line, in order (§6). A stream is rejected (port 0, the offer's formats)
      when it was offered with port 0, when no codec is in common, or when only telephone-event/CN
      are in common for a stream that offered a voice codec.
    - Formats: the offered ones we support, in the offerer's order and numbering (§6.1), each with
      its a=rtpmap and the offer's a=fmtp; a=ptime / a=maxptime are carried over.
    - Direction: the offer's mirrored (§6.1), then lowered to ``direction`` if given (hold).
    - Ports: ``ports`` gives one per m= line (0 refuses that stream); without it the first accepted
      stream gets ``port`` and each later accepted one ``port + 2``, ``port + 4``…

    Raises ``OfferAnswerError`` (488) when the offer had active streams and none could be accepted.
    """
    if ports is not None and len(ports) != len(offer.media):
        raise ValueError(f"ports has {len(ports)} entries for {len(offer.media)} m= lines")
    wanted = {name.lower() for name in supported}
    times = [(k, v) for k, v in offer.other_lines if k in ("t", "r")]  # RFC 3264 §6: same t= as the offer
    sd = _session_header(address, session_id, version, times)
    accepted_count = 0
    active_offered = 0
    for index, offered in enumerate(offer.media):
        if offered.port != 0:
            active_offered += 1
        chosen = _accepted_codecs(offered, wanted) if offered.port != 0 else []
        stream_port = 0
        if chosen:
            if ports is not None:
                stream_port = ports[index]
            else:
                stream_port = port + 2 * accepted_count
        if not chosen or stream_port == 0:
            # §6: a rejected stream keeps its m= line with port 0 and (at least one of) the formats.
            sd.add_media(MediaDescription(offered.media, 0, offered.proto, untrack(list(offered.formats))))
            continue
        accepted_count += 1
        m = MediaDescription(offered.media, stream_port, offered.proto,
                             untrack([str(c.pt) for c in chosen]))
        for c in chosen:
            encoding = f"{c.name}/{c.clock}" + (f"/{c.channels}" if c.channels != 1 else "")
            m.attributes.append(("rtpmap", f"{c.pt} {encoding}"))
            if c.fmtp is not None:
                m.attributes.append(("fmtp", f"{c.pt} {c.fmtp}"))
        for name in ("ptime", "maxptime"):
            value = offered.attribute(name)
            if value:
                m.attributes.append((name, value))
        m.attributes.append((_lower_direction(mirror_direction(offered.direction), direction), None))
        sd.add_media(m)
    if active_offered and not accepted_count:
        offered_names = sorted({c.name for m in offer.media for c in m.codecs()}) or ["no known codec"]
        raise OfferAnswerError(
            f"Not Acceptable Here: no common codec (offered {', '.join(offered_names)}; "
            f"supported {', '.join(supported) or 'none'})"
        )
    return sd


def intersect_media(offered: MediaDescription, answered: MediaDescription) -> list[Codec]:
    """The codecs of one answered stream that its offer also listed, in the answer's order; matched
    by name, clock and channels, since the answer may renumber a dynamic type (RFC 4317 §2.3)."""
    if answered.port == 0 or offered.port == 0:
        return []
    offered_formats = offered._codec_table().key_set
    table = answered._codec_table()
    return [c for c, key in zip(table.codecs, table.keys) if key in offered_formats]


def intersect(offer: SessionDescription, answer: SessionDescription) -> list[Codec]:
    """The codecs both sides agreed on, stream by stream, in the answer's order (rejected streams
    give none). m= lines pair up by position (RFC 3264 §6)."""
    result: list[Codec] = []
    for offered, answered in zip(offer.media, answer.media):
        if offered.media != answered.media:
            continue
        result.extend(intersect_media(offered, answered))
    return result


# ------------------------------------------------------------------------------------------------
# Anchoring: media through the switch
# ------------------------------------------------------------------------------------------------

def anchor(sd: SessionDescription, *, address: str, port: int, session_id: int, version: int,
           ports: Sequence[int] | None = None, in_place: bool = False) -> SessionDescription:
    """The same description as the switch presents it to the other leg: o= is the switch's
    (``switchcore``, ``session_id``, ``version`` — RFC 3264 §8: the caller passes the previous
    version + 1 when the description changed), every c= (session and media) is ``address`` (IN IP4
    or IN IP6 by its form), and the first active audio stream receives on ``port``.

    - a=rtcp on the anchored stream becomes ``port + 1`` (with our address if it named one); ICE
      attributes, which carry the leg's own addresses, are dropped.
    - Other active streams: ``ports`` (one per m= line) says where the relay receives them; without
      it they are disabled with port 0, since only the first audio stream is relayed.
    - A c= of 0.0.0.0 (RFC 2543 hold, RFC 3264 §8.4) is kept as it is, so that the hold still reads
      as a hold on the other leg; it reveals nothing of the leg.
    - ``in_place``: rewrite ``sd`` itself and return it, for a description the caller made for this
      and does not use again (one copy a leg saved).
    """
    if ports is not None and len(ports) != len(sd.media):
        raise ValueError(f"ports has {len(ports)} entries for {len(sd.media)} m= lines")
    out = sd if in_place else sd.copy()
    addrtype = _addrtype(address)
    out.origin = Origin(ORIGIN_USERNAME, str(session_id), str(version), "IN", addrtype, address)
    level = out._level
    if level.connection is not None:
        level.connection = _anchored(level.connection, addrtype, address)
    elif not out.media or any(m.connection is None for m in out.media):
        level.connection = Connection("IN", addrtype, address)
    # The lists are rebuilt only when something in them goes: usually nothing does.
    for key, _ in level.attributes:
        if key in _ICE_ATTRIBUTES:
            level.attributes = untrack([(k, v) for k, v in level.attributes if k not in _ICE_ATTRIBUTES])
            break
    audio_anchored = False  # whether the first active audio stream has had ``port``
    for index, m in enumerate(out.media):
        if m.connection is not None:
            m.connection = _anchored(m.connection, addrtype, address)
        if m.other_lines:
            m.other_lines = untrack([
                (k, str(_anchored(_parse_connection(v), addrtype, address))) if k == "c" else (k, v)
                for k, v in m.other_lines
            ])
        if m.port == 0:
            continue
        if ports is not None:
            m.port = ports[index]
        elif not audio_anchored and m.media == "audio":
            m.port = port
            audio_anchored = True
        else:
            m.port = 0
        for key, _ in m.attributes:
            if key == "rtcp" or key in _ICE_ATTRIBUTES:
                m.attributes = _anchored_attributes(m.attributes, m.port, addrtype, address)
                break
    return out


def _anchored_attributes(attributes: list[tuple[str, str | None]], port: int, addrtype: str, address: str
                         ) -> list[tuple[str, str | None]]:
    """A stream's attributes once anchored on ``port``: no ICE, a=rtcp on ``port + 1`` (none on a
    disabled stream)."""
    attrs: list[tuple[str, str | None]] = untrack([])
    for attribute in attributes:
        name = attribute[0]
        if name in _ICE_ATTRIBUTES:
            continue
        if name == "rtcp":
            if port == 0:
                continue
            # RFC 3605: a=rtcp:<port> [<nettype> <addrtype> <address>]
            attribute = (name, f"{port + 1}" if len((attribute[1] or "").split()) < 4 else
                         f"{port + 1} IN {addrtype} {address}")
        attrs.append(attribute)
    return attrs


def _anchored(conn: Connection, addrtype: str, address: str) -> Connection:
    """``conn`` pointed at the switch's ``address``; a hold's 0.0.0.0 stays as it is (see ``anchor``)."""
    return conn if _is_unspecified(conn.address) else Connection("IN", addrtype, address)


class Originator:
    """The switch's o= line for one leg across a dialog: the same session id throughout, the version
    raised by one each time the description sent differs from the last one (RFC 3264 §8), and kept
    when it is the same (RFC 3264 §8: "the version MUST NOT change" if nothing did). The first
    version defaults to the session id, as many UAs do (RFC 4566 §5.2 suggests an NTP timestamp
    for both; the caller chooses)."""

    __slots__ = ("session_id", "version", "_last")

    def __init__(self, session_id: int, version: int | None = None):
        self.session_id = session_id
        self.version = session_id if version is None else version
        # What the last description sent said, apart from its o= version (see ``_stamp``).
        self._last: tuple | None = None
        untrack(self)

    def anchor(self, sd: SessionDescription, *, address: str, port: int,
               ports: Sequence[int] | None = None, in_place: bool = False) -> SessionDescription:
        """``anchor()`` with this leg's session id and the right version."""
        candidate = anchor(sd, address=address, port=port, session_id=self.session_id,
                           version=self.version, ports=ports, in_place=in_place)
        return self._stamp(candidate)

    def anchor_wire(self, sd: SessionDescription, *, address: str, port: int,
                    ports: Sequence[int] | None = None, in_place: bool = False
                    ) -> tuple[SessionDescription, bytes]:
        """``anchor`` and the result's wire form (``serialize()``), its lines made once."""
        candidate = anchor(sd, address=address, port=port, session_id=self.session_id,
                           version=self.version, ports=ports, in_place=in_place)
        return candidate, _wire(self._stamp_lines(candidate))

    def answer(self, offer: SessionDescription, supported: Sequence[str], *, address: str, port: int,
               direction: str | None = None, ports: Sequence[int] | None = None) -> SessionDescription:
        """``answer()`` with this leg's session id and the right version."""
        candidate = answer(offer, supported, address=address, port=port, session_id=self.session_id,
                           version=self.version, direction=direction, ports=ports)
        return self._stamp(candidate)

    def _stamp(self, candidate: SessionDescription) -> SessionDescription:
        self._stamp_lines(candidate)
        return candidate

    def _stamp_lines(self, candidate: SessionDescription) -> list[str]:
        # ``same_content`` against the last description, kept as its lines (v= and everything after
        # o=) and its origin without the version rather than as a copy: the lines are made anyway
        # to serialize what is sent.
        lines = candidate.lines()
        key = untrack((lines[0], untrack(lines[2:]), _origin_without_version(candidate.origin)))
        if self._last is not None and key != self._last:
            self.version += 1
            candidate.origin.sess_version = str(self.version)
            lines[1] = f"o={candidate.origin}"
        self._last = key
        return lines


# ------------------------------------------------------------------------------------------------
# Hold and resume (RFC 3264 §8.4)
# ------------------------------------------------------------------------------------------------

def hold_direction(sd: SessionDescription) -> str:
    """The direction a (re-)offer asks for, from the sender's side, for its first active audio
    stream (else its first stream, else the session): a=sendonly / a=inactive is a hold, sendrecv a
    resume. RFC 2543's hold, c=0.0.0.0, reads as the sender refusing to receive: sendrecv becomes
    sendonly, recvonly becomes inactive (RFC 3264 §8.4)."""
    m = sd.audio() or (sd.media[0] if sd.media else None)
    if m is None:
        return sd.direction
    direction = m.direction
    conn = m.effective_connection
    if conn is not None and conn.is_unspecified:
        send, _ = DIRECTIONS[direction]
        direction = _DIRECTION_OF[(send, False)]
    return direction


def is_hold(sd: SessionDescription) -> bool:
    """Whether the description puts the call on hold (sendonly or inactive, or c=0.0.0.0)."""
    return hold_direction(sd) in ("sendonly", "inactive")
