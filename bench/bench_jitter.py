"""Cost of recording a call: the jitter buffers and the recorder's per-packet/per-frame loop, Cython
(core/_jitter.pyx) against the Python twin (core/media/jitter.py and the Python path of
core/media/recording.py), in the same run.

Run:  python -m pytest bench/bench_jitter.py --benchmark-enable
      (the "c" and "py" rows of one group, from the same run, give the ratio)
Target (the issue "Calls", point 3, recording): one recorded call-second — 50 packets per leg, both
legs, through the buffers, 50 stereo frames played out and appended to the WAV file — several times
cheaper than the ~2.3 ms of the Python recorder, so one core records thousands of calls at once.

* "recorded call-second": a CallRecording fed the engine's capture records as the engine hands them
  over (a batch every 100 ms, so 10 feeds and 10 WAV appends per round), G.711 μ-law on leg a and
  A-law on leg b, 20 ms packets with 3 % loss, 2 % duplicates and up to 40 ms of jitter (they
  overtake each other). One round is the next second of the same long call: the records of the
  next second are made (not timed) by shifting a minute of records by whole minutes.
* "buffer alone": the same second through two JitterBuffers by their Python face (push the decoded
  samples, pop every 20 ms), without the capture records or the file.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from core.media import g711
from core.media.recording import CAPTURE_DTYPE, IMPLEMENTATIONS, CallRecording

SECONDS = 60          # a minute of records, replayed shifted for as many rounds as needed
BATCH_NS = 100_000_000
ROUNDS = {"py": 300, "c": 3000}


@pytest.fixture(params=["py", "c"])
def impl(request):
    if IMPLEMENTATIONS[request.param] is None:
        pytest.skip("core._jitter is not built (python setup.py build_ext --inplace)")
    return request.param


def minute(seed: int = 1) -> np.ndarray:
    """A minute of both legs' capture records, in arrival order, arrivals from 0 ns."""
    rng = random.Random(seed)
    tone = np.sin(2 * np.pi * np.arange(160 * 50 * SECONDS) * np.array([[1000.0], [440.0]]) / 8000) * 7000
    codes = {0: g711.ULAW_ENCODE[tone[0].astype(np.int32) + 32768], 8: g711.ALAW_ENCODE[tone[1].astype(np.int32) + 32768]}
    recs = []
    for leg, pt in ((0, 0), (1, 8)):
        ts0 = rng.randrange(1 << 32)
        for k in range(50 * SECONDS):
            if rng.random() < 0.03:
                continue
            for copy in range(2 if rng.random() < 0.02 else 1):
                r = np.zeros((), CAPTURE_DTYPE)
                r["arrival_ns"] = int((0.02 * k + rng.uniform(0, 0.04) + 0.01 * copy) * 1e9)
                r["timestamp"], r["ssrc"], r["seq"] = (ts0 + 160 * k) & 0xFFFFFFFF, 10 + leg, k & 0xFFFF
                r["length"], r["payload_type"], r["leg"] = 160, pt, leg
                r["payload"][:160] = codes[pt][160 * k:160 * (k + 1)]
                recs.append(r)
    recs.sort(key=lambda r: int(r["arrival_ns"]))
    return np.array(recs, dtype=CAPTURE_DTYPE)


class Call:
    """The records of second after second of one long call, cut into the engine's 100 ms batches."""

    def __init__(self):
        self.records = minute()
        self.second = 0

    def next_second(self) -> list[tuple[np.ndarray, int]]:
        lap, s = divmod(self.second, SECONDS)
        self.second += 1
        lo, hi = s * 10**9, (s + 1) * 10**9
        arrivals = self.records["arrival_ns"]
        part = self.records[(arrivals >= lo) & (arrivals < hi)].copy()
        part["arrival_ns"] += lap * SECONDS * 10**9
        part["timestamp"] += np.uint32(lap * SECONDS * 8000 & 0xFFFFFFFF)
        part["seq"] += np.uint16(lap * SECONDS * 50 & 0xFFFF)
        base = lap * SECONDS * 10**9 + lo
        out = []
        for b in range(10):
            start, end = base + b * BATCH_NS, base + (b + 1) * BATCH_NS
            a = part["arrival_ns"]
            out.append((part[(a >= start) & (a < end)], end))
        return out


def test_recorded_call_second(benchmark, impl, tmp_path):
    benchmark.group = "recorded call-second (50 packets per leg, both legs, 50 stereo frames to the WAV file)"
    call = Call()
    recording = CallRecording(tmp_path / "call.wav", 0, impl=impl)

    def setup():
        return (call.next_second(),), {}

    def one_second(batches):
        for records, now_ns in batches:
            recording.feed(records, now_ns)

    benchmark.pedantic(one_second, setup=setup, rounds=ROUNDS[impl], warmup_rounds=20)
    summary = recording.finish(call.second * 10**9)
    # a round that recorded nothing would be a wrong figure: every second played (allow the loss)
    assert summary["seconds"] >= call.second - 1
    assert summary["a"]["played"] >= 0.9 * 50 * call.second and summary["b"]["played"] >= 0.9 * 50 * call.second


def test_buffers_alone(benchmark, impl):
    benchmark.group = "buffer alone: one call-second through two JitterBuffers (push + pop, Python face)"
    call = Call()
    jb = IMPLEMENTATIONS[impl]
    legs = (jb.JitterBuffer(), jb.JitterBuffer())
    tables = {0: g711.ULAW_DECODE, 8: g711.ALAW_DECODE}
    played = [0]

    def setup():
        packets = []
        for records, now_ns in call.next_second():
            for r in records:
                packets.append((int(r["arrival_ns"]), int(r["leg"]), int(r["seq"]), int(r["timestamp"]),
                                tables[int(r["payload_type"])][r["payload"][:160]], int(r["ssrc"])))
        return (packets, (call.second - 1) * 10**9), {}

    def one_second(packets, start_ns):
        i = 0
        for k in range(50):
            tick = start_ns + k * 20_000_000
            while i < len(packets) and packets[i][0] <= tick:
                arrival, leg, seq, ts, samples, ssrc = packets[i]
                legs[leg].push(seq, ts, samples, arrival / 1e9, ssrc)
                i += 1
            for b in legs:
                if b.pop(tick / 1e9).kind == "audio":
                    played[0] += 1
        for arrival, leg, seq, ts, samples, ssrc in packets[i:]:
            legs[leg].push(seq, ts, samples, arrival / 1e9, ssrc)

    benchmark.pedantic(one_second, setup=setup, rounds=ROUNDS[impl] // 3, warmup_rounds=5)
    assert played[0] >= 0.9 * 2 * 50 * call.second
