"""Property tests: the RTP/RTCP/telephone-event parsers and the jitter buffer on random input."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from p2psip.media.dtmf import DtmfError, DtmfReceiver, TelephoneEvent
from p2psip.media.jitterbuffer import FrameKind, JitterBuffer, JitterBufferConfig
from p2psip.media.rtcp import (
    App,
    Bye,
    ReceiverReport,
    ReportBlock,
    RtcpError,
    RtcpSession,
    SdesChunk,
    SenderReport,
    SourceDescription,
    UnknownRtcp,
    parse_rtcp,
    serialize_rtcp,
)
from p2psip.media.rtp import RtpError, RtpExtension, RtpPacket, RtpReceiverStats

u8 = st.integers(0, 255)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
words = st.integers(0, 8).flatmap(lambda n: st.binary(min_size=4 * n, max_size=4 * n))

rtp_packets = st.builds(
    RtpPacket,
    payload_type=st.integers(0, 127),
    sequence_number=u16,
    timestamp=u32,
    ssrc=u32,
    payload=st.binary(max_size=64),
    marker=st.booleans(),
    csrc=st.lists(u32, max_size=15).map(tuple),
    extension=st.none() | st.builds(RtpExtension, u16, words),
    padding=st.integers(0, 255),
)


@given(st.binary(max_size=120))
def test_random_bytes_parse_or_raise_rtp_error(data: bytes) -> None:
    try:
        packet = RtpPacket.parse(data)
    except RtpError:
        return
    # what parses serializes back to the same octets, except the padding content
    again = packet.serialize()
    assert len(again) == len(data)
    assert RtpPacket.parse(again) == packet


@given(rtp_packets)
def test_rtp_round_trip(packet: RtpPacket) -> None:
    assert RtpPacket.parse(packet.serialize()) == packet


@given(rtp_packets, st.binary(min_size=1, max_size=20))
def test_rtp_prefixes_never_raise_anything_else(packet: RtpPacket, junk: bytes) -> None:
    data = packet.serialize()
    for end in range(0, len(data), 3):
        try:
            RtpPacket.parse(data[:end] + junk)
        except RtpError:
            pass


blocks = st.builds(
    ReportBlock,
    ssrc=u32,
    fraction_lost=u8,
    cumulative_lost=st.integers(-0x800000, 0x7FFFFF),
    highest_sequence=u32,
    jitter=u32,
    last_sr=u32,
    delay_since_last_sr=u32,
)
report_lists = st.lists(blocks, max_size=4).map(tuple)
sdes_items = st.lists(st.tuples(st.integers(1, 8), st.binary(max_size=40)), max_size=4).map(tuple)
rtcp_packets = st.one_of(
    st.builds(SenderReport, u32, st.integers(0, 2**64 - 1), u32, u32, u32, report_lists, words),
    st.builds(ReceiverReport, u32, report_lists, words),
    st.builds(
        SourceDescription,
        st.lists(st.builds(SdesChunk, u32, sdes_items), max_size=3).map(tuple),
    ),
    st.builds(
        Bye,
        st.lists(u32, max_size=5).map(tuple),
        st.none() | st.text(max_size=30).filter(lambda t: len(t.encode()) <= 255),
    ),
    st.builds(App, u32, st.integers(0, 31), st.text("abcdXYZ09 ", min_size=4, max_size=4), words),
    st.builds(UnknownRtcp, st.integers(205, 220), st.integers(0, 31), words),
)


@given(st.lists(rtcp_packets, min_size=1, max_size=5), st.sampled_from([0, 4, 8, 12]))
def test_rtcp_round_trip(packets: list, padding: int) -> None:
    data = serialize_rtcp(packets, padding=padding)
    assert parse_rtcp(data, strict=False) == packets
    if isinstance(packets[0], SenderReport | ReceiverReport):
        assert parse_rtcp(data) == packets


@given(st.binary(max_size=200), st.booleans())
def test_random_bytes_parse_or_raise_rtcp_error(data: bytes, strict: bool) -> None:
    try:
        packets = parse_rtcp(data, strict=strict)
    except RtcpError:
        return
    assert packets


@given(st.lists(rtcp_packets, min_size=1, max_size=4), st.integers(0, 3), u8)
def test_corrupted_compound_packets_raise_only_rtcp_error(
    packets: list, position: int, value: int
) -> None:
    data = bytearray(serialize_rtcp(packets))
    data[min(position * 7, len(data) - 1)] = value
    try:
        parse_rtcp(bytes(data), strict=False)
    except RtcpError:
        pass


@given(st.lists(st.binary(max_size=80), max_size=20))
@settings(max_examples=50)
def test_session_survives_garbage(datagrams: list[bytes]) -> None:
    import random

    session = RtcpSession(1, "me", 8000, random.Random(0), 0.0)
    for i, data in enumerate(datagrams):
        session.receive_datagram(data, float(i))
    stats = session.statistics()
    assert stats.rtcp_received + stats.rtcp_dropped == len(datagrams)


@given(st.binary(max_size=12))
def test_telephone_event_parse_or_raise(data: bytes) -> None:
    try:
        event = TelephoneEvent.parse(data)
    except DtmfError:
        return
    assert TelephoneEvent.parse(event.serialize()) == event


@given(st.lists(st.tuples(st.binary(min_size=4, max_size=4), u32, st.floats(0, 10)), max_size=40))
def test_dtmf_receiver_reports_each_event_timestamp_once(
    packets: list[tuple[bytes, int, float]],
) -> None:
    receiver = DtmfReceiver()
    digits = []
    for payload, timestamp, now in sorted(packets, key=lambda p: p[2]):
        digits += receiver.receive(payload, timestamp % 4, now)  # few distinct events
        digits += receiver.handle_timer(now)
    digits += receiver.handle_timer(1e9)
    assert len(digits) <= len({t % 4 for _, t, _ in packets})
    assert all(d.duration_ms >= 0 for d in digits)


@given(st.lists(st.tuples(u16, u32, st.floats(0, 100)), max_size=60))
def test_receiver_stats_never_break(updates: list[tuple[int, int, float]]) -> None:
    stats = RtpReceiverStats(1, 8000)
    for seq, ts, now in updates:
        stats.update(seq, ts, now)
    fraction, lost, highest, jitter = stats.report()
    assert 0 <= fraction <= 255
    assert -0x800000 <= lost <= 0x7FFFFF
    assert 0 <= highest <= 0xFFFFFFFF and 0 <= jitter <= 0xFFFFFFFF


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 120),  # frame index
            st.floats(0, 0.3),  # network delay
            st.booleans(),  # duplicate
        ),
        max_size=120,
    ),
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFFFFFF),
)
def test_jitter_buffer_outputs_each_frame_at_most_once(
    sends: list[tuple[int, float, bool]], seq0: int, ts0: int
) -> None:
    buffer = JitterBuffer(JitterBufferConfig(max_packets=16))
    arrivals = []
    for index, delay, dup in sends:
        arrivals.append((index * 0.02 + delay, index))
        if dup:
            arrivals.append((index * 0.02 + delay + 0.001, index))
    arrivals.sort()
    out = []
    tick = 0
    for arrival, index in [*arrivals, (4.0, -1)]:
        while tick * 0.02 < arrival:
            out.append(buffer.get(tick * 0.02))
            tick += 1
        if index >= 0:
            buffer.put(
                index.to_bytes(2, "big"),
                (seq0 + index) & 0xFFFF,
                (ts0 + 160 * index) % 2**32,
                arrival,
            )
    assert len(out) == tick  # one frame per get
    played = [f.timestamp for f in out if f.kind in (FrameKind.AUDIO, FrameKind.CONCEAL)]
    assert len(played) == len(set(played))
    for frame in out:
        if frame.kind is FrameKind.AUDIO:
            assert frame.timestamp is not None and frame.payload is not None
            index = int.from_bytes(frame.payload, "big")
            assert frame.timestamp == (ts0 + 160 * index) % 2**32
    s = buffer.statistics()
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
