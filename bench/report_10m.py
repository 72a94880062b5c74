"""Reports over N stored call records (default 10 million), as the issue's reading target asks: the records
are written through the node's CdrWriter into a fresh LMDB store (group commits, synced), then read back by a
report by queue, by all five dimensions in one book, and by the CLI in a fresh process.

    python bench/report_10m.py [--records 10000000]

Needs about 3 GB of disk in the temporary folder for 10 M records; the folder is removed at the end.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_cdr import _records  # noqa: E402  (the same synthetic records as the 1 M benches)

from bindings.cdr import CdrReader, CdrWriter  # noqa: E402
from bindings.reports import build_report  # noqa: E402
from bindings.storage import Storage  # noqa: E402
from core.cdr.kpi import DIMENSIONS, KpiConfig  # noqa: E402

STEP = 1_000_000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=10_000_000)
    args = parser.parse_args()
    data = tempfile.mkdtemp(prefix="switchcore-report-bench-")
    try:
        storage = Storage(data)
        writer = CdrWriter(storage)
        t = time.perf_counter()
        for n, first in enumerate(range(0, args.records, STEP)):
            records = _records(min(STEP, args.records - first), seed0=n * 10)
            for i in range(0, len(records), 50_000):
                writer.write_many(records[i:i + 50_000])
            print(f"written {first + len(records):,} records, {time.perf_counter() - t:.1f} s", flush=True)
        writer.stop()
        reader = CdrReader(storage)
        print(f"stored: {reader.count():,} records")
        for dims in (("queue",), tuple(DIMENSIONS)):
            cpu, wall = time.process_time(), time.perf_counter()
            build_report(reader, dims, None, None, KpiConfig(interval=900))
            print(f"report by {'+'.join(dims)}: {time.process_time() - cpu:.2f} s CPU, "
                  f"{time.perf_counter() - wall:.2f} s wall", flush=True)
        storage.close()
        wall = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "bindings.cli", "report", "--data", data, "--by", "queue",
                              "--format", "csv"], cwd=ROOT, capture_output=True, text=True, timeout=600)
        print(f"switchcore report --by queue --format csv: exit {out.returncode}, "
              f"{time.perf_counter() - wall:.2f} s wall, {out.stdout.count(chr(10)) - 1} rows")
        return out.returncode
    finally:
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
