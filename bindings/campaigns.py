"""Outbound campaigns on disk: contacts, attempts, the do-not-call list and each campaign's state in LMDB.

MISSION.md ("Outbound campaigns"); the state machine is ``core.scheduler.campaign.Campaign``, which
queues a record for every change. ``CampaignStore`` writes those records in one synced LMDB
transaction, and its ``next_dials`` / ``preview_dial`` return dials only once that transaction has
committed: an attempt is on disk as ``dialling`` before its INVITE can leave (the write-ahead rule of
campaign.py's module doc, which is what guarantees nobody is dialled twice across a restart).

Sub-databases (``Storage.db``), shared by every campaign of the node:
``campaigns`` (name -> CampaignStatus), ``campaign_contacts`` (name NUL contact id -> ContactRecord),
``campaign_attempts`` (name NUL big-endian seq -> Attempt, so one campaign's attempts are one cursor
range in order), ``dnc`` (E.164 -> DncEntry; the node's list, checked by every campaign).
"""
from __future__ import annotations

import logging
import struct
from pathlib import Path
from typing import Iterable

import msgspec

from bindings.storage import Storage
from core.scheduler.campaign import (
    Attempt, Campaign, CampaignConfig, CampaignRecord, CampaignStatus, ContactRecord, Dial, DncEntry, DoNotCall,
)
from core.scheduler.contacts import ContactImport, DncImport, ImportProblem, import_contacts, import_dnc

__all__ = ["CAMPAIGN_DBS", "CampaignStore"]

log = logging.getLogger("switchcore.campaigns")

CAMPAIGNS_DB, CONTACTS_DB, ATTEMPTS_DB, DNC_DB = "campaigns", "campaign_contacts", "campaign_attempts", "dnc"
#: Listed in bindings/storage.py's SUBDATABASES.
CAMPAIGN_DBS = (CAMPAIGNS_DB, CONTACTS_DB, ATTEMPTS_DB, DNC_DB)

_SEQ = struct.Struct(">Q")


def _open_db(storage: Storage, name: str):
    return storage.db(name)


def _prefix(campaign: str) -> bytes:
    return campaign.encode("utf-8") + b"\0"


class CampaignStore:
    """The campaigns' records in one node's ``Storage``. One writer (the node's event loop)."""

    def __init__(self, storage: Storage):
        self.storage = storage
        self._campaigns = _open_db(storage, CAMPAIGNS_DB)
        self._contacts = _open_db(storage, CONTACTS_DB)
        self._attempts = _open_db(storage, ATTEMPTS_DB)
        self._dnc = _open_db(storage, DNC_DB)
        self._encoder = msgspec.msgpack.Encoder()
        self._decode_status = msgspec.msgpack.Decoder(CampaignStatus).decode
        self._decode_contact = msgspec.msgpack.Decoder(ContactRecord).decode
        self._decode_attempt = msgspec.msgpack.Decoder(Attempt).decode
        self._decode_dnc = msgspec.msgpack.Decoder(DncEntry).decode

    # -- writing ----------------------------------------------------------------------------------------
    def write(self, records: Iterable[CampaignRecord]) -> int:
        """Persist records in one transaction; durable when this returns. Returns how many."""
        encode = self._encoder.encode
        n = 0
        with self.storage.env.begin(write=True) as txn:
            for record in records:
                kind = type(record)
                if kind is ContactRecord:
                    txn.put(_prefix(record.campaign) + record.contact.id.encode("utf-8"), encode(record), db=self._contacts)
                elif kind is Attempt:
                    txn.put(_prefix(record.campaign) + _SEQ.pack(record.seq), encode(record), db=self._attempts)
                elif kind is CampaignStatus:
                    txn.put(record.name.encode("utf-8"), encode(record), db=self._campaigns)
                elif kind is DncEntry:
                    txn.put(record.number.encode("ascii"), encode(record), db=self._dnc)
                else:
                    raise TypeError(f"not a campaign record: {record!r}")
                n += 1
        return n

    def commit(self, campaign: Campaign) -> int:
        """Write what ``campaign`` changed since the last commit."""
        records = campaign.records()
        return self.write(records) if records else 0

    # -- the write-ahead faces (use these, not the campaign's, to place calls) ---------------------
    def next_dials(self, campaign: Campaign, now: float, count: int) -> list[Dial]:
        """``campaign.next_dials`` with its attempts on disk first: send the INVITEs after this returns."""
        dials = campaign.next_dials(now, count)
        self.commit(campaign)
        return dials

    def preview_dial(self, campaign: Campaign, agent: str, now: float) -> Dial | None:
        dial = campaign.preview_dial(agent, now)
        self.commit(campaign)
        return dial

    def result(self, campaign: Campaign, dial_id: str, result: str, now: float, **kwargs) -> bool:
        done = campaign.result(dial_id, result, now, **kwargs)
        self.commit(campaign)
        return done

    # -- reading ----------------------------------------------------------------------------------------
    def load_dnc(self) -> DoNotCall:
        with self.storage.env.begin(db=self._dnc) as txn:
            return DoNotCall(self._decode_dnc(value) for _, value in txn.cursor())

    def _range(self, txn, db, prefix: bytes):
        cursor = txn.cursor(db=db)
        if not cursor.set_range(prefix):
            return
        for key, value in cursor:
            if not bytes(key).startswith(prefix):
                return
            yield value

    def load(self, config: CampaignConfig, dnc: DoNotCall, now: float) -> Campaign:
        """The campaign as it was left (a new, empty one if it never ran). Attempts cut off by a stop
        are closed as interrupted and that is written before this returns."""
        prefix = _prefix(config.name)
        with self.storage.env.begin() as txn:
            raw = txn.get(config.name.encode("utf-8"), db=self._campaigns)
            status = self._decode_status(raw) if raw is not None else None
            contacts = [self._decode_contact(v) for v in self._range(txn, self._contacts, prefix)]
            attempts = [self._decode_attempt(v) for v in self._range(txn, self._attempts, prefix)]
        campaign = Campaign.restore(config, dnc, status, contacts, attempts, now)
        interrupted = self.commit(campaign)
        if interrupted:
            log.warning("campaign %s: %d records settled after a restart (interrupted dials are not redialled)",
                        config.name, interrupted)
        return campaign

    def open(self, config: CampaignConfig, dnc: DoNotCall, now: float, *, base: str | Path = ".") -> tuple[Campaign, list[ImportProblem]]:
        """Load the campaign; on its first start (no contacts stored yet) import ``config.contacts``,
        and add ``config.dnc`` to the DNC list. Paths are relative to ``base`` (the config file's folder).
        Returns the campaign and every row kept out of either file."""
        problems: list[ImportProblem] = []
        if config.dnc:
            problems += self.import_dnc_file(Path(base) / config.dnc, dnc, config.default_country, now).problems
        campaign = self.load(config, dnc, now)
        if config.contacts and not campaign.contacts:
            problems += self.import_contacts_file(campaign, Path(base) / config.contacts, now).problems
        return campaign, problems

    # -- imports ----------------------------------------------------------------------------------------
    def import_contacts_file(self, campaign: Campaign, path: str | Path, now: float) -> ContactImport:
        c = campaign.config
        result = import_contacts(Path(path).read_bytes(), c.default_country, c.default_timezone, c.columns)
        problems = result.problems + campaign.add_contacts(result.contacts, now)
        self.commit(campaign)
        for problem in problems:
            log.warning("%s:%d: %s", path, problem.line, problem.reason)
        return ContactImport(result.contacts, sorted(problems, key=lambda p: p.line))

    def import_dnc_file(self, path: str | Path, dnc: DoNotCall, default_country: str, now: float) -> DncImport:
        result = import_dnc(Path(path).read_bytes(), default_country)
        source = f"file:{Path(path).name}"
        self.write([e for e in (dnc.add(n, now, source) for n in result.numbers) if e is not None])
        for problem in result.problems:
            log.warning("%s:%d: %s", path, problem.line, problem.reason)
        return result

    def add_dnc(self, dnc: DoNotCall, number: str, now: float, source: str = "api", *, agent: str = "") -> DncEntry | None:
        """Put an E.164 number on the node's list (the API's face); durable on return."""
        entry = dnc.add(number, now, source, agent=agent)
        if entry is not None:
            self.write([entry])
        return entry

    def remove_dnc(self, dnc: DoNotCall, number: str) -> DncEntry | None:
        """Take an E.164 number off the node's list; durable on return. The entry it had, or None.
        (A number that came from a campaign's DNC file comes back if that file is imported again.)"""
        entry = dnc.remove(number)
        if entry is not None:
            with self.storage.env.begin(write=True) as txn:
                txn.delete(number.encode("ascii"), db=self._dnc)
        return entry
