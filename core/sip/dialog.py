"""Dialogs (RFC 3261 §12): the peer-to-peer relationship an INVITE sets up, and the requests sent
inside it.

Implements §12.1.1 (UAS side: the dialog made from the INVITE and our response), §12.1.2 (UAC side:
from our INVITE and the response carrying a To tag; route set from Record-Route reversed), §12.2.1.1
(building a request inside the dialog: Request-URI and Route for loose and strict routing, CSeq
numbering), §12.2.2 (a request received inside the dialog: CSeq order, remote target refresh) and
§12.3 (termination). A dialog is identified by Call-ID, local tag and remote tag (§12). Sans-IO: it
builds bytes and names the next hop; the session (``core/sip/session.py``) sends them.
"""
from __future__ import annotations

from typing import Any

from core.errors import LocalProtocolError, RemoteProtocolError
from core.memory import untrack
from core.sip.addr import Peer
from core.sip.ids import random_hex
from core.sip.message import build_request
from core.sip.transaction import MAGIC_COOKIE
from core.sip.uri import URI, parse_name_addr, parse_name_addr_list

EARLY = "Early"
CONFIRMED = "Confirmed"
TERMINATED = "Terminated"

# Target refresh requests (§12.2, RFC 3311 UPDATE): their Contact replaces the remote target.
TARGET_REFRESH = frozenset(("INVITE", "UPDATE"))


def new_branch() -> str:
    """A branch for a new transaction: the magic cookie and 64 random bits (§8.1.1.7)."""
    return MAGIC_COOKIE + random_hex(8)


def next_hop(uri: URI, default_transport: str) -> Peer:
    """The Peer a request for ``uri`` goes to. No DNS here (sans-IO): the host is used as written,
    the port defaults to 5060 and the transport to the URI's ``transport`` parameter (§19.1.1)."""
    transport = (uri.params.get("transport") or default_transport).lower()
    return Peer(transport, uri.host, uri.port or 5060)


def _route_values(msg: Any, name: str) -> list[str]:
    values: list[str] = []
    for value in msg.header_values(name):
        values.extend(str(na) for na in parse_name_addr_list(value))
    return values


# Contact value -> its first URI (None when unusable), remembered: a dialog reads the peer's Contact
# from the INVITE or its 1xx, again from the 2xx, and a phone or trunk sends the same one call after
# call. URIs are never modified once parsed, so one object can serve every dialog.
_CONTACTS: dict[str, URI | None] = {}
_CONTACTS_MAX = 4096


def _contact_uri(msg: Any, contact: str | None = None) -> URI | None:
    """The first URI of ``msg``'s Contact (``contact``: its value, when the caller has read it)."""
    if contact is None:
        contact = msg.header("Contact")
    if not contact:
        return None
    uri = _CONTACTS.get(contact, _CONTACTS)
    if uri is not _CONTACTS:
        return uri
    try:
        uri = parse_name_addr_list(contact)[0].uri
    except ValueError:
        uri = None
    if len(_CONTACTS) >= _CONTACTS_MAX:
        _CONTACTS.clear()
    _CONTACTS[contact] = uri
    return uri


class Dialog:
    """One dialog's state (§12): ``call_id``, ``local_tag``, ``remote_tag``, ``local_uri`` and
    ``remote_uri`` (From/To addresses, as name-addr text without tag), ``remote_target`` (the
    peer's Contact URI), ``route_set`` (Route values in the order requests carry them),
    ``local_seq`` / ``remote_seq`` (CSeq numbers, None while empty) and ``state``."""

    __slots__ = ("state", "call_id", "local_tag", "remote_tag", "local_party", "remote_party",
                 "remote_target", "route_set", "local_seq", "remote_seq", "secure")

    def __init__(self, *, state: str, call_id: str, local_tag: str, remote_tag: str,
                 local_party: str, remote_party: str, remote_target: URI, route_set: list[str],
                 local_seq: int | None, remote_seq: int | None, secure: bool = False):
        self.state = state
        self.call_id = call_id
        self.local_tag = local_tag
        self.remote_tag = remote_tag
        # From/To header values as our requests carry them (with the tags).
        self.local_party = local_party
        self.remote_party = remote_party
        self.remote_target = remote_target
        self.route_set = route_set
        self.local_seq = local_seq
        self.remote_seq = remote_seq
        self.secure = secure
        untrack(self)  # no cycles (core/memory.py)

    def __repr__(self) -> str:
        return f"<Dialog {self.call_id} {self.local_tag}/{self.remote_tag} {self.state}>"

    @property
    def id(self) -> tuple[str, str, str]:
        """(Call-ID, local tag, remote tag): what identifies the dialog (§12)."""
        return (self.call_id, self.local_tag, self.remote_tag)

    @property
    def local_uri(self) -> URI:
        return parse_name_addr(self.local_party).uri

    @property
    def remote_uri(self) -> URI:
        return parse_name_addr(self.remote_party).uri

    # -- creation -------------------------------------------------------------------------------
    @classmethod
    def for_uac(cls, request: Any, response: Any, contact: str | None = None) -> "Dialog":
        """§12.1.2: the dialog our INVITE and a 1xx/2xx with a To tag establish (``contact``: the
        response's Contact value, when the caller has read it already)."""
        if response.to_tag is None:
            raise RemoteProtocolError("a response that makes a dialog must carry a To tag", 400)
        target = _contact_uri(response, contact)
        if target is None:
            raise RemoteProtocolError(f"{response.status} to INVITE has no usable Contact", 400)
        # §12.1.2: the route set is the Record-Route of the response, in reverse order.
        routes = _route_values(response, "Record-Route")
        routes.reverse()
        return cls(state=CONFIRMED if response.status >= 200 else EARLY, call_id=request.call_id,
                   local_tag=request.from_tag, remote_tag=response.to_tag, local_party=request.from_,
                   remote_party=response.to, remote_target=target, route_set=routes,
                   local_seq=request.cseq, remote_seq=None,
                   secure=request.uri.lower().startswith("sips:"))

    @classmethod
    def for_uas(cls, request: Any, local_tag: str, *, confirmed: bool) -> "Dialog":
        """§12.1.1: the dialog an INVITE we answer with a 1xx/2xx (carrying ``local_tag``) makes."""
        target = _contact_uri(request)
        if target is None:
            raise RemoteProtocolError("INVITE has no usable Contact (RFC 3261 §8.1.1.8)", 400)
        to = request.to if request.to_tag else f"{request.to};tag={local_tag}"
        return cls(state=CONFIRMED if confirmed else EARLY, call_id=request.call_id,
                   local_tag=local_tag, remote_tag=request.from_tag or "", local_party=to,
                   remote_party=request.from_, remote_target=target,
                   route_set=_route_values(request, "Record-Route"),  # §12.1.1: in order
                   local_seq=None, remote_seq=request.cseq,
                   secure=request.uri.lower().startswith("sips:"))

    # -- requests inside the dialog -------------------------------------------------------------
    def next_cseq(self) -> int:
        """Take the next local CSeq number (§12.2.1.1: one more than the last; when empty, a first
        value below 2**31, §8.1.1.5)."""
        self.local_seq = 1 if self.local_seq is None else self.local_seq + 1
        return self.local_seq

    def request_target(self) -> tuple[str, list[str]]:
        """Request-URI and Route values for the next request (§12.2.1.1).

        Empty route set: the remote target, no Route. First route loose (``;lr``): the remote
        target and the route set as it is. Strict first route: that route's URI (parameters not
        allowed in a Request-URI removed, §19.1.1) is the Request-URI, and the remaining routes plus
        the remote target form the Route.
        """
        target = str(self.remote_target)
        if not self.route_set:
            return target, []
        first = parse_name_addr(self.route_set[0]).uri
        if "lr" in first.params:
            return target, list(self.route_set)
        uri = URI(first.scheme, first.user, first.password, first.host, first.port,
                  {k: v for k, v in first.params.items() if k not in ("method", "maddr", "ttl", "lr")})
        return str(uri), [*self.route_set[1:], f"<{target}>"]

    def next_hop(self, default_transport: str = "udp") -> Peer:
        """Where a request of this dialog is sent: the first Route, else the remote target."""
        if self.route_set:
            return next_hop(parse_name_addr(self.route_set[0]).uri, default_transport)
        return next_hop(self.remote_target, default_transport)

    def create_request(self, method: str, via: str, *, cseq: int | None = None,
                       contact: str | None = None, headers=(), body: bytes = b"") -> bytes:
        """A request inside this dialog (§12.2.1.1). ``via`` is our top Via value (with a new
        branch); ``cseq`` defaults to the next local number (ACK and CANCEL pass the INVITE's);
        ``contact`` is required for target refresh requests (INVITE, UPDATE)."""
        if self.state is TERMINATED:
            raise LocalProtocolError(f"dialog {self.call_id} is terminated", 481)
        if cseq is None:
            cseq = self.next_cseq()
        uri, routes = self.request_target()
        lines = [("Via", via), ("Max-Forwards", "70"), ("From", self.local_party),
                 ("To", self.remote_party), ("Call-ID", self.call_id), ("CSeq", f"{cseq} {method}")]
        lines += [("Route", route) for route in routes]
        if contact is not None:
            lines.append(("Contact", contact))
        elif method in TARGET_REFRESH:
            raise LocalProtocolError(f"a {method} needs a Contact (RFC 3261 §12.2.1.1)", 500)
        lines.extend(headers)
        return build_request(method, uri, lines, body)

    # -- requests received inside the dialog ----------------------------------------------------
    def receive_request(self, msg: Any) -> None:
        """§12.2.2: check the CSeq order and refresh the remote target. A CSeq lower than the last
        one (ACK and CANCEL excepted: they repeat the INVITE's) raises ``RemoteProtocolError(500)``."""
        method = msg.method
        if method in ("ACK", "CANCEL"):
            return
        if self.remote_seq is not None and msg.cseq < self.remote_seq:
            raise RemoteProtocolError(
                f"CSeq {msg.cseq} is below {self.remote_seq}, the last of this dialog", 500)
        self.remote_seq = msg.cseq
        if method in TARGET_REFRESH:
            target = _contact_uri(msg)
            if target is not None:
                self.remote_target = target

    def refresh_from_response(self, response: Any) -> None:
        """A 2xx to our target refresh carries the new remote target (§12.2.1.2)."""
        target = _contact_uri(response)
        if target is not None:
            self.remote_target = target

    def confirm(self) -> None:
        if self.state is EARLY:
            self.state = CONFIRMED

    def terminate(self) -> None:
        self.state = TERMINATED
