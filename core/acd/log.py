"""The queue log: every member event and agent event of the ACD, in one time-ordered log, as the call
layer emits them (``core/call/b2bua.py``) and the node keeps them (LMDB, ``bindings/acdlog.py``).

One entry is one ``QueueLogEntry`` (a msgspec array-like Struct, fields only ever appended). Kinds:

member events (``member`` is the caller's Call-ID, ``queue`` its queue)
  ``join``      the caller entered the queue (``priority``)
  ``offer``     an agent's phone was rung for it (``agent``)
  ``noanswer``  the agent did not answer the offer (``reason``: "timeout", "busy", "declined", ...)
  ``answer``    the agent answered (``agent``, ``wait``: seconds since join)
  ``abandon``   the caller hung up while waiting (``wait``, ``position``: 1 is the head)
  ``exit``      the queue took the caller out unanswered (``reason``: max_wait, leave_empty,
                exit_key; ``wait``), or refused it at the door (join_empty: a ``join`` then this
                ``exit``, counted as refused, not offered)
  ``transfer``  the call left the queue for another target (``reason``: the target)
agent events (``agent``)
  ``status``    the agent's status (``reason``: logged_out, available, on_break; ``detail``: the
                break's reason code) — set by the agent or, for missed offers, by the switch
  ``state``     the agent's state, set by the switch (``reason``: offered, talking, wrap_up, idle;
                ``detail``: the wrap-up's seconds, or why an offer was withdrawn)
  ``talk_end``  the agent's call ended (``wait``: talk seconds), wrap-up (``detail``: its seconds)
                starts

``recompute`` rebuilds a queue's counters (offered, answered, abandoned, short abandons, answered in
the service level, average speed of answer, exited) from the entries alone: the live counters of the
ACD (``queue_stats``) and the log must agree exactly.
"""
from __future__ import annotations

import struct

import msgspec

__all__ = ["QueueLogEntry", "encode", "decode", "log_key", "recompute", "QueueCounters", "agent_times"]


class QueueLogEntry(msgspec.Struct, frozen=True, array_like=True, gc=False, kw_only=True):
    at: float
    kind: str
    queue: str = ""
    member: str = ""
    agent: str = ""
    wait: float = 0.0
    position: int = 0
    priority: int = 0
    reason: str = ""
    detail: str = ""


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(QueueLogEntry)
_KEY = struct.Struct(">QQ")


def encode(entry: QueueLogEntry) -> bytes:
    return _encoder.encode(entry)


def decode(data: bytes) -> QueueLogEntry:
    return _decoder.decode(data)


def log_key(entry: QueueLogEntry, seq: int) -> bytes:
    """Time in microseconds then a sequence number: keys sort in the order the events happened."""
    return _KEY.pack(max(0, int(entry.at * 1_000_000)), seq)


class QueueCounters(msgspec.Struct, frozen=True):
    offered: int = 0
    answered: int = 0
    abandoned: int = 0
    short_abandoned: int = 0
    answered_in_service_level: int = 0
    average_speed_of_answer: float = 0.0
    exited: int = 0
    refused: int = 0


def recompute(entries, queue: str, *, service_level: float, short_abandon: float) -> QueueCounters:
    """A queue's counters from its log entries (the ACD's ``QueueStats`` definitions)."""
    offered = answered = abandoned = short = in_sl = exited = refused = 0
    waited = 0.0
    for e in entries:
        if e.queue != queue:
            continue
        if e.kind == "join":
            offered += 1
        elif e.kind == "answer":
            answered += 1
            waited += e.wait
            if e.wait <= service_level:
                in_sl += 1
        elif e.kind == "abandon":
            if e.wait < short_abandon:
                short += 1
            else:
                abandoned += 1
        elif e.kind == "exit":
            if e.reason == "join_empty":  # refused at the door: it never counted as offered
                refused += 1
                offered -= 1
            else:
                exited += 1
    return QueueCounters(offered, answered, abandoned, short, in_sl,
                         waited / answered if answered else 0.0, exited, refused)


def agent_times(entries, interval: int, *, end: float) -> dict[tuple[str, int], tuple[float, float]]:
    """Each agent's logged-in and available seconds per interval (``interval`` seconds, keys aligned to
    multiples of it), from the log up to ``end``: the inputs of occupancy and utilisation
    (``core.cdr.kpi.KpiBook.add_agent_time``, docs/kpis.md).

    Logged in: status available or on break (an agent's status before its first entry is logged out).
    Busy: each ``talk_end`` covers [its time − talk seconds, its time + wrap-up seconds]. Available:
    status available and not busy (ringing counts as available: the agent was ready)."""
    status: dict[str, tuple[str, float]] = {}
    logged: dict[str, list[tuple[float, float]]] = {}
    ready: dict[str, list[tuple[float, float]]] = {}
    busy: dict[str, list[tuple[float, float]]] = {}

    def close(agent: str, t: float) -> None:
        if agent in status:
            s, since = status[agent]
            if t > since:
                if s != "logged_out":
                    logged.setdefault(agent, []).append((since, t))
                if s == "available":
                    ready.setdefault(agent, []).append((since, t))

    for e in entries:
        if e.at > end:
            break
        if e.kind == "status" and e.agent:
            close(e.agent, e.at)
            status[e.agent] = (e.reason, e.at)
        elif e.kind == "talk_end" and e.agent:
            wrap = float(e.detail) if e.detail else 0.0
            busy.setdefault(e.agent, []).append((e.at - e.wait, min(end, e.at + wrap)))
    for agent in list(status):
        close(agent, end)
    out: dict[tuple[str, int], tuple[float, float]] = {}
    for agent in set(logged) | set(ready):
        in_spans = _split(logged.get(agent, []), interval)
        free = _subtract(ready.get(agent, []), sorted(busy.get(agent, [])))
        free_spans = _split(free, interval)
        for start in set(in_spans) | set(free_spans):
            out[(agent, start)] = (in_spans.get(start, 0.0), free_spans.get(start, 0.0))
    return out


def _subtract(spans: list[tuple[float, float]], holes: list[tuple[float, float]]) -> list[tuple[float, float]]:
    out = []
    for a, b in spans:
        cur = a
        for h0, h1 in holes:
            if h1 <= cur or h0 >= b:
                continue
            if h0 > cur:
                out.append((cur, h0))
            cur = max(cur, h1)
        if cur < b:
            out.append((cur, b))
    return out


def _split(spans: list[tuple[float, float]], interval: int) -> dict[int, float]:
    """Seconds of ``spans`` in each interval (keys: interval starts)."""
    out: dict[int, float] = {}
    for a, b in spans:
        t = a
        while t < b:
            start = int(t // interval) * interval
            stop = min(b, start + interval)
            out[start] = out.get(start, 0.0) + stop - t
            t = stop
    return out
