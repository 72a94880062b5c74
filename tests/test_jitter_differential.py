"""The Cython jitter buffer and recorder loop (core/_jitter.pyx) against their Python twins
(core/media/jitter.py, the Python path of core/media/recording.py ``CallRecording.feed``): fed the same
randomised packet streams — loss, reordering, duplicates, jitter, sequence and timestamp wrap, a new SSRC,
a jump of the sender's clock, silence gaps, packets of other sizes, a full buffer — both must give the
same frames (kinds and samples), the same answers to every push and the same counters; and a recording
made by each must be the same WAV file, byte for byte."""

from __future__ import annotations

import random

import numpy as np
import pytest

from core.media.recording import CAPTURE_BYTES, CAPTURE_DTYPE, IMPLEMENTATIONS, CallRecording

pytestmark = pytest.mark.skipif(IMPLEMENTATIONS["c"] is None, reason="core._jitter is not built")

N = 160
F = 0.02


def options(rng: random.Random) -> dict:
    """Buffer settings around the defaults, some extreme (a tiny capacity overflows, a short window)."""
    lo = rng.choice([0.01, 0.02, 0.04])
    hi = rng.choice([lo, 0.06, 0.1, 0.3])
    return {"min_delay": lo, "initial_delay": rng.choice([lo, (lo + hi) / 2, hi]), "max_delay": hi,
            "window": rng.choice([10, 30, 100]), "quantile": rng.choice([0.5, 0.95, 1.0]),
            "margin": rng.choice([0.0, 0.01, 0.015]), "adapt_every": rng.choice([1, 5, 10]),
            "conceal_frames": rng.choice([0, 1, 3, 7]), "idle_frames": rng.choice([5, 50]),
            "drop_excess": rng.choice([0.02, 0.08]), "capacity": rng.choice([4, 16, 512])}


def stream(rng: random.Random) -> list[tuple[float, int, int, np.ndarray, int]]:
    """(arrival, seq, timestamp, samples, ssrc) in arrival order: a few talkspurts with impairments."""
    packets = []
    t = rng.uniform(0, 0.05)
    ssrc = rng.randrange(1 << 32)
    seq = rng.choice([0, 65530, rng.randrange(65536)])
    ts = rng.choice([0, (1 << 32) - 800, rng.randrange(1 << 32)])
    for _ in range(rng.randrange(1, 5)):
        size = rng.choice([N, N, N, 80, 240])
        loss, dup = rng.choice([0, 0.05, 0.3]), rng.choice([0, 0.05, 0.2])
        jitter = rng.choice([0.0, 0.01, 0.05, 0.2])
        for _ in range(rng.randrange(20, 120)):
            samples = np.array([rng.randrange(-32768, 32768) for _ in range(4)], dtype=np.int16)
            samples = np.repeat(samples, size // 4)
            if rng.random() >= loss:
                when = t + rng.uniform(0, jitter)
                packets.append((when, seq, ts, samples, ssrc))
                if rng.random() < dup:
                    packets.append((when + rng.uniform(0, 0.1), seq, ts, samples, ssrc))
            if rng.random() < 0.01:  # the same sequence number on another timestamp, and the converse
                packets.append((t, seq, ts + size, samples, ssrc))
                packets.append((t, seq + 1000, ts, samples[::-1].copy(), ssrc))
            seq = (seq + 1) & 0xFFFF
            ts = (ts + size) & 0xFFFFFFFF
            t += size / 8000
        what = rng.random()
        if what < 0.3:  # silence suppression: the timestamps and the clock go on, nothing is sent
            gap = rng.randrange(5, 80) * N
            ts = (ts + gap) & 0xFFFFFFFF
            t += gap / 8000
        elif what < 0.5:  # another source behind the leg
            ssrc, seq, ts = rng.randrange(1 << 32), rng.randrange(65536), rng.randrange(1 << 32)
        elif what < 0.6:  # the sender's clock jumps
            ts = (ts + rng.randrange(1 << 32)) & 0xFFFFFFFF
        t += rng.uniform(0, 0.3)
    packets.sort(key=lambda p: p[0])
    return packets


def drive(jb, packets, ticks: int) -> list:
    """Push in arrival order and pop every 20 ms; every answer, frame and figure on the way."""
    seen, i = [], 0
    for k in range(ticks):
        now = k * F
        while i < len(packets) and packets[i][0] <= now:
            when, seq, ts, samples, ssrc = packets[i]
            seen.append(("push", jb.push(seq, ts, samples, when, ssrc), jb.buffered))
            i += 1
        frame = jb.pop(now)
        assert frame.samples.dtype == np.int16 and frame.samples.shape == (N,)
        seen.append(("pop", frame.kind, frame.samples.tobytes(), jb.delay, jb.target_delay, jb.started,
                     jb.buffered))
    seen.append(("counters", dict(jb.counters)))
    return seen


@pytest.mark.parametrize("seed", range(200))
def test_both_buffers_give_the_same_frames_answers_and_counters(seed):
    rng = random.Random(seed)
    opts = options(rng)
    packets = stream(rng)
    ticks = int(packets[-1][0] / F) + 40
    py = drive(IMPLEMENTATIONS["py"].JitterBuffer(**opts), packets, ticks)
    c = drive(IMPLEMENTATIONS["c"].JitterBuffer(**opts), packets, ticks)
    for step, (x, y) in enumerate(zip(py, c)):
        assert x == y, f"seed {seed}, step {step}: {x[:2]} != {y[:2]}"
    assert len(py) == len(c)


def test_the_streams_reach_every_rule():
    """The random streams above do exercise what they are meant to: every counter moves somewhere."""
    totals = dict.fromkeys(IMPLEMENTATIONS["c"].JitterBuffer().counters, 0)
    kinds = set()
    for seed in range(200):
        rng = random.Random(seed)
        opts = options(rng)
        packets = stream(rng)
        jb = IMPLEMENTATIONS["c"].JitterBuffer(**opts)
        for step in drive(jb, packets, int(packets[-1][0] / F) + 40):
            if step[0] == "pop":
                kinds.add(step[1])
        for name, value in jb.counters.items():
            totals[name] += value
    assert all(totals.values()), totals
    assert kinds == {"audio", "concealed", "silence", "idle"}


def capture(rng: random.Random, seconds: float, start_ns: int) -> np.ndarray:
    """Capture records of both legs (μ-law on a, A-law on b, some RFC 4733 events and odd lengths)."""
    recs = []
    for leg, pt in ((0, 0), (1, 8)):
        seq0, ts0, ssrc = rng.randrange(65536), rng.randrange(1 << 32), rng.randrange(1 << 32)
        for k in range(int(seconds * 50)):
            if rng.random() < 0.05:
                continue
            for copy in range(2 if rng.random() < 0.05 else 1):
                r = np.zeros((), CAPTURE_DTYPE)
                r["arrival_ns"] = start_ns + int((k * F + rng.uniform(0, 0.06) + 0.03 * copy) * 1e9)
                r["timestamp"] = (ts0 + N * k) & 0xFFFFFFFF
                r["ssrc"], r["seq"], r["leg"] = ssrc, (seq0 + k) & 0xFFFF, leg
                r["payload_type"] = 101 if rng.random() < 0.03 else pt
                r["length"] = rng.choice([N] * 20 + [80, 240, CAPTURE_BYTES + 12])  # the last is cut to the record
                r["payload"] = np.frombuffer(rng.randbytes(CAPTURE_BYTES), np.uint8)
                recs.append(r)
    recs.sort(key=lambda r: int(r["arrival_ns"]))
    return np.array(recs, dtype=CAPTURE_DTYPE)


@pytest.mark.parametrize("seed", range(6))
def test_a_recording_made_by_either_implementation_is_the_same_file(tmp_path, seed):
    rng = random.Random(seed)
    start = rng.randrange(1 << 40)
    records = capture(rng, 4, start)
    step = rng.choice([20, 100, 250]) * 1_000_000
    files, summaries = [], []
    for impl in ("py", "c"):
        rec = CallRecording(tmp_path / f"{impl}.wav", start, impl=impl, **options(random.Random(seed)))
        arrivals = records["arrival_ns"]
        for now in range(start, start + 5 * 10**9, step):  # as the engine hands them over: in batches
            rec.feed(records[(arrivals > now - step) & (arrivals <= now)], now)
        summaries.append(rec.finish(start + 5 * 10**9))
        files.append((tmp_path / f"{impl}.wav").read_bytes())
    assert files[0] == files[1]
    py, c = ({k: v for k, v in s.items() if k != "path"} for s in summaries)
    assert py == c and py["other_payload"] > 0 and py["seconds"] >= 4
