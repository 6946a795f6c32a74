"""DTMF digits as RTP telephone events (RFC 4733), sans-IO.

* :class:`TelephoneEvent` is the 4-octet event payload (§2.3): event code, E (end) bit,
  volume, duration in timestamp units.
* :func:`dtmf_packets` is the sender's schedule for one digit (§2.5.1): the first packet carries
  the marker bit, every packet of the event carries the event's start timestamp, the duration
  grows with every update, and the final packet (E bit) is sent three times (§2.5.1.4). Events
  longer than the 16-bit duration field are split into segments (§2.5.1.3).
* :class:`DtmfReceiver` turns received packets back into one :class:`DtmfDigit` per key press
  (§2.5.2): retransmitted end packets are ignored, a lost first packet or lost end packets do not
  lose the digit (an event with no news for ``timeout`` seconds is reported by
  :meth:`DtmfReceiver.handle_timer`).

The caller wraps payloads in RTP with the telephone-event payload type negotiated in SDP, in
the same SSRC and sequence-number space as the audio (``RtpSender.extra_packet``).
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass

from p2psip.errors import P2PSIPError

__all__ = [
    "DTMF_DIGITS",
    "MAX_DURATION",
    "DtmfDigit",
    "DtmfError",
    "DtmfPacket",
    "DtmfReceiver",
    "TelephoneEvent",
    "digit_for_event",
    "dtmf_packets",
    "event_for_digit",
]

#: Events 0-15 (RFC 4733 §3.2): the digit of each event code.
DTMF_DIGITS = "0123456789*#ABCD"
#: Largest value of the 16-bit duration field (§2.5.1.3).
MAX_DURATION = 0xFFFF
_EVENT = struct.Struct("!BBH")


class DtmfError(P2PSIPError, ValueError):
    """A telephone-event payload is malformed or a digit/parameter is invalid."""


def event_for_digit(digit: str) -> int:
    """Event code of a DTMF digit ``0-9 * # A-D`` (case-insensitive), RFC 4733 §3.2."""
    index = DTMF_DIGITS.find(digit.upper()) if len(digit) == 1 else -1
    if index < 0:
        raise DtmfError(f"{digit!r} is not a DTMF digit (0-9, *, #, A-D)")
    return index


def digit_for_event(event: int) -> str:
    """DTMF digit of event code 0..15."""
    if not 0 <= event <= 15:
        raise DtmfError(f"event {event} is not a DTMF digit (0..15)")
    return DTMF_DIGITS[event]


@dataclass(frozen=True, slots=True)
class TelephoneEvent:
    """The telephone-event payload (RFC 4733 §2.3).

    Attributes:
        event: event code 0..255 (0-15 are DTMF digits).
        end: the E bit, set in the final packet(s) of the event.
        volume: power level 0..63, in -dBm0 (§2.3.4); 0 means loud.
        duration: duration so far, in timestamp units (0..65535).
    """

    event: int
    end: bool = False
    volume: int = 10
    duration: int = 0

    @classmethod
    def parse(cls, payload: bytes | bytearray | memoryview) -> TelephoneEvent:
        """Parse the first event report of a payload (§2.3; the R bit is ignored).

        Raises:
            DtmfError: the payload is shorter than 4 octets or not a multiple of 4.
        """
        if len(payload) < 4 or len(payload) % 4:
            raise DtmfError(f"telephone-event payload of {len(payload)} octets")
        event, flags, duration = _EVENT.unpack_from(payload)
        return cls(event, bool(flags & 0x80), flags & 0x3F, duration)

    def serialize(self) -> bytes:
        """The 4-octet payload (R bit zero, §2.3.3)."""
        if not 0 <= self.event <= 255:
            raise DtmfError(f"event {self.event} outside 0..255")
        if not 0 <= self.volume <= 63:
            raise DtmfError(f"volume {self.volume} outside 0..63")
        if not 0 <= self.duration <= MAX_DURATION:
            raise DtmfError(f"duration {self.duration} outside 0..65535")
        return _EVENT.pack(self.event, (0x80 if self.end else 0) | self.volume, self.duration)


@dataclass(frozen=True, slots=True)
class DtmfPacket:
    """One packet of a digit's schedule.

    Attributes:
        offset: when to send it, in seconds after the first packet.
        timestamp: RTP timestamp (the start of the event or segment).
        marker: RTP marker bit (first packet of the event).
        payload: the 4-octet telephone-event payload.
        end: the E bit is set.
    """

    offset: float
    timestamp: int
    marker: bool
    payload: bytes
    end: bool


def dtmf_packets(
    digit: str,
    start_timestamp: int,
    *,
    duration_ms: float = 100.0,
    clock_rate: int = 8000,
    interval_ms: float = 50.0,
    volume: int = 10,
    end_copies: int = 3,
) -> list[DtmfPacket]:
    """The packets that send one DTMF digit (RFC 4733 §2.5.1).

    A packet goes out every ``interval_ms`` (§2.5.1.2: updates at the packetization interval),
    each reporting the duration up to the end of its interval; the last one has the E bit and is
    sent ``end_copies`` times (§2.5.1.4: "a total of three times"), each copy needing its own
    RTP sequence number. All packets of an event carry ``start_timestamp``; only the first has
    the marker bit. Durations above 65535 units split the event into segments whose timestamps
    advance by the segment length (§2.5.1.3); each segment's final packet is also sent
    ``end_copies`` times, the E bit only on the last segment.

    Args:
        digit: ``0-9``, ``*``, ``#``, ``A-D``.
        start_timestamp: RTP timestamp of the event start (the media clock at the key press).
        duration_ms: how long the key is pressed.
        clock_rate: RTP clock rate of the telephone-event payload (8000 normally).
        interval_ms: time between update packets.
        volume: 0..63 (-dBm0).
        end_copies: transmissions of each final packet.

    Raises:
        DtmfError: invalid digit or parameter.
    """
    event = event_for_digit(digit)
    if duration_ms <= 0 or interval_ms <= 0 or clock_rate <= 0 or end_copies < 1:
        raise DtmfError("duration, interval, clock rate and end copies must be positive")
    if not 0 <= volume <= 63:
        raise DtmfError(f"volume {volume} outside 0..63")
    total = max(1, round(duration_ms * clock_rate / 1000.0))
    step = max(1, round(interval_ms * clock_rate / 1000.0))
    packets: list[DtmfPacket] = []
    segment_start = 0  # units from the event start to the current segment's start
    sent = 0  # send time of the next packet, in units after the first packet
    first = True

    def emit(duration: int, end: bool, copies: int) -> None:
        nonlocal sent, first
        payload = _EVENT.pack(event, (0x80 if end else 0) | volume, duration)
        timestamp = (start_timestamp + segment_start) & 0xFFFFFFFF
        for _ in range(copies):
            packets.append(DtmfPacket(sent / clock_rate, timestamp, first, payload, end))
            first = False
            sent += step

    while True:
        # like an audio frame, a packet reports the tone up to the end of its interval
        covered = min(sent + step, total)
        duration = covered - segment_start
        if duration > MAX_DURATION or (duration == MAX_DURATION and covered < total):
            emit(MAX_DURATION, False, end_copies)  # close this segment, open the next
            segment_start += MAX_DURATION
        elif covered >= total:
            emit(duration, True, end_copies)
            return packets
        else:
            emit(duration, False, 1)


@dataclass(frozen=True, slots=True)
class DtmfDigit:
    """A received key press.

    Attributes:
        digit: ``0-9``, ``*``, ``#``, ``A-D``.
        duration_ms: its duration (over all segments) as last reported by the sender.
        timestamp: RTP timestamp of the event start.
        volume: reported volume (-dBm0).
        ended: True when an end packet (E bit) was received, False when the event was closed by
            the timeout or by the next event.
    """

    digit: str
    duration_ms: float
    timestamp: int
    volume: int
    ended: bool


@dataclass
class _Current:
    timestamp: int  # of the current segment
    start: int  # of the first segment
    event: int
    duration: int  # of the current segment
    previous_segments: int
    volume: int
    last_packet: float


def _signed32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


class DtmfReceiver:
    """Telephone-event packets in, one :class:`DtmfDigit` per key press out (RFC 4733 §2.5.2).

    Events are identified by their RTP timestamp: every packet of an event has the same one, so
    updates and the retransmitted end packets of a finished event are recognised and ignored.

    Args:
        clock_rate: clock rate of the telephone-event payload type.
        timeout: seconds without a packet after which an unfinished event is reported (its end
            packets were lost).
    """

    def __init__(self, clock_rate: int = 8000, *, timeout: float = 0.25) -> None:
        if clock_rate <= 0 or timeout <= 0:
            raise DtmfError("clock rate and timeout must be positive")
        self.clock_rate = clock_rate
        self.timeout = timeout
        self._current: _Current | None = None
        self._finished: deque[int] = deque(maxlen=32)  # timestamps of reported events
        self._latest: int | None = None  # newest event timestamp seen
        #: payloads that could not be parsed
        self.malformed = 0
        #: telephone events that are not DTMF digits (codes above 15), ignored
        self.ignored = 0

    def receive(
        self,
        payload: bytes | bytearray | memoryview,
        timestamp: int,
        now: float,
        *,
        marker: bool = False,
    ) -> list[DtmfDigit]:
        """Process one telephone-event packet.

        Args:
            payload: the RTP payload.
            timestamp: the RTP timestamp of the packet.
            now: arrival time (s).
            marker: the RTP marker bit (informational: a lost first packet is tolerated).

        Returns:
            The digits completed by this packet (usually none, at most two).
        """
        del marker  # the timestamp alone identifies an event (§2.5.2.1)
        try:
            report = TelephoneEvent.parse(payload)
        except DtmfError:
            self.malformed += 1
            return []
        if report.event > 15:
            self.ignored += 1
            return []
        timestamp &= 0xFFFFFFFF
        done: list[DtmfDigit] = []
        current = self._current
        if current is not None and timestamp == current.timestamp:
            self._update(current, report, now)
        elif timestamp in self._finished:
            return []  # a retransmitted end packet or a late update of a reported event
        elif self._latest is not None and _signed32(timestamp - self._latest) < 0:
            return []  # older than an event already seen: stale
        elif current is not None and self._continues(current, report, timestamp):
            # §2.5.1.3: the next segment of a long event
            current.previous_segments += MAX_DURATION
            current.timestamp = timestamp
            current.duration = 0
            self._update(current, report, now)
        else:
            if current is not None:
                done.append(self._close(current, ended=False))
            current = self._current = _Current(
                timestamp, timestamp, report.event, 0, 0, report.volume, now
            )
            self._update(current, report, now)
        self._latest = timestamp
        if report.end and self._current is not None:
            done.append(self._close(self._current, ended=True))
        return done

    @staticmethod
    def _continues(current: _Current, report: TelephoneEvent, timestamp: int) -> bool:
        # a new segment starts exactly 0xFFFF units after the previous one, even when that
        # segment's final packets were lost
        return (
            report.event == current.event
            and _signed32(timestamp - current.timestamp) == MAX_DURATION
        )

    @staticmethod
    def _update(current: _Current, report: TelephoneEvent, now: float) -> None:
        current.duration = max(current.duration, report.duration)
        current.volume = report.volume
        current.last_packet = now

    def _close(self, current: _Current, *, ended: bool) -> DtmfDigit:
        self._current = None
        self._finished.append(current.timestamp)
        if current.start != current.timestamp:
            self._finished.append(current.start)
        total = current.previous_segments + current.duration
        return DtmfDigit(
            DTMF_DIGITS[current.event],
            total * 1000.0 / self.clock_rate,
            current.start,
            current.volume,
            ended,
        )

    def next_timeout(self) -> float | None:
        """When the current unfinished event times out, or None."""
        if self._current is None:
            return None
        return self._current.last_packet + self.timeout

    def handle_timer(self, now: float) -> list[DtmfDigit]:
        """Report an event whose end packets never came (all lost)."""
        current = self._current
        if current is None or now < current.last_packet + self.timeout:
            return []
        return [self._close(current, ended=False)]
