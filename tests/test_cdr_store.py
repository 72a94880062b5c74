"""The CDR store in LMDB (bindings/cdr.py): records written in grouped commits are acknowledged only once
durable, survive a process killed with SIGKILL, and calls cut off by a crash are closed as interrupted,
exactly once, on the next open."""
from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import threading
from pathlib import Path

import msgspec
import pytest

from bindings.cdr import CdrReader, CdrWriter, JournalEntry
from bindings.storage import Storage
from core.cdr.record import (
    CallRecord,
    Direction,
    Disposition,
    HangupBy,
    Leg,
    QueueOutcome,
    QueueSegment,
    record_key,
)
from tests.test_kpi import synthetic_records

REPO = Path(__file__).resolve().parents[1]
T0 = 1_700_000_000.0


def answered_call(call_id: str, offered: float = T0, ended: float | None = None) -> CallRecord:
    """An inbound call answered by agent a1 from queue sales; ``ended`` None gives the record so far."""
    answered = offered + 12.0
    return CallRecord(
        call_id=call_id, direction=Direction.INBOUND, offered=offered,
        ended=ended if ended is not None else answered, disposition=Disposition.ANSWERED,
        caller="sip:+3312345678@trunk1", callee="sip:sales@pbx", node="n1", trunk="trunk1", answered=answered,
        hangup_by=HangupBy.CALLER,
        legs=(Leg(leg_id=f"{call_id}-a", peer="trunk1", offered=offered, answered=answered,
                  disposition=Disposition.ANSWERED, sip_status=200, codec="PCMU"),),
        queue_segments=(QueueSegment(queue="sales", joined=offered + 1.0, left=answered,
                                     outcome=QueueOutcome.ANSWERED, agents_offered=("a1",), answered_by="a1"),),
    )


def run_child(data: Path, body: str) -> subprocess.Popen:
    """A Python process with the repository importable, running ``body`` with DATA set."""
    script = f"import sys; sys.path.insert(0, {str(REPO)!r})\nfrom pathlib import Path\nDATA = Path({str(data)!r})\n"
    return subprocess.Popen([sys.executable, "-c", script + body], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def kill(child: subprocess.Popen) -> None:
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=10)
    assert child.returncode == -signal.SIGKILL


# --------------------------------------------------------------------------------------------- write, read


def test_records_written_read_back_by_time_range_and_call_id(tmp_path):
    records = synthetic_records(3000, seed=7)
    with Storage(tmp_path) as storage:
        with CdrWriter(storage) as writer:
            writer.write_many(records)
        reader = CdrReader(storage)
        assert reader.count() == len(records)
        every = list(reader.records())
        assert sorted(every, key=lambda r: r.call_id) == sorted(records, key=lambda r: r.call_id)
        assert [record_key(r) for r in every] == sorted(record_key(r) for r in records)  # end-time order
        # [start, end) by end time, in milliseconds like the key.
        ends = sorted(r.ended for r in records)
        start, end = ends[500], ends[1500]
        in_range = list(reader.records(start, end))
        expected = [r for r in records if int(start * 1000) <= int(r.ended * 1000) < int(end * 1000)]
        assert sorted(r.call_id for r in in_range) == sorted(r.call_id for r in expected)
        assert all(r.ended < end for r in in_range) and len(in_range) >= 999
        assert reader.get(records[42].call_id) == records[42]
        assert reader.get("no-such-call") is None
        # A scan comes in bounded batches.
        assert max(len(b) for b in reader.scan(batch=100)) == 100


def test_a_call_recorded_twice_is_stored_once(tmp_path):
    first = answered_call("dup", ended=T0 + 100.0)
    again = msgspec.structs.replace(first, ended=T0 + 200.0, hangup_by=HangupBy.CALLEE)
    with Storage(tmp_path) as storage:
        with CdrWriter(storage) as writer:
            writer.write(first)
            group = writer.submit(again)
            group.wait(10)
            assert group.duplicates == 1 and group.written == 0
        reader = CdrReader(storage)
        assert reader.count() == 1
        assert reader.get("dup") == first


# --------------------------------------------------------------------------------------------- group commit


def test_many_submitters_are_acknowledged_only_after_their_commit(tmp_path):
    threads, per_thread = 8, 400
    failures: list[str] = []
    with Storage(tmp_path) as storage:
        writer = CdrWriter(storage, max_delay=0.002)
        reader = CdrReader(storage)

        def submitter(t: int) -> None:
            for i in range(per_thread):
                record = answered_call(f"t{t}-{i}", offered=T0 + i, ended=T0 + i + 60.0)
                writer.write(record, timeout=30)
                # Acknowledged: a new read transaction (a new snapshot) must already see it.
                if reader.get(record.call_id) != record:
                    failures.append(record.call_id)

        workers = [threading.Thread(target=submitter, args=(t,)) for t in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(60)
        writer.stop()
        assert not failures
        assert writer.records == threads * per_thread
        # Grouped: far fewer commits than records (8 submitters waiting on each commit).
        assert writer.commits < threads * per_thread / 2
    with Storage(tmp_path) as storage:
        assert CdrReader(storage).count() == threads * per_thread


def test_asyncio_submitters_resolve_after_commit_and_records_survive_reopening(tmp_path):
    uvloop = pytest.importorskip("uvloop")
    n = 2000

    async def main(writer: CdrWriter, reader: CdrReader) -> list[str]:
        seen_missing: list[str] = []

        async def one(i: int) -> None:
            record = answered_call(f"a{i}", offered=T0 + i, ended=T0 + i + 30.0)
            await writer.record(record)
            if reader.get(record.call_id) is None:
                seen_missing.append(record.call_id)

        await asyncio.gather(*(one(i) for i in range(n)))
        return seen_missing

    with Storage(tmp_path) as storage:
        writer = CdrWriter(storage)
        missing = uvloop.run(main(writer, CdrReader(storage)))
        assert missing == []
        assert writer.commits < n / 10  # thousands of awaits shared a few commits
        writer.stop()
    with Storage(tmp_path) as storage:
        assert CdrReader(storage).count() == n


def test_every_acknowledged_record_survives_sigkill(tmp_path):
    # The child acknowledges records on stdout as their commits return; it is killed mid-stream.
    child = run_child(tmp_path, """
from bindings.cdr import CdrWriter
from bindings.storage import Storage
from tests.test_cdr_store import answered_call, T0
storage = Storage(DATA)
writer = CdrWriter(storage, max_delay=0.001)
for i in range(1_000_000):
    group = writer.submit(answered_call(f"k{i}", offered=T0 + i, ended=T0 + i + 5.0))
    if i % 50 == 49:
        group.wait()
        print(i, flush=True)
""")
    acked = -1
    try:
        for line in child.stdout:  # bounded: the child is killed after 40 acknowledgements
            acked = int(line)
            if acked >= 50 * 40:
                break
    finally:
        kill(child)
    with Storage(tmp_path) as storage:
        reader = CdrReader(storage)
        assert acked >= 50 * 40
        assert all(reader.get(f"k{i}") is not None for i in range(acked + 1))
        assert reader.count() >= acked + 1


# --------------------------------------------------------------------------------------------- journal


def test_a_call_cut_off_by_a_crash_is_closed_as_interrupted_exactly_once(tmp_path):
    child = run_child(tmp_path, """
from bindings.cdr import CdrWriter
from bindings.storage import Storage
from tests.test_cdr_store import answered_call, T0
storage = Storage(DATA)
writer = CdrWriter(storage)
writer.call_answered(answered_call("cut-off"), now=T0 + 30.0).wait()
writer.call_answered(answered_call("completed"), now=T0 + 20.0).wait()
writer.write(answered_call("completed", ended=T0 + 95.0))
print("ready", flush=True)
import time
time.sleep(60)
""")
    try:
        ready = child.stdout.readline().strip()
    finally:
        kill(child)  # the writer never stopped: no flush, no close
    assert ready == "ready", child.stderr.read()

    with Storage(tmp_path) as storage:
        writer = CdrWriter(storage)
        reader = CdrReader(storage)
        assert [r.call_id for r in writer.recovered] == ["cut-off"]
        closed = reader.get("cut-off")
        assert closed.disposition is Disposition.INTERRUPTED
        assert closed.hangup_by is HangupBy.SYSTEM
        assert closed.ended == T0 + 30.0  # the journal entry's write time
        assert closed.answered == T0 + 12.0 and closed.queue_segments[0].answered_by == "a1"
        assert closed.legs[0].ended == T0 + 30.0
        assert closed.queue_segments[0].agent_ended == T0 + 30.0
        assert reader.get("completed") == answered_call("completed", ended=T0 + 95.0)
        assert reader.count() == 2 and reader.active() == []
        writer.stop()
    # Opening again recovers nothing more: closed exactly once.
    with Storage(tmp_path) as storage:
        writer = CdrWriter(storage)
        assert writer.recovered == []
        assert CdrReader(storage).count() == 2
        writer.stop()


def test_a_journal_entry_of_a_recorded_call_is_cleared_not_doubled(tmp_path):
    # Whatever left the entry behind (a node that wrote the record through another path), the call id
    # index keeps the recovery from writing a second record for it.
    final = answered_call("both", ended=T0 + 80.0)
    with Storage(tmp_path) as storage:
        with CdrWriter(storage) as writer:
            writer.write(final)
        entry = msgspec.msgpack.encode(JournalEntry(T0 + 40.0, answered_call("both")))
        with storage.env.begin(write=True, db=storage.db("active_calls")) as txn:
            txn.put(b"both", entry)
    with Storage(tmp_path) as storage:
        writer = CdrWriter(storage)
        reader = CdrReader(storage)
        assert writer.recovered == []
        assert reader.count() == 1 and reader.get("both") == final
        assert reader.active() == []
        writer.stop()


def test_the_final_record_removes_the_journal_entry_and_updates_move_the_end(tmp_path):
    with Storage(tmp_path) as storage:
        with CdrWriter(storage) as writer:
            writer.call_answered(answered_call("live"), now=T0 + 15.0).wait(10)
            writer.call_answered(answered_call("live"), now=T0 + 45.0).wait(10)  # a later update
            writer.call_answered(answered_call("done"), now=T0 + 15.0)
            writer.write(answered_call("done", ended=T0 + 50.0))
            active = CdrReader(storage).active()
            assert [(e.record.call_id, e.written) for e in active] == [("live", T0 + 45.0)]
        # stop() is not an end of calls: what is still active stays in the journal for the next open.
        assert [e.record.call_id for e in CdrReader(storage).active()] == ["live"]
    with Storage(tmp_path) as storage:
        writer = CdrWriter(storage)
        assert [(r.call_id, r.ended) for r in writer.recovered] == [("live", T0 + 45.0)]
        writer.stop()


def test_stop_commits_what_is_pending_and_refuses_more(tmp_path):
    with Storage(tmp_path) as storage:
        writer = CdrWriter(storage, max_delay=0.5)  # a long gathering window, cut short by stop()
        groups = [writer.submit(answered_call(f"s{i}", ended=T0 + 60 + i)) for i in range(100)]
        writer.stop()
        assert all(g.done() and g.error is None for g in groups)
        with pytest.raises(RuntimeError):
            writer.submit(answered_call("late", ended=T0 + 999))
    with Storage(tmp_path) as storage:
        assert CdrReader(storage).count() == 100


def test_a_failed_commit_is_reported_to_its_submitters(tmp_path):
    # A map too small for the group: the commit fails, the submitters learn their calls are not recorded.
    from bindings.cdr import CommitError

    with Storage(tmp_path, map_size=256 * 1024) as storage:
        writer = CdrWriter(storage, max_delay=0.05)
        groups = [writer.submit(r) for r in synthetic_records(5000, seed=1)]
        with pytest.raises(CommitError):
            groups[-1].wait(30)
        writer.stop()
