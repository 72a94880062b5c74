"""Routes: the dialled number against [[routes]] in file order, the number sent on, and the trunk a
call's source address belongs to."""
from __future__ import annotations

import pytest

from core.call.routes import Router, TrunkSources, dialled_number, normalise
from core.config import decode_config

CONFIG = """
[[users]]
name = "1001"
password = "p"
[[trunks]]
name = "carrier"
address = "192.0.2.10:5060"
allowed = ["192.0.2.0/28", "2001:db8::/32"]
[[trunks]]
name = "pbx"
address = "198.51.100.7:5060"
[[routes]]
name = "agent"
match = "exact"
pattern = "1001"
target = "user:1001"
[[routes]]
name = "from-carrier"
pattern = "49301234"
from = "carrier"
target = "queue:sales"
[[queues]]
name = "sales"
[[routes]]
name = "emergency"
match = "regex"
pattern = "11[02]"
target = "trunk:carrier"
[[routes]]
name = "national"
pattern = "0"
from = "users"
strip = 1
prepend = "+49"
target = "trunk:carrier"
[[routes]]
name = "catch-all"
match = "regex"
pattern = "\\\\+?[0-9]+"
target = "trunk:pbx"
"""


@pytest.fixture(scope="module")
def config():
    return decode_config(CONFIG.encode(), "routes.toml")


@pytest.fixture(scope="module")
def router(config):
    return Router(config.routes)


@pytest.mark.parametrize(
    "number, source, route, kind, name, sent",
    [
        ("1001", None, "agent", "user", "1001", "1001"),
        ("10011", None, "catch-all", "trunk", "pbx", "10011"),  # exact means exact
        ("49301234", "carrier", "from-carrier", "queue", "sales", "49301234"),
        ("493012345", "carrier", "from-carrier", "queue", "sales", "493012345"),  # prefix
        ("49301234", None, "catch-all", "trunk", "pbx", "49301234"),  # from = "carrier" only
        ("110", None, "emergency", "trunk", "carrier", "110"),
        ("1100", None, "catch-all", "trunk", "pbx", "1100"),  # a regex matches the whole number
        ("030123", "users", "national", "trunk", "carrier", "+4930123"),
        ("030123", "pbx", "catch-all", "trunk", "pbx", "030123"),
        ("+33123", None, "catch-all", "trunk", "pbx", "+33123"),
    ],
)
def test_first_matching_route_in_file_order(router, number, source, route, kind, name, sent):
    match = router.lookup(number, source)
    assert (match.route.name, match.kind, match.name, match.number) == (route, kind, name, sent)


def test_no_route_for_a_number_nothing_matches(router):
    assert router.lookup("alice", None) is None
    assert router.lookup("", "users") is None


def test_empty_config_routes_nothing():
    assert Router(()).lookup("1001") is None


@pytest.mark.parametrize(
    "uri, number",
    [
        ("sip:1001@switch.example.com", "1001"),
        ("sip:%31%30%30%31@127.0.0.1:5060;transport=udp", "1001"),  # escapes undone (§19.1.2)
        ("sip:+49-30-1234;isub=7@gw.example.com;user=phone", "+49301234"),  # visual separators
        ("tel:+1-201-555-0123;ext=1", "+12015550123"),
        ("sips:sales@example.com", "sales"),
        ("sip:alice.smith@example.com", "alice.smith"),  # not a number: dots kept
        ("sip:example.com", ""),
        ("mailto:x@example.com", ""),
        ("not a uri", ""),
    ],
)
def test_dialled_number_from_the_request_uri(uri, number):
    assert dialled_number(uri) == number


def test_normalise_strips_then_prepends():
    assert normalise("0301234", 1, "+49") == "+49301234"
    assert normalise("0301234") == "0301234"
    assert normalise("12", 5, "9") == "9"


def test_trunk_sources_by_allowed_networks_or_the_trunk_address(config):
    sources = TrunkSources(config.trunks)
    assert sources.trunk_for("192.0.2.3").name == "carrier"
    assert sources.trunk_for("192.0.2.16") is None  # outside /28
    assert sources.trunk_for("2001:db8::5").name == "carrier"
    assert sources.trunk_for("198.51.100.7").name == "pbx"  # no allowed list: its address's host
    assert sources.trunk_for("198.51.100.8") is None
    assert sources.trunk_for("not-an-ip") is None
