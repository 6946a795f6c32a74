"""An adaptive jitter buffer for audio, sans-IO, paced by the caller's media clock.

The caller puts packets as they arrive and takes exactly one frame per frame time::

    buffer = JitterBuffer(JitterBufferConfig(clock_rate=8000, frame_samples=160))
    buffer.put(packet.payload, packet.sequence_number, packet.timestamp, now,
               marker=packet.marker, ssrc=packet.ssrc)
    frame = buffer.get(now)          # every 20 ms
    if frame.kind is FrameKind.AUDIO: decode(frame.payload)
    elif frame.kind in (FrameKind.CONCEAL, FrameKind.EXPAND): decoder concealment
    else: silence (NOT_STARTED, SILENCE)

Frames are slots of ``frame_samples`` timestamp units; the buffer plays slot after slot, one per
:meth:`JitterBuffer.get`. A packet whose slot has already been played is *late* and dropped.

**Delay.** The playout delay of a frame is measured against the fastest packets seen recently:
``transit = arrival - timestamp / clock_rate`` for every packet, ``base`` = the smallest transit
in a sliding window, and the frame played at ``now`` has ``delay = now - its_time - base``. A
packet arrives in time when its own ``transit - base`` does not exceed the delay. The jitter
estimate is the ``quantile`` (95 %) of ``transit - base`` over the window, and

    target = clamp(max(jitter estimate, late floor) + margin, min_delay, max_delay)

where a late packet sets the *late floor* to the delay it would have needed, for ``late_hold``
seconds: the delay grows at once. The buffer reaches the target by inserting frames
(:attr:`FrameKind.EXPAND`, one per tick) when below it, and goes down slowly: during a silence
gap (next packet starts a talkspurt, marker bit) by re-anchoring the talkspurt at the target, in
speech by dropping one frame once the delay has stayed above the target by more than one frame
for ``shrink_hold`` seconds.

**Resets.** A new SSRC, or a timestamp jump (transit changing by more than
``resync_threshold``) confirmed by the next packet, restarts the buffer. Sequence numbers (with
wrap) detect duplicates; timestamps are unwrapped to 64 bits.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass

from p2psip.errors import P2PSIPError

__all__ = [
    "Frame",
    "FrameKind",
    "JitterBuffer",
    "JitterBufferConfig",
    "JitterBufferError",
    "JitterBufferStats",
]

_SEQ_WINDOW = 256  # sequence numbers remembered for duplicate detection
_SEQ_MASK = (1 << _SEQ_WINDOW) - 1
_RECOMPUTE_EVERY = 5  # frames between recomputations of base and jitter estimate


class JitterBufferError(P2PSIPError, ValueError):
    """A jitter buffer was configured with impossible values."""


class FrameKind(enum.Enum):
    """What :meth:`JitterBuffer.get` hands out for one frame time."""

    #: playout has not started (no packet yet, or filling up to the initial delay): silence
    NOT_STARTED = "not-started"
    #: the payload of the frame at ``timestamp``
    AUDIO = "audio"
    #: the frame at ``timestamp`` is missing or late: ask the decoder for concealment
    CONCEAL = "conceal"
    #: no talkspurt in progress (between talkspurts, or the stream paused): silence
    SILENCE = "silence"
    #: an extra frame inserted to grow the delay; no timestamp consumed: concealment/stretch
    EXPAND = "expand"


@dataclass(frozen=True, slots=True)
class Frame:
    """One frame time's output.

    Attributes:
        kind: see :class:`FrameKind`.
        timestamp: RTP timestamp of the frame (AUDIO, CONCEAL), else None.
        payload: the payload (AUDIO), else None.
    """

    kind: FrameKind
    timestamp: int | None = None
    payload: bytes | None = None


_NOT_STARTED = Frame(FrameKind.NOT_STARTED)
_SILENCE = Frame(FrameKind.SILENCE)
_EXPAND = Frame(FrameKind.EXPAND)


@dataclass(frozen=True)
class JitterBufferConfig:
    """Parameters of a :class:`JitterBuffer` (times in seconds).

    Attributes:
        clock_rate: RTP clock rate of the payload.
        frame_samples: timestamp units per frame = per packet (160 = 20 ms at 8 kHz).
        min_delay / max_delay: bounds of the target delay.
        initial_delay: target before any jitter has been measured.
        quantile: share of packets the jitter estimate must cover.
        margin: added to the estimate.
        window: packets in the sliding window of transit times.
        late_hold: how long a late packet's needed delay stays a floor of the target.
        shrink_hold: how long the delay must stay above target + one frame before a frame
            is dropped (and between two drops).
        max_packets: packets held at most; beyond, the oldest is dropped.
        max_conceal: concealed frames in a row with an empty buffer before the stream is
            considered paused (then SILENCE).
        resync_threshold: a transit change larger than this is a timestamp jump (reset once
            confirmed by the next packet); default max(1 s, 2 * max_delay).
    """

    clock_rate: int = 8000
    frame_samples: int = 160
    min_delay: float = 0.02
    max_delay: float = 0.5
    initial_delay: float = 0.06
    quantile: float = 0.95
    margin: float = 0.005
    window: int = 100
    late_hold: float = 4.0
    shrink_hold: float = 0.4
    max_packets: int = 64
    max_conceal: int = 25
    resync_threshold: float | None = None

    def __post_init__(self) -> None:
        if self.clock_rate <= 0 or self.frame_samples <= 0:
            raise JitterBufferError("clock rate and frame length must be positive")
        if not 0 <= self.min_delay <= self.max_delay:
            raise JitterBufferError("need 0 <= min_delay <= max_delay")
        if not 0 < self.quantile <= 1 or self.window < 1 or self.max_packets < 2:
            raise JitterBufferError("quantile in (0, 1], window >= 1, max_packets >= 2")

    @property
    def frame_duration(self) -> float:
        """Seconds per frame."""
        return self.frame_samples / self.clock_rate


@dataclass(frozen=True)
class JitterBufferStats:
    """Counters and delays of a :class:`JitterBuffer`.

    Attributes:
        received: packets given to :meth:`~JitterBuffer.put`.
        late: packets that arrived after their frame was played (dropped).
        duplicates: packets already received (same sequence number or same frame).
        discarded_overflow: packets dropped because the buffer was full.
        discarded_invalid: packets dropped as unconfirmed timestamp jumps.
        discarded_shrink: packets dropped with the frame skipped to reduce the delay.
        flushed: packets thrown away by a reset.
        played: AUDIO frames handed out.
        concealed: CONCEAL frames (missing or late frames).
        expanded: EXPAND frames inserted to grow the delay.
        shrunk: frames dropped to reduce the delay.
        silence: SILENCE frames.
        resets: restarts (new SSRC, timestamp jump).
        buffered: packets held now (including one waiting to confirm a timestamp jump).

    Every packet given to ``put`` ends up in exactly one of: played, late, duplicates,
    discarded_overflow, discarded_invalid, discarded_shrink, flushed, buffered.
        current_delay_ms: delay of the last frame played, above the fastest transit.
        target_delay_ms: current target.
        jitter_ms: RFC 3550 A.8 style smoothed interarrival jitter of the input.
    """

    received: int
    late: int
    duplicates: int
    discarded_overflow: int
    discarded_invalid: int
    discarded_shrink: int
    flushed: int
    played: int
    concealed: int
    expanded: int
    shrunk: int
    silence: int
    resets: int
    buffered: int
    current_delay_ms: float
    target_delay_ms: float
    jitter_ms: float


class JitterBuffer:
    """Adaptive, sans-IO jitter buffer: see the module documentation."""

    def __init__(self, config: JitterBufferConfig | None = None) -> None:
        self.config = config or JitterBufferConfig()
        c = self.config
        self._frame = c.frame_samples
        self._frame_duration = c.frame_duration
        self._rate = float(c.clock_rate)
        self._resync = (
            c.resync_threshold if c.resync_threshold is not None else max(1.0, 2 * c.max_delay)
        )
        self._target = min(max(c.initial_delay, c.min_delay), c.max_delay)
        # counters
        self.received = 0
        self.late = 0
        self.duplicates = 0
        self.discarded_overflow = 0
        self.discarded_invalid = 0
        self.played = 0
        self.concealed = 0
        self.expanded = 0
        self.shrunk = 0
        self.silence = 0
        self.resets = 0
        self.discarded_shrink = 0
        self.flushed = 0
        self._jitter = 0.0  # seconds
        self._current = 0.0
        self._ssrc: int | None = None
        self._restart()

    def _restart(self) -> None:
        self._ref: int | None = None  # extended timestamp of slot 0
        self._last_ext_ts = 0
        self._max_seq = 0
        self._seq_mask = 0
        self._buffer: dict[int, tuple[bytes, int, bool]] = {}  # slot -> payload, ts, marker
        self._window: deque[float] = deque(maxlen=self.config.window)
        self._base = 0.0
        self._started = False
        self._paused = False
        self._start_at = 0.0
        self._playout = 0  # next slot to play
        self._accept_from: int | None = None  # slots below this are late
        self._empty_run = 0
        self._ticks = 0
        self._late_floor = 0.0
        self._late_until = float("-inf")
        self._above_since: float | None = None
        self._candidate: tuple[bytes, int, int, float, bool] | None = None
        self._last_transit: float | None = None

    # -- input ------------------------------------------------------------------------------

    def put(
        self,
        payload: bytes,
        seq: int,
        timestamp: int,
        arrival_now: float,
        *,
        marker: bool = False,
        ssrc: int | None = None,
    ) -> bool:
        """Hand over one received packet.

        Args:
            payload: the RTP payload (one frame).
            seq: RTP sequence number.
            timestamp: RTP timestamp.
            arrival_now: arrival time (s), same clock as :meth:`get`.
            marker: RTP marker bit (first packet of a talkspurt).
            ssrc: RTP SSRC; a change restarts the buffer.

        Returns:
            True when the packet was buffered, False when it was dropped (late, duplicate,
            overflow, unconfirmed jump); the reason is counted in :meth:`statistics`.
        """
        self.received += 1
        seq &= 0xFFFF
        timestamp &= 0xFFFFFFFF
        if ssrc is not None:
            if self._ssrc is not None and ssrc != self._ssrc:
                self._reset()
            self._ssrc = ssrc
        if self._ref is None:
            self._first_packet(payload, seq, timestamp, arrival_now, marker)
            return True
        ext_ts = self._unwrap(timestamp)
        transit = arrival_now - (ext_ts - self._ref) / self._rate
        if abs(transit - self._base) > self._resync:
            return self._jump(payload, seq, timestamp, arrival_now, marker)
        if self._candidate is not None:
            self._candidate = None  # a jump the next packet did not confirm
            self.discarded_invalid += 1
        # duplicates by sequence number (with wrap)
        delta = ((seq - self._max_seq + 0x8000) & 0xFFFF) - 0x8000
        if delta > 0:
            self._seq_mask = ((self._seq_mask << delta) | 1) & _SEQ_MASK
            self._max_seq = seq
        elif -delta < _SEQ_WINDOW:
            bit = 1 << -delta
            if self._seq_mask & bit:
                self.duplicates += 1
                return False
            self._seq_mask |= bit
        # RFC 3550 A.8 style jitter of the input, for the statistics
        if self._last_transit is not None:
            self._jitter += (abs(transit - self._last_transit) - self._jitter) / 16.0
        self._last_transit = transit
        self._window.append(transit)  # late packets too: they are the jitter to cover
        if transit < self._base:
            self._base = transit
        slot = (ext_ts - self._ref + self._frame // 2) // self._frame
        if self._accept_from is not None and slot < self._accept_from:
            self.late += 1
            # the delay this packet needed, held as a floor of the target for a while
            needed = transit - self._base
            if arrival_now >= self._late_until:
                self._late_floor = needed
            else:
                self._late_floor = max(self._late_floor, needed)
            self._late_until = arrival_now + self.config.late_hold
            self._update_target(arrival_now)
            return False
        if slot in self._buffer:
            self.duplicates += 1
            return False
        self._buffer[slot] = (payload, timestamp, marker)
        if len(self._buffer) > self.config.max_packets:
            oldest = min(self._buffer)
            del self._buffer[oldest]
            self.discarded_overflow += 1
            if oldest == slot:
                return False
        return True

    def _first_packet(
        self, payload: bytes, seq: int, timestamp: int, arrival: float, marker: bool
    ) -> None:
        self._ref = timestamp
        self._last_ext_ts = timestamp
        self._max_seq = seq
        self._seq_mask = 1
        self._base = arrival
        self._last_transit = arrival
        self._window.append(arrival)
        self._buffer[0] = (payload, timestamp, marker)
        self._start_at = arrival + self._target

    def _unwrap(self, timestamp: int) -> int:
        last = self._last_ext_ts
        diff = ((timestamp - last + 0x80000000) & 0xFFFFFFFF) - 0x80000000
        ext = last + diff
        if diff > 0:
            self._last_ext_ts = ext
        return ext

    def _jump(self, payload: bytes, seq: int, timestamp: int, arrival: float, marker: bool) -> bool:
        """A packet far off the current timeline: restart when the next packet agrees."""
        candidate = self._candidate
        if candidate is not None:
            c_payload, c_seq, c_ts, c_arrival, c_marker = candidate
            seq_step = (seq - c_seq) & 0xFFFF
            ts_step = ((timestamp - c_ts + 0x80000000) & 0xFFFFFFFF) - 0x80000000
            drift = (arrival - c_arrival) - ts_step / self._rate
            if 0 < seq_step < 100 and abs(drift) < self._resync / 2:
                self._reset()
                self._first_packet(c_payload, c_seq, c_ts, c_arrival, c_marker)
                self._candidate = None
                self.received -= 1  # put() counts this packet again
                return self.put(payload, seq, timestamp, arrival, marker=marker)
            self.discarded_invalid += 1
        self._candidate = (payload, seq, timestamp, arrival, marker)
        return False

    def _reset(self) -> None:
        self.resets += 1
        self.flushed += len(self._buffer)
        self._restart()

    # -- adaptation -------------------------------------------------------------------------

    def _update_target(self, now: float) -> None:
        c = self.config
        if self._window:
            ordered = sorted(self._window)
            self._base = ordered[0]
            index = min(len(ordered) - 1, int(c.quantile * len(ordered)))
            estimate = ordered[index] - self._base
        else:
            estimate = 0.0
        if now < self._late_until:
            estimate = max(estimate, self._late_floor)
        self._target = min(max(estimate + c.margin, c.min_delay), c.max_delay)

    # -- output -----------------------------------------------------------------------------

    def get(self, now: float) -> Frame:
        """The frame to play now; call once per frame time.

        Returns:
            A :class:`Frame`: AUDIO with the payload of the next slot, CONCEAL for a missing or
            late slot, EXPAND when a frame is inserted to grow the delay, SILENCE between
            talkspurts, NOT_STARTED before playout starts.
        """
        if not self._started:
            if not self._buffer or now < self._start_at:
                return _NOT_STARTED
            self._started = True
            self._playout = min(self._buffer)
            self._accept_from = self._playout
        self._ticks += 1
        if self._ticks % _RECOMPUTE_EVERY == 0:
            self._update_target(now)
        buffer = self._buffer
        entry = buffer.get(self._playout)
        if self._paused or (entry is None and buffer and buffer[min(buffer)][2]):
            frame = self._silence_gap(now)
            if frame is not None:
                return frame
            entry = buffer.get(self._playout)
        frame_duration = self._frame_duration
        current = now - self._playout * frame_duration - self._base
        target = self._target
        if current < target:
            # grow at once: insert a frame, keep the slot (its packet may still come)
            self._above_since = None
            self._current = current
            self.expanded += 1
            return _EXPAND
        if current >= target + 1.5 * frame_duration:
            if self._above_since is None:
                self._above_since = now
            elif now - self._above_since >= self.config.shrink_hold:
                # shrink slowly: drop one frame
                if buffer.pop(self._playout, None) is not None:
                    self.discarded_shrink += 1
                self._playout += 1
                self.shrunk += 1
                self._above_since = now
                current -= frame_duration
                entry = buffer.get(self._playout)
        else:
            self._above_since = None
        self._current = current
        slot = self._playout
        self._playout = slot + 1
        self._accept_from = self._playout
        if entry is not None:
            del buffer[slot]
            self._empty_run = 0
            self.played += 1
            return Frame(FrameKind.AUDIO, entry[1], entry[0])
        if not buffer:
            self._empty_run += 1
            if self._empty_run > self.config.max_conceal:
                # nothing for a long time: a pause, not a loss
                self._paused = True
                self.silence += 1
                return _SILENCE
        self.concealed += 1
        assert self._ref is not None
        return Frame(FrameKind.CONCEAL, (self._ref + slot * self._frame) & 0xFFFFFFFF)

    def _silence_gap(self, now: float) -> Frame | None:
        """Between talkspurts: start the next one at the target delay (None = play it now)."""
        buffer = self._buffer
        if not buffer:
            self._playout += 1
            self.silence += 1
            return _SILENCE
        following = min(buffer)
        ideal = following * self._frame_duration + self._base + self._target
        if now >= ideal:
            self._playout = following
            self._paused = False
            self._empty_run = 0
            self._above_since = None
            return None
        self._playout = min(self._playout + 1, following)
        self.silence += 1
        return _SILENCE

    # -- statistics -------------------------------------------------------------------------

    @property
    def target_delay(self) -> float:
        """Current target delay (s)."""
        return self._target

    @property
    def current_delay(self) -> float:
        """Delay of the last frame handed out (s)."""
        return self._current

    def statistics(self) -> JitterBufferStats:
        """A snapshot of the counters and delays."""
        return JitterBufferStats(
            received=self.received,
            late=self.late,
            duplicates=self.duplicates,
            discarded_overflow=self.discarded_overflow,
            discarded_invalid=self.discarded_invalid,
            discarded_shrink=self.discarded_shrink,
            flushed=self.flushed,
            played=self.played,
            concealed=self.concealed,
            expanded=self.expanded,
            shrunk=self.shrunk,
            silence=self.silence,
            resets=self.resets,
            buffered=len(self._buffer) + (self._candidate is not None),
            current_delay_ms=self._current * 1000.0,
            target_delay_ms=self._target * 1000.0,
            jitter_ms=self._jitter * 1000.0,
        )
