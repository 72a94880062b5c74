"""The CDR store's speed (bindings/cdr.py, bindings/reports.py), run with:

    python -m pytest bench/bench_cdr.py --benchmark-enable -s

Targets (the issue "Call records in LMDB, call-centre KPIs and Erlang planning"), on this machine:

1. ``test_group_commit_asyncio``: records durably committed per second from the node's uvloop loop, many
   calls ending at once (2,000 tasks each awaiting ``writer.record``), with the latency from submit to
   acknowledgement (p50/p99/max) — target at least 50,000 records/s.
2. ``test_group_commit_paced``: a steady 5,000 calls/s (a busy node), open loop: the latency a call waits
   for its record to be durable when the disk is not the bottleneck.
3. ``test_export_csv`` / ``test_export_jsonl``: export of 1,000,000 stored records (a cursor scan, decode,
   format, write to /dev/null) — target 200,000 records/s.
4. ``test_report_queue`` / ``test_report_all``: ``switchcore report`` over 1,000,000 records from LMDB, one
   dimension (queue, 15 min) and every dimension in one scan (``build_report`` with all five: one pass
   sums them all) — target 10 M in under 10 s on one core; the extrapolation to 10 M is printed.

5. ``test_export_csv_python``, ``test_export_jsonl_python``, ``test_report_queue_python``,
   ``test_report_all_python``: 3 and 4 with the pure-Python readers (msgspec views, numpy sums) instead of
   the compiled ones (core/_cdrscan.pyx), in the same run.

On a shared machine, ``--benchmark-timer time.process_time`` times the CPU this process used (one core)
rather than the wall clock, which other jobs stretch.

Every LMDB commit here is synced (``sync=True``, as the node runs). Records are tests/test_kpi.py's
``synthetic_records`` (both directions, every disposition, 0-2 queue segments).
"""
from __future__ import annotations

import asyncio
import os
import threading
import time

import numpy as np
import pytest

from bindings.cdr import CdrReader, CdrWriter
from bindings.reports import build_report, write_csv, write_jsonl
from bindings.storage import Storage
from core.cdr.kpi import DIMENSIONS, KpiConfig
from tests.test_kpi import synthetic_records

N_STORED = 1_000_000
WEEK = 7 * 86_400.0
T0 = 1_700_000_100.0


def _records(n: int, seed0: int = 0) -> list:
    out = []
    step = 100_000
    for seed, first in enumerate(range(0, n, step)):
        count = min(step, n - first)
        span = WEEK * count / n
        out += synthetic_records(count, seed=seed0 + seed, start=T0 + WEEK * first / n, span=span)
    return out


def _latency(lat: list[float]) -> dict:
    a = np.asarray(lat) * 1000.0
    return {"p50_ms": round(float(np.percentile(a, 50)), 2), "p99_ms": round(float(np.percentile(a, 99)), 2),
            "max_ms": round(float(a.max()), 2)}


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """A data folder holding N_STORED records, written through the CdrWriter (bulk, grouped commits)."""
    data = tmp_path_factory.mktemp("cdr")
    records = _records(N_STORED)
    storage = Storage(data, map_size=4 << 30)
    writer = CdrWriter(storage)
    t = time.perf_counter()
    for i in range(0, len(records), 50_000):
        writer.write_many(records[i:i + 50_000])
    elapsed = time.perf_counter() - t
    writer.stop()
    print(f"\nbulk write_many: {len(records) / elapsed:,.0f} records/s durably committed "
          f"({writer.commits} commits for {writer.records} records)")
    del records
    yield storage
    storage.close()


def test_group_commit_asyncio(benchmark, tmp_path):
    uvloop = pytest.importorskip("uvloop")
    benchmark.group = "CDR store"
    n, tasks = 200_000, 2_000
    records = _records(n, seed0=100)
    storage = Storage(tmp_path, map_size=2 << 30)
    writer = CdrWriter(storage)
    latencies: list[float] = []

    async def call_ending(slice_):
        clock = time.perf_counter
        for record in slice_:
            t = clock()
            await writer.record(record)
            latencies.append(clock() - t)

    async def main():
        await asyncio.gather(*(call_ending(records[i::tasks]) for i in range(tasks)))

    def run():
        uvloop.run(main())

    t = time.perf_counter()
    benchmark.pedantic(run, rounds=1, iterations=1)
    elapsed = time.perf_counter() - t
    writer.stop()
    rate = n / elapsed
    lat = _latency(latencies)
    benchmark.extra_info.update(records_per_second=round(rate), commits=writer.commits,
                                records_per_commit=round(n / writer.commits), **lat)
    print(f"\ngroup commit (uvloop, {tasks} tasks): {rate:,.0f} records/s durably committed, "
          f"{writer.commits} commits ({n / writer.commits:.0f} records each); submit→ack latency {lat} "
          f"(target ≥ 50,000/s: {'met' if rate >= 50_000 else 'NOT met'})")
    assert CdrReader(storage).count() == n
    storage.close()


def test_group_commit_paced(benchmark, tmp_path):
    benchmark.group = "CDR store"
    rate_target, seconds = 5_000, 3.0
    n = int(rate_target * seconds)
    records = _records(n, seed0=200)
    storage = Storage(tmp_path)
    writer = CdrWriter(storage)
    latencies: list[float] = []
    done = threading.Event()
    remaining = [n]
    lock = threading.Lock()

    def run():
        clock = time.perf_counter
        start = clock()
        for i, record in enumerate(records):
            due = start + i / rate_target
            while clock() < due:  # bounded: every record has a due time within `seconds`
                time.sleep(0.0002)
            t = clock()

            def ack(group, t=t):
                latencies.append(clock() - t)
                with lock:
                    remaining[0] -= 1
                    if remaining[0] == 0:
                        done.set()

            writer.submit(record).add_done_callback(ack)
        assert done.wait(30)

    benchmark.pedantic(run, rounds=1, iterations=1)
    writer.stop()
    lat = _latency(latencies)
    benchmark.extra_info.update(offered_per_second=rate_target, commits=writer.commits, **lat)
    print(f"\npaced {rate_target:,}/s for {seconds:.0f} s: {writer.commits} commits "
          f"({n / writer.commits:.0f} records each), submit→ack latency {lat}")
    storage.close()


def _export(benchmark, stored, fn, binary: bool, name: str, compiled: bool | None = None):
    benchmark.group = "CDR store"
    reader = CdrReader(stored)
    counts = []

    def run():
        with open(os.devnull, "wb" if binary else "w", newline=None if binary else "") as out:
            counts.append(fn(reader.scan(batch=4096), out, compiled=compiled))

    benchmark.pedantic(run, rounds=2, iterations=1)
    rate = counts[-1] / benchmark.stats.stats.mean
    benchmark.extra_info["records_per_second"] = round(rate)
    print(f"\n{name}: {rate:,.0f} records/s (target 200,000/s: {'met' if rate >= 200_000 else 'NOT met'})")
    assert counts[-1] == N_STORED


def test_export_csv(benchmark, stored):
    _export(benchmark, stored, write_csv, False, "export CSV")


def test_export_jsonl(benchmark, stored):
    _export(benchmark, stored, write_jsonl, True, "export JSON lines")


def test_export_csv_python(benchmark, stored):
    _export(benchmark, stored, write_csv, False, "export CSV, pure Python", compiled=False)


def test_export_jsonl_python(benchmark, stored):
    _export(benchmark, stored, write_jsonl, True, "export JSON lines, pure Python", compiled=False)


def _report(benchmark, stored, dimensions: tuple[str, ...], name: str, compiled: bool | None = None,
            rounds: int = 2):
    benchmark.group = "CDR store"
    reader = CdrReader(stored)
    config = KpiConfig(interval=900)

    def run():  # one cursor scan, every dimension summed in the same pass
        book = build_report(reader, dimensions, None, None, config, compiled=compiled)
        return [book.report(dim) for dim in dimensions]

    reports = benchmark.pedantic(run, rounds=rounds, iterations=1)
    mean = benchmark.stats.stats.mean
    benchmark.extra_info.update(seconds_1M=round(mean, 2), seconds_for_10M=round(mean * 10, 1))
    print(f"\n{name}: {mean:.2f} s over 1M records from LMDB → {mean * 10:.1f} s for 10M "
          f"(target < 10 s: {'met' if mean * 10 < 10 else 'NOT met'})")
    assert all(reports)


def test_report_queue(benchmark, stored):
    _report(benchmark, stored, ("queue",), "report by queue, 15 min")


def test_report_all(benchmark, stored):
    _report(benchmark, stored, DIMENSIONS, "report by every dimension, 15 min")


def test_report_queue_python(benchmark, stored):
    _report(benchmark, stored, ("queue",), "report by queue, 15 min, pure Python", compiled=False)


def test_report_all_python(benchmark, stored):
    _report(benchmark, stored, DIMENSIONS, "report by every dimension, 15 min, pure Python", compiled=False,
            rounds=1)


def test_report_scan_only(benchmark, stored):
    """The cursor scan alone (bindings/cdr.py ``CdrReader.scan``, batches as build_report reads them): the
    share of a report that is LMDB and Python bytes, not KPIs."""
    benchmark.group = "CDR store"
    reader = CdrReader(stored)

    def run():
        return sum(len(values) for values in reader.scan(batch=262_144))

    assert benchmark.pedantic(run, rounds=2, iterations=1) == N_STORED
    mean = benchmark.stats.stats.mean
    benchmark.extra_info.update(seconds_1M=round(mean, 2), seconds_for_10M=round(mean * 10, 1))
    print(f"\ncursor scan alone: {mean:.2f} s over 1M records from LMDB → {mean * 10:.1f} s for 10M")
