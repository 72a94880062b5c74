"""The node's configuration: one TOML file decoded into typed, frozen msgspec Structs.

Pure: ``decode_config(data, filename)`` takes the file's bytes (``bindings/config.py`` reads it).
Every problem is reported, not just the first, each as ``FILE: key.path: problem`` so an operator
can fix a whole file in one pass (``switchcore check FILE``).

How it works: the Structs below are the schema. ``_Decoder`` walks the TOML tables against
``msgspec.inspect.type_info`` of those Structs, checking types and ``msgspec.Meta`` bounds and
building the Structs as it goes; then the ``_RULES`` check what spans keys (t1 <= t2, unique user
names, ...), still running on the parts that decoded when others did not. A later section (trunks, agents, queues, routes, ivr,
campaigns) is one Struct, one field on ``Config`` and, if it has cross-key rules, its rule
functions added to ``_RULES``: the walker, error format and CLI need no change.

Array indices in key paths count from 0 (``users[0]`` is the first ``[[users]]`` table).
"""
from __future__ import annotations

import difflib
import functools
import ipaddress
import re
import tomllib
from typing import Annotated, Any, Callable, Literal, NamedTuple

import msgspec
import msgspec.inspect as mi

__all__ = [
    "Config",
    "ConfigError",
    "ListenAddress",
    "CallsConfig",
    "LimitsConfig",
    "MediaConfig",
    "NodeConfig",
    "Route",
    "ROUTE_TARGETS",
    "RegistrarConfig",
    "SipConfig",
    "SipTimers",
    "Trunk",
    "User",
    "DIGEST_ALGORITHMS",
    "decode_config",
    "default_config",
    "LOG_LEVELS",
    "parse_host_port",
    "parse_listen",
]

# Digest algorithms a user can authenticate with (RFC 7616 §6.1, RFC 8760 §2.1), in the
# order a challenge offers them by default: strongest first.
DIGEST_ALGORITHMS = ("SHA-256", "MD5")
_HA1_FIELDS = {"MD5": ("ha1_md5", 32), "SHA-256": ("ha1_sha256", 64)}

LogLevel = Literal["debug", "info", "warning", "error", "critical"]
LOG_LEVELS: tuple[str, ...] = LogLevel.__args__
Seconds = Annotated[float, msgspec.Meta(gt=0)]
PositiveInt = Annotated[int, msgspec.Meta(ge=1)]


class ConfigError(Exception):
    """The configuration is not usable; ``errors`` holds every problem as ``FILE: key.path: problem``."""

    def __init__(self, errors: list[str]):
        super().__init__("\n".join(errors))
        self.errors = list(errors)


class ListenAddress(NamedTuple):
    """One socket to open: written ``udp:HOST:PORT`` or ``tcp:HOST:PORT`` (IPv6 as ``[::1]``).
    A tuple, so ``transport, host, port = address`` works."""

    transport: Literal["udp", "tcp"]
    host: str
    port: int

    @classmethod
    def from_text(cls, text: str) -> "ListenAddress":
        """The config file writes this as a string; the walker decodes it through here."""
        return parse_listen(text)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.transport}:{host}:{self.port}"


_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$")


def parse_host_port(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[IPv6]:PORT`` → (host, port), the host without brackets; ValueError
    says what is wrong."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError("unclosed '[' in IPv6 address")
        host, rest = text[1:end], text[end + 1 :]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{host!r} is not an IPv6 address") from None
        if not rest.startswith(":"):
            raise ValueError("expected :PORT after the address")
        port_text = rest[1:]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            raise ValueError("expected HOST:PORT")
        if ":" in host:
            raise ValueError("an IPv6 address must be written in brackets, as [::1]:5060")
        if not host:
            raise ValueError("empty host")
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            if not _HOSTNAME.match(host) or host.replace(".", "").isdigit():
                raise ValueError(f"{host!r} is not an IPv4 address or host name") from None
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f'port "{port_text}" is not a number from 0 to 65535')
    return host, int(port_text)


def parse_listen(text: str | ListenAddress) -> ListenAddress:
    """``udp:HOST:PORT`` / ``tcp:HOST:PORT`` → ListenAddress; ValueError with the problem otherwise.
    A ListenAddress (what ``Config.sip.listen`` holds) is returned as it is."""
    if isinstance(text, ListenAddress):
        return text
    transport, sep, rest = text.partition(":")
    if not sep or transport not in ("udp", "tcp"):
        raise ValueError(f'"{text}" does not start with "udp:" or "tcp:"')
    try:
        host, port = parse_host_port(rest)
    except ValueError as exc:
        raise ValueError(f'"{text}": {exc}') from None
    return ListenAddress(transport, host, port)


class NodeConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """[node]: this node's name, where it keeps its data, how much it logs."""

    name: str = "switchcore"
    # Relative paths are taken from the directory the node is started in.
    data_dir: str = "./switchcore-data"
    log_level: LogLevel = "info"


class SipTimers(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """[sip.timers]: RFC 3261 §17.1.1.1 T1 (RTT estimate), T2 (max non-INVITE retransmit
    interval) and T4 (max time a message stays in the network), in seconds."""

    t1: Seconds = 0.5
    t2: Seconds = 4.0
    t4: Seconds = 5.0


def _default_listen() -> tuple[ListenAddress, ...]:
    return (ListenAddress("udp", "127.0.0.1", 5060), ListenAddress("tcp", "127.0.0.1", 5060))


class SipConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """[sip]: sockets, message size limit, the name we give ourselves, the digest realm."""

    listen: tuple[ListenAddress, ...] = msgspec.field(default_factory=_default_listen)
    # RFC 3261 §18.1.1 / §21.5.14: a message larger than this is answered 513.
    max_message_size: Annotated[int, msgspec.Meta(ge=1024, le=16 * 1024 * 1024)] = 65536
    user_agent: str = "Switchcore/0.1.0"
    realm: str = "switchcore"
    timers: SipTimers = msgspec.field(default_factory=SipTimers)


class RegistrarConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """[registrar]: binding lifetimes (RFC 3261 §10.3) and digest settings (RFC 7616, RFC 8760)."""

    min_expires: PositiveInt = 60
    max_expires: PositiveInt = 3600
    default_expires: PositiveInt = 3600
    # How long a nonce we issued stays usable; older answers get 401 with stale=true.
    nonce_ttl: Seconds = 300.0
    # Offered in this order, one WWW-Authenticate each (RFC 8760 §2.4: preferred first).
    algorithms: tuple[Literal["SHA-256", "MD5"], ...] = DIGEST_ALGORITHMS
    # Domains whose AORs this registrar holds (RFC 3261 §10.3 step 1); empty: any domain.
    domains: tuple[str, ...] = ()


class LimitsConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """[limits]: hard caps that keep a flood from eating the node's memory."""

    max_transactions: PositiveInt = 100000
    # Calls (channels) up at once on this node; past it a new call is refused 503 with
    # Retry-After and counted as refused (call loss).
    max_calls: PositiveInt = 1000


class MediaConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """[media]: where the switch anchors RTP (RFC 3264 answers carry this address and a port of
    the range) and the codecs it offers and accepts, by RTP/AVP encoding name (RFC 3551 §6)."""

    address: str = "127.0.0.1"
    # Each leg takes an even RTP port and the odd one above it for RTCP (RFC 3550 §11).
    rtp_port_min: Annotated[int, msgspec.Meta(ge=1024, le=65534)] = 20000
    rtp_port_max: Annotated[int, msgspec.Meta(ge=1025, le=65535)] = 30000
    codecs: tuple[str, ...] = ("PCMU", "PCMA", "telephone-event")


class Trunk(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """[[trunks]]: a SIP peer (carrier or PBX) calls go to and come from."""

    name: str
    # Where calls to the trunk are sent: HOST:PORT ([IPv6]:PORT).
    address: str
    # Source addresses or CIDR blocks whose INVITEs count as this trunk's; empty: the host of
    # ``address`` only.
    allowed: tuple[str, ...] = ()
    # Digest credentials for the trunk's challenges to our INVITEs (RFC 3261 §22.2).
    username: str | None = None
    password: str | None = None
    # Codecs on this trunk; none given: media.codecs.
    codecs: tuple[str, ...] | None = None
    # Calls up at once through this trunk, both ways; none given: no limit but limits.max_calls.
    channels: PositiveInt | None = None


# What a route can send a call to; ivr and queue are accepted before those layers exist.
ROUTE_TARGETS = ("user", "trunk", "ivr", "queue")


class Route(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """[[routes]]: which dialled numbers (the Request-URI's user part) go where. The first route
    that matches, in file order, wins."""

    name: str
    pattern: str
    # "user:NAME", "trunk:NAME", "ivr:NAME" or "queue:NAME".
    target: str
    match: Literal["exact", "prefix", "regex"] = "prefix"
    # Only calls from this source: a trunk's name, or "users" (a registered user's phone).
    source: str | None = msgspec.field(default=None, name="from")
    # The number sent on: ``strip`` leading characters removed, then ``prepend`` put in front.
    strip: Annotated[int, msgspec.Meta(ge=0)] = 0
    prepend: str = ""

    @property
    def target_kind(self) -> str:
        return self.target.partition(":")[0]

    @property
    def target_name(self) -> str:
        return self.target.partition(":")[2]


class CallsConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """[calls]: how long a call may ring and last, in seconds."""

    # No answer within this: the caller gets 480 and the callee a CANCEL.
    ring_timeout: Seconds = 60.0
    # An answered call is hung up (BYE both ways) after this.
    max_duration: Seconds = 4 * 3600.0


class User(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """[[users]]: someone who may register (an agent's phone). Give ``password``, or the HA1 of
    each algorithm in registrar.algorithms computed as H(name:realm:password) with sip.realm."""

    name: str
    password: str | None = None
    ha1_md5: str | None = None
    ha1_sha256: str | None = None
    display_name: str | None = None

    def ha1(self, algorithm: str) -> str | None:
        """The stored HA1 for ``algorithm`` ("MD5" / "SHA-256"), lower-case hex, or None."""
        value = getattr(self, _HA1_FIELDS[algorithm][0])
        return value.lower() if value is not None else None


class Config(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The whole file. A new section is a new field here with a default."""

    node: NodeConfig = msgspec.field(default_factory=NodeConfig)
    sip: SipConfig = msgspec.field(default_factory=SipConfig)
    registrar: RegistrarConfig = msgspec.field(default_factory=RegistrarConfig)
    limits: LimitsConfig = msgspec.field(default_factory=LimitsConfig)
    media: MediaConfig = msgspec.field(default_factory=MediaConfig)
    calls: CallsConfig = msgspec.field(default_factory=CallsConfig)
    users: tuple[User, ...] = ()
    trunks: tuple[Trunk, ...] = ()
    routes: tuple[Route, ...] = ()

    def user(self, name: str) -> User | None:
        for user in self.users:
            if user.name == name:
                return user
        return None

    def trunk(self, name: str) -> Trunk | None:
        for trunk in self.trunks:
            if trunk.name == name:
                return trunk
        return None


# --- the walker: TOML values against the Structs' type info ------------------------------


def _describe(value: Any) -> str:
    """A TOML value as the operator wrote it, for "got ..." in a message."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return msgspec.json.encode(value).decode()
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return f"a {type(value).__name__} value"  # datetime, date, time


class _Missing(Exception):
    """A rule read a key whose value already failed to decode: that rule is skipped."""


class _Partial:
    """A table that failed to decode: the keys that did decode (or their defaults) are readable,
    the failed ones raise _Missing, so the cross-key rules still check what they can."""

    def __init__(self, cls: type, values: dict[str, Any], failed: set[str]):
        self._cls, self._values, self._failed = cls, values, failed

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if name in self._failed or name not in self._values:
            raise _Missing(name)
        return self._values[name]

    def ha1(self, algorithm: str) -> str | None:  # the one method the rules call on a User
        value = getattr(self, _HA1_FIELDS[algorithm][0])
        return value.lower() if value is not None else None


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


class _Decoder:
    """Walks a decoded TOML document against a Struct type, collecting every error."""

    def __init__(self) -> None:
        self.errors: list[tuple[str, str]] = []  # (key path, problem)

    def error(self, path: str, problem: str) -> None:
        self.errors.append((path, problem))

    def convert(self, value: Any, t: mi.Type, path: str) -> Any:
        """The value converted to ``t``, or None after recording an error."""
        if isinstance(t, (mi.StructType, mi.NamedTupleType)):
            if hasattr(t.cls, "from_text"):
                if not isinstance(value, str):
                    return self.error(path, f"expected a string, got {_describe(value)}")
                try:
                    return t.cls.from_text(value)
                except ValueError as exc:
                    self.error(path, str(exc))
                    return None
            if isinstance(t, mi.StructType):
                return self.struct(value, t, path)
        if isinstance(t, mi.UnionType):
            if value is None:
                return None
            (inner,) = [m for m in t.types if not isinstance(m, mi.NoneType)]
            return self.convert(value, inner, path)
        if isinstance(t, mi.StrType):
            if not isinstance(value, str):
                return self.error(path, f"expected a string, got {_describe(value)}")
            return value
        if isinstance(t, mi.BoolType):
            if not isinstance(value, bool):
                return self.error(path, f"expected true or false, got {_describe(value)}")
            return value
        if isinstance(t, mi.IntType):
            if isinstance(value, bool) or not isinstance(value, int):
                return self.error(path, f"expected an integer, got {_describe(value)}")
            return value if self.bounds(value, t, path) else None
        if isinstance(t, mi.FloatType):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return self.error(path, f"expected a number, got {_describe(value)}")
            return float(value) if self.bounds(value, t, path) else None
        if isinstance(t, mi.LiteralType):
            if value not in t.values or type(value) is not type(t.values[0]):
                choices = ", ".join(_describe(v) for v in t.values)
                return self.error(path, f"expected one of {choices}, got {_describe(value)}")
            return value
        if isinstance(t, (mi.VarTupleType, mi.ListType)):
            if not isinstance(value, list):
                return self.error(path, f"expected an array, got {_describe(value)}")
            items = [self.convert(item, t.item_type, f"{path}[{i}]") for i, item in enumerate(value)]
            return tuple(items) if isinstance(t, mi.VarTupleType) else items
        raise TypeError(f"config schema uses a type the decoder does not handle: {t!r}")

    def bounds(self, value: float, t: mi.IntType | mi.FloatType, path: str) -> bool:
        for limit, ok, words in (
            (t.ge, lambda v, lim: v >= lim, "at least"),
            (t.gt, lambda v, lim: v > lim, "greater than"),
            (t.le, lambda v, lim: v <= lim, "at most"),
            (t.lt, lambda v, lim: v < lim, "less than"),
        ):
            if limit is not None and not ok(value, limit):
                self.error(path, f"must be {words} {limit}, got {_describe(value)}")
                return False
        return True

    def struct(self, value: Any, t: mi.StructType, path: str) -> Any:
        if not isinstance(value, dict):
            return self.error(path, f"expected a table, got {_describe(value)}")
        fields = {f.encode_name: f for f in t.fields}
        kwargs: dict[str, Any] = {}
        failed: set[str] = set()
        incomplete = False
        for key, item in value.items():
            field = fields.get(key)
            if field is None:
                close = difflib.get_close_matches(key, fields, n=1)
                hint = f' (did you mean "{close[0]}"?)' if close else ""
                self.error(_join(path, key), f"unknown key{hint}")
                incomplete = True
                continue
            before = len(self.errors)
            converted = self.convert(item, field.type, _join(path, key))
            if len(self.errors) > before:
                incomplete = True
                # A table or array that partly decoded is kept for the rules; a value is not.
                if isinstance(converted, (_Partial, tuple, list)):
                    kwargs[field.name] = converted
                else:
                    failed.add(field.name)
            else:
                kwargs[field.name] = converted
        for field in t.fields:
            if field.required and field.encode_name not in value:
                self.error(_join(path, field.encode_name), "missing (this key is required)")
                failed.add(field.name)
                incomplete = True
        if incomplete:
            # Keep what decoded so the cross-key rules can still report their problems.
            for field in t.fields:
                if field.name not in kwargs and field.name not in failed:
                    if field.default is not msgspec.NODEFAULT:
                        kwargs[field.name] = field.default
                    elif field.default_factory is not msgspec.NODEFAULT:
                        kwargs[field.name] = field.default_factory()
            return _Partial(t.cls, kwargs, failed)
        return t.cls(**kwargs)


# --- rules that span keys -----------------------------------------------------------------

# RFC 3261 §25.1 user characters (unreserved / user-unreserved), without escapes: a name is
# compared with the To header's user part after unescaping.
_USER_NAME = re.compile(r"^[A-Za-z0-9_.!~*'()&=+$,;?/-]+$")
_HEX = re.compile(r"^[0-9a-fA-F]+$")


def _has_control_or_quote(text: str) -> bool:
    return any(ord(c) < 0x20 or c in '"\\\x7f' for c in text)


Report = Callable[[str, str], None]


def _rule_listen(config: Config, error: Report) -> None:
    listen = config.sip.listen
    if not listen:
        error("sip.listen", "needs at least one address")
    seen: dict[ListenAddress, int] = {}
    for i, addr in enumerate(listen):
        if addr is None:  # already reported
            continue
        if addr in seen:
            error(f"sip.listen[{i}]", f'"{addr}" repeats sip.listen[{seen[addr]}]')
        seen.setdefault(addr, i)


def _rule_realm(config: Config, error: Report) -> None:
    realm = config.sip.realm
    if not realm or _has_control_or_quote(realm):
        # It goes inside a quoted-string in WWW-Authenticate (RFC 7616 §3.3).
        error("sip.realm", "must be non-empty text without quotes, backslashes or control characters")


def _rule_user_agent(config: Config, error: Report) -> None:
    if any(ord(c) < 0x20 or c == "\x7f" for c in config.sip.user_agent):
        error("sip.user_agent", "must not contain control characters (it becomes a header line)")


def _rule_timers(config: Config, error: Report) -> None:
    t1, t2 = config.sip.timers.t1, config.sip.timers.t2
    if t1 > t2:
        error("sip.timers.t1", f"must not exceed sip.timers.t2 ({t1:g} > {t2:g})")


def _rule_expires(config: Config, error: Report) -> None:
    reg = config.registrar
    low, high, default = reg.min_expires, reg.max_expires, reg.default_expires
    if low > high:
        error("registrar.min_expires", f"must not exceed registrar.max_expires ({low} > {high})")
    elif not low <= default <= high:
        error(
            "registrar.default_expires",
            f"must lie between registrar.min_expires ({low}) and registrar.max_expires ({high}), got {default}",
        )


def _rule_algorithms(config: Config, error: Report) -> None:
    algorithms = config.registrar.algorithms
    if not algorithms:
        error("registrar.algorithms", "needs at least one algorithm")
    for i, alg in enumerate(algorithms):
        if alg is not None and alg in algorithms[:i]:
            error(f"registrar.algorithms[{i}]", f'"{alg}" is listed twice')


def _rule_domains(config: Config, error: Report) -> None:
    for i, domain in enumerate(config.registrar.domains):
        if domain is not None and (not domain or any(c.isspace() or c in "@:;<>" for c in domain)):
            error(f"registrar.domains[{i}]", f"{_describe(domain)} is not a domain name")


def _rule_users(config: Config, error: Report) -> None:
    first: dict[str, int] = {}
    for i, user in enumerate(config.users):
        if user is None:
            continue
        for rule in (_rule_user_name, _rule_user_secret, _rule_user_display):
            try:
                rule(config, user, f"users[{i}]", error, first, i)
            except _Missing:
                pass


def _rule_user_name(config: Config, user: User, here: str, error: Report, first: dict[str, int], i: int) -> None:
    if not _USER_NAME.match(user.name) or len(user.name) > 128:
        error(f"{here}.name", f"{_describe(user.name)} is not a SIP user name (up to 128 of A-Z a-z 0-9 -_.!~*'()&=+$,;?/)")
    elif user.name in first:
        error(f"{here}.name", f'duplicate user "{user.name}" (first at users[{first[user.name]}])')
    first.setdefault(user.name, i)


def _rule_user_secret(config: Config, user: User, here: str, error: Report, first: dict[str, int], i: int) -> None:
    ha1_given = [alg for alg in DIGEST_ALGORITHMS if user.ha1(alg) is not None]
    for alg in ha1_given:
        key, digits = _HA1_FIELDS[alg]
        value = getattr(user, key)
        if len(value) != digits or not _HEX.match(value):
            error(f"{here}.{key}", f"expected {digits} hexadecimal digits, got {_describe(value)}")
    if user.password is None and not ha1_given:
        error(here, "needs a password, or ha1_md5 / ha1_sha256")
    elif user.password is not None and ha1_given:
        error(here, "give either a password or HA1 values, not both")
    elif user.password is None:
        # Every challenge offers every configured algorithm (the same 401 for everyone), so a
        # user must be able to answer each of them.
        for alg in config.registrar.algorithms:
            if alg is not None and user.ha1(alg) is None:
                error(here, f'needs {_HA1_FIELDS[alg][0]} (registrar.algorithms offers "{alg}") or a password')


def _rule_user_display(config: Config, user: User, here: str, error: Report, first: dict[str, int], i: int) -> None:
    if user.display_name is not None and _has_control_or_quote(user.display_name):
        error(f"{here}.display_name", "must not contain quotes, backslashes or control characters")


def _rule_media(config: Config, error: Report) -> None:
    media = config.media
    try:
        ipaddress.ip_address(media.address)
    except ValueError:
        error("media.address", f"{_describe(media.address)} is not an IP address (SDP c= lines carry it)")
    _check_codecs(media.codecs, "media.codecs", error)
    low, high = media.rtp_port_min, media.rtp_port_max
    if low % 2:
        error("media.rtp_port_min", f"must be even (RTP takes even ports, RTCP the odd one above: RFC 3550 §11), got {low}")
    if high - low < 3:
        error("media.rtp_port_min", f"must leave room for at least one call (two port pairs) below media.rtp_port_max ({low}, {high})")


def _check_codecs(codecs: tuple[str, ...], here: str, error: Report) -> None:
    if not codecs:
        error(here, "needs at least one codec")
    seen: dict[str, int] = {}
    for i, codec in enumerate(codecs):
        if codec is None:
            continue
        if not codec or any(c.isspace() or c == "/" for c in codec):
            error(f"{here}[{i}]", f"{_describe(codec)} is not an encoding name (as PCMU, PCMA, telephone-event)")
        elif codec.lower() in seen:
            error(f"{here}[{i}]", f'"{codec}" is listed twice')
        seen.setdefault(codec.lower(), i)


def _rule_trunks(config: Config, error: Report) -> None:
    first: dict[str, int] = {}
    for i, trunk in enumerate(config.trunks):
        if trunk is None:
            continue
        here = f"trunks[{i}]"
        for check in (_trunk_name, _trunk_address, _trunk_allowed, _trunk_auth, _trunk_codecs):
            try:
                check(trunk, here, error, first, i)
            except _Missing:
                pass


def _trunk_name(trunk: Trunk, here: str, error: Report, first: dict[str, int], i: int) -> None:
    if not re.match(r"^[A-Za-z0-9_.-]{1,64}$", trunk.name):
        error(f"{here}.name", f"{_describe(trunk.name)} is not a name (up to 64 of A-Z a-z 0-9 _ . -)")
    elif trunk.name in first:
        error(f"{here}.name", f'duplicate trunk "{trunk.name}" (first at trunks[{first[trunk.name]}])')
    first.setdefault(trunk.name, i)


def _trunk_address(trunk: Trunk, here: str, error: Report, first: dict[str, int], i: int) -> None:
    try:
        parse_host_port(trunk.address)
    except ValueError as exc:
        error(f"{here}.address", f"{_describe(trunk.address)}: {exc}")


def _trunk_allowed(trunk: Trunk, here: str, error: Report, first: dict[str, int], i: int) -> None:
    for j, source in enumerate(trunk.allowed):
        if source is None:
            continue
        try:
            ipaddress.ip_network(source, strict=False)
        except ValueError:
            error(f"{here}.allowed[{j}]", f"{_describe(source)} is not an IP address or CIDR block")


def _trunk_auth(trunk: Trunk, here: str, error: Report, first: dict[str, int], i: int) -> None:
    if (trunk.username is None) != (trunk.password is None):
        error(here, "give both username and password for the trunk's digest challenges, or neither")
    for key in ("username", "password"):
        value = getattr(trunk, key)
        if value is not None and (not value or _has_control_or_quote(value)):
            error(f"{here}.{key}", "must be non-empty text without quotes, backslashes or control characters")


def _trunk_codecs(trunk: Trunk, here: str, error: Report, first: dict[str, int], i: int) -> None:
    if trunk.codecs is not None:
        _check_codecs(trunk.codecs, f"{here}.codecs", error)


def _rule_routes(config: Config, error: Report) -> None:
    first: dict[str, int] = {}
    for i, route in enumerate(config.routes):
        if route is None:
            continue
        here = f"routes[{i}]"
        for check in (_route_name, _route_pattern, _route_target, _route_source, _route_prepend):
            try:
                check(config, route, here, error, first, i)
            except _Missing:
                pass


def _route_name(config: Config, route: Route, here: str, error: Report, first: dict[str, int], i: int) -> None:
    if not route.name:
        error(f"{here}.name", "must not be empty")
    elif route.name in first:
        error(f"{here}.name", f'duplicate route "{route.name}" (first at routes[{first[route.name]}])')
    first.setdefault(route.name, i)


def _route_pattern(config: Config, route: Route, here: str, error: Report, first: dict[str, int], i: int) -> None:
    if route.match == "regex":
        try:
            re.compile(route.pattern)
        except re.error as exc:
            error(f"{here}.pattern", f"not a regular expression: {exc}")
    elif not route.pattern and route.match == "exact":
        error(f"{here}.pattern", "an exact route needs a number to match")


def _route_target(config: Config, route: Route, here: str, error: Report, first: dict[str, int], i: int) -> None:
    kind, sep, name = route.target.partition(":")
    if not sep or kind not in ROUTE_TARGETS or not name:
        choices = ", ".join(f'"{k}:NAME"' for k in ROUTE_TARGETS)
        error(f"{here}.target", f"expected one of {choices}, got {_describe(route.target)}")
    elif kind == "user" and config.user(name) is None:
        error(f"{here}.target", f'no user "{name}" in [[users]]')
    elif kind == "trunk" and config.trunk(name) is None:
        error(f"{here}.target", f'no trunk "{name}" in [[trunks]]')


def _route_source(config: Config, route: Route, here: str, error: Report, first: dict[str, int], i: int) -> None:
    if route.source is not None and route.source != "users" and config.trunk(route.source) is None:
        error(f"{here}.from", f'expected "users" or the name of a trunk in [[trunks]], got {_describe(route.source)}')


def _route_prepend(config: Config, route: Route, here: str, error: Report, first: dict[str, int], i: int) -> None:
    if route.prepend and not _USER_NAME.match(route.prepend):
        error(f"{here}.prepend", f"{_describe(route.prepend)} cannot go in a SIP user part")


# The rules that span keys, each skipped when a key it reads failed to decode. A new section
# adds its own here.
_RULES: tuple[Callable[[Config, Report], None], ...] = (
    _rule_listen,
    _rule_realm,
    _rule_user_agent,
    _rule_timers,
    _rule_expires,
    _rule_algorithms,
    _rule_domains,
    _rule_users,
    _rule_media,
    _rule_trunks,
    _rule_routes,
)

_TOML_POSITION = re.compile(r"^(?P<problem>.*?) \((?:at line (?P<line>\d+), column (?P<col>\d+)|at end of document)\)$")


def decode_config(data: bytes, filename: str) -> Config:
    """The Config in ``data`` (a TOML document); ConfigError listing every problem otherwise."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{filename}: byte {exc.start}: not UTF-8 text"]) from None
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([_toml_error_line(filename, str(exc), text)]) from None
    return _build(document, filename)


def _toml_error_line(filename: str, message: str, text: str) -> str:
    match = _TOML_POSITION.match(message)
    if match is None:
        return f"{filename}: {message}"
    if match["line"] is None:
        where = f"line {max(1, len(text.splitlines()))} (end of file)"
    else:
        where = f"line {match['line']}, column {match['col']}"
    return f"{filename}: {where}: {match['problem']}"


@functools.cache
def _schema() -> mi.StructType:
    return mi.type_info(Config)


def _build(document: dict[str, Any], filename: str) -> Config:
    decoder = _Decoder()
    config = decoder.struct(document, _schema(), "")
    errors = decoder.errors
    for rule in _RULES:
        try:
            rule(config, lambda path, problem: errors.append((path, problem)))
        except _Missing:
            pass
    if errors:
        raise ConfigError([f"{filename}: {path}: {problem}" if path else f"{filename}: {problem}" for path, problem in errors])
    return config


def default_config() -> Config:
    """The embedded defaults: what a node runs with when given no file."""
    return _build({}, "<defaults>")
