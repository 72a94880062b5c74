"""G.711 μ-law (PCMU, RTP payload type 0) and A-law (PCMA, payload type 8), ITU-T G.711 (11/88), on
numpy arrays of 16-bit linear samples: the codec of every call the switch plays, records or taps.

G.711 defines A-law on 13-bit and μ-law on 14-bit linear values; 16-bit samples are scaled by 8 and 4
(the convention of the reference implementation of ITU-T G.191 and of Sun's g711.c): the largest
A-law output is 4032·8 = 32256, the largest μ-law output 8031·4 = 32124. Both directions are tables
built once at import: 256 entries to decode, 65,536 to encode, so a 20 ms packet is one numpy take.
Codes on the wire have A-law's even bits inverted (0x55) and μ-law's bits all inverted (G.711 §3, §4).
"""

from __future__ import annotations

import numpy as np

_ULAW_SEG_END = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF])  # 14-bit, after bias
_ALAW_SEG_END = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF])    # 13-bit magnitude
_ULAW_BIAS = 0x21  # 33: μ-law's segments start at 33·(2^n − 1) on the 14-bit scale
_ULAW_CLIP = 8159


def _build_ulaw_decode() -> np.ndarray:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    t = (((u & 0x0F) << 3) + 0x84) << ((u & 0x70) >> 4)
    return np.where(u & 0x80, 0x84 - t, t - 0x84).astype(np.int16)


def _build_alaw_decode() -> np.ndarray:
    a = np.arange(256, dtype=np.int32) ^ 0x55
    seg = (a & 0x70) >> 4
    t = (a & 0x0F) << 4
    t = np.where(seg == 0, t + 8, (t + 0x108) << np.maximum(seg - 1, 0))
    return np.where(a & 0x80, t, -t).astype(np.int16)


def _build_ulaw_encode() -> np.ndarray:
    pcm = np.arange(-32768, 32768, dtype=np.int32) >> 2
    mask = np.where(pcm < 0, 0x7F, 0xFF)
    mag = np.minimum(np.abs(pcm), _ULAW_CLIP) + _ULAW_BIAS
    seg = np.searchsorted(_ULAW_SEG_END, mag, side="left")
    code = (seg << 4) | ((mag >> (seg + 1)) & 0x0F)
    return (np.where(seg >= 8, 0x7F, code) ^ mask).astype(np.uint8)


def _build_alaw_encode() -> np.ndarray:
    pcm = np.arange(-32768, 32768, dtype=np.int32) >> 3
    mask = np.where(pcm >= 0, 0xD5, 0x55)
    mag = np.where(pcm >= 0, pcm, -pcm - 1)
    seg = np.searchsorted(_ALAW_SEG_END, mag, side="left")
    code = (seg << 4) | np.where(seg < 2, (mag >> 1) & 0x0F, (mag >> np.maximum(seg, 1)) & 0x0F)
    return (np.where(seg >= 8, 0x7F, code) ^ mask).astype(np.uint8)


ULAW_DECODE: np.ndarray = _build_ulaw_decode()   # code → int16
ALAW_DECODE: np.ndarray = _build_alaw_decode()
ULAW_ENCODE: np.ndarray = _build_ulaw_encode()   # int16 + 32768 → code
ALAW_ENCODE: np.ndarray = _build_alaw_encode()
for _table in (ULAW_DECODE, ALAW_DECODE, ULAW_ENCODE, ALAW_ENCODE):
    _table.flags.writeable = False

ULAW_SILENCE = 0xFF  # the code of a zero sample
ALAW_SILENCE = 0xD5


def _samples(samples) -> np.ndarray:
    return np.asarray(samples, dtype=np.int16)


def ulaw_encode(samples) -> bytes:
    """16-bit linear samples → μ-law bytes."""
    return ULAW_ENCODE[_samples(samples).astype(np.int32) + 32768].tobytes()


def alaw_encode(samples) -> bytes:
    """16-bit linear samples → A-law bytes."""
    return ALAW_ENCODE[_samples(samples).astype(np.int32) + 32768].tobytes()


def ulaw_decode(data: bytes) -> np.ndarray:
    """μ-law bytes → int16 samples."""
    return ULAW_DECODE[np.frombuffer(data, dtype=np.uint8)]


def alaw_decode(data: bytes) -> np.ndarray:
    """A-law bytes → int16 samples."""
    return ALAW_DECODE[np.frombuffer(data, dtype=np.uint8)]


CODECS = {"PCMU": (ulaw_encode, ulaw_decode), "PCMA": (alaw_encode, alaw_decode)}


def encode(codec: str, samples) -> bytes:
    """``codec`` is the SDP encoding name (RFC 3551 §4.5.14): "PCMU" or "PCMA"."""
    return CODECS[codec][0](samples)


def decode(codec: str, data: bytes) -> np.ndarray:
    return CODECS[codec][1](data)
