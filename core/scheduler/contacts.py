"""Contact lists and do-not-call lists of outbound campaigns: CSV text in, normalised records out.

MISSION.md ("Outbound campaigns"): a campaign dials a contact list imported from CSV with a column
mapping. Every number is normalised to E.164 (ITU-T E.164, written ``+<country code><number>``) with the
campaign's default country for numbers written in national form, and every contact gets the time zones
its calling window is judged in: a ``timezone`` column when the list has one, else the zones the
number's own prefix lies in (``phonenumbers`` carries Google's libphonenumber prefix-to-zone data), else
the campaign's default zone. A row that cannot be used is reported by its line number and reason and
kept out of the list: never silently dropped, never dialled. A number listed twice is a bad row too (the
second one), so nobody is called twice for being listed twice.

Sans-IO: the functions take the file's text (``bindings/campaigns.py`` reads files).
"""
from __future__ import annotations

import csv
import io
import zoneinfo
from functools import lru_cache

import msgspec
import phonenumbers
from phonenumbers import timezone as phone_timezones

__all__ = [
    "ColumnMapping", "Contact", "ImportProblem", "ContactImport", "DncImport", "NumberError",
    "normalise", "number_timezones", "valid_timezone", "import_contacts", "import_dnc",
]

# What libphonenumber answers for a number it cannot place.
_UNKNOWN_ZONE = "Etc/Unknown"


class NumberError(ValueError):
    """A phone number that cannot be dialled; ``str()`` says why in words an operator can act on."""


class ColumnMapping(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Which CSV columns (by header name) hold what. Columns not named here become the contact's
    ``data`` (shown to the agent, passed to CRM), keyed by their header."""

    phone: str = "phone"
    name: str | None = "name"
    timezone: str | None = "timezone"
    # A column with the caller's own key for the contact; none: the E.164 number is the key.
    id: str | None = None


class Contact(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """One person to call, as imported. ``timezones`` are every zone the calling window must be open
    in (a number whose prefix spans several zones is only called when it is daytime in all of them)."""

    id: str
    phone: str  # E.164
    name: str = ""
    timezones: tuple[str, ...] = ()
    data: dict[str, str] = {}
    line: int = 0  # line of the CSV file it came from (0: added through the API)


class ImportProblem(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """A row kept out of the list: its line number (1 is the header), why, and the row as read."""

    line: int
    reason: str
    text: str = ""


class ContactImport(msgspec.Struct, frozen=True):
    contacts: list[Contact]
    problems: list[ImportProblem]


class DncImport(msgspec.Struct, frozen=True):
    numbers: list[str]  # E.164, each once
    problems: list[ImportProblem]


def normalise(number: str, default_country: str) -> str:
    """``number`` in E.164 form; a number without ``+`` or an international prefix is read as a number
    of ``default_country`` (ISO 3166 alpha-2). Raises NumberError for what no carrier would connect."""
    text = number.strip()
    if not text:
        raise NumberError("no phone number")
    try:
        parsed = phonenumbers.parse(text, default_country.upper())
    except phonenumbers.NumberParseException as exc:
        raise NumberError(f"not a phone number: {number!r} ({exc._msg})") from None
    if not phonenumbers.is_valid_number(parsed):
        raise NumberError(f"not a valid number in its numbering plan: {number!r}")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


@lru_cache(maxsize=4096)
def number_timezones(e164: str) -> tuple[str, ...]:
    """The IANA zones a number's prefix lies in; () when the data cannot place it (a mobile or
    non-geographic number of a multi-zone country, for instance)."""
    try:
        parsed = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return ()
    zones = tuple(z for z in phone_timezones.time_zones_for_number(parsed) if z != _UNKNOWN_ZONE)
    return tuple(z for z in zones if valid_timezone(z))


@lru_cache(maxsize=1024)
def valid_timezone(name: str) -> bool:
    """Whether ``name`` is a zone of the IANA database the interpreter sees."""
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return False
    return True


def _contact_zones(e164: str, given: str, default_timezone: str) -> tuple[str, ...]:
    if given:
        return (given,)
    return number_timezones(e164) or (default_timezone,)


def _rows(text: str | bytes):
    """(line number, row) for every CSV record; line is the record's first physical line."""
    if isinstance(text, bytes):
        text = text.decode("utf-8-sig")
    elif text.startswith("\ufeff"):
        text = text[1:]
    reader = csv.reader(io.StringIO(text, newline=""))
    line = 1
    for row in reader:
        yield line, row
        line = reader.line_num + 1


def import_contacts(text: str | bytes, default_country: str, default_timezone: str,
                    mapping: ColumnMapping = ColumnMapping()) -> ContactImport:
    """Read a contact list: the first line is the header. Returns the good contacts in file order and
    one problem per row kept out (bad or duplicate number, unknown time zone, duplicate id, wrong
    number of fields). A header without the mapped phone column is a problem of line 1 and no contacts."""
    contacts: list[Contact] = []
    problems: list[ImportProblem] = []
    rows = _rows(text)
    header = None
    for line, row in rows:
        if row and any(cell.strip() for cell in row):
            header = [cell.strip() for cell in row]
            break
    if header is None:
        return ContactImport([], [ImportProblem(1, "the file is empty: expected a header line")])
    if mapping.phone not in header:
        return ContactImport([], [ImportProblem(line, f"no column {mapping.phone!r} for the phone number "
                                                      f"(columns: {', '.join(header)})", ",".join(row))])
    phone_at = header.index(mapping.phone)
    named = {mapping.phone}
    name_at = tz_at = id_at = None
    for field, attr in ((mapping.name, "name"), (mapping.timezone, "tz"), (mapping.id, "id")):
        if field is None:
            continue
        if field not in header:
            if attr == "id":
                # An id column was asked for: without it the list cannot be keyed as the caller wants.
                return ContactImport([], [ImportProblem(line, f"no column {field!r} for the contact id", ",".join(row))])
            continue  # name and timezone are optional columns
        named.add(field)
        if attr == "name":
            name_at = header.index(field)
        elif attr == "tz":
            tz_at = header.index(field)
        else:
            id_at = header.index(field)
    extra = [(i, h) for i, h in enumerate(header) if h not in named and h]

    seen_phone: dict[str, int] = {}
    seen_id: dict[str, int] = {}
    for line, row in rows:
        if not row or not any(cell.strip() for cell in row):
            continue  # blank lines are layout, not rows
        raw = ",".join(row)
        if len(row) != len(header):
            problems.append(ImportProblem(line, f"{len(row)} fields where the header has {len(header)}", raw))
            continue
        try:
            phone = normalise(row[phone_at], default_country)
        except NumberError as exc:
            problems.append(ImportProblem(line, str(exc), raw))
            continue
        if phone in seen_phone:
            problems.append(ImportProblem(line, f"{phone} is already listed on line {seen_phone[phone]}", raw))
            continue
        given_tz = row[tz_at].strip() if tz_at is not None else ""
        if given_tz and not valid_timezone(given_tz):
            problems.append(ImportProblem(line, f"unknown time zone {given_tz!r}", raw))
            continue
        key = row[id_at].strip() if id_at is not None else phone
        if not key:
            problems.append(ImportProblem(line, "empty contact id", raw))
            continue
        if key in seen_id:
            problems.append(ImportProblem(line, f"contact id {key!r} is already used on line {seen_id[key]}", raw))
            continue
        seen_phone[phone] = seen_id[key] = line
        contacts.append(Contact(
            id=key, phone=phone, name=row[name_at].strip() if name_at is not None else "",
            timezones=_contact_zones(phone, given_tz, default_timezone),
            data={h: row[i] for i, h in extra}, line=line,
        ))
    return ContactImport(contacts, problems)


_DNC_COLUMNS = ("phone", "number", "msisdn", "telephone", "tel")


def import_dnc(text: str | bytes, default_country: str) -> DncImport:
    """Read a do-not-call list: one number per line, or CSV whose first column (or a column headed
    phone/number) holds the number. ``#`` starts a comment line. A header line is recognised by its
    column name and skipped; any other line that is not a number is a problem, reported by line."""
    numbers: list[str] = []
    problems: list[ImportProblem] = []
    seen: set[str] = set()
    column = 0
    first = True
    for line, row in _rows(text):
        cells = [cell.strip() for cell in row]
        if not cells or not any(cells) or cells[0].startswith("#"):
            continue
        if first:
            first = False
            lowered = [c.lower() for c in cells]
            found = next((lowered.index(name) for name in _DNC_COLUMNS if name in lowered), None)
            if found is not None:
                column = found
                continue
        if column >= len(cells):
            problems.append(ImportProblem(line, f"no field {column + 1} for the number", ",".join(row)))
            continue
        try:
            number = normalise(cells[column], default_country)
        except NumberError as exc:
            problems.append(ImportProblem(line, str(exc), ",".join(row)))
            continue
        if number not in seen:  # a number listed twice on a DNC list is harmless: keep one
            seen.add(number)
            numbers.append(number)
    return DncImport(numbers, problems)
