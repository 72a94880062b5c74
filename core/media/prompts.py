"""What the media engine plays to a leg: announcements read from WAV files and call-progress tones, as
16-bit samples at 8 kHz converted once to G.711 frames (ITU-T G.711; RTP payload types 0 and 8, RFC 3551
§4.5.14) that the engine sends every 20 ms (``Engine.play``).

- ``Prompt.from_wav``: a WAV file of 8 kHz, mono, 16-bit PCM (what IVR prompts are recorded as); other
  formats are refused by name rather than resampled behind the caller's back.
- Tones: ``dtmf`` (the pairs of ITU-T Q.23: 697/770/852/941 Hz × 1209/1336/1477/1633 Hz), ``ringback``
  (440 + 480 Hz, 2 s on, 4 s off), ``busy`` (480 + 620 Hz, 0.5 s on, 0.5 s off), ``tone`` (one frequency
  or a sum). The levels are those of the North American precise tone plan (ANSI T1.401): ringback
  −19 dBm0 per frequency, busy −24 dBm0, DTMF −7 dBm0 per frequency.
- ``PlaybackDone``: the engine's event when a playback ends (its ``reason``: "done", "stopped",
  "replaced" by another playback, "removed" with its relay).
"""

from __future__ import annotations

import wave
from typing import NamedTuple

import numpy as np

from core.media import g711

RATE = 8000
FRAME_MS = 20
# dBm0 → peak of a sine on the 16-bit scale: G.711's 0 dBm0 sine peaks at 5,672 of 8,159 on μ-law's
# 14-bit scale (the +3.17 dBm0 full-scale sine, G.711 Table 5), ×4 on 16 bits.
_PEAK_0DBM0 = 22_690

DTMF_LOW = {"1": 697, "2": 697, "3": 697, "A": 697, "4": 770, "5": 770, "6": 770, "B": 770,
            "7": 852, "8": 852, "9": 852, "C": 852, "*": 941, "0": 941, "#": 941, "D": 941}
DTMF_HIGH = {"1": 1209, "4": 1209, "7": 1209, "*": 1209, "2": 1336, "5": 1336, "8": 1336, "0": 1336,
             "3": 1477, "6": 1477, "9": 1477, "#": 1477, "A": 1633, "B": 1633, "C": 1633, "D": 1633}

PAYLOAD_TYPES = {"PCMU": 0, "PCMA": 8}   # RFC 3551 Table 4
CODECS = {pt: codec for codec, pt in PAYLOAD_TYPES.items()}


class PlaybackDone(NamedTuple):
    relay_id: object
    leg: str
    playback_id: int
    frames: int   # frames sent
    reason: str   # "done", "stopped", "replaced", "removed"


class Prompt:
    """Samples to play (int16, 8 kHz), padded with silence to whole frames; ``payload(codec)`` is the
    G.711 encoding, computed once per codec."""

    def __init__(self, samples, name: str = "", frame_samples: int = RATE * FRAME_MS // 1000):
        samples = np.asarray(samples, dtype=np.int16).ravel()
        pad = (-len(samples)) % frame_samples
        self.samples = np.concatenate([samples, np.zeros(pad, dtype=np.int16)]) if pad else samples.copy()
        self.samples.flags.writeable = False
        self.name = name
        self.frame_samples = frame_samples
        self._encoded: dict[str, bytes] = {}

    @classmethod
    def from_wav(cls, path, name: str | None = None) -> "Prompt":
        with wave.open(str(path), "rb") as w:
            rate, channels, width = w.getframerate(), w.getnchannels(), w.getsampwidth()
            if (rate, channels, width) != (RATE, 1, 2):
                raise ValueError(f"{path}: {rate} Hz, {channels} channel(s), {8 * width}-bit; a prompt must be "
                                 f"{RATE} Hz mono 16-bit PCM")
            data = w.readframes(w.getnframes())
        return cls(np.frombuffer(data, dtype="<i2"), name=str(path) if name is None else name)

    def payload(self, codec: str = "PCMU") -> bytes:
        """The whole prompt in ``codec`` ("PCMU" or "PCMA"): frames back to back."""
        out = self._encoded.get(codec)
        if out is None:
            out = self._encoded[codec] = g711.encode(codec, self.samples)
        return out

    def frames(self, codec: str = "PCMU") -> list[bytes]:
        data, n = self.payload(codec), self.frame_samples
        return [data[i:i + n] for i in range(0, len(data), n)]

    @property
    def duration(self) -> float:
        return len(self.samples) / RATE

    def __len__(self) -> int:
        return len(self.samples) // self.frame_samples

    def __repr__(self) -> str:
        return f"Prompt({self.name!r}, {self.duration:.2f} s)"


def _amplitude(dbm0: float) -> float:
    return _PEAK_0DBM0 * 10 ** (dbm0 / 20)


def _sines(freqs, duration_ms: float, dbm0: float, phase_samples: int = 0) -> np.ndarray:
    n = int(round(RATE * duration_ms / 1000))
    t = (np.arange(n) + phase_samples) / RATE
    out = np.zeros(n)
    for f in freqs:
        out += _amplitude(dbm0) * np.sin(2 * np.pi * f * t)
    return out


def _ramped(x: np.ndarray, ramp_ms: float = 2.0) -> np.ndarray:
    """A few milliseconds of ramp at both ends, so a burst of tone starts and stops without a click."""
    k = min(len(x) // 2, int(RATE * ramp_ms / 1000))
    if k:
        r = np.linspace(0.0, 1.0, k, endpoint=False)
        x[:k] *= r
        x[-k:] *= r[::-1]
    return x


def _cadence(freqs, on_ms: float, off_ms: float, cycles: int, dbm0: float, name: str) -> Prompt:
    parts = []
    for _ in range(cycles):
        parts.append(_ramped(_sines(freqs, on_ms, dbm0)))
        parts.append(np.zeros(int(RATE * off_ms / 1000)))
    return Prompt(np.clip(np.concatenate(parts), -32768, 32767).astype(np.int16), name=name)


def tone(freqs, duration_ms: float = 1000, dbm0: float = -10.0, name: str | None = None) -> Prompt:
    """A steady tone: one frequency (Hz) or a sequence of them summed, ``dbm0`` per frequency. Not ramped:
    a tone played in a loop joins itself when the frame holds whole periods (1 kHz in 20 ms does)."""
    freqs = [freqs] if isinstance(freqs, (int, float)) else list(freqs)
    x = _sines(freqs, duration_ms, dbm0)
    return Prompt(np.clip(x, -32768, 32767).astype(np.int16), name=name or "+".join(f"{f:g}" for f in freqs))


def dtmf(digits: str, on_ms: float = 100, off_ms: float = 60, dbm0: float = -7.0) -> Prompt:
    """The DTMF tones of ``digits`` (0-9, *, #, A-D), each ``on_ms`` then ``off_ms`` of silence (Q.24 asks
    at least 40 ms of each)."""
    parts = []
    for d in digits.upper():
        if d not in DTMF_LOW:
            raise ValueError(f"{d!r} is not a DTMF digit")
        parts.append(_ramped(_sines((DTMF_LOW[d], DTMF_HIGH[d]), on_ms, dbm0)))
        parts.append(np.zeros(int(RATE * off_ms / 1000)))
    return Prompt(np.clip(np.concatenate(parts), -32768, 32767).astype(np.int16), name=f"dtmf {digits}")


def ringback(cycles: int = 1) -> Prompt:
    """440 + 480 Hz, 2 s on, 4 s off (play it with ``loop=True`` until the callee answers)."""
    return _cadence((440, 480), 2000, 4000, cycles, -19.0, "ringback")


def busy(cycles: int = 1) -> Prompt:
    """480 + 620 Hz, 0.5 s on, 0.5 s off."""
    return _cadence((480, 620), 500, 500, cycles, -24.0, "busy")


def from_spec(spec: str) -> Prompt:
    """The prompt a config names (``core.config.parse_prompt``): "ringback", "busy" (three cycles), "beep"
    (1 kHz for 0.3 s), "silence" (1 s), "tone:F1[+F2][/SECONDS]", or a WAV file. Raises ValueError or
    OSError naming the problem."""
    from core.config import parse_prompt  # config is the one place the syntax is defined

    kind, value = parse_prompt(spec)
    if kind == "builtin":
        if value == "ringback":
            return ringback()
        if value == "busy":
            return busy(3)
        if value == "beep":
            return tone(1000, 300, name="beep")
        return Prompt(np.zeros(RATE, dtype=np.int16), name="silence")
    if kind == "tone":
        freqs, seconds = value
        return tone(freqs, seconds * 1000, name=spec)
    return Prompt.from_wav(value, name=spec)
