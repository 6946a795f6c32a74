"""RTP packets, demultiplexing, sender numbering and RFC 3550 A.1/A.3/A.8 receiver statistics."""

from __future__ import annotations

import random
import struct

import pytest

from p2psip.errors import P2PSIPError
from p2psip.media.rtp import (
    PacketKind,
    RtpError,
    RtpExtension,
    RtpPacket,
    RtpReceiverStats,
    RtpSender,
    classify_datagram,
    is_rtcp,
)

# The plaintext RTP packet of libsrtp's own known-answer test (cisco/libsrtp test/srtp_driver.c
# srtp_validate(), also in /work/shared/conformance/vectors/srtp/srtp_vectors.json) and the RTP
# header of RFC 3711 Appendix B.1.
LIBSRTP_RTP = bytes.fromhex("800f1234decafbadcafebabe" + "ab" * 16)
RFC3711_B1_HEADER = bytes.fromhex("806e5cba50681de55c621599")


# -- parsing ----------------------------------------------------------------------------------


def test_parse_libsrtp_test_packet() -> None:
    packet = RtpPacket.parse(LIBSRTP_RTP)
    assert packet == RtpPacket(15, 0x1234, 0xDECAFBAD, 0xCAFEBABE, b"\xab" * 16)
    assert packet.serialize() == LIBSRTP_RTP


def test_parse_rfc3711_header_with_empty_payload() -> None:
    packet = RtpPacket.parse(RFC3711_B1_HEADER)
    assert (packet.payload_type, packet.sequence_number) == (110, 0x5CBA)
    assert (packet.timestamp, packet.ssrc, packet.payload) == (0x50681DE5, 0x5C621599, b"")
    assert not packet.marker


def test_marker_bit_and_payload_type_share_an_octet() -> None:
    data = struct.pack("!BBHII", 0x80, 0x80 | 8, 1, 2, 3) + b"x"
    packet = RtpPacket.parse(data)
    assert packet.marker and packet.payload_type == 8
    assert packet.serialize() == data


def test_csrc_extension_and_padding_are_parsed_and_rebuilt() -> None:
    data = (
        struct.pack("!BBHII", 0x80 | 0x20 | 0x10 | 2, 96, 7, 8, 9)
        + struct.pack("!II", 0x11111111, 0x22222222)
        + struct.pack("!HH", 0xBEDE, 1)
        + b"\x10\xaa\x00\x00"
        + b"payload"
        + b"\x00\x00\x03"
    )
    packet = RtpPacket.parse(data)
    assert packet.csrc == (0x11111111, 0x22222222)
    assert packet.extension == RtpExtension(0xBEDE, b"\x10\xaa\x00\x00")
    assert packet.payload == b"payload"
    assert packet.padding == 3
    assert packet.serialize() == data


def test_memoryview_and_bytearray_input() -> None:
    assert RtpPacket.parse(memoryview(LIBSRTP_RTP)) == RtpPacket.parse(bytearray(LIBSRTP_RTP))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "too short"),
        (LIBSRTP_RTP[:11], "too short"),
        (b"\x40" + LIBSRTP_RTP[1:], "version 1"),
        (b"\x00" + LIBSRTP_RTP[1:], "version 0"),
        (b"\xc0" + LIBSRTP_RTP[1:], "version 3"),
        (b"\x83" + LIBSRTP_RTP[1:20], "CSRC list truncated"),
        (b"\x90" + LIBSRTP_RTP[1:12] + b"\xbe\xde", "extension truncated"),
        (b"\x90" + LIBSRTP_RTP[1:12] + b"\xbe\xde\x00\x05" + b"1234", "extension truncated"),
        (b"\xa0" + LIBSRTP_RTP[1:12] + b"abc\x00", "padding count 0"),
        (b"\xa0" + LIBSRTP_RTP[1:12] + b"abc\x05", "padding count 5"),
        (b"\xa0" + LIBSRTP_RTP[1:12], "padding count"),
    ],
)
def test_malformed_packets_raise_rtp_error(data: bytes, message: str) -> None:
    with pytest.raises(RtpError, match=message.split()[0]):
        RtpPacket.parse(data)


def test_rtp_error_is_a_p2psip_error() -> None:
    assert issubclass(RtpError, P2PSIPError)


def test_every_truncation_of_a_full_packet_raises_or_parses() -> None:
    full = RtpPacket(
        96, 1, 2, 3, b"voice", csrc=(5, 6), extension=RtpExtension(1, b"abcd"), padding=4
    ).serialize()
    for end in range(len(full)):
        try:
            RtpPacket.parse(full[:end])
        except RtpError:
            continue


def test_padding_may_cover_the_whole_payload() -> None:
    data = b"\xa0" + LIBSRTP_RTP[1:12] + b"\x00\x00\x00\x04"
    assert RtpPacket.parse(data).payload == b""


@pytest.mark.parametrize(
    "packet",
    [
        RtpPacket(128, 0, 0, 0),
        RtpPacket(-1, 0, 0, 0),
        RtpPacket(0, 70000, 0, 0),
        RtpPacket(0, 0, 1 << 32, 0),
        RtpPacket(0, 0, 0, -5),
        RtpPacket(0, 0, 0, 0, csrc=tuple(range(16))),
        RtpPacket(0, 0, 0, 0, csrc=(1 << 32,)),
        RtpPacket(0, 0, 0, 0, extension=RtpExtension(1, b"abc")),
        RtpPacket(0, 0, 0, 0, extension=RtpExtension(1 << 16, b"")),
        RtpPacket(0, 0, 0, 0, padding=256),
    ],
)
def test_serialize_refuses_out_of_range_fields(packet: RtpPacket) -> None:
    with pytest.raises(RtpError):
        packet.serialize()


# -- demultiplexing -----------------------------------------------------------------------------


def test_classify_first_octet_ranges_of_rfc7983() -> None:
    expected = {}
    for first in range(256):
        if first <= 3:
            expected[first] = PacketKind.STUN
        elif 16 <= first <= 19:
            expected[first] = PacketKind.ZRTP
        elif 20 <= first <= 63:
            expected[first] = PacketKind.DTLS
        elif 64 <= first <= 79:
            expected[first] = PacketKind.TURN_CHANNEL
        elif 128 <= first <= 191:
            expected[first] = PacketKind.RTP
        else:
            expected[first] = PacketKind.UNKNOWN
    for first, kind in expected.items():
        assert classify_datagram(bytes((first, 0, 0, 0))) is kind, first
    assert classify_datagram(b"") is PacketKind.UNKNOWN


def test_rtcp_is_told_from_rtp_by_the_second_octet() -> None:
    # RFC 5761 §4: RTCP packet types 192..223 (SR=200, RR=201, ... RTPFB=205, PSFB=206, XR=207)
    for second in range(256):
        kind = classify_datagram(bytes((0x80, second, 0, 0)))
        assert kind is (PacketKind.RTCP if 192 <= second <= 223 else PacketKind.RTP), second
    assert is_rtcp(bytes.fromhex("81c8000bcafebabe"))
    assert not is_rtcp(LIBSRTP_RTP)
    assert not is_rtcp(b"\x80")
    # PCMU with the marker bit (0x80) is RTP
    assert classify_datagram(b"\x80\x80\x00\x01") is PacketKind.RTP


# -- sender ---------------------------------------------------------------------------------


def test_sender_initial_values_come_from_the_injected_rng() -> None:
    a = RtpSender(0, 8000, random.Random(42))
    b = RtpSender(0, 8000, random.Random(42))
    c = RtpSender(0, 8000, random.Random(43))
    assert (a.ssrc, a.sequence_number, a.timestamp) == (b.ssrc, b.sequence_number, b.timestamp)
    assert (a.ssrc, a.sequence_number, a.timestamp) != (c.ssrc, c.sequence_number, c.timestamp)


def test_sender_numbers_packets_and_wraps() -> None:
    sender = RtpSender(0, 8000, random.Random(1))
    sender.sequence_number = 65534
    sender.timestamp = 0xFFFFFF00
    packets = [sender.next_packet(bytes(160)) for _ in range(4)]
    assert [p.sequence_number for p in packets] == [65534, 65535, 0, 1]
    assert [p.timestamp for p in packets] == [0xFFFFFF00, 0xFFFFFFA0, 0x40, 0xE0]
    assert [p.marker for p in packets] == [True, False, False, False]
    assert all(p.ssrc == sender.ssrc for p in packets)
    assert (sender.packets_sent, sender.octets_sent) == (4, 640)


def test_marker_after_silence_and_custom_frame_length() -> None:
    sender = RtpSender(9, 16000, random.Random(2), samples_per_frame=320)
    start = sender.timestamp
    first = sender.next_packet(b"a")
    second = sender.next_packet(b"b")
    sender.skip(3200)  # 200 ms of silence not sent
    third = sender.next_packet(b"c", 640)
    fourth = sender.next_packet(b"d")
    assert [first.marker, second.marker, third.marker, fourth.marker] == [
        True,
        False,
        True,
        False,
    ]
    assert third.timestamp == (start + 640 + 3200) & 0xFFFFFFFF
    assert fourth.timestamp == (start + 640 + 3200 + 640) & 0xFFFFFFFF
    assert third.sequence_number == (second.sequence_number + 1) & 0xFFFF
    with pytest.raises(RtpError):
        sender.skip(-1)


def test_next_datagram_equals_serialized_next_packet() -> None:
    a = RtpSender(0, 8000, random.Random(5))
    b = RtpSender(0, 8000, random.Random(5))
    for i in range(3):
        assert a.next_datagram(bytes([i]) * 160) == b.next_packet(bytes([i]) * 160).serialize()


def test_extra_packet_shares_sequence_space_but_not_media_timestamp() -> None:
    sender = RtpSender(0, 8000, random.Random(3))
    audio = sender.next_packet(b"a")
    media_ts = sender.timestamp
    event = sender.extra_packet(b"\x05\x0a\x00\xa0", 101, audio.timestamp, marker=True)
    after = sender.next_packet(b"b")
    assert event.sequence_number == (audio.sequence_number + 1) & 0xFFFF
    assert after.sequence_number == (audio.sequence_number + 2) & 0xFFFF
    assert (event.payload_type, event.marker, event.ssrc) == (101, True, sender.ssrc)
    assert after.timestamp == media_ts


def test_change_ssrc_resets_counters() -> None:
    rng = random.Random(4)
    sender = RtpSender(0, 8000, rng)
    old = sender.ssrc
    sender.next_packet(b"x")
    new = sender.change_ssrc(rng)
    assert new != old and sender.ssrc == new
    assert (sender.packets_sent, sender.octets_sent) == (0, 0)
    assert sender.next_packet(b"y").marker


def test_sender_rejects_bad_parameters() -> None:
    with pytest.raises(RtpError):
        RtpSender(200, 8000, random.Random())
    with pytest.raises(RtpError):
        RtpSender(0, 0, random.Random())


# -- receiver statistics (A.1, A.3, A.8) ------------------------------------------------------


def feed(stats: RtpReceiverStats, seqs: list[int], start: float = 0.0) -> list[bool]:
    return [
        stats.update(seq & 0xFFFF, (seq * 160) & 0xFFFFFFFF, start + i * 0.02)
        for i, seq in enumerate(seqs)
    ]


def test_probation_needs_two_packets_in_sequence() -> None:
    stats = RtpReceiverStats(1, 8000)
    assert feed(stats, [100]) == [False]
    assert not stats.valid and stats.expected == 0
    assert stats.update(101, 101 * 160, 0.02)
    assert stats.valid
    assert (stats.received, stats.expected, stats.lost) == (1, 1, 0)
    assert stats.base_seq == 101


def test_probation_restarts_on_a_gap() -> None:
    stats = RtpReceiverStats(1, 8000)
    assert feed(stats, [10, 12, 20, 21, 22]) == [False, False, False, True, True]
    assert (stats.base_seq, stats.received, stats.expected) == (21, 2, 2)


def test_min_sequential_zero_accepts_the_first_packet() -> None:
    stats = RtpReceiverStats(1, 8000, min_sequential=0)
    assert feed(stats, [7, 8]) == [True, True]
    assert (stats.received, stats.expected) == (2, 2)


def test_loss_duplicates_and_reordering_are_counted_as_in_a3() -> None:
    stats = RtpReceiverStats(1, 8000)
    # probation (1, 2), then 3..20 with 5 and 6 lost, 9 duplicated, 12/11 swapped
    seqs = [1, 2, 3, 4, 7, 8, 9, 9, 10, 12, 11, *range(13, 21)]
    feed(stats, seqs)
    assert stats.extended_max_seq == 20
    assert stats.expected == 19  # 2..20
    assert stats.received == 18  # 2, 3, 4, 7, 8, 9, 9, 10, 12, 11, 13..20
    assert stats.lost == 1  # 5 and 6 lost, one duplicate: lost counts may be offset (A.3)


def test_sequence_wrap_extends_the_highest_sequence_number() -> None:
    stats = RtpReceiverStats(1, 8000)
    feed(stats, list(range(65530, 65536 + 10)))
    assert stats.cycles == 65536
    assert stats.extended_max_seq == 65536 + 9
    assert stats.lost == 0
    assert stats.report()[2] == 65536 + 9


def test_large_jump_is_ignored_until_confirmed_then_resyncs() -> None:
    stats = RtpReceiverStats(1, 8000)
    feed(stats, [1, 2, 3])
    assert not stats.update(10000, 0, 1.0)  # bad sequence: not counted
    assert stats.received == 2
    assert stats.update(10001, 160, 1.02)  # confirmed: a restarted sender
    assert (stats.base_seq, stats.received, stats.expected) == (10001, 1, 1)


def test_jump_within_max_dropout_counts_as_loss() -> None:
    stats = RtpReceiverStats(1, 8000)
    feed(stats, [1, 2, 2000])
    assert (stats.expected, stats.received, stats.lost) == (1999, 2, 1997)


def test_old_packet_within_misorder_is_counted_not_restarted() -> None:
    stats = RtpReceiverStats(1, 8000)
    feed(stats, [500, 501, 502, 450])
    assert stats.max_seq == 502 and stats.received == 3


def test_report_fraction_lost_per_interval() -> None:
    stats = RtpReceiverStats(1, 8000)
    feed(stats, [0, 1, 2, 3])  # valid from 1: 1, 2, 3 received
    assert stats.report()[:2] == (0, 0)
    # next interval: 4..13 expected, 4 of them lost
    feed(stats, [4, 5, 8, 9, 10, 13])
    fraction, lost, highest, _ = stats.report()
    assert (fraction, lost, highest) == ((4 << 8) // 10, 4, 13)
    # an interval of duplicates only: negative loss gives fraction 0
    feed(stats, [13, 13])
    assert stats.report()[:2] == (0, 2)


def test_cumulative_loss_is_clamped_to_24_bits() -> None:
    stats = RtpReceiverStats(1, 8000)
    seq = 0
    feed(stats, [0, 1])
    seq = 1
    for _ in range(3000):  # 3000 jumps of 2999: ~9 million lost, more than 0x7FFFFF
        seq = (seq + 2999) & 0xFFFF
        assert stats.update(seq, 0, 0.0)
    assert stats.lost > 0x7FFFFF
    assert stats.report()[1] == 0x7FFFFF
    stats.received += 2 * stats.expected  # as many duplicates: loss below -2**23
    assert stats.report()[1] == -0x800000


def test_jitter_is_zero_for_a_steady_stream() -> None:
    stats = RtpReceiverStats(1, 8000)
    for i in range(50):
        stats.update(i, 1000 + 160 * i, 5.0 + 0.02 * i)
    assert stats.jitter == pytest.approx(0.0, abs=1e-6)


def test_jitter_follows_the_a8_estimator() -> None:
    # transit alternates between +0 and +10 ms: |D| = 80 timestamp units for every pair
    stats = RtpReceiverStats(1, 8000, min_sequential=0)
    expected = 0.0
    for i in range(40):
        arrival = 0.02 * i + (0.01 if i % 2 else 0.0)
        stats.update(i, (0xFFFFF000 + 160 * i) & 0xFFFFFFFF, arrival)  # timestamps wrap
        if i:
            expected += (80 - expected) / 16
    assert stats.jitter == pytest.approx(expected, rel=1e-9)
    assert stats.jitter_ms == pytest.approx(expected / 8, rel=1e-9)
    assert stats.report()[3] == int(expected)


def test_receiver_rejects_bad_clock_rate() -> None:
    with pytest.raises(RtpError):
        RtpReceiverStats(1, 0)
