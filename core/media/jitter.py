"""The adaptive jitter buffer of a call recording: packets of one leg in, one 20 ms frame of 16-bit samples
out per tick of the playout clock, so that late, lost, duplicated and reordered packets still give a
continuous, click-free signal (RFC 3550 §6.4.1 and A.8 define the jitter; the playout algorithm is the
classic receiver-side one: Ramjee et al., "Adaptive playout mechanisms", INFOCOM 1994, with the delay
measured over a window of recent packets rather than by an exponential average, so it settles in a second).

Time is an argument (``now``, seconds): the recorder replays the arrival times the engine stamped on each
packet, so the buffer is deterministic and its tests need no clock.

- Playout by timestamp, identity by sequence number: a packet plays at the tick when the playout point
  reaches its RTP timestamp, whatever order it arrived in; one already in the buffer or already played
  (same sequence number) is a duplicate and dropped.
- A packet that arrives after its playout time is late: dropped and counted (``late``).
- A missing frame is concealed: the last frame is repeated with a fade to silence over ``conceal_frames``
  frames (repetition, the simplest of the packet-loss concealments G.711 Appendix I refines), then
  silence; ``concealed`` counts the repeated frames, ``silent`` the silent ones.
- The playout delay adapts to the measured jitter within ``[min_delay, max_delay]``: the delay needed
  is the spread of transit times (arrival − timestamp) over the last ``window`` packets (its
  ``quantile``) plus a margin; when the current delay is short of it the buffer stretches (one
  concealed frame without advancing the playout point); when it is over by more than a frame the buffer
  compresses by skipping a missing frame (nothing is lost), and skips a frame that is there only when over
  by more than ``drop_excess`` (a recording loses nothing by a little extra delay, but would lose the frame).
  At most one change every ``adapt_every`` frames; a new talkspurt starts at the delay measured then.
- A timestamp far ahead of the playout point or a new SSRC (another source behind the same leg) starts a
  new timeline; a long silence (no packet for ``idle_frames`` ticks) ends the current one, so a source that
  resumes after silence suppression plays after the delay measured then.
"""

from __future__ import annotations

from collections import deque
from typing import NamedTuple

import numpy as np

M32 = 0xFFFFFFFF

AUDIO = "audio"          # the samples of a packet (or of several, if their sizes are not one frame)
CONCEALED = "concealed"  # a repetition of the last frame, fading
SILENCE = "silence"      # nothing to play: lost past concealment, or a pause in the stream
IDLE = "idle"            # no timeline yet (nothing has arrived, or waiting for the playout delay)


class Frame(NamedTuple):
    kind: str
    samples: np.ndarray  # int16, frame_samples long


def _signed32(value: int) -> int:
    value &= M32
    return value - (1 << 32) if value & 0x80000000 else value


class JitterBuffer:
    """One leg's packets in, frames out (see the module's text for the rules)."""

    def __init__(self, clock_rate: int = 8000, frame_samples: int = 160, *, min_delay: float = 0.02,
                 max_delay: float = 0.3, initial_delay: float = 0.06, window: int = 100, quantile: float = 0.95,
                 margin: float = 0.01, adapt_every: int = 10, conceal_frames: int = 3, idle_frames: int = 50,
                 drop_excess: float = 0.08, capacity: int = 512):
        if not 0 < min_delay <= initial_delay <= max_delay:
            raise ValueError("need 0 < min_delay <= initial_delay <= max_delay")
        self.rate = clock_rate
        self.n = frame_samples
        self.frame_seconds = frame_samples / clock_rate
        self.min_delay, self.max_delay, self.initial_delay = min_delay, max_delay, initial_delay
        self.quantile, self.margin, self.drop_excess = quantile, margin, drop_excess
        self._delay = initial_delay
        self.adapt_every, self.conceal_frames, self.idle_frames = adapt_every, conceal_frames, idle_frames
        self.capacity = capacity
        self.silence = np.zeros(frame_samples, dtype=np.int16)
        self._transits: deque[float] = deque(maxlen=window)
        self._buffer: dict[int, tuple[int, np.ndarray]] = {}  # extended timestamp -> (seq, samples)
        self._seqs: set[int] = set()                            # sequence numbers in the buffer
        self._played: deque[int] = deque(maxlen=256)            # recently played sequence numbers
        self._played_set: set[int] = set()
        self._ssrc: int | None = None
        self._ts_last: int | None = None  # last raw timestamp seen, and its extension
        self._ext_last = 0
        self._started = False
        self._next = 0          # extended timestamp of the next frame out
        self._last: np.ndarray | None = None
        self._missing_run = 0
        self._since_adapt = 0
        self._empty_ticks = 0
        self.counters = {name: 0 for name in (
            "received", "played", "late", "duplicate", "overflow", "concealed", "silent", "stretched",
            "compressed", "discarded", "resyncs")}

    # -- in --------------------------------------------------------------------------------------

    def push(self, seq: int, timestamp: int, samples: np.ndarray, now: float, ssrc: int = 0) -> str:
        """A packet of ``samples`` (decoded, int16) that arrived at ``now``; returns what became of it:
        "queued", "duplicate", "late", "overflow"."""
        c = self.counters
        c["received"] += 1
        seq &= 0xFFFF
        if self._ssrc is not None and ssrc != self._ssrc:
            self._resync()
        self._ssrc = ssrc
        if self._ts_last is None:
            ext = timestamp & M32
        else:
            ext = self._ext_last + _signed32(timestamp - self._ts_last)
        if self._started:
            ahead = (ext - self._next) / self.rate
            if ahead > self.max_delay + 1.0 or ahead < -(self.max_delay + 1.0):
                self._resync()  # another timeline (a jump of the sender's clock): start over
                ext = timestamp & M32
        if self._ts_last is None or ext > self._ext_last:
            self._ts_last, self._ext_last = timestamp & M32, ext
        if seq in self._seqs or seq in self._played_set:
            c["duplicate"] += 1
            return "duplicate"
        self._transits.append(now - ext / self.rate)  # a late packet counts: the delay must grow
        if self._started and ext + len(samples) <= self._next:
            c["late"] += 1
            return "late"
        if len(self._buffer) >= self.capacity:
            c["overflow"] += 1
            return "overflow"
        self._buffer[ext] = (seq, np.asarray(samples, dtype=np.int16))
        self._seqs.add(seq)
        return "queued"

    # -- out -------------------------------------------------------------------------------------

    def pop(self, now: float) -> Frame:
        """The frame to play at ``now`` (call it once per frame time)."""
        if not self._started:
            if not self._buffer:
                return Frame(IDLE, self.silence)
            first = min(self._buffer)
            if now < self._arrival_base() + first / self.rate + self._target_delay():
                return Frame(IDLE, self.silence)
            self._started = True
            self._next = first
            self._since_adapt = 0
            self._empty_ticks = 0
        self._since_adapt += 1
        have = self._next in self._buffer
        if self._since_adapt >= self.adapt_every and len(self._transits) >= 10:
            delay = self._delay = now - self._next / self.rate - self._arrival_base()
            target = self._target_delay()
            if delay < target - self.frame_seconds / 2:
                self._since_adapt = 0
                self.counters["stretched"] += 1
                return self._conceal()  # the playout point stays: one frame more of delay
            # too much delay: skip a missing frame (nothing is lost), a present one only when far over
            excess = delay - target
            if self._next + self.n in self._buffer and (
                    (not have and excess > self.frame_seconds) or (have and excess > self.drop_excess)):
                self._since_adapt = 0
                self.counters["compressed"] += 1
                self._drop_before(self._next + self.n)  # skip a frame (a missing one when it can)
                self._next += self.n
                have = self._next in self._buffer
        frame = self._take(have)
        self._next += self.n
        self._drop_before(self._next)
        if not self._buffer:
            self._empty_ticks += 1
            if self._empty_ticks >= self.idle_frames:
                self._started = False  # a long pause: the next packet starts a new talkspurt
                self._last = None
                self._missing_run = 0
        else:
            self._empty_ticks = 0
        return frame

    def _take(self, have: bool) -> Frame:
        n, start = self.n, self._next
        if have and len(self._buffer[start][1]) == n:
            seq, samples = self._buffer.pop(start)
            self._retire(seq)
            return self._play(samples)
        # packets of another size than a frame: gather the samples of [start, start + n)
        out = np.zeros(n, dtype=np.int16)
        covered = 0
        for ext, (seq, samples) in list(self._buffer.items()):
            lo, hi = max(ext, start), min(ext + len(samples), start + n)
            if lo < hi:
                out[lo - start:hi - start] = samples[lo - ext:hi - ext]
                covered += hi - lo
                if ext + len(samples) <= start + n:
                    del self._buffer[ext]
                    self._retire(seq)
        if covered == 0:
            return self._conceal()
        return self._play(out)

    def _play(self, samples: np.ndarray) -> Frame:
        self.counters["played"] += 1
        self._last = samples
        self._missing_run = 0
        return Frame(AUDIO, samples)

    def _conceal(self) -> Frame:
        self._missing_run += 1
        k, m = self._missing_run, self.conceal_frames
        if self._last is None or k > m:
            self.counters["silent"] += 1
            return Frame(SILENCE, self.silence)
        self.counters["concealed"] += 1
        ramp = np.linspace(1 - (k - 1) / m, 1 - k / m, self.n, endpoint=False)
        return Frame(CONCEALED, (self._last * ramp).astype(np.int16))

    # -- helpers ---------------------------------------------------------------------------------

    def _retire(self, seq: int) -> None:
        self._seqs.discard(seq)
        if len(self._played) == self._played.maxlen:
            self._played_set.discard(self._played[0])
        self._played.append(seq)
        self._played_set.add(seq)

    def _drop_before(self, ext_limit: int) -> None:
        for ext in [e for e, (_, s) in self._buffer.items() if e + len(s) <= ext_limit]:
            seq, _ = self._buffer.pop(ext)
            self._retire(seq)
            self.counters["discarded"] += 1

    def _arrival_base(self) -> float:
        """The smallest transit (arrival − timestamp) of the window: the packet that came fastest."""
        return min(self._transits)

    def _target_delay(self) -> float:
        if len(self._transits) < 10:
            return self.initial_delay
        ordered = sorted(self._transits)
        spread = ordered[min(len(ordered) - 1, int(self.quantile * len(ordered)))] - ordered[0]
        return min(self.max_delay, max(self.min_delay, spread + self.margin))

    def _resync(self) -> None:
        self.counters["resyncs"] += 1
        self._buffer.clear()
        self._seqs.clear()
        self._played.clear()
        self._played_set.clear()
        self._transits.clear()
        self._ts_last = None
        self._started = False
        self._last = None
        self._missing_run = 0

    # -- figures ---------------------------------------------------------------------------------

    @property
    def delay(self) -> float:
        """The playout delay (seconds) at the last adaptation check: how long after the fastest packet of
        the window a frame plays."""
        return self._delay

    @property
    def target_delay(self) -> float:
        """The delay the measured jitter asks for, within [min_delay, max_delay]."""
        return self._target_delay()

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    @property
    def started(self) -> bool:
        return self._started
