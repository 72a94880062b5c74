"""What Python sees of core/_acd.pyx: the ACD face of core/acd (the same as core/acd/_pyacd.py)."""

from typing import Iterable

from core.acd.model import Agent, AgentStats, Queue, QueueStats

Buffer = object  # any object with the buffer protocol (array("q"), numpy int64, bytearray, shared memory)

class AutomaticCallDistributor:
    def __init__(self, queues: Iterable[Queue], agents: Iterable[Agent], *, seed: int = 0) -> None: ...
    def handle_event(self, event: object, now: float) -> None: ...
    def handle_records(self, records: Buffer, now: float) -> None:
        """The events in ``records`` (whole records of RECORD_WORDS native int64 words, the layout
        in core.acd.model), in order, as handle_event would take them one by one."""
    def take_records(self, out: Buffer) -> int:
        """Move as many outputs as fit into the writable buffer ``out`` as records; return how many."""
    def handle_timer(self, now: float) -> None: ...
    def get_timer(self) -> float | None: ...
    @property
    def timers_held(self) -> int:
        """How many timers the ACD holds, those that can no longer fire included."""
    def next_output(self) -> object | None: ...
    def queue_stats(self, queue: str, now: float) -> QueueStats: ...
    def agent_stats(self, agent: str, now: float) -> AgentStats: ...
