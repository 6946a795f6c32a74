"""Audio for sessions: the :class:`~p2psip.endpoint.aio.session.MediaHandler` a node gives
each call, made of one :class:`~p2psip.media.aio.stream.AudioStream` per audio m-line.

The session layer negotiates (RFC 3264) and calls ``prepare``/``start``/``update``/``stop``;
this adapter maps each negotiated audio m-line to its stream, starts streams added by a
re-INVITE, stops removed ones, and reports media failures (RTP timeout, ICE consent lost) to
the session, which hangs up with a Reason.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from p2psip.media.aio.stream import (
    AudioStream,
    AudioStreamConfig,
    AudioStreamState,
    AudioStreamStatistics,
)
from p2psip.media.audio import AudioSink, AudioSource
from p2psip.media.offer_answer import MediaConfig, NegotiatedStream
from p2psip.media.pipeline import IceConsentLost, MediaEvent, RtpTimedOut

__all__ = ["AudioMedia"]

log = logging.getLogger("p2psip.node")


class AudioMedia:
    """One call's audio: a media handler for :class:`~p2psip.endpoint.aio.session.Session`.

    Args:
        config: preferences of every stream of the call (codecs, SRTP mode, ICE...).
        source: what the first stream sends (None: silence).
        sink: where the first stream's received audio goes (None: decoded and dropped).
        spare: prepare one extra stream at the start so that a stream the peer adds with a
            re-INVITE can be accepted (RFC 3264 §8.1).
        on_event: called with ``(stream_index, event)`` for every media event.
        ice_controlling: our ICE role when it is known before the answer is sent (the
            answerer of an offer is controlled, RFC 8445 §6.1.1). It is set on each stream as
            soon as it is prepared: the caller's first checks can arrive before ``start()``,
            and a callee still in the default controlling role would answer them with a role
            conflict (RFC 8445 §7.3.1.1) that sometimes leaves ICE without a nomination.
    """

    def __init__(
        self,
        config: AudioStreamConfig,
        *,
        source: AudioSource | None = None,
        sink: AudioSink | None = None,
        spare: bool = False,
        on_event: Callable[[int, MediaEvent], None] | None = None,
        ice_controlling: bool | None = None,
    ) -> None:
        self.config = config
        self._ice_controlling = ice_controlling
        self.source = source
        self.sink = sink
        self._want_spare = spare
        self._on_event = on_event
        #: streams by m-line index (the first one carries ``source``/``sink``)
        self.streams: dict[int, AudioStream] = {}
        self._prepared: list[AudioStream] = []  # prepared, not yet bound to an m-line
        self._spare: AudioStream | None = None
        self._controlling = True
        self._failure: Callable[[str], None] | None = None
        self._stopped = False
        self._final_statistics: AudioStreamStatistics | None = None
        #: m-line index -> done when the stream's start() (ICE) is over, while it runs
        self._starting: dict[int, asyncio.Future[None]] = {}

    def bind_failure(self, callback: Callable[[str], None]) -> None:
        """Where media failures go (the session's ``media_failed``)."""
        self._failure = callback

    def _new_stream(self, *, primary: bool) -> AudioStream:
        stream: AudioStream

        def on_event(event: MediaEvent) -> None:
            index = next((i for i, s in self.streams.items() if s is stream), -1)
            if self._on_event is not None:
                self._on_event(index, event)
            if isinstance(event, RtpTimedOut | IceConsentLost) and self._failure is not None:
                self._failure(
                    "no RTP from the peer" if isinstance(event, RtpTimedOut) else "ICE consent lost"
                )

        stream = AudioStream(
            self.config,
            source=self.source if primary else None,
            sink=self.sink if primary else None,
            on_event=on_event,
        )
        return stream

    async def _prepare(self, stream: AudioStream) -> MediaConfig:
        if self._ice_controlling is None:
            return await stream.prepare()
        return await stream.prepare(controlling=self._ice_controlling)

    # -- MediaHandler ---------------------------------------------------------------------------
    async def prepare(self) -> Sequence[MediaConfig]:
        """Bind/gather the first stream (and the spare one); their SDP configurations."""
        first = self._new_stream(primary=True)
        self._prepared.append(first)
        configs = [await self._prepare(first)]
        if self._want_spare:
            self._spare = self._new_stream(primary=False)
            await self._prepare(self._spare)
        return configs

    def spare_streams(self) -> Sequence[MediaConfig]:
        """The spare stream's configuration, for a stream the peer adds."""
        if self._spare is not None and self._spare.media_config is not None:
            return [self._spare.media_config]
        return []

    async def add_local_stream(self, *, source: AudioSource | None = None) -> MediaConfig:
        """Prepare a stream we are about to add with a re-INVITE; its SDP configuration."""
        stream = self._new_stream(primary=False)
        if source is not None:
            stream.source = source
        config = await self._prepare(stream)
        self._prepared.append(stream)
        return config

    def _take_prepared(self, negotiated: NegotiatedStream) -> AudioStream | None:
        for stream in self._prepared:
            mc = stream.media_config
            if mc is not None and mc.port == negotiated.local_port:
                self._prepared.remove(stream)
                return stream
        if self._prepared and len(self.streams) == 0:
            return self._prepared.pop(0)
        if self._spare is not None:
            spare, self._spare = self._spare, None
            return spare
        return None

    async def start(self, streams: tuple[NegotiatedStream, ...], *, controlling: bool) -> None:
        """Start a stream for each accepted audio m-line."""
        self._controlling = controlling
        await self.update(streams)

    async def update(self, streams: tuple[NegotiatedStream, ...]) -> None:
        """Apply a (re-)negotiation: start new streams, update running ones, stop removed."""
        if self._stopped:
            return
        for negotiated in streams:
            if negotiated.media != "audio":
                continue
            running = self.streams.get(negotiated.index)
            if negotiated.rejected:
                if running is not None:
                    del self.streams[negotiated.index]
                    await running.stop()
                continue
            if running is not None:
                starting = self._starting.get(negotiated.index)
                if starting is not None:
                    # a re-INVITE (hold...) while this stream's ICE is still connecting: the
                    # answerer's call is up at the ACK, its media may not be yet
                    await asyncio.shield(starting)
                if running.state is AudioStreamState.RUNNING:
                    running.update(negotiated)
                continue  # its start failed: that failure already ends the call
            stream = self._take_prepared(negotiated)
            if stream is None:
                log.warning("no prepared stream for m-line %d", negotiated.index)
                continue
            self.streams[negotiated.index] = stream
            started = asyncio.get_running_loop().create_future()
            self._starting[negotiated.index] = started
            try:
                await stream.start(negotiated, controlling=self._controlling)
            finally:
                started.set_result(None)
                self._starting.pop(negotiated.index, None)

    async def stop(self) -> None:
        """Stop every stream (running, prepared and spare)."""
        self._stopped = True
        primary = self.primary
        if primary is not None and primary.pipeline is not None:
            self._final_statistics = primary.statistics()
        streams = [*self.streams.values(), *self._prepared]
        if self._spare is not None:
            streams.append(self._spare)
        self.streams.clear()
        self._prepared.clear()
        self._spare = None
        await asyncio.gather(*(s.stop() for s in streams), return_exceptions=True)

    def set_primary_audio(
        self, *, source: AudioSource | None = None, sink: AudioSink | None = None
    ) -> None:
        """Change the first stream's source and/or sink (prepared or running)."""
        if source is not None:
            self.source = source
        if sink is not None:
            self.sink = sink
        first = self.primary or (self._prepared[0] if self._prepared else None)
        if first is not None:
            targets: list[object] = [first]
            if first.pipeline is not None:
                targets.append(first.pipeline)
            for target in targets:
                if source is not None:
                    target.source = source  # type: ignore[attr-defined]
                if sink is not None:
                    target.sink = sink  # type: ignore[attr-defined]

    # -- helpers for calls ------------------------------------------------------------------------
    @property
    def primary(self) -> AudioStream | None:
        """The first running stream."""
        return self.streams[min(self.streams)] if self.streams else None

    def statistics(self) -> AudioStreamStatistics | None:
        """The first stream's statistics (None before media started; after the call, the
        figures it ended with)."""
        primary = self.primary
        if primary is None or primary.pipeline is None:
            # bound to its m-line but still connecting (ICE), or stopped
            return self._final_statistics
        return primary.statistics()

    def send_dtmf(self, digits: str) -> None:
        """DTMF as RFC 4733 events on the first stream."""
        primary = self.primary
        if primary is None:
            raise RuntimeError("no running audio stream")
        primary.send_dtmf(digits)
