# cython: language_level=3
"""Objects the cyclic garbage collector need not walk (see core/memory.py)."""

cdef extern from "Python.h":
    bint PyObject_IS_GC(object)
    void PyObject_GC_UnTrack(void *)

cdef bint _untracking = False


def untrack(obj):
    """Take ``obj`` out of the cyclic collector's lists when untracking is on; ``obj`` back."""
    if _untracking and PyObject_IS_GC(obj):
        PyObject_GC_UnTrack(<void *>obj)  # a no-op on an object already untracked
    return obj


def set_untracking(bint on):
    """Turn untracking on or off for objects made from now on; what it was before."""
    global _untracking
    cdef bint before = _untracking
    _untracking = on
    return before


def untracking():
    return _untracking
