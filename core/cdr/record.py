"""The call record (CDR): one record per call, with its legs, queue segments, agents tried, recording and
per-leg media quality, as it is written to LMDB when the call ends.

Records are ``msgspec.Struct(frozen=True, array_like=True, gc=False)`` encoded as MessagePack arrays: a
record is a short array of values in field order, and a struct whose class has gained fields still decodes
an old record (missing trailing fields take their defaults) — so fields are only ever appended, each with a
default, never removed, renamed or reordered (msgspec's schema-evolution rules for array-like structs). A
reader that needs a few fields decodes into a shorter struct of the same prefix (see ``core.cdr.kpi``).

Times are seconds since the epoch as floats, the ``now`` every ``core`` layer is handed; a time that did not
happen (a call never answered) is ``None``.

The storage key (``record_key``) is the end time in milliseconds as 8 big-endian bytes followed by the
call id, so that LMDB's byte order is time order and "every call that ended between t0 and t1" is one cursor
scan from ``time_key(t0)`` to ``time_key(t1)``; the call id makes the key unique.
"""
from __future__ import annotations

import enum
import math
import struct

import msgspec

__all__ = [
    "Direction",
    "Disposition",
    "HangupBy",
    "QueueOutcome",
    "Leg",
    "QueueSegment",
    "CallRecord",
    "record_key",
    "time_key",
    "key_range",
    "split_key",
    "encode",
    "decode",
]


class Direction(enum.Enum):
    INBOUND = "inbound"  # a call that came in on a trunk (a customer calling the centre)
    OUTBOUND = "outbound"  # a call the switch placed (a campaign attempt, an agent dialling out)


class Disposition(enum.Enum):
    """How a call (or one leg of it) ended. The values follow the SIP final responses they stand for."""

    ANSWERED = "answered"  # 2xx: the called party (agent, IVR, customer) answered
    BUSY = "busy"  # 486 Busy Here, 600 Busy Everywhere
    NO_ANSWER = "no-answer"  # 480/408, or our ring timer ran out
    DECLINED = "declined"  # 603 Decline, 403: the called user refused it (user-determined, ITU-T E.425)
    INVALID_NUMBER = "invalid-number"  # 404, 484, 604: a dead or wrong number (outbound filtering)
    FAILED = "failed"  # every other failure: 4xx-6xx from the network, transport errors, timeouts
    ABANDONED = "abandoned"  # the caller hung up before anyone answered (ringing or queued)
    REFUSED_NO_CHANNEL = "refused-no-channel"  # refused for lack of trunk channels (503): call loss
    INTERRUPTED = "interrupted"  # cut off by a crash; closed on restart from the active-calls table


class HangupBy(enum.Enum):
    CALLER = "caller"
    CALLEE = "callee"
    SYSTEM = "system"  # the switch: a timer, a queue exit, an API hang-up, a shutdown


class QueueOutcome(enum.Enum):
    """How a stay in one queue ended."""

    ANSWERED = "answered"  # an agent answered
    ABANDONED = "abandoned"  # the caller hung up while waiting
    TIMEOUT = "timeout"  # the queue's maximum wait ran out (the call went to the queue's exit)
    OVERFLOW = "overflow"  # moved on to another queue or group (inbound → blended → outbound)
    EXIT_KEY = "exit-key"  # the caller pressed the exit key
    NO_AGENTS = "no-agents"  # the queue had no agent logged in and refused to hold the call
    INTERRUPTED = "interrupted"  # cut off by a crash


class Leg(msgspec.Struct, frozen=True, array_like=True, gc=False, kw_only=True):
    """One SIP dialog of the call (the caller's leg, an agent's or a customer's leg)."""

    leg_id: str
    peer: str  # the far end's URI or trunk/agent name
    offered: float  # INVITE sent or received
    ringing: float | None = None  # first 180/183 (post-dial delay ends here)
    answered: float | None = None  # 2xx
    ended: float | None = None  # BYE, CANCEL or final failure
    disposition: Disposition = Disposition.FAILED
    sip_status: int = 0  # the final response's status (200, 486, 503 ...), 0 when none was seen
    codec: str = ""  # e.g. "PCMU"
    packets_received: int = 0
    packets_lost: int = 0
    jitter_ms: float = 0.0  # RFC 3550 §6.4.1 interarrival jitter, at the end of the call
    mos: float | None = None  # ITU-T G.107 E-model estimate, None when no media flowed


class QueueSegment(msgspec.Struct, frozen=True, array_like=True, gc=False, kw_only=True):
    """One stay of the call in one queue; an overflowed call has one segment per queue it passed."""

    queue: str
    joined: float
    left: float
    outcome: QueueOutcome
    agents_offered: tuple[str, ...] = ()  # every agent the call rang, in order (ring-no-answer included)
    answered_by: str = ""  # the agent who answered ("" unless outcome is ANSWERED)
    agent_ended: float | None = None  # the agent's leg ended (talk time = agent_ended − left)
    after_call_work: float = 0.0  # wrap-up seconds the agent spent after the call, when known


class CallRecord(msgspec.Struct, frozen=True, array_like=True, gc=False, kw_only=True):
    """One call, from the first INVITE to the last BYE."""

    call_id: str
    direction: Direction
    offered: float  # the call arrived (inbound INVITE) or was attempted (outbound INVITE sent)
    ended: float
    disposition: Disposition
    caller: str = ""
    callee: str = ""
    node: str = ""
    trunk: str = ""
    answered: float | None = None
    hangup_by: HangupBy = HangupBy.SYSTEM
    legs: tuple[Leg, ...] = ()
    queue_segments: tuple[QueueSegment, ...] = ()
    dtmf: str = ""  # every DTMF digit collected, in order
    recording: str = ""  # path of the WAV recording, relative to the data folder
    campaign_id: str = ""  # outbound: the campaign and the contact this attempt dialled
    contact_id: str = ""
    post_dial_delay: float | None = None  # seconds from INVITE to the first ringing (outbound)

    @property
    def agent(self) -> str:
        """The agent who answered the call last ("" when no agent did)."""
        for seg in reversed(self.queue_segments):
            if seg.answered_by:
                return seg.answered_by
        return ""


# ------------------------------------------------------------------------------------------- keys

_KEY_TIME = struct.Struct(">Q")
KEY_TIME_BYTES = _KEY_TIME.size


def _ms(t: float) -> int:
    ms = math.floor(t * 1000.0)
    if not 0 <= ms < 1 << 64:
        raise ValueError(f"time {t!r} does not fit a CDR key")
    return ms


def time_key(t: float) -> bytes:
    """The smallest key of a record that ended at or after time ``t``."""
    return _KEY_TIME.pack(_ms(t))


def record_key(record: CallRecord) -> bytes:
    """Big-endian end time in ms, then the call id: LMDB's key order is end-time order."""
    return _KEY_TIME.pack(_ms(record.ended)) + record.call_id.encode()


def key_range(start: float, end: float) -> tuple[bytes, bytes]:
    """Keys of records that ended in [start, end): scan from the first, stop at the first key >= the second."""
    return time_key(start), time_key(end)


def split_key(key: bytes) -> tuple[int, str]:
    """(end time in ms, call id) from a key."""
    return _KEY_TIME.unpack_from(key)[0], key[KEY_TIME_BYTES:].decode()


# ------------------------------------------------------------------------------------------- bytes

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(CallRecord)


def encode(record: CallRecord) -> bytes:
    return _encoder.encode(record)


def decode(data: bytes | memoryview) -> CallRecord:
    return _decoder.decode(data)
