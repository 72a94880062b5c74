"""The adaptive jitter buffer of recordings (core/media/jitter.py), driven with made-up arrival times: what
comes out every 20 ms is what a listener of the recording hears, so the tests look at the frames out —
their order, their gaps, their delay — and at the counters the recording's summary reports."""

from __future__ import annotations

import random

import numpy as np
import pytest

from core.media.jitter import AUDIO, CONCEALED, IDLE, SILENCE
from core.media.recording import IMPLEMENTATIONS

N = 160
F = 0.02


@pytest.fixture(params=["py", "c"])
def JitterBuffer(request):
    """Each test runs against both implementations: core.media.jitter (Python) and core._jitter (Cython)."""
    module = IMPLEMENTATIONS[request.param]
    if module is None:
        pytest.skip("core._jitter is not built (python setup.py build_ext --inplace)")
    return module.JitterBuffer


def steady(JitterBuffer, **options):
    """A buffer whose delay stays at 60 ms, for the tests that are not about adapting it."""
    return JitterBuffer(min_delay=0.06, initial_delay=0.06, max_delay=0.06, **options)


def frame(k: int) -> np.ndarray:
    """Frame k of a stream whose every sample says which frame it is from."""
    return np.full(N, k + 1, dtype=np.int16)


def run(jb, arrivals: list[tuple[float, int]], ticks: int, seq0: int = 0, ts0: int = 0,
        ssrc: int = 7, start: float = 0.0):
    """Push (arrival time, frame index) in arrival order and pop every 20 ms from ``start``; the frames out."""
    arrivals = sorted(arrivals)
    out, i = [], 0
    for t in range(ticks):
        now = start + t * F
        while i < len(arrivals) and arrivals[i][0] <= now:
            when, k = arrivals[i]
            jb.push(seq0 + k, ts0 + k * N, frame(k), when, ssrc)
            i += 1
        out.append(jb.pop(now))
    return out


def played(frames) -> list[int]:
    """The frame numbers heard, in order (0: concealment or silence), from the first audio on."""
    seq = [int(f.samples[0]) - 1 if f.kind == AUDIO else -1 for f in frames if f.kind != IDLE]
    return seq


def whole(heard: list[int], lo: int, hi: int) -> bool:
    """Frames lo..hi-1 were heard one after the other, with no gap or concealment between them."""
    return lo in heard and heard[heard.index(lo):heard.index(lo) + hi - lo] == list(range(lo, hi))


def test_an_orderly_stream_comes_out_whole_after_the_initial_delay(JitterBuffer):
    jb = steady(JitterBuffer)
    out = run(jb, [(k * F + 0.001, k) for k in range(50)], 54)
    heard = played(out)
    assert heard == list(range(50))
    idle = sum(1 for f in out if f.kind == IDLE)
    assert idle == 4  # 60 ms of delay after the first packet, rounded up to the tick
    assert jb.counters["late"] == jb.counters["duplicate"] == jb.counters["concealed"] == 0


def test_reordered_packets_play_in_timestamp_order(JitterBuffer):
    rng = random.Random(3)
    arrivals = [(k * F + 0.001, k) for k in range(60)]
    for k in range(0, 58, 6):  # swap neighbours: each arrives 20 ms out of place
        arrivals[k], arrivals[k + 1] = (arrivals[k + 1][0], arrivals[k][1]), (arrivals[k][0], arrivals[k + 1][1])
    rng.shuffle(arrivals)  # the push order is by arrival time anyway
    jb = steady(JitterBuffer)
    heard = played(run(jb, arrivals, 70))
    assert heard[:60] == list(range(60))
    assert jb.counters["late"] == 0


def test_duplicates_are_dropped_and_counted(JitterBuffer):
    arrivals = [(k * F + 0.001, k) for k in range(30)] + [(k * F + 0.005, k) for k in (3, 10, 11)]
    arrivals += [(0.5, 2)]  # a copy of a frame already played
    jb = steady(JitterBuffer)
    heard = played(run(jb, arrivals, 40))
    assert heard[:30] == list(range(30))
    assert jb.counters["duplicate"] == 4
    assert jb.counters["late"] == 0


def test_a_lost_frame_is_concealed_by_a_fading_repeat_and_a_long_loss_turns_to_silence(JitterBuffer):
    lost = {10} | set(range(20, 30))
    jb = steady(JitterBuffer, conceal_frames=3)
    out = [f for f in run(jb, [(k * F + 0.001, k) for k in range(40) if k not in lost], 44) if f.kind != IDLE]
    assert out[10].kind == CONCEALED
    assert np.array_equal(out[10].samples[:1], frame(9)[:1])  # the last frame, repeated...
    assert abs(int(out[10].samples[-1])) < abs(int(frame(9)[-1])) or frame(9)[-1] <= 1  # ... fading
    assert [f.kind for f in out[20:30]] == [CONCEALED] * 3 + [SILENCE] * 7
    assert all(int(np.abs(f.samples).max()) == 0 for f in out[23:30])
    assert played(out)[30:40] == list(range(30, 40))
    assert jb.counters["concealed"] == 4 and jb.counters["silent"] == 7


def test_a_packet_after_its_playout_time_is_late_dropped_and_counted(JitterBuffer):
    arrivals = [(k * F + 0.001, k) for k in range(40) if k != 15] + [(15 * F + 0.3, 15)]
    jb = steady(JitterBuffer)
    out = run(jb, arrivals, 50)
    assert jb.counters["late"] == 1
    assert 15 not in played(out)
    assert played(out)[16:40] == list(range(16, 40))


def test_the_delay_grows_with_jitter_within_its_bounds_and_late_packets_become_rare(JitterBuffer):
    rng = random.Random(11)
    jitter = [(k * F + rng.uniform(0, 0.08), k) for k in range(400)]
    jb = JitterBuffer(initial_delay=0.02, min_delay=0.02, max_delay=0.2)
    out = run(jb, jitter, 420)
    assert jb.counters["stretched"] >= 1          # it started at 20 ms: it had to grow
    assert 0.06 <= jb.delay <= 0.2
    heard = played(out)
    assert whole(heard, 300, 400)  # settled: the last 2 s are whole
    assert jb.counters["late"] <= 8

    capped = JitterBuffer(initial_delay=0.02, min_delay=0.02, max_delay=0.05)
    run(capped, [(k * F + rng.uniform(0, 0.3), k) for k in range(200)], 220)
    # the bound holds (to within the one frame of hysteresis): past it, packets are late, the call not delayed
    assert capped.target_delay == 0.05 and capped.delay <= 0.05 + F
    assert capped.counters["late"] > 20


def test_the_delay_shrinks_when_the_jitter_goes_away(JitterBuffer):
    rng = random.Random(5)
    arrivals = [(k * F + rng.uniform(0, 0.1), k) for k in range(200)]
    calm = [(k * F + 0.001, k) for k in range(200, 600)]
    # allowed to drop frames that are there when 30 ms over: it comes down to the 20 ms floor
    jb = JitterBuffer(initial_delay=0.06, window=100, drop_excess=0.03)
    out = run(jb, arrivals + calm, 620)
    assert jb.counters["compressed"] >= 2
    assert jb.delay <= 0.06
    assert whole(played(out), 560, 600)
    # by default it comes down only by skipping frames that are missing anyway: nothing heard is lost
    jb = JitterBuffer(initial_delay=0.06, window=100)
    out = run(jb, arrivals + [a for a in calm if a[1] % 10], 620)
    assert jb.counters["compressed"] >= 2 and jb.counters["discarded"] == 0
    assert jb.delay <= 0.06


def test_silence_suppression_keeps_the_pause_and_a_new_source_starts_over(JitterBuffer):
    # frames 0-19, then a pause of 1 s (the timestamps say so), then frames 70-89
    arrivals = [(k * F + 0.001, k) for k in list(range(20)) + list(range(70, 90))]
    jb = steady(JitterBuffer, idle_frames=500)
    heard = played(run(jb, arrivals, 100))
    assert heard[:20] == list(range(20))
    assert heard[20:70] == [-1] * 50
    assert heard[70:90] == list(range(70, 90))

    jb = JitterBuffer(initial_delay=0.04)
    out = run(jb, [(k * F + 0.001, k) for k in range(20)], 25)
    for t, k in enumerate(range(20)):  # another SSRC with unrelated numbers: no packet of it is "late"
        jb.push(5000 + k, 99999 + k * N, frame(100 + k), 0.5 + t * F, ssrc=8)
    more = [jb.pop(0.5 + t * F) for t in range(25)]
    assert jb.counters["resyncs"] == 1 and jb.counters["late"] == 0
    assert [int(f.samples[0]) - 1 for f in more if f.kind == AUDIO] == list(range(100, 120))
    assert played(out)[:20] == list(range(20))


@pytest.mark.parametrize("size", [80, 240])
def test_packets_of_another_size_than_a_frame_are_cut_and_joined(JitterBuffer, size):
    """10 ms and 30 ms packets (other ptimes) give the same samples out as 20 ms ones."""
    signal = np.arange(size * 40, dtype=np.int16)
    jb = steady(JitterBuffer)
    out, i = [], 0
    packets = [(k * size / 8000 + 0.001, k) for k in range(40)]
    for t in range(int(size * 40 / N) + 10):
        now = t * F
        while i < len(packets) and packets[i][0] <= now:
            k = packets[i][1]
            jb.push(k, k * size, signal[k * size:(k + 1) * size], packets[i][0])
            i += 1
        out.append(jb.pop(now))
    joined = np.concatenate([f.samples for f in out if f.kind == AUDIO])
    assert np.array_equal(joined[:len(signal)], signal[:len(joined)])
    assert len(joined) >= len(signal) - N
