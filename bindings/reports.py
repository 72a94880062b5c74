"""What the command line reads out of the CDR store, and Erlang planning on the command line.

    switchcore cdr export [--data DIR | --config FILE] [--from T] [--to T] [--format csv|jsonl] [--output FILE]
    switchcore report --by DIMENSION [--interval 15|30|60] [--from T] [--to T] [--format table|csv|json]
                      [--answer-within S] [--short-abandon S] [--totals] [--key NAME ...]
                      [--plot FILE.png [--plot-data FILE.csv]] [--data DIR | --config FILE]
    switchcore erlang b --erlangs A (--trunks N | --blocking P)      # blocking of N trunks / trunks for P
    switchcore erlang b --trunks N --blocking P                      # erlangs N trunks carry at P
    switchcore erlang c --erlangs A --aht S [--target-seconds T] (--agents N | --service-level P)
    switchcore erlang a ... --patience S                             # Erlang A: callers abandon

Times (``--from``, ``--to``) are ISO 8601 (``2024-05-01``, ``2024-05-01T09:00``, with or without an offset;
without one it is UTC) or seconds since the epoch. A range selects the calls that **ended** in [from, to)
(the CDR key is the end time, so this is one cursor scan); within it, KPIs are binned as docs/kpis.md says
(call facts by offer time, queue facts by queue-join time, agent facts by answer time), so the first and
last intervals of a range may be partial.

Export streams: records are read in batches of a few thousand under one read transaction and written out
batch by batch, so memory stays constant whatever the range.

- CSV: one row per call, the columns of ``CSV_COLUMNS``; times in ISO 8601 UTC with milliseconds
  (``--epoch`` for seconds since the epoch), durations in seconds with 3 decimals, a missing value empty.
- JSON lines: one object per call, the whole record (legs, queue segments) with CallRecord's field names,
  times as seconds since the epoch, enumerations as their values.

Each ``*_main(argv)`` parses its own arguments and returns the exit code (0, 1 on a usage or data error
printed to stderr, 2 from argparse).
"""
from __future__ import annotations

import argparse
import csv
import datetime as dt
import enum
import json
import math
import sys
import typing
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

import msgspec
import numpy as np

from core.cdr.record import CallRecord

try:  # the compiled reader of stored records (core/_cdrscan.pyx); the views below are its twin
    from core import _cdrscan
except ImportError:
    _cdrscan = None

__all__ = ["export_main", "report_main", "erlang_main", "CSV_COLUMNS", "write_csv", "write_jsonl",
           "REPORT_COLUMNS", "build_report", "plot_report", "PLOTTED", "PLOT_SIZE", "PLOT_DATA_COLUMNS"]


class UsageError(Exception):
    pass


# --------------------------------------------------------------------------------------------- common


def parse_time(text: str) -> float:
    """ISO 8601 (UTC when no offset is given) or seconds since the epoch."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither ISO 8601 nor seconds since the epoch") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return when.timestamp()


def _iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _add_store_arguments(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--data", metavar="DIR", help="the node's data folder (default: node.data_dir of the config)")
    where.add_argument("--config", metavar="FILE", help="read node.data_dir from this config file")
    parser.add_argument("--from", dest="start", metavar="T", type=parse_time,
                        help="first end time included (ISO 8601 or epoch seconds; default: the first record)")
    parser.add_argument("--to", dest="end", metavar="T", type=parse_time,
                        help="end time excluded (default: after the last record)")
    parser.add_argument("--output", "-o", metavar="FILE", help="write here instead of standard output")


def _data_dir(args: argparse.Namespace) -> Path:
    if args.data is not None:
        return Path(args.data)
    from bindings.config import load_config
    from core.config import ConfigError

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        raise UsageError("\n".join(exc.errors)) from None
    return Path(config.node.data_dir)


@contextmanager
def _reader(args: argparse.Namespace):
    from bindings.cdr import CdrReader
    from bindings.storage import Storage

    data = _data_dir(args)
    if not (data / "db" / "data.mdb").exists():
        raise UsageError(f"{data}: no CDR store here (no db/data.mdb); is this the node's data folder?")
    if args.start is not None and args.end is not None and args.end < args.start:
        raise UsageError("--to is before --from")
    storage = Storage(data)
    try:
        yield CdrReader(storage)
    finally:
        storage.close()


@contextmanager
def _output(path: str | None, binary: bool):
    if path is None or path == "-":
        out = sys.stdout.buffer if binary else sys.stdout
        yield out
        out.flush()
        return
    with open(path, "wb" if binary else "w", **({} if binary else {"newline": "", "encoding": "utf-8"})) as out:
        yield out


def _run(parser: argparse.ArgumentParser, argv: list[str] | None, body) -> int:
    args = parser.parse_args(argv)
    try:
        return body(args)
    except (UsageError, ValueError) as exc:
        print(f"{parser.prog}: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `... | head`: the reader has gone, not an error of ours
        return 0


# --------------------------------------------------------------------------------------------- export
# Export views are generated from CallRecord's fields, so an appended field is exported without an edit
# here: an array-like view decodes the stored bytes with enumerations as plain strings, and a named twin
# (same fields, field names as JSON keys) is what JSON lines print.


def _mirror_type(tp, array_like: bool, cache: dict):
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return str
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        return _mirror(tp, array_like, cache)
    args = typing.get_args(tp)
    if args:
        mapped = tuple(_mirror_type(a, array_like, cache) if a is not Ellipsis else a for a in args)
        origin = typing.get_origin(tp)
        if origin is tuple:
            return tuple[mapped]
        return typing.Union[mapped]
    return tp


def _mirror(cls: type, array_like: bool, cache: dict) -> type:
    if cls in cache:
        return cache[cls]
    fields = []
    for f in msgspec.structs.fields(cls):
        tp = _mirror_type(f.type, array_like, cache)
        if f.default is not msgspec.NODEFAULT:
            default = f.default.value if isinstance(f.default, enum.Enum) else f.default
            fields.append((f.name, tp, default))
        else:
            fields.append((f.name, tp))
    mirrored = msgspec.defstruct(cls.__name__ + ("View" if array_like else "Object"), fields,
                                 array_like=array_like, kw_only=True, gc=False)
    cache[cls] = mirrored
    return mirrored


_View = _mirror(CallRecord, True, {})
_Object = _mirror(CallRecord, False, {})
_view_list_decoder = msgspec.msgpack.Decoder(list[_View])
_json_encoder = msgspec.json.Encoder()


def _views(blobs: list[bytes]) -> list:
    # One decode per batch: the records' bytes joined under one MessagePack array-32 header.
    return _view_list_decoder.decode(b"\xdd" + len(blobs).to_bytes(4, "big") + b"".join(blobs))


def write_jsonl(batches: Iterator[list[bytes]], out: IO[bytes], *, compiled: bool | None = None) -> int:
    """Every stored record as one JSON object a line; returns the number written.

    ``compiled`` (default: when core/_cdrscan is built) transcodes MessagePack to JSON in C; a batch it
    declines (``Unsupported``) is written by the twin below, byte for byte the same.
    """
    compiled = _use_compiled(compiled)
    n = 0
    for blobs in batches:
        if compiled:
            try:
                out.write(_cdrscan.json_lines(blobs))
                n += len(blobs)
                continue
            except _cdrscan.Unsupported:
                pass
        objects = msgspec.convert(_views(blobs), list[_Object], from_attributes=True)
        out.write(_json_encoder.encode_lines(objects))
        n += len(blobs)
    return n


def _use_compiled(compiled: bool | None) -> bool:
    if compiled is None:
        return _cdrscan is not None
    if compiled and _cdrscan is None:
        raise RuntimeError("core._cdrscan is not built (python setup.py build_ext --inplace)")
    return compiled


CSV_COLUMNS = (
    "call_id", "direction", "disposition", "hangup_by", "offered", "answered", "ended",
    "connect_seconds",  # answered − offered
    "talk_seconds",  # ended − answered
    "caller", "callee", "node", "trunk",
    "queues",  # every queue the call passed, in order, joined by ">"
    "queue_outcome",  # of the last queue stay
    "queue_seconds",  # Σ time queued
    "agent",  # who answered last
    "agents_offered",  # how many times an agent was rung
    "campaign_id", "contact_id", "post_dial_delay", "dtmf", "recording",
    "legs",  # number of legs
    "mos",  # the lowest MOS estimate of any leg
)


def _seconds(x: float | None) -> str:
    return "" if x is None else f"{x:.3f}"


def write_csv(batches: Iterator[list[bytes]], out: IO[str], *, epoch: bool = False,
              compiled: bool | None = None) -> int:
    """One row per call (``CSV_COLUMNS``) after a header row; returns the number of calls written.

    ``compiled`` (default: when core/_cdrscan is built) writes a batch's rows in C; a batch it declines
    (``Unsupported``) is written by the twin below, byte for byte the same.
    """
    compiled = _use_compiled(compiled)
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    n = 0

    def stamps(values: list) -> list[str]:
        # One vectorised conversion per batch; milliseconds rounded down, as in the record's key
        # (core.cdr.record.time_key); None → NaN → NaT → "".
        if epoch:
            return [_seconds(v) for v in values]
        ms = np.floor(np.array(values, dtype=np.float64) * 1000.0).astype("datetime64[ms]")
        text = np.datetime_as_string(ms, unit="ms", timezone="UTC").tolist()
        return [("" if t == "NaT" else t) for t in text] if None in values else text

    for blobs in batches:
        if compiled:
            try:
                out.write(_cdrscan.csv_rows(blobs, epoch=epoch))
                n += len(blobs)
                continue
            except _cdrscan.Unsupported:
                pass
        rows = []
        views = _views(blobs)
        offered = stamps([r.offered for r in views])
        answered = stamps([r.answered for r in views])
        ended = stamps([r.ended for r in views])
        for i, r in enumerate(views):
            segs = r.queue_segments
            agent = ""
            offered_agents = 0
            queued = 0.0
            for s in segs:
                queued += s.left - s.joined
                offered_agents += len(s.agents_offered)
                if s.answered_by:
                    agent = s.answered_by
            moses = [leg.mos for leg in r.legs if leg.mos is not None]
            ans = r.answered
            rows.append((
                r.call_id, r.direction, r.disposition, r.hangup_by,
                offered[i], answered[i], ended[i],
                "" if ans is None else f"{ans - r.offered:.3f}",
                "" if ans is None else f"{r.ended - ans:.3f}",
                r.caller, r.callee, r.node, r.trunk,
                ">".join(s.queue for s in segs), segs[-1].outcome if segs else "",
                f"{queued:.3f}" if segs else "", agent, offered_agents,
                r.campaign_id, r.contact_id, _seconds(r.post_dial_delay), r.dtmf, r.recording,
                len(r.legs), f"{min(moses):.2f}" if moses else "",
            ))
        writer.writerows(rows)
        n += len(rows)
    return n


def _export_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="switchcore cdr export",
                                     description="Write the call records of a time range as CSV or JSON lines.")
    _add_store_arguments(parser)
    parser.add_argument("--format", choices=("csv", "jsonl"), default="csv")
    parser.add_argument("--epoch", action="store_true", help="CSV: times as seconds since the epoch")
    parser.add_argument("--batch", type=int, default=4096, help=argparse.SUPPRESS)
    return parser


def export_main(argv: list[str] | None = None) -> int:
    def body(args) -> int:
        with _reader(args) as reader:
            batches = reader.scan(args.start, args.end, batch=max(1, args.batch))
            if args.format == "jsonl":
                with _output(args.output, binary=True) as out:
                    write_jsonl(batches, out)
            else:
                with _output(args.output, binary=False) as out:
                    write_csv(batches, out, epoch=args.epoch)
        return 0

    return _run(_export_parser(), argv, body)


# --------------------------------------------------------------------------------------------- report

# What a table shows per dimension (CSV and JSON carry every figure of core.cdr.kpi.Figures).
REPORT_COLUMNS = {
    "node": ("calls", "connect_rate_inbound", "connect_rate_outbound", "call_loss_rate", "answer_seizure_ratio",
             "queued", "service_level", "abandonment_rate", "average_speed_of_answer", "average_handle_time"),
    "trunk": ("calls", "connect_rate_inbound", "connect_rate_outbound", "call_loss_rate", "answer_seizure_ratio",
              "network_effectiveness_ratio", "post_dial_delay", "average_call_duration"),
    "queue": ("queued", "queue_answer_rate", "abandonment_rate", "abandonment_rate_excluding_short",
              "service_level", "average_speed_of_answer", "average_queue_time", "average_time_to_abandon",
              "average_handle_time"),
    "agent": ("average_handle_time", "agent_answer_rate", "occupancy", "utilisation"),
    "campaign": ("calls", "connect_rate_outbound", "post_dial_delay", "average_call_duration", "queued",
                 "service_level", "abandonment_rate"),
}
_COUNTS = {"calls", "queued"}
_TIMES = {"post_dial_delay", "average_connect_time", "average_call_duration", "average_speed_of_answer",
          "average_queue_time", "average_time_to_abandon", "average_handle_time"}
_SHORT = {
    "connect_rate_inbound": "connect_in", "connect_rate_outbound": "connect_out", "call_loss_rate": "call_loss",
    "answer_seizure_ratio": "ASR", "network_effectiveness_ratio": "NER", "post_dial_delay": "PDD_s",
    "average_call_duration": "ACD_s", "average_connect_time": "connect_s", "queue_answer_rate": "answered",
    "abandonment_rate": "abandoned", "abandonment_rate_excluding_short": "abandoned_long",
    "service_level": "SL", "average_speed_of_answer": "ASA_s", "average_queue_time": "queue_s",
    "average_time_to_abandon": "abandon_s", "average_handle_time": "AHT_s", "agent_answer_rate": "answer_rate",
}


def build_report(reader, dimensions: str | typing.Iterable[str], start: float | None, end: float | None, config, *,
                 batch: int = 262_144, compiled: bool | None = None):
    """A KpiBook of one dimension, or of several at once, over the calls that ended in [start, end), from one
    cursor scan (every dimension is summed in the same pass over each batch).

    ``compiled`` picks the reader of the stored bytes (``KpiBook.add_encoded``); the books are equal.
    """
    from core.cdr.kpi import KpiBook

    book = KpiBook(config, dimensions=(dimensions,) if isinstance(dimensions, str) else tuple(dimensions))
    for blobs in reader.scan(start, end, batch=batch):
        book.add_encoded(blobs, compiled=compiled)
    return book


def add_agent_times(book, storage, start: float | None, end: float | None) -> None:
    """Each agent's logged-in and available time per interval, from the agent log in the node's queue log
    (``core.acd.log.agent_times``): the inputs of occupancy and utilisation. The log is read from its
    beginning (an agent's status at ``start`` is whatever it last changed to), the times kept in range."""
    import time

    from bindings.acdlog import read_queue_log
    from core.acd.log import agent_times

    stop = end if end is not None else time.time()
    interval = book.config.interval
    for (agent, at), (logged_in, available) in agent_times(read_queue_log(storage, None, stop), interval,
                                                           end=stop).items():
        if start is not None and at + interval <= start:
            continue
        book.add_agent_time(agent, at, logged_in=logged_in, available=available)


def _report_rows(book, dimension: str, totals: bool, keys: list[str] | None = None) -> list[tuple[str, str, object]]:
    wanted = None if keys is None else set(keys)
    rows = [(key, _iso(start), figures) for (key, start), figures in book.report(dimension).items()
            if wanted is None or key in wanted]
    if totals:
        present = sorted({key for (dim, key, _), _c in book.groups(dimension) if wanted is None or key in wanted})
        rows += [(key, "total", book.figures(dimension, key)) for key in present]
    return rows


# --------------------------------------------------------------------------------------------- plot
# `report --plot FILE.png`: connect rate and service level per interval, drawn with matplotlib's Agg
# renderer (no display, no GUI toolkit). matplotlib is imported here only, so the node and every other
# command never pay its import (a few hundred milliseconds).

PLOTTED = {  # the figures a plot draws, per dimension (docs/kpis.md says which dimensions have which)
    "node": ("connect_rate_inbound", "connect_rate_outbound", "service_level"),
    "trunk": ("connect_rate_inbound", "connect_rate_outbound"),
    "queue": ("service_level",),
    "campaign": ("connect_rate_inbound", "connect_rate_outbound", "service_level"),
}
PLOT_SIZE = (1200, 650)  # pixels: the PNG's width and height
_PLOT_DPI = 100
_SERIES = {"connect_rate_inbound": "inbound", "connect_rate_outbound": "outbound", "service_level": ""}
PLOT_DATA_COLUMNS = ("key", "figure", "start", "percent")


def plot_report(report: dict, path: str, *, dimension: str, interval: int, title: str,
                data_path: str | None = None) -> int:
    """Draw ``report`` ((key, interval start) → Figures, from ``KpiBook.report``) as a PNG at ``path``:
    per key, connect rate (inbound, outbound) on the upper axes and service level on the lower, in percent,
    against the interval start (UTC); an interval without calls is a gap in the line.

    ``data_path``: also write, as CSV (``PLOT_DATA_COLUMNS``), the series read back from the drawn lines,
    so what was plotted can be checked against the report. Returns the number of lines drawn.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
    from matplotlib.figure import Figure  # the object API: no pyplot, no global state, no backend chosen

    names = PLOTTED[dimension]
    panels = [p for p in (("connect rate (%)", [n for n in names if n.startswith("connect")]),
                          ("service level (%)", [n for n in names if n == "service_level"])) if p[1]]
    starts = sorted({start for _, start in report})
    grid = np.arange(starts[0], starts[-1] + interval, interval, dtype=np.int64) if starts else np.empty(0, np.int64)
    x = grid.astype("datetime64[s]")
    keys = sorted({key for key, _ in report})
    fig = Figure(figsize=(PLOT_SIZE[0] / _PLOT_DPI, PLOT_SIZE[1] / _PLOT_DPI), dpi=_PLOT_DPI)
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    drawn = []
    for ax, (label, figure_names) in zip(axes, panels):
        for key in keys:
            for name in figure_names:
                values = [getattr(report[(key, int(s))], name) if (key, int(s)) in report else None for s in grid]
                if all(v is None for v in values):
                    continue  # e.g. a node with no outbound calls: no empty line in the legend
                y = np.array([np.nan if v is None else v * 100.0 for v in values])
                series = " ".join(p for p in (key or '""', _SERIES[name]) if p)
                (line,) = ax.plot(x, y, label=series, linewidth=1.2, marker=".", markersize=3)
                drawn.append((line, key, name))
        ax.set_ylabel(label)
        ax.set_ylim(-2, 102)
        ax.grid(True, alpha=0.3)
        if ax.get_lines():
            ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", frameon=False)
        else:
            ax.text(0.5, 0.5, "no calls to measure", transform=ax.transAxes, ha="center", va="center")
    axes[-1].set_xlabel("interval start (UTC)")
    locator = AutoDateLocator(tz=dt.timezone.utc)
    axes[-1].xaxis.set_major_locator(locator)
    axes[-1].xaxis.set_major_formatter(ConciseDateFormatter(locator, tz=dt.timezone.utc))
    fig.suptitle(title)
    fig.subplots_adjust(left=0.07, right=0.83, top=0.9, bottom=0.1, hspace=0.12)
    fig.savefig(path, format="png", dpi=_PLOT_DPI)
    if data_path is not None:
        with open(data_path, "w", newline="", encoding="utf-8") as out:
            writer = csv.writer(out, lineterminator="\n")
            writer.writerow(PLOT_DATA_COLUMNS)
            for line, key, name in drawn:  # what the lines hold, not what was meant to be drawn
                xs = np.asarray(line.get_xdata()).astype("datetime64[s]").astype(np.int64)
                for t, v in zip(xs.tolist(), np.asarray(line.get_ydata(), dtype=np.float64).tolist()):
                    writer.writerow((key, name, _iso(t), "" if math.isnan(v) else repr(v)))
    return len(drawn)


def _plot_title(dimension: str, keys: list[str] | None, start: float | None, end: float | None, interval: int,
                answer_within: float) -> str:
    first = _iso(start) if start is not None else "the first record"
    last = _iso(end) if end is not None else "the last record"
    which = f"{dimension} {', '.join(k or chr(34) * 2 for k in keys)}" if keys else f"every {dimension}"
    drawn = [text for text, shown in (("connect rate", any(n.startswith("connect") for n in PLOTTED[dimension])),
                                      (f"service level (answered within {answer_within:g} s)",
                                       "service_level" in PLOTTED[dimension])) if shown]
    heading = " and ".join(drawn)
    return (f"{heading[0].upper()}{heading[1:]} per {interval // 60}-minute interval\n"
            f"{which}, calls that ended from {first} to {last}")


def _cell(name: str, value) -> str:
    if value is None:
        return "-"
    if name in _COUNTS:
        return str(value)
    if name in _TIMES:
        return f"{value:.1f}"
    return f"{value * 100:.1f}%"


def _report_parser() -> argparse.ArgumentParser:
    from core.cdr.kpi import DIMENSIONS

    parser = argparse.ArgumentParser(prog="switchcore report",
                                     description="Call-centre KPIs (docs/kpis.md) per interval from the stored CDRs.")
    _add_store_arguments(parser)
    parser.add_argument("--by", choices=DIMENSIONS, required=True, help="the dimension to report on")
    parser.add_argument("--interval", type=int, choices=(15, 30, 60), default=15, help="minutes (default 15)")
    parser.add_argument("--format", choices=("table", "csv", "json"), default="table")
    parser.add_argument("--answer-within", type=float, default=20.0, metavar="S",
                        help="service-level threshold in seconds (default 20)")
    parser.add_argument("--short-abandon", type=float, default=5.0, metavar="S",
                        help="abandons quicker than this are short (default 5)")
    parser.add_argument("--totals", action="store_true", help="add one row per key over the whole range")
    parser.add_argument("--key", action="append", metavar="NAME",
                        help="only this key of the dimension (repeatable; default: every key)")
    parser.add_argument("--plot", metavar="FILE.png",
                        help="also draw connect rate and service level per interval to this PNG "
                             "(node, trunk, queue, campaign)")
    parser.add_argument("--plot-data", metavar="FILE.csv",
                        help="with --plot: the plotted series as CSV (key, figure, start, percent)")
    return parser


def report_main(argv: list[str] | None = None) -> int:
    def body(args) -> int:
        from core.cdr.kpi import Figures, KpiConfig

        config = KpiConfig(interval=args.interval * 60, answer_within=args.answer_within,
                           short_abandon=args.short_abandon)
        if args.plot_data is not None and args.plot is None:
            raise UsageError("--plot-data goes with --plot")
        if args.plot is not None and args.by not in PLOTTED:
            raise UsageError(f"--plot: {args.by} figures have neither connect rate nor service level "
                             f"(plot by {', '.join(PLOTTED)})")
        with _reader(args) as reader:
            book = build_report(reader, args.by, args.start, args.end, config)
            if args.by == "agent":
                add_agent_times(book, reader.storage, args.start, args.end)
        rows = _report_rows(book, args.by, args.totals, args.key)
        if args.plot is not None:
            report = {k: f for k, f in book.report(args.by).items() if args.key is None or k[0] in args.key}
            title = _plot_title(args.by, args.key, args.start, args.end, config.interval, args.answer_within)
            plot_report(report, args.plot, dimension=args.by, interval=config.interval, title=title,
                        data_path=args.plot_data)
        names = [f.name for f in Figures.__dataclass_fields__.values()]
        dim = args.by
        if args.format == "json":
            doc = {
                "dimension": dim, "interval_minutes": args.interval,
                "from": args.start, "to": args.end,
                "answer_within": args.answer_within, "short_abandon": args.short_abandon, "keys": args.key,
                "rows": [{dim: key, "start": start, **figures.as_dict()} for key, start, figures in rows],
            }
            with _output(args.output, binary=False) as out:
                json.dump(doc, out, indent=1)
                out.write("\n")
        elif args.format == "csv":
            with _output(args.output, binary=False) as out:
                writer = csv.writer(out, lineterminator="\n")
                writer.writerow((dim, "start", *names))
                for key, start, figures in rows:
                    writer.writerow((key, start, *("" if v is None else v for v in figures.as_dict().values())))
        else:
            columns = REPORT_COLUMNS[dim]
            header = (dim, "interval (UTC)", *(_SHORT.get(c, c) for c in columns))
            table = [header] + [(key or '""', start, *(_cell(c, getattr(f, c)) for c in columns))
                                for key, start, f in rows]
            widths = [max(len(row[i]) for row in table) for i in range(len(header))]
            with _output(args.output, binary=False) as out:
                if not rows:
                    out.write(f"no calls in the range for {dim}\n")
                    return 0
                for i, row in enumerate(table):
                    out.write("  ".join(cell.ljust(w) if j < 2 else cell.rjust(w)
                                        for j, (cell, w) in enumerate(zip(row, widths))).rstrip() + "\n")
                    if i == 0:
                        out.write("  ".join("-" * w for w in widths) + "\n")
        return 0

    return _run(_report_parser(), argv, body)


# --------------------------------------------------------------------------------------------- erlang


def _erlang_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="switchcore erlang",
                                     description="Erlang B, C and A planning (docs/kpis.md, core.cdr.erlang).")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    models = parser.add_subparsers(dest="model", required=True, metavar="MODEL")
    b = models.add_parser("b", help="Erlang B: trunks and blocking (lost calls cleared)")
    b.add_argument("--erlangs", type=float, metavar="A", help="offered traffic in erlangs")
    b.add_argument("--trunks", type=int, metavar="N")
    b.add_argument("--blocking", type=float, metavar="P", help="target blocking (grade of service), e.g. 0.01")
    b.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
    for name, help_ in (("c", "Erlang C: agents and service level (callers wait)"),
                        ("a", "Erlang A: agents and service level (callers abandon after their patience)")):
        m = models.add_parser(name, help=help_)
        m.add_argument("--erlangs", type=float, metavar="A", required=True, help="offered traffic in erlangs")
        m.add_argument("--aht", type=float, metavar="S", required=True, help="average handle time, seconds")
        m.add_argument("--target-seconds", type=float, metavar="T", default=20.0,
                       help="service-level threshold T (default 20)")
        m.add_argument("--agents", type=int, metavar="N", help="agents staffed: print what they achieve")
        m.add_argument("--service-level", type=float, metavar="P",
                       help="target share answered within T (e.g. 0.8): print the agents needed")
        m.add_argument("--max-occupancy", type=float, metavar="P", help="with --service-level: occupancy cap")
        m.add_argument("--patience", type=float, metavar="S", required=(name == "a"),
                       help="mean patience before abandoning, seconds" + (" (Erlang A)" if name == "a" else
                                                                         " (given: Erlang A instead)"))
        m.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
    return parser


def _erlang_b(args) -> dict:
    from core.cdr import erlang

    given = (args.erlangs is not None, args.trunks is not None, args.blocking is not None)
    if given == (True, True, False):
        p = erlang.erlang_b(args.trunks, args.erlangs)
        return {"model": "erlang-b", "erlangs": args.erlangs, "trunks": args.trunks, "blocking": p,
                "carried_erlangs": args.erlangs * (1.0 - p)}
    if given == (True, False, True):
        n = erlang.trunks_for_blocking(args.erlangs, args.blocking)
        p = erlang.erlang_b(n, args.erlangs)
        return {"model": "erlang-b", "erlangs": args.erlangs, "target_blocking": args.blocking, "trunks": n,
                "blocking": p, "carried_erlangs": args.erlangs * (1.0 - p)}
    if given == (False, True, True):
        a = erlang.traffic_for_blocking(args.trunks, args.blocking)
        return {"model": "erlang-b", "trunks": args.trunks, "blocking": args.blocking, "erlangs": a}
    raise UsageError("give two of --erlangs, --trunks and --blocking (A and N: blocking; A and P: trunks; "
                     "N and P: erlangs)")


def _erlang_queue(args) -> dict:
    from core.cdr import erlang

    patience = args.patience
    model = "erlang-a" if patience is not None else "erlang-c"
    if (args.agents is None) == (args.service_level is None):
        raise UsageError("give one of --agents N (what N agents achieve) and --service-level P (agents needed)")
    result: dict = {"model": model}
    if args.service_level is not None:
        n = erlang.agents_for_service_level(args.erlangs, args.aht, args.service_level, args.target_seconds,
                                            patience=patience, max_occupancy=args.max_occupancy)
        result["target_service_level"] = args.service_level
        if args.max_occupancy is not None:
            result["max_occupancy"] = args.max_occupancy
    else:
        n = args.agents
    perf = (erlang.erlang_a(n, args.erlangs, args.aht, patience, args.target_seconds) if patience is not None
            else erlang.erlang_c_performance(n, args.erlangs, args.aht, args.target_seconds))
    result.update({
        "erlangs": args.erlangs, "aht": args.aht, "target_seconds": args.target_seconds, "agents": n,
        "patience": patience, "p_wait": perf.p_wait, "p_abandon": perf.p_abandon,
        "service_level": perf.service_level, "asa": perf.asa, "mean_wait": perf.mean_wait,
        "occupancy": perf.occupancy,
    })
    if patience is None:
        del result["patience"], result["p_abandon"]
    return result


_LABELS = {
    "erlangs": ("offered traffic", "{:.4g} E"), "carried_erlangs": ("carried traffic", "{:.4g} E"),
    "trunks": ("trunks", "{}"), "blocking": ("blocking probability", "{:.5f}"),
    "target_blocking": ("target blocking", "{:g}"), "agents": ("agents", "{}"), "aht": ("AHT", "{:g} s"),
    "target_seconds": ("service-level threshold T", "{:g} s"), "patience": ("mean patience", "{:g} s"),
    "target_service_level": ("target service level", "{:.1%}"), "max_occupancy": ("max occupancy", "{:.1%}"),
    "p_wait": ("probability of waiting", "{:.4f}"), "p_abandon": ("probability of abandoning", "{:.4f}"),
    "service_level": ("service level (answered within T)", "{:.4f}"),
    "asa": ("average speed of answer", "{:.2f} s"), "mean_wait": ("average queue time", "{:.2f} s"),
    "occupancy": ("occupancy", "{:.4f}"),
}


def erlang_main(argv: list[str] | None = None) -> int:
    def body(args) -> int:
        result = _erlang_b(args) if args.model == "b" else _erlang_queue(args)
        if args.json:
            print(json.dumps(result))
            return 0
        print({"erlang-b": "Erlang B (lost calls cleared)", "erlang-c": "Erlang C (callers wait)",
               "erlang-a": "Erlang A (callers abandon)"}[result["model"]])
        for key, value in result.items():
            if key == "model":
                continue
            label, fmt = _LABELS[key]
            text = "no steady state (A >= N)" if isinstance(value, float) and math.isinf(value) else fmt.format(value)
            print(f"  {label}: {text}")
        return 0

    return _run(_erlang_parser(), argv, body)
