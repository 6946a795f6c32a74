"""Audio codecs, packet-loss concealment and resampling for the media engine.

Sans-IO: PCM and payload bytes in, PCM and payload bytes out, no clock, no sockets. Conventions
shared with the other media modules: a PCM frame is a 1-D ``numpy.int16`` array, mono, at the
codec's *audio sample rate* (:attr:`Codec.sample_rate`); a frame is normally 20 ms.

The pieces:

* :class:`Codec` - what SDP says about a codec (encoding name, RTP clock rate, channels, payload
  type) plus the audio sample rate its PCM uses, and factories for its :class:`Encoder` and
  :class:`Decoder`. The two rates differ for G.722: RTP clock 8000, audio 16000 (RFC 3551 §4.5.2).
* :data:`PCMU` / :data:`PCMA` - G.711 mu-law and A-law, our own implementation from the
  segment/quantisation rules of ITU-T G.711 §2-3 (Tables 1a/1b, 2a/2b), as numpy lookup tables,
  bit-exact against the ITU-T G.191 STL reference vectors.
* :data:`G722` and :data:`OPUS` - through PyAV (``av``, FFmpeg's ``g722`` and ``libopus``),
  imported lazily: importing this module never imports ``av``; :class:`CodecUnavailableError`
  when it is missing.
* :class:`PitchConcealer` - packet-loss concealment in the spirit of ITU-T G.711 Appendix I
  (repeat the last pitch period(s), fade out over long bursts, cross-fade on recovery); used by
  the G.711 and G.722 decoders. The Opus decoder uses libopus' own PLC instead.
* :class:`Resampler` / :func:`resample` - a streaming polyphase windowed-sinc resampler for any
  rational ratio (8/16/44.1/48 kHz), so any codec can feed any device rate.
* A registry keyed by SDP encoding name (case-insensitive) and clock rate:
  :func:`find_codec`, :func:`register_codec`, :func:`registered_codecs`,
  :func:`codec_for_payload_type`.
"""

from __future__ import annotations

import abc
import importlib
import importlib.util
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from p2psip.errors import P2PSIPError

if TYPE_CHECKING:  # pragma: no cover
    import numpy.typing as npt

    PCM = npt.NDArray[np.int16]
else:
    PCM = np.ndarray

__all__ = [
    "G722",
    "OPUS",
    "PCMA",
    "PCMU",
    "Codec",
    "CodecError",
    "CodecUnavailableError",
    "Decoder",
    "Encoder",
    "G711Decoder",
    "G711Encoder",
    "G722Decoder",
    "G722Encoder",
    "OpusDecoder",
    "OpusEncoder",
    "OpusOptions",
    "PitchConcealer",
    "Resampler",
    "UnknownCodecError",
    "alaw_decode",
    "alaw_encode",
    "codec_for_payload_type",
    "ensure_pcm",
    "find_codec",
    "opus_packet_samples",
    "register_codec",
    "registered_codecs",
    "resample",
    "ulaw_decode",
    "ulaw_encode",
]


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


class CodecError(P2PSIPError):
    """Base class of codec errors: bad PCM input, a malformed payload, a bad option."""


class UnknownCodecError(CodecError):
    """No registered codec has this SDP encoding name, clock rate and channel count."""


class CodecUnavailableError(CodecError):
    """The codec is known but its backend (PyAV for G.722 and Opus) is not installed."""


def ensure_pcm(pcm: Any, what: str = "PCM") -> PCM:
    """Check that ``pcm`` is a PCM frame of our convention (1-D ``numpy.int16``).

    Args:
        pcm: the value to check.
        what: a name for the error message.

    Returns:
        ``pcm`` itself (C-contiguous; a non-contiguous view is copied).

    Raises:
        CodecError: not a numpy array, not int16, or not one-dimensional.
    """
    if not isinstance(pcm, np.ndarray):
        raise CodecError(f"{what} must be a numpy int16 array, not {type(pcm).__name__}")
    if pcm.dtype != np.int16:
        raise CodecError(f"{what} must have dtype int16, not {pcm.dtype}")
    if pcm.ndim != 1:
        raise CodecError(f"{what} must be 1-D (mono), got shape {pcm.shape}")
    return np.ascontiguousarray(pcm)


def _to_int16(samples: np.ndarray) -> PCM:
    """Round and saturate floating-point samples (int16 scale) to int16."""
    return np.clip(np.rint(samples), -32768, 32767).astype(np.int16)


# ---------------------------------------------------------------------------------------------
# Codec description and the encoder/decoder interface
# ---------------------------------------------------------------------------------------------


class Encoder(abc.ABC):
    """Turns PCM frames into RTP payloads. One instance per outgoing stream (it keeps state)."""

    codec: Codec

    @abc.abstractmethod
    def encode(self, pcm: PCM) -> bytes:
        """Encode one frame.

        Args:
            pcm: 1-D int16 mono samples at :attr:`Codec.sample_rate`.

        Returns:
            The RTP payload (``b""`` when the codec has nothing to send for this frame).

        Raises:
            CodecError: the frame has the wrong type or a length the codec cannot take.
        """


class Decoder(abc.ABC):
    """Turns RTP payloads into PCM frames and conceals lost frames. One per incoming stream."""

    codec: Codec

    @abc.abstractmethod
    def decode(self, payload: bytes) -> PCM:
        """Decode one RTP payload.

        Returns:
            1-D int16 mono samples at :attr:`Codec.sample_rate`.

        Raises:
            CodecError: the payload is malformed (the decoder stays usable).
        """

    @abc.abstractmethod
    def conceal(self, samples: int | None = None) -> PCM:
        """Produce PCM for one missing frame (packet-loss concealment).

        Call once per lost frame, in order, between :meth:`decode` calls.

        Args:
            samples: how many samples to produce; default: the length of the last decoded
                frame (or one frame of :attr:`Codec.frame_ms` if nothing was decoded yet).

        Returns:
            1-D int16 mono samples at :attr:`Codec.sample_rate`.
        """


EncoderFactory = Callable[..., Encoder]
DecoderFactory = Callable[..., Decoder]


@dataclass(frozen=True)
class Codec:
    """An audio codec as SDP names it, and how to make its encoder and decoder.

    Attributes:
        name: the SDP encoding name as usually written (``"PCMU"``, ``"G722"``, ``"opus"``);
            lookups ignore case (RFC 4566 §6, ``a=rtpmap``).
        clock_rate: the RTP timestamp clock rate written in ``a=rtpmap``.
        sample_rate: the rate of the PCM frames the encoder takes and the decoder returns.
        channels: the channel count written in ``a=rtpmap`` (1 is omitted there; Opus is always
            2, RFC 7587 §7). The PCM frames are mono regardless.
        payload_type: the static payload type of RFC 3551 §6, or a conventional dynamic one.
        static: whether :attr:`payload_type` is a static assignment (RFC 3551 Table 4).
        frame_ms: the default frame duration.
    """

    name: str
    clock_rate: int
    sample_rate: int
    channels: int
    payload_type: int
    static: bool
    frame_ms: int = 20
    encoder_factory: EncoderFactory = field(repr=False, compare=False, default=None)  # type: ignore[assignment]
    decoder_factory: DecoderFactory = field(repr=False, compare=False, default=None)  # type: ignore[assignment]
    needs: str | None = field(default=None, compare=False)

    @property
    def frame_samples(self) -> int:
        """PCM samples in one default frame (160 for PCMU, 320 for G.722, 960 for Opus)."""
        return self.sample_rate * self.frame_ms // 1000

    def rtp_timestamp_step(self, samples: int) -> int:
        """RTP timestamp increase for ``samples`` PCM samples (RFC 3551 §4.5.2 for G.722)."""
        return samples * self.clock_rate // self.sample_rate

    @property
    def available(self) -> bool:
        """Whether the backend this codec needs can be imported (checked without importing)."""
        if self.needs is None:
            return True
        return importlib.util.find_spec(self.needs) is not None

    def encoder(self, **options: Any) -> Encoder:
        """Create an encoder (keyword options are codec-specific, e.g. ``OpusOptions``)."""
        return self.encoder_factory(self, **options)

    def decoder(self, **options: Any) -> Decoder:
        """Create a decoder."""
        return self.decoder_factory(self, **options)

    @property
    def rtpmap(self) -> str:
        """The ``a=rtpmap`` encoding part: ``PCMU/8000``, ``G722/8000``, ``opus/48000/2``."""
        if self.channels == 1:
            return f"{self.name}/{self.clock_rate}"
        return f"{self.name}/{self.clock_rate}/{self.channels}"


# ---------------------------------------------------------------------------------------------
# Packet-loss concealment (G.711 Appendix I in spirit; our own simpler version)
# ---------------------------------------------------------------------------------------------


class PitchConcealer:
    """Pitch-repetition concealment of missing frames, with fade-out and recovery cross-fade.

    Follows the outline of ITU-T G.711 Appendix I: on the first missing frame the pitch period
    is estimated from the history (normalised autocorrelation, 5-15 ms lags, §I.2.2) and the last
    period is repeated; after 10 ms of loss two and then three periods are cycled to avoid a
    buzz (§I.2.4); from 10 ms on the output is attenuated by 20 % per 10 ms, so it is silent
    after 60 ms (§I.2.5); the first good frame after a loss is cross-faded with the continued
    concealment over 4 ms plus 4 ms per further 10 ms of loss, at most 10 ms (§I.2.7). Unlike
    Appendix I, the output is not delayed (no look-ahead overlap at the start of a loss).

    Use :meth:`good` on each decoded frame (it returns the frame, cross-faded if needed) and
    :meth:`conceal` for each missing one.
    """

    def __init__(self, sample_rate: int) -> None:
        """Create a concealer for PCM at ``sample_rate``."""
        if sample_rate <= 0:
            raise CodecError(f"bad sample rate {sample_rate}")
        self.sample_rate = sample_rate
        self._min_lag = max(2, sample_rate // 200)  # 5 ms
        self._max_lag = max(self._min_lag + 1, sample_rate * 15 // 1000)  # 15 ms
        self._window = self._max_lag
        self._hist_len = 3 * self._max_lag + self._window
        self._hist = np.zeros(self._hist_len, dtype=np.float64)
        self._ms10 = sample_rate // 100
        self._lost = 0  # samples concealed in the current burst
        self._period = 0
        self._buffer = np.zeros(0, dtype=np.float64)

    @property
    def concealing(self) -> bool:
        """Whether a loss burst is in progress (the next :meth:`good` frame will cross-fade)."""
        return self._lost > 0

    def _push_history(self, samples: np.ndarray) -> None:
        if len(samples) >= self._hist_len:
            self._hist = samples[-self._hist_len :].astype(np.float64)
        else:
            self._hist = np.concatenate((self._hist[len(samples) :], samples))

    def _estimate_period(self) -> int:
        """Pitch period in samples maximising the normalised autocorrelation (§I.2.2)."""
        lags = np.arange(self._min_lag, self._max_lag + 1)
        w = self._window
        target = self._hist[-w:]
        # candidate segments ending `lag` samples before the end of the history
        starts = self._hist_len - w - lags
        windows = np.lib.stride_tricks.sliding_window_view(self._hist, w)[starts]
        dots = windows @ target
        energy = np.einsum("ij,ij->i", windows, windows)
        score = dots / np.sqrt(np.maximum(energy, 1e-9))
        return int(lags[int(np.argmax(score))])

    def _sequence(self, periods: int, index: np.ndarray) -> np.ndarray:
        span = periods * self._period
        return self._buffer[len(self._buffer) - span + (index % span)]

    def _synthesise(self, start: int, count: int) -> np.ndarray:
        """Concealment samples ``start .. start+count`` of the burst (before attenuation)."""
        idx = np.arange(start, start + count)
        p = self._period
        out = self._sequence(1, idx)
        ola = max(1, p // 4)
        for periods, switch in ((2, self._ms10), (3, 2 * self._ms10)):
            later = idx >= switch
            if not later.any():
                break
            new = self._sequence(periods, idx)
            weight = np.clip((idx - switch + 1) / (ola + 1), 0.0, 1.0)
            out = np.where(later, (1.0 - weight) * out + weight * new, out)
        gain = np.clip(1.0 - 0.2 * (idx - self._ms10) / self._ms10, 0.0, 1.0)
        return out * gain

    def conceal(self, samples: int) -> PCM:
        """Produce ``samples`` samples for a missing stretch of signal."""
        if samples < 0:
            raise CodecError(f"cannot conceal {samples} samples")
        if self._lost == 0:
            if not np.any(self._hist):
                self._period = 0
            else:
                self._period = self._estimate_period()
                self._buffer = self._hist[-3 * self._period :].copy()
        if self._period == 0:
            out = np.zeros(samples, dtype=np.float64)
        else:
            out = self._synthesise(self._lost, samples)
        self._lost += samples
        self._push_history(out)
        return _to_int16(out)

    def good(self, pcm: PCM) -> PCM:
        """Record a correctly received frame; after a loss, return it cross-faded (§I.2.7)."""
        if self._lost and self._period and len(pcm):
            extra_10ms = max(0, (self._lost - 1) // self._ms10)
            ola = min(len(pcm), self.sample_rate * (4 + 4 * extra_10ms) // 1000, self._ms10)
            tail = self._synthesise(self._lost, ola)
            weight = np.arange(1, ola + 1) / (ola + 1)
            mixed = pcm.astype(np.float64)
            mixed[:ola] = (1.0 - weight) * tail + weight * mixed[:ola]
            pcm = _to_int16(mixed)
        self._lost = 0
        self._push_history(pcm.astype(np.float64))
        return pcm


class _ConcealingDecoder(Decoder):
    """A decoder whose concealment is a :class:`PitchConcealer` on its own output."""

    def __init__(self, codec: Codec) -> None:
        self.codec = codec
        self._concealer = PitchConcealer(codec.sample_rate)
        self._last_len = codec.frame_samples

    @abc.abstractmethod
    def _decode(self, payload: bytes) -> PCM: ...

    def decode(self, payload: bytes) -> PCM:
        pcm = self._decode(bytes(payload))
        if len(pcm):
            self._last_len = len(pcm)
        return self._concealer.good(pcm)

    def conceal(self, samples: int | None = None) -> PCM:
        return self._concealer.conceal(self._last_len if samples is None else samples)


# ---------------------------------------------------------------------------------------------
# G.711 (ITU-T G.711 §2-3): mu-law and A-law from the segment rules, as lookup tables
# ---------------------------------------------------------------------------------------------
# The tables are indexed by the 16-bit two's-complement sample read as unsigned (0..65535).
# Like the ITU-T G.191 STL reference, a 16-bit sample is reduced to the 14-bit (mu-law) or
# 13-bit (A-law) input of G.711 by an arithmetic shift, and the magnitude of a negative value
# is taken as its one's complement (-x - 1), which is what two's-complement truncation gives.


def _linear_inputs() -> np.ndarray:
    return np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.int16).astype(np.int64)


def _build_ulaw_tables() -> tuple[np.ndarray, np.ndarray]:
    x = _linear_inputs()
    positive = x >= 0
    magnitude = np.where(positive, x, -x - 1) >> 2  # 14-bit magnitude
    # G.711 Table 2a: the biased magnitude (|x| + 33) lies in [32 << s, 64 << s) for segment s
    biased = np.minimum(magnitude + 33, 0x1FFF)
    segment = np.floor(np.log2(biased)).astype(np.int64) - 5
    mantissa = (biased >> (segment + 1)) & 0x0F
    # all bits inverted on the line; the sign bit is 1 for positive values (§2.3, Table 2a)
    code = (0x7F ^ ((segment << 4) | mantissa)) | np.where(positive, 0x80, 0)
    encode = code.astype(np.uint8)

    codes = np.arange(256, dtype=np.int64)
    inverted = codes ^ 0xFF
    seg = (inverted >> 4) & 0x07
    man = inverted & 0x0F
    # decision value midpoint: ((2m + 33) << s) - 33 in 14-bit units, times 4 for 16 bits
    value = ((2 * man + 33) << (seg + 2)) - 132
    decode = np.where(inverted & 0x80, -value, value).astype(np.int16)
    return encode, decode


def _build_alaw_tables() -> tuple[np.ndarray, np.ndarray]:
    x = _linear_inputs()
    positive = x >= 0
    magnitude = np.where(positive, x, -x - 1) >> 3  # 13-bit magnitude, 0..4095
    # G.711 Table 1a: segment 0 and 1 share the step 2; segment s >= 1 covers [16 << s, 32 << s)
    segment = np.where(
        magnitude < 32, 0, np.floor(np.log2(np.maximum(magnitude, 1))).astype(np.int64) - 4
    )
    mantissa = np.where(segment == 0, magnitude >> 1, magnitude >> np.maximum(segment, 1)) & 0x0F
    # sign bit 1 for positive values, then the even bits inverted on the line (§3.3)
    code = (np.where(positive, 0x80, 0) | (segment << 4) | mantissa) ^ 0x55
    encode = code.astype(np.uint8)

    codes = np.arange(256, dtype=np.int64) ^ 0x55
    seg = (codes >> 4) & 0x07
    man = codes & 0x0F
    value13 = np.where(seg == 0, 2 * man + 1, (2 * man + 33) << np.maximum(seg - 1, 0))
    value = value13 << 3
    decode = np.where(codes & 0x80, value, -value).astype(np.int16)
    return encode, decode


_ULAW_ENCODE, _ULAW_DECODE = _build_ulaw_tables()
_ALAW_ENCODE, _ALAW_DECODE = _build_alaw_tables()


def ulaw_encode(pcm: PCM) -> bytes:
    """G.711 mu-law: one code octet per 16-bit sample (bit-exact with ITU-T G.191)."""
    return _ULAW_ENCODE[ensure_pcm(pcm).view(np.uint16)].tobytes()


def ulaw_decode(payload: bytes) -> PCM:
    """G.711 mu-law code octets to 16-bit linear samples."""
    return _ULAW_DECODE[np.frombuffer(payload, dtype=np.uint8)]


def alaw_encode(pcm: PCM) -> bytes:
    """G.711 A-law: one code octet (even bits inverted, as sent) per 16-bit sample."""
    return _ALAW_ENCODE[ensure_pcm(pcm).view(np.uint16)].tobytes()


def alaw_decode(payload: bytes) -> PCM:
    """G.711 A-law code octets (as received) to 16-bit linear samples."""
    return _ALAW_DECODE[np.frombuffer(payload, dtype=np.uint8)]


class G711Encoder(Encoder):
    """PCMU or PCMA encoder: any number of samples, one octet each (RFC 3551 §4.5.14)."""

    def __init__(self, codec: Codec) -> None:
        """Create the encoder for :data:`PCMU` or :data:`PCMA`."""
        self.codec = codec
        self._table = _ULAW_ENCODE if codec.name.upper() == "PCMU" else _ALAW_ENCODE

    def encode(self, pcm: PCM) -> bytes:
        """Encode ``pcm`` (any length) to as many G.711 octets."""
        return self._table[ensure_pcm(pcm).view(np.uint16)].tobytes()


class G711Decoder(_ConcealingDecoder):
    """PCMU or PCMA decoder with pitch-repetition concealment (:class:`PitchConcealer`)."""

    def __init__(self, codec: Codec) -> None:
        """Create the decoder for :data:`PCMU` or :data:`PCMA`."""
        super().__init__(codec)
        self._table = _ULAW_DECODE if codec.name.upper() == "PCMU" else _ALAW_DECODE

    def _decode(self, payload: bytes) -> PCM:
        return self._table[np.frombuffer(payload, dtype=np.uint8)]


# ---------------------------------------------------------------------------------------------
# PyAV backends (G.722, Opus), imported lazily
# ---------------------------------------------------------------------------------------------


def _import_av() -> Any:
    try:
        return importlib.import_module("av")
    except ImportError as exc:
        raise CodecUnavailableError(
            "G.722 and Opus need PyAV: pip install av (or p2psip[codecs])"
        ) from exc


def _open_context(av: Any, names: tuple[str, ...], mode: str) -> Any:
    for name in names:
        try:
            return av.CodecContext.create(name, mode)
        except (ValueError, av.error.FFmpegError):  # codec not built into this FFmpeg
            continue
    raise CodecUnavailableError(f"this PyAV/FFmpeg has none of {', '.join(names)}")


def _frame_to_mono(frame: Any) -> np.ndarray:
    """An ``av.AudioFrame`` as a 1-D int16 mono array (averaging channels)."""
    data = frame.to_ndarray()
    channels = len(frame.layout.channels)
    data = data.reshape(channels, -1) if frame.format.is_planar else data.reshape(-1, channels).T
    if data.dtype.kind == "f":
        data = data * 32768.0
    out = data[0] if channels == 1 else data.astype(np.float64).mean(axis=0)
    return out.astype(np.int16) if out.dtype == np.int16 else _to_int16(out)


class _AvEncoder(Encoder):
    """Shared code of the PyAV encoders: one open encoder context, fixed frame size."""

    def __init__(
        self,
        codec: Codec,
        names: tuple[str, ...],
        *,
        frame_ms: float,
        channels: int = 1,
        bit_rate: int | None = None,
        options: Mapping[str, str] | None = None,
    ) -> None:
        self.codec = codec
        self._av = _import_av()
        self.frame_samples = round(codec.sample_rate * frame_ms / 1000)
        ctx = _open_context(self._av, names, "w")
        ctx.sample_rate = codec.sample_rate
        ctx.layout = "stereo" if channels == 2 else "mono"
        ctx.format = "s16"
        if bit_rate is not None:
            ctx.bit_rate = bit_rate
        ctx.options = dict(options or {})
        try:
            ctx.open()
        except self._av.error.FFmpegError as exc:
            raise CodecError(f"{codec.name} encoder refused its settings: {exc}") from exc
        if ctx.frame_size and ctx.frame_size != self.frame_samples:
            raise CodecError(
                f"{codec.name} encoder wants {ctx.frame_size}-sample frames, not "
                f"{self.frame_samples}"
            )
        self._ctx = ctx
        self._channels = channels
        self._pts = 0

    def encode(self, pcm: PCM) -> bytes:
        pcm = self._prepare(pcm)
        n = self.frame_samples
        if len(pcm) == 0 or len(pcm) % n:
            raise CodecError(
                f"{self.codec.name} encodes frames of {n} samples (or multiples), got {len(pcm)}"
            )
        out = bytearray()
        av = self._av
        for start in range(0, len(pcm), n):
            chunk = pcm[start : start + n]
            if self._channels == 2:
                chunk = np.repeat(chunk, 2)
            frame = av.AudioFrame.from_ndarray(
                chunk.reshape(1, -1), format="s16", layout=self._ctx.layout.name
            )
            frame.sample_rate = self.codec.sample_rate
            frame.pts = self._pts
            self._pts += n
            for packet in self._ctx.encode(frame):
                out += bytes(packet)
        return bytes(out)

    def _prepare(self, pcm: PCM) -> PCM:
        return ensure_pcm(pcm)


class _AvDecoderMixin:
    """Shared code of the PyAV decoders."""

    codec: Codec

    def _open_decoder(self, names: tuple[str, ...]) -> None:
        self._av = _import_av()
        ctx = _open_context(self._av, names, "r")
        ctx.sample_rate = self.codec.sample_rate
        ctx.layout = "mono"
        try:
            ctx.open()
        except self._av.error.FFmpegError as exc:  # pragma: no cover - FFmpeg build issue
            raise CodecUnavailableError(
                f"cannot open the {self.codec.name} decoder: {exc}"
            ) from exc
        self._dctx = ctx

    def _av_decode(self, payload: bytes) -> PCM:
        if not payload:
            # an empty packet would put FFmpeg's decoder into draining mode for good
            raise CodecError(f"empty {self.codec.name} payload")
        try:
            frames = self._dctx.decode(self._av.Packet(payload))
        except self._av.error.FFmpegError as exc:
            raise CodecError(f"malformed {self.codec.name} payload: {exc}") from exc
        if not frames:
            return np.zeros(0, dtype=np.int16)
        return np.concatenate([_frame_to_mono(f) for f in frames])


class G722Encoder(_AvEncoder):
    """G.722 encoder (FFmpeg ``g722``): 16 kHz PCM in, 4 bits per sample out (64 kbit/s)."""

    def __init__(self, codec: Codec, *, frame_ms: int = 20) -> None:
        """Create the encoder.

        Args:
            codec: :data:`G722`.
            frame_ms: the frame duration :meth:`encode` takes (or multiples of it).
        """
        samples = codec.sample_rate * frame_ms // 1000
        if frame_ms <= 0 or samples % 2:
            raise CodecError(f"bad G.722 frame duration {frame_ms} ms")
        super().__init__(codec, ("g722",), frame_ms=frame_ms, options={"frame_size": str(samples)})


class G722Decoder(_AvDecoderMixin, _ConcealingDecoder):
    """G.722 decoder (FFmpeg ``g722``, 16 kHz output) with pitch-repetition concealment."""

    def __init__(self, codec: Codec) -> None:
        """Create the decoder for :data:`G722`."""
        _ConcealingDecoder.__init__(self, codec)
        self._open_decoder(("g722",))

    def _decode(self, payload: bytes) -> PCM:
        return self._av_decode(payload)


# --- Opus ------------------------------------------------------------------------------------

# RFC 6716 §3.1 Table 2: frame duration (48 kHz samples) per TOC configuration number
_OPUS_FRAME_SAMPLES = tuple(
    [(480, 960, 1920, 2880)[c % 4] for c in range(12)]
    + [(480, 960)[c % 2] for c in range(12, 16)]
    + [(120, 240, 480, 960)[c % 4] for c in range(16, 32)]
)
_OPUS_RATES = {8000: 4000, 12000: 6000, 16000: 8000, 24000: 12000}


def opus_packet_samples(packet: bytes) -> int:
    """Duration of an Opus packet in 48 kHz samples, from its TOC byte (RFC 6716 §3.1-3.2).

    Raises:
        CodecError: empty packet, code 3 without its frame-count byte, no frames, or more
            than 120 ms (RFC 6716 §3.2.5 requirement R5).
    """
    if not packet:
        raise CodecError("empty Opus packet (RFC 6716 §3.4 R1: at least one byte)")
    toc = packet[0]
    per_frame = _OPUS_FRAME_SAMPLES[toc >> 3]
    code = toc & 0x03
    if code == 0:
        count = 1
    elif code in (1, 2):
        count = 2
    else:
        if len(packet) < 2:
            raise CodecError("Opus code 3 packet without its frame count byte")
        count = packet[1] & 0x3F
        if count == 0:
            raise CodecError("Opus code 3 packet with zero frames (RFC 6716 §3.2.5 R5)")
    total = per_frame * count
    if total > 5760:
        raise CodecError(f"Opus packet of {total / 48:.1f} ms exceeds 120 ms (RFC 6716 R5)")
    return total


@dataclass(frozen=True)
class OpusOptions:
    """Opus encoder settings, and their mapping to/from the SDP fmtp of RFC 7587 §6.1.

    Attributes:
        stereo: encode two channels (mono input is duplicated; a ``(n, 2)`` int16 array is
            taken as real stereo). The decoder always returns mono.
        bitrate: target bit rate in bit/s, 6000..510000 (RFC 7587 §3.1.1).
        fec: in-band forward error correction (``useinbandfec``). Our decoder does not use the
            redundancy (PyAV does not expose libopus' ``decode_fec``); the peer's may.
        dtx: discontinuous transmission (``usedtx``).
        cbr: constant bit rate (``cbr``).
        packet_loss_percent: expected loss, tunes the FEC amount.
        max_playback_rate: the peer's ``maxplaybackrate``: limits the encoded bandwidth.
        frame_ms: frame duration (2.5, 5, 10, 20, 40 or 60; ``ptime``).
        application: libopus application, ``"voip"``, ``"audio"`` or ``"lowdelay"``.
    """

    stereo: bool = False
    bitrate: int = 32000
    fec: bool = False
    dtx: bool = False
    cbr: bool = False
    packet_loss_percent: int = 0
    max_playback_rate: int = 48000
    frame_ms: float = 20
    application: Literal["voip", "audio", "lowdelay"] = "voip"

    def __post_init__(self) -> None:
        if not 6000 <= self.bitrate <= 510000:
            raise CodecError(f"Opus bit rate {self.bitrate} outside 6000..510000")
        if self.frame_ms not in (2.5, 5, 10, 20, 40, 60):
            raise CodecError(f"Opus frame duration {self.frame_ms} ms is not allowed")
        if not 0 <= self.packet_loss_percent <= 100:
            raise CodecError(f"bad packet loss percentage {self.packet_loss_percent}")
        if self.application not in ("voip", "audio", "lowdelay"):
            raise CodecError(f"unknown Opus application {self.application!r}")

    @classmethod
    def from_fmtp(cls, params: Mapping[str, str], *, bitrate: int = 32000) -> OpusOptions:
        """Encoder settings honouring the *peer's* fmtp (what it prefers to receive).

        RFC 7587 §6.1: ``stereo``, ``maxaveragebitrate`` (caps ``bitrate``), ``useinbandfec``,
        ``usedtx``, ``cbr``, ``maxplaybackrate``, ``ptime``. Unknown parameters and malformed
        values are ignored (the defaults apply), as §6.1 asks receivers of unknown values to.
        """
        p = {k.strip().lower(): str(v).strip() for k, v in params.items()}

        def flag(name: str) -> bool:
            return p.get(name) == "1"

        def number(name: str, low: float, high: float) -> float | None:
            try:
                value = float(p[name])
            except (KeyError, ValueError):
                return None
            return value if low <= value <= high and math.isfinite(value) else None

        rate = bitrate
        cap = number("maxaveragebitrate", 6000, 510000)
        if cap is not None:
            rate = min(rate, int(cap))
        playback = number("maxplaybackrate", 8000, 48000)
        ptime = number("ptime", 2.5, 60)
        frame_ms: float = 20
        if ptime is not None:
            allowed = (2.5, 5, 10, 20, 40, 60)
            frame_ms = max((a for a in allowed if a <= ptime), default=2.5)
        return cls(
            stereo=flag("stereo"),
            bitrate=max(6000, rate),
            fec=flag("useinbandfec"),
            dtx=flag("usedtx"),
            cbr=flag("cbr"),
            max_playback_rate=int(playback) if playback is not None else 48000,
            frame_ms=frame_ms,
        )

    def to_fmtp(self) -> dict[str, str]:
        """The fmtp parameters describing what we want to receive with these settings."""
        fmtp = {"minptime": "10", "useinbandfec": "1" if self.fec else "0"}
        if self.stereo:
            fmtp.update({"stereo": "1", "sprop-stereo": "1"})
        if self.dtx:
            fmtp["usedtx"] = "1"
        if self.cbr:
            fmtp["cbr"] = "1"
        fmtp["maxaveragebitrate"] = str(self.bitrate)
        return fmtp

    def libopus_options(self) -> dict[str, str]:
        """These settings as FFmpeg ``libopus`` encoder options."""
        options = {
            "application": self.application,
            "frame_duration": f"{self.frame_ms:g}",
            "fec": "1" if self.fec else "0",
            "dtx": "1" if self.dtx else "0",
            "packet_loss": str(self.packet_loss_percent),
            "vbr": "off" if self.cbr else "on",
        }
        cutoff = _OPUS_RATES.get(self.max_playback_rate)
        if cutoff is None and self.max_playback_rate < 48000:
            cutoff = min(
                (v for k, v in _OPUS_RATES.items() if k >= self.max_playback_rate), default=None
            )
        if cutoff is not None:
            options["cutoff"] = str(cutoff)
        return options


class OpusEncoder(_AvEncoder):
    """Opus encoder (FFmpeg ``libopus``): 48 kHz PCM in, one Opus packet per frame out."""

    def __init__(self, codec: Codec, *, options: OpusOptions | None = None) -> None:
        """Create the encoder.

        Args:
            codec: :data:`OPUS`.
            options: bit rate, channels, FEC, DTX, frame duration (default 32 kbit/s mono,
                20 ms, application "voip").
        """
        self.options = options or OpusOptions()
        super().__init__(
            codec,
            ("libopus",),
            frame_ms=self.options.frame_ms,
            channels=2 if self.options.stereo else 1,
            bit_rate=self.options.bitrate,
            options=self.options.libopus_options(),
        )

    def _prepare(self, pcm: PCM) -> PCM:
        if (
            isinstance(pcm, np.ndarray)
            and pcm.ndim == 2
            and pcm.shape[1] == 2
            and pcm.dtype == np.int16
        ):
            if self._channels == 2:
                # real stereo: encode() repeats samples for mono input, so keep both channels
                # by encoding here directly
                return pcm
            return _to_int16(pcm.astype(np.float64).mean(axis=1))
        return ensure_pcm(pcm)

    def encode(self, pcm: PCM) -> bytes:
        """Encode one frame (or several: their packets are concatenated, so pass one frame).

        Args:
            pcm: 1-D int16 mono at 48 kHz of ``options.frame_ms``; for a stereo encoder also a
                ``(n, 2)`` int16 array.
        """
        pcm = self._prepare(pcm)
        if pcm.ndim == 2:
            return self._encode_stereo(pcm)
        if len(pcm) != self.frame_samples:
            raise CodecError(
                f"Opus encodes one frame of {self.frame_samples} samples, got {len(pcm)}"
            )
        return super().encode(pcm)

    def _encode_stereo(self, pcm: np.ndarray) -> bytes:
        n = self.frame_samples
        if len(pcm) != n:
            raise CodecError(f"Opus encodes one frame of {n} samples, got {len(pcm)}")
        av = self._av
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(pcm).reshape(1, -1), format="s16", layout="stereo"
        )
        frame.sample_rate = self.codec.sample_rate
        frame.pts = self._pts
        self._pts += n
        return b"".join(bytes(p) for p in self._ctx.encode(frame))


class OpusDecoder(_AvDecoderMixin, Decoder):
    """Opus decoder (FFmpeg ``libopus``; 48 kHz mono out, stereo streams are down-mixed).

    Concealment uses libopus' own PLC: a packet made of the last TOC byte alone carries a
    zero-length frame, which libopus conceals (RFC 6716 §3.2.1: a 0-byte frame is a loss/DTX
    frame the decoder fills in). Longer gaps use a code 3 packet with several empty frames.
    """

    def __init__(self, codec: Codec) -> None:
        """Create the decoder for :data:`OPUS`."""
        self.codec = codec
        self._open_decoder(("libopus", "opus"))
        self._toc: int | None = None
        self._last_len = codec.frame_samples

    def decode(self, payload: bytes) -> PCM:
        """Decode one Opus packet to 48 kHz mono."""
        payload = bytes(payload)
        opus_packet_samples(payload)  # validates TOC, frame count and the 120 ms limit
        pcm = self._av_decode(payload)
        self._toc = payload[0] & 0xFC
        if len(pcm):
            self._last_len = len(pcm)
        return pcm

    def conceal(self, samples: int | None = None) -> PCM:
        """Let libopus conceal ``samples`` (default: one frame as long as the last one)."""
        wanted = self._last_len if samples is None else samples
        if wanted < 0:
            raise CodecError(f"cannot conceal {wanted} samples")
        if self._toc is None or wanted == 0:
            return np.zeros(wanted, dtype=np.int16)
        per_frame = _OPUS_FRAME_SAMPLES[self._toc >> 3]
        out: list[np.ndarray] = []
        have = 0
        while have < wanted:
            count = min(-(-(wanted - have) // per_frame), 5760 // per_frame, 48)
            # RFC 6716 §3.2.5: code 3, CBR, `count` frames of (len - 2) / count = 0 bytes
            packet = bytes([self._toc | 0x03, count]) if count > 1 else bytes([self._toc])
            pcm = self._av_decode(packet)
            if not len(pcm):  # pragma: no cover - libopus always returns the frames
                break
            out.append(pcm)
            have += len(pcm)
        pcm = np.concatenate(out) if out else np.zeros(0, dtype=np.int16)
        if len(pcm) < wanted:  # pragma: no cover
            pcm = np.concatenate((pcm, np.zeros(wanted - len(pcm), dtype=np.int16)))
        return pcm[:wanted]


# ---------------------------------------------------------------------------------------------
# Resampling: streaming polyphase windowed-sinc filter for a rational ratio
# ---------------------------------------------------------------------------------------------


class Resampler:
    """Streaming sample-rate converter for 1-D int16 PCM (any rational ratio).

    Upsamples by ``L``, low-pass filters and downsamples by ``M`` (``to/from = L/M`` in lowest
    terms), computing only the needed outputs through the polyphase decomposition of a
    Kaiser-windowed sinc. The cut-off is 0.92 x the lower Nyquist frequency; the stop band is
    attenuated by about 80 dB. The output lags the input by :attr:`delay` output samples; the
    phase is continuous across calls, so 20 ms frames can be fed one by one.
    """

    def __init__(self, from_rate: int, to_rate: int, *, zero_crossings: int = 16) -> None:
        """Create a converter from ``from_rate`` to ``to_rate`` Hz."""
        if from_rate <= 0 or to_rate <= 0:
            raise CodecError(f"bad sample rates {from_rate} -> {to_rate}")
        self.from_rate = from_rate
        self.to_rate = to_rate
        g = math.gcd(from_rate, to_rate)
        self._up = up = to_rate // g
        self._down = down = from_rate // g
        self._in_pos = 0
        self._out_pos = 0
        if up == down:
            self._taps = 1
            self.delay = 0
            return
        # half length (in upsampled samples) chosen as a multiple of `down` so that the group
        # delay is a whole number of output samples
        half = math.ceil(zero_crossings * max(up, down) / down) * down
        length = 2 * half + 1
        taps = -(-length // up)
        cutoff = 0.92 * 0.5 / max(up, down)  # cycles per upsampled sample
        n = np.arange(taps * up, dtype=np.float64) - half
        h = 2 * cutoff * np.sinc(2 * cutoff * n)
        window = np.zeros_like(h)
        window[:length] = np.kaiser(length, 8.0)
        h *= window
        h *= up / h.sum()
        # phase p, tap k multiplies x[base - k]; store reversed so a window x[base-K+1..base]
        # lines up with it
        self._phases = h.reshape(taps, up).T[:, ::-1].copy()
        self._taps = taps
        self._hist = np.zeros(taps - 1, dtype=np.float64)
        self.delay = half // down

    def process(self, pcm: PCM) -> PCM:
        """Convert the next chunk; returns the output samples that are now complete."""
        pcm = ensure_pcm(pcm)
        if self._up == self._down:
            return pcm.copy()
        up, down = self._up, self._down
        total_in = self._in_pos + len(pcm)
        total_out = (total_in * up + down - 1) // down
        buf = np.concatenate((self._hist, pcm.astype(np.float64)))
        n = np.arange(self._out_pos, total_out, dtype=np.int64)
        if not len(n):
            self._hist = buf[len(buf) - (self._taps - 1) :]
            self._in_pos = total_in
            return np.zeros(0, dtype=np.int16)
        position = n * down
        base = position // up
        phase = position % up
        windows = np.lib.stride_tricks.sliding_window_view(buf, self._taps)[base - self._in_pos]
        out = np.einsum("ij,ij->i", windows, self._phases[phase])
        self._hist = buf[len(buf) - (self._taps - 1) :]
        self._in_pos = total_in
        self._out_pos = total_out
        return _to_int16(out)

    def flush(self) -> PCM:
        """Push the filter's tail out (zeros in), e.g. at end of a file."""
        if self._up == self._down:
            return np.zeros(0, dtype=np.int16)
        return self.process(np.zeros(self._taps, dtype=np.int16))


def resample(pcm: PCM, from_rate: int, to_rate: int) -> PCM:
    """Convert a whole signal, compensating the filter delay.

    Returns:
        ``round(len(pcm) * to_rate / from_rate)`` samples aligned with the input.
    """
    pcm = ensure_pcm(pcm)
    if from_rate == to_rate:
        return pcm.copy()
    r = Resampler(from_rate, to_rate)
    want = round(len(pcm) * to_rate / from_rate)
    parts = [r.process(pcm)]
    while sum(len(p) for p in parts) < want + r.delay:
        parts.append(r.flush())
    return np.concatenate(parts)[r.delay : r.delay + want]


# ---------------------------------------------------------------------------------------------
# The codecs and their registry
# ---------------------------------------------------------------------------------------------


def _opus_encoder(codec: Codec, *, options: OpusOptions | None = None) -> Encoder:
    return OpusEncoder(codec, options=options)


# RFC 3551 §6 Table 4 (static payload types) and §4.5.2 (G.722 clock 8000, audio 16000)
PCMU = Codec("PCMU", 8000, 8000, 1, 0, True, 20, G711Encoder, G711Decoder)
PCMA = Codec("PCMA", 8000, 8000, 1, 8, True, 20, G711Encoder, G711Decoder)
G722 = Codec("G722", 8000, 16000, 1, 9, True, 20, G722Encoder, G722Decoder, needs="av")
# RFC 7587 §7: always opus/48000/2 in SDP; 111 is the usual dynamic payload type
OPUS = Codec("opus", 48000, 48000, 2, 111, False, 20, _opus_encoder, OpusDecoder, needs="av")

_REGISTRY: dict[tuple[str, int, int], Codec] = {}


def register_codec(codec: Codec, *, replace: bool = False) -> None:
    """Add a codec to the registry under (name, clock rate, channels).

    Raises:
        CodecError: a codec with that key is registered and ``replace`` is false.
    """
    key = (codec.name.lower(), codec.clock_rate, codec.channels)
    if key in _REGISTRY and not replace:
        raise CodecError(f"codec {codec.rtpmap} is already registered")
    _REGISTRY[key] = codec


def find_codec(name: str, clock_rate: int, channels: int | None = None) -> Codec:
    """Look a codec up by its ``a=rtpmap`` encoding name (any case), clock rate and channels.

    Args:
        name: ``"pcmu"``, ``"PCMU"``, ``"opus"``, ...
        clock_rate: the RTP clock rate of the rtpmap (8000 for G.722).
        channels: the rtpmap's channel count; ``None`` or omitted in SDP means 1 (RFC 4566
            §6), except that Opus is always ``/2`` (RFC 7587 §7).

    Raises:
        UnknownCodecError: nothing registered under that name, rate and channel count.
    """
    key_name = name.strip().lower()
    wanted = 1 if channels is None else channels
    codec = _REGISTRY.get((key_name, clock_rate, wanted))
    if codec is None and channels is None:
        matches = [c for (n, r, _), c in _REGISTRY.items() if n == key_name and r == clock_rate]
        codec = matches[0] if len(matches) == 1 else None
    if codec is None:
        raise UnknownCodecError(f"no codec {name}/{clock_rate}/{wanted}")
    return codec


def registered_codecs() -> tuple[Codec, ...]:
    """All registered codecs, in registration order (our default preference order)."""
    return tuple(_REGISTRY.values())


def codec_for_payload_type(payload_type: int) -> Codec | None:
    """The codec with this *static* payload type (RFC 3551 §6), or ``None``."""
    for codec in _REGISTRY.values():
        if codec.static and codec.payload_type == payload_type:
            return codec
    return None


for _codec in (OPUS, G722, PCMU, PCMA):
    register_codec(_codec)
del _codec
