"""``AudioStream``: one negotiated audio m-line end to end, on asyncio (no SIP inside).

It owns the transport (ICE through :class:`~p2psip.media.aio.ice.IceTransport`, or
:class:`~p2psip.media.aio.ice.PlainUdpTransport` for a peer without ICE, symmetric RTP), and
drives the sans-IO :class:`~p2psip.media.pipeline.AudioPipeline` (SRTP, RTP/RTCP, codec,
jitter buffer, DTMF, source and sink) from a shared media clock::

    stream = AudioStream(AudioStreamConfig(codecs=["opus", "PCMU"], host_addresses=["127.0.0.1"]),
                         source=ToneSource(1000, 48000), sink=WavFileSink("rx.wav", 16000))
    config = await stream.prepare()                 # bind / gather: a MediaConfig for the SDP
    offer_answer = OfferAnswer("127.0.0.1", [config])
    ...                                             # offer/answer with the peer
    await stream.start(offer_answer.streams[0], controlling=True)   # the offerer controls ICE
    stream.send_dtmf("123#")
    async for event in stream.events(): ...         # DtmfReceived, RtpTimedOut, IceConsentLost
    stream.update(new_negotiated_stream)            # re-INVITE: hold, codec change
    print(stream.statistics())
    await stream.stop()

**Pacing.** Every stream of an event loop with the same frame duration hangs off one
:class:`MediaClock`: a single ``loop.call_at`` timer, re-armed at ``start + n * ptime`` (no
drift: the deadlines never depend on when the previous callback ran). A late wake-up runs every
frame that is due, at most ``max_catch_up`` of them; frames beyond that are skipped (the RTP
timestamps jump over them, RFC 3551 §4.1). Received datagrams reach the pipeline from the
transport's protocol callback, never through a task per packet.

**Not done here**: ICE restarts (a re-negotiation keeps the connected pair), RTCP on a second
ICE component (with ICE, RTCP needs rtcp-mux, which we always offer; without it no RTCP flows),
video.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import random
import secrets
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Protocol

from p2psip.media.aio.ice import (
    CandidateError,
    IceError,
    IceTransport,
    MediaTransportError,
    PlainUdpTransport,
    format_candidate,
)
from p2psip.media.audio import AudioSink, AudioSource
from p2psip.media.codecs import Codec, registered_codecs
from p2psip.media.config import AudioStreamConfig
from p2psip.media.jitterbuffer import JitterBufferConfig
from p2psip.media.offer_answer import CodecDescription, MediaConfig, NegotiatedStream, SRTPMode
from p2psip.media.pipeline import (
    AudioPipeline,
    IceConsentLost,
    MediaEvent,
    MediaStreamError,
    PipelineStatistics,
    StreamParameters,
)
from p2psip.media.rtcp import RtcpConfig
from p2psip.media.srtp import generate_inline, supported_suites

__all__ = [
    "AudioStream",
    "AudioStreamConfig",
    "AudioStreamState",
    "AudioStreamStatistics",
    "ClockStatistics",
    "MediaClock",
    "resolve_codecs",
]

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# The shared media clock
# ---------------------------------------------------------------------------------------------


class ClockMember(Protocol):
    """What a :class:`MediaClock` drives."""

    def clock_tick(self, now: float) -> None:
        """Run one frame time; ``now`` is the frame's deadline on the loop clock."""

    def clock_skip(self, frames: int) -> None:
        """``frames`` frame times were dropped because the loop stalled."""


@dataclass(frozen=True)
class ClockStatistics:
    """How well a :class:`MediaClock` keeps time.

    Attributes:
        period_ms: the frame duration.
        members: streams on the clock.
        ticks: frame times run.
        wakeups: timer callbacks (fewer than ticks when late wake-ups caught up).
        skipped: frame times dropped after a stall longer than ``max_catch_up`` frames.
        late_wakeups: callbacks that ran more than half a period after their deadline.
        max_lateness_ms: the worst wake-up delay seen.
        p99_lateness_ms: 99th percentile of the wake-up delay over the last 10 000 wake-ups.
    """

    period_ms: float
    members: int
    ticks: int
    wakeups: int
    skipped: int
    late_wakeups: int
    max_lateness_ms: float
    p99_lateness_ms: float


class MediaClock:
    """One timer for every stream of an event loop with the same frame duration.

    Use :meth:`shared` to get the loop's clock for a period. Deadlines are
    ``start + n * period`` on ``loop.time()``; each callback runs every frame due since the
    last one (at most ``max_catch_up``), then re-arms ``loop.call_at`` for the next deadline.

    Args:
        loop: the event loop.
        period: frame duration in seconds.
        max_catch_up: frames run at most per wake-up; older ones are skipped.
    """

    _clocks: ClassVar[weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[float, Any]]] = (
        weakref.WeakKeyDictionary()
    )

    def __init__(
        self, loop: asyncio.AbstractEventLoop, period: float, *, max_catch_up: int = 5
    ) -> None:
        if period <= 0 or max_catch_up < 1:
            raise ValueError("period must be positive and max_catch_up at least 1")
        self._loop = loop
        self.period = period
        self.max_catch_up = max_catch_up
        self._members: dict[int, ClockMember] = {}
        self._order: tuple[ClockMember, ...] = ()
        self._handle: asyncio.TimerHandle | None = None
        self._start = 0.0
        self._done = 0
        self.ticks = 0
        self.wakeups = 0
        self.skipped = 0
        self.late_wakeups = 0
        self.max_lateness = 0.0
        self._lateness: deque[float] = deque(maxlen=10_000)

    @classmethod
    def shared(cls, period: float, loop: asyncio.AbstractEventLoop | None = None) -> MediaClock:
        """The clock of ``loop`` (default: the running loop) for ``period`` seconds."""
        loop = loop or asyncio.get_running_loop()
        clocks = cls._clocks.setdefault(loop, {})
        key = round(period, 6)
        clock = clocks.get(key)
        if clock is None:
            clock = clocks[key] = cls(loop, period)
        return clock  # type: ignore[no-any-return]

    def add(self, member: ClockMember) -> None:
        """Start ticking ``member`` from the next frame deadline."""
        self._members[id(member)] = member
        self._order = tuple(self._members.values())
        if self._handle is None:
            self._start = self._loop.time()
            self._done = 0
            self._handle = self._loop.call_at(self._start, self._run)

    def remove(self, member: ClockMember) -> None:
        """Stop ticking ``member`` (the timer stops with the last member)."""
        self._members.pop(id(member), None)
        self._order = tuple(self._members.values())
        if not self._members and self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def __len__(self) -> int:
        return len(self._members)

    def _run(self) -> None:
        now = self._loop.time()
        period = self.period
        start = self._start
        due = int((now - start) / period) + 1  # deadlines start + n * period <= now
        deadline = start + self._done * period
        lateness = now - deadline
        self.wakeups += 1
        self._lateness.append(lateness)
        if lateness > self.max_lateness:
            self.max_lateness = lateness
        if lateness > period / 2:
            self.late_wakeups += 1
        behind = due - self._done
        if behind > self.max_catch_up:
            skip = behind - self.max_catch_up
            self._done += skip
            self.skipped += skip
            for member in self._order:
                member.clock_skip(skip)
        while self._done < due:
            t = start + self._done * period
            for member in self._order:
                try:
                    member.clock_tick(t)
                except Exception:  # one broken stream must not stop the others
                    logger.exception("media clock member failed")
            self._done += 1
            self.ticks += 1
        if self._members:
            self._handle = self._loop.call_at(start + self._done * period, self._run)
        else:
            self._handle = None

    def statistics(self) -> ClockStatistics:
        """A snapshot of the timing figures."""
        late = sorted(self._lateness)
        p99 = late[min(len(late) - 1, int(0.99 * len(late)))] if late else 0.0
        return ClockStatistics(
            period_ms=self.period * 1000,
            members=len(self._members),
            ticks=self.ticks,
            wakeups=self.wakeups,
            skipped=self.skipped,
            late_wakeups=self.late_wakeups,
            max_lateness_ms=self.max_lateness * 1000,
            p99_lateness_ms=p99 * 1000,
        )


# ---------------------------------------------------------------------------------------------
# Configuration and statistics
# ---------------------------------------------------------------------------------------------


def resolve_codecs(codecs: Sequence[Codec | str]) -> list[Codec]:
    """Codecs by SDP name (``"pcmu"``, ``"G722"``, ``"opus"``, any case) or as :class:`Codec`.

    Raises:
        MediaStreamError: an unknown name, or a codec whose backend (PyAV) is missing.
    """
    known = {c.name.casefold(): c for c in registered_codecs()}
    result: list[Codec] = []
    for item in codecs:
        codec = item if isinstance(item, Codec) else known.get(str(item).casefold())
        if codec is None:
            raise MediaStreamError(f"unknown codec {item!r} (known: {', '.join(sorted(known))})")
        if not codec.available:
            raise MediaStreamError(f"{codec.name} needs PyAV: pip install av")
        if codec not in result:
            result.append(codec)
    if not result:
        raise MediaStreamError("a stream needs at least one codec")
    return result


@dataclass(frozen=True)
class AudioStreamStatistics(PipelineStatistics):
    """:class:`~p2psip.media.pipeline.PipelineStatistics` plus the transport's view.

    Attributes:
        transport: ``"ice"`` or ``"udp"``.
        local_address / remote_address: ``host:port`` of the RTP path (ICE: the selected pair).
        send_errors: datagrams the transport could not send.
    """

    transport: str = ""
    local_address: str = ""
    remote_address: str = ""
    send_errors: int = 0

    def as_dict(self) -> dict[str, Any]:
        """Plain values (for JSON)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = vars(value) | {"total": value.dropped} if f.name == "dropped" else value
        return out


class AudioStreamState(enum.StrEnum):
    """Where an :class:`AudioStream` is in its life."""

    CREATED = "created"
    PREPARED = "prepared"
    RUNNING = "running"
    STOPPED = "stopped"


# ---------------------------------------------------------------------------------------------
# AudioStream
# ---------------------------------------------------------------------------------------------


class AudioStream:
    """One audio m-line end to end: see the module documentation.

    Args:
        config: our preferences.
        source: what we send (a :class:`~p2psip.media.audio.AudioSource`: tone, WAV, device);
            None sends silence.
        sink: where received audio goes (WAV, memory, null, device); None decodes and drops.
        on_event: called with every :class:`~p2psip.media.pipeline.MediaEvent` (on the loop);
            :meth:`events` yields them too.

    The caller owns ``source`` and ``sink`` (opens, starts and closes them).
    """

    def __init__(
        self,
        config: AudioStreamConfig | None = None,
        *,
        source: AudioSource | None = None,
        sink: AudioSink | None = None,
        on_event: Callable[[MediaEvent], None] | None = None,
    ) -> None:
        self.config = config or AudioStreamConfig()
        self.source = source
        self.sink = sink
        self._on_event = on_event
        self._codecs = resolve_codecs(self.config.codecs)
        self._rng = random.Random(self.config.seed)
        self._state = AudioStreamState.CREATED
        self._ice: IceTransport | None = None
        self._udp: PlainUdpTransport | None = None
        self._udp_rtcp: PlainUdpTransport | None = None
        self._transport: IceTransport | PlainUdpTransport | None = None
        self._media_config: MediaConfig | None = None
        self._negotiated: NegotiatedStream | None = None
        self._pipeline: AudioPipeline | None = None
        self._clock: MediaClock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._events: asyncio.Queue[MediaEvent | None] = asyncio.Queue()
        self._send_errors = 0
        self._transport_lost = False
        self._ticks = 0
        self._can_send_rtcp = True

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def state(self) -> AudioStreamState:
        """Where the stream is: created, prepared, running or stopped."""
        return self._state

    @property
    def media_config(self) -> MediaConfig | None:
        """What :meth:`prepare` returned."""
        return self._media_config

    @property
    def negotiated(self) -> NegotiatedStream | None:
        """The negotiated stream in force."""
        return self._negotiated

    @property
    def pipeline(self) -> AudioPipeline | None:
        """The sans-IO media path (after :meth:`start`)."""
        return self._pipeline

    def _codec_descriptions(self) -> list[CodecDescription]:
        descriptions = []
        for codec in self._codecs:
            fmtp: dict[str, str] = {}
            if codec.name.casefold() == "opus":
                fmtp = {"minptime": "10", "useinbandfec": "0"}
            descriptions.append(
                CodecDescription(
                    codec.name,
                    codec.clock_rate,
                    codec.channels,
                    fmtp=fmtp,
                    payload_type=codec.payload_type,
                )
            )
        if self.config.dtmf:
            for rate in dict.fromkeys(c.clock_rate for c in self._codecs):
                descriptions.append(CodecDescription.telephone_event(rate))
        return descriptions

    def _crypto_lines(self) -> list[str]:
        if self.config.srtp is SRTPMode.OFF:
            return []
        available = set(supported_suites())
        suites = [s for s in self.config.srtp_suites if s in available]
        if not suites:
            raise MediaStreamError(f"none of the SRTP suites {self.config.srtp_suites} is usable")
        return [
            f"{tag} {suite} {generate_inline(suite, secrets.token_bytes)}"
            for tag, suite in enumerate(suites, 1)
        ]

    async def prepare(self, *, controlling: bool = True) -> MediaConfig:
        """Bind the sockets or gather ICE candidates; return what goes into our SDP.

        Args:
            controlling: our ICE role as far as it is known now (RFC 8445 §6.1.1: the offerer
                controls; an answerer passes False so that the offerer's first checks do not
                meet a role conflict); :meth:`start` confirms it.

        Raises:
            MediaStreamError: called twice, no usable SRTP suite, no ICE candidate gathered.
            MediaTransportError: a socket could not be bound.
        """
        if self._state != AudioStreamState.CREATED:
            raise MediaStreamError(f"prepare() in state {self._state}")
        cfg = self.config
        self._loop = asyncio.get_running_loop()
        crypto = self._crypto_lines()
        codecs = self._codec_descriptions()
        if cfg.ice:
            ice = IceTransport(
                controlling=controlling,  # start() confirms the role
                host_addresses=cfg.host_addresses,
                stun_server=cfg.stun_server,
                turn_server=cfg.turn_server,
                turn_username=cfg.turn_username,
                turn_password=cfg.turn_password,
                relay_only=cfg.relay_only,
                gather_timeout=cfg.gather_timeout,
            )
            self._ice = ice
            candidates = await ice.gather()
            default = ice.default_candidate
            if not candidates or default is None:
                await ice.close()
                raise MediaStreamError("ICE gathered no candidate")
            config = MediaConfig(
                port=default.port,
                codecs=codecs,
                address=default.host,
                ptime=cfg.ptime,
                rtcp_mux=True,
                srtp=cfg.srtp,
                crypto=crypto,
                ice_ufrag=ice.local_username,
                ice_pwd=ice.local_password,
                ice_candidates=[format_candidate(c) for c in candidates],
                end_of_candidates=True,
            )
        else:
            self._udp = await PlainUdpTransport.create((cfg.address, cfg.port))
            try:
                self._udp_rtcp = await PlainUdpTransport.create((cfg.address, 0))
            except MediaTransportError:
                await self._udp.close()
                raise
            host, port = self._udp.local_address
            config = MediaConfig(
                port=port,
                codecs=codecs,
                address=None if host in ("0.0.0.0", "::") else host,
                ptime=cfg.ptime,
                rtcp_mux=cfg.rtcp_mux,
                rtcp_port=self._udp_rtcp.local_address[1],
                srtp=cfg.srtp,
                crypto=crypto,
            )
        self._media_config = config
        self._state = AudioStreamState.PREPARED
        return config

    async def start(self, negotiated: NegotiatedStream, *, controlling: bool = True) -> None:
        """Connect (ICE checks, or the peer's ``c=``/``m=`` address) and start the media.

        Args:
            negotiated: the outcome of the offer/answer for our m-line.
            controlling: our ICE role (RFC 8445 §6.1.1: the offerer controls).

        Raises:
            MediaStreamError: not prepared, the stream is rejected, or cannot be run.
            IceError: ICE failed or timed out (the stream is then stopped).
        """
        if self._state != AudioStreamState.PREPARED:
            raise MediaStreamError(f"start() in state {self._state}")
        params = StreamParameters.from_negotiated(negotiated)  # raises for a rejected stream
        loop = self._loop or asyncio.get_running_loop()
        try:
            await self._connect(negotiated, controlling)
            assert self._transport is not None
            cfg = self.config
            now = loop.time()
            self._pipeline = AudioPipeline(
                params,
                source=self.source,
                sink=self.sink,
                rng=self._rng,
                now=now,
                cname=cfg.cname or f"{secrets.token_hex(6)}@p2psip",
                rtcp_config=RtcpConfig(min_interval=cfg.rtcp_interval),
                wall_clock_offset=time.time() - now,
                rtp_timeout=cfg.rtp_timeout,
                jitter_buffer=JitterBufferConfig(
                    min_delay=cfg.jitter_min_delay,
                    max_delay=cfg.jitter_max_delay,
                    initial_delay=cfg.jitter_initial_delay,
                ),
                simulated_loss=cfg.simulated_loss,
                loss_rng=random.Random(cfg.loss_seed),
                opus_bitrate=cfg.opus_bitrate,
            )
        except BaseException:
            await self._close_transports()
            self._state = AudioStreamState.STOPPED
            raise
        self._negotiated = negotiated
        self._transport.set_receiver(self._on_datagram)
        if self._udp_rtcp is not None:
            self._udp_rtcp.set_receiver(self._on_rtcp_datagram)
        self._state = AudioStreamState.RUNNING
        self._clock = MediaClock.shared(params.ptime / 1000, loop)
        self._clock.add(self)

    async def _connect(self, negotiated: NegotiatedStream, controlling: bool) -> None:
        if self._ice is not None and negotiated.remote_ice:
            ice = self._ice
            ice.controlling = controlling
            if negotiated.remote_ice_ufrag is None or negotiated.remote_ice_pwd is None:
                raise MediaStreamError("the peer's ICE credentials are missing")
            ice.set_remote_credentials(
                negotiated.remote_ice_ufrag,
                negotiated.remote_ice_pwd,
                ice_lite=negotiated.remote_ice_lite,
            )
            for value in negotiated.remote_candidates:
                with contextlib.suppress(CandidateError, IceError):
                    await ice.add_remote_candidate(value)
            await ice.end_of_candidates()  # SDP carried them all (no trickle here)
            await ice.connect(timeout=self.config.ice_timeout)
            self._transport = ice
            self._can_send_rtcp = negotiated.rtcp_mux
            return
        if self._ice is not None:
            # the peer does no ICE (SIPp, many phones): plain RTP on our default candidate
            default = self._ice.default_candidate
            await self._ice.close()
            self._ice = None
            if default is None or default.type != "host":
                raise MediaStreamError(
                    "the peer does not do ICE and our default candidate is not a host address"
                )
            self._udp = await PlainUdpTransport.create((default.host, default.port))
            if not negotiated.rtcp_mux:
                with contextlib.suppress(MediaTransportError):  # best effort: port + 1
                    self._udp_rtcp = await PlainUdpTransport.create(
                        (default.host, default.port + 1)
                    )
        assert self._udp is not None
        if negotiated.rtcp_mux and self._udp_rtcp is not None:
            await self._udp_rtcp.close()
            self._udp_rtcp = None
        self._set_remote(negotiated)
        self._transport = self._udp

    def _set_remote(self, negotiated: NegotiatedStream) -> None:
        assert self._udp is not None
        address = negotiated.remote_address
        usable = address not in (None, "0.0.0.0", "::") and negotiated.remote_port > 0
        if usable:
            try:
                self._udp.set_remote_address((str(address), negotiated.remote_port))
            except ValueError as exc:
                raise MediaStreamError(f"cannot send to the peer: {exc}") from None
        self._can_send_rtcp = usable
        if self._udp_rtcp is not None:
            rtcp_address = negotiated.remote_rtcp_address
            rtcp_port = negotiated.remote_rtcp_port
            if rtcp_address not in (None, "0.0.0.0", "::") and rtcp_port:
                with contextlib.suppress(ValueError):
                    self._udp_rtcp.set_remote_address((str(rtcp_address), rtcp_port))

    def update(self, negotiated: NegotiatedStream) -> None:
        """Apply a re-negotiation: hold/unhold (direction), codec or payload type change, new
        SRTP keys, a new remote address (plain UDP).

        Raises:
            MediaStreamError: not running, or the new parameters cannot be run.
        """
        if self._state != AudioStreamState.RUNNING or self._pipeline is None:
            raise MediaStreamError(f"update() in state {self._state}")
        loop = self._loop or asyncio.get_running_loop()
        params = StreamParameters.from_negotiated(negotiated)
        old_ptime = self._pipeline.params.ptime
        self._pipeline.update(params, loop.time())
        if self._transport is self._udp and self._udp is not None:
            self._set_remote(negotiated)
        self._negotiated = negotiated
        if params.ptime != old_ptime and self._clock is not None:
            self._clock.remove(self)
            self._clock = MediaClock.shared(params.ptime / 1000, loop)
            self._clock.add(self)
        self._after_pipeline()

    async def stop(self) -> None:
        """Send the RTCP BYE, stop the clock, close the transports; idempotent."""
        if self._state == AudioStreamState.STOPPED:
            return
        if self._clock is not None:
            self._clock.remove(self)
            self._clock = None
        if self._pipeline is not None and self._loop is not None:
            self._pipeline.close(self._loop.time())
            self._flush()
            self._dispatch()
        self._state = AudioStreamState.STOPPED
        await self._close_transports()
        self._events.put_nowait(None)

    async def _close_transports(self) -> None:
        for transport in (self._ice, self._udp, self._udp_rtcp):
            if transport is not None:
                with contextlib.suppress(Exception):
                    await transport.close()

    async def __aenter__(self) -> AudioStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- media ----------------------------------------------------------------------------------

    def send_dtmf(self, digits: str, *, duration_ms: float = 100.0) -> None:
        """Send DTMF digits as RFC 4733 events, one after the other.

        Raises:
            MediaStreamError: not running, no telephone-event negotiated, or a bad digit.
        """
        if self._pipeline is None or self._state != AudioStreamState.RUNNING:
            raise MediaStreamError("send_dtmf() needs a running stream")
        self._pipeline.send_dtmf(digits, duration_ms=duration_ms)

    async def events(self) -> AsyncIterator[MediaEvent]:
        """The stream's events until :meth:`stop`."""
        while True:
            event = await self._events.get()
            if event is None:
                self._events.put_nowait(None)  # other iterators end too
                return
            yield event

    def statistics(self) -> AudioStreamStatistics:
        """Media and transport statistics.

        Raises:
            MediaStreamError: before :meth:`start`.
        """
        if self._pipeline is None:
            raise MediaStreamError("no statistics before start()")
        base = self._pipeline.statistics()
        local = remote = ""
        kind = "udp"
        if self._transport is self._ice and self._ice is not None:
            kind = "ice"
            pair = self._ice.selected_pair
            if pair is not None:
                local = f"{pair[0].host}:{pair[0].port}"
                remote = f"{pair[1].host}:{pair[1].port}"
        elif self._udp is not None:
            with contextlib.suppress(MediaTransportError):
                host, port = self._udp.local_address
                local = f"{host}:{port}"
            if self._udp.remote_address is not None:
                remote = "{}:{}".format(*self._udp.remote_address)
        values = {f.name: getattr(base, f.name) for f in fields(PipelineStatistics)}
        return AudioStreamStatistics(
            **values,
            transport=kind,
            local_address=local,
            remote_address=remote,
            send_errors=self._send_errors,
        )

    # -- clock and transport callbacks -------------------------------------------------------------

    def clock_tick(self, now: float) -> None:
        """Called by the :class:`MediaClock` once per frame."""
        pipeline = self._pipeline
        if pipeline is None:
            return
        pipeline.tick(now)
        self._ticks += 1
        if self._ticks % 25 == 0 and self._ice is not None:
            self._check_consent()
        if pipeline.has_output:
            self._flush()
        if pipeline.has_events:
            self._dispatch()

    def clock_skip(self, frames: int) -> None:
        """Called by the :class:`MediaClock` after a stall."""
        if self._pipeline is not None:
            self._pipeline.skip(frames)

    def _check_consent(self) -> None:
        ice = self._ice
        if (
            ice is not None
            and ice.closed
            and not self._transport_lost
            and self._state == AudioStreamState.RUNNING
        ):
            self._transport_lost = True
            assert self._pipeline is not None and self._loop is not None
            self._pipeline.add_event(IceConsentLost(ice.close_reason))
            self._pipeline.close(self._loop.time(), "ICE consent lost")  # nothing more to send

    def _on_datagram(self, data: bytes) -> None:
        pipeline = self._pipeline
        if pipeline is None:
            return
        pipeline.receive_datagram(data, self._loop.time())  # type: ignore[union-attr]
        self._after_pipeline()

    def _on_rtcp_datagram(self, data: bytes) -> None:
        pipeline = self._pipeline
        if pipeline is None:
            return
        pipeline.receive_rtcp(data, self._loop.time())  # type: ignore[union-attr]
        self._after_pipeline()

    def _after_pipeline(self) -> None:
        pipeline = self._pipeline
        if pipeline is not None:
            if pipeline.has_output:
                self._flush()
            if pipeline.has_events:
                self._dispatch()

    def _flush(self) -> None:
        pipeline = self._pipeline
        transport = self._transport
        if pipeline is None:
            return
        rtp = pipeline.take_rtp()
        rtcp = pipeline.take_rtcp()
        if transport is None or self._transport_lost:
            return
        send = transport.send_nowait
        try:
            for datagram in rtp:
                send(datagram)
        except MediaTransportError:
            self._send_errors += 1
            if self._ice is not None:
                self._check_consent()
            return
        if not rtcp or not self._can_send_rtcp:
            return
        if self._udp_rtcp is not None and self._transport is self._udp:
            if self._udp_rtcp.remote_address is None:
                return
            send = self._udp_rtcp.send_nowait
        try:
            for datagram in rtcp:
                send(datagram)
        except MediaTransportError:
            self._send_errors += 1

    def _dispatch(self) -> None:
        pipeline = self._pipeline
        if pipeline is None:
            return
        while (event := pipeline.next_event()) is not None:
            if self._on_event is not None:
                try:
                    self._on_event(event)
                except Exception:
                    logger.exception("AudioStream on_event callback failed")
            self._events.put_nowait(event)
