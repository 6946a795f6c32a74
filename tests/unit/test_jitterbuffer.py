"""The adaptive jitter buffer against simulated networks (seeded RNG, no sleeping)."""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from p2psip.media.jitterbuffer import (
    Frame,
    FrameKind,
    JitterBuffer,
    JitterBufferConfig,
    JitterBufferError,
)

FRAME = 0.02
SAMPLES = 160
SEQ0 = 65_500  # sequence numbers wrap during every simulation
TS0 = 2**32 - 20 * SAMPLES  # and so do timestamps


@dataclass
class Run:
    """A finished simulation: what went in, what came out, and when."""

    buffer: JitterBuffer
    arrivals: dict[int, float]  # packet index -> first arrival time
    outputs: list[tuple[float, Frame]]  # (time of get, frame)
    delays: list[tuple[float, float, float]] = field(default_factory=list)  # t, current, target

    def index(self, frame: Frame) -> int:
        assert frame.timestamp is not None
        return ((frame.timestamp - TS0) % 2**32) // SAMPLES

    def slots(self, *kinds: FrameKind) -> list[tuple[float, int]]:
        return [(t, self.index(f)) for t, f in self.outputs if f.kind in kinds]


def simulate(
    count: int,
    delay: Callable[[int, float], float] = lambda i, t: 0.0,
    *,
    lost: set[int] = frozenset(),
    duplicated: set[int] = frozenset(),
    config: JitterBufferConfig | None = None,
    tail: float = 0.0,
    phase: float = 0.007,
    talkspurts: dict[int, int] | None = None,
) -> Run:
    """Send ``count`` 20 ms packets (sent at i * 20 ms + 30 ms base delay + ``delay(i, t)``) and
    call get() every 20 ms until ``tail`` seconds after the last arrival.

    ``talkspurts`` maps a packet index to a number of frames of silence (not sent) before it:
    that packet starts a talkspurt (marker bit) and its timestamp jumps accordingly.
    """
    buffer = JitterBuffer(config or JitterBufferConfig())
    events: list[tuple[float, int, int]] = []
    offset = 0
    timeline = {}
    for i in range(count):
        offset += (talkspurts or {}).get(i, 0)
        timeline[i] = i + offset  # frame slot of packet i
        if i in lost:
            continue
        sent = timeline[i] * FRAME
        arrival = sent + 0.03 + delay(i, sent)
        events.append((arrival, 0, i))
        if i in duplicated:
            events.append((arrival + 0.013, 0, i))
    last = max(e[0] for e in events)
    k = 0
    while k * FRAME + phase <= last + tail:
        events.append((k * FRAME + phase, 1, k))
        k += 1
    events.sort()
    run = Run(buffer, {}, [])
    for t, kind, i in events:
        if kind == 0:
            run.arrivals.setdefault(timeline[i], t)
            marker = i == 0 or i in (talkspurts or {})
            buffer.put(
                b"frame-%d" % timeline[i],
                (SEQ0 + i) & 0xFFFF,
                (TS0 + timeline[i] * SAMPLES) & 0xFFFFFFFF,
                t,
                marker=marker,
            )
        else:
            frame = buffer.get(t)
            run.outputs.append((t, frame))
            run.delays.append((t, buffer.current_delay, buffer.target_delay))
    return run


def check_invariants(run: Run) -> list[int]:
    """No frame twice, AUDIO payloads right, CONCEAL exactly for missing/late frames.

    Returns the slots dropped to shrink the delay.
    """
    played = run.slots(FrameKind.AUDIO, FrameKind.CONCEAL)
    indices = [i for _, i in played]
    assert len(indices) == len(set(indices)), "a frame was output twice"
    assert indices == sorted(indices), "frames out of order"
    for t, frame in run.outputs:
        if frame.kind is FrameKind.AUDIO:
            index = run.index(frame)
            assert frame.payload == b"frame-%d" % index
            assert run.arrivals[index] <= t
        elif frame.kind is FrameKind.CONCEAL:
            index = run.index(frame)
            assert index not in run.arrivals or run.arrivals[index] > t, "concealed a frame it had"
    # slots skipped between consecutive frames were dropped to shrink the delay, one at a time
    skipped = [s for a, b in itertools.pairwise(indices) for s in range(a + 1, b)]
    if not run.buffer.statistics().silence:  # (silence gaps between talkspurts skip more)
        assert all(b - a in (1, 2) for a, b in itertools.pairwise(indices))
        assert len(skipped) == run.buffer.statistics().shrunk
    return skipped


def accounted(run: Run) -> None:
    """Every packet given to put() is in exactly one counter."""
    s = run.buffer.statistics()
    assert s.received == (
        s.played
        + s.late
        + s.duplicates
        + s.discarded_overflow
        + s.discarded_invalid
        + s.discarded_shrink
        + s.flushed
        + s.buffered
    )


def missing(run: Run, last_index: int) -> int:
    """Frames output up to ``last_index`` whose packet was lost or came after its playout."""
    return sum(
        1
        for t, i in run.slots(FrameKind.AUDIO, FrameKind.CONCEAL)
        if i <= last_index and (i not in run.arrivals or run.arrivals[i] > t)
    )


# -- basic behaviour ----------------------------------------------------------------------------


def test_nothing_before_the_first_packet_and_the_initial_delay() -> None:
    buffer = JitterBuffer()
    assert buffer.get(0.0).kind is FrameKind.NOT_STARTED
    assert buffer.put(b"a", 1, 1000, 1.0)
    assert buffer.get(1.02).kind is FrameKind.NOT_STARTED  # initial delay 60 ms
    assert buffer.get(1.059).kind is FrameKind.NOT_STARTED
    frame = buffer.get(1.06)
    assert frame == Frame(FrameKind.AUDIO, 1000, b"a")


def test_clean_stream_plays_every_frame_once_in_order() -> None:
    config = JitterBufferConfig(initial_delay=0.02)
    run = simulate(500, tail=0.1, config=config)
    assert check_invariants(run) == []
    audio = run.slots(FrameKind.AUDIO)
    assert [i for _, i in audio] == list(range(500))
    stats = run.buffer.statistics()
    assert (stats.received, stats.played, stats.late) == (500, 500, 0)
    # only the frames after the end of the stream are concealed
    assert stats.concealed == len(run.slots(FrameKind.CONCEAL)) > 0
    assert min(i for _, i in run.slots(FrameKind.CONCEAL)) == 500
    assert (stats.expanded, stats.shrunk, stats.buffered) == (0, 0, 0)
    kinds = [f.kind for _, f in run.outputs]
    first = kinds.index(FrameKind.AUDIO)
    assert set(kinds[:first]) == {FrameKind.NOT_STARTED}
    assert kinds[first : first + 500] == [FrameKind.AUDIO] * 500
    assert stats.target_delay_ms == pytest.approx(20.0)  # min_delay: no jitter measured
    accounted(run)


def test_delay_shrinks_from_the_initial_delay_to_the_minimum() -> None:
    run = simulate(500, tail=0.1)
    skipped = check_invariants(run)
    stats = run.buffer.statistics()
    assert stats.shrunk == len(skipped) == stats.discarded_shrink >= 1
    assert stats.played + stats.shrunk == 500
    accounted(run)
    _t, current, target = run.delays[-1]
    assert target == pytest.approx(0.02)
    assert target <= current < target + 1.5 * FRAME


def test_duplicates_are_dropped_and_counted() -> None:
    run = simulate(300, duplicated={3, 50, 51, 299}, tail=0.1)
    check_invariants(run)
    stats = run.buffer.statistics()
    assert stats.duplicates == 4
    assert stats.played + stats.shrunk == 300
    accounted(run)


def test_duplicate_of_a_played_packet_is_a_duplicate_not_late() -> None:
    buffer = JitterBuffer(JitterBufferConfig(initial_delay=0.02))
    buffer.put(b"a", 10, 0, 0.0)
    assert buffer.get(0.03).kind is FrameKind.AUDIO
    assert not buffer.put(b"a", 10, 0, 0.5)
    assert not buffer.put(b"b", 11, 0, 0.5)  # another packet for the same, played frame: late
    stats = buffer.statistics()
    assert (stats.duplicates, stats.late) == (1, 1)


def test_loss_is_concealed_frame_for_frame() -> None:
    rng = random.Random(11)
    lost = {i for i in range(1, 999) if rng.random() < 0.08} | set(range(400, 418))  # + a burst
    run = simulate(1000, lost=lost, tail=0.1)
    skipped = check_invariants(run)
    accounted(run)
    conceal = run.slots(FrameKind.CONCEAL)
    in_stream = [i for _, i in conceal if i < 1000]
    assert sorted(in_stream) == sorted(lost - set(skipped))
    assert len(in_stream) == missing(run, 999)
    assert run.buffer.statistics().concealed == len(conceal)


def test_reordering_within_the_delay_is_repaired() -> None:
    # swap every 10th pair: the later packet arrives 25 ms late
    config = JitterBufferConfig(initial_delay=0.04, min_delay=0.04)
    run = simulate(500, lambda i, t: 0.025 if i % 10 == 3 else 0.0, config=config, tail=0.1)
    assert check_invariants(run) == []
    stats = run.buffer.statistics()
    assert stats.late == stats.shrunk == 0
    assert stats.played == 500
    assert all(i >= 500 for _, i in run.slots(FrameKind.CONCEAL))  # after the end only
    accounted(run)


def test_bounded_size_drops_the_oldest() -> None:
    buffer = JitterBuffer(JitterBufferConfig(max_packets=10))
    for i in range(25):
        buffer.put(b"%d" % i, i, i * SAMPLES, 0.0)  # a burst: 25 packets at once
    stats = buffer.statistics()
    assert (stats.buffered, stats.discarded_overflow) == (10, 15)
    assert buffer.get(1.0) == Frame(FrameKind.AUDIO, 15 * SAMPLES, b"15")


def test_end_of_stream_conceals_then_pauses() -> None:
    config = JitterBufferConfig(max_conceal=5)
    run = simulate(100, config=config, tail=1.0)
    kinds = [f.kind for _, f in run.outputs]
    last_audio = max(i for i, k in enumerate(kinds) if k is FrameKind.AUDIO)
    assert kinds[last_audio + 1 : last_audio + 6] == [FrameKind.CONCEAL] * 5
    assert set(kinds[last_audio + 6 :]) == {FrameKind.SILENCE}


def test_an_outage_longer_than_max_conceal_becomes_a_pause() -> None:
    # 2 s without packets (no marker when the stream comes back): after max_conceal frames of
    # concealment the buffer plays silence and restarts the stream at the target delay
    config = JitterBufferConfig(max_conceal=10)
    run = simulate(400, lost=set(range(200, 300)), config=config, tail=0.1)
    check_invariants(run)
    accounted(run)
    in_stream = [i for _, i in run.slots(FrameKind.CONCEAL) if i < 400]
    assert in_stream == list(range(200, 210))
    stats = run.buffer.statistics()
    assert stats.played == 300 - stats.shrunk and stats.late == 0
    comeback = run.arrivals[300]
    after = [(c, tg) for t, c, tg in run.delays if comeback + 0.1 < t < comeback + 1.0]
    assert after and all(tg <= c < tg + FRAME for c, tg in after)


def test_a_sender_resuming_with_a_frozen_timestamp_is_a_reset() -> None:
    # the timestamps do not advance over a 3 s hold: a jump of the transit time
    buffer = JitterBuffer(JitterBufferConfig(initial_delay=0.02))
    for i in range(50):
        buffer.put(b"a", i, i * SAMPLES, i * FRAME)
    for i in range(50, 60):
        buffer.put(b"b", i, i * SAMPLES, 3.0 + i * FRAME)
    stats = buffer.statistics()
    assert (stats.resets, stats.flushed, stats.buffered) == (1, 50, 10)
    assert buffer.get(3.0 + 50 * FRAME + 0.02).kind is FrameKind.AUDIO


# -- adaptation -----------------------------------------------------------------------------


def test_delay_adapts_up_under_40ms_jitter_and_back_down_after() -> None:
    rng = random.Random(5)

    def jitter(i: int, t: float) -> float:
        return rng.uniform(0.0, 0.04) if 4.0 <= t < 24.0 else 0.0

    run = simulate(2500, jitter)  # 50 s: 4 s calm, 20 s of jitter, 26 s calm
    check_invariants(run)

    def at(time: float) -> tuple[float, float]:
        _t, current, target = min(run.delays, key=lambda d: abs(d[0] - time))
        return current, target

    calm_current, calm_target = at(3.9)
    assert calm_target == pytest.approx(0.02)
    jitter_current, jitter_target = at(20.0)
    assert 0.035 <= jitter_target <= 0.06  # covers 40 ms of jitter
    assert jitter_current >= jitter_target
    assert jitter_current > calm_current
    after_current, after_target = at(49.0)
    assert after_target == pytest.approx(0.02)
    assert after_current < jitter_current
    stats = run.buffer.statistics()
    # once adapted, hardly anything is late
    late_during_jitter = stats.late
    assert late_during_jitter <= 10
    assert stats.expanded >= 1 and stats.shrunk >= 1
    assert stats.concealed == missing(run, 2499)


def test_late_packets_make_the_delay_grow_at_once() -> None:
    # a calm stream, then one packet 150 ms late
    run = simulate(600, lambda i, t: 0.15 if i == 300 else 0.0)
    check_invariants(run)
    stats = run.buffer.statistics()
    assert stats.late == 1
    late_time = run.arrivals[300]
    after = [(t, c, tg) for t, c, tg in run.delays if late_time < t <= late_time + 0.2]
    assert after[0][2] >= 0.15  # the target jumped to what that packet needed
    assert after[-1][1] >= 0.15  # and within 200 ms (one frame per tick) the delay got there
    assert stats.expanded >= 5  # 37 ms -> 157 ms
    accounted(run)


def test_heavy_jitter_with_loss_reordering_and_duplicates() -> None:
    rng = random.Random(2024)
    lost = {i for i in range(3000) if rng.random() < 0.05} | set(range(1500, 1520))
    duplicated = {i for i in range(3000) if rng.random() < 0.03}

    def jitter(i: int, t: float) -> float:
        # exponential jitter, mean 15 ms, often reordering 20 ms packets
        return min(rng.expovariate(1 / 0.015), 0.3)

    run = simulate(3000, jitter, lost=lost, duplicated=duplicated)
    check_invariants(run)
    accounted(run)
    stats = run.buffer.statistics()
    assert stats.concealed == missing(run, 2999)
    assert stats.duplicates == len(duplicated - lost)
    assert stats.late < 0.02 * 3000
    assert stats.resets == 0
    assert 20 < stats.target_delay_ms <= 500
    assert stats.jitter_ms > 5


# -- talkspurts, resets ------------------------------------------------------------------------


def test_silence_between_talkspurts_is_silence_not_concealment() -> None:
    # 1 s and 200 ms of silence (not sent) before packets 100 and 200 (marker bit)
    run = simulate(300, talkspurts={100: 50, 200: 10}, tail=0.1)
    check_invariants(run)
    accounted(run)
    stats = run.buffer.statistics()
    assert stats.played + stats.shrunk == 300
    # until the next talkspurt's first packet is there the buffer cannot tell silence from
    # loss: it conceals (at most max_conceal frames), then plays silence
    starts = [run.arrivals[100 + 50], run.arrivals[200 + 60]]  # slots of packets 100, 200
    for t, index in run.slots(FrameKind.CONCEAL):
        if index >= 360:
            continue  # after the end of the stream
        assert 100 <= index < 150 or 250 <= index < 260  # inside a silence gap
        assert t < (starts[0] if index < 150 else starts[1])
    conceal_in_first_gap = len([i for _, i in run.slots(FrameKind.CONCEAL) if i < 150])
    assert conceal_in_first_gap == JitterBufferConfig().max_conceal
    silences = [t for t, f in run.outputs if f.kind is FrameKind.SILENCE]
    assert len(silences) >= 20
    assert any(t > starts[0] - 0.5 for t in silences)
    assert stats.silence == len(silences)


def test_talkspurt_start_resets_the_delay_to_the_target() -> None:
    # a 200 ms delay spike makes the buffer grow; the next talkspurt starts at the target
    config = JitterBufferConfig(late_hold=0.5, shrink_hold=100.0)  # no shrinking in speech
    run = simulate(
        400,
        lambda i, t: 0.2 if i == 50 else 0.0,
        talkspurts={300: 100},
        config=config,
    )
    check_invariants(run)
    start = run.arrivals[300 + 100]
    before = [c for t, c, tg in run.delays if start - 0.5 < t < start]
    after = [(c, tg) for t, c, tg in run.delays if start + 0.1 < t < start + 0.5]
    assert max(before) >= 0.2
    assert len(after) >= 15
    assert all(tg <= c < tg + FRAME for c, tg in after)
    assert after[0][1] < 0.05


def test_ssrc_change_restarts_the_buffer() -> None:
    buffer = JitterBuffer(JitterBufferConfig(initial_delay=0.04))
    for i in range(10):
        buffer.put(b"old", i, i * SAMPLES, i * FRAME, ssrc=1)
    frames = [buffer.get(0.05 + k * FRAME) for k in range(5)]
    assert {f.kind for f in frames} == {FrameKind.AUDIO}
    buffer.put(b"new", 5000, 999_999, 0.16, ssrc=2)
    assert buffer.statistics().resets == 1
    assert buffer.get(0.17).kind is FrameKind.NOT_STARTED
    assert buffer.get(0.21) == Frame(FrameKind.AUDIO, 999_999, b"new")


def test_timestamp_jump_confirmed_by_the_next_packet_resets() -> None:
    buffer = JitterBuffer(JitterBufferConfig(initial_delay=0.02))
    for i in range(5):
        buffer.put(b"a", i, i * SAMPLES, i * FRAME)
    # a rogue packet far in the future: dropped, no reset
    assert not buffer.put(b"x", 5, 10_000_000, 0.1)
    assert buffer.put(b"a", 6, 6 * SAMPLES, 0.12)
    # the sender restarts its timestamps (same SSRC): two packets agree, so reset
    assert not buffer.put(b"b", 7, 4_000_000, 0.14)
    assert buffer.put(b"c", 8, 4_000_000 + SAMPLES, 0.16)
    stats = buffer.statistics()
    assert (stats.resets, stats.discarded_invalid) == (1, 1)
    assert stats.received == 9
    assert buffer.get(0.3) == Frame(FrameKind.AUDIO, 4_000_000, b"b")
    assert buffer.get(0.32) == Frame(FrameKind.AUDIO, 4_000_000 + SAMPLES, b"c")


def test_configuration_is_checked() -> None:
    for bad in (
        {"clock_rate": 0},
        {"frame_samples": 0},
        {"min_delay": 0.1, "max_delay": 0.05},
        {"quantile": 0.0},
        {"window": 0},
        {"max_packets": 1},
    ):
        with pytest.raises(JitterBufferError):
            JitterBufferConfig(**bad)  # type: ignore[arg-type]
