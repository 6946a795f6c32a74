"""The media path of one negotiated audio m-line, sans-IO: frames in, datagrams out, and back.

:class:`AudioPipeline` joins the pieces of ``p2psip.media`` for one RTP session::

    pipeline = AudioPipeline(StreamParameters.from_negotiated(stream), source=..., sink=...,
                             rng=random.Random(), now=now)
    pipeline.tick(now)                    # once per frame time (ptime), on the media clock
    for datagram in pipeline.take_rtp(): ...      # (S)RTP to send
    for datagram in pipeline.take_rtcp(): ...     # (S)RTCP to send (RTP port when muxed)
    pipeline.receive_datagram(data, now)  # whatever arrived on the RTP port (RTP or muxed RTCP)
    pipeline.receive_rtcp(data, now)      # what arrived on a separate RTCP port
    while (event := pipeline.next_event()) is not None: ...
    pipeline.statistics(now)

Sending (one frame per :meth:`AudioPipeline.tick`): read ``ptime`` of PCM from the source,
resample it to the codec's audio rate, encode, number it (:class:`~p2psip.media.rtp.RtpSender`,
RFC 3550 §5.1), protect it (SRTP, RFC 3711) - or, while a DTMF digit is being sent, the
RFC 4733 event packets instead of audio (same SSRC and sequence space, §2.1). Receiving: SRTP
unprotect, RTP parse, SSRC and payload type checks, reception statistics (RFC 3550 A.1/A.8 via
:class:`~p2psip.media.rtcp.RtcpSession`), then the adaptive jitter buffer, or the DTMF receiver
for ``telephone-event``. Playout (one frame per tick): the jitter buffer's frame is decoded or
concealed (the decoder's PLC) and resampled to the sink's rate, so the sink gets a continuous
signal. RTCP reports go out on the :class:`~p2psip.media.rtcp.RtcpSession` schedule.

Hostile input never raises: a datagram that is not RTP/RTCP, fails SRTP, does not parse, is
too large, carries an unexpected payload type or comes from a second SSRC while the current one
is active is dropped and counted (:class:`PipelineCounters`). Only the caller's misuse raises
:class:`MediaStreamError` (a DTMF digit without a negotiated ``telephone-event``, keys that do
not decode, an unknown codec).

Nothing here reads a clock or touches a socket: ``now`` is an argument (seconds, any origin).
"""

from __future__ import annotations

import enum
import math
import random
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from p2psip.errors import P2PSIPError
from p2psip.media.audio import AudioSink, AudioSource
from p2psip.media.codecs import (
    OPUS,
    Codec,
    CodecError,
    Decoder,
    Encoder,
    OpusOptions,
    Resampler,
    find_codec,
)
from p2psip.media.dtmf import DtmfError, DtmfPacket, DtmfReceiver, dtmf_packets, event_for_digit
from p2psip.media.jitterbuffer import FrameKind, JitterBuffer, JitterBufferConfig
from p2psip.media.offer_answer import NegotiatedStream, SRTPParameters
from p2psip.media.rtcp import (
    ByeReceived,
    RtcpConfig,
    RtcpSession,
    SsrcCollision,
)
from p2psip.media.rtp import RtpError, RtpPacket, RtpReceiverStats, RtpSender
from p2psip.media.srtp import SrtpError, SrtpSession, parse_inline

__all__ = [
    "AudioPipeline",
    "DtmfReceived",
    "IceConsentLost",
    "MediaEvent",
    "MediaResumed",
    "MediaStreamError",
    "PipelineCounters",
    "PipelineStatistics",
    "RemoteByeReceived",
    "RtpTimedOut",
    "StreamParameters",
    "codec_delay_ms",
]

#: Largest RTP payload we decode (octets); larger packets are dropped as malformed.
MAX_PAYLOAD = 1400
#: Opus look-ahead of libopus in "voip" mode (RFC 6716 §2: 2.5 ms + 4 ms of delay compensation).
_CODEC_DELAY_MS = {"opus": 6.5, "g722": 1.5}


class MediaStreamError(P2PSIPError):
    """An audio stream was used wrongly or set up with parameters it cannot run."""


# ---------------------------------------------------------------------------------------------
# Events
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MediaEvent:
    """Base class of the events of an audio stream."""


@dataclass(frozen=True)
class DtmfReceived(MediaEvent):
    """The peer pressed a key (RFC 4733 telephone-event).

    Attributes:
        digit: ``0-9``, ``*``, ``#``, ``A-D``.
        duration_ms: how long it was pressed, as the peer last reported.
        ended: the end packet arrived (False: closed by the timeout or by the next digit).
    """

    digit: str
    duration_ms: float
    ended: bool


@dataclass(frozen=True)
class RtpTimedOut(MediaEvent):
    """No RTP arrived for ``silent_for`` seconds while the peer should be sending."""

    silent_for: float


@dataclass(frozen=True)
class MediaResumed(MediaEvent):
    """RTP arrives again after :class:`RtpTimedOut`."""


@dataclass(frozen=True)
class RemoteByeReceived(MediaEvent):
    """The peer's RTCP BYE (RFC 3550 §6.6): it left the session."""

    reason: str | None


@dataclass(frozen=True)
class IceConsentLost(MediaEvent):
    """The ICE transport closed on its own (RFC 7675 consent expired); nothing is sent any more."""

    reason: str


# ---------------------------------------------------------------------------------------------
# Parameters
# ---------------------------------------------------------------------------------------------


def codec_delay_ms(codec: Codec) -> float:
    """Algorithmic delay of a codec (look-ahead), for the latency estimate."""
    return _CODEC_DELAY_MS.get(codec.name.casefold(), 0.0)


@dataclass(frozen=True)
class StreamParameters:
    """What the pipeline takes from the SDP negotiation of one m-line.

    Attributes:
        codec: the codec we send and expect to receive.
        send_payload_type / recv_payload_type: its payload types (the peer's / ours).
        telephone_event_send_payload_type / telephone_event_recv_payload_type: RFC 4733,
            None when not negotiated.
        ptime: frame duration in ms.
        send / receive: the negotiated direction (hold: RFC 3264 §8.4).
        fmtp: the peer's format parameters of the codec (Opus: RFC 7587 §6.1).
        srtp: the SDES keys, None for plain RTP.
    """

    codec: Codec
    send_payload_type: int
    recv_payload_type: int
    telephone_event_send_payload_type: int | None = None
    telephone_event_recv_payload_type: int | None = None
    ptime: int = 20
    send: bool = True
    receive: bool = True
    fmtp: Mapping[str, str] = field(default_factory=dict, hash=False, compare=False)
    srtp: SRTPParameters | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.ptime <= 200:
            raise MediaStreamError(f"ptime {self.ptime} ms outside 1..200")
        if self.codec.sample_rate * self.ptime % 1000:
            raise MediaStreamError(f"{self.ptime} ms is not a whole number of samples")

    @classmethod
    def from_negotiated(cls, stream: NegotiatedStream) -> StreamParameters:
        """Build the parameters from a :class:`NegotiatedStream`.

        Raises:
            MediaStreamError: the stream is rejected, has no codec, or a codec we cannot run.
        """
        if stream.rejected or stream.codec is None:
            raise MediaStreamError(f"stream {stream.index} is rejected or has no codec")
        negotiated = stream.codec
        try:
            codec = find_codec(negotiated.name, negotiated.clock_rate, negotiated.channels)
        except CodecError as exc:
            raise MediaStreamError(f"cannot run the negotiated codec: {exc}") from None
        if stream.send_payload_type is None or stream.recv_payload_type is None:
            raise MediaStreamError("the negotiated codec has no payload type")
        ptime = stream.ptime
        if codec is OPUS and ptime not in (10, 20, 40, 60):
            ptime = 20  # RFC 7587 §4.1: frame sizes the encoder can produce
        return cls(
            codec=codec,
            send_payload_type=stream.send_payload_type,
            recv_payload_type=stream.recv_payload_type,
            telephone_event_send_payload_type=stream.telephone_event_send_payload_type,
            telephone_event_recv_payload_type=stream.telephone_event_recv_payload_type,
            ptime=ptime,
            send=stream.can_send,
            receive=stream.can_receive,
            fmtp=dict(negotiated.fmtp),
            srtp=stream.srtp,
        )

    @property
    def frame_samples(self) -> int:
        """PCM samples per frame at the codec's audio rate."""
        return self.codec.sample_rate * self.ptime // 1000

    @property
    def frame_timestamp_step(self) -> int:
        """RTP timestamp units per frame (RFC 3551 §4.5.2: 160 for 20 ms of G.722)."""
        return self.codec.clock_rate * self.ptime // 1000


# ---------------------------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------------------------


@dataclass
class PipelineCounters:
    """Datagrams dropped on the receive path, by reason (every one is also counted once).

    Attributes:
        not_rtp: first octet outside RTP/RTCP (STUN, DTLS, garbage; RFC 7983 §7).
        srtp_rejected: SRTP/SRTCP authentication, replay or format failures (wrong key...).
        malformed: RTP that does not parse, or a payload over :data:`MAX_PAYLOAD` octets.
        unknown_payload_type: a payload type that was not negotiated.
        foreign_ssrc: a second source while the current one is active.
        not_receiving: RTP while the direction says we do not receive (hold).
        simulated_loss: dropped on purpose (``simulated_loss``, tests and ``audio-test``).
        rtcp_malformed: RTCP datagrams the RTCP session refused.
        decode_errors: payloads the decoder refused (concealed instead).
    """

    not_rtp: int = 0
    srtp_rejected: int = 0
    malformed: int = 0
    unknown_payload_type: int = 0
    foreign_ssrc: int = 0
    not_receiving: int = 0
    simulated_loss: int = 0
    rtcp_malformed: int = 0
    decode_errors: int = 0

    @property
    def dropped(self) -> int:
        """Every datagram dropped on the receive path."""
        return (
            self.not_rtp
            + self.srtp_rejected
            + self.malformed
            + self.unknown_payload_type
            + self.foreign_ssrc
            + self.not_receiving
            + self.simulated_loss
            + self.rtcp_malformed
        )


@dataclass(frozen=True)
class PipelineStatistics:
    """A snapshot of one stream's media statistics.

    Attributes:
        codec: ``PCMU/8000``, ``opus/48000/2``...
        srtp: whether SRTP protects the stream; ``srtp_suite`` the suite.
        sending / receiving: the current direction.
        packets_sent / bytes_sent: RTP datagrams sent (audio and DTMF) and their size on
            the wire (header, payload and SRTP tag).
        packets_received / bytes_received: RTP datagrams accepted (after SRTP and the checks).
        packets_lost: packets the current source lost (RFC 3550 A.3, cumulative).
        loss_percent: ``lost / expected`` of the current source, in %.
        jitter_ms: interarrival jitter (RFC 3550 A.8).
        rtt_ms: round-trip time from RTCP (RFC 3550 §6.4.1), None before the first report.
        remote_loss_percent / remote_jitter_ms: what the peer reported about our stream
            (RTCP), None before its first report.
        concealed_frames: frames filled by the decoder's concealment (lost or late packets).
        expanded_frames: frames inserted to grow the jitter buffer delay.
        late_packets: packets that arrived after their playout time.
        jitter_buffer_delay_ms / jitter_buffer_target_ms: current and target playout delay.
        latency_ms: estimated mouth-to-ear delay: packetization + jitter buffer + RTT / 2 +
            codec look-ahead + resampling filters.
        dtmf_sent / dtmf_received: digits.
        rtcp_sent / rtcp_received: compound RTCP packets.
        dropped: the receive-path drops by reason.
    """

    codec: str
    srtp: bool
    srtp_suite: str | None
    sending: bool
    receiving: bool
    packets_sent: int
    bytes_sent: int
    packets_received: int
    bytes_received: int
    packets_lost: int
    loss_percent: float
    jitter_ms: float
    rtt_ms: float | None
    remote_loss_percent: float | None
    remote_jitter_ms: float | None
    concealed_frames: int
    expanded_frames: int
    late_packets: int
    jitter_buffer_delay_ms: float
    jitter_buffer_target_ms: float
    latency_ms: float
    dtmf_sent: int
    dtmf_received: int
    rtcp_sent: int
    rtcp_received: int
    dropped: PipelineCounters


# ---------------------------------------------------------------------------------------------
# Re-framing of sample-based payloads
# ---------------------------------------------------------------------------------------------

#: codecs whose payload is one byte per RTP timestamp unit, cut anywhere (RFC 3551 §4.5.14
#: PCMU/PCMA: 8 bits per sample; §4.5.2 G.722: 64 kbit/s on an 8000 Hz RTP clock)
_SAMPLE_BASED = frozenset({"pcmu", "pcma", "g722"})


def _signed32(value: int) -> int:
    """``value`` (mod 2**32) as a signed 32-bit difference (RFC 3550 A.1 style wrap)."""
    return ((value + 0x8000_0000) & 0xFFFF_FFFF) - 0x8000_0000


class _Reframer:
    """Cut the payloads of a sample-based codec into frames of *our* frame length.

    RFC 3551 §4.2: a receiver should accept packets of any duration up to 200 ms, whatever the
    ``ptime`` it asked for (RFC 4566 §6: a preference, not a promise) - SIPp's ``uac_pcap``
    sends 30 ms of G.711 per packet, some gateways 10 ms. The jitter buffer plays one slot of
    ``frame`` timestamp units per frame time, so each payload is cut (or, for shorter
    packets, assembled) on a grid of slots anchored at the first packet of the source; every
    complete slot is handed on as one frame with a synthetic sequence number (the slot number,
    which keeps duplicates detectable). A slot that stays incomplete (a neighbour packet was
    lost, or a talkspurt starts off the grid) is dropped after a few slots and concealed by
    the decoder like a lost packet.
    """

    _KEEP_SLOTS = 4  # incomplete slots older than this (behind the newest) are dropped

    def __init__(self, frame: int) -> None:
        self.frame = frame
        self._full = (1 << frame) - 1
        self._ssrc: int | None = None
        self._ts_ref = 0  # an RTP timestamp ...
        self._pos_ref = 0  # ... and its position on our grid (timestamp units from slot 0)
        self._partial: dict[int, tuple[bytearray, int]] = {}  # slot -> (bytes, filled mask)
        self.dropped_partial = 0

    def push(
        self, payload: bytes, timestamp: int, ssrc: int, marker: bool
    ) -> list[tuple[bytes, int, int, bool]]:
        """One received payload; the complete frames as ``(payload, seq, timestamp, marker)``."""
        frame = self.frame
        if ssrc != self._ssrc or abs(_signed32(timestamp - self._ts_ref)) >= 1 << 30:
            # a new source (or a wild timestamp jump): a new grid starting at this packet
            self._ssrc = ssrc
            self._ts_ref = timestamp
            self._pos_ref = 0
            self.dropped_partial += len(self._partial)
            self._partial.clear()
        start = self._pos_ref + _signed32(timestamp - self._ts_ref)
        end = start + len(payload)
        if start > self._pos_ref:
            self._ts_ref, self._pos_ref = timestamp & 0xFFFF_FFFF, start
        out: list[tuple[bytes, int, int, bool]] = []
        first_slot = start // frame
        for slot in range(first_slot, -(-end // frame)):
            slot_start = slot * frame
            a, b = max(start, slot_start), min(end, slot_start + frame)
            if a == slot_start and b == slot_start + frame and slot not in self._partial:
                data = payload[a - start : b - start]  # the usual case: one whole frame
            else:
                buf, mask = self._partial.get(slot) or (bytearray(frame), 0)
                buf[a - slot_start : b - slot_start] = payload[a - start : b - start]
                mask |= ((1 << (b - a)) - 1) << (a - slot_start)
                if mask != self._full:
                    self._partial[slot] = (buf, mask)
                    continue
                self._partial.pop(slot, None)
                data = bytes(buf)
            slot_ts = (self._ts_ref + slot_start - self._pos_ref) & 0xFFFF_FFFF
            out.append((data, slot & 0xFFFF, slot_ts, marker and slot == first_slot))
        newest = (end - 1) // frame
        for slot in [s for s in self._partial if s < newest - self._KEEP_SLOTS]:
            del self._partial[slot]
            self.dropped_partial += 1
        return out


# ---------------------------------------------------------------------------------------------
# The pipeline
# ---------------------------------------------------------------------------------------------


class _Direction(enum.Flag):
    NONE = 0
    SEND = 1
    RECEIVE = 2


@dataclass
class _DtmfInProgress:
    packets: list[DtmfPacket]
    started: float
    next_index: int = 0


def _srtp_session(params: SRTPParameters | None) -> SrtpSession | None:
    if params is None:
        return None
    try:
        return SrtpSession(
            params.suite,
            parse_inline(params.local_key, params.suite),
            parse_inline(params.remote_key, params.suite),
        )
    except SrtpError as exc:
        raise MediaStreamError(f"cannot use the negotiated SRTP keys: {exc}") from None


class AudioPipeline:
    """Sans-IO media path of one audio m-line: see the module documentation.

    Args:
        params: the negotiated parameters.
        source: where the PCM we send comes from (None: silence).
        sink: where the PCM we receive goes (None: dropped after decoding).
        rng: randomness for SSRC, sequence numbers, RTCP intervals (RFC 3550 §5.1, §6.2).
        now: the current time (s).
        cname: our RTCP CNAME (§6.5.1).
        rtcp_config: RTCP timing.
        wall_clock_offset: ``now + offset`` = Unix time, for RTCP SR NTP timestamps.
        rtp_timeout: seconds without RTP before :class:`RtpTimedOut` (None: never).
        jitter_buffer: jitter buffer bounds; clock rate and frame length are filled in.
        ssrc_switch_after: a new SSRC replaces the current one only when the current one has
            been silent this long (otherwise the packet is a foreign one, dropped).
        simulated_loss: share (0..1) of received RTP datagrams dropped on purpose, drawn from
            ``loss_rng``: the packet loss of a bad network, for tests and ``audio-test``.
        loss_rng: the (seeded) source of the simulated loss.
        opus_bitrate: our Opus bit rate (capped by the peer's ``maxaveragebitrate``).

    Raises:
        MediaStreamError: SRTP keys that do not decode, a codec whose backend is missing.
    """

    def __init__(
        self,
        params: StreamParameters,
        *,
        source: AudioSource | None = None,
        sink: AudioSink | None = None,
        rng: random.Random,
        now: float,
        cname: str = "p2psip@localhost",
        rtcp_config: RtcpConfig | None = None,
        wall_clock_offset: float = 0.0,
        rtp_timeout: float | None = None,
        jitter_buffer: JitterBufferConfig | None = None,
        ssrc_switch_after: float = 0.5,
        simulated_loss: float = 0.0,
        loss_rng: random.Random | None = None,
        opus_bitrate: int = 32000,
    ) -> None:
        if not 0.0 <= simulated_loss < 1.0:
            raise MediaStreamError(f"simulated loss {simulated_loss} outside [0, 1)")
        self._rng = rng
        self._cname = cname
        self._rtcp_config = rtcp_config or RtcpConfig()
        self._wall_clock_offset = wall_clock_offset
        self._jitter_template = jitter_buffer or JitterBufferConfig()
        self._opus_bitrate = opus_bitrate
        self.rtp_timeout = rtp_timeout
        self.ssrc_switch_after = ssrc_switch_after
        self.simulated_loss = simulated_loss
        self._loss_rng = loss_rng or random.Random(0)
        self.source = source
        self.sink = sink
        self.counters = PipelineCounters()
        self._events: deque[MediaEvent] = deque()
        self._rtp_out: list[bytes] = []
        self._rtcp_out: list[bytes] = []
        # counters of what we sent / accepted
        self.packets_sent = 0
        self.bytes_sent = 0
        self.packets_received = 0
        self.bytes_received = 0
        self.dtmf_sent = 0
        self.dtmf_received = 0
        self._dtmf_queue: deque[tuple[str, float, int]] = deque()
        self._dtmf: _DtmfInProgress | None = None
        self._dtmf_gap_until = -math.inf
        self._closed = False
        self._params = params
        self._srtp = _srtp_session(params.srtp)
        self._sender = RtpSender(
            params.send_payload_type,
            params.codec.clock_rate,
            rng,
            samples_per_frame=params.frame_timestamp_step,
        )
        self._rtcp = self._new_rtcp(now)
        self._setup_codec(params)
        self._direction = _Direction.NONE
        self._set_direction(params, now)
        self._remote_ssrc: int | None = None
        self._source_stats: RtpReceiverStats | None = None  # the source we play
        self._last_arrival = now
        self._receive_since = now
        self._timed_out = False
        self._next_timer = self._rtcp.next_timeout()

    # -- setup ----------------------------------------------------------------------------------

    def _new_rtcp(self, now: float) -> RtcpSession:
        return RtcpSession(
            self._sender.ssrc,
            self._cname,
            self._params.codec.clock_rate,
            self._rng,
            now,
            config=self._rtcp_config,
            wall_clock_offset=self._wall_clock_offset,
        )

    def _setup_codec(self, params: StreamParameters) -> None:
        codec = params.codec
        try:
            if codec is OPUS:
                options = OpusOptions.from_fmtp(params.fmtp, bitrate=self._opus_bitrate)
                options = OpusOptions(
                    bitrate=options.bitrate,
                    fec=options.fec,
                    dtx=False,  # our media clock sends one packet per frame
                    cbr=options.cbr,
                    max_playback_rate=options.max_playback_rate,
                    frame_ms=params.ptime,
                )
                self._encoder: Encoder = codec.encoder(options=options)
            elif codec.name.casefold() == "g722":
                self._encoder = codec.encoder(frame_ms=params.ptime)
            else:
                self._encoder = codec.encoder()
            self._decoder: Decoder = codec.decoder()
        except CodecError as exc:
            raise MediaStreamError(f"cannot run {codec.rtpmap}: {exc}") from None
        self._frame_samples = params.frame_samples
        self._frame_step = params.frame_timestamp_step
        self._silence = np.zeros(self._frame_samples, dtype=np.int16)
        self._decoded_any = False
        source_rate = self.source.sample_rate if self.source is not None else codec.sample_rate
        self._source_frame = source_rate * params.ptime // 1000
        self._source_frame_exact = source_rate * params.ptime % 1000 == 0
        self._send_resampler = (
            Resampler(source_rate, codec.sample_rate) if source_rate != codec.sample_rate else None
        )
        self._send_fifo = np.zeros(0, dtype=np.int16)
        sink_rate = self.sink.sample_rate if self.sink is not None else codec.sample_rate
        self._play_resampler = (
            Resampler(codec.sample_rate, sink_rate) if sink_rate != codec.sample_rate else None
        )
        self._sink_silence = np.zeros(sink_rate * params.ptime // 1000, dtype=np.int16)
        template = self._jitter_template
        self._jitter = JitterBuffer(
            JitterBufferConfig(
                clock_rate=codec.clock_rate,
                frame_samples=self._frame_step,
                min_delay=template.min_delay,
                max_delay=template.max_delay,
                initial_delay=template.initial_delay,
                quantile=template.quantile,
                margin=template.margin,
                window=template.window,
                late_hold=template.late_hold,
                shrink_hold=template.shrink_hold,
                max_packets=template.max_packets,
                max_conceal=template.max_conceal,
                resync_threshold=template.resync_threshold,
            )
        )
        # peers may send other packet durations than ours (RFC 3551 §4.2): cut sample-based
        # payloads into our frames; other codecs' packets go to the jitter buffer as they are
        self._reframer = (
            _Reframer(self._frame_step) if codec.name.casefold() in _SAMPLE_BASED else None
        )
        te_rate = codec.clock_rate  # RFC 4733 §2.1: the rate of the audio codec
        self._dtmf_receiver = DtmfReceiver(te_rate)
        # latency parts that do not change while the codec stays
        resampler_delay = 0.0
        if self._send_resampler is not None:
            resampler_delay += self._send_resampler.delay / codec.sample_rate
        if self._play_resampler is not None:
            resampler_delay += self._play_resampler.delay / self._play_resampler.to_rate
        self._fixed_latency_ms = params.ptime + codec_delay_ms(codec) + resampler_delay * 1000

    def _set_direction(self, params: StreamParameters, now: float) -> None:
        direction = _Direction.NONE
        if params.send:
            direction |= _Direction.SEND
        if params.receive:
            direction |= _Direction.RECEIVE
        if params.receive and not self._direction & _Direction.RECEIVE:
            self._receive_since = now  # the RTP timeout counts from here
            self._timed_out = False
        self._direction = direction
        self._sending = bool(direction & _Direction.SEND)
        self._receiving = bool(direction & _Direction.RECEIVE)

    @property
    def params(self) -> StreamParameters:
        """The parameters in force."""
        return self._params

    @property
    def ssrc(self) -> int:
        """Our SSRC."""
        return self._sender.ssrc

    @property
    def remote_ssrc(self) -> int | None:
        """The SSRC of the source we play, None before the first packet."""
        return self._remote_ssrc

    @property
    def sending(self) -> bool:
        """Whether we send media (the direction allows it and we are not closed)."""
        return self._sending and not self._closed

    @property
    def receiving(self) -> bool:
        """Whether we accept and play media."""
        return self._receiving and not self._closed

    def update(self, params: StreamParameters, now: float) -> None:
        """Apply a re-negotiation (RFC 3264 §8): direction (hold), codec, payload types, keys.

        A new codec with another clock rate gets a new SSRC and RTCP session (the old one says
        BYE, RFC 3550 §6.3.7), since RTP timestamps of one SSRC use one clock.

        Raises:
            MediaStreamError: as the constructor.
        """
        old = self._params
        if params.srtp != old.srtp:
            self._srtp = _srtp_session(params.srtp)
        codec_changed = (params.codec, params.ptime, dict(params.fmtp)) != (
            old.codec,
            old.ptime,
            dict(old.fmtp),
        )
        self._params = params
        if codec_changed:
            if params.codec.clock_rate != old.codec.clock_rate:
                self._rtcp.bye(now, "codec change")
                self._flush_rtcp()
                self._sender = RtpSender(
                    params.send_payload_type,
                    params.codec.clock_rate,
                    self._rng,
                    samples_per_frame=params.frame_timestamp_step,
                )
                self._rtcp = self._new_rtcp(now)
                self._next_timer = self._rtcp.next_timeout()
            self._setup_codec(params)
            self._remote_ssrc = None
        self._sender.payload_type = params.send_payload_type
        self._sender.samples_per_frame = params.frame_timestamp_step
        self._set_direction(params, now)
        if not self._receiving:
            self._jitter = JitterBuffer(self._jitter.config)  # stale audio must not replay

    # -- sending ----------------------------------------------------------------------------------

    def send_dtmf(self, digits: str, *, duration_ms: float = 100.0, volume: int = 10) -> None:
        """Queue DTMF digits, sent one after the other as RFC 4733 events (50 ms apart).

        Raises:
            MediaStreamError: no ``telephone-event`` negotiated, or a character that is not a
                DTMF digit.
        """
        if self._params.telephone_event_send_payload_type is None:
            raise MediaStreamError("telephone-event (RFC 4733) was not negotiated")
        if not 0 < duration_ms <= 10_000:
            raise MediaStreamError(f"DTMF duration {duration_ms} ms outside (0, 10000]")
        try:
            for digit in digits:
                event_for_digit(digit)
        except DtmfError as exc:
            raise MediaStreamError(str(exc)) from None
        for digit in digits:
            self._dtmf_queue.append((digit, duration_ms, volume))

    @property
    def dtmf_pending(self) -> int:
        """Digits queued or being sent."""
        return len(self._dtmf_queue) + (self._dtmf is not None)

    def _emit_rtp(self, datagram: bytes) -> None:
        if self._srtp is not None:
            try:
                datagram = self._srtp.protect_rtp(datagram)
            except SrtpError:  # key lifetime used up: stop sending rather than reuse keystream
                return
        self._rtp_out.append(datagram)
        self.packets_sent += 1
        self.bytes_sent += len(datagram)

    def _read_frame(self) -> np.ndarray:
        source = self.source
        n = self._frame_samples
        if source is None:
            return self._silence
        if self._send_resampler is None:
            pcm = source.read(n)
            if len(pcm) < n:
                pcm = np.concatenate((pcm, self._silence[: n - len(pcm)]))
            return pcm
        fifo = self._send_fifo
        while len(fifo) < n:
            chunk = source.read(self._source_frame)
            if len(chunk) < self._source_frame:
                chunk = np.concatenate(
                    (chunk, np.zeros(self._source_frame - len(chunk), dtype=np.int16))
                )
            fifo = np.concatenate((fifo, self._send_resampler.process(chunk)))
        self._send_fifo = fifo[n:]
        return fifo[:n]

    def _send_frame(self, now: float) -> None:
        if self._dtmf is None and self._dtmf_queue and now >= self._dtmf_gap_until:
            digit, duration, volume = self._dtmf_queue.popleft()
            te_rate = self._params.codec.clock_rate
            packets = dtmf_packets(
                digit,
                self._sender.timestamp,
                duration_ms=duration,
                clock_rate=te_rate,
                interval_ms=self._params.ptime,
                volume=volume,
            )
            self._dtmf = _DtmfInProgress(packets, now)
        dtmf = self._dtmf
        if dtmf is not None:
            # RFC 4733 §2.5.1: the event replaces the audio; the media clock keeps running
            pt = self._params.telephone_event_send_payload_type
            elapsed = now - dtmf.started + 1e-6
            packets = dtmf.packets
            while dtmf.next_index < len(packets) and packets[dtmf.next_index].offset <= elapsed:
                p = packets[dtmf.next_index]
                dtmf.next_index += 1
                if pt is None:
                    continue
                packet = self._sender.extra_packet(p.payload, pt, p.timestamp, marker=p.marker)
                self._emit_rtp(packet.serialize())
            if self.source is not None:
                self._read_frame()  # keep the source in step with the clock
            self._sender.skip(self._frame_step)
            if dtmf.next_index >= len(packets):
                self._dtmf = None
                self.dtmf_sent += 1
                self._dtmf_gap_until = now + 0.05
            return
        pcm = self._read_frame()
        try:
            payload = self._encoder.encode(pcm)
        except CodecError:
            self._sender.skip(self._frame_step)
            return
        timestamp = self._sender.timestamp
        self._emit_rtp(self._sender.next_datagram(payload))
        self._rtcp.rtp_sent(timestamp, len(payload), now)

    # -- receiving --------------------------------------------------------------------------------

    def receive_datagram(self, data: bytes, now: float) -> None:
        """Take one datagram from the RTP port: RTP, or RTCP when muxed (RFC 5761 §4)."""
        if len(data) < 2 or not 128 <= data[0] <= 191:
            self.counters.not_rtp += 1
            return
        if 192 <= data[1] <= 223:
            self.receive_rtcp(data, now)
            return
        if self.simulated_loss and self._loss_rng.random() < self.simulated_loss:
            self.counters.simulated_loss += 1
            return
        if self._srtp is not None:
            try:
                data = self._srtp.unprotect_rtp(data)
            except SrtpError:
                self.counters.srtp_rejected += 1
                return
        try:
            packet = RtpPacket.parse(data)
        except RtpError:
            self.counters.malformed += 1
            return
        payload = packet.payload
        if len(payload) > MAX_PAYLOAD or not payload:
            self.counters.malformed += 1
            return
        params = self._params
        pt = packet.payload_type
        is_audio = pt == params.recv_payload_type
        if not is_audio and pt != params.telephone_event_recv_payload_type:
            self.counters.unknown_payload_type += 1
            return
        ssrc = packet.ssrc
        if ssrc != self._remote_ssrc:
            if ssrc == self._sender.ssrc:
                self.counters.foreign_ssrc += 1  # our own packets looped back
                return
            if self._remote_ssrc is not None and now - self._last_arrival < self.ssrc_switch_after:
                self.counters.foreign_ssrc += 1
                return
            self._remote_ssrc = ssrc  # first source, or the old one went silent
            # our own A.1/A.8 state of the source we play: it outlives the RTCP membership
            # (a BYE removes the source there, the call's figures stay)
            self._source_stats = RtpReceiverStats(ssrc, params.codec.clock_rate)
        if not self._receiving:
            self.counters.not_receiving += 1
            return
        self._last_arrival = now
        if self._timed_out:
            self._timed_out = False
            self._events.append(MediaResumed())
        self.packets_received += 1
        self.bytes_received += len(data)
        source_stats = self._source_stats
        if is_audio:
            self._rtcp.rtp_received(packet, now)
            if source_stats is not None:
                source_stats.update(packet.sequence_number, packet.timestamp, now)
            reframer = self._reframer
            if reframer is None:
                self._jitter.put(
                    payload,
                    packet.sequence_number,
                    packet.timestamp,
                    now,
                    marker=packet.marker,
                    ssrc=ssrc,
                )
            else:
                for data, seq, timestamp, marker in reframer.push(
                    payload, packet.timestamp, ssrc, packet.marker
                ):
                    self._jitter.put(data, seq, timestamp, now, marker=marker, ssrc=ssrc)
        else:
            for digit in self._dtmf_receiver.receive(payload, packet.timestamp, now):
                self._digit(digit.digit, digit.duration_ms, digit.ended)
            if len(payload) >= 4:
                # RFC 4733 §2.5.1.2: every packet of an event carries its start time; for the
                # jitter of A.8 use the media time it stands for (start + duration - a frame)
                duration = payload[2] << 8 | payload[3]
                media_time = packet.timestamp + max(0, duration - self._frame_step)
                packet.timestamp = media_time & 0xFFFFFFFF
            self._rtcp.rtp_received(packet, now)
            if source_stats is not None:
                source_stats.update(packet.sequence_number, packet.timestamp, now)

    def _digit(self, digit: str, duration_ms: float, ended: bool) -> None:
        self.dtmf_received += 1
        self._events.append(DtmfReceived(digit, duration_ms, ended))

    def receive_rtcp(self, data: bytes, now: float) -> None:
        """Take one (S)RTCP datagram (from the RTCP port, or demultiplexed)."""
        if len(data) < 2 or not 128 <= data[0] <= 191:
            # RFC 7983 §7: STUN (0-3), DTLS (20-63)... on the RTCP port too - e.g. linphone's
            # STUN keep-alives to a separate RTCP port: not RTCP, so neither an SRTCP
            # failure nor malformed RTCP
            self.counters.not_rtp += 1
            return
        if self._srtp is not None:
            try:
                data = self._srtp.unprotect_rtcp(data)
            except SrtpError:
                self.counters.srtp_rejected += 1
                return
        dropped = self._rtcp.statistics().rtcp_dropped  # RTCP is rare: a snapshot is cheap
        self._rtcp.receive_datagram(data, now)
        if self._rtcp.statistics().rtcp_dropped != dropped:
            self.counters.rtcp_malformed += 1
        self._rtcp_events(now)

    def _rtcp_events(self, now: float) -> None:
        rtcp = self._rtcp
        while (event := rtcp.next_event()) is not None:
            if isinstance(event, ByeReceived) and event.ssrc == self._remote_ssrc:
                self._events.append(RemoteByeReceived(event.reason))
            elif isinstance(event, SsrcCollision):
                # RFC 3550 §8.2: a new SSRC for us, BYE for the old one
                new = self._sender.change_ssrc(self._rng)
                rtcp.change_ssrc(new, now)
        self._flush_rtcp()

    def _flush_rtcp(self) -> None:
        for datagram in self._rtcp.datagrams_to_send():
            if self._srtp is not None:
                try:
                    datagram = self._srtp.protect_rtcp(datagram)
                except SrtpError:
                    continue
            self._rtcp_out.append(datagram)

    # -- the media clock --------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """One frame time: send a frame, play a frame, run the timers that are due."""
        if self._closed:
            return
        if self._sending:
            self._send_frame(now)
        elif self._dtmf_queue or self._dtmf is not None:
            self._dtmf_queue.clear()
            self._dtmf = None
            self._sender.skip(self._frame_step)
        else:
            self._sender.skip(self._frame_step)  # RFC 3550 §5.1: the clock runs on hold
        if self._receiving:
            self._play_frame(now)
            if (
                self.rtp_timeout is not None
                and not self._timed_out
                and now - max(self._last_arrival, self._receive_since) >= self.rtp_timeout
            ):
                self._timed_out = True
                silent = now - max(self._last_arrival, self._receive_since)
                self._events.append(RtpTimedOut(silent))
        elif self.sink is not None:
            self.sink.write(self._sink_silence)
        next_timer = self._next_timer
        if next_timer is not None and now >= next_timer:
            self.handle_timer(now)
        else:
            dtmf_deadline = self._dtmf_receiver.next_timeout()
            if dtmf_deadline is not None and now >= dtmf_deadline:
                self.handle_timer(now)

    def skip(self, frames: int) -> None:
        """Frames the media clock could not run (the process was stalled): the RTP timestamp
        jumps over them and the next packet starts a talkspurt (RFC 3551 §4.1)."""
        if frames > 0:
            self._sender.skip(self._frame_step * frames)

    def _play_frame(self, now: float) -> None:
        frame = self._jitter.get(now)
        kind = frame.kind
        decoder = self._decoder
        if kind is FrameKind.AUDIO:
            try:
                pcm = decoder.decode(frame.payload)  # type: ignore[arg-type]
                self._decoded_any = True
            except CodecError:
                self.counters.decode_errors += 1
                pcm = decoder.conceal(self._frame_samples) if self._decoded_any else self._silence
        elif kind is FrameKind.CONCEAL or kind is FrameKind.EXPAND:
            pcm = decoder.conceal(self._frame_samples) if self._decoded_any else self._silence
        else:
            pcm = self._silence
        sink = self.sink
        if sink is None:
            return
        if self._play_resampler is not None:
            pcm = self._play_resampler.process(pcm)
        sink.write(pcm)

    def next_timeout(self) -> float | None:
        """When :meth:`handle_timer` must run next (RTCP report, DTMF end timeout), or None.

        :meth:`tick` runs due timers itself; a caller that ticks needs no other timer.
        """
        deadlines = [t for t in (self._next_timer, self._dtmf_receiver.next_timeout()) if t]
        return min(deadlines) if deadlines else None

    def handle_timer(self, now: float) -> None:
        """Send an RTCP report when due (RFC 3550 §6.3.6); close a DTMF digit whose end
        packets were lost (RFC 4733 §2.5.2)."""
        for digit in self._dtmf_receiver.handle_timer(now):
            self._digit(digit.digit, digit.duration_ms, digit.ended)
        self._rtcp.handle_timer(now)
        self._rtcp_events(now)
        self._next_timer = self._rtcp.next_timeout()

    # -- outputs -----------------------------------------------------------------------------------

    def take_rtp(self) -> list[bytes]:
        """The (S)RTP datagrams to send since the last call."""
        out, self._rtp_out = self._rtp_out, []
        return out

    def take_rtcp(self) -> list[bytes]:
        """The (S)RTCP datagrams to send since the last call."""
        out, self._rtcp_out = self._rtcp_out, []
        return out

    @property
    def has_output(self) -> bool:
        """Whether :meth:`take_rtp` or :meth:`take_rtcp` has something."""
        return bool(self._rtp_out or self._rtcp_out)

    @property
    def has_events(self) -> bool:
        """Whether :meth:`next_event` has something."""
        return bool(self._events)

    def next_event(self) -> MediaEvent | None:
        """The next pending event, or None."""
        return self._events.popleft() if self._events else None

    def add_event(self, event: MediaEvent) -> None:
        """Queue an event raised by the adapter (e.g. :class:`IceConsentLost`)."""
        self._events.append(event)

    def close(self, now: float, reason: str | None = None) -> None:
        """Stop: queue the RTCP BYE (RFC 3550 §6.3.7); later ticks do nothing."""
        if self._closed:
            return
        self._rtcp.bye(now, reason)
        self._flush_rtcp()
        self._closed = True

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    # -- statistics -----------------------------------------------------------------------------

    def statistics(self) -> PipelineStatistics:
        """A snapshot of the statistics."""
        rtcp = self._rtcp.statistics()
        jb = self._jitter.statistics()
        source = self._source_stats
        lost = max(0, source.lost) if source is not None else 0
        expected = source.expected if source is not None else 0
        rtt = rtcp.rtt_ms
        latency = self._fixed_latency_ms + jb.current_delay_ms + (rtt / 2 if rtt else 0.0)
        srtp = self._params.srtp
        return PipelineStatistics(
            codec=self._params.codec.rtpmap,
            srtp=self._srtp is not None,
            srtp_suite=srtp.suite if srtp is not None else None,
            sending=self.sending,
            receiving=self.receiving,
            packets_sent=self.packets_sent,
            bytes_sent=self.bytes_sent,
            packets_received=self.packets_received,
            bytes_received=self.bytes_received,
            packets_lost=lost,
            loss_percent=100.0 * lost / expected if expected > 0 else 0.0,
            jitter_ms=source.jitter_ms if source is not None else 0.0,
            rtt_ms=rtt,
            remote_loss_percent=(
                None if rtcp.remote_fraction_lost is None else 100.0 * rtcp.remote_fraction_lost
            ),
            remote_jitter_ms=rtcp.remote_jitter_ms,
            concealed_frames=jb.concealed,
            expanded_frames=jb.expanded,
            late_packets=jb.late,
            jitter_buffer_delay_ms=max(0.0, jb.current_delay_ms),
            jitter_buffer_target_ms=jb.target_delay_ms,
            latency_ms=max(0.0, latency),
            dtmf_sent=self.dtmf_sent,
            dtmf_received=self.dtmf_received,
            rtcp_sent=rtcp.rtcp_sent,
            rtcp_received=rtcp.rtcp_received,
            dropped=PipelineCounters(**vars(self.counters)),
        )
