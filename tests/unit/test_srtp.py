"""SDES key parameters and SrtpSession (sans-IO, no sockets)."""

from __future__ import annotations

import base64
import random
import struct

import pylibsrtp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2psip.errors import P2PSIPError
from p2psip.media.srtp import (
    SUITES,
    InlineKey,
    SrtpAuthenticationError,
    SrtpError,
    SrtpKeyError,
    SrtpKeyExpired,
    SrtpPacketError,
    SrtpReplayError,
    SrtpSession,
    SrtpUnsupportedError,
    generate_inline,
    generate_key,
    is_supported,
    parse_inline,
    supported_suites,
)

AES80 = "AES_CM_128_HMAC_SHA1_80"
# RFC 4568 §4 example key (40 base64 chars = 30 bytes)
RFC_KEY = "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz"


def seeded(seed: int = 1):
    rng = random.Random(seed)
    return rng.randbytes


def rtp(seq: int, ssrc: int = 0x11223344, payload: bytes = b"\xd5" * 160, ts: int = 0) -> bytes:
    """A G.711 packet: 12-byte header + 160 bytes = 172 bytes."""
    return struct.pack("!BBHII", 0x80, 0, seq & 0xFFFF, ts, ssrc) + payload


def rtcp_sr(ssrc: int = 0x11223344) -> bytes:
    return struct.pack("!BBHI", 0x80, 200, 6, ssrc) + bytes(20)


def pair(suite: str, seed: int = 1) -> tuple[SrtpSession, SrtpSession]:
    """Alice and Bob: each protects with its own key and unprotects with the other's."""
    a = generate_key(suite, seeded(seed))
    b = generate_key(suite, seeded(seed + 1000))
    return SrtpSession(suite, a, b), SrtpSession(suite, b, a)


# ---------------------------------------------------------------------------------------------
# Suites
# ---------------------------------------------------------------------------------------------


def test_the_four_pylibsrtp_suites_are_supported() -> None:
    for suite in (AES80, "AES_CM_128_HMAC_SHA1_32", "AEAD_AES_128_GCM", "AEAD_AES_256_GCM"):
        assert is_supported(suite), suite
        assert suite in supported_suites()


@pytest.mark.parametrize("suite", ["AES_256_CM_HMAC_SHA1_80", "AES_256_CM_HMAC_SHA1_32"])
def test_aes256_cm_follows_what_pylibsrtp_offers(suite: str) -> None:
    available = hasattr(pylibsrtp.Policy, SUITES[suite].pylibsrtp_profile)
    assert is_supported(suite) == available
    key = generate_key(suite, seeded())
    assert len(key.master_key) == 32 and len(key.master_salt) == 14  # RFC 6188
    if available:  # pragma: no cover - not in pylibsrtp 1.0
        a, b = pair(suite)
        assert b.unprotect_rtp(a.protect_rtp(rtp(1))) == rtp(1)
    else:
        with pytest.raises(SrtpUnsupportedError, match=suite):
            SrtpSession(suite, key, key)


def test_suite_lengths_follow_the_rfcs() -> None:
    assert (SUITES[AES80].key_salt_length, SUITES[AES80].srtp_tag_length) == (30, 10)
    s32 = SUITES["AES_CM_128_HMAC_SHA1_32"]
    assert (s32.srtp_tag_length, s32.srtcp_tag_length) == (4, 10)  # RFC 4568 §6.2.2
    assert SUITES["AEAD_AES_128_GCM"].key_salt_length == 28  # RFC 7714 §12: 12-byte salt
    assert SUITES["AEAD_AES_256_GCM"].key_salt_length == 44


def test_unknown_suite_is_refused_clearly() -> None:
    with pytest.raises(SrtpUnsupportedError, match="F8_128_HMAC_SHA1_80"):
        SrtpSession("F8_128_HMAC_SHA1_80", bytes(30), bytes(30))
    with pytest.raises(SrtpUnsupportedError):
        parse_inline("inline:" + RFC_KEY, "NULL_HMAC_SHA1_80")


# ---------------------------------------------------------------------------------------------
# generate_inline / parse_inline
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("suite", "chars"),
    [
        (AES80, 40),
        ("AES_CM_128_HMAC_SHA1_32", 40),
        ("AEAD_AES_128_GCM", 40),  # 28 bytes -> 38 chars + "=="
        ("AEAD_AES_256_GCM", 60),
        ("AES_256_CM_HMAC_SHA1_80", 64),
    ],
)
def test_generate_inline_is_base64_of_key_and_salt(suite: str, chars: int) -> None:
    value = generate_inline(suite, seeded())
    assert value.startswith("inline:")
    assert len(value) == len("inline:") + chars
    raw = base64.b64decode(value[7:], validate=True)
    assert raw == random.Random(1).randbytes(SUITES[suite].key_salt_length)
    assert parse_inline(value, suite).key_salt == raw


def test_generate_inline_with_lifetime() -> None:
    assert generate_inline(AES80, seeded(), lifetime=2**20).endswith("|2^20")
    assert generate_inline(AES80, seeded(), lifetime=1000).endswith("|1000")
    assert parse_inline(generate_inline(AES80, seeded(), lifetime=2**31), AES80).lifetime == 2**31


def test_generate_inline_refuses_a_short_rng() -> None:
    with pytest.raises(SrtpKeyError):
        generate_inline(AES80, lambda n: bytes(n - 1))


def test_parse_inline_rfc4568_example_with_lifetime() -> None:
    key = parse_inline(f"inline:{RFC_KEY}|2^20", AES80)
    assert key.lifetime == 2**20
    assert key.key_salt == base64.b64decode(RFC_KEY)
    assert len(key.master_key) == 16 and len(key.master_salt) == 14
    assert key.to_sdp() == f"inline:{RFC_KEY}|2^20"


def test_parse_inline_decimal_lifetime_and_case_insensitive_method() -> None:
    assert parse_inline(f"INLINE:{RFC_KEY}|1048576", AES80).lifetime == 1048576
    assert parse_inline(f"inline:{RFC_KEY}", AES80).lifetime is None


def test_parse_inline_mki_is_refused_as_unsupported() -> None:
    # RFC 4568 §4 example: well-formed, but libsrtp MKIs are not reachable through pylibsrtp
    with pytest.raises(SrtpUnsupportedError, match="MKI"):
        parse_inline(f"inline:{RFC_KEY}|2^20|1:4", AES80)
    with pytest.raises(SrtpUnsupportedError, match="MKI"):
        parse_inline(f"inline:{RFC_KEY}|1:4", AES80)


def test_parse_inline_accepts_missing_base64_padding() -> None:
    value = generate_inline("AEAD_AES_128_GCM", seeded())
    assert value.endswith("=")
    assert parse_inline(value.rstrip("="), "AEAD_AES_128_GCM") == parse_inline(
        value, "AEAD_AES_128_GCM"
    )


@pytest.mark.parametrize(
    "value",
    [
        RFC_KEY,  # no method
        f"uri:{RFC_KEY}",
        f"inline:{RFC_KEY[:-4]}",  # 27 bytes
        f"inline:{RFC_KEY}AAAA",  # 33 bytes
        f"inline:{RFC_KEY[:-1]}*",  # not base64
        f"inline:{RFC_KEY[:20]} {RFC_KEY[20:]}",  # whitespace
        f"inline:{RFC_KEY}==",  # padding on a 30-byte key
        f"inline:{RFC_KEY}|",
        f"inline:{RFC_KEY}|2^",
        f"inline:{RFC_KEY}|2^49",  # over 2^48
        f"inline:{RFC_KEY}|2^99999999999999",
        f"inline:{RFC_KEY}|0",
        f"inline:{RFC_KEY}|281474976710657",  # 2^48 + 1
        f"inline:{RFC_KEY}|2^20|2^20",
        f"inline:{RFC_KEY}|1:0",  # MKI length 1..128
        f"inline:{RFC_KEY}|1:129",
        f"inline:{RFC_KEY}|256:1",  # does not fit in one byte
        f"inline:{RFC_KEY}|x:4",
        f"inline:{RFC_KEY}|2^20|1:4|5",
        "inline:",
        "",
    ],
)
def test_parse_inline_refuses_malformed_values(value: str) -> None:
    with pytest.raises(SrtpKeyError):
        parse_inline(value, AES80)


def test_parse_inline_refuses_non_canonical_base64() -> None:
    value = generate_inline("AEAD_AES_128_GCM", seeded())
    assert value.endswith("==") and value[-3] in "AQgw"  # 28 bytes: 2 bits + 4 zero bits
    stray = value[:-3] + chr(ord(value[-3]) + 1) + "=="  # sets one of the zero bits
    with pytest.raises(SrtpKeyError, match="canonical"):
        parse_inline(stray, "AEAD_AES_128_GCM")


def test_parse_inline_refuses_a_key_of_another_suite_length() -> None:
    gcm = generate_inline("AEAD_AES_128_GCM", seeded())
    with pytest.raises(SrtpKeyError, match="30 bytes"):
        parse_inline(gcm, AES80)


@given(st.text(max_size=120))
@settings(max_examples=300, deadline=None)
def test_parse_inline_random_text_raises_only_our_error(text: str) -> None:
    for value in (text, "inline:" + text, f"inline:{RFC_KEY}|" + text):
        try:
            key = parse_inline(value, AES80)
        except SrtpError as exc:
            assert isinstance(exc, P2PSIPError)
        else:
            assert len(key.key_salt) == 30


@given(
    st.sampled_from(sorted(SUITES)),
    st.binary(min_size=44, max_size=46),
    st.one_of(st.none(), st.integers(1, 2**48)),
)
@settings(max_examples=200, deadline=None)
def test_inline_round_trip(suite: str, material: bytes, lifetime: int | None) -> None:
    spec = SUITES[suite]
    key = InlineKey(suite, material[: spec.key_length], material[-spec.salt_length :], lifetime)
    assert parse_inline(key.to_sdp(), suite) == key


# ---------------------------------------------------------------------------------------------
# SrtpSession
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suite", supported_suites())
def test_round_trip_rtp_and_rtcp(suite: str) -> None:
    alice, bob = pair(suite)
    spec = SUITES[suite]
    for seq in range(100, 110):
        packet = rtp(seq, payload=bytes([seq]) * 160)
        protected = alice.protect_rtp(packet)
        assert len(protected) == len(packet) + spec.srtp_tag_length
        assert protected[:12] == packet[:12]  # header in clear
        assert protected[12:172] != packet[12:]  # payload encrypted
        assert bob.unprotect_rtp(protected) == packet
        back = bob.protect_rtp(rtp(seq, ssrc=0x55667788))
        assert alice.unprotect_rtp(back) == rtp(seq, ssrc=0x55667788)
    sr = alice.protect_rtcp(rtcp_sr())
    assert len(sr) == len(rtcp_sr()) + 4 + spec.srtcp_tag_length
    assert bob.unprotect_rtcp(sr) == rtcp_sr()
    assert alice.stats.rtp_protected == 10 and alice.stats.rtp_unprotected == 10
    assert bob.stats.rtcp_unprotected == 1 and bob.stats.rejected == 0


@pytest.mark.parametrize("suite", supported_suites())
def test_wrong_key_fails_authentication_and_is_counted(suite: str) -> None:
    alice, _ = pair(suite, seed=1)
    _, mallory = pair(suite, seed=2)
    with pytest.raises(SrtpAuthenticationError):
        mallory.unprotect_rtp(alice.protect_rtp(rtp(1)))
    with pytest.raises(SrtpAuthenticationError):
        mallory.unprotect_rtcp(alice.protect_rtcp(rtcp_sr()))
    assert mallory.stats.auth_failures == 2
    assert mallory.stats.rtp_unprotected == 0


@pytest.mark.parametrize("suite", supported_suites())
def test_any_flipped_bit_is_detected(suite: str) -> None:
    alice, bob = pair(suite)
    protected = alice.protect_rtp(rtp(5))
    for position in (1, 3, 11, 12, 100, len(protected) - 1):  # header, payload and tag
        tampered = bytearray(protected)
        tampered[position] ^= 0x01
        with pytest.raises(SrtpAuthenticationError):
            bob.unprotect_rtp(bytes(tampered))
    assert bob.unprotect_rtp(protected) == rtp(5)  # the original still passes
    assert bob.stats.auth_failures == 6


def test_replay_is_refused_and_counted() -> None:
    alice, bob = pair(AES80)
    first = alice.protect_rtp(rtp(1))
    bob.unprotect_rtp(first)
    with pytest.raises(SrtpReplayError):
        bob.unprotect_rtp(first)
    sr = alice.protect_rtcp(rtcp_sr())
    bob.unprotect_rtcp(sr)
    with pytest.raises(SrtpReplayError):
        bob.unprotect_rtcp(sr)
    assert bob.stats.replays == 2


def test_reordering_within_the_window_is_accepted_older_is_refused() -> None:
    alice, bob = pair(AES80)
    packets = [alice.protect_rtp(rtp(seq)) for seq in range(1, 301)]
    bob.unprotect_rtp(packets[199])  # seq 200
    assert bob.unprotect_rtp(packets[149]) == rtp(150)  # 50 back: inside a 128 window
    with pytest.raises(SrtpReplayError):
        bob.unprotect_rtp(packets[9])  # 190 back: too old
    assert bob.unprotect_rtp(packets[299]) == rtp(300)


def test_sequence_wrap_keeps_decrypting() -> None:
    alice, bob = pair("AEAD_AES_128_GCM")
    for seq in range(65530, 65546):  # 65535 -> 0: rollover counter 0 -> 1
        assert bob.unprotect_rtp(alice.protect_rtp(rtp(seq))) == rtp(seq)


def test_repeat_tx_refused_unless_allowed() -> None:
    key = generate_key(AES80, seeded())
    strict = SrtpSession(AES80, key, key)
    strict.protect_rtp(rtp(1))
    with pytest.raises(SrtpReplayError):
        strict.protect_rtp(rtp(1))
    lenient = SrtpSession(AES80, key, key, allow_repeat_tx=True)
    assert lenient.protect_rtp(rtp(1)) == lenient.protect_rtp(rtp(1))


def test_signalled_lifetime_is_enforced_both_ways() -> None:
    a = generate_key(AES80, seeded(1), lifetime=3)
    b = generate_key(AES80, seeded(2), lifetime=2)
    alice, bob = SrtpSession(AES80, a, b), SrtpSession(AES80, b, a)
    sent = [alice.protect_rtp(rtp(seq)) for seq in range(3)]
    with pytest.raises(SrtpKeyExpired):
        alice.protect_rtp(rtp(3))
    bob.unprotect_rtp(sent[0])
    bob.unprotect_rtp(sent[1])
    bob.unprotect_rtp(sent[2])
    with pytest.raises(SrtpKeyExpired):  # a's lifetime is 3: bob accepted 3 already
        bob.unprotect_rtp(alice_fresh_packet(a, b))
    bob.protect_rtp(rtp(1))
    bob.protect_rtp(rtp(2))
    with pytest.raises(SrtpKeyExpired):
        bob.protect_rtp(rtp(3))


def alice_fresh_packet(a: InlineKey, b: InlineKey) -> bytes:
    """A valid packet from a's key that bob has not seen (a fresh sender, new SSRC)."""
    return SrtpSession(AES80, a, b).protect_rtp(rtp(10, ssrc=0xABCDEF01))


@pytest.mark.parametrize(
    "packet",
    [
        b"",
        b"\x80",
        b"\x80" * 11,
        b"\x40" + bytes(40),  # RTP version 1
        b"\x8f" + bytes(40),  # 15 CSRCs announced, 41 bytes
        b"\x90" + bytes(13),  # extension header cut short
        rtp(1)[:12] + bytes(5),  # shorter than header + tag
        b"\x80" + bytes(1600),  # over the 1500-byte buffer
    ],
)
def test_malformed_rtp_is_refused_and_counted(packet: bytes) -> None:
    _, bob = pair(AES80)
    with pytest.raises(SrtpPacketError):
        bob.unprotect_rtp(packet)
    assert bob.stats.malformed == 1


def test_malformed_input_to_protect() -> None:
    alice, _ = pair(AES80)
    with pytest.raises(SrtpPacketError):
        alice.protect_rtp(b"\x80" * 8)
    with pytest.raises(SrtpPacketError, match="1356"):
        alice.protect_rtp(rtp(1, payload=bytes(1400)))
    with pytest.raises(SrtpPacketError):
        alice.protect_rtcp(b"\x80\xc8")
    with pytest.raises(SrtpPacketError):
        alice.protect_rtp("not bytes")  # type: ignore[arg-type]
    assert alice.stats.malformed == 4
    assert alice.protect_rtp(bytearray(rtp(1)))  # bytes-like is fine


def test_keys_must_match_the_suite() -> None:
    gcm = generate_key("AEAD_AES_128_GCM", seeded())
    with pytest.raises(SrtpKeyError, match="AEAD_AES_128_GCM"):
        SrtpSession(AES80, gcm, gcm)
    with pytest.raises(SrtpKeyError, match="30 bytes"):
        SrtpSession(AES80, bytes(29), bytes(30))
    with pytest.raises(SrtpKeyError):
        SrtpSession(AES80, bytes(30), "key")  # type: ignore[arg-type]
    with pytest.raises(SrtpKeyError):
        InlineKey(AES80, bytes(16), bytes(12))


@pytest.mark.parametrize("suite", supported_suites())
@given(data=st.binary(max_size=1600), first=st.integers(0, 255))
@settings(max_examples=150, deadline=None)
def test_random_bytes_raise_only_srtp_errors(suite: str, data: bytes, first: int) -> None:
    key = generate_key(suite, seeded())
    session = SrtpSession(suite, key, key)
    for packet in (data, bytes([first]) + data):
        for method in (session.unprotect_rtp, session.unprotect_rtcp):
            with pytest.raises(SrtpError):
                method(packet)
    assert session.stats.rejected == 4
    assert session.stats.rtp_unprotected == 0 and session.stats.rtcp_unprotected == 0
