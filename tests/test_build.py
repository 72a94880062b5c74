"""The in-place build and its sources: a compiled module older than the file it was built from is
refused on import, since Python would load it before the ``.py`` beside it and run old code."""
from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import core

SUFFIX = sysconfig.get_config_var("EXT_SUFFIX")


def _tree(tmp_path: Path) -> Path:
    (tmp_path / "setup.py").write_text("")
    pkg = tmp_path / "core"
    (pkg / "sip").mkdir(parents=True)
    for name in ("sdp.py", f"sdp{SUFFIX}", "_sip.pyx", "_sip.pxd", f"_sip{SUFFIX}",
                 "sip/session.py", f"sip/session{SUFFIX}", "plain.py"):
        (pkg / name).write_bytes(b"")
        os.utime(pkg / name, (1000, 1000))
    return pkg


def test_a_fresh_build_is_accepted(tmp_path):
    assert core._stale_builds(str(_tree(tmp_path))) == []


def test_a_source_changed_after_the_build_is_named(tmp_path):
    pkg = _tree(tmp_path)
    os.utime(pkg / "sip" / "session.py", (2000, 2000))
    os.utime(pkg / "_sip.pxd", (2000, 2000))
    os.utime(pkg / "plain.py", (2000, 2000))  # nothing compiled from it: nothing to say
    assert core._stale_builds(str(pkg)) == ["core/_sip.pxd", "core/sip/session.py"]


def test_an_installed_copy_is_not_checked(tmp_path):
    pkg = _tree(tmp_path)
    (tmp_path / "setup.py").unlink()
    os.utime(pkg / "sdp.py", (2000, 2000))
    assert core._stale_builds(str(pkg)) == []


def test_importing_a_checkout_with_a_stale_build_says_what_to_do(tmp_path):
    pkg = _tree(tmp_path)
    (pkg / "__init__.py").write_text(Path(core.__file__).read_text())
    os.utime(pkg / "sdp.py", (2000, 2000))
    run = subprocess.run([sys.executable, "-c", "import core"], cwd=tmp_path, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert run.returncode == 1
    assert "core/sdp.py changed since the build: run `python setup.py build_ext --inplace`" in run.stderr
