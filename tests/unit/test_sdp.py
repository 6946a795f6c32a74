"""SDP parsing and serialization (RFC 8866) and the typed attribute helpers.

Samples: every exchange of RFC 4317 (``sdp_samples/rfc4317.txt``), and offers in the style of
baresip (ICE + best-effort SDES + telephone-event + rtcp-mux), linphone (IPv6, RTP/SAVP, session
level ICE credentials, a=rtcp with an address), a browser (UDP/TLS/RTP/SAVPF, mDNS and TCP
candidates) and RFC 8866 (every session-level line type, multicast, repeat times).
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from p2psip.errors import P2PSIPError
from p2psip.media.sdp import (
    DEFAULT_MAX_SIZE,
    STATIC_PAYLOAD_TYPES,
    Attribute,
    Bandwidth,
    Candidate,
    Connection,
    Crypto,
    Direction,
    Fmtp,
    KeyParam,
    MediaDescription,
    Origin,
    RemoteCandidate,
    Rtcp,
    RtpMap,
    SDPError,
    SessionDescription,
    TelephoneEvent,
    Timing,
    format_fmtp_params,
    parse_fmtp_params,
    parse_sdp,
)

SAMPLES_DIR = Path(__file__).parent / "sdp_samples"
SAMPLE_FILES = sorted(p.name for p in SAMPLES_DIR.glob("*.sdp"))


def crlf(text: str) -> bytes:
    """LF text as an SDP body with CRLF line ends."""
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8")


def sample(name: str) -> bytes:
    """A sample file as a CRLF SDP body."""
    return crlf((SAMPLES_DIR / name).read_text(encoding="utf-8"))


def rfc4317() -> dict[str, dict[str, bytes]]:
    """RFC 4317 section -> {"Offer": body, "Answer": body, "Second-Offer": ...} (CRLF)."""
    sections: dict[str, dict[str, list[str]]] = {}
    section = name = ""
    for line in (SAMPLES_DIR / "rfc4317.txt").read_text(encoding="utf-8").split("\n"):
        if line.startswith("## "):
            section = line[3:]
            sections[section] = {}
        elif line.startswith("[") and line.endswith("]"):
            name = line[1:-1]
            sections[section][name] = []
        elif line and not line.startswith("#"):
            sections[section][name].append(line)
    return {
        section: {name: crlf("\n".join(lines) + "\n") for name, lines in bodies.items()}
        for section, bodies in sections.items()
    }


RFC4317 = rfc4317()
RFC4317_BODIES = [(f"{s} {n}", body) for s, b in RFC4317.items() for n, body in b.items()]


# -- round trips -------------------------------------------------------------------------------


@pytest.mark.parametrize(("label", "body"), RFC4317_BODIES, ids=[x[0] for x in RFC4317_BODIES])
def test_rfc4317_bodies_round_trip_byte_for_byte(label: str, body: bytes) -> None:
    description = parse_sdp(body)
    assert description.to_bytes() == body
    assert description.session_name == " "  # RFC 4317 §1: a single space


@pytest.mark.parametrize("name", SAMPLE_FILES)
def test_samples_round_trip_byte_for_byte(name: str) -> None:
    body = sample(name)
    description = parse_sdp(body)
    assert description.to_bytes() == body
    assert str(description) == body.decode()
    assert parse_sdp(body.decode()) == description


@pytest.mark.parametrize("name", SAMPLE_FILES)
def test_lf_line_ends_missing_final_newline_and_blank_lines_are_tolerated(name: str) -> None:
    body = sample(name)
    expected = parse_sdp(body)
    lf = body.replace(b"\r\n", b"\n")
    assert parse_sdp(lf) == expected
    assert parse_sdp(lf.rstrip(b"\n")) == expected
    assert parse_sdp(body.rstrip(b"\r\n")) == expected
    assert parse_sdp(body + b"\r\n\r\n") == expected
    assert parse_sdp(lf).to_bytes() == body


def test_count_of_rfc4317_exchanges() -> None:
    assert len(RFC4317) == 16
    assert sum(len(b) for b in RFC4317.values()) == 54


def test_memoryview_bytearray_and_str_inputs() -> None:
    body = sample("baresip_offer.sdp")
    expected = parse_sdp(body)
    assert parse_sdp(bytearray(body)) == expected
    assert parse_sdp(memoryview(body)) == expected
    assert SessionDescription.parse(body.decode()) == expected
    with pytest.raises(TypeError):
        parse_sdp(42)  # type: ignore[arg-type]


def test_non_canonical_line_order_is_accepted_and_normalised() -> None:
    body = crlf("v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nt=0 0\nc=IN IP4 192.0.2.1\na=x\nb=AS:1\n"
                "m=audio 4000 RTP/AVP 0\na=y\nc=IN IP4 192.0.2.2\n")  # fmt: skip
    description = parse_sdp(body)
    text = description.to_text()
    assert text.index("c=IN IP4 192.0.2.1") < text.index("b=AS:1") < text.index("t=0 0")
    assert text.index("c=IN IP4 192.0.2.2") < text.index("a=y")
    assert parse_sdp(text) == description
    assert parse_sdp(text).to_text() == text


# -- session-level fields ----------------------------------------------------------------------


def test_rfc4317_offer_fields() -> None:
    description = parse_sdp(RFC4317["2.1"]["Offer"])
    assert description.version == 0
    assert description.origin == Origin(
        "alice", 2890844526, 2890844526, "IN", "IP4", "host.atlanta.example.com"
    )
    assert description.connection == Connection("host.atlanta.example.com")
    assert description.connection.ip is None  # a host name is kept as text
    assert description.timings == [Timing(0, 0)]
    audio, video = description.media
    assert (audio.media, audio.port, audio.proto, audio.formats) == (
        "audio", 49170, "RTP/AVP", ["0", "8", "97"],
    )  # fmt: skip
    assert audio.payload_types == [0, 8, 97]
    assert audio.rtpmap(97) == RtpMap(97, "iLBC", 8000)
    assert video.rtpmap(32) == RtpMap(32, "MPV", 90000)
    assert description.media_connection(video) == description.connection


def test_every_session_line_type() -> None:
    description = parse_sdp(sample("multicast_seminar.sdp"))
    assert description.information == "A Seminar on the session description protocol"
    assert description.uri == "http://www.example.com/seminars/sdp.pdf"
    assert description.emails == ["j.doe@example.com (Jane Doe)"]
    assert description.phones == ["+1 617 555-6011"]
    assert description.connection == Connection("233.252.0.12", ttl=127)
    assert description.bandwidths == [Bandwidth("CT", 1024)]
    assert description.timings == [
        Timing(2873397496, 2873404696, ("7d 1h 0 25h", "604800 3600 0 90000")),
        Timing(3034423619, 3042462419),
    ]
    assert description.time_zones == "2882844526 -1h 2898848070 0"
    assert description.key == "prompt"
    assert description.direction is Direction.RECVONLY
    audio, video, application, message = description.media
    assert (audio.port, audio.port_count, audio.title) == (49170, 2, "English audio")
    assert audio.bandwidths == [Bandwidth("AS", 64)]
    assert description.effective_direction(audio) is Direction.RECVONLY
    assert video.connections == [
        Connection("ff15::101", "IP6", count=3),
        Connection("ff15::105", "IP6", count=3),
    ]
    assert video.connection is not None and video.connection.ip == ipaddress.ip_address("ff15::101")
    assert video.attribute("framerate") == Attribute("framerate", "29.97")
    assert not application.is_rtp and application.formats == ["wb"]
    assert message.proto == "TCP/MSRP" and message.formats == ["*"]
    with pytest.raises(SDPError):
        message.payload_types  # noqa: B018


def test_ipv6_addresses_and_per_media_connection() -> None:
    description = parse_sdp(sample("rfc8866_style_session.sdp"))
    first, _, video = description.media
    assert description.media_connection(first) == Connection("198.51.100.1")
    assert description.media_connection(video) == Connection("2001:db8::2", "IP6")
    assert description.media_connection(video).ip == ipaddress.IPv6Address("2001:db8::2")
    assert video.rtpmap(99) == RtpMap(99, "h263-1998", 90000)
    linphone = parse_sdp(sample("linphone_ipv6_srtp_offer.sdp"))
    assert linphone.origin.addrtype == "IP6"
    assert linphone.connection == Connection("2001:db8:85a3::8a2e:370:7334", "IP6")


def test_unspecified_connection_means_no_media_wanted() -> None:
    description = parse_sdp(RFC4317["5.2"]["Offer"])
    assert description.connection is not None and description.connection.is_unspecified
    assert not Connection("192.0.2.1").is_unspecified
    assert Connection("::", "IP6").is_unspecified
    assert not Connection("host.example.com").is_unspecified


# -- typed attributes --------------------------------------------------------------------------


def test_static_payload_types_when_rtpmap_is_absent() -> None:
    media = MediaDescription.parse_line("audio 4000 RTP/AVP 0 8 9 13 18 2 96")
    assert media.rtpmap(0) == RtpMap(0, "PCMU", 8000)
    assert media.rtpmap(8) == RtpMap(8, "PCMA", 8000)
    assert media.rtpmap(9) == RtpMap(9, "G722", 8000)  # RFC 3551 §4.5.2: 8000, not 16000
    assert media.rtpmap(13) == RtpMap(13, "CN", 8000)
    assert media.rtpmap(18) == RtpMap(18, "G729", 8000)
    assert media.rtpmap(2) is None  # unassigned
    assert media.rtpmap(96) is None  # dynamic without rtpmap
    assert [pt for pt, m in media.codecs() if m is None] == [2, 96]
    assert STATIC_PAYLOAD_TYPES[10] == RtpMap(10, "L16", 44100, 2)
    assert STATIC_PAYLOAD_TYPES[31].codec_key == ("h261", 90000, 1)


def test_explicit_rtpmap_overrides_static_and_first_rtpmap_wins() -> None:
    media = MediaDescription.parse_line("audio 4000 RTP/AVP 0 97")
    media.add_attribute("rtpmap", "97 opus/48000/2")
    media.add_attribute("rtpmap", "97 PCMA/8000")
    assert media.rtpmap(97) == RtpMap(97, "opus", 48000, 2)
    assert media.rtpmap(97).channel_count == 2


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0 PCMU/8000", RtpMap(0, "PCMU", 8000)),
        ("111 opus/48000/2", RtpMap(111, "opus", 48000, 2)),
        ("101  telephone-event/8000", RtpMap(101, "telephone-event", 8000)),
    ],
)
def test_rtpmap_parse_and_format(value: str, expected: RtpMap) -> None:
    assert RtpMap.parse(value) == expected
    assert RtpMap.parse(str(expected)) == expected


@pytest.mark.parametrize(
    "value", ["", "97", "97 opus", "128 x/8000", "97 /8000", "97 x/0", "97 x/8000/2/1", "a x/1"]
)
def test_bad_rtpmap(value: str) -> None:
    with pytest.raises(SDPError):
        RtpMap.parse(value)


def test_fmtp_parameters() -> None:
    description = parse_sdp(sample("baresip_offer.sdp"))
    audio = description.media[0]
    assert audio.fmtp(96) == Fmtp("96", "stereo=1;sprop-stereo=1;maxaveragebitrate=64000")
    assert audio.fmtp_params(96) == {
        "stereo": "1", "sprop-stereo": "1", "maxaveragebitrate": "64000",
    }  # fmt: skip
    assert audio.fmtp_params(101) == {"0-15": ""}
    assert audio.fmtp(0) is None and audio.fmtp_params(0) == {}
    assert parse_fmtp_params(" a=1 ; b ;; c = 3;a=2") == {"a": "2", "b": "", "c": "3"}
    assert format_fmtp_params({"useinbandfec": "1", "0-16": ""}) == "useinbandfec=1;0-16"
    assert parse_fmtp_params(format_fmtp_params({"x": "1", "y": "2"})) == {"x": "1", "y": "2"}
    assert Fmtp.parse("101 0-15").parameters == {"0-15": ""}
    assert str(Fmtp("97", "")) == "97"


def test_telephone_events() -> None:
    audio = parse_sdp(sample("baresip_offer.sdp")).media[0]
    assert audio.telephone_events() == [TelephoneEvent(101, 8000, "0-15")]
    linphone = parse_sdp(sample("linphone_ipv6_srtp_offer.sdp")).media[0]
    assert [(e.payload_type, e.clock_rate, e.events) for e in linphone.telephone_events()] == [
        (101, 48000, None), (99, 16000, None), (100, 8000, None),
    ]  # fmt: skip


def test_ptime_and_maxptime() -> None:
    media = MediaDescription.parse_line("audio 4000 RTP/AVP 0")
    assert media.ptime is None and media.maxptime is None
    media.add_attribute("ptime", "20")
    media.add_attribute("maxptime", "150")
    assert (media.ptime, media.maxptime) == (20, 150)
    media.set_attribute("ptime", "30.0")
    assert media.ptime == 30
    media.set_attribute("ptime", "x")
    with pytest.raises(SDPError):
        media.ptime  # noqa: B018


def test_direction_media_level_overrides_session_level() -> None:
    body = crlf("v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nc=IN IP4 192.0.2.1\nt=0 0\na=sendonly\n"
                "m=audio 4000 RTP/AVP 0\nm=audio 4002 RTP/AVP 0\na=inactive\n")  # fmt: skip
    description = parse_sdp(body)
    first, second = description.media
    assert first.direction is None
    assert description.effective_direction(first) is Direction.SENDONLY
    assert description.effective_direction(second) is Direction.INACTIVE
    description.attributes.clear()
    assert description.effective_direction(first) is Direction.SENDRECV  # RFC 3264 §5.1
    second.add_attribute("sendrecv")
    with pytest.raises(SDPError, match="conflicting"):
        description.effective_direction(second)
    second.direction = Direction.RECVONLY
    assert second.attributes == [Attribute("recvonly")]
    second.direction = None
    assert second.attributes == []


@pytest.mark.parametrize(
    ("direction", "reversed_", "send", "receive"),
    [
        (Direction.SENDRECV, Direction.SENDRECV, True, True),
        (Direction.SENDONLY, Direction.RECVONLY, True, False),
        (Direction.RECVONLY, Direction.SENDONLY, False, True),
        (Direction.INACTIVE, Direction.INACTIVE, False, False),
    ],
)
def test_direction_algebra(
    direction: Direction, reversed_: Direction, send: bool, receive: bool
) -> None:
    assert direction.reversed() is reversed_
    assert (direction.can_send, direction.can_receive) == (send, receive)
    assert Direction.from_flags(send, receive) is direction
    assert direction.intersect(Direction.SENDRECV) is direction
    assert direction.intersect(Direction.INACTIVE) is Direction.INACTIVE
    assert direction.without_receive().can_receive is False


def test_rtcp_attribute_and_rtcp_mux() -> None:
    linphone = parse_sdp(sample("linphone_ipv6_srtp_offer.sdp")).media[0]
    assert linphone.rtcp == Rtcp(7079, "IN", "IP6", "2001:db8:85a3::8a2e:370:7334")
    assert not linphone.rtcp_mux
    baresip = parse_sdp(sample("baresip_offer.sdp")).media[0]
    assert baresip.rtcp is None and baresip.rtcp_mux
    assert Rtcp.parse("53020") == Rtcp(53020)
    assert str(Rtcp.parse("53020 IN IP4 126.16.64.4")) == "53020 IN IP4 126.16.64.4"
    for bad in ("", "70000", "1 IN IP4", "x"):
        with pytest.raises(SDPError):
            Rtcp.parse(bad)


# -- crypto (RFC 4568) -------------------------------------------------------------------------


def test_crypto_rfc4568_examples() -> None:
    crypto = Crypto.parse(
        "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:32"
    )
    assert (crypto.tag, crypto.suite) == (1, "AES_CM_128_HMAC_SHA1_80")
    assert crypto.key == KeyParam("PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR", "2^20", 1, 32)
    assert crypto.key.lifetime_packets == 2**20
    assert len(crypto.key.key_material) == 30
    assert crypto.has_valid_key_length()
    two_keys = Crypto.parse(
        "1 AES_CM_128_HMAC_SHA1_32 inline:NzB4d1BINUAvLEw6UzF3WSJ+PSdFcGdUJShpX1Zj|2^20|1:32;"
        "inline:NzB4d1BINUAvLEw6UzF3WSJ+PSdFcGdUJShpX1Zj|2^20|2:32 KDR=1 UNENCRYPTED_SRTCP"
    )
    assert [k.mki for k in two_keys.key_params] == [1, 2]
    assert two_keys.session_params == ("KDR=1", "UNENCRYPTED_SRTCP")
    assert Crypto.parse(str(two_keys)) == two_keys
    assert Crypto.parse("crypto:" + str(crypto)) == crypto
    only_mki = KeyParam.parse("inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|7:4")
    assert (only_mki.lifetime, only_mki.mki, only_mki.mki_length) == (None, 7, 4)
    decimal = KeyParam.parse("inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|1048576")
    assert decimal.lifetime_packets == 1048576


def test_crypto_session_params_kdr0_is_the_only_supported_one() -> None:
    """RFC 4568 §6.3: an answerer refuses session parameters it cannot honour."""
    key = "inline:" + "A" * 40
    crypto = Crypto.parse(f"crypto:7 AES_CM_128_HMAC_SHA1_80 {key} KDR=0 UNENCRYPTED_SRTCP")
    assert crypto.session_params == ("KDR=0", "UNENCRYPTED_SRTCP")
    assert crypto.unsupported_session_params() == ("UNENCRYPTED_SRTCP",)
    assert str(crypto).endswith("KDR=0 UNENCRYPTED_SRTCP")
    assert Crypto.parse(f"1 AES_CM_128_HMAC_SHA1_80 {key} kdr=0").unsupported_session_params() == ()


def test_crypto_key_lengths_per_suite() -> None:
    linphone = parse_sdp(sample("linphone_ipv6_srtp_offer.sdp")).media[0]
    suites = [(c.tag, c.suite, c.has_valid_key_length()) for c in linphone.crypto]
    assert suites == [
        (1, "AES_256_CM_HMAC_SHA1_80", True),
        (2, "AES_CM_128_HMAC_SHA1_80", True),
        (3, "AES_CM_128_HMAC_SHA1_32", True),
    ]
    short = Crypto.parse(
        "1 AES_256_CM_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR"
    )
    assert not short.has_valid_key_length()
    assert not Crypto.parse("1 NOT_A_SUITE inline:AAAA").has_valid_key_length()


@pytest.mark.parametrize(
    "value",
    [
        "1 AES_CM_128_HMAC_SHA1_80",
        "x AES_CM_128_HMAC_SHA1_80 inline:AAAA",
        "1234567890 AES_CM_128_HMAC_SHA1_80 inline:AAAA",
        "1 AES_CM_128_HMAC_SHA1_80 uri:https://example.com/key",
        "1 AES_CM_128_HMAC_SHA1_80 inline:not*base64",
        "1 AES_CM_128_HMAC_SHA1_80 inline:AAA",
        "1 AES_CM_128_HMAC_SHA1_80 inline:AAAA|2^20|1:32|x",
        "1 AES_CM_128_HMAC_SHA1_80 inline:AAAA|1:32|2^20",
        "1 AES_CM_128_HMAC_SHA1_80 inline:AAAA|1:999",
        "1 AES_CM_128_HMAC_SHA1_80 inline:AAAA|abc",
    ],
)
def test_bad_crypto(value: str) -> None:
    with pytest.raises(SDPError):
        Crypto.parse(value)


def test_usable_crypto_skips_malformed_lines() -> None:
    media = MediaDescription.parse_line("audio 4000 RTP/SAVP 0")
    media.add_attribute("crypto", "1 AES_CM_128_HMAC_SHA1_80 inline:bad!")
    media.add_attribute("crypto", "2 AES_CM_128_HMAC_SHA1_80 inline:" + "A" * 40)
    assert [c.tag for c in media.usable_crypto()] == [2]
    with pytest.raises(SDPError):
        media.crypto  # noqa: B018


# -- ICE (RFC 8839) ----------------------------------------------------------------------------


def test_ice_attributes_baresip() -> None:
    description = parse_sdp(sample("baresip_offer.sdp"))
    audio = description.media[0]
    assert description.ice_credentials(audio) == ("5d7f", "3c0e6ff9a7d3b2e1d0c9b8a7f6e5d4c3")
    first, srflx, rtcp = audio.candidates
    assert first == Candidate("1", 1, "UDP", 2113932031, "192.0.2.33", 10002, "host")
    assert (srflx.type, srflx.related_address, srflx.related_port) == ("srflx", "192.0.2.33", 10002)
    assert rtcp.component == 2
    assert not description.ice_lite and not audio.end_of_candidates


def test_ice_credentials_at_session_level_linphone() -> None:
    description = parse_sdp(sample("linphone_ipv6_srtp_offer.sdp"))
    audio = description.media[0]
    assert audio.ice_ufrag is None
    assert description.ice_credentials(audio) == ("9f2a1c3b", "8c8bb4c7c0b6a3d52e9f37b1")
    assert audio.candidates[0].address == "2001:db8:85a3::8a2e:370:7334"
    audio.add_attribute("ice-ufrag", "m1x2")
    assert description.ice_credentials(audio) == ("m1x2", "8c8bb4c7c0b6a3d52e9f37b1")


def test_ice_attributes_browser() -> None:
    description = parse_sdp(sample("webrtc_offer.sdp"))
    audio = description.media[0]
    assert audio.is_rtp and audio.is_secure and audio.is_dtls
    assert description.connection is None
    assert description.media_connection(audio) == Connection("203.0.113.77")
    assert audio.ice_options == ["trickle"]
    assert audio.end_of_candidates
    mdns, srflx, tcp = audio.candidates
    assert mdns.address == "4b5f3c2a-7d2e-4a8f-9e1b-6c5d4e3f2a1b.local"
    assert mdns.extensions == (("generation", "0"), ("network-id", "1"))
    assert (srflx.related_address, srflx.related_port) == ("0.0.0.0", 0)
    assert tcp.transport == "tcp" and tcp.port == 9
    assert tcp.extensions[0] == ("tcptype", "active")
    for candidate in audio.candidates:
        assert Candidate.parse(str(candidate)) == candidate
    assert audio.rtcp == Rtcp(9, "IN", "IP4", "0.0.0.0")


def test_candidate_forms() -> None:
    text = "candidate:2 1 UDP 1694498815 192.0.2.3 45664 typ srflx raddr 10.0.1.1 rport 8998"
    candidate = Candidate.parse(text)
    assert str(candidate) == text.removeprefix("candidate:")
    v6 = Candidate.parse("1 1 UDP 2130706431 2001:db8::1 8998 typ host")
    assert v6.address == "2001:db8::1"
    relay = Candidate.parse("3 2 UDP 16777214 203.0.113.9 3478 typ relay raddr 198.51.100.4")
    assert relay.related_port is None


@pytest.mark.parametrize(
    "value",
    [
        "1 1 UDP 2130706431 10.0.1.1 8998",
        "1 1 UDP 2130706431 10.0.1.1 8998 type host",
        "1 0 UDP 2130706431 10.0.1.1 8998 typ host",
        "1 1 UDP 0 10.0.1.1 8998 typ host",
        "1 1 UDP 99999999999 10.0.1.1 8998 typ host",
        "1 1 UDP 2130706431 10.0.1.1 70000 typ host",
        "1 1 UDP 2130706431 10.0.1.1 8998 typ host generation",
        "f*o 1 UDP 2130706431 10.0.1.1 8998 typ host",
        "1 1 UDP 2130706431 2001:db8::zz 8998 typ host",
        "1 1 UDP 2130706431 10.0.1.1 8998 typ host raddr 10.0.1.1 rport x",
        "123456789012345678901234567890123 1 UDP 1 10.0.1.1 1 typ host",
    ],
)
def test_bad_candidate(value: str) -> None:
    with pytest.raises(SDPError):
        Candidate.parse(value)


def test_remote_candidates() -> None:
    media = MediaDescription.parse_line("audio 4000 RTP/AVP 0")
    media.add_attribute("remote-candidates", "1 192.0.2.3 45664 2 192.0.2.3 45665")
    assert media.remote_candidates == [
        RemoteCandidate(1, "192.0.2.3", 45664), RemoteCandidate(2, "192.0.2.3", 45665),
    ]  # fmt: skip
    assert str(media.remote_candidates[1]) == "2 192.0.2.3 45665"
    media.set_attribute("remote-candidates", "1 192.0.2.3")
    with pytest.raises(SDPError):
        media.remote_candidates  # noqa: B018


def test_ice_lite_flag() -> None:
    body = crlf(
        "v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nc=IN IP4 192.0.2.1\nt=0 0\na=ice-lite\n"
        "m=audio 4000 RTP/AVP 0\na=ice-ufrag:abcd\na=ice-pwd:" + "p" * 22 + "\n"
    )
    description = parse_sdp(body)
    assert description.ice_lite
    assert description.ice_credentials(description.media[0]) == ("abcd", "p" * 22)


# -- editing and serializing -------------------------------------------------------------------


def test_build_a_description_from_scratch() -> None:
    media = MediaDescription("audio", 4000, "RTP/AVP", ["0", "101"])
    media.add_attribute("rtpmap", RtpMap(0, "PCMU", 8000))
    media.add_attribute("rtpmap", RtpMap(101, "telephone-event", 8000))
    media.add_attribute("fmtp", Fmtp("101", "0-16"))
    media.add_attribute("rtcp-mux")
    media.direction = Direction.SENDRECV
    description = SessionDescription(
        origin=Origin("-", 42, 42, address="192.0.2.1"),
        connection=Connection("192.0.2.1"),
        media=[media],
    )
    assert description.to_bytes() == crlf(
        "v=0\no=- 42 42 IN IP4 192.0.2.1\ns=-\nc=IN IP4 192.0.2.1\nt=0 0\n"
        "m=audio 4000 RTP/AVP 0 101\na=rtpmap:0 PCMU/8000\na=rtpmap:101 telephone-event/8000\n"
        "a=fmtp:101 0-16\na=rtcp-mux\na=sendrecv\n"
    )
    assert parse_sdp(description.to_bytes()) == description


def test_attribute_editing() -> None:
    media = MediaDescription.parse_line("audio 4000 RTP/AVP 0")
    media.add_attribute("x", 1)
    media.add_attribute("y")
    media.add_attribute("x", 2)
    assert media.attribute_values("x") == ["1", "2"]
    assert media.attribute_values("y") == [""]
    media.set_attribute("x", 3)
    assert media.attributes == [Attribute("x", "3"), Attribute("y")]
    assert media.remove_attribute("x") == 1
    assert not media.has_attribute("x") and media.attribute("x") is None
    media.set_attribute("z", "")
    assert str(media.attributes[-1]) == "z:"
    assert parse_sdp(crlf("v=0\no=- 1 1 IN IP4 h\ns=-\nt=0 0\na=z:\na=z\n")).attributes == [
        Attribute("z", ""), Attribute("z"),
    ]  # fmt: skip


def test_copy_is_deep() -> None:
    original = parse_sdp(sample("baresip_offer.sdp"))
    duplicate = original.copy()
    duplicate.media[0].attributes.clear()
    assert original.media[0].attributes


@pytest.mark.parametrize("field", ["session_name", "information", "uri"])
def test_serializing_a_line_break_is_refused(field: str) -> None:
    description = parse_sdp(RFC4317["2.1"]["Offer"])
    setattr(description, field, "x\r\na=injected")
    with pytest.raises(SDPError) as info:
        description.to_bytes()
    assert info.value.status == 500


def test_attribute_value_with_line_break_is_refused() -> None:
    description = parse_sdp(RFC4317["2.1"]["Offer"])
    description.media[0].add_attribute("x", "1\nm=audio 1 RTP/AVP 0")
    with pytest.raises(SDPError):
        description.to_text()


# -- bad input ---------------------------------------------------------------------------------

GOOD = "v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nc=IN IP4 192.0.2.1\nt=0 0\nm=audio 4000 RTP/AVP 0\n"

BAD_BODIES = {
    "empty": "",
    "blank lines only": "\r\n\r\n",
    "no v=": GOOD.replace("v=0\n", ""),
    "v=1": GOOD.replace("v=0", "v=1"),
    "no o=": GOOD.replace("o=- 1 1 IN IP4 192.0.2.1\n", ""),
    "no s=": GOOD.replace("s=-\n", ""),
    "no t=": GOOD.replace("t=0 0\n", ""),
    "o= before v=": "o=- 1 1 IN IP4 192.0.2.1\nv=0\ns=-\nt=0 0\n",
    "second v=": GOOD + "v=0\n",
    "second o= at session level": GOOD.replace("t=0 0", "o=- 1 1 IN IP4 192.0.2.1\nt=0 0"),
    "o= with 5 fields": GOOD.replace("o=- 1 1 IN IP4", "o=- 1 IN IP4"),
    "o= with a word as id": GOOD.replace("o=- 1 1", "o=- one 1"),
    "o= with a unicode digit": GOOD.replace("o=- 1 1", "o=- \u0661 1"),
    "o= with a signed number": GOOD.replace("o=- 1 1", "o=- +1 1"),
    "port 65536": GOOD.replace("4000", "65536"),
    "negative port": GOOD.replace("4000", "-1"),
    "port with unicode digits": GOOD.replace("4000", "\u0664\u0660\u0660\u0660"),
    "port with underscores": GOOD.replace("4000", "4_000"),
    "bad port count": GOOD.replace("4000", "4000/0"),
    "m= with no formats": GOOD.replace("RTP/AVP 0", "RTP/AVP"),
    "m= with no proto": GOOD.replace("RTP/AVP 0", ""),
    "payload type 128": GOOD.replace("RTP/AVP 0", "RTP/AVP 128"),
    "payload type a word": GOOD.replace("RTP/AVP 0", "RTP/AVP pcmu"),
    "unknown line type": GOOD + "x=1\n",
    "upper-case line type": GOOD + "A=rtpmap:0 PCMU/8000\n",
    "no = sign": GOOD + "a\n",
    "space before =": GOOD + "a =sendrecv\n",
    "t= in a media description": GOOD + "t=0 0\n",
    "o= in a media description": GOOD + "o=- 1 1 IN IP4 192.0.2.1\n",
    "u= in a media description": GOOD + "u=http://example.com\n",
    "r= in a media description": GOOD + "r=7d 1h 0\n",
    "r= before t=": GOOD.replace("t=0 0", "r=7d 1h 0\nt=0 0"),
    "bad r=": GOOD.replace("t=0 0", "t=0 0\nr=7d 1h"),
    "bad z=": GOOD.replace("t=0 0", "t=0 0\nz=1 2 3"),
    "two session c=": GOOD.replace("t=0 0", "c=IN IP4 192.0.2.2\nt=0 0"),
    "two session i=": GOOD.replace("t=0 0", "i=a\ni=b\nt=0 0"),
    "two media i=": GOOD + "i=a\ni=b\n",
    "two media k=": GOOD + "k=a\nk=b\n",
    "c= with 2 fields": GOOD.replace("c=IN IP4 192.0.2.1", "c=IN 192.0.2.1"),
    "bad IPv4 literal": GOOD.replace("c=IN IP4 192.0.2.1", "c=IN IP4 999.0.2.1"),
    "bad IPv6 literal": GOOD.replace("c=IN IP4 192.0.2.1", "c=IN IP6 2001:db8::zz"),
    "bad host name": GOOD.replace("c=IN IP4 192.0.2.1", "c=IN IP4 -bad!"),
    "bad TTL": GOOD.replace("c=IN IP4 192.0.2.1", "c=IN IP4 233.252.0.1/300"),
    "IPv6 with TTL and count": GOOD.replace("c=IN IP4 192.0.2.1", "c=IN IP6 ff15::1/2/3"),
    "bad b=": GOOD + "b=AS\n",
    "b= with a word": GOOD + "b=AS:fast\n",
    "bad t=": GOOD.replace("t=0 0", "t=0"),
    "attribute name not a token": GOOD + "a=rtp map:0 PCMU/8000\n",
    "empty attribute name": GOOD + "a=:x\n",
    "stray CR": GOOD.replace("s=-", "s=a\rb"),
    "NUL": GOOD.replace("s=-", "s=a\x00b"),
}


@pytest.mark.parametrize("name", sorted(BAD_BODIES))
def test_bad_bodies_raise_sdp_error_400(name: str) -> None:
    with pytest.raises(SDPError) as info:
        parse_sdp(crlf(BAD_BODIES[name]) if name != "stray CR" else BAD_BODIES[name].encode())
    assert info.value.status == 400
    assert info.value.reason == "Bad Request"
    assert isinstance(info.value, P2PSIPError)


def test_good_body_used_for_bad_bodies_parses() -> None:
    assert parse_sdp(crlf(GOOD)).media[0].payload_types == [0]


def test_non_utf8_is_refused() -> None:
    with pytest.raises(SDPError, match="UTF-8"):
        parse_sdp(crlf(GOOD).replace(b"s=-", b"s=\xff\xfe"))
    with pytest.raises(SDPError, match="UTF-8"):
        parse_sdp(GOOD.replace("s=-", "s=\udcff"))
    assert (
        parse_sdp(crlf(GOOD.replace("s=-", "s=Caf\u00e9 \u2615"))).session_name
        == "Caf\u00e9 \u2615"
    )


def test_size_limit() -> None:
    body = crlf(GOOD)
    padded = body + b"a=x:" + b"y" * (DEFAULT_MAX_SIZE - len(body) - 6) + b"\r\n"
    assert len(padded) == DEFAULT_MAX_SIZE
    parse_sdp(padded)
    with pytest.raises(SDPError, match="larger"):
        parse_sdp(padded + b"a")
    with pytest.raises(SDPError, match="larger"):
        parse_sdp(padded.decode() + "a")
    with pytest.raises(SDPError, match="larger"):
        parse_sdp(body, max_size=len(body) - 1)
    with pytest.raises(SDPError, match="larger"):  # counted in UTF-8 bytes, not characters
        parse_sdp(GOOD.replace("s=-", "s=\u20ac"), max_size=len(GOOD) + 1)


def test_error_carries_the_line_number() -> None:
    with pytest.raises(SDPError, match="line 6"):
        parse_sdp(crlf(GOOD.replace("4000", "99999")))


def test_sdp_error_statuses() -> None:
    assert SDPError("x").status == 400
    error = SDPError("no common codec", status=488)
    assert (error.status, error.reason, str(error)) == (
        488,
        "Not Acceptable Here",
        "no common codec",
    )
    assert SDPError("glare", status=491).reason == "Request Pending"
