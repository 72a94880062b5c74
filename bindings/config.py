"""Reading the configuration file: the I/O half of ``core.config`` (which decodes and checks).

``load_config(path)`` reads the file and decodes it; a file that cannot be read is one more
``FILE: problem`` line in the same ConfigError, so the CLI reports every failure the same way.
"""
from __future__ import annotations

import os
from pathlib import Path

from core.config import Config, ConfigError, decode_config, default_config

__all__ = ["load_config"]


def load_config(path: str | os.PathLike[str] | None) -> Config:
    """The Config in the file at ``path`` (the embedded defaults when None); ConfigError whose
    lines name ``path`` as given otherwise."""
    if path is None:
        return default_config()
    name = os.fspath(path)
    try:
        data = Path(name).read_bytes()
    except OSError as exc:
        raise ConfigError([f"{name}: cannot read: {exc.strerror or exc}"]) from None
    return decode_config(data, name)
