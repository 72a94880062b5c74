"""The node's media plane: one RTP relay engine (``core._rtp.Engine``) on the [media] address and port
range, its loop in a thread of its own, commanded from the node's event loop.

The call layer decides, the engine moves packets (DESIGN.md, "A call's way through", step 3): on
``MediaBridge`` the call's relay is added with the two ports the call layer put in its SDP (its
``PortAllocator`` and the engine cover the same range, and a port is the engine's only between a
bridge and its release, so the two never disagree) and each leg's far end as the SDP gives it — the
engine then latches on the address the packets really come from (RFC 4961 symmetric RTP); a second
``MediaBridge`` for the same call (a re-INVITE moved a leg, RFC 3264 §8) patches the peers. On
``MediaRelease`` the relay is removed and its final per-leg figures (packets, RFC 3550 loss and
jitter, the G.107 MOS estimate) are kept for the call's record, which the node takes with
``take_figures``.

Warm ports: a released relay's port pairs stay open in the engine as spares (``[media]
spare_port_pairs``), and the call layer's allocator gives a port back out once it has rested
(``core.call.b2bua.PORT_QUARANTINE``), so most calls find their sockets open and bound. Each spare
holds two file descriptors: ``fd_headroom`` raises the process's soft RLIMIT_NOFILE (toward the hard
one) to fit the relays of ``max_calls`` and the spares, and keeps fewer spares when it cannot.

The engine's loop runs ``serve()`` with the GIL released; commands and the loop share the engine's
mutex. Its events (``DtmfDigit``, ``MediaTimeout``, ``Latched``, ``SsrcChanged``) are read on the
asyncio loop when ``event_fd`` turns readable: digits are collected per call for the record (its
``dtmf`` field) and logged, timeouts are logged. ``stop()`` stops the loop, joins the thread and
closes every socket.

Recording (``[calls] record = true``): when a call's relay is added, the engine starts recording it
(``Engine.record_start``: a stereo WAV, left what the caller sends, right what the callee sends,
through a jitter buffer per leg) to ``<data_dir>/<recordings_dir>/YYYY/MM/DD/<call id>.wav`` (the UTC
date of that moment; the Call-ID made safe for a file name). Early media is in it, since the relay
starts there. ``recording_of`` gives the path while the call is up (it goes into the active-call
journal, so a call cut off by a crash still names its file); at release the recording is stopped and
closed, and ``take_recording`` hands its path — relative to the data folder, as the record keeps it —
to the call's record, or deletes the file of a call that was never answered (only answered calls are
recorded). The engine rewrites the WAV header after every append (every 100 ms), so a node killed
mid-call leaves a readable WAV holding the audio up to then (``core.media.recording``).
"""
from __future__ import annotations

import asyncio
import functools
import hashlib
import ipaddress
import logging
import os
import re
import resource
import threading
import time
from typing import Any, NamedTuple

from core._rtp import Engine
from core.call.b2bua import MediaBridge
from core.config import CallsConfig, LimitsConfig, MediaConfig
from core.media.amd import AmdTap, CaptureFanout
from core.media.prompts import PlaybackDone, Prompt, from_spec
from core.media.recording import CallRecording
from core.media.quality import LegFigures
from core.media.rtp import DtmfDigit, Latched, MediaTimeout, SsrcChanged

__all__ = ["AmdVerdict", "MediaPlane", "fd_headroom", "recording_name"]

log = logging.getLogger("switchcore.media")

# A leg that receives no RTP for this long is logged (once, until media resumes). Calls on hold
# send nothing, so this is a note for the operator, not a reason to hang up.
MEDIA_TIMEOUT_MS = 60_000
# The engine's poll timeout: how long serve() may take to notice stop() when no packet moves.
SERVE_TIMEOUT_MS = 100
# Kernel buffers of each RTP socket.
SOCKET_BUFFER = 256 * 1024
# File descriptors left for the rest of the node beside the relays and the spare port pairs: SIP
# sockets and TCP connections, the database, recordings and logs.
FD_RESERVE = 1024


# Characters kept as they are in a recording's file name; any other becomes "_".
_UNSAFE = re.compile(r"[^A-Za-z0-9._@+=-]")
NAME_MAX = 120  # well under the 255 bytes of a file name


def recording_name(call_id: str) -> str:
    """A file name (without ".wav") for the call's recording: the Call-ID when it is made of plain
    characters (RFC 3261 §25.1 allows "/", ":", "<" ... in it), else the Call-ID with those replaced
    and a short hash of the original appended, so that two Call-IDs never share a name."""
    safe = _UNSAFE.sub("_", call_id)[:NAME_MAX]
    if safe != call_id or not safe or safe[0] == ".":
        safe = f"{safe.lstrip('.') or 'call'}-{hashlib.sha256(call_id.encode()).hexdigest()[:12]}"
    return safe


class AmdVerdict(NamedTuple):
    """What the answering-machine detector made of a call's answered audio (core.media.amd)."""

    call_id: str
    verdict: str  # HUMAN, MACHINE, NOTSURE
    reason: str


def _peer(remote: tuple[str, int] | None) -> tuple[str, int] | None:
    """The engine's starting peer for a leg: an IPv4 address and port from SDP, or None (the leg then
    takes the first source that sends). 0.0.0.0 or port 0 is a hold (RFC 3264 §8.4), a name cannot be
    resolved here: both mean "learn it from the packets"."""
    if remote is None:
        return None
    host, port = remote
    if not port or not _relayable(host):
        return None
    return host, port


@functools.lru_cache(maxsize=4096)
def _relayable(host: str) -> bool:
    """Whether ``host`` is an IPv4 address other than 0.0.0.0. Remembered: a node sees the same few
    phones and trunks call after call, and parsing the address each time was most of a bridge."""
    try:
        return not ipaddress.IPv4Address(host).is_unspecified
    except ValueError:
        return False


def fd_headroom(relays: int, spare_pairs: int, pairs: int | None = None, reserve: int = FD_RESERVE) -> int:
    """Make room among the process's file descriptors for ``relays`` relays (four each: RTP and RTCP
    of two legs), ``spare_pairs`` spare port pairs (two each) and ``reserve`` for the rest of the
    node — no more than the ``pairs`` of the port range hold, in relays and spares together: a soft
    RLIMIT_NOFILE below that is raised toward the hard limit. Returns how many spare pairs to keep:
    all of them when they fit; else those that fit beside the relays, or up to a quarter of the
    descriptors past ``reserve`` if that is more (logged). Spares may take descriptors that relays
    would need later because they are only a saving: the engine closes them when a relay finds no
    descriptor left (EMFILE), so a limit too low for every call ``max_calls`` allows keeps spares for
    the calls it does allow."""
    needed = 4 * relays + reserve
    engine = 4 * relays + 2 * spare_pairs
    wanted = reserve + (engine if pairs is None else min(engine, 2 * pairs))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return spare_pairs
    raised = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if raised > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
            log.info("file descriptor limit raised from %d to %d for %d relays and %d spare port pairs",
                     soft, raised, relays, spare_pairs)
            soft = raised
        except (ValueError, OSError) as exc:
            log.warning("file descriptor limit %d not raised to %d: %s", soft, raised, exc)
    if soft >= wanted:
        return spare_pairs
    fit = min(spare_pairs, max(0, (soft - needed) // 2, (soft - reserve) // 4))
    log.warning("file descriptor limit %d (hard %s) is below the %d that %d relays and %d spare port pairs "
                "need: %d spare pairs kept (closed when a relay finds no descriptor)", soft,
                "unlimited" if hard == resource.RLIM_INFINITY else hard, wanted, relays, spare_pairs, fit)
    return fit


class MediaPlane:
    """The relay engine of one node; see the module doc."""

    def __init__(self, config: MediaConfig, *, timeout_ms: int = MEDIA_TIMEOUT_MS,
                 socket_buffer: int = SOCKET_BUFFER, calls: CallsConfig | None = None,
                 data_dir: str | os.PathLike[str] = ".", max_calls: int | None = None):
        self.config = config
        # Recordings: on when [calls] record is; the folder they go to, and the data folder their
        # paths in the records are relative to.
        self.data_dir = os.fspath(data_dir)
        self.recordings_dir = calls.recordings_dir if calls is not None and calls.record else None
        self._recording: dict[str, str] = {}  # call id -> path relative to data_dir, being recorded
        self._recorded: dict[str, str] = {}  # released, not yet taken
        self.recordings_started = 0
        self.recording_errors = 0
        self.timeout_ms = timeout_ms
        # Descriptors: a relay for each call allowed at once ([limits] max_calls; its default when not
        # given), and the spares; no more, together, than the pairs of the range.
        pairs = (config.rtp_port_max - config.rtp_port_min + 1) // 2
        if max_calls is None:
            max_calls = LimitsConfig().max_calls
        relays = min(max_calls, pairs // 2)
        self.spare_pairs = fd_headroom(relays, min(config.spare_port_pairs, pairs), pairs)
        self.engine = Engine(config.rtp_port_min, config.rtp_port_max, config.address,
                             socket_buffer=socket_buffer, spare_pairs=self.spare_pairs)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._bridged: dict[str, MediaBridge] = {}  # live relays by call id
        self._figures: dict[str, dict[str, LegFigures]] = {}  # released, not yet taken
        self._digits: dict[str, list[str]] = {}
        self.relays_added = 0
        self.relay_errors = 0
        self._dropped = 0
        self.prompts: dict[str, Prompt] = {}  # by the config's name for them, converted once
        # The call layer's ear: called with each DtmfDigit and PlaybackDone (bindings/node.py).
        self.listener = None

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Run the engine's loop in its thread; read its events on ``loop``."""
        self._loop = loop
        self._thread = threading.Thread(target=self._serve, name="media-engine", daemon=True)
        self._thread.start()
        loop.add_reader(self.engine.event_fd, self.drain_events)
        log.info("media on %s, ports %d-%d", self.config.address, self.config.rtp_port_min,
                 self.config.rtp_port_max)

    def _serve(self) -> None:
        try:
            self.engine.serve(SERVE_TIMEOUT_MS)
        except Exception:  # the engine's loop must not die silently
            log.exception("media engine loop failed")

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the engine's loop, join its thread, close every socket. Safe to call twice."""
        if self._loop is not None:
            try:
                self._loop.remove_reader(self.engine.event_fd)
            except (ValueError, OSError):
                pass
            self._loop = None
        self.engine.stop()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.error("media engine thread did not stop within %.1f s", timeout)
            self._thread = None
        if self._bridged:
            # Calls still relayed at the very end (the node's drain ends them first): keep their figures.
            for call_id in list(self._bridged):
                self.release(call_id)
        self.drain_events()
        self.engine.close()

    # -- commands from the call layer -----------------------------------------------------------
    def bridge(self, event: MediaBridge) -> None:
        """Relay the call's two legs, or move an existing relay's peers (a re-INVITE)."""
        peer_a, peer_b = _peer(event.leg_a_remote), _peer(event.leg_b_remote)
        call_id = event.call_id
        try:
            if call_id in self._bridged:
                self.engine.patch_relay(call_id, {"a": {"peer": peer_a}, "b": {"peer": peer_b}})
            else:
                options: dict[str, Any] = {"a": {"peer": peer_a}, "b": {"peer": peer_b},
                                           "timeout_ms": self.timeout_ms}
                if event.codec:
                    options["codec"] = event.codec
                if event.dtmf_pt is not None:
                    options["dtmf_pt"] = event.dtmf_pt
                self.engine.add_relay(call_id, event.leg_a_port, event.leg_b_port, options)
                self.relays_added += 1
                if self.recordings_dir is not None or event.amd:
                    self._record(call_id, event.amd)
        except (OSError, ValueError, RuntimeError) as exc:
            # A port held by another process, a range used up: the call goes on without media, and
            # the operator sees why.
            self.relay_errors += 1
            log.error("media for call %s not relayed (ports %d/%d): %s", call_id, event.leg_a_port,
                      event.leg_b_port, exc)
            return
        self._bridged[call_id] = event

    def _record(self, call_id: str, amd: bool = False) -> None:
        """Start recording the relay just added, and/or listening for an answering machine on its leg
        a (``amd``); a folder or file that cannot be made is logged and the call goes on unrecorded."""
        if amd and self.recordings_dir is None:
            try:
                self.engine.capture_start(call_id, lambda rate: AmdTap(self._amd_decided(call_id)))
            except (KeyError, ValueError, RuntimeError) as exc:
                log.error("call %s: no answering-machine detection: %s", call_id, exc)
            return
        day = time.strftime("%Y/%m/%d", time.gmtime())
        folder = os.path.join(self.recordings_dir, *day.split("/"))
        name = recording_name(call_id)
        relative = os.path.join(folder, name + ".wav")
        try:
            os.makedirs(os.path.join(self.data_dir, folder), exist_ok=True)
            # The same Call-ID again the same day (a retried campaign attempt): a file of its own.
            for n in range(2, 1002):
                if not os.path.exists(os.path.join(self.data_dir, relative)):
                    break
                relative = os.path.join(folder, f"{name}~{n}.wav")
            else:
                raise FileExistsError(f"{relative}: a thousand recordings of this call already")
            path = os.path.join(self.data_dir, relative)
            if amd:
                self.engine.capture_start(call_id, lambda rate: CaptureFanout([
                    CallRecording(path, time.monotonic_ns(), clock_rate=rate), AmdTap(self._amd_decided(call_id))]))
            else:
                self.engine.record_start(call_id, path)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            self.recording_errors += 1
            log.error("call %s not recorded: %s", call_id, exc)
            return
        self.recordings_started += 1
        self._recording[call_id] = relative

    def _amd_decided(self, call_id: str):
        """The detector's callback (it runs in the engine's thread): the verdict reaches the listener
        on the event loop."""
        def decided(decision) -> None:
            loop, listener = self._loop, self.listener
            if loop is not None and listener is not None:
                loop.call_soon_threadsafe(listener, AmdVerdict(call_id, decision.verdict, decision.reason))
        return decided

    def release(self, call_id: str) -> dict[str, LegFigures] | None:
        """Stop relaying the call; its final figures ``{"a": ..., "b": ...}`` (None if never relayed)."""
        if self._bridged.pop(call_id, None) is None:
            return None
        relative = self._recording.pop(call_id, None)
        if relative is not None:
            # Stopped before the relay goes: the buffers play out what they hold and the file closes.
            try:
                summary = self.engine.record_stop(call_id)
            except (KeyError, ValueError, RuntimeError, OSError) as exc:
                summary = {"error": repr(exc), "seconds": 0.0}
            if summary.get("error"):
                log.error("call %s: recording %s cut short: %s", call_id, relative, summary["error"])
            log.info("call %s: recorded %.1f s to %s", call_id, summary.get("seconds", 0.0), relative)
            self._recorded[call_id] = relative
        try:
            figures = self.engine.remove_relay(call_id)
        except (KeyError, ValueError, RuntimeError) as exc:
            log.error("media for call %s: relay not removed: %s", call_id, exc)
            return None
        self._figures[call_id] = figures
        if self.engine.events_waiting:
            self.drain_events()  # the relay's last digits, before its record is written
        return figures

    def take_figures(self, call_id: str) -> tuple[dict[str, LegFigures] | None, str]:
        """The released call's figures and the DTMF digits its legs carried (forgotten here)."""
        digits = self._digits.pop(call_id, None)
        return self._figures.pop(call_id, None), "".join(digits) if digits else ""

    def recording_of(self, call_id: str) -> str:
        """The path (relative to the data folder) the call is being recorded to; "" when it is not."""
        return self._recording.get(call_id, "")

    def take_recording(self, call_id: str, answered: bool = True) -> str:
        """The released call's recording, relative to the data folder ("" when none; forgotten here).
        The file of a call never answered is deleted: only answered calls are recorded."""
        relative = self._recorded.pop(call_id, None)
        if not relative:
            return ""
        if answered:
            return relative
        try:
            os.unlink(os.path.join(self.data_dir, relative))
        except OSError as exc:
            log.warning("call %s: recording %s of an unanswered call not deleted: %s", call_id, relative, exc)
        return ""

    def active(self) -> int:
        return len(self._bridged)

    # -- prompts ----------------------------------------------------------------------------------
    def load_prompt(self, spec: str) -> Prompt:
        """The prompt ``spec`` names, read and converted once (ValueError/OSError when it cannot be)."""
        prompt = self.prompts.get(spec)
        if prompt is None:
            prompt = self.prompts[spec] = from_spec(spec)
        return prompt

    def play(self, call_id: str, leg: str, spec: str, loop: bool = False) -> bool:
        """Play a prompt to the call's leg; False (logged) when it cannot be played, in which case
        the listener hears at once that it is done, so that a menu goes on."""
        try:
            self.engine.play(call_id, leg, self.load_prompt(spec), loop)
            return True
        except (KeyError, ValueError, OSError, RuntimeError) as exc:
            log.error("call %s: prompt %r not played on leg %s: %s", call_id, spec, leg, exc)
            if self.listener is not None and not loop:
                self.listener(PlaybackDone(call_id, leg, -1, 0, "done"))
            return False

    def stop_playback(self, call_id: str, leg: str) -> None:
        try:
            self.engine.stop_playback(call_id, leg)
        except (KeyError, ValueError, RuntimeError):
            pass

    @property
    def packets_forwarded(self) -> int:
        return self.engine.packets_forwarded

    # -- events from the engine -----------------------------------------------------------------
    def drain_events(self) -> None:
        """Read what the engine has queued (runs on the event loop when ``event_fd`` is readable)."""
        for event in self.engine.events():
            if isinstance(event, DtmfDigit):
                if event.relay_id is not None and event.digit is not None:
                    self._digits.setdefault(event.relay_id, []).append(event.digit)
                    if self.listener is not None:
                        self.listener(event)
                log.info("call %s: DTMF %s on leg %s", event.relay_id, event.digit, event.leg)
            elif isinstance(event, PlaybackDone):
                if self.listener is not None and event.relay_id is not None:
                    self.listener(event)
            elif isinstance(event, MediaTimeout):
                log.warning("call %s: no RTP on leg %s for %d ms", event.relay_id, event.leg, event.idle_ms)
            elif isinstance(event, Latched):
                log.debug("call %s: leg %s %slatched to %s:%d%s", event.relay_id, event.leg,
                          "re" if event.relatched else "", event.host, event.port,
                          " (RTCP)" if event.rtcp else "")
            elif isinstance(event, SsrcChanged):
                log.debug("call %s: leg %s SSRC %08x -> %08x", event.relay_id, event.leg,
                          event.old_ssrc, event.new_ssrc)
        dropped = self.engine.events_dropped
        if dropped != self._dropped:
            log.warning("media engine dropped %d events (nobody read them in time)", dropped - self._dropped)
            self._dropped = dropped
