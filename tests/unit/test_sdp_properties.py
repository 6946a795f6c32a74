"""Property tests of SDP and offer/answer (hypothesis).

* Random bytes and mutated real-world samples make the parser, every typed helper and the
  offer/answer engine raise nothing but :class:`SDPError`, quickly; whatever parses serializes
  to something that parses back to the same description.
* Generated descriptions (every line type, multicast, IPv6, host names, typed and unknown
  attributes) round-trip: ``parse_sdp(d.to_bytes()) == d``; so do generated candidates, crypto
  lines, rtpmaps, connections and fmtp parameters.
* Two engines with random capabilities either agree on every stream (codec, payload types both
  ways, direction, ports, keys) or the answerer refuses with 488.
"""

from __future__ import annotations

import base64
import random
from datetime import timedelta
from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from p2psip.media.offer_answer import (
    CodecDescription,
    MediaConfig,
    OfferAnswer,
    SRTPMode,
)
from p2psip.media.sdp import (
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
    Rtcp,
    RtpMap,
    SDPError,
    SessionDescription,
    Timing,
    format_fmtp_params,
    parse_fmtp_params,
    parse_sdp,
)
from tests.unit.test_sdp import RFC4317_BODIES, SAMPLE_FILES, sample

# A slow example is a bug here (catastrophic regex backtracking, quadratic loops).
FAST = settings(
    deadline=timedelta(milliseconds=1500),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def fast(max_examples: int) -> settings:
    return settings(FAST, max_examples=max_examples)


SAMPLES = [sample(name) for name in SAMPLE_FILES] + [body for _, body in RFC4317_BODIES]

# -- exercising everything -----------------------------------------------------------------


def _quiet(call: Any) -> Any:
    try:
        return call()
    except SDPError:
        return None


def touch(description: SessionDescription) -> None:
    """Call every reader; only SDPError may come out. Re-serialization must round-trip."""
    body = description.to_bytes()
    assert parse_sdp(body, max_size=len(body)) == description
    _quiet(lambda: description.direction)
    _ = description.ice_lite, description.ice_ufrag, description.ice_pwd, description.ice_options
    if description.connection is not None:
        _ = description.connection.ip, description.connection.is_unspecified
    for media in description.media:
        _quiet(lambda m=media: description.effective_direction(m))
        description.ice_credentials(media)
        description.media_connection(media)
        _ = media.is_rtp, media.is_secure, media.is_dtls, media.rtcp_mux, media.m_line()
        _ = media.end_of_candidates, media.usable_crypto(), media.ice_options
        for name in ("payload_types", "ptime", "maxptime", "rtcp", "crypto", "candidates",
                     "remote_candidates", "direction"):  # fmt: skip
            _quiet(lambda m=media, n=name: getattr(m, n))
        _quiet(media.codecs)
        _quiet(media.telephone_events)
        for fmt in media.formats:
            _quiet(lambda m=media, f=fmt: m.fmtp_params(f))
        for crypto in media.usable_crypto():
            for key in crypto.key_params:
                _ = key.key_material, key.lifetime_packets
            assert Crypto.parse(str(crypto)) == crypto
        for candidate in _quiet(lambda m=media: m.candidates) or []:
            assert Candidate.parse(str(candidate)) == candidate


def _answerer() -> OfferAnswer:
    crypto = "1 AES_CM_128_HMAC_SHA1_80 inline:" + base64.b64encode(bytes(30)).decode()
    codecs = [
        CodecDescription("opus", 48000, 2),
        CodecDescription("PCMU", 8000),
        CodecDescription("iLBC", 8000),
        CodecDescription("H261", 90000),
        CodecDescription.telephone_event(8000),
        CodecDescription.telephone_event(48000),
    ]
    streams = [
        MediaConfig(
            port=6000,
            codecs=codecs,
            srtp=SRTPMode.OPTIONAL,
            crypto=[crypto],
            ice_ufrag="abcd",
            ice_pwd="p" * 22,
        ),
        MediaConfig(port=6002, codecs=codecs),
        MediaConfig(port=6004, codecs=codecs, media="video"),
    ]
    return OfferAnswer("192.0.2.20", streams, rng=random.Random(0))


def exercise(data: bytes) -> None:
    """Parse, read, and negotiate ``data`` as an offer and as an answer: only SDPError."""
    try:
        description = parse_sdp(data)
    except SDPError:
        description = None
    if description is not None:
        touch(description)
    answerer = _answerer()
    try:
        answer = answerer.answer(data)
    except SDPError:
        pass
    else:
        touch(answer)
        assert len(answer.media) == len(answerer.streams)
    offerer = _answerer()
    offerer.create_offer()
    try:
        offerer.receive_answer(data)
    except SDPError:
        pass


# -- garbage in --------------------------------------------------------------------------------


@fast(300)
@given(st.binary(max_size=1500))
def test_random_bytes_raise_only_sdp_error(data: bytes) -> None:
    exercise(data)


LINE_TYPES = "vosiuepcbtrzkamxA "
FIELD = st.sampled_from(
    ["0", "-", "IN", "IP4", "IP6", "127.0.0.1", "::1", "0.0.0.0", "audio", "RTP/AVP",
     "RTP/SAVP", "UDP/TLS/RTP/SAVPF", "96", "128", "65536", "-1", "\u0661", "x" * 70,
     "rtpmap:96 opus/48000/2", "crypto:1 AES_CM_128_HMAC_SHA1_80 inline:AAAA", "sendonly",
     "candidate:1 1 UDP 1 192.0.2.1 1 typ host", "fmtp:96 a=b", "rtcp:9 IN IP4 0.0.0.0"]
)  # fmt: skip


@fast(300)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(LINE_TYPES),
            st.lists(FIELD | st.text(max_size=6), max_size=6).map(" ".join),
        ),
        max_size=25,
    )
)
def test_random_lines_raise_only_sdp_error(lines: list[tuple[str, str]]) -> None:
    head = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nt=0 0\r\n"
    text = head + "".join(f"{kind}={value}\r\n" for kind, value in lines)
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:
        data = text.encode("utf-8", "replace")
    exercise(data)


INTERESTING = [b"0", b"-1", b"65535", b"65536", b"", b" ", b"\t", b"/", b":", b"=", b"\xff",
               b"\x00", b"\r", b"\n", b"\r\n", b"999999999999999999999999", b"0.0.0.0",
               b"::", b"\xd9\xa1", b"RTP/SAVP", b"a=sendonly", b"m=audio 0 RTP/AVP 0"]  # fmt: skip


@st.composite
def mutated_samples(draw: st.DrawFn) -> bytes:
    lines = draw(st.sampled_from(SAMPLES)).split(b"\r\n")
    for _ in range(draw(st.integers(1, 5))):
        index = draw(st.integers(0, len(lines) - 1))
        op = draw(st.sampled_from(["delete", "duplicate", "swap", "field", "byte", "insert"]))
        line = lines[index]
        if op == "delete" and len(lines) > 1:
            del lines[index]
        elif op == "duplicate":
            lines.insert(index, line)
        elif op == "swap":
            other = draw(st.integers(0, len(lines) - 1))
            lines[index], lines[other] = lines[other], line
        elif op == "field" and b" " in line:
            fields = line.split(b" ")
            fields[draw(st.integers(0, len(fields) - 1))] = draw(st.sampled_from(INTERESTING))
            lines[index] = b" ".join(fields)
        elif op == "byte" and line:
            at = draw(st.integers(0, len(line) - 1))
            lines[index] = line[:at] + draw(st.binary(min_size=0, max_size=2)) + line[at + 1 :]
        else:
            at = draw(st.integers(0, len(line)))
            lines[index] = line[:at] + draw(st.sampled_from(INTERESTING)) + line[at:]
    return b"\r\n".join(lines)


@fast(400)
@given(mutated_samples())
def test_mutated_samples_raise_only_sdp_error(data: bytes) -> None:
    exercise(data)


@fast(50)
@given(st.sampled_from(SAMPLES), st.integers(0, 2000))
def test_truncated_samples_raise_only_sdp_error(body: bytes, cut: int) -> None:
    exercise(body[:cut])


# -- generated descriptions round-trip ---------------------------------------------------------

TOKEN_CHARS = "!#$%&'*+-.0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ^_`abcdefghijklmnopqrstuvwxyz{|}~"
TOKEN = st.text(alphabet=TOKEN_CHARS, min_size=1, max_size=8)
TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n\x00"),
    max_size=16,
)
HOST = st.from_regex(r"[a-z][a-z0-9-]{0,8}(\.[a-z0-9-]{1,8}){0,3}", fullmatch=True)
ADDRESS = st.one_of(
    st.tuples(st.just("IP4"), st.ip_addresses(v=4).map(str)),
    st.tuples(st.just("IP6"), st.ip_addresses(v=6).map(str)),
    st.tuples(st.sampled_from(["IP4", "IP6"]), HOST),
)
SMALL = st.integers(0, 2**40)
BASE64_30 = st.binary(min_size=30, max_size=30).map(lambda b: base64.b64encode(b).decode())


@st.composite
def connections(draw: st.DrawFn) -> Connection:
    addrtype, address = draw(ADDRESS)
    if addrtype == "IP6":
        return Connection(address, "IP6", count=draw(st.none() | st.integers(1, 255)))
    ttl = draw(st.none() | st.integers(0, 255))
    count = draw(st.none() | st.integers(1, 255)) if ttl is not None else None
    return Connection(address, addrtype, ttl=ttl, count=count)


@st.composite
def origins(draw: st.DrawFn) -> Origin:
    addrtype, address = draw(ADDRESS)
    return Origin(draw(TOKEN), draw(SMALL), draw(SMALL), "IN", addrtype, address)


TYPED_TIME = st.builds(
    lambda n, u: f"{n}{u}", st.integers(0, 10**6), st.sampled_from(["", "d", "h", "m", "s"])
)
REPEAT = st.lists(TYPED_TIME, min_size=3, max_size=5).map(" ".join)
TIME_ZONES = st.lists(
    st.builds(lambda t, sign, o: f"{t} {sign}{o}", SMALL, st.sampled_from(["", "-"]), TYPED_TIME),
    min_size=1,
    max_size=3,
).map(" ".join)
TIMINGS = st.builds(Timing, SMALL, SMALL, st.lists(REPEAT, max_size=2).map(tuple))


@st.composite
def candidates(draw: st.DrawFn) -> Candidate:
    _, address = draw(ADDRESS)
    related = draw(st.none() | ADDRESS.map(lambda a: a[1]))
    return Candidate(
        draw(st.text(alphabet="abcXYZ0189+/", min_size=1, max_size=32)),
        draw(st.integers(1, 256)),
        draw(st.sampled_from(["UDP", "udp", "TCP"])),
        draw(st.integers(1, 2**32 - 1)),
        address,
        draw(st.integers(0, 65535)),
        draw(st.sampled_from(["host", "srflx", "prflx", "relay"])),
        related,
        draw(st.none() | st.integers(0, 65535)),
        tuple(
            draw(
                st.lists(
                    st.tuples(TOKEN.filter(lambda t: t not in ("raddr", "rport")), TOKEN),
                    max_size=3,
                )
            )
        ),
    )


KEY_PARAMS = st.builds(
    KeyParam,
    BASE64_30,
    st.none() | st.sampled_from(["2^20", "2^31", "1048576"]),
    st.none(),
    st.none(),
) | st.builds(
    KeyParam,
    BASE64_30,
    st.none() | st.sampled_from(["2^20", "1000"]),
    st.integers(0, 2**32),
    st.integers(1, 128),
)
CRYPTOS = st.builds(
    Crypto,
    st.integers(0, 999_999_999),
    st.sampled_from(["AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32", "F8_128_HMAC_SHA1_80"]),
    st.lists(KEY_PARAMS, min_size=1, max_size=2).map(tuple),
    st.lists(st.sampled_from(["KDR=1", "UNENCRYPTED_SRTCP", "FEC_ORDER=FEC_SRTP"]), max_size=2).map(
        tuple
    ),
)
RTPMAPS = st.builds(
    RtpMap,
    st.integers(0, 127),
    st.text(alphabet=TOKEN_CHARS.replace("/", ""), min_size=1, max_size=10),
    st.integers(1, 2**32 - 1),
    st.none() | st.integers(1, 255),
)
FMTP_PARAMS = st.dictionaries(
    st.text(alphabet=TOKEN_CHARS.replace("=", "").replace(";", ""), min_size=1, max_size=6),
    st.text(alphabet=TOKEN_CHARS.replace(";", ""), max_size=6),
    max_size=4,
)
ATTRIBUTES = st.one_of(
    st.builds(Attribute, TOKEN, st.none() | TEXT),
    st.sampled_from(list(Direction)).map(lambda d: Attribute(str(d))),
    RTPMAPS.map(lambda r: Attribute("rtpmap", str(r))),
    st.builds(
        lambda f, p: Attribute("fmtp", str(Fmtp(f, format_fmtp_params(p)))), TOKEN, FMTP_PARAMS
    ),
    CRYPTOS.map(lambda c: Attribute("crypto", str(c))),
    candidates().map(lambda c: Attribute("candidate", str(c))),
    st.integers(0, 65535).map(lambda p: Attribute("rtcp", str(Rtcp(p)))),
    st.just(Attribute("rtcp-mux")),
)
PROTOS = st.sampled_from(
    ["RTP/AVP", "RTP/SAVP", "RTP/AVPF", "RTP/SAVPF", "UDP/TLS/RTP/SAVP", "udp", "TCP/MSRP"]
)


@st.composite
def media_descriptions(draw: st.DrawFn) -> MediaDescription:
    proto = draw(PROTOS)
    if "RTP" in proto.split("/"):
        formats = draw(st.lists(st.integers(0, 127).map(str), min_size=1, max_size=6))
    else:
        formats = draw(st.lists(TOKEN, min_size=1, max_size=3))
    return MediaDescription(
        media=draw(st.sampled_from(["audio", "video", "text", "application", "message"])),
        port=draw(st.integers(0, 65535)),
        proto=proto,
        formats=formats,
        port_count=draw(st.none() | st.integers(1, 65536)),
        title=draw(st.none() | TEXT),
        connections=draw(st.lists(connections(), max_size=2)),
        bandwidths=draw(st.lists(st.builds(Bandwidth, TOKEN, SMALL), max_size=2)),
        key=draw(st.none() | TEXT),
        attributes=draw(st.lists(ATTRIBUTES, max_size=6)),
    )


@st.composite
def descriptions(draw: st.DrawFn) -> SessionDescription:
    return SessionDescription(
        origin=draw(origins()),
        session_name=draw(TEXT),
        information=draw(st.none() | TEXT),
        uri=draw(st.none() | TEXT),
        emails=draw(st.lists(TEXT, max_size=2)),
        phones=draw(st.lists(TEXT, max_size=2)),
        connection=draw(st.none() | connections()),
        bandwidths=draw(st.lists(st.builds(Bandwidth, TOKEN, SMALL), max_size=2)),
        timings=draw(st.lists(TIMINGS, min_size=1, max_size=2)),
        time_zones=draw(st.none() | TIME_ZONES),
        key=draw(st.none() | TEXT),
        attributes=draw(st.lists(ATTRIBUTES, max_size=5)),
        media=draw(st.lists(media_descriptions(), max_size=4)),
    )


@fast(300)
@given(descriptions())
def test_generated_descriptions_round_trip(description: SessionDescription) -> None:
    body = description.to_bytes()
    parsed = parse_sdp(body)
    assert parsed == description
    assert parsed.to_bytes() == body
    lf = body.replace(b"\r\n", b"\n")
    assert parse_sdp(lf) == description
    touch(parsed)


@fast(200)
@given(candidates())
def test_candidates_round_trip(candidate: Candidate) -> None:
    assert Candidate.parse(str(candidate)) == candidate
    assert Candidate.parse("candidate:" + str(candidate)) == candidate


@fast(200)
@given(CRYPTOS)
def test_crypto_round_trip(crypto: Crypto) -> None:
    assert Crypto.parse(str(crypto)) == crypto
    assert all(len(k.key_material) == 30 for k in crypto.key_params)
    assert crypto.has_valid_key_length()


@fast(200)
@given(RTPMAPS, connections(), FMTP_PARAMS)
def test_typed_values_round_trip(
    rtpmap: RtpMap, connection: Connection, params: dict[str, str]
) -> None:
    assert RtpMap.parse(str(rtpmap)) == rtpmap
    assert Connection.parse(str(connection)) == connection
    assert parse_fmtp_params(format_fmtp_params(params)) == params


# -- negotiation -------------------------------------------------------------------------------

POOL = [
    CodecDescription("opus", 48000, 2),
    CodecDescription("PCMU", 8000),
    CodecDescription("PCMA", 8000),
    CodecDescription("G722", 8000),
    CodecDescription("iLBC", 8000, payload_type=97),
    CodecDescription.telephone_event(8000),
    CodecDescription.telephone_event(48000),
    CodecDescription("CN", 8000),
]
SUITES = ["AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32"]


@st.composite
def stream_configs(draw: st.DrawFn, address: str, port: int, label: str) -> MediaConfig:
    codecs = draw(st.lists(st.sampled_from(POOL), min_size=1, max_size=6, unique=True))
    assume(any(not c.is_auxiliary for c in codecs))
    mode = draw(st.sampled_from(list(SRTPMode)))
    suites = draw(st.lists(st.sampled_from(SUITES), min_size=1, max_size=2, unique=True))
    keys = [
        f"{i + 1} {suite} inline:" + base64.b64encode(bytes([i, len(label)] * 15)).decode()
        for i, suite in enumerate(suites)
    ]
    ice = draw(st.booleans())
    return MediaConfig(
        port=port,
        codecs=codecs,
        ptime=draw(st.none() | st.sampled_from([10, 20, 30])),
        rtcp_mux=draw(st.booleans()),
        srtp=mode,
        crypto=keys if mode is not SRTPMode.OFF else [],
        ice_ufrag=label * 4 if ice else None,
        ice_pwd=label * 22 if ice else None,
        ice_candidates=[f"1 1 UDP 2130706431 {address} {port} typ host"] if ice else [],
        direction=draw(st.sampled_from(list(Direction))),
    )


@fast(300)
@given(
    stream_configs("192.0.2.10", 4000, "a"), stream_configs("192.0.2.20", 6000, "b"), st.booleans()
)
def test_two_engines_agree_or_refuse_with_488(
    mine: MediaConfig, theirs: MediaConfig, hold: bool
) -> None:
    alice = OfferAnswer("192.0.2.10", [mine], rng=random.Random(1))
    bob = OfferAnswer("192.0.2.20", [theirs], rng=random.Random(2))
    for round_ in range(2):
        if round_ and hold:
            alice.hold()
        offer = alice.create_offer()
        try:
            answer = bob.answer(offer.to_bytes())
        except SDPError as exc:
            assert exc.status == 488
            alice.rollback()
            return
        (a,) = alice.receive_answer(answer.to_bytes())
        (b,) = bob.streams
        assert a.rejected is b.rejected is False
        assert a.codec is not None and b.codec is not None
        assert (a.codec.name.casefold(), a.codec.clock_rate) == (
            b.codec.name.casefold(), b.codec.clock_rate,
        )  # fmt: skip
        assert (a.send_payload_type, a.recv_payload_type) == (
            b.recv_payload_type, b.send_payload_type,
        )  # fmt: skip
        assert a.telephone_event_send_payload_type == b.telephone_event_recv_payload_type
        assert a.direction is b.direction.reversed()
        assert (a.remote_port, b.remote_port) == (6000, 4000)
        assert a.rtcp_mux is b.rtcp_mux is (mine.rtcp_mux and theirs.rtcp_mux)
        assert (a.remote_rtcp_port, b.remote_rtcp_port) == (b.local_rtcp_port, a.local_rtcp_port)
        if a.srtp is None:
            assert b.srtp is None
            assert SRTPMode.MANDATORY not in (mine.srtp, theirs.srtp)
        else:
            assert b.srtp is not None and a.srtp.suite == b.srtp.suite
            assert (a.srtp.local_key, a.srtp.remote_key) == (b.srtp.remote_key, b.srtp.local_key)
        assert a.remote_ice is (mine.ice_ufrag is not None and theirs.ice_ufrag is not None)
        if hold and round_:
            assert not a.can_receive and not b.can_send
        assert answer.origin.session_version == bob.session_version
