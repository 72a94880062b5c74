"""The config file: typed values, embedded defaults, and every error named by file and key path."""
from __future__ import annotations

import tomllib
from pathlib import Path

import msgspec.inspect as mi
import pytest

from core.config import (
    Config,
    ConfigError,
    ListenAddress,
    decode_config,
    default_config,
    parse_listen,
)

EXAMPLE = Path(__file__).resolve().parents[1] / "switchcore.example.toml"


def errors_of(text: str, filename: str = "site.toml") -> list[str]:
    with pytest.raises(ConfigError) as info:
        decode_config(text.encode(), filename)
    return info.value.errors


# --- defaults and good files ------------------------------------------------------------------


def test_defaults_are_the_documented_ones():
    c = default_config()
    assert c.node.data_dir == "./switchcore-data"
    assert c.sip.listen == (ListenAddress("udp", "127.0.0.1", 5060), ListenAddress("tcp", "127.0.0.1", 5060))
    assert c.sip.max_message_size == 65536
    assert c.sip.realm == "switchcore"
    assert (c.sip.timers.t1, c.sip.timers.t2, c.sip.timers.t4) == (0.5, 4.0, 5.0)
    r = c.registrar
    assert (r.min_expires, r.max_expires, r.default_expires, r.nonce_ttl) == (60, 3600, 3600, 300.0)
    assert r.algorithms == ("SHA-256", "MD5")
    assert c.limits.max_transactions == 100000
    assert c.users == ()


def test_empty_file_means_defaults():
    assert decode_config(b"", "empty.toml") == default_config()


def test_example_file_is_valid():
    config = decode_config(EXAMPLE.read_bytes(), EXAMPLE.name)
    assert [u.name for u in config.users] == ["1001", "1002"]


def _schema_keys(t: mi.Type, prefix: str = "") -> set[str]:
    keys = set()
    if isinstance(t, (mi.VarTupleType, mi.ListType)):
        t = t.item_type
    if isinstance(t, mi.StructType):
        for field in t.fields:
            path = f"{prefix}.{field.encode_name}" if prefix else field.encode_name
            keys.add(path)
            keys |= _schema_keys(field.type, path)
    return keys


def _document_keys(value, prefix: str = "") -> set[str]:
    keys = set()
    items = value if isinstance(value, list) else [value]
    for item in items:
        if isinstance(item, dict):
            for key, sub in item.items():
                path = f"{prefix}.{key}" if prefix else key
                keys.add(path)
                keys |= _document_keys(sub, path)
    return keys


def test_example_file_shows_every_key():
    # The example is the reference an operator reads: a key added to the schema must appear there.
    in_example = _document_keys(tomllib.loads(EXAMPLE.read_text()))
    missing = _schema_keys(mi.type_info(Config)) - in_example
    assert not missing, f"switchcore.example.toml lacks {sorted(missing)}"


def test_typed_values():
    c = decode_config(
        b"""
[node]
name = "edge-1"
log_level = "debug"
[sip]
listen = ["udp:0.0.0.0:5070", "tcp:[::1]:5071", "udp:sip.example.com:0"]
[sip.timers]
t1 = 1
t2 = 8
[[users]]
name = "1001"
ha1_md5 = "B4CABEBB793DA4BF5E739F669A3E9D6C"
ha1_sha256 = "faa7eb6e4ae20644b93b6c5debea231274a002e17e42d606fe700d3ce55d6174"
""",
        "site.toml",
    )
    assert c.node.name == "edge-1" and c.node.log_level == "debug"
    assert c.sip.listen == (
        ListenAddress("udp", "0.0.0.0", 5070),
        ListenAddress("tcp", "::1", 5071),
        ListenAddress("udp", "sip.example.com", 0),
    )
    assert [str(a) for a in c.sip.listen] == ["udp:0.0.0.0:5070", "tcp:[::1]:5071", "udp:sip.example.com:0"]
    assert c.sip.timers.t1 == 1.0 and isinstance(c.sip.timers.t1, float)
    assert c.user("1001").ha1("MD5") == "b4cabebb793da4bf5e739f669a3e9d6c"
    assert c.user("nobody") is None


def test_listen_address_unpacks():
    transport, host, port = parse_listen("tcp:[2001:db8::1]:5061")
    assert (transport, host, port) == ("tcp", "2001:db8::1", 5061)


# --- errors -------------------------------------------------------------------------------


def test_wrong_type_names_file_and_key_path():
    text = """
[[users]]
name = "a"
password = "x"
[[users]]
name = "b"
password = "y"
[[users]]
name = "c"
password = 42
"""
    assert errors_of(text) == ["site.toml: users[2].password: expected a string, got 42"]


def test_unknown_key_suggests_the_close_one():
    assert errors_of('[sip]\nlisten_on = ["udp:127.0.0.1:5060"]\n') == [
        'site.toml: sip.listen_on: unknown key (did you mean "listen"?)'
    ]


def test_unknown_section_is_an_error():
    assert errors_of("[trunk]\nname = 'x'\n") == ['site.toml: trunk: unknown key (did you mean "trunks"?)']
    assert errors_of("[dialplan]\nname = 'x'\n") == ["site.toml: dialplan: unknown key"]


def test_every_error_is_reported_at_once():
    text = """
[node]
log_level = "loud"
[sip]
max_message_size = "big"
listen = ["udp:127.0.0.1", "tcp:[::1]:5060", "tcp:[::1]:5060"]
[sip.timers]
t1 = 5.0
t2 = 4.0
[registrar]
min_expires = 0
algorithms = ["SHA-256", "SHA-1"]
[[users]]
name = "alice"
password = "a"
[[users]]
name = "bob"
[[users]]
name = "alice"
password = "b"
[[users]]
password = "c"
"""
    assert errors_of(text) == [
        'site.toml: node.log_level: expected one of "critical", "debug", "error", "info", "warning", got "loud"',
        'site.toml: sip.max_message_size: expected an integer, got "big"',
        'site.toml: sip.listen[0]: "udp:127.0.0.1": expected HOST:PORT',
        "site.toml: registrar.min_expires: must be at least 1, got 0",
        'site.toml: registrar.algorithms[1]: expected one of "MD5", "SHA-256", got "SHA-1"',
        "site.toml: users[3].name: missing (this key is required)",
        'site.toml: sip.listen[2]: "tcp:[::1]:5060" repeats sip.listen[1]',
        "site.toml: sip.timers.t1: must not exceed sip.timers.t2 (5 > 4)",
        "site.toml: users[1]: needs a password, or ha1_md5 / ha1_sha256",
        'site.toml: users[2].name: duplicate user "alice" (first at users[0])',
    ]


@pytest.mark.parametrize(
    "spec, problem",
    [
        ("udp:127.0.0.1", '"udp:127.0.0.1": expected HOST:PORT'),
        ("sctp:127.0.0.1:5060", '"sctp:127.0.0.1:5060" does not start with "udp:" or "tcp:"'),
        ("udp:::1:5060", '"udp:::1:5060": an IPv6 address must be written in brackets, as [::1]:5060'),
        ("udp:[::1:5060", '"udp:[::1:5060": unclosed \'[\' in IPv6 address'),
        ("udp:[::g]:5060", "\"udp:[::g]:5060\": '::g' is not an IPv6 address"),
        ("tcp:127.0.0.1:65536", '"tcp:127.0.0.1:65536": port "65536" is not a number from 0 to 65535'),
        ("tcp:127.0.0.1:http", '"tcp:127.0.0.1:http": port "http" is not a number from 0 to 65535'),
        ("udp:300.1.1.1:5060", "\"udp:300.1.1.1:5060\": '300.1.1.1' is not an IPv4 address or host name"),
    ],
)
def test_listen_strings_that_do_not_parse(spec, problem):
    assert errors_of(f'[sip]\nlisten = ["{spec}"]\n') == [f"site.toml: sip.listen[0]: {problem}"]


def test_empty_listen_list():
    assert errors_of("[sip]\nlisten = []\n") == ["site.toml: sip.listen: needs at least one address"]


def test_booleans_are_not_numbers():
    assert errors_of("[limits]\nmax_transactions = true\n") == [
        "site.toml: limits.max_transactions: expected an integer, got true"
    ]


def test_table_where_value_expected_and_back():
    assert errors_of('sip = "udp"\n[node.name]\nx = 1\n') == [
        'site.toml: sip: expected a table, got "udp"',
        "site.toml: node.name: expected a string, got a table",
    ]


@pytest.mark.parametrize(
    "user, problem",
    [
        ('name = "a"', "users[0]: needs a password, or ha1_md5 / ha1_sha256"),
        ('name = "a"\npassword = "p"\nha1_md5 = "' + "0" * 32 + '"', "users[0]: give either a password or HA1 values, not both"),
        ('name = "a"\nha1_md5 = "abc"\nha1_sha256 = "' + "0" * 64 + '"', 'users[0].ha1_md5: expected 32 hexadecimal digits, got "abc"'),
        ('name = "a"\nha1_md5 = "' + "0" * 32 + '"', 'users[0]: needs ha1_sha256 (registrar.algorithms offers "SHA-256") or a password'),
        ('name = "a b"\npassword = "p"', "users[0].name: \"a b\" is not a SIP user name (up to 128 of A-Z a-z 0-9 -_.!~*'()&=+$,;?/)"),
        ('name = "a"\npassword = "p"\ndisplay_name = "say \\"hi\\""', "users[0].display_name: must not contain quotes, backslashes or control characters"),
    ],
)
def test_user_problems(user, problem):
    assert errors_of(f"[[users]]\n{user}\n") == [f"site.toml: {problem}"]


def test_md5_only_users_fit_an_md5_only_registrar():
    text = '[registrar]\nalgorithms = ["MD5"]\n[[users]]\nname = "a"\nha1_md5 = "' + "0" * 32 + '"\n'
    assert decode_config(text.encode(), "site.toml").registrar.algorithms == ("MD5",)


@pytest.mark.parametrize(
    "section, problem",
    [
        ("min_expires = 600\nmax_expires = 300", "registrar.min_expires: must not exceed registrar.max_expires (600 > 300)"),
        ("default_expires = 30", "registrar.default_expires: must lie between registrar.min_expires (60) and registrar.max_expires (3600), got 30"),
        ('algorithms = ["MD5", "MD5"]', 'registrar.algorithms[1]: "MD5" is listed twice'),
        ("algorithms = []", "registrar.algorithms: needs at least one algorithm"),
        ("nonce_ttl = 0", "registrar.nonce_ttl: must be greater than 0, got 0"),
    ],
)
def test_registrar_problems(section, problem):
    assert errors_of(f"[registrar]\n{section}\n") == [f"site.toml: {problem}"]


def test_realm_must_fit_a_quoted_string():
    assert errors_of('[sip]\nrealm = "a\\"b"\n') == [
        "site.toml: sip.realm: must be non-empty text without quotes, backslashes or control characters"
    ]


def test_toml_syntax_error_is_one_line_with_position():
    assert errors_of('[node]\nname = "x"\nlog_level = \n', "bad.toml") == ["bad.toml: line 3, column 13: Invalid value"]


def test_not_utf8():
    assert errors_of_bytes(b'[node]\nname = "\xff"\n') == ["site.toml: byte 15: not UTF-8 text"]


def errors_of_bytes(data: bytes) -> list[str]:
    with pytest.raises(ConfigError) as info:
        decode_config(data, "site.toml")
    return info.value.errors


# --- calls: media, limits, trunks, routes ---------------------------------------------------------


def test_call_sections_defaults():
    c = default_config()
    assert (c.media.address, c.media.rtp_port_min, c.media.rtp_port_max) == ("127.0.0.1", 20000, 30000)
    assert c.media.codecs == ("PCMU", "PCMA", "telephone-event")
    assert c.media.spare_port_pairs == 4096
    assert (c.calls.ring_timeout, c.calls.max_duration) == (60.0, 14400.0)
    assert c.limits.max_calls == 1000
    assert c.trunks == () and c.routes == ()


def test_example_trunk_and_routes_decode():
    c = decode_config(EXAMPLE.read_bytes(), EXAMPLE.name)
    carrier = c.trunk("carrier")
    assert (carrier.address, carrier.allowed, carrier.channels) == ("127.0.0.1:5080", ("127.0.0.1/32",), 30)
    outbound = c.routes[1]
    assert (outbound.source, outbound.strip, outbound.prepend) == ("users", 1, "+49")
    assert (outbound.target_kind, outbound.target_name) == ("trunk", "carrier")
    assert c.routes[0].match == "exact" and c.trunk("nobody") is None


_TRUNK = '[[trunks]]\nname = "t1"\naddress = "127.0.0.1:5080"\n'
_USER = '[[users]]\nname = "1001"\npassword = "p"\n'


@pytest.mark.parametrize(
    "text, problems",
    [
        ('[[routes]]\nname = "r"\npattern = "1"\ntarget = "trunk:t9"\n',
         ['routes[0].target: no trunk "t9" in [[trunks]]']),
        ('[[routes]]\nname = "r"\npattern = "1"\ntarget = "user:2002"\n',
         ['routes[0].target: no user "2002" in [[users]]']),
        ('[[routes]]\nname = "r"\npattern = "1"\ntarget = "pstn"\n',
         ['routes[0].target: expected one of "user:NAME", "trunk:NAME", "ivr:NAME", "queue:NAME", got "pstn"']),
        (_TRUNK + '[[routes]]\nname = "r"\npattern = "1"\ntarget = "trunk:t1"\nfrom = "t2"\n',
         ['routes[0].from: expected "users" or the name of a trunk in [[trunks]], got "t2"']),
        ('[[routes]]\nname = "r"\nmatch = "regex"\npattern = "(1"\ntarget = "queue:sales"\n',
         ["routes[0].pattern: not a regular expression: missing ), unterminated subpattern at position 0",
          'routes[0].target: no queue "sales" in [[queues]]']),
        ('[[routes]]\nname = "r"\nmatch = "glob"\npattern = "1"\ntarget = "ivr:main"\n',
         ['routes[0].match: expected one of "exact", "prefix", "regex", got "glob"']),
        ('[[routes]]\nname = "r"\npattern = "1"\ntarget = "ivr:main"\nstrip = -1\n',
         ["routes[0].strip: must be at least 0, got -1"]),
        ('[[routes]]\nname = "r"\npattern = "1"\ntarget = "ivr:a"\n[[routes]]\nname = "r"\npattern = "2"\ntarget = "ivr:b"\n',
         ['routes[0].target: no menu "a" in [[ivr]]', 'routes[1].name: duplicate route "r" (first at routes[0])',
          'routes[1].target: no menu "b" in [[ivr]]']),
        ('[[routes]]\nname = "r"\ntarget = "ivr:a"\n', ["routes[0].pattern: missing (this key is required)"]),
        (_TRUNK + _TRUNK, ['trunks[1].name: duplicate trunk "t1" (first at trunks[0])']),
        ('[[trunks]]\nname = "t1"\naddress = "127.0.0.1"\n', ['trunks[0].address: "127.0.0.1": expected HOST:PORT']),
        (_TRUNK + 'allowed = ["10.0.0.0/8", "10.0.0.300"]\n',
         ['trunks[0].allowed[1]: "10.0.0.300" is not an IP address or CIDR block']),
        (_TRUNK + 'username = "u"\n',
         ["trunks[0]: give both username and password for the trunk's digest challenges, or neither"]),
        (_TRUNK + 'channels = 0\n', ["trunks[0].channels: must be at least 1, got 0"]),
        (_TRUNK + 'codecs = []\n', ["trunks[0].codecs: needs at least one codec"]),
        ('[media]\naddress = "localhost"\n',
         ['media.address: "localhost" is not an IP address (SDP c= lines carry it)']),
        ('[media]\nrtp_port_min = 20001\n',
         ["media.rtp_port_min: must be even (RTP takes even ports, RTCP the odd one above: RFC 3550 §11), got 20001"]),
        ('[media]\nrtp_port_min = 30000\nrtp_port_max = 30001\n',
         ["media.rtp_port_min: must leave room for at least one call (two port pairs) below media.rtp_port_max (30000, 30001)"]),
        ('[media]\ncodecs = ["PCMU", "pcmu"]\n', ['media.codecs[1]: "pcmu" is listed twice']),
        ('[media]\nspare_port_pairs = -1\n', ["media.spare_port_pairs: must be at least 0, got -1"]),
        ('[calls]\nring_timeout = 0\n', ["calls.ring_timeout: must be greater than 0, got 0"]),
        ('[limits]\nmax_calls = 0\n', ["limits.max_calls: must be at least 1, got 0"]),
    ],
)
def test_call_section_problems(text, problems):
    assert errors_of(text) == [f"site.toml: {p}" for p in problems]


def test_routes_naming_configured_users_and_trunks_are_valid():
    text = _USER + _TRUNK + (
        '[[routes]]\nname = "in"\nmatch = "exact"\npattern = "1001"\ntarget = "user:1001"\nfrom = "t1"\n'
        '[[routes]]\nname = "out"\npattern = "9"\nstrip = 1\ntarget = "trunk:t1"\nfrom = "users"\n'
    )
    c = decode_config(text.encode(), "site.toml")
    assert [(r.name, r.source, r.target) for r in c.routes] == [("in", "t1", "user:1001"), ("out", "users", "trunk:t1")]


@pytest.mark.parametrize(
    "section, problem",
    [
        ('disposition = "*63"', "acd.disposition: the same code as acd.pause"),
        ('disposition = "*6"', 'acd.disposition: "*6" and acd.pause "*63" start alike: a code and its digit would be read as the other'),
        ('dispositions = ["callback", "Call Back"]', 'acd.dispositions: "Call Back" is not a disposition code (1-32 of a-z 0-9 _)'),
    ],
)
def test_disposition_code_problems(section, problem):
    assert errors_of(f"[acd]\n{section}\n") == [f"site.toml: {problem}"]


@pytest.mark.parametrize(
    "section, problem",
    [
        ('listen = "127.0.0.1"', 'control.listen: "127.0.0.1": expected HOST:PORT'),
        ('listen = "0.0.0.0:8080"', 'control.token: needed: control.listen "0.0.0.0:8080" is not a loopback address'),
    ],
)
def test_control_problems(section, problem):
    assert errors_of(f"[control]\n{section}\n") == [f"site.toml: {problem}"]
