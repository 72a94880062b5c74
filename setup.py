"""Build the Cython extensions.

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

# Every core/_*.pyx is one extension module (core._sip, core._rtp, core._acd, ...).
extensions = [
    Extension(
        f"core.{pyx.stem}",
        [pyx.as_posix()],
        define_macros=macros,
        extra_compile_args=["-O0", "-g"] if DEBUG else ["-O2", *ARCH_FLAGS],
    )
    for pyx in sorted(Path("core").glob("_*.pyx"))
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives=directives,
        annotate=DEBUG,
        build_dir="build/cython",
    ),
)
