"""The `switchcore` command, run as a user runs it: a subprocess, asserting the exact lines."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bindings.cli import apply_overrides
from bindings.storage import Storage
from core.config import ListenAddress, default_config

REPO = Path(__file__).resolve().parents[1]


def switchcore(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env_path = str(REPO)
    return subprocess.run(
        [sys.executable, "-m", "bindings.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": env_path, "PATH": "/usr/bin:/bin"},
    )


def test_check_good_file(tmp_path):
    (tmp_path / "site.toml").write_text('[[users]]\nname = "1001"\npassword = "secret"\n')
    result = switchcore("check", "site.toml", cwd=tmp_path)
    assert (result.returncode, result.stdout, result.stderr) == (0, "site.toml: ok\n", "")


def test_check_example_file():
    result = switchcore("check", "switchcore.example.toml", cwd=REPO)
    assert (result.returncode, result.stdout) == (0, "switchcore.example.toml: ok\n")


def test_check_bad_file_prints_every_error(tmp_path):
    (tmp_path / "site.toml").write_text(
        '[sip]\nlisten = ["udp:localhost"]\n'
        '[[users]]\nname = "a"\npassword = "x"\n'
        '[[users]]\nname = "b"\npassword = "y"\n'
        '[[users]]\nname = "a"\npassword = 42\n'
    )
    result = switchcore("check", "site.toml", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        'site.toml: sip.listen[0]: "udp:localhost": expected HOST:PORT',
        "site.toml: users[2].password: expected a string, got 42",
        'site.toml: users[2].name: duplicate user "a" (first at users[0])',
    ]


def test_check_syntax_error(tmp_path):
    (tmp_path / "broken.toml").write_text("[node]\nname = 'x'\nlog_level = [\n")
    result = switchcore("check", "broken.toml", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout.splitlines() == ["broken.toml: line 3 (end of file): Invalid value"]


def test_check_syntax_error_in_the_middle(tmp_path):
    (tmp_path / "broken.toml").write_text("[node]\nname = 'x'\nname = 'y'\n")
    result = switchcore("check", "broken.toml", cwd=tmp_path)
    assert result.stdout.splitlines() == ["broken.toml: line 3, column 11: Cannot overwrite a value"]


def test_check_missing_file(tmp_path):
    result = switchcore("check", "absent.toml", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout.splitlines() == ["absent.toml: cannot read: No such file or directory"]


def test_run_with_bad_config_does_not_start(tmp_path):
    (tmp_path / "site.toml").write_text("[sip.timers]\nt1 = 9\n")
    result = switchcore("run", "--config", "site.toml", "--data", "d", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.splitlines() == ["site.toml: sip.timers.t1: must not exceed sip.timers.t2 (9 > 4)"]
    assert not (tmp_path / "d").exists()


def test_run_refuses_a_bad_listen_override(tmp_path):
    result = switchcore("run", "--listen", "::1:5060", cwd=tmp_path)
    assert result.returncode == 2
    assert "an IPv6 address must be written in brackets" in result.stderr


def test_overrides_replace_listen_data_and_log_level():
    config = apply_overrides(default_config(), [("::1", 5070), ("127.0.0.2", 5080)], "/srv/sc", "debug")
    assert config.sip.listen == (
        ListenAddress("udp", "::1", 5070),
        ListenAddress("tcp", "::1", 5070),
        ListenAddress("udp", "127.0.0.2", 5080),
        ListenAddress("tcp", "127.0.0.2", 5080),
    )
    assert (config.node.data_dir, config.node.log_level) == ("/srv/sc", "debug")
    assert config.registrar == default_config().registrar


def test_no_overrides_keep_the_config():
    assert apply_overrides(default_config()) == default_config()


def test_erlang_is_served_by_the_switchcore_command(tmp_path):
    # B(10 trunks, 5 E) = 0.01838 in every Erlang B table.
    out = switchcore("erlang", "b", "--trunks", "10", "--erlangs", "5", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "blocking probability: 0.01838" in out.stdout


def test_cdr_export_of_an_empty_store_is_just_the_header(tmp_path):
    out = switchcore("cdr", "export", "--data", str(tmp_path / "data"), "--format", "csv", cwd=tmp_path)
    assert out.returncode == 1 and "no CDR store here" in out.stderr  # a typo'd folder is not "no calls"
    Storage(tmp_path / "data").close()  # what a node leaves on its first start
    out = switchcore("cdr", "export", "--data", str(tmp_path / "data"), "--format", "csv", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0].startswith("call_id,")
    assert len(out.stdout.splitlines()) == 1


def test_help_lists_every_command(tmp_path):
    out = switchcore("--help", cwd=tmp_path)
    for command in ("run", "check", "cdr", "report", "erlang", "simulate"):
        assert f"    {command} " in out.stdout
