"""RFC 4733 telephone events: payload, sender schedule, receiver de-duplication and recovery."""

from __future__ import annotations

import random

import pytest

from p2psip.media.dtmf import (
    MAX_DURATION,
    DtmfDigit,
    DtmfError,
    DtmfPacket,
    DtmfReceiver,
    TelephoneEvent,
    digit_for_event,
    dtmf_packets,
    event_for_digit,
)
from p2psip.media.rtp import RtpPacket, RtpSender

# -- payload (§2.3) -----------------------------------------------------------------------------


def test_digit_codes_of_section_3_2() -> None:
    assert [event_for_digit(d) for d in "0123456789*#ABCD"] == list(range(16))
    assert event_for_digit("a") == 12
    assert [digit_for_event(e) for e in range(16)] == list("0123456789*#ABCD")
    for bad in ("E", "", "12", " "):
        with pytest.raises(DtmfError):
            event_for_digit(bad)
    with pytest.raises(DtmfError):
        digit_for_event(16)


def test_payload_layout() -> None:
    # event 5, E bit, R 0, volume 10, duration 800 (100 ms at 8 kHz)
    event = TelephoneEvent(5, end=True, volume=10, duration=800)
    assert event.serialize() == bytes((5, 0x8A, 0x03, 0x20))
    assert TelephoneEvent.parse(bytes((5, 0x8A, 0x03, 0x20))) == event
    # the R bit is ignored, and a volume of 63 fits in 6 bits
    assert TelephoneEvent.parse(bytes((11, 0x7F, 0, 0))) == TelephoneEvent(11, False, 63, 0)


@pytest.mark.parametrize("payload", [b"", b"\x05\x0a\x00", b"\x05\x0a\x00\xa0\x00"])
def test_malformed_payloads(payload: bytes) -> None:
    with pytest.raises(DtmfError):
        TelephoneEvent.parse(payload)


@pytest.mark.parametrize(
    "event",
    [TelephoneEvent(256), TelephoneEvent(1, volume=64), TelephoneEvent(1, duration=70000)],
)
def test_serialize_refuses_out_of_range(event: TelephoneEvent) -> None:
    with pytest.raises(DtmfError):
        event.serialize()


# -- sender (§2.5.1) --------------------------------------------------------------------------


def decode(packets: list[DtmfPacket]) -> list[TelephoneEvent]:
    return [TelephoneEvent.parse(p.payload) for p in packets]


def test_sender_schedule_for_one_digit() -> None:
    packets = dtmf_packets("#", 12345, duration_ms=200, interval_ms=50, volume=7)
    events = decode(packets)
    assert [p.offset for p in packets] == pytest.approx([0, 0.05, 0.1, 0.15, 0.2, 0.25])
    assert [p.marker for p in packets] == [True] + [False] * 5
    assert {p.timestamp for p in packets} == {12345}
    assert [e.duration for e in events] == [400, 800, 1200, 1600, 1600, 1600]
    assert [e.end for e in events] == [False, False, False, True, True, True]
    assert {e.event for e in events} == {11} and {e.volume for e in events} == {7}
    assert packets[-1].payload == packets[-2].payload == packets[-3].payload
    assert [p.end for p in packets] == [e.end for e in events]


def test_digit_shorter_than_an_interval_and_odd_durations() -> None:
    packets = dtmf_packets("1", 0, duration_ms=30, interval_ms=50)
    assert [(e.duration, e.end) for e in decode(packets)] == [(240, True)] * 3
    assert [p.marker for p in packets] == [True, False, False]
    packets = dtmf_packets("2", 0, duration_ms=110, interval_ms=20, clock_rate=16000, end_copies=1)
    assert [e.duration for e in decode(packets)] == [320, 640, 960, 1280, 1600, 1760]


def test_long_event_is_split_into_segments() -> None:
    # 20 s at 8 kHz = 160000 units: segments of 65535, 65535 and 28930 (§2.5.1.3)
    packets = dtmf_packets("9", 0xFFFF0000, duration_ms=20_000, interval_ms=50)
    events = decode(packets)
    assert max(e.duration for e in events) == MAX_DURATION
    segments = sorted({p.timestamp for p in packets}, key=lambda ts: (ts - 0xFFFF0000) % 2**32)
    assert segments == [0xFFFF0000, (0xFFFF0000 + 65535) % 2**32, (0xFFFF0000 + 131070) % 2**32]
    finals = [e for p, e in zip(packets, events, strict=True) if e.duration == MAX_DURATION]
    assert len(finals) == 6 and not any(e.end for e in finals)  # 3 copies per segment end
    assert [e.end for e in events[-3:]] == [True] * 3 and events[-1].duration == 28930
    assert sum(p.marker for p in packets) == 1
    offsets = [p.offset for p in packets]
    assert offsets == sorted(offsets)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"duration_ms": 0},
        {"interval_ms": 0},
        {"clock_rate": 0},
        {"end_copies": 0},
        {"volume": 64},
    ],
)
def test_sender_rejects_bad_parameters(kwargs: dict[str, float]) -> None:
    with pytest.raises(DtmfError):
        dtmf_packets("1", 0, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(DtmfError):
        dtmf_packets("X", 0)


def test_packets_go_out_with_consecutive_sequence_numbers() -> None:
    sender = RtpSender(0, 8000, random.Random(9))
    sender.next_packet(bytes(160))
    rtp = [
        sender.extra_packet(p.payload, 101, p.timestamp, marker=p.marker)
        for p in dtmf_packets("5", sender.timestamp, duration_ms=100)
    ]
    seqs = [RtpPacket.parse(p.serialize()).sequence_number for p in rtp]
    # §2.5.1.4: the retransmitted end packets get their own sequence numbers
    assert seqs == [(seqs[0] + i) & 0xFFFF for i in range(len(rtp))]
    assert len(set(seqs)) == 4  # 50 ms update + the end packet three times


# -- receiver (§2.5.2) --------------------------------------------------------------------


def play(
    receiver: DtmfReceiver,
    packets: list[DtmfPacket],
    start: float = 0.0,
    drop: set[int] = frozenset(),
) -> list[DtmfDigit]:
    digits = []
    for i, packet in enumerate(packets):
        if i in drop:
            continue
        now = start + packet.offset
        digits += receiver.handle_timer(now)
        digits += receiver.receive(packet.payload, packet.timestamp, now, marker=packet.marker)
    return digits


def test_one_digit_is_reported_once_despite_three_end_packets() -> None:
    receiver = DtmfReceiver()
    digits = play(receiver, dtmf_packets("7", 1000, duration_ms=120, volume=12))
    assert digits == [DtmfDigit("7", 120.0, 1000, 12, True)]
    assert receiver.next_timeout() is None
    assert receiver.handle_timer(10.0) == []


def test_lost_first_packets_still_give_the_digit() -> None:
    receiver = DtmfReceiver()
    digits = play(receiver, dtmf_packets("3", 50, duration_ms=200), drop={0, 1})
    assert digits == [DtmfDigit("3", 200.0, 50, 10, True)]


def test_only_one_end_packet_arriving_is_enough() -> None:
    receiver = DtmfReceiver()
    packets = dtmf_packets("D", 50, duration_ms=200)
    digits = play(receiver, packets, drop=set(range(len(packets) - 1)))
    assert digits == [DtmfDigit("D", 200.0, 50, 10, True)]


def test_lost_end_packets_are_covered_by_the_timeout() -> None:
    receiver = DtmfReceiver(timeout=0.25)
    packets = dtmf_packets("8", 50, duration_ms=200)
    assert play(receiver, packets, drop={3, 4, 5}) == []
    deadline = receiver.next_timeout()
    assert deadline == pytest.approx(0.1 + 0.25)
    assert receiver.handle_timer(deadline - 0.001) == []
    assert receiver.handle_timer(deadline) == [DtmfDigit("8", 150.0, 50, 10, False)]
    # a very late end packet of that event is not a new digit
    assert receiver.receive(packets[-1].payload, 50, deadline + 1) == []


def test_two_identical_digits_in_a_row_are_two_digits() -> None:
    receiver = DtmfReceiver()
    first = dtmf_packets("5", 0, duration_ms=100)
    second = dtmf_packets("5", 0 + 8000, duration_ms=100)  # one second later
    digits = play(receiver, first) + play(receiver, second, start=1.0)
    assert [d.digit for d in digits] == ["5", "5"]
    assert [d.timestamp for d in digits] == [0, 8000]


def test_a_new_event_closes_an_unfinished_one() -> None:
    receiver = DtmfReceiver(timeout=5.0)
    first = dtmf_packets("1", 0, duration_ms=200)
    second = dtmf_packets("2", 3200, duration_ms=100)
    digits = play(receiver, first, drop={3, 4, 5}) + play(receiver, second, start=0.4)
    assert digits == [DtmfDigit("1", 150.0, 0, 10, False), DtmfDigit("2", 100.0, 3200, 10, True)]


def test_reordered_and_stale_packets() -> None:
    receiver = DtmfReceiver()
    packets = dtmf_packets("6", 500, duration_ms=150)
    order = [0, 2, 1, 3, 4]  # the end packet overtakes the last update
    digits = []
    for i in order:
        digits += receiver.receive(packets[i].payload, packets[i].timestamp, packets[i].offset)
    assert digits == [DtmfDigit("6", 150.0, 500, 10, True)]
    later = dtmf_packets("4", 4000, duration_ms=100)
    digits = play(receiver, later, start=1.0)
    assert [d.digit for d in digits] == ["4"]
    # an update of an older event that was never reported is stale, not a new digit
    assert receiver.receive(TelephoneEvent(9, duration=160).serialize(), 3000, 2.0) == []
    assert receiver.next_timeout() is None


def test_long_event_is_one_digit() -> None:
    receiver = DtmfReceiver()
    packets = dtmf_packets("0", 0xFFFFFF00, duration_ms=20_000)  # timestamps wrap too
    assert play(receiver, packets) == [DtmfDigit("0", 20_000.0, 0xFFFFFF00, 10, True)]


def test_long_event_survives_lost_segment_end_packets() -> None:
    receiver = DtmfReceiver()
    packets = dtmf_packets("0", 0, duration_ms=10_000)
    segment_ends = {
        i for i, p in enumerate(packets) if TelephoneEvent.parse(p.payload).duration == MAX_DURATION
    }
    assert len(segment_ends) == 3
    digits = play(receiver, packets, drop=segment_ends)
    assert digits == [DtmfDigit("0", 10_000.0, 0, 10, True)]


def test_malformed_and_non_dtmf_events_are_counted() -> None:
    receiver = DtmfReceiver()
    assert receiver.receive(b"\x01\x02", 0, 0.0) == []
    assert receiver.receive(TelephoneEvent(16, end=True).serialize(), 0, 0.0) == []  # flash
    assert (receiver.malformed, receiver.ignored) == (1, 1)
    with pytest.raises(DtmfError):
        DtmfReceiver(clock_rate=0)


def test_sixteen_khz_clock() -> None:
    receiver = DtmfReceiver(clock_rate=16000)
    packets = dtmf_packets("*", 0, duration_ms=80, clock_rate=16000, interval_ms=20)
    assert play(receiver, packets) == [DtmfDigit("*", 80.0, 0, 10, True)]
