"""Switchcore's bindings: sockets, threads, files and clocks around the sans-IO core."""
import os as _os

from core import _check_build

_check_build(_os.path.dirname(_os.path.abspath(__file__)))
