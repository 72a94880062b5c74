"""Build the Cython extensions.

Two kinds: the ``core/_*.pyx`` modules, written in Cython (the parser, the media engine, the ACD ...),
and the pure-Python modules of a call's message path (``COMPILED``), which Cython compiles as they are:
the ``.py`` file stays the one source, runs as plain Python wherever it is not built, and the
compiled module takes its place on import once it is (about a third less CPU for the same code).
``core/__init__.py`` refuses to import a compiled module older than its source in a checkout.

SWITCHCORE_DEBUG=1 builds with line tracing (coverage and profilers see the .pyx lines) and
bounds/wraparound checks on; the default build is the fast one.
"""
import os
import platform
from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("SWITCHCORE_DEBUG", "") not in ("", "0")

directives = {
    "language_level": "3",
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "cdivision": True,
    "embedsignature": True,
}
macros = []
if DEBUG:
    directives.update(linetrace=True, profile=True)
    macros += [("CYTHON_TRACE", "1"), ("CYTHON_TRACE_NOGIL", "1")]

# x86-64: the bit-counting instruction (every x86-64 processor since 2008 has it; without the flag
# each __builtin_popcountll in the ACD's agent sets is a call into libgcc).
ARCH_FLAGS = ["-mpopcnt"] if platform.machine().lower() in ("x86_64", "amd64") else []

# The pure-Python modules every call goes through, compiled as they are. Not the pure-Python twins of
# the Cython modules (core/sip/_pysip.py, core/acd/_pyacd.py, core/media/rtp.py, core/media/jitter.py):
# they are the references the differential tests compare the Cython modules against.
COMPILED = [
    "core/sdp.py",
    "core/registrar.py",
    "core/sip/ids.py",
    "core/sip/uri.py",
    "core/sip/dialog.py",
    "core/sip/transaction.py",
    "core/sip/session.py",
    "core/sip/endpoint.py",
    "core/scheduler/wheel.py",
    "core/call/routes.py",
    "core/call/b2bua.py",
    "core/media/quality.py",
    "core/cdr/record.py",
    "core/cdr/kpi.py",
    "bindings/transport.py",
    "bindings/node.py",
    "bindings/records.py",
    "bindings/media.py",
    "bindings/cdr.py",
]
# Plain Python semantics for them: negative indices and bounds as Python has them, and type
# annotations as documentation, not C types or exact-type checks (a ``list`` must still take a subclass).
PY_DIRECTIVES = {**directives, "boundscheck": True, "wraparound": True, "annotation_typing": False}

# Every core/_*.pyx is one extension module (core._sip, core._rtp, core._acd, ...), and so is each
# bindings/_*.pyx (bindings._udp: the SIP sockets' batched sends).
cython_modules = [
    Extension(
        f"{pyx.parent.name}.{pyx.stem}",
        [pyx.as_posix()],
        define_macros=macros,
        extra_compile_args=["-O0", "-g"] if DEBUG else ["-O2", *ARCH_FLAGS],
    )
    for pyx in sorted([*Path("core").glob("_*.pyx"), *Path("bindings").glob("_*.pyx")])
]
python_modules = [
    Extension(
        path[:-3].replace("/", "."),
        [path],
        define_macros=macros,
        extra_compile_args=["-O0", "-g"] if DEBUG else ["-O2"],
    )
    for path in COMPILED
]

setup(
    ext_modules=[
        *cythonize(cython_modules, compiler_directives=directives, annotate=DEBUG, build_dir="build/cython"),
        *cythonize(python_modules, compiler_directives=PY_DIRECTIVES, annotate=DEBUG, build_dir="build/cython"),
    ],
)
