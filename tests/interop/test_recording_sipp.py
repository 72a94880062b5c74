"""Recorded calls through the node, on real sockets: SIPp as the caller (127.0.0.1) → the node (media on
127.0.0.8, ``[calls] record = true``) → SIPp as the callee behind a trunk (127.0.0.2). Each side plays a
tone of its own with ``play_pcap_audio`` — the caller 1 kHz, the callee 600 Hz, G.711 μ-law in RTP in a
pcap this test writes (the μ-law encoder here is G.711's formula in numpy, independent of the node's
tables).

What an operator would see: each call's record (read back from LMDB) names its WAV, relative to the data
folder, in ``recordings/YYYY/MM/DD/<Call-ID>.wav``; the WAV's left channel (the caller) is the caller's
tone and the right channel (the callee) the callee's, each found by its FFT peak within a few Hz, with
none of the other side's tone in it. Then the crash: the node SIGKILLed mid-call leaves a WAV that opens
as it is and holds the tones up to the kill, and the restarted node's "interrupted" record of the call
names that file.
"""
from __future__ import annotations

import os
import signal
import struct
import subprocess
import time
import wave
from pathlib import Path

import numpy as np
import pytest

from core.cdr.record import Disposition, HangupBy
from tests.interop.sippcalls import SippPair, node_config, read_records, stop_process, write_pcap
from tests.node import Node

pytestmark = pytest.mark.interop

MEDIA = "127.0.0.8"  # the node's media address: no other test's node uses it
RTP_MIN, RTP_MAX = 24000, 24999
CALLER_HZ, CALLEE_HZ = 1000.0, 600.0
RATE = 8000


def config(uas_port: int) -> str:
    return node_config(uas_port, MEDIA, RTP_MIN, RTP_MAX) + "\n[calls]\nrecord = true\n"


# --- a tone as SIPp plays it ------------------------------------------------------------------------

def ulaw(samples: np.ndarray) -> bytes:
    """G.711 μ-law (ITU-T G.711 §2, the bias-132 segment formula): sign, 3-bit segment, 4-bit step, inverted."""
    x = samples.astype(np.int32)
    sign = (x < 0).astype(np.int32) << 7
    magnitude = np.minimum(np.abs(x), 32635) + 0x84
    segment = np.clip(np.floor(np.log2(magnitude)).astype(np.int32) - 7, 0, 7)
    step = (magnitude >> (segment + 3)) & 0x0F
    return (~(sign | (segment << 4) | step) & 0xFF).astype(np.uint8).tobytes()


def write_tone_pcap(path: Path, freq: float, seconds: float, ssrc: int) -> Path:
    """``seconds`` of a ``freq`` Hz tone at about -10 dBm0, as 20 ms RTP packets of PCMU (payload type 0)."""
    n = int(seconds * 50)
    t = np.arange(n * 160) / RATE
    payload = ulaw(np.round(7175 * np.sin(2 * np.pi * freq * t)))
    return write_pcap(path, [(0, i == 0, 160 * i, payload[160 * i:160 * (i + 1)]) for i in range(n)], 0.020, ssrc)


def tones(workdir: Path, seconds: float) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    write_tone_pcap(workdir / "caller.pcap", CALLER_HZ, seconds, 0x1000CA11)
    write_tone_pcap(workdir / "callee.pcap", CALLEE_HZ, seconds, 0x1000CA1E)


# --- reading the recording --------------------------------------------------------------------------

def read_wav(path: Path) -> np.ndarray:
    """The frames of a stereo 8 kHz 16-bit WAV, opened as it is (no repair)."""
    with wave.open(str(path), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (2, 2, RATE), path
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, 2)


def voiced(channel: np.ndarray) -> np.ndarray:
    """From the first to the last loud sample (the jitter buffer's delay and the call's silent ends cut)."""
    loud = np.flatnonzero(np.abs(channel.astype(np.int32)) > 1000)
    return channel[loud[0]:loud[-1] + 1] if len(loud) else channel[:0]


def spectrum(samples: np.ndarray) -> tuple[np.ndarray, float]:
    """Magnitudes and the width of a bin in Hz."""
    return np.abs(np.fft.rfft(samples.astype(float) * np.hanning(len(samples)))), RATE / len(samples)


def check_tone(channel: np.ndarray, freq: float, other: float, min_seconds: float) -> None:
    audio = voiced(channel)
    assert len(audio) >= min_seconds * RATE, f"{len(audio) / RATE:.2f} s of audio, wanted {min_seconds} s"
    mag, width = spectrum(audio)
    peak = float(np.argmax(mag) * width)
    assert abs(peak - freq) < 3.0, f"peak at {peak:.1f} Hz, wanted {freq} Hz"
    # The other side's tone is not on this channel (each leg is recorded on its own).
    near = mag[int((other - 20) / width):int((other + 20) / width)].max()
    assert near < 0.01 * mag.max(), f"{other} Hz at {near / mag.max():.3f} of the peak"


def recordings_in(data_dir: Path) -> list[Path]:
    return sorted((data_dir / "recordings").rglob("*.wav")) if (data_dir / "recordings").exists() else []


def wav_frames(path: Path) -> int:
    """The frames the header says the file holds (what a reader opening it now sees)."""
    with path.open("rb") as f:
        head = f.read(44)
    return struct.unpack_from("<I", head, 40)[0] // 4 if len(head) == 44 else 0


# --- the tests ---------------------------------------------------------------------------------------

def test_each_answered_call_is_recorded_caller_left_callee_right(sipp, start_node, tmp_path, uas_port):
    calls = 2
    node = start_node(config(uas_port))
    pair = SippPair(sipp, tmp_path / "sipp", uas_port)
    tones(pair.workdir, 2.0)
    uas = pair.start_uas("uas_record.xml", calls)
    try:
        # Two calls half a second apart, each playing 2 s of tone and up for 2.5 s: they overlap.
        uac = subprocess.run(pair.uac_command("uac_record.xml", node.addr, "-m", str(calls), "-r", "2",
                                              "-d", "2500"),
                             cwd=pair.workdir, capture_output=True, text=True, timeout=60)
        pair.uac_code, pair.uas_code = uac.returncode, uas.wait(timeout=30)
    finally:
        stop_process(uas)
    assert pair.outcome("uac") == (0, calls, 0), pair.errors()
    assert pair.outcome("uas") == (0, calls, 0), pair.errors()
    node.assert_clean_exit()

    records = read_records(node.data_dir)
    assert len(records) == calls and {r.call_id for r in records} == set(pair.logged("completed")), records
    for rec in records:
        assert rec.disposition is Disposition.ANSWERED and rec.hangup_by is HangupBy.CALLER, rec
        # recordings/YYYY/MM/DD/<Call-ID>.wav, by the UTC date the call was bridged
        days = {time.strftime("%Y/%m/%d", time.gmtime(t)) for t in (rec.offered, rec.ended)}
        assert rec.recording in {os.path.join("recordings", *d.split("/"), rec.call_id + ".wav") for d in days}, rec
        x = read_wav(node.data_dir / rec.recording)
        check_tone(x[:, 0], CALLER_HZ, CALLEE_HZ, 1.8)  # left: what the caller said
        check_tone(x[:, 1], CALLEE_HZ, CALLER_HZ, 1.8)  # right: what the callee said
        # The file covers the call: the tone (2 s) plus the jitter buffer's delay, not beyond the call.
        assert 2.0 <= len(x) / RATE <= rec.ended - rec.legs[0].offered + 0.5, (len(x), rec)
    assert len(recordings_in(node.data_dir)) == calls


def test_a_node_killed_mid_call_leaves_a_readable_recording(sipp, tmp_path, uas_port):
    workdir = tmp_path / "node"
    pair = SippPair(sipp, tmp_path / "sipp", uas_port)
    tones(pair.workdir, 8.0)
    node = Node.start(workdir, config(uas_port))
    data = workdir / "data"
    uas = pair.start_uas("uas_record.xml", 1)
    uac = None
    try:
        # One call that would talk for 8 s and stay up 20 s; the node is killed after ~3 s of tone.
        uac = subprocess.Popen(pair.uac_command("uac_record.xml", node.addr, "-m", "1", "-d", "20000"),
                               cwd=pair.workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            found = recordings_in(data)
            if found and wav_frames(found[0]) >= 3.0 * RATE:
                break
            assert node.alive(), node.stderr()
            time.sleep(0.1)
        else:
            pytest.fail(f"no 3 s of recording within 20 s: {recordings_in(data)}\n{node.stderr()}")
        node.proc.send_signal(signal.SIGKILL)
        node.proc.wait(5)
    finally:
        for proc in (uac, uas):
            if proc is not None:
                stop_process(proc)
        node.kill()

    (path,) = recordings_in(data)
    x = read_wav(path)  # opens as the kill left it: the header covers whole frames already written
    assert os.path.getsize(path) >= 44 + 4 * len(x)
    check_tone(x[:, 0], CALLER_HZ, CALLEE_HZ, 2.5)
    check_tone(x[:, 1], CALLEE_HZ, CALLER_HZ, 2.5)

    # The restarted node closes the call as interrupted; its record names the recording.
    (answered,) = pair.logged("answered")
    restarted = Node.start(workdir, config(uas_port))
    restarted.assert_clean_exit()
    by_id = {r.call_id: r for r in read_records(data)}
    rec = by_id[answered]
    assert rec.disposition is Disposition.INTERRUPTED, rec
    assert data / rec.recording == path, rec
