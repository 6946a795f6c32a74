"""SRTP/SRTCP protection keyed by SDP Security Descriptions (SDES), on top of ``pylibsrtp``.

Sans-IO: packets in, packets out, no clock. The pieces:

* :data:`SUITES` - the crypto suites we know (RFC 4568 §6.2, RFC 6188 §3-4, RFC 7714 §12) with
  their key, salt and tag lengths; :func:`supported_suites` lists the ones the installed
  ``pylibsrtp`` can actually run (detected, not assumed: ``pylibsrtp`` 1.0 has no AES-256-CM).
* :func:`generate_inline` / :func:`parse_inline` - the ``inline:`` key parameter of RFC 4568 §6.1
  (base64 of master key || master salt, optional ``|lifetime`` and ``|MKI:length``), decoded
  into key bytes checked against the suite. The ``a=crypto`` attribute itself is SDP syntax:
  :class:`p2psip.media.sdp.Crypto` reads and writes it.
* :class:`SrtpSession` - one SRTP session (our sending key + the peer's key) with
  ``protect_rtp`` / ``unprotect_rtp`` / ``protect_rtcp`` / ``unprotect_rtcp``. Every refused
  packet raises an :class:`SrtpError` subclass and is counted in :attr:`SrtpSession.stats`.

Not supported (each raises :class:`SrtpUnsupportedError` with a clear message): MKI (libsrtp's
MKI support is not exposed by ``pylibsrtp``), a non-zero key derivation rate (``KDR``),
AES-256-CM with ``pylibsrtp`` 1.0.
"""

from __future__ import annotations

import base64
import binascii
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass

import pylibsrtp

from p2psip.errors import P2PSIPError

__all__ = [
    "SUITES",
    "InlineKey",
    "SrtpAuthenticationError",
    "SrtpError",
    "SrtpKeyError",
    "SrtpKeyExpired",
    "SrtpPacketError",
    "SrtpReplayError",
    "SrtpSession",
    "SrtpStats",
    "SrtpSuite",
    "SrtpUnsupportedError",
    "generate_inline",
    "generate_key",
    "is_supported",
    "parse_inline",
    "supported_suites",
]


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


class SrtpError(P2PSIPError):
    """Base class of every SRTP error: bad key material, refused packet, unsupported feature."""


class SrtpKeyError(SrtpError):
    """Key material (an ``inline:`` parameter, an ``a=crypto`` value, raw bytes) is malformed."""


class SrtpUnsupportedError(SrtpError):
    """Well-formed, but asks for something we cannot do (MKI, KDR, a suite libsrtp lacks)."""


class SrtpPacketError(SrtpError):
    """A packet is malformed (too short, wrong RTP version, too long for the buffer)."""


class SrtpAuthenticationError(SrtpError):
    """A received packet failed authentication (wrong key, tampered, or not SRTP at all)."""


class SrtpReplayError(SrtpError):
    """A received packet was already seen or is older than the replay window (RFC 3711 §3.3.2)."""


class SrtpKeyExpired(SrtpError):
    """The master key reached its signalled lifetime (RFC 4568 §6.1): re-key with a new offer."""


# ---------------------------------------------------------------------------------------------
# Suites
# ---------------------------------------------------------------------------------------------

_SRTP_MAX_LIFETIME = 2**48  # RFC 3711 §9.2
_SRTCP_MAX_LIFETIME = 2**31  # RFC 3711 §9.2


@dataclass(frozen=True)
class SrtpSuite:
    """One SDES crypto suite.

    Attributes:
        name: the name used in ``a=crypto`` (e.g. ``AES_CM_128_HMAC_SHA1_80``).
        key_length: master key length in bytes.
        salt_length: master salt length in bytes.
        srtp_tag_length: bytes appended to every SRTP packet (authentication tag).
        srtcp_tag_length: authentication tag length of SRTCP (the 4-byte E|index comes on top).
        reference: where the suite is defined.
        pylibsrtp_profile: name of the ``pylibsrtp.Policy`` constant that selects it.
    """

    name: str
    key_length: int
    salt_length: int
    srtp_tag_length: int
    srtcp_tag_length: int
    reference: str
    pylibsrtp_profile: str

    @property
    def key_salt_length(self) -> int:
        """Length of master key || master salt, the bytes carried by ``inline:``."""
        return self.key_length + self.salt_length

    @property
    def max_lifetime(self) -> int:
        """Largest lifetime an ``inline:`` parameter may signal for this suite (2^48 SRTP)."""
        return _SRTP_MAX_LIFETIME


#: Every suite we know, in our order of preference (strongest first among those commonly met).
SUITES: dict[str, SrtpSuite] = {
    s.name: s
    for s in (
        # RFC 7714 §12 / §14.2: 12-byte salt, 16-byte AEAD tag on SRTP and SRTCP.
        SrtpSuite(
            "AEAD_AES_256_GCM", 32, 12, 16, 16, "RFC 7714 §14.2", "SRTP_PROFILE_AEAD_AES_256_GCM"
        ),
        SrtpSuite(
            "AEAD_AES_128_GCM", 16, 12, 16, 16, "RFC 7714 §14.2", "SRTP_PROFILE_AEAD_AES_128_GCM"
        ),
        # RFC 6188 §3 (SDES names in §7.1); not exposed by pylibsrtp 1.0.
        SrtpSuite(
            "AES_256_CM_HMAC_SHA1_80",
            32,
            14,
            10,
            10,
            "RFC 6188 §7.1",
            "SRTP_PROFILE_AES256_CM_SHA1_80",
        ),
        SrtpSuite(
            "AES_256_CM_HMAC_SHA1_32",
            32,
            14,
            4,
            10,
            "RFC 6188 §7.1",
            "SRTP_PROFILE_AES256_CM_SHA1_32",
        ),
        # RFC 4568 §6.2.1 / §6.2.2: the _32 suite still uses an 80-bit tag on SRTCP.
        SrtpSuite(
            "AES_CM_128_HMAC_SHA1_80",
            16,
            14,
            10,
            10,
            "RFC 4568 §6.2.1",
            "SRTP_PROFILE_AES128_CM_SHA1_80",
        ),
        SrtpSuite(
            "AES_CM_128_HMAC_SHA1_32",
            16,
            14,
            4,
            10,
            "RFC 4568 §6.2.2",
            "SRTP_PROFILE_AES128_CM_SHA1_32",
        ),
    )
}


def _profile_of(suite: SrtpSuite) -> int | None:
    """The pylibsrtp profile constant for ``suite``, or None when this pylibsrtp lacks it."""
    profile = getattr(pylibsrtp.Policy, suite.pylibsrtp_profile, None)
    if not isinstance(profile, int):
        return None
    try:  # a constant may exist while the linked libsrtp was built without the cipher
        pylibsrtp.Policy(srtp_profile=profile)
    except (pylibsrtp.Error, ValueError, TypeError):
        return None
    return profile


_PROFILES: dict[str, int] = {
    name: profile for name, suite in SUITES.items() if (profile := _profile_of(suite)) is not None
}


def supported_suites() -> tuple[str, ...]:
    """Names of the suites the installed ``pylibsrtp`` can run, in our order of preference."""
    return tuple(name for name in SUITES if name in _PROFILES)


def is_supported(suite: str) -> bool:
    """True when :class:`SrtpSession` can run ``suite`` with the installed ``pylibsrtp``."""
    return suite in _PROFILES


def _suite(name: str) -> SrtpSuite:
    try:
        return SUITES[name]
    except KeyError:
        raise SrtpUnsupportedError(f"unknown SRTP crypto suite {name!r}") from None


# ---------------------------------------------------------------------------------------------
# SDES key parameters (RFC 4568 §6.1, grammar §9.2)
# ---------------------------------------------------------------------------------------------

_B64_RE = re.compile(r"[A-Za-z0-9+/]+={0,2}")
# lifetime = ["2^"] 1*(DIGIT); bounded here so that "2^99999999" cannot cost anything.
_LIFETIME_RE = re.compile(r"(2\^)?([0-9]{1,20})")
# mki = mki-value ":" mki-length; mki-value = 1*DIGIT; mki-length = 1*3DIGIT (1..128)
_MKI_RE = re.compile(r"([0-9]{1,40}):([0-9]{1,3})")


@dataclass(frozen=True)
class InlineKey:
    """A decoded ``inline:`` key parameter (RFC 4568 §6.1) of one suite.

    Attributes:
        suite: the crypto suite name the key is for.
        master_key: the SRTP master key.
        master_salt: the SRTP master salt.
        lifetime: maximum number of SRTP (and, separately, SRTCP) packets protected with this
            key, or None when not signalled (then the suite's maximum applies).
    """

    suite: str
    master_key: bytes
    master_salt: bytes
    lifetime: int | None = None

    def __post_init__(self) -> None:
        spec = _suite(self.suite)
        if len(self.master_key) != spec.key_length or len(self.master_salt) != spec.salt_length:
            raise SrtpKeyError(
                f"{self.suite} needs a {spec.key_length}-byte key and a {spec.salt_length}-byte "
                f"salt, got {len(self.master_key)} and {len(self.master_salt)}"
            )
        if self.lifetime is not None and not 0 < self.lifetime <= spec.max_lifetime:
            raise SrtpKeyError(f"key lifetime {self.lifetime} out of range 1..2^48")

    @property
    def key_salt(self) -> bytes:
        """master key || master salt, the byte string libsrtp expects."""
        return self.master_key + self.master_salt

    def to_sdp(self) -> str:
        """The key parameter as written in ``a=crypto``: ``inline:<base64>[|<lifetime>]``."""
        value = "inline:" + base64.b64encode(self.key_salt).decode("ascii")
        if self.lifetime is not None:
            exponent = self.lifetime.bit_length() - 1
            if self.lifetime == 1 << exponent and exponent > 0:
                value += f"|2^{exponent}"
            else:
                value += f"|{self.lifetime}"
        return value


def generate_key(
    suite: str, rng_bytes: Callable[[int], bytes], *, lifetime: int | None = None
) -> InlineKey:
    """Draw a fresh master key and salt for ``suite``.

    Args:
        suite: crypto suite name (see :data:`SUITES`).
        rng_bytes: a cryptographically secure source, e.g. ``secrets.token_bytes``
            (``os.urandom``); tests pass a seeded one. RFC 4568 §6.1: keys MUST be random.
        lifetime: optional key lifetime in packets to signal.

    Raises:
        SrtpUnsupportedError: unknown suite.
        SrtpKeyError: ``rng_bytes`` returned the wrong number of bytes.
    """
    spec = _suite(suite)
    raw = rng_bytes(spec.key_salt_length)
    if not isinstance(raw, bytes | bytearray) or len(raw) != spec.key_salt_length:
        raise SrtpKeyError(f"rng_bytes({spec.key_salt_length}) returned the wrong amount of data")
    raw = bytes(raw)
    return InlineKey(suite, raw[: spec.key_length], raw[spec.key_length :], lifetime)


def generate_inline(
    suite: str, rng_bytes: Callable[[int], bytes], *, lifetime: int | None = None
) -> str:
    """Return a new ``inline:<base64 key||salt>`` key parameter for ``suite`` (RFC 4568 §6.1).

    Args:
        suite: crypto suite name (see :data:`SUITES`).
        rng_bytes: a cryptographically secure random source such as ``secrets.token_bytes``.
        lifetime: optional key lifetime to append (written as ``2^n`` when a power of two).
    """
    return generate_key(suite, rng_bytes, lifetime=lifetime).to_sdp()


def _parse_lifetime(text: str, spec: SrtpSuite) -> int:
    match = _LIFETIME_RE.fullmatch(text)
    if match is None:
        raise SrtpKeyError(f"malformed key lifetime {text!r} (want 2^N or a decimal count)")
    power, digits = match.groups()
    if power:
        if len(digits) > 2 or int(digits) > 48:
            raise SrtpKeyError(f"key lifetime {text!r} exceeds the maximum of 2^48 packets")
        value = 1 << int(digits)
    else:
        value = int(digits)
    if not 0 < value <= spec.max_lifetime:
        raise SrtpKeyError(f"key lifetime {text!r} out of range 1..2^48")
    return value


def _decode_key_salt(text: str, spec: SrtpSuite) -> bytes:
    if not _B64_RE.fullmatch(text):
        raise SrtpKeyError("inline key is not base64")
    unpadded = text.rstrip("=")
    if len(unpadded) % 4 == 1:
        raise SrtpKeyError("inline key has an impossible base64 length")
    # Some stacks strip the '=' padding: accept that, but nothing else non-canonical.
    padded = unpadded + "=" * (-len(unpadded) % 4)
    if text != unpadded and text != padded:
        raise SrtpKeyError("inline key has wrong base64 padding")
    try:
        raw = base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SrtpKeyError(f"inline key is not valid base64: {exc}") from None
    if base64.b64encode(raw).decode("ascii") != padded:
        raise SrtpKeyError("inline key is not canonical base64")
    if len(raw) != spec.key_salt_length:
        raise SrtpKeyError(
            f"{spec.name} needs {spec.key_salt_length} bytes of key||salt, the inline key has "
            f"{len(raw)}"
        )
    return raw


def parse_inline(value: str, suite: str) -> InlineKey:
    """Parse an ``inline:`` key parameter of ``suite`` with strict checks (RFC 4568 §6.1, §9.2).

    Accepted: ``inline:<base64>[|<lifetime>]`` where the base64 text decodes to exactly the
    suite's key+salt length (missing ``=`` padding is tolerated) and the lifetime is ``2^N`` or a
    decimal count of at most 2^48. The method name is case-insensitive (ABNF literal).

    Raises:
        SrtpKeyError: anything malformed (not inline, bad base64, wrong length, bad lifetime,
            bad MKI syntax).
        SrtpUnsupportedError: a well-formed MKI (``|1:4``) - ``pylibsrtp`` cannot put MKIs in
            packets - or an unknown suite.
    """
    spec = _suite(suite)
    if not isinstance(value, str):
        raise SrtpKeyError("key parameter must be a str")
    method, colon, info = value.partition(":")
    if not colon or method.lower() != "inline":
        raise SrtpKeyError(f"key method must be 'inline', got {value[:20]!r}")
    fields = info.split("|")
    if len(fields) > 3:
        raise SrtpKeyError("inline key has too many '|' fields")
    raw = _decode_key_salt(fields[0], spec)
    lifetime: int | None = None
    rest = fields[1:]
    if rest and ":" not in rest[0]:
        lifetime = _parse_lifetime(rest.pop(0), spec)
    if rest:
        mki = _MKI_RE.fullmatch(rest.pop(0))
        if mki is None or not 1 <= int(mki.group(2)) <= 128:
            raise SrtpKeyError("malformed MKI (want <value>:<length 1..128>)")
        if int(mki.group(1)) >= 256 ** int(mki.group(2)):
            raise SrtpKeyError("MKI value does not fit in its signalled length")
        if rest:
            raise SrtpKeyError("inline key has fields after the MKI")
        raise SrtpUnsupportedError(
            "SRTP master key identifiers (MKI) are not supported (pylibsrtp exposes no MKI); "
            "answer with a crypto line without MKI or refuse this one"
        )
    if rest:  # two lifetime-looking fields
        raise SrtpKeyError("inline key has a second lifetime field")
    return InlineKey(suite, raw[: spec.key_length], raw[spec.key_length :], lifetime)


# ---------------------------------------------------------------------------------------------
# Session
# ---------------------------------------------------------------------------------------------

# pylibsrtp's buffer is 1500 bytes and it reserves room for the largest trailer.
_MAX_PACKET = 1500
_MAX_RTP_PLAINTEXT = _MAX_PACKET - 16 - 128
_MAX_RTCP_PLAINTEXT = _MAX_PACKET - 4 - 16 - 128

_REPLAY_MESSAGES = ("replay check failed", "packet index is too old")


@dataclass(frozen=True)
class SrtpStats:
    """Counters of one :class:`SrtpSession` (a snapshot).

    Attributes:
        rtp_protected / rtcp_protected: packets we protected.
        rtp_unprotected / rtcp_unprotected: received packets accepted.
        auth_failures: received packets refused by authentication.
        replays: received packets refused as replayed or too old (and sent packets refused
            as a repeated sequence number).
        malformed: packets refused before crypto (too short, wrong version, too long).
        other_failures: anything else libsrtp refused.
    """

    rtp_protected: int = 0
    rtcp_protected: int = 0
    rtp_unprotected: int = 0
    rtcp_unprotected: int = 0
    auth_failures: int = 0
    replays: int = 0
    malformed: int = 0
    other_failures: int = 0

    @property
    def rejected(self) -> int:
        """Every received packet refused, whatever the reason."""
        return self.auth_failures + self.replays + self.malformed + self.other_failures


def _rtp_header_length(packet: bytes) -> int:
    """Length of the RTP header (RFC 3550 §5.1/§5.3.1) or SrtpPacketError."""
    if len(packet) < 12:
        raise SrtpPacketError(f"RTP packet too short ({len(packet)} bytes)")
    if packet[0] >> 6 != 2:
        raise SrtpPacketError("not RTP version 2")
    length = 12 + 4 * (packet[0] & 0x0F)
    if packet[0] & 0x10:  # header extension
        if len(packet) < length + 4:
            raise SrtpPacketError("RTP header extension truncated")
        (words,) = struct.unpack_from("!H", packet, length + 2)
        length += 4 + 4 * words
    if len(packet) < length:
        raise SrtpPacketError("RTP header truncated")
    return length


def _check_rtcp(packet: bytes, minimum: int) -> None:
    if len(packet) < minimum:
        raise SrtpPacketError(f"RTCP packet too short ({len(packet)} bytes)")
    if packet[0] >> 6 != 2:
        raise SrtpPacketError("not RTCP version 2")


def _key_bytes(suite: SrtpSuite, key: InlineKey | bytes, which: str) -> tuple[bytes, int | None]:
    if isinstance(key, InlineKey):
        if key.suite != suite.name:
            raise SrtpKeyError(f"{which} key is for {key.suite}, the session uses {suite.name}")
        return key.key_salt, key.lifetime
    if isinstance(key, bytes | bytearray):
        if len(key) != suite.key_salt_length:
            raise SrtpKeyError(
                f"{which} key must be {suite.key_salt_length} bytes (key||salt) for "
                f"{suite.name}, got {len(key)}"
            )
        return bytes(key), None
    raise SrtpKeyError(f"{which} key must be an InlineKey or bytes")


class SrtpSession:
    """SRTP and SRTCP for one media stream: we protect with ``local_key``, the peer with
    ``remote_key`` (SDES: each side announces the key it sends with, RFC 4568 §6.1).

    Any SSRC is accepted in both directions (libsrtp's "any outbound/inbound" templates); each
    SSRC gets its own replay window and rollover counter.

    Args:
        suite: crypto suite name, one of :func:`supported_suites`.
        local_key: our master key||salt (an :class:`InlineKey` or raw bytes).
        remote_key: the peer's master key||salt.
        replay_window: size of the receive replay window in packets (RFC 3711 §3.3.2, at least
            64; libsrtp's default is 128).
        allow_repeat_tx: allow protecting the same RTP sequence number twice (retransmission);
            off by default because it repeats keystream for different payloads.

    Raises:
        SrtpUnsupportedError: the suite is unknown or the installed pylibsrtp cannot run it.
        SrtpKeyError: a key of the wrong suite or length.
    """

    def __init__(
        self,
        suite: str,
        local_key: InlineKey | bytes,
        remote_key: InlineKey | bytes,
        *,
        replay_window: int = 128,
        allow_repeat_tx: bool = False,
    ) -> None:
        spec = _suite(suite)
        profile = _PROFILES.get(suite)
        if profile is None:
            raise SrtpUnsupportedError(
                f"{suite} is not available in pylibsrtp {pylibsrtp.__version__}; "
                f"supported: {', '.join(supported_suites())}"
            )
        if not 64 <= replay_window <= 0x8000:
            raise ValueError("replay_window must be in 64..32768")
        self.suite: SrtpSuite = spec
        tx_key, self._tx_lifetime = _key_bytes(spec, local_key, "local")
        rx_key, self._rx_lifetime = _key_bytes(spec, remote_key, "remote")
        tx_policy = pylibsrtp.Policy(
            key=tx_key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND, srtp_profile=profile
        )
        tx_policy.allow_repeat_tx = allow_repeat_tx
        rx_policy = pylibsrtp.Policy(
            key=rx_key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND, srtp_profile=profile
        )
        rx_policy.window_size = replay_window
        self._tx = pylibsrtp.Session(tx_policy)
        self._rx = pylibsrtp.Session(rx_policy)
        self._rtp_tag = spec.srtp_tag_length
        self._rtcp_trailer = 4 + spec.srtcp_tag_length
        self._counts = dict.fromkeys(SrtpStats.__dataclass_fields__, 0)

    @property
    def stats(self) -> SrtpStats:
        """A snapshot of the counters."""
        return SrtpStats(**self._counts)

    # -- sending ------------------------------------------------------------------------------

    def protect_rtp(self, packet: bytes) -> bytes:
        """Encrypt and authenticate an RTP packet (RFC 3711 §3.3).

        Raises:
            SrtpPacketError: not an RTP packet, or longer than 1356 bytes (pylibsrtp buffer).
            SrtpKeyExpired: the local key's signalled lifetime is used up.
            SrtpReplayError: the same sequence number again (unless ``allow_repeat_tx``).
        """
        packet = self._as_bytes(packet)
        self._guard(_rtp_header_length, packet)
        if len(packet) > _MAX_RTP_PLAINTEXT:
            self._refuse(
                "malformed", SrtpPacketError(f"RTP packet over {_MAX_RTP_PLAINTEXT} bytes")
            )
        self._check_lifetime(self._tx_lifetime, self._counts["rtp_protected"], "local", "SRTP")
        out = self._call(self._tx.protect, packet)
        self._counts["rtp_protected"] += 1
        return out

    def protect_rtcp(self, packet: bytes) -> bytes:
        """Encrypt and authenticate an RTCP compound packet (RFC 3711 §3.4).

        Raises:
            SrtpPacketError: not an RTCP packet, or longer than 1352 bytes.
            SrtpKeyExpired: the local key's lifetime (or the 2^31 SRTCP index space) is used up.
        """
        packet = self._as_bytes(packet)
        self._guard(_check_rtcp, packet, 8)
        if len(packet) > _MAX_RTCP_PLAINTEXT:
            self._refuse(
                "malformed", SrtpPacketError(f"RTCP packet over {_MAX_RTCP_PLAINTEXT} bytes")
            )
        lifetime = min(self._tx_lifetime or _SRTCP_MAX_LIFETIME, _SRTCP_MAX_LIFETIME)
        self._check_lifetime(lifetime, self._counts["rtcp_protected"], "local", "SRTCP")
        out = self._call(self._tx.protect_rtcp, packet)
        self._counts["rtcp_protected"] += 1
        return out

    # -- receiving ----------------------------------------------------------------------------

    def unprotect_rtp(self, packet: bytes) -> bytes:
        """Authenticate and decrypt a received SRTP packet; return the RTP packet.

        Raises:
            SrtpPacketError: too short / not RTP / over 1500 bytes.
            SrtpAuthenticationError: wrong key, tampered or not SRTP.
            SrtpReplayError: replayed or older than the replay window.
            SrtpKeyExpired: the remote key's signalled lifetime is used up.
        """
        packet = self._as_bytes(packet)
        header = self._guard(_rtp_header_length, packet)
        if len(packet) < header + self._rtp_tag:
            self._refuse("malformed", SrtpPacketError("SRTP packet shorter than its tag"))
        if len(packet) > _MAX_PACKET:
            self._refuse("malformed", SrtpPacketError(f"SRTP packet over {_MAX_PACKET} bytes"))
        self._check_lifetime(self._rx_lifetime, self._counts["rtp_unprotected"], "remote", "SRTP")
        out = self._call(self._rx.unprotect, packet)
        self._counts["rtp_unprotected"] += 1
        return out

    def unprotect_rtcp(self, packet: bytes) -> bytes:
        """Authenticate and decrypt a received SRTCP packet; return the RTCP packet.

        Raises:
            SrtpPacketError: too short / not RTCP / over 1500 bytes.
            SrtpAuthenticationError: wrong key, tampered or not SRTCP.
            SrtpReplayError: replayed SRTCP index.
            SrtpKeyExpired: the remote key's signalled lifetime is used up.
        """
        packet = self._as_bytes(packet)
        self._guard(_check_rtcp, packet, 8 + self._rtcp_trailer)
        if len(packet) > _MAX_PACKET:
            self._refuse("malformed", SrtpPacketError(f"SRTCP packet over {_MAX_PACKET} bytes"))
        lifetime = min(self._rx_lifetime or _SRTCP_MAX_LIFETIME, _SRTCP_MAX_LIFETIME)
        self._check_lifetime(lifetime, self._counts["rtcp_unprotected"], "remote", "SRTCP")
        out = self._call(self._rx.unprotect_rtcp, packet)
        self._counts["rtcp_unprotected"] += 1
        return out

    # -- helpers ------------------------------------------------------------------------------

    def _as_bytes(self, packet: bytes) -> bytes:
        if isinstance(packet, bytes):
            return packet
        if isinstance(packet, bytearray | memoryview):
            return bytes(packet)
        self._refuse("malformed", SrtpPacketError("packet must be bytes"))
        raise AssertionError("unreachable")  # pragma: no cover

    def _refuse(self, counter: str, error: SrtpError) -> None:
        self._counts[counter] += 1
        raise error

    def _guard(self, check: Callable[..., int | None], *args: object) -> int:
        try:
            return check(*args) or 0
        except SrtpPacketError as exc:
            self._refuse("malformed", exc)
            raise AssertionError("unreachable") from None  # pragma: no cover

    def _check_lifetime(self, lifetime: int | None, used: int, side: str, what: str) -> None:
        # RFC 4568 §6.1 / RFC 3711 §9.2: never use a master key past its lifetime.
        if lifetime is not None and used >= lifetime:
            raise SrtpKeyExpired(f"the {side} master key reached its {what} lifetime ({lifetime})")

    def _call(self, func: Callable[[bytes], bytes], packet: bytes) -> bytes:
        try:
            return func(packet)
        except pylibsrtp.Error as exc:
            message = str(exc)
            if message == "authentication failure" or message == "cipher failure":
                self._refuse("auth_failures", SrtpAuthenticationError(f"SRTP {message}"))
            if message.startswith(_REPLAY_MESSAGES):
                self._refuse("replays", SrtpReplayError(f"SRTP {message}"))
            if message == "unable to perform desired validation":
                # RFC 3711 §3.4: E bit clear, but our policy requires encrypted SRTCP
                message = "unencrypted SRTCP refused (the session requires encryption)"
            self._refuse("other_failures", SrtpError(f"libsrtp refused the packet: {message}"))
        except (ValueError, TypeError) as exc:
            self._refuse("malformed", SrtpPacketError(f"packet refused: {exc}"))
        raise AssertionError("unreachable")  # pragma: no cover
