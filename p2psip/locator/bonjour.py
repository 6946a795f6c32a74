"""Bonjour (mDNS/DNS-SD) for addresses-of-record, sans-IO: TXT records, names, the cache.

One DNS-SD service instance (RFC 6763) is published per AoR, device and contact::

    PTR     _p2psip._udp.local.          -> <instance>._p2psip._udp.local.
    SRV     <instance>._p2psip._udp.local. -> 0 0 5061 p2psip-1f2e3d4c5b6a.local.
    TXT     <instance>._p2psip._udp.local. -> txtvers=1 aor=sip:alice@p2p.example uri=...
                                              tp=tls pri=0 dev=dev1 fp=... pk=<base64>
    A/AAAA  p2psip-1f2e3d4c5b6a.local.     -> the contact's address

with ``<instance>`` = ``alice@p2p<U+2024>example (dev1, tls)`` (see :func:`instance_name`).

The service type is our own, ``_p2psip._udp.local.``, rather than the registered ``_sip._udp``:
the TXT keys above are p2psip's schema (RFC 6763 §7: the service name names the protocol *and*
its TXT keys), and browsing ``_sip._udp`` would pull every SIP phone and PBX on the link into
the cache only to be discarded. ``_udp`` is the RFC 6763 §7 label for "not TCP-only"; the
contact's real transport (udp, tcp, tls) is the ``tp`` key.

Everything read from the network is hostile input: :meth:`BonjourAdvert.from_txt` and
:meth:`BonjourDirectory.update` never raise, they ignore what they cannot use.
Bonjour answers are unauthenticated: ``fp``/``pk`` are exposed on the contacts so that the
caller can check them against the DHT record or a pinned key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import re
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from p2psip.errors import LocatorError
from p2psip.locator.base import LocatedContact, display_aor, normalize_aor_text
from p2psip.locator.static import contact_from_uri

__all__ = [
    "DEFAULT_SERVICE_TYPE",
    "TXT_VERSION",
    "BonjourAdvert",
    "BonjourDirectory",
    "DiscoveredService",
    "ServicePlan",
    "host_name",
    "instance_name",
    "plan_services",
    "service_type_is_valid",
]

DEFAULT_SERVICE_TYPE = "_p2psip._udp.local."
TXT_VERSION = "1"
TRANSPORTS = frozenset({"udp", "tcp", "tls"})
SOURCE = "bonjour"

MAX_LABEL_OCTETS = 63  # RFC 6763 §4.1.1, RFC 1035 §2.3.4
MAX_TXT_STRING = 255  # RFC 6763 §6.1: one length octet per string
MAX_TXT_OCTETS = 2048  # larger TXT records from the network are ignored (ours are < 800)
MAX_DEVICE_ID = 64
MAX_FINGERPRINT = 128
MAX_PUBLIC_KEY = 64
MAX_ADDRESSES = 4  # addresses kept per discovered service

#: stands in for "." in instance labels: python-zeroconf splits names on dots and cannot escape
#: one inside a label (RFC 6763 §4.3), so a dotted AoR would become several labels on the wire
DOT_STAND_IN = "\u2024"  # ONE DOT LEADER
_TEXT_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # C0, DEL, C1
_FINGERPRINT = re.compile(r"[\x21-\x7e]+")
_PRIORITY = re.compile(r"[0-9]{1,5}")
_SERVICE_TYPE = re.compile(r"_[A-Za-z0-9](?:-?[A-Za-z0-9])*\._(?:tcp|udp)\.local\.")
_KNOWN_KEYS = ("txtvers", "aor", "uri", "tp", "pri", "dev", "fp", "pk")


def service_type_is_valid(service_type: str) -> bool:
    """``_name._udp.local.`` / ``_name._tcp.local.`` with a 1-15 character name (RFC 6763 §7.2)."""
    if not _SERVICE_TYPE.fullmatch(service_type):
        return False
    name = service_type[1:].split(".", 1)[0]
    return len(name) <= 15 and any(c.isalpha() for c in name)


@dataclass(frozen=True)
class BonjourAdvert:
    """What one DNS-SD service instance says about one contact of an AoR (its TXT record).

    Attributes:
        aor: the normalised AoR (``sip:alice@p2p.example``).
        uri: the contact URI.
        transport: ``udp``, ``tcp`` or ``tls``.
        priority: lower is preferred, 0-65535.
        device_id: the publishing device, or None.
        key_fingerprint: the fingerprint of the AoR's key as the publisher claims it, or None.
        public_key: the AoR's public key (raw bytes) as the publisher claims it, or None.
    """

    aor: str
    uri: str
    transport: str
    priority: int = 0
    device_id: str | None = None
    key_fingerprint: str | None = None
    public_key: bytes | None = field(default=None, repr=False)

    @classmethod
    def from_contact(
        cls, aor: str, contact: LocatedContact, device_id: str | None = None
    ) -> BonjourAdvert:
        """The advert for ``contact`` (its own ``device_id`` wins over ``device_id``)."""
        return cls(
            aor=normalize_aor_text(aor),
            uri=contact.uri,
            transport=contact.transport.lower(),
            priority=contact.priority,
            device_id=contact.device_id or device_id,
            key_fingerprint=contact.key_fingerprint,
            public_key=contact.public_key,
        )

    def problem(self) -> str | None:
        """Why this advert may not be published or used, or None when it is fine."""
        for name in ("aor", "uri"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value or _TEXT_FORBIDDEN.search(value):
                return f"{name} missing or contains control characters"
            if len(value.encode("utf-8")) > MAX_TXT_STRING - len(name) - 1:
                return f"{name} longer than a TXT string allows"
        try:
            if normalize_aor_text(self.aor) != self.aor or not self.aor.startswith(
                ("sip:", "sips:")
            ):
                return f"aor not a normalised sip/sips address: {self.aor!r}"
            contact_from_uri(self.uri)
        except (ValueError, LocatorError) as error:
            return str(error)
        if self.transport not in TRANSPORTS:
            return f"unknown transport {self.transport!r}"
        if type(self.priority) is not int or not 0 <= self.priority <= 65535:
            return f"priority out of range: {self.priority!r}"
        if self.device_id is not None and (
            not isinstance(self.device_id, str)
            or not 0 < len(self.device_id) <= MAX_DEVICE_ID
            or _TEXT_FORBIDDEN.search(self.device_id)
        ):
            return "device id empty, too long or with control characters"
        if self.key_fingerprint is not None and (
            not isinstance(self.key_fingerprint, str)
            or len(self.key_fingerprint) > MAX_FINGERPRINT
            or not _FINGERPRINT.fullmatch(self.key_fingerprint)
        ):
            return "key fingerprint not 1-128 printable ASCII characters"
        if self.public_key is not None and (
            not isinstance(self.public_key, bytes) or not 0 < len(self.public_key) <= MAX_PUBLIC_KEY
        ):
            return f"public key not 1-{MAX_PUBLIC_KEY} bytes"
        return None

    def to_txt(self) -> bytes:
        """The TXT record data (RFC 6763 §6: length-prefixed ``key=value`` strings).

        Raises:
            LocatorError: the advert cannot be published (see :meth:`problem`).
        """
        problem = self.problem()
        if problem is not None:
            raise LocatorError(f"cannot publish {self.aor!r} over Bonjour: {problem}")
        # RFC 6763 §6.7: txtvers first
        items = [
            ("txtvers", TXT_VERSION),
            ("aor", self.aor),
            ("uri", self.uri),
            ("tp", self.transport),
            ("pri", str(self.priority)),
        ]
        if self.device_id is not None:
            items.append(("dev", self.device_id))
        if self.key_fingerprint is not None:
            items.append(("fp", self.key_fingerprint))
        if self.public_key is not None:
            items.append(("pk", base64.b64encode(self.public_key).decode("ascii")))
        out = bytearray()
        for key, value in items:
            data = f"{key}={value}".encode()
            if len(data) > MAX_TXT_STRING:  # only dev/fp/pk can still get here
                raise LocatorError(f"cannot publish {self.aor!r} over Bonjour: {key} too long")
            out.append(len(data))
            out += data
        return bytes(out)

    @classmethod
    def from_txt(cls, data: bytes) -> BonjourAdvert | None:
        """Parse TXT record data from the network; None for anything unusable (never raises).

        A known key that is present but malformed voids the whole record: silently dropping,
        say, a bad ``pk`` would turn a keyed advert into an unkeyed one.
        """
        fields = _txt_fields(data)
        if fields is None or fields.get("txtvers") != TXT_VERSION.encode():
            return None
        text: dict[str, str] = {}
        for key in _KNOWN_KEYS:
            if key not in fields:
                continue
            value = fields[key]
            if value is None:
                return None  # a known key without "=value"
            try:
                text[key] = value.decode("utf-8")
            except UnicodeDecodeError:
                return None
        if not {"aor", "uri", "tp", "pri"} <= text.keys() or not _PRIORITY.fullmatch(text["pri"]):
            return None
        public_key = None
        if "pk" in text:
            try:
                public_key = base64.b64decode(text["pk"], validate=True)
            except (binascii.Error, ValueError):
                return None
        raw_aor = text["aor"]
        if not raw_aor.isascii() or _TEXT_FORBIDDEN.search(raw_aor):
            return None  # advertised AoRs are normalised: ASCII, escaped
        try:
            aor = normalize_aor_text(raw_aor)
        except ValueError:
            return None
        advert = cls(
            aor=aor,
            uri=text["uri"],
            transport=text["tp"].lower(),
            priority=int(text["pri"]),
            device_id=text.get("dev"),
            key_fingerprint=text.get("fp"),
            public_key=public_key,
        )
        return advert if advert.problem() is None else None

    def to_contacts(self, addresses: Iterable[str], port: int) -> list[LocatedContact]:
        """One :class:`LocatedContact` per address, with ``source="bonjour"``."""
        return [
            LocatedContact(
                uri=self.uri,
                transport=self.transport,
                host=address,
                port=port,
                priority=self.priority,
                source=SOURCE,
                key_fingerprint=self.key_fingerprint,
                public_key=self.public_key,
                device_id=self.device_id,
            )
            for address in addresses
        ]


def _txt_fields(data: object) -> dict[str, bytes | None] | None:
    """RFC 6763 §6 strings -> {key: value or None for a boolean attribute}; None if malformed."""
    if not isinstance(data, bytes | bytearray) or len(data) > MAX_TXT_OCTETS:
        return None
    fields: dict[str, bytes | None] = {}
    index = 0
    while index < len(data):
        length = data[index]
        index += 1
        if index + length > len(data):
            return None  # a string runs past the end of the record
        item = bytes(data[index : index + length])
        index += length
        key, equals, value = item.partition(b"=")
        # RFC 6763 §6.4: printable US-ASCII keys; empty keys ignored; first occurrence wins
        if not key or any(not 0x20 <= b <= 0x7E for b in key):
            continue
        name = key.decode("ascii").lower()
        if name not in fields:
            fields[name] = value if equals else None
    return fields


def _truncate_utf8(text: str, octets: int) -> str:
    """The longest prefix of ``text`` that fits in ``octets`` UTF-8 octets."""
    data = text.encode("utf-8")
    if len(data) <= octets:
        return text
    return data[: max(0, octets)].decode("utf-8", errors="ignore")


def _label_text(text: str) -> str:
    return _TEXT_FORBIDDEN.sub("\ufffd", text).replace(".", DOT_STAND_IN)


def instance_name(aor: str, device_id: str, tag: str = "") -> str:
    """The DNS-SD instance label for one contact of ``aor`` on ``device_id``.

    ``alice@p2p<U+2024>example (dev1, tls)``: readable (RFC 6763 §4.1.1: any UTF-8 text), at
    most 63 octets, and unique per (AoR, device, tag). When the readable form does not fit or
    would not be unique (an upper-case letter: DNS compares names case-insensitively; a
    replaced control character), it is shortened and ends in `` ~`` plus 8 hex digits of a
    hash of the exact inputs. Dots become U+2024 ONE DOT LEADER, see :data:`DOT_STAND_IN`.
    """
    aor = normalize_aor_text(aor)
    readable = display_aor(aor)
    display = readable[4:] if readable.startswith("sip:") else readable
    inner = f"{device_id}, {tag}" if tag else device_id
    label = f"{_label_text(display)} ({_label_text(inner)})"
    lossless = (
        DOT_STAND_IN not in display + inner
        and not _TEXT_FORBIDDEN.search(display + inner)
        and label == label.lower()
    )
    if lossless and len(label.encode("utf-8")) <= MAX_LABEL_OCTETS:
        return label
    digest = hashlib.sha256(f"{aor}\n{device_id}\n{tag}".encode()).hexdigest()[:8]
    suffix = f" ~{digest}"
    inner_part = f" ({_truncate_utf8(_label_text(inner), 20)})"
    budget = MAX_LABEL_OCTETS - len(suffix) - len(inner_part.encode("utf-8"))
    return _truncate_utf8(_label_text(display), budget) + inner_part + suffix


def host_name(device_id: str, address: str) -> str:
    """The SRV target for a device's address: ``p2psip-<12 hex digits>.local.``."""
    digest = hashlib.sha256(f"{device_id}\n{address}".encode()).hexdigest()[:12]
    return f"p2psip-{digest}.local."


def _numeric_address(host: str) -> str | None:
    """``host`` as a canonical unicast IP address text (scope dropped), or None."""
    text = host.strip("[]").split("%", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if address.is_unspecified or address.is_multicast:
        return None
    return str(address)


@dataclass(frozen=True)
class ServicePlan:
    """One service instance to register.

    Attributes:
        instance: the instance label (:func:`instance_name`).
        name: the full service instance name (``<instance>.<service type>``).
        server: the SRV target host name.
        address: the numeric address for the A/AAAA record of ``server``.
        port: the SRV port.
        txt: the TXT record data.
        advert: what the TXT record says.
    """

    instance: str
    name: str
    server: str
    address: str
    port: int
    txt: bytes
    advert: BonjourAdvert


def plan_services(
    aor: str,
    contacts: Sequence[LocatedContact],
    *,
    device_id: str,
    service_type: str = DEFAULT_SERVICE_TYPE,
) -> list[ServicePlan]:
    """The service instances that publish ``contacts`` for ``aor``.

    Each contact gets its own instance; a device with two contacts on one transport gets
    ``tls`` and ``tls-2`` tags.

    Raises:
        LocatorError: a contact without a numeric unicast host or with a bad port, or
            fields that do not fit a TXT record.
    """
    plans: list[ServicePlan] = []
    used: dict[tuple[str, str], int] = {}
    names: set[str] = set()
    for contact in contacts:
        advert = BonjourAdvert.from_contact(aor, contact, device_id)
        txt = advert.to_txt()
        address = _numeric_address(contact.host)
        if address is None:
            raise LocatorError(
                f"cannot publish {contact.uri!r} over Bonjour: host {contact.host!r} is not a"
                " numeric unicast address"
            )
        if type(contact.port) is not int or not 0 < contact.port <= 65535:
            raise LocatorError(f"cannot publish {contact.uri!r} over Bonjour: bad port")
        device = advert.device_id or device_id
        count = used[(device, advert.transport)] = used.get((device, advert.transport), 0) + 1
        tag = advert.transport if count == 1 else f"{advert.transport}-{count}"
        instance = instance_name(advert.aor, device, tag)
        name = f"{instance}.{service_type}"
        if name.lower() in names:  # only reachable through a hash collision
            raise LocatorError(f"two contacts of {advert.aor} map to the instance {instance!r}")
        names.add(name.lower())
        plans.append(
            ServicePlan(
                instance, name, host_name(device, address), address, contact.port, txt, advert
            )
        )
    return plans


@dataclass(frozen=True)
class DiscoveredService:
    """A service instance seen on the link, decoded.

    Attributes:
        name: the full service instance name.
        advert: what its TXT record says.
        addresses: the usable addresses of its SRV target (at most 4).
        port: the SRV port.
        expires: when this entry stops being used unless refreshed (the caller's clock).
    """

    name: str
    advert: BonjourAdvert
    addresses: tuple[str, ...]
    port: int
    expires: float

    def contacts(self) -> list[LocatedContact]:
        """The contacts this service offers (one per address)."""
        return self.advert.to_contacts(self.addresses, self.port)


class BonjourDirectory:
    """The services seen on the link, by instance name and by AoR (sans-IO: ``now`` passed in).

    Bounded: at most ``max_entries`` services (least recently updated evicted first) and
    ``max_per_aor`` per AoR (further names for a full AoR ignored, so a flood cannot push out
    the entries already known).

    Args:
        max_entries: bound on remembered services.
        max_per_aor: bound on services per AoR.
        ttl: lifetime of an entry after its last update, seconds (the adapter refreshes
            entries whose service is still announced).
    """

    def __init__(self, max_entries: int = 512, max_per_aor: int = 32, ttl: float = 120.0) -> None:
        self.max_entries = max_entries
        self.max_per_aor = max_per_aor
        self.ttl = ttl
        self._entries: OrderedDict[str, DiscoveredService] = OrderedDict()
        self._by_aor: dict[str, set[str]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._entries

    def update(
        self,
        name: str,
        txt: bytes | None,
        addresses: Iterable[str],
        port: int | None,
        now: float,
    ) -> DiscoveredService | None:
        """Record what the network says about ``name`` (never raises).

        Returns:
            The stored entry, or None when the answer is unusable (malformed or oversized TXT,
            no usable address, bad port, AoR full); an earlier entry for ``name`` is dropped
            then, since the service no longer says anything usable.
        """
        key = name.lower() if isinstance(name, str) else ""
        advert = BonjourAdvert.from_txt(txt) if txt is not None else None
        usable: list[str] = []
        try:
            for address in addresses:
                text = _numeric_address(address) if isinstance(address, str) else None
                if text is not None:
                    # keep an IPv6 link-local scope: it is needed to reach the address
                    scoped = address if "%" in address and ":" in text else text
                    if scoped not in usable:
                        usable.append(scoped)
                if len(usable) >= MAX_ADDRESSES:
                    break
        except TypeError:
            usable = []
        if (
            not key
            or advert is None
            or not usable
            or not isinstance(port, int)
            or isinstance(port, bool)
            or not 0 < port <= 65535
        ):
            self.remove(key)
            return None
        previous = self._entries.get(key)
        if previous is not None and previous.advert.aor != advert.aor:
            self.remove(key)
            previous = None
        names = self._by_aor.setdefault(advert.aor, set())
        if previous is None and len(names) >= self.max_per_aor:
            if not names:
                del self._by_aor[advert.aor]
            return None
        entry = DiscoveredService(name, advert, tuple(usable), port, now + self.ttl)
        self._entries[key] = entry
        self._entries.move_to_end(key)
        names.add(key)
        while len(self._entries) > self.max_entries:
            oldest = next(iter(self._entries))
            self.remove(oldest)
        return entry

    def remove(self, name: str) -> DiscoveredService | None:
        """Forget ``name`` (a goodbye, a Removed event); returns what was known."""
        key = name.lower() if isinstance(name, str) else ""
        entry = self._entries.pop(key, None)
        if entry is not None:
            names = self._by_aor.get(entry.advert.aor)
            if names is not None:
                names.discard(key)
                if not names:
                    del self._by_aor[entry.advert.aor]
        return entry

    def expire(self, now: float) -> list[DiscoveredService]:
        """Drop and return the entries whose lifetime ended at or before ``now``."""
        gone = [entry for entry in self._entries.values() if entry.expires <= now]
        for entry in gone:
            self.remove(entry.name)
        return gone

    def get_timer(self) -> float | None:
        """When the next entry expires, or None when empty."""
        return min((entry.expires for entry in self._entries.values()), default=None)

    def services(self, aor: str, now: float) -> list[DiscoveredService]:
        """The live services of ``aor`` (normalised here), best priority first."""
        try:
            key = normalize_aor_text(aor)
        except ValueError:
            return []
        entries = [self._entries[name] for name in self._by_aor.get(key, ())]
        live = [entry for entry in entries if entry.expires > now]
        return sorted(
            live, key=lambda e: (e.advert.priority, e.advert.device_id or "", e.name.lower())
        )

    def contacts(self, aor: str, now: float) -> list[LocatedContact]:
        """The contacts of ``aor``'s live services, best priority first."""
        return [contact for entry in self.services(aor, now) for contact in entry.contacts()]
