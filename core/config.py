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

from core.scheduler.campaign import CampaignConfig, campaign_problems

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
    "Menu",
    "AgentConfig",
    "QueueConfig",
    "QueueAgent",
    "QueueGroup",
    "AcdConfig",
    "CALL_TARGETS",
    "HANGUP",
    "parse_prompt",
    "parse_target",
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
    """[node]: this node's name, where it keeps its data, how much it logs, how its records commit."""

    name: str = "switchcore"
    # Relative paths are taken from the directory the node is started in.
    data_dir: str = "./switchcore-data"
    log_level: LogLevel = "info"
    # The longest the records writer gathers call records before one commit (seconds).
    commit_delay: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.01


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
    # Released port pairs the media engine keeps open and bound for the next call given the same
    # ports (two file descriptors each); 0: every call's sockets are opened and closed with it.
    spare_port_pairs: Annotated[int, msgspec.Meta(ge=0)] = 4096


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


# What a route can send a call to.
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
    """[calls]: how long a call may ring and last, in seconds; whether answered calls are recorded."""

    # No answer within this: the caller gets 480 and the callee a CANCEL.
    ring_timeout: Seconds = 60.0
    # An answered call is hung up (BYE both ways) after this.
    max_duration: Seconds = 4 * 3600.0
    # Record every answered call: a stereo WAV (left the caller, right the callee) named in its record.
    record: bool = False
    # Where recordings go, relative to node.data_dir (each in YYYY/MM/DD/ by UTC date).
    recordings_dir: str = "recordings"


def _rule_calls(config: Config, error: Report) -> None:
    # The record names a recording by its path inside the data folder: the folder must stay inside it.
    path = config.calls.recordings_dir
    norm = path.replace("\\", "/")
    if not norm.strip() or norm.startswith(("/", "~")) or ".." in norm.split("/") or any(ord(c) < 0x20 for c in path):
        error("calls.recordings_dir", f'must be a folder inside node.data_dir (relative, no ".."), got "{path}"')


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


# --- IVR menus, agents, queues -------------------------------------------------------------------

# Where an IVR choice or a queue exit sends a call: a registered user, a trunk (optionally with the
# number to send, "trunk:NAME/NUMBER"), a queue (optionally with the caller's priority,
# "queue:NAME/PRIORITY": a VIP choice), another menu, a message then the end of the call
# ("prompt:PROMPT"), or the end of the call.
CALL_TARGETS = ("user", "trunk", "queue", "ivr")
HANGUP = "hangup"
# Built-in prompts (core/media/prompts.py); anything else is "tone:F1[+F2][/SECONDS]" or a WAV file.
BUILTIN_PROMPTS = ("ringback", "busy", "beep", "silence")


class Menu(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """[[ivr]]: an IVR menu. The switch answers, plays ``prompt`` and collects up to ``max_digits``
    DTMF digits (RFC 4733 events or SIP INFO), ended early by ``terminator``; ``choices`` maps the
    digits to a target. No digit within ``timeout`` seconds of the prompt's end, or digits that
    match no choice, replay the prompt (``invalid_prompt`` first for a wrong choice) up to
    ``retries`` times, then the call goes to ``on_timeout`` (or ``on_invalid``)."""

    name: str
    prompt: str
    choices: dict[str, str] = {}
    max_digits: Annotated[int, msgspec.Meta(ge=1, le=32)] = 1
    terminator: str = "#"
    timeout: Seconds = 5.0
    inter_digit: Seconds = 3.0
    retries: Annotated[int, msgspec.Meta(ge=0, le=10)] = 2
    invalid_prompt: str | None = None
    on_timeout: str = HANGUP
    on_invalid: str | None = None


class QueueAgent(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """[[queues.agents]]: an agent serving the queue at ``level`` (1 first) and ``position``."""

    agent: str
    level: Annotated[int, msgspec.Meta(ge=1, le=8)] = 1
    position: Annotated[int, msgspec.Meta(ge=1)] = 1


class QueueGroup(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """[[queues.groups]]: every agent of ``group`` serves the queue at ``level``."""

    group: str
    level: Annotated[int, msgspec.Meta(ge=1, le=8)] = 1
    position: Annotated[int, msgspec.Meta(ge=1)] = 1


NonNegative = Annotated[float, msgspec.Meta(ge=0)]
EmptyRule = Literal["never", "no_agents", "no_available"]
Strategy = Literal["longest_idle_agent", "round_robin", "fewest_calls", "least_talk_time", "ring_all",
                   "linear", "random", "skills"]


class AgentConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """[[agents]]: a person who answers queued calls on the phones of ``phones`` (names of
    [[users]]). ``status`` is the agent's status when the node starts: "available" for an agent
    always logged in, "logged_out" for one who logs in with the login feature code."""

    id: str
    name: str = ""
    phones: tuple[str, ...] = ()
    skills: dict[str, int] = {}
    groups: tuple[str, ...] = ()
    status: Literal["logged_out", "available"] = "logged_out"
    wrap_up: NonNegative | None = None
    max_no_answer: Annotated[int, msgspec.Meta(ge=0)] = 3
    no_answer_delay: NonNegative = 5.0


class QueueConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """[[queues]]: callers waiting for agents (core/acd: the strategies, tiers and rules). While
    waiting a caller hears ``music`` (a prompt, looped); ``max_wait`` and the empty rules send the
    caller to ``on_exit``; ``exit_key`` pressed while waiting sends it to ``exit_target``. Callers
    whose number is in ``vip_callers`` or who come in on a trunk of ``vip_trunks`` join with
    priority ``vip``."""

    name: str
    strategy: Strategy = "longest_idle_agent"
    agents: tuple[QueueAgent, ...] = ()
    groups: tuple[QueueGroup, ...] = ()
    tier_wait: NonNegative = 0.0
    level_waits: dict[int, float] = {}
    vip_priority: int | None = None
    skill: str | None = None
    min_skill_level: int = 1
    ring_timeout: Seconds = 20.0
    wrap_up: NonNegative = 0.0
    max_wait: NonNegative = 0.0
    join_empty: EmptyRule = "never"
    leave_when_empty: EmptyRule = "never"
    service_level: Seconds = 20.0
    short_abandon: NonNegative = 5.0
    music: str = "ringback"
    # Every announce_every seconds (0: never) a waiting caller hears the prompts of announce in
    # turn, then the music again; "{position}" (1: next to be served) and "{minutes}" (the expected
    # wait, rounded up) in a prompt's name are replaced by the numbers.
    announce_every: NonNegative = 0.0
    announce: tuple[str, ...] = ()
    on_exit: str = HANGUP
    exit_key: str | None = None
    exit_target: str = HANGUP
    vip_callers: tuple[str, ...] = ()
    vip_trunks: tuple[str, ...] = ()
    vip: int = 10


class AcdConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """[acd]: the feature codes an agent dials from a phone to change its status, and the reasons
    a break may be given (dial the break code, then the reason's number: "*63" is the first
    reason, "*632" the second); and the code that gives the agent's last campaign call a
    disposition ("*651" the first of ``dispositions``; "callback" and "dnc" mean what the campaign
    makes of them: a call back after its retry delay, the number on the do-not-call list)."""

    login: str = "*61"
    logout: str = "*62"
    pause: str = "*63"
    available: str = "*64"
    break_reasons: tuple[str, ...] = ("break", "lunch", "meeting", "training")
    disposition: str = "*65"
    dispositions: tuple[str, ...] = ("callback", "dnc", "sale", "no_sale")
    # Seed of the random strategy (reproducible runs).
    seed: int = 0


class ControlConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """[control]: the node's control API (HTTP and JSON: campaigns started, paused, resumed and
    stopped, numbers put on the do-not-call list, agents' status and the preview they are shown).
    Off unless ``listen`` names an address; anywhere but loopback it needs a ``token``, sent as
    "Authorization: Bearer TOKEN"."""

    listen: str = ""  # HOST:PORT, "" = no control API
    token: str = ""


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
    ivr: tuple[Menu, ...] = ()
    agents: tuple[AgentConfig, ...] = ()
    queues: tuple[QueueConfig, ...] = ()
    acd: AcdConfig = msgspec.field(default_factory=AcdConfig)
    campaigns: tuple[CampaignConfig, ...] = ()
    control: ControlConfig = msgspec.field(default_factory=ControlConfig)

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

    def menu(self, name: str) -> Menu | None:
        return next((m for m in self.ivr if m is not None and m.name == name), None)

    def queue(self, name: str) -> QueueConfig | None:
        return next((q for q in self.queues if q is not None and q.name == name), None)

    def agent(self, agent_id: str) -> AgentConfig | None:
        return next((a for a in self.agents if a is not None and a.id == agent_id), None)


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


_KIND_NAMES = {mi.StrType: "a string", mi.FloatType: "a number", mi.IntType: "an integer",
               mi.BoolType: "true or false", mi.StructType: "a table", mi.DictType: "a table",
               mi.VarTupleType: "an array", mi.ListType: "an array", mi.LiteralType: "a string"}


def _fits(value: Any, t: mi.Type) -> bool:
    """Whether a TOML value is of the kind a union member asks (its bounds are checked after)."""
    if isinstance(t, (mi.StrType, mi.LiteralType)):
        return isinstance(value, str)
    if isinstance(t, (mi.FloatType, mi.IntType)):
        return isinstance(value, (int, float)) and not isinstance(value, bool) and (
            isinstance(t, mi.FloatType) or isinstance(value, int))
    if isinstance(t, mi.BoolType):
        return isinstance(value, bool)
    if isinstance(t, (mi.StructType, mi.DictType)):
        return isinstance(value, dict)
    if isinstance(t, (mi.VarTupleType, mi.ListType)):
        return isinstance(value, list)
    return False


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
            inner = [m for m in t.types if not isinstance(m, mi.NoneType)]
            if len(inner) == 1:
                return self.convert(value, inner[0], path)
            # "str | float" and the like: the member whose kind the TOML value has.
            for member in inner:
                if _fits(value, member):
                    return self.convert(value, member, path)
            kinds = " or ".join(_KIND_NAMES.get(type(m), "a value") for m in inner)
            return self.error(path, f"expected {kinds}, got {_describe(value)}")
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
        if isinstance(t, mi.DictType):
            if not isinstance(value, dict):
                return self.error(path, f"expected a table, got {_describe(value)}")
            out = {}
            for key, item in value.items():
                k = self.convert(key, t.key_type, _join(path, key)) if not isinstance(t.key_type, mi.IntType) \
                    else self._int_key(key, _join(path, key))
                v = self.convert(item, t.value_type, _join(path, key))
                if k is not None and v is not None:
                    out[k] = v
            return out
        if isinstance(t, (mi.VarTupleType, mi.ListType)):
            if not isinstance(value, list):
                return self.error(path, f"expected an array, got {_describe(value)}")
            items = [self.convert(item, t.item_type, f"{path}[{i}]") for i, item in enumerate(value)]
            return tuple(items) if isinstance(t, mi.VarTupleType) else items
        raise TypeError(f"config schema uses a type the decoder does not handle: {t!r}")

    def _int_key(self, key: str, path: str) -> int | None:
        """A table key that names a number (TOML keys are strings: ``level_waits = { 2 = 30 }``)."""
        try:
            return int(key)
        except ValueError:
            return self.error(path, f"expected a whole number as the key, got {_describe(key)}")

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
    elif kind == "ivr" and config.menu(name) is None:
        error(f"{here}.target", f'no menu "{name}" in [[ivr]]')
    elif kind == "queue" and config.queue(name) is None:
        error(f"{here}.target", f'no queue "{name}" in [[queues]]')


def _route_source(config: Config, route: Route, here: str, error: Report, first: dict[str, int], i: int) -> None:
    if route.source is not None and route.source != "users" and config.trunk(route.source) is None:
        error(f"{here}.from", f'expected "users" or the name of a trunk in [[trunks]], got {_describe(route.source)}')


def _route_prepend(config: Config, route: Route, here: str, error: Report, first: dict[str, int], i: int) -> None:
    if route.prepend and not _USER_NAME.match(route.prepend):
        error(f"{here}.prepend", f"{_describe(route.prepend)} cannot go in a SIP user part")


_TONE = re.compile(r"^tone:(?P<freqs>\d+(?:\.\d+)?(?:\+\d+(?:\.\d+)?)*)(?:/(?P<seconds>\d+(?:\.\d+)?))?$")
_DTMF_DIGITS = re.compile(r"^[0-9*#A-D]+$")


def parse_prompt(text: str) -> tuple[str, Any]:
    """A prompt as the config names it: ("builtin", name), ("tone", (freqs, seconds)) or ("file", path).
    Raises ValueError naming the problem."""
    if text in BUILTIN_PROMPTS:
        return "builtin", text
    match = _TONE.match(text)
    if match:
        freqs = tuple(float(f) for f in match["freqs"].split("+"))
        seconds = float(match["seconds"]) if match["seconds"] else 1.0
        if not all(0 < f < 4000 for f in freqs) or not 0 < seconds <= 60:
            raise ValueError("a tone needs frequencies under 4000 Hz and 0-60 seconds")
        return "tone", (freqs, seconds)
    if text.startswith("tone:"):
        raise ValueError(f'expected "tone:F1[+F2][/SECONDS]", got {_describe(text)}')
    if not text.lower().endswith(".wav"):
        choices = ", ".join(BUILTIN_PROMPTS)
        raise ValueError(f"expected one of {choices}, \"tone:F1[+F2][/SECONDS]\" or a .wav file, got {_describe(text)}")
    return "file", text


def parse_target(text: str) -> tuple[str, str, str]:
    """A call target: (kind, name, number) — ("hangup", "", ""), ("trunk", "carrier", "+4420...") or
    ("prompt", "busy", ""): play the prompt, then hang up."""
    if text == HANGUP:
        return HANGUP, "", ""
    if text.startswith("prompt:"):
        return "prompt", text[len("prompt:"):], ""
    kind, sep, rest = text.partition(":")
    name, _, number = rest.partition("/")
    if not sep or kind not in CALL_TARGETS or not name:
        raise ValueError
    return kind, name, number


def _check_target(config: Config, text: str, path: str, error: Report) -> None:
    try:
        kind, name, number = parse_target(text)
    except ValueError:
        choices = ", ".join(f'"{k}:NAME"' for k in CALL_TARGETS)
        error(path, f'expected "hangup", {choices}, "trunk:NAME/NUMBER" or "prompt:PROMPT", got {_describe(text)}')
        return
    if kind == "prompt":
        _check_prompt(name, path, error)
        return
    lookup = {"user": config.user, "trunk": config.trunk, "queue": config.queue, "ivr": config.menu}
    section = {"user": "users", "trunk": "trunks", "queue": "queues", "ivr": "ivr"}
    if kind != HANGUP and lookup[kind](name) is None:
        error(path, f'no {kind} "{name}" in [[{section[kind]}]]')
    if kind == "queue" and number:
        if not re.match(r"^-?\d{1,7}$", number):
            error(path, f"{_describe(number)}: a queue target's priority is a whole number (queue:NAME/PRIORITY)")
    elif number and (kind != "trunk" or not _USER_NAME.match(number)):
        error(path, f"{_describe(number)}: only a trunk target takes a number, and it must fit a SIP user part")


def _check_prompt(text: str, path: str, error: Report) -> None:
    try:
        parse_prompt(text)
    except ValueError as exc:
        error(path, str(exc))


def _unique(items, key: str, section: str, error: Report) -> None:
    first: dict[str, int] = {}
    for i, item in enumerate(items):
        if item is None:
            continue
        value = getattr(item, key)
        if not re.match(r"^[A-Za-z0-9_.+-]{1,64}$", value):
            error(f"{section}[{i}].{key}", f"{_describe(value)} is not a name (up to 64 of A-Z a-z 0-9 _ . + -)")
        elif value in first:
            error(f"{section}[{i}].{key}", f'duplicate "{value}" (first at {section}[{first[value]}])')
        first.setdefault(value, i)


def _rule_ivr(config: Config, error: Report) -> None:
    _unique(config.ivr, "name", "ivr", error)
    for i, menu in enumerate(config.ivr):
        if menu is None:
            continue
        here = f"ivr[{i}]"
        _check_prompt(menu.prompt, f"{here}.prompt", error)
        if menu.invalid_prompt is not None:
            _check_prompt(menu.invalid_prompt, f"{here}.invalid_prompt", error)
        for digits, target in menu.choices.items():
            if not _DTMF_DIGITS.match(digits) or len(digits) > menu.max_digits:
                error(f"{here}.choices.{digits}", f"expected up to {menu.max_digits} DTMF digits (0-9 * # A-D)")
            _check_target(config, target, f"{here}.choices.{digits}", error)
        _check_target(config, menu.on_timeout, f"{here}.on_timeout", error)
        if menu.on_invalid is not None:
            _check_target(config, menu.on_invalid, f"{here}.on_invalid", error)
        if menu.terminator and (len(menu.terminator) != 1 or not _DTMF_DIGITS.match(menu.terminator)):
            error(f"{here}.terminator", f"expected one DTMF digit or \"\", got {_describe(menu.terminator)}")


def _rule_agents(config: Config, error: Report) -> None:
    _unique(config.agents, "id", "agents", error)
    owner: dict[str, str] = {}
    for i, agent in enumerate(config.agents):
        if agent is None:
            continue
        for j, phone in enumerate(agent.phones):
            if config.user(phone) is None:
                error(f"agents[{i}].phones[{j}]", f'no user "{phone}" in [[users]]')
            elif phone in owner:
                error(f"agents[{i}].phones[{j}]", f'"{phone}" is already the phone of agent "{owner[phone]}"')
            owner.setdefault(phone, agent.id)


def _rule_queues(config: Config, error: Report) -> None:
    _unique(config.queues, "name", "queues", error)
    for i, queue in enumerate(config.queues):
        if queue is None:
            continue
        here = f"queues[{i}]"
        for j, tier in enumerate(queue.agents):
            if tier is not None and config.agent(tier.agent) is None:
                error(f"{here}.agents[{j}].agent", f'no agent "{tier.agent}" in [[agents]]')
        groups = {g for a in config.agents if a is not None for g in a.groups}
        for j, tier in enumerate(queue.groups):
            if tier is not None and tier.group not in groups:
                error(f"{here}.groups[{j}].group", f'no agent is in group "{tier.group}"')
        for level, wait in queue.level_waits.items():
            if not 1 <= level <= 8 or wait < 0:
                error(f"{here}.level_waits.{level}", "expected a level 1-8 and a wait of 0 seconds or more")
        _check_prompt(queue.music, f"{here}.music", error)
        for j, prompt in enumerate(queue.announce):
            _check_prompt(prompt.replace("{position}", "1").replace("{minutes}", "1"), f"{here}.announce[{j}]", error)
        if queue.announce_every and not queue.announce:
            error(f"{here}.announce", "announce_every is set: name the prompts to announce")
        _check_target(config, queue.on_exit, f"{here}.on_exit", error)
        _check_target(config, queue.exit_target, f"{here}.exit_target", error)
        if queue.exit_key is not None and (len(queue.exit_key) != 1 or not _DTMF_DIGITS.match(queue.exit_key)):
            error(f"{here}.exit_key", f"expected one DTMF digit, got {_describe(queue.exit_key)}")
        for j, trunk in enumerate(queue.vip_trunks):
            if config.trunk(trunk) is None:
                error(f"{here}.vip_trunks[{j}]", f'no trunk "{trunk}" in [[trunks]]')


def _rule_campaigns(config: Config, error: Report) -> None:
    _unique(config.campaigns, "name", "campaigns", error)
    for i, campaign in enumerate(config.campaigns):
        if campaign is None:
            continue
        here = f"campaigns[{i}]"
        for key, problem in campaign_problems(campaign):
            error(f"{here}.{key}" if key else here, problem)
        if config.trunk(campaign.trunk) is None:
            error(f"{here}.trunk", f'no trunk "{campaign.trunk}" in [[trunks]]')
        if config.queue(campaign.queue) is None:
            error(f"{here}.queue", f'no queue "{campaign.queue}" in [[queues]]')
        if campaign.abandon_message:
            _check_prompt(campaign.abandon_message, f"{here}.abandon_message", error)


def _rule_acd(config: Config, error: Report) -> None:
    acd = config.acd
    codes = {"login": acd.login, "logout": acd.logout, "pause": acd.pause, "available": acd.available,
             "disposition": acd.disposition}
    seen: dict[str, str] = {}
    for key, code in codes.items():
        if not re.match(r"^[*#0-9]{1,16}$", code):
            error(f"acd.{key}", f"{_describe(code)} cannot be dialled (1-16 of 0-9 * #)")
        elif code in seen:
            error(f"acd.{key}", f"the same code as acd.{seen[code]}")
        seen.setdefault(code, key)
    if not acd.break_reasons or not all(acd.break_reasons):
        error("acd.break_reasons", "give at least one reason, none empty")
    if acd.pause != acd.disposition and (acd.disposition.startswith(acd.pause) or acd.pause.startswith(acd.disposition)):
        error("acd.disposition", f"{_describe(acd.disposition)} and acd.pause {_describe(acd.pause)} start "
                                 "alike: a code and its digit would be read as the other")
    for code in acd.dispositions:
        if not re.match(r"^[a-z0-9_]{1,32}$", code):
            error("acd.dispositions", f"{_describe(code)} is not a disposition code (1-32 of a-z 0-9 _)")
            break


def _rule_control(config: Config, error: Report) -> None:
    listen = config.control.listen
    if not listen:
        return
    try:
        host, _ = parse_host_port(listen)
    except ValueError as exc:
        error("control.listen", f"{_describe(listen)}: {exc}")
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback and not config.control.token:
        error("control.token", f"needed: control.listen {_describe(listen)} is not a loopback address")


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
    _rule_ivr,
    _rule_agents,
    _rule_queues,
    _rule_acd,
    _rule_campaigns,
    _rule_calls,
    _rule_control,
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
