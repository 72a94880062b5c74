"""A Switchcore node: one uvloop worker running the sans-IO endpoint over real sockets.

The adapter is the aioquic shape: feed what arrives, send what the core hands back, re-arm the one
timer the core asks for. Time given to the core is wall-clock seconds (``time.time()``): bindings
written to LMDB carry their expiry as wall time, so they mean the same after a restart.

Calls: once the sockets are bound, the call layer (``core.call.B2BUA``) is attached to the endpoint
with the first UDP address as the switch's own (Via, Contact), and the first TCP one as its address
for sessions over TCP. A request to a TCP peer with no connection open opens one (RFC 3261 §18.1.1,
``TcpRegistry.open``); one that cannot be opened is the transaction layer's transport error. The
call layer's events drive the two other planes: ``MediaBridge`` / ``MediaRelease`` the media engine
(``bindings/media.py``: one relay per call, its loop in its own thread), ``CallConnected`` /
``CallSummary`` the call records (``bindings/records.py``: the active-call journal at the answer,
the record with the media figures at the end, through the node's one ``CdrWriter``). Each summary is
also logged (``switchcore.calls``). Opening the CDR writer closes, as "interrupted", the answered
calls a crash left in the journal.

Stopping (SIGTERM or SIGINT): new requests are refused with 503, ringing calls get 503 and
answered ones a BYE on both legs (each leaves its record), what is queued to send is sent, the
sockets close, the media engine's thread stops, every record commits, and LMDB is synced before
the process exits 0.
"""
from __future__ import annotations

import asyncio
import gc
import logging
import os
import secrets
import signal
import socket
import sys
import time
from collections import deque

import msgspec
import uvloop

from bindings.acdlog import QueueLog
from bindings.cdr import CdrWriter
from bindings.control import ControlApi
from bindings.dialler import TICK, CampaignFileError, Dialler
from bindings.media import AmdVerdict, MediaPlane
from bindings.records import CallRecords
from bindings.storage import Storage
from bindings.transport import TcpConnection, TcpRegistry, UdpTransport, stamp_arrivals
from core.call import B2BUA, CallSummary, MediaBridge, MediaRelease
from core.acd.log import QueueLogEntry
from core.call.b2bua import CallConnected, LiveAnswer, MediaPlay, MediaStop
from core.config import Config, parse_listen
from core.memory import set_untracking
from core.media.prompts import PlaybackDone
from core.media.rtp import DtmfDigit
from core.registrar import Registrar
from core.sip.addr import Peer
from core.sip.endpoint import Endpoint
from core.sip.session import SessionLayer
from core.sip.transaction import TimerConfig

log = logging.getLogger("switchcore.node")
call_log = logging.getLogger("switchcore.calls")

# The live KPIs file in the data folder, and how often it is rewritten.
LIVE_KPI_FILE = "live-kpis.json"
LIVE_KPI_SECONDS = 5.0
# How long a stopping node waits for transactions still waiting on a final response.
DRAIN_SECONDS = 2.0
# The cyclic garbage collector. Once the node has started, everything it loaded (modules, config,
# prompts, tables) lives as long as the process: ``gc.freeze()`` takes it out of every later
# collection. A call makes no reference cycles, so what remains for the collector is the calls and
# transactions alive at the moment (a transaction waits out Timer L/J for 32 s after its call), and
# each collection only walks them: collecting young objects after every 700 new ones (the default)
# walked each such object a dozen times over its life. A larger first threshold lets most of a
# call's objects die before they are ever looked at.
GC_THRESHOLDS = (50_000, 20, 10)
# Socket buffers of a SIP UDP socket: a burst of a few thousand datagrams must wait in the kernel
# while the loop is busy, not be dropped (each drop costs a retransmission 500 ms later).
UDP_BUFFER = 4 * 1024 * 1024
# Load past capacity (MISSION.md, "the avalanche"). Each turn of reads on a SIP socket says how long the
# oldest datagram it read had waited in the socket (the kernel's arrival time, bindings/transport.py). A
# node that takes calls more slowly than they come lets that wait grow until it reaches RFC 3261's
# retransmission times (T1, 500 ms) and the socket's room runs out: every call slows down, is sent
# again, and fails. Once a datagram has waited SHED_DELAY, new calls are refused at once (503 with
# Retry-After; core/sip/transaction.py ``shedding``), a few percent of a call's work each, while the calls
# admitted go on; new calls are taken again once a turn's oldest datagram waited less than SHED_CLEAR and
# SHED_HOLD seconds have passed since the last turn that waited SHED_DELAY. A node below its capacity that
# pauses (a collection, a burst) stays far under SHED_DELAY. An episode begun within SHED_LOG seconds of
# the last line is not logged on its own: its refusals are counted in a line SHED_LOG seconds after the
# last, or when the node stops.
SHED_DELAY = 0.15
SHED_CLEAR = 0.05
SHED_HOLD = 0.25
SHED_LOG = 10.0


def udp_socket(family: int, host: str, port: int) -> socket.socket:
    """A bound, non-blocking UDP socket with large buffers (forced past rmem_max where allowed)."""
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        for force, plain in ((getattr(socket, "SO_RCVBUFFORCE", None), socket.SO_RCVBUF),
                             (getattr(socket, "SO_SNDBUFFORCE", None), socket.SO_SNDBUF)):
            try:
                sock.setsockopt(socket.SOL_SOCKET, force if force is not None else plain, UDP_BUFFER)
            except PermissionError:  # not root: the kernel caps it at net.core.[rw]mem_max
                sock.setsockopt(socket.SOL_SOCKET, plain, UDP_BUFFER)
        # The kernel's arrival time on each datagram: how long the oldest waited tells the node it is
        # behind (SHED_DELAY).
        if stamp_arrivals is not None:
            stamp_arrivals(sock.fileno())
        sock.bind((host, port))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class StartError(Exception):
    """The node cannot start as configured (a prompt file missing ...): one line for the operator."""


class Node:
    """Sockets, storage and the endpoint of one worker."""

    def __init__(self, config: Config):
        self.config = config
        self.storage: Storage | None = None
        self.cdr: CdrWriter | None = None
        self.records: CallRecords | None = None
        self.queue_log: QueueLog | None = None
        self._kpi_task: asyncio.Task | None = None
        self.dialler: Dialler | None = None
        self._untracking_before: bool | None = None  # core.memory's setting before start
        self._dial_task: asyncio.Task | None = None
        self.control: ControlApi | None = None
        self.media: MediaPlane | None = None
        self.endpoint: Endpoint | None = None
        self.udp: dict[int, UdpTransport] = {}  # by address family: the first socket of each sends
        self._udp_sockets: list[UdpTransport] = []  # every one bound
        self.tcp = TcpRegistry(self.on_message, config.sip.max_message_size, self.on_tcp_failed)
        self.servers: list[asyncio.base_events.Server] = []
        self.listening: list[str] = []
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._held: set[asyncio.Future] = set()  # sends waiting on a commit (see flush)
        self._flushing = False
        self._behind_at = 0.0  # monotonic time of the last turn whose oldest datagram waited SHED_DELAY
        self._last_wait = 0.0  # how long the last turn's oldest datagram waited
        self._shed_before = 0  # calls refused before those the next "caught up" line counts
        self._shed_logged = False  # the current shedding was logged when it began
        self._shed_logged_at = -SHED_LOG  # monotonic time of the last line about refused calls
        self._shed_report: asyncio.TimerHandle | None = None  # the line due for episodes not logged
        self._shed_timer: asyncio.TimerHandle | None = None  # the next look at whether it caught up

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        cfg = self.config
        os.makedirs(cfg.node.data_dir, exist_ok=True)
        self.storage = Storage(cfg.node.data_dir)
        self.cdr = CdrWriter(self.storage, max_delay=cfg.node.commit_delay)
        for rec in self.cdr.recovered[:20]:  # the count is logged by the writer; a few for the operator
            log.warning("call %s cut off by a crash, recorded as interrupted (answered %s, last seen %s)",
                        rec.call_id, rec.answered, rec.ended)
        self.records = CallRecords(self.cdr, cfg.node.name)
        self.records.start()
        self._kpi_task = asyncio.get_running_loop().create_task(self._write_live_kpis())
        self.queue_log = QueueLog(self.cdr)
        registrar = Registrar(cfg, self.storage.bindings(), secrets.token_bytes(32))
        t = cfg.sip.timers
        self.endpoint = Endpoint(
            registrar,
            timers=TimerConfig(t1=t.t1, t2=t.t2, t4=t.t4),
            max_message_size=cfg.sip.max_message_size,
            user_agent=cfg.sip.user_agent,
            max_transactions=cfg.limits.max_transactions,
        )
        loop = asyncio.get_running_loop()
        local: Peer | None = None
        listeners: list[Peer] = []  # the first address on each other transport (TCP)
        for spec in cfg.sip.listen:
            transport, host, port = parse_listen(spec)
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            if transport == "udp":
                proto = UdpTransport(self.on_datagram, udp_socket(family, host, port), loop, self.arm_timer,
                                     self.on_wait)
                self.udp.setdefault(family, proto)
                self._udp_sockets.append(proto)
                bound = proto.sockname()
            else:
                server = await loop.create_server(
                    lambda: TcpConnection(self.tcp, self.on_message, cfg.sip.max_message_size),
                    host, port, family=family, reuse_address=True)
                self.servers.append(server)
                bound = server.sockets[0].getsockname()
            where = f"[{bound[0]}]:{bound[1]}" if family == socket.AF_INET6 else f"{bound[0]}:{bound[1]}"
            self.listening.append(f"{transport}:{where}")
            # A wildcard bind cannot be a Contact: the media address stands in for it.
            own = cfg.media.address if bound[0] in ("0.0.0.0", "::") else bound[0]
            if local is None and transport == "udp":
                local = Peer("udp", own, bound[1])
            elif transport != "udp" and all(p.transport != transport for p in listeners):
                listeners.append(Peer(transport, own, bound[1]))
        try:
            self.media = MediaPlane(cfg.media, calls=cfg.calls, data_dir=cfg.node.data_dir,
                                     max_calls=cfg.limits.max_calls)
        except (ValueError, OSError) as exc:
            # An IPv6 media address, say: calls still connect, their RTP is not anchored here.
            log.error("media engine not started on %s: %s; calls will carry no relayed media",
                      cfg.media.address, exc)
        else:
            self.media.start(loop)
            self.media.listener = self.on_media_event
            problems = self._load_prompts()
            if problems:
                raise StartError("; ".join(problems))
        if local is not None:
            sessions = SessionLayer(self.endpoint.transactions, local, user=cfg.node.name, listeners=listeners)
            self.endpoint.calls = B2BUA(cfg, sessions, registrar)
            self.endpoint.calls.start(time.time())  # agents configured "available" log in now
            if cfg.campaigns:
                try:
                    self.dialler = Dialler(cfg, self.storage, self.endpoint.calls, time.time())
                except CampaignFileError as exc:
                    raise StartError(str(exc)) from None
                self._dial_task = loop.create_task(self._dial_loop())
            if cfg.control.listen:
                self.control = ControlApi(cfg, self.endpoint.calls, self.dialler, flush=self._after_control)
                try:
                    where = await self.control.start()
                except OSError as exc:
                    raise StartError(f"control.listen: {cfg.control.listen}: {exc.strerror}") from None
                print(f"control API on http://{where}", file=sys.stderr, flush=True)
        # What start-up made stays for the life of the process: out of the collector's way. So do
        # the transactions, sessions, dialogs and timers of the calls to come (core/memory.py).
        gc.collect()
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLDS)
        self._untracking_before = set_untracking(True)
        for line in self.listening:
            print(f"listening on {line}", file=sys.stderr, flush=True)
        log.info("node %s up, data in %s", cfg.node.name, cfg.node.data_dir)

    def _after_control(self) -> None:
        """What a control request made the call layer do goes out now."""
        self.flush()
        self.arm_timer()

    async def stop(self) -> None:
        """Refuse new work, let pending transactions finish for a moment, then close and sync."""
        if self.control is not None:
            await self.control.close()
            self.control = None
        if self._dial_task is not None:
            self._dial_task.cancel()
            self._dial_task = None
        ep = self.endpoint
        if ep is not None:
            ep.drain(time.time())
            deadline = time.monotonic() + DRAIN_SECONDS
            while ep.transactions.pending_count() and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
                self.on_timer()
            self.flush()
        if self._held:  # answers waiting on their commits go out before the sockets close
            await asyncio.wait(list(self._held), timeout=DRAIN_SECONDS)
        if self._timer is not None:
            self._timer.cancel()
        for handle in (self._shed_timer, self._shed_report):
            if handle is not None:
                handle.cancel()
        if ep is not None:
            self._report_shed()  # refusals not yet in the log
        for server in self.servers:
            server.close()
        self.tcp.close_all()
        for proto in self._udp_sockets:
            proto.close()
        for server in self.servers:
            await server.wait_closed()
        if self.media is not None:
            self.media.stop()
            self.media = None
        if self._kpi_task is not None:
            self._kpi_task.cancel()
            self._kpi_task = None
        if self.dialler is not None:
            self.dialler.stop(time.time())
            self.dialler = None
        if self.records is not None:
            await self.records.stop()
            self.dump_live_kpis()
            self.records = None
        if self.cdr is not None:
            self.cdr.stop()
            self.cdr = None
        if self.storage is not None:
            self.storage.close()
            self.storage = None
        if self._untracking_before is not None:
            set_untracking(self._untracking_before)
            self._untracking_before = None
        log.info("node %s stopped", self.config.node.name)

    async def _dial_loop(self) -> None:
        """The campaigns' pacing decisions, every TICK seconds."""
        while True:
            await asyncio.sleep(TICK)
            try:
                self.dialler.tick(time.time())
            except Exception:  # a campaign's fault must not stop the node's calls
                log.exception("campaign tick failed")
            self.flush()
            self.arm_timer()

    async def _write_live_kpis(self) -> None:
        """Every few seconds, the live KPIs to DATA_DIR/live-kpis.json (written whole, then renamed)."""
        while True:
            await asyncio.sleep(LIVE_KPI_SECONDS)
            self.dump_live_kpis()

    def dump_live_kpis(self) -> None:
        if self.records is None:
            return
        path = os.path.join(self.config.node.data_dir, LIVE_KPI_FILE)
        now = time.time()
        document = self.records.live_kpis(now)
        calls = self.endpoint.calls if self.endpoint is not None else None
        if calls is not None and calls.acd is not None:
            # The ACD's own live counters: who waits and for how long, each agent's status and state.
            document["queues"] = {q.name: msgspec.to_builtins(calls.acd.queue_stats(q.name, now))
                                  for q in self.config.queues}
            document["agents"] = {a.id: msgspec.to_builtins(calls.acd.agent_stats(a.id, now))
                                  for a in self.config.agents}
        try:
            with open(path + ".tmp", "wb") as f:
                f.write(msgspec.json.encode(document))
            os.replace(path + ".tmp", path)
        except OSError as exc:
            log.warning("live KPIs not written to %s: %s", path, exc)

    def _load_prompts(self) -> list[str]:
        """Read every prompt the config names once, now: a missing or unreadable WAV stops the start
        with the config key that names it."""
        cfg = self.config
        named = [("calls", "beep"), ("calls", "busy"), ("calls", "ringback")]
        for i, menu in enumerate(cfg.ivr):
            named.append((f"ivr[{i}].prompt", menu.prompt))
            if menu.invalid_prompt:
                named.append((f"ivr[{i}].invalid_prompt", menu.invalid_prompt))
        named += [(f"queues[{i}].music", q.music) for i, q in enumerate(cfg.queues)]
        problems = []
        for key, spec in named:
            try:
                self.media.load_prompt(spec)
            except (OSError, ValueError, EOFError) as exc:
                problems.append(f"{key}: {spec}: {exc}")
        return problems

    def on_media_event(self, event) -> None:
        """A digit or the end of a prompt, from the media engine: the call layer's input."""
        calls = self.endpoint.calls if self.endpoint is not None else None
        if calls is None:
            return
        now = time.time()
        if isinstance(event, DtmfDigit):
            if event.leg != "a":
                return  # the agent's or callee's keys are recorded, not acted on
            calls.dtmf(event.relay_id, event.digit, now)
        elif isinstance(event, PlaybackDone):
            calls.playback_done(event.relay_id, event.leg, now, event.reason)
        elif isinstance(event, AmdVerdict):
            log.info("call %s: answering-machine detector says %s (%s)", event.call_id, event.verdict, event.reason)
            calls.amd_result(event.call_id, event.verdict, now)
        if not self._flushing:  # a relay's last events come while flush() releases it: it goes on
            self.flush()
            self.arm_timer()

    # -- the adapter ----------------------------------------------------------------------------
    def on_message(self, data: bytes, peer: Peer) -> None:
        self.on_datagram(data, peer)
        self.arm_timer()

    def on_wait(self, waited: float) -> None:
        """A UDP socket's turn of reads begins, its oldest datagram having waited ``waited`` seconds in
        the socket: refuse new calls while the node is that far behind (SHED_DELAY, SHED_CLEAR,
        SHED_HOLD), from this turn's on."""
        transactions = self.endpoint.transactions
        self._last_wait = waited
        if waited >= SHED_DELAY:
            self._behind_at = time.monotonic()
            if not transactions.shedding:
                transactions.shedding = True
                self._shed_logged = self._behind_at - self._shed_logged_at >= SHED_LOG
                if self._shed_logged:
                    log.warning("behind: SIP datagrams waited %.0f ms; new calls get 503 until the node catches up",
                                waited * 1e3)
        elif transactions.shedding and waited < SHED_CLEAR:
            self._end_shedding()

    def _end_shedding(self) -> None:
        """Take new calls again once no turn has been behind for SHED_HOLD seconds; too soon, look
        again then (with no datagram coming meanwhile, no turn would)."""
        transactions = self.endpoint.transactions
        if not transactions.shedding:
            return
        wait = self._behind_at + SHED_HOLD - time.monotonic()
        if wait > 0:
            if self._shed_timer is None:
                self._shed_timer = asyncio.get_running_loop().call_later(wait, self._shed_timer_fired)
            return
        transactions.shedding = False
        if self._shed_logged:
            log.warning("caught up: new calls are taken again (%d refused meanwhile)",
                        transactions.shed - self._shed_before)
            self._shed_before = transactions.shed
            self._shed_logged_at = time.monotonic()
        elif self._shed_report is None:
            due = self._shed_logged_at + SHED_LOG - time.monotonic()
            self._shed_report = asyncio.get_running_loop().call_later(max(0.0, due), self._report_shed)

    def _report_shed(self) -> None:
        """Log the new calls refused since the last line about them (episodes too close to be logged
        each, and at stop)."""
        self._shed_report = None
        transactions = self.endpoint.transactions
        if transactions.shed > self._shed_before:
            log.warning("%d more new calls refused (503) while behind since the last report",
                        transactions.shed - self._shed_before)
            self._shed_before = transactions.shed
            self._shed_logged_at = time.monotonic()

    def _shed_timer_fired(self) -> None:
        self._shed_timer = None
        if self._last_wait < SHED_CLEAR:  # else the next turn that has caught up decides
            self._end_shedding()

    def on_datagram(self, data: bytes, peer: Peer) -> None:
        """A message in a batch the UDP transport read: the timer is armed once for the batch."""
        self.endpoint.receive_datagram(data, peer, time.time())
        self.flush()

    def on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        self.endpoint.handle_timer(time.time())
        self.flush()
        self.arm_timer()

    def flush(self) -> None:
        """Act on the call layer's events, then send what the core has to send.

        A step that answered or ended a call sends its datagrams only once that call's journal entry
        or record is committed (a few ms, the CDR writer's group commit): a caller never holds a 200
        for an answer or a hang-up the switch has not recorded, so a crash loses no call that either
        side saw complete, and every call a side saw answered is closed as interrupted. The step's
        new INVITEs are the exception: they say nothing of an answer or an end, and holding them
        would add the commit to the setup time of a queued call."""
        durable: list[asyncio.Future] = []
        calls = self.endpoint.calls
        if calls is not None and calls._events:  # most steps give the other planes nothing to do
            self._flushing = True
            try:
                self._act(calls._events, durable)
            finally:
                self._flushing = False
        datagrams = self.endpoint.datagrams_to_send()
        if durable and datagrams:
            # A new INVITE (a queue's offer to an agent in the step that answered the caller)
            # tells nobody of an answer or a hang-up: it leaves now, not a commit later.
            invites, held = [], []
            for d in datagrams:
                (invites if _new_invite(d[0]) else held).append(d)
            if invites:
                self._send(invites)
            if held:
                self._hold(durable, held)
        elif datagrams:
            self._send(datagrams)

    def _act(self, events: deque, durable: list) -> None:
        """The call layer's events (its ``next_event`` queue, drained in place) to the media plane,
        the records and the queue log; dispatched on the event's exact type, the commonest first
        (every call makes the first four)."""
        media, records = self.media, self.records
        while events:
            event = events.popleft()
            kind = type(event)
            if kind is MediaBridge:
                if media is not None:
                    media.bridge(event)
            elif kind is CallConnected:
                if records is not None:
                    durable.append(records.connected(event, media.recording_of(event.call_id) if media is not None else ""))
            elif kind is MediaRelease:
                if media is not None:
                    media.release(event.call_id)
            elif kind is CallSummary:
                call_log.info("call %s", event)
                if self.dialler is not None:
                    self.dialler.on_event(event, time.time())
                figures, dtmf = media.take_figures(event.call_id) if media is not None else (None, "")
                recording = media.take_recording(event.call_id, event.answered_at is not None) if media is not None else ""
                if records is not None:
                    durable.append(records.ended(event, figures, event.dtmf or dtmf, recording))
            elif kind is MediaPlay:
                if media is not None:
                    media.play(event.call_id, event.leg, event.prompt, event.loop)
            elif kind is MediaStop:
                if media is not None:
                    media.stop_playback(event.call_id, event.leg)
            elif kind is QueueLogEntry:
                if self.queue_log is not None:
                    self.queue_log.append(event)
                if self.dialler is not None:
                    self.dialler.on_event(event, time.time())
            elif kind is LiveAnswer:
                if self.dialler is not None:
                    self.dialler.on_event(event, time.time())

    def _hold(self, durable: list[asyncio.Future], datagrams) -> None:
        """Send ``datagrams`` once every commit in ``durable`` is done (a failed commit is logged by
        the records; the call itself goes on). Done callbacks rather than a task per step: ``_held``
        keeps a future per held step for ``stop`` to wait on."""
        held = asyncio.get_running_loop().create_future()
        self._held.add(held)
        left = len(durable)

        def committed(_fut) -> None:
            nonlocal left
            left -= 1
            if left == 0:
                self._held.discard(held)
                held.set_result(None)
                self._send(datagrams)

        for fut in durable:
            fut.add_done_callback(committed)

    def _send(self, datagrams) -> None:
        udp = self.udp
        for data, peer in datagrams:
            if peer.transport == "udp":
                proto = udp.get(socket.AF_INET6 if ":" in peer.host else socket.AF_INET)
                if proto is not None:
                    proto.send(data, peer)
            elif not self.tcp.send(data, peer):
                if data.startswith(b"SIP/2.0 "):
                    # §18.2.2: a response goes back over the request's connection; it is gone.
                    log.info("response to tcp %s:%s dropped: its connection is closed", peer.host, peer.port)
                else:
                    self.tcp.open(data, peer)

    def on_tcp_failed(self, peer: Peer) -> None:
        """No TCP connection could be opened for ``peer``: every transaction talking to it fails with
        a transport error (RFC 3261 §17.1.1.2, §17.1.2.2: 503 for the call layer)."""
        if self.endpoint is None:
            return
        self.endpoint.transport_error(peer, time.time())
        self.flush()
        self.arm_timer()

    def arm_timer(self) -> None:
        deadline = self.endpoint.get_timer()
        if deadline is None or deadline == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        self._timer_at = deadline
        self._timer = loop.call_later(max(0.0, deadline - time.time()), self.on_timer)


def _new_invite(data: bytes) -> bool:
    """An INVITE that opens a dialog (its To has no tag): not a re-INVITE, which may only follow a
    200 that a commit still holds. (The switch writes its headers in full form, "To: ...".)"""
    if not data.startswith(b"INVITE "):
        return False
    start = data.find(b"\r\nTo: ")
    end = data.find(b"\r\n", start + 2)
    return start >= 0 and data.find(b";tag=", start, end) < 0


async def _serve(config: Config) -> None:
    node = Node(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await node.start()
        await stop.wait()
    finally:
        # Also after a failed start (a port in use): what did start is stopped, LMDB closed.
        await node.stop()


def run(config: Config) -> int:
    """Run a node until SIGTERM/SIGINT; returns the process exit code."""
    logging.basicConfig(
        stream=sys.stderr,
        level=getattr(logging, config.node.log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        uvloop.run(_serve(config))
    except OSError as exc:
        print(f"switchcore: cannot listen: {exc}", file=sys.stderr)
        return 1
    except StartError as exc:
        print(f"switchcore: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0
