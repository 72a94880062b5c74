"""The call-record store in LMDB: a group-committing writer, the active-call journal, and time-range reads.

DESIGN.md ("Storage") and MISSION.md ("Records and figures"): one CDR per call, written durably; a call
counts as recorded only once the write transaction holding it has committed (the environment is opened
with ``sync=True``, so ``commit`` returns after the data reached the disk); calls cut off by a crash are
closed as such on restart.

Sub-databases of the node's environment (``bindings.storage``):

- ``cdr``: key ``core.cdr.record.record_key`` (end time in ms, 8 bytes big-endian, then the call id), value
  the MessagePack record. Key order is end-time order, so "every call that ended in [t0, t1)" is one cursor
  scan (``CdrReader.scan``).
- ``cdr_by_call``: call id → the record's key in ``cdr``. It makes a write idempotent (a call id already
  recorded is never written twice, whoever asks: a retry, the recovery) and answers ``CdrReader.get``.
- ``active_calls``: call id → ``JournalEntry`` (the call's record so far and the time the entry was
  written). Written when a call is answered (``call_answered``); the final record's transaction deletes it,
  so "recorded" and "no longer active" become true together. What is left on open was cut off by a crash.

Writing. LMDB allows one write transaction at a time, and a synced commit costs a disk flush (about 8 ms
on the reference machine), so one commit per call would cap a node at ~125 calls a second. ``CdrWriter``
owns the write transactions in one dedicated thread; submitters (the asyncio loop, tools, tests) add
operations to the open ``Commit`` group and get it back. The thread takes the group once its first
operation is ``max_delay`` old (or it holds ``max_group`` operations), applies it in one transaction,
commits, and only then tells every submitter: ``Commit.wait()`` returns, ``add_done_callback`` callbacks
run (in the writer thread), and asyncio futures are resolved on their own loop with one
``loop.call_soon_threadsafe`` per loop and group. While a commit is being flushed the next group fills, so
the group size follows the load and the flush cost is shared by everything that arrived meanwhile.

Recovery (``CdrWriter(storage)``, before the thread starts): every entry left in ``active_calls`` becomes a
record with disposition ``interrupted``, hung up by the system, ending at the **journal entry's write
time** — the last moment the node is known to have had the call up: its answer, or the latest
``call_answered`` update of it (a node that wants a tighter bound re-writes the entry now and then). Legs
and answered queue segments with no end get the same end. A call id already in ``cdr_by_call`` (it
completed) is only removed from the journal, never written twice. The recovered records are in
``writer.recovered`` (for the live KPIs and the log).
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from itertools import islice
from typing import Callable, Iterable, Iterator

import msgspec

from bindings.storage import Storage
from core.cdr.record import (
    CallRecord,
    Disposition,
    HangupBy,
    QueueOutcome,
    decode,
    encode,
    key_range,
    record_key,
)

__all__ = ["CdrWriter", "CdrReader", "Commit", "CommitError", "JournalEntry", "interrupted_record"]

log = logging.getLogger("switchcore.cdr")

CDR_DB = "cdr"
INDEX_DB = "cdr_by_call"
JOURNAL_DB = "active_calls"
QUEUE_LOG_DB = "queue_log"

# The largest key: scans without an upper bound stop here (no record ends after year 584 million).
_KEY_END = b"\xff" * 9


class JournalEntry(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """An active call: when the node last wrote its entry, and its record so far."""

    written: float
    record: CallRecord


_journal_encoder = msgspec.msgpack.Encoder()
_journal_decoder = msgspec.msgpack.Decoder(JournalEntry)


class CommitError(Exception):
    """The transaction holding these records did not commit: they are not recorded."""


# Operation kinds, applied in submission order within a group.
_RECORD = 0  # (kind, call id, key, value): the final record; removes the call's journal entry
_JOURNAL = 1  # (kind, call id, None, entry): the call's record so far
_LOG = 2  # (kind, None, key, entry): one queue-log entry (core/acd/log.py), in the same group commits


class Commit:
    """One group of operations committed together; every submitter of the group holds the same object."""

    __slots__ = ("_ops", "_first", "_event", "_callbacks", "_futures", "error", "records", "written",
                 "duplicates", "committed_at")

    def __init__(self) -> None:
        self._ops: list[tuple] = []
        self._first = 0.0  # monotonic time of the first operation
        self._event = threading.Event()
        self._callbacks: list[Callable[[Commit], None]] = []
        self._futures: dict[asyncio.AbstractEventLoop, list[asyncio.Future]] = {}
        self.error: BaseException | None = None
        self.records = 0  # final records in the group
        self.written = 0  # of which newly written (the others were already recorded)
        self.duplicates = 0
        self.committed_at = 0.0  # monotonic time the commit returned

    def __len__(self) -> int:
        return len(self._ops)

    def done(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float | None = None) -> None:
        """Return once the group's transaction has committed; raise ``CommitError`` if it failed."""
        if not self._event.wait(timeout):
            raise TimeoutError(f"no commit within {timeout} s")
        if self.error is not None:
            raise CommitError(f"the commit failed: {self.error!r}") from self.error

    def add_done_callback(self, fn: Callable[[Commit], None]) -> None:
        """``fn(commit)`` after the commit (in the writer thread; at once if already done)."""
        # Registration happens under the writer's lock while the group is still open (CdrWriter.submit);
        # a group handed out by submit may however be done already.
        if self._event.is_set():
            fn(self)
        else:
            self._callbacks.append(fn)

    def _resolve(self) -> None:
        self._event.set()
        for fn in self._callbacks:
            try:
                fn(self)
            except Exception:  # a submitter's bug must not stop the writer
                log.exception("cdr: commit callback failed")
        error = self.error
        for loop, futures in self._futures.items():
            try:
                loop.call_soon_threadsafe(_settle, futures, error)
            except RuntimeError:  # that loop is closed: nobody is waiting any more
                pass


def _settle(futures: list[asyncio.Future], error: BaseException | None) -> None:
    # Runs on the futures' own loop.
    for fut in futures:
        if fut.done():  # cancelled by its awaiter
            continue
        if error is None:
            fut.set_result(None)
        else:
            fut.set_exception(CommitError(f"the commit failed: {error!r}"))


def interrupted_record(entry: JournalEntry) -> CallRecord:
    """The record of a call a crash cut off: closed at the journal entry's write time (see the module doc)."""
    rec = entry.record
    end = max(entry.written, rec.answered if rec.answered is not None else rec.offered)
    legs = tuple(leg if leg.ended is not None else msgspec.structs.replace(leg, ended=end) for leg in rec.legs)
    segments = tuple(
        msgspec.structs.replace(seg, agent_ended=end)
        if seg.outcome is QueueOutcome.ANSWERED and seg.agent_ended is None else seg
        for seg in rec.queue_segments
    )
    return msgspec.structs.replace(rec, ended=end, disposition=Disposition.INTERRUPTED,
                                   hangup_by=HangupBy.SYSTEM, legs=legs, queue_segments=segments)


class CdrWriter:
    """The one writer of the CDR sub-databases of a ``Storage``; see the module doc.

    Synchronous: ``write(record)`` (durable on return), ``submit(record) -> Commit``, ``flush()``.
    Asyncio: ``await writer.record(record)``, ``await writer.answered(record_so_far)``.
    ``stop()`` commits what is pending, stops the thread and syncs the environment.
    """

    def __init__(self, storage: Storage, *, max_delay: float = 0.002, max_group: int = 50_000,
                 clock: Callable[[], float] = time.time, recover: bool = True):
        if max_delay < 0 or max_group < 1:
            raise ValueError("max_delay must be >= 0 and max_group >= 1")
        self.storage = storage
        self.env = storage.env
        self.max_delay = max_delay
        self.max_group = max_group
        self.clock = clock
        self._cdr = storage.db(CDR_DB)
        self._index = storage.db(INDEX_DB)
        self._journal = storage.db(JOURNAL_DB)
        self._queue_log = storage.db(QUEUE_LOG_DB)
        self._cond = threading.Condition(threading.Lock())
        self._open = Commit()
        self._last: Commit | None = None  # the group most recently taken by the thread
        self._stopping = False
        self._stopped = False
        self.commits = 0
        self.records = 0
        # Readers killed with their process leave slots in the lock table; free them before writing.
        self.env.reader_check()
        self._journaled: set[bytes] = set()
        self.recovered: list[CallRecord] = self._recover() if recover else []
        self._load_journaled()
        self._thread = threading.Thread(target=self._run, name="cdr-writer", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ submitting

    def submit(self, record: CallRecord) -> Commit:
        """Queue the final record of a call; the returned group's ``wait()`` returns once it is durable."""
        value = encode(record)  # encoding errors surface here, in the submitter, not in the group
        return self._add((_RECORD, record.call_id.encode(), record_key(record), value), None)

    def write(self, record: CallRecord, timeout: float | None = None) -> None:
        """Record one call; returns once its commit has returned (the call counts as recorded)."""
        self.submit(record).wait(timeout)

    def write_many(self, records: Iterable[CallRecord], timeout: float | None = None) -> None:
        """Record many calls; returns once every one of them is committed."""
        groups = {id(g): g for g in map(self.submit, records)}
        for group in groups.values():
            group.wait(timeout)

    def call_answered(self, record_so_far: CallRecord, now: float | None = None) -> Commit:
        """Journal an answered call (or update its entry): what a crash from now on leaves to recover."""
        entry = JournalEntry(self.clock() if now is None else now, record_so_far)
        return self._add((_JOURNAL, record_so_far.call_id.encode(), None, _journal_encoder.encode(entry)), None)

    async def record(self, record: CallRecord) -> None:
        """Await the call's durable recording (from the node's event loop)."""
        await self.record_future(record)

    async def answered(self, record_so_far: CallRecord, now: float | None = None) -> None:
        """``call_answered``, awaited."""
        await self.answered_future(record_so_far, now)

    def record_future(self, record: CallRecord) -> asyncio.Future:
        """``record`` as a future of the running loop, done once the record is durable (its
        exception a ``CommitError`` if the commit failed): what the node holds a call's last answers
        on, without a task per call."""
        value = encode(record)
        fut = asyncio.get_running_loop().create_future()
        self._add((_RECORD, record.call_id.encode(), record_key(record), value), fut)
        return fut

    def answered_future(self, record_so_far: CallRecord, now: float | None = None) -> asyncio.Future:
        """``answered`` as a future of the running loop (see ``record_future``)."""
        entry = JournalEntry(self.clock() if now is None else now, record_so_far)
        fut = asyncio.get_running_loop().create_future()
        self._add((_JOURNAL, record_so_far.call_id.encode(), None, _journal_encoder.encode(entry)), fut)
        return fut

    def log(self, key: bytes, value: bytes) -> Commit:
        """Queue one queue-log entry (``core.acd.log``: its key orders the log by time)."""
        return self._add((_LOG, None, key, value), None)

    def _add(self, op: tuple, fut: asyncio.Future | None) -> Commit:
        with self._cond:
            if self._stopping:
                raise RuntimeError("the CDR writer is stopped")
            group = self._open
            ops = group._ops
            if not ops:
                group._first = time.monotonic()
                self._cond.notify()
            ops.append(op)
            if len(ops) == self.max_group:
                self._cond.notify()
            if fut is not None:
                loop = fut.get_loop()
                futures = group._futures.get(loop)
                if futures is None:
                    futures = group._futures[loop] = []
                futures.append(fut)
            return group

    def flush(self, timeout: float | None = None) -> None:
        """Return once everything submitted before this call is committed."""
        with self._cond:
            group = self._open if self._open._ops else self._last
            if group is self._open:
                self._cond.notify()
        if group is not None:
            group.wait(timeout)

    def stop(self, timeout: float | None = 30.0) -> None:
        """Commit what is pending, stop the thread, sync the environment. Safe to call twice."""
        with self._cond:
            if self._stopped:
                return
            self._stopping = True
            self._cond.notify()
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"the CDR writer did not stop within {timeout} s")
        self._stopped = True
        self.env.sync(True)

    def __enter__(self) -> CdrWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------ the writer thread

    def _run(self) -> None:
        cond = self._cond
        while True:
            with cond:
                while not self._open._ops and not self._stopping:
                    cond.wait()
                if not self._open._ops:
                    return  # stopping, nothing pending
                # Gather: let the group grow until its first operation is max_delay old.
                while not self._stopping and len(self._open._ops) < self.max_group:
                    left = self._open._first + self.max_delay - time.monotonic()
                    if left <= 0:
                        break
                    cond.wait(left)
                group = self._open
                self._open = Commit()
                self._last = group
            self._commit(group)

    def _commit(self, group: Commit) -> None:
        journaled = self._journaled
        removed: list[bytes] = []
        added: list[bytes] = []
        try:
            with self.env.begin(write=True) as txn:
                put, delete = txn.put, txn.delete
                cdr, index, journal = self._cdr, self._index, self._journal
                for kind, call_id, key, value in group._ops:
                    if kind == _LOG:
                        put(key, value, db=self._queue_log)
                    elif kind == _RECORD:
                        group.records += 1
                        # The index put fails (False) when the call is already recorded: never twice.
                        if put(call_id, key, db=index, overwrite=False):
                            put(key, value, db=cdr)
                            group.written += 1
                        else:
                            group.duplicates += 1
                        if call_id in journaled:
                            delete(call_id, db=journal)
                            journaled.discard(call_id)
                            removed.append(call_id)
                    elif txn.get(call_id, db=index) is None:  # journal a call not recorded yet
                        put(call_id, value, db=journal)
                        if call_id not in journaled:
                            journaled.add(call_id)
                            added.append(call_id)
            # ``with`` committed the transaction (sync=True: it is on disk) or raised.
        except Exception as exc:
            log.error("cdr: commit of %d operations failed: %r", len(group._ops), exc)
            group.error = exc
            journaled.update(removed)  # the transaction was aborted: undo the in-memory view
            journaled.difference_update(added)
        group.committed_at = time.monotonic()
        if group.error is None:
            self.commits += 1
            self.records += group.written
            if group.duplicates:
                log.warning("cdr: %d records of calls already recorded were not written again", group.duplicates)
        group._ops = []  # drop the bytes; the counts stay
        group._resolve()

    # ------------------------------------------------------------------ open

    def _load_journaled(self) -> None:
        with self.env.begin(db=self._journal) as txn:
            self._journaled = {bytes(k) for k in txn.cursor().iternext(keys=True, values=False)}

    def _recover(self) -> list[CallRecord]:
        recovered: list[CallRecord] = []
        with self.env.begin(write=True) as txn:
            entries = list(txn.cursor(db=self._journal))
            for call_id, value in entries:
                try:
                    entry = _journal_decoder.decode(value)
                except msgspec.DecodeError as exc:  # keep it: a later version may read it
                    log.error("cdr: journal entry %r does not decode, left in place: %s", call_id, exc)
                    continue
                if txn.get(call_id, db=self._index) is None:
                    record = interrupted_record(entry)
                    key = record_key(record)
                    txn.put(call_id, key, db=self._index)
                    txn.put(key, encode(record), db=self._cdr)
                    recovered.append(record)
                txn.delete(call_id, db=self._journal)
        if recovered:
            log.warning("cdr: %d calls cut off by a crash closed as interrupted", len(recovered))
        return recovered


class CdrReader:
    """Reads of the CDR sub-databases; any number of readers run alongside the writer (LMDB MVCC).

    A scan holds one read transaction, so it sees one consistent snapshot however long it runs.
    """

    def __init__(self, storage: Storage):
        self.storage = storage
        self.env = storage.env
        self._cdr = storage.db(CDR_DB)
        self._index = storage.db(INDEX_DB)
        self._journal = storage.db(JOURNAL_DB)

    def scan(self, start: float | None = None, end: float | None = None, *, batch: int = 4096) -> Iterator[list[bytes]]:
        """The stored records (MessagePack bytes) of the calls that ended in [start, end), in end-time
        order, as lists of at most ``batch`` values: constant memory whatever the range.

        A batch is taken by the cursor's own iterator (no Python step per record); only the key of its
        last record is compared with the end of the range, and the one batch that crosses it is cut by
        walking its keys."""
        lo, hi = _bounds(start, end)
        with self.env.begin(db=self._cdr) as txn:
            cursor = txn.cursor()
            if not cursor.set_range(lo):
                return
            values = cursor.iternext(keys=False, values=True)
            before: bytes | None = None  # the last key of the previous batch
            while True:
                chunk = list(islice(values, batch))
                if not chunk:
                    return
                if len(chunk) == batch and cursor.key() < hi:
                    before = cursor.key()
                    yield chunk
                    continue
                # The range ends in this batch, or the database did (the cursor is then unpositioned).
                probe = txn.cursor()
                if before is None:
                    probe.set_range(lo)
                else:
                    probe.set_key(before)
                    probe.next()
                n = 0
                for key in probe.iternext(keys=True, values=False):
                    if key >= hi or n == len(chunk):
                        break
                    n += 1
                if n:
                    yield chunk[:n]
                return

    def records(self, start: float | None = None, end: float | None = None) -> Iterator[CallRecord]:
        """The records of the calls that ended in [start, end), decoded, one at a time."""
        for values in self.scan(start, end):
            yield from map(decode, values)

    def get(self, call_id: str) -> CallRecord | None:
        with self.env.begin() as txn:
            key = txn.get(call_id.encode(), db=self._index)
            if key is None:
                return None
            return decode(txn.get(key, db=self._cdr))

    def count(self) -> int:
        with self.env.begin() as txn:
            return txn.stat(self._cdr)["entries"]

    def active(self) -> list[JournalEntry]:
        """The calls in the journal now (answered, not yet recorded)."""
        with self.env.begin(db=self._journal) as txn:
            return [_journal_decoder.decode(v) for _, v in txn.cursor()]


def _bounds(start: float | None, end: float | None) -> tuple[bytes, bytes]:
    lo, hi = key_range(0.0 if start is None else max(start, 0.0), 1.0 if end is None else end)
    if end is None:
        hi = _KEY_END
    return lo, hi
