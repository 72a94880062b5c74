"""Answering-machine detection (AMD) on the first seconds of an answered outbound call: is the party that
answered a person (HUMAN), a machine (MACHINE: voicemail, an answering machine, a network announcement),
or can the detector not tell in the time it is given (NOTSURE)? The dialler acts on it: a person goes to an
agent at once, a machine is hung up on or gets a message after its beep.

No standard defines AMD; this is the classic cadence detector (the rules of Asterisk's app_amd and of the
diallers before it) on 8 kHz audio, 20 ms at a time, as the far leg's RTP brings it:

* Each 20 ms frame is speech or silence by its energy (dBFS: 0 is a full-scale square wave). Speech is
  above ``silence_threshold``, ``speech_margin`` dB above the background noise, and no more than
  ``speaker_drop`` dB under the loudest word heard so far. The noise is tracked by minimum statistics
  (the quietest frame of the last ``noise_window`` seconds; Martin, "Noise power spectral density
  estimation based on optimal smoothing and minimum statistics", IEEE TSAP 2001, without the smoothing),
  so a steady hiss or hum is silence however loud, while speech, whose syllables come and go four times
  a second, rises above it. Other people talking in the room have gaps too, so the noise tracker misses
  them; they are quieter than the voice at the handset, which ``speaker_drop`` uses.
* Speech runs of at least ``min_word_length`` are words; a silence of ``between_words_silence`` ends one.
  The greeting is the span from the first word's start to the latest word heard, through pauses shorter
  than ``after_greeting_silence``.
* The rules, in the order they are checked on each frame (first match wins):
  - a pure tone (the beep) for ``beep_min_duration`` → MACHINE "beep" (catches a machine whose greeting
    is too short for the next rules);
  - on speech: one word longer than ``max_word_length`` → MACHINE "max-word-length"; more than
    ``max_words`` words → MACHINE "max-words"; a greeting that has lasted ``max_greeting`` → MACHINE
    "long-greeting" (a person says "Hello?" or "Hello, this is Sam speaking" and waits; a machine reads
    its greeting out);
  - on silence: no word yet after ``initial_silence`` → ``initial_silence_verdict``, "initial-silence"
    (MACHINE by default, as in app_amd: machines often open with a silence, a person says something;
    configurable, because dead air is also a person who says nothing or another dialler); after a
    greeting, ``after_greeting_silence`` of silence (the person waits for an answer) → HUMAN
    "after-greeting-silence";
  - ``total_analysis_time`` of audio without a decision → NOTSURE "timeout".
* After a MACHINE decision, with ``listen_for_beep`` the detector goes on listening for the beep for up to
  ``beep_wait`` seconds and reports ``BeepHeard``: a message left after it is recorded whole.

The beep: a frame is tonal when the Hann-windowed spectrum puts ``beep_tonality`` of its power within
±2 bins (±100 Hz) of its peak, the peak lying in ``beep_low``..``beep_high`` Hz; a beep is tonal frames
whose frequency (interpolated to a few Hz) stays within ``beep_drift`` of the first, and whose level
within ``beep_flatness`` dB, for ``beep_min_duration``. Voiced speech spreads its power over harmonics;
where one harmonic dominates (a high voice, a vowel on its first formant) it is still not a beep, because
a voice's pitch glides and its syllables swell and fade.

Sans-IO like the rest of ``core``: audio time is the clock (50 frames a second), read from the samples
fed; ``now`` is only used by the optional safety deadline for a far end that sends no audio at all. Cost:
the energies and spectra of ``analysis_batch`` frames (100 ms by default) are computed in one go by numpy;
the rules are a few comparisons per frame. bench/amd_accuracy.py prints the accuracy on generated calls,
where the rules fail by design (a person with a long greeting, a machine with a short one or a long
pause, talk in the room), and the CPU per second of audio.
"""

from __future__ import annotations

from typing import Annotated, Literal, NamedTuple

import msgspec
import numpy as np

from core.media import g711

__all__ = ["AmdConfig", "AnsweringMachineDetector", "AmdDecision", "AmdTap", "BeepHeard", "CaptureFanout", "HUMAN", "MACHINE",
           "NOTSURE", "RATE", "FRAME"]

HUMAN = "HUMAN"
MACHINE = "MACHINE"
NOTSURE = "NOTSURE"
Verdict = Literal["HUMAN", "MACHINE", "NOTSURE"]

RATE = 8000
FRAME = 160            # samples in 20 ms at 8 kHz, the G.711 packet of RFC 3551 §4.5.14
FRAME_S = FRAME / RATE
_FULL_SCALE_POWER = 32768.0 ** 2

Seconds = Annotated[float, msgspec.Meta(gt=0.0, le=60.0)]
Decibels = Annotated[float, msgspec.Meta(ge=-100.0, le=0.0)]


class AmdConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The detector's thresholds (times in seconds, levels in dB). The defaults answer a dialler that
    would rather send a machine to an agent than hang up on a person."""

    # Audio analysed before giving up with NOTSURE.
    total_analysis_time: Seconds = 4.0
    # No word before this → initial_silence_verdict.
    initial_silence: Seconds = 2.5
    initial_silence_verdict: Verdict = "MACHINE"
    # A greeting (first word's start to the latest speech) this long is a machine's.
    max_greeting: Seconds = 1.9
    # Silence after a greeting this long: the other side waits for us, a person.
    after_greeting_silence: Seconds = 0.8
    min_word_length: Seconds = 0.1
    between_words_silence: Seconds = 0.1
    max_words: Annotated[int, msgspec.Meta(ge=1, le=100)] = 8
    max_word_length: Seconds = 3.0
    # A frame is speech only above this level (dBFS: 0 is a full-scale square wave) ...
    silence_threshold: Decibels = -50.0
    # ... and this many dB above the background noise ...
    speech_margin: Annotated[float, msgspec.Meta(ge=0.0, le=40.0)] = 5.0
    # ... taken as the quietest frame of this window; and no more than this many dB under the loudest
    # frame of a word so far (whoever answered speaks close to the phone: quieter talk is the room).
    noise_window: Seconds = 1.5
    speaker_drop: Annotated[float, msgspec.Meta(gt=0.0, le=100.0)] = 15.0
    beep: bool = True
    beep_min_duration: Seconds = 0.12
    beep_tonality: Annotated[float, msgspec.Meta(gt=0.0, le=1.0)] = 0.9
    beep_low: Annotated[float, msgspec.Meta(ge=100.0, le=3900.0)] = 300.0
    beep_high: Annotated[float, msgspec.Meta(ge=100.0, le=3900.0)] = 3000.0
    # A generated tone holds its frequency; a voice's pitch moves more than this (Hz) within a beep's time.
    beep_drift: Annotated[float, msgspec.Meta(gt=0.0, le=200.0)] = 8.0
    # ... and its level within this many dB of its first frame.
    beep_flatness: Annotated[float, msgspec.Meta(gt=0.0, le=40.0)] = 1.5
    # After MACHINE, keep listening this long for the beep (BeepHeard); off when False.
    listen_for_beep: bool = False
    beep_wait: Seconds = 20.0
    # Frames analysed together: 1 decides on every packet, 5 costs a third as much and decides up to
    # 80 ms later (the decision's audio time is the same).
    analysis_batch: Annotated[int, msgspec.Meta(ge=1, le=50)] = 5
    # Wall-clock slack over total_analysis_time before handle_timer() gives up on a silent far end.
    no_audio_grace: Seconds = 1.0

    def __post_init__(self) -> None:
        if self.beep_low >= self.beep_high:
            raise ValueError(f"beep_low ({self.beep_low} Hz) must be under beep_high ({self.beep_high} Hz)")
        if self.min_word_length > self.max_word_length:
            raise ValueError("min_word_length must not exceed max_word_length")


class AmdDecision(NamedTuple):
    """The detector's answer, once per call. ``at`` is the audio time (seconds from the first sample) at
    which it was made; ``greeting`` the length of the greeting heard, ``words`` the words counted."""

    verdict: str         # HUMAN, MACHINE, NOTSURE
    reason: str          # initial-silence, long-greeting, max-words, max-word-length, beep,
                         # after-greeting-silence, timeout, no-audio
    at: float
    greeting: float
    words: int


class BeepHeard(NamedTuple):
    """The machine's beep: it started at ``start`` and was still sounding at ``at`` (audio seconds);
    ``frequency`` in Hz."""

    start: float
    at: float
    frequency: float


_WINDOW = np.hanning(FRAME).astype(np.float64)
_BIN_HZ = RATE / FRAME   # 50 Hz bins


class AnsweringMachineDetector:
    """One answered call's AMD. Feed it the far end's audio from the answer on, in any chunk size:
    ``feed(samples)`` (int16 at 8 kHz), ``feed_payload(payload, codec)`` (G.711 bytes), ``lost(frames)``
    for packets that never came (silence suppression, loss: taken as silence). Read ``next_event()``
    (an ``AmdDecision``, then with ``listen_for_beep`` perhaps a ``BeepHeard``) or ``decision``.
    ``now`` (optional) starts the wall-clock safety deadline: ``get_timer()`` / ``handle_timer(now)``."""

    __slots__ = ("config", "decision", "_events", "_pending", "_frames", "_t", "_words", "_voice_run",
                 "_silence_run", "_in_word", "_greeting_start", "_last_voice_end", "_block_min",
                 "_block_fill", "_block_mins", "_block_frames", "_blocks", "_tone_hz", "_tone_level",
                 "_tone_frames", "_tone_start", "_beep_heard", "_deadline", "_lo", "_hi", "_thresholds",
                 "_batch", "_loudest")

    def __init__(self, config: AmdConfig | None = None, *, now: float | None = None) -> None:
        self.config = config = config if config is not None else AmdConfig()
        self.decision: AmdDecision | None = None
        self._events: list = []
        self._pending = np.zeros(0, dtype=np.int16)   # samples not analysed yet (short of a batch)
        self._frames = 0
        self._t = 0.0
        self._words = 0
        self._voice_run = 0.0
        self._silence_run = 0.0
        self._in_word = False
        self._greeting_start: float | None = None
        self._last_voice_end = 0.0
        # Minimum statistics: the quietest frame of each block of _block_frames, kept for _blocks blocks.
        self._block_frames = 8
        self._blocks = max(1, round(config.noise_window / (self._block_frames * FRAME_S)))
        self._block_min = np.inf
        self._block_fill = 0
        self._block_mins: list[float] = []
        self._tone_hz = self._tone_level = 0.0
        self._tone_frames = 0
        self._tone_start = 0.0
        self._beep_heard = False
        self._deadline = None if now is None else now + config.total_analysis_time + config.no_audio_grace
        self._lo = max(2, int(np.ceil(config.beep_low / _BIN_HZ)))
        self._hi = min(FRAME // 2 - 2, int(config.beep_high // _BIN_HZ))
        self._thresholds = (config.silence_threshold, config.speech_margin)
        self._batch = config.analysis_batch * FRAME
        self._loudest = -np.inf   # the loudest frame of a word so far (dBFS)

    # -- input ---------------------------------------------------------------------------------------

    @property
    def done(self) -> bool:
        """True once nothing more is listened for (decided, and the beep heard or not awaited)."""
        if self.decision is None:
            return False
        if self.decision.verdict != MACHINE or not self.config.listen_for_beep or self._beep_heard:
            return True
        return self._t >= self.decision.at + self.config.beep_wait

    @property
    def time(self) -> float:
        """Audio analysed so far, in seconds (up to analysis_batch frames behind what was fed)."""
        return self._t

    def feed(self, samples) -> None:
        """16-bit samples at 8 kHz, in any chunk size. Whole 20 ms frames are analysed together once
        ``analysis_batch`` of them have come (numpy's cost is per call, not per sample)."""
        if self.done:
            return
        samples = np.asarray(samples, dtype=np.int16).ravel()
        if len(self._pending):
            samples = np.concatenate([self._pending, samples])
        whole = len(samples) // FRAME * FRAME
        if whole < self._batch:
            self._pending = samples
            return
        self._pending = samples[whole:].copy()
        self._analyse(samples[:whole].reshape(-1, FRAME))

    def feed_payload(self, payload: bytes, codec: str = "PCMU") -> None:
        """G.711 bytes as an RTP packet carries them; ``codec`` is "PCMU" or "PCMA"."""
        self.feed(g711.decode(codec, payload))

    def lost(self, frames: int = 1) -> None:
        """``frames`` 20 ms frames that never arrived: analysed as digital silence."""
        if frames > 0:
            self.feed(np.zeros(frames * FRAME, dtype=np.int16))

    def next_event(self):
        return self._events.pop(0) if self._events else None

    def get_timer(self) -> float | None:
        return self._deadline if self.decision is None else None

    def handle_timer(self, now: float) -> None:
        """The far end sent too little audio to decide by the deadline: NOTSURE "no-audio"."""
        if self.decision is None and self._deadline is not None and now >= self._deadline:
            self._decide(NOTSURE, "no-audio")

    # -- analysis ------------------------------------------------------------------------------------

    def _analyse(self, frames: np.ndarray) -> None:
        x = frames.astype(np.float64)
        power = np.einsum("ij,ij->i", x, x) / FRAME
        energy = 10.0 * np.log10(power / _FULL_SCALE_POWER + 1e-12)   # dBFS of each frame
        cfg = self.config
        if cfg.beep:
            spectrum = np.abs(np.fft.rfft(x * _WINDOW, axis=1)) ** 2
            band = spectrum[:, self._lo:self._hi + 1]
            peak = np.argmax(band, axis=1) + self._lo
            rows = np.arange(len(frames))
            left, centre, right = spectrum[rows, peak - 1], spectrum[rows, peak], spectrum[rows, peak + 1]
            near = left + centre + right + spectrum[rows, peak - 2] + spectrum[rows, peak + 2]
            tonality = near / (spectrum.sum(axis=1) + 1e-9)
            tonal = (tonality >= cfg.beep_tonality) & (energy > cfg.silence_threshold)
            # The peak's frequency to a few Hz: a parabola through the log power of the three bins
            # around it (Smith and Serra's quadratic interpolation; about 1 Hz of bias with Hann).
            a, b, c = (np.log(v + 1e-9) for v in (left, centre, right))
            offset = 0.5 * (a - c) / np.where(a - 2 * b + c < 0, a - 2 * b + c, -1e-9)
            frequency = (peak + np.clip(offset, -0.5, 0.5)) * _BIN_HZ
            tones = np.where(tonal, frequency, 0.0).tolist()
        else:
            tones = None
        for i, e in enumerate(energy.tolist()):
            if self._frame(e, tones[i] if tones else 0.0):
                return

    def _noise_floor(self, e: float) -> float:
        """Minimum statistics: the quietest frame in the last noise_window (including this one)."""
        if e < self._block_min:
            self._block_min = e
        self._block_fill += 1
        floor = min(self._block_mins) if self._block_mins else np.inf
        floor = min(floor, self._block_min)
        if self._block_fill == self._block_frames:
            self._block_mins.append(self._block_min)
            if len(self._block_mins) > self._blocks:
                del self._block_mins[0]
            self._block_min = np.inf
            self._block_fill = 0
        return floor

    def _frame(self, e: float, tone: float) -> bool:
        """One 20 ms frame of energy ``e`` (dBFS) whose spectrum is a pure tone at ``tone`` Hz (0: not
        a tone); True when nothing more is to be listened for."""
        cfg = self.config
        start = self._t
        self._t = end = start + FRAME_S
        self._frames += 1
        absolute, margin = self._thresholds
        floor = self._noise_floor(e)
        # The room under the speaker: a frame far under the loudest speech heard is not the speaker.
        speech = e > absolute and e > floor + margin and e > self._loudest - cfg.speaker_drop

        # The beep: tonal frames whose frequency holds within beep_drift of where the tone started and
        # whose level holds within beep_flatness dB (a syllable swells and fades; a beep is steady).
        if (tone and abs(tone - self._tone_hz) <= cfg.beep_drift
                and abs(e - self._tone_level) <= cfg.beep_flatness):
            self._tone_frames += 1
        elif tone:
            self._tone_hz, self._tone_level, self._tone_frames, self._tone_start = tone, e, 1, start
        else:
            self._tone_frames = 0
            self._tone_hz = 0.0
        beep = cfg.beep and self._tone_frames * FRAME_S >= cfg.beep_min_duration - 1e-9

        if self.decision is not None:   # decided MACHINE; only the beep is listened for
            if beep:
                self._beep_heard = True
                self._events.append(BeepHeard(self._tone_start, end, round(self._tone_hz, 1)))
            return self.done

        if beep:
            self._beep_heard = True
            self._decide(MACHINE, "beep")
            self._events.append(BeepHeard(self._tone_start, end, round(self._tone_hz, 1)))
            return self.done

        if speech:
            self._voice_run += FRAME_S
            if self._voice_run >= cfg.min_word_length - 1e-9:
                self._silence_run = 0.0
                if not self._in_word:
                    self._in_word = True
                    self._words += 1
                    if self._greeting_start is None:
                        self._greeting_start = end - self._voice_run
                self._last_voice_end = end
                if e > self._loudest:
                    self._loudest = e
                if self._voice_run >= cfg.max_word_length - 1e-9:
                    return self._decide(MACHINE, "max-word-length")
                if self._words > cfg.max_words:
                    return self._decide(MACHINE, "max-words")
                if end - self._greeting_start >= cfg.max_greeting - 1e-9:
                    return self._decide(MACHINE, "long-greeting")
            elif self._greeting_start is None:
                # a click shorter than a word does not end the initial silence
                self._silence_run += FRAME_S
        else:
            self._silence_run += FRAME_S
            if self._silence_run >= cfg.between_words_silence - 1e-9:
                self._in_word = False
                self._voice_run = 0.0
            if self._greeting_start is None:
                if end >= cfg.initial_silence - 1e-9:
                    return self._decide(cfg.initial_silence_verdict, "initial-silence")
            elif self._silence_run >= cfg.after_greeting_silence - 1e-9:
                return self._decide(HUMAN, "after-greeting-silence")
        if end >= cfg.total_analysis_time - 1e-9:
            return self._decide(NOTSURE, "timeout")
        return False

    def _decide(self, verdict: str, reason: str) -> bool:
        greeting = 0.0 if self._greeting_start is None else self._last_voice_end - self._greeting_start
        self.decision = AmdDecision(verdict, reason, round(self._t, 6), round(greeting, 6), self._words)
        self._events.append(self.decision)
        return self.done


class AmdTap:
    """An answering-machine detector on a relay's captured packets (``core._rtp.Engine.capture_start``):
    what arrives on ``leg`` (0: leg a, the called party of an outbound call) in arrival order, G.711
    payloads decoded; a gap in sequence numbers is fed as lost frames (silence). ``on_decision`` is
    called once, from the engine's thread, with the ``AmdDecision``. Feeding stops once decided."""

    def __init__(self, on_decision, config: AmdConfig | None = None, leg: int = 0):
        self.detector = AnsweringMachineDetector(config)
        self.on_decision = on_decision
        self.leg = leg
        self.closed = False
        self.dropped = 0
        self.error: str | None = None
        self._seq: int | None = None

    def feed(self, records, now_ns: int) -> None:
        det = self.detector
        if det.done:
            return
        for rec in records[records["leg"] == self.leg]:
            codec = {0: "PCMU", 8: "PCMA"}.get(int(rec["payload_type"]))
            if codec is None:
                continue  # telephone-event, comfort noise: not the voice
            seq = int(rec["seq"])
            if self._seq is not None:
                gap = (seq - self._seq - 1) & 0xFFFF
                if 0 < gap < 50:
                    det.lost(gap)
            self._seq = seq
            det.feed_payload(bytes(rec["payload"][: int(rec["length"])]), codec)
            if det.done:
                break
        if det.done:
            while (event := det.next_event()) is not None:
                if isinstance(event, AmdDecision):
                    self.on_decision(event)
                    break

    def finish(self, now_ns: int) -> dict:
        self.closed = True
        return self.summary()

    def summary(self) -> dict:
        decision = self.detector.decision
        return {"amd": decision.verdict if decision is not None else ""}


class CaptureFanout:
    """Several consumers of one relay's capture (a recording and a detector)."""

    def __init__(self, consumers):
        self.consumers = list(consumers)
        self.error = None

    @property
    def closed(self) -> bool:
        return all(c.closed for c in self.consumers)

    @property
    def dropped(self) -> int:
        return self.consumers[0].dropped

    @dropped.setter
    def dropped(self, value: int) -> None:
        for c in self.consumers:
            c.dropped = value

    def feed(self, records, now_ns: int) -> None:
        for c in self.consumers:
            if not c.closed:
                c.feed(records, now_ns)
            if c.error:
                self.error = c.error

    def finish(self, now_ns: int) -> dict:
        out: dict = {}
        for c in self.consumers:
            out.update(c.finish(now_ns) if not c.closed else c.summary())
        return out

    def summary(self) -> dict:
        out: dict = {}
        for c in self.consumers:
            out.update(c.summary())
        return out
