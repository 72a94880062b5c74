"""The node's durable state: one LMDB environment in the data folder (DESIGN.md, "Storage").

One environment, one named sub-database per kind of record; opening one is ``storage.db(name)``:
``registrations`` (AOR → that user's bindings), ``cdr`` (key: big-endian end time + call id, so a time
range is a cursor scan), ``cdr_by_call``, ``active_calls`` (bindings/cdr.py), ``queue_log`` (the ACD's
member and agent events in time order, bindings/acdlog.py), and the campaigns' (bindings/campaigns.py).

Records are msgspec Structs (``frozen=True, array_like=True, gc=False``) encoded as MessagePack;
fields are only ever appended, with defaults, so a record written by an older version decodes.
LMDB syncs each write transaction to disk before ``commit`` returns (``sync=True``), and the
environment is synced once more on close.
"""
from __future__ import annotations

import logging
from pathlib import Path

import lmdb
import msgspec

from core.registrar import Binding

__all__ = ["BindingStore", "Storage", "SUBDATABASES"]

log = logging.getLogger("switchcore.storage")

# Every sub-database the node uses; lmdb needs their count up front (max_dbs).
SUBDATABASES = ("registrations", "cdr", "cdr_by_call", "active_calls", "queue_log",
                "campaigns", "campaign_contacts", "campaign_attempts", "dnc")
_MAX_DBS = 32
# LMDB's map is address space, not disk: the file grows only as data is written. 64 GiB holds some 200
# million call records (about 300 bytes each); a map that fills stops the node's writes (MDB_MAP_FULL).
_DEFAULT_MAP_SIZE = 64 << 30


class Storage:
    """The LMDB environment of one node, at ``DATA_DIR/db``."""

    def __init__(self, data_dir: str | Path, *, map_size: int = _DEFAULT_MAP_SIZE):
        self.path = Path(data_dir) / "db"
        self.path.mkdir(parents=True, exist_ok=True)
        # One writer per environment (DESIGN.md): this process. The lock file keeps another
        # process from corrupting it; readers never block the writer.
        self.env = lmdb.open(str(self.path), map_size=map_size, max_dbs=_MAX_DBS, subdir=True, sync=True)
        self._dbs: dict[str, object] = {}
        self._bindings: BindingStore | None = None

    def db(self, name: str):
        """The named sub-database, created on first use."""
        handle = self._dbs.get(name)
        if handle is None:
            if name not in SUBDATABASES:
                raise KeyError(f"unknown sub-database {name!r}; add it to SUBDATABASES")
            handle = self._dbs[name] = self.env.open_db(name.encode("ascii"), create=True)
        return handle

    def bindings(self) -> "BindingStore":
        """The registrar's store (one per environment)."""
        if self._bindings is None:
            self._bindings = BindingStore(self)
        return self._bindings

    def close(self) -> None:
        """Flush to disk and close; safe to call twice."""
        if self.env is None:
            return
        self.env.sync(True)
        self.env.close()
        self.env = None

    def __enter__(self) -> "Storage":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class BindingStore:
    """Registrations in the ``registrations`` sub-database: key the AOR (the user name, UTF-8),
    value that user's bindings as a MessagePack array of ``Binding`` records."""

    def __init__(self, storage: Storage):
        self.storage = storage
        self._db = storage.db("registrations")
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder = msgspec.msgpack.Decoder(list[Binding])

    def load(self) -> dict[str, list[Binding]]:
        """Every stored AOR with its bindings; a record that does not decode is skipped and logged."""
        result: dict[str, list[Binding]] = {}
        with self.storage.env.begin(db=self._db) as txn:
            for key, value in txn.cursor():
                aor = bytes(key).decode("utf-8", "replace")
                try:
                    result[aor] = self._decoder.decode(value)
                except msgspec.DecodeError as exc:
                    log.warning("registrations: skipping undecodable record for %r: %s", aor, exc)
        return result

    def save(self, aor: str, bindings: list[Binding]) -> None:
        """Store ``aor``'s bindings (an empty list deletes the record); durable on return."""
        key = aor.encode("utf-8")
        with self.storage.env.begin(write=True, db=self._db) as txn:
            if bindings:
                txn.put(key, self._encoder.encode(bindings))
            else:
                txn.delete(key)
