"""asyncio front end of :class:`p2psip.media.audio.SoundDevice` (a real sound card).

PortAudio calls the device back on its own thread; this adapter turns "a frame was captured"
into an :class:`asyncio.Event` set on the event loop (``call_soon_threadsafe``), so a coroutine
can ``await device.read_frame()`` without polling. Playback stays non-blocking:
:meth:`AsyncSoundDevice.write` queues PCM for the audio thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

from p2psip.media.audio import AudioError, SoundDevice
from p2psip.media.codecs import PCM

__all__ = ["AsyncSoundDevice"]


class AsyncSoundDevice:
    """A :class:`SoundDevice` whose captured frames can be awaited.

    Use as ``async with AsyncSoundDevice(48000) as dev: pcm = await dev.read_frame()``.

    Args:
        sample_rate: device rate.
        frame_ms: frame length of :meth:`read_frame` and of the PortAudio callback.
        device_factory: builds the underlying device (tests pass a fake); it receives
            ``sample_rate``, ``frame_ms``, ``on_capture`` and the other keyword arguments.
        **options: passed on (``input_device``, ``output_device``, ``capture``, ``playback``,
            ``max_buffer_ms``).

    Raises:
        AudioDeviceError: from :class:`SoundDevice` (PortAudio or device missing).
    """

    def __init__(
        self,
        sample_rate: int = 48000,
        frame_ms: int = 20,
        *,
        device_factory: Callable[..., SoundDevice] = SoundDevice,
        **options: Any,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._captured = asyncio.Event()
        self.device = device_factory(
            sample_rate, frame_ms, on_capture=self._on_capture_thread, **options
        )
        self.sample_rate = sample_rate
        self.frame_samples = self.device.frame_samples
        self._started = False
        self._closed = False

    def _on_capture_thread(self) -> None:
        """Runs on PortAudio's thread: wake the loop."""
        try:
            self._loop.call_soon_threadsafe(self._captured.set)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            pass

    def start(self) -> None:
        """Start the stream (done by ``async with``)."""
        if not self._started:
            self._started = True
            self.device.start()

    async def read_frame(self) -> PCM:
        """Wait for and return the next captured frame (``frame_samples`` long).

        Raises:
            AudioError: the device is closed.
        """
        while True:
            if self._closed:
                raise AudioError("the sound device is closed")
            if self.device.captured_samples >= self.frame_samples:
                return self.device.read(self.frame_samples)
            self._captured.clear()
            if self.device.captured_samples >= self.frame_samples:
                continue
            await self._captured.wait()

    async def frames(self) -> AsyncIterator[PCM]:
        """Captured frames, forever (until the device is closed)."""
        while not self._closed:
            yield await self.read_frame()

    def write(self, pcm: PCM) -> None:
        """Queue ``pcm`` for playback (never blocks)."""
        self.device.write(pcm)

    async def close(self) -> None:
        """Stop the stream and wake any reader (which then raises :class:`AudioError`)."""
        if self._closed:
            return
        self._closed = True
        self._captured.set()
        await asyncio.to_thread(self.device.close)  # PortAudio's stop can block ~a period

    async def __aenter__(self) -> AsyncSoundDevice:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
