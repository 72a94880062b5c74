"""Contact and do-not-call list imports (core/scheduler/contacts.py): E.164 normalisation with a default
country, time zones from the number, and every bad row named by its line."""
from __future__ import annotations

import pytest

from core.scheduler.contacts import (
    ColumnMapping, NumberError, import_contacts, import_dnc, normalise, number_timezones,
)


def test_national_numbers_take_the_default_country():
    assert normalise("(212) 555-0100", "US") == "+12125550100"
    assert normalise("020 7946 0958", "GB") == "+442079460958"
    # An international number keeps its own country whatever the default.
    assert normalise("+44 20 7946 0958", "US") == "+442079460958"
    assert normalise("00 44 20 7946 0958", "FR") == "+442079460958"


@pytest.mark.parametrize("text", ["", "hello", "+1 555 555 0100", "12"])
def test_numbers_no_carrier_would_connect_are_refused(text):
    with pytest.raises(NumberError):
        normalise(text, "US")


def test_a_number_knows_its_time_zones():
    assert number_timezones("+12125550100") == ("America/New_York",)
    assert number_timezones("+14155552671") == ("America/Los_Angeles",)
    assert number_timezones("+442079460958") == ("Europe/London",)


CSV = (
    "phone,name,timezone,account,note\n"
    "(212) 555-0100,Ann Lee,,A-1,vip\n"  # line 2: national US number, zone from the prefix
    "+44 20 7946 0958,Bob,,A-2,\n"  # line 3
    "not a number,Carl,,A-3,\n"  # line 4: bad number
    "+1 415 555 2671,Dee,Mars/Olympus,A-4,\n"  # line 5: unknown zone
    "\n"  # line 6: blank, skipped silently (it is no row)
    "212.555.0100,Ann again,,A-5,\n"  # line 7: same number as line 2
    "+1 415 555 2671,Eve,Europe/Paris,A-6\n"  # line 8: a field short
    "\"+1 907 555 0123\",\"Fay, with a comma\",,A-7,\"two\nlines\"\n"  # lines 9-10: one record
    "+1 415 555 2671,Gus,America/Chicago,A-8,\n"  # line 11: the zone column wins over the prefix
)


def test_csv_import_keeps_good_rows_and_names_every_bad_line():
    result = import_contacts(CSV, "US", "America/New_York")
    assert [c.phone for c in result.contacts] == ["+12125550100", "+442079460958", "+19075550123", "+14155552671"]
    assert [c.line for c in result.contacts] == [2, 3, 9, 11]
    problems = {p.line: p.reason for p in result.problems}
    assert sorted(problems) == [4, 5, 7, 8]
    assert "not a phone number" in problems[4]
    assert "Mars/Olympus" in problems[5]
    assert "line 2" in problems[7]
    assert "4 fields" in problems[8]
    # Nothing silently dropped: every non-blank data line is either a contact or a problem.
    assert len(result.contacts) + len(result.problems) == 8


def test_csv_columns_become_name_zones_and_data():
    result = import_contacts(CSV, "US", "America/New_York")
    ann, bob, fay, gus = result.contacts
    assert ann.id == "+12125550100" and ann.name == "Ann Lee"
    assert ann.timezones == ("America/New_York",)
    assert ann.data == {"account": "A-1", "note": "vip"}
    assert bob.timezones == ("Europe/London",)
    assert fay.name == "Fay, with a comma" and fay.data["note"] == "two\nlines"
    assert set(fay.timezones) == {"America/Adak", "America/Anchorage"}  # every zone of the prefix
    assert gus.timezones == ("America/Chicago",)


def test_column_mapping_with_an_id_column_and_other_headers():
    text = "Customer,Mobile,Full name\nC1,07400 123456,Zoe\nC2,07911 123456,Yan\nC1,07400 654321,Dup\n"
    mapping = ColumnMapping(phone="Mobile", name="Full name", timezone=None, id="Customer")
    result = import_contacts(text, "GB", "Europe/London", mapping)
    assert [(c.id, c.phone, c.name) for c in result.contacts] == [
        ("C1", "+447400123456", "Zoe"), ("C2", "+447911123456", "Yan")]
    assert result.contacts[0].data == {}
    assert [(p.line, "C1" in p.reason and "line 2" in p.reason) for p in result.problems] == [(4, True)]


def test_a_number_that_cannot_be_placed_gets_the_default_zone():
    # International freephone (+800) is valid but lies in no zone: the campaign's default is used.
    result = import_contacts("phone\n+800 1234 5678\n+33 6 12 34 56 78\n", "GB", "Europe/Dublin")
    assert [c.timezones for c in result.contacts] == [("Europe/Dublin",), ("Europe/Paris",)]


def test_a_missing_phone_column_is_reported_on_the_header_line():
    result = import_contacts("name,number\nAnn,2125550100\n", "US", "America/New_York")
    assert result.contacts == []
    assert [p.line for p in result.problems] == [1]
    assert "'phone'" in result.problems[0].reason


def test_bytes_with_a_bom_are_read():
    result = import_contacts("\ufeffphone,name\n2125550100,Ann\n".encode("utf-8"), "US", "America/New_York")
    assert [c.phone for c in result.contacts] == ["+12125550100"]


def test_dnc_list_one_number_per_line():
    text = "# numbers that asked not to be called\n(212) 555-0100\n\n+44 20 7946 0958\nnope\n212 555 0100\n"
    result = import_dnc(text, "US")
    assert result.numbers == ["+12125550100", "+442079460958"]
    assert [(p.line, "nope" in p.reason) for p in result.problems] == [(5, True)]


def test_dnc_list_as_csv_with_a_header():
    text = "added,number,by\n2026-01-01,2125550100,ops\n2026-01-02,bad,ops\n"
    result = import_dnc(text, "US")
    assert result.numbers == ["+12125550100"]
    assert [p.line for p in result.problems] == [3]
