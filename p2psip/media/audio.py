"""Audio sources, sinks, devices, a conference mixer and analysis helpers (no SIP).

Conventions shared with the other media modules: PCM is a 1-D ``numpy.int16`` array, mono; a
frame is normally 20 ms. Sources are pulled (``read(samples)``), sinks are pushed
(``write(pcm)``); nothing here reads the clock or starts a thread:

* :class:`ToneSource`, :class:`SilenceSource`, :class:`WavFileSource` (stdlib ``wave``; any
  PCM WAV, channels mixed to mono, resampled to the rate you ask for, looped or ending).
* :class:`WavFileSink` (16-bit mono WAV written incrementally, header kept valid after every
  write and fixed on :meth:`~WavFileSink.close`), :class:`NullSink`, :class:`MemorySink`.
* :class:`FakeClockedDevice` - a sound card driven by a clock you advance with ``tick(now)``,
  for tests and simulations; :class:`SoundDevice` - a real one through ``sounddevice``
  (PortAudio; optional, imported lazily, :class:`AudioDeviceError` when missing);
  :func:`list_audio_devices`. Its asyncio adapter is in ``p2psip.media.aio.sounddevice_io``.
* :class:`Mixer` / :func:`mix_minus` - N participants, each hears everyone but itself, with
  int16 saturation.
* :func:`dominant_frequency`, :func:`rms_dbfs`, :func:`peak_dbfs`, :func:`duration`.
"""

from __future__ import annotations

import collections
import importlib
import math
import os
import wave
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

import numpy as np

from p2psip.errors import P2PSIPError
from p2psip.media.codecs import PCM, CodecError, Resampler, ensure_pcm

__all__ = [
    "AudioDeviceError",
    "AudioDeviceInfo",
    "AudioError",
    "AudioFileError",
    "AudioSink",
    "AudioSource",
    "FakeClockedDevice",
    "MemorySink",
    "Mixer",
    "NullSink",
    "SilenceSource",
    "SoundDevice",
    "ToneSource",
    "WavFileSink",
    "WavFileSource",
    "dominant_frequency",
    "duration",
    "list_audio_devices",
    "mix_minus",
    "peak_dbfs",
    "rms_dbfs",
]

K = TypeVar("K", bound=Hashable)


# ---------------------------------------------------------------------------------------------
# Errors and the source/sink interface
# ---------------------------------------------------------------------------------------------


class AudioError(P2PSIPError):
    """Base class of audio errors (bad PCM, bad arguments, closed objects)."""


class AudioFileError(AudioError):
    """A WAV file cannot be read or written (missing, not a PCM WAV, truncated header)."""


class AudioDeviceError(AudioError):
    """No usable sound device: PortAudio or ``sounddevice`` missing, no such device, or a
    stream that cannot be opened."""


def _pcm(pcm: Any) -> PCM:
    try:
        return ensure_pcm(pcm)
    except CodecError as exc:
        raise AudioError(str(exc)) from None


def _positive_rate(sample_rate: int) -> int:
    if not isinstance(sample_rate, int) or sample_rate <= 0:
        raise AudioError(f"bad sample rate {sample_rate!r}")
    return sample_rate


@runtime_checkable
class AudioSource(Protocol):
    """Something PCM can be pulled from."""

    sample_rate: int

    def read(self, samples: int) -> PCM:
        """Return the next ``samples`` samples; fewer (possibly none) only at end of stream."""
        ...


@runtime_checkable
class AudioSink(Protocol):
    """Something PCM can be pushed to."""

    sample_rate: int

    def write(self, pcm: PCM) -> None:
        """Consume ``pcm`` (1-D int16 mono at :attr:`sample_rate`)."""
        ...

    def close(self) -> None:
        """Finish (flush files); further writes raise :class:`AudioError`."""
        ...


def _check_count(samples: int) -> int:
    if not isinstance(samples, (int, np.integer)) or samples < 0:
        raise AudioError(f"bad sample count {samples!r}")
    return int(samples)


# ---------------------------------------------------------------------------------------------
# Sources
# ---------------------------------------------------------------------------------------------


class ToneSource:
    """A sine tone with continuous phase across reads.

    Args:
        freq_hz: frequency in Hz (0 <= f < sample_rate / 2).
        sample_rate: output rate.
        amplitude: peak amplitude as a fraction of full scale (0..1).
        duration: seconds before the source ends (``None``: endless).
    """

    def __init__(
        self,
        freq_hz: float,
        sample_rate: int = 8000,
        amplitude: float = 0.5,
        *,
        duration: float | None = None,
    ) -> None:
        self.sample_rate = _positive_rate(sample_rate)
        if not 0 <= freq_hz < sample_rate / 2:
            raise AudioError(f"tone of {freq_hz} Hz not below Nyquist at {sample_rate} Hz")
        if not 0 <= amplitude <= 1:
            raise AudioError(f"amplitude {amplitude} outside 0..1")
        self.freq_hz = float(freq_hz)
        self.amplitude = float(amplitude)
        self._remaining = None if duration is None else round(duration * sample_rate)
        self._phase = 0.0  # in cycles, kept in [0, 1)

    @property
    def ended(self) -> bool:
        """Whether the tone's duration has been read completely."""
        return self._remaining == 0

    def read(self, samples: int) -> PCM:
        """Next ``samples`` samples of the tone."""
        n = _check_count(samples)
        if self._remaining is not None:
            n = min(n, self._remaining)
            self._remaining -= n
        step = self.freq_hz / self.sample_rate
        phase = self._phase + step * np.arange(n)
        self._phase = (self._phase + step * n) % 1.0
        return np.rint(self.amplitude * 32767 * np.sin(2 * np.pi * phase)).astype(np.int16)


class SilenceSource:
    """Zeros, endless or for ``duration`` seconds."""

    def __init__(self, sample_rate: int = 8000, *, duration: float | None = None) -> None:
        """Create a silence source at ``sample_rate``."""
        self.sample_rate = _positive_rate(sample_rate)
        self._remaining = None if duration is None else round(duration * sample_rate)

    @property
    def ended(self) -> bool:
        """Whether the silence's duration has been read completely."""
        return self._remaining == 0

    def read(self, samples: int) -> PCM:
        """Next ``samples`` zeros."""
        n = _check_count(samples)
        if self._remaining is not None:
            n = min(n, self._remaining)
            self._remaining -= n
        return np.zeros(n, dtype=np.int16)


def _wav_to_mono16(raw: bytes, width: int, channels: int) -> np.ndarray:
    """Interleaved PCM WAV bytes (8-bit unsigned, 16/24/32-bit signed LE) to mono float."""
    if width == 1:
        data = (np.frombuffer(raw, dtype=np.uint8).astype(np.int32) - 128) << 8
    elif width == 2:
        data = np.frombuffer(raw, dtype="<i2").astype(np.int32)
    elif width == 3:
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3)
        # keep the top 16 of the 24 bits (sign from the high byte)
        data = (b[:, 2].astype(np.int8).astype(np.int32) << 8) | b[:, 1]
    else:
        data = np.frombuffer(raw, dtype="<i4") >> 16
    if channels > 1:
        return data.reshape(-1, channels).mean(axis=1)
    return data.astype(np.float64)


class WavFileSource:
    """PCM from a WAV file: channels mixed to mono, resampled to ``sample_rate``.

    Args:
        path: the file (uncompressed PCM, 8/16/24/32-bit, any channel count and rate).
        sample_rate: the output rate (default: the file's).
        loop: start again at the end instead of ending.

    Raises:
        AudioFileError: the file cannot be opened or is not a PCM WAV.
    """

    _CHUNK = 4096

    def __init__(
        self, path: str | os.PathLike[str], sample_rate: int | None = None, *, loop: bool = False
    ) -> None:
        self.path = Path(path)
        try:
            self._wav = wave.open(str(self.path), "rb")  # noqa: SIM115 - closed in close()
        except (wave.Error, EOFError, OSError) as exc:
            raise AudioFileError(f"cannot read WAV file {self.path}: {exc}") from exc
        try:
            self.file_rate = self._wav.getframerate()
            self.file_channels = self._wav.getnchannels()
            self._width = self._wav.getsampwidth()
            self.file_frames = self._wav.getnframes()
            if self._width not in (1, 2, 3, 4) or self.file_channels < 1 or self.file_rate <= 0:
                raise AudioFileError(
                    f"{self.path}: unsupported WAV ({self._width * 8}-bit, "
                    f"{self.file_channels} channels, {self.file_rate} Hz)"
                )
        except AudioFileError:
            self._wav.close()
            raise
        self.sample_rate = _positive_rate(sample_rate or self.file_rate)
        self.loop = loop
        self._resampler = (
            Resampler(self.file_rate, self.sample_rate)
            if self.sample_rate != self.file_rate
            else None
        )
        self._skip = self._resampler.delay if self._resampler else 0  # filter warm-up to drop
        self._buffer = np.zeros(0, dtype=np.int16)
        self._eof = False
        self._closed = False
        self._produced = 0  # output samples made (after the dropped warm-up)

    @property
    def file_duration(self) -> float:
        """Length of the file in seconds."""
        return self.file_frames / self.file_rate

    @property
    def ended(self) -> bool:
        """Whether everything has been read (never true when looping a non-empty file)."""
        return self._eof and not len(self._buffer)

    def _fill(self, wanted: int) -> None:
        while len(self._buffer) < wanted and not self._eof:
            try:
                raw = self._wav.readframes(self._CHUNK)
            except (wave.Error, EOFError, OSError) as exc:
                raise AudioFileError(f"{self.path}: {exc}") from exc
            usable = len(raw) - len(raw) % (self._width * self.file_channels)
            if not usable:
                if self.loop and self.file_frames > 0:
                    self._wav.rewind()
                    continue
                self._eof = True
                tail = self._resampler.flush() if self._resampler else None
                self._append(tail)
                break
            mono = np.clip(
                np.rint(_wav_to_mono16(raw[:usable], self._width, self.file_channels)),
                -32768,
                32767,
            ).astype(np.int16)
            self._append(self._resampler.process(mono) if self._resampler else mono)
        if self._eof and self._resampler is not None:
            # trim the flushed tail to the exact converted length
            exact = round(self.file_frames * self.sample_rate / self.file_rate)
            excess = self._produced - exact
            if excess > 0:
                self._buffer = self._buffer[: max(0, len(self._buffer) - excess)]
                self._produced = exact

    def _append(self, pcm: np.ndarray | None) -> None:
        if pcm is None or not len(pcm):
            return
        if self._skip:
            cut = min(self._skip, len(pcm))
            pcm = pcm[cut:]
            self._skip -= cut
        self._produced += len(pcm)
        self._buffer = np.concatenate((self._buffer, pcm))

    def read(self, samples: int) -> PCM:
        """Next ``samples`` samples; fewer at the end of a non-looping file."""
        n = _check_count(samples)
        if self._closed:
            raise AudioError(f"{self.path} is closed")
        self._fill(n)
        out, self._buffer = self._buffer[:n], self._buffer[n:]
        return out.copy()

    def close(self) -> None:
        """Close the file."""
        if not self._closed:
            self._closed = True
            self._wav.close()

    def __enter__(self) -> WavFileSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------
# Sinks
# ---------------------------------------------------------------------------------------------


class WavFileSink:
    """Write 16-bit mono PCM to a WAV file as it comes.

    The RIFF and data sizes are rewritten after every :meth:`write` and the bytes flushed to the
    operating system, so the file is a valid WAV holding everything written so far even if the
    process dies; :meth:`close` fixes the header for good.

    Raises:
        AudioFileError: the file cannot be created.
    """

    def __init__(self, path: str | os.PathLike[str], sample_rate: int = 8000) -> None:
        """Create (or truncate) ``path`` for PCM at ``sample_rate``."""
        self.path = Path(path)
        self.sample_rate = _positive_rate(sample_rate)
        try:
            self._file = open(self.path, "wb")  # noqa: SIM115 - closed in close()
        except OSError as exc:
            raise AudioFileError(f"cannot create WAV file {self.path}: {exc}") from exc
        self._wav = wave.open(self._file, "wb")  # noqa: SIM115 - closed in close()
        self._wav.setnchannels(1)
        self._wav.setsampwidth(2)
        self._wav.setframerate(self.sample_rate)
        self.samples_written = 0
        self._closed = False
        self._write_bytes(b"")  # header now: a valid empty WAV from the start

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has been called."""
        return self._closed

    def _write_bytes(self, data: bytes) -> None:
        try:
            self._wav.writeframes(data)  # also patches the header sizes
            self._file.flush()
        except OSError as exc:
            raise AudioFileError(f"cannot write {self.path}: {exc}") from exc

    def write(self, pcm: PCM) -> None:
        """Append ``pcm`` to the file."""
        if self._closed:
            raise AudioError(f"{self.path} is closed")
        pcm = _pcm(pcm)
        self._write_bytes(pcm.astype("<i2", copy=False).tobytes())
        self.samples_written += len(pcm)

    def close(self) -> None:
        """Fix the header and close the file (idempotent)."""
        if self._closed:
            return
        self._closed = True
        try:
            self._wav.close()
        finally:
            self._file.close()

    def __enter__(self) -> WavFileSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class NullSink:
    """Discards PCM, counting the samples."""

    def __init__(self, sample_rate: int = 8000) -> None:
        """Create a sink at ``sample_rate``."""
        self.sample_rate = _positive_rate(sample_rate)
        self.samples_written = 0
        self.closed = False

    def write(self, pcm: PCM) -> None:
        """Count and drop ``pcm``."""
        if self.closed:
            raise AudioError("sink is closed")
        self.samples_written += len(_pcm(pcm))

    def close(self) -> None:
        """Stop accepting PCM."""
        self.closed = True


class MemorySink:
    """Keeps every frame written (for tests)."""

    def __init__(self, sample_rate: int = 8000) -> None:
        """Create a sink at ``sample_rate``."""
        self.sample_rate = _positive_rate(sample_rate)
        self.frames: list[PCM] = []
        self.closed = False

    def write(self, pcm: PCM) -> None:
        """Keep a copy of ``pcm``."""
        if self.closed:
            raise AudioError("sink is closed")
        self.frames.append(_pcm(pcm).copy())

    @property
    def pcm(self) -> PCM:
        """Everything written, concatenated."""
        if not self.frames:
            return np.zeros(0, dtype=np.int16)
        return np.concatenate(self.frames)

    def close(self) -> None:
        """Stop accepting PCM (what was written stays available)."""
        self.closed = True


# ---------------------------------------------------------------------------------------------
# Devices
# ---------------------------------------------------------------------------------------------


class _PlayoutBuffer:
    """FIFO of PCM samples with a size limit (drops the oldest on overflow)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._chunks: collections.deque[np.ndarray] = collections.deque()
        self._size = 0
        self.dropped = 0

    def __len__(self) -> int:
        return self._size

    def put(self, pcm: np.ndarray) -> None:
        if len(pcm):
            self._chunks.append(pcm)
            self._size += len(pcm)
        while self._size > self.limit:
            excess = self._size - self.limit
            head = self._chunks[0]
            if len(head) <= excess:
                self._chunks.popleft()
                self._size -= len(head)
                self.dropped += len(head)
            else:
                self._chunks[0] = head[excess:]
                self._size -= excess
                self.dropped += excess

    def take(self, n: int) -> np.ndarray:
        """Up to ``n`` samples from the front."""
        parts = []
        need = n
        while need and self._chunks:
            head = self._chunks[0]
            if len(head) <= need:
                parts.append(self._chunks.popleft())
                need -= len(head)
            else:
                parts.append(head[:need])
                self._chunks[0] = head[need:]
                need = 0
        got = n - need
        self._size -= got
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int16)


@dataclass
class DeviceStats:
    """Counters of a device.

    Attributes:
        frames_captured: capture periods delivered.
        frames_played: playback periods consumed.
        underrun_samples: playback samples filled with silence because nothing was queued.
        overrun_samples: samples dropped because a buffer was full (capture or playback).
    """

    frames_captured: int = 0
    frames_played: int = 0
    underrun_samples: int = 0
    overrun_samples: int = 0


class FakeClockedDevice:
    """A duplex sound card driven by a clock you advance (sans-IO, for tests).

    Every ``frame_ms`` of the clock it captures one frame from ``capture`` (the "microphone")
    and plays one frame from its playout queue into ``playback`` (the "speaker"), silence
    when the queue runs dry. Call :meth:`tick` with the current time; :meth:`next_timeout`
    says when the next period ends.

    Args:
        sample_rate: device rate.
        frame_ms: period length.
        capture: the microphone signal (default: silence); an ended source gives silence.
        playback: where played frames go (default: a :class:`MemorySink`).
        start: the clock value at which the first period begins.
        max_playout_ms: playout queue limit; older samples are dropped beyond it.
    """

    def __init__(
        self,
        sample_rate: int = 8000,
        frame_ms: int = 20,
        *,
        capture: AudioSource | None = None,
        playback: AudioSink | None = None,
        start: float = 0.0,
        max_playout_ms: int = 200,
    ) -> None:
        self.sample_rate = _positive_rate(sample_rate)
        if frame_ms <= 0 or sample_rate * frame_ms % 1000:
            raise AudioError(f"frame of {frame_ms} ms is not a whole number of samples")
        self.frame_ms = frame_ms
        self.frame_samples = sample_rate * frame_ms // 1000
        self.capture = capture if capture is not None else SilenceSource(sample_rate)
        self.playback: AudioSink = playback if playback is not None else MemorySink(sample_rate)
        for end in (self.capture, self.playback):
            if end.sample_rate != sample_rate:
                raise AudioError(f"{end!r} runs at {end.sample_rate} Hz, device at {sample_rate}")
        self.start = start
        self._periods = 0
        self._queue = _PlayoutBuffer(max(self.frame_samples, sample_rate * max_playout_ms // 1000))
        self.stats = DeviceStats()

    def next_timeout(self) -> float:
        """The clock value at which the current period ends."""
        return self.start + (self._periods + 1) * self.frame_ms / 1000

    def write(self, pcm: PCM) -> None:
        """Queue samples for playback (any length)."""
        self._queue.put(_pcm(pcm))
        self.stats.overrun_samples = self._queue.dropped

    @property
    def queued_samples(self) -> int:
        """Samples waiting in the playout queue."""
        return len(self._queue)

    def tick(self, now: float) -> list[PCM]:
        """Run every period that has ended by ``now``.

        Returns:
            The frames captured in those periods, oldest first (empty if none ended).
        """
        captured: list[PCM] = []
        while self.next_timeout() <= now + 1e-9:
            self._periods += 1
            frame = _pcm(self.capture.read(self.frame_samples))
            if len(frame) < self.frame_samples:
                frame = np.concatenate(
                    (frame, np.zeros(self.frame_samples - len(frame), dtype=np.int16))
                )
            captured.append(frame)
            self.stats.frames_captured += 1
            out = self._queue.take(self.frame_samples)
            if len(out) < self.frame_samples:
                self.stats.underrun_samples += self.frame_samples - len(out)
                out = np.concatenate((out, np.zeros(self.frame_samples - len(out), np.int16)))
            self.playback.write(out)
            self.stats.frames_played += 1
        return captured


@dataclass(frozen=True)
class AudioDeviceInfo:
    """A PortAudio device as ``sounddevice.query_devices()`` describes it."""

    index: int
    name: str
    max_input_channels: int
    max_output_channels: int
    default_sample_rate: float
    hostapi: int


def _import_sounddevice() -> Any:
    try:
        return importlib.import_module("sounddevice")
    except ImportError as exc:
        raise AudioDeviceError(
            "real audio devices need the 'sounddevice' package: pip install p2psip[audio]"
        ) from exc
    except OSError as exc:  # sounddevice raises OSError when libportaudio is missing
        raise AudioDeviceError(
            f"PortAudio is not available ({exc}); on Debian/Ubuntu: apt install libportaudio2"
        ) from exc


def list_audio_devices() -> list[AudioDeviceInfo]:
    """Every PortAudio device (empty on a machine without a sound card).

    Raises:
        AudioDeviceError: ``sounddevice`` or PortAudio is missing.
    """
    sd = _import_sounddevice()
    try:
        devices = sd.query_devices()
    except Exception as exc:  # PortAudioError: PortAudio failed to initialise
        raise AudioDeviceError(f"cannot list audio devices: {exc}") from exc
    return [
        AudioDeviceInfo(
            index=int(d.get("index", i)),
            name=str(d["name"]),
            max_input_channels=int(d["max_input_channels"]),
            max_output_channels=int(d["max_output_channels"]),
            default_sample_rate=float(d["default_samplerate"]),
            hostapi=int(d.get("hostapi", 0)),
        )
        for i, d in enumerate(devices)
    ]


class SoundDevice:
    """A real sound card through ``sounddevice`` (PortAudio), with non-blocking read/write.

    PortAudio calls back on its own thread once per ``frame_ms``: captured frames go into a
    bounded queue that :meth:`read` drains, and :meth:`write` feeds the playout queue the
    callback plays from (silence on underrun). ``on_capture`` (if given) is called on
    PortAudio's thread after each captured frame, e.g. to wake an event loop thread-safely
    (see ``p2psip.media.aio.sounddevice_io``).

    Args:
        sample_rate: device rate (16000 or 48000 are safe choices).
        frame_ms: callback period.
        input_device / output_device: a device index or name substring (``None``: default).
        capture / playback: which directions to open.
        max_buffer_ms: limit of each queue; the oldest audio is dropped beyond it.
        on_capture: called (on the audio thread) after each captured frame.

    Raises:
        AudioDeviceError: PortAudio/``sounddevice`` missing, no such device, or no device at
            all for a requested direction.
    """

    def __init__(
        self,
        sample_rate: int = 48000,
        frame_ms: int = 20,
        *,
        input_device: int | str | None = None,
        output_device: int | str | None = None,
        capture: bool = True,
        playback: bool = True,
        max_buffer_ms: int = 200,
        on_capture: Callable[[], None] | None = None,
    ) -> None:
        if not capture and not playback:
            raise AudioError("a SoundDevice needs capture, playback or both")
        self.sample_rate = _positive_rate(sample_rate)
        self.frame_samples = sample_rate * frame_ms // 1000
        self._sd = sd = _import_sounddevice()
        devices = list_audio_devices()
        self.input_device = self._pick(devices, input_device, "input") if capture else None
        self.output_device = self._pick(devices, output_device, "output") if playback else None
        limit = max(self.frame_samples, sample_rate * max_buffer_ms // 1000)
        self._captured: collections.deque[np.ndarray] = collections.deque(
            maxlen=max(1, limit // max(1, self.frame_samples))
        )
        self._capture_rest = np.zeros(0, dtype=np.int16)
        self._playout: collections.deque[np.ndarray] = collections.deque()
        self._play_limit = limit
        self._play_rest = np.zeros(0, dtype=np.int16)
        self._on_capture = on_capture
        self.stats = DeviceStats()
        kwargs: dict[str, Any] = {
            "samplerate": sample_rate,
            "blocksize": self.frame_samples,
            "dtype": "int16",
            "channels": 1,
            "callback": self._callback,
        }
        try:
            if capture and playback:
                self._stream = sd.Stream(device=(self.input_device, self.output_device), **kwargs)
            elif capture:
                self._stream = sd.InputStream(device=self.input_device, **kwargs)
            else:
                self._stream = sd.OutputStream(device=self.output_device, **kwargs)
        except Exception as exc:  # sounddevice.PortAudioError, ValueError for bad settings
            raise AudioDeviceError(f"cannot open the audio stream: {exc}") from exc
        self._capture = capture
        self._playback = playback
        self._closed = False

    @staticmethod
    def _pick(devices: list[AudioDeviceInfo], wanted: int | str | None, kind: str) -> int:
        key = "max_input_channels" if kind == "input" else "max_output_channels"
        usable = [d for d in devices if getattr(d, key) > 0]
        if not usable:
            raise AudioDeviceError(f"no audio {kind} device on this machine")
        if wanted is None:
            return usable[0].index
        if isinstance(wanted, int):
            if any(d.index == wanted for d in usable):
                return wanted
            raise AudioDeviceError(f"no audio {kind} device with index {wanted}")
        for d in usable:
            if wanted.lower() in d.name.lower():
                return d.index
        raise AudioDeviceError(f"no audio {kind} device named like {wanted!r}")

    # --- PortAudio thread -------------------------------------------------------------------
    def _callback(self, *args: Any) -> None:
        # Stream: (indata, outdata, frames, time, status); Input/OutputStream: one buffer
        if self._capture and self._playback:
            indata, outdata, frames = args[0], args[1], args[2]
        elif self._capture:
            indata, outdata, frames = args[0], None, args[1]
        else:
            indata, outdata, frames = None, args[0], args[1]
        if indata is not None:
            if len(self._captured) == self._captured.maxlen:
                self.stats.overrun_samples += frames
            self._captured.append(np.array(indata, dtype=np.int16).reshape(-1))
            self.stats.frames_captured += 1
            if self._on_capture is not None:
                self._on_capture()
        if outdata is not None:
            out = outdata.reshape(-1)
            have = self._play_rest
            while len(have) < frames and self._playout:
                have = np.concatenate((have, self._playout.popleft()))
            n = min(frames, len(have))
            out[:n] = have[:n]
            out[n:] = 0
            self._play_rest = have[n:]
            if n < frames:
                self.stats.underrun_samples += frames - n
            self.stats.frames_played += 1

    # --- caller's thread --------------------------------------------------------------------
    def start(self) -> None:
        """Start the stream."""
        try:
            self._stream.start()
        except Exception as exc:
            raise AudioDeviceError(f"cannot start the audio stream: {exc}") from exc

    def read(self, samples: int) -> PCM:
        """Up to ``samples`` captured samples (fewer, even none, if not captured yet)."""
        n = _check_count(samples)
        parts = [self._capture_rest]
        have = len(self._capture_rest)
        while have < n and self._captured:
            chunk = self._captured.popleft()
            parts.append(chunk)
            have += len(chunk)
        data = np.concatenate(parts)
        self._capture_rest = data[n:]
        return data[:n]

    @property
    def captured_samples(self) -> int:
        """Captured samples waiting to be read."""
        return len(self._capture_rest) + sum(len(c) for c in list(self._captured))

    def write(self, pcm: PCM) -> None:
        """Queue ``pcm`` for playback; the oldest queued audio is dropped beyond the limit."""
        pcm = _pcm(pcm)
        if len(pcm):
            self._playout.append(pcm.copy())
        queued = sum(len(c) for c in list(self._playout))
        while queued > self._play_limit and self._playout:
            try:
                dropped = self._playout.popleft()
            except IndexError:  # the callback took it meanwhile
                break
            queued -= len(dropped)
            self.stats.overrun_samples += len(dropped)

    def close(self) -> None:
        """Stop and close the stream (idempotent)."""
        if self._closed:
            return
        self._closed = True
        try:
            self._stream.stop()
        finally:
            self._stream.close()

    def __enter__(self) -> SoundDevice:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------
# Conference mixing
# ---------------------------------------------------------------------------------------------


def mix_minus(frames: Mapping[K, PCM], length: int | None = None) -> dict[K, PCM]:
    """For each participant, the sum of every *other* participant's frame, saturated to int16.

    Args:
        frames: each participant's frame for this period; shorter frames are padded with
            silence to ``length``.
        length: the frame length (default: the longest frame).

    Raises:
        AudioError: a frame is not int16 mono PCM, or longer than ``length``.
    """
    checked = {key: _pcm(pcm) for key, pcm in frames.items()}
    if length is None:
        length = max((len(p) for p in checked.values()), default=0)
    block = np.zeros((len(checked), length), dtype=np.int32)
    for row, (key, pcm) in enumerate(checked.items()):
        if len(pcm) > length:
            raise AudioError(f"frame of {key!r} has {len(pcm)} samples, more than {length}")
        block[row, : len(pcm)] = pcm
    total = block.sum(axis=0)  # int32: no overflow below 65536 participants
    return {
        key: np.clip(total - block[row], -32768, 32767).astype(np.int16)
        for row, key in enumerate(checked)
    }


class Mixer:
    """A conference bridge: each participant hears every other one, never itself.

    Each period: :meth:`push` every participant's frame (a missing one counts as silence),
    then :meth:`mix` returns what each participant should hear and starts the next period.

    Args:
        frame_samples: the frame length of every input and output.
    """

    def __init__(self, frame_samples: int) -> None:
        if frame_samples <= 0:
            raise AudioError(f"bad frame length {frame_samples}")
        self.frame_samples = frame_samples
        self._participants: dict[Hashable, None] = {}
        self._pending: dict[Hashable, PCM] = {}
        self.clipped_samples = 0

    @property
    def participants(self) -> tuple[Hashable, ...]:
        """The participants, in joining order."""
        return tuple(self._participants)

    def add(self, participant: Hashable) -> None:
        """Add a participant (no-op if present)."""
        self._participants.setdefault(participant, None)

    def remove(self, participant: Hashable) -> None:
        """Remove a participant and its pending frame."""
        self._participants.pop(participant, None)
        self._pending.pop(participant, None)

    def push(self, participant: Hashable, pcm: PCM) -> None:
        """Give ``participant``'s frame for this period (at most ``frame_samples`` long).

        Raises:
            AudioError: unknown participant, or a frame longer than ``frame_samples``.
        """
        if participant not in self._participants:
            raise AudioError(f"{participant!r} is not in the mixer")
        pcm = _pcm(pcm)
        if len(pcm) > self.frame_samples:
            raise AudioError(f"frame of {len(pcm)} samples, the mixer takes {self.frame_samples}")
        self._pending[participant] = pcm

    def mix(self) -> dict[Hashable, PCM]:
        """What each participant hears this period; clears the pushed frames."""
        frames = {p: self._pending.get(p, np.zeros(0, np.int16)) for p in self._participants}
        self._pending = {}
        total = np.zeros(self.frame_samples, dtype=np.int32)
        for pcm in frames.values():
            total[: len(pcm)] += pcm
        out: dict[Hashable, PCM] = {}
        for participant, pcm in frames.items():
            own = total.copy()
            own[: len(pcm)] -= pcm
            self.clipped_samples += int(np.count_nonzero((own > 32767) | (own < -32768)))
            out[participant] = np.clip(own, -32768, 32767).astype(np.int16)
        return out


# ---------------------------------------------------------------------------------------------
# Analysis helpers
# ---------------------------------------------------------------------------------------------


def dominant_frequency(pcm: PCM, rate: int) -> float:
    """The frequency (Hz) of the strongest spectral peak, ignoring DC.

    Hann-windowed FFT with parabolic interpolation of the log magnitude around the peak
    bin, so the estimate is well below one bin width for a steady tone. 0.0 for silence.

    Raises:
        AudioError: fewer than 4 samples, or bad PCM / rate.
    """
    pcm = _pcm(pcm)
    _positive_rate(rate)
    if len(pcm) < 4:
        raise AudioError("need at least 4 samples to estimate a frequency")
    x = pcm.astype(np.float64)
    x -= x.mean()
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    spectrum[0] = 0.0
    k = int(np.argmax(spectrum))
    if spectrum[k] == 0.0:
        return 0.0
    offset = 0.0
    if 0 < k < len(spectrum) - 1:
        a, b, c = np.log(np.maximum(spectrum[k - 1 : k + 2], 1e-12))
        denominator = a - 2 * b + c
        if denominator < 0:
            offset = 0.5 * (a - c) / denominator
    return float((k + offset) * rate / len(x))


def rms_dbfs(pcm: PCM) -> float:
    """RMS level in dB relative to full scale (32768): a full-scale sine is -3.01 dBFS.

    ``-inf`` for silence or no samples.
    """
    pcm = _pcm(pcm)
    if not len(pcm):
        return -math.inf
    rms = math.sqrt(float(np.mean(np.square(pcm.astype(np.float64)))))
    return 20 * math.log10(rms / 32768) if rms > 0 else -math.inf


def peak_dbfs(pcm: PCM) -> float:
    """Peak level in dB relative to full scale (32768); ``-inf`` for silence."""
    pcm = _pcm(pcm)
    peak = int(np.max(np.abs(pcm.astype(np.int32)))) if len(pcm) else 0
    return 20 * math.log10(peak / 32768) if peak else -math.inf


def duration(pcm: PCM | Iterable[PCM], rate: int) -> float:
    """Length in seconds of a PCM array (or of a sequence of frames) at ``rate``."""
    _positive_rate(rate)
    if isinstance(pcm, np.ndarray):
        return len(_pcm(pcm)) / rate
    return sum(len(_pcm(p)) for p in pcm) / rate
