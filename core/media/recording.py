"""Call recording: the packets of both legs of a relay, through one adaptive jitter buffer per leg
(core.media.jitter), decoded from G.711 (payload type 0: μ-law, 8: A-law; RFC 3551 §4.5.14) into a stereo
WAV file: left = what leg a's phone sends (the caller), right = what leg b's phone sends (the callee),
8 kHz 16-bit PCM. The engine (core/_rtp.pyx) copies each packet of a recorded relay into a ring with its
arrival time; ``CallRecording.feed`` replays those times through the buffers, so the two channels stay
aligned on the engine's clock whatever the network did to each leg.

A recording survives a crash of the process: the WAV header's sizes (RIFF and data chunk) are rewritten
after every append, after the data, so a file cut off at any moment is a valid WAV holding everything
appended before the last header update; ``repair_wav`` makes a file whose header is older than its data
(or that stops in the middle of a frame) whole again. Nothing is fsync'ed: a process crash loses nothing
written, a machine crash may lose what the page cache held.

Packets of other payload types (RFC 4733 events, comfort noise) are not audio here: the buffer conceals
their time like a loss.

Two implementations of the buffers and of ``feed``'s per-packet/per-frame loop: ``core._jitter`` (Cython:
the buffer in C, and ``feed_records`` decoding and pushing the capture records and popping both legs into
the stereo block without a Python object per packet or frame) and ``core.media.jitter`` (plain Python, the
readable specification and differential oracle). A recording uses the Cython one when it is built;
``IMPLEMENTATIONS`` names both, and ``CallRecording(..., impl="py")`` picks one. Both write the same bytes.
"""

from __future__ import annotations

import os
import struct

import numpy as np

from core.media import g711
from core.media import jitter as _pyjitter
from core.media.jitter import IDLE

try:
    from core import _jitter
except ImportError:  # the extension is not built: `python setup.py build_ext --inplace`
    _jitter = None

IMPLEMENTATIONS = {"py": _pyjitter, "c": _jitter}
JitterBuffer = (_jitter or _pyjitter).JitterBuffer

RATE = 8000
HEADER_BYTES = 44
DECODERS = {0: g711.ULAW_DECODE, 8: g711.ALAW_DECODE}

# The records the engine hands over (core/_rtp.pxd CaptureRec): 24 bytes of header, then the payload.
CAPTURE_BYTES = 488
CAPTURE_DTYPE = np.dtype([
    ("arrival_ns", "<i8"), ("timestamp", "<u4"), ("ssrc", "<u4"), ("seq", "<u2"), ("length", "<u2"),
    ("payload_type", "u1"), ("marker", "u1"), ("leg", "u1"), ("pad", "u1"), ("payload", "u1", CAPTURE_BYTES),
])


def wav_header(channels: int, rate: int, data_bytes: int) -> bytes:
    """The 44-byte header of a PCM 16-bit WAV (RIFF/WAVE, "fmt " chunk of 16 bytes, "data" chunk)."""
    block = 2 * channels
    return (b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVE"
            + b"fmt " + struct.pack("<IHHIIHH", 16, 1, channels, rate, rate * block, block, 16)
            + b"data" + struct.pack("<I", data_bytes))


class WavWriter:
    """A 16-bit PCM WAV file being written: the header always describes the data already written."""

    def __init__(self, path, channels: int = 2, rate: int = RATE):
        self.path = os.fspath(path)
        self.channels, self.rate = channels, rate
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        self.data_bytes = 0
        os.write(self.fd, wav_header(channels, rate, 0))

    def append(self, samples: np.ndarray) -> None:
        """``samples``: int16, shape (frames, channels). Data first, then the sizes that cover it."""
        data = np.ascontiguousarray(samples, dtype="<i2")
        if not data.nbytes:
            return
        view = memoryview(data).cast("B")  # written from the array itself, without a copy
        while view:
            n = os.pwrite(self.fd, view, HEADER_BYTES + self.data_bytes)
            self.data_bytes += n
            view = view[n:]
        # the RIFF size (offset 4) and the data size (40) in one write: bytes 4-43 of the header
        os.pwrite(self.fd, wav_header(self.channels, self.rate, self.data_bytes)[4:], 4)

    @property
    def frames(self) -> int:
        return self.data_bytes // (2 * self.channels)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def repair_wav(path) -> int:
    """Make a cut-off recording whole: drop a trailing partial frame and set the header's sizes to the
    data there is. Returns the number of frames. Refuses a file that is not a 16-bit PCM WAV of ours."""
    path = os.fspath(path)
    with open(path, "r+b") as f:
        head = f.read(HEADER_BYTES)
        if len(head) < HEADER_BYTES or head[:4] != b"RIFF" or head[8:16] != b"WAVE" + b"fmt ":
            raise ValueError(f"{path}: not a WAV file with the header this recorder writes")
        fmt_len, tag, channels, rate, _, block, bits = struct.unpack("<IHHIIHH", head[16:36])
        if fmt_len != 16 or tag != 1 or bits != 16 or head[36:40] != b"data" or block != 2 * channels:
            raise ValueError(f"{path}: not a 16-bit PCM WAV with a 44-byte header")
        size = f.seek(0, os.SEEK_END)
        data = (size - HEADER_BYTES) // block * block
        f.truncate(HEADER_BYTES + data)
        f.seek(0)
        f.write(wav_header(channels, rate, data))
    return data // block


class CallRecording:
    """The jitter buffers and the WAV file of one recorded relay.

    ``start_ns`` is the engine's clock when recording began: tick k of the playout clock is at
    ``start_ns + k·20 ms``, and at each tick each leg's buffer gives one frame (silence until its leg's
    first packet has waited out the playout delay). ``impl`` ("py" or "c"): which implementation of the
    buffers and of the feed loop; by default the Cython one when it is built."""

    def __init__(self, path, start_ns: int, clock_rate: int = RATE, frame_ms: int = 20, *,
                 impl: str | None = None, **jitter):
        if clock_rate != RATE:
            raise ValueError("recordings are of G.711 at 8 kHz")
        module = (_jitter or _pyjitter) if impl is None else IMPLEMENTATIONS[impl]
        if module is None:
            raise ValueError(f"core._jitter is not built: no {impl!r} implementation")
        self._fast = module is _jitter
        self.writer = WavWriter(path, 2, RATE)
        self.frame_samples = RATE * frame_ms // 1000
        self.tick_ns = frame_ms * 1_000_000
        self.next_tick_ns = start_ns
        self.legs = (module.JitterBuffer(RATE, self.frame_samples, **jitter),
                     module.JitterBuffer(RATE, self.frame_samples, **jitter))
        self.other_payload = 0   # packets that were not G.711 (DTMF events, comfort noise)
        self.dropped = 0         # packets the engine could not hand over (its ring was full)
        self.closed = False
        self.error: str | None = None  # why the recording stopped early (e.g. the disk is full)

    @property
    def path(self) -> str:
        return self.writer.path

    def feed(self, records: np.ndarray, now_ns: int) -> None:
        """Packets (``CAPTURE_DTYPE`` records, in arrival order) and the ticks up to ``now_ns``: the
        frames of every tick whose time has come are decoded and written."""
        if self._fast and records.dtype == CAPTURE_DTYPE:
            frames, self.next_tick_ns, other = _jitter.feed_records(
                self.legs[0], self.legs[1], records, self.next_tick_ns, self.tick_ns, now_ns,
                DECODERS[0], DECODERS[8])
            self.other_payload += other
            if len(frames):
                self.writer.append(frames)
            return
        out = []
        for rec in records:
            arrival = int(rec["arrival_ns"])
            while self.next_tick_ns <= arrival:
                out.append(self._tick())
            table = DECODERS.get(int(rec["payload_type"]))
            if table is None:
                self.other_payload += 1
                continue
            samples = table[rec["payload"][:int(rec["length"])]]
            self.legs[int(rec["leg"])].push(int(rec["seq"]), int(rec["timestamp"]), samples, arrival / 1e9,
                                            int(rec["ssrc"]))
        while self.next_tick_ns <= now_ns:
            out.append(self._tick())
        if out:
            self.writer.append(np.concatenate(out))

    def _tick(self) -> np.ndarray:
        now = self.next_tick_ns / 1e9
        self.next_tick_ns += self.tick_ns
        a, b = (jb.pop(now).samples for jb in self.legs)
        return np.column_stack((a, b))

    def finish(self, now_ns: int) -> dict:
        """Play out what the buffers still hold (at most their delay), close the file; the summary."""
        if self.closed:
            return self.summary()
        limit = now_ns + int(1e9 * max(jb.max_delay for jb in self.legs)) + 2 * self.tick_ns
        out = []
        while any(jb.buffered for jb in self.legs) and self.next_tick_ns <= limit:
            out.append(self._tick())
        if out:
            self.writer.append(np.concatenate(out))
        self.writer.close()
        self.closed = True
        return self.summary()

    def summary(self) -> dict:
        return {"path": self.path, "frames": self.writer.frames, "seconds": self.writer.frames / RATE,
                "a": dict(self.legs[0].counters), "b": dict(self.legs[1].counters),
                "other_payload": self.other_payload, "dropped": self.dropped, "error": self.error}


__all__ = ["CAPTURE_DTYPE", "CallRecording", "IDLE", "IMPLEMENTATIONS", "JitterBuffer", "WavWriter", "repair_wav",
           "wav_header"]
