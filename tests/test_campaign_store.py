"""Campaigns in LMDB (bindings/campaigns.py): the write-ahead rule on a real environment, and a restart
from disk that continues where the campaign stopped without dialling anyone twice."""
from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import msgspec

from bindings.campaigns import ATTEMPTS_DB, CampaignStore, _open_db
from bindings.storage import Storage
from core.scheduler.campaign import Attempt, CampaignConfig, RetryRule

NY = "America/New_York"
NOON = datetime(2026, 11, 23, 12, 0, tzinfo=ZoneInfo(NY)).timestamp()

CONTACTS = (
    "phone,name,account\n"
    "212 555 0101,Ann,A1\n"
    "212 555 0102,Bob,A2\n"
    "oops,Bad,A3\n"
    "212 555 0103,Cat,A4\n"
    "212 555 0104,Dan,A5\n"
    "+44 20 7946 0958,Eve,A6\n"  # 17:00 in London: inside the window
)


def config(**settings) -> CampaignConfig:
    return CampaignConfig(name="winter", trunk="carrier", caller_id="+12125550000", queue="sales",
                          contacts="contacts.csv", dnc="dnc.txt", retry={"busy": RetryRule(600)}, **settings)


def first_start(tmp_path, **settings):
    (tmp_path / "contacts.csv").write_text(CONTACTS)
    (tmp_path / "dnc.txt").write_text("# opted out\n212-555-0104\n")
    storage = Storage(tmp_path / "data")
    store = CampaignStore(storage)
    dnc = store.load_dnc()
    campaign, problems = store.open(config(**settings), dnc, NOON, base=tmp_path)
    return storage, store, dnc, campaign, problems


def restart(tmp_path, now, **settings):
    storage = Storage(tmp_path / "data")
    store = CampaignStore(storage)
    dnc = store.load_dnc()
    campaign, problems = store.open(config(**settings), dnc, now, base=tmp_path)
    return storage, store, campaign, problems


def test_first_start_imports_the_list_and_reports_bad_rows_by_line(tmp_path):
    storage, store, dnc, campaign, problems = first_start(tmp_path)
    assert [(p.line, "oops" in p.reason) for p in problems] == [(4, True)]
    assert len(campaign.contacts) == 5 and "+12125550104" in dnc
    storage.close()
    # A restart does not import the file again (nothing added twice, nothing reported twice).
    storage, store, campaign, problems = restart(tmp_path, NOON + 1)
    assert problems == [] and len(campaign.contacts) == 5
    storage.close()


def test_an_attempt_is_on_disk_before_the_dial_is_handed_out(tmp_path):
    storage, store, dnc, campaign, _ = first_start(tmp_path)
    campaign.start(NOON)
    dials = store.next_dials(campaign, NOON, 2)
    with storage.env.begin(db=_open_db(storage, ATTEMPTS_DB)) as txn:
        on_disk = [msgspec.msgpack.decode(v, type=Attempt) for _, v in txn.cursor()]
    assert [(a.phone, a.state) for a in on_disk] == [(d.number, "dialling") for d in dials]
    storage.close()


def test_restart_continues_without_redialling_anyone(tmp_path):
    storage, store, dnc, campaign, _ = first_start(tmp_path)
    campaign.start(NOON)
    store.commit(campaign)
    dialled = store.next_dials(campaign, NOON, 2)  # Ann and Bob
    store.result(campaign, dialled[0].id, "busy", NOON + 20)  # Ann: retry at +620
    # Bob's call is out when the node dies: no result, and the storage is not closed cleanly.
    storage.env.close()

    storage, store, campaign, _ = restart(tmp_path, NOON + 60)
    assert campaign.state == "running"
    assert campaign.attempts[2].result == "interrupted"
    after = [d.number for d in store.next_dials(campaign, NOON + 60, 10)]
    # Cat and Eve; never Bob (interrupted), never Dan (DNC), not Ann before her retry.
    assert after == ["+12125550103", "+442079460958"]
    assert [d.id for d in store.next_dials(campaign, NOON + 619, 10)] == []
    retry = store.next_dials(campaign, NOON + 620, 10)
    assert [(d.number, d.attempt) for d in retry] == [("+12125550101", 2)]
    # Dial ids are never reused across the restart.
    assert retry[0].id not in {d.id for d in dialled}
    storage.close()

    # And a second restart closes the calls this one left out, again without dialling anyone.
    storage, store, campaign, _ = restart(tmp_path, NOON + 700)
    assert store.next_dials(campaign, NOON + 86_400, 10) == []
    assert campaign.counters == {"busy": 1, "interrupted": 4}
    storage.close()


def test_loading_rebuilds_the_campaign_exactly(tmp_path):
    storage, store, dnc, campaign, _ = first_start(tmp_path)
    campaign.start(NOON)
    t = NOON
    for _ in range(4):  # bounded rounds of dials and results
        for dial in store.next_dials(campaign, t, 2):
            result = "busy" if dial.contact.name == "Ann" else "answered"
            store.result(campaign, dial.id, result, t + 30)
            if dial.contact.name == "Bob":
                store.result(campaign, dial.id, "callback", t + 90, at=t + 7200, agent="alice")
        t += 601
    campaign.pause(t)
    store.commit(campaign)
    store.add_dnc(dnc, "+12125550199", t, agent="ops")
    expected = campaign.snapshot()
    storage.close()

    storage, store, again, _ = restart(tmp_path, t + 5)
    assert again.snapshot() == expected
    assert again.state == "paused"
    again.resume(t + 10)
    # Bob's call-back comes at its time, first.
    dials = store.next_dials(again, NOON + 7200, 5)
    assert dials and dials[0].contact.name == "Bob" and dials[0].callback
    storage.close()


def test_dnc_added_through_the_api_survives_a_restart_and_blocks_the_dial(tmp_path):
    storage, store, dnc, campaign, _ = first_start(tmp_path)
    store.add_dnc(dnc, "+12125550101", NOON, source="api")
    storage.close()
    storage, store, campaign, _ = restart(tmp_path, NOON + 1)
    campaign.start(NOON + 1)
    numbers = [d.number for d in store.next_dials(campaign, NOON + 1, 10)]
    assert "+12125550101" not in numbers and "+12125550104" not in numbers
    assert len(numbers) == 3
    storage.close()
