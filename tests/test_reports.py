"""What `switchcore cdr export`, `switchcore report` and `switchcore erlang` print (bindings/reports.py),
from a real LMDB store in tmp_path."""
from __future__ import annotations

import csv
import datetime as dt
import enum
import io
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import msgspec
import numpy as np
import pytest

from bindings.cdr import CdrWriter
from bindings.cli import main as cli_main
from bindings.reports import (CSV_COLUMNS, PLOT_DATA_COLUMNS, PLOT_SIZE, PLOTTED, erlang_main, export_main,
                              report_main)
from bindings.storage import Storage
from core.cdr import erlang
from core.cdr.kpi import DIMENSIONS, KpiBook, KpiConfig
from core.cdr.record import CallRecord, Direction, Disposition, HangupBy, Leg, QueueOutcome, QueueSegment
from tests.test_kpi import synthetic_records

T0 = 1_700_000_100.0
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A data folder with two days of synthetic calls, plus one call with legs, DTMF and a recording."""
    data = tmp_path_factory.mktemp("data")
    records = synthetic_records(4000, seed=11, start=T0, span=2 * 86_400.0)
    rich = CallRecord(
        call_id="rich,\"quoted\"", direction=records[0].direction, offered=T0 + 10.0, ended=T0 + 200.5,
        disposition=Disposition.ANSWERED, caller="sip:+331@t", callee="sip:sales@pbx", node="node0",
        trunk="trunk1", answered=T0 + 14.25, hangup_by=HangupBy.CALLEE,
        legs=(Leg(leg_id="l1", peer="trunk1", offered=T0 + 10.0, answered=T0 + 14.25, ended=T0 + 200.5,
                  disposition=Disposition.ANSWERED, sip_status=200, codec="PCMA", mos=4.1),
              Leg(leg_id="l2", peer="a7", offered=T0 + 40.0, answered=T0 + 44.0, mos=3.62)),
        queue_segments=(QueueSegment(queue="sales", joined=T0 + 15.0, left=T0 + 40.0, outcome=QueueOutcome.OVERFLOW,
                                     agents_offered=("a3",)),
                        QueueSegment(queue="vip", joined=T0 + 40.0, left=T0 + 44.0, outcome=QueueOutcome.ANSWERED,
                                     agents_offered=("a6", "a7"), answered_by="a7", after_call_work=12.0)),
        dtmf="12#", recording="rec/rich.wav", post_dial_delay=None,
    )
    records.append(rich)
    with Storage(data) as storage:
        with CdrWriter(storage) as writer:
            writer.write_many(records)
    return data, records


def _iso_ms(t: float) -> str:
    ms = math.floor(t * 1000.0)
    return dt.datetime.fromtimestamp(ms // 1000, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S") + f".{ms % 1000:03d}Z"


def _in_range(records, start, end):
    return [r for r in records if math.floor(start * 1000) <= math.floor(r.ended * 1000) < math.floor(end * 1000)]


def _builtins(value):
    """A record as plain JSON values with field names (what one JSON line must hold)."""
    if isinstance(value, msgspec.Struct):
        return {f: _builtins(getattr(value, f)) for f in value.__struct_fields__}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple):
        return [_builtins(v) for v in value]
    return value


# --------------------------------------------------------------------------------------------- export


def test_jsonl_export_holds_every_record_of_the_range_with_field_names(store, tmp_path):
    data, records = store
    start, end = T0 + 3600.0, T0 + 30 * 3600.0
    out = tmp_path / "calls.jsonl"
    assert export_main(["--data", str(data), "--format", "jsonl", "--from", str(start), "--to", str(end),
                        "-o", str(out)]) == 0
    lines = out.read_text().splitlines()
    expected = {r.call_id: r for r in _in_range(records, start, end)}
    assert len(lines) == len(expected) > 1000
    for line in lines:
        obj = json.loads(line)
        assert obj == _builtins(expected[obj["call_id"]])


def test_csv_export_one_row_per_call_with_readable_times(store, tmp_path, capsys):
    data, records = store
    assert export_main(["--data", str(data), "--from", "2023-11-14T22:00", "--to", "2023-11-15T12:00:00Z"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    start = dt.datetime(2023, 11, 14, 22, tzinfo=dt.timezone.utc).timestamp()
    end = dt.datetime(2023, 11, 15, 12, tzinfo=dt.timezone.utc).timestamp()
    expected = {r.call_id: r for r in _in_range(records, start, end)}
    assert tuple(rows[0]) == CSV_COLUMNS
    assert len(rows) == len(expected)
    for row in rows:
        r = expected[row["call_id"]]
        assert row["disposition"] == r.disposition.value and row["direction"] == r.direction.value
        assert row["offered"] == _iso_ms(r.offered) and row["ended"] == _iso_ms(r.ended)
        assert row["answered"] == ("" if r.answered is None else _iso_ms(r.answered))
        assert row["queues"] == ">".join(s.queue for s in r.queue_segments)
        assert row["agent"] == r.agent
        if r.answered is not None:
            assert float(row["talk_seconds"]) == pytest.approx(r.ended - r.answered, abs=0.0006)
    # The quoted, comma-laden call id and the leg figures come back intact.
    rich = next(row for row in rows if row["call_id"] == 'rich,"quoted"')
    assert (rich["queues"], rich["queue_outcome"], rich["agent"], rich["agents_offered"]) == ("sales>vip", "answered", "a7", "3")
    assert (rich["legs"], rich["mos"], rich["dtmf"], rich["recording"]) == ("2", "3.62", "12#", "rec/rich.wav")
    assert float(rich["queue_seconds"]) == pytest.approx(29.0)


def test_csv_export_in_epoch_seconds(store, capsys):
    data, records = store
    assert export_main(["--data", str(data), "--epoch", "--to", str(T0 + 600)]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    expected = {r.call_id: r for r in records if r.ended < T0 + 600}
    assert {row["call_id"] for row in rows} == set(expected)
    for row in rows:
        assert float(row["ended"]) == pytest.approx(expected[row["call_id"]].ended, abs=0.0006)


def test_export_of_a_folder_without_a_store_fails_clearly(tmp_path, capsys):
    assert export_main(["--data", str(tmp_path / "nowhere")]) == 1
    assert "no CDR store" in capsys.readouterr().err
    assert not (tmp_path / "nowhere").exists()  # nothing created by a read


# --------------------------------------------------------------------------------------------- report


@pytest.mark.parametrize("dimension,interval", [("queue", 15), ("node", 30), ("trunk", 60), ("agent", 15),
                                                ("campaign", 60)])
def test_report_figures_equal_the_kpi_books(store, capsys, dimension, interval):
    data, records = store
    start, end = T0 + 7200.0, T0 + 40 * 3600.0
    assert report_main(["--data", str(data), "--by", dimension, "--interval", str(interval), "--format", "json",
                        "--from", str(start), "--to", str(end), "--answer-within", "15", "--totals"]) == 0
    doc = json.loads(capsys.readouterr().out)
    config = KpiConfig(interval=interval * 60, answer_within=15.0)
    book = KpiBook.from_records(_in_range(records, start, end), config, dimensions=DIMENSIONS)
    expected = {(key, dt.datetime.fromtimestamp(s, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")): f.as_dict()
                for (key, s), f in book.report(dimension).items()}
    keys = sorted({key for key, _ in expected})
    expected.update({(key, "total"): book.figures(dimension, key).as_dict() for key in keys})
    got = {(row.pop(dimension), row.pop("start")): row for row in doc["rows"]}
    assert got == expected
    assert len(got) > len(keys)


def test_report_csv_and_table(store, capsys):
    data, records = store
    assert report_main(["--data", str(data), "--by", "queue", "--interval", "60", "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    book = KpiBook.from_records(records, KpiConfig(interval=3600), dimensions=("queue",))
    report = book.report("queue")
    assert len(rows) == len(report)
    first = rows[0]
    figures = report[(first["queue"], int(dt.datetime.fromisoformat(first["start"].replace("Z", "+00:00")).timestamp()))]
    assert float(first["service_level"]) == figures.service_level
    assert int(first["queued"]) == figures.queued

    assert report_main(["--data", str(data), "--by", "queue", "--interval", "60", "--totals"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["queue", "interval", "(UTC)", "queued"]
    total_q0 = next(line for line in lines if line.startswith("q0 ") and "total" in line).split()
    q0 = book.figures("queue", "q0")
    assert total_q0[2] == str(q0.queued) and total_q0[6] == f"{q0.service_level * 100:.1f}%"


def test_report_of_an_empty_range(store, capsys):
    data, _ = store
    assert report_main(["--data", str(data), "--by", "agent", "--from", "2001-01-01", "--to", "2001-01-02"]) == 0
    assert "no calls" in capsys.readouterr().out
    assert report_main(["--data", str(data), "--by", "agent", "--from", "2001-01-02", "--to", "2001-01-01"]) == 1
    with pytest.raises(SystemExit):
        report_main(["--data", str(data), "--by", "colour"])


# --------------------------------------------------------------------------------------------- erlang


def _json(capsys, argv) -> dict:
    assert erlang_main(["--json", *argv]) == 0
    return json.loads(capsys.readouterr().out)


def test_erlang_b_blocking_trunks_and_traffic(capsys):
    assert erlang_main(["b", "--trunks", "10", "--erlangs", "5"]) == 0
    assert "blocking probability: 0.01838" in capsys.readouterr().out  # B(10, 5) from the Erlang B table
    assert _json(capsys, ["b", "--erlangs", "5", "--blocking", "0.01"])["trunks"] == 11  # table: 11 for 1%
    carried = _json(capsys, ["b", "--trunks", "10", "--blocking", "0.01"])["erlangs"]
    assert carried == pytest.approx(4.46, abs=0.005)  # the table's row N = 10, column 1%
    assert erlang_main(["b", "--erlangs", "5"]) == 1
    assert "give two of" in capsys.readouterr().err


def test_erlang_c_service_level_and_agents_needed(capsys):
    # docs/kpis.md worked example: 10 E at AHT 180 s; 13 agents give SL(20 s) = 0.7956, 80/20 needs 14.
    at13 = _json(capsys, ["c", "--agents", "13", "--erlangs", "10", "--aht", "180", "--target-seconds", "20"])
    assert round(at13["service_level"], 4) == 0.7956
    needed = _json(capsys, ["c", "--erlangs", "10", "--aht", "180", "--service-level", "0.8", "--target-seconds", "20"])
    assert needed["agents"] == 14 and needed["service_level"] >= 0.8
    assert erlang_main(["c", "--agents", "11", "--erlangs", "10", "--aht", "180"]) == 0
    assert "probability of waiting: 0.6821" in capsys.readouterr().out
    assert erlang_main(["c", "--erlangs", "10", "--aht", "180"]) == 1  # neither --agents nor --service-level


def test_erlang_a_with_patience(capsys):
    result = _json(capsys, ["a", "--erlangs", "10", "--aht", "180", "--service-level", "0.8", "--patience", "120"])
    perf = erlang.erlang_a(result["agents"], 10.0, 180.0, 120.0, 20.0)
    assert result["service_level"] == perf.service_level >= 0.8
    assert erlang.erlang_a(result["agents"] - 1, 10.0, 180.0, 120.0, 20.0).service_level < 0.8
    assert 0 < result["p_abandon"] < result["p_wait"]
    assert result["agents"] <= 14  # callers who give up free agents: never more than Erlang C's 14
    with pytest.raises(SystemExit):  # Erlang A needs a patience
        erlang_main(["a", "--erlangs", "10", "--aht", "180", "--agents", "12"])


# --------------------------------------------------------------------------------------------- plot


def _png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert data[12:16] == b"IHDR"  # the first chunk of every PNG
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def _plotted(path) -> dict[tuple[str, str, str], float | None]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert rows and tuple(rows[0]) == PLOT_DATA_COLUMNS
    return {(r["key"], r["figure"], r["start"]): (float(r["percent"]) if r["percent"] else None) for r in rows}


@pytest.mark.parametrize("dimension,interval,keys", [("node", 30, []), ("queue", 15, ["q1", "q3"]),
                                                     ("trunk", 60, [])])
def test_report_plot_draws_the_reports_connect_rate_and_service_level(store, tmp_path, dimension, interval, keys):
    data, records = store
    start, end = T0 + 7200.0, T0 + 30 * 3600.0
    png, series, table = tmp_path / "kpi.png", tmp_path / "kpi.csv", tmp_path / "report.csv"
    argv = ["report", "--data", str(data), "--by", dimension, "--interval", str(interval), "--from", str(start),
            "--to", str(end), "--answer-within", "15", "--format", "csv", "-o", str(table),
            "--plot", str(png), "--plot-data", str(series)]
    for key in keys:
        argv += ["--key", key]
    assert cli_main(argv) == 0
    assert _png_size(png) == PLOT_SIZE
    # Every plotted point is the report's figure, in percent, at its interval start (UTC); an interval in
    # which a key has no call to measure is a gap, never a zero.
    book = KpiBook.from_records(_in_range(records, start, end), KpiConfig(interval=interval * 60, answer_within=15.0),
                                dimensions=(dimension,))
    report = {k: f for k, f in book.report(dimension).items() if not keys or k[0] in keys}
    starts = sorted({s for _, s in report})
    grid = range(starts[0], starts[-1] + interval * 60, interval * 60)
    expected = {}
    for key in sorted({k for k, _ in report}):
        for name in PLOTTED[dimension]:
            values = [getattr(report[(key, s)], name) if (key, s) in report else None for s in grid]
            if any(v is not None for v in values):
                expected.update({(key, name, dt.datetime.fromtimestamp(s, dt.timezone.utc).strftime(
                    "%Y-%m-%dT%H:%M:%SZ")): (None if v is None else v * 100.0) for s, v in zip(grid, values)})
    got = _plotted(series)
    assert got == expected
    assert sum(v is None for v in got.values()) < len(got) / 2  # mostly drawn, a few gaps
    assert {k for k, _, _ in got} == (set(keys) if keys else {r.node if dimension == "node" else r.trunk
                                                              for r in _in_range(records, start, end)} - {""})
    # The same run's CSV report holds the same service levels for the keys asked for.
    with open(table, newline="") as f:
        rows = list(csv.DictReader(f))
    assert {row[dimension] for row in rows} == {k for k, _, _ in got}
    if dimension != "trunk":
        for row in rows:
            plotted = got[(row[dimension], "service_level", row["start"])]
            assert plotted == (float(row["service_level"]) * 100.0 if row["service_level"] else None)


def test_report_plot_picture_has_the_lines(store, tmp_path):
    data, _ = store
    png = tmp_path / "q.png"
    assert cli_main(["report", "--data", str(data), "--by", "queue", "--key", "q0", "--plot", str(png),
                     "--from", "2023-11-15", "--to", "2023-11-15T12:00", "-o", str(tmp_path / "t.txt")]) == 0
    from matplotlib import colors, image

    pixels = image.imread(str(png))[:, :, :3]
    blue = np.array(colors.to_rgb("C0"), dtype=pixels.dtype)  # the first line's colour
    assert (np.abs(pixels - blue).max(axis=2) < 0.02).sum() > 500  # a line, not an empty frame
    assert (tmp_path / "t.txt").read_text().startswith("queue")


def test_report_plot_is_refused_for_agents_and_matplotlib_stays_unloaded_without_it(store, tmp_path, capsys):
    data, _ = store
    assert cli_main(["report", "--data", str(data), "--by", "agent", "--plot", str(tmp_path / "a.png")]) == 1
    assert "neither connect rate nor service level" in capsys.readouterr().err
    assert not (tmp_path / "a.png").exists()
    assert cli_main(["report", "--data", str(data), "--by", "queue", "--plot-data", str(tmp_path / "x.csv")]) == 1
    # The other commands never import matplotlib: a report without --plot, in a fresh interpreter.
    code = ("import sys; from bindings.cli import main; "
            f"rc = main(['report', '--data', {str(data)!r}, '--by', 'node', '-o', {os.devnull!r}]); "
            "print(rc, 'matplotlib' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["0", "False"], done.stderr


def test_agent_report_takes_occupancy_and_utilisation_from_the_agent_log(tmp_path, capsys):
    """An agent logged in for an hour, on break for 15 minutes of it, handling one 10-minute call with 2
    minutes of wrap-up: the report by agent computes occupancy and utilisation from the queue log's agent
    entries and the call records (docs/kpis.md)."""
    from bindings.acdlog import QueueLog
    from core.acd.log import QueueLogEntry as E

    t = T0 - T0 % 3600  # an hour's start
    call = CallRecord(
        call_id="c1", direction=Direction.INBOUND, offered=t + 600.0, ended=t + 1260.0, disposition=Disposition.ANSWERED,
        answered=t + 600.0, queue_segments=(QueueSegment(queue="sales", joined=t + 600.0, left=t + 660.0,
                                                         outcome=QueueOutcome.ANSWERED, answered_by="ann",
                                                         agent_ended=t + 1260.0, after_call_work=120.0),))
    with Storage(tmp_path) as storage:
        with CdrWriter(storage) as writer:
            writer.write(call)
            log = QueueLog(writer)
            for entry in (E(at=t, kind="status", agent="ann", reason="available"),
                          E(at=t + 1260.0, kind="talk_end", agent="ann", wait=600.0, detail="120"),
                          E(at=t + 1800.0, kind="status", agent="ann", reason="on_break", detail="lunch"),
                          E(at=t + 2700.0, kind="status", agent="ann", reason="available"),
                          E(at=t + 3600.0, kind="status", agent="ann", reason="logged_out")):
                log.append(entry)
            writer.flush()
    assert report_main(["--data", str(tmp_path), "--by", "agent", "--interval", "60", "--format", "json",
                        "--from", str(t), "--to", str(t + 3600)]) == 0
    doc = json.loads(capsys.readouterr().out)
    (row,) = [r for r in doc["rows"] if r["agent"] == "ann"]
    # Logged in 3600 s; available 3600 - 900 (break) - 720 (talk + wrap-up) = 1980 s; handle 720 s.
    assert row["utilisation"] == pytest.approx(720 / 3600)
    assert row["occupancy"] == pytest.approx(720 / (720 + 1980))
