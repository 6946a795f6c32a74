"""A minimal, strict DER encoder and decoder (ITU-T X.690 §8, §10) and PEM armour (RFC 7468).

Just enough ASN.1 for Ed25519 key files (RFC 8410, RFC 5958) and X.509 certificates (RFC 5280):
the universal types used there, context-specific tags, and times. The decoder reads one
tag-length-value at a time and accepts DER only: low tag numbers (< 31), definite lengths in their
shortest form, no trailing bytes, minimal INTEGER and OID encodings, BOOLEAN as 0x00/0xFF, zero
padding bits in a BIT STRING, times as RFC 5280 §4.1.2.5 profiles them. Sizes are bounded by
:data:`MAX_SIZE`. Every malformed input raises :class:`DERError` and nothing else.

Tags are handled as their single identifier octet (class, constructed bit and number), e.g.
``0x30`` for SEQUENCE or ``0xA3`` for ``[3]`` constructed.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import re
from dataclasses import dataclass

from p2psip.errors import P2PSIPError

__all__ = [
    "BIT_STRING",
    "BOOLEAN",
    "GENERALIZED_TIME",
    "IA5_STRING",
    "INTEGER",
    "MAX_SIZE",
    "NULL",
    "OCTET_STRING",
    "OID",
    "SEQUENCE",
    "SET",
    "UTC_TIME",
    "UTF8_STRING",
    "DERError",
    "Element",
    "bit_string",
    "boolean",
    "context",
    "decode",
    "decode_bit_string",
    "decode_boolean",
    "decode_integer",
    "decode_oid",
    "decode_time",
    "encode_length",
    "integer",
    "octet_string",
    "oid",
    "pem_decode",
    "pem_encode",
    "pem_labels",
    "read_element",
    "sequence",
    "set_of",
    "time",
    "tlv",
]

# Universal tags (X.690 §8; constructed bit set for SEQUENCE and SET).
BOOLEAN = 0x01
INTEGER = 0x02
BIT_STRING = 0x03
OCTET_STRING = 0x04
NULL = 0x05
OID = 0x06
UTF8_STRING = 0x0C
SEQUENCE = 0x30
SET = 0x31
IA5_STRING = 0x16
UTC_TIME = 0x17
GENERALIZED_TIME = 0x18

#: Largest encoding (and PEM text) handled: far beyond any key or certificate made here.
MAX_SIZE = 64 * 1024
#: Largest OBJECT IDENTIFIER content accepted by :func:`decode_oid`.
MAX_OID_SIZE = 64

_CONSTRUCTED = 0x20
_TAG_NUMBER_MASK = 0x1F
_UTC = datetime.UTC


class DERError(P2PSIPError):
    """Bytes or text that are not the DER (or PEM) this module accepts."""


@dataclass(frozen=True, slots=True)
class Element:
    """One decoded tag-length-value.

    Attributes:
        tag: the identifier octet (e.g. ``0x30`` SEQUENCE, ``0x81`` ``[1]`` primitive).
        content: the value octets.
        encoded: the whole encoding (identifier, length and content), e.g. to hash or sign.
    """

    tag: int
    content: bytes
    encoded: bytes

    @property
    def constructed(self) -> bool:
        """Whether the element holds further elements (X.690 §8.1.2.5)."""
        return bool(self.tag & _CONSTRUCTED)

    def children(self) -> list[Element]:
        """The elements inside a constructed element, in order.

        Raises:
            DERError: the element is primitive or its content is not a run of whole elements.
        """
        if not self.constructed:
            raise DERError(f"tag 0x{self.tag:02x} is primitive: it holds no elements")
        items = []
        offset = 0
        while offset < len(self.content):
            item, offset = read_element(self.content, offset)
            items.append(item)
        return items

    def expect(self, tag: int) -> Element:
        """Return ``self`` when its tag is ``tag``.

        Raises:
            DERError: another tag.
        """
        if self.tag != tag:
            raise DERError(f"expected tag 0x{tag:02x}, found 0x{self.tag:02x}")
        return self


# -- decoding -----------------------------------------------------------------------------------


def read_element(data: bytes, offset: int = 0) -> tuple[Element, int]:
    """Read one element of ``data`` at ``offset``.

    Args:
        data: the encoding.
        offset: where the element starts.

    Returns:
        The element and the offset just after it.

    Raises:
        DERError: truncated data, a high tag number, an indefinite or non-minimal length.
    """
    end_of_data = len(data)
    if offset + 2 > end_of_data:
        raise DERError("truncated element")
    tag = data[offset]
    if tag & _TAG_NUMBER_MASK == _TAG_NUMBER_MASK:
        raise DERError("high tag numbers are not used here")  # X.690 §8.1.2.4
    first = data[offset + 1]
    position = offset + 2
    if first < 0x80:  # X.690 §8.1.3.4: short form
        length = first
    elif first == 0x80:
        raise DERError("indefinite length is not DER")  # X.690 §10.1
    else:
        count = first & 0x7F
        if count > 4:
            raise DERError("length too large")
        if position + count > end_of_data:
            raise DERError("truncated length")
        length = int.from_bytes(data[position : position + count], "big")
        position += count
        # X.690 §10.1: the fewest octets; the long form only for 128 and more
        if data[offset + 2] == 0 or length < 0x80:
            raise DERError("length not in its shortest form")
    if length > MAX_SIZE:
        raise DERError("element too large")
    end = position + length
    if end > end_of_data:
        raise DERError("truncated content")
    return Element(tag, bytes(data[position:end]), bytes(data[offset:end])), end


def decode(data: bytes) -> Element:
    """Decode exactly one element that fills ``data`` (no trailing bytes).

    Raises:
        DERError: malformed, too large, or followed by further bytes.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise DERError("DER input is bytes")
    data = bytes(data)
    if len(data) > MAX_SIZE:
        raise DERError("encoding too large")
    element, end = read_element(data, 0)
    if end != len(data):
        raise DERError("trailing bytes after the element")
    return element


def decode_integer(element: Element) -> int:
    """The value of an INTEGER in its minimal two's complement form (X.690 §8.3).

    Raises:
        DERError: not an INTEGER, empty, or with redundant leading octets.
    """
    content = element.expect(INTEGER).content
    if not content:
        raise DERError("empty INTEGER")
    if len(content) > 1 and (
        (content[0] == 0x00 and content[1] < 0x80) or (content[0] == 0xFF and content[1] >= 0x80)
    ):
        raise DERError("INTEGER not in its shortest form")  # X.690 §8.3.2
    return int.from_bytes(content, "big", signed=True)


def decode_boolean(element: Element) -> bool:
    """The value of a BOOLEAN: DER allows only 0x00 and 0xFF (X.690 §11.1)."""
    content = element.expect(BOOLEAN).content
    if content == b"\xff":
        return True
    if content == b"\x00":
        return False
    raise DERError("BOOLEAN is not 0x00 or 0xFF")


def decode_bit_string(element: Element, tag: int = BIT_STRING) -> tuple[bytes, int]:
    """The octets and the number of unused bits of a BIT STRING (X.690 §8.6).

    Args:
        element: the element.
        tag: its expected tag (e.g. ``0x81`` for an ``[1] IMPLICIT BIT STRING``).

    Returns:
        ``(octets, unused_bits)``; the unused bits of the last octet are zero.

    Raises:
        DERError: empty, more than 7 unused bits, unused bits without octets or not zero.
    """
    content = element.expect(tag).content
    if not content:
        raise DERError("empty BIT STRING")
    unused = content[0]
    octets = content[1:]
    if unused > 7 or (unused and not octets):
        raise DERError("bad number of unused bits in a BIT STRING")
    if unused and octets[-1] & ((1 << unused) - 1):
        raise DERError("unused bits of a BIT STRING are not zero")  # X.690 §11.2.1
    return octets, unused


def decode_oid(element: Element) -> str:
    """The dotted form of an OBJECT IDENTIFIER (X.690 §8.19).

    Raises:
        DERError: empty, too long, or a subidentifier with a leading 0x80 or left unfinished.
    """
    content = element.expect(OID).content
    if not content or len(content) > MAX_OID_SIZE:
        raise DERError("bad OBJECT IDENTIFIER length")
    if content[-1] & 0x80:
        raise DERError("unfinished OBJECT IDENTIFIER subidentifier")
    arcs: list[int] = []
    value = 0
    start = True
    for octet in content:
        if start and octet == 0x80:
            raise DERError("OBJECT IDENTIFIER subidentifier not in its shortest form")
        value = (value << 7) | (octet & 0x7F)
        start = not octet & 0x80
        if start:
            arcs.append(value)
            value = 0
    first = arcs[0]
    head = [first // 40, first % 40] if first < 80 else [2, first - 80]  # X.690 §8.19.4
    return ".".join(str(arc) for arc in head + arcs[1:])


_UTC_TIME = re.compile(rb"[0-9]{12}Z")
_GENERALIZED_TIME = re.compile(rb"[0-9]{14}Z")


def decode_time(element: Element) -> datetime.datetime:
    """A UTCTime or GeneralizedTime as RFC 5280 §4.1.2.5 profiles them, as an aware UTC datetime.

    UTCTime is ``YYMMDDHHMMSSZ`` with years 50-99 in the 1900s (§4.1.2.5.1); GeneralizedTime
    is ``YYYYMMDDHHMMSSZ`` without fractions (§4.1.2.5.2).

    Raises:
        DERError: another tag, another form, or an impossible date.
    """
    content = element.content
    if element.tag == UTC_TIME and _UTC_TIME.fullmatch(content):
        year = int(content[:2])
        year += 1900 if year >= 50 else 2000
        rest = content[2:]
    elif element.tag == GENERALIZED_TIME and _GENERALIZED_TIME.fullmatch(content):
        year = int(content[:4])
        rest = content[4:]
    else:
        raise DERError("not an RFC 5280 UTCTime or GeneralizedTime")
    fields = [int(rest[i : i + 2]) for i in range(0, 10, 2)]
    try:
        return datetime.datetime(year, *fields, tzinfo=_UTC)
    except ValueError:
        raise DERError("impossible date or time") from None


# -- encoding -----------------------------------------------------------------------------------


def encode_length(length: int) -> bytes:
    """The DER length octets for ``length`` (X.690 §8.1.3, shortest form)."""
    if length < 0:
        raise DERError("negative length")
    if length < 0x80:
        return bytes([length])
    octets = length.to_bytes((length.bit_length() + 7) // 8, "big")
    if len(octets) > 4:
        raise DERError("length too large")
    return bytes([0x80 | len(octets)]) + octets


def tlv(tag: int, content: bytes) -> bytes:
    """One element: ``tag`` (an identifier octet with a low tag number), length, content."""
    if not 0 <= tag <= 0xFF or tag & _TAG_NUMBER_MASK == _TAG_NUMBER_MASK:
        raise DERError("only single-octet tags are supported")
    return bytes([tag]) + encode_length(len(content)) + content


def sequence(*items: bytes) -> bytes:
    """A SEQUENCE of already encoded elements."""
    return tlv(SEQUENCE, b"".join(items))


def set_of(*items: bytes) -> bytes:
    """A SET OF already encoded elements, sorted by encoding as DER requires (X.690 §11.6)."""
    return tlv(SET, b"".join(sorted(items)))


def context(number: int, content: bytes, *, constructed: bool = True) -> bytes:
    """A context-specific element ``[number]``.

    For an EXPLICIT tag pass the inner element's encoding with ``constructed=True``; for an
    IMPLICIT tag pass the inner content with the inner type's constructed bit.
    """
    if not 0 <= number < _TAG_NUMBER_MASK:
        raise DERError("context tag number out of range")
    return tlv(0x80 | (_CONSTRUCTED if constructed else 0) | number, content)


def integer(value: int) -> bytes:
    """An INTEGER in its minimal two's complement form (X.690 §8.3)."""
    size = (value + (value < 0)).bit_length() // 8 + 1
    return tlv(INTEGER, value.to_bytes(size, "big", signed=True))


def boolean(value: bool) -> bytes:
    """A BOOLEAN, TRUE as 0xFF (X.690 §11.1)."""
    return tlv(BOOLEAN, b"\xff" if value else b"\x00")


def octet_string(value: bytes) -> bytes:
    """An OCTET STRING."""
    return tlv(OCTET_STRING, bytes(value))


def bit_string(value: bytes, tag: int = BIT_STRING) -> bytes:
    """A BIT STRING of whole octets (no unused bits), e.g. a key or a signature."""
    return tlv(tag, b"\x00" + bytes(value))


def oid(dotted: str) -> bytes:
    """An OBJECT IDENTIFIER from its dotted form, e.g. ``"1.3.101.112"`` (X.690 §8.19).

    Raises:
        DERError: fewer than two arcs, a first arc above 2, or a second arc above 39 under 0 or 1.
    """
    try:
        arcs = [int(part) for part in dotted.split(".")]
    except ValueError:
        raise DERError(f"not a dotted OID: {dotted!r}") from None
    if len(arcs) < 2 or min(arcs) < 0 or arcs[0] > 2 or (arcs[0] < 2 and arcs[1] > 39):
        raise DERError(f"not a valid OID: {dotted!r}")
    content = bytearray()
    for arc in [arcs[0] * 40 + arcs[1], *arcs[2:]]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        content.extend(reversed(chunk))
    return tlv(OID, bytes(content))


def time(moment: datetime.datetime) -> bytes:
    """A certificate validity time (RFC 5280 §4.1.2.5), to the second, in UTC.

    UTCTime for the years 1950 to 2049, GeneralizedTime otherwise. A naive datetime is UTC.
    """
    if moment.tzinfo is not None:
        moment = moment.astimezone(_UTC)
    if 1950 <= moment.year <= 2049:
        return tlv(UTC_TIME, moment.strftime("%y%m%d%H%M%SZ").encode("ascii"))
    text = f"{moment.year:04d}" + moment.strftime("%m%d%H%M%SZ")  # %Y is not 4 digits < 1000
    return tlv(GENERALIZED_TIME, text.encode("ascii"))


# -- PEM (RFC 7468) -----------------------------------------------------------------------------

_LABEL = re.compile(rb"[\x21-\x2c\x2e-\x7e](?:[- ]?[\x21-\x2c\x2e-\x7e])*")


def pem_encode(label: str, der: bytes) -> bytes:
    """Armour ``der`` as PEM with 64-character lines (RFC 7468 §2, §3 strict form)."""
    text = base64.b64encode(bytes(der))
    lines = [text[i : i + 64] for i in range(0, len(text), 64)]
    head = f"-----BEGIN {label}-----\n".encode("ascii")
    tail = f"-----END {label}-----\n".encode("ascii")
    return head + b"".join(line + b"\n" for line in lines) + tail


def pem_decode(data: bytes | str, label: str) -> bytes:
    """The DER inside the first PEM block labelled ``label`` (RFC 7468 §2).

    Text before and after the block is ignored (RFC 7468 §5.2 explanatory text); inside it,
    whitespace between base64 characters is allowed, but nothing else.

    Raises:
        DERError: no such block, an unfinished block, or invalid base64.
    """
    if isinstance(data, str):
        try:
            data = data.encode("ascii")
        except UnicodeEncodeError:
            raise DERError("PEM text is ASCII") from None
    if not isinstance(data, bytes | bytearray | memoryview):
        raise DERError("PEM input is bytes or str")
    data = bytes(data)
    if len(data) > 2 * MAX_SIZE:
        raise DERError("PEM text too large")
    head = b"-----BEGIN " + label.encode("ascii") + b"-----"
    tail = b"-----END " + label.encode("ascii") + b"-----"
    start = data.find(head)
    if start < 0:
        raise DERError(f"no PEM block labelled {label!r}")
    if start > 0 and data[start - 1 : start] not in (b"\n", b"\r"):
        raise DERError("PEM boundary does not start a line")
    body_start = start + len(head)
    end = data.find(tail, body_start)
    if end < 0:
        raise DERError(f"unfinished PEM block {label!r}")
    body = b"".join(data[body_start:end].split())
    try:
        der = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raise DERError("invalid base64 in a PEM block") from None
    if not der:
        raise DERError("empty PEM block")
    return der


def pem_labels(data: bytes) -> list[str]:
    """The labels of the PEM blocks in ``data`` (e.g. ``["EC PRIVATE KEY"]``), in order."""
    found = re.findall(rb"-----BEGIN (" + _LABEL.pattern + rb")-----", bytes(data))
    return [label.decode("ascii") for label in found]
