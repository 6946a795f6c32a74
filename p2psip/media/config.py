"""Preferences of an audio stream, importable without the media engine.

:class:`AudioStreamConfig` is plain data: a node can hold it (and the CLI can build it) without
loading numpy, PyAV, libsrtp or aioice, which :mod:`p2psip.media.aio.stream` loads at the first
call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from p2psip.media.offer_answer import SRTPMode

if TYPE_CHECKING:
    from p2psip.media.codecs import Codec

__all__ = ["CODEC_RATES", "DEFAULT_SUITES", "AudioStreamConfig", "codec_available"]

#: the SDES suites offered by default (RFC 4568 §6.2), strongest tag first
DEFAULT_SUITES = ("AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32")


@dataclass(frozen=True)
class AudioStreamConfig:
    """Our preferences for one audio stream.

    Attributes:
        codecs: in order of preference, by name or :class:`Codec`.
        srtp: SRTP with SDES keys (RFC 4568): off, optional (best effort) or mandatory.
        srtp_suites: the suites we offer, each with a fresh random key.
        ice: gather candidates and run ICE; without it, one plain UDP socket (and one for RTCP
            in case the peer does not do rtcp-mux).
        host_addresses: ICE host candidate addresses (``["127.0.0.1"]`` for loopback tests);
            None lets ``aioice`` list the machine's interfaces (it skips loopback).
        address: plain UDP: the address to bind and to put in ``c=``.
        port: plain UDP: the RTP port (0 picks one).
        stun_server / turn_server / turn_username / turn_password / relay_only: ICE servers.
        ice_timeout: seconds :meth:`AudioStream.start` waits for ICE to connect.
        gather_timeout: seconds to wait for STUN/TURN answers while gathering.
        ptime: our packetization in ms (RFC 4566 ``a=ptime``).
        dtmf: offer ``telephone-event`` (RFC 4733) at each codec's clock rate.
        rtcp_mux: offer RTP/RTCP multiplexing (RFC 5761).
        rtcp_interval: minimum RTCP report interval in s (RFC 3550 §6.2: 5 s).
        rtp_timeout: seconds without RTP before :class:`~p2psip.media.pipeline.RtpTimedOut`
            (None: never).
        jitter_min_delay / jitter_max_delay / jitter_initial_delay: jitter buffer bounds (s).
        opus_bitrate: our Opus bit rate.
        simulated_loss: share of received RTP dropped on purpose (seeded by ``loss_seed``).
        loss_seed: the seed of the simulated loss.
        cname: RTCP CNAME (default: random).
        seed: seeds SSRC, sequence numbers and RTCP timing (None: random). SRTP keys always
            come from :mod:`secrets`.
    """

    codecs: Sequence[Codec | str] = ("PCMU", "PCMA")
    srtp: SRTPMode = SRTPMode.OPTIONAL
    srtp_suites: Sequence[str] = DEFAULT_SUITES
    ice: bool = True
    host_addresses: Sequence[str] | None = None
    address: str = "127.0.0.1"
    port: int = 0
    stun_server: tuple[str, int] | None = None
    turn_server: tuple[str, int] | None = None
    turn_username: str | None = None
    turn_password: str | None = None
    relay_only: bool = False
    ice_timeout: float = 10.0
    gather_timeout: float = 5.0
    ptime: int = 20
    dtmf: bool = True
    rtcp_mux: bool = True
    rtcp_interval: float = 5.0
    rtp_timeout: float | None = 30.0
    jitter_min_delay: float = 0.02
    jitter_max_delay: float = 0.5
    jitter_initial_delay: float = 0.06
    opus_bitrate: int = 32000
    simulated_loss: float = 0.0
    loss_seed: int = 0
    cname: str | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.simulated_loss < 1.0:
            raise ValueError("simulated_loss must be in [0, 1)")
        if not 1 <= self.ptime <= 200:
            raise ValueError("ptime must be 1..200 ms")
        if self.rtcp_interval <= 0:
            raise ValueError("rtcp_interval must be positive")


#: the codecs of :mod:`p2psip.media.codecs` by lower-case name: their audio sample rate (G.722:
#: 16 kHz audio on an 8 kHz RTP clock, RFC 3551 §4.5.2; Opus: 48 kHz, RFC 7587)
CODEC_RATES = {"pcmu": 8000, "pcma": 8000, "g722": 16000, "opus": 48000}
_NEEDS_PYAV = frozenset({"g722", "opus"})


def codec_available(name: str) -> bool:
    """Whether a codec of :data:`CODEC_RATES` can run here (G.722 and Opus need PyAV), without
    importing the media engine."""
    import importlib.util

    key = name.casefold()
    if key not in CODEC_RATES:
        return False
    return key not in _NEEDS_PYAV or importlib.util.find_spec("av") is not None
