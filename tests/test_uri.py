"""URIs, name-addr and Via values parsed on demand (core/sip/uri.py; RFC 3261 §19.1, §20.10, §20.42,
§25.1; RFC 5118 for IPv6; the cases are the ones RFC 4475 singles out)."""

from __future__ import annotations

import pytest

from core.sip.uri import (
    URI,
    GrammarError,
    NameAddr,
    is_ipv6,
    parse_name_addr,
    parse_name_addr_list,
    parse_uri,
    parse_via,
    parse_via_list,
)


def test_sip_uri_parts():
    uri = parse_uri("sips:alice:secret@atlanta.example.com:5061;transport=tcp;LR?subject=project%20x&priority=urgent")
    assert (uri.scheme, uri.user, uri.password, uri.host, uri.port) == (
        "sips", "alice", "secret", "atlanta.example.com", 5061)
    assert uri.params == {"transport": "tcp", "lr": None}
    assert uri.headers == {"subject": "project x", "priority": "urgent"}


def test_user_part_with_semicolon_and_escapes():
    # RFC 4475 §3.1.1.9: the ";par=" belongs to the user part, and %40 is an "@".
    assert parse_uri("sip:user;par=u%40example.net@example.com").user == "user;par=u@example.net"
    # RFC 4475 §3.1.1.3: escapes decode once, never recursively ("%25%34%31" is "%41", not "A").
    uri = parse_uri("sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31")
    assert uri.user == "caller" and uri.params == {"lr": None, "name": "value%41"}


def test_escaped_nul_users_stay_distinct():
    # RFC 4475 §3.1.1.4: %00 is not the end of the user part.
    one, two = parse_uri("sip:%00@host5.example.com"), parse_uri("sip:%00%00@host5.example.com")
    assert one.user == "\x00" and two.user == "\x00\x00" and one != two


@pytest.mark.parametrize(
    "text, host, port",
    [
        ("sip:[2001:db8::10:5070]", "2001:db8::10:5070", None),  # RFC 5118 §4.3: no port
        ("sip:[2001:db8::10]:5070", "2001:db8::10", 5070),  # RFC 5118 §4.4
        ("sip:user@[2001:db8::192.0.2.1]", "2001:db8::192.0.2.1", None),  # RFC 5118 §4.10
        ("sip:ted@[::ffff:192.0.2.2]", "::ffff:192.0.2.2", None),  # RFC 5118 §4.9
        ("sip:192.0.2.1:5060", "192.0.2.1", 5060),
    ],
)
def test_hosts_and_ports(text, host, port):
    uri = parse_uri(text)
    assert (uri.host, uri.port) == (host, port)
    assert str(uri) == text


def test_ipv6_grammar():
    assert is_ipv6("2001:db8::9:1") and is_ipv6("::") and is_ipv6("::1") and is_ipv6("1:2:3:4:5:6:7:8")
    assert is_ipv6("1:2:3:4:5:6:192.0.2.1")
    assert not is_ipv6("2001:db8:::192.0.2.1")  # RFC 5118 §4.10: three colons
    assert not is_ipv6("1:2:3:4:5:6:7:8:9") and not is_ipv6("1::2::3") and not is_ipv6("12345::")
    assert not is_ipv6("1:2:3:4:5:6:7") and not is_ipv6("::1.2.3.256")


def test_other_schemes():
    tel = parse_uri("tel:+1-201-555-0123;phone-context=example.com")
    assert tel.user == "+1-201-555-0123" and tel.params == {"phone-context": "example.com"}
    odd = parse_uri("soap.beep://192.0.2.103:3002")
    assert odd.opaque == "//192.0.2.103:3002" and str(odd) == "soap.beep://192.0.2.103:3002"
    for bad in ("nocolon", "1sip:x", ":x", "sip:[::1", "sip:host:70000", "sip:host/x"):
        with pytest.raises(GrammarError):
            parse_uri(bad)


def test_built_uri_escapes_its_user():
    uri = URI("sip", user="a@b c", host="2001:db8::1", port=5070, params={"transport": "tcp"})
    assert str(uri) == "sip:a%40b%20c@[2001:db8::1]:5070;transport=tcp"
    assert parse_uri(str(uri)) == uri


def test_name_addr_forms():
    quoted = parse_name_addr('"J Rosenberg \\\\\\"" <sip:jdrosen@example.com> ; tag = 98asjd8')
    assert quoted.display == 'J Rosenberg \\"' and quoted.tag == "98asjd8"
    assert quoted.uri.user == "jdrosen"
    tokens = parse_name_addr("caller<sip:caller@example.com>;tag=323")  # RFC 4475 §3.1.1.6
    assert tokens.display == "caller" and tokens.tag == "323"
    # RFC 4475 §3.3.12/13: outside <...> the ";unknownparam" is a header parameter, inside a URI one.
    outside = parse_name_addr("sip:+19725552222@gw1.example.net;unknownparam")
    assert outside.params == {"unknownparam": None} and outside.uri.params == {}
    inside = parse_name_addr("<sip:+19725552222@gw1.example.net;unknownparam>")
    assert inside.params == {} and inside.uri.params == {"unknownparam": None}
    assert str(inside) == "<sip:+19725552222@gw1.example.net;unknownparam>"
    assert str(NameAddr("A \"B\"", parse_uri("sip:a@b"), {"tag": "1"})) == '"A \\"B\\"" <sip:a@b>;tag=1'


@pytest.mark.parametrize(
    "text, problem",
    [
        ('"Mr. J. User <sip:j.user@example.com>', "unterminated quoted string"),  # RFC 4475 §3.1.2.6
        ('"Watson, Thomas" < sip:t.watson@example.org >', "whitespace inside the angle brackets"),
        ("Bell, Alexander <sip:a.g.bell@example.com>;tag=43", "display name must be a quoted string"),
        ("sip:user@example.com?Route=%3Csip:sip.example.com%3E", "must be enclosed in angle brackets"),
        ('"Joe" <sip:joe@example.org>;;;;', "empty parameter"),
        ("<sip:a@b", "unclosed angle bracket"),
        ("<sip:a@b>;tag=", "has no value"),
        ("<sip:a@b>, <sip:c@d>", "unexpected text"),
    ],
)
def test_name_addr_refusals(text, problem):
    with pytest.raises(GrammarError, match=problem):
        parse_name_addr(text)


def test_name_addr_lists():
    values = parse_name_addr_list('"A, B" <sip:a@example.com>;q=0.5 , <sip:b@example.com;x="1,2">')
    assert [str(v.uri) for v in values] == ["sip:a@example.com", 'sip:b@example.com;x="1,2"']
    assert values[0].params == {"q": "0.5"} and values[0].display == "A, B"


def test_via_values():
    # RFC 4475 §3.1.1.1: LWS around every "/", ";" and "="; unfolding has left the spaces.
    vias = parse_via_list("SIP  / 2.0  / TCP     spindle.example.com   ;  branch  =   z9hG4bK9ikj8  ,"
                          " SIP  /    2.0   / UDP  192.168.255.111   ; branch= z9hG4bK30239")
    assert [(v.transport, v.host, v.branch) for v in vias] == [
        ("TCP", "spindle.example.com", "z9hG4bK9ikj8"), ("UDP", "192.168.255.111", "z9hG4bK30239")]
    via = parse_via("SIP/2.0/UDP [2001:db8::9:1]:6050;received=2001:db8::9:255;rport;branch=z9hG4bKas3")
    assert (via.host, via.port) == ("2001:db8::9:1", 6050)
    assert via.params == {"received": "2001:db8::9:255", "rport": None, "branch": "z9hG4bKas3"}
    for bad, problem in [("SIP/2.0/UDP 192.0.2.15;;,;,,", "empty parameter"),
                         ("SIP/2.0/UDP", "no sent-by host"),
                         ("SIP/2.0 host", "malformed sent-protocol"),
                         ("SIP/2.0/UDP a, ,b", "empty value"),
                         ("SIP/2.0/UDP 2001:db8::9:1", "invalid port")]:
        with pytest.raises(GrammarError, match=problem):
            parse_via_list(bad)
