"""SRTP against RFC 3711 Appendix B and libsrtp's own known-answer packets.

A small reference implementation below, written from the RFC text with ``cryptography``'s AES, is
first checked against Appendix B (B.2 keystream, B.3 key derivation); it then protects random
packets for every supported suite and :class:`SrtpSession` must produce the very same bytes.
The vectors and their origins are in ``vectors/srtp/`` (see ``SOURCE.md`` there).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import re
import struct
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from p2psip.media.srtp import SUITES, SrtpSession, supported_suites

VECTOR_DIR = Path(__file__).parent / "vectors" / "srtp"
APPENDIX_B = (VECTOR_DIR / "rfc3711_appendix_B.txt").read_text(encoding="utf-8")
VECTORS = json.loads((VECTOR_DIR / "srtp_vectors.json").read_text(encoding="utf-8"))

FILE_SHA256 = {
    "rfc3711_appendix_B.txt": "f4ad3e9a61dfff87821626198ae3903b793ed124d18d2075d77a3081923ae38b",
    "srtp_vectors.json": "de1842a9ffac06ae562f57a57d66bf2365a4b8f0f8eeefc01e9147b3e94524f1",
}

# RFC 3711 §4.3.2 key derivation labels
LABEL_RTP_ENC, LABEL_RTP_AUTH, LABEL_RTP_SALT = 0x00, 0x01, 0x02
LABEL_RTCP_ENC, LABEL_RTCP_AUTH, LABEL_RTCP_SALT = 0x03, 0x04, 0x05


# ---------------------------------------------------------------------------------------------
# Reference implementation (from the RFC text)
# ---------------------------------------------------------------------------------------------


def aes_cm_keystream(key: bytes, iv: bytes, length: int) -> bytes:
    """RFC 3711 §4.1.1: AES in counter mode, the counter being IV + block number."""
    encryptor = Cipher(algorithms.AES(key), modes.CTR(iv)).encryptor()
    return encryptor.update(bytes(length)) + encryptor.finalize()


def xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def derive(master_key: bytes, master_salt: bytes, label: int, length: int) -> bytes:
    """RFC 3711 §4.3.1/§4.3.3 with kdr = 0: x = (label || 0^48) XOR master_salt, PRF = AES-CM.

    A 12-byte (RFC 7714) master salt is multiplied by 2^16 first (RFC 7714 §11, Errata 4938);
    a 32-byte master key selects the AES-256 PRF of RFC 6188 §3.
    """
    if len(master_salt) == 12:
        master_salt += b"\x00\x00"
    assert len(master_salt) == 14
    key_id = bytes([label]) + bytes(6)  # label || (index DIV kdr), 7 octets
    x = xor(master_salt, bytes(7) + key_id)
    return aes_cm_keystream(master_key, x + b"\x00\x00", length)


class ReferenceSender:
    """Protects packets of one SSRC the way RFC 3711 (AES-CM + HMAC-SHA1) or RFC 7714 (GCM)
    say, keeping the rollover counter and the SRTCP index like a sender does."""

    def __init__(self, suite: str, master_key: bytes, master_salt: bytes) -> None:
        self.spec = SUITES[suite]
        self.gcm = suite.startswith("AEAD_")
        n_key, n_salt = self.spec.key_length, self.spec.salt_length
        self.rtp_key = derive(master_key, master_salt, LABEL_RTP_ENC, n_key)
        self.rtp_salt = derive(master_key, master_salt, LABEL_RTP_SALT, n_salt)
        self.rtcp_key = derive(master_key, master_salt, LABEL_RTCP_ENC, n_key)
        self.rtcp_salt = derive(master_key, master_salt, LABEL_RTCP_SALT, n_salt)
        self.rtp_auth = derive(master_key, master_salt, LABEL_RTP_AUTH, 20)
        self.rtcp_auth = derive(master_key, master_salt, LABEL_RTCP_AUTH, 20)
        self.roc = 0
        self.last_seq: int | None = None
        self.rtcp_index = 0

    def protect_rtp(self, packet: bytes) -> bytes:
        header_len = 12 + 4 * (packet[0] & 0x0F)
        if packet[0] & 0x10:
            header_len += 4 + 4 * struct.unpack_from("!H", packet, header_len + 2)[0]
        header, payload = packet[:header_len], packet[header_len:]
        seq, ssrc = struct.unpack_from("!H", packet, 2)[0], packet[8:12]
        if self.last_seq is not None and seq < self.last_seq:  # RFC 3711 §3.3.1: wrapped
            self.roc += 1
        self.last_seq = seq
        if self.gcm:
            # RFC 7714 §8.1: IV = (0x0000 || SSRC || ROC || SEQ) XOR salt; AAD = RTP header.
            iv = xor(b"\x00\x00" + ssrc + struct.pack("!IH", self.roc, seq), self.rtp_salt)
            return header + AESGCM(self.rtp_key).encrypt(iv, payload, header)
        # RFC 3711 §4.1.1: IV = (k_s * 2^16) XOR (SSRC * 2^64) XOR (i * 2^16), i = ROC||SEQ.
        index = (self.roc << 16) | seq
        iv_int = (
            (int.from_bytes(self.rtp_salt, "big") << 16)
            ^ (int.from_bytes(ssrc, "big") << 64)
            ^ (index << 16)
        )
        stream = aes_cm_keystream(self.rtp_key, iv_int.to_bytes(16, "big"), len(payload))
        encrypted = header + xor(payload, stream)
        # RFC 3711 §4.2: tag = HMAC-SHA1(k_a, authenticated portion || ROC), truncated.
        mac = hmac.new(self.rtp_auth, encrypted + struct.pack("!I", self.roc), hashlib.sha1)
        return encrypted + mac.digest()[: self.spec.srtp_tag_length]

    def protect_rtcp(self, packet: bytes) -> bytes:
        self.rtcp_index += 1  # first SRTCP index sent is 1 (as libsrtp numbers them)
        header, payload = packet[:8], packet[8:]
        e_index = struct.pack("!I", 0x80000000 | self.rtcp_index)  # RFC 3711 §3.4: E flag set
        if self.gcm:
            # RFC 7714 §9.1: IV = (0x0000 || SSRC || 0x0000 || 0 || index) XOR salt;
            # AAD = first 8 octets || E-flag || index; E||index trails the tag.
            index = struct.pack("!I", self.rtcp_index)
            iv = xor(b"\x00\x00" + packet[4:8] + b"\x00\x00" + index, self.rtcp_salt)
            body = AESGCM(self.rtcp_key).encrypt(iv, payload, header + e_index)
            return header + body + e_index
        iv_int = (
            (int.from_bytes(self.rtcp_salt, "big") << 16)
            ^ (int.from_bytes(packet[4:8], "big") << 64)
            ^ (self.rtcp_index << 16)
        )
        stream = aes_cm_keystream(self.rtcp_key, iv_int.to_bytes(16, "big"), len(payload))
        portion = header + xor(payload, stream) + e_index
        mac = hmac.new(self.rtcp_auth, portion, hashlib.sha1)
        return portion + mac.digest()[: self.spec.srtcp_tag_length]


# ---------------------------------------------------------------------------------------------
# The vector files
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(FILE_SHA256))
def test_vector_files_are_the_collected_ones(name: str) -> None:
    digest = hashlib.sha256((VECTOR_DIR / name).read_bytes()).hexdigest()
    assert digest == FILE_SHA256[name]


def _hex_in_text(value: str) -> bool:
    squashed = re.sub(r"\s+", "", APPENDIX_B).upper()
    return value.upper() in squashed


def test_json_values_are_those_printed_in_the_rfc_text() -> None:
    b2, b3 = VECTORS["rfc3711_B2_aes_cm"], VECTORS["rfc3711_B3_key_derivation"]
    for counter, block in b2["keystream_blocks"].items():
        assert _hex_in_text(counter + block)
    assert _hex_in_text(b2["session_key"])
    for field in ("master_key", "master_salt", "cipher_key_label0", "cipher_salt_full_block"):
        assert _hex_in_text(b3[field]), field
    # the 94-octet auth key is printed as six lines, each followed by its AES input block
    auth = b3["auth_key_label1_94_octets"]
    for i in range(0, len(auth), 32):
        assert _hex_in_text(auth[i : i + 32])


# ---------------------------------------------------------------------------------------------
# RFC 3711 Appendix B
# ---------------------------------------------------------------------------------------------


def test_b2_aes_cm_keystream() -> None:
    b2 = VECTORS["rfc3711_B2_aes_cm"]
    key = bytes.fromhex(b2["session_key"])
    offset = bytes.fromhex(b2["session_salt_shifted"])
    blocks = 65282  # "Keystream segment length: 1044512 octets (65282 AES blocks)"
    stream = aes_cm_keystream(key, offset, 16 * blocks)
    assert len(stream) == 1044512
    base = int.from_bytes(offset, "big")
    checked = 0
    for counter_hex, block_hex in b2["keystream_blocks"].items():
        n = int(counter_hex, 16) - base
        assert 0 <= n < blocks
        assert stream[16 * n : 16 * n + 16] == bytes.fromhex(block_hex), counter_hex
        checked += 1
    assert checked == 6


def test_b3_key_derivation() -> None:
    b3 = VECTORS["rfc3711_B3_key_derivation"]
    key, salt = bytes.fromhex(b3["master_key"]), bytes.fromhex(b3["master_salt"])
    assert derive(key, salt, LABEL_RTP_ENC, 16) == bytes.fromhex(b3["cipher_key_label0"])
    assert derive(key, salt, LABEL_RTP_SALT, 16) == bytes.fromhex(b3["cipher_salt_full_block"])
    assert derive(key, salt, LABEL_RTP_SALT, 14) == bytes.fromhex(b3["cipher_salt_label2"])
    assert derive(key, salt, LABEL_RTP_AUTH, 94) == bytes.fromhex(b3["auth_key_label1_94_octets"])


# ---------------------------------------------------------------------------------------------
# libsrtp's full-packet known answers, through our SrtpSession
# ---------------------------------------------------------------------------------------------

KAT = VECTORS["libsrtp_srtp_validate_AES_CM_128_HMAC_SHA1_80"]
KAT_KEY = bytes.fromhex(KAT["master_key"] + KAT["master_salt"])


def test_libsrtp_kat_srtp_protect_and_unprotect() -> None:
    sender = SrtpSession("AES_CM_128_HMAC_SHA1_80", KAT_KEY, bytes(30))
    plain, protected = bytes.fromhex(KAT["rtp_plaintext"]), bytes.fromhex(KAT["srtp_protected"])
    assert sender.protect_rtp(plain) == protected
    receiver = SrtpSession("AES_CM_128_HMAC_SHA1_80", bytes(30), KAT_KEY)
    assert receiver.unprotect_rtp(protected) == plain


def test_libsrtp_kat_srtcp_protect_and_unprotect() -> None:
    sender = SrtpSession("AES_CM_128_HMAC_SHA1_80", KAT_KEY, bytes(30))
    plain = bytes.fromhex(KAT["rtcp_plaintext"])
    protected = bytes.fromhex(KAT["srtcp_protected"])
    assert struct.unpack("!I", protected[-14:-10])[0] == 0x80000000 | KAT["srtcp_index"]
    assert sender.protect_rtcp(plain) == protected
    receiver = SrtpSession("AES_CM_128_HMAC_SHA1_80", bytes(30), KAT_KEY)
    assert receiver.unprotect_rtcp(protected) == plain


def test_reference_reproduces_the_libsrtp_kat() -> None:
    """The reference sender is independent of libsrtp: it must agree with the KAT too."""
    ref = ReferenceSender("AES_CM_128_HMAC_SHA1_80", KAT_KEY[:16], KAT_KEY[16:])
    assert ref.protect_rtp(bytes.fromhex(KAT["rtp_plaintext"])).hex() == KAT["srtp_protected"]
    assert ref.protect_rtcp(bytes.fromhex(KAT["rtcp_plaintext"])).hex() == KAT["srtcp_protected"]


# ---------------------------------------------------------------------------------------------
# Every supported suite: SrtpSession == the RFC text, packet by packet
# ---------------------------------------------------------------------------------------------


def _random_rtp(rng: random.Random, seq: int, ssrc: int) -> bytes:
    csrc_count = rng.choice([0, 0, 0, 1, 3])
    extension = rng.random() < 0.25
    first = 0x80 | (0x10 if extension else 0) | csrc_count
    header = struct.pack("!BBHII", first, rng.choice([0, 8, 96]), seq, rng.getrandbits(32), ssrc)
    header += rng.randbytes(4 * csrc_count)
    if extension:  # RFC 3550 §5.3.1: profile id, length in 32-bit words, data
        words = rng.randrange(0, 3)
        header += struct.pack("!HH", 0xBEDE, words) + rng.randbytes(4 * words)
    return header + rng.randbytes(rng.randrange(0, 200))


def _random_rtcp(rng: random.Random, ssrc: int) -> bytes:
    words = rng.randrange(1, 12)
    body = rng.randbytes(4 * words)
    return struct.pack("!BBHI", 0x80, 200, words + 1, ssrc) + body


@pytest.mark.parametrize("suite", supported_suites())
def test_session_matches_reference_for_every_supported_suite(suite: str) -> None:
    spec = SUITES[suite]
    rng = random.Random(f"srtp-{suite}")
    master_key, master_salt = rng.randbytes(spec.key_length), rng.randbytes(spec.salt_length)
    ssrc = rng.getrandbits(32)
    ours = SrtpSession(suite, master_key + master_salt, bytes(spec.key_salt_length))
    peer = SrtpSession(suite, bytes(spec.key_salt_length), master_key + master_salt)
    ref = ReferenceSender(suite, master_key, master_salt)
    seq = 65530  # crosses the 16-bit wrap, so the rollover counter is exercised too
    for _ in range(12):
        packet = _random_rtp(rng, seq, ssrc)
        protected = ours.protect_rtp(packet)
        assert protected == ref.protect_rtp(packet), f"seq {seq}"
        assert peer.unprotect_rtp(protected) == packet
        seq = (seq + 1) & 0xFFFF
    assert ref.roc == 1
    for _ in range(5):
        packet = _random_rtcp(rng, ssrc)
        protected = ours.protect_rtcp(packet)
        assert protected == ref.protect_rtcp(packet)
        assert peer.unprotect_rtcp(protected) == packet
