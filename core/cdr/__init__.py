"""Call records and what is computed from them.

- ``core.cdr.record``: the call record (msgspec Structs, append-only fields) and its LMDB key
  (big-endian end time + call id, so a time range is one cursor scan).
- ``core.cdr.kpi``: call-centre KPIs per node, trunk, queue, agent, campaign and interval, live and
  historical through one ``KpiBook`` (definitions in docs/kpis.md).
- ``core.cdr.erlang``: Erlang B, C and A planning and staffing per interval.

Only the record names are imported here: the writer needs them on every call, while numpy (KPIs,
planning) is loaded by whoever imports those modules.
"""
from core.cdr.record import (
    CallRecord,
    Direction,
    Disposition,
    HangupBy,
    Leg,
    QueueOutcome,
    QueueSegment,
    decode,
    encode,
    key_range,
    record_key,
    split_key,
    time_key,
)

__all__ = [
    "CallRecord",
    "Direction",
    "Disposition",
    "HangupBy",
    "Leg",
    "QueueOutcome",
    "QueueSegment",
    "decode",
    "encode",
    "key_range",
    "record_key",
    "split_key",
    "time_key",
]
