"""SDP, the Session Description Protocol (RFC 8866): parse, edit and serialize.

A :class:`SessionDescription` holds the session-level lines (``v o s i u e p c b t r z k a``) and
a list of :class:`MediaDescription` (``m i c b k a``). Attributes are kept as
:class:`Attribute` objects in their original order, unknown ones included, so that
``parse_sdp(x).to_bytes() == x`` for any description written in the RFC 8866 §5 line order
with CRLF line ends. Serialization always uses that order and CRLF.

Typed helpers read the attributes the media engine needs:

* ``rtpmap`` / ``fmtp`` (:class:`RtpMap`, :class:`Fmtp`, :func:`parse_fmtp_params`), with the
  static payload types of RFC 3551 §6 (:data:`STATIC_PAYLOAD_TYPES`) used when ``rtpmap`` is
  absent; ``ptime`` / ``maxptime``; ``telephone-event`` (RFC 4733 §7);
* the direction attributes (:class:`Direction`), media level overriding session level
  (RFC 3264 §5.1, §6.1): :meth:`SessionDescription.effective_direction`;
* ``rtcp`` (RFC 3605, :class:`Rtcp`) and ``rtcp-mux`` (RFC 5761);
* ``crypto`` (RFC 4568 §9.1, :class:`Crypto`, :class:`KeyParam`);
* ICE (RFC 8839): ``candidate`` (:class:`Candidate`), ``ice-ufrag``, ``ice-pwd``,
  ``ice-options``, ``ice-lite``, ``end-of-candidates``, ``remote-candidates``.

Parsing is strict about structure and lenient about framing: LF-only line ends, a missing final
newline and empty lines are accepted; a missing ``v=``/``o=``/``s=``/``t=``, a malformed number,
a port out of range, an unknown line type or one in the wrong section, an ``m=`` line with no
formats, text that is not UTF-8 and input larger than ``max_size`` raise :class:`SDPError`
(status 400). Nothing else is ever raised for bad input, by the parser or by the typed helpers.
The order of lines inside a section is not enforced beyond ``v=``, ``o=``, ``s=`` coming first.
"""

from __future__ import annotations

import base64
import binascii
import copy
import enum
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from p2psip.errors import P2PSIPError

__all__ = [
    "DEFAULT_MAX_SIZE",
    "SRTP_KEY_SALT_LENGTHS",
    "STATIC_PAYLOAD_TYPES",
    "Attribute",
    "Bandwidth",
    "Candidate",
    "Connection",
    "Crypto",
    "Direction",
    "Fmtp",
    "KeyParam",
    "MediaDescription",
    "Origin",
    "RemoteCandidate",
    "Rtcp",
    "RtpMap",
    "SDPError",
    "SessionDescription",
    "TelephoneEvent",
    "Timing",
    "format_fmtp_params",
    "parse_fmtp_params",
    "parse_sdp",
]

#: Largest SDP body :func:`parse_sdp` accepts by default (bytes of UTF-8).
DEFAULT_MAX_SIZE = 64 * 1024

_REASONS = {400: "Bad Request", 488: "Not Acceptable Here", 491: "Request Pending"}


class SDPError(P2PSIPError):
    """An SDP body could not be parsed, or an offer/answer could not be accepted.

    Attributes:
        status: the SIP status code to answer with: 400 for an unparseable body, 488 for an
            offer or answer that is well-formed but not acceptable, 491 for an offer that
            crosses one of ours (glare).
        reason: the reason phrase for that status.
    """

    def __init__(self, message: str, status: int = 400, reason: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason or _REASONS.get(status, "Bad Request")


# ---------------------------------------------------------------------------------------------
# Small lexical helpers
# ---------------------------------------------------------------------------------------------

# RFC 8866 §9 token-char
_TOKEN_RE = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+")
_DIGITS_RE = re.compile(r"[0-9]{1,40}")
_HOST_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9\-_.]{0,252})")
_IPV4_LIKE_RE = re.compile(r"[0-9.]+")
_FIELD_SPLIT_RE = re.compile(r"[ \t]+")
# RFC 8839 §5.1 ice-char
_ICE_CHARS_RE = re.compile(r"[A-Za-z0-9+/]+")
_BAD_TEXT_RE = re.compile(r"[\r\n\x00]")


def _fields(value: str) -> list[str]:
    """Split a line value at spaces (runs of spaces and tabs tolerated)."""
    value = value.strip(" \t")
    return _FIELD_SPLIT_RE.split(value) if value else []


def _number(text: str, what: str, low: int = 0, high: int | None = None) -> int:
    """A decimal number made of ASCII digits only, within ``[low, high]``."""
    if not _DIGITS_RE.fullmatch(text):
        raise SDPError(f"bad {what}: {text[:40]!r}")
    number = int(text)
    if number < low or (high is not None and number > high):
        raise SDPError(f"{what} out of range: {number}")
    return number


def _port(text: str, what: str = "port") -> int:
    return _number(text, what, 0, 65535)


def _token(text: str, what: str) -> str:
    if not _TOKEN_RE.fullmatch(text):
        raise SDPError(f"bad {what}: {text[:40]!r}")
    return text


def _check_address(address: str, addrtype: str, what: str) -> str:
    """Validate an address of type IP4/IP6 (literal or hostname); other types pass as text."""
    kind = addrtype.upper()
    try:
        if kind == "IP4" and _IPV4_LIKE_RE.fullmatch(address):
            ipaddress.IPv4Address(address)
            return address
        if kind == "IP6" and ":" in address:
            ipaddress.IPv6Address(address)
            return address
    except ValueError:
        raise SDPError(f"bad {what}: {address[:60]!r}") from None
    if kind in ("IP4", "IP6") and not _HOST_RE.fullmatch(address):
        raise SDPError(f"bad {what}: {address[:60]!r}")
    if not address or any(c in address for c in " \t"):
        raise SDPError(f"bad {what}: {address[:60]!r}")
    return address


def _ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(address)
    except ValueError:
        return None


# ---------------------------------------------------------------------------------------------
# Line values
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Origin:
    """The ``o=`` line (RFC 8866 §5.2).

    Attributes:
        username: the user's login, ``-`` when there is none.
        session_id: numeric session identifier, constant for the whole session.
        session_version: incremented on every change of the description (RFC 3264 §8).
        nettype: ``IN``.
        addrtype: ``IP4`` or ``IP6``.
        address: the address (or host name) of the machine that created the session.
    """

    username: str
    session_id: int
    session_version: int
    nettype: str = "IN"
    addrtype: str = "IP4"
    address: str = "0.0.0.0"

    @classmethod
    def parse(cls, value: str) -> Origin:
        """Parse the value of an ``o=`` line.

        Raises:
            SDPError: not six fields, or a bad number or address.
        """
        parts = _fields(value)
        if len(parts) != 6:
            raise SDPError(f"o= needs 6 fields, got {len(parts)}")
        username, sid, version, nettype, addrtype, address = parts
        return cls(
            username,
            _number(sid, "o= session id"),
            _number(version, "o= session version"),
            _token(nettype, "o= nettype"),
            _token(addrtype, "o= addrtype"),
            _check_address(address, addrtype, "o= address"),
        )

    def __str__(self) -> str:
        return (
            f"{self.username} {self.session_id} {self.session_version} "
            f"{self.nettype} {self.addrtype} {self.address}"
        )


@dataclass(frozen=True)
class Connection:
    """A ``c=`` line (RFC 8866 §5.7).

    Attributes:
        address: an IPv4/IPv6 literal or a host name (kept as written).
        addrtype: ``IP4`` or ``IP6``.
        nettype: ``IN``.
        ttl: the multicast TTL of an IPv4 multicast address (``/127``), else None.
        count: the number of consecutive multicast addresses, else None.
    """

    address: str
    addrtype: str = "IP4"
    nettype: str = "IN"
    ttl: int | None = None
    count: int | None = None

    @classmethod
    def parse(cls, value: str) -> Connection:
        """Parse the value of a ``c=`` line.

        Raises:
            SDPError: not three fields, or a bad address, TTL or count.
        """
        parts = _fields(value)
        if len(parts) != 3:
            raise SDPError(f"c= needs 3 fields, got {len(parts)}")
        nettype, addrtype, text = parts
        _token(nettype, "c= nettype")
        _token(addrtype, "c= addrtype")
        address, *extra = text.split("/")
        ttl = count = None
        if extra:
            if len(extra) > 2:
                raise SDPError(f"bad c= address: {text[:60]!r}")
            if addrtype.upper() == "IP6":
                if len(extra) != 1:
                    raise SDPError(f"bad c= address: {text[:60]!r}")
                count = _number(extra[0], "c= address count", 1)
            else:
                ttl = _number(extra[0], "c= TTL", 0, 255)
                if len(extra) == 2:
                    count = _number(extra[1], "c= address count", 1)
        return cls(_check_address(address, addrtype, "c= address"), addrtype, nettype, ttl, count)

    def __str__(self) -> str:
        text = self.address
        if self.ttl is not None:
            text += f"/{self.ttl}"
        if self.count is not None:
            text += f"/{self.count}"
        return f"{self.nettype} {self.addrtype} {text}"

    @property
    def ip(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
        """The address as an IP address object, None for a host name."""
        return _ip(self.address)

    @property
    def is_unspecified(self) -> bool:
        """True for ``0.0.0.0`` / ``::``: the peer does not want media (RFC 3264 §8.4)."""
        ip = self.ip
        return ip is not None and ip.is_unspecified


@dataclass(frozen=True)
class Bandwidth:
    """A ``b=<bwtype>:<bandwidth>`` line (RFC 8866 §5.8), e.g. ``AS:64`` (kbit/s)."""

    bwtype: str
    bandwidth: int

    @classmethod
    def parse(cls, value: str) -> Bandwidth:
        """Parse the value of a ``b=`` line.

        Raises:
            SDPError: no colon, a bad type or a bad number.
        """
        bwtype, sep, number = value.partition(":")
        if not sep:
            raise SDPError(f"bad b= line: {value[:40]!r}")
        return cls(_token(bwtype, "b= type"), _number(number.strip(" "), "b= bandwidth"))

    def __str__(self) -> str:
        return f"{self.bwtype}:{self.bandwidth}"


_TYPED_TIME_RE = re.compile(r"[0-9]{1,20}[dhms]?")
_OFFSET_RE = re.compile(r"-?[0-9]{1,20}[dhms]?")


@dataclass(frozen=True)
class Timing:
    """A ``t=`` line and the ``r=`` lines that follow it (RFC 8866 §5.9, §5.10).

    Attributes:
        start: NTP start time, 0 for unbounded.
        stop: NTP stop time, 0 for unbounded.
        repeats: the ``r=`` values as written (``7d 1h 0 25h``).
    """

    start: int = 0
    stop: int = 0
    repeats: tuple[str, ...] = ()

    @classmethod
    def parse(cls, value: str) -> Timing:
        """Parse the value of a ``t=`` line.

        Raises:
            SDPError: not two numbers.
        """
        parts = _fields(value)
        if len(parts) != 2:
            raise SDPError(f"t= needs 2 fields, got {len(parts)}")
        return cls(_number(parts[0], "t= start time"), _number(parts[1], "t= stop time"))

    @staticmethod
    def check_repeat(value: str) -> str:
        """Validate an ``r=`` value: at least three typed times.

        Raises:
            SDPError: malformed.
        """
        parts = _fields(value)
        if len(parts) < 3 or not all(_TYPED_TIME_RE.fullmatch(p) for p in parts):
            raise SDPError(f"bad r= line: {value[:60]!r}")
        return value

    def __str__(self) -> str:
        return f"{self.start} {self.stop}"


def _check_time_zones(value: str) -> str:
    parts = _fields(value)
    ok = parts and len(parts) % 2 == 0
    ok = ok and all(
        (_DIGITS_RE.fullmatch(p) if i % 2 == 0 else _OFFSET_RE.fullmatch(p))
        for i, p in enumerate(parts)
    )
    if not ok:
        raise SDPError(f"bad z= line: {value[:60]!r}")
    return value


@dataclass(frozen=True)
class Attribute:
    """One ``a=`` line: ``a=<name>`` (a flag, ``value`` None) or ``a=<name>:<value>``."""

    name: str
    value: str | None = None

    @classmethod
    def parse(cls, text: str) -> Attribute:
        """Parse the text after ``a=``.

        Raises:
            SDPError: the name is not a token.
        """
        name, sep, value = text.partition(":")
        return cls(_token(name, "attribute name"), value if sep else None)

    def __str__(self) -> str:
        return self.name if self.value is None else f"{self.name}:{self.value}"


# ---------------------------------------------------------------------------------------------
# Typed attribute values
# ---------------------------------------------------------------------------------------------


class Direction(enum.StrEnum):
    """The media direction attributes (RFC 8866 §6.7, RFC 3264 §5.1)."""

    SENDRECV = "sendrecv"
    SENDONLY = "sendonly"
    RECVONLY = "recvonly"
    INACTIVE = "inactive"

    @classmethod
    def from_flags(cls, send: bool, receive: bool) -> Direction:
        """The direction that sends and/or receives."""
        if send:
            return cls.SENDRECV if receive else cls.SENDONLY
        return cls.RECVONLY if receive else cls.INACTIVE

    @property
    def can_send(self) -> bool:
        """Whether this side sends media."""
        return self in (Direction.SENDRECV, Direction.SENDONLY)

    @property
    def can_receive(self) -> bool:
        """Whether this side receives media."""
        return self in (Direction.SENDRECV, Direction.RECVONLY)

    def reversed(self) -> Direction:
        """The same stream seen from the other end (sendonly <-> recvonly)."""
        return Direction.from_flags(self.can_receive, self.can_send)

    def intersect(self, other: Direction) -> Direction:
        """What both allow (sendrecv & sendonly = sendonly)."""
        return Direction.from_flags(
            self.can_send and other.can_send, self.can_receive and other.can_receive
        )

    def without_receive(self) -> Direction:
        """This direction with receiving switched off (hold, RFC 3264 §8.4)."""
        return Direction.from_flags(self.can_send, False)


_DIRECTIONS = frozenset(d.value for d in Direction)


@dataclass(frozen=True)
class RtpMap:
    """An ``a=rtpmap:<pt> <encoding>/<clock rate>[/<channels>]`` value (RFC 8866 §6.6).

    Attributes:
        payload_type: 0-127.
        encoding: the encoding name as written (compare with ``casefold``).
        clock_rate: the RTP clock rate (8000 for G.722 although it samples at 16 kHz,
            RFC 3551 §4.5.2).
        channels: the encoding parameters (audio channels), None when omitted (1).
    """

    payload_type: int
    encoding: str
    clock_rate: int
    channels: int | None = None

    @classmethod
    def parse(cls, value: str) -> RtpMap:
        """Parse the value of an ``a=rtpmap`` attribute.

        Raises:
            SDPError: malformed.
        """
        parts = _fields(value)
        if len(parts) != 2:
            raise SDPError(f"bad rtpmap: {value[:60]!r}")
        pieces = parts[1].split("/")
        if len(pieces) not in (2, 3) or not pieces[0]:
            raise SDPError(f"bad rtpmap encoding: {parts[1][:60]!r}")
        return cls(
            _number(parts[0], "rtpmap payload type", 0, 127),
            _token(pieces[0], "rtpmap encoding name"),
            _number(pieces[1], "rtpmap clock rate", 1, 2**32 - 1),
            _number(pieces[2], "rtpmap channels", 1, 255) if len(pieces) == 3 else None,
        )

    @property
    def channel_count(self) -> int:
        """The channel count, 1 when omitted."""
        return self.channels if self.channels is not None else 1

    @property
    def codec_key(self) -> tuple[str, int, int]:
        """``(encoding name casefolded, clock rate, channels)``, to compare codecs."""
        return (self.encoding.casefold(), self.clock_rate, self.channel_count)

    def __str__(self) -> str:
        text = f"{self.payload_type} {self.encoding}/{self.clock_rate}"
        return text if self.channels is None else f"{text}/{self.channels}"


def _static(pt: int, name: str, rate: int, channels: int | None = None) -> tuple[int, RtpMap]:
    return pt, RtpMap(pt, name, rate, channels)


#: RFC 3551 §6 Tables 4 and 5: the static payload types, used when ``rtpmap`` is absent.
STATIC_PAYLOAD_TYPES: Mapping[int, RtpMap] = dict(
    [
        _static(0, "PCMU", 8000),
        _static(3, "GSM", 8000),
        _static(4, "G723", 8000),
        _static(5, "DVI4", 8000),
        _static(6, "DVI4", 16000),
        _static(7, "LPC", 8000),
        _static(8, "PCMA", 8000),
        _static(9, "G722", 8000),  # RFC 3551 §4.5.2: 8000 in SDP, sampled at 16 kHz
        _static(10, "L16", 44100, 2),
        _static(11, "L16", 44100),
        _static(12, "QCELP", 8000),
        _static(13, "CN", 8000),
        _static(14, "MPA", 90000),
        _static(15, "G728", 8000),
        _static(16, "DVI4", 11025),
        _static(17, "DVI4", 22050),
        _static(18, "G729", 8000),
        _static(25, "CelB", 90000),
        _static(26, "JPEG", 90000),
        _static(28, "nv", 90000),
        _static(31, "H261", 90000),
        _static(32, "MPV", 90000),
        _static(33, "MP2T", 90000),
        _static(34, "H263", 90000),
    ]
)


def parse_fmtp_params(params: str) -> dict[str, str]:
    """Split ``key=value;key=value`` format parameters into a dict (never raises).

    Items without ``=`` (``0-15`` of telephone-event, RFC 4733 §7.1.1) map to ``""``. Spaces
    around items are dropped; a repeated key keeps its last value.
    """
    result: dict[str, str] = {}
    for item in params.split(";"):
        item = item.strip(" \t")
        if not item:
            continue
        key, _, value = item.partition("=")
        result[key.strip(" \t")] = value.strip(" \t")
    return result


def format_fmtp_params(params: Mapping[str, str]) -> str:
    """The inverse of :func:`parse_fmtp_params`: ``key=value;flag``."""
    return ";".join(key if value == "" else f"{key}={value}" for key, value in params.items())


@dataclass(frozen=True)
class Fmtp:
    """An ``a=fmtp:<format> <parameters>`` value (RFC 8866 §6.15)."""

    format: str
    params: str

    @classmethod
    def parse(cls, value: str) -> Fmtp:
        """Parse the value of an ``a=fmtp`` attribute.

        Raises:
            SDPError: no format.
        """
        value = value.lstrip(" \t")
        fmt, _, params = value.partition(" ")
        if not fmt:
            raise SDPError("fmtp without a format")
        return cls(_token(fmt, "fmtp format"), params.strip(" \t"))

    @property
    def parameters(self) -> dict[str, str]:
        """The parameters as a dict (:func:`parse_fmtp_params`)."""
        return parse_fmtp_params(self.params)

    def __str__(self) -> str:
        return f"{self.format} {self.params}" if self.params else self.format


@dataclass(frozen=True)
class Rtcp:
    """An ``a=rtcp:<port> [<nettype> <addrtype> <address>]`` value (RFC 3605 §2.1)."""

    port: int
    nettype: str | None = None
    addrtype: str | None = None
    address: str | None = None

    @classmethod
    def parse(cls, value: str) -> Rtcp:
        """Parse the value of an ``a=rtcp`` attribute.

        Raises:
            SDPError: malformed.
        """
        parts = _fields(value)
        if len(parts) == 1:
            return cls(_port(parts[0], "rtcp port"))
        if len(parts) == 4:
            return cls(
                _port(parts[0], "rtcp port"),
                _token(parts[1], "rtcp nettype"),
                _token(parts[2], "rtcp addrtype"),
                _check_address(parts[3], parts[2], "rtcp address"),
            )
        raise SDPError(f"bad rtcp attribute: {value[:60]!r}")

    def __str__(self) -> str:
        if self.address is None:
            return str(self.port)
        return f"{self.port} {self.nettype} {self.addrtype} {self.address}"


#: Bytes of master key || master salt per SRTP crypto suite (RFC 4568 §6.2, RFC 6188 §3,
#: RFC 7714 §12), to check inline keys.
SRTP_KEY_SALT_LENGTHS: Mapping[str, int] = {
    "AES_CM_128_HMAC_SHA1_80": 30,
    "AES_CM_128_HMAC_SHA1_32": 30,
    "F8_128_HMAC_SHA1_80": 30,
    "AES_192_CM_HMAC_SHA1_80": 38,
    "AES_192_CM_HMAC_SHA1_32": 38,
    "AES_256_CM_HMAC_SHA1_80": 46,
    "AES_256_CM_HMAC_SHA1_32": 46,
    "AEAD_AES_128_GCM": 28,
    "AEAD_AES_256_GCM": 44,
}

_BASE64_RE = re.compile(r"[A-Za-z0-9+/]+={0,2}")
_LIFETIME_RE = re.compile(r"(?:2\^)?[0-9]{1,20}")
_MKI_RE = re.compile(r"([0-9]{1,40}):([0-9]{1,3})")


@dataclass(frozen=True)
class KeyParam:
    """One ``inline:<key||salt>[|<lifetime>][|<MKI>:<length>]`` key parameter (RFC 4568 §9.1).

    Attributes:
        key_salt: the base64 text of master key || master salt.
        lifetime: as written (``2^20`` or a decimal), None when absent.
        mki: the MKI value, None when absent.
        mki_length: the MKI length in bytes (1-128), None when absent.
    """

    key_salt: str
    lifetime: str | None = None
    mki: int | None = None
    mki_length: int | None = None

    @classmethod
    def parse(cls, text: str) -> KeyParam:
        """Parse one key parameter (only the ``inline`` method exists, RFC 4568 §6.1).

        Raises:
            SDPError: another method, bad base64, lifetime or MKI.
        """
        method, sep, info = text.partition(":")
        if not sep or method.casefold() != "inline":
            raise SDPError(f"unsupported crypto key method: {method[:20]!r}")
        key, *rest = info.split("|")
        if not _BASE64_RE.fullmatch(key):
            raise SDPError("crypto key is not base64")
        try:
            base64.b64decode(key, validate=True)
        except (binascii.Error, ValueError):
            raise SDPError("crypto key is not base64") from None
        lifetime = mki = mki_length = None
        if len(rest) > 2:
            raise SDPError("too many fields in crypto key parameter")
        for i, part in enumerate(rest):
            match = _MKI_RE.fullmatch(part)
            if match and i == len(rest) - 1:
                mki = int(match.group(1))
                mki_length = _number(match.group(2), "MKI length", 1, 128)
            elif i == 0 and _LIFETIME_RE.fullmatch(part):
                lifetime = part
            else:
                raise SDPError(f"bad crypto key parameter field: {part[:40]!r}")
        return cls(key, lifetime, mki, mki_length)

    @property
    def key_material(self) -> bytes:
        """The decoded master key || master salt."""
        return base64.b64decode(self.key_salt)

    @property
    def lifetime_packets(self) -> int | None:
        """The lifetime as a number of packets (``2^20`` -> 1048576)."""
        if self.lifetime is None:
            return None
        if self.lifetime.startswith("2^"):
            return 2 ** min(int(self.lifetime[2:]), 128)
        return int(self.lifetime)

    def __str__(self) -> str:
        text = f"inline:{self.key_salt}"
        if self.lifetime is not None:
            text += f"|{self.lifetime}"
        if self.mki is not None:
            text += f"|{self.mki}:{self.mki_length}"
        return text


@dataclass(frozen=True)
class Crypto:
    """An ``a=crypto:<tag> <suite> <key-params> [<session-params>]`` value (RFC 4568 §9.1).

    Attributes:
        tag: 1-9 digits, echoed by the answer (RFC 4568 §5.1).
        suite: the crypto suite (``AES_CM_128_HMAC_SHA1_80``...).
        key_params: one or more key parameters (several only with MKIs).
        session_params: session parameters as written (``KDR=1``, ``UNENCRYPTED_SRTCP``...).
    """

    tag: int
    suite: str
    key_params: tuple[KeyParam, ...]
    session_params: tuple[str, ...] = ()

    @classmethod
    def parse(cls, value: str) -> Crypto:
        """Parse the value of an ``a=crypto`` attribute (a leading ``crypto:`` is allowed).

        Raises:
            SDPError: malformed.
        """
        value = value.removeprefix("crypto:")
        parts = _fields(value)
        if len(parts) < 3:
            raise SDPError("crypto needs <tag> <suite> <key-params>")
        tag = _number(parts[0], "crypto tag", 0, 999_999_999)
        if len(parts[0]) > 9:
            raise SDPError("crypto tag longer than 9 digits")
        suite = _token(parts[1], "crypto suite")
        keys = tuple(KeyParam.parse(k) for k in parts[2].split(";"))
        return cls(tag, suite, keys, tuple(parts[3:]))

    @property
    def key(self) -> KeyParam:
        """The first (usually only) key parameter."""
        return self.key_params[0]

    def has_valid_key_length(self) -> bool:
        """Whether every key decodes to the length the suite needs (unknown suite: False)."""
        length = SRTP_KEY_SALT_LENGTHS.get(self.suite)
        return length is not None and all(len(k.key_material) == length for k in self.key_params)

    def unsupported_session_params(self) -> tuple[str, ...]:
        """Session parameters an SRTP session built from this line could not honour.

        ``KDR=0`` (no key derivation rate: the libsrtp behaviour) is fine; any other KDR, the
        ``UNENCRYPTED_*`` / ``UNAUTHENTICATED_SRTP`` switches, ``FEC_*`` and ``WSH`` are not.
        An answerer refuses a crypto line with session parameters it does not support
        (RFC 4568 §6.3, §7.1.2).
        """
        return tuple(p for p in self.session_params if p.upper() != "KDR=0")

    def __str__(self) -> str:
        keys = ";".join(str(k) for k in self.key_params)
        return " ".join([str(self.tag), self.suite, keys, *self.session_params])


@dataclass(frozen=True)
class Candidate:
    """An ICE ``a=candidate`` value (RFC 8839 §5.1).

    ``<foundation> <component> <transport> <priority> <address> <port> typ <type>
    [raddr <address>] [rport <port>] *(<extension name> <extension value>)``

    Attributes:
        foundation: 1-32 ice-chars.
        component: 1 (RTP) or 2 (RTCP), up to 256.
        transport: ``UDP`` (or ``TCP``...), as written.
        priority: 1 to 2**32 - 1.
        address: IP literal or FQDN (kept as text).
        port: 0-65535.
        type: ``host``, ``srflx``, ``prflx``, ``relay`` or another token.
        related_address / related_port: ``raddr`` / ``rport``.
        extensions: ``(name, value)`` pairs as written (``generation 0``...).
    """

    foundation: str
    component: int
    transport: str
    priority: int
    address: str
    port: int
    type: str
    related_address: str | None = None
    related_port: int | None = None
    extensions: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, value: str) -> Candidate:
        """Parse an ``a=candidate`` value (a leading ``candidate:`` is allowed).

        Raises:
            SDPError: malformed.
        """
        value = value.removeprefix("candidate:")
        parts = _fields(value)
        if len(parts) < 8 or parts[6] != "typ":
            raise SDPError(f"bad candidate: {value[:80]!r}")
        foundation = parts[0]
        if len(foundation) > 32 or not _ICE_CHARS_RE.fullmatch(foundation):
            raise SDPError(f"bad candidate foundation: {foundation[:40]!r}")
        address = parts[4]
        _check_address(address, "IP6" if ":" in address else "IP4", "candidate address")
        rest = parts[8:]
        raddr = rport = None
        if len(rest) >= 2 and rest[0] == "raddr":
            raddr = _check_address(rest[1], "IP6" if ":" in rest[1] else "IP4", "raddr")
            rest = rest[2:]
        if len(rest) >= 2 and rest[0] == "rport":
            rport = _port(rest[1], "rport")
            rest = rest[2:]
        if len(rest) % 2:
            raise SDPError("candidate extensions must come in name/value pairs")
        for name in rest[::2]:
            _token(name, "candidate extension name")
        return cls(
            foundation,
            _number(parts[1], "candidate component", 1, 256),
            _token(parts[2], "candidate transport"),
            _number(parts[3], "candidate priority", 1, 2**32 - 1),
            address,
            _port(parts[5], "candidate port"),
            _token(parts[7], "candidate type"),
            raddr,
            rport,
            tuple(zip(rest[::2], rest[1::2], strict=True)),
        )

    def __str__(self) -> str:
        items = [
            self.foundation,
            str(self.component),
            self.transport,
            str(self.priority),
            self.address,
            str(self.port),
            "typ",
            self.type,
        ]
        if self.related_address is not None:
            items += ["raddr", self.related_address]
        if self.related_port is not None:
            items += ["rport", str(self.related_port)]
        for name, value in self.extensions:
            items += [name, value]
        return " ".join(items)


@dataclass(frozen=True)
class RemoteCandidate:
    """One ``<component> <address> <port>`` triple of ``a=remote-candidates`` (RFC 8839 §5.2)."""

    component: int
    address: str
    port: int

    @staticmethod
    def parse_list(value: str) -> list[RemoteCandidate]:
        """Parse the value of an ``a=remote-candidates`` attribute.

        Raises:
            SDPError: not triples, or bad numbers.
        """
        parts = _fields(value)
        if not parts or len(parts) % 3:
            raise SDPError("remote-candidates must list <component> <address> <port> triples")
        return [
            RemoteCandidate(
                _number(parts[i], "remote candidate component", 1, 256),
                _check_address(
                    parts[i + 1], "IP6" if ":" in parts[i + 1] else "IP4", "remote candidate"
                ),
                _port(parts[i + 2], "remote candidate port"),
            )
            for i in range(0, len(parts), 3)
        ]

    def __str__(self) -> str:
        return f"{self.component} {self.address} {self.port}"


@dataclass(frozen=True)
class TelephoneEvent:
    """A ``telephone-event`` payload format of a media description (RFC 4733 §7).

    Attributes:
        payload_type: its payload type.
        clock_rate: its clock rate (normally the audio codec's).
        events: the events of its ``fmtp`` (``0-15``), None without fmtp (0-15 by default).
    """

    payload_type: int
    clock_rate: int
    events: str | None = None


# ---------------------------------------------------------------------------------------------
# Descriptions
# ---------------------------------------------------------------------------------------------


def _check_text(text: str, what: str) -> None:
    if _BAD_TEXT_RE.search(text):
        raise SDPError(f"{what} contains CR, LF or NUL", status=500)


class _Attributes:
    """Attribute access shared by session and media descriptions."""

    attributes: list[Attribute]

    def attribute(self, name: str) -> Attribute | None:
        """The first attribute called ``name``, or None."""
        for attribute in self.attributes:
            if attribute.name == name:
                return attribute
        return None

    def attribute_values(self, name: str) -> list[str]:
        """The values of every attribute called ``name`` (``""`` for a flag)."""
        return [a.value or "" for a in self.attributes if a.name == name]

    def has_attribute(self, name: str) -> bool:
        """Whether an attribute called ``name`` is present."""
        return any(a.name == name for a in self.attributes)

    def add_attribute(self, name: str, value: object = None) -> None:
        """Append ``a=name`` (value None) or ``a=name:value`` (``str(value)``)."""
        self.attributes.append(Attribute(name, None if value is None else str(value)))

    def remove_attribute(self, name: str) -> int:
        """Remove every attribute called ``name``; returns how many were removed."""
        before = len(self.attributes)
        self.attributes[:] = [a for a in self.attributes if a.name != name]
        return before - len(self.attributes)

    def set_attribute(self, name: str, value: object = None) -> None:
        """Replace the first ``name`` attribute in place (dropping any others), or append it."""
        new = Attribute(name, None if value is None else str(value))
        for i, attribute in enumerate(self.attributes):
            if attribute.name == name:
                self.attributes[i] = new
                self.attributes[i + 1 :] = [a for a in self.attributes[i + 1 :] if a.name != name]
                return
        self.attributes.append(new)

    # -- attributes allowed at both levels ---------------------------------------------------

    @property
    def direction(self) -> Direction | None:
        """The direction attribute of this section, None when absent.

        Raises:
            SDPError: two different direction attributes.
        """
        found = {a.name for a in self.attributes if a.name in _DIRECTIONS and a.value is None}
        if len(found) > 1:
            raise SDPError(f"conflicting direction attributes: {', '.join(sorted(found))}")
        return Direction(found.pop()) if found else None

    @direction.setter
    def direction(self, value: Direction | None) -> None:
        index = next(
            (i for i, a in enumerate(self.attributes) if a.name in _DIRECTIONS),
            len(self.attributes),
        )
        self.attributes[:] = [a for a in self.attributes if a.name not in _DIRECTIONS]
        if value is not None:
            self.attributes.insert(min(index, len(self.attributes)), Attribute(str(value)))

    @property
    def ice_ufrag(self) -> str | None:
        """``a=ice-ufrag`` of this section (RFC 8839 §5.4), None when absent."""
        attribute = self.attribute("ice-ufrag")
        return None if attribute is None else (attribute.value or "").strip(" ")

    @property
    def ice_pwd(self) -> str | None:
        """``a=ice-pwd`` of this section (RFC 8839 §5.4), None when absent."""
        attribute = self.attribute("ice-pwd")
        return None if attribute is None else (attribute.value or "").strip(" ")

    @property
    def ice_options(self) -> list[str]:
        """The ``a=ice-options`` tags of this section (RFC 8839 §5.6)."""
        return [tag for value in self.attribute_values("ice-options") for tag in _fields(value)]


@dataclass
class MediaDescription(_Attributes):
    """One media description: the ``m=`` line and its ``i c b k a`` lines (RFC 8866 §5.14).

    Attributes:
        media: ``audio``, ``video``, ``text``, ``application``, ``message``...
        port: the transport port; 0 means the stream is disabled (RFC 3264 §5.1).
        proto: ``RTP/AVP``, ``RTP/SAVP``, ``RTP/AVPF``, ``RTP/SAVPF``, ``UDP/TLS/RTP/SAVP``...
        formats: the formats as written (payload type numbers for RTP).
        port_count: the ``/<number of ports>`` of the m= line, None when absent.
        title: the ``i=`` line.
        connections: the ``c=`` lines (normally at most one).
        bandwidths: the ``b=`` lines.
        key: the obsolete ``k=`` line.
        attributes: the ``a=`` lines in order.
    """

    media: str
    port: int
    proto: str
    formats: list[str]
    port_count: int | None = None
    title: str | None = None
    connections: list[Connection] = field(default_factory=list)
    bandwidths: list[Bandwidth] = field(default_factory=list)
    key: str | None = None
    attributes: list[Attribute] = field(default_factory=list)

    @classmethod
    def parse_line(cls, value: str) -> MediaDescription:
        """Parse the value of an ``m=`` line (without the lines that follow it).

        Raises:
            SDPError: fewer than four fields, a bad port or port count, or a non-numeric or
                out-of-range payload type with an RTP profile.
        """
        parts = _fields(value)
        if len(parts) < 4:
            raise SDPError(f"m= line needs <media> <port> <proto> <fmt>...: {value[:60]!r}")
        media, port_text, proto, *formats = parts
        port_part, slash, count_part = port_text.partition("/")
        port = _port(port_part, "m= port")
        count = _number(count_part, "m= port count", 1, 65536) if slash else None
        _token(media, "m= media")
        for piece in proto.split("/"):
            _token(piece, "m= proto")
        description = cls(media, port, proto, formats, count)
        for fmt in formats:
            if description.is_rtp:
                _number(fmt, "RTP payload type", 0, 127)
            else:
                _token(fmt, "m= format")
        return description

    def m_line(self) -> str:
        """The value of the ``m=`` line."""
        port = str(self.port) if self.port_count is None else f"{self.port}/{self.port_count}"
        return " ".join([self.media, port, self.proto, *self.formats])

    # -- transport ---------------------------------------------------------------------------

    @property
    def is_rtp(self) -> bool:
        """Whether the profile is RTP-based (formats are payload types)."""
        return "RTP" in self.proto.upper().split("/")

    @property
    def is_secure(self) -> bool:
        """Whether the profile is SRTP (``RTP/SAVP``, ``RTP/SAVPF``, ``UDP/TLS/RTP/SAVP``...)."""
        return self.proto.upper().split("/")[-1] in ("SAVP", "SAVPF")

    @property
    def is_dtls(self) -> bool:
        """Whether the profile is DTLS-SRTP (``UDP/TLS/RTP/SAVP[F]``, RFC 5764)."""
        return "TLS" in self.proto.upper().split("/")

    @property
    def connection(self) -> Connection | None:
        """The first ``c=`` line of this media description, or None."""
        return self.connections[0] if self.connections else None

    @property
    def rtcp(self) -> Rtcp | None:
        """``a=rtcp`` (RFC 3605), None when absent."""
        attribute = self.attribute("rtcp")
        return None if attribute is None else Rtcp.parse(attribute.value or "")

    @property
    def rtcp_mux(self) -> bool:
        """Whether ``a=rtcp-mux`` is present (RFC 5761 §5.1.1)."""
        return self.has_attribute("rtcp-mux")

    # -- formats -----------------------------------------------------------------------------

    @property
    def payload_types(self) -> list[int]:
        """The formats as payload type numbers (RTP profiles).

        Raises:
            SDPError: a format is not a payload type.
        """
        return [_number(f, "RTP payload type", 0, 127) for f in self.formats]

    def rtpmaps(self) -> dict[int, RtpMap]:
        """Every ``a=rtpmap`` by payload type (the first one wins).

        Raises:
            SDPError: a malformed rtpmap.
        """
        result: dict[int, RtpMap] = {}
        for value in self.attribute_values("rtpmap"):
            rtpmap = RtpMap.parse(value)
            result.setdefault(rtpmap.payload_type, rtpmap)
        return result

    def rtpmap(self, payload_type: int) -> RtpMap | None:
        """The mapping of a payload type: its ``a=rtpmap``, else the static RFC 3551 one.

        Raises:
            SDPError: a malformed rtpmap.
        """
        found = self.rtpmaps().get(payload_type)
        return found if found is not None else STATIC_PAYLOAD_TYPES.get(payload_type)

    def fmtp(self, fmt: int | str) -> Fmtp | None:
        """The ``a=fmtp`` of a format, or None.

        Raises:
            SDPError: a malformed fmtp.
        """
        for value in self.attribute_values("fmtp"):
            fmtp = Fmtp.parse(value)
            if fmtp.format == str(fmt):
                return fmtp
        return None

    def fmtp_params(self, fmt: int | str) -> dict[str, str]:
        """The parameters of a format's ``a=fmtp`` as a dict (empty without one)."""
        fmtp = self.fmtp(fmt)
        return {} if fmtp is None else fmtp.parameters

    def codecs(self) -> list[tuple[int, RtpMap | None]]:
        """``(payload type, mapping or None)`` for every format, in m= line order.

        Raises:
            SDPError: a bad payload type or rtpmap.
        """
        maps = self.rtpmaps()
        return [(pt, maps.get(pt, STATIC_PAYLOAD_TYPES.get(pt))) for pt in self.payload_types]

    def telephone_events(self) -> list[TelephoneEvent]:
        """The ``telephone-event`` formats (RFC 4733 §7), in m= line order."""
        events = []
        for pt, rtpmap in self.codecs():
            if rtpmap is not None and rtpmap.encoding.casefold() == "telephone-event":
                fmtp = self.fmtp(pt)
                events.append(
                    TelephoneEvent(pt, rtpmap.clock_rate, None if fmtp is None else fmtp.params)
                )
        return events

    @property
    def ptime(self) -> int | None:
        """``a=ptime`` in milliseconds (a decimal is rounded), None when absent."""
        return self._milliseconds("ptime")

    @property
    def maxptime(self) -> int | None:
        """``a=maxptime`` in milliseconds, None when absent."""
        return self._milliseconds("maxptime")

    def _milliseconds(self, name: str) -> int | None:
        attribute = self.attribute(name)
        if attribute is None:
            return None
        text = (attribute.value or "").strip(" ")
        whole, dot, fraction = text.partition(".")
        number = _number(whole, name, 0, 100_000)
        if dot:
            if not _DIGITS_RE.fullmatch(fraction):
                raise SDPError(f"bad {name}: {text[:20]!r}")
            number += round(float("0." + fraction[:6]))
        return number

    # -- security and ICE --------------------------------------------------------------------

    @property
    def crypto(self) -> list[Crypto]:
        """Every ``a=crypto`` (RFC 4568), in order.

        Raises:
            SDPError: one is malformed (see :meth:`usable_crypto` to skip those).
        """
        return [Crypto.parse(v) for v in self.attribute_values("crypto")]

    def usable_crypto(self) -> list[Crypto]:
        """The well-formed ``a=crypto`` attributes, skipping malformed ones (RFC 4568 §7.1.2)."""
        result = []
        for value in self.attribute_values("crypto"):
            try:
                result.append(Crypto.parse(value))
            except SDPError:
                continue
        return result

    @property
    def candidates(self) -> list[Candidate]:
        """Every ``a=candidate`` (RFC 8839 §5.1).

        Raises:
            SDPError: one is malformed.
        """
        return [Candidate.parse(v) for v in self.attribute_values("candidate")]

    @property
    def end_of_candidates(self) -> bool:
        """Whether ``a=end-of-candidates`` is present (RFC 8840 §8.2)."""
        return self.has_attribute("end-of-candidates")

    @property
    def remote_candidates(self) -> list[RemoteCandidate]:
        """The ``a=remote-candidates`` triples (RFC 8839 §5.2).

        Raises:
            SDPError: malformed.
        """
        return [c for v in self.attribute_values("remote-candidates") for c in
                RemoteCandidate.parse_list(v)]  # fmt: skip

    def lines(self) -> list[str]:
        """The lines of this media description, without line ends."""
        out = [f"m={self.m_line()}"]
        if self.title is not None:
            out.append(f"i={self.title}")
        out += [f"c={c}" for c in self.connections]
        out += [f"b={b}" for b in self.bandwidths]
        if self.key is not None:
            out.append(f"k={self.key}")
        out += [f"a={a}" for a in self.attributes]
        return out


@dataclass
class SessionDescription(_Attributes):
    """A whole SDP session description (RFC 8866 §5).

    Attributes:
        origin: the ``o=`` line.
        session_name: the ``s=`` text (``-`` or a single space when meaningless).
        information: ``i=``.
        uri: ``u=``.
        emails: the ``e=`` lines.
        phones: the ``p=`` lines.
        connection: the session-level ``c=`` line (the default for every media description).
        bandwidths: the session-level ``b=`` lines.
        timings: the ``t=`` lines with their ``r=`` lines (at least one).
        time_zones: the ``z=`` line as written.
        key: the obsolete ``k=`` line.
        attributes: the session-level ``a=`` lines in order.
        media: the media descriptions in order.
        version: the ``v=`` value (always 0).
    """

    origin: Origin
    session_name: str = "-"
    information: str | None = None
    uri: str | None = None
    emails: list[str] = field(default_factory=list)
    phones: list[str] = field(default_factory=list)
    connection: Connection | None = None
    bandwidths: list[Bandwidth] = field(default_factory=list)
    timings: list[Timing] = field(default_factory=lambda: [Timing()])
    time_zones: str | None = None
    key: str | None = None
    attributes: list[Attribute] = field(default_factory=list)
    media: list[MediaDescription] = field(default_factory=list)
    version: int = 0

    @classmethod
    def parse(cls, data: bytes | bytearray | memoryview | str, *,
              max_size: int = DEFAULT_MAX_SIZE) -> SessionDescription:  # fmt: skip
        """Same as :func:`parse_sdp`."""
        return parse_sdp(data, max_size=max_size)

    # -- levels combined ---------------------------------------------------------------------

    def media_connection(self, media: MediaDescription) -> Connection | None:
        """The connection of a media description: its own ``c=``, else the session's."""
        return media.connection if media.connections else self.connection

    def effective_direction(self, media: MediaDescription) -> Direction:
        """A stream's direction: media level, else session level, else sendrecv (RFC 3264 §5.1).

        Raises:
            SDPError: conflicting direction attributes in one section.
        """
        return media.direction or self.direction or Direction.SENDRECV

    def ice_credentials(self, media: MediaDescription) -> tuple[str, str] | None:
        """``(ufrag, pwd)`` for a stream, media level overriding session level (RFC 8839 §5.4).

        None unless both are present and non-empty.
        """
        ufrag = media.ice_ufrag if media.ice_ufrag is not None else self.ice_ufrag
        pwd = media.ice_pwd if media.ice_pwd is not None else self.ice_pwd
        return (ufrag, pwd) if ufrag and pwd else None

    @property
    def ice_lite(self) -> bool:
        """Whether the session-level ``a=ice-lite`` is present (RFC 8839 §5.3)."""
        return self.has_attribute("ice-lite")

    # -- serialization -----------------------------------------------------------------------

    def lines(self) -> list[str]:
        """The lines of the description in RFC 8866 §5 order, without line ends."""
        out = [f"v={self.version}", f"o={self.origin}", f"s={self.session_name}"]
        if self.information is not None:
            out.append(f"i={self.information}")
        if self.uri is not None:
            out.append(f"u={self.uri}")
        out += [f"e={e}" for e in self.emails]
        out += [f"p={p}" for p in self.phones]
        if self.connection is not None:
            out.append(f"c={self.connection}")
        out += [f"b={b}" for b in self.bandwidths]
        for timing in self.timings:
            out.append(f"t={timing}")
            out += [f"r={r}" for r in timing.repeats]
        if self.time_zones is not None:
            out.append(f"z={self.time_zones}")
        if self.key is not None:
            out.append(f"k={self.key}")
        out += [f"a={a}" for a in self.attributes]
        for media in self.media:
            out += media.lines()
        return out

    def to_text(self) -> str:
        """The description as text with CRLF line ends.

        Raises:
            SDPError: (status 500) a field contains CR, LF or NUL.
        """
        lines = self.lines()
        for line in lines:
            _check_text(line, f"SDP line {line[:20]!r}")
        return "\r\n".join(lines) + "\r\n"

    def to_bytes(self) -> bytes:
        """The description as UTF-8 bytes with CRLF line ends (see :meth:`to_text`)."""
        return self.to_text().encode("utf-8")

    def __str__(self) -> str:
        return self.to_text()

    def copy(self) -> SessionDescription:
        """A deep copy, to edit without touching this one."""
        return copy.deepcopy(self)


# ---------------------------------------------------------------------------------------------
# Parser
# ---------------------------------------------------------------------------------------------

_SESSION_TYPES = frozenset("iuepcbtrzka")
_MEDIA_TYPES = frozenset("icbka")
_ALL_TYPES = frozenset("vosiuepcbtrzkam")


def _decode(data: bytes | bytearray | memoryview | str, max_size: int) -> str:
    if isinstance(data, str):
        if len(data) > max_size:
            raise SDPError(f"SDP larger than {max_size} bytes")
        try:
            size = len(data.encode("utf-8"))
        except UnicodeEncodeError:
            raise SDPError("SDP is not valid UTF-8 text") from None
        text = data
    elif isinstance(data, bytes | bytearray | memoryview):
        raw = bytes(data)
        size = len(raw)
        if size <= max_size:
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise SDPError("SDP is not valid UTF-8 text") from None
    else:
        raise TypeError(f"SDP must be bytes or str, not {type(data).__name__}")
    if size > max_size:
        raise SDPError(f"SDP larger than {max_size} bytes")
    if "\x00" in text:
        raise SDPError("SDP contains a NUL character")
    return text


def _split_lines(text: str) -> list[tuple[int, str, str]]:
    """``(line number, type letter, value)`` per non-empty line; CRLF or LF line ends."""
    lines = []
    for number, line in enumerate(text.split("\n"), 1):
        if line.endswith("\r"):
            line = line[:-1]
        if not line:
            continue
        if "\r" in line:
            raise SDPError(f"line {number}: stray CR")
        if len(line) < 2 or line[1] != "=":
            raise SDPError(f"line {number}: not a <type>=<value> line: {line[:40]!r}")
        if line[0] not in _ALL_TYPES:
            raise SDPError(f"line {number}: unknown line type {line[0]!r}")
        lines.append((number, line[0], line[2:]))
    return lines


def parse_sdp(data: bytes | bytearray | memoryview | str, *,
              max_size: int = DEFAULT_MAX_SIZE) -> SessionDescription:  # fmt: skip
    """Parse an SDP body.

    Args:
        data: the body, as bytes (UTF-8) or text.
        max_size: the largest body accepted, in bytes.

    Returns:
        The session description.

    Raises:
        SDPError: (status 400) anything malformed; see the module docstring.
    """
    lines = _split_lines(_decode(data, max_size))
    if len(lines) < 3 or [t for _, t, _ in lines[:3]] != ["v", "o", "s"]:
        if not lines or lines[0][1] != "v":
            raise SDPError("SDP must start with a v= line")
        raise SDPError("v= must be followed by o= and s=")
    if lines[0][2] != "0":
        raise SDPError(f"unsupported SDP version {lines[0][2][:10]!r}")
    session = SessionDescription(
        origin=Origin.parse(lines[1][2]), session_name=lines[2][2], timings=[]
    )
    media: MediaDescription | None = None
    for number, kind, value in lines[3:]:
        try:
            if kind == "m":
                media = MediaDescription.parse_line(value)
                session.media.append(media)
            elif media is None:
                _session_line(session, kind, value)
            else:
                _media_line(media, kind, value)
        except SDPError as exc:
            raise SDPError(f"line {number}: {exc}") from None
    if not session.timings:
        raise SDPError("SDP has no t= line")
    return session


def _session_line(session: SessionDescription, kind: str, value: str) -> None:
    if kind not in _SESSION_TYPES:
        raise SDPError(f"duplicate {kind}= line")
    if kind == "a":
        session.attributes.append(Attribute.parse(value))
    elif kind == "b":
        session.bandwidths.append(Bandwidth.parse(value))
    elif kind == "t":
        session.timings.append(Timing.parse(value))
    elif kind == "r":
        if not session.timings:
            raise SDPError("r= without a t= line before it")
        last = session.timings[-1]
        session.timings[-1] = replace(last, repeats=(*last.repeats, Timing.check_repeat(value)))
    elif kind == "e":
        session.emails.append(value)
    elif kind == "p":
        session.phones.append(value)
    else:
        single = {"i": "information", "u": "uri", "c": "connection", "z": "time_zones", "k": "key"}
        name = single[kind]
        if getattr(session, name) is not None:
            raise SDPError(f"more than one session-level {kind}= line")
        if kind == "c":
            setattr(session, name, Connection.parse(value))
        elif kind == "z":
            setattr(session, name, _check_time_zones(value))
        else:
            setattr(session, name, value)


def _media_line(media: MediaDescription, kind: str, value: str) -> None:
    if kind not in _MEDIA_TYPES:
        raise SDPError(f"{kind}= is not allowed in a media description")
    if kind == "a":
        media.attributes.append(Attribute.parse(value))
    elif kind == "c":
        media.connections.append(Connection.parse(value))
    elif kind == "b":
        media.bandwidths.append(Bandwidth.parse(value))
    elif kind == "i":
        if media.title is not None:
            raise SDPError("more than one i= line in a media description")
        media.title = value
    else:
        if media.key is not None:
            raise SDPError("more than one k= line in a media description")
        media.key = value
