"""``p2psip audio-test`` as a process: JSON report, recording, simulated loss, Ctrl-C, errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from p2psip.media.audio import WavFileSource, dominant_frequency

ROOT = Path(__file__).resolve().parents[2]


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "p2psip.cli.main", "audio-test", *args]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _command(*args),
        stdin=subprocess.DEVNULL,  # stdin is not a terminal
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_env(),
        cwd=ROOT,
    )


def test_json_report_recording_and_simulated_loss(tmp_path: Path) -> None:
    record = tmp_path / "rx.wav"
    result = _run(
        "--codec", "pcmu", "--duration", "3", "--loss", "5", "--record", str(record), "--json"
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["codec"] == "PCMU/8000" and report["srtp"] is True
    assert report["transport"] == "ice"
    assert report["simulated_loss_percent"] == 5
    # what was dropped at the receiver is what the statistics report as lost
    assert report["simulated_drops"] >= 3
    assert abs(report["packets_lost"] - report["simulated_drops"]) <= 1
    expected = report["packets_received"] + report["packets_lost"]
    share = 100 * report["packets_lost"] / expected
    assert report["loss_percent"] == pytest.approx(share, abs=0.2)
    assert 1.0 <= report["loss_percent"] <= 12.0  # 5 % of ~150 packets
    assert report["concealed_frames"] >= report["packets_lost"] - 2
    assert abs(report["dominant_hz"] - 1000) <= 10
    assert -12 <= report["level_dbfs"] <= -7
    assert report["longest_hole_ms"] <= 60  # concealment filled the losses
    assert report["rtt_ms"] is not None and report["latency_ms"] > 20
    with WavFileSource(record) as wav:
        assert wav.file_rate == 8000
        assert 2.7 <= wav.file_duration <= 3.3
        pcm = wav.read(wav.file_frames)
    assert abs(dominant_frequency(pcm[2000:], 8000) - 1000) <= 10


def test_opus_without_srtp_human_output() -> None:
    result = _run("--codec", "opus", "--tone", "440", "--duration", "1.5", "--no-srtp")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "opus/48000/2  srtp=off  transport=ice" in out
    assert "lost=0 (0.00 %)" in out
    line = next(x for x in out.splitlines() if x.startswith("received "))
    assert abs(float(line.split()[1]) - 440) <= 10


def test_play_a_wav_file_over_plain_udp(tmp_path: Path) -> None:
    from p2psip.media.audio import ToneSource, WavFileSink

    wav = tmp_path / "in.wav"
    with WavFileSink(wav, 44100) as sink:  # resampled 44.1 -> 16 kHz for G.722
        sink.write(ToneSource(700, 44100, 0.3).read(44100))
    result = _run("--codec", "g722", "--play", str(wav), "--duration", "1.5", "--no-ice", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["transport"] == "udp" and report["source"] == f"wav:{wav}"
    assert abs(report["dominant_hz"] - 700) <= 10


def test_ctrl_c_stops_cleanly_with_a_readable_recording(tmp_path: Path) -> None:
    record = tmp_path / "rx.wav"
    proc = subprocess.Popen(
        _command("--duration", "60", "--record", str(record)),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
        cwd=ROOT,
    )
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:  # wait until audio is being recorded
            if record.exists() and record.stat().st_size > 44 + 8000:
                break
            time.sleep(0.1)
        else:
            pytest.fail("nothing recorded")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    with WavFileSource(record) as wav:  # the header was fixed on close
        assert wav.file_duration >= 0.5
        pcm = wav.read(wav.file_frames)
    assert len(pcm) == wav.file_frames
    assert abs(dominant_frequency(pcm[2000:], 8000) - 1000) <= 10


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--codec", "pcmu", "--tone", "5000"), "--tone must be between 0 and 4000 Hz"),
        (("--loss", "100"), "--loss must be in [0, 100)"),
        (("--play", "/nonexistent.wav"), "cannot read WAV file"),
    ],
)
def test_bad_options_give_one_line_errors(args: tuple[str, ...], message: str) -> None:
    result = _run(*args, "--duration", "1")
    assert result.returncode == 1
    assert message in result.stderr and "Traceback" not in result.stderr
