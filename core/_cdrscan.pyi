"""What Python sees of core/_cdrscan.pyx: stored call records (MessagePack bytes, or memoryviews of LMDB
pages valid for the call) read in C into KPI columns, CSV rows and JSON lines; KPI columns summed into
every dimension's counters in one pass (tally). The pure-Python twins are
core.cdr.kpi.Columns.from_records(decode_views(...)) and bindings.reports's views."""

from typing import Sequence

import numpy as np

Record = bytes | bytearray | memoryview

class Unsupported(ValueError):
    """A batch the compiled reader does not reproduce exactly: read it with the pure-Python twin."""

CSV_QUOTED: str  # the ASCII characters that make Python's csv writer quote a field
JSON_SUPPORTED: bool  # False if CallRecord gained a field type the JSON transcoder does not know

class NameTable:
    names: list[str]
    def __init__(self, values: Sequence[str] = (), frozen: bool = False) -> None: ...

class ColumnScan:
    def __init__(self, calls: bool, agents: bool) -> None: ...
    def add(self, values: Sequence[Record]) -> None: ...
    def columns(self) -> dict[str, np.ndarray | list[str] | int | bool]: ...

class FieldLayout: ...

def scan_columns(values: Sequence[Record], *, calls: bool = True,
                 agents: bool = True) -> dict[str, np.ndarray | list[str] | int | bool]: ...
TALLY_DIMENSIONS: tuple[str, ...]  # core.cdr.kpi.DIMENSIONS, in order: the tally's dimension indices
TALLY_FIELDS: tuple[str, ...]  # the counters (core.cdr.kpi.Counters names) of the tally's columns

def tally(cols: object, interval: int, answer_within_ms: float, short_abandon_ms: float,
          dimensions: frozenset[str] | set[str] | tuple[str, ...]
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(dimension index int8, key code int32, interval start int64, counters int64 (groups, fields)) of one
    batch of KPI columns (core.cdr.kpi.Columns), every kept dimension in one pass; Unsupported for a time or
    sum it cannot keep exactly as the numpy twin (KpiBook.add_columns) does."""
def csv_rows(values: Sequence[Record], *, epoch: bool = False) -> str: ...
def json_lines(values: Sequence[Record]) -> bytes: ...
