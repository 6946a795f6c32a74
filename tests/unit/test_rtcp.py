"""RTCP packets (RFC 3550 §6) and the sans-IO RtcpSession (§6.2-6.4, A.7)."""

from __future__ import annotations

import calendar
import itertools
import random
import struct

import pytest

from p2psip.media.rtcp import (
    App,
    AppReceived,
    Bye,
    ByeReceived,
    ReceiverReport,
    ReportBlock,
    ReportReceived,
    RtcpConfig,
    RtcpError,
    RtcpSession,
    SdesChunk,
    SenderReport,
    SenderReportReceived,
    SourceDescribed,
    SourceDescription,
    SourceTimedOut,
    SsrcCollision,
    UnknownRtcp,
    UnknownRtcpReceived,
    ntp_from_unix,
    ntp_middle32,
    parse_rtcp,
    serialize_rtcp,
    unix_from_ntp,
)
from p2psip.media.rtp import RtpPacket, RtpSender

# -- NTP (§4) and the round-trip example of §6.4.1 Figure 2 -------------------------------------

FIG2_SR_TIME = calendar.timegm((1995, 11, 10, 11, 33, 25, 0, 0, 0)) + 0.125
FIG2_A_TIME = calendar.timegm((1995, 11, 10, 11, 33, 36, 0, 0, 0)) + 0.5


def test_ntp_timestamp_of_figure_2() -> None:
    ntp = ntp_from_unix(FIG2_SR_TIME)
    assert ntp == (0xB44DB705 << 32) | 0x20000000
    assert ntp_middle32(ntp) == 0xB7052000  # the LSR of Figure 2
    assert ntp_middle32(ntp_from_unix(FIG2_A_TIME)) == 0xB7108000  # A of Figure 2
    assert unix_from_ntp(ntp) == pytest.approx(FIG2_SR_TIME, abs=1e-6)


def test_ntp_fraction_never_overflows() -> None:
    ntp = ntp_from_unix(1.0 - 1e-12)
    assert ntp & 0xFFFFFFFF <= 0xFFFFFFFF
    assert ntp >> 32 == 2208988800


def test_round_trip_time_of_figure_2() -> None:
    now = 1000.0
    session = RtcpSession(
        1, "me@host", 8000, random.Random(0), now, wall_clock_offset=FIG2_A_TIME - now
    )
    block = ReportBlock(1, last_sr=0xB7052000, delay_since_last_sr=0x00054000)
    session.receive_datagram(serialize_rtcp([ReceiverReport(2, (block,))]), now)
    event = session.next_event()
    assert isinstance(event, ReportReceived)
    assert event.rtt_ms == pytest.approx(6125.0, abs=0.1)  # "delay 0x0006:2000 (6.125 s)"
    assert session.statistics().rtt_ms == event.rtt_ms


# -- packets ----------------------------------------------------------------------------------

BLOCK = ReportBlock(0x11223344, 25, -3, 0x0001FFFF, 120, 0xB7052000, 0x54000)


def test_sender_report_wire_format() -> None:
    sr = SenderReport(0xCAFEBABE, (0xB44DB705 << 32) | 0x20000000, 1234, 10, 1600, (BLOCK,))
    data = sr.serialize()
    assert len(data) == 52
    assert data[:4] == bytes((0x81, 200, 0, 12))  # V=2, RC=1, PT=SR, 13 words - 1
    assert data[4:8] == bytes.fromhex("cafebabe")
    assert data[8:16] == bytes.fromhex("b44db70520000000")
    assert data[16:28] == struct.pack("!III", 1234, 10, 1600)
    assert data[28:32] == bytes.fromhex("11223344")
    assert data[32:36] == bytes((25, 0xFF, 0xFF, 0xFD))  # fraction 25, cumulative -3
    assert parse_rtcp(data) == [sr]


def test_receiver_report_and_empty_rr() -> None:
    rr = ReceiverReport(7, (BLOCK, ReportBlock(9)), extension=b"\x01\x02\x03\x04")
    assert parse_rtcp(rr.serialize()) == [rr]
    empty = ReceiverReport(7).serialize()
    assert empty == bytes((0x80, 201, 0, 1)) + struct.pack("!I", 7)


def test_sdes_items_are_padded_to_32_bits() -> None:
    chunk = SdesChunk(5, ((1, b"user@host"), (6, b"p2psip")))
    data = SourceDescription((chunk, SdesChunk.with_cname(6, "bob@example"))).serialize()
    assert len(data) % 4 == 0
    # chunk 1: SSRC + 2+9 + 2+6 = 23 octets, so 1 null octet ends the list (24)
    assert data[4 + 23] == 0 and data[4 + 24 : 4 + 28] == struct.pack("!I", 6)
    (sdes,) = parse_rtcp(data, strict=False)
    assert isinstance(sdes, SourceDescription)
    assert sdes.chunks[0] == chunk
    assert sdes.chunks[1].cname == "bob@example"


def test_sdes_chunk_of_exact_word_length_gets_a_full_null_word() -> None:
    chunk = SdesChunk(5, ((1, b"ab"),))  # 4 + 2 + 2 = 8 octets: 4 null octets follow
    assert chunk.serialize() == struct.pack("!I", 5) + b"\x01\x02ab" + bytes(4)
    assert parse_rtcp(SourceDescription((chunk,)).serialize(), strict=False)[0].chunks == (chunk,)


def test_bye_with_and_without_reason() -> None:
    for bye in (Bye((1, 2)), Bye((3,), "going away"), Bye((), "")):
        assert parse_rtcp(bye.serialize(), strict=False) == [bye]
    assert len(Bye((3,), "abc").serialize()) == 12  # 4 + 4 + (1 + 3)


def test_app_and_unknown_packets() -> None:
    app = App(9, 3, "p2ps", b"12345678")
    unknown = UnknownRtcp(206, 1, b"\x00\x00\x00\x01\x00\x00\x00\x02")  # a PSFB PLI
    assert parse_rtcp(serialize_rtcp([ReceiverReport(9), app, unknown])) == [
        ReceiverReport(9),
        app,
        unknown,
    ]


def test_compound_with_padding_on_the_last_packet() -> None:
    packets = [SenderReport(1, 2, 3, 4, 5), SourceDescription((SdesChunk.with_cname(1, "a@b"),))]
    data = serialize_rtcp(packets, padding=8)
    assert len(data) % 4 == 0 and data[-1] == 8
    assert data[0] & 0x20 == 0  # not on the first packet
    assert parse_rtcp(data) == packets


@pytest.mark.parametrize(
    "packet",
    [
        ReportBlock(1, fraction_lost=256),
        ReportBlock(1, cumulative_lost=0x800000),
        ReportBlock(1, cumulative_lost=-0x800001),
        ReportBlock(1 << 32),
        SenderReport(1, extension=b"abc"),
        ReceiverReport(1, tuple(ReportBlock(i) for i in range(32))),
        SourceDescription((SdesChunk(1, ((1, b"x" * 256),)),)),
        SourceDescription((SdesChunk(1, ((0, b"x"),)),)),
        Bye(tuple(range(32))),
        Bye((1,), "x" * 256),
        App(1, 32, "abcd"),
        App(1, 0, "abc"),
        App(1, 0, "abcé"),
        App(1, 0, "abcd", b"123"),
        UnknownRtcp(205, 0, b"123"),
    ],
)
def test_serialize_refuses_invalid_packets(packet: object) -> None:
    with pytest.raises(RtcpError):
        packet.serialize()  # type: ignore[attr-defined]


def test_serialize_refuses_bad_padding_and_empty_compound() -> None:
    with pytest.raises(RtcpError):
        serialize_rtcp([ReceiverReport(1)], padding=3)
    with pytest.raises(RtcpError):
        serialize_rtcp([])


# -- validity checks (A.2) ----------------------------------------------------------------

RR_SDES = serialize_rtcp([ReceiverReport(1), SourceDescription((SdesChunk.with_cname(1, "x"),))])


def _with_octet(data: bytes, index: int, value: int) -> bytes:
    return data[:index] + bytes((value,)) + data[index + 1 :]


def test_strict_parsing_wants_sr_or_rr_first() -> None:
    sdes_first = SourceDescription((SdesChunk.with_cname(1, "x"),)).serialize()
    with pytest.raises(RtcpError, match="starts with"):
        parse_rtcp(sdes_first)
    assert len(parse_rtcp(sdes_first, strict=False)) == 1  # RFC 5506 reduced-size


def test_padding_only_on_the_last_packet_when_strict() -> None:
    first = ReceiverReport(1).serialize(padding=4)
    data = first + SourceDescription((SdesChunk.with_cname(1, "x"),)).serialize()
    with pytest.raises(RtcpError, match="padding"):
        parse_rtcp(data)
    assert parse_rtcp(data, strict=False)[0] == ReceiverReport(1)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "too short"),
        (b"\x80\xc9\x00", "too short"),
        (_with_octet(RR_SDES, 0, 0x40), "version"),
        (_with_octet(RR_SDES, 8, 0x40), "version"),
        (RR_SDES + b"\x80", "trailing"),
        (RR_SDES[:-4], "exceeds"),
        (_with_octet(RR_SDES, 3, 9), "exceeds"),
        (bytes((0x81, 201, 0, 1)) + bytes(4), "report blocks"),
        (bytes((0x80, 200, 0, 1)) + bytes(4), "sender information"),
        (bytes((0x80, 201, 0, 0)), "without SSRC"),
        (
            ReceiverReport(1).serialize()[:-1] + b"\x00" + bytes((0xA0, 201, 0, 1, 0, 0, 0, 0)),
            "padding",
        ),
        (bytes((0xA0, 201, 0, 1, 0, 0, 0, 9)), "padding count 9"),
        (bytes((0xA0, 201, 0, 1, 0, 0, 0, 0)), "padding count 0"),
        # libsrtp's SRTCP test plaintext announces 48 octets but carries 24
        (bytes.fromhex("81c8000bcafebabe" + "ab" * 16), "exceeds"),
    ],
)
def test_invalid_compound_packets_raise(data: bytes, match: str) -> None:
    with pytest.raises(RtcpError, match=match):
        parse_rtcp(data)


@pytest.mark.parametrize(
    ("count", "body"),
    [
        (1, struct.pack("!I", 1) + b"\x01\x02ab"),  # no end of the item list
        (1, struct.pack("!I", 1) + b"\x01\x09abc\x00\x00\x00"),  # item runs past the packet
        (2, struct.pack("!I", 1) + b"\x01\x01a\x00"),  # a second chunk announced, not there
        (1, b"\x00\x00"),  # SSRC truncated
    ],
)
def test_malformed_sdes(count: int, body: bytes) -> None:
    padded = body + bytes(-len(body) % 4)
    sdes = bytes((0x80 | count, 202)) + struct.pack("!H", len(padded) // 4) + padded
    with pytest.raises(RtcpError, match="SDES"):
        parse_rtcp(ReceiverReport(1).serialize() + sdes)


def test_malformed_bye_and_app() -> None:
    rr = ReceiverReport(1).serialize()
    with pytest.raises(RtcpError, match="BYE"):
        parse_rtcp(rr + bytes((0x83, 203, 0, 1)) + bytes(4))  # 3 sources in 1 word
    with pytest.raises(RtcpError, match="reason"):
        parse_rtcp(rr + bytes((0x81, 203, 0, 2)) + bytes(4) + b"\x09abc")
    with pytest.raises(RtcpError, match="APP"):
        parse_rtcp(rr + bytes((0x80, 204, 0, 1)) + bytes(4))


def test_every_prefix_of_a_compound_raises_or_parses_whole_packets() -> None:
    parts = [
        SenderReport(1, 2, 3, 4, 5, (BLOCK,)).serialize(),
        SourceDescription((SdesChunk.with_cname(1, "alice@example.com"),)).serialize(),
        Bye((1,), "bye").serialize(),
    ]
    data = b"".join(parts)
    boundaries = {len(parts[0]), len(parts[0]) + len(parts[1]), len(data)}
    for end in range(len(data) + 1):
        try:
            packets = parse_rtcp(data[:end])
        except RtcpError:
            assert end not in boundaries
        else:
            assert end in boundaries and packets


# -- session ------------------------------------------------------------------------------


def _session(ssrc: int = 0x1111, seed: int = 1, now: float = 0.0, **config: object) -> RtcpSession:
    return RtcpSession(
        ssrc, f"{ssrc}@host", 8000, random.Random(seed), now, config=RtcpConfig(**config)
    )  # type: ignore[arg-type]


def _run(session: RtcpSession, until: float) -> list[tuple[float, bytes]]:
    sent = []
    while (deadline := session.next_timeout()) is not None and deadline <= until:
        session.handle_timer(deadline)
        sent.extend((deadline, data) for data in session.datagrams_to_send())
    return sent


def test_report_intervals_follow_a7_without_reconsideration() -> None:
    session = _session(timer_reconsideration=False)
    sent = _run(session, 3000.0)
    gaps = [b - a for (a, _), (b, _) in itertools.pairwise(sent)]
    assert len(gaps) > 500
    # 5 s x uniform[0.5, 1.5] / (e - 3/2): mean 4.10 s
    assert sum(gaps) / len(gaps) == pytest.approx(5 / 1.21828, rel=0.03)


def test_report_intervals_follow_a7() -> None:
    session = _session()
    first = session.next_timeout()
    assert first is not None
    # initial: half the 5 s minimum, times [0.5, 1.5], divided by e - 3/2
    assert 2.5 * 0.5 / 1.21828 <= first <= 2.5 * 1.5 / 1.21828
    sent = _run(session, 600.0)
    times = [t for t, _ in sent]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(times) > 100
    assert min(gaps) >= 5 * 0.5 / 1.21828 - 1e-9
    assert max(gaps) <= 5 * 1.5 / 1.21828 + 1e-9
    # reconsideration (§6.3.6) redraws when the timer fires: later on average than one draw
    assert 5 / 1.21828 < sum(gaps) / len(gaps) < 5 * 1.5 / 1.21828
    for _, data in sent:
        rr, sdes = parse_rtcp(data)
        assert rr == ReceiverReport(0x1111)  # nothing sent or received: empty RR
        assert isinstance(sdes, SourceDescription) and sdes.chunks[0].cname == "4369@host"


def test_reduced_minimum_and_immediate_first_report() -> None:
    session = _session(
        session_bandwidth=1_000_000, reduced_minimum=True, immediate_first_report=True, now=10.0
    )
    assert session.next_timeout() == 10.0
    sent = _run(session, 40.0)
    gaps = [b - a for (a, _), (b, _) in itertools.pairwise(sent)]
    assert sent[0][0] == 10.0
    assert max(gaps) <= 0.36 * 1.5 / 1.21828 + 1e-9  # 360 / 1000 kbit/s
    assert min(gaps) >= 0.36 * 0.5 / 1.21828 - 1e-9


def test_interval_grows_with_membership_and_low_bandwidth() -> None:
    session = _session(session_bandwidth=8000)  # 50 octets/s of RTCP
    for ssrc in range(100, 120):
        session.receive_datagram(
            serialize_rtcp(
                [ReceiverReport(ssrc), SourceDescription((SdesChunk.with_cname(ssrc, "x"),))]
            ),
            0.0,
        )
    assert session.members == 21
    size = session.avg_rtcp_size
    deterministic = size * 21 / (50 * 0.75)
    assert deterministic > 5
    _run(session, 1.0)  # consume the initial timer (may be reconsidered)
    start = session.next_timeout()
    assert start is not None
    session.handle_timer(start)
    nxt = session.next_timeout()
    assert nxt is not None
    assert deterministic * 0.5 / 1.21828 * 0.8 <= nxt - start <= deterministic * 1.5 / 1.21828 * 1.2


def _connect(delay: float = 0.05, loss: float = 0.0, seconds: float = 30.0, seed: int = 7):
    """Two endpoints streaming PCMU at each other over a link with a fixed one-way delay."""
    rng = random.Random(seed)
    a_sender = RtpSender(0, 8000, random.Random(seed + 1))
    b_sender = RtpSender(0, 8000, random.Random(seed + 2))
    a = RtcpSession(
        a_sender.ssrc, "alice@a", 8000, random.Random(seed + 3), 0.0, wall_clock_offset=1.7e9
    )
    b = RtcpSession(
        b_sender.ssrc, "bob@b", 8000, random.Random(seed + 4), 0.0, wall_clock_offset=1.7e9 + 123.0
    )  # B's wall clock is off by 2 minutes
    in_flight: list[tuple[float, str, bytes]] = []
    dropped: list[int] = []
    t = 0.0
    index = 0
    while t < seconds:
        for sender, session, dest in ((a_sender, a, "b"), (b_sender, b, "a")):
            packet = sender.next_packet(bytes(160))
            session.rtp_sent(packet.timestamp, len(packet.payload), t)
            if dest == "b" and rng.random() < loss:
                dropped.append(index)
                continue
            in_flight.append((t + delay, dest + "-rtp", packet.serialize()))
        for session, dest in ((a, "b"), (b, "a")):
            deadline = session.next_timeout()
            if deadline is not None and deadline <= t:
                session.handle_timer(t)
                for data in session.datagrams_to_send():
                    in_flight.append((t + delay, dest + "-rtcp", data))
        for item in sorted(x for x in in_flight if x[0] <= t):
            in_flight.remove(item)
            _, kind, data = item
            session = a if kind.startswith("a") else b
            if kind.endswith("rtcp"):
                session.receive_datagram(data, t)
            else:
                session.rtp_received(RtpPacket.parse(data), t)
        t = round(t + 0.02, 6)
        index += 1
    return a, b, dropped


def _events(session: RtcpSession) -> list[object]:
    events = []
    while (event := session.next_event()) is not None:
        events.append(event)
    return events


def test_two_sessions_measure_rtt_loss_and_jitter() -> None:
    # one-way delay of 3 loop ticks (60 ms), so the round trip is 120 ms
    a, b, dropped = _connect(delay=0.06 - 1e-9, loss=0.1, seconds=40.0)
    assert len(dropped) > 100 and dropped[0] > 1  # (seeded) probation passes on packets 0, 1
    sa, sb = a.statistics(), b.statistics()
    assert sa.rtt_ms == pytest.approx(120.0, abs=0.1)
    assert sb.rtt_ms == pytest.approx(120.0, abs=0.1)
    # B counts A's losses exactly (A.3) and reports them back to A
    in_flight = 3  # the last 3 packets are still on the link
    assert sb.cumulative_lost == len([i for i in dropped if i < 2000 - in_flight])
    assert sa.remote_cumulative_lost is not None
    assert abs(sa.remote_cumulative_lost - sb.cumulative_lost) <= 60  # one report interval
    assert sa.remote_fraction_lost is not None and 0.0 < sa.remote_fraction_lost < 0.3
    assert sa.cumulative_lost == 0 and sa.remote_jitter_ms == pytest.approx(0.0, abs=0.2)
    assert sb.jitter_ms == pytest.approx(0.0, abs=0.2)
    assert sa.packets_sent == 2000 and sa.octets_sent == 2000 * 160
    # probation: the first packet is not counted
    assert sa.packets_received == 2000 - 1 - in_flight
    assert sb.packets_received == 2000 - 1 - in_flight - sb.cumulative_lost
    assert sa.rtcp_received > 5 and sa.rtcp_sent > 5 and sa.rtcp_dropped == 0
    events = _events(a)
    assert any(isinstance(e, SenderReportReceived) for e in events)
    assert SourceDescribed(b.ssrc, "bob@b") in events


def test_sr_fields() -> None:
    session = RtcpSession(
        5,
        "me@h",
        8000,
        random.Random(3),
        0.0,
        wall_clock_offset=1000.0,
        config=RtcpConfig(immediate_first_report=True),
    )
    session.rtp_sent(1000, 160, 0.0)
    session.rtp_sent(1160, 100, 0.02)
    session.handle_timer(0.5)
    (data,) = session.datagrams_to_send()
    sr, _ = parse_rtcp(data)
    assert isinstance(sr, SenderReport)
    assert (sr.ssrc, sr.packet_count, sr.octet_count) == (5, 2, 260)
    assert sr.rtp_timestamp == 1160 + round(0.48 * 8000)
    assert unix_from_ntp(sr.ntp_timestamp) == pytest.approx(1000.5, abs=1e-6)


def test_report_blocks_only_for_sources_heard_since_the_last_report() -> None:
    session = RtcpSession(
        5,
        "me@h",
        8000,
        random.Random(3),
        0.0,
        config=RtcpConfig(immediate_first_report=True, timer_reconsideration=False),
    )
    for i in range(10):
        session.rtp_received(RtpPacket(0, i, i * 160, 77, bytes(160)), i * 0.02)
    session.handle_timer(0.5)
    rr, _ = parse_rtcp(session.datagrams_to_send()[0])
    assert isinstance(rr, ReceiverReport)
    (block,) = rr.reports
    assert (block.ssrc, block.highest_sequence, block.cumulative_lost) == (77, 9, 0)
    assert (block.last_sr, block.delay_since_last_sr) == (0, 0)
    deadline = session.next_timeout()
    assert deadline is not None
    session.handle_timer(deadline)
    rr, _ = parse_rtcp(session.datagrams_to_send()[0])
    assert rr == ReceiverReport(5)  # nothing heard since


def test_dlsr_echoes_the_last_sender_report() -> None:
    session = RtcpSession(
        5,
        "me@h",
        8000,
        random.Random(3),
        0.0,
        config=RtcpConfig(immediate_first_report=True, timer_reconsideration=False),
    )
    for i in range(3):
        session.rtp_received(RtpPacket(0, i, i * 160, 77, bytes(160)), i * 0.02)
    ntp = (0xB44DB705 << 32) | 0x20000000
    session.receive_datagram(SenderReport(77, ntp, 0, 3, 480).serialize(), 0.1)
    session.handle_timer(1.35)
    rr, _ = parse_rtcp(session.datagrams_to_send()[0])
    assert rr.reports[0].last_sr == 0xB7052000
    assert rr.reports[0].delay_since_last_sr == int(1.25 * 65536)


def test_bye_events_and_leaving() -> None:
    session = _session()
    for seq in (1, 2, 3):
        session.rtp_received(RtpPacket(0, seq, seq * 160, 42, b"xy"), seq * 0.02)
    session.receive_datagram(serialize_rtcp([ReceiverReport(42), Bye((42,), "hang up")]), 1.0)
    assert ByeReceived(42, "hang up") in _events(session)
    assert session.members == 1
    # the totals keep what the departed source sent (2: the first was on probation)
    assert (session.statistics().packets_received, session.statistics().octets_received) == (2, 4)
    session.bye(2.0, "done")
    (data,) = session.datagrams_to_send()
    packets = parse_rtcp(data)
    assert packets[-1] == Bye((0x1111,), "done")
    assert session.next_timeout() is None
    session.handle_timer(100.0)
    assert session.datagrams_to_send() == []


def test_silent_members_time_out() -> None:
    session = _session()
    session.receive_datagram(serialize_rtcp([ReceiverReport(42)]), 0.0)
    assert session.members == 2
    _run(session, 20.0)
    assert session.members == 2
    _run(session, 40.0)  # 5 x 5 s without a word
    assert session.members == 1
    assert SourceTimedOut(42) in _events(session)


def test_malformed_rtcp_is_counted_not_raised() -> None:
    session = _session()
    session.receive_datagram(b"\x00\x01garbage", 0.0)
    session.receive_datagram(b"", 0.0)
    assert session.statistics().rtcp_dropped == 2
    assert session.next_event() is None


def test_collision_and_own_packets() -> None:
    session = _session(ssrc=9)
    own = serialize_rtcp(
        [ReceiverReport(9), SourceDescription((SdesChunk.with_cname(9, "9@host"),))]
    )
    session.receive_datagram(own, 0.0)
    assert session.next_event() is None  # our own packet looped back
    other = serialize_rtcp(
        [ReceiverReport(9), SourceDescription((SdesChunk.with_cname(9, "mallory@x"),))]
    )
    session.receive_datagram(other, 0.0)
    assert SsrcCollision(9, "mallory@x") in _events(session)
    session.change_ssrc(10, 0.0)
    (data,) = session.datagrams_to_send()
    assert parse_rtcp(data)[-1] == Bye((9,), "SSRC collision")
    assert session.ssrc == 10
    assert not session.rtp_received(RtpPacket(0, 1, 0, 10, b""), 0.0)  # our own SSRC


def test_app_and_unknown_become_events() -> None:
    session = _session()
    app = App(3, 1, "test", b"abcd")
    pli = UnknownRtcp(206, 1, bytes(8))
    session.receive_datagram(serialize_rtcp([ReceiverReport(3), app, pli]), 0.0)
    assert _events(session) == [AppReceived(app), UnknownRtcpReceived(pli)]


def test_rtt_ignores_negative_results() -> None:
    now = 100.0
    session = RtcpSession(1, "me", 8000, random.Random(0), now, wall_clock_offset=FIG2_A_TIME - now)
    block = ReportBlock(1, last_sr=0xB7108000, delay_since_last_sr=0x00054000)  # in the future
    session.receive_datagram(serialize_rtcp([ReceiverReport(2, (block,))]), now)
    event = session.next_event()
    assert isinstance(event, ReportReceived) and event.rtt_ms is None
    assert session.statistics().rtt_ms is None


def test_a_report_built_before_the_sr_arrival_time_does_not_fail() -> None:
    # the media clock may stamp a report with its (earlier) deadline while the SR's arrival
    # was stamped with the loop's later time: DLSR must clamp at 0, never raise
    config = RtcpConfig(immediate_first_report=True, timer_reconsideration=False)
    a = RtcpSession(1, "a@h", 8000, random.Random(1), 0.0, config=config)
    b = RtcpSession(2, "b@h", 8000, random.Random(2), 0.0, config=config)
    for i in range(5):
        a.rtp_sent(i * 160, 160, i * 0.02)
        b.rtp_received(RtpPacket(0, i, i * 160, 1, bytes(160)), i * 0.02)
    a.handle_timer(a.next_timeout())
    for datagram in a.datagrams_to_send():
        b.receive_datagram(datagram, 10.0)  # the SR "arrives" at t = 10 s
    b.rtp_received(RtpPacket(0, 5, 800, 1, bytes(160)), 10.0)
    report = b._build_compound(9.99)  # built for an earlier deadline
    parsed = parse_rtcp(report)
    block = parsed[0].reports[0]
    assert block.delay_since_last_sr == 0 and block.ssrc == 1
