"""The registrar (RFC 3261 §10.3) driven with real REGISTER messages, as phones send them.

Each test is one flow: requests built on the wire, parsed by ``core.sip.message``, answered by the
registrar, and the response rebuilt with ``build_response`` so the assertions read what a phone
would read. Bindings go to a real LMDB store in tmp_path.
"""
from __future__ import annotations

import email.utils
import re
from pathlib import Path

import lmdb
import pytest

from bindings.storage import Storage
from core.config import decode_config
from core.registrar import Registrar, sip_date
from core.sip.addr import Peer
from core.sip.digest import compute_ha1, compute_response
from core.sip.message import build_request, build_response, parse

VECTORS = Path(__file__).resolve().parents[1].parent / "shared" / "vectors" / "sip"
DOMAIN = "switchcore.test"
T0 = 1_700_000_000.0
PHONE = Peer("udp", "192.0.2.10", 5062)

CONFIG = """
[sip]
realm = "switchcore"
[[users]]
name = "alice"
password = "wonderland"
[[users]]
name = "bob"
password = "builder"
[[users]]
name = "j.user"
password = "jpass"
[[users]]
name = "watson"
password = "elementary"
[[users]]
name = "user"
password = "userpass"
"""
PASSWORDS = {"alice": "wonderland", "bob": "builder", "j.user": "jpass", "watson": "elementary", "user": "userpass"}


def make_config(extra: str = ""):
    return decode_config((CONFIG + extra).encode(), "test.toml")


@pytest.fixture
def storage(tmp_path):
    with Storage(tmp_path / "data") as storage:
        yield storage


@pytest.fixture
def registrar(storage):
    return Registrar(make_config(), storage.bindings(), b"s" * 32)


def respond(request_msg, reply) -> object:
    """The response the endpoint would send, parsed back."""
    return parse(build_response(request_msg, reply.status, reply.reason, headers=reply.headers, to_tag="reg-tag"))


def challenge_params(value: str) -> dict[str, str]:
    return {m[0].lower(): m[1] or m[2] for m in re.findall(r'(\w+)=(?:"([^"]*)"|([^",\s]+))', value)}


def authorization(challenge: str, user: str, password: str, uri: str, nc: int = 1) -> str:
    p = challenge_params(challenge)
    alg = p["algorithm"]
    ha1 = compute_ha1(alg, user, p["realm"], password)
    ncs = f"{nc:08x}"
    response = compute_response(alg, ha1, p["nonce"], "REGISTER", uri, "auth", ncs, "c0ffee")
    return (
        f'Digest username="{user}", realm="{p["realm"]}", nonce="{p["nonce"]}", uri="{uri}", '
        f'response="{response}", algorithm={alg}, qop=auth, nc={ncs}, cnonce="c0ffee", opaque="{p["opaque"]}"'
    )


def register_bytes(
    user: str = "alice",
    contacts=("<sip:alice@192.0.2.10:5062>",),
    *,
    expires: int | None = None,
    call_id: str = "reg-call-1",
    cseq: int = 1,
    auth: str | None = None,
    to: str | None = None,
    uri: str = f"sip:{DOMAIN}",
) -> bytes:
    headers = [
        ("Via", f"SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK-{call_id}-{cseq}"),
        ("Max-Forwards", "70"),
        ("From", f"<sip:{user}@{DOMAIN}>;tag=ph{cseq}"),
        ("To", to or f"<sip:{user}@{DOMAIN}>"),
        ("Call-ID", call_id),
        ("CSeq", f"{cseq} REGISTER"),
    ]
    headers += [("Contact", c) for c in contacts]
    if expires is not None:
        headers.append(("Expires", str(expires)))
    if auth is not None:
        headers.append(("Authorization", auth))
    return build_request("REGISTER", uri, headers)


class Phone:
    """A phone that registers the way real ones do: unauthenticated first, then answers the 401
    with the first algorithm offered, CSeq going up by one for each request (§10.2.4)."""

    def __init__(self, registrar: Registrar, user: str = "alice", password: str | None = None, call_id: str = "reg-call-1"):
        self.registrar = registrar
        self.user = user
        self.password = PASSWORDS.get(user) if password is None else password
        self.call_id = call_id
        self.cseq = 0
        self.challenge_index = 0

    def send(self, now: float, peer: Peer = PHONE, **kwargs):
        self.cseq += 1
        msg = parse(register_bytes(self.user, call_id=self.call_id, cseq=self.cseq, **kwargs))
        return msg, respond(msg, self.registrar.handle_register(msg, peer, now))

    def register(self, now: float = T0, peer: Peer = PHONE, **kwargs):
        """Returns the final response (after answering a 401 once)."""
        msg, response = self.send(now, peer, **kwargs)
        if response.status != 401:
            return response
        challenge = response.header_values("WWW-Authenticate")[self.challenge_index]
        auth = authorization(challenge, self.user, self.password, msg.uri)
        return self.send(now, peer, auth=auth, **kwargs)[1]


def contacts_of(response) -> dict[str, dict[str, str]]:
    """Contact URI → its parameters, from a 200's Contact headers."""
    out = {}
    for value in response.header_values("Contact"):
        m = re.fullmatch(r"<([^>]*)>(.*)", value)
        params = dict(p.partition("=")[::2] for p in m[2].split(";") if p)
        out[m[1]] = params
    return out


# --- basic flows -------------------------------------------------------------------------


def test_register_challenged_then_bound(registrar):
    phone = Phone(registrar)
    msg, first = phone.send(T0)
    assert first.status == 401
    challenges = first.header_values("WWW-Authenticate")
    assert [challenge_params(c)["algorithm"] for c in challenges] == ["SHA-256", "MD5"]
    assert registrar.lookup("alice", T0) == []

    auth = authorization(challenges[0], "alice", "wonderland", msg.uri)
    _, ok = phone.send(T0, auth=auth)
    assert ok.status == 200
    assert contacts_of(ok) == {"sip:alice@192.0.2.10:5062": {"expires": "3600"}}
    assert ok.header("Date") == "Tue, 14 Nov 2023 22:13:20 GMT"  # T0 as an RFC 1123 date

    (binding,) = registrar.lookup("alice", T0 + 1)
    assert binding.contact == "sip:alice@192.0.2.10:5062"
    assert binding.received == PHONE
    assert (binding.call_id, binding.cseq) == ("reg-call-1", 2)
    assert binding.expires_at == T0 + 3600


def test_md5_answer_is_accepted(registrar):
    phone = Phone(registrar)
    phone.challenge_index = 1  # an old phone that only knows MD5
    assert phone.register().status == 200


def test_wrong_password_gets_401(registrar):
    assert Phone(registrar, password="guess").register().status == 401
    assert registrar.lookup("alice", T0) == []


def _masked(response) -> list[tuple[str, str]]:
    out = []
    for name, value in response.headers():
        value = re.sub(r'(nonce|opaque)="[^"]*"', r'\1="…"', value)
        out.append((name, value))
    return [(response.status, response.reason)] + out


def test_unknown_user_and_wrong_password_look_the_same(registrar):
    # Same request apart from the user name; a scanner must not tell which name exists.
    wrong = Phone(registrar, user="alice", password="guess", call_id="scan").register()
    unknown = Phone(registrar, user="mallory", password="guess", call_id="scan").register()
    masked_wrong = [(n, v.replace("alice", "NAME")) if isinstance(v, str) else (n, v) for n, v in _masked(wrong)]
    masked_unknown = [(n, v.replace("mallory", "NAME")) if isinstance(v, str) else (n, v) for n, v in _masked(unknown)]
    assert wrong.status == unknown.status == 401
    assert masked_wrong == masked_unknown
    # ...and each carries a fresh nonce.
    nonce = lambda r: challenge_params(r.header("WWW-Authenticate"))["nonce"]
    assert nonce(wrong) != nonce(unknown)


def test_stale_nonce_gets_401_stale(registrar):
    phone = Phone(registrar)
    msg, first = phone.send(T0)
    auth = authorization(first.header("WWW-Authenticate"), "alice", "wonderland", msg.uri)
    _, late = phone.send(T0 + 301, auth=auth)
    assert late.status == 401
    assert all(challenge_params(v).get("stale") == "true" for v in late.header_values("WWW-Authenticate"))


def test_replayed_request_is_refused(registrar):
    phone = Phone(registrar)
    msg, first = phone.send(T0)
    good = register_bytes(call_id="reg-call-1", cseq=2,
                          auth=authorization(first.header("WWW-Authenticate"), "alice", "wonderland", msg.uri))
    assert respond(parse(good), registrar.handle_register(parse(good), PHONE, T0)).status == 200
    # The same bytes again (captured and replayed, say with another Contact it could not sign
    # anyway): the (nonce, nc) pair was used.
    again = registrar.handle_register(parse(good), PHONE, T0 + 1)
    assert again.status == 401


def test_digest_uri_must_be_the_request_uri(registrar):
    phone = Phone(registrar)
    msg, first = phone.send(T0)
    auth = authorization(first.header("WWW-Authenticate"), "alice", "wonderland", "sip:elsewhere.test")
    _, response = phone.send(T0, auth=auth)
    assert response.status == 400


def test_malformed_authorization_is_400(registrar):
    _, response = Phone(registrar).send(T0, auth='Digest username="alice", realm="switchcore"')
    assert response.status == 400


def test_user_may_not_register_someone_else(registrar):
    response = Phone(registrar, user="alice").register(to=f"<sip:bob@{DOMAIN}>")
    assert response.status == 403
    assert registrar.lookup("bob", T0) == []


def test_domain_not_served_is_404(storage):
    registrar = Registrar(make_config('[registrar]\ndomains = ["example.com"]\n'), storage.bindings(), b"s" * 32)
    assert Phone(registrar).register(uri="sip:example.com", to="<sip:alice@other.org>").status == 404
    assert Phone(registrar, call_id="c2").register(uri="sip:other.org").status == 404
    assert Phone(registrar, call_id="c3").register(uri="sip:example.com", to="<sip:alice@example.com>").status == 200


# --- expiry ------------------------------------------------------------------------------


def test_contact_expires_param_wins_over_header(registrar):
    response = Phone(registrar).register(contacts=("<sip:alice@192.0.2.10:5062>;expires=120",), expires=600)
    assert contacts_of(response)["sip:alice@192.0.2.10:5062"]["expires"] == "120"


def test_too_long_is_shortened_to_max(registrar):
    response = Phone(registrar).register(expires=86400)
    assert contacts_of(response)["sip:alice@192.0.2.10:5062"]["expires"] == "3600"


def test_too_brief_gets_423_with_min_expires(registrar):
    response = Phone(registrar).register(expires=30)
    assert (response.status, response.reason) == (423, "Interval Too Brief")
    assert response.header("Min-Expires") == "60"
    assert registrar.lookup("alice", T0) == []


def test_binding_expires(registrar, storage):
    Phone(registrar).register(expires=60)
    assert len(registrar.lookup("alice", T0 + 59)) == 1
    assert registrar.lookup("alice", T0 + 60) == []
    dropped = registrar.expire(T0 + 61)
    assert [(user, b.contact) for user, b in dropped] == [("alice", "sip:alice@192.0.2.10:5062")]
    assert storage.bindings().load() == {}


# --- several contacts, refresh, removal -------------------------------------------------


def test_two_phones_and_q_order(registrar):
    desk = Phone(registrar, call_id="desk")
    soft = Phone(registrar, call_id="soft")
    desk.register(contacts=("<sip:alice@192.0.2.10:5062>;q=0.5",))
    response = soft.register(T0 + 10, peer=Peer("tcp", "192.0.2.20", 40000), contacts=("<sip:alice@192.0.2.20:5060;transport=tcp>;q=0.9",))
    listed = contacts_of(response)
    assert listed == {
        "sip:alice@192.0.2.20:5060;transport=tcp": {"expires": "3600", "q": "0.9"},
        "sip:alice@192.0.2.10:5062": {"expires": "3590", "q": "0.5"},
    }
    assert [b.received.transport for b in registrar.lookup("alice", T0 + 11)] == ["tcp", "udp"]


def test_refresh_replaces_the_binding(registrar):
    phone = Phone(registrar)
    phone.register(T0, expires=600)
    response = phone.register(T0 + 300, expires=600)
    assert contacts_of(response) == {"sip:alice@192.0.2.10:5062": {"expires": "600"}}
    (binding,) = registrar.lookup("alice", T0 + 301)
    assert binding.expires_at == T0 + 900 and binding.cseq == phone.cseq


def test_same_contact_written_differently_is_one_binding(registrar):
    # RFC 3261 §19.1.4: host case-insensitive, parameter order irrelevant, escapes equal.
    phone = Phone(registrar)
    phone.register(contacts=("<sip:alice@Phone.Example:5062;transport=udp;ob>",))
    response = phone.register(T0 + 5, contacts=("<sip:%61lice@phone.example:5062;ob;transport=UDP>",))
    assert len(contacts_of(response)) == 1


def test_out_of_order_cseq_is_refused_and_changes_nothing(registrar):
    phone = Phone(registrar)
    phone.register(expires=600)
    before = registrar.lookup("alice", T0)
    phone.cseq -= 3  # an older request of the same Call-ID arriving late
    response = phone.register(T0 + 1, expires=0)
    assert response.status == 500
    assert registrar.lookup("alice", T0 + 1) == before


def test_expires_zero_removes_one_contact(registrar):
    phone = Phone(registrar)
    phone.register(contacts=("<sip:alice@192.0.2.10:5062>", "<sip:alice@192.0.2.11:5062>"))
    response = phone.register(T0 + 1, contacts=("<sip:alice@192.0.2.10:5062>;expires=0",))
    assert list(contacts_of(response)) == ["sip:alice@192.0.2.11:5062"]


def test_star_with_expires_zero_removes_all(registrar, storage):
    phone = Phone(registrar)
    phone.register(contacts=("<sip:alice@192.0.2.10:5062>", "<sip:alice@192.0.2.11:5062>"))
    response = phone.register(T0 + 1, contacts=("*",), expires=0)
    assert response.status == 200
    assert response.header_values("Contact") == []
    assert registrar.lookup("alice", T0 + 1) == []
    assert storage.bindings().load() == {}


@pytest.mark.parametrize(
    "contacts, expires",
    [(("*",), 3600), (("*",), None), (("*", "<sip:alice@192.0.2.10>"), 0)],
    ids=["star-with-expires", "star-without-expires", "star-with-another-contact"],
)
def test_star_misused_is_400(registrar, contacts, expires):
    Phone(registrar, call_id="first").register()
    response = Phone(registrar, call_id="second").register(T0 + 1, contacts=contacts, expires=expires)
    assert response.status == 400
    assert len(registrar.lookup("alice", T0 + 1)) == 1


def test_query_without_contact_lists_bindings(registrar):
    Phone(registrar).register(expires=600)
    response = Phone(registrar, call_id="query").register(T0 + 100, contacts=())
    assert contacts_of(response) == {"sip:alice@192.0.2.10:5062": {"expires": "500"}}


def test_bad_q_is_400(registrar):
    assert Phone(registrar).register(contacts=("<sip:alice@192.0.2.10>;q=1.5",)).status == 400


@pytest.mark.parametrize("when", [0, 951782400, 951868800, 1700000000.75, 4107542399, 253402300799])
def test_date_header_matches_rfc1123(when):
    # The 200's Date (§10.3 step 8), checked against the standard library's formatter; the
    # cases cover the epoch, 29 Feb 2000, a fraction of a second, 2100 (not a leap year), 9999.
    assert sip_date(when) == email.utils.formatdate(int(when), usegmt=True)


# --- storage ------------------------------------------------------------------------------


def test_bindings_survive_a_restart(tmp_path):
    with Storage(tmp_path / "data") as storage:
        registrar = Registrar(make_config(), storage.bindings(), b"s" * 32)
        Phone(registrar).register(expires=600)
    with Storage(tmp_path / "data") as storage:
        registrar = Registrar(make_config(), storage.bindings(), b"another secret")
        (binding,) = registrar.lookup("alice", T0 + 1)
        assert binding.contact == "sip:alice@192.0.2.10:5062" and binding.received == PHONE


def test_bindings_of_removed_users_are_dropped_at_start(tmp_path):
    with Storage(tmp_path / "data") as storage:
        Phone(Registrar(make_config(), storage.bindings(), b"s" * 32), user="bob").register()
    without_bob = decode_config(b'[[users]]\nname = "alice"\npassword = "wonderland"\n', "t.toml")
    with Storage(tmp_path / "data") as storage:
        registrar = Registrar(without_bob, storage.bindings(), b"s" * 32)
        assert registrar.lookup("bob", T0) == []
        assert storage.bindings().load() == {}


def test_store_failure_is_500_and_keeps_old_bindings(tmp_path):
    # A data folder that fills up: LMDB refuses the write (MapFullError) and nothing changes.
    with Storage(tmp_path / "data", map_size=64 * 1024) as storage:
        registrar = Registrar(make_config(), storage.bindings(), b"s" * 32)
        phone = Phone(registrar)
        assert phone.register().status == 200
        status = 200
        for i in range(200):  # bounded: the map holds far fewer contacts than this
            long_contact = f"<sip:alice-{i}-{'x' * 900}@192.0.2.10:5062>"
            status = phone.register(T0 + i, contacts=(long_contact,)).status
            if status != 200:
                break
        assert status == 500
        kept = registrar.lookup("alice", T0 + i)
        assert len(kept) == i + 1  # the first contact and every one stored before the failure
        with pytest.raises(lmdb.MapFullError):
            storage.bindings().save("bob", registrar.lookup("alice", T0 + i) * 50)


# --- torture vectors (RFC 4475, RFC 5118) ----------------------------------------------------


def vector(name: str) -> bytes:
    path = VECTORS / name
    if not path.exists():
        pytest.skip(f"SIP vectors not found at {VECTORS} (the shared folder beside the repo)")
    return path.read_bytes()


def answer_vector(registrar, data: bytes, user: str, now: float = T0):
    """Send a vector as is, then again with an Authorization answering the 401 (the vector's
    own header lines untouched, the Authorization line prepended)."""
    msg = parse(data)
    first = respond(msg, registrar.handle_register(msg, Peer("udp", "192.0.2.21", 5060), now))
    if first.status != 401:
        return first, first
    auth = authorization(first.header("WWW-Authenticate"), user, PASSWORDS[user], msg.uri)
    again = parse(msg.serialize(prepend=[("Authorization", auth)]))
    return first, respond(again, registrar.handle_register(again, Peer("udp", "192.0.2.21", 5060), now))


def test_unksm2_non_sip_to_is_400(registrar):
    # RFC 4475 §3.3.4: To isbn:..., a registrar answers 400 (before asking who is calling).
    first, _ = answer_vector(registrar, vector("rfc4475/valid/unksm2.sip"), "alice")
    assert first.status == 400


def test_regaut01_unknown_scheme_gets_a_digest_challenge(registrar):
    # RFC 4475 §3.3.7: challenge with a scheme we know; 416 is not appropriate.
    first, _ = answer_vector(registrar, vector("rfc4475/valid/regaut01.sip"), "j.user")
    assert first.status == 401
    assert first.header("WWW-Authenticate").startswith("Digest ")


@pytest.mark.parametrize(
    "name, user, contact",
    [
        # §3.3.12: addr-spec form, ";unknownparam" is a contact parameter, not part of the URI.
        ("rfc4475/valid/cparam01.sip", "watson", "sip:+19725552222@gw1.example.net"),
        # §3.3.13: inside <...> it is a URI parameter and stays in the binding.
        ("rfc4475/valid/cparam02.sip", "watson", "sip:+19725552222@gw1.example.net;unknownparam"),
        # §3.3.14: the escaped Route header stays in the binding.
        ("rfc4475/valid/regescrt.sip", "user", "sip:user@example.com?Route=%3Csip:sip.example.com%3E"),
        # §3.1.1.8: the trailing INVITE in the datagram is ignored; the REGISTER is handled.
        ("rfc4475/valid/dblreq.sip", "j.user", "sip:j.user@host.example.com"),
        # RFC 5118 §4.1: IPv6 reference in the Contact.
        ("rfc5118/valid/ipv6-good.sip", "user", "sip:caller@[2001:db8::1]"),
    ],
)
def test_register_vectors_bind_the_right_contact(registrar, name, user, contact):
    first, final = answer_vector(registrar, vector(name), user)
    assert first.status == 401
    assert final.status == 200
    assert [b.contact for b in registrar.lookup(user, T0)] == [contact]
    assert list(contacts_of(final)) == [contact]
