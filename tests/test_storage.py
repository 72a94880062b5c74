"""LMDB storage in the data folder: registrations survive a restart, old records stay readable."""
from __future__ import annotations

import logging

import msgspec
import pytest

from bindings.storage import Storage
from core.registrar import Binding
from core.sip.addr import Peer

T0 = 1_700_000_000.0


def binding(contact: str = "sip:alice@192.0.2.10:5062", **kwargs) -> Binding:
    fields = dict(expires_at=T0 + 3600, received=Peer("udp", "192.0.2.10", 5062), call_id="c1", cseq=2)
    fields.update(kwargs)
    return Binding(contact, **fields)


def test_bindings_survive_closing_and_reopening(tmp_path):
    alice = [binding(), binding("sip:alice@[2001:db8::1]:5060;transport=tcp", received=Peer("tcp", "2001:db8::1", 40123), q=0.7)]
    bob = [binding("sip:bob@192.0.2.20", user_agent="Yealink T46U")]
    with Storage(tmp_path / "data") as storage:
        store = storage.bindings()
        store.save("alice", alice)
        store.save("bob", bob)
    with Storage(tmp_path / "data") as storage:
        loaded = storage.bindings().load()
    assert loaded == {"alice": alice, "bob": bob}
    assert isinstance(loaded["alice"][1].received, Peer)
    assert (tmp_path / "data" / "db" / "data.mdb").exists()


def test_saving_an_empty_list_deletes(tmp_path):
    with Storage(tmp_path / "data") as storage:
        store = storage.bindings()
        store.save("alice", [binding()])
        store.save("alice", [])
        store.save("nobody", [])  # deleting what is not there is fine
    with Storage(tmp_path / "data") as storage:
        assert storage.bindings().load() == {}


def test_a_record_from_an_older_version_still_decodes(tmp_path):
    # Fields are only appended with defaults: a record written before q and user_agent existed
    # (an array of the first five fields) reads with their defaults.
    old = msgspec.msgpack.encode([["sip:alice@192.0.2.10", T0, ["udp", "192.0.2.10", 5060], "c1", 7]])
    with Storage(tmp_path / "data") as storage:
        with storage.env.begin(write=True, db=storage.db("registrations")) as txn:
            txn.put(b"alice", old)
        (record,) = storage.bindings().load()["alice"]
    assert record == Binding("sip:alice@192.0.2.10", T0, Peer("udp", "192.0.2.10", 5060), "c1", 7)
    assert record.q is None and record.user_agent is None


def test_an_undecodable_record_is_skipped_and_logged(tmp_path, caplog):
    with Storage(tmp_path / "data") as storage:
        storage.bindings().save("alice", [binding()])
        with storage.env.begin(write=True, db=storage.db("registrations")) as txn:
            txn.put(b"mallory", b"\xc1 not msgpack")
        with caplog.at_level(logging.WARNING, logger="switchcore.storage"):
            loaded = storage.bindings().load()
    assert list(loaded) == ["alice"]
    assert "mallory" in caplog.text


def test_a_named_sub_database_is_one_call(tmp_path):
    with Storage(tmp_path / "data") as storage:
        assert storage.db("registrations") is storage.db("registrations")
        with pytest.raises(KeyError, match="SUBDATABASES"):
            storage.db("no-such-thing")


def test_close_is_idempotent(tmp_path):
    storage = Storage(tmp_path / "nested" / "data")
    storage.close()
    storage.close()
