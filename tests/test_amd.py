"""Answering-machine detection (core/media/amd.py) on generated calls: people who say "Hello?" or
"Hello, this is Sam speaking" and wait, machines that read out a greeting of a few seconds (with or
without a beep), dead air and steady noise; clean, with background noise, and through G.711.

The audio is made here with numpy (``Scene`` and the functions below; bench/amd_accuracy.py draws
hundreds of them): speech is syllables of 120–320 ms (about four a second) shaped by a raised-sine
envelope, voiced ones a glottal-like harmonic series with a gliding pitch filtered by two formants,
unvoiced ones band-limited noise; words are one to three syllables, phrases a few words. It is not
speech, but it has speech's energy cadence, which is all a cadence detector looks at.
"""

from __future__ import annotations

import numpy as np
import msgspec
import pytest

from core.media import g711
from core.media.amd import (
    FRAME, HUMAN, MACHINE, NOTSURE, RATE, AmdConfig, AmdDecision, AnsweringMachineDetector, BeepHeard,
)

# -- the generator ----------------------------------------------------------------------------------


def _bandlimit(x: np.ndarray, low: float = 300.0, high: float = 3400.0) -> np.ndarray:
    """The telephone band (ITU-T G.712: 300–3400 Hz), by FFT masking."""
    spectrum = np.fft.rfft(x)
    f = np.fft.rfftfreq(len(x), 1 / RATE)
    spectrum[(f < low) | (f > high)] = 0
    return np.fft.irfft(spectrum, len(x))


def syllable(rng: np.random.Generator, duration: float, f0: float) -> np.ndarray:
    """One syllable at unit RMS: voiced (harmonics of a gliding pitch through two formants) or, one time
    in five, unvoiced (band-limited noise)."""
    n = max(int(duration * RATE), 16)
    t = np.arange(n) / RATE
    if rng.random() < 0.2:
        x = _bandlimit(rng.standard_normal(n), 1500.0, 3400.0)
    else:
        glide = f0 * (1 + rng.uniform(-0.15, 0.15) * t / max(duration, 1e-3))
        phase = 2 * np.pi * np.cumsum(glide) / RATE
        f1, f2 = rng.uniform(300, 900), rng.uniform(900, 2500)
        x = np.zeros(n)
        for k in range(1, int(3400 // f0) + 1):
            fk = k * f0
            gain = (1 / k) * (np.exp(-((fk - f1) / 150) ** 2) * 4 + np.exp(-((fk - f2) / 250) ** 2) * 2 + 0.2)
            x += gain * np.sin(k * phase + rng.uniform(0, 2 * np.pi))
    envelope = np.sin(np.pi * t / duration) ** 1.5
    x = x * envelope
    return x / (np.sqrt(np.mean(x ** 2)) + 1e-12)


def utterance(rng: np.random.Generator, duration: float, f0: float) -> np.ndarray:
    """Words of 1–3 syllables (4 Hz cadence) with 20–120 ms between them, filling ``duration`` seconds."""
    parts, used = [], 0.0
    while used < duration - 0.1:
        for _ in range(rng.integers(1, 4)):
            d = min(rng.uniform(0.12, 0.32), max(duration - used, 0.12))
            parts.append(syllable(rng, d, f0 * rng.uniform(0.9, 1.1)))
            used += d
            if used >= duration - 0.1:
                break
        gap = rng.uniform(0.02, 0.12)
        parts.append(np.zeros(int(gap * RATE)))
        used += gap
    x = np.concatenate(parts)[: int(duration * RATE)]
    return np.concatenate([x, np.zeros(int(duration * RATE) - len(x))])


def tone(frequency: float, duration: float) -> np.ndarray:
    t = np.arange(int(duration * RATE)) / RATE
    return np.sqrt(2) * np.sin(2 * np.pi * frequency * t)   # unit RMS


def noise(rng: np.random.Generator, n: int, kind: str = "white") -> np.ndarray:
    """Steady background noise at unit RMS: white in the telephone band, pink (1/f), or mains hum
    (50 Hz harmonics in the band) over a little hiss."""
    if kind == "pink":
        spectrum = np.fft.rfft(rng.standard_normal(n))
        f = np.fft.rfftfreq(n, 1 / RATE)
        spectrum /= np.sqrt(np.maximum(f, 50.0))
        x = _bandlimit(np.fft.irfft(spectrum, n), 100.0, 3400.0)
    elif kind == "hum":
        t = np.arange(n) / RATE
        hum = sum(np.sin(2 * np.pi * 50 * k * t) / k for k in (3, 5, 7))
        x = hum + 0.2 * _bandlimit(rng.standard_normal(n))
    else:
        x = _bandlimit(rng.standard_normal(n))
    return x / (np.sqrt(np.mean(x ** 2)) + 1e-12)


def _at(level_dbfs: float) -> float:
    """Unit RMS → RMS at ``level_dbfs`` (dB below a full-scale square wave)."""
    return 32768 * 10 ** (level_dbfs / 20)


class Scene:
    """A clip under construction: segments of speech, silence and tones at levels in dBFS, then a
    background noise at an SNR (to the speech's RMS) and a codec round trip."""

    def __init__(self, rng: np.random.Generator, speech_level: float = -24.0, f0: float = 140.0):
        self.rng, self.level, self.f0 = rng, speech_level, f0
        self.parts: list[np.ndarray] = []
        self.speech: list[np.ndarray] = []

    def silence(self, duration: float) -> "Scene":
        self.parts.append(np.zeros(int(duration * RATE)))
        return self

    def say(self, duration: float) -> "Scene":
        x = utterance(self.rng, duration, self.f0) * _at(self.level)
        self.parts.append(x)
        self.speech.append(x)
        return self

    def beep(self, frequency: float = 1000.0, duration: float = 0.5, level: float = -16.0) -> "Scene":
        self.parts.append(tone(frequency, duration) * _at(level))
        return self

    def render(self, length: float, *, snr: float | None = None, noise_level: float | None = None,
               noise_kind: str = "white", babble: float | None = None,
               codec: str | None = "PCMU") -> np.ndarray:
        """``snr``: steady noise this many dB under the speech; ``babble``: three other people talking
        all along, together this many dB under the speech (a television, an open-plan office)."""
        x = np.concatenate(self.parts) if self.parts else np.zeros(0)
        n = int(length * RATE)
        x = np.concatenate([x, np.zeros(max(0, n - len(x)))])[:n]
        if babble is not None:
            talkers = sum(utterance(self.rng, length, self.rng.uniform(90, 250))[:n] for _ in range(3))
            talkers /= np.sqrt(np.mean(talkers ** 2)) + 1e-12
            x = x + talkers * _at(self.level - babble)
        if snr is not None and self.speech:
            speech = np.concatenate(self.speech)
            active = speech[np.abs(speech) > 1e-3 * np.abs(speech).max()]
            noise_level = 20 * np.log10(np.sqrt(np.mean(active ** 2)) / 32768) - snr
        if noise_level is not None:
            x = x + noise(self.rng, n, noise_kind) * _at(noise_level)
        samples = np.clip(np.round(x), -32768, 32767).astype(np.int16)
        if codec:
            samples = g711.decode(codec, g711.encode(codec, samples))
        return samples


def human_hello(rng, *, delay=0.5, said=0.7, **kw) -> Scene:
    """Picks up, says "Hello?" and waits for an answer."""
    return Scene(rng, **kw).silence(delay).say(said)


def human_intro(rng, *, delay=0.5, hello=0.5, pause=0.15, rest=1.0, **kw) -> Scene:
    """"Hello, this is Sam speaking", then waits."""
    return Scene(rng, **kw).silence(delay).say(hello).silence(pause).say(rest)


def machine(rng, *, delay=0.3, phrases=(1.2, 1.6, 1.0), pauses=(0.3, 0.4), beep: float | None = 1000.0,
            **kw) -> Scene:
    """A voicemail greeting: phrases with short pauses between them, then (or not) a beep."""
    scene = Scene(rng, **kw).silence(delay)
    for i, d in enumerate(phrases):
        if i:
            scene.silence(pauses[(i - 1) % len(pauses)])
        scene.say(d)
    if beep:
        scene.silence(0.4).beep(beep)
    return scene


def detect(samples: np.ndarray, config: AmdConfig | None = None,
           chunk: int = FRAME) -> AnsweringMachineDetector:
    """Feed ``samples`` ``chunk`` at a time, as packets would bring them, until the detector is done."""
    detector = AnsweringMachineDetector(config)
    for i in range(0, len(samples), chunk):
        detector.feed(samples[i:i + chunk])
        if detector.done:
            break
    return detector


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# -- people ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("codec", ["PCMU", "PCMA"])
def test_a_person_who_says_hello_and_waits_is_human(seed, codec):
    samples = human_hello(rng(seed), delay=0.4, said=0.7).render(6.0, codec=codec)
    d = detect(samples).decision
    assert d.verdict == HUMAN and d.reason == "after-greeting-silence"
    # decided once the person has waited after_greeting_silence: 0.4 + 0.7 + 0.8 s, within a few frames
    assert 1.7 <= d.at <= 2.05
    assert d.words >= 1 and 0.4 <= d.greeting <= 0.8


@pytest.mark.parametrize("seed", range(4))
def test_a_person_who_gives_their_name_is_human(seed):
    samples = human_intro(rng(seed), delay=0.6, hello=0.5, pause=0.15, rest=1.0).render(6.0)
    d = detect(samples).decision
    assert (d.verdict, d.reason) == (HUMAN, "after-greeting-silence")
    assert 1.2 <= d.greeting <= 1.7


@pytest.mark.parametrize("snr", [20.0, 10.0])
@pytest.mark.parametrize("kind", ["white", "pink", "hum"])
def test_a_person_over_background_noise_is_still_human(snr, kind):
    # The noise floor is tracked: steady noise is silence, the wait after "Hello?" is still heard.
    samples = human_hello(rng(7), delay=0.5, said=0.8).render(6.0, snr=snr, noise_kind=kind)
    assert detect(samples).decision.verdict == HUMAN


@pytest.mark.parametrize("seed", range(3))
def test_a_person_over_talk_in_the_room_is_still_human(seed):
    # Three people talking 20 dB under the speaker, all along. Their talk has gaps, so the noise floor
    # stays low and it is louder than silence_threshold: only speaker_drop (15 dB under the loudest word
    # heard) keeps it from extending the greeting into a machine's.
    samples = human_hello(rng(seed), delay=0.5, said=0.7).render(6.0, babble=20.0)
    assert detect(samples).decision.verdict == HUMAN
    assert detect(samples, AmdConfig(speaker_drop=100.0)).decision[:2] == (MACHINE, "long-greeting")


def test_a_quiet_speaker_is_heard_and_a_loud_one_too():
    for level in (-40.0, -12.0):
        samples = human_hello(rng(3), speech_level=level).render(6.0)
        assert detect(samples).decision.verdict == HUMAN, level


# -- machines -------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("beep", [1000.0, None])
def test_a_long_greeting_is_a_machine(seed, beep):
    samples = machine(rng(seed), delay=0.3, phrases=(1.4, 1.8, 1.2), beep=beep).render(6.0)
    d = detect(samples).decision
    assert (d.verdict, d.reason) == (MACHINE, "long-greeting")
    # decided max_greeting (1.9 s) after the greeting started, not at its end
    assert 2.1 <= d.at <= 2.4


def test_a_machine_over_noise_is_still_a_machine():
    samples = machine(rng(5), phrases=(2.0, 2.0), pauses=(0.3,)).render(6.0, snr=10.0, noise_kind="pink")
    assert detect(samples).decision.verdict == MACHINE


def test_a_short_greeting_then_a_beep_is_a_machine_by_its_beep():
    # "Leave a message." (1 s) then the beep 0.4 s later: too short for long-greeting, and the beep comes
    # before the after-greeting silence would call it a person.
    samples = machine(rng(2), phrases=(1.0,), beep=1000.0).render(5.0)
    d = detect(samples).decision
    assert (d.verdict, d.reason) == (MACHINE, "beep")
    beep_start = 0.3 + 1.0 + 0.4
    assert beep_start + 0.1 <= d.at <= beep_start + 0.2   # beep_min_duration (0.12 s) of tone heard
    # The classic rules alone take the beep for more greeting and decide later, when it has lasted
    # max_greeting (0.3 s in: 0.3 + 1.9).
    classic = detect(samples, AmdConfig(beep=False)).decision
    assert (classic.verdict, classic.reason) == (MACHINE, "long-greeting") and classic.at >= 2.2 - 0.021


def test_the_beep_is_reported_after_a_machine_decision_when_asked():
    # A voicemail drop waits for the beep before it plays its message.
    samples = machine(rng(1), phrases=(1.5, 2.5), pauses=(0.3,), beep=850.0).render(7.0)
    detector = detect(samples, AmdConfig(listen_for_beep=True))
    decision, beep = detector.next_event(), detector.next_event()
    assert isinstance(decision, AmdDecision) and decision.verdict == MACHINE and decision.at < 3.0
    assert isinstance(beep, BeepHeard)
    assert abs(beep.frequency - 850.0) <= 50.0
    assert abs(beep.start - (0.3 + 1.5 + 0.3 + 2.5 + 0.4)) <= 0.04
    assert detector.next_event() is None and detector.done
    # without listen_for_beep, the detector stops at the decision
    quiet = detect(samples)
    assert quiet.next_event().verdict == MACHINE and quiet.next_event() is None


def test_a_greeting_that_starts_late_is_still_judged():
    samples = machine(rng(4), delay=1.5, phrases=(3.0,), beep=None).render(6.0)
    d = detect(samples).decision
    assert d.verdict == MACHINE and 1.5 + 1.9 <= d.at <= 1.5 + 2.1


# -- no speech -------------------------------------------------------------------------------------


@pytest.mark.parametrize("codec", ["PCMU", "PCMA", None])
def test_dead_air_is_judged_by_the_initial_silence_rule(codec):
    samples = Scene(rng()).render(6.0, codec=codec)
    d = detect(samples).decision
    assert (d.verdict, d.reason, d.words) == (MACHINE, "initial-silence", 0)
    assert abs(d.at - 2.5) <= 0.021
    config = AmdConfig(initial_silence_verdict="NOTSURE", initial_silence=3.0)
    assert detect(samples, config).decision[:2] == (NOTSURE, "initial-silence")


@pytest.mark.parametrize("kind", ["white", "pink", "hum"])
@pytest.mark.parametrize("level", [-45.0, -25.0])
def test_steady_noise_is_not_speech(kind, level):
    # Even loud steady noise is the background, not a greeting: nothing is counted as a word.
    samples = Scene(rng(1)).render(6.0, noise_level=level, noise_kind=kind)
    d = detect(samples).decision
    assert d.reason == "initial-silence" and d.words == 0


def test_no_decision_before_the_rules_allow_one_then_notsure_at_the_limit():
    # Speech that keeps stopping just short of the after-greeting silence, in words shorter than a
    # long greeting: the rules never fire, and the analysis time runs out.
    config = AmdConfig(max_greeting=10.0, max_words=50)
    scene = Scene(rng(9)).silence(0.3)
    for _ in range(6):
        scene.say(0.3).silence(0.6)
    d = detect(scene.render(6.0), config).decision
    assert (d.verdict, d.reason) == (NOTSURE, "timeout") and abs(d.at - 4.0) <= 0.021


# -- the face ----------------------------------------------------------------------------------------


def test_chunking_and_batching_do_not_change_the_decision():
    for samples in (human_intro(rng(11)).render(6.0, snr=20.0), machine(rng(11)).render(6.0, snr=20.0)):
        decisions = {detect(samples, AmdConfig(analysis_batch=b), chunk=c).decision
                     for c in (160, 80, 37, 1000, 8000) for b in (1, 5, 50)}
        assert len(decisions) == 1


def test_g711_payloads_are_decoded_as_they_arrive():
    samples = machine(rng(3), phrases=(2.5, 1.0), beep=None).render(6.0, codec=None)
    payload = g711.encode("PCMA", samples)
    detector = AnsweringMachineDetector()
    for i in range(0, len(payload), FRAME):
        detector.feed_payload(payload[i:i + FRAME], "PCMA")
    assert detector.decision.verdict == MACHINE
    assert detector.decision == detect(g711.alaw_decode(payload)).decision


def test_lost_packets_are_silence():
    # "Hello?" then the far end stops sending (silence suppression, RFC 3389): the wait is still heard.
    samples = human_hello(rng(2), delay=0.3, said=0.6).render(0.9)
    detector = AnsweringMachineDetector()
    detector.feed(samples)
    assert detector.decision is None
    detector.lost(50)
    assert detector.decision.verdict == HUMAN and abs(detector.decision.at - 1.7) <= 0.1


def test_a_far_end_that_sends_nothing_is_notsure_at_the_deadline():
    detector = AnsweringMachineDetector(AmdConfig(total_analysis_time=4.0, no_audio_grace=1.0), now=100.0)
    assert detector.get_timer() == 105.0
    detector.handle_timer(104.9)
    assert detector.decision is None
    detector.handle_timer(105.0)
    assert detector.decision[:2] == (NOTSURE, "no-audio") and detector.get_timer() is None


def test_nothing_is_analysed_after_the_decision():
    samples = human_hello(rng(0)).render(6.0)
    detector = detect(samples)
    at = detector.time
    detector.feed(samples)
    assert detector.time == at and detector.next_event() == detector.decision and detector.next_event() is None


def test_the_config_is_checked_when_decoded():
    assert msgspec.convert({"max_greeting": 2.5}, AmdConfig).max_greeting == 2.5
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"total_analysis_time": -1.0}, AmdConfig)
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"initial_silence_verdict": "FAX"}, AmdConfig)
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"beep_low": 2000.0, "beep_high": 1000.0}, AmdConfig)
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"greeting": 1.5}, AmdConfig)   # unknown key
