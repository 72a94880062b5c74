"""Digest authentication (RFC 7616, RFC 8760, RFC 2617/2069 compatibility): the server side."""
from __future__ import annotations

import re

import pytest

from core.errors import RemoteProtocolError
from core.sip.digest import (
    DigestAuthenticator,
    compute_ha1,
    compute_response,
    parse_authorization,
)

REALM = "switchcore"
USERS = {"alice": "wonderland", "bob": "builder"}
T0 = 1_700_000_000.0


def ha1_for(username: str, algorithm: str) -> str | None:
    password = USERS.get(username)
    return None if password is None else compute_ha1(algorithm, username, REALM, password)


def challenge_params(value: str) -> dict[str, str]:
    """A client's reading of one WWW-Authenticate value (written apart from the server's parser)."""
    assert value.startswith("Digest ")
    return {m[0].lower(): m[1] if m[1] else m[2] for m in re.findall(r'(\w+)=(?:"([^"]*)"|([^",\s]+))', value)}


def answer(
    challenge: str,
    username: str,
    password: str,
    *,
    method: str = "REGISTER",
    uri: str = "sip:example.com",
    nc: int = 1,
    cnonce: str = "0a4f113b",
    qop: bool = True,
    algorithm: str | None = None,
    opaque: str | None = None,
):
    """What a phone sends back: the parsed Authorization header for ``challenge``."""
    p = challenge_params(challenge)
    alg = algorithm or p["algorithm"]
    ha1 = compute_ha1(alg, username, p["realm"], password)
    ncs = f"{nc:08x}"
    if qop:
        response = compute_response(alg, ha1, p["nonce"], method, uri, "auth", ncs, cnonce)
        tail = f', qop=auth, nc={ncs}, cnonce="{cnonce}"'
    else:
        response = compute_response(alg, ha1, p["nonce"], method, uri)
        tail = ""
    header = (
        f'Digest username="{username}", realm="{p["realm"]}", nonce="{p["nonce"]}", uri="{uri}", '
        f'response="{response}", algorithm={alg}, opaque="{opaque if opaque is not None else p["opaque"]}"{tail}'
    )
    return parse_authorization(header)


@pytest.fixture
def auth() -> DigestAuthenticator:
    return DigestAuthenticator(REALM, b"k" * 32, algorithms=("SHA-256", "MD5"), nonce_ttl=300.0)


# --- the RFCs' own examples ------------------------------------------------------------------


@pytest.mark.parametrize(
    "algorithm, expected",
    [
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),  # RFC 7616 §3.9.1
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ],
)
def test_response_matches_rfc7616_example(algorithm, expected):
    ha1 = compute_ha1(algorithm, "Mufasa", "http-auth@example.org", "Circle of Life")
    nonce = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"
    cnonce = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"
    assert compute_response(algorithm, ha1, nonce, "GET", "/dir/index.html", "auth", "00000001", cnonce) == expected


def test_response_matches_rfc2617_example():
    ha1 = compute_ha1("MD5", "Mufasa", "testrealm@host.com", "Circle Of Life")
    got = compute_response(
        "MD5", ha1, "dcd98b7102dd2f0e8b11d0f600bfb0c093", "GET", "/dir/index.html", "auth", "00000001", "0a4f113b"
    )
    assert got == "6629fae49393a05397450978507c4ef1"


# --- challenges ----------------------------------------------------------------------------


def test_challenge_offers_sha256_then_md5_with_one_nonce(auth):
    first, second = auth.challenge(T0)
    a, b = challenge_params(first), challenge_params(second)
    assert (a["algorithm"], b["algorithm"]) == ("SHA-256", "MD5")
    assert a["realm"] == b["realm"] == REALM
    assert a["qop"] == b["qop"] == "auth"
    assert a["nonce"] == b["nonce"] and a["opaque"] == b["opaque"]
    assert "stale" not in a


def test_each_challenge_has_a_fresh_nonce(auth):
    nonces = {challenge_params(auth.challenge(T0)[0])["nonce"] for _ in range(50)}
    assert len(nonces) == 50


def test_stale_challenge_says_so(auth):
    assert all(challenge_params(v)["stale"] == "true" for v in auth.challenge(T0, stale=True))


# --- verification ----------------------------------------------------------------------------


@pytest.mark.parametrize("index", [0, 1], ids=["SHA-256", "MD5"])
def test_right_password_authenticates(auth, index):
    creds = answer(auth.challenge(T0)[index], "alice", "wonderland")
    result = auth.verify(creds, "REGISTER", ha1_for, T0 + 1)
    assert result.ok and result.username == "alice"


def test_rfc2069_answer_without_qop_authenticates(auth):
    creds = answer(auth.challenge(T0)[1], "bob", "builder", qop=False)
    assert creds.qop is None
    assert auth.verify(creds, "REGISTER", ha1_for, T0 + 1).ok


def test_wrong_password_and_unknown_user_fail_alike(auth):
    wrong = auth.verify(answer(auth.challenge(T0)[0], "alice", "guess"), "REGISTER", ha1_for, T0 + 1)
    unknown = auth.verify(answer(auth.challenge(T0)[0], "mallory", "guess"), "REGISTER", ha1_for, T0 + 1)
    assert wrong == unknown
    assert not wrong.ok and not wrong.stale


def test_answer_for_another_method_fails(auth):
    creds = answer(auth.challenge(T0)[0], "alice", "wonderland", method="INVITE")
    assert not auth.verify(creds, "REGISTER", ha1_for, T0 + 1).ok


def test_same_nonce_and_count_is_accepted_once(auth):
    challenge = auth.challenge(T0)[0]
    first = answer(challenge, "alice", "wonderland", nc=1)
    assert auth.verify(first, "REGISTER", ha1_for, T0 + 1).ok
    replay = auth.verify(first, "REGISTER", ha1_for, T0 + 2)
    assert not replay.ok and replay.stale
    # The phone reusing its nonce with the next count is fine (RFC 7616 §3.4).
    assert auth.verify(answer(challenge, "alice", "wonderland", nc=2), "REGISTER", ha1_for, T0 + 3).ok


def test_rfc2069_nonce_is_single_use(auth):
    creds = answer(auth.challenge(T0)[1], "bob", "builder", qop=False)
    assert auth.verify(creds, "REGISTER", ha1_for, T0 + 1).ok
    assert auth.verify(creds, "REGISTER", ha1_for, T0 + 2).stale


def test_expired_nonce_with_right_answer_is_stale(auth):
    creds = answer(auth.challenge(T0)[0], "alice", "wonderland")
    result = auth.verify(creds, "REGISTER", ha1_for, T0 + 301)
    assert not result.ok and result.stale


def test_expired_nonce_with_wrong_answer_is_not_stale(auth):
    creds = answer(auth.challenge(T0)[0], "alice", "guess")
    assert auth.verify(creds, "REGISTER", ha1_for, T0 + 301) == (False, None, False)


def test_nonce_from_another_secret_is_refused(auth):
    other = DigestAuthenticator(REALM, b"x" * 32)
    creds = answer(other.challenge(T0)[0], "alice", "wonderland")
    assert auth.verify(creds, "REGISTER", ha1_for, T0 + 1) == (False, None, False)


def test_tampered_nonce_time_is_refused(auth):
    challenge = auth.challenge(T0 - 1000)[0]  # long expired
    nonce = challenge_params(challenge)["nonce"]
    forged = challenge.replace(nonce, ("A" if nonce[0] != "A" else "B") + nonce[1:])
    creds = answer(forged, "alice", "wonderland")
    assert auth.verify(creds, "REGISTER", ha1_for, T0) == (False, None, False)


def test_altered_opaque_is_refused(auth):
    creds = answer(auth.challenge(T0)[0], "alice", "wonderland", opaque="AAAAAAAAAAAAAAAA")
    assert not auth.verify(creds, "REGISTER", ha1_for, T0 + 1).ok


def test_algorithm_not_offered_is_refused():
    md5_only = DigestAuthenticator(REALM, b"k" * 32, algorithms=("MD5",))
    (challenge,) = md5_only.challenge(T0)
    creds = answer(challenge, "alice", "wonderland", algorithm="SHA-256")
    assert not md5_only.verify(creds, "REGISTER", ha1_for, T0 + 1).ok


def test_replay_table_stays_bounded_and_evicted_nonces_turn_stale():
    auth = DigestAuthenticator(REALM, b"k" * 32, max_nonces=3)
    answers = [answer(auth.challenge(T0 + i)[0], "alice", "wonderland") for i in range(5)]
    for i, creds in enumerate(answers):
        assert auth.verify(creds, "REGISTER", ha1_for, T0 + 10 + i).ok
        assert auth.tracked_nonces <= 3
    # The first nonces were dropped from the table: a replay of them must still be refused.
    replay = auth.verify(answers[0], "REGISTER", ha1_for, T0 + 20)
    assert not replay.ok and replay.stale


def test_expired_nonces_are_pruned(auth):
    for i in range(10):
        assert auth.verify(answer(auth.challenge(T0)[0], "alice", "wonderland"), "REGISTER", ha1_for, T0 + 1).ok
    assert auth.tracked_nonces == 10
    auth.prune(T0 + 301)
    assert auth.tracked_nonces == 0


# --- parsing the Authorization header ------------------------------------------------------


def test_parse_keeps_quoted_commas_and_escapes():
    creds = parse_authorization(
        'digest USERNAME="a\\"b,c", realm="r", nonce="n", uri="sip:x;transport=tcp", '
        'response="00", qop=auth, nc=0000000a, cnonce="c,1"'
    )
    assert creds.username == 'a"b,c'
    assert creds.uri == "sip:x;transport=tcp"
    assert creds.cnonce == "c,1"
    assert creds.algorithm == "MD5"  # RFC 2617 §3.2.2: absent means MD5


def test_parse_normalises_algorithm_case():
    creds = parse_authorization('Digest username="a", realm="r", nonce="n", uri="u", response="0", algorithm=sha-256')
    assert creds.algorithm == "SHA-256"


def test_other_scheme_is_not_digest():
    # RFC 4475 §3.3.7 (regaut01): the registrar then challenges with a scheme it knows.
    assert parse_authorization("NoOneKnowsThisScheme opaque-data=here") is None


@pytest.mark.parametrize(
    "value",
    [
        'Digest realm="r", nonce="n", uri="u", response="0"',  # no username
        'Digest username="a", realm="r", nonce="n", uri="u", response="0", qop=auth, cnonce="c"',  # no nc
        'Digest username="a", realm="r", nonce="n", uri="u", response="0", qop=auth, nc=1, cnonce="c"',
        'Digest username="a, realm="r"',  # unterminated quote
        'Digest username="a" realm="r"',  # missing comma
        'Digest username="a", username="b", realm="r", nonce="n", uri="u", response="0"',
        "Digest",
    ],
)
def test_malformed_digest_header_is_400(value):
    with pytest.raises(RemoteProtocolError) as info:
        parse_authorization(value)
    assert info.value.status == 400
