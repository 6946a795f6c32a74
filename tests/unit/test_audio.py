"""Audio sources, sinks, devices, the mixer and the analysis helpers.

No real sound card is used: the device tests drive a FakeClockedDevice by jumping its clock,
and exercise SoundDevice against the machine's real sounddevice/PortAudio state (this machine
has none) and against a fake ``sounddevice`` module.
"""

from __future__ import annotations

import asyncio
import importlib
import math
import struct
import sys
import types
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2psip.media import audio
from p2psip.media.aio.sounddevice_io import AsyncSoundDevice
from p2psip.media.audio import (
    AudioDeviceError,
    AudioError,
    AudioFileError,
    AudioSink,
    AudioSource,
    FakeClockedDevice,
    MemorySink,
    Mixer,
    NullSink,
    SilenceSource,
    SoundDevice,
    ToneSource,
    WavFileSink,
    WavFileSource,
    dominant_frequency,
    duration,
    list_audio_devices,
    mix_minus,
    peak_dbfs,
    rms_dbfs,
)


def tone(freq: float, rate: int, samples: int, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(samples)
    return np.rint(amplitude * 32767 * np.sin(2 * np.pi * freq * t / rate)).astype(np.int16)


# --- sources ----------------------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(0, 500), min_size=1, max_size=10))
def test_tone_source_phase_is_continuous_across_reads(sizes: list[int]) -> None:
    whole = ToneSource(440, 16000, 0.5).read(sum(sizes))
    source = ToneSource(440, 16000, 0.5)
    pieces = np.concatenate([source.read(n) for n in sizes])
    assert np.array_equal(pieces, whole)
    assert np.array_equal(whole, tone(440, 16000, sum(sizes)))


def test_tone_source_frequency_level_and_duration() -> None:
    source = ToneSource(1000, 8000, amplitude=0.25, duration=0.5)
    pcm = np.concatenate([source.read(160) for _ in range(30)])
    assert len(pcm) == 4000 and source.ended  # 0.5 s, then nothing
    assert abs(dominant_frequency(pcm, 8000) - 1000) < 1
    assert abs(rms_dbfs(pcm) - (20 * math.log10(0.25) - 3.01)) < 0.05
    assert isinstance(source, AudioSource)
    for bad in (
        {"freq_hz": 5000},
        {"freq_hz": 100, "amplitude": 1.5},
        {"freq_hz": 1, "sample_rate": 0},
    ):
        with pytest.raises(AudioError):
            ToneSource(**{"sample_rate": 8000, **bad})  # type: ignore[arg-type]
    with pytest.raises(AudioError):
        ToneSource(440).read(-1)


def test_silence_source() -> None:
    source = SilenceSource(16000, duration=0.03)
    assert not np.any(source.read(320)) and not source.ended
    assert len(source.read(320)) == 160 and source.ended
    assert len(SilenceSource(8000).read(10_000)) == 10_000


# --- WAV files --------------------------------------------------------------------------------


def _write_wav(path: Path, rate: int, channels: int, width: int, frames: np.ndarray) -> None:
    """Write ``frames`` (int, shape (n, channels), full 16-bit scale) at ``width`` bytes."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        data = frames.astype(np.int64).reshape(-1)
        if width == 1:
            raw = ((data >> 8) + 128).astype(np.uint8).tobytes()
        elif width == 2:
            raw = data.astype("<i2").tobytes()
        elif width == 3:
            raw = b"".join(struct.pack("<i", int(v) << 8)[:3] for v in data)
        else:
            raw = (data << 16).astype("<i4").tobytes()
        w.writeframes(raw)


def test_wav_sink_then_source_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "out.wav"
    signal = tone(440, 16000, 16000)
    with WavFileSink(path, 16000) as sink:
        for i in range(0, len(signal), 320):
            sink.write(signal[i : i + 320])
        assert sink.samples_written == 16000
    with WavFileSource(path) as source:
        assert (source.sample_rate, source.file_channels, source.file_duration) == (16000, 1, 1.0)
        back = source.read(20000)
        assert source.ended
    assert np.array_equal(back, signal)
    with wave.open(str(path)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()) == (
            1,
            2,
            16000,
            16000,
        )


def test_wav_sink_file_is_valid_while_still_being_written(tmp_path: Path) -> None:
    """A crash after any write leaves a readable WAV with everything written so far."""
    path = tmp_path / "live.wav"
    sink = WavFileSink(path, 8000)
    with wave.open(str(path)) as w:  # valid from the start, empty
        assert w.getnframes() == 0
    sink.write(tone(1000, 8000, 160))
    sink.write(tone(1000, 8000, 240))
    data = path.read_bytes()  # what another process would see now
    assert len(data) == 44 + 800
    with wave.open(str(path)) as w:
        assert w.getnframes() == 400
    sink.close()
    sink.close()  # idempotent
    assert sink.closed
    with pytest.raises(AudioError):
        sink.write(tone(1000, 8000, 160))


def test_wav_source_mixes_channels_and_resamples(tmp_path: Path) -> None:
    path = tmp_path / "stereo48k.wav"
    left = tone(700, 48000, 48000, 0.5)  # 700 Hz: a delay of whole periods would show
    right = tone(700, 48000, 48000, 0.3)
    _write_wav(path, 48000, 2, 2, np.stack([left, right], axis=1))
    source = WavFileSource(path, 16000)
    assert source.file_rate == 48000 and source.sample_rate == 16000
    pcm = np.concatenate([source.read(320) for _ in range(60)])
    assert len(pcm) == 16000 and source.ended  # exactly 1 s at the new rate
    assert abs(dominant_frequency(pcm, 16000) - 700) < 1
    assert abs(rms_dbfs(pcm[200:-200]) - (20 * math.log10(0.4) - 3.01)) < 0.1  # mean of L, R
    # no start-up delay from the resampler: aligned with the original
    expected = tone(700, 16000, 16000, 0.4).astype(np.int64)
    assert np.max(np.abs(pcm[200:-200] - expected[200:-200])) < 0.01 * 32767
    source.close()


@pytest.mark.parametrize("width", [1, 2, 3, 4])
def test_wav_source_sample_widths(tmp_path: Path, width: int) -> None:
    path = tmp_path / f"w{width}.wav"
    signal = tone(500, 8000, 800)
    _write_wav(path, 8000, 1, width, signal.reshape(-1, 1))
    back = WavFileSource(path).read(1000)
    tolerance = 256 if width == 1 else 0  # 8-bit keeps the top byte only
    assert len(back) == 800
    assert np.max(np.abs(back.astype(np.int64) - signal)) <= tolerance


def test_wav_source_loops(tmp_path: Path) -> None:
    path = tmp_path / "short.wav"
    signal = tone(400, 8000, 100)
    _write_wav(path, 8000, 1, 2, signal.reshape(-1, 1))
    source = WavFileSource(path, loop=True)
    pcm = source.read(450)
    assert len(pcm) == 450 and not source.ended
    assert np.array_equal(pcm, np.tile(signal, 5)[:450])


def test_wav_source_errors(tmp_path: Path) -> None:
    with pytest.raises(AudioFileError, match="cannot read"):
        WavFileSource(tmp_path / "missing.wav")
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" + bytes(10))
    with pytest.raises(AudioFileError):
        WavFileSource(garbage)
    text = tmp_path / "text.wav"
    text.write_text("not a wav at all")
    with pytest.raises(AudioFileError):
        WavFileSource(text)
    with pytest.raises(AudioFileError):
        WavFileSink(tmp_path / "no" / "such" / "dir.wav")
    empty = tmp_path / "empty.wav"
    _write_wav(empty, 8000, 1, 2, np.zeros((0, 1), np.int16))
    looping = WavFileSource(empty, loop=True)  # an empty file cannot loop forever
    assert len(looping.read(160)) == 0 and looping.ended
    looping.close()
    with pytest.raises(AudioError):
        looping.read(1)


# --- simple sinks -----------------------------------------------------------------------------


def test_null_and_memory_sinks() -> None:
    null, memory = NullSink(8000), MemorySink(8000)
    for sink in (null, memory):
        assert isinstance(sink, AudioSink)
        sink.write(tone(440, 8000, 160))
        sink.write(tone(440, 8000, 80))
    assert null.samples_written == 240
    assert len(memory.frames) == 2
    expected = np.concatenate([tone(440, 8000, 160), tone(440, 8000, 80)])
    assert np.array_equal(memory.pcm, expected)
    with pytest.raises(AudioError):
        memory.write(np.zeros(3, dtype=np.float64))  # type: ignore[arg-type]
    memory.close()
    with pytest.raises(AudioError):
        memory.write(tone(440, 8000, 160))
    assert len(MemorySink().pcm) == 0


# --- the clock-driven fake device -------------------------------------------------------------


def test_fake_device_runs_one_frame_per_period_of_the_clock() -> None:
    device = FakeClockedDevice(8000, 20, capture=ToneSource(1000, 8000), start=10.0)
    assert device.next_timeout() == pytest.approx(10.02)
    assert device.tick(10.019) == []
    frames = device.tick(10.02)
    assert len(frames) == 1 and len(frames[0]) == 160
    assert device.next_timeout() == pytest.approx(10.04)
    frames += device.tick(11.0)  # a jump: every period up to 11.0 runs
    assert len(frames) == 50 and device.stats.frames_captured == 50
    captured = np.concatenate(frames)
    assert np.array_equal(captured, tone(1000, 8000, 8000))  # continuous microphone signal
    # nothing was written: the speaker played silence and counted underruns
    assert device.stats.underrun_samples == 50 * 160
    assert isinstance(device.playback, MemorySink) and not np.any(device.playback.pcm)


def test_fake_device_plays_what_is_written_in_order_and_bounds_its_queue() -> None:
    speaker = MemorySink(16000)
    device = FakeClockedDevice(16000, 10, playback=speaker, max_playout_ms=30)
    signal = tone(440, 16000, 480)
    device.write(signal[:200])
    device.write(signal[200:])
    assert device.queued_samples == 480
    device.tick(0.03)
    assert np.array_equal(speaker.pcm, signal) and device.stats.underrun_samples == 0
    device.write(np.arange(800, dtype=np.int16))  # 50 ms into a 30 ms queue: oldest dropped
    assert device.stats.overrun_samples == 320 and device.queued_samples == 480
    device.tick(0.06)
    assert np.array_equal(speaker.pcm[480:], np.arange(320, 800, dtype=np.int16))
    device.tick(0.07)
    assert device.stats.underrun_samples == 160


def test_fake_device_ended_capture_gives_silence_and_checks_rates() -> None:
    device = FakeClockedDevice(8000, capture=ToneSource(1000, 8000, duration=0.01))
    first, second = device.tick(0.04)
    assert np.any(first[:80]) and not np.any(first[80:]) and not np.any(second)
    with pytest.raises(AudioError, match="16000"):
        FakeClockedDevice(8000, capture=ToneSource(440, 16000))
    with pytest.raises(AudioError):
        FakeClockedDevice(8000, frame_ms=0)


# --- the real sound device: error paths and a fake sounddevice --------------------------------


def _real_sounddevice_state() -> str:
    try:
        sd = importlib.import_module("sounddevice")
    except ImportError:
        return "no package"
    except OSError:
        return "no portaudio"
    return "devices" if len(sd.query_devices()) else "no devices"


def test_sound_device_missing_on_this_machine_gives_audio_device_error() -> None:
    state = _real_sounddevice_state()
    if state == "devices":
        pytest.skip("this machine has a sound device")
    with pytest.raises(AudioDeviceError) as info:
        SoundDevice(16000)
    expected = {
        "no package": "sounddevice",
        "no portaudio": "libportaudio2",
        "no devices": "no audio",
    }
    assert expected[state] in str(info.value)
    if state != "no devices":
        with pytest.raises(AudioDeviceError):
            list_audio_devices()


class FakeStream:
    """Stands in for sounddevice.Stream/InputStream/OutputStream: records its settings."""

    def __init__(self, kind: str, **kwargs: Any) -> None:
        self.kind = kind
        self.kwargs = kwargs
        self.callback = kwargs["callback"]
        self.started = self.stopped = self.closed = False

    def start(self) -> None:
        self.started = True

    def stop(self) -> None:
        self.stopped = True

    def close(self) -> None:
        self.closed = True


def _fake_sounddevice(
    monkeypatch: pytest.MonkeyPatch, devices: list[dict[str, Any]]
) -> list[FakeStream]:
    streams: list[FakeStream] = []
    module = types.ModuleType("sounddevice")

    def make(kind: str):  # type: ignore[no-untyped-def]
        def factory(**kwargs: Any) -> FakeStream:
            streams.append(FakeStream(kind, **kwargs))
            return streams[-1]

        return factory

    module.query_devices = lambda: devices  # type: ignore[attr-defined]
    module.Stream = make("duplex")  # type: ignore[attr-defined]
    module.InputStream = make("input")  # type: ignore[attr-defined]
    module.OutputStream = make("output")  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "sounddevice", module)
    return streams


DEVICES = [
    {"name": "Mic", "index": 0, "max_input_channels": 1, "max_output_channels": 0,
     "default_samplerate": 48000.0, "hostapi": 0},
    {"name": "Speaker", "index": 1, "max_input_channels": 0, "max_output_channels": 2,
     "default_samplerate": 48000.0, "hostapi": 0},
]  # fmt: skip


def test_import_failures_become_audio_device_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_portaudio(name: str) -> Any:
        raise OSError("PortAudio library not found")

    monkeypatch.setattr(audio.importlib, "import_module", no_portaudio)
    with pytest.raises(AudioDeviceError, match="libportaudio2"):
        list_audio_devices()

    def no_package(name: str) -> Any:
        raise ImportError("No module named 'sounddevice'")

    monkeypatch.setattr(audio.importlib, "import_module", no_package)
    with pytest.raises(AudioDeviceError, match="p2psip\\[audio\\]"):
        SoundDevice(48000)


def test_no_device_for_a_direction(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_sounddevice(monkeypatch, [])
    assert list_audio_devices() == []
    with pytest.raises(AudioDeviceError, match="no audio input device"):
        SoundDevice(48000)
    _fake_sounddevice(monkeypatch, DEVICES[1:])
    with pytest.raises(AudioDeviceError, match="no audio input device"):
        SoundDevice(48000)
    SoundDevice(48000, capture=False)  # playback alone works
    _fake_sounddevice(monkeypatch, DEVICES)
    with pytest.raises(AudioDeviceError, match="named like 'usb'"):
        SoundDevice(48000, input_device="usb")
    with pytest.raises(AudioDeviceError, match="index 1"):
        SoundDevice(48000, input_device=1)


def test_sound_device_callback_moves_audio_both_ways(monkeypatch: pytest.MonkeyPatch) -> None:
    streams = _fake_sounddevice(monkeypatch, DEVICES)
    names = [d.name for d in list_audio_devices()]
    assert names == ["Mic", "Speaker"]
    woken: list[int] = []
    device = SoundDevice(
        16000, 20, input_device="mic", on_capture=lambda: woken.append(1), max_buffer_ms=60
    )
    stream = streams[-1]
    assert stream.kind == "duplex" and stream.kwargs["device"] == (0, 1)
    assert stream.kwargs["blocksize"] == 320 and stream.kwargs["dtype"] == "int16"
    with device:
        assert stream.started
        signal = tone(440, 16000, 640)
        device.write(signal[:500])
        device.write(signal[500:])
        # PortAudio's thread: capture one block, play one block
        mic = tone(1000, 16000, 320).reshape(-1, 1)
        out = np.full((320, 1), 7, dtype=np.int16)
        stream.callback(mic, out, 320, None, None)
        assert np.array_equal(out.reshape(-1), signal[:320]) and woken == [1]
        assert np.array_equal(device.read(200), mic.reshape(-1)[:200])
        assert device.captured_samples == 120
        stream.callback(mic, out, 320, None, None)
        assert np.array_equal(out.reshape(-1), signal[320:640])
        stream.callback(mic, out, 320, None, None)  # nothing left to play
        assert not np.any(out) and device.stats.underrun_samples == 320
        assert len(device.read(10_000)) == 120 + 640
        device.write(np.zeros(2000, np.int16))  # more than 60 ms queued: dropped
        assert device.stats.overrun_samples == 2000
    assert stream.stopped and stream.closed


async def test_async_sound_device_wakes_the_reader_from_the_audio_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    streams = _fake_sounddevice(monkeypatch, DEVICES)
    async with AsyncSoundDevice(8000, 20) as device:
        stream = streams[-1]
        reader = asyncio.ensure_future(device.read_frame())
        await asyncio.sleep(0)
        assert not reader.done()
        mic = tone(500, 8000, 160).reshape(-1, 1)
        out = np.zeros((160, 1), np.int16)
        loop = asyncio.get_running_loop()
        # the callback runs on another thread, as PortAudio's does
        await loop.run_in_executor(None, stream.callback, mic, out, 160, None, None)
        frame = await asyncio.wait_for(reader, 5)
        assert np.array_equal(frame, mic.reshape(-1))
        device.write(tone(300, 8000, 160))
        await loop.run_in_executor(None, stream.callback, mic, out, 160, None, None)
        assert np.array_equal(out.reshape(-1), tone(300, 8000, 160))
        pending = asyncio.ensure_future(device.read_frame())
        assert np.array_equal(await asyncio.wait_for(pending, 5), mic.reshape(-1))
        waiting = asyncio.ensure_future(device.read_frame())
        await asyncio.sleep(0)
    with pytest.raises(AudioError, match="closed"):
        await asyncio.wait_for(waiting, 5)
    assert stream.closed


# --- mixer ------------------------------------------------------------------------------------


def test_mixer_each_participant_hears_the_others_not_itself() -> None:
    mixer = Mixer(160)
    for name in ("alice", "bob", "carol"):
        mixer.add(name)
    a, b, c = tone(300, 8000, 160, 0.1), tone(700, 8000, 160, 0.1), tone(1100, 8000, 160, 0.1)
    mixer.push("alice", a)
    mixer.push("bob", b)
    mixer.push("carol", c)
    out = mixer.mix()
    assert np.array_equal(out["alice"], b + c)
    assert np.array_equal(out["bob"], a + c)
    assert np.array_equal(out["carol"], a + b)
    # nothing pushed next period: silence for all
    assert all(not np.any(pcm) for pcm in mixer.mix().values())
    # a participant that did not send hears everyone; shorter frames are padded
    mixer.push("alice", a[:100])
    heard = mixer.mix()
    assert np.array_equal(heard["bob"][:100], a[:100]) and not np.any(heard["bob"][100:])
    assert not np.any(heard["alice"])
    mixer.remove("carol")
    assert mixer.participants == ("alice", "bob")


def test_mixer_saturates_instead_of_wrapping() -> None:
    mixer = Mixer(4)
    for name in "abc":
        mixer.add(name)
    loud = np.array([30000, -30000, 20000, 1], dtype=np.int16)
    mixer.push("a", loud)
    mixer.push("b", loud)
    mixer.push("c", loud)
    out = mixer.mix()
    assert out["a"].tolist() == [32767, -32768, 32767, 2]
    assert mixer.clipped_samples == 9


def test_mixer_errors_and_mix_minus() -> None:
    mixer = Mixer(160)
    with pytest.raises(AudioError):
        mixer.push("ghost", np.zeros(160, np.int16))
    mixer.add("a")
    with pytest.raises(AudioError):
        mixer.push("a", np.zeros(161, np.int16))
    with pytest.raises(AudioError):
        Mixer(0)
    frames = {1: np.array([1, 2], np.int16), 2: np.array([10, 20, 30], np.int16)}
    assert {k: v.tolist() for k, v in mix_minus(frames).items()} == {1: [10, 20, 30], 2: [1, 2, 0]}
    with pytest.raises(AudioError):
        mix_minus(frames, length=2)


# --- analysis helpers -------------------------------------------------------------------------


@pytest.mark.parametrize(("freq", "rate"), [(440, 8000), (1000, 16000), (3333.3, 48000)])
def test_dominant_frequency_is_sub_bin_accurate(freq: float, rate: int) -> None:
    pcm = tone(freq, rate, rate // 10)  # 0.1 s: bins of 10 Hz
    assert abs(dominant_frequency(pcm, rate) - freq) < 1.0


def test_levels_and_duration() -> None:
    full = tone(1000, 8000, 8000, 1.0)
    assert rms_dbfs(full) == pytest.approx(-3.01, abs=0.01)
    assert peak_dbfs(full) == pytest.approx(20 * math.log10(32767 / 32768), abs=0.001)
    assert rms_dbfs(np.zeros(10, np.int16)) == -math.inf == peak_dbfs(np.zeros(3, np.int16))
    assert rms_dbfs(np.zeros(0, np.int16)) == -math.inf
    assert dominant_frequency(np.zeros(100, np.int16), 8000) == 0.0
    assert duration(full, 8000) == 1.0 and duration([full, full[:800]], 8000) == 1.1
    with pytest.raises(AudioError):
        dominant_frequency(full[:3], 8000)
    with pytest.raises(AudioError):
        rms_dbfs(full.astype(np.float32))  # type: ignore[arg-type]


def test_audio_module_exports() -> None:
    assert set(audio.__all__) <= set(dir(audio))
