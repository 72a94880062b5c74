"""The compiled reader of stored call records (core/_cdrscan.pyx) against its pure-Python twin: the KPI
columns, the books built from them, and the CSV and JSON-lines exports must be the same — the figures
equal, the exported files equal to the byte — on random records with awkward strings, legs, missing times,
records written by older and newer versions, odd but valid encodings, and broken ones.
"""
from __future__ import annotations

import io
import math
import random

import lmdb
import msgspec
import numpy as np
import pytest

from bindings.reports import write_csv, write_jsonl
from core.cdr.kpi import Columns, KpiBook, KpiConfig
from core.cdr.record import CallRecord, Disposition, HangupBy, Leg, QueueOutcome, QueueSegment, encode
from tests.test_kpi import synthetic_records

_cdrscan = pytest.importorskip("core._cdrscan", reason="core/_cdrscan.pyx is not built")
# The twin's numpy cast of a NaN or infinite time warns; that is the twin's output being checked, not a fault.
pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered in cast:RuntimeWarning")

T0 = 1_700_000_100.0
AWKWARD = ["", "a,b", 'say "hi"', "line\nbreak", "cr\rhere", "tab\there", "ünïcödé", "日本語", "nul\x00",
           "esc\x1b", "back\\slash", ">", " lead", "line\u2028sep", "x" * 40, '"', ",", "q>r"]


def awkward_records(n: int, seed: int) -> list[CallRecord]:
    """Synthetic calls with awkward strings everywhere, legs with and without MOS, extra queue stays."""
    rng = random.Random(seed)
    out = []
    for r in synthetic_records(n, seed=seed, start=T0, span=86_400.0):
        pick = lambda: rng.choice(AWKWARD) if rng.random() < 0.3 else f"s{rng.randrange(50)}"  # noqa: E731
        legs = tuple(
            Leg(leg_id=pick(), peer=pick(), offered=r.offered, ringing=rng.choice([None, r.offered + 0.25]),
                answered=r.answered, ended=rng.choice([None, r.ended]), disposition=r.disposition,
                sip_status=rng.choice([0, 200, 486, 503]), codec=pick(), packets_received=rng.randrange(10**6),
                packets_lost=rng.randrange(100), jitter_ms=rng.choice([0.0, 2.5, rng.uniform(0, 50)]),
                mos=rng.choice([None, 4.4, 3.25, rng.uniform(1, 4.5)]))
            for _ in range(rng.choice([0, 0, 1, 2, 3])))
        segs = tuple(msgspec.structs.replace(s, queue=pick(), agents_offered=tuple(pick() for _ in s.agents_offered),
                                             answered_by=pick() if s.answered_by else "")
                     for s in r.queue_segments)
        out.append(msgspec.structs.replace(
            r, call_id=pick() + r.call_id, caller=pick(), callee=pick(), node=pick(), trunk=pick(), legs=legs,
            queue_segments=segs, dtmf=pick(), recording=pick(), campaign_id=pick(), contact_id=pick(),
            hangup_by=rng.choice(list(HangupBy))))
    return out


def both(fn):
    """fn(compiled) for the C reader and for the twin: the same result, or the same kind of error."""
    results = []
    for compiled in (True, False):
        try:
            results.append(("ok", fn(compiled)))
        except Exception as exc:  # noqa: BLE001 - the twin's error is the reference
            results.append(("error", type(exc)))
    assert results[0] == results[1]
    return results[1]


def export(blobs, fmt: str, batch: int = 97):
    def run(compiled):
        batches = (blobs[i:i + batch] for i in range(0, len(blobs), batch))
        if fmt == "jsonl":
            out = io.BytesIO()
            write_jsonl(batches, out, compiled=compiled)
        else:
            out = io.StringIO(newline="")
            write_csv(batches, out, epoch=fmt == "epoch", compiled=compiled)
        return out.getvalue()

    return both(run)


# --------------------------------------------------------------------------------------------- KPI columns


def _named(cols: Columns, name: str):
    value = getattr(cols, name)
    if name in ("node", "trunk", "campaign", "seg_queue", "seg_agent", "offer_agent"):
        return value.dtype, [cols.names[c] for c in value.tolist()]  # codes differ, names must not
    return value.dtype, value


@pytest.mark.parametrize("calls,agents", [(True, True), (False, False), (True, False), (False, True)])
def test_columns_hold_what_the_twin_decodes(calls, agents):
    blobs = [encode(r) for r in awkward_records(1500, seed=5)]
    assert _cdrscan.scan_columns(blobs, calls=calls, agents=agents)["n"] == len(blobs)  # read in C, no fallback
    c = Columns.from_encoded(blobs, calls=calls, agents=agents, compiled=True)
    py = Columns.from_encoded(blobs, calls=calls, agents=agents, compiled=False)
    assert (c.n, c.has_calls, c.has_agents, c.names[c.empty]) == (py.n, calls, agents, "")
    names = ["ended", "seg_rec", "seg_queue", "seg_joined", "seg_left", "seg_outcome", "seg_agent",
             "seg_agent_ended", "seg_acw", "offer_agent", "offer_time"]
    if calls:
        names += ["offered", "answered", "direction", "disposition", "pdd", "node", "trunk", "campaign"]
    for name in names:
        (dt_c, v_c), (dt_py, v_py) = _named(c, name), _named(py, name)
        assert dt_c == dt_py, name
        if isinstance(v_c, np.ndarray):
            assert np.array_equal(v_c, v_py, equal_nan=True), name
        else:
            assert v_c == v_py, name


@pytest.mark.parametrize("interval", [900, 3600])
@pytest.mark.parametrize("compiled", [True, False])
def test_report_from_stored_bytes_equals_the_live_book(interval, compiled):
    records = synthetic_records(4000, seed=interval + 1)
    config = KpiConfig(interval=interval)
    live = KpiBook(config)
    shuffled = records[:]
    random.Random(1).shuffle(shuffled)
    for record in shuffled:
        live.add(record)
    stored = KpiBook(config)
    blobs = [encode(r) for r in records]
    stored.add_encoded(blobs[:1700], compiled=compiled)  # two scans, as two time ranges
    stored.add_encoded(blobs[1700:], compiled=compiled)
    assert stored == live
    for dim in ("node", "trunk", "queue", "agent", "campaign"):
        one = KpiBook(config, dimensions=(dim,))  # what `switchcore report --by dim` builds
        one.add_encoded(blobs, compiled=compiled)
        assert one.report(dim) == live.report(dim) and one.report(dim)


def _books(cols, config, dimensions):
    """The book of the C tally and the book of its numpy twin, from the same columns."""
    books = []
    for compiled in (True, False):
        book = KpiBook(config, dimensions)
        book.add_columns(cols, compiled=compiled)
        books.append(book)
    return books


@pytest.mark.parametrize("interval", [900, 3600, 7])
@pytest.mark.parametrize("dimensions", [("node", "trunk", "queue", "agent", "campaign"), ("queue",), ("agent",),
                                        ("trunk", "campaign"), ("node", "agent")])
def test_one_pass_tally_equals_the_numpy_books(interval, dimensions):
    config = KpiConfig(interval=interval, answer_within=15.0, short_abandon=3.0)
    for records in (synthetic_records(3000, seed=interval), awkward_records(800, seed=interval)):
        blobs = [encode(r) for r in records]
        calls = bool(set(dimensions) & {"node", "trunk", "campaign"})
        agents = "agent" in dimensions
        for cols in (Columns.from_encoded(blobs, calls=calls, agents=agents, compiled=True),
                     Columns.from_records(records, calls=calls, agents=agents)):
            dims, codes, starts, sums = _cdrscan.tally(cols, interval, 15000.0, 3000.0, frozenset(dimensions))
            assert {_cdrscan.TALLY_DIMENSIONS[d] for d in dims.tolist()} == set(dimensions)  # taken in C
            assert sums.shape == (len(dims), len(_cdrscan.TALLY_FIELDS)) and sums.sum() > 0
            c, py = _books(cols, config, dimensions)
            assert c == py
            for dim in dimensions:
                assert c.report(dim) == py.report(dim) and c.report(dim)


def test_tally_declines_times_it_cannot_bin_and_the_twin_counts_them():
    records = synthetic_records(300, seed=12)
    odd = [msgspec.structs.replace(records[0], offered=math.inf),
           msgspec.structs.replace(records[1], offered=1e17)]  # beyond 2**53 ms: not binned exactly in C
    for bad in odd:
        cols = Columns.from_records(records[2:] + [bad])
        with pytest.raises(_cdrscan.Unsupported):
            _cdrscan.tally(cols, 900, 20000.0, 5000.0, frozenset(("node",)))
        assert both(lambda compiled: _book([encode(r) for r in records[2:] + [bad]], compiled).report("node"))
    # A book whose dimensions do not read the odd time is summed in C as usual.
    cols = Columns.from_records(records[2:] + [odd[0]], calls=False)
    assert _cdrscan.tally(cols, 900, 20000.0, 5000.0, frozenset(("queue",)))[0].size


def test_columns_from_lmdb_memoryviews_inside_the_read_transaction(tmp_path):
    records = awkward_records(800, seed=8)
    env = lmdb.open(str(tmp_path), map_size=1 << 26, max_dbs=1)
    with env.begin(write=True) as txn:
        for i, r in enumerate(records):
            txn.put(i.to_bytes(4, "big"), encode(r))
    with env.begin(buffers=True) as txn:
        views = [v for _, v in txn.cursor()]
        assert isinstance(views[0], memoryview)
        book = KpiBook(KpiConfig())
        book.add_encoded(views, compiled=True)
    env.close()
    assert book == KpiBook.from_records(records, KpiConfig())


# --------------------------------------------------------------------------------------------- exports


@pytest.mark.parametrize("fmt", ["csv", "epoch", "jsonl"])
def test_export_is_byte_identical_to_the_twin(fmt):
    blobs = [encode(r) for r in awkward_records(1200, seed={"csv": 1, "epoch": 2, "jsonl": 3}[fmt])]
    status, text = export(blobs, fmt)
    assert status == "ok"
    # And the C reader wrote all of it itself (no batch handed to the twin).
    if fmt == "jsonl":
        assert _cdrscan.json_lines(blobs) == text
    else:
        assert text.split("\n", 1)[1] == _cdrscan.csv_rows(blobs, epoch=fmt == "epoch")


def _raw(record: CallRecord) -> list:
    return msgspec.msgpack.decode(encode(record))


@pytest.mark.parametrize("fmt", ["csv", "epoch", "jsonl"])
def test_records_of_older_and_newer_versions_export_as_the_twin_reads_them(fmt):
    base = awkward_records(60, seed=4)
    blobs = []
    for i, r in enumerate(base):
        fields = _raw(r)
        if i % 3 == 0:
            fields = fields[:5 + i % 13]  # an older writer: trailing fields missing (defaults)
        elif i % 3 == 1:
            fields = fields + ["a field from the future", [1, 2.5, None], {"k": "v"}]  # a newer one
        if fields[11:12] and fields[11]:
            fields[11] = [leg[:3 + i % 11] for leg in fields[11]]  # legs written before `mos` existed
        blobs.append(msgspec.msgpack.encode(fields))
    assert export(blobs, fmt)[0] == "ok"
    assert both(lambda compiled: _book(blobs, compiled).report("queue"))[0] == "ok"


def _book(blobs, compiled):
    book = KpiBook(KpiConfig())
    book.add_encoded(blobs, compiled=compiled)
    return book


def _rewrite_floats(value, rng):
    # The same numbers in another valid MessagePack form: integral floats as ints (msgspec takes an int
    # for a float field).
    if isinstance(value, list):
        return [_rewrite_floats(v, rng) for v in value]
    if isinstance(value, float) and abs(value) < 2**53 and value == int(value) and rng.random() < 0.5:
        return int(value)
    return value


@pytest.mark.parametrize("fmt", ["csv", "epoch", "jsonl"])
def test_ints_in_float_fields_and_odd_floats_export_as_the_twin(fmt):
    rng = random.Random(2)
    blobs = []
    for i, r in enumerate(awkward_records(200, seed=6)):
        fields = _raw(r)
        fields[2] = float(int(fields[2]))  # integral times, written as ints below
        fields[3] = int(fields[3]) + 1
        if i % 5 == 0:
            fields[17] = rng.choice([1e300, 5e-324, 1e-7, 123456789012345678.0, 0.1 + 0.2, -0.0, 1e16])
        if i % 7 == 0:
            fields[2] = rng.choice([-86_400.5, 0.0, 253402300799.999, 253402300800.0, 1e15])  # 1969, 1970, 9999
        blobs.append(msgspec.msgpack.encode(_rewrite_floats(fields, rng)))
    # float 32 (0xca) for one time, and negative ints in other encodings: read as the twin reads them
    f64 = b"\xcb\x3f\xf8" + bytes(6)  # 1.5 as float 64
    blobs.append(msgspec.msgpack.encode(["f32", "inbound", 1.5, 2.0, "answered"]).replace(f64, b"\xca\x3f\xc0\x00\x00"))
    blobs.append(msgspec.msgpack.encode(["neg", "inbound", -2, 2.0, "answered", "", "", "", "", -70000]))
    assert export(blobs, fmt)[0] == "ok"


@pytest.mark.parametrize("fmt", ["csv", "epoch", "jsonl"])
def test_not_a_number_and_infinite_times_export_as_the_twin(fmt):
    records = synthetic_records(40, seed=9)
    odd = [msgspec.structs.replace(records[0], answered=math.nan),
           msgspec.structs.replace(records[1], offered=math.inf),
           msgspec.structs.replace(records[2], post_dial_delay=math.nan)]
    blobs = [encode(r) for r in records[3:] + odd]
    assert export(blobs, fmt, batch=10)[0] == "ok"


@pytest.mark.parametrize("fmt", ["csv", "epoch", "jsonl", "kpi"])
def test_a_broken_record_fails_as_the_twin_fails(fmt):
    good = [encode(r) for r in synthetic_records(20, seed=10)]
    broken = [
        good[0][:-3],  # truncated
        msgspec.msgpack.encode(["id", "inbound", "not a time", 2.0, "answered"]),
        msgspec.msgpack.encode(["id", "inbound", 1.0]),  # required fields missing
        b"\xc1",  # never used in MessagePack
        # a string that is not UTF-8 (an encoded surrogate), in the call id and in a queue name
        msgspec.msgpack.encode(["iXYZ", "inbound", 1.0, 2.0, "answered"]).replace(b"iXYZ", b"i\xed\xb3\xbf"),
        msgspec.msgpack.encode(["id", "inbound", 1.0, 2.0, "answered", "", "", "", "", None, "system", [],
                                [["qXYZ", 1.0, 2.0, "timeout"]]]).replace(b"qXYZ", b"q\xed\xb3\xbf"),
    ]
    for bad in broken:
        blobs = good[:7] + [bad] + good[7:]
        if fmt == "kpi":
            status, kind = both(lambda compiled: _book(blobs, compiled).report("queue"))
        else:
            status, kind = export(blobs, fmt, batch=5)
        assert status == "error" and issubclass(kind, (msgspec.DecodeError, msgspec.ValidationError, ValueError))


def test_csv_quotes_exactly_what_the_csv_module_quotes():
    # The compiled writer's quoting table comes from the csv module; ',' '"' and the line end are in it.
    assert {",", '"', "\n"} <= set(_cdrscan.CSV_QUOTED)
    record = CallRecord(call_id='a,"b"', direction=awkward_records(1, 1)[0].direction, offered=T0, ended=T0 + 1,
                        disposition=Disposition.ANSWERED, caller="x\ny", queue_segments=(
                            QueueSegment(queue="s,1", joined=T0, left=T0 + 0.5, outcome=QueueOutcome.OVERFLOW),
                            QueueSegment(queue="v", joined=T0 + 0.5, left=T0 + 1, outcome=QueueOutcome.ANSWERED,
                                         answered_by="a7")))
    text = _cdrscan.csv_rows([encode(record)])
    assert text.startswith('"a,""b""",inbound,answered,system,2023-11-14T22:15:00.000Z,,2023-11-14T22:15:01.000Z,,,"x\ny",')
    assert ',"s,1>v",answered,1.000,a7,0,' in text
