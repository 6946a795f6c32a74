"""RFC 3264 offer/answer: each rule, the RFC 4317 exchanges, hold, streams added and removed,
version numbering, SDES crypto, ICE attributes and real-world offers. No sockets, no clock."""

from __future__ import annotations

import base64
import hashlib
import random
from collections.abc import Sequence
from typing import Any

import pytest

from p2psip.media.offer_answer import (
    CodecDescription,
    CodecOrder,
    MediaConfig,
    NegotiatedStream,
    OfferAnswer,
    OfferAnswerState,
    SRTPMode,
)
from p2psip.media.sdp import (
    Attribute,
    Connection,
    Crypto,
    Direction,
    SDPError,
    SessionDescription,
    parse_sdp,
)
from tests.unit.test_sdp import RFC4317, crlf, sample

PCMU = CodecDescription("PCMU", 8000)
PCMA = CodecDescription("PCMA", 8000)
G722 = CodecDescription("G722", 8000)
ILBC = CodecDescription("iLBC", 8000, payload_type=97)
OPUS = CodecDescription("opus", 48000, 2, {"useinbandfec": "1"})
TE8 = CodecDescription.telephone_event(8000)
TE48 = CodecDescription.telephone_event(48000)
H261 = CodecDescription("H261", 90000)
MPV = CodecDescription("MPV", 90000)


def key(label: str, size: int = 30) -> str:
    """A deterministic inline key of ``size`` bytes."""
    raw = (hashlib.sha256(label.encode()).digest() * 2)[:size]
    return "inline:" + base64.b64encode(raw).decode()


def crypto(tag: int, suite: str, label: str, size: int = 30) -> str:
    return f"{tag} {suite} {key(label, size)}"


def audio(port: int = 4000, codecs: Sequence[CodecDescription] = (PCMU,), **kw: Any) -> MediaConfig:
    return MediaConfig(port=port, codecs=codecs, **kw)


def video(port: int = 5000, codecs: Sequence[CodecDescription] = (H261,), **kw: Any) -> MediaConfig:
    return MediaConfig(port=port, codecs=codecs, media="video", **kw)


def alice(*streams: MediaConfig, **kw: Any) -> OfferAnswer:
    kw.setdefault("rng", random.Random(1))
    return OfferAnswer("192.0.2.10", streams, username="alice", **kw)


def bob(*streams: MediaConfig, **kw: Any) -> OfferAnswer:
    kw.setdefault("rng", random.Random(2))
    return OfferAnswer("192.0.2.20", streams, username="bob", **kw)


def exchange(offerer: OfferAnswer, answerer: OfferAnswer) -> tuple[
    SessionDescription, SessionDescription, tuple[NegotiatedStream, ...]
]:  # fmt: skip
    """One offer/answer through the wire format; returns offer, answer, offerer's streams."""
    offer = offerer.create_offer()
    answer = answerer.answer(offer.to_bytes())
    streams = offerer.receive_answer(answer.to_bytes())
    return offer, answer, streams


def m_lines(description: SessionDescription) -> list[str]:
    return [m.m_line() for m in description.media]


# -- the initial offer -------------------------------------------------------------------------


def test_initial_offer() -> None:
    oa = alice(audio(4000, [OPUS, PCMU, TE48, TE8], ptime=20), session_id=1234)
    offer = oa.create_offer()
    assert oa.state is OfferAnswerState.OFFER_SENT
    text = offer.to_text()
    assert text == (
        "v=0\r\no=alice 1234 1234 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n"
        "m=audio 4000 RTP/AVP 96 0 97 98\r\n"
        "a=rtpmap:96 opus/48000/2\r\na=fmtp:96 useinbandfec=1\r\n"
        "a=rtpmap:0 PCMU/8000\r\n"
        "a=rtpmap:97 telephone-event/48000\r\na=fmtp:97 0-16\r\n"
        "a=rtpmap:98 telephone-event/8000\r\na=fmtp:98 0-16\r\n"
        "a=ptime:20\r\na=rtcp-mux\r\na=sendrecv\r\n"
    )
    assert parse_sdp(text) == offer
    assert oa.session_version == 1234 and oa.session_id == 1234


def test_session_id_comes_from_the_injected_rng() -> None:
    first = alice(audio(), rng=random.Random(7)).create_offer().origin
    second = alice(audio(), rng=random.Random(7)).create_offer().origin
    assert first == second
    assert first.session_id == first.session_version


def test_ipv6_address() -> None:
    offer = OfferAnswer("2001:db8::10", [audio()]).create_offer()
    assert str(offer.connection) == "IN IP6 2001:db8::10"
    assert (offer.origin.addrtype, offer.origin.address) == ("IP6", "2001:db8::10")


def test_payload_type_choice() -> None:
    preferred = CodecDescription("opus", 48000, 2, payload_type=111)
    clash = CodecDescription("speex", 16000, payload_type=111)
    g722_pref = CodecDescription("G722", 8000)
    offer = alice(audio(4000, [preferred, clash, g722_pref, PCMA, TE8])).create_offer()
    media = offer.media[0]
    assert media.formats == ["111", "96", "9", "8", "97"]
    assert media.rtpmap(96).encoding == "speex"


def test_per_stream_address_rtcp_port_and_avpf() -> None:
    config = audio(4000, address="192.0.2.99", rtcp_port=4005, rtcp_mux=False, avpf=True)
    media = alice(config).create_offer().media[0]
    assert media.proto == "RTP/AVPF"
    assert str(media.connection) == "IN IP4 192.0.2.99"
    assert media.attribute_values("rtcp") == ["4005"]
    assert not media.rtcp_mux


# -- answering (RFC 3264 §6) -------------------------------------------------------------------


def test_answer_keeps_the_offerers_payload_types_and_order() -> None:
    a = alice(audio(4000, [CodecDescription("opus", 48000, 2, payload_type=111), PCMA, PCMU]))
    b = bob(audio(6000, [PCMU, OPUS]))
    _, answer, streams = exchange(a, b)
    assert m_lines(answer) == ["audio 6000 RTP/AVP 111 0"]
    assert answer.media[0].rtpmap(111).encoding == "opus"
    assert answer.media[0].fmtp_params(111) == {"useinbandfec": "1"}  # what Bob wants
    stream = streams[0]
    assert stream.codec is not None and stream.codec.name == "opus"
    assert (stream.send_payload_type, stream.recv_payload_type) == (111, 111)
    assert stream.codec.fmtp == {"useinbandfec": "1"}
    assert b.streams[0].codec.name == "opus"


def test_codec_order_local_and_single_codec_answers() -> None:
    offer = alice(audio(4000, [OPUS, PCMA, PCMU])).create_offer()
    local = bob(audio(6000, [PCMU, PCMA, OPUS]), codec_order=CodecOrder.LOCAL).answer(offer)
    assert local.media[0].formats == ["0", "8", "96"]
    single = bob(audio(6000, [PCMU, PCMA]), answer_all_codecs=False).answer(offer)
    assert single.media[0].formats == ["8"]


def test_dynamic_payload_types_map_both_ways() -> None:
    # RFC 4317 §2.3: Bob answers iLBC as 99 where Alice offered 97.
    a = alice(audio(49170, [PCMU, PCMA, ILBC]), video(51372, [H261, MPV]))
    offer = a.create_offer()
    assert m_lines(offer) == ["audio 49170 RTP/AVP 0 8 97", "video 51372 RTP/AVP 31 32"]
    streams = a.receive_answer(RFC4317["2.3"]["Answer"])
    ilbc, h261 = streams
    assert ilbc.codec is not None and ilbc.codec.name == "iLBC"
    assert (ilbc.send_payload_type, ilbc.recv_payload_type) == (99, 97)
    assert (h261.codec.name, h261.send_payload_type, h261.recv_payload_type) == ("H261", 31, 31)
    assert ilbc.remote_address == "host.biloxi.example.com" and ilbc.remote_port == 49172


def test_telephone_event_matched_by_clock_rate() -> None:
    offer = alice(audio(4000, [OPUS, PCMU, TE48, TE8])).create_offer()  # te: 97@48k, 98@8k
    wideband = bob(audio(6000, [OPUS, TE8, TE48]))
    answer = wideband.answer(offer)
    assert answer.media[0].formats == ["96", "97"]  # opus and its 48 kHz events only
    assert wideband.streams[0].telephone_event_payload_type == 97
    narrowband = bob(audio(6000, [PCMU, TE8, TE48]))
    assert narrowband.answer(offer).media[0].formats == ["0", "98"]
    assert narrowband.streams[0].telephone_event_send_payload_type == 98
    both = bob(audio(6000, [OPUS, PCMU, TE8, TE48]))
    assert both.answer(offer).media[0].formats == ["96", "0", "97", "98"]
    assert both.streams[0].telephone_event_payload_type == 97
    no_dtmf = bob(audio(6000, [OPUS]))
    assert no_dtmf.answer(offer).media[0].formats == ["96"]
    assert no_dtmf.streams[0].telephone_event_payload_type is None


def test_telephone_event_only_stream_rfc4317_2_4() -> None:
    b = bob(audio(49172, [ILBC, TE8]), audio(49174, [TE8]))
    answer = b.answer(RFC4317["2.4"]["Offer"])
    assert m_lines(answer) == ["audio 49172 RTP/AVP 97", "audio 49174 RTP/AVP 98"]
    assert [m.direction for m in answer.media] == [Direction.SENDRECV, Direction.RECVONLY]
    events = b.streams[1]
    assert events.codec is not None and events.codec.name == "telephone-event"
    assert events.telephone_event_recv_payload_type == 98
    assert (events.can_send, events.can_receive) == (False, True)
    a = alice(audio(49170, [PCMU, ILBC]), audio(49172, [TE8], direction=Direction.SENDONLY))
    offer = a.create_offer()
    assert m_lines(offer) == ["audio 49170 RTP/AVP 0 97", "audio 49172 RTP/AVP 96"]
    mine = a.receive_answer(b.answer(offer))
    assert mine[1].can_send and not mine[1].can_receive


def test_unmatched_stream_is_rejected_with_port_zero() -> None:
    a = alice(audio(4000, [PCMU]), video(5000, [H261, MPV]))
    _, answer, streams = exchange(a, bob(audio(6000, [PCMU])))
    assert m_lines(answer) == ["audio 6000 RTP/AVP 0", "video 0 RTP/AVP 31"]
    assert answer.media[1].attribute_values("rtpmap") == ["31 H261/90000"]
    assert [s.rejected for s in streams] == [False, True]
    assert not streams[1].can_send and not streams[1].can_receive


def test_rfc4317_2_6_first_stream_rejected_second_accepted() -> None:
    b = bob(audio(49170, [ILBC, TE8]))
    answer = b.answer(RFC4317["2.6"]["Offer"])
    assert m_lines(answer) == ["audio 0 RTP/AVP 0", "audio 49170 RTP/AVP 97 101"]
    assert [s.rejected for s in b.streams] == [True, False]


def test_no_common_codec_anywhere_is_488() -> None:
    b = bob(audio(6000, [OPUS]), video(7000, [MPV]))
    with pytest.raises(SDPError) as info:
        b.answer(RFC4317["2.3"]["Offer"].replace(b" 31 32", b" 31"))
    assert info.value.status == 488 and info.value.reason == "Not Acceptable Here"
    assert "no common codec" in str(info.value)
    assert "PCMU/8000" in str(info.value)
    assert b.state is OfferAnswerState.STABLE and b.streams == ()
    b.answer(alice(audio(4000, [OPUS])).create_offer())  # still usable


def test_offer_with_no_media_is_answered_with_no_media() -> None:
    b = bob(audio(49172, [ILBC]))
    answer = b.answer(RFC4317["5.1"]["Offer"])
    assert answer.media == [] and b.streams == ()


@pytest.mark.parametrize(
    ("offered", "local", "answered"),
    [
        (Direction.SENDRECV, Direction.SENDRECV, Direction.SENDRECV),
        (Direction.SENDRECV, Direction.SENDONLY, Direction.SENDONLY),
        (Direction.SENDRECV, Direction.RECVONLY, Direction.RECVONLY),
        (Direction.SENDRECV, Direction.INACTIVE, Direction.INACTIVE),
        (Direction.SENDONLY, Direction.SENDRECV, Direction.RECVONLY),
        (Direction.SENDONLY, Direction.SENDONLY, Direction.INACTIVE),
        (Direction.RECVONLY, Direction.SENDRECV, Direction.SENDONLY),
        (Direction.RECVONLY, Direction.RECVONLY, Direction.INACTIVE),
        (Direction.INACTIVE, Direction.SENDRECV, Direction.INACTIVE),
    ],
)
def test_answer_direction_rfc3264_6_1(
    offered: Direction, local: Direction, answered: Direction
) -> None:
    a = alice(audio(direction=offered))
    b = bob(audio(6000, direction=local))
    _, answer, streams = exchange(a, b)
    assert answer.media[0].direction is answered
    assert b.streams[0].direction is answered
    assert streams[0].direction is answered.reversed()


def test_session_level_direction_of_the_offer_counts() -> None:
    offer = alice(audio()).create_offer()
    offer.media[0].direction = None
    offer.attributes.append(parse_sdp(crlf(
        "v=0\no=- 1 1 IN IP4 h\ns=-\nt=0 0\na=sendonly\n")).attributes[0])  # fmt: skip
    assert bob(audio(6000)).answer(offer).media[0].direction is Direction.RECVONLY


# -- RTCP --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("offer_mux", "answer_mux", "mux"), [
    (True, True, True), (True, False, False), (False, True, False), (False, False, False),
])  # fmt: skip
def test_rtcp_mux_only_when_offered(offer_mux: bool, answer_mux: bool, mux: bool) -> None:
    a = alice(audio(4000, rtcp_mux=offer_mux))
    b = bob(audio(6000, rtcp_mux=answer_mux))
    _, answer, streams = exchange(a, b)
    assert answer.media[0].rtcp_mux is mux
    for stream in (streams[0], b.streams[0]):
        assert stream.rtcp_mux is mux
    if mux:
        assert (streams[0].local_rtcp_port, streams[0].remote_rtcp_port) == (4000, 6000)
    else:
        assert (streams[0].local_rtcp_port, streams[0].remote_rtcp_port) == (4001, 6001)


def test_rtcp_attribute_rfc3605() -> None:
    a = alice(audio(4000, rtcp_port=4100, rtcp_mux=False))
    b = bob(audio(6000, rtcp_port=6100))
    _, answer, streams = exchange(a, b)
    assert answer.media[0].attribute_values("rtcp") == ["6100"]
    assert (streams[0].local_rtcp_port, streams[0].remote_rtcp_port) == (4100, 6100)
    assert b.streams[0].remote_rtcp_port == 4100
    assert b.streams[0].remote_rtcp_address == "192.0.2.10"


def test_offer_with_rtcp_mux_still_names_the_fallback_port() -> None:
    media = alice(audio(4000, rtcp_port=4100)).create_offer().media[0]
    assert media.attribute_values("rtcp") == ["4100"] and media.rtcp_mux


# -- SDES crypto (RFC 4568) --------------------------------------------------------------------

AES80 = "AES_CM_128_HMAC_SHA1_80"
AES32 = "AES_CM_128_HMAC_SHA1_32"


def test_linphone_offer_first_supported_suite_same_tag_our_key() -> None:
    offer = sample("linphone_ipv6_srtp_offer.sdp")
    ours = crypto(5, AES32, "bob-32")
    b = bob(audio(6000, [OPUS, PCMU, TE48, TE8], srtp=SRTPMode.MANDATORY,
                  crypto=[crypto(9, AES80, "bob-80"), ours]))  # fmt: skip
    answer = b.answer(offer)
    media = answer.media[0]
    assert media.proto == "RTP/SAVP"
    (answered,) = media.crypto
    assert (answered.tag, answered.suite) == (2, AES80)  # tag 1 (AES-256) is not ours
    assert str(answered.key) == key("bob-80")
    stream = b.streams[0]
    assert stream.srtp is not None
    assert (stream.srtp.suite, stream.srtp.tag) == (AES80, 2)
    assert stream.srtp.local_key == key("bob-80")
    assert stream.srtp.remote_key == str(parse_sdp(offer).media[0].crypto[1].key)
    assert stream.remote_address == "2001:db8:85a3::8a2e:370:7334"
    assert (stream.remote_rtcp_port, stream.remote_rtcp_address) == (
        7079, "2001:db8:85a3::8a2e:370:7334",
    )  # fmt: skip
    assert media.formats == ["96", "0", "101", "100"]
    assert stream.telephone_event_send_payload_type == 101
    only32 = bob(audio(6000, [PCMU], srtp=SRTPMode.OPTIONAL, crypto=[ours]))
    assert [(c.tag, c.suite) for c in only32.answer(offer).media[0].crypto] == [(3, AES32)]


def test_savp_offer_without_acceptable_crypto_rejects_the_stream() -> None:
    offer = alice(
        audio(4000, srtp=SRTPMode.MANDATORY, crypto=[crypto(1, AES32, "a")]),
        audio(4002, [PCMU]),
    ).create_offer()
    b = bob(
        audio(6000, srtp=SRTPMode.OPTIONAL, crypto=[crypto(1, AES80, "b")]), audio(6002),
    )  # fmt: skip
    answer = b.answer(offer)
    assert [m.port for m in answer.media] == [0, 6002]
    assert answer.media[0].proto == "RTP/SAVP"
    single = alice(audio(4000, srtp=SRTPMode.MANDATORY, crypto=[crypto(1, AES32, "a")]))
    with pytest.raises(SDPError, match="no acceptable crypto") as info:
        bob(audio(6000, srtp=SRTPMode.MANDATORY, crypto=[crypto(1, AES80, "b")])).answer(
            single.create_offer()
        )
    assert info.value.status == 488


@pytest.mark.parametrize(
    ("offerer", "answerer", "outcome"),
    [
        (SRTPMode.OFF, SRTPMode.OFF, None),
        (SRTPMode.OFF, SRTPMode.OPTIONAL, None),
        (SRTPMode.OFF, SRTPMode.MANDATORY, 488),
        (SRTPMode.OPTIONAL, SRTPMode.OFF, None),
        (SRTPMode.OPTIONAL, SRTPMode.OPTIONAL, AES80),
        (SRTPMode.OPTIONAL, SRTPMode.MANDATORY, AES80),
        (SRTPMode.MANDATORY, SRTPMode.OFF, 488),
        (SRTPMode.MANDATORY, SRTPMode.OPTIONAL, AES80),
        (SRTPMode.MANDATORY, SRTPMode.MANDATORY, AES80),
    ],
)
def test_srtp_modes(offerer: SRTPMode, answerer: SRTPMode, outcome: str | int | None) -> None:
    def config(port: int, mode: SRTPMode, label: str) -> MediaConfig:
        lines = [] if mode is SRTPMode.OFF else [crypto(1, AES80, label)]
        return audio(port, srtp=mode, crypto=lines)

    a = alice(config(4000, offerer, "alice"))
    b = bob(config(6000, answerer, "bob"))
    offer = a.create_offer()
    assert offer.media[0].proto == ("RTP/SAVP" if offerer is SRTPMode.MANDATORY else "RTP/AVP")
    if outcome == 488:
        with pytest.raises(SDPError) as info:
            b.answer(offer)
        assert info.value.status == 488
        return
    streams = a.receive_answer(b.answer(offer))
    if outcome is None:
        assert streams[0].srtp is None and b.streams[0].srtp is None
        return
    mine, theirs = streams[0].srtp, b.streams[0].srtp
    assert mine is not None and theirs is not None
    assert mine.suite == theirs.suite == outcome
    assert (mine.local_key, mine.remote_key) == (key("alice"), key("bob"))
    assert (theirs.local_key, theirs.remote_key) == (key("bob"), key("alice"))


def test_unusable_offered_crypto_lines_are_skipped() -> None:
    offer = alice(audio(4000)).create_offer()
    media = offer.media[0]
    media.proto = "RTP/SAVP"
    media.add_attribute("crypto", "1 AES_CM_128_HMAC_SHA1_80 inline:bad!")
    media.add_attribute("crypto", crypto(2, AES80, "x") + " UNENCRYPTED_SRTP")
    media.add_attribute("crypto", f"3 {AES80} inline:AAAA")  # too short for the suite
    media.add_attribute("crypto", crypto(4, AES80, "x") + "|2^20|1:4")  # an MKI
    media.add_attribute("crypto", crypto(5, AES80, "x"))
    ours = audio(6000, srtp=SRTPMode.MANDATORY, crypto=[crypto(1, AES80, "b")])
    assert bob(ours).answer(offer).media[0].crypto[0].tag == 5
    assert bob(ours, allow_mki=True).answer(offer).media[0].crypto[0].tag == 4


def test_offered_crypto_with_kdr0_is_accepted() -> None:
    # RFC 4568 §6.3: KDR=0 is what an SRTP session without key derivation rate does
    offer = alice(audio(4000)).create_offer()
    media = offer.media[0]
    media.proto = "RTP/SAVP"
    media.add_attribute("crypto", crypto(3, AES80, "x") + " KDR=0")
    ours = audio(6000, srtp=SRTPMode.MANDATORY, crypto=[crypto(1, AES80, "b")])
    assert bob(ours).answer(offer).media[0].crypto[0].tag == 3


# -- checking the answer against our offer -----------------------------------------------------


def _bad_answer(edit: Any, a_config: MediaConfig | None = None) -> SDPError:
    a = alice(a_config or audio(4000, [PCMU, TE8]))
    exchange(a, bob(audio(6000, [PCMU, TE8])))
    before = a.streams
    offer = a.create_offer()
    version = offer.origin.session_version
    answer = bob(audio(6000, [PCMU, PCMA, TE8])).answer(offer)
    edit(answer)
    with pytest.raises(SDPError) as info:
        a.receive_answer(answer.to_bytes())
    assert a.state is OfferAnswerState.STABLE
    assert a.streams == before  # the previous session stays
    assert a.create_offer().origin.session_version == version
    return info.value


def _set_formats(formats: list[str]) -> Any:
    def edit(answer: SessionDescription) -> None:
        answer.media[0].formats = formats

    return edit


def _add_opus(answer: SessionDescription) -> None:
    answer.media[0].formats.insert(0, "120")
    answer.media[0].add_attribute("rtpmap", "120 opus/48000/2")


BAD_ANSWERS: dict[str, Any] = {
    "extra m-line": lambda ans: ans.media.append(ans.copy().media[0]),
    "no m-line": lambda ans: ans.media.clear(),
    "other media type": lambda ans: setattr(ans.media[0], "media", "video"),
    "other transport": lambda ans: setattr(ans.media[0], "proto", "RTP/SAVP"),
    "codec not offered": _add_opus,
    "static codec not offered": _set_formats(["8"]),
    "unknown dynamic type": _set_formats(["0", "120"]),
    "only telephone-event": _set_formats(["101"]),
    "rtcp-mux not offered": lambda ans: ans.media[0].add_attribute("rtcp-mux"),
}


@pytest.mark.parametrize("name", sorted(BAD_ANSWERS))
def test_answer_that_does_not_fit_the_offer_is_488(name: str) -> None:
    error = _bad_answer(BAD_ANSWERS[name], audio(4000, [PCMU, TE8], rtcp_mux=False))
    assert error.status == 488, error


def test_answer_reviving_a_disabled_stream_is_488() -> None:
    a = alice(audio(4000), video(5000))
    exchange(a, bob(audio(6000)))  # video rejected
    offer = a.create_offer()
    assert offer.media[1].port == 0
    answer = bob(audio(6000), video(7000)).answer(offer)
    answer.media[1].port = 7000
    with pytest.raises(SDPError, match="port 0") as info:
        a.receive_answer(answer)
    assert info.value.status == 488


SRTP_CONFIG = audio(
    4000, srtp=SRTPMode.OPTIONAL, crypto=[crypto(1, AES80, "a"), crypto(2, AES32, "b")]
)


@pytest.mark.parametrize(
    ("name", "lines"),
    [
        ("tag not offered", [crypto(7, AES80, "z")]),
        ("suite changed", [crypto(1, AES32, "z")]),
        ("two crypto lines", [crypto(1, AES80, "z"), crypto(2, AES32, "z")]),
        ("short key", [f"1 {AES80} inline:AAAA"]),
        ("malformed", ["1 AES_CM_128_HMAC_SHA1_80"]),
    ],
)
def test_bad_answer_crypto_is_488(name: str, lines: list[str]) -> None:
    def edit(answer: SessionDescription) -> None:
        answer.media[0].remove_attribute("crypto")
        for line in lines:
            answer.media[0].add_attribute("crypto", line)

    a = alice(SRTP_CONFIG)
    offer = a.create_offer()
    answer = bob(audio(6000, srtp=SRTPMode.OPTIONAL, crypto=[crypto(1, AES80, "b")])).answer(offer)
    edit(answer)
    with pytest.raises(SDPError) as info:
        a.receive_answer(answer)
    assert info.value.status == 488


def test_savp_answer_without_crypto_is_488_and_crypto_to_plain_offer_too() -> None:
    a = alice(audio(4000, srtp=SRTPMode.MANDATORY, crypto=[crypto(1, AES80, "a")]))
    answer = bob(audio(6000, srtp=SRTPMode.MANDATORY, crypto=[crypto(1, AES80, "b")])).answer(
        a.create_offer()
    )
    answer.media[0].remove_attribute("crypto")
    with pytest.raises(SDPError, match="without crypto"):
        a.receive_answer(answer)
    plain = alice(audio(4000))
    answer = bob(audio(6000)).answer(plain.create_offer())
    answer.media[0].add_attribute("crypto", crypto(1, AES80, "b"))
    with pytest.raises(SDPError, match="not offered"):
        plain.receive_answer(answer)


def test_answer_without_connection_address_is_refused() -> None:
    a = alice(audio())
    answer = bob(audio(6000)).answer(a.create_offer())
    answer.connection = None
    with pytest.raises(SDPError, match="connection"):
        a.receive_answer(answer)


# -- the RFC 4317 exchanges, from each side ----------------------------------------------------


def rfc4317_alice() -> OfferAnswer:
    """Alice of RFC 4317 §2: PCMU, PCMA, iLBC (97) audio and H261, MPV video."""
    return alice(audio(49170, [PCMU, PCMA, ILBC]), video(51372, [H261, MPV]))


def test_rfc4317_2_1_both_sides() -> None:
    a = rfc4317_alice()
    offer = a.create_offer()
    assert m_lines(offer) == m_lines(parse_sdp(RFC4317["2.1"]["Offer"]))
    pcmu, mpv = a.receive_answer(RFC4317["2.1"]["Answer"])
    assert (pcmu.codec.name, pcmu.send_payload_type, pcmu.remote_port) == ("PCMU", 0, 49174)
    assert (mpv.codec.name, mpv.send_payload_type, mpv.remote_port) == ("MPV", 32, 49170)
    b = bob(audio(49174, [PCMU]), video(49170, [MPV]))
    answer = b.answer(RFC4317["2.1"]["Offer"])
    assert m_lines(answer) == m_lines(parse_sdp(RFC4317["2.1"]["Answer"]))
    assert b.streams[0].remote_address == "host.atlanta.example.com"


def test_rfc4317_2_2_second_offer_narrows_to_one_codec() -> None:
    a = rfc4317_alice()
    a.create_offer()
    audio_stream, video_stream = a.receive_answer(RFC4317["2.2"]["Answer"])
    assert video_stream.rejected and not audio_stream.rejected
    a.update_stream(0, audio(51372, [PCMU]))
    second = a.create_offer()
    assert m_lines(second) == m_lines(parse_sdp(RFC4317["2.2"]["Second-Offer"]))
    assert second.origin.session_version == a.session_id + 1
    streams = a.receive_answer(RFC4317["2.2"]["Second-Answer"])
    assert streams[0].codec.name == "PCMU" and streams[1].rejected


def test_rfc4317_2_5_unchanged_answer_keeps_its_version() -> None:
    a = alice(audio(49170, [ILBC]), video(51372, [H261]))
    first = a.create_offer()
    a.receive_answer(RFC4317["2.5"]["Answer"])
    answer = a.answer(RFC4317["2.5"]["Second-Offer"])
    assert a.streams[0].remote_address == "newhost.biloxi.example.com"
    assert answer.origin.session_version == first.origin.session_version + 1
    again = a.answer(RFC4317["2.5"]["Second-Offer"])
    assert again.origin.session_version == answer.origin.session_version
    assert again.to_bytes() == answer.to_bytes()


def test_rfc4317_2_7_adding_a_codec_to_a_stream() -> None:
    a = alice(audio(49170, [CodecDescription("iLBC", 8000, payload_type=99)]), video(51372))
    a.create_offer()
    a.receive_answer(RFC4317["2.7"]["Answer"])
    a.update_stream(1, video(51372, [H261, MPV]))
    second = a.create_offer()
    assert m_lines(second) == m_lines(parse_sdp(RFC4317["2.7"]["Second-Offer"]))
    streams = a.receive_answer(RFC4317["2.7"]["Second-Answer"])
    assert streams[1].codec.name == "H261"


def test_rfc4317_2_8_video_to_another_address() -> None:
    a = rfc4317_alice()
    a.create_offer()
    pcmu, mpv = a.receive_answer(RFC4317["2.8"]["Answer"])
    assert pcmu.remote_address == "host.biloxi.example.com"
    assert mpv.remote_address == "otherhost.biloxi.example.com"


def test_rfc4317_3_1_answerer_holds_then_resumes() -> None:
    a = alice(audio(49170, [PCMU, ILBC]))
    a.create_offer()
    (held,) = a.receive_answer(RFC4317["3.1"]["Answer"])
    assert (held.can_send, held.can_receive) == (False, True)
    assert held.remote_address == "placeholder.biloxi.example.com"
    a.update_stream(0, audio(49178, [PCMU, ILBC]))
    answer = a.answer(RFC4317["3.1"]["Second-Offer"])
    assert m_lines(answer) == ["audio 49178 RTP/AVP 97"]
    assert answer.origin.session_version == a.session_id + 1
    assert a.streams[0].can_send and a.streams[0].can_receive
    b = bob(audio(49172, [ILBC], direction=Direction.SENDONLY))
    assert b.answer(RFC4317["3.1"]["Offer"]).media[0].direction is Direction.SENDONLY


def test_rfc4317_3_2_hold_one_of_two_streams() -> None:
    a = alice(audio(49170, [PCMU, ILBC]), audio(49172, [TE8], direction=Direction.SENDONLY))
    a.create_offer()
    a.receive_answer(RFC4317["3.2"]["Answer"])
    answer = a.answer(RFC4317["3.2"]["Second-Offer"])
    assert [m.direction for m in answer.media] == [Direction.RECVONLY, Direction.SENDONLY]
    voice, events = a.streams
    assert (voice.can_send, voice.can_receive) == (False, True)
    assert (events.can_send, events.can_receive) == (True, False)


def test_rfc4317_4_1_we_add_a_stream_on_another_host() -> None:
    b = bob(audio(49170, [ILBC]))
    b.answer(RFC4317["4.1"]["Offer"])
    server = audio(48282, [TE8], address="mediaserver.biloxi.example.com",
                   direction=Direction.RECVONLY)  # fmt: skip
    assert b.add_stream(server) == 1
    second = b.create_offer()
    assert m_lines(second) == ["audio 49170 RTP/AVP 97", "audio 48282 RTP/AVP 96"]
    assert str(second.media[1].connection) == "IN IP4 mediaserver.biloxi.example.com"
    reply = RFC4317["4.1"]["Second-Answer"].replace(b" 98", b" 96").replace(b":98 ", b":96 ")
    streams = b.receive_answer(reply)
    assert streams[1].remote_address == "host.atlanta.example.com"
    assert streams[1].local_address == "mediaserver.biloxi.example.com"
    assert (streams[1].can_send, streams[1].can_receive) == (False, True)


def test_rfc4317_4_1_peer_adds_a_stream_answered_from_spare_configs() -> None:
    a = alice(audio(49170, [PCMU, ILBC]), spare_streams=[audio(49172, [TE8])])
    assert m_lines(a.create_offer()) == ["audio 49170 RTP/AVP 0 97"]
    a.receive_answer(RFC4317["4.1"]["Answer"])
    answer = a.answer(RFC4317["4.1"]["Second-Offer"])
    assert m_lines(answer) == m_lines(parse_sdp(RFC4317["4.1"]["Second-Answer"]))
    assert answer.media[1].direction is Direction.SENDONLY
    assert a.streams[1].remote_address == "mediaserver.biloxi.example.com"
    without = alice(audio(49170, [PCMU, ILBC]))
    without.create_offer()
    without.receive_answer(RFC4317["4.1"]["Answer"])
    answer = without.answer(RFC4317["4.1"]["Second-Offer"])  # the new stream only is refused
    assert m_lines(answer) == ["audio 49170 RTP/AVP 97", "audio 0 RTP/AVP 98"]


def test_rfc4317_4_3_video_deleted() -> None:
    a = alice(audio(49170, [ILBC]), video(51372, [H261]))
    a.create_offer()
    a.receive_answer(RFC4317["4.3"]["Answer"])
    answer = a.answer(RFC4317["4.3"]["Second-Offer"])
    assert m_lines(answer) == m_lines(parse_sdp(RFC4317["4.3"]["Second-Answer"]))
    assert [s.rejected for s in a.streams] == [False, True]


def test_rfc4317_5_1_no_media_then_audio_added() -> None:
    a = alice()
    offer = a.create_offer()
    assert offer.media == []
    assert a.receive_answer(RFC4317["5.1"]["Answer"]) == ()
    assert a.add_stream(audio(49170, [ILBC])) == 0
    second = a.create_offer()
    assert m_lines(second) == ["audio 49170 RTP/AVP 97"]
    assert second.origin.session_version == offer.origin.session_version + 1
    (stream,) = a.receive_answer(RFC4317["5.1"]["Second-Answer"])
    assert stream.codec.name == "iLBC"
    b = bob(audio(49172, [ILBC]))
    assert b.answer(RFC4317["5.1"]["Offer"]).media == []
    assert m_lines(b.answer(RFC4317["5.1"]["Second-Offer"])) == ["audio 49172 RTP/AVP 97"]


def test_rfc4317_5_2_and_5_3_black_holed_address() -> None:
    b = bob(audio(49170, [ILBC]))
    b.answer(RFC4317["5.2"]["Offer"])
    assert not b.streams[0].can_send and b.streams[0].can_receive  # RFC 3264 §8.4
    b.answer(RFC4317["5.2"]["Second-Offer"])
    assert b.streams[0].can_send
    a = alice(audio(49170, [ILBC]))
    a.create_offer()
    (stream,) = a.receive_answer(RFC4317["5.3"]["Answer"])
    assert not stream.can_send and stream.can_receive
    answer = a.answer(RFC4317["5.3"]["Second-Offer"])
    assert a.streams[0].can_send
    assert answer.media[0].direction is Direction.SENDRECV


# -- re-offers (RFC 3264 §8) -------------------------------------------------------------------


def test_hold_and_unhold() -> None:
    a, b = alice(audio()), bob(audio(6000))
    offer, _, _ = exchange(a, b)
    a.hold()
    assert a.is_held(0)
    held_offer, held_answer, streams = exchange(a, b)
    assert held_offer.media[0].direction is Direction.SENDONLY
    assert held_answer.media[0].direction is Direction.RECVONLY
    assert held_offer.origin.session_version == offer.origin.session_version + 1
    assert held_answer.origin.session_version == b.session_id + 1
    assert (streams[0].can_send, streams[0].can_receive) == (True, False)
    assert (b.streams[0].can_send, b.streams[0].can_receive) == (False, True)
    a.unhold()
    resumed, answer, streams = exchange(a, b)
    assert resumed.media[0].direction is Direction.SENDRECV
    assert answer.media[0].direction is Direction.SENDRECV
    assert resumed.origin.session_version == offer.origin.session_version + 2
    assert streams[0].can_send and streams[0].can_receive


def test_hold_inactive_and_hold_of_a_receive_only_stream() -> None:
    a, b = alice(audio()), bob(audio(6000))
    exchange(a, b)
    a.hold(0, inactive=True)
    offer, answer, streams = exchange(a, b)
    assert offer.media[0].direction is Direction.INACTIVE
    assert answer.media[0].direction is Direction.INACTIVE
    assert not streams[0].can_send and not streams[0].can_receive
    listener = alice(audio(direction=Direction.RECVONLY))
    exchange(listener, bob(audio(6000)))
    listener.hold()
    assert listener.create_offer().media[0].direction is Direction.INACTIVE  # RFC 3264 §8.4


def test_holding_party_answers_without_receiving() -> None:
    a, b = alice(audio()), bob(audio(6000))
    exchange(a, b)
    b.hold()
    _, answer, streams = exchange(a, b)  # Alice's refresh while Bob holds
    assert answer.media[0].direction is Direction.SENDONLY
    assert (streams[0].can_send, streams[0].can_receive) == (False, True)


def test_identical_reoffer_keeps_the_version() -> None:
    a, b = alice(audio()), bob(audio(6000))
    first, first_answer, _ = exchange(a, b)
    refresh, refresh_answer, _ = exchange(a, b)
    assert refresh.to_bytes() == first.to_bytes()
    assert refresh_answer.to_bytes() == first_answer.to_bytes()


def test_add_stream_at_the_end_and_remove_it_keeping_the_slot() -> None:
    a = alice(audio())
    b = bob(audio(6000), video(7000, [H261]))
    exchange(a, b)
    assert a.add_stream(video(5000, [H261])) == 1
    offer, answer, streams = exchange(a, b)
    assert m_lines(offer) == ["audio 4000 RTP/AVP 0", "video 5000 RTP/AVP 31"]
    assert m_lines(answer) == ["audio 6000 RTP/AVP 0", "video 7000 RTP/AVP 31"]
    assert streams[1].codec.name == "H261" and b.streams[1].remote_port == 5000
    a.remove_stream(1)
    offer, answer, streams = exchange(a, b)
    assert m_lines(offer) == ["audio 4000 RTP/AVP 0", "video 0 RTP/AVP 31"]
    assert m_lines(answer) == ["audio 6000 RTP/AVP 0", "video 0 RTP/AVP 31"]
    assert streams[1].rejected and b.streams[1].rejected
    later, _, _ = exchange(a, b)
    assert m_lines(later) == ["audio 4000 RTP/AVP 0", "video 0 RTP/AVP 31"]  # §8.2: slot kept
    with pytest.raises(IndexError):
        a.remove_stream(1)


def test_new_stream_reuses_a_disabled_slot() -> None:
    a = alice(audio(), video(5000, [H261]))
    b = bob(audio(6000), audio(6002, [PCMU, TE8]))
    exchange(a, b)
    assert [s.rejected for s in a.streams] == [False, True]
    assert a.add_stream(audio(4002, [TE8])) == 1  # RFC 3264 §8.3
    offer, answer, streams = exchange(a, b)
    assert m_lines(offer) == ["audio 4000 RTP/AVP 0", "audio 4002 RTP/AVP 96"]
    assert m_lines(answer) == ["audio 6000 RTP/AVP 0", "audio 6002 RTP/AVP 96"]
    assert not streams[1].rejected
    assert a.add_stream(video(5002, [H261]), reuse_slot=False) == 2


def test_peer_removes_and_re_adds_a_stream() -> None:
    a = alice(audio(), video(5000, [H261]))
    b = bob(audio(6000), video(7000, [H261]))
    exchange(a, b)
    b.remove_stream(1)
    exchange(b, a)
    assert a.streams[1].rejected
    b.add_stream(video(7002, [H261]))
    answer = exchange(b, a)[1]
    assert m_lines(answer) == ["audio 4000 RTP/AVP 0", "video 5000 RTP/AVP 31"]  # config back


def test_reoffer_breaking_rfc3264_8_is_488() -> None:
    a, b = alice(audio(), video(5000, [H261])), bob(audio(6000), video(7000, [H261]))
    exchange(a, b)
    fewer = a.create_offer()
    a.rollback()
    fewer.media.pop()
    with pytest.raises(SDPError, match="m-lines") as info:
        b.receive_offer(fewer)
    assert info.value.status == 488
    swapped = a.create_offer()
    a.rollback()
    swapped.media[1].media = "audio"
    with pytest.raises(SDPError, match="changes") as info:
        b.receive_offer(swapped)
    assert info.value.status == 488
    assert b.state is OfferAnswerState.STABLE


def test_payload_types_stay_for_the_session() -> None:
    a = alice(audio(4000, [OPUS, PCMU]))
    b = bob(audio(6000, [PCMU, OPUS]))
    theirs = b.create_offer()  # Bob offers first: opus at 96
    theirs.media[0].formats = ["100", "0"]
    theirs.media[0].attributes[0] = Attribute("rtpmap", "100 opus/48000/2")
    theirs.media[0].remove_attribute("fmtp")
    b.rollback()
    a.answer(theirs)
    assert a.local_description.media[0].formats == ["100", "0"]
    reoffer = a.create_offer()
    assert reoffer.media[0].formats == ["100", "0"]  # RFC 3264 §8.3.2: the same numbers


# -- states, glare and version numbering -------------------------------------------------------


def test_glare_and_version_numbers_never_reused() -> None:
    a, b = alice(audio()), bob(audio(6000))
    sent: list[SessionDescription] = []
    sent.append(exchange(a, b)[0])
    a.hold()
    mine = a.create_offer()
    sent.append(mine)
    theirs = b.create_offer()
    with pytest.raises(SDPError) as info:
        a.receive_offer(theirs)  # glare: both offered
    assert info.value.status == 491 and info.value.reason == "Request Pending"
    with pytest.raises(SDPError) as info:
        b.receive_offer(mine)
    assert info.value.status == 491
    a.rollback()
    b.rollback()
    assert a.state is b.state is OfferAnswerState.STABLE
    sent.append(a.answer(theirs))  # Bob wins the retry; Alice is still holding
    assert sent[-1].media[0].direction is Direction.SENDONLY
    retry, _, streams = exchange(a, b)
    sent.append(retry)
    assert streams[0].direction is Direction.SENDONLY
    a.unhold()
    sent.append(exchange(a, b)[0])
    versions: dict[int, bytes] = {}
    last = 0
    for description in sent:
        version = description.origin.session_version
        content = description.copy()
        content.origin = sent[0].origin
        assert versions.setdefault(version, content.to_bytes()) == content.to_bytes()
        assert version >= last
        last = version
    # the hold answer and the retried hold offer are identical to the withdrawn offer: same
    # version (RFC 3264 §8); each change adds one
    steps = [d.origin.session_version - sent[0].origin.session_version for d in sent]
    assert steps == [0, 1, 1, 1, 2]
    assert {d.origin.session_id for d in sent} == {a.session_id}


def test_withdrawn_offer_sent_again_keeps_its_version() -> None:
    a = alice(audio())
    first = a.create_offer()
    a.rollback()
    again = a.create_offer()
    assert again.to_bytes() == first.to_bytes()


def test_wrong_state_calls() -> None:
    a = alice(audio())
    with pytest.raises(SDPError, match="no offer"):
        a.receive_answer(b"v=0")
    with pytest.raises(SDPError, match="no offer"):
        a.create_answer()
    a.create_offer()
    for call in (a.create_offer, a.hold, a.unhold, lambda: a.add_stream(audio(4002))):
        with pytest.raises(SDPError) as info:
            call()
        assert info.value.status == 491
    b = bob(audio(6000))
    b.receive_offer(alice(audio()).create_offer())
    assert b.state is OfferAnswerState.OFFER_RECEIVED
    with pytest.raises(SDPError) as info:
        b.create_offer()
    assert info.value.status == 491
    b.rollback()
    assert b.state is OfferAnswerState.STABLE and b.streams == ()


def test_unparseable_offer_and_answer_are_400() -> None:
    b = bob(audio(6000))
    with pytest.raises(SDPError) as info:
        b.receive_offer(b"v=0\r\nnot sdp\r\n")
    assert info.value.status == 400 and b.state is OfferAnswerState.STABLE
    a = alice(audio())
    a.create_offer()
    with pytest.raises(SDPError) as info:
        a.receive_answer(b"garbage")
    assert info.value.status == 400 and a.state is OfferAnswerState.STABLE


def test_offer_with_an_active_stream_but_no_address_is_400() -> None:
    offer = alice(audio()).create_offer()
    offer.connection = None
    with pytest.raises(SDPError, match="connection") as info:
        bob(audio(6000)).receive_offer(offer)
    assert info.value.status == 400


def test_descriptions_are_copies() -> None:
    a, b = alice(audio()), bob(audio(6000))
    offer, _, _ = exchange(a, b)
    offer.media.clear()
    assert a.local_description is not None and len(a.local_description.media) == 1
    assert b.remote_description is not None and len(b.remote_description.media) == 1


# -- ICE (RFC 8839) ----------------------------------------------------------------------------

ICE_A = dict(ice_ufrag="aaaa", ice_pwd="a" * 22, ice_options=["trickle"],
             ice_candidates=["1 1 UDP 2130706431 192.0.2.10 4000 typ host",
                             "2 1 UDP 1694498815 203.0.113.10 40000 typ srflx raddr 192.0.2.10 "
                             "rport 4000"], end_of_candidates=True)  # fmt: skip
ICE_B = dict(ice_ufrag="bbbb", ice_pwd="b" * 22,
             ice_candidates=["1 1 UDP 2130706431 192.0.2.20 6000 typ host"])  # fmt: skip


def test_ice_attributes_both_ways() -> None:
    a, b = alice(audio(4000, **ICE_A)), bob(audio(6000, **ICE_B), ice_lite=True)
    offer, answer, streams = exchange(a, b)
    media = offer.media[0]
    assert (media.ice_ufrag, media.ice_pwd, media.ice_options) == ("aaaa", "a" * 22, ["trickle"])
    assert len(media.candidates) == 2 and media.end_of_candidates
    assert answer.ice_lite and answer.media[0].ice_ufrag == "bbbb"
    mine, theirs = streams[0], b.streams[0]
    assert mine.remote_ice and mine.remote_ice_lite
    assert (mine.remote_ice_ufrag, mine.remote_ice_pwd) == ("bbbb", "b" * 22)
    assert mine.remote_candidates == ("1 1 UDP 2130706431 192.0.2.20 6000 typ host",)
    assert theirs.remote_ice and not theirs.remote_ice_lite and theirs.remote_end_of_candidates
    assert theirs.remote_candidates[1].startswith("2 1 UDP 1694498815 203.0.113.10 40000")


def test_no_ice_in_the_answer_when_the_offer_has_none() -> None:
    a, b = alice(audio()), bob(audio(6000, **ICE_B))
    _, answer, streams = exchange(a, b)
    assert answer.media[0].ice_ufrag is None and not answer.has_attribute("ice-lite")
    assert not streams[0].remote_ice and not b.streams[0].remote_ice


def test_ice_mismatch() -> None:
    offer = alice(audio(4000, **ICE_A)).create_offer()
    offer.connection = Connection("192.0.2.99")  # a SIP ALG rewrote it
    b = bob(audio(6000, **ICE_B))
    answer = b.answer(offer)
    assert answer.media[0].has_attribute("ice-mismatch")
    assert answer.media[0].ice_ufrag is None
    assert b.streams[0].ice_mismatch and not b.streams[0].remote_ice


def test_trickle_offer_without_candidates_is_no_mismatch() -> None:
    trickle = dict(ICE_A, ice_candidates=[], end_of_candidates=False)
    offer = alice(audio(4000, **trickle)).create_offer()
    offer.connection = Connection("0.0.0.0")
    b = bob(audio(6000, **ICE_B))
    assert not b.answer(offer).media[0].has_attribute("ice-mismatch")
    assert b.streams[0].remote_ice and b.streams[0].can_send  # ICE decides the address


# -- ptime -------------------------------------------------------------------------------------


def test_ptime() -> None:
    a, b = alice(audio(4000, ptime=30)), bob(audio(6000, ptime=20, maxptime=40))
    _, _, streams = exchange(a, b)
    assert streams[0].ptime == 20 and b.streams[0].ptime == 30
    a2, b2 = alice(audio(4000, ptime=60)), bob(audio(6000, maxptime=40))
    _, _, streams = exchange(a2, b2)
    assert streams[0].ptime == 40  # capped by the peer's maxptime
    a3, b3 = alice(audio()), bob(audio(6000))
    assert exchange(a3, b3)[2][0].ptime == 20


# -- real-world offers -------------------------------------------------------------------------


def test_answer_a_baresip_offer() -> None:
    b = bob(
        audio(6000, [OPUS, G722, PCMU, TE8], srtp=SRTPMode.OPTIONAL,
              crypto=[crypto(1, AES80, "bob")], **ICE_B),
    )  # fmt: skip
    answer = b.answer(sample("baresip_offer.sdp"))
    media = answer.media[0]
    assert media.formats == ["96", "9", "0", "101"]
    assert media.rtpmap(96).encoding == "opus" and media.rtcp_mux
    assert [(c.tag, c.suite) for c in media.crypto] == [(1, AES80)]
    assert media.ice_ufrag == "bbbb"
    stream = b.streams[0]
    assert stream.codec.name == "opus" and stream.send_payload_type == 96
    assert stream.srtp is not None and stream.srtp.remote_key == (
        "inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz"
    )
    assert stream.remote_ice and len(stream.remote_candidates) == 3
    assert stream.rtcp_mux and stream.remote_rtcp_port == 10002
    assert stream.ptime == 20


def test_browser_dtls_offer_is_not_acceptable() -> None:
    with pytest.raises(SDPError, match="DTLS") as info:
        bob(audio(6000, [OPUS, PCMU])).answer(sample("webrtc_offer.sdp"))
    assert info.value.status == 488


# -- configuration errors ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(port=0),
        dict(port=70000),
        dict(codecs=[]),
        dict(srtp=SRTPMode.MANDATORY),
        dict(crypto=["1 AES_CM_128_HMAC_SHA1_80"]),
        dict(crypto=[crypto(1, AES80, "x"), crypto(1, AES32, "y")]),
        dict(ice_ufrag="abcd"),
        dict(ice_candidates=["not a candidate"]),
        dict(rtcp_port=0),
    ],
)
def test_bad_media_config(kwargs: dict[str, Any]) -> None:
    args: dict[str, Any] = {"port": 4000, "codecs": [PCMU], **kwargs}
    with pytest.raises(ValueError):
        MediaConfig(**args)


def test_config_accepts_objects_and_text() -> None:
    parsed = Crypto.parse(crypto(1, AES80, "x"))
    config = audio(srtp=SRTPMode.OPTIONAL, crypto=[parsed, crypto(2, AES32, "y")])
    assert [c.tag for c in config.crypto_lines] == [1, 2]
    assert isinstance(config.codecs, tuple)
    with pytest.raises(ValueError):
        OfferAnswer("not an address!", [])
