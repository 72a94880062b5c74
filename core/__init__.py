"""Switchcore's sans-IO core: bytes and time in, events and bytes out.

Nothing under ``core`` opens a socket, starts a thread or reads a clock: the current time is always
an argument (``now``, seconds as a float), so a test can drive hours of timers in milliseconds.
"""


def _stale_builds(here: str | None = None) -> list[str]:
    """In a source checkout built in place: the compiled modules older than their source (the
    ``.pyx``, or the ``.py`` that setup.py compiles as it is). Python imports a compiled module before
    the ``.py`` beside it, so a stale one would run yesterday's code without a word. An installed copy
    (no setup.py above this package) is left alone: its files' times say nothing."""
    import os
    import sysconfig

    here = here or os.path.dirname(os.path.abspath(__file__))
    if not os.path.exists(os.path.join(os.path.dirname(here), "setup.py")):
        return []
    suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
    stale = []
    for folder, dirs, files in os.walk(here):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in files:
            if not name.endswith(suffix):
                continue
            stem = os.path.join(folder, name[: -len(suffix)])
            built = os.path.getmtime(os.path.join(folder, name))
            for source in (stem + ".pyx", stem + ".pxd", stem + ".py"):
                if os.path.exists(source) and os.path.getmtime(source) > built:
                    stale.append(os.path.relpath(source, os.path.dirname(here)))
    return sorted(stale)


def _check_build(here: str | None = None) -> None:
    """Refuse to import a checkout whose compiled modules are older than their source (``bindings``
    calls it for its own folder too)."""
    if stale := _stale_builds(here):
        raise ImportError(
            f"{', '.join(stale)} changed since the build: run `python setup.py build_ext --inplace` "
            "(or `pip install -e .`) again"
        )


_check_build()
