"""Media: the RTP relay engine and what it computes (docs/internals.md, "Media").

- ``core._rtp.Engine`` (Cython): owns the UDP sockets of the relays and moves packets in C without the
  GIL; the call layer commands it (add/patch/remove a relay, stop) and drains its events.
- ``core.media.rtp``: the packet transforms in plain Python (RTP header, reception statistics and
  RFC 4733 digits of what arrives on a leg, SSRC/seq/ts rewrite of what leaves it): the specification
  that ``core._rtp`` implements in C, and the oracle of the tests (``IMPLEMENTATIONS``).
- ``core.media.quality``: RFC 3550 A.1/A.8 figures and the G.107 E-model MOS estimate.
- ``core.media.g711``: μ-law and A-law (ITU-T G.711) with numpy.
- ``core.media.prompts``: WAV prompts converted once to G.711 frames, and tones (DTMF, ringback, busy).
- ``core.media.jitter``: the adaptive jitter buffer recordings go through.
- ``core.media.recording``: the stereo WAV writer, and the repair of a file cut off by a crash.
"""

from __future__ import annotations

from core.media import rtp
from core.media.quality import LegFigures
from core.media.rtp import DtmfDigit, Latched, MediaTimeout, RtpError, RtpHeader, SsrcChanged

try:
    from core import _rtp
except ImportError:  # the extension is not built: `python setup.py build_ext --inplace`
    _rtp = None

IMPLEMENTATIONS = {"py": rtp, "c": _rtp}
Engine = _rtp.Engine if _rtp is not None else None

__all__ = [
    "DtmfDigit", "Engine", "IMPLEMENTATIONS", "Latched", "LegFigures", "MediaTimeout", "RtpError", "RtpHeader",
    "SsrcChanged",
]
