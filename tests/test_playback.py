"""Prompts and tones played by the media engine to a phone's socket on 127.0.0.1 (core/_rtp.pyx
``Engine.play``, core/media/prompts.py): what the phone receives is checked on the wire — 20 ms frames at
50 packets a second, one SSRC and continuous sequence numbers and timestamps, also across prompt →
bridged audio — and what it hears is checked with an FFT."""

from __future__ import annotations

import random
import threading
import time
import wave

import numpy as np
import pytest

from core.media import Engine, g711
from core.media.prompts import PlaybackDone, Prompt, busy, dtmf, ringback, tone
from tests.test_media_relay import Phone
from tests.test_rtp import fields, rtp

pytestmark = pytest.mark.skipif(Engine is None, reason="core._rtp is not built")


@pytest.fixture
def engine():
    """An engine serving in its own thread, as in the node."""
    base = random.randrange(30000, 40000, 2)
    eng = Engine(base, base + 199)
    thread = threading.Thread(target=eng.serve, kwargs={"timeout_ms": 20}, daemon=True)
    thread.start()
    yield eng
    eng.stop()
    thread.join(5)
    eng.close()


@pytest.fixture
def phones():
    made = []
    yield lambda: made.append(Phone()) or made[-1]
    for p in made:
        p.close()


def receive(phone: Phone, count: int, limit: float = 5.0) -> list[tuple[float, bytes]]:
    """Up to ``count`` datagrams with their arrival times (bounded by ``limit`` seconds)."""
    out = []
    deadline = time.monotonic() + limit
    while len(out) < count and time.monotonic() < deadline:
        phone.sock.settimeout(max(0.001, deadline - time.monotonic()))
        try:
            data = phone.sock.recv(4096)
        except OSError:
            break
        out.append((time.monotonic(), data))
    return out


def wait_events(engine, kind, count=1, limit=3.0) -> list:
    got = []
    deadline = time.monotonic() + limit
    while len(got) < count and time.monotonic() < deadline:
        got += [e for e in engine.events() if isinstance(e, kind)]
        time.sleep(0.01)
    return got


def peak_hz(samples: np.ndarray, rate: int = 8000) -> float:
    spectrum = np.abs(np.fft.rfft(samples.astype(float) * np.hanning(len(samples))))
    return float(np.argmax(spectrum) * rate / len(samples))


def peaks_hz(samples: np.ndarray, n: int, rate: int = 8000) -> list[float]:
    spectrum = np.abs(np.fft.rfft(samples.astype(float) * np.hanning(len(samples))))
    found = []
    for i in np.argsort(spectrum)[::-1]:
        f = i * rate / len(samples)
        if all(abs(f - g) > 30 for g in found):
            found.append(f)
        if len(found) == n:
            break
    return sorted(found)


def test_a_prompt_arrives_as_20ms_frames_at_50_packets_a_second(engine, phones):
    a = phones()
    engine.add_relay("ivr", options={"a": {"peer": a.addr, "ssrc": 0xCAFE0001}})
    pid = engine.play("ivr", "a", tone(1000, 1000))
    got = receive(a, 50)
    assert len(got) == 50
    heads = [fields(p) for _, p in got]
    assert all(len(p) == 12 + 160 and p[1] & 0x7F == 0 for _, p in got)  # PCMU, 160 bytes: 20 ms
    assert {h[2] for h in heads} == {0xCAFE0001}
    seqs = [h[0] for h in heads]
    assert all((b - a_) & 0xFFFF == 1 for a_, b in zip(seqs, seqs[1:]))
    assert all((b[1] - a_[1]) & 0xFFFFFFFF == 160 for a_, b in zip(heads, heads[1:]))
    assert got[0][1][1] & 0x80 and not any(p[1] & 0x80 for _, p in got[1:])  # marked at its start only
    span = got[-1][0] - got[0][0]
    assert 0.85 <= span <= 1.2, f"49 intervals of 20 ms took {span:.3f} s"  # ~50 packets a second
    heard = np.concatenate([g711.ulaw_decode(p[12:]) for _, p in got])
    assert abs(peak_hz(heard) - 1000) < 5
    done = wait_events(engine, PlaybackDone)
    assert done == [PlaybackDone("ivr", "a", pid, 50, "done")]
    assert receive(a, 1, limit=0.1) == []


def test_after_the_prompt_the_bridged_audio_continues_the_same_stream(engine, phones):
    a, b = phones(), phones()
    pa, pb = engine.add_relay("call", options={"a": {"peer": a.addr}, "b": {"peer": b.addr}})
    engine.play("call", "a", tone(440, 200))
    b.send(pb, rtp(7, 7000, 0x0B0B))  # the callee speaks during the prompt: held back, not mixed in
    prompt = receive(a, 10)
    assert wait_events(engine, PlaybackDone)[0].reason == "done"
    time.sleep(0.1)
    for k in range(3):
        b.send(pb, rtp(8 + k, 7160 + 160 * k, 0x0B0B))
    bridged = receive(a, 3)
    assert len(prompt) == 10 and len(bridged) == 3
    assert all(len(p) == 172 and p[12:] == b"\xff" * 160 for _, p in bridged)  # the callee's packets
    heads = [fields(p) for _, p in prompt + bridged]
    assert len({h[2] for h in heads}) == 1
    seqs = [h[0] for h in heads]
    assert all((y - x) & 0xFFFF == 1 for x, y in zip(seqs, seqs[1:]))
    gap = (heads[10][1] - heads[9][1]) & 0xFFFFFFFF
    assert gap >= 160 and gap % 160 == 0 and 0.05 <= gap / 8000 <= 0.6  # the 100 ms pause, in timestamps
    assert bridged[0][1][1] & 0x80  # a new source: marked so the phone resynchronises
    assert engine.figures("call")["a"].packets_sent == 13
    engine.play("call", "a", tone(440, 60))  # and back to a prompt: the same stream still
    again = receive(a, 3)
    heads = [fields(p) for _, p in bridged + again]
    assert len(again) == 3 and {h[2] for h in heads} == {fields(prompt[0][1])[2]}
    seqs = [h[0] for h in heads]
    assert all((y - x) & 0xFFFF == 1 for x, y in zip(seqs, seqs[1:]))
    assert again[0][1][1] & 0x80 and (heads[3][1] - heads[2][1]) & 0xFFFFFFFF >= 160


def test_a_looped_tone_plays_until_stopped_and_a_new_prompt_replaces_the_old(engine, phones):
    a = phones()
    engine.add_relay("r", options={"a": {"peer": a.addr}})
    first = engine.play("r", "a", ringback(), loop=True)
    got = receive(a, 15)
    second = engine.play("r", "a", dtmf("1"))
    replaced = wait_events(engine, PlaybackDone)
    assert replaced[0].playback_id == first and replaced[0].reason == "replaced"
    assert replaced[0].frames >= 15
    done = wait_events(engine, PlaybackDone)
    assert done[0].playback_id == second and done[0].reason == "done" and done[0].frames == len(dtmf("1"))
    third = engine.play("r", "a", tone(1000, 200), loop=True)
    looped = receive(a, 60, limit=1.5)
    assert len(looped) >= 40 > len(tone(1000, 200))  # past its 10 frames: it loops
    assert engine.stop_playback("r", "a") is True
    stopped = wait_events(engine, PlaybackDone)
    assert stopped[0].playback_id == third and stopped[0].reason == "stopped"
    time.sleep(0.1)
    receive(a, 100, limit=0.1)
    assert receive(a, 1, limit=0.2) == []
    assert engine.stop_playback("r", "a") is False
    assert len(got) == 15


def test_a_pcma_leg_gets_a_law_and_a_prompt_id_is_converted_once(engine, phones):
    a = phones()
    engine.add_relay("r", options={"a": {"peer": a.addr, "codec": "PCMA"}})
    prompt = tone(700, 100)
    engine.add_prompt("welcome", prompt)
    engine.play("r", "a", "welcome")
    got = receive(a, 5)
    assert [p[1] & 0x7F for _, p in got] == [8] * 5
    assert b"".join(p[12:] for _, p in got) == prompt.payload("PCMA")
    assert prompt.payload("PCMA") is prompt.payload("PCMA")  # encoded once
    with pytest.raises(KeyError):
        engine.play("r", "a", "no-such-prompt")
    with pytest.raises(ValueError):
        engine.play("r", "c", "welcome")


def test_a_leg_with_no_peer_yet_loses_the_prompt_time_and_then_hears_the_rest(engine, phones):
    a = phones()
    pa, _ = engine.add_relay("r")
    engine.play("r", "a", tone(1000, 1000))
    time.sleep(0.2)
    a.send(pa, rtp(1, 160, 0x1234))  # latching: the engine learns where to send
    got = receive(a, 50, limit=1.5)
    assert 30 <= len(got) <= 45  # the frames due before the peer was known were not sent
    assert wait_events(engine, PlaybackDone)[0].frames == 50


def test_a_wav_prompt_is_read_once_and_other_formats_are_refused(tmp_path):
    x = (8000 * np.sin(2 * np.pi * 500 * np.arange(4100) / 8000)).astype("<i2")
    path = tmp_path / "hello.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(x.tobytes())
    prompt = Prompt.from_wav(path)
    assert len(prompt) == 26 and len(prompt.payload("PCMU")) == 26 * 160  # padded to whole frames
    assert prompt.payload("PCMU")[:4100] == g711.ulaw_encode(x)
    assert set(prompt.payload("PCMU")[4100:]) == {0xFF}  # with μ-law silence
    stereo = tmp_path / "stereo.wav"
    with wave.open(str(stereo), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"\x00" * 400)
    with pytest.raises(ValueError, match="8000 Hz mono 16-bit"):
        Prompt.from_wav(stereo)


@pytest.mark.parametrize("digit,low,high", [("1", 697, 1209), ("5", 770, 1336), ("#", 941, 1477), ("D", 941, 1633)])
def test_dtmf_tones_are_the_q23_pairs(digit, low, high):
    prompt = dtmf(digit, on_ms=200, off_ms=0)
    heard = g711.ulaw_decode(prompt.payload("PCMU"))
    found = peaks_hz(heard, 2)
    assert abs(found[0] - low) < 10 and abs(found[1] - high) < 10


def test_ringback_and_busy_have_their_frequencies_and_cadences():
    ring = g711.ulaw_decode(ringback(2).payload("PCMU")).astype(float)
    assert len(ring) == 2 * 6 * 8000
    on = [np.sqrt(np.mean(ring[i:i + 800] ** 2)) > 100 for i in range(0, len(ring), 800)]  # 100 ms steps
    assert on == ([True] * 20 + [False] * 40) * 2  # 2 s on, 4 s off
    found = peaks_hz(ring[:16000], 2)
    assert abs(found[0] - 440) < 5 and abs(found[1] - 480) < 5
    b = g711.ulaw_decode(busy(3).payload("PCMU")).astype(float)
    on = [np.sqrt(np.mean(b[i:i + 800] ** 2)) > 50 for i in range(0, len(b), 800)]
    assert on == ([True] * 5 + [False] * 5) * 3
    found = peaks_hz(b[:4000], 2)
    assert abs(found[0] - 480) < 10 and abs(found[1] - 620) < 10
    assert np.sqrt(np.mean(b[:4000] ** 2)) < np.sqrt(np.mean(ring[:16000] ** 2))  # busy is 5 dB lower
