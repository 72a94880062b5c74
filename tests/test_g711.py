"""G.711 μ-law and A-law (core/media/g711.py): the values the Recommendation fixes, round trips, and the
same answers as an independent implementation (CPython's audioop, Sun's g711.c) where it exists."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from core.media import g711

ALL_SAMPLES = np.arange(-32768, 32768, dtype=np.int16)
ALL_CODES = bytes(range(256))


def test_silence_is_the_code_the_recommendation_gives_for_zero():
    # G.711: μ-law sends 0xFF for a zero sample (all bits inverted), A-law 0xD5 (even bits inverted).
    assert g711.ulaw_encode(np.zeros(160, np.int16)) == bytes([0xFF]) * 160
    assert g711.alaw_encode(np.zeros(160, np.int16)) == bytes([0xD5]) * 160
    assert g711.ULAW_SILENCE == 0xFF and g711.ALAW_SILENCE == 0xD5


def test_the_largest_outputs_are_those_of_the_tables():
    # G.711 Table 2 (μ-law): largest decoder output 8031 on the 14-bit scale; Table 1 (A-law): 4032 on
    # the 13-bit scale. At 16 bits: ×4 and ×8.
    assert g711.ulaw_decode(b"\x80\x00").tolist() == [8031 * 4, -8031 * 4]
    assert g711.alaw_decode(b"\xaa\x2a").tolist() == [4032 * 8, -4032 * 8]
    # and the smallest: μ-law's first step is 0 (codes 0xFF/0x7F), A-law's first output is ±1 (×8)
    assert g711.ulaw_decode(b"\xff\x7f").tolist() == [0, 0]
    assert g711.alaw_decode(b"\xd5\x55").tolist() == [8, -8]


def test_loud_samples_clip_to_the_largest_code():
    assert g711.ulaw_encode([32767, -32768]) == b"\x80\x00"
    assert g711.alaw_encode([32767, -32768]) == b"\xaa\x2a"


@pytest.mark.parametrize("codec", ["PCMU", "PCMA"])
def test_every_code_survives_decode_then_encode(codec):
    decoded = g711.decode(codec, ALL_CODES)
    again = g711.encode(codec, decoded)
    # μ-law has two codes for zero (0xFF, 0x7F): −0 encodes as +0
    mismatched = [c for c, d in zip(ALL_CODES, again) if c != d]
    assert mismatched == ([0x7F] if codec == "PCMU" else [])


@pytest.mark.parametrize("codec", ["PCMU", "PCMA"])
def test_quantisation_error_is_within_half_a_step(codec):
    levels = np.unique(g711.decode(codec, ALL_CODES).astype(np.int32))
    out = g711.decode(codec, g711.encode(codec, ALL_SAMPLES)).astype(np.int32)
    err = np.abs(out - ALL_SAMPLES.astype(np.int32))
    # the gap to the nearest neighbour level bounds the error of every sample inside the range
    inside = (ALL_SAMPLES >= levels[0]) & (ALL_SAMPLES <= levels[-1])
    step = np.diff(levels).max()
    assert err[inside].max() <= step
    # and the error grows with the level: small samples are coded finely (the point of companding)
    small = np.abs(ALL_SAMPLES.astype(np.int32)) < 256
    assert err[small].max() <= 16


def test_a_tone_keeps_its_shape():
    t = np.arange(8000) / 8000
    tone = (10000 * np.sin(2 * np.pi * 1004 * t)).astype(np.int16)
    for codec in ("PCMU", "PCMA"):
        out = g711.decode(codec, g711.encode(codec, tone)).astype(np.float64)
        snr = 10 * np.log10(np.sum(tone.astype(np.float64) ** 2) / np.sum((out - tone) ** 2))
        assert snr > 35, f"{codec}: SNR {snr:.1f} dB"  # G.711's SNR for a loud sine is about 38 dB


def test_same_answers_as_audioop():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        audioop = pytest.importorskip("audioop", reason="audioop left CPython in 3.13")
    data = ALL_SAMPLES.tobytes()
    assert g711.ulaw_encode(ALL_SAMPLES) == audioop.lin2ulaw(data, 2)
    assert g711.alaw_encode(ALL_SAMPLES) == audioop.lin2alaw(data, 2)
    assert g711.ulaw_decode(ALL_CODES).tobytes() == audioop.ulaw2lin(ALL_CODES, 2)
    assert g711.alaw_decode(ALL_CODES).tobytes() == audioop.alaw2lin(ALL_CODES, 2)
