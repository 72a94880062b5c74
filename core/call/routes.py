"""Routes: which dialled number goes where, and which trunk a call comes from. Sans-IO.

A call's number is the user part of its Request-URI (RFC 3261 §19.1.1; RFC 3966 for ``tel:``),
with the visual separators of a telephone number removed (RFC 3966 §5.1.1: "-", ".", "(", ")"
carry no meaning). ``[[routes]]`` are tried in config order and the first whose pattern matches,
and whose ``from`` (a trunk's name, or "users") matches where the call came from, decides; the
number sent on is the dialled one with ``strip`` leading characters removed and ``prepend`` put in
front.

A call's source is a trunk when its packet's address falls in that trunk's ``allowed`` list (or
is the host of its ``address`` when the list is empty): the trunk ACL. Whether it is a registered
user's phone is the registrar's to say, so the call layer decides "users" itself.
"""
from __future__ import annotations

import ipaddress
import re
from functools import lru_cache
from typing import NamedTuple, Sequence

from core.config import Route, Trunk, parse_host_port
from core.sip.uri import parse_uri

__all__ = ["Router", "RouteMatch", "TrunkSources", "dialled_number", "normalise"]

# RFC 3966 §3 visual-separator, found in numbers as people type them.
_VISUAL_SEPARATORS = str.maketrans("", "", "-.()")
_PHONE_NUMBER = re.compile(r"^\+?[0-9][0-9*#().-]*$")
# Answers remembered per question: a call centre's calls come to the same few numbers, and what a
# number means depends on the config only. Bounded, for a node that dials out to every number once.
_REMEMBERED = 4096


@lru_cache(maxsize=_REMEMBERED)
def dialled_number(request_uri: str) -> str:
    """The number a call is for: the user part of a ``sip:``/``sips:`` Request-URI (escapes undone,
    RFC 3261 §19.1.2), or the number of a ``tel:`` one; visual separators removed where it is a
    telephone number. ``""`` when the URI names no user."""
    try:
        uri = parse_uri(request_uri)
    except ValueError:
        return ""
    if uri.scheme not in ("sip", "sips", "tel") or not uri.user:
        return ""
    # A telephone-subscriber user part may carry its own ;params (RFC 3261 §19.1.6).
    number = uri.user.split(";", 1)[0]
    if _PHONE_NUMBER.match(number):
        number = number.translate(_VISUAL_SEPARATORS)
    return number


def normalise(number: str, strip: int = 0, prepend: str = "") -> str:
    """The number sent on: ``strip`` leading characters removed, then ``prepend`` in front."""
    return prepend + number[strip:]


class RouteMatch(NamedTuple):
    """The route a call took and what it says: ``kind`` ("user", "trunk", "ivr", "queue"),
    ``name`` (of that user, trunk, IVR or queue) and ``number`` (the number to send on)."""

    route: Route
    kind: str
    name: str
    number: str


class Router:
    """The ``[[routes]]`` of a config, first match in order."""

    def __init__(self, routes: Sequence[Route]):
        self._routes = [(route, re.compile(route.pattern) if route.match == "regex" else None)
                        for route in routes]
        # The first match per (number, source), remembered as dialled_number's answers are.
        self._first = lru_cache(maxsize=_REMEMBERED)(self._first_match)

    def __len__(self) -> int:
        return len(self._routes)

    def lookup(self, number: str, source: str | None = None) -> RouteMatch | None:
        """The first route for ``number`` from ``source`` (a trunk name, "users" or None for
        anyone else), or None: the caller gets 404. Remembered per (number, source)."""
        return self._first(number, source)

    def _first_match(self, number: str, source: str | None) -> RouteMatch | None:
        for route, regex in self._routes:
            if route.source is not None and route.source != source:
                continue
            if route.match == "exact":
                hit = number == route.pattern
            elif route.match == "prefix":
                hit = number.startswith(route.pattern)
            else:
                hit = regex.fullmatch(number) is not None
            if hit:
                kind, _, name = route.target.partition(":")
                return RouteMatch(route, kind, name, normalise(number, route.strip, route.prepend))
        return None


class TrunkSources:
    """Which trunk a packet's source address belongs to (the trunk ACL): the first trunk, in
    config order, whose ``allowed`` networks hold it."""

    def __init__(self, trunks: Sequence[Trunk]):
        self._nets: list[tuple[Trunk, list]] = []
        for trunk in trunks:
            allowed = list(trunk.allowed)
            if not allowed:
                host, _ = parse_host_port(trunk.address)
                allowed = [host]
            nets = []
            for text in allowed:
                try:
                    nets.append(ipaddress.ip_network(text, strict=False))
                except ValueError:
                    pass  # a host name in address: only its allowed list can name its sources
            self._nets.append((trunk, nets))

    def trunk_for(self, host: str) -> Trunk | None:
        try:
            addr = ipaddress.ip_address(host)
        except ValueError:
            return None
        for trunk, nets in self._nets:
            if any(addr in net for net in nets):
                return trunk
        return None
