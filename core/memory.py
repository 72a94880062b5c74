"""Objects of a call that the cyclic garbage collector need not walk.

A call's transactions, sessions and dialogs make no reference cycles (tests/test_call_memory.py), so
reference counting frees every one of them the moment it is dropped. Yet while they live the
collector walks them: a transaction waits out Timer J, K, L or M for up to 32 s after its call, and
keeps its session and dialog until then, so at 2,000 calls a second the node holds a few million such
objects (about 30 a call), each walked once in each young generation and then by every full
collection (one each time a quarter more objects have reached the old generation, each a pause as
long as the walk of them all). In ``bench/bench_call_path.py`` the young collections alone took 14
µs of a call's 175; with these objects untracked, 3.5.

``untrack(obj)`` takes such an object out of the collector's lists when untracking is on (the node
turns it on, ``bindings/node.py``; off by default, so that a library user and the tests that look
for cyclic garbage see every object). Only objects that are never part of a cycle may be given to
it: a cycle through an untracked object is never collected. The wheel's handles are safe for any
caller: a handle lets go of its item when it fires or is cancelled, and until then the wheel
itself holds it.

Without the compiled ``core._memory`` (nothing built) every object stays tracked.
"""
from __future__ import annotations

try:
    from core._memory import set_untracking, untrack, untracking
except ImportError:  # nothing built: plain Python keeps every object tracked
    def untrack(obj):
        return obj

    def set_untracking(on: bool) -> bool:
        return False

    def untracking() -> bool:
        return False

__all__ = ["set_untracking", "untrack", "untracking"]
