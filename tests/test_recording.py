"""Call recording (core/_rtp.pyx ``Engine.record_start``/``record_stop``, core/media/recording.py): two
phones on 127.0.0.1 send tones through a relay with loss, reordering, duplicates and jitter injected; the
WAV file must hold each tone on its own channel (numpy FFT), without clicks beyond the gaps the jitter
buffer concealed; and a file cut off by a crash of the process must still be readable."""

from __future__ import annotations

import os
import random
import signal
import struct
import subprocess
import sys
import threading
import time
import wave
from pathlib import Path

import numpy as np
import pytest

from core.media import Engine
from core.media.prompts import tone
from core.media.recording import CAPTURE_DTYPE, IMPLEMENTATIONS, CallRecording, WavWriter, repair_wav
from tests.test_media_relay import Phone
from tests.test_playback import peak_hz

pytestmark = pytest.mark.skipif(Engine is None, reason="core._rtp is not built")

REPO = Path(__file__).resolve().parents[1]
DBM0 = -10.0
AMPLITUDE = 22_690 * 10 ** (DBM0 / 20)


def read_wav(path) -> tuple[wave._wave_params, np.ndarray]:
    with wave.open(str(path), "rb") as w:
        params = w.getparams()
        x = np.frombuffer(w.readframes(params.nframes), dtype="<i2").reshape(-1, params.nchannels)
    return params, x


def test_the_header_always_covers_the_data_and_a_cut_file_is_repaired(tmp_path):
    path = tmp_path / "w.wav"
    writer = WavWriter(path)
    for k in range(5):
        writer.append(np.full((160, 2), k, dtype=np.int16))
        params, x = read_wav(path)  # readable at every step, as a crash would leave it
        assert (params.nchannels, params.sampwidth, params.framerate, params.nframes) == (2, 2, 8000, 160 * (k + 1))
    writer.close()
    # a crash between the data and the header update, in the middle of a frame
    with open(path, "ab") as f:
        f.write(b"\x07\x00\x07\x00" * 100 + b"\x01")
    assert read_wav(path)[0].nframes == 800
    assert repair_wav(path) == 900
    params, x = read_wav(path)
    assert params.nframes == 900 and (x[800:] == 7).all() and (x[:160] == 0).all()
    assert os.path.getsize(path) == 44 + 900 * 4
    (tmp_path / "not.wav").write_bytes(b"hello")
    with pytest.raises(ValueError):
        repair_wav(tmp_path / "not.wav")


def impaired_schedule(payload: bytes, ssrc: int, start: float, rng: random.Random, loss=0.03, dup=0.02,
                      jitter=0.04) -> list[tuple[float, bytes]]:
    """The packets of a stream with loss, duplicates and jitter (up to 40 ms: packets overtake each other)."""
    out = []
    seq0, ts0 = rng.randrange(65536), rng.randrange(1 << 32)
    for k in range(len(payload) // 160):
        if rng.random() < loss:
            continue
        pkt = struct.pack("!BBHII", 0x80, 0, (seq0 + k) & 0xFFFF, (ts0 + 160 * k) & 0xFFFFFFFF, ssrc)
        pkt += payload[160 * k:160 * (k + 1)]
        when = start + 0.02 * k + rng.uniform(0, jitter)
        out.append((when, pkt))
        if rng.random() < dup:
            out.append((when + rng.uniform(0, 0.03), pkt))
    return out


def clicks(x: np.ndarray, freq: float) -> int:
    """Jumps between samples that a tone of ``freq`` at our level cannot make (G.711 noise allowed)."""
    limit = 1.4 * 2 * AMPLITUDE * np.sin(np.pi * freq / 8000)
    return int(np.sum(np.abs(np.diff(x.astype(float))) > limit))


def test_a_recorded_call_has_each_tone_on_its_own_channel_despite_loss_reordering_and_jitter(tmp_path):
    base = random.randrange(40000, 50000, 2)
    engine = Engine(base, base + 99)
    thread = threading.Thread(target=engine.serve, kwargs={"timeout_ms": 20}, daemon=True)
    thread.start()
    a, b = Phone(), Phone()
    try:
        pa, pb = engine.add_relay("call", options={"a": {"peer": a.addr}, "b": {"peer": b.addr}})
        path = tmp_path / "call.wav"
        engine.record_start("call", path)
        assert engine.recording("call")["path"] == str(path)
        rng = random.Random(20240601)
        start = time.monotonic() + 0.05
        seconds = 3
        sends = [(t, a, pa, p) for t, p in impaired_schedule(tone(1000, seconds * 1000, DBM0).payload(), 0xA, start, rng)]
        sends += [(t, b, pb, p) for t, p in impaired_schedule(tone(440, seconds * 1000, DBM0).payload(), 0xB, start, rng)]
        sends.sort(key=lambda s: s[0])
        reordered = sum(1 for x, y in zip(sends, sends[1:]) if x[1] is y[1] and
                        struct.unpack_from("!H", x[3], 2)[0] > struct.unpack_from("!H", y[3], 2)[0])
        assert reordered > 10  # the test injects what it says it does
        for when, phone, port, pkt in sends:
            delay = when - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            phone.send(port, pkt)
        time.sleep(0.2)
        summary = engine.record_stop("call")
    finally:
        engine.stop()
        thread.join(5)
        engine.close()
        a.close()
        b.close()

    params, x = read_wav(path)
    assert (params.nchannels, params.sampwidth, params.framerate) == (2, 2, 8000)
    assert summary["frames"] == params.nframes and summary["dropped"] == 0
    assert seconds + 0.1 <= params.nframes / 8000 <= seconds + 1.0
    for ch, freq, other in ((0, 1000, 440), (1, 440, 1000)):
        counters = summary["ab"[ch]]
        assert counters["duplicate"] >= 1 and counters["late"] <= 5
        audio = np.flatnonzero(x[:, ch])
        y = x[audio[0]:audio[-1] + 1, ch]
        assert len(y) >= (seconds - 0.1) * 8000
        assert abs(peak_hz(y) - freq) < 3, f"channel {ch}"
        spectrum = np.abs(np.fft.rfft(y.astype(float) * np.hanning(len(y))))
        at = lambda f: spectrum[int(round(f * len(y) / 8000)) - 3:int(round(f * len(y) / 8000)) + 4].max()
        assert at(other) < 0.01 * at(freq), f"channel {ch} hears the other leg"
        gaps = counters["concealed"] + counters["silent"] + counters["stretched"] + counters["compressed"]
        assert counters["played"] >= 0.9 * seconds * 50
        assert clicks(y, freq) <= 2 * gaps + 2, f"channel {ch}: clicks beyond the {gaps} concealed frames"


@pytest.mark.parametrize("impl", ["py", "c"])
def test_a_recording_fed_the_engines_capture_records_has_each_tone_on_its_own_channel(tmp_path, impl):
    """CallRecording alone (both implementations: core._jitter's feed loop and the Python one), fed the
    records the engine hands over every 100 ms: μ-law 1 kHz on leg a, A-law 440 Hz on leg b, impaired."""
    if IMPLEMENTATIONS[impl] is None:
        pytest.skip("core._jitter is not built")
    rng = random.Random(7)
    seconds, start_ns = 3, 5_000_000_000
    sends = [(0, t, p) for t, p in impaired_schedule(tone(1000, seconds * 1000, DBM0).payload("PCMU"), 0xA, 0.01, rng)]
    pcma = tone(440, seconds * 1000, DBM0).payload("PCMA")  # payload type 8 in the header (RFC 3551)
    sends += [(1, t, p[:1] + b"\x08" + p[2:]) for t, p in impaired_schedule(pcma, 0xB, 0.01, rng)]
    sends.sort(key=lambda s: s[1])
    records = np.zeros(len(sends), CAPTURE_DTYPE)
    for r, (leg, when, pkt) in zip(records, sends):
        _, pt, seq, ts, ssrc = struct.unpack_from("!BBHII", pkt)
        r["arrival_ns"], r["leg"], r["payload_type"] = start_ns + int(when * 1e9), leg, pt
        r["seq"], r["timestamp"], r["ssrc"], r["length"] = seq, ts, ssrc, len(pkt) - 12
        r["payload"][:len(pkt) - 12] = np.frombuffer(pkt[12:], np.uint8)
    path = tmp_path / f"{impl}.wav"
    recording = CallRecording(path, start_ns, impl=impl)
    arrivals = records["arrival_ns"]
    for now in range(start_ns, start_ns + (seconds + 1) * 10**9, 100_000_000):
        recording.feed(records[(arrivals > now - 100_000_000) & (arrivals <= now)], now)
    summary = recording.finish(start_ns + (seconds + 1) * 10**9)
    params, x = read_wav(path)
    assert summary["frames"] == params.nframes and seconds <= params.nframes / 8000 <= seconds + 1.2
    for ch, freq, other in ((0, 1000, 440), (1, 440, 1000)):
        counters = summary["ab"[ch]]
        audio = np.flatnonzero(x[:, ch])
        y = x[audio[0]:audio[-1] + 1, ch]
        assert abs(peak_hz(y) - freq) < 3, f"channel {ch}"
        spectrum = np.abs(np.fft.rfft(y.astype(float) * np.hanning(len(y))))
        at = lambda f: spectrum[int(round(f * len(y) / 8000)) - 3:int(round(f * len(y) / 8000)) + 4].max()
        assert at(other) < 0.01 * at(freq), f"channel {ch} hears the other leg"
        assert counters["played"] >= 0.9 * seconds * 50 and counters["duplicate"] >= 1
        gaps = counters["concealed"] + counters["silent"] + counters["stretched"] + counters["compressed"]
        assert clicks(y, freq) <= 2 * gaps + 2, f"channel {ch}: clicks beyond the {gaps} concealed frames"


CRASHING_NODE = """
import sys
from core.media import Engine
base, path = int(sys.argv[1]), sys.argv[2]
engine = Engine(base, base + 99)
pa, pb = engine.add_relay("call")
engine.record_start("call", path)
print(pa, pb, flush=True)
engine.serve(20)
"""


def test_a_recording_cut_off_by_a_crash_is_readable(tmp_path):
    path = tmp_path / "crash.wav"
    base = random.randrange(50000, 60000, 2)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-c", CRASHING_NODE, str(base), str(path)], stdout=subprocess.PIPE,
                            text=True, env=env, cwd=str(REPO))
    a = Phone()
    try:
        pa, pb = map(int, proc.stdout.readline().split())
        payload = tone(1000, 1500, DBM0).payload()
        start = time.monotonic()
        for k in range(75):
            delay = start + 0.02 * k - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            a.send(pa, struct.pack("!BBHII", 0x80, 0, k, 160 * k, 0xA) + payload[160 * k:160 * (k + 1)])
        time.sleep(0.3)
        proc.send_signal(signal.SIGKILL)  # the node dies mid-call: nothing gets to close the file
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        a.close()
    params, x = read_wav(path)
    assert params.nchannels == 2 and params.nframes / 8000 >= 1.3  # all but the last ~100 ms
    y = x[np.flatnonzero(x[:, 0])[0]:, 0]
    assert abs(peak_hz(y[:8000]) - 1000) < 3
    assert repair_wav(path) == (os.path.getsize(path) - 44) // 4 >= params.nframes
