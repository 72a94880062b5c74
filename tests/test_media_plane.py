"""The node's media plane (bindings/media.py) recording calls: with ``[calls] record = true`` a call's
relay is recorded from the moment it is added to a stereo WAV under the data folder
(``recordings/YYYY/MM/DD/<call id>.wav``), stopped and closed at release, and its path (relative to the
data folder) handed to the call's record; an unanswered call leaves no file. Two "phones" (plain UDP
sockets on 127.0.0.1) send tones through the plane's engine, running in its own thread as in the node,
and the WAV's channels are checked with an FFT."""

from __future__ import annotations

import asyncio
import os
import random
import struct
import time
import wave
from pathlib import Path

import numpy as np
import pytest

from bindings.media import MediaPlane, recording_name
from bindings.records import record_of
from core.call.b2bua import CallSummary, MediaBridge
from core.config import CallsConfig, ConfigError, MediaConfig, decode_config, default_config
from core.media import Engine
from core.media.g711 import ulaw_encode
from core.media.prompts import tone
from tests.test_media_relay import Phone
from tests.test_playback import peak_hz

pytestmark = pytest.mark.skipif(Engine is None, reason="core._rtp is not built")

CALLER_HZ, CALLEE_HZ = 1000.0, 600.0


def rtp_frames(freq: float, packets: int, ssrc: int) -> list[bytes]:
    """``packets`` 20 ms PCMU packets of a steady tone, in order (RFC 3550 §5.1, RFC 3551 PT 0)."""
    samples = tone(freq, duration_ms=20 * packets).samples
    return [struct.pack("!BBHII", 0x80, 0, i, 160 * i, ssrc) + ulaw_encode(samples[160 * i:160 * (i + 1)])
            for i in range(packets)]


@pytest.fixture
def plane_of(tmp_path):
    made: list[MediaPlane] = []
    loop = asyncio.new_event_loop()

    def make(record: bool = True, recordings_dir: str = "recordings") -> MediaPlane:
        base = random.randrange(30000, 40000, 2)
        plane = MediaPlane(MediaConfig(rtp_port_min=base, rtp_port_max=base + 99), data_dir=tmp_path / "data",
                           calls=CallsConfig(record=record, recordings_dir=recordings_dir))
        plane.start(loop)
        made.append(plane)
        return plane

    yield make
    for plane in made:
        plane.stop()
    loop.close()


def talk(plane: MediaPlane, call_id: str, packets: int = 50) -> tuple[int, int]:
    """Bridge a call between two phones, each sending its tone for ``packets`` × 20 ms, in real time."""
    caller, callee = Phone(), Phone()
    try:
        base = plane.config.rtp_port_min
        plane.bridge(MediaBridge(call_id, base, caller.addr, base + 2, callee.addr, "PCMU", None))
        a, b = rtp_frames(CALLER_HZ, packets, 0xA), rtp_frames(CALLEE_HZ, packets, 0xB)
        start = time.monotonic()
        for i in range(packets):
            caller.send(base, a[i])
            callee.send(base + 2, b[i])
            time.sleep(max(0.0, start + 0.02 * (i + 1) - time.monotonic()))
        time.sleep(0.2)  # the last packets reach the engine
        return base, base + 2
    finally:
        caller.close()
        callee.close()


def read_wav(path: Path) -> np.ndarray:
    with wave.open(str(path), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (2, 2, 8000)
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, 2)


def voiced(channel: np.ndarray) -> np.ndarray:
    """The part of a channel that is not silence (the jitter buffer's delay precedes the audio)."""
    loud = np.flatnonzero(np.abs(channel.astype(int)) > 1000)
    return channel[loud[0]:loud[-1] + 1] if len(loud) else channel[:0]


def test_an_answered_call_is_recorded_each_side_on_its_own_channel(plane_of, tmp_path):
    plane = plane_of()
    before = time.gmtime()
    talk(plane, "rec-1@example.com")
    relative = plane.recording_of("rec-1@example.com")
    days = {time.strftime("%Y/%m/%d", t) for t in (before, time.gmtime())}
    assert relative in {os.path.join("recordings", *day.split("/"), "rec-1@example.com.wav") for day in days}
    plane.release("rec-1@example.com")
    assert plane.recording_of("rec-1@example.com") == ""
    assert plane.take_recording("rec-1@example.com", answered=True) == relative
    assert plane.take_recording("rec-1@example.com") == ""  # handed over once

    x = read_wav(tmp_path / "data" / relative)
    left, right = voiced(x[:, 0]), voiced(x[:, 1])
    # Each second of tone is in the file (give or take what the jitter buffer concealed at the edges).
    assert 0.8 * 8000 <= len(left) <= 1.1 * 8000 and 0.8 * 8000 <= len(right) <= 1.1 * 8000
    assert abs(peak_hz(left) - CALLER_HZ) < 10 and abs(peak_hz(right) - CALLEE_HZ) < 10


def test_an_unanswered_call_leaves_no_file(plane_of, tmp_path):
    plane = plane_of()
    talk(plane, "early-media", packets=10)  # a 183's early media, then a 486
    path = tmp_path / "data" / plane.recording_of("early-media")
    assert path.is_file()
    plane.release("early-media")
    assert plane.take_recording("early-media", answered=False) == ""
    assert not path.exists()


def test_recording_off_writes_nothing(plane_of, tmp_path):
    plane = plane_of(record=False)
    talk(plane, "plain", packets=5)
    assert plane.recording_of("plain") == ""
    plane.release("plain")
    assert plane.take_recording("plain") == ""
    assert not (tmp_path / "data" / "recordings").exists()


def test_a_call_id_unfit_for_a_file_name_gets_a_safe_one(plane_of, tmp_path):
    plane = plane_of(recordings_dir="calls/rec")
    call_id = "../../etc/a b:c<d>@host"
    talk(plane, call_id, packets=5)
    plane.release(call_id)
    relative = plane.take_recording(call_id)
    # The file is in the day's folder, not where the Call-ID's "../" would have put it.
    assert os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(relative)))) == os.path.join("calls", "rec")
    assert relative.endswith(".wav")
    assert " " not in relative and "<" not in relative
    assert (tmp_path / "data" / relative).is_file()
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["calls"]
    # Two Call-IDs that differ only in unsafe characters do not share a file.
    assert recording_name("a/b") != recording_name("a:b") and recording_name("a.b") == "a.b"


def test_the_same_call_id_twice_keeps_both_recordings(plane_of, tmp_path):
    plane = plane_of()
    talk(plane, "again", packets=5)
    plane.release("again")
    first = plane.take_recording("again")
    talk(plane, "again", packets=5)
    plane.release("again")
    second = plane.take_recording("again")
    assert first != second and (tmp_path / "data" / first).is_file() and (tmp_path / "data" / second).is_file()


def test_the_record_names_the_recording():
    summary = CallSummary("c1", "5550100", "0301234", "national", "trunk:t", "t", None, "t", 10.0, 11.0, 20.0,
                          "answered", "caller", 200)
    assert record_of(summary, recording="recordings/2026/01/02/c1.wav").recording == "recordings/2026/01/02/c1.wav"
    assert record_of(summary).recording == ""


def test_the_recordings_folder_must_stay_inside_the_data_folder():
    assert default_config().calls.record is False  # recording is asked for, not assumed
    assert decode_config(b'[calls]\nrecord = true\nrecordings_dir = "rec/calls"\n', "n.toml").calls == \
        CallsConfig(record=True, recordings_dir="rec/calls")
    for bad in ("/var/rec", "../rec", "rec/../../x", "", "~/rec"):
        with pytest.raises(ConfigError) as caught:
            decode_config(f'[calls]\nrecordings_dir = "{bad}"\n'.encode(), "n.toml")
        assert caught.value.errors == [f'n.toml: calls.recordings_dir: must be a folder inside node.data_dir '
                                       f'(relative, no ".."), got "{bad}"']


# -- answering-machine detection on a relay's leg a -----------------------------------------------------
def test_the_detector_hears_a_greeting_on_a_real_relay_and_reports_its_verdict(plane_of):
    from bindings.media import AmdVerdict
    from tests.test_amd import human_hello, machine, rng

    plane = plane_of(record=True)  # with a recording too: both take the same packets
    verdicts: list[AmdVerdict] = []
    plane.listener = lambda event: verdicts.append(event) if isinstance(event, AmdVerdict) else None
    base = plane.config.rtp_port_min
    for n, (call_id, scene) in enumerate((("amd-machine", machine(rng(3))), ("amd-human", human_hello(rng(4))))):
        phone = Phone()
        try:
            a, b = base + 4 * n, base + 4 * n + 2
            plane.bridge(MediaBridge(call_id, a, phone.addr, b, None, "PCMU", None, amd=True))
            samples = scene.render(5.0)
            start = time.monotonic()
            for i in range(len(samples) // 160):
                payload = ulaw_encode(samples[160 * i:160 * (i + 1)])
                phone.send(a, struct.pack("!BBHII", 0x80, 0, i, 160 * i, 0xC0 + n) + payload)
                time.sleep(max(0.0, start + 0.02 * (i + 1) - time.monotonic()))
                plane._loop.run_until_complete(asyncio.sleep(0))
                if len(verdicts) > n:
                    break
            deadline = time.monotonic() + 2
            while len(verdicts) <= n and time.monotonic() < deadline:
                plane._loop.run_until_complete(asyncio.sleep(0.05))
        finally:
            phone.close()
        plane.release(call_id)
    assert [(v.call_id, v.verdict) for v in verdicts] == [("amd-machine", "MACHINE"), ("amd-human", "HUMAN")]
    # The recording went on beside the detector.
    assert plane.take_recording("amd-machine", answered=True).endswith(".wav")


# -- warm ports -------------------------------------------------------------------------------------
def test_a_released_calls_ports_stay_open_for_the_next_call_as_the_config_says(tmp_path):
    base = random.randrange(40000, 50000, 2)
    for spares, kept in ((4096, 2), (0, 0)):
        plane = MediaPlane(MediaConfig(rtp_port_min=base, rtp_port_max=base + 99, spare_port_pairs=spares),
                           data_dir=tmp_path)
        try:
            plane.bridge(MediaBridge("c1", base, None, base + 2, None, "PCMU", None))
            plane.release("c1")
            assert plane.engine.spare_count == kept
            plane.bridge(MediaBridge("c2", base, None, base + 2, None, "PCMU", None))  # the same ports
            assert plane.active() == 1 and plane.relay_errors == 0 and plane.engine.spare_count == 0
        finally:
            plane.stop()


@pytest.fixture
def nofile():
    """RLIMIT_NOFILE restored after the test."""
    import resource

    limits = resource.getrlimit(resource.RLIMIT_NOFILE)
    yield resource
    resource.setrlimit(resource.RLIMIT_NOFILE, limits)


def test_the_descriptor_limit_is_raised_for_the_relays_and_the_spares(nofile):
    from bindings.media import FD_RESERVE, fd_headroom

    soft, hard = nofile.getrlimit(nofile.RLIMIT_NOFILE)
    wanted = 4 * 100 + 2 * 300 + FD_RESERVE
    if hard != nofile.RLIM_INFINITY and hard < wanted:
        pytest.skip(f"the hard limit {hard} is below {wanted}")
    nofile.setrlimit(nofile.RLIMIT_NOFILE, (wanted - 500, hard))
    assert fd_headroom(100, 300) == 300
    assert nofile.getrlimit(nofile.RLIMIT_NOFILE)[0] == wanted
    # no more than the range's pairs can be open, in relays and spares together
    nofile.setrlimit(nofile.RLIMIT_NOFILE, (256, hard))
    assert fd_headroom(100, 300, pairs=250) == 300
    assert nofile.getrlimit(nofile.RLIMIT_NOFILE)[0] == 2 * 250 + FD_RESERVE


def test_fewer_spares_are_kept_when_the_hard_limit_is_too_low():
    import subprocess
    import sys

    # In a child: a hard limit once lowered cannot be raised again.
    code = (
        "import resource\n"
        "from bindings.media import FD_RESERVE, fd_headroom\n"
        "limit = 4 * 100 + FD_RESERVE + 2 * 50\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))\n"
        "print(fd_headroom(100, 300), fd_headroom(1000, 300), resource.getrlimit(resource.RLIMIT_NOFILE)[0] == limit)\n"
    )
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True,
                         env=dict(os.environ, PYTHONPATH=str(root)))
    # 100 relays: 50 pairs fit beside them, but a quarter of the 500 descriptors past the reserve is
    # more (the engine gives spares up to relays that need them); 1,000 relays cannot all be open.
    assert out.stdout.split() == ["125", "125", "True"]
