"""Switchcore's sans-IO core: bytes and time in, events and bytes out.

Nothing under ``core`` opens a socket, starts a thread or reads a clock: the current time is always
an argument (``now``, seconds as a float), so a test can drive hours of timers in milliseconds.
"""
