"""What Python sees of core/_jitter.pyx: the JitterBuffer of core/media/jitter.py (same constructor, same
methods and figures, the same frames out), and the recorder's feed loop."""

import numpy as np

from core.media.jitter import Frame

class JitterBuffer:
    rate: int
    n: int
    frame_seconds: float
    min_delay: float
    max_delay: float
    initial_delay: float
    quantile: float
    margin: float
    drop_excess: float
    adapt_every: int
    conceal_frames: int
    idle_frames: int
    capacity: int
    window: int
    silence: np.ndarray
    def __init__(self, clock_rate: int = 8000, frame_samples: int = 160, *, min_delay: float = 0.02,
                 max_delay: float = 0.3, initial_delay: float = 0.06, window: int = 100, quantile: float = 0.95,
                 margin: float = 0.01, adapt_every: int = 10, conceal_frames: int = 3, idle_frames: int = 50,
                 drop_excess: float = 0.08, capacity: int = 512) -> None: ...
    def push(self, seq: int, timestamp: int, samples: np.ndarray, now: float, ssrc: int = 0) -> str:
        """"queued", "duplicate", "late" or "overflow"; the samples are copied."""
    def pop(self, now: float) -> Frame:
        """The frame at ``now``; its samples are a new array (the shared ``silence`` for silence and idle)."""
    @property
    def counters(self) -> dict[str, int]:
        """A fresh dict each time (the twin's is live); the same names in the same order."""
    @property
    def delay(self) -> float: ...
    @property
    def target_delay(self) -> float: ...
    @property
    def buffered(self) -> int: ...
    @property
    def started(self) -> bool: ...

def feed_records(a: JitterBuffer, b: JitterBuffer, records: np.ndarray, next_tick_ns: int, tick_ns: int,
                 now_ns: int, ulaw: np.ndarray, alaw: np.ndarray) -> tuple[np.ndarray, int, int]:
    """CallRecording.feed's loop: (int16 samples of shape (ticks × frame samples, 2), the next tick,
    packets of other payload types)."""
