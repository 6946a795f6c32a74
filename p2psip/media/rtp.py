"""RTP data packets (RFC 3550 §5), sender state and per-source reception statistics, sans-IO.

* :class:`RtpPacket` parses and serializes the fixed header, CSRC list, header extension
  (§5.3.1, kept as profile + bytes) and padding. Malformed input raises :class:`RtpError`.
* :func:`classify_datagram` demultiplexes a port shared by STUN, DTLS, TURN channels, ZRTP and
  RTP/RTCP (RFC 7983 §7); :func:`is_rtcp` tells RTCP from RTP on a muxed port (RFC 5761 §4).
* :class:`RtpSender` numbers outgoing packets: random SSRC, initial sequence number and timestamp
  from an injected :class:`random.Random` (§5.1), sequence wrap, timestamp advance per frame,
  marker bit on the first packet of a talkspurt (RFC 3551 §4.1).
* :class:`RtpReceiverStats` is the per-source state of RFC 3550 Appendix A.1 (probation,
  sequence wrap, bad-sequence resync), A.3 (expected, lost, fraction lost per interval) and
  A.8 (interarrival jitter, arrival time passed in as ``now``).

Nothing here reads a clock or touches a socket: times are arguments.
"""

from __future__ import annotations

import enum
import random
import struct
from dataclasses import dataclass

from p2psip.errors import P2PSIPError

__all__ = [
    "RTP_HEADER_SIZE",
    "PacketKind",
    "RtpError",
    "RtpExtension",
    "RtpPacket",
    "RtpReceiverStats",
    "RtpSender",
    "classify_datagram",
    "is_rtcp",
]

#: Size of the fixed RTP header (§5.1).
RTP_HEADER_SIZE = 12
RTP_SEQ_MOD = 1 << 16
_TS_MOD = 1 << 32

_HEADER = struct.Struct("!BBHII")
_EXT_HEADER = struct.Struct("!HH")
_CSRC = [struct.Struct(f"!{n}I") for n in range(16)]


class RtpError(P2PSIPError, ValueError):
    """An RTP packet is malformed or a field is out of range."""


@dataclass(frozen=True, slots=True)
class RtpExtension:
    """An RTP header extension (RFC 3550 §5.3.1).

    Attributes:
        profile: the 16-bit "defined by profile" field (0xBEDE and 0x100x for RFC 8285).
        data: the extension body; its length is a multiple of 4 octets.
    """

    profile: int
    data: bytes = b""


@dataclass(slots=True)
class RtpPacket:
    """One RTP data packet (RFC 3550 §5.1).

    Attributes:
        payload_type: 0..127.
        sequence_number: 0..65535.
        timestamp: 0..2**32-1, in units of the payload's clock rate.
        ssrc: synchronization source identifier.
        payload: the payload, without padding.
        marker: the M bit (RFC 3551 §4.1: first packet of a talkspurt).
        csrc: contributing sources (at most 15).
        extension: the header extension, or None.
        padding: number of padding octets including the count octet (0 = no padding).
    """

    payload_type: int
    sequence_number: int
    timestamp: int
    ssrc: int
    payload: bytes = b""
    marker: bool = False
    csrc: tuple[int, ...] = ()
    extension: RtpExtension | None = None
    padding: int = 0

    @classmethod
    def parse(cls, data: bytes | bytearray | memoryview) -> RtpPacket:
        """Parse one RTP packet.

        Raises:
            RtpError: shorter than 12 octets, version not 2, CSRC list or extension truncated,
                padding count of zero or larger than what follows the header.
        """
        size = len(data)
        if size < RTP_HEADER_SIZE:
            raise RtpError(f"RTP packet too short ({size} octets)")
        b0, b1, seq, ts, ssrc = _HEADER.unpack_from(data)
        if b0 >> 6 != 2:
            raise RtpError(f"RTP version {b0 >> 6} is not 2")
        if b0 == 0x80:  # the common case: no padding, extension or CSRC
            return cls(b1 & 0x7F, seq, ts, ssrc, bytes(data[12:]), b1 > 0x7F)
        offset = RTP_HEADER_SIZE
        csrc: tuple[int, ...] = ()
        count = b0 & 0x0F
        if count:
            offset += 4 * count
            if size < offset:
                raise RtpError(f"RTP CSRC list truncated ({count} CSRCs, {size} octets)")
            csrc = _CSRC[count].unpack_from(data, RTP_HEADER_SIZE)
        extension = None
        if b0 & 0x10:  # §5.3.1
            if size < offset + 4:
                raise RtpError("RTP header extension truncated")
            profile, words = _EXT_HEADER.unpack_from(data, offset)
            start = offset + 4
            offset = start + 4 * words
            if size < offset:
                raise RtpError(f"RTP header extension truncated ({words} words announced)")
            extension = RtpExtension(profile, bytes(data[start:offset]))
        end = size
        padding = 0
        if b0 & 0x20:  # §5.1: the last octet counts the padding, itself included
            padding = data[-1]
            if padding == 0 or offset + padding > size:
                raise RtpError(f"RTP padding count {padding} invalid for {size} octets")
            end = size - padding
        return cls(
            b1 & 0x7F, seq, ts, ssrc, bytes(data[offset:end]), b1 > 0x7F, csrc, extension, padding
        )

    def serialize(self) -> bytes:
        """The packet on the wire.

        Raises:
            RtpError: a field is out of range, more than 15 CSRCs, an extension whose length is
                not a multiple of 4, or padding outside 0..255.
        """
        pt = self.payload_type
        if not 0 <= pt <= 127:
            raise RtpError(f"payload type {pt} outside 0..127")
        csrc = self.csrc
        extension = self.extension
        padding = self.padding
        b0 = 0x80
        if csrc:
            if len(csrc) > 15:
                raise RtpError(f"{len(csrc)} CSRCs (at most 15)")
            b0 |= len(csrc)
        if extension is not None:
            b0 |= 0x10
        if padding:
            if not 0 < padding <= 255:
                raise RtpError(f"padding {padding} outside 1..255")
            b0 |= 0x20
        try:
            b1 = pt | 0x80 if self.marker else pt
            header = _HEADER.pack(b0, b1, self.sequence_number, self.timestamp, self.ssrc)
            if b0 == 0x80:
                return header + self.payload
            parts = [header]
            if csrc:
                parts.append(_CSRC[len(csrc)].pack(*csrc))
            if extension is not None:
                if len(extension.data) % 4:
                    raise RtpError("RTP header extension length is not a multiple of 4")
                parts.append(_EXT_HEADER.pack(extension.profile, len(extension.data) // 4))
                parts.append(extension.data)
        except struct.error as exc:
            raise RtpError(f"RTP header field out of range: {exc}") from None
        parts.append(self.payload)
        if padding:
            parts.append(bytes(padding - 1) + bytes((padding,)))
        return b"".join(parts)


class PacketKind(enum.Enum):
    """What a datagram on a shared port is, by its first octet (RFC 7983 §7)."""

    STUN = "stun"
    ZRTP = "zrtp"
    DTLS = "dtls"
    TURN_CHANNEL = "turn-channel"
    RTP = "rtp"
    RTCP = "rtcp"
    UNKNOWN = "unknown"


def is_rtcp(data: bytes | bytearray | memoryview) -> bool:
    """True when an RTP/RTCP datagram is RTCP (RFC 5761 §4: second octet 192..223).

    RTCP packet types 192..223 collide only with RTP payload types 64..95 with the marker bit
    set, which RFC 5761 forbids on a muxed port.
    """
    return len(data) >= 2 and 192 <= data[1] <= 223


def classify_datagram(data: bytes | bytearray | memoryview) -> PacketKind:
    """Demultiplex a datagram received on a port shared by ICE, DTLS and RTP (RFC 7983 §7).

    First octet 0-3 STUN, 16-19 ZRTP, 20-63 DTLS, 64-79 TURN channel, 128-191 RTP or RTCP
    (then split by :func:`is_rtcp`); anything else, or an empty datagram, is UNKNOWN.
    """
    if not data:
        return PacketKind.UNKNOWN
    first = data[0]
    if 128 <= first <= 191:
        return PacketKind.RTCP if is_rtcp(data) else PacketKind.RTP
    if first <= 3:
        return PacketKind.STUN
    if 20 <= first <= 63:
        return PacketKind.DTLS
    if 16 <= first <= 19:
        return PacketKind.ZRTP
    if 64 <= first <= 79:
        return PacketKind.TURN_CHANNEL
    return PacketKind.UNKNOWN


class RtpSender:
    """Numbering of one outgoing RTP stream (RFC 3550 §5.1).

    The SSRC, first sequence number and first timestamp are random (§5.1: "SHOULD be random")
    and drawn from ``rng``, so tests can seed them. ``timestamp`` is the timestamp of the next
    media frame; each media packet advances it by its number of samples.

    Args:
        payload_type: the media payload type, 0..127.
        clock_rate: RTP clock rate in Hz (8000 for PCMU).
        rng: source of the random initial values.
        samples_per_frame: default timestamp advance per packet (default 20 ms of samples).
        ssrc: a fixed SSRC instead of a random one.
    """

    def __init__(
        self,
        payload_type: int,
        clock_rate: int,
        rng: random.Random,
        *,
        samples_per_frame: int | None = None,
        ssrc: int | None = None,
    ) -> None:
        if not 0 <= payload_type <= 127:
            raise RtpError(f"payload type {payload_type} outside 0..127")
        if clock_rate <= 0:
            raise RtpError(f"clock rate {clock_rate} must be positive")
        self.payload_type = payload_type
        self.clock_rate = clock_rate
        self.samples_per_frame = samples_per_frame or clock_rate // 50
        self.ssrc: int = rng.getrandbits(32) if ssrc is None else ssrc & 0xFFFFFFFF
        #: sequence number of the next packet
        self.sequence_number: int = rng.getrandbits(16)
        #: RTP timestamp of the next media frame
        self.timestamp: int = rng.getrandbits(32)
        self.packets_sent = 0
        self.octets_sent = 0
        self._talkspurt_start = True

    def next_packet(
        self, payload: bytes, samples: int | None = None, *, marker: bool | None = None
    ) -> RtpPacket:
        """The next media packet: current sequence number and timestamp, then advance both.

        Args:
            payload: the encoded frame(s).
            samples: timestamp advance for this packet (default ``samples_per_frame``).
            marker: force the M bit; by default it is set on the first packet of the stream and
                on the first packet after :meth:`skip` (a talkspurt start, RFC 3551 §4.1).
        """
        if marker is None:
            marker = self._talkspurt_start
        self._talkspurt_start = False
        packet = RtpPacket(
            self.payload_type, self.sequence_number, self.timestamp, self.ssrc, payload, marker
        )
        self.sequence_number = (self.sequence_number + 1) & 0xFFFF
        self.timestamp = (self.timestamp + (samples or self.samples_per_frame)) & 0xFFFFFFFF
        self.packets_sent += 1
        self.octets_sent += len(payload)
        return packet

    def next_datagram(self, payload: bytes, samples: int | None = None) -> bytes:
        """Like :meth:`next_packet` but returns the serialized packet without building one."""
        marker = self._talkspurt_start
        self._talkspurt_start = False
        data = (
            _HEADER.pack(
                0x80,
                self.payload_type | 0x80 if marker else self.payload_type,
                self.sequence_number,
                self.timestamp,
                self.ssrc,
            )
            + payload
        )
        self.sequence_number = (self.sequence_number + 1) & 0xFFFF
        self.timestamp = (self.timestamp + (samples or self.samples_per_frame)) & 0xFFFFFFFF
        self.packets_sent += 1
        self.octets_sent += len(payload)
        return data

    def skip(self, samples: int) -> None:
        """Advance the timestamp over ``samples`` not sent (silence suppression).

        The next media packet starts a talkspurt and carries the marker bit (RFC 3551 §4.1).
        """
        if samples < 0:
            raise RtpError("cannot skip a negative number of samples")
        self.timestamp = (self.timestamp + samples) & 0xFFFFFFFF
        self._talkspurt_start = True

    def extra_packet(
        self, payload: bytes, payload_type: int, timestamp: int, *, marker: bool = False
    ) -> RtpPacket:
        """A packet in this stream's sequence-number space with its own payload type and
        timestamp (e.g. RFC 4733 telephone events, §2.1: same SSRC, same sequence space).

        The media timestamp does not move.
        """
        packet = RtpPacket(
            payload_type, self.sequence_number, timestamp & 0xFFFFFFFF, self.ssrc, payload, marker
        )
        self.sequence_number = (self.sequence_number + 1) & 0xFFFF
        self.packets_sent += 1
        self.octets_sent += len(payload)
        return packet

    def change_ssrc(self, rng: random.Random) -> int:
        """Pick a new random SSRC after a collision (§8.2); counters restart (§6.4.1)."""
        old = self.ssrc
        while self.ssrc == old:
            self.ssrc = rng.getrandbits(32)
        self.packets_sent = 0
        self.octets_sent = 0
        self._talkspurt_start = True
        return self.ssrc


def _signed32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - _TS_MOD if value & 0x80000000 else value


class RtpReceiverStats:
    """Reception state of one remote source (RFC 3550 Appendix A.1, A.3, A.8).

    Feed every packet of the source to :meth:`update`; it returns False while the source is on
    probation or for a packet that breaks the sequence (which is then not counted). Call
    :meth:`report` once per RTCP report to get the report-block values of the last interval.

    Args:
        ssrc: the source.
        clock_rate: RTP clock rate of its payload, to express arrival times in timestamp units.
        min_sequential: packets in sequence before the source is valid (A.1, default 2).
        max_dropout: largest forward jump still taken as in sequence (A.1, 3000).
        max_misorder: largest backward jump taken as reordering, not a restart (A.1, 100).
    """

    def __init__(
        self,
        ssrc: int,
        clock_rate: int,
        *,
        min_sequential: int = 2,
        max_dropout: int = 3000,
        max_misorder: int = 100,
    ) -> None:
        if clock_rate <= 0:
            raise RtpError(f"clock rate {clock_rate} must be positive")
        self.ssrc = ssrc
        self.clock_rate = clock_rate
        self.min_sequential = min_sequential
        self.max_dropout = max_dropout
        self.max_misorder = max_misorder
        self.max_seq = 0
        self.cycles = 0
        self.base_seq = 0
        self.bad_seq = RTP_SEQ_MOD + 1
        #: packets still needed in sequence before the source is valid
        self.probation = min_sequential
        #: packets counted (A.1 ``received``: includes duplicates and late packets)
        self.received = 0
        self.expected_prior = 0
        self.received_prior = 0
        #: payload octets of the counted packets
        self.octets_received = 0
        #: interarrival jitter estimate J, in timestamp units (A.8)
        self.jitter = 0.0
        #: fraction lost of the last :meth:`report` interval, 0..255
        self.fraction_lost = 0
        self._last_arrival: float | None = None
        self._last_timestamp = 0
        self._initialized = False

    # -- A.1 ----------------------------------------------------------------------------------

    def _init_seq(self, seq: int) -> None:
        self.base_seq = seq
        self.max_seq = seq
        self.bad_seq = RTP_SEQ_MOD + 1  # so seq == bad_seq is false
        self.cycles = 0
        self.received = 0
        self.received_prior = 0
        self.expected_prior = 0

    def update_seq(self, seq: int) -> bool:
        """Sequence-number bookkeeping of RFC 3550 A.1; True when the packet counts."""
        if not self._initialized:
            self._initialized = True
            self._init_seq(seq)
            self.max_seq = (seq - 1) & 0xFFFF
            self.probation = self.min_sequential
            if self.probation <= 0:
                self._init_seq(seq)
                self.received = 1
                return True
        udelta = (seq - self.max_seq) & 0xFFFF
        if self.probation:
            # the source is valid once min_sequential packets arrive in sequence
            if seq == (self.max_seq + 1) & 0xFFFF:
                self.probation -= 1
                self.max_seq = seq
                if self.probation == 0:
                    self._init_seq(seq)
                    self.received += 1
                    return True
            else:
                self.probation = self.min_sequential - 1
                self.max_seq = seq
            return False
        if udelta < self.max_dropout:
            # in order, with permissible gap
            if seq < self.max_seq:
                self.cycles += RTP_SEQ_MOD  # wrapped
            self.max_seq = seq
        elif udelta <= RTP_SEQ_MOD - self.max_misorder:
            # a very large jump: resync only if the next packet confirms it
            if seq == self.bad_seq:
                self._init_seq(seq)
            else:
                self.bad_seq = (seq + 1) & 0xFFFF
                return False
        # else: duplicate or reordered packet, counted
        self.received += 1
        return True

    def update(self, seq: int, timestamp: int, now: float, payload_size: int = 0) -> bool:
        """Account for one received packet of this source.

        Args:
            seq: its sequence number.
            timestamp: its RTP timestamp.
            now: arrival time in seconds (any monotonic origin).
            payload_size: payload octets, for the octet count.

        Returns:
            True when the packet was counted (source valid and sequence plausible).
        """
        if not self.update_seq(seq):
            return False
        self.octets_received += payload_size
        # A.8: D = (Rj - Ri) - (Sj - Si), in timestamp units; J += (|D| - J) / 16
        if self._last_arrival is not None:
            d = (now - self._last_arrival) * self.clock_rate - _signed32(
                timestamp - self._last_timestamp
            )
            self.jitter += (abs(d) - self.jitter) / 16.0
        self._last_arrival = now
        self._last_timestamp = timestamp
        return True

    # -- A.3 ----------------------------------------------------------------------------------

    @property
    def valid(self) -> bool:
        """The source has left probation."""
        return self._initialized and self.probation == 0

    @property
    def extended_max_seq(self) -> int:
        """Highest sequence number received, extended with the wrap count (A.3)."""
        return self.cycles + self.max_seq

    @property
    def expected(self) -> int:
        """Packets expected since the source became valid (A.3)."""
        if not self.valid:
            return 0
        return self.extended_max_seq - self.base_seq + 1

    @property
    def lost(self) -> int:
        """Cumulative packets lost (A.3); negative when duplicates outnumber losses."""
        return self.expected - self.received

    @property
    def jitter_ms(self) -> float:
        """Interarrival jitter in milliseconds."""
        return self.jitter * 1000.0 / self.clock_rate

    def report(self) -> tuple[int, int, int, int]:
        """Values for a reception report block and start a new interval (A.3, §6.4.1).

        Returns:
            ``(fraction_lost, cumulative_lost, extended_highest_seq, jitter)``: fraction lost
            in 1/256 over the interval since the previous call (0 when negative), cumulative
            loss clamped to the 24-bit signed range, extended highest sequence number (32 bits)
            and the jitter as an integer in timestamp units.
        """
        expected = self.expected
        expected_interval = expected - self.expected_prior
        self.expected_prior = expected
        received_interval = self.received - self.received_prior
        self.received_prior = self.received
        lost_interval = expected_interval - received_interval
        if expected_interval <= 0 or lost_interval <= 0:
            self.fraction_lost = 0
        else:
            self.fraction_lost = min(255, (lost_interval << 8) // expected_interval)
        lost = max(-0x800000, min(0x7FFFFF, self.lost))
        return (
            self.fraction_lost,
            lost,
            self.extended_max_seq & 0xFFFFFFFF,
            min(int(self.jitter), 0xFFFFFFFF),
        )
