"""Random identifiers: tags (RFC 3261 §19.3: globally unique, cryptographically random, at least 32
bits), branches (§8.1.1.7: unique per transaction) and Call-IDs (§8.1.1.4), and an o= session id.

Each call takes about ten of them. They come from the operating system's CSPRNG as ``secrets`` would
give them, but drawn from a 4 KiB buffer of ``os.urandom`` refilled when spent: one system call per
few hundred identifiers instead of one each. A child process made by ``fork`` drops the buffer it
inherited, so parent and child never hand out the same bytes.
"""
from __future__ import annotations

import os

__all__ = ["random_bytes", "random_hex", "random_below_2_31"]

_POOL_SIZE = 4096
_pool = b""
_pos = _POOL_SIZE  # where the unused bytes of _pool start; _POOL_SIZE when it is spent (or empty)


def random_bytes(n: int) -> bytes:
    """``n`` (at most 4096) bytes from the CSPRNG."""
    global _pool, _pos
    pos = _pos
    end = pos + n
    if end > _POOL_SIZE:
        _pool = os.urandom(_POOL_SIZE)
        pos, end = 0, n
    _pos = end
    return _pool[pos:end]


def random_hex(n: int) -> str:
    """``n`` random bytes as 2n lower-case hex digits (``secrets.token_hex(n)``)."""
    return random_bytes(n).hex()


def random_below_2_31() -> int:
    """A random integer in [0, 2**31): an SDP o= session id (RFC 4566 §5.2)."""
    return int.from_bytes(random_bytes(4), "big") & 0x7FFFFFFF


def _forget_pool() -> None:
    global _pool, _pos
    _pool, _pos = b"", _POOL_SIZE


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)
