"""KPI report speed over a million stored call records (core/cdr/kpi.py), run with:

    python -m pytest bench/bench_kpi.py --benchmark-enable -s

The records are synthetic (tests/test_kpi.py ``synthetic_records``: a week of traffic, both directions,
every disposition, 0-2 queue segments over 8 queues and 40 agents), stored as the CDR writer stores them
(MessagePack arrays). Target (the issue "Call records in LMDB, call-centre KPIs and Erlang planning"): a
report over 10 million records in under 10 s on one core, i.e. 1,000,000 records a second.

1. ``test_queue_report``: the issue's report — every KPI per 15-minute interval per queue — from the stored
   bytes: decode what the report reads, turn it into numpy columns, aggregate, compute the figures.
2. ``test_full_report``: every dimension (node, trunk, queue, agent, campaign) from the stored bytes, summed
   in one pass in C (``core._cdrscan.tally``); ``test_full_report_numpy_sums``: the same with the columns read
   in C but summed by the numpy twin (one bincount per counter and dimension: the path before the tally).
3. ``test_lmdb_scan_queue_report``: the queue report with the records read by a cursor scan of an LMDB
   database keyed as core.cdr.record keys them (what a report over a time range does).
4. ``test_live_add``: the live path, one record at a time as calls end (records a second per core).
5. ``test_queue_report_python``, ``test_full_report_python``, ``test_lmdb_scan_queue_report_python``: 1-3 with
   the pure-Python reader (msgspec views, then columns) instead of the compiled one (core/_cdrscan.pyx), in
   the same run, for the ratio. Without the compiled reader built, 1-3 measure the pure path too.
Each records records_per_second and seconds_for_10M (the extrapolation) in extra_info, and the first prints
the time spent in each stage. On a shared machine, ``--benchmark-timer time.process_time`` times the CPU
this process used (one core) rather than the wall clock, which other jobs stretch.
"""
from __future__ import annotations

import gc
import time

import lmdb
import pytest

from core.cdr.kpi import COMPILED, Columns, KpiBook, KpiConfig, decode_views
from core.cdr.record import encode, record_key
from tests.test_kpi import synthetic_records

N = 1_000_000
WEEK = 7 * 86_400.0
TARGET_10M_SECONDS = 10.0
CONFIG = KpiConfig(interval=900)


@pytest.fixture(scope="module")
def stored() -> list[tuple[bytes, bytes]]:
    """(key, value) of N records, built in slices so that only their bytes stay in memory."""
    rows: list[tuple[bytes, bytes]] = []
    step = 100_000
    for seed, first in enumerate(range(0, N, step)):
        span = WEEK * step / N
        for record in synthetic_records(step, seed=seed, start=1_700_000_100.0 + span * seed, span=span):
            rows.append((record_key(record), encode(record)))
    return rows


@pytest.fixture(scope="module")
def blobs(stored) -> list[bytes]:
    return [value for _, value in stored]


def _record(benchmark, records: int) -> None:
    mean = benchmark.stats.stats.mean
    rate = records / mean
    benchmark.extra_info["records_per_second"] = round(rate)
    benchmark.extra_info["seconds_for_10M"] = round(10_000_000 / rate, 2)
    benchmark.extra_info["meets_10M_in_10s"] = 10_000_000 / rate <= TARGET_10M_SECONDS
    print(f"\n{benchmark.name}: {rate:,.0f} records/s → 10M records in {10_000_000 / rate:.1f} s "
          f"(target {TARGET_10M_SECONDS:.0f} s)")


def queue_report(blobs: list[bytes], compiled: bool | None = None):
    book = KpiBook(CONFIG, dimensions=("queue",))
    book.add_encoded(blobs, compiled=compiled)
    return book.report("queue")


def test_queue_report(benchmark, blobs):
    benchmark.group = "KPI report over 1M stored records"
    report = benchmark.pedantic(queue_report, args=(blobs,), rounds=3, iterations=1)
    assert len(report) > 8 * 96 * 6  # 8 queues × 96 quarters × most of 7 days
    _record(benchmark, N)
    # Where the time goes, measured once more stage by stage (GC paused, as add_encoded does).
    gc.disable()
    t0 = time.perf_counter()
    views = decode_views(blobs, calls=False, agents=False)
    t1 = time.perf_counter()
    cols = Columns.from_records(views, calls=False, agents=False)
    t2 = time.perf_counter()
    gc.enable()
    book = KpiBook(CONFIG, dimensions=("queue",))
    book.add_columns(cols)
    t3 = time.perf_counter()
    book.report("queue")
    t4 = time.perf_counter()
    stages = {"decode": t1 - t0, "columns": t2 - t1, "aggregate": t3 - t2, "figures": t4 - t3}
    if COMPILED:  # the compiled reader does decode and columns in one pass
        t5 = time.perf_counter()
        Columns.from_encoded(blobs, calls=False, agents=False, compiled=True)
        stages["compiled scan (decode + columns)"] = time.perf_counter() - t5
    benchmark.extra_info["stage_ns_per_record"] = {k: round(v * 1e9 / N) for k, v in stages.items()}
    print("stages (ns/record): " + ", ".join(f"{k} {v * 1e9 / N:.0f}" for k, v in stages.items()))


def test_queue_report_python(benchmark, blobs):
    benchmark.group = "KPI report over 1M stored records"
    report = benchmark.pedantic(queue_report, args=(blobs, False), rounds=2, iterations=1)
    assert report == queue_report(blobs)  # the compiled reader's report is the same, figure for figure
    _record(benchmark, N)


def full_report(blobs: list[bytes], compiled: bool | None = None):
    book = KpiBook(CONFIG)
    book.add_encoded(blobs, compiled=compiled)
    return {dim: book.report(dim) for dim in ("node", "trunk", "queue", "agent", "campaign")}


def test_full_report(benchmark, blobs):
    benchmark.group = "KPI report over 1M stored records"
    reports = benchmark.pedantic(full_report, args=(blobs,), rounds=2, iterations=1)
    assert all(reports.values())
    _record(benchmark, N)


def full_report_numpy_sums(blobs: list[bytes]):
    book = KpiBook(CONFIG)
    gc.disable()  # as add_encoded does
    try:
        book.add_columns(Columns.from_encoded(blobs, compiled=True), compiled=False)
    finally:
        gc.enable()
    return {dim: book.report(dim) for dim in ("node", "trunk", "queue", "agent", "campaign")}


def test_full_report_numpy_sums(benchmark, blobs):
    benchmark.group = "KPI report over 1M stored records"
    reports = benchmark.pedantic(full_report_numpy_sums, args=(blobs,), rounds=2, iterations=1)
    assert reports == full_report(blobs)  # the one-pass tally's figures are the same, figure for figure
    _record(benchmark, N)


def test_full_report_python(benchmark, blobs):
    benchmark.group = "KPI report over 1M stored records"
    reports = benchmark.pedantic(full_report, args=(blobs, False), rounds=1, iterations=1)
    assert all(reports.values())
    _record(benchmark, N)


@pytest.mark.parametrize("compiled", [None, False], ids=["compiled", "python"])
def test_lmdb_scan_queue_report(benchmark, stored, tmp_path_factory, compiled):
    benchmark.group = "KPI report over 1M stored records"
    env = lmdb.open(str(tmp_path_factory.mktemp("cdr")), map_size=4 << 30, max_dbs=2, sync=False)
    cdrs = env.open_db(b"cdr")
    with env.begin(write=True, db=cdrs) as txn:
        cursor = txn.cursor()
        cursor.putmulti(sorted(stored), append=True)

    def scan_and_report():
        with env.begin(db=cdrs, buffers=False) as txn:
            values = [value for _, value in txn.cursor()]
        return queue_report(values, compiled)

    report = benchmark.pedantic(scan_and_report, rounds=3, iterations=1)
    assert report
    env.close()
    _record(benchmark, N)


def test_live_add(benchmark):
    benchmark.group = "KPI live path"
    records = synthetic_records(100_000, seed=99, span=86_400.0)

    def add_all():
        book = KpiBook(CONFIG)
        for record in records:
            book.add(record)
        return book

    benchmark.pedantic(add_all, rounds=3, iterations=1)
    _record(benchmark, len(records))
