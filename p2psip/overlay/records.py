"""Signed AoR records: what the overlay stores under the hash of an address-of-record.

A record says: *this AoR is reachable at these contacts until T, signed by key K, version S*.
One AoR may have several devices, so the stored value (an :class:`AoRRecord`) holds one
:class:`DeviceEntry` per device, each signed and versioned on its own.

Storing nodes validate before they store (:func:`merge_for_store`) and readers validate again
(:func:`select_valid`); both are pure functions of their arguments, with ``now`` passed in.

Two encodings, both exact and documented here:

**Entry signature** (what Ed25519 signs, :meth:`DeviceEntry.signed_payload`). With
``lp(x) = u32be(len(x)) || x``, strings UTF-8 (in practice ASCII) and integers unsigned
big-endian::

    b"p2psip-aor-entry-v1\\x00"              domain separation
    || lp(aor) || lp(device_id)              binds the signature to this AoR and device
    || u64be(expires) || u64be(seq)          expires = whole seconds since the Unix epoch
    || lp(public_key)
    || (b"\\x00" | b"\\x01" || lp(certificate))
    || u32be(number of contacts)
    || for each contact, in order: lp(uri) || lp(transport) || u32be(priority) || lp(device_id)

**Stored value** (:meth:`AoRRecord.to_bytes`): canonical JSON - keys sorted, no whitespace,
ASCII only, integers only (no floats), binary fields in standard padded base64, entries sorted
by device id, a contact's device id implied by its entry::

    {"aor":"sip:alice@p2p.example","entries":[{"cert":null,"contacts":[{"priority":0,
     "transport":"udp","uri":"sip:alice@192.0.2.1:5060"}],"device":"laptop",
     "expires":1700003600,"key":"<b64 32 bytes>","seq":7,"sig":"<b64 64 bytes>"}],"v":1}

:func:`parse_record` accepts exactly that form and nothing else (a value that would not
re-encode to the same bytes is refused), so one record has one encoding.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import ipaddress
import json
import math
import re
import string
import struct
from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass
from typing import Any

from p2psip.errors import InvalidAoR, RecordError
from p2psip.overlay.identity import Identity, fingerprint_of

__all__ = [
    "DEFAULT_MAX_LIFETIME",
    "DEFAULT_MAX_RECORD_SIZE",
    "AoRCertificate",
    "AoRRecord",
    "Contact",
    "DeviceEntry",
    "OverlayCA",
    "PolicyDecision",
    "PolicyMode",
    "RecordPolicy",
    "StoreDecision",
    "dht_key",
    "merge_for_store",
    "normalize_aor",
    "parse_record",
    "select_valid",
    "sign_entry",
    "verify_entry",
]

#: The kademlia package's UDP RPC carries about 8 KB; the stored value must fit in one RPC.
DEFAULT_MAX_RECORD_SIZE = 8000
#: An entry may not claim to live longer than this (seconds) from the time it is checked.
DEFAULT_MAX_LIFETIME = 7 * 24 * 3600.0
#: Tolerated clock difference (seconds) between publisher, CA and storing node.
DEFAULT_CLOCK_SKEW = 300.0
DEFAULT_MAX_DEVICES = 32

FORMAT_VERSION = 1
ENTRY_SIGNING_PREFIX = b"p2psip-aor-entry-v1\x00"
CERT_SIGNING_PREFIX = b"p2psip-aor-cert-v1\x00"
CERT_MAGIC = b"P2C1"
DHT_KEY_PREFIX = b"p2psip-aor:"

MAX_AOR_LENGTH = 256
MAX_URI_LENGTH = 256
MAX_DEVICE_ID_LENGTH = 128
MAX_CONTACTS = 16
MAX_CERTIFICATE_SIZE = 1024
MAX_PRIORITY = 0xFFFF
MAX_U63 = 2**63 - 1
TRANSPORTS = frozenset({"udp", "tcp", "tls", "sctp", "ws", "wss"})

_PUBLIC_KEY_SIZE = 32
_SIGNATURE_SIZE = 64
_SCHEMES = ("sip", "sips")
# RFC 3261 §25.1: user = 1*( unreserved / escaped / user-unreserved )
_UNRESERVED = frozenset(string.ascii_letters + string.digits + "-_.!~*'()")
_USER_CHARS = _UNRESERVED | frozenset("&=+$,;?/")
_HEX = frozenset(string.hexdigits)
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")
_DEVICE_ID = re.compile(r"[A-Za-z0-9._:~+-]+\Z")
# printable ASCII without space, quotes, backslash or angle brackets: no JSON escaping needed
_URI = re.compile(r"(?i:sips?):[!#-;=?-\[\]-~]+\Z")
_U64 = struct.Struct(">Q")
_U32 = struct.Struct(">I")


# -- AoRs and DHT keys -----------------------------------------------------------------------------


def normalize_aor(aor: str) -> str:
    """Return the canonical form of an address-of-record: ``scheme:user@host``.

    The scheme and host are lower-cased (RFC 3261 §19.1.4), the user part keeps its case but
    escapes of unreserved characters are decoded and the others upper-cased; port, parameters
    and headers are removed. A missing scheme means ``sip:``. ``sip:`` and ``sips:`` AoRs stay
    distinct (RFC 3261 §19.1.4: they are never equivalent).

    Args:
        aor: e.g. ``"sip:alice@p2p.example"``, ``"alice@p2p.example"`` or
            ``"<SIP:Alice@P2P.Example:5060;transport=tcp>"``.

    Returns:
        e.g. ``"sip:Alice@p2p.example"``.

    Raises:
        InvalidAoR: not a ``sip``/``sips`` URI with a user and a valid host.
    """
    if not isinstance(aor, str):
        raise InvalidAoR("an AoR is a string")
    text = aor.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1]
    if not text or len(text) > MAX_AOR_LENGTH:
        raise InvalidAoR(f"AoR must be 1..{MAX_AOR_LENGTH} characters")
    if not text.isascii() or any(c <= " " or c == "\x7f" for c in text):
        raise InvalidAoR(f"AoR {aor!r} contains spaces, controls or non-ASCII characters")
    scheme, colon, rest = text.partition(":")
    if colon and scheme.lower() in _SCHEMES:
        scheme = scheme.lower()
    elif "@" in scheme:  # "alice@host" or "alice@host:port"
        scheme, rest = "sip", text
    else:
        raise InvalidAoR(f"AoR {aor!r} is not a sip: or sips: URI")
    user, at, hostport = rest.partition("@")
    if not at or not user:
        raise InvalidAoR(f"AoR {aor!r} has no user part")
    hostport = re.split(r"[;?]", hostport, maxsplit=1)[0]
    return f"{scheme}:{_normalize_user(user, aor)}@{_normalize_host(hostport, aor)}"


def _normalize_user(user: str, aor: str) -> str:
    out = []
    i = 0
    while i < len(user):
        char = user[i]
        if char == "%":
            pair = user[i + 1 : i + 3]
            if len(pair) != 2 or not set(pair) <= _HEX:
                raise InvalidAoR(f"AoR {aor!r} has a broken %-escape")
            decoded = chr(int(pair, 16))
            out.append(decoded if decoded in _UNRESERVED else "%" + pair.upper())
            i += 3
            continue
        if char not in _USER_CHARS:
            raise InvalidAoR(f"AoR {aor!r}: {char!r} is not allowed in the user part")
        out.append(char)
        i += 1
    return "".join(out)


def _normalize_host(hostport: str, aor: str) -> str:
    if hostport.startswith("["):
        inner, bracket, port = hostport[1:].partition("]")
        try:
            host = f"[{ipaddress.IPv6Address(inner).compressed}]"
        except ValueError:
            raise InvalidAoR(f"AoR {aor!r} has an invalid IPv6 reference") from None
        if not bracket or (port and not port.startswith(":")):
            raise InvalidAoR(f"AoR {aor!r} has an invalid IPv6 reference")
        port = port[1:] if port else None
    else:
        host, colon, port_text = hostport.partition(":")
        port = port_text if colon else None
        host = host.lower()
        if host.endswith("."):
            host = host[:-1]
        labels = host.split(".")
        if not host or len(host) > 253:
            raise InvalidAoR(f"AoR {aor!r} has no valid host")
        if all(label.isdigit() for label in labels):
            try:
                host = str(ipaddress.IPv4Address(host))
            except ValueError:
                raise InvalidAoR(f"AoR {aor!r} has an invalid IPv4 address") from None
        elif not all(_LABEL.match(label) for label in labels) or labels[-1].isdigit():
            raise InvalidAoR(f"AoR {aor!r} has an invalid host name")
    if port is not None and not (
        port.isdigit() and port.isascii() and len(port) <= 5 and 0 < int(port) <= 65535
    ):
        raise InvalidAoR(f"AoR {aor!r} has an invalid port")
    return host


def dht_key(aor: str) -> bytes:
    """The 20-byte DHT key under which an AoR's record is stored.

    ``SHA-1(b"p2psip-aor:" || normalize_aor(aor))``. Twenty bytes because Kademlia node ids
    and keys are 160 bits (and the kademlia package uses SHA-1 for them). SHA-1's known
    weakness is collisions, not preimages: a collision would only make two AoRs share a slot,
    whose values still name their AoR, are checked against this key and are signed, so it
    cannot forge or hijack a record. The prefix keeps AoR keys apart from any other use of the
    same DHT.

    Raises:
        InvalidAoR: see :func:`normalize_aor`.
    """
    return hashlib.sha1(DHT_KEY_PREFIX + normalize_aor(aor).encode("ascii")).digest()


# -- entries ---------------------------------------------------------------------------------------


def _check_int(value: object, name: str, high: int) -> int:
    if type(value) is not int or not 0 <= value <= high:
        raise RecordError(f"{name} must be an integer in 0..{high}")
    return value


def _check_bytes(value: object, name: str, size: int) -> bytes:
    if type(value) is not bytes or len(value) != size:
        raise RecordError(f"{name} must be {size} bytes")
    return value


def _check_device_id(value: object) -> str:
    if (
        type(value) is not str
        or not 0 < len(value) <= MAX_DEVICE_ID_LENGTH
        or not _DEVICE_ID.match(value)
    ):
        raise RecordError(
            f"device id must be 1..{MAX_DEVICE_ID_LENGTH} characters of A-Z a-z 0-9 . _ : ~ + -"
        )
    return value


@dataclass(frozen=True)
class Contact:
    """One way to reach a device.

    Attributes:
        uri: a ``sip:``/``sips:`` URI (printable ASCII, no spaces, quotes or angle brackets).
        transport: one of ``udp``, ``tcp``, ``tls``, ``sctp``, ``ws``, ``wss``.
        priority: 0..65535; as for DNS SRV (RFC 2782), lower values are tried first.
        device_id: the device this contact belongs to (equal to its entry's device id).
    """

    uri: str
    transport: str
    priority: int
    device_id: str

    def __post_init__(self) -> None:
        if type(self.uri) is not str or len(self.uri) > MAX_URI_LENGTH or not _URI.match(self.uri):
            raise RecordError("contact URI must be a sip:/sips: URI of printable ASCII")
        if type(self.transport) is not str or self.transport not in TRANSPORTS:
            raise RecordError(f"contact transport must be one of {sorted(TRANSPORTS)}")
        _check_int(self.priority, "contact priority", MAX_PRIORITY)
        _check_device_id(self.device_id)


@dataclass(frozen=True)
class DeviceEntry:
    """One device's signed registration for an AoR.

    Construction checks the shape of every field (raising :class:`RecordError`), not the
    signature: use :func:`sign_entry` to make one and :func:`verify_entry` to check one.

    Attributes:
        aor: the normalised AoR (see :func:`normalize_aor`).
        device_id: names the device within the AoR (e.g. a ``urn:uuid:...`` instance id).
        contacts: how to reach it; empty for a tombstone, which withdraws the device.
        expires: absolute expiry, whole seconds since the Unix epoch.
        seq: version, strictly increasing per device.
        public_key: the signer's raw Ed25519 key.
        signature: Ed25519 over :meth:`signed_payload`.
        certificate: an :class:`AoRCertificate` (bytes) in enrolled overlays, else None.
    """

    aor: str
    device_id: str
    contacts: tuple[Contact, ...]
    expires: int
    seq: int
    public_key: bytes
    signature: bytes
    certificate: bytes | None = None

    def __post_init__(self) -> None:
        if type(self.aor) is not str:
            raise RecordError("entry AoR must be a string")
        if normalize_aor(self.aor) != self.aor:
            raise RecordError(f"entry AoR {self.aor!r} is not in normal form")
        _check_device_id(self.device_id)
        if type(self.contacts) is not tuple or len(self.contacts) > MAX_CONTACTS:
            raise RecordError(f"contacts must be a tuple of at most {MAX_CONTACTS}")
        seen = set()
        for contact in self.contacts:
            if type(contact) is not Contact:
                raise RecordError("contacts must be Contact objects")
            if contact.device_id != self.device_id:
                raise RecordError("a contact's device id must be its entry's device id")
            if (contact.uri, contact.transport) in seen:
                raise RecordError(f"duplicate contact {contact.uri} ({contact.transport})")
            seen.add((contact.uri, contact.transport))
        _check_int(self.expires, "expires", MAX_U63)
        _check_int(self.seq, "seq", MAX_U63)
        _check_bytes(self.public_key, "public key", _PUBLIC_KEY_SIZE)
        _check_bytes(self.signature, "signature", _SIGNATURE_SIZE)
        if self.certificate is not None and (
            type(self.certificate) is not bytes
            or not 0 < len(self.certificate) <= MAX_CERTIFICATE_SIZE
        ):
            raise RecordError(f"certificate must be 1..{MAX_CERTIFICATE_SIZE} bytes or None")

    @property
    def is_tombstone(self) -> bool:
        """True for a withdrawal: a signed entry with no contacts."""
        return not self.contacts

    @property
    def fingerprint(self) -> str:
        """Fingerprint of the signing key (see :func:`fingerprint_of`)."""
        return fingerprint_of(self.public_key)

    def signed_payload(self) -> bytes:
        """The exact bytes the signature covers (see the module docstring)."""
        return _entry_payload(
            self.aor,
            self.device_id,
            self.contacts,
            self.expires,
            self.seq,
            self.public_key,
            self.certificate,
        )


def _lp(data: bytes) -> bytes:
    return _U32.pack(len(data)) + data


def _entry_payload(
    aor: str,
    device_id: str,
    contacts: tuple[Contact, ...],
    expires: int,
    seq: int,
    public_key: bytes,
    certificate: bytes | None,
) -> bytes:
    parts = [
        ENTRY_SIGNING_PREFIX,
        _lp(aor.encode("utf-8")),
        _lp(device_id.encode("utf-8")),
        _U64.pack(expires),
        _U64.pack(seq),
        _lp(public_key),
        b"\x00" if certificate is None else b"\x01" + _lp(certificate),
        _U32.pack(len(contacts)),
    ]
    for contact in contacts:
        parts += [
            _lp(contact.uri.encode("utf-8")),
            _lp(contact.transport.encode("utf-8")),
            _U32.pack(contact.priority),
            _lp(contact.device_id.encode("utf-8")),
        ]
    return b"".join(parts)


def sign_entry(
    identity: Identity,
    aor: str,
    device_id: str,
    contacts: Iterable[Contact],
    expires: float,
    seq: int,
    certificate: bytes | None = None,
) -> DeviceEntry:
    """Make a signed entry for one device of an AoR.

    Args:
        identity: the signing key (the AoR's key in open overlays, the certified key in
            enrolled ones).
        aor: the AoR, normalised here.
        device_id: the device's id within the AoR.
        contacts: its contacts, in preference order; empty to withdraw the device.
        expires: absolute expiry, seconds since the Unix epoch (rounded down to a second).
        seq: version; must exceed the device's previous one (a clock-based value such as
            ``int(now * 1000)`` is a simple way to keep it increasing).
        certificate: the AoR certificate from :meth:`OverlayCA.issue`, for enrolled overlays.

    Returns:
        The signed entry.

    Raises:
        RecordError: a field is malformed (InvalidAoR for the AoR).
    """
    if (
        isinstance(expires, bool)
        or not isinstance(expires, int | float)
        or not math.isfinite(expires)
    ):
        raise RecordError("expires must be a finite number of seconds")
    normalized = normalize_aor(aor)
    contacts = tuple(contacts)
    expires_s = math.floor(expires)
    # build once unsigned to check every field before signing
    unsigned = DeviceEntry(
        aor=normalized,
        device_id=device_id,
        contacts=contacts,
        expires=expires_s,
        seq=seq,
        public_key=identity.public_key_bytes,
        signature=bytes(_SIGNATURE_SIZE),
        certificate=certificate,
    )
    signature = identity.sign(unsigned.signed_payload())
    return DeviceEntry(
        aor=normalized,
        device_id=device_id,
        contacts=contacts,
        expires=expires_s,
        seq=seq,
        public_key=identity.public_key_bytes,
        signature=signature,
        certificate=certificate,
    )


def verify_entry(entry: DeviceEntry) -> bool:
    """Check an entry's signature against its own public key; never raises.

    This proves only that the key holder wrote the entry. Whether that key may speak for the
    AoR, and whether the entry is current, is :class:`RecordPolicy`'s question.
    """
    try:
        return Identity.verify(entry.public_key, entry.signed_payload(), entry.signature)
    except Exception:  # a hand-built object with wrong field types
        return False


# -- enrolled overlays: AoR certificates -----------------------------------------------------------


@dataclass(frozen=True)
class AoRCertificate:
    """An overlay CA's statement "``public_key`` may speak for ``aor`` during the validity".

    RELOAD (RFC 6940 §13.3) uses X.509 for this; here it is a small Ed25519-signed structure.
    Wire form (:meth:`to_bytes`)::

        b"P2C1" || u64be(not_before) || u64be(not_after) || public_key (32)
        || signature (64) || u16be(len(aor)) || aor (ASCII, normalised)

    The CA signs ``b"p2psip-aor-cert-v1\\x00" || lp(aor) || lp(public_key) ||
    u64be(not_before) || u64be(not_after)``.

    Attributes:
        aor: the normalised AoR.
        public_key: the certified raw Ed25519 key.
        not_before: start of validity, seconds since the Unix epoch.
        not_after: end of validity, seconds since the Unix epoch.
        signature: the CA's Ed25519 signature.
    """

    aor: str
    public_key: bytes
    not_before: int
    not_after: int
    signature: bytes

    def signed_payload(self) -> bytes:
        """The exact bytes the CA signs."""
        return (
            CERT_SIGNING_PREFIX
            + _lp(self.aor.encode("ascii"))
            + _lp(self.public_key)
            + _U64.pack(self.not_before)
            + _U64.pack(self.not_after)
        )

    def to_bytes(self) -> bytes:
        """The wire form (see the class docstring)."""
        aor = self.aor.encode("ascii")
        return (
            CERT_MAGIC
            + _U64.pack(self.not_before)
            + _U64.pack(self.not_after)
            + self.public_key
            + self.signature
            + struct.pack(">H", len(aor))
            + aor
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> AoRCertificate:
        """Parse the wire form strictly.

        Raises:
            RecordError: anything but an exact, well-formed certificate.
        """
        fixed = len(CERT_MAGIC) + 16 + _PUBLIC_KEY_SIZE + _SIGNATURE_SIZE + 2
        if type(data) is not bytes or len(data) < fixed or not data.startswith(CERT_MAGIC):
            raise RecordError("malformed AoR certificate")
        not_before, not_after = struct.unpack_from(">QQ", data, 4)
        public_key = data[20:52]
        signature = data[52:116]
        (length,) = struct.unpack_from(">H", data, 116)
        if len(data) != fixed + length:
            raise RecordError("malformed AoR certificate: wrong length")
        try:
            aor = data[fixed:].decode("ascii")
        except UnicodeDecodeError:
            raise RecordError("malformed AoR certificate: non-ASCII AoR") from None
        if normalize_aor(aor) != aor:
            raise RecordError("malformed AoR certificate: AoR not in normal form")
        if not_before > MAX_U63 or not_after > MAX_U63 or not_after <= not_before:
            raise RecordError("malformed AoR certificate: bad validity")
        return cls(aor, public_key, not_before, not_after, signature)

    def verify(self, ca_public_key: bytes) -> bool:
        """True when the CA with ``ca_public_key`` signed this certificate; never raises."""
        try:
            return Identity.verify(ca_public_key, self.signed_payload(), self.signature)
        except Exception:
            return False


class OverlayCA:
    """The enrolment authority of an enrolled overlay: certifies AoR -> key.

    Example:
        >>> ca = OverlayCA(Identity.generate())
        >>> cert = ca.issue("sip:alice@p2p.example", alice.public_key_bytes, now + 30 * 86400)
        >>> policy = RecordPolicy.enrolled(ca.public_key_bytes)
    """

    def __init__(self, identity: Identity) -> None:
        """Args:
        identity: the CA's Ed25519 key; its public key is configured in every node.
        """
        self._identity = identity

    @property
    def public_key_bytes(self) -> bytes:
        """The CA's raw public key, for :meth:`RecordPolicy.enrolled`."""
        return self._identity.public_key_bytes

    def issue(self, aor: str, public_key: bytes, not_after: float, not_before: float = 0) -> bytes:
        """Certify that ``public_key`` may sign records for ``aor``.

        Args:
            aor: the AoR (normalised here).
            public_key: the holder's raw Ed25519 key.
            not_after: end of validity, seconds since the Unix epoch (rounded down).
            not_before: start of validity (rounded down); 0 = from the beginning of time.

        Returns:
            The certificate bytes, to pass to :func:`sign_entry` as ``certificate``.

        Raises:
            RecordError: malformed arguments.
        """
        if type(public_key) is not bytes or len(public_key) != _PUBLIC_KEY_SIZE:
            raise RecordError("public key must be 32 bytes")
        for value in (not_after, not_before):
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or value < 0
            ):
                raise RecordError("validity bounds are finite, non-negative seconds")
        start, end = math.floor(not_before), math.floor(not_after)
        if not start < end <= MAX_U63:
            raise RecordError("not_after must be later than not_before")
        unsigned = AoRCertificate(normalize_aor(aor), public_key, start, end, b"")
        signature = self._identity.sign(unsigned.signed_payload())
        return AoRCertificate(unsigned.aor, unsigned.public_key, start, end, signature).to_bytes()


# -- the stored value ------------------------------------------------------------------------------


@dataclass(frozen=True)
class AoRRecord:
    """The value stored under :func:`dht_key`: an AoR and one entry per device.

    Entries are kept sorted by device id; two entries for one device are refused.

    Attributes:
        aor: the normalised AoR.
        entries: the device entries, each for ``aor``.
    """

    aor: str
    entries: tuple[DeviceEntry, ...]

    def __post_init__(self) -> None:
        if type(self.aor) is not str or normalize_aor(self.aor) != self.aor:
            raise RecordError("record AoR is not in normal form")
        entries = tuple(self.entries)
        if any(type(e) is not DeviceEntry for e in entries):
            raise RecordError("record entries must be DeviceEntry objects")
        if any(e.aor != self.aor for e in entries):
            raise RecordError("every entry of a record must be for the record's AoR")
        ordered = tuple(sorted(entries, key=lambda e: e.device_id))
        if len({e.device_id for e in ordered}) != len(ordered):
            raise RecordError("a record holds one entry per device")
        object.__setattr__(self, "entries", ordered)

    def entry(self, device_id: str) -> DeviceEntry | None:
        """The entry of ``device_id``, if any."""
        for entry in self.entries:
            if entry.device_id == device_id:
                return entry
        return None

    def to_bytes(self, max_size: int = DEFAULT_MAX_RECORD_SIZE) -> bytes:
        """Canonical JSON (see the module docstring).

        Raises:
            RecordError: the encoding exceeds ``max_size`` bytes.
        """
        data = _encode(self)
        if len(data) > max_size:
            raise RecordError(f"oversize: record is {len(data)} bytes, limit {max_size}")
        return data


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _encode(record: AoRRecord) -> bytes:
    obj = {
        "v": FORMAT_VERSION,
        "aor": record.aor,
        "entries": [
            {
                "device": e.device_id,
                "contacts": [
                    {"uri": c.uri, "transport": c.transport, "priority": c.priority}
                    for c in e.contacts
                ],
                "expires": e.expires,
                "seq": e.seq,
                "key": _b64(e.public_key),
                "sig": _b64(e.signature),
                "cert": None if e.certificate is None else _b64(e.certificate),
            }
            for e in record.entries
        ],
    }
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def _reject_constant(name: str) -> Any:
    raise RecordError(f"JSON constant {name} is not allowed")


def _reject_float(text: str) -> Any:
    raise RecordError("floating-point numbers are not allowed")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise RecordError("duplicate JSON key")
    return result


def _object(value: object, keys: frozenset[str], where: str) -> dict[str, Any]:
    if type(value) is not dict or set(value) != keys:
        raise RecordError(f"{where} must be an object with keys {sorted(keys)}")
    return value


def _string(value: object, where: str) -> str:
    if type(value) is not str:
        raise RecordError(f"{where} must be a string")
    return value


def _base64(value: object, where: str) -> bytes:
    text = _string(value, where)
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise RecordError(f"{where} is not base64") from None
    if _b64(data) != text:
        raise RecordError(f"{where} is not canonical base64")
    return data


_RECORD_KEYS = frozenset({"v", "aor", "entries"})
_ENTRY_KEYS = frozenset({"device", "contacts", "expires", "seq", "key", "sig", "cert"})
_CONTACT_KEYS = frozenset({"uri", "transport", "priority"})


def _record_from_json(obj: object) -> AoRRecord:
    top = _object(obj, _RECORD_KEYS, "record")
    if type(top["v"]) is not int or top["v"] != FORMAT_VERSION:
        raise RecordError(f"unsupported record version {top['v']!r}")
    aor = _string(top["aor"], "aor")
    if type(top["entries"]) is not list or not top["entries"]:
        raise RecordError("entries must be a non-empty list")
    entries = []
    for raw in top["entries"]:
        item = _object(raw, _ENTRY_KEYS, "entry")
        device_id = _check_device_id(item["device"])
        if type(item["contacts"]) is not list:
            raise RecordError("contacts must be a list")
        contacts = []
        for raw_contact in item["contacts"]:
            contact = _object(raw_contact, _CONTACT_KEYS, "contact")
            contacts.append(
                Contact(
                    uri=_string(contact["uri"], "contact uri"),
                    transport=_string(contact["transport"], "contact transport"),
                    priority=contact["priority"],
                    device_id=device_id,
                )
            )
        cert = item["cert"]
        entries.append(
            DeviceEntry(
                aor=aor,
                device_id=device_id,
                contacts=tuple(contacts),
                expires=item["expires"],
                seq=item["seq"],
                public_key=_base64(item["key"], "key"),
                signature=_base64(item["sig"], "sig"),
                certificate=None if cert is None else _base64(cert, "cert"),
            )
        )
    return AoRRecord(aor=aor, entries=tuple(entries))


def parse_record(data: bytes, max_size: int = DEFAULT_MAX_RECORD_SIZE) -> AoRRecord:
    """Parse a stored value strictly; signatures are *not* checked here.

    Args:
        data: the value as received from the DHT.
        max_size: values longer than this are refused before parsing.

    Returns:
        The record.

    Raises:
        RecordError: on anything but the exact canonical encoding of a well-formed record
            (wrong type, shape, size, encoding, ...). No other exception escapes, whatever
            the input.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise RecordError("a record is bytes")
    raw = bytes(data)
    if len(raw) > max_size:
        raise RecordError(f"oversize: record is {len(raw)} bytes, limit {max_size}")
    try:
        text = raw.decode("ascii")
        obj = json.loads(
            text,
            parse_float=_reject_float,
            parse_constant=_reject_constant,
            object_pairs_hook=_unique_keys,
        )
        record = _record_from_json(obj)
    except RecordError:
        raise
    except (ValueError, TypeError, RecursionError, MemoryError) as exc:
        # UnicodeDecodeError and JSONDecodeError are ValueErrors; deep nesting: RecursionError
        raise RecordError(f"malformed record: {type(exc).__name__}") from None
    if _encode(record) != raw:
        raise RecordError("record is not in canonical form")
    return record


# -- policy ----------------------------------------------------------------------------------------


class PolicyMode(enum.Enum):
    """Who may speak for an AoR."""

    #: The first key to claim an AoR pins it (trust on first use); later entries must use it.
    OPEN = "open"
    #: An overlay CA certifies AoR -> key (RELOAD-style enrolment, RFC 6940 §13.3).
    ENROLLED = "enrolled"


@dataclass(frozen=True)
class PolicyDecision:
    """The verdict on one entry.

    Attributes:
        accepted: True when the entry may be stored or used.
        reason: ``"ok"`` or why it was refused; starts with a stable word (see
            :class:`StoreDecision`).
    """

    accepted: bool
    reason: str


_OK = PolicyDecision(True, "ok")


@dataclass(frozen=True)
class RecordPolicy:
    """Validation rules for AoR records; pure, ``now`` is always passed in.

    Attributes:
        mode: OPEN (key pinning) or ENROLLED (CA certificates).
        ca_public_key: the overlay CA's raw Ed25519 key; required in ENROLLED mode.
        max_lifetime: entries may not expire later than ``now + max_lifetime + clock_skew``.
        max_record_size: largest stored value, in bytes.
        max_devices: most device entries in one stored value.
        clock_skew: tolerated clock difference, seconds.
        replay_guard: after an entry expires, the storing node keeps it this many more seconds
            (invisible to readers) so that an older, longer-lived entry of the same device
            cannot be replayed once the newer one has expired. 0 drops expired entries at
            once. The default, ``max_lifetime``, covers every entry an honest signer made.
    """

    mode: PolicyMode = PolicyMode.OPEN
    ca_public_key: bytes | None = None
    max_lifetime: float = DEFAULT_MAX_LIFETIME
    max_record_size: int = DEFAULT_MAX_RECORD_SIZE
    max_devices: int = DEFAULT_MAX_DEVICES
    clock_skew: float = DEFAULT_CLOCK_SKEW
    replay_guard: float = DEFAULT_MAX_LIFETIME

    def __post_init__(self) -> None:
        if not isinstance(self.mode, PolicyMode):
            raise RecordError("mode must be a PolicyMode")
        if self.mode is PolicyMode.ENROLLED:
            if type(self.ca_public_key) is not bytes or len(self.ca_public_key) != 32:
                raise RecordError("an enrolled overlay needs the CA's 32-byte public key")
        elif self.ca_public_key is not None:
            raise RecordError("an open overlay has no CA key")
        if self.max_lifetime <= 0 or self.max_record_size <= 0 or self.max_devices <= 0:
            raise RecordError("limits must be positive")
        if self.clock_skew < 0 or self.replay_guard < 0:
            raise RecordError("clock_skew and replay_guard must not be negative")

    @classmethod
    def open(cls, **limits: Any) -> RecordPolicy:
        """An open overlay: first key wins (``limits`` as the class attributes)."""
        return cls(mode=PolicyMode.OPEN, **limits)

    @classmethod
    def enrolled(cls, ca_public_key: bytes, **limits: Any) -> RecordPolicy:
        """An enrolled overlay trusting the CA with ``ca_public_key``."""
        return cls(mode=PolicyMode.ENROLLED, ca_public_key=ca_public_key, **limits)

    def accept(
        self, aor: str, new_entry: DeviceEntry, pinned_key: bytes | None, now: float
    ) -> PolicyDecision:
        """Decide whether one entry may speak for ``aor`` at ``now``.

        Checks, cheapest first: the entry is for ``aor``; it has not expired and does not
        expire too far ahead; OPEN: its key is ``pinned_key`` (if any); its signature;
        ENROLLED: its AoR certificate (signed by the CA, for this AoR and key, valid at
        ``now`` and not ending before the entry does). In ENROLLED mode ``pinned_key`` is
        ignored: the CA decides, which allows key rotation.

        Args:
            aor: the AoR the entry is offered for.
            new_entry: the entry.
            pinned_key: the key the AoR is pinned to (OPEN mode), or None.
            now: current time, seconds since the Unix epoch.

        Returns:
            The decision; never raises on a hostile entry.
        """
        try:
            target = normalize_aor(aor)
        except InvalidAoR:
            return PolicyDecision(False, f"key-mismatch: {aor!r} is not an AoR")
        if new_entry.aor != target:
            return PolicyDecision(False, f"key-mismatch: entry is for {new_entry.aor}")
        if new_entry.expires <= now:
            return PolicyDecision(False, f"expired: device {new_entry.device_id}")
        timing = self._check_lifetime(new_entry, now)
        if timing is not None:
            return timing
        return self._check_authority(target, new_entry, pinned_key, now)

    def _check_lifetime(self, entry: DeviceEntry, now: float) -> PolicyDecision | None:
        if entry.expires > now + self.max_lifetime + self.clock_skew:
            return PolicyDecision(
                False,
                f"lifetime: device {entry.device_id} expires {entry.expires - now:.0f} s "
                f"ahead, limit {self.max_lifetime:.0f} s",
            )
        return None

    def _check_authority(
        self, aor: str, entry: DeviceEntry, pinned_key: bytes | None, now: float | None
    ) -> PolicyDecision:
        """Key, signature and certificate; time checks of the certificate only if ``now``."""
        if (
            self.mode is PolicyMode.OPEN
            and pinned_key is not None
            and entry.public_key != pinned_key
        ):
            return PolicyDecision(
                False,
                f"pinned-key: {aor} is pinned to {fingerprint_of(pinned_key)}, "
                f"not {entry.fingerprint}",
            )
        if not verify_entry(entry):
            return PolicyDecision(False, f"bad-signature: device {entry.device_id}")
        if self.mode is PolicyMode.ENROLLED:
            return self._check_certificate(aor, entry, now)
        return _OK

    def _check_certificate(self, aor: str, entry: DeviceEntry, now: float | None) -> PolicyDecision:
        if entry.certificate is None:
            return PolicyDecision(False, "certificate: missing (enrolled overlay)")
        try:
            cert = AoRCertificate.from_bytes(entry.certificate)
        except RecordError as exc:
            return PolicyDecision(False, f"certificate: {exc}")
        assert self.ca_public_key is not None
        if not cert.verify(self.ca_public_key):
            return PolicyDecision(False, "certificate: not signed by the overlay CA")
        if cert.aor != aor:
            return PolicyDecision(False, f"certificate: issued for {cert.aor}, not {aor}")
        if cert.public_key != entry.public_key:
            return PolicyDecision(False, "certificate: certifies another key")
        if entry.expires > cert.not_after:
            return PolicyDecision(False, "certificate: the entry outlives its certificate")
        if now is not None:
            if now + self.clock_skew < cert.not_before:
                return PolicyDecision(False, "certificate: not yet valid")
            if now >= cert.not_after:
                return PolicyDecision(False, "certificate: expired")
        return _OK


# -- storing and reading ---------------------------------------------------------------------------


@dataclass(frozen=True)
class StoreDecision:
    """What a storing node does with an incoming value.

    Attributes:
        accepted: store ``value`` (True) or keep what is stored (False).
        value: the merged value to store, canonical bytes; None when refused.
        reason: ``"ok"`` (possibly with notes), or the refusal, starting with one of:
            ``malformed``, ``oversize``, ``key-mismatch``, ``expired``, ``lifetime``,
            ``pinned-key``, ``bad-signature``, ``certificate``, ``stale``, ``conflict``,
            ``too-many-devices``.
    """

    accepted: bool
    value: bytes | None
    reason: str


def _refuse(reason: str) -> StoreDecision:
    return StoreDecision(False, None, reason)


def merge_for_store(
    key: bytes,
    new: bytes,
    old: bytes | None,
    now: float,
    policy: RecordPolicy,
    pins: MutableMapping[str, bytes],
) -> StoreDecision:
    """Validate an incoming value and merge it with the stored one, per device.

    Refused as a whole: a malformed or oversize value, ``key != dht_key(aor)``, a value whose
    entries have all expired, and any live entry with a bad signature, too-far expiry, a key
    other than the pinned one (OPEN) or a bad certificate (ENROLLED).

    Merged per device: an entry replaces the stored one of its device only with a strictly
    higher ``seq``; the same seq with identical content is an idempotent accept; a lower seq
    ("stale") or the same seq with other content ("conflict") is ignored, and refused when no
    entry of the value is new. Expired entries are kept for ``policy.replay_guard`` seconds as
    replay guards (see :class:`RecordPolicy`), then dropped. A tombstone (no contacts) with a
    higher seq withdraws its device.

    OPEN mode: the AoR's pin is ``pins[aor]``, or else the key of the stored entries; on the
    first accepted store ``pins[aor]`` is set. The caller owns ``pins`` (and may persist or
    age it). ENROLLED mode neither reads nor writes ``pins``.

    Args:
        key: the DHT key the value is offered under.
        new: the incoming value.
        old: the value stored under ``key``, if any (trusted: it passed this function before).
        now: current time, seconds since the Unix epoch.
        policy: the overlay's rules.
        pins: AoR -> pinned raw public key.

    Returns:
        The decision; never raises on hostile input.
    """
    try:
        return _merge(key, new, old, now, policy, pins)
    except RecordError as exc:  # belt and braces: hostile input never raises
        return _refuse(f"malformed: {exc}")


def _merge(
    key: bytes,
    new: bytes,
    old: bytes | None,
    now: float,
    policy: RecordPolicy,
    pins: MutableMapping[str, bytes],
) -> StoreDecision:
    if not isinstance(new, bytes | bytearray | memoryview):
        return _refuse("malformed: a value is bytes")
    if len(new) > policy.max_record_size:
        return _refuse(f"oversize: {len(new)} bytes, limit {policy.max_record_size}")
    try:
        incoming = parse_record(new, policy.max_record_size)
    except RecordError as exc:
        return _refuse(f"malformed: {exc}")
    aor = incoming.aor
    if bytes(key) != dht_key(aor):
        return _refuse(f"key-mismatch: the key is not the DHT key of {aor}")

    stored: dict[str, DeviceEntry] = {}
    if old is not None:
        try:
            previous = parse_record(old, max(policy.max_record_size, len(old)))
        except (RecordError, TypeError):
            previous = None  # unreadable local state must not block the owner's updates
        if previous is not None:
            if previous.aor != aor:
                return _refuse(f"key-mismatch: the stored record is for {previous.aor}")
            stored = {
                e.device_id: e for e in previous.entries if e.expires + policy.replay_guard > now
            }

    open_mode = policy.mode is PolicyMode.OPEN
    pinned = pins.get(aor) if open_mode else None
    if open_mode and pinned is None and stored:
        stored_keys = {e.public_key for e in stored.values()}
        if len(stored_keys) == 1:
            pinned = next(iter(stored_keys))

    live = [e for e in incoming.entries if e.expires > now]
    retired = [e for e in incoming.entries if now - policy.replay_guard < e.expires <= now]
    if not live:
        return _refuse("expired: every entry of the value has expired")
    if open_mode and pinned is None and len({e.public_key for e in live}) > 1:
        return _refuse(f"pinned-key: the entries for {aor} are signed by different keys")
    for entry in live:
        decision = policy.accept(aor, entry, pinned, now)
        if not decision.accepted:
            return _refuse(decision.reason)
    key_in_use = pinned if pinned is not None else live[0].public_key
    guards = [
        e
        for e in retired
        if policy._check_authority(aor, e, key_in_use if open_mode else None, None).accepted
    ]

    merged = dict(stored)
    fresh = 0
    ignored: list[str] = []
    for entry in live:
        current = merged.get(entry.device_id)
        if current is None or entry.seq > current.seq:
            merged[entry.device_id] = entry
            fresh += 1
        elif entry.seq == current.seq and entry == current:
            continue  # idempotent re-store
        else:
            word = "conflict" if entry.seq == current.seq else "stale"
            ignored.append(
                f"{word}: device {entry.device_id} seq {entry.seq}, stored seq {current.seq}"
            )
    for entry in guards:  # expired entries only raise the bar for their device
        current = merged.get(entry.device_id)
        if current is None or entry.seq > current.seq:
            merged[entry.device_id] = entry
    if ignored and not fresh:
        return _refuse("; ".join(ignored))

    value = _fit(aor, merged, now, policy)
    if isinstance(value, StoreDecision):
        return value
    if open_mode and aor not in pins:
        pins[aor] = key_in_use
    reason = "ok" if not ignored else "ok; ignored " + "; ".join(ignored)
    return StoreDecision(True, value, reason)


def _fit(
    aor: str, merged: dict[str, DeviceEntry], now: float, policy: RecordPolicy
) -> bytes | StoreDecision:
    """Encode the merged entries, dropping replay guards (oldest first) to respect limits."""
    entries = sorted(merged.values(), key=lambda e: e.expires)
    guards = [e for e in entries if e.expires <= now]
    live = [e for e in entries if e.expires > now]
    if len(live) > policy.max_devices:
        return _refuse(f"too-many-devices: {len(live)} live devices, limit {policy.max_devices}")
    del guards[: max(0, len(guards) + len(live) - policy.max_devices)]
    while True:
        data = _encode(AoRRecord(aor, tuple(guards + live)))
        if len(data) <= policy.max_record_size:
            return data
        if not guards:
            return _refuse(
                f"oversize: merged value is {len(data)} bytes, limit {policy.max_record_size}"
            )
        guards.pop(0)


def select_valid(
    data: bytes,
    now: float,
    expected_aor: str,
    pinned_key: bytes | None = None,
    policy: RecordPolicy | None = None,
) -> list[DeviceEntry]:
    """Re-validate a value read from the DHT and return the usable device entries.

    Readers trust no storing node: every entry is checked again by ``policy`` (default: an
    open overlay). Tombstones, expired entries and invalid entries are left out. In an open
    overlay without ``pinned_key``, entries signed by more than one key give no answer at all
    (a storing node is lying about one of them); callers should pin the key they see and warn
    when it changes.

    Args:
        data: the value as read.
        now: current time, seconds since the Unix epoch.
        expected_aor: the AoR that was looked up.
        pinned_key: the key the caller has pinned for this AoR (OPEN mode), if any.
        policy: the overlay's rules.

    Returns:
        The valid live entries, sorted by device id; empty for a malformed value or a value
        for another AoR.

    Raises:
        InvalidAoR: ``expected_aor`` itself is not an AoR (a caller error).
    """
    rules = policy or RecordPolicy()
    aor = normalize_aor(expected_aor)
    try:
        record = parse_record(data, rules.max_record_size)
    except RecordError:
        return []
    if record.aor != aor:
        return []
    valid = [
        e
        for e in record.entries
        if not e.is_tombstone and rules.accept(aor, e, pinned_key, now).accepted
    ]
    if (
        rules.mode is PolicyMode.OPEN
        and pinned_key is None
        and len({e.public_key for e in valid}) > 1
    ):
        return []
    return valid
