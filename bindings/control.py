"""The node's control API: HTTP/1.1 with JSON bodies, served on the node's event loop.

What an operator, a wallboard or an agent's screen asks of a running node ([control] in the config):

    GET  /campaigns                          every campaign: mode, state, contacts pending, calls out, results
    GET  /campaigns/NAME                     one of them
    POST /campaigns/NAME/start|pause|resume|stop
    POST /dnc            {"number": "+12125550100", "country": "US"}   onto the do-not-call list
    GET  /dnc/NUMBER                         whether (and since when, from where) a number is on it
    DELETE /dnc/NUMBER                       off it again (a number put there by mistake)
    GET  /agents/ID                          status (set by the agent), state (set by the switch), the
                                             contact of the preview on the agent's phone
    POST /agents/ID/status {"status": "available"|"on_break"|"logged_out", "reason": "lunch"}
    POST /agents/ID/disposition {"code": "callback", "at": 1795000000}
                                             the agent's last campaign call disposed of; a "callback" at
                                             the time the contact asked for (Unix seconds)

Every request runs to its end on the loop thread, between the call layer's steps, so it sees and changes
the same objects the calls do without a lock (the ACD's and the campaigns' single owner). A change is
durable before its answer: a campaign's state and a DNC entry are committed to LMDB first.

One request per connection (``Connection: close``), its head at most 8 KiB, its body 64 KiB, all of it
within 5 s; anything else gets a 4xx and the connection is closed. With ``token`` set, every request
needs "Authorization: Bearer TOKEN" (401 otherwise); the config refuses a non-loopback address without one.
"""
from __future__ import annotations

import asyncio
import hmac
import logging
import time
from http import HTTPStatus
from typing import Any, Callable
from urllib.parse import unquote

import msgspec

from core.acd import model as acd_model
from core.scheduler.campaign import DISPOSITION_CALLBACK, CampaignError
from core.config import parse_host_port
from core.scheduler.contacts import NumberError, normalise

__all__ = ["ControlApi"]

log = logging.getLogger("switchcore.control")

MAX_HEAD = 8192
MAX_BODY = 65536
REQUEST_SECONDS = 5.0
ACTIONS = ("start", "pause", "resume", "stop")


class _Refused(Exception):
    """A request answered with an error status and a one-line reason."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status


class DncRequest(msgspec.Struct, forbid_unknown_fields=True):
    number: str
    country: str = ""  # for a number written without its country code (default: the first campaign's)


class StatusRequest(msgspec.Struct, forbid_unknown_fields=True):
    status: str
    reason: str = ""


class DispositionRequest(msgspec.Struct, forbid_unknown_fields=True):
    code: str
    at: float | None = None  # a call-back's time (Unix seconds); None: the campaign's callback delay


class ControlApi:
    """The control API of one node: ``calls`` (the B2BUA: its ACD and agents), ``dialler`` (the
    campaigns; None on a node without any), ``flush`` (sends what a change made the call layer do)."""

    def __init__(self, config, calls, dialler, *, flush: Callable[[], None] = lambda: None,
                 clock: Callable[[], float] = time.time):
        self.config = config
        self.calls = calls
        self.dialler = dialler
        self.flush = flush
        self.clock = clock
        self.token = config.control.token.encode()
        # A number written without its country code is read as the first campaign's country's.
        self.country = next((c.default_country for c in config.campaigns), "US")
        self.server: asyncio.base_events.Server | None = None
        self.address = ""

    async def start(self) -> str:
        host, port = parse_host_port(self.config.control.listen)
        self.server = await asyncio.start_server(self._serve, host, port, reuse_address=True)
        bound = self.server.sockets[0].getsockname()
        self.address = f"[{bound[0]}]:{bound[1]}" if ":" in bound[0] else f"{bound[0]}:{bound[1]}"
        return self.address

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None

    # -- HTTP ----------------------------------------------------------------------------------------
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            status, payload = await asyncio.wait_for(self._request(reader), REQUEST_SECONDS)
        except asyncio.TimeoutError:
            status, payload = 408, {"error": "the request did not arrive in time"}
        except _Refused as exc:
            status, payload = exc.status, {"error": str(exc)}
        except (ConnectionError, asyncio.IncompleteReadError):
            writer.close()
            return
        except Exception:  # a fault of ours: the client is told, the node goes on
            log.exception("control API request failed")
            status, payload = 500, {"error": "internal error (see the node's log)"}
        body = msgspec.json.encode(payload) + b"\n"
        head = (f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
        try:
            writer.write(head.encode() + body)
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def _request(self, reader: asyncio.StreamReader) -> tuple[int, Any]:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            raise _Refused(431, "request head too large") from None
        if len(head) > MAX_HEAD:
            raise _Refused(431, "request head too large")
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise _Refused(400, "not an HTTP/1.x request line")
        method, target = parts[0], parts[1]
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if line:
                name, sep, value = line.partition(":")
                if not sep:
                    raise _Refused(400, f"not a header line: {line[:40]!r}")
                headers[name.strip().lower()] = value.strip()
        if self.token:
            given = headers.get("authorization", "").encode()
            if not hmac.compare_digest(given, b"Bearer " + self.token):
                raise _Refused(401, "needs Authorization: Bearer TOKEN")
        length = headers.get("content-length", "0")
        if not length.isdigit():
            raise _Refused(400, "Content-Length is not a number")
        if int(length) > MAX_BODY:
            raise _Refused(413, f"body over {MAX_BODY} bytes")
        body = await reader.readexactly(int(length)) if int(length) else b""
        result = self.handle(method, target.split("?", 1)[0], body)
        self.flush()
        return result

    # -- the API ---------------------------------------------------------------------------------------
    def handle(self, method: str, path: str, body: bytes) -> tuple[int, Any]:
        """One request: (status, the JSON-able answer)."""
        parts = [unquote(p) for p in path.split("/") if p]
        now = self.clock()
        try:
            if parts[:1] == ["campaigns"]:
                return self._campaigns(method, parts[1:], now)
            if parts[:1] == ["dnc"]:
                return self._dnc(method, parts[1:], body, now)
            if parts[:1] == ["agents"] and len(parts) >= 2:
                return self._agent(method, parts[1], parts[2:], body, now)
        except _Refused as exc:
            return exc.status, {"error": str(exc)}
        return 404, {"error": f"no such resource: {path}"}

    def _runs(self):
        if self.dialler is None:
            raise _Refused(404, "this node runs no campaigns")
        return self.dialler.runs

    def _campaigns(self, method: str, rest: list[str], now: float) -> tuple[int, Any]:
        runs = self._runs()
        if not rest:
            _allow(method, "GET")
            return 200, {"campaigns": [_campaign(run) for run in runs.values()]}
        run = runs.get(rest[0])
        if run is None:
            raise _Refused(404, f"no campaign {rest[0]!r}")
        if len(rest) == 1:
            _allow(method, "GET")
            return 200, _campaign(run)
        if len(rest) == 2 and rest[1] in ACTIONS:
            _allow(method, "POST")
            try:
                getattr(run.campaign, rest[1])(now)
            except CampaignError as exc:
                raise _Refused(409, str(exc)) from None
            self.dialler.store.commit(run.campaign)
            log.info("campaign %s: %s through the control API", run.config.name, run.campaign.state)
            return 200, _campaign(run)
        raise _Refused(404, f"no such resource under campaign {rest[0]!r}")

    def _dnc(self, method: str, rest: list[str], body: bytes, now: float) -> tuple[int, Any]:
        dialler = self.dialler
        if dialler is None:
            raise _Refused(404, "this node runs no campaigns")
        if not rest:
            _allow(method, "POST")
            req = _decode(body, DncRequest)
            number = _e164(req.number, req.country or self.country)
            entry = dialler.store.add_dnc(dialler.dnc, number, now, "api")
            log.info("do-not-call: %s added through the control API", number)
            return (201 if entry is not None else 200), {"number": number, "added": entry is not None}
        if len(rest) == 1:
            number = _e164(rest[0], self.country)
            if method == "DELETE":
                entry = dialler.store.remove_dnc(dialler.dnc, number)
                if entry is not None:
                    log.warning("do-not-call: %s removed through the control API (listed since %.0f, from %s)",
                                number, entry.added, entry.source)
                return 200, {"number": number, "removed": entry is not None}
            _allow(method, "GET")
            entry = dialler.dnc.get(number)
            return 200, {"number": number, "listed": entry is not None,
                         "entry": msgspec.to_builtins(entry) if entry is not None else None}
        raise _Refused(404, "no such resource under /dnc")

    def _agent(self, method: str, agent: str, rest: list[str], body: bytes, now: float) -> tuple[int, Any]:
        acd = self.calls.acd
        if acd is None or self.config.agent(agent) is None:
            raise _Refused(404, f"no agent {agent!r}")
        if rest == ["status"]:
            _allow(method, "POST")
            req = _decode(body, StatusRequest)
            if req.status not in acd_model.STATUSES:
                raise _Refused(400, f"status: expected one of {', '.join(acd_model.STATUSES)}, got {req.status!r}")
            reasons = self.config.acd.break_reasons
            reason = req.reason
            if req.status == acd_model.ON_BREAK:
                reason = reason or reasons[0]
                if reason not in reasons:
                    raise _Refused(400, f"reason: expected one of {', '.join(reasons)}, got {reason!r}")
            self.calls.agent_status(agent, req.status, reason if req.status == acd_model.ON_BREAK else "", now)
        elif rest == ["disposition"]:
            _allow(method, "POST")
            req = _decode(body, DispositionRequest)
            if req.code not in self.config.acd.dispositions:
                raise _Refused(400, f"code: expected one of {', '.join(self.config.acd.dispositions)}, got {req.code!r}")
            if req.at is not None and req.code != DISPOSITION_CALLBACK:
                raise _Refused(400, f"at: only a {DISPOSITION_CALLBACK!r} has a time")
            if req.at is not None and req.at <= now:
                raise _Refused(400, "at: the call-back time has passed")
            if self.dialler is None or not self.dialler.disposition(agent, req.code, now, req.at):
                raise _Refused(409, f"agent {agent!r} has had no campaign call to dispose of")
        elif rest:
            raise _Refused(404, f"no such resource under agent {agent!r}")
        else:
            _allow(method, "GET")
        stats = acd.agent_stats(agent, now)
        shown = self.dialler.shown(agent) if self.dialler is not None else None
        return 200, {"agent": agent, "status": stats.status, "reason": stats.reason, "state": stats.state,
                     "preview": msgspec.to_builtins(shown) if shown is not None else None}


def _allow(method: str, allowed: str) -> None:
    if method != allowed:
        raise _Refused(405, f"{method} not allowed here (only {allowed})")


def _decode(body: bytes, kind):
    try:
        return msgspec.json.decode(body, type=kind)
    except msgspec.DecodeError as exc:
        raise _Refused(400, f"body: {exc}") from None


def _e164(number: str, country: str) -> str:
    try:
        return normalise(number, country)
    except NumberError as exc:
        raise _Refused(400, str(exc)) from None


def _campaign(run) -> dict[str, Any]:
    c = run.campaign
    return {"name": run.config.name, "mode": run.config.mode, "state": c.state, "pending": c.pending(),
            "in_flight": c.in_flight, "results": dict(c.counters), "dispositions": dict(c.dispositions)}
