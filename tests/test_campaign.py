"""The campaign state machine (core/scheduler/campaign.py) on a fake clock: calling windows in the
contact's own zone (DST included), the DNC list, retries per result, call-backs, preview mode, and the
write-ahead records."""
from __future__ import annotations

import ast
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import msgspec
import pytest

from core.scheduler.campaign import (
    Attempt, Campaign, CampaignConfig, CampaignError, ContactRecord, DncEntry, DoNotCall, RetryRule,
    campaign_problems, pacing_config, window_opening,
)
from core.scheduler.contacts import Contact

NY, LA, LONDON = "America/New_York", "America/Los_Angeles", "Europe/London"


def at(zone: str, *when: int) -> float:
    """Wall-clock seconds for a local time in ``zone``."""
    return datetime(*when, tzinfo=ZoneInfo(zone)).timestamp()


def contact(n: int, *zones: str) -> Contact:
    phone = f"+1212555{n:04d}"
    return Contact(id=f"c{n}", phone=phone, name=f"Contact {n}", timezones=zones or (NY,), line=n + 1)


def make(contacts, now, dnc=None, **settings) -> Campaign:
    config = CampaignConfig(name="spring", trunk="carrier", caller_id="+12125550000", queue="sales", **settings)
    campaign = Campaign(config, dnc)
    assert campaign.add_contacts(contacts, now) == []
    campaign.start(now)
    return campaign


MONDAY_NOON_NY = at(NY, 2026, 11, 23, 12, 0)


def test_dials_carry_the_campaign_settings_and_each_contact_once():
    campaign = make([contact(1), contact(2), contact(3)], MONDAY_NOON_NY)
    dials = campaign.next_dials(MONDAY_NOON_NY, 2)
    assert [d.number for d in dials] == ["+12125550001", "+12125550002"]
    first = dials[0]
    assert (first.trunk, first.caller_id, first.queue) == ("carrier", "+12125550000", "sales")
    assert (first.min_ring, first.max_ring, first.attempt) == (15.0, 30.0, 1)
    assert len({d.id for d in dials}) == 2
    # The dialled contacts are out: the next batch has only the third, then nobody.
    assert [d.number for d in campaign.next_dials(MONDAY_NOON_NY, 5)] == ["+12125550003"]
    assert campaign.next_dials(MONDAY_NOON_NY + 1, 5) == []
    assert campaign.in_flight == 3


def test_every_dial_is_recorded_as_dialling_before_it_is_returned():
    campaign = make([contact(1)], MONDAY_NOON_NY)
    campaign.records()
    dial = campaign.next_dials(MONDAY_NOON_NY, 1)[0]
    records = campaign.records()
    attempts = [r for r in records if isinstance(r, Attempt)]
    contacts = [r for r in records if isinstance(r, ContactRecord)]
    assert [(a.seq, a.state, a.phone) for a in attempts] == [(1, "dialling", dial.number)]
    assert contacts[-1].state == "dialling" and contacts[-1].attempts == 1
    assert campaign.records() == []  # drained


def test_calling_window_is_judged_in_each_contacts_own_zone():
    # 21:30 in London is 16:30 in New York: only the New York contact may be called.
    now = at(LONDON, 2026, 11, 23, 21, 30)
    campaign = make([contact(1, LONDON), contact(2, NY)], now)
    assert [d.contact.id for d in campaign.next_dials(now, 5)] == ["c2"]
    # The London contact waits for 08:00 London the next morning, not a second earlier.
    assert campaign.next_due(now) == at(LONDON, 2026, 11, 24, 8, 0)
    assert campaign.next_dials(at(LONDON, 2026, 11, 24, 7, 59, 59), 5) == []
    assert [d.contact.id for d in campaign.next_dials(at(LONDON, 2026, 11, 24, 8, 0), 5)] == ["c1"]


def test_window_end_is_exclusive_and_start_inclusive():
    campaign = make([contact(1), contact(2)], at(NY, 2026, 11, 23, 7, 0))
    assert campaign.next_dials(at(NY, 2026, 11, 23, 7, 59, 59), 5) == []
    assert len(campaign.next_dials(at(NY, 2026, 11, 23, 8, 0), 1)) == 1
    assert campaign.next_dials(at(NY, 2026, 11, 23, 21, 0), 5) == []


def test_window_follows_daylight_saving_time():
    # New York leaves DST on 1 November 2026: 08:00 local is 12:00 UTC before, 13:00 UTC after.
    utc = "UTC"
    assert window_opening([NY], at(utc, 2026, 10, 30, 11, 30)) == at(utc, 2026, 10, 30, 12, 0)
    assert window_opening([NY], at(utc, 2026, 11, 2, 12, 30)) == at(utc, 2026, 11, 2, 13, 0)
    # And enters it on 8 March 2026: after Saturday's window, Sunday 08:00 EDT is 12:00 UTC.
    assert window_opening([NY], at(NY, 2026, 3, 7, 22, 0)) == at(utc, 2026, 3, 8, 12, 0)
    # A campaign run across the change dials at 07:30 UTC... never: 12:30 UTC on 2 Nov is 07:30 EST.
    campaign = make([contact(1)], at(utc, 2026, 11, 2, 12, 30))
    assert campaign.next_dials(at(utc, 2026, 11, 2, 12, 30), 1) == []
    assert len(campaign.next_dials(at(utc, 2026, 11, 2, 13, 0), 1)) == 1


def test_a_number_in_several_zones_is_called_only_when_all_are_awake():
    # 08:30 in New York is 05:30 in Los Angeles.
    now = at(NY, 2026, 11, 23, 8, 30)
    campaign = make([contact(1, NY, LA)], now)
    assert campaign.next_dials(now, 1) == []
    assert campaign.next_due(now) == at(LA, 2026, 11, 23, 8, 0)
    assert len(campaign.next_dials(at(LA, 2026, 11, 23, 8, 0), 1)) == 1


def test_zones_whose_windows_never_meet_close_the_contact():
    now = at(LONDON, 2026, 11, 23, 9, 30)
    campaign = make([contact(1, "Asia/Tokyo", LONDON)], now, window_start="09:00", window_end="10:00")
    assert campaign.next_dials(now, 1) == []
    assert campaign.contacts["c1"].state == "done" and campaign.contacts["c1"].result == "no_window"


def test_dnc_numbers_are_never_dialled_whenever_they_were_added():
    dnc = DoNotCall([DncEntry("+12125550001", 0.0, "file:dnc.txt")])
    campaign = make([contact(1), contact(2), contact(3)], MONDAY_NOON_NY, dnc)
    # Added after the import, before the dial.
    assert campaign.add_dnc("+12125550002", MONDAY_NOON_NY, "api") is not None
    assert [d.number for d in campaign.next_dials(MONDAY_NOON_NY, 5)] == ["+12125550003"]
    assert campaign.contacts["c1"].result == "dnc" and campaign.contacts["c2"].result == "dnc"
    assert any(isinstance(r, DncEntry) and r.number == "+12125550002" for r in campaign.records())


def test_an_agent_disposition_puts_the_number_on_the_dnc_list_for_every_campaign():
    dnc = DoNotCall()
    first = make([contact(1)], MONDAY_NOON_NY, dnc)
    other = Campaign(msgspec.structs.replace(first.config, name="autumn"), dnc)
    other.add_contacts([contact(1)], MONDAY_NOON_NY)
    other.start(MONDAY_NOON_NY)
    dial = first.next_dials(MONDAY_NOON_NY, 1)[0]
    first.result(dial.id, "answered", MONDAY_NOON_NY + 20)
    first.result(dial.id, "disposition", MONDAY_NOON_NY + 200, disposition="dnc", agent="alice")
    assert "+12125550001" in dnc and dnc.get("+12125550001").agent == "alice"
    assert other.next_dials(MONDAY_NOON_NY + 300, 1) == []
    assert first.dispositions == {"dnc": 1}


def test_retries_follow_the_rule_of_each_result():
    campaign = make([contact(1), contact(2), contact(3)], MONDAY_NOON_NY,
                    retry={"busy": RetryRule(600), "no_answer": RetryRule(3600)})
    busy, silent, invalid = campaign.next_dials(MONDAY_NOON_NY, 3)
    t = MONDAY_NOON_NY + 30
    campaign.result(busy.id, "busy", t)
    campaign.result(silent.id, "no_answer", t)
    campaign.result(invalid.id, "invalid", t)
    assert campaign.next_dials(t + 599, 5) == []
    assert [d.contact.id for d in campaign.next_dials(t + 600, 5)] == ["c1"]
    assert campaign.next_dials(t + 3599, 5) == []
    again = campaign.next_dials(t + 3600, 5)
    assert [(d.contact.id, d.attempt) for d in again] == [("c2", 2)]
    # No rule for invalid: never again.
    assert campaign.contacts["c3"].state == "done" and campaign.contacts["c3"].result == "invalid"
    assert campaign.counters == {"busy": 1, "no_answer": 1, "invalid": 1}


def test_attempt_limit_and_a_rules_own_limit():
    campaign = make([contact(1), contact(2)], MONDAY_NOON_NY, max_attempts=3,
                    retry={"busy": RetryRule(60), "machine": RetryRule(60, limit=1)})
    t = MONDAY_NOON_NY
    seen = []
    for _ in range(10):  # bounded: far more rounds than the limits allow
        dials = campaign.next_dials(t, 5)
        for d in dials:
            seen.append((d.contact.id, d.attempt))
            campaign.result(d.id, "busy" if d.contact.id == "c1" else "machine", t + 5)
        t += 61
    assert seen.count(("c1", 1)) == 1 and [a for c, a in seen if c == "c1"] == [1, 2, 3]
    assert [a for c, a in seen if c == "c2"] == [1]  # machine: once, then its own limit
    assert campaign.finished


def test_a_callback_is_dialled_at_the_time_asked_and_before_everyone_else():
    campaign = make([contact(n) for n in range(1, 5)], MONDAY_NOON_NY, max_attempts=1)
    dial = campaign.next_dials(MONDAY_NOON_NY, 1)[0]
    asked = at(NY, 2026, 11, 23, 16, 45)
    campaign.result(dial.id, "answered", MONDAY_NOON_NY + 10)
    campaign.result(dial.id, "callback", MONDAY_NOON_NY + 90, at=asked, agent="bob")
    assert campaign.counters == {"answered": 1}
    # Not before its time, even with a free line.
    before = campaign.next_dials(asked - 1, 1)
    assert [d.contact.id for d in before] == ["c2"]
    # At its time it goes first, past everyone waiting, though the attempt limit (1) is reached.
    dials = campaign.next_dials(asked, 2)
    assert [(d.contact.id, d.callback, d.agent, d.attempt) for d in dials] == [("c1", True, "bob", 2), ("c3", False, "", 1)]


def test_a_disposition_call_back_without_a_time_uses_the_callback_rule():
    campaign = make([contact(1)], MONDAY_NOON_NY, retry={"callback": RetryRule(1800)})
    dial = campaign.next_dials(MONDAY_NOON_NY, 1)[0]
    campaign.result(dial.id, "answered", MONDAY_NOON_NY + 10)
    campaign.result(dial.id, "disposition", MONDAY_NOON_NY + 100, disposition="callback")
    assert campaign.next_dials(MONDAY_NOON_NY + 1899, 1) == []
    assert len(campaign.next_dials(MONDAY_NOON_NY + 1900, 1)) == 1


def test_a_callback_asked_for_outside_the_window_waits_for_it():
    campaign = make([contact(1)], MONDAY_NOON_NY)
    dial = campaign.next_dials(MONDAY_NOON_NY, 1)[0]
    campaign.result(dial.id, "callback", MONDAY_NOON_NY + 60, at=at(NY, 2026, 11, 23, 22, 0))
    assert campaign.next_dials(at(NY, 2026, 11, 23, 22, 0), 1) == []
    assert campaign.next_due(at(NY, 2026, 11, 23, 22, 0)) == at(NY, 2026, 11, 24, 8, 0)


def test_pause_resume_stop():
    campaign = make([contact(1), contact(2)], MONDAY_NOON_NY)
    out = campaign.next_dials(MONDAY_NOON_NY, 1)[0]
    campaign.pause(MONDAY_NOON_NY + 1)
    assert campaign.next_dials(MONDAY_NOON_NY + 2, 5) == []
    assert campaign.result(out.id, "busy", MONDAY_NOON_NY + 3)  # results still count while paused
    campaign.resume(MONDAY_NOON_NY + 4)
    assert [d.contact.id for d in campaign.next_dials(MONDAY_NOON_NY + 5, 5)] == ["c2"]
    campaign.stop(MONDAY_NOON_NY + 6)
    assert campaign.next_dials(MONDAY_NOON_NY + 10_000, 5) == []
    with pytest.raises(CampaignError):
        campaign.resume(MONDAY_NOON_NY + 7)


def test_a_second_result_for_a_dial_changes_nothing():
    campaign = make([contact(1)], MONDAY_NOON_NY)
    dial = campaign.next_dials(MONDAY_NOON_NY, 1)[0]
    assert campaign.result(dial.id, "answered", MONDAY_NOON_NY + 5)
    assert not campaign.result(dial.id, "busy", MONDAY_NOON_NY + 6)
    assert campaign.counters == {"answered": 1}
    with pytest.raises(CampaignError):
        campaign.result("spring:99", "busy", MONDAY_NOON_NY)


def test_preview_mode_the_agent_sees_the_contact_and_starts_the_call():
    campaign = make([contact(1), contact(2)], MONDAY_NOON_NY, mode="preview")
    assert campaign.next_dials(MONDAY_NOON_NY, 5) == []  # nothing dialled without an agent
    shown = campaign.preview("alice", MONDAY_NOON_NY)
    assert shown.contact.id == "c1" and shown.attempts == 0
    assert campaign.preview("alice", MONDAY_NOON_NY + 1).contact.id == "c1"  # the same until acted on
    assert campaign.preview("bob", MONDAY_NOON_NY).contact.id == "c2"  # never two agents on one contact
    campaign.preview_skip("bob", MONDAY_NOON_NY + 2)
    dial = campaign.preview_dial("alice", MONDAY_NOON_NY + 10)
    assert (dial.contact.id, dial.agent) == ("c1", "alice")
    assert campaign.preview("carol", MONDAY_NOON_NY + 11).contact.id == "c2"


def test_a_preview_released_keeps_its_place_and_a_skipped_one_goes_to_the_end():
    campaign = make([contact(1), contact(2), contact(3)], MONDAY_NOON_NY, mode="preview")
    assert campaign.preview("alice", MONDAY_NOON_NY).contact.id == "c1"
    campaign.preview_release("alice", MONDAY_NOON_NY + 1)  # her phone never answered
    assert campaign.preview("bob", MONDAY_NOON_NY + 2).contact.id == "c1"
    campaign.preview_skip("bob", MONDAY_NOON_NY + 3)
    shown = [campaign.preview(agent, MONDAY_NOON_NY + 4).contact.id for agent in ("carol", "dave", "erin")]
    assert shown == ["c2", "c3", "c1"]
    with pytest.raises(CampaignError):
        campaign.preview_release("alice", MONDAY_NOON_NY + 5)


def test_preview_dial_refuses_a_number_put_on_dnc_meanwhile():
    campaign = make([contact(1)], MONDAY_NOON_NY, mode="preview")
    campaign.preview("alice", MONDAY_NOON_NY)
    campaign.add_dnc("+12125550001", MONDAY_NOON_NY + 1)
    assert campaign.preview_dial("alice", MONDAY_NOON_NY + 2) is None
    assert campaign.in_flight == 0 and campaign.contacts["c1"].result == "dnc"


def test_restore_closes_open_attempts_as_interrupted_and_never_redials_them():
    campaign = make([contact(1), contact(2)], MONDAY_NOON_NY)
    records = campaign.records()
    campaign.next_dials(MONDAY_NOON_NY, 1)
    records += campaign.records()
    # What was persisted is all a restarted node has.
    contacts = {r.contact.id: r for r in records if isinstance(r, ContactRecord)}
    attempts = {r.seq: r for r in records if isinstance(r, Attempt)}
    again = Campaign.restore(campaign.config, DoNotCall(), campaign.status(), contacts.values(), attempts.values(),
                             MONDAY_NOON_NY + 60)
    assert again.attempts[1].result == "interrupted" and again.counters == {"interrupted": 1}
    assert [d.contact.id for d in again.next_dials(MONDAY_NOON_NY + 60, 5)] == ["c2"]
    assert again.next_dials(MONDAY_NOON_NY + 86_400, 5) == []
    assert again.contacts["c1"].attempts == 1 and again.contacts["c1"].state == "done"
    # Only the operator brings it back.
    again.requeue("c1", MONDAY_NOON_NY + 100)
    assert [(d.contact.id, d.attempt) for d in again.next_dials(MONDAY_NOON_NY + 100, 5)] == [("c1", 2)]


def test_config_problems_and_pacing():
    config = CampaignConfig(name="x", trunk="t", caller_id="+1", queue="q", window_start="21:00",
                            window_end="08:00", default_country="ZZ", default_timezone="Nowhere/City",
                            retry={"answered": RetryRule(1)}, min_ring=40, max_ring=30, abandon_window="eu")
    keys = [k for k, _ in campaign_problems(config)]
    assert keys == ["window_end", "default_country", "default_timezone", "retry.answered", "min_ring", "abandon_window"]
    good = CampaignConfig(name="x", trunk="t", caller_id="+1", queue="q", mode="predictive", abandon_window="uk")
    assert campaign_problems(good) == []
    pacing = pacing_config(good)
    assert (pacing.mode, pacing.window, pacing.max_ring) == ("predictive", 86_400.0, 30.0)
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"name": "x", "trunk": "t", "caller_id": "1", "queue": "q", "speed": 3}, CampaignConfig)


def test_at_night_the_timer_sleeps_until_the_first_window_opens():
    # 23:00 in New York, 04:00 in London: the London contact's window opens first (08:00 London).
    now = at(NY, 2026, 11, 23, 23, 0)
    campaign = make([contact(1, NY), contact(2, LONDON)], now)
    assert campaign.next_due(now) == at(LONDON, 2026, 11, 24, 8, 0)
    assert campaign.next_dials(now, 5) == []
    assert [d.contact.id for d in campaign.next_dials(at(LONDON, 2026, 11, 24, 8, 0), 5)] == ["c2"]
    assert campaign.next_due(at(LONDON, 2026, 11, 24, 8, 0)) == at(NY, 2026, 11, 24, 8, 0)


@pytest.mark.parametrize("module", ["campaign.py", "contacts.py"])
def test_campaign_and_contacts_are_sans_io(module):
    source = Path(__file__).resolve().parents[1] / "core" / "scheduler" / module
    imported, called = set(), set()
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            called.add(node.func.attr)
    assert not imported & {"time", "asyncio", "uvloop", "socket", "threading", "random", "os"}
    assert not called & {"now", "today", "utcnow", "open", "read_text", "read_bytes"}  # no clock, no files
