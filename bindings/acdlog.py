"""The queue log in LMDB: the ACD's member and agent events (``core/acd/log.py``) as the call layer emits
them, written through the CDR writer's group commits (so a queue event is as durable as the call records
around it) into the ``queue_log`` sub-database, keyed by time then a sequence number: one cursor scan
reads any time range in the order things happened.
"""
from __future__ import annotations

from typing import Iterator

from bindings.cdr import QUEUE_LOG_DB, CdrWriter
from bindings.storage import Storage
from core.acd.log import QueueLogEntry, decode, encode, log_key

__all__ = ["QueueLog", "read_queue_log"]


class QueueLog:
    """Appends entries in order; the sequence number starts after the last key on disk."""

    def __init__(self, writer: CdrWriter):
        self.writer = writer
        self._seq = 0
        storage = writer.storage
        with storage.env.begin(db=storage.db(QUEUE_LOG_DB)) as txn:
            cursor = txn.cursor()
            if cursor.last():
                self._seq = int.from_bytes(bytes(cursor.key())[8:], "big") + 1

    def append(self, entry: QueueLogEntry):
        key = log_key(entry, self._seq)
        self._seq += 1
        return self.writer.log(key, encode(entry))


def read_queue_log(storage: Storage, start: float | None = None, end: float | None = None) -> Iterator[QueueLogEntry]:
    """The entries with ``start <= at < end``, in order."""
    first = log_key(QueueLogEntry(at=start or 0.0, kind=""), 0)
    with storage.env.begin(db=storage.db(QUEUE_LOG_DB)) as txn:
        cursor = txn.cursor()
        if not cursor.set_range(first):
            return
        for _, value in cursor:
            entry = decode(bytes(value))
            if end is not None and entry.at >= end:
                return
            yield entry
