"""RTCP packets (RFC 3550 §6) and a sans-IO RTCP session for one RTP stream.

Packets: :class:`SenderReport` (§6.4.1), :class:`ReceiverReport` (§6.4.2) with
:class:`ReportBlock` s, :class:`SourceDescription` (§6.5), :class:`Bye` (§6.6), :class:`App`
(§6.7) and :class:`UnknownRtcp` for other types (RTPFB, PSFB, XR, ...). :func:`parse_rtcp` reads
a compound packet (§6.1, validity checks of Appendix A.2; ``strict=False`` also accepts
RFC 5506 reduced-size packets) and :func:`serialize_rtcp` writes one. Errors raise
:class:`RtcpError`.

:class:`RtcpSession` is the control side of one stream, driven like every core here::

    session.rtp_sent(timestamp, payload_size, now)       # for every RTP packet we send
    session.rtp_received(packet, now)                     # for every RTP packet received
    session.receive_datagram(data, now)                   # an RTCP datagram arrived
    deadline = session.next_timeout(); session.handle_timer(now)
    for datagram in session.datagrams_to_send(): ...
    while (event := session.next_event()) is not None: ...
    session.statistics(now)

It schedules reports with the randomised interval of §6.2/A.7 (optional reduced minimum, timer
reconsideration of §6.3.6), builds SR or RR + SDES CNAME, measures the round-trip time from
LSR/DLSR (§6.4.1), reads the peer's view of our loss and jitter, times out silent members
(§6.3.5) and handles BYE (§6.3.4, §6.3.7).

Wall-clock time: a sender report carries an NTP timestamp. ``now`` is the caller's monotonic
clock; the session turns it into wall time as ``now + wall_clock_offset`` (the asyncio adapter
passes ``time.time() - loop.time()``). Round-trip times only need the offset to be constant.
"""

from __future__ import annotations

import math
import random
import struct
from collections import deque
from dataclasses import dataclass
from typing import Union

from p2psip.errors import P2PSIPError
from p2psip.media.rtp import RtpPacket, RtpReceiverStats

__all__ = [
    "APP",
    "BYE",
    "NTP_UNIX_OFFSET",
    "RR",
    "SDES",
    "SDES_CNAME",
    "SR",
    "App",
    "AppReceived",
    "Bye",
    "ByeReceived",
    "ReceiverReport",
    "ReportBlock",
    "ReportReceived",
    "RtcpConfig",
    "RtcpError",
    "RtcpEvent",
    "RtcpPacket",
    "RtcpSession",
    "RtcpStatistics",
    "SdesChunk",
    "SenderReport",
    "SenderReportReceived",
    "SourceDescribed",
    "SourceDescription",
    "SourceTimedOut",
    "SsrcCollision",
    "UnknownRtcp",
    "UnknownRtcpReceived",
    "ntp_from_unix",
    "ntp_middle32",
    "parse_rtcp",
    "serialize_rtcp",
    "unix_from_ntp",
]

# §12.1 packet types
SR = 200
RR = 201
SDES = 202
BYE = 203
APP = 204

# §12.2 SDES item types
SDES_END = 0
SDES_CNAME = 1
SDES_NAME = 2
SDES_EMAIL = 3
SDES_PHONE = 4
SDES_LOC = 5
SDES_TOOL = 6
SDES_NOTE = 7
SDES_PRIV = 8

#: Seconds from the NTP epoch (1900-01-01) to the Unix epoch (1970-01-01).
NTP_UNIX_OFFSET = 2208988800

_COMMON = struct.Struct("!BBH")
_SENDER_INFO = struct.Struct("!IIIIII")  # SSRC, NTP msw, NTP lsw, RTP ts, packets, octets
_BLOCK = struct.Struct("!IIIIII")  # SSRC, fraction|lost, ext seq, jitter, LSR, DLSR
_U32 = struct.Struct("!I")


class RtcpError(P2PSIPError, ValueError):
    """An RTCP packet is malformed, fails the validity checks, or cannot be built."""


# ---------------------------------------------------------------------------------------------
# NTP time (§4)
# ---------------------------------------------------------------------------------------------


def ntp_from_unix(seconds: float) -> int:
    """64-bit NTP timestamp (§4: 32.32 fixed point since 1900) for Unix time ``seconds``."""
    whole = math.floor(seconds)
    fraction = min(int((seconds - whole) * 4294967296.0), 0xFFFFFFFF)
    return (((whole + NTP_UNIX_OFFSET) & 0xFFFFFFFF) << 32) | fraction


def unix_from_ntp(ntp: int) -> float:
    """Unix time of a 64-bit NTP timestamp (era 0: 1900-2036)."""
    return (ntp >> 32) - NTP_UNIX_OFFSET + (ntp & 0xFFFFFFFF) / 4294967296.0


def ntp_middle32(ntp: int) -> int:
    """The middle 32 bits of an NTP timestamp (16.16 seconds), as in LSR (§6.4.1)."""
    return (ntp >> 16) & 0xFFFFFFFF


# ---------------------------------------------------------------------------------------------
# Packets
# ---------------------------------------------------------------------------------------------


def _header(padding: bool, count: int, packet_type: int, body_len: int) -> bytes:
    # §6.4.1: length in 32-bit words minus one, header and padding included
    return _COMMON.pack(0x80 | (0x20 if padding else 0) | count, packet_type, body_len // 4)


def _pad_packet(packet: bytes, padding: int) -> bytes:
    """Append ``padding`` octets (a multiple of 4, last octet = count) and fix the header."""
    if padding == 0:
        return packet
    if padding % 4 or not 4 <= padding <= 252:
        raise RtcpError(f"RTCP padding {padding} must be a multiple of 4 in 4..252")
    total = len(packet) + padding
    header = _COMMON.pack(packet[0] | 0x20, packet[1], total // 4 - 1)
    return header + packet[4:] + bytes(padding - 1) + bytes((padding,))


@dataclass(frozen=True, slots=True)
class ReportBlock:
    """A reception report block (§6.4.1).

    Attributes:
        ssrc: the source reported on.
        fraction_lost: losses in the last interval in 1/256 (0..255).
        cumulative_lost: total lost, signed 24 bits (negative with duplicates).
        highest_sequence: extended highest sequence number received.
        jitter: interarrival jitter in timestamp units.
        last_sr: LSR, middle 32 bits of the NTP time of the last SR received (0 = none).
        delay_since_last_sr: DLSR, in 1/65536 s.
    """

    ssrc: int
    fraction_lost: int = 0
    cumulative_lost: int = 0
    highest_sequence: int = 0
    jitter: int = 0
    last_sr: int = 0
    delay_since_last_sr: int = 0

    def serialize(self) -> bytes:
        if not 0 <= self.fraction_lost <= 255:
            raise RtcpError(f"fraction lost {self.fraction_lost} outside 0..255")
        if not -0x800000 <= self.cumulative_lost <= 0x7FFFFF:
            raise RtcpError(f"cumulative lost {self.cumulative_lost} outside 24-bit range")
        try:
            return _BLOCK.pack(
                self.ssrc,
                (self.fraction_lost << 24) | (self.cumulative_lost & 0xFFFFFF),
                self.highest_sequence,
                self.jitter,
                self.last_sr,
                self.delay_since_last_sr,
            )
        except struct.error as exc:
            raise RtcpError(f"report block field out of range: {exc}") from None

    @classmethod
    def parse(cls, data: bytes, offset: int) -> ReportBlock:
        ssrc, word, highest, jitter, lsr, dlsr = _BLOCK.unpack_from(data, offset)
        lost = word & 0xFFFFFF
        if lost & 0x800000:
            lost -= 0x1000000
        return cls(ssrc, word >> 24, lost, highest, jitter, lsr, dlsr)


def _blocks(reports: tuple[ReportBlock, ...]) -> bytes:
    if len(reports) > 31:
        raise RtcpError(f"{len(reports)} report blocks (at most 31 per packet)")
    return b"".join(block.serialize() for block in reports)


def _check_extension(extension: bytes) -> None:
    if len(extension) % 4:
        raise RtcpError("profile-specific extension length is not a multiple of 4")


@dataclass(frozen=True, slots=True)
class SenderReport:
    """SR (§6.4.1).

    Attributes:
        ssrc: the sender.
        ntp_timestamp: 64-bit NTP wall-clock time of the report.
        rtp_timestamp: the RTP timestamp of the same instant.
        packet_count: RTP packets sent.
        octet_count: RTP payload octets sent.
        reports: reception report blocks.
        extension: profile-specific extension (multiple of 4 octets).
    """

    ssrc: int
    ntp_timestamp: int = 0
    rtp_timestamp: int = 0
    packet_count: int = 0
    octet_count: int = 0
    reports: tuple[ReportBlock, ...] = ()
    extension: bytes = b""

    def serialize(self, padding: int = 0) -> bytes:
        _check_extension(self.extension)
        try:
            info = _SENDER_INFO.pack(
                self.ssrc,
                self.ntp_timestamp >> 32,
                self.ntp_timestamp & 0xFFFFFFFF,
                self.rtp_timestamp,
                self.packet_count & 0xFFFFFFFF,
                self.octet_count & 0xFFFFFFFF,
            )
        except struct.error as exc:
            raise RtcpError(f"SR field out of range: {exc}") from None
        body = info + _blocks(self.reports) + self.extension
        return _pad_packet(_header(False, len(self.reports), SR, len(body)) + body, padding)


@dataclass(frozen=True, slots=True)
class ReceiverReport:
    """RR (§6.4.2); an empty one (no blocks) heads a compound when there is nothing to report."""

    ssrc: int
    reports: tuple[ReportBlock, ...] = ()
    extension: bytes = b""

    def serialize(self, padding: int = 0) -> bytes:
        _check_extension(self.extension)
        try:
            body = _U32.pack(self.ssrc) + _blocks(self.reports) + self.extension
        except struct.error as exc:
            raise RtcpError(f"RR SSRC out of range: {exc}") from None
        return _pad_packet(_header(False, len(self.reports), RR, len(body)) + body, padding)


@dataclass(frozen=True, slots=True)
class SdesChunk:
    """One SDES chunk (§6.5): a source and its items as ``(type, value)`` pairs.

    Values are the raw octets (UTF-8 text for types 1-7; PRIV carries a prefix, §6.5.8).
    """

    ssrc: int
    items: tuple[tuple[int, bytes], ...] = ()

    @classmethod
    def with_cname(cls, ssrc: int, cname: str) -> SdesChunk:
        """A chunk carrying only the CNAME item (§6.5.1)."""
        return cls(ssrc, ((SDES_CNAME, cname.encode("utf-8")),))

    @property
    def cname(self) -> str | None:
        """The CNAME item decoded as UTF-8 (invalid octets replaced), or None."""
        for kind, value in self.items:
            if kind == SDES_CNAME:
                return value.decode("utf-8", "replace")
        return None

    def serialize(self) -> bytes:
        parts = [_U32.pack(self.ssrc)]
        for kind, value in self.items:
            if not 1 <= kind <= 255:
                raise RtcpError(f"SDES item type {kind} outside 1..255")
            if len(value) > 255:
                raise RtcpError(f"SDES item of {len(value)} octets (at most 255)")
            parts.append(bytes((kind, len(value))) + value)
        chunk = b"".join(parts)
        # §6.5: one or more null octets end the item list and pad to a 32-bit boundary
        return chunk + bytes(4 - len(chunk) % 4)


@dataclass(frozen=True, slots=True)
class SourceDescription:
    """SDES (§6.5)."""

    chunks: tuple[SdesChunk, ...] = ()

    def serialize(self, padding: int = 0) -> bytes:
        if len(self.chunks) > 31:
            raise RtcpError(f"{len(self.chunks)} SDES chunks (at most 31)")
        try:
            body = b"".join(chunk.serialize() for chunk in self.chunks)
        except struct.error as exc:
            raise RtcpError(f"SDES SSRC out of range: {exc}") from None
        return _pad_packet(_header(False, len(self.chunks), SDES, len(body)) + body, padding)


@dataclass(frozen=True, slots=True)
class Bye:
    """BYE (§6.6): the sources leaving and an optional reason."""

    ssrcs: tuple[int, ...] = ()
    reason: str | None = None

    def serialize(self, padding: int = 0) -> bytes:
        if len(self.ssrcs) > 31:
            raise RtcpError(f"{len(self.ssrcs)} sources in one BYE (at most 31)")
        try:
            body = b"".join(_U32.pack(ssrc) for ssrc in self.ssrcs)
        except struct.error as exc:
            raise RtcpError(f"BYE SSRC out of range: {exc}") from None
        if self.reason is not None:
            text = self.reason.encode("utf-8")
            if len(text) > 255:
                raise RtcpError("BYE reason longer than 255 octets")
            reason = bytes((len(text),)) + text
            body += reason + bytes(-len(reason) % 4)
        return _pad_packet(_header(False, len(self.ssrcs), BYE, len(body)) + body, padding)


@dataclass(frozen=True, slots=True)
class App:
    """APP (§6.7).

    Attributes:
        ssrc: the sender.
        subtype: 0..31.
        name: four ASCII characters.
        data: application data, a multiple of 4 octets.
    """

    ssrc: int
    subtype: int = 0
    name: str = "    "
    data: bytes = b""

    def serialize(self, padding: int = 0) -> bytes:
        if not 0 <= self.subtype <= 31:
            raise RtcpError(f"APP subtype {self.subtype} outside 0..31")
        try:
            name = self.name.encode("ascii")
        except UnicodeEncodeError:
            raise RtcpError(f"APP name {self.name!r} is not ASCII") from None
        if len(name) != 4:
            raise RtcpError(f"APP name {self.name!r} is not 4 characters")
        if len(self.data) % 4:
            raise RtcpError("APP data length is not a multiple of 4")
        try:
            body = _U32.pack(self.ssrc) + name + self.data
        except struct.error as exc:
            raise RtcpError(f"APP SSRC out of range: {exc}") from None
        return _pad_packet(_header(False, self.subtype, APP, len(body)) + body, padding)


@dataclass(frozen=True, slots=True)
class UnknownRtcp:
    """An RTCP packet of a type not parsed here (e.g. 205 RTPFB, 206 PSFB, 207 XR)."""

    packet_type: int
    count: int = 0
    body: bytes = b""

    def serialize(self, padding: int = 0) -> bytes:
        if not 0 <= self.count <= 31 or not 0 <= self.packet_type <= 255:
            raise RtcpError("RTCP count or packet type out of range")
        if len(self.body) % 4:
            raise RtcpError("RTCP packet body length is not a multiple of 4")
        return _pad_packet(
            _header(False, self.count, self.packet_type, len(self.body)) + self.body, padding
        )


RtcpPacket = Union[SenderReport, ReceiverReport, SourceDescription, Bye, App, UnknownRtcp]  # noqa: UP007


def _parse_reports(body: bytes, offset: int, count: int, what: str) -> tuple[ReportBlock, ...]:
    if len(body) < offset + 24 * count:
        raise RtcpError(f"{what}: {count} report blocks do not fit in {len(body)} octets")
    return tuple(ReportBlock.parse(body, offset + 24 * i) for i in range(count))


def _parse_sdes(body: bytes, count: int) -> SourceDescription:
    chunks = []
    offset = 0
    size = len(body)
    for _ in range(count):
        if offset + 4 > size:
            raise RtcpError("SDES chunk truncated")
        (ssrc,) = _U32.unpack_from(body, offset)
        offset += 4
        items = []
        while True:
            if offset >= size:
                raise RtcpError("SDES item list not terminated")
            kind = body[offset]
            if kind == SDES_END:
                offset += 1
                offset += -offset % 4  # null octets up to the next 32-bit boundary
                break
            if offset + 2 > size:
                raise RtcpError("SDES item truncated")
            length = body[offset + 1]
            end = offset + 2 + length
            if end > size:
                raise RtcpError("SDES item runs past the packet")
            items.append((kind, bytes(body[offset + 2 : end])))
            offset = end
        chunks.append(SdesChunk(ssrc, tuple(items)))
    if offset > size:
        raise RtcpError("SDES chunk padding runs past the packet")
    return SourceDescription(tuple(chunks))


def _parse_bye(body: bytes, count: int) -> Bye:
    if len(body) < 4 * count:
        raise RtcpError(f"BYE: {count} sources do not fit in {len(body)} octets")
    ssrcs = struct.unpack_from(f"!{count}I", body)
    reason = None
    offset = 4 * count
    if offset < len(body):
        length = body[offset]
        if offset + 1 + length > len(body):
            raise RtcpError("BYE reason runs past the packet")
        reason = bytes(body[offset + 1 : offset + 1 + length]).decode("utf-8", "replace")
    return Bye(tuple(ssrcs), reason)


def _parse_one(packet_type: int, count: int, body: bytes) -> RtcpPacket:
    if packet_type == SR:
        if len(body) < 24:
            raise RtcpError("SR shorter than its sender information")
        ssrc, msw, lsw, rtp_ts, packets, octets = _SENDER_INFO.unpack_from(body)
        reports = _parse_reports(body, 24, count, "SR")
        extension = bytes(body[24 + 24 * count :])
        return SenderReport(ssrc, (msw << 32) | lsw, rtp_ts, packets, octets, reports, extension)
    if packet_type == RR:
        if len(body) < 4:
            raise RtcpError("RR without SSRC")
        (ssrc,) = _U32.unpack_from(body)
        reports = _parse_reports(body, 4, count, "RR")
        return ReceiverReport(ssrc, reports, bytes(body[4 + 24 * count :]))
    if packet_type == SDES:
        return _parse_sdes(body, count)
    if packet_type == BYE:
        return _parse_bye(body, count)
    if packet_type == APP:
        if len(body) < 8:
            raise RtcpError("APP shorter than SSRC and name")
        (ssrc,) = _U32.unpack_from(body)
        return App(ssrc, count, bytes(body[4:8]).decode("latin-1"), bytes(body[8:]))
    return UnknownRtcp(packet_type, count, bytes(body))


def parse_rtcp(data: bytes | bytearray | memoryview, *, strict: bool = True) -> list[RtcpPacket]:
    """Parse a compound RTCP packet (§6.1) into its packets.

    Checks (Appendix A.2): version 2 everywhere; each length within the datagram and the lengths
    adding up to the datagram size; a valid padding count. With ``strict`` (the default) also:
    the first packet is an SR or RR and only the last packet may carry padding. With
    ``strict=False`` reduced-size RTCP (RFC 5506) is accepted and padding is removed wherever it
    is.

    Raises:
        RtcpError: the datagram fails a check or a packet is malformed.
    """
    data = bytes(data)
    size = len(data)
    if size < 4:
        raise RtcpError(f"RTCP datagram too short ({size} octets)")
    packets: list[RtcpPacket] = []
    offset = 0
    while offset < size:
        if size - offset < 4:
            raise RtcpError("trailing octets after the last RTCP packet")
        b0, packet_type, words = _COMMON.unpack_from(data, offset)
        if b0 >> 6 != 2:
            raise RtcpError(f"RTCP version {b0 >> 6} is not 2")
        end = offset + 4 * (words + 1)
        if end > size:
            raise RtcpError(f"RTCP packet length {4 * (words + 1)} exceeds the datagram")
        if not packets and strict and packet_type not in (SR, RR):
            raise RtcpError(f"compound RTCP starts with packet type {packet_type}, not SR/RR")
        body_end = end
        if b0 & 0x20:
            if strict and end != size:
                raise RtcpError("RTCP padding on a packet that is not the last one")
            padding = data[end - 1]
            if padding == 0 or padding > 4 * words:
                raise RtcpError(f"RTCP padding count {padding} invalid")
            body_end = end - padding
        packets.append(_parse_one(packet_type, b0 & 0x1F, data[offset + 4 : body_end]))
        offset = end
    return packets


def serialize_rtcp(
    packets: list[RtcpPacket] | tuple[RtcpPacket, ...], *, padding: int = 0
) -> bytes:
    """Serialize a compound RTCP packet; ``padding`` octets go on the last packet (§6.4.1)."""
    if not packets:
        raise RtcpError("an RTCP compound packet needs at least one packet")
    last = len(packets) - 1
    return b"".join(
        packet.serialize(padding if index == last else 0) for index, packet in enumerate(packets)
    )


# ---------------------------------------------------------------------------------------------
# Session
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RtcpConfig:
    """RTCP timing parameters (§6.2, A.7).

    Attributes:
        session_bandwidth: session bandwidth in bit/s (e.g. from SDP ``b=AS``).
        rtcp_fraction: share of the session bandwidth for RTCP (5 %, §6.2).
        sender_fraction: share of the RTCP bandwidth for senders (25 %, §6.2).
        min_interval: fixed minimum interval, 5 s (§6.2).
        reduced_minimum: use 360 / (session bandwidth in kbit/s) when smaller (§6.2; unicast
            sessions may use it also when not sending).
        immediate_first_report: send the first report at once (§6.2: allowed for unicast when
            using the reduced minimum); otherwise after half the minimum, randomised.
        timer_reconsideration: recompute the interval when the timer fires (§6.3.6).
        header_overhead: lower-layer header octets counted in ``avg_rtcp_size`` (28: IPv4+UDP).
        member_timeout_intervals: a source silent for this many deterministic intervals
            (with the fixed minimum) is timed out (§6.3.5: M = 5).
    """

    session_bandwidth: float = 80_000.0
    rtcp_fraction: float = 0.05
    sender_fraction: float = 0.25
    min_interval: float = 5.0
    reduced_minimum: bool = False
    immediate_first_report: bool = False
    timer_reconsideration: bool = True
    header_overhead: int = 28
    member_timeout_intervals: int = 5

    @property
    def rtcp_bandwidth(self) -> float:
        """RTCP bandwidth in octets per second."""
        return self.session_bandwidth * self.rtcp_fraction / 8.0


# A.7: compensation for the timer reconsideration converging to a lower average
_COMPENSATION = math.e - 1.5


@dataclass(frozen=True)
class RtcpStatistics:
    """A snapshot of one stream's statistics.

    Attributes:
        packets_sent / octets_sent: RTP packets and payload octets we sent.
        packets_received / octets_received: RTP packets and payload octets counted from the
            remote sources (A.1: after probation; duplicates included).
        cumulative_lost: packets lost from the main remote source (A.3, may be negative).
        fraction_lost: its loss in the last report interval, 0..1.
        jitter_ms: its interarrival jitter (A.8) in ms.
        rtt_ms: last round-trip time from LSR/DLSR (§6.4.1), None before the first.
        remote_fraction_lost / remote_cumulative_lost / remote_jitter_ms: what the peer last
            reported about our stream, None before its first report block about us.
        rtcp_sent / rtcp_received / rtcp_dropped: compound RTCP packets sent, accepted and
            rejected as malformed.
    """

    packets_sent: int
    octets_sent: int
    packets_received: int
    octets_received: int
    cumulative_lost: int
    fraction_lost: float
    jitter_ms: float
    rtt_ms: float | None
    remote_fraction_lost: float | None
    remote_cumulative_lost: int | None
    remote_jitter_ms: float | None
    rtcp_sent: int
    rtcp_received: int
    rtcp_dropped: int


@dataclass(frozen=True)
class RtcpEvent:
    """Base class of the events of :class:`RtcpSession`."""


@dataclass(frozen=True)
class SenderReportReceived(RtcpEvent):
    """A remote source sent an SR.

    Attributes:
        ssrc: the sender.
        wall_time: its NTP timestamp as Unix seconds.
        rtp_timestamp: the matching RTP timestamp (for lip sync).
        packet_count / octet_count: what it claims to have sent.
    """

    ssrc: int
    wall_time: float
    rtp_timestamp: int
    packet_count: int
    octet_count: int


@dataclass(frozen=True)
class ReportReceived(RtcpEvent):
    """A remote participant reported on our stream.

    Attributes:
        reporter: the SSRC of the reporting participant.
        block: the report block about our SSRC.
        rtt_ms: round-trip time computed from it (None when LSR is 0 or the result is absurd).
    """

    reporter: int
    block: ReportBlock
    rtt_ms: float | None


@dataclass(frozen=True)
class SourceDescribed(RtcpEvent):
    """A source's CNAME was seen for the first time or changed."""

    ssrc: int
    cname: str


@dataclass(frozen=True)
class ByeReceived(RtcpEvent):
    """A remote source left (§6.6)."""

    ssrc: int
    reason: str | None


@dataclass(frozen=True)
class AppReceived(RtcpEvent):
    """An APP packet arrived (§6.7)."""

    packet: App


@dataclass(frozen=True)
class UnknownRtcpReceived(RtcpEvent):
    """An RTCP packet of another type arrived (feedback, XR...)."""

    packet: UnknownRtcp


@dataclass(frozen=True)
class SourceTimedOut(RtcpEvent):
    """A remote source sent nothing for M deterministic intervals and was removed (§6.3.5)."""

    ssrc: int


@dataclass(frozen=True)
class SsrcCollision(RtcpEvent):
    """Another participant uses our SSRC (§8.2): pick a new one with
    :meth:`RtcpSession.change_ssrc` (and :meth:`~p2psip.media.rtp.RtpSender.change_ssrc`)."""

    ssrc: int
    cname: str | None


@dataclass
class _Source:
    ssrc: int
    last_heard: float
    stats: RtpReceiverStats | None = None
    cname: str | None = None
    last_sr: int = 0  # LSR: middle 32 bits of its last SR's NTP time
    last_sr_arrival: float | None = None
    rtp_since_report: bool = False
    rtp_before_report: bool = False

    @property
    def is_sender(self) -> bool:
        return self.rtp_since_report or self.rtp_before_report


class RtcpSession:
    """Sans-IO RTCP for one RTP session (one SSRC of ours, usually one remote source).

    Args:
        ssrc: our SSRC (the :class:`~p2psip.media.rtp.RtpSender`'s).
        cname: our CNAME (§6.5.1), e.g. ``user@host``.
        clock_rate: RTP clock rate of the streams, to turn timestamps into time.
        rng: randomisation of the interval (§6.2: uniform in [0.5, 1.5]).
        now: the current time (s); the first report is scheduled from it.
        config: timing parameters.
        wall_clock_offset: added to ``now`` to get Unix time for NTP timestamps.
    """

    def __init__(
        self,
        ssrc: int,
        cname: str,
        clock_rate: int,
        rng: random.Random,
        now: float,
        *,
        config: RtcpConfig | None = None,
        wall_clock_offset: float = 0.0,
    ) -> None:
        if clock_rate <= 0:
            raise RtcpError(f"clock rate {clock_rate} must be positive")
        self.ssrc = ssrc
        self.cname = cname
        self.clock_rate = clock_rate
        self.config = config or RtcpConfig()
        self.wall_clock_offset = wall_clock_offset
        self._rng = rng
        self._sources: dict[int, _Source] = {}
        self._main_source: int | None = None
        self._events: deque[RtcpEvent] = deque()
        self._outgoing: list[bytes] = []
        # sender side
        self._packets_sent = 0
        self._octets_sent = 0
        self._last_rtp_ts: int | None = None
        self._last_rtp_time = 0.0
        self._sent_since_report = False
        self._sent_before_report = False
        # counters
        self._rtcp_sent = 0
        self._rtcp_received = 0
        self._rtcp_dropped = 0
        self._rtt: float | None = None
        self._remote_block: ReportBlock | None = None
        self._gone_packets = 0
        self._gone_octets = 0
        # §6.3.2 initialisation
        self._closed = False
        self._initial = True
        self._tp = now
        self._pmembers = 1
        self.avg_rtcp_size = float(
            len(self._build_compound(now, report=False)) + self.config.header_overhead
        )
        if self.config.immediate_first_report:
            self._tn = now
        else:
            self._tn = now + self._interval(initial=True)

    # -- membership -----------------------------------------------------------------------

    @property
    def members(self) -> int:
        """Session members: us plus every remote source not timed out or gone (§6.3)."""
        return 1 + len(self._sources)

    @property
    def senders(self) -> int:
        """Members that sent RTP in the last two report intervals (§6.3.8)."""
        count = sum(1 for source in self._sources.values() if source.is_sender)
        return count + (1 if self._we_sent else 0)

    @property
    def _we_sent(self) -> bool:
        return self._sent_since_report or self._sent_before_report

    def _source(self, ssrc: int, now: float) -> _Source:
        source = self._sources.get(ssrc)
        if source is None:
            source = self._sources[ssrc] = _Source(ssrc, now)
        source.last_heard = now
        return source

    # -- interval (§6.2, §6.3.1, A.7) -----------------------------------------------------

    def _minimum(self, initial: bool) -> float:
        minimum = self.config.min_interval
        if self.config.reduced_minimum and self.config.session_bandwidth > 0:
            minimum = min(minimum, 360.0 / (self.config.session_bandwidth / 1000.0))
        return minimum / 2 if initial else minimum

    def _deterministic_interval(self, minimum: float) -> float:
        config = self.config
        bandwidth = config.rtcp_bandwidth
        members = self.members
        senders = self.senders
        n = members
        if senders <= members * config.sender_fraction:
            if self._we_sent:
                bandwidth *= config.sender_fraction
                n = senders
            else:
                bandwidth *= 1 - config.sender_fraction
                n = members - senders
        interval = self.avg_rtcp_size * n / bandwidth if bandwidth > 0 else minimum
        return max(interval, minimum)

    def _interval(self, initial: bool = False) -> float:
        deterministic = self._deterministic_interval(self._minimum(initial))
        return deterministic * (self._rng.random() + 0.5) / _COMPENSATION

    def _timeout_interval(self) -> float:
        # §6.3.5: the fixed minimum, not the reduced one, for the participant timeout
        return self._deterministic_interval(self.config.min_interval)

    # -- sending side -----------------------------------------------------------------------

    def rtp_sent(self, timestamp: int, payload_size: int, now: float) -> None:
        """Account for one RTP packet we sent (for the SR sender information)."""
        self._packets_sent += 1
        self._octets_sent += payload_size
        self._last_rtp_ts = timestamp
        self._last_rtp_time = now
        self._sent_since_report = True

    def _wall(self, now: float) -> float:
        return now + self.wall_clock_offset

    def _report_blocks(self, now: float, consume: bool) -> tuple[ReportBlock, ...]:
        blocks = []
        for source in self._sources.values():
            stats = source.stats
            if stats is None or not stats.valid or not source.rtp_since_report:
                continue
            if len(blocks) == 31:
                break
            if consume:
                fraction, lost, highest, jitter = stats.report()
            else:
                fraction, lost, highest, jitter = 0, 0, stats.extended_max_seq & 0xFFFFFFFF, 0
            dlsr = 0
            if source.last_sr_arrival is not None:
                # clamped: a report built for a media-clock deadline may be stamped slightly
                # before the SR's arrival time when the loop runs late
                dlsr = min(max(int((now - source.last_sr_arrival) * 65536), 0), 0xFFFFFFFF)
            blocks.append(
                ReportBlock(
                    source.ssrc,
                    fraction,
                    lost,
                    highest & 0xFFFFFFFF,
                    min(max(int(jitter), 0), 0xFFFFFFFF),
                    source.last_sr & 0xFFFFFFFF,
                    dlsr,
                )
            )
        return tuple(blocks)

    def _build_compound(self, now: float, *, report: bool = True, bye: Bye | None = None) -> bytes:
        blocks = self._report_blocks(now, consume=report)
        packets: list[RtcpPacket] = []
        if self._we_sent and self._last_rtp_ts is not None:
            # §6.4.1: the RTP timestamp of the same instant as the NTP timestamp
            elapsed = round((now - self._last_rtp_time) * self.clock_rate)
            rtp_ts = (self._last_rtp_ts + elapsed) & 0xFFFFFFFF
            packets.append(
                SenderReport(
                    self.ssrc,
                    ntp_from_unix(self._wall(now)),
                    rtp_ts,
                    self._packets_sent,
                    self._octets_sent,
                    blocks,
                )
            )
        else:
            packets.append(ReceiverReport(self.ssrc, blocks))
        packets.append(SourceDescription((SdesChunk.with_cname(self.ssrc, self.cname),)))
        if bye is not None:
            packets.append(bye)
        return serialize_rtcp(packets)

    def _send_report(self, now: float, bye: Bye | None = None) -> None:
        data = self._build_compound(now, bye=bye)
        self._outgoing.append(data)
        self._rtcp_sent += 1
        self._update_avg(len(data))
        # §6.3.8: a participant is a sender if it sent RTP in the last two intervals
        self._sent_before_report = self._sent_since_report
        self._sent_since_report = False
        for source in self._sources.values():
            source.rtp_before_report = source.rtp_since_report
            source.rtp_since_report = False

    def _update_avg(self, size: int) -> None:
        # §6.3.3: avg_rtcp_size = 1/16 * packet_size + 15/16 * avg_rtcp_size
        self.avg_rtcp_size += ((size + self.config.header_overhead) - self.avg_rtcp_size) / 16.0

    # -- timer ----------------------------------------------------------------------------------

    def next_timeout(self) -> float | None:
        """When :meth:`handle_timer` must run next (absolute seconds), None once closed."""
        return None if self._closed else self._tn

    get_timer = next_timeout

    def handle_timer(self, now: float) -> None:
        """Time out silent members (§6.3.5) and send a report when due (§6.3.6, A.7)."""
        if self._closed or now < self._tn:
            return
        self._expire_members(now)
        if self.config.timer_reconsideration and not (
            self._initial and self.config.immediate_first_report
        ):
            candidate = self._tp + self._interval(self._initial)
            if candidate > now:
                self._tn = candidate  # §6.3.6: reconsidered, not yet
                return
        self._send_report(now)
        self._tp = now
        self._initial = False
        self._pmembers = self.members
        self._tn = now + self._interval()

    def _expire_members(self, now: float) -> None:
        limit = self.config.member_timeout_intervals * self._timeout_interval()
        for ssrc in [s for s, src in self._sources.items() if now - src.last_heard > limit]:
            self._remove_source(ssrc, now)
            self._events.append(SourceTimedOut(ssrc))

    def _remove_source(self, ssrc: int, now: float) -> None:
        source = self._sources.pop(ssrc, None)
        if source is None:
            return
        if source.stats is not None:  # keep the totals of sources that left
            self._gone_packets += source.stats.received
            self._gone_octets += source.stats.octets_received
        if self._main_source == ssrc:
            self._main_source = None
        members = self.members
        if members < self._pmembers and not self._closed:
            # §6.3.4 reverse reconsideration: shrink the schedule with the membership
            ratio = members / self._pmembers
            self._tn = now + ratio * (self._tn - now)
            self._tp = now - ratio * (now - self._tp)
            self._pmembers = members

    # -- receiving side --------------------------------------------------------------------

    def rtp_received(self, packet: RtpPacket, now: float) -> bool:
        """Account for one received RTP packet; False when it was not counted (probation,
        implausible sequence number, or our own SSRC looped back)."""
        if packet.ssrc == self.ssrc:
            return False
        source = self._source(packet.ssrc, now)
        if source.stats is None:
            source.stats = RtpReceiverStats(packet.ssrc, self.clock_rate)
        counted = source.stats.update(
            packet.sequence_number, packet.timestamp, now, len(packet.payload)
        )
        if counted:
            source.rtp_since_report = True
            self._main_source = packet.ssrc
        return counted

    def receive_datagram(self, data: bytes | bytearray | memoryview, now: float) -> None:
        """Process one compound RTCP datagram; a malformed one is counted and dropped."""
        try:
            packets = parse_rtcp(data, strict=False)
        except RtcpError:
            self._rtcp_dropped += 1
            return
        self._rtcp_received += 1
        self._update_avg(len(data))
        cnames = {
            chunk.ssrc: chunk.cname
            for packet in packets
            if isinstance(packet, SourceDescription)
            for chunk in packet.chunks
        }
        own_cname = cnames.get(self.ssrc)
        if self.ssrc in cnames and own_cname == self.cname:
            return  # our own packet looped back
        for packet in packets:
            self._handle_packet(packet, cnames, now)

    def _handle_packet(self, packet: RtcpPacket, cnames: dict[int, str | None], now: float) -> None:
        if isinstance(packet, (SenderReport, ReceiverReport)):
            if packet.ssrc == self.ssrc:
                self._events.append(SsrcCollision(self.ssrc, cnames.get(self.ssrc)))
                return
            source = self._source(packet.ssrc, now)
            if isinstance(packet, SenderReport):
                source.last_sr = ntp_middle32(packet.ntp_timestamp)
                source.last_sr_arrival = now
                self._events.append(
                    SenderReportReceived(
                        packet.ssrc,
                        unix_from_ntp(packet.ntp_timestamp),
                        packet.rtp_timestamp,
                        packet.packet_count,
                        packet.octet_count,
                    )
                )
            for block in packet.reports:
                if block.ssrc == self.ssrc:
                    self._handle_block(packet.ssrc, block, now)
        elif isinstance(packet, SourceDescription):
            for chunk in packet.chunks:
                cname = chunk.cname
                if chunk.ssrc == self.ssrc or cname is None:
                    continue
                source = self._source(chunk.ssrc, now)
                if source.cname != cname:
                    source.cname = cname
                    self._events.append(SourceDescribed(chunk.ssrc, cname))
        elif isinstance(packet, Bye):
            for ssrc in packet.ssrcs:
                if ssrc == self.ssrc:
                    continue
                # §6.3.4: the member is removed; a BYE from an unknown source is still reported
                self._remove_source(ssrc, now)
                self._events.append(ByeReceived(ssrc, packet.reason))
        elif isinstance(packet, App):
            self._source(packet.ssrc, now)
            self._events.append(AppReceived(packet))
        else:
            self._events.append(UnknownRtcpReceived(packet))

    def _handle_block(self, reporter: int, block: ReportBlock, now: float) -> None:
        rtt_ms = None
        if block.last_sr:
            # §6.4.1: round trip = A - LSR - DLSR, all in 16.16 seconds
            arrival = ntp_middle32(ntp_from_unix(self._wall(now)))
            units = (arrival - block.last_sr - block.delay_since_last_sr) & 0xFFFFFFFF
            if units < 0x80000000:  # a negative result means a broken peer clock
                rtt_ms = units * 1000.0 / 65536.0
                self._rtt = rtt_ms
        self._remote_block = block
        self._events.append(ReportReceived(reporter, block, rtt_ms))

    # -- outputs ----------------------------------------------------------------------------

    def datagrams_to_send(self) -> list[bytes]:
        """Compound RTCP packets built since the last call."""
        out, self._outgoing = self._outgoing, []
        return out

    def next_event(self) -> RtcpEvent | None:
        """The next pending event, or None."""
        return self._events.popleft() if self._events else None

    def bye(self, now: float, reason: str | None = None) -> None:
        """Leave: queue a final report with a BYE (§6.3.7: small sessions send it at once) and
        stop the timer."""
        if self._closed:
            return
        self._send_report(now, bye=Bye((self.ssrc,), reason))
        self._closed = True

    def change_ssrc(self, ssrc: int, now: float) -> None:
        """Move to a new SSRC after a collision (§8.2): BYE for the old one, counters reset."""
        self._outgoing.append(
            serialize_rtcp(
                [
                    ReceiverReport(self.ssrc),
                    SourceDescription((SdesChunk.with_cname(self.ssrc, self.cname),)),
                    Bye((self.ssrc,), "SSRC collision"),
                ]
            )
        )
        self._rtcp_sent += 1
        self.ssrc = ssrc
        self._packets_sent = 0
        self._octets_sent = 0
        self._last_rtp_ts = None
        self._sent_since_report = self._sent_before_report = False

    def statistics(self) -> RtcpStatistics:
        """Current statistics of the stream."""
        main = None
        if self._main_source is not None and self._main_source in self._sources:
            main = self._sources[self._main_source].stats
        packets = self._gone_packets + sum(
            s.stats.received for s in self._sources.values() if s.stats
        )
        octets = self._gone_octets + sum(
            s.stats.octets_received for s in self._sources.values() if s.stats
        )
        remote = self._remote_block
        return RtcpStatistics(
            packets_sent=self._packets_sent,
            octets_sent=self._octets_sent,
            packets_received=packets,
            octets_received=octets,
            cumulative_lost=main.lost if main else 0,
            fraction_lost=main.fraction_lost / 256.0 if main else 0.0,
            jitter_ms=main.jitter_ms if main else 0.0,
            rtt_ms=self._rtt,
            remote_fraction_lost=remote.fraction_lost / 256.0 if remote else None,
            remote_cumulative_lost=remote.cumulative_lost if remote else None,
            remote_jitter_ms=remote.jitter * 1000.0 / self.clock_rate if remote else None,
            rtcp_sent=self._rtcp_sent,
            rtcp_received=self._rtcp_received,
            rtcp_dropped=self._rtcp_dropped,
        )
